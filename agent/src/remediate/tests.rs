//! Remediation with real commands: a hook that records its input, one that fails, one that
//! hangs; `nft` missing; `block_source` against real nftables in a network namespace when root.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::*;
use crate::config::Config;

fn config(extra: &str) -> RemediationConfig {
    Config::from_toml(&format!("[remediation]\nenabled = true\n{extra}"))
        .unwrap_or_else(|e| panic!("{e}"))
        .remediation
}

fn trigger(name: &str, source: Option<&str>) -> Trigger {
    Trigger {
        name: name.into(),
        id: "0123456789abcdef".into(),
        source: source.map(|s| s.parse().unwrap()),
        json: format!(r#"{{"checkName":"{name}","findingId":"0123456789abcdef"}}"#).into_bytes(),
    }
}

fn script(dir: &Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    p.display().to_string()
}

#[test]
fn hook_gets_the_trigger_on_stdin_and_in_the_environment_and_its_status_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("seen");
    let hook = script(
        dir.path(),
        "hook.sh",
        &format!(
            "cat > {0}.stdin\nprintf '%s' \"$EDGEWARDEN_TRIGGER\" > {0}.env\nexit 0",
            rec.display()
        ),
    );
    let cfg = config(&format!(
        "dry_run = false\nhook = [\"/bin/sh\", \"{hook}\"]\n[remediation.actions]\nSSH_WEAK_CONFIG = [\"hook\"]\n"
    ));
    let mut r = Remediator::new(&cfg, "gw");
    let t = trigger("SSH_WEAK_CONFIG", None);
    let h = r.handle(&t, Instant::now(), 42);
    assert_eq!(h.records.len(), 1);
    assert_eq!(h.records[0].outcome, Outcome::Done, "{:?}", h.records);
    assert_eq!(h.records[0].detail, "exit 0");
    assert_eq!(h.records[0].trigger_id, "0123456789abcdef");
    assert_eq!(
        std::fs::read(format!("{}.stdin", rec.display())).unwrap(),
        t.json
    );
    assert_eq!(
        std::fs::read(format!("{}.env", rec.display())).unwrap(),
        t.json
    );
    // Untouched names do nothing.
    assert!(r
        .handle(&trigger("LOGGING_DISABLED", None), Instant::now(), 43)
        .records
        .is_empty());
}

#[test]
fn failing_and_hanging_hooks_are_recorded_as_failures() {
    let dir = tempfile::tempdir().unwrap();
    let fail = script(
        dir.path(),
        "fail.sh",
        "echo 'no route to ticket system' >&2\nexit 3",
    );
    let cfg = config(&format!(
        "dry_run = false\nhook = [\"/bin/sh\", \"{fail}\"]\n[remediation.actions]\nX = [\"hook\"]\n"
    ));
    let h = Remediator::new(&cfg, "gw").handle(&trigger("X", None), Instant::now(), 1);
    assert_eq!(h.records[0].outcome, Outcome::Failed);
    assert_eq!(h.records[0].detail, "exit 3: no route to ticket system");

    let hang = script(dir.path(), "hang.sh", "exec sleep 30");
    let cfg = config(&format!(
        "dry_run = false\nhook = [\"/bin/sh\", \"{hang}\"]\nhook_timeout = \"300ms\"\n[remediation.actions]\nX = [\"hook\"]\n"
    ));
    let started = Instant::now();
    let h = Remediator::new(&cfg, "gw").handle(&trigger("X", None), Instant::now(), 1);
    assert_eq!(h.records[0].outcome, Outcome::Failed);
    assert!(h.records[0].detail.contains("timeout"), "{:?}", h.records);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the hang was cut short"
    );

    let cfg = config(
        "dry_run = false\nhook = [\"/nonexistent/hook\"]\n[remediation.actions]\nX = [\"hook\"]\n",
    );
    let h = Remediator::new(&cfg, "gw").handle(&trigger("X", None), Instant::now(), 1);
    assert_eq!(h.records[0].outcome, Outcome::Failed);
    assert!(h.records[0]
        .detail
        .contains("cannot start /nonexistent/hook"));
}

#[test]
fn dry_run_records_what_would_run_and_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let cfg = config(&format!(
        "hook = [\"touch\", \"{}\"]\nlogging_command = [\"touch\", \"{}\"]\n[remediation.actions]\nLOGGING_DISABLED = [\"reenable_logging\", \"hook\", \"publish\"]\n",
        marker.display(),
        marker.display()
    ));
    assert!(cfg.dry_run, "dry run is the default");
    let h =
        Remediator::new(&cfg, "gw").handle(&trigger("LOGGING_DISABLED", None), Instant::now(), 1);
    let got: Vec<(&str, Outcome)> = h
        .records
        .iter()
        .map(|r| (r.action.as_str(), r.outcome))
        .collect();
    assert_eq!(
        got,
        vec![
            ("reenable_logging", Outcome::DryRun),
            ("hook", Outcome::DryRun),
            ("publish", Outcome::DryRun)
        ]
    );
    assert!(h.records[0].detail.starts_with("would run: touch"));
    assert!(h.publish.is_empty());
    assert!(!marker.exists());
}

#[test]
fn publish_and_reenable_logging_carry_out_their_commands() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("journal-restarted");
    let cfg = config(&format!(
        "dry_run = false\nlogging_command = [\"touch\", \"{}\"]\n[remediation.actions]\nLOGGING_DISABLED = [\"reenable_logging\", \"publish\"]\n",
        marker.display()
    ));
    let t = trigger("LOGGING_DISABLED", None);
    let h = Remediator::new(&cfg, "gw-7").handle(&t, Instant::now(), 1);
    assert!(
        h.records.iter().all(|r| r.outcome == Outcome::Done),
        "{:?}",
        h.records
    );
    assert!(marker.exists());
    assert_eq!(
        h.publish,
        vec![("edgewarden/gw-7/remediation".to_owned(), t.json.clone())]
    );
}

