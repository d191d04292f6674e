//! Attacks hidden in a busy gateway: the default profile on the noisy-gateway lab
//! (`integration_tests::lab`), fed by the real collector running inside the gateway.
//!
//! One lab and one engine serve every case: the first case to run builds the lab, learns the
//! baseline (`LEARNING` at a 1 s tick) and runs the clean phase (`CLEAN_TICKS` of normal traffic
//! after learning, which must raise nothing). Each attack class is then its own case, run one
//! at a time on the learned engine: wait until no alarm is active, start the attack, and expect a
//! violation of the right behaviour within two collection ticks; then let the attack end and the
//! alarms clear. The last case to finish tears the lab down (an interrupted run leaves nothing:
//! the lab's namespaces end with the test process).
//!
//! The benign traffic is randomised: the seed is printed at the start and in every failure, and
//! `EW_LAB_SEED=N` replays it. `EW_DEBUG=1` prints every tick's events. The long clean run that
//! measures the expected false alarms per day is `false-alarm-rate` (see `tests/src/bin/`).
//!
//! Needs root, util-linux, iproute2 and python3; without them every case is skipped, loudly.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use edgewarden::config::DetectConfig;
use edgewarden::detect::{default_profile, Engine, Phase, ViolationEvent, ViolationEventType};
use integration_tests::lab::{skip_reason, Attack, Lab, LabConfig};

const TICK: Duration = Duration::from_secs(1);
/// Learning period of the engine (observed time).
const LEARNING: Duration = Duration::from_secs(100);
/// Ticks of normal traffic after learning that must raise nothing.
const CLEAN_TICKS: usize = 60;
/// The lab's recipe, periods compressed so that a short learning period sees every kind of
/// normal event several times (the long run of `false-alarm-rate` uses 1.0).
const SCALE: f64 = 0.6;
/// Cases sharing the lab (ten attacks and the clean run).
const CASES: usize = 11;
/// Longest wait for every alarm to clear before an attack.
const SETTLE_MAX_TICKS: usize = 30;

struct Shared {
    lab: Lab,
    engine: Engine,
    seed: u64,
    /// In-alarm events of the clean phase.
    clean: Vec<(u64, ViolationEvent)>,
    /// In-alarm events while learning (rule behaviours only can raise).
    learning: Vec<(u64, ViolationEvent)>,
}

enum State {
    Unstarted,
    Skipped(String),
    Failed(String),
    Ready(Box<Shared>, usize),
    Done,
}

static SHARED: Mutex<State> = Mutex::new(State::Unstarted);

fn seed() -> u64 {
    std::env::var("EW_LAB_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64 % 1_000_000)
        })
}

