//! The false-alarm budget of the default profile: a long clean run of the noisy-gateway lab
//! (`tests/src/lab.rs`), no attack, the engine fed by the real collector inside the gateway.
//!
//! ```text
//! false-alarm-rate [--seed N] [--learning-secs 300] [--minutes 60] [--tick-ms 1000] [--runs 1]
//! ```
//!
//! Learns for `--learning-secs`, then counts the violations raised over `--minutes` of normal
//! traffic, `--runs` times with seeds N, N+1, …. Prints each violation, then the expected false
//! alarms per day: violations ÷ armed hours × 24, and when none was seen, the 95 % upper bound
//! (3 ÷ armed hours × 24, the rule of three). Needs root, util-linux, iproute2 and python3; runs
//! in real time (the lab's traffic is real).

use std::time::Duration;

use edgewarden::config::DetectConfig;
use edgewarden::detect::{default_profile, Engine, Phase, ViolationEventType};
use integration_tests::lab::{skip_reason, Lab, LabConfig};

struct Args {
    seed: u64,
    learning: Duration,
    minutes: u64,
    tick: Duration,
    runs: u64,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64 % 1_000_000),
        learning: Duration::from_secs(300),
        minutes: 60,
        tick: Duration::from_secs(1),
        runs: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v: u64 = it
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{k} needs a number"))?;
        match k.as_str() {
            "--seed" => a.seed = v,
            "--learning-secs" => a.learning = Duration::from_secs(v),
            "--minutes" => a.minutes = v,
            "--tick-ms" => a.tick = Duration::from_millis(v.max(100)),
            "--runs" => a.runs = v.max(1),
            _ => return Err(format!("unknown option {k}")),
        }
    }
    Ok(a)
}

/// One run: (armed ticks, armed seconds, violations).
fn run(a: &Args, seed: u64) -> Result<(u64, f64, Vec<String>), String> {
    let mut lab = Lab::start(LabConfig {
        seed,
        tick: a.tick,
        scale: 1.0,
    })?;
    let cfg = DetectConfig {
        enabled: true,
        profile: None,
        learning_period: a.learning,
        violations_topic: "edgewarden/{thing}/violations".into(),
    };
    let mut engine = Engine::new(default_profile(), &cfg, "lab-gateway", None);
    let mut violations = Vec::new();
    let mut armed_ticks = 0u64;
    let mut armed_ms = 0u64;
    let target_ms = a.minutes * 60_000;
    let max_learning_ticks = 3 * a.learning.as_millis() as u64 / a.tick.as_millis() as u64 + 10;
    let mut learning_ticks = 0u64;
    while armed_ms < target_ms {
        let snap = lab.next_snapshot()?;
        let armed = engine.status().phase == Phase::Armed;
        let ev = engine.evaluate(&snap);
        engine.train_inline();
        if !armed {
            learning_ticks += 1;
            if learning_ticks > max_learning_ticks {
                return Err(format!(
                    "seed {seed}: still learning after {learning_ticks} ticks"
                ));
            }
            continue;
        }
        armed_ticks += 1;
        armed_ms += snap.interval_ms;
        for e in ev
            .iter()
            .filter(|e| e.violation_event_type == ViolationEventType::InAlarm)
        {
            let line = format!(
                "seed {seed}, {:.1} min after learning: {}: {}",
                armed_ms as f64 / 60_000.0,
                e.behavior.name,
                e.explanation
            );
            eprintln!("{line}");
            violations.push(line);
        }
        if armed_ticks.is_multiple_of(600) {
            eprintln!(
                "seed {seed}: {:.0} of {} min, {} violation(s)",
                armed_ms as f64 / 60_000.0,
                a.minutes,
                violations.len()
            );
        }
    }
    Ok((armed_ticks, armed_ms as f64 / 1000.0, violations))
}

#[allow(clippy::print_stdout)]
fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("false-alarm-rate: {e}");
            std::process::exit(2);
        }
    };
    if let Some(why) = skip_reason() {
        eprintln!("false-alarm-rate: the lab cannot run here: {why}");
        std::process::exit(2);
    }
    let (mut ticks, mut secs, mut all) = (0u64, 0f64, Vec::new());
    for i in 0..a.runs {
        let seed = a.seed + i;
        eprintln!(
            "run {} of {}: seed {seed}, learning {} s, then {} min at a {} ms tick",
            i + 1,
            a.runs,
            a.learning.as_secs(),
            a.minutes,
            a.tick.as_millis()
        );
        match run(&a, seed) {
            Ok((t, s, v)) => {
                ticks += t;
                secs += s;
                all.extend(v);
            }
            Err(e) => {
                eprintln!("false-alarm-rate: {e}");
                std::process::exit(1);
            }
        }
    }
    let hours = secs / 3600.0;
    for v in &all {
        println!("{v}");
    }
    println!(
        "seeds {}..{}: {} violation(s) in {:.2} h armed ({ticks} ticks at {} ms)",
        a.seed,
        a.seed + a.runs - 1,
        all.len(),
        hours,
        a.tick.as_millis()
    );
    if all.is_empty() {
        println!(
            "expected false alarms per day: 0 observed; 95 % upper bound {:.1}",
            3.0 / hours * 24.0
        );
    } else {
        println!(
            "expected false alarms per day: {:.1}",
            all.len() as f64 / hours * 24.0
        );
    }
}