#[test]
fn every_action_is_rate_limited_on_its_own() {
    let cfg = config(
        "dry_run = false\n[remediation.actions]\nbrute_force = [\"publish\"]\n[remediation.max_per_hour]\npublish = 2\n",
    );
    let mut r = Remediator::new(&cfg, "gw");
    let t0 = Instant::now();
    let outcomes: Vec<Outcome> = (0..4)
        .map(|i| {
            r.handle(
                &trigger("brute_force", None),
                t0 + Duration::from_secs(i),
                1,
            )
            .records[0]
                .outcome
        })
        .collect();
    assert_eq!(
        outcomes,
        vec![
            Outcome::Done,
            Outcome::Done,
            Outcome::RateLimited,
            Outcome::RateLimited
        ]
    );
    let later = r.handle(
        &trigger("brute_force", None),
        t0 + Duration::from_secs(3600),
        1,
    );
    assert_eq!(later.records[0].outcome, Outcome::Done);
}

#[test]
fn block_source_refuses_loopback_allow_listed_and_missing_sources() {
    let cfg = config(
        "dry_run = false\nnft = \"/nonexistent/nft\"\nallow_list = [\"192.168.0.0/16\"]\n[remediation.actions]\nbrute_force = [\"block_source\"]\n",
    );
    let mut r = Remediator::new(&cfg, "gw");
    for (src, why) in [
        (Some("127.0.0.1"), "loopback"),
        (Some("::1"), "loopback"),
        (Some("192.168.1.50"), "allow-listed (192.168.0.0/16)"),
        (None, "no source address"),
    ] {
        let h = r.handle(&trigger("brute_force", src), Instant::now(), 1);
        assert_eq!(h.records[0].outcome, Outcome::Refused, "{src:?}");
        assert!(h.records[0].detail.contains(why), "{:?}", h.records[0]);
    }
}

#[test]
fn block_source_without_nft_is_a_failure_with_the_reason() {
    let cfg = config(
        "dry_run = false\nnft = \"/nonexistent/nft\"\n[remediation.actions]\nbrute_force = [\"block_source\"]\n",
    );
    let h = Remediator::new(&cfg, "gw").handle(
        &trigger("brute_force", Some("203.0.113.9")),
        Instant::now(),
        1,
    );
    assert_eq!(h.records[0].outcome, Outcome::Failed);
    assert_eq!(h.records[0].target.as_deref(), Some("203.0.113.9"));
    assert!(
        h.records[0]
            .detail
            .contains("cannot start /nonexistent/nft"),
        "{:?}",
        h.records
    );
}

/// Why the real-nftables test cannot run here, if it cannot.
fn netns_unavailable() -> Option<String> {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_owned))
        });
    if uid.as_deref() != Some("0") {
        return Some("not root (network namespaces and nftables need CAP_NET_ADMIN)".into());
    }
    for tool in ["nft", "ip"] {
        let found = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
            .iter()
            .any(|d| Path::new(d).join(tool).exists());
        if !found {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn block_source_adds_the_address_to_a_real_nftables_set_in_a_network_namespace() {
    if let Some(why) = netns_unavailable() {
        eprintln!("SKIPPED: block_source against real nftables: {why}");
        return;
    }
    let name = format!("ew-remediate-{}", std::process::id());
    let ok = Command::new("ip").args(["netns", "add", &name]).status();
    if !ok.map(|s| s.success()).unwrap_or(false) {
        eprintln!("SKIPPED: block_source against real nftables: cannot create a network namespace");
        return;
    }
    let ns = Netns(name);
    let dir = tempfile::tempdir().unwrap();
    // nft, inside the namespace: the host's ruleset is never touched.
    let nft = script(
        dir.path(),
        "nft-in-netns",
        &format!("exec ip netns exec {} nft \"$@\"", ns.0),
    );
    std::fs::set_permissions(&nft, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let cfg = config(&format!(
        "dry_run = false\nnft = \"{nft}\"\nblock_timeout = \"10m\"\n[remediation.actions]\nbrute_force = [\"block_source\"]\n"
    ));
    let mut r = Remediator::new(&cfg, "gw");
    for src in ["203.0.113.9", "2001:db8::66", "198.51.100.7"] {
        let h = r.handle(&trigger("brute_force", Some(src)), Instant::now(), 1);
        assert_eq!(h.records[0].outcome, Outcome::Done, "{:?}", h.records);
    }
    let list = |set: &str| {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.0,
                "nft",
                "list",
                "set",
                "inet",
                "edgewarden",
                set,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let v4 = list("blocked");
    assert!(v4.contains("203.0.113.9 timeout 10m"), "{v4}");
    assert!(v4.contains("198.51.100.7"), "{v4}");
    assert!(list("blocked6").contains("2001:db8::66"));
    let chain = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.0,
            "nft",
            "list",
            "chain",
            "inet",
            "edgewarden",
            "input",
        ])
        .output()
        .unwrap();
    let chain = String::from_utf8_lossy(&chain.stdout);
    assert!(chain.contains("ip saddr @blocked drop"), "{chain}");
    assert_eq!(
        chain.matches("drop").count(),
        2,
        "rules created once: {chain}"
    );
}
