//! The periodic audit inside `edgewarden run` (outbox mode): findings land in
//! `outbox/audit.jsonl`, remediation runs a real hook (rate-limited) on a finding and on a
//! violation, every action is recorded in `outbox/actions.jsonl`, and the reports carry the
//! audit and remediation custom metrics.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use integration_tests::edgewarden_bin;

/// A profile whose one behaviour is violated on every tick: a gateway always has processes.
const ALWAYS_VIOLATED: &str = r#"{"securityProfileName": "audit", "behaviors": [
  {"name": "no-processes-expected", "metric": "process_count",
   "criteria": {"comparisonOperator": "less-than", "value": {"number": 1},
                "consecutiveDatapointsToAlarm": 1, "consecutiveDatapointsToClear": 1}}]}"#;

fn stop(mut child: Child) {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            assert!(s.success(), "agent exit status {s:?}");
            return;
        }
        if t.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("agent did not stop within 10 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn lines(p: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

#[test]
fn run_audits_at_start_writes_findings_and_remediates_with_a_rate_limited_hook() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = d.join("device.key");
    std::fs::write(&key, "not a key; the audit looks at its mode").unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::write(d.join("profile.json"), ALWAYS_VIOLATED).unwrap();
    std::fs::write(
        d.join("hook.sh"),
        format!(
            "#!/bin/sh\n{{ cat; echo; }} >> {0}/hook-stdin.jsonl\nprintf '%s\\n' \"$EDGEWARDEN_TRIGGER\" >> {0}/hook-env.jsonl\n",
            d.display()
        ),
    )
    .unwrap();
    let cfg = d.join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"thing_name = "audit-gw"
state_dir = "{d}/state"
[collect]
interval = "200ms"
[report]
interval = "1s"
warm_up = "500ms"
[logs]
enabled = false
[detect]
profile = "{d}/profile.json"
[audit]
key_file = "{d}/device.key"
sshd_test = false
peer_state_dirs = []
[remediation]
enabled = true
dry_run = false
hook = ["/bin/sh", "{d}/hook.sh"]
[remediation.actions]
PRIVATE_KEY_PERMISSIVE = ["hook", "publish"]
no-processes-expected = ["hook"]
[remediation.max_per_hour]
hook = 1
"#,
            d = d.display()
        ),
    )
    .unwrap();
    let child = Command::new(edgewarden_bin())
        .args(["run", "--config", cfg.to_str().unwrap()])
        .env_remove("EDGEWARDEN_THING_NAME")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the agent starts");
    let outbox = d.join("state/outbox");
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(20) {
        let reports = std::fs::read_to_string(outbox.join("reports.jsonl")).unwrap_or_default();
        if lines(&outbox.join("actions.jsonl")).len() >= 3
            && reports.contains("remediation_actions")
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop(child);

    let findings = lines(&outbox.join("audit.jsonl"));
    let key_finding = findings
        .iter()
        .find(|f| f["checkName"] == "PRIVATE_KEY_PERMISSIVE")
        .expect("the world-readable key is found at start");
    assert_eq!(
        key_finding["resource"]["resourceIdentifier"]["path"],
        key.display().to_string()
    );
    assert_eq!(key_finding["thingName"], "audit-gw");
    assert_eq!(key_finding["severity"], "HIGH");

    let actions = lines(&outbox.join("actions.jsonl"));
    let hooks: Vec<&serde_json::Value> = actions.iter().filter(|a| a["action"] == "hook").collect();
    let done: Vec<&&serde_json::Value> = hooks.iter().filter(|a| a["outcome"] == "done").collect();
    assert_eq!(done.len(), 1, "hook budget is 1 per hour: {actions:#?}");
    assert!(
        hooks.iter().any(|a| a["outcome"] == "rate_limited"),
        "{actions:#?}"
    );
    assert!(hooks.iter().all(|a| a["dryRun"] == false));
    let triggers: std::collections::BTreeSet<&str> = hooks
        .iter()
        .map(|a| a["trigger"].as_str().unwrap())
        .collect();
    assert_eq!(
        triggers,
        ["PRIVATE_KEY_PERMISSIVE", "no-processes-expected"]
            .into_iter()
            .collect(),
        "both the finding and the violation reached remediation"
    );
    assert!(actions.iter().any(|a| a["action"] == "publish"
        && a["trigger"] == "PRIVATE_KEY_PERMISSIVE"
        && a["outcome"] == "done"));

    // The hook saw exactly what it was given, on stdin and in the environment.
    let stdin = lines(&d.join("hook-stdin.jsonl"));
    let env = lines(&d.join("hook-env.jsonl"));
    assert_eq!(stdin.len(), 1);
    assert_eq!(stdin, env);
    let id = stdin[0]
        .get("findingId")
        .or_else(|| stdin[0].get("violationId"))
        .expect("a finding or a violation");
    assert_eq!(id, &done[0]["triggerId"]);

    // publish without a transport: the outbox's remediation stream.
    let published = lines(&outbox.join("remediation.jsonl"));
    assert_eq!(published[0]["findingId"], key_finding["findingId"]);

    let reports = std::fs::read_to_string(outbox.join("reports.jsonl")).unwrap();
    assert!(reports.contains("audit_findings"), "{reports}");
    assert!(reports.contains("audit_noncompliant_checks"), "{reports}");
    assert!(reports.contains("PRIVATE_KEY_PERMISSIVE"), "{reports}");
    assert!(reports.contains("remediation_actions"), "{reports}");
    assert!(reports.contains("remediation_failures"), "{reports}");
}
