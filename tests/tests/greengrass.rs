//! The real agent binary as a Greengrass component, under the nucleus IPC emulator authorising
//! with the shipped recipe: every report valid and accepted in order in all three encodings,
//! violations published, a configuration update changing the report interval live, a dropped
//! connection losing nothing, publishes failing with ServiceError retried in order, a denied
//! topic counted while the rest flows, a refused token not
//! stopping the agent. Also the recipe's invariants.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use integration_tests::edgewarden_bin;
use integration_tests::emulator::Outcome;
use integration_tests::greengrass::{spawn, GgHandle, GgOptions};
use serde_json::{json, Value};

const THING: &str = "gg-gw";
const TOKEN: &str = "ABCDEFGHIJKLMNOP";

fn recipe_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/greengrass/recipe.json")
}

fn recipe() -> Value {
    serde_json::from_str(&std::fs::read_to_string(recipe_path()).unwrap()).unwrap()
}

/// A profile whose one behaviour is violated on every tick: a gateway always has processes.
const ALWAYS_VIOLATED: &str = r#"{"securityProfileName": "gg", "behaviors": [
  {"name": "no-processes-expected", "metric": "process_count",
   "criteria": {"comparisonOperator": "less-than", "value": {"number": 1},
                "consecutiveDatapointsToAlarm": 1, "consecutiveDatapointsToClear": 1}}]}"#;

/// Agent configuration without [mqtt]: the transport comes from the environment.
fn write_config(dir: &Path) -> PathBuf {
    let profile = dir.join("profile.json");
    std::fs::write(&profile, ALWAYS_VIOLATED).unwrap();
    let cfg = dir.join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"thing_name = "from-the-file"
state_dir = "{state}"
[collect]
interval = "300ms"
[report]
warm_up = "500ms"
[logs]
enabled = false
[detect]
profile = "{profile}"
"#,
            state = dir.join("state").display(),
            profile = profile.display(),
        ),
    )
    .unwrap();
    cfg
}

/// The agent process; killed if a test fails before stopping it.
struct Agent(Option<Child>);

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start_agent(cfg: &Path, socket: &Path, token: &str) -> Agent {
    let child = Command::new(edgewarden_bin())
        .args(["run", "--config", cfg.to_str().unwrap()])
        .env(
            "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT",
            socket,
        )
        .env("SVCUID", token)
        .env("AWS_IOT_THING_NAME", THING)
        .env_remove("EDGEWARDEN_THING_NAME")
        .env_remove("EDGEWARDEN_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the agent starts");
    Agent(Some(child))
}

