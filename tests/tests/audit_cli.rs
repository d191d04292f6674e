//! `edgewarden audit` on fixture trees: exit codes, the JSON golden output, bad input.
//!
//! The trees live in `tests/fixtures/audit/<case>/`; git keeps no file modes beyond the
//! executable bit, so each test copies its tree and sets the modes it needs.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use integration_tests::edgewarden_bin;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/audit")
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Copies `<case>/` and `<case>.toml`; returns (temp dir, root, config).
fn case(name: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    copy_tree(&fixtures().join(name), &root);
    let cfg = dir.path().join("edgewarden.toml");
    std::fs::copy(fixtures().join(format!("{name}.toml")), &cfg).unwrap();
    chmod(&cfg, 0o640);
    chmod(&root.join("etc/edgewarden/device.key"), 0o600);
    std::fs::create_dir_all(root.join("var/lib/edgewarden")).unwrap();
    chmod(&root.join("var/lib/edgewarden"), 0o750);
    (dir, root, cfg)
}

fn audit(args: &[&str]) -> std::process::Output {
    Command::new(edgewarden_bin())
        .arg("audit")
        .args(args)
        .env_remove("EDGEWARDEN_THING_NAME")
        .env_remove("EDGEWARDEN_CONFIG")
        .output()
        .expect("the binary runs")
}

/// The report with its times zeroed (they are the wall clock).
fn normalized(stdout: &[u8]) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_slice(stdout).expect("audit --json is JSON");
    v["auditTime"] = 0.into();
    for f in v["findings"].as_array_mut().unwrap() {
        f["findingTime"] = 0.into();
    }
    v
}

#[test]
fn audit_json_of_the_weak_tree_matches_the_golden_output_and_exits_4() {
    let (_dir, root, cfg) = case("weak");
    chmod(&root.join("etc/edgewarden/device.key"), 0o644);
    chmod(&root.join("var/lib/edgewarden"), 0o777);
    let out = audit(&[
        "--json",
        "--root",
        root.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = normalized(&out.stdout);
    let golden = fixtures().join("weak.expected.json");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        let mut s = serde_json::to_string_pretty(&got).unwrap();
        s.push('\n');
        std::fs::write(&golden, s).unwrap();
    }
    let want: serde_json::Value = serde_json::from_slice(&std::fs::read(&golden).unwrap()).unwrap();
    assert_eq!(
        got,
        want,
        "got:\n{}",
        serde_json::to_string_pretty(&got).unwrap()
    );
}

#[test]
fn audit_of_the_hardened_tree_finds_nothing_and_exits_0() {
    let (_dir, root, cfg) = case("clean");
    let out = audit(&[
        "--root",
        root.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.lines().last().unwrap().starts_with("0 findings"),
        "{text}"
    );
    // Nothing configured to look at is said, not passed over in silence.
    assert!(
        text.contains("SKIPPED  DEVICE_CERTIFICATE_EXPIRED: no device certificate configured"),
        "{text}"
    );
}

#[test]
fn medium_findings_only_exit_3_with_a_readable_text_report() {
    let (_dir, root, cfg) = case("clean");
    std::fs::write(
        root.join("etc/ssh/sshd_config"),
        "PermitRootLogin no\nPermitEmptyPasswords no\n",
    )
    .unwrap();
    let out = audit(&[
        "--root",
        root.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(
        text.contains("MEDIUM   SSH_WEAK_CONFIG  SSH_SETTING setting=PasswordAuthentication"),
        "{text}"
    );
    assert!(
        text.contains("fix: Set PasswordAuthentication no"),
        "{text}"
    );
}

#[test]
fn audit_with_a_bad_config_or_root_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[audit]\ninterval = \"often\"\n").unwrap();
    let out = audit(&["--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2: audit.interval"));

    let out = audit(&["--root", dir.path().join("nope").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a directory"));
}

#[test]
fn unreadable_files_become_errors_and_the_rest_of_the_audit_runs() {
    let (_dir, root, cfg) = case("clean");
    // Directories where files should be: unreadable whoever runs the test.
    std::fs::remove_file(root.join("etc/ssh/sshd_config")).unwrap();
    std::fs::create_dir(root.join("etc/ssh/sshd_config")).unwrap();
    std::fs::remove_file(root.join("proc/net/tcp")).unwrap();
    std::fs::create_dir(root.join("proc/net/tcp")).unwrap();
    std::fs::write(
        root.join("etc/mosquitto/mosquitto.conf"),
        "allow_anonymous true\n",
    )
    .unwrap();
    let out = audit(&[
        "--json",
        "--root",
        root.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(4));
    let v = normalized(&out.stdout);
    let errors: Vec<String> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["resource"].as_str().unwrap(),
                e["message"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("/etc/ssh/sshd_config cannot read")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("/proc/net/tcp cannot read")),
        "{errors:?}"
    );
    assert_eq!(v["findings"][0]["resource"]["resourceType"], "MQTT_BROKER");
}
