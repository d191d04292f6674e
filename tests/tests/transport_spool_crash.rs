//! The spool survives SIGKILL of the process writing it, at any moment: every record whose
//! append returned is still there (with its exact payload) unless its acknowledgement
//! returned, no acknowledged record comes back, and the spool always reopens.
//!
//! The writer is this test binary itself, run again as a child process with the ignored test
//! `spool_writer_child` selected.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edgewarden::config::SpoolConfig;
use edgewarden::spool::{Spool, SpoolId};

const CHILD_ENV: &str = "EDGEWARDEN_SPOOL_CRASH_DIR";

fn cfg() -> SpoolConfig {
    SpoolConfig {
        // Small enough that segments roll and are deleted while the child runs.
        max_bytes: 4 * 1024 * 1024,
        max_records: 1_000_000,
    }
}

/// The payload of the child's `n`-th record: its length and bytes depend on `n`.
fn payload(n: u64) -> Vec<u8> {
    let len = 200 + (n * 7919 % 6000) as usize;
    (0..len).map(|i| (n as usize * 31 + i) as u8).collect()
}

#[test]
#[ignore = "child process of spool_survives_sigkill_of_its_writer"]
fn spool_writer_child() {
    let dir = std::env::var(CHILD_ENV).expect("run by spool_survives_sigkill_of_its_writer");
    let mut spool = Spool::open(Path::new(&dir), &cfg()).unwrap();
    let start: u64 = std::env::var("EDGEWARDEN_SPOOL_CRASH_START")
        .unwrap()
        .parse()
        .unwrap();
    let mut out = std::io::stdout().lock();
    let mut unacked = std::collections::VecDeque::new();
    for n in start.. {
        let id = spool.append("t", &payload(n)).unwrap();
        writeln!(out, "appended {} {n}", id.0).unwrap();
        out.flush().unwrap();
        unacked.push_back(id);
        // Acknowledge most records, oldest first, leaving a backlog behind.
        if n % 4 != 0 {
            if let Some(old) = unacked.pop_front() {
                writeln!(out, "acking {}", old.0).unwrap();
                out.flush().unwrap();
                spool.ack(old).unwrap();
                writeln!(out, "acked {}", old.0).unwrap();
                out.flush().unwrap();
            }
        }
    }
}

/// What the child reported before it died.
#[derive(Default)]
struct Reported {
    /// Appends that returned: id → n.
    appended: BTreeMap<u64, u64>,
    /// Acknowledgements that returned.
    acked: BTreeSet<u64>,
    /// Acknowledgements started (they may or may not have completed).
    acking: BTreeSet<u64>,
}

/// Runs the child until it reported `lines` lines (or 5 s passed), SIGKILLs it, and reads
/// everything it wrote before dying.
fn run_and_kill(dir: &Path, start: u64, lines: usize) -> Reported {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "spool_writer_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir)
        .env("EDGEWARDEN_SPOOL_CRASH_START", start.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut r = Reported::default();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = 0;
    let mut killed = false;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["appended", id, n] => {
                r.appended.insert(id.parse().unwrap(), n.parse().unwrap());
            }
            ["acking", id] => {
                r.acking.insert(id.parse().unwrap());
            }
            ["acked", id] => {
                r.acked.insert(id.parse().unwrap());
            }
            _ => continue,
        }
        seen += 1;
        if !killed && (seen >= lines || Instant::now() > deadline) {
            child.kill().unwrap(); // SIGKILL; lines already in the pipe are still read
            killed = true;
        }
    }
    if !killed {
        child.kill().unwrap();
    }
    child.wait().unwrap();
    r
}

#[test]
fn spool_survives_sigkill_of_its_writer() {
    let dir = tempfile::tempdir().unwrap();
    let mut all_appended = BTreeMap::new();
    let mut all_acked = BTreeSet::new();
    let mut next_n = 0;
    for (round, lines) in [150usize, 400, 37, 900, 1].into_iter().enumerate() {
        let r = run_and_kill(dir.path(), next_n, lines);
        next_n = r.appended.values().max().map_or(next_n, |m| m + 1) + 1000;
        all_appended.extend(r.appended);
        all_acked.extend(r.acked.iter().copied());
        // An acknowledgement interrupted by the kill may or may not have reached the disk.
        let in_doubt: BTreeSet<u64> = r.acking.difference(&r.acked).copied().collect();
        assert!(in_doubt.len() <= 1, "round {round}: {in_doubt:?}");

        let mut spool = Spool::open(dir.path(), &cfg())
            .unwrap_or_else(|e| panic!("round {round}: spool does not reopen: {e}"));
        let pending: BTreeSet<u64> = spool.pending_ids().iter().map(|i| i.0).collect();
        for (id, n) in &all_appended {
            if all_acked.contains(id) {
                assert!(
                    !pending.contains(id),
                    "round {round}: acknowledged {id} came back"
                );
            } else if !in_doubt.contains(id) {
                assert!(
                    pending.contains(id),
                    "round {round}: record {id} (n={n}) lost"
                );
            }
        }
        // At most one record whose append had not been reported yet may be pending too.
        let unreported: Vec<u64> = pending
            .iter()
            .filter(|id| !all_appended.contains_key(id))
            .copied()
            .collect();
        assert!(unreported.len() <= 1, "round {round}: {unreported:?}");
        // Every pending record reads back exactly.
        let mut after = None;
        while let Some(rec) = spool.next_after(after).unwrap() {
            if let Some(n) = all_appended.get(&rec.id.0) {
                assert_eq!(
                    rec.payload,
                    payload(*n),
                    "round {round}: record {} changed",
                    rec.id
                );
            }
            after = Some(rec.id);
        }
        // Settle the records in doubt for the next rounds' bookkeeping.
        for id in unreported.into_iter().chain(in_doubt) {
            spool.ack(SpoolId(id)).unwrap();
            all_acked.insert(id);
        }
    }
    assert!(
        all_appended.len() > 500,
        "the child wrote {} records",
        all_appended.len()
    );
}