fn stop_agent(mut agent: Agent) {
    let mut child = agent.0.take().expect("a running agent");
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
        if t.elapsed() > Duration::from_secs(5) {
            let _ = child.kill();
            panic!("agent did not stop within the nucleus's 5 s stop window");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn emulator(dir: &Path) -> GgHandle {
    let mut o = GgOptions::new(dir.join("ipc.socket"))
        .with_recipe(&recipe_path())
        .unwrap();
    o.svcuid = Some(TOKEN.into());
    o.record = Some(dir.join("publishes.jsonl"));
    spawn(o).unwrap()
}

/// Sets the component configuration the way a deployment would: this wins over the agent's
/// TOML file, so the test intervals go here.
fn configure(h: &GgHandle, report_interval: &str, format: &str) {
    h.update_config(&json!({
        "report": {"interval": report_interval, "format": format},
        "collect": {"interval": "300ms"},
        "logs": {"enabled": false},
    }));
}

fn accepted(h: &GgHandle) -> usize {
    h.exchanges()
        .iter()
        .filter(|e| e.outcome == Outcome::Accepted)
        .count()
}

/// Every exchange accepted, report ids strictly increasing (in order, no duplicates).
fn assert_all_accepted_in_order(h: &GgHandle) {
    let ex = h.exchanges();
    assert!(!ex.is_empty());
    let mut last = 0;
    for e in &ex {
        assert_eq!(e.outcome, Outcome::Accepted, "{e}");
        assert_eq!(e.thing, THING);
        let id = e.report_id.unwrap();
        assert!(id > last, "report {id} after {last}: out of order");
        last = id;
    }
}

/// Nothing is left unacknowledged in the agent's spool.
fn assert_spool_empty(dir: &Path) {
    let spool = edgewarden::spool::Spool::open(
        &dir.join("state/spool"),
        &edgewarden::config::SpoolConfig {
            max_bytes: 16 << 20,
            max_records: 100_000,
        },
    )
    .unwrap();
    assert_eq!(spool.len(), 0, "records left in the spool");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_reports_through_the_nucleus_in_every_encoding() {
    for format in ["json", "json-short", "cbor"] {
        let dir = tempfile::tempdir().unwrap();
        let h = emulator(dir.path());
        configure(&h, "1s", format);
        let agent = start_agent(&write_config(dir.path()), h.socket(), TOKEN);
        let ok = h
            .wait_for(Duration::from_secs(30), |h| {
                accepted(h) >= 3
                    && h.published()
                        .iter()
                        .any(|p| p.topic == format!("edgewarden/{THING}/violations"))
            })
            .await;
        stop_agent(agent);
        assert!(
            ok,
            "{format}: {} reports accepted, published topics {:?}",
            accepted(&h),
            h.published().iter().map(|p| &p.topic).collect::<Vec<_>>()
        );
        assert_all_accepted_in_order(&h);
        let suffix = if format == "cbor" { "cbor" } else { "json" };
        for e in h.exchanges() {
            assert_eq!(
                e.topic,
                format!("$aws/things/{THING}/defender/metrics/{suffix}")
            );
        }
        assert!(h.published().iter().all(|p| p.qos == "1"));
        assert!(h.denied().is_empty(), "{:?}", h.denied());
        assert_eq!(h.states(), ["RUNNING"]);
        assert_spool_empty(dir.path());
        // The record file has one line per publish, with the payload in base64.
        let lines = std::fs::read_to_string(dir.path().join("publishes.jsonl")).unwrap();
        let first: Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
        assert_eq!(first["qos"], "1");
        assert!(first["payload"].as_str().is_some());
        assert_eq!(lines.lines().count(), h.published().len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_update_changes_the_report_interval_live() {
    let dir = tempfile::tempdir().unwrap();
    let h = emulator(dir.path());
    configure(&h, "1h", "json");
    let agent = start_agent(&write_config(dir.path()), h.socket(), TOKEN);
    assert!(
        h.wait_for(Duration::from_secs(20), |h| accepted(h) == 1
            && h.config_subscriptions() == 1)
            .await,
        "the first report (after the warm-up) did not arrive"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        accepted(&h),
        1,
        "a second report came within the 1 h interval"
    );
    let changed = h.update_config(&json!({"report": {"interval": "1s"}}));
    assert_eq!(
        changed,
        vec![vec!["report".to_owned(), "interval".to_owned()]]
    );
    let ok = h
        .wait_for(Duration::from_secs(20), |h| accepted(h) >= 4)
        .await;
    stop_agent(agent);
    assert!(
        ok,
        "only {} reports after the interval became 1 s",
        accepted(&h)
    );
    assert_eq!(
        h.connects(),
        1,
        "the change must not need a reconnect or a restart"
    );
    assert_all_accepted_in_order(&h);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_connection_mid_run_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let h = emulator(dir.path());
    configure(&h, "1s", "json");
    let agent = start_agent(&write_config(dir.path()), h.socket(), TOKEN);
    assert!(
        h.wait_for(Duration::from_secs(20), |h| accepted(h) >= 2)
            .await
    );
    // The nucleus goes away while a publish is on the wire: not recorded, not answered.
    h.drop_on_publish(1);
    assert!(
        h.wait_for(Duration::from_secs(20), |h| h.connects() >= 2)
            .await
    );
    let before = accepted(&h);
    h.drop_on_publish(3);
    let ok = h
        .wait_for(Duration::from_secs(30), |h| {
            h.connects() >= 3 && accepted(h) >= before + 3
        })
        .await;
    stop_agent(agent);
    assert!(ok, "connects {}, accepted {}", h.connects(), accepted(&h));
    assert_all_accepted_in_order(&h);
    // Every report and violation the agent stored was acknowledged by the nucleus, hence
    // recorded by it: nothing was lost.
    assert_spool_empty(dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_errors_keep_records_spooled_and_reports_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let h = emulator(dir.path());
    configure(&h, "1s", "json");
    let agent = start_agent(&write_config(dir.path()), h.socket(), TOKEN);
    assert!(
        h.wait_for(Duration::from_secs(20), |h| accepted(h) >= 1)
            .await
    );
    h.fail_publishes(3);
    let before = accepted(&h);
    let ok = h
        .wait_for(Duration::from_secs(30), |h| accepted(h) >= before + 4)
        .await;
    stop_agent(agent);
    assert!(ok, "accepted {}", accepted(&h));
    assert_eq!(
        h.connects(),
        1,
        "a ServiceError must not cost the connection"
    );
    assert_all_accepted_in_order(&h);
    assert_spool_empty(dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_topic_is_counted_and_keeps_its_records_while_reports_flow() {
    let dir = tempfile::tempdir().unwrap();
    // A recipe whose publish policy leaves out the violations topic.
    let mut r = recipe();
    let resources = r
        .pointer_mut("/ComponentConfiguration/DefaultConfiguration/accessControl/aws.greengrass.ipc.mqttproxy/com.edgewarden.Agent:mqttproxy:1/resources")
        .unwrap();
    *resources = json!(["$aws/things/+/defender/metrics/json"]);
    let path = dir.path().join("recipe.json");
    std::fs::write(&path, serde_json::to_vec(&r).unwrap()).unwrap();
    let mut o = GgOptions::new(dir.path().join("ipc.socket"))
        .with_recipe(&path)
        .unwrap();
    o.svcuid = Some(TOKEN.into());
    let h = spawn(o).unwrap();
    configure(&h, "1s", "json");
    let agent = start_agent(&write_config(dir.path()), h.socket(), TOKEN);
    let ok = h
        .wait_for(Duration::from_secs(30), |h| {
            accepted(h) >= 3 && !h.denied().is_empty()
        })
        .await;
    stop_agent(agent);
    assert!(ok, "accepted {}, denied {:?}", accepted(&h), h.denied());
    assert_all_accepted_in_order(&h);
    assert!(h
        .published()
        .iter()
        .all(|p| !p.topic.ends_with("/violations")));
    let violations = format!("edgewarden/{THING}/violations");
    let (_, message) = h
        .denied()
        .into_iter()
        .find(|(topic, _)| *topic == violations)
        .unwrap_or_else(|| panic!("no denied publish on {violations}: {:?}", h.denied()));
    assert!(message.contains("not authorized"), "{message}");
    // The denied violations (and audit findings) stay spooled for when the policy allows them.
    let spool = edgewarden::spool::Spool::open(
        &dir.path().join("state/spool"),
        &edgewarden::config::SpoolConfig {
            max_bytes: 16 << 20,
            max_records: 100_000,
        },
    )
    .unwrap();
    assert!(!spool.is_empty());
    for id in spool.pending_ids() {
        let topic = spool.topic_of(id).unwrap();
        assert!(
            topic.ends_with("/violations") || topic.ends_with("/audit"),
            "{topic}"
        );
    }
    // The latest report carries the count of refused publishes.
    let last = h.exchanges().last().unwrap().document.clone().unwrap();
    let refused = &last["custom_metrics"]["mqtt_publish_auth_errors"][0]["number"];
    assert!(refused.as_f64().is_some_and(|n| n >= 1.0), "{last}");
    assert!(
        last["custom_metrics"]["ipc_protocol_errors"].is_array(),
        "{last}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_does_not_stop_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let h = emulator(dir.path());
    let mut agent = start_agent(&write_config(dir.path()), h.socket(), "NOT-THE-TOKEN");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        agent.0.as_mut().unwrap().try_wait().unwrap().is_none(),
        "the agent exited"
    );
    assert_eq!(h.connects(), 0);
    assert!(h.published().is_empty());
    stop_agent(agent);
}

#[test]
fn the_recipe_keeps_its_invariants() {
    let r = recipe();
    assert_eq!(r["RecipeFormatVersion"], "2020-01-25");
    assert_eq!(r["ComponentName"], "com.edgewarden.Agent");
    assert_eq!(r["ComponentVersion"], env!("CARGO_PKG_VERSION"));
    let manifests = r["Manifests"].as_array().unwrap();
    let archs: Vec<(String, Option<String>)> = manifests
        .iter()
        .map(|m| {
            let p = &m["Platform"];
            assert_eq!(p["os"], "linux");
            assert_eq!(p["runtime"], "*", "every manifest must name a runtime");
            (
                p["architecture"].as_str().unwrap().to_owned(),
                p["architecture.detail"].as_str().map(str::to_owned),
            )
        })
        .collect();
    let armv6 = archs
        .iter()
        .position(|a| a.1.as_deref() == Some("armv6l"))
        .unwrap();
    let arm = archs
        .iter()
        .position(|a| a.0 == "arm" && a.1.is_none())
        .unwrap();
    assert!(
        armv6 < arm,
        "the armv6l manifest must come before the generic arm one"
    );
    assert!(archs.iter().any(|a| a.0 == "aarch64"));
    assert!(archs.iter().any(|a| a.0 == "amd64"));
    for m in manifests {
        assert_eq!(m["Lifecycle"]["Setenv"]["MALLOC_ARENA_MAX"], "1");
        let script = m["Lifecycle"]["Run"]["Script"].as_str().unwrap();
        assert!(
            script.starts_with("exec "),
            "{script}: the agent must receive SIGTERM itself"
        );
        let artifacts = m["Artifacts"].as_array().unwrap();
        assert_eq!(artifacts.len(), 1);
        let uri = artifacts[0]["URI"].as_str().unwrap();
        let zip = uri.rsplit('/').next().unwrap();
        let stem = zip.strip_suffix(".zip").unwrap();
        assert!(uri.contains(&format!("/{}/", env!("CARGO_PKG_VERSION"))));
        assert!(
            script.contains(&format!("{{artifacts:decompressedPath}}/{stem}/edgewarden")),
            "{script} does not run the binary of {zip}"
        );
    }
    // Publishing is limited to the Defender, violations and audit topics, subscribing to the answers.
    let ac = integration_tests::greengrass::AccessControl::from_configuration(
        &r["ComponentConfiguration"]["DefaultConfiguration"],
    )
    .unwrap();
    let publish = "aws.greengrass#PublishToIoTCore";
    let subscribe = "aws.greengrass#SubscribeToIoTCore";
    assert!(ac.allows(publish, "$aws/things/gw/defender/metrics/json"));
    assert!(ac.allows(publish, "$aws/things/gw/defender/metrics/cbor"));
    assert!(ac.allows(publish, "edgewarden/gw/violations"));
    assert!(ac.allows(publish, "edgewarden/gw/audit"));
    assert!(!ac.allows(publish, "$aws/things/gw/shadow/update"));
    assert!(!ac.allows(publish, "$aws/things/gw/defender/metrics/json/accepted"));
    assert!(ac.allows(subscribe, "$aws/things/gw/defender/metrics/json/accepted"));
    assert!(ac.allows(subscribe, "$aws/things/gw/defender/metrics/cbor/rejected"));
    assert!(!ac.allows(subscribe, "$aws/things/gw/defender/metrics/json"));
    assert!(!ac.allows(subscribe, "#"));
}
