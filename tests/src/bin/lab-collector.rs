//! The noisy-gateway lab's sampler (`tests/src/lab.rs`): the agent's real collector, run inside
//! the lab gateway's namespaces, printing one snapshot per tick as a JSON line on stdout.
//!
//! `lab-collector TICK_MS`. Stops when stdout or stdin closes (the test is gone), or after four
//! hours.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use edgewarden::collect::Collector;
use edgewarden::config::Config;
use integration_tests::lab::snapshot_to_json;

fn main() {
    let tick_ms: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let tick = Duration::from_millis(tick_ms.max(100));
    // End with the test: its end closes our stdin.
    std::thread::spawn(|| {
        let mut buf = [0u8; 64];
        while matches!(std::io::stdin().read(&mut buf), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    let mut cfg = Config::embedded_default().collect;
    cfg.interval = tick;
    let mut collector = Collector::new(&cfg);
    let end = Instant::now() + Duration::from_secs(4 * 3600);
    let mut next = Instant::now();
    let mut out = std::io::stdout().lock();
    while Instant::now() < end {
        let snap = collector.sample();
        if writeln!(out, "{}", snapshot_to_json(&snap))
            .and_then(|()| out.flush())
            .is_err()
        {
            return;
        }
        next += tick;
        match next.checked_duration_since(Instant::now()) {
            Some(d) => std::thread::sleep(d),
            None => next = Instant::now(),
        }
    }
}
