//! The real `edgewarden` binary: exit codes, stderr wording, and the reports it writes.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use integration_tests::edgewarden_bin;
use integration_tests::validator::{Encoding, Registry, Validator};

fn validator() -> Validator {
    Validator::strict().with_registry(Registry::edgewarden())
}

fn edgewarden(args: &[&str], state: &std::path::Path) -> std::process::Output {
    Command::new(edgewarden_bin())
        .args(args)
        .env("EDGEWARDEN_THING_NAME", "cli-test")
        .env("HOME", state)
        .env("XDG_STATE_HOME", state)
        .env_remove("EDGEWARDEN_CONFIG")
        .output()
        .expect("the binary runs")
}

#[test]
fn validate_accepts_the_packaged_example_config() {
    let dir = tempfile::tempdir().unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/edgewarden.toml");
    let out = edgewarden(&["validate", "--config", example], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("configuration is valid"));
}

#[test]
fn validate_lists_every_problem_with_key_and_line_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "thing_name = \"gw\"\n[collect]\ninterval = \"fast\"\ncolour = \"red\"\n[report]\nformat = \"xml\"\n",
    )
    .unwrap();
    let out = edgewarden(&["validate", "--config", cfg.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("3 configuration problems"), "{err}");
    assert!(err.contains("line 3: collect.interval"), "{err}");
    assert!(err.contains("line 4: collect.colour: unknown key"), "{err}");
    assert!(err.contains("line 6: report.format"), "{err}");
}

#[test]
fn run_with_a_bad_config_exits_2_before_starting() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[spool]\nmax_bytes = \"huge\"\n").unwrap();
    let out = edgewarden(&["run", "--config", cfg.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2: spool.max_bytes"));
}

#[test]
fn print_config_shows_defaults_that_validate_again() {
    let dir = tempfile::tempdir().unwrap();
    let out = edgewarden(&["print-config"], dir.path());
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("interval = \"10s\""), "{text}");
    assert!(text.contains("thing_name = \"cli-test\""), "{text}");
    let cfg = dir.path().join("effective.toml");
    std::fs::write(&cfg, &text).unwrap();
    let out = edgewarden(&["validate", "--config", cfg.to_str().unwrap()], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn collect_once_prints_a_valid_report_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    for fmt in ["json", "json-short", "cbor"] {
        let out = edgewarden(&["collect", "--once", "--format", fmt], dir.path());
        assert!(
            out.status.success(),
            "{fmt}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let enc = if fmt == "cbor" {
            Encoding::Cbor
        } else {
            Encoding::Json
        };
        let mut payload = out.stdout.clone();
        if enc == Encoding::Json {
            assert_eq!(payload.pop(), Some(b'\n'), "{fmt}: one line on stdout");
        }
        let report = validator()
            .validate(&payload, enc)
            .unwrap_or_else(|e| panic!("{fmt}: invalid report: {e:?}"));
        assert!(report.flags.is_empty(), "{fmt}: {:?}", report.flags);
        let m = &report.document["metrics"];
        assert!(
            m["listening_tcp_ports"]["total"].is_u64(),
            "{fmt}: {}",
            report.document
        );
        assert!(
            m["network_stats"]["bytes_in"].is_u64(),
            "{fmt}: {}",
            report.document
        );
    }
}

#[test]
fn run_writes_reports_to_the_outbox_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("fast.toml");
    std::fs::write(
        &cfg,
        format!(
            "state_dir = \"{}\"\n[collect]\ninterval = \"200ms\"\n[report]\ninterval = \"1s\"\nwarm_up = \"500ms\"\n[logs]\nenabled = false\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(edgewarden_bin())
        .args(["run", "--config", cfg.to_str().unwrap()])
        .env("EDGEWARDEN_THING_NAME", "cli-test")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let outbox = dir.path().join("state/outbox/reports.jsonl");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let n = std::fs::read_to_string(&outbox)
            .map(|s| s.lines().count())
            .unwrap_or(0);
        if n >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let stopped_at = Instant::now();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            stopped_at.elapsed() < Duration::from_secs(5),
            "agent did not stop within 5 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status:?}");
    let text = std::fs::read_to_string(&outbox).unwrap();
    let mut last_id = 0;
    for line in text.lines() {
        let report = validator()
            .validate(line.as_bytes(), Encoding::Json)
            .unwrap_or_else(|e| panic!("invalid report in the outbox: {e:?}"));
        let id = report.report_id;
        assert!(
            id > last_id,
            "report ids must increase: {id} after {last_id}"
        );
        last_id = id;
    }
    assert!(text.lines().count() >= 2, "{text}");
}

#[test]
fn offline_commands_leave_the_system_state_directory_alone() {
    // `validate` is not among them: it checks that the state directory can be written.
    let system = std::path::Path::new("/var/lib/edgewarden");
    let existed = system.exists();
    let report_id = std::fs::read(system.join("report_id")).ok();
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["collect", "--once"][..],
        &["print-config"],
        &["metrics"],
        &["profile", "default"],
        &["status"],
    ] {
        let out = edgewarden(args, dir.path());
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        system.exists(),
        existed,
        "{} created by a command that only reads",
        system.display()
    );
    assert_eq!(
        std::fs::read(system.join("report_id")).ok(),
        report_id,
        "the persisted report id changed"
    );
}

#[test]
fn validate_without_a_file_checks_the_configuration_run_would_use() {
    let dir = tempfile::tempdir().unwrap();
    let out = edgewarden(&["validate"], dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    if std::path::Path::new("/etc/edgewarden/edgewarden.toml").exists() {
        assert!(err.contains("/etc/edgewarden/edgewarden.toml"), "{err}");
    } else {
        assert!(out.status.success(), "{err}");
        assert!(err.contains("embedded default"), "{err}");
    }
}

#[test]
fn logs_scan_refuses_missing_and_compressed_files_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.log");
    let out = edgewarden(&["logs", "scan", missing.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nope.log") && err.contains("No such file"),
        "{err}"
    );

    let gz = dir.path().join("auth.log.2.gz");
    std::fs::write(&gz, [0x1f, 0x8b, 8, 0, 0, 0, 0, 0]).unwrap();
    let out = edgewarden(&["logs", "scan", gz.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("gzip-compressed") && err.contains("zcat"),
        "{err}"
    );
}

#[test]
fn logs_scan_counts_a_repeated_message_as_its_repetitions() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("auth.log");
    std::fs::write(
        &log,
        "Mar  1 10:00:00 gw sshd[41]: Failed password for root from 198.51.100.7 port 22 ssh2\n\
         Mar  1 10:00:09 gw sshd[41]: message repeated 5 times: [ Failed password for root from 198.51.100.7 port 22 ssh2]\n\
         Mar  1 10:00:09 gw sshd[42]: Failed password for invalid user message repeated 50 times: [ x from 198.51.100.8 port 22 ssh2\n",
    )
    .unwrap();
    let out = edgewarden(
        &["logs", "scan", "--json", log.to_str().unwrap()],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["files"][0]["lines"], 3, "{v}");
    assert_eq!(v["classes"]["auth_failure"], 7, "{v}");
    let alerts = v["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "{v}");
    assert_eq!(alerts[0]["kind"], "brute_force");
    assert_eq!(alerts[0]["source"], "198.51.100.7");
    assert_eq!(alerts[0]["line"], 2);
}
