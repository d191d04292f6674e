//! The real agent binary following hostile log paths and hostile log content: a FIFO, a symbolic
//! link to `/dev/zero` and a directory at followed paths do not stop reports or shutdown, and
//! thousands of maximal MQTT client ids do not blow up its memory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use integration_tests::edgewarden_bin;

fn write_config(dir: &Path, files: &[PathBuf]) -> PathBuf {
    let cfg = dir.join("agent.toml");
    let list: Vec<String> = files
        .iter()
        .map(|f| format!("\"{}\"", f.display()))
        .collect();
    std::fs::write(
        &cfg,
        format!(
            "thing_name = \"logs-test\"\nstate_dir = \"{}\"\n[collect]\ninterval = \"200ms\"\n[report]\ninterval = \"1s\"\nwarm_up = \"500ms\"\n[logs]\nenabled = true\njournal = false\nfiles = [{}]\n",
            dir.join("state").display(),
            list.join(", ")
        ),
    )
    .unwrap();
    cfg
}

fn start(cfg: &Path) -> Child {
    Command::new(edgewarden_bin())
        .args(["run", "--config", cfg.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the agent starts")
}

fn reports(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("state/outbox/reports.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Sends SIGTERM and returns how long the agent took to exit (panics after 5 s).
fn terminate(mut child: Child) -> Duration {
    let at = Instant::now();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            assert!(s.success(), "exit status {s:?}");
            return at.elapsed();
        }
        if at.elapsed() > Duration::from_secs(5) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the agent did not stop within 5 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `VmHWM` (peak resident set) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

#[test]
fn fifo_dev_zero_link_and_directory_paths_do_not_stop_reports_or_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.log");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let fifo2 = dir.path().join("fifo2.log");
    assert!(Command::new("mkfifo")
        .arg(&fifo2)
        .status()
        .unwrap()
        .success());
    let zero = dir.path().join("zero.log");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let sub = dir.path().join("dir.log");
    std::fs::create_dir(&sub).unwrap();
    let cfg = write_config(dir.path(), &[fifo, fifo2, zero, sub]);
    let child = start(&cfg);
    std::thread::sleep(Duration::from_secs(6));
    let got = reports(dir.path());
    // Reports every second after a half-second warm-up: at least four in six seconds.
    assert!(got.len() >= 4, "{} reports in 6 s", got.len());
    let took = terminate(child);
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn five_thousand_lines_with_60_kib_client_ids_stay_under_40_mib() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mosquitto.log");
    std::fs::write(&log, "").unwrap();
    let cfg = write_config(dir.path(), std::slice::from_ref(&log));
    let child = start(&cfg);
    // The first poll follows the existing file from its end.
    std::thread::sleep(Duration::from_millis(1500));
    {
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        let mut line = Vec::with_capacity(62 * 1024);
        for i in 0..5000u32 {
            line.clear();
            write!(line, "1795801{:03}: Client ", i % 1000).unwrap();
            write!(line, "{i:05}").unwrap();
            line.extend(std::iter::repeat_n(b'x', 60 * 1024));
            line.extend_from_slice(b" already connected, closing old connection.\n");
            f.write_all(&line).unwrap();
        }
    }
    // Wait until the reports have counted every takeover.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut counted = 0.0;
    while Instant::now() < deadline && counted < 5000.0 {
        std::thread::sleep(Duration::from_millis(300));
        counted = reports(dir.path())
            .iter()
            .filter_map(|r| r["custom_metrics"]["mqtt_client_id_conflicts"][0]["number"].as_f64())
            .sum();
    }
    let peak = peak_rss_kib(child.id());
    terminate(child);
    eprintln!("peak RSS after 5,000 takeovers with 60 KiB ids: {peak} KiB");
    assert_eq!(counted, 5000.0, "takeovers counted in the reports");
    assert!(peak < 40 * 1024, "peak RSS {peak} KiB");
    // Coalesced: a handful of violations, not 5,000.
    let violations = std::fs::read_to_string(dir.path().join("state/outbox/violations.jsonl"))
        .unwrap_or_default();
    let n = violations.lines().count();
    assert!((1..=2).contains(&n), "{n} violations");
    assert!(violations.len() < 64 * 1024, "{} bytes", violations.len());
}