/// A development override (shorter runs); CI uses the defaults.
fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn summary(ev: &[(u64, ViolationEvent)]) -> String {
    ev.iter()
        .map(|(seq, e)| {
            format!(
                "  tick {seq}: {} {} score {:.2}: {}",
                e.behavior.name,
                e.violation_event_type.as_str(),
                e.score,
                e.explanation
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn in_alarm(ev: &[(u64, ViolationEvent)]) -> Vec<(u64, ViolationEvent)> {
    ev.iter()
        .filter(|(_, e)| e.violation_event_type == ViolationEventType::InAlarm)
        .cloned()
        .collect()
}

impl Shared {
    fn tick(&mut self) -> Vec<(u64, ViolationEvent)> {
        let snap = self
            .lab
            .next_snapshot()
            .unwrap_or_else(|e| panic!("seed {}: {e}", self.seed));
        let ev = self.engine.evaluate(&snap);
        self.engine.train_inline();
        let ev: Vec<(u64, ViolationEvent)> = ev.into_iter().map(|e| (snap.seq, e)).collect();
        if std::env::var_os("EW_DEBUG").is_some() && !ev.is_empty() {
            eprintln!("{}", summary(&ev));
        }
        ev
    }

    fn ticks(&mut self, n: usize) -> Vec<(u64, ViolationEvent)> {
        (0..n).flat_map(|_| self.tick()).collect()
    }

    fn start() -> Result<Shared, String> {
        let seed = seed();
        eprintln!("noisy-gateway lab: seed {seed} (EW_LAB_SEED={seed} replays it)");
        let lab = Lab::start(LabConfig {
            seed,
            tick: TICK,
            scale: SCALE,
        })?;
        let cfg = DetectConfig {
            enabled: true,
            profile: None,
            learning_period: Duration::from_secs(env_or(
                "EW_LAB_LEARNING_SECS",
                LEARNING.as_secs() as usize,
            ) as u64),
            violations_topic: "edgewarden/{thing}/violations".into(),
        };
        let engine = Engine::new(default_profile(), &cfg, "lab-gateway", None);
        let clean_ticks = env_or("EW_LAB_CLEAN_TICKS", CLEAN_TICKS);
        let mut s = Shared {
            lab,
            engine,
            seed,
            clean: Vec::new(),
            learning: Vec::new(),
        };
        let max_learning_ticks = (cfg.learning_period.as_secs() as usize) * 2;
        for _ in 0..max_learning_ticks {
            let ev = s.tick();
            s.learning.extend(in_alarm(&ev));
            if s.engine.status().phase == Phase::Armed {
                break;
            }
        }
        if s.engine.status().phase != Phase::Armed {
            return Err(format!(
                "seed {seed}: still learning after {max_learning_ticks} ticks:\n{}",
                s.engine.status()
            ));
        }
        let ev = s.ticks(clean_ticks);
        s.clean = in_alarm(&ev);
        eprintln!(
            "noisy-gateway lab: armed; clean phase of {clean_ticks} ticks raised {} violation(s)\n{}",
            s.clean.len(),
            s.engine.status()
        );
        Ok(s)
    }

    /// Ticks until none of `behaviors` is in alarm for two ticks in a row (other alarms, such
    /// as a previous scan's 60 s window, may still run).
    fn settle(&mut self, behaviors: &[&str]) {
        let mut quiet = 0;
        for _ in 0..SETTLE_MAX_TICKS {
            self.tick();
            if !self
                .engine
                .status()
                .active_violations
                .iter()
                .any(|v| behaviors.contains(&v.behavior.as_str()))
            {
                quiet += 1;
                if quiet >= 2 {
                    return;
                }
            } else {
                quiet = 0;
            }
        }
    }
}

/// Runs `f` on the shared lab (built on first use); `None` when the lab cannot run here.
fn with_lab<T>(case: &str, f: impl FnOnce(&mut Shared) -> T) -> Option<T> {
    let mut state = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if matches!(*state, State::Unstarted) {
        *state = match skip_reason() {
            Some(why) => State::Skipped(why),
            None => match Shared::start() {
                Ok(s) => State::Ready(Box::new(s), 0),
                Err(e) => State::Failed(e),
            },
        };
    }
    let (out, last) = match &mut *state {
        State::Skipped(why) => {
            eprintln!("SKIPPED {case}: {why}");
            return None;
        }
        State::Failed(e) => panic!("{case}: the lab did not start: {e}"),
        State::Done => panic!("{case}: the lab is already torn down"),
        State::Unstarted => unreachable!("started above"),
        State::Ready(s, done) => {
            // Count the case before running it, so a failing case still lets the last one
            // tear the lab down.
            *done += 1;
            let last = *done == CASES;
            (
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(s))),
                last,
            )
        }
    };
    if last {
        *state = State::Done;
    }
    drop(state);
    let out = out.unwrap_or_else(|p| std::panic::resume_unwind(p));
    Some(out)
}

/// Starts `attack` on a quiet gateway and expects one of `behaviors` in alarm within two ticks.
fn attack_is_flagged(attack: Attack, behaviors: &[&str]) {
    let verdict = with_lab(attack.name(), |s| {
        s.settle(behaviors);
        s.lab.attack(attack);
        let ev = s.ticks(2);
        let raised: BTreeSet<String> = in_alarm(&ev)
            .iter()
            .map(|(_, e)| e.behavior.name.clone())
            .collect();
        let hit = behaviors.iter().any(|b| raised.contains(*b));
        eprintln!(
            "{}: raised {raised:?} within two ticks\n{}",
            attack.name(),
            summary(&in_alarm(&ev))
        );
        // Let the attack end before the next case.
        let rest = (attack.duration().as_secs() as usize).saturating_sub(1);
        let later = s.ticks(rest);
        (hit, raised, ev, later, s.seed)
    });
    let Some((hit, raised, ev, later, seed)) = verdict else {
        return;
    };
    assert!(
        hit,
        "seed {seed} (EW_LAB_SEED={seed} replays it): {}: expected one of {behaviors:?} within two \
         collection ticks, raised {raised:?}\nevents:\n{}\nlater:\n{}",
        attack.name(),
        summary(&ev),
        summary(&later)
    );
}

#[test]
fn clean_run_after_learning_raises_nothing() {
    let Some((clean, learning, seed)) = with_lab("clean run", |s| {
        (s.clean.clone(), s.learning.clone(), s.seed)
    }) else {
        return;
    };
    assert!(
        learning.is_empty() && clean.is_empty(),
        "seed {seed} (EW_LAB_SEED={seed} replays it): violations without any attack\nwhile \
         learning:\n{}\nafter learning ({CLEAN_TICKS} ticks):\n{}",
        summary(&learning),
        summary(&clean)
    );
}

#[test]
fn attack_new_listener() {
    attack_is_flagged(Attack::NewListener, &["new-listening-tcp-port"]);
}

#[test]
fn attack_udp_flood() {
    attack_is_flagged(
        Attack::UdpFlood,
        &[
            "traffic-packets-out",
            "traffic-bytes-out",
            "udp-datagrams-out",
        ],
    );
}

#[test]
fn attack_burst_to_new_addresses() {
    attack_is_flagged(Attack::BurstToNewAddresses, &["new-destination-addresses"]);
}

#[test]
fn attack_inbound_scan() {
    attack_is_flagged(Attack::InboundScan, &["scan-inbound-tcp"]);
}

#[test]
fn attack_outbound_scan() {
    attack_is_flagged(Attack::OutboundScan, &["scan-outbound-connect-failures"]);
}

#[test]
fn attack_reverse_shell() {
    attack_is_flagged(Attack::ReverseShell, &["new-recurring-destination"]);
}

#[test]
fn attack_syn_flood_to_closed_port() {
    attack_is_flagged(Attack::SynFloodClosedPort, &["raw-packets-out"]);
}

#[test]
fn attack_crypto_miner_under_a_baseline_name() {
    attack_is_flagged(Attack::CryptoMiner, &["process-cpu-above-its-history"]);
}

#[test]
fn attack_c2_beacon() {
    attack_is_flagged(Attack::C2Beacon, &["new-recurring-destination"]);
}

#[test]
fn attack_exfiltration_to_a_new_address() {
    attack_is_flagged(Attack::Exfiltration, &["new-recurring-destination"]);
}
