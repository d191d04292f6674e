//! The real agent binary against a real mosquitto over mutual TLS, with the Device Defender
//! emulator answering: every report it publishes is valid by the service's strict rules and
//! accepted, in order; local violations arrive on the violations topic; SIGTERM stops it cleanly
//! with nothing left in the spool.
#![cfg(feature = "broker-tests")]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use integration_tests::broker::{Broker, Identity, Pki, ThingAccess, Validity};
use integration_tests::edgewarden_bin;
use integration_tests::emulator::{Emulator, EmulatorHandle, EmulatorOptions, Outcome, TlsOptions};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS, TlsConfiguration, Transport};

const THING: &str = "e2e-gw";

/// A profile whose one behaviour is violated on every tick: a gateway always has processes.
const ALWAYS_VIOLATED: &str = r#"{"securityProfileName": "e2e", "behaviors": [
  {"name": "no-processes-expected", "metric": "process_count",
   "criteria": {"comparisonOperator": "less-than", "value": {"number": 1},
                "consecutiveDatapointsToAlarm": 1, "consecutiveDatapointsToClear": 1}}]}"#;

fn write_config(
    dir: &Path,
    broker: &Broker,
    pki: &Pki,
    id: &Identity,
    format: &str,
) -> std::path::PathBuf {
    write_config_with(dir, broker, pki, id, format, "300ms", "1s")
}

fn write_config_with(
    dir: &Path,
    broker: &Broker,
    pki: &Pki,
    id: &Identity,
    format: &str,
    collect_interval: &str,
    report_interval: &str,
) -> std::path::PathBuf {
    let profile = dir.join("profile.json");
    std::fs::write(&profile, ALWAYS_VIOLATED).unwrap();
    let cfg = dir.join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"thing_name = "{THING}"
state_dir = "{state}"
[collect]
interval = "{collect_interval}"
[report]
interval = "{report_interval}"
warm_up = "500ms"
format = "{format}"
[logs]
enabled = false
[detect]
profile = "{profile}"
[mqtt]
endpoint = "localhost"
port = {port}
ca_file = "{ca}"
cert_file = "{cert}"
key_file = "{key}"
reconnect_min = "100ms"
reconnect_max = "1s"
response_timeout = "5s"
"#,
            state = dir.join("state").display(),
            profile = profile.display(),
            port = broker.port(),
            ca = pki.ca_file().display(),
            cert = id.cert.display(),
            key = id.key.display(),
        ),
    )
    .unwrap();
    cfg
}

fn start_agent(cfg: &Path) -> Child {
    Command::new(edgewarden_bin())
        .args(["run", "--config", cfg.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the agent starts")
}

fn stop_agent(mut child: Child) {
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
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "agent did not stop within 5 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Subscribes to the violations topic as the emulator's identity.
async fn violations_listener(
    broker: &Broker,
    pki: &Pki,
) -> tokio::sync::mpsc::UnboundedReceiver<Vec<u8>> {
    let id = broker.emulator_identity();
    let mut o = MqttOptions::new(
        format!("violations-{}", std::process::id()),
        "localhost",
        broker.port(),
    );
    o.set_transport(Transport::Tls(TlsConfiguration::Simple {
        ca: std::fs::read(pki.ca_file()).unwrap(),
        alpn: None,
        client_auth: Some((
            std::fs::read(&id.cert).unwrap(),
            std::fs::read(&id.key).unwrap(),
        )),
    }));
    let (client, mut ev) = AsyncClient::new(o, 64);
    client
        .subscribe(format!("edgewarden/{THING}/violations"), QoS::AtLeastOnce)
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (sub_tx, sub_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _client = client;
        let mut sub_tx = Some(sub_tx);
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Incoming::SubAck(_))) => {
                    if let Some(t) = sub_tx.take() {
                        let _ = t.send(());
                    }
                }
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    let _ = tx.send(p.payload.to_vec());
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), sub_rx)
        .await
        .expect("the violations subscription is granted")
        .unwrap();
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_delivers_valid_reports_and_violations_over_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let Some((pki, broker, emulator)) = broker_and_emulator(dir.path()).await else {
        return;
    };
    let mut violations = violations_listener(&broker, &pki).await;
    let id = pki.client(THING, Validity::Current).unwrap();

    for format in ["json-short", "cbor", "json"] {
        let run_dir = dir.path().join(format);
        std::fs::create_dir_all(&run_dir).unwrap();
        let cfg = write_config(&run_dir, &broker, &pki, &id, format);
        let before = emulator.count();
        let agent = start_agent(&cfg);
        let deadline = Instant::now() + Duration::from_secs(30);
        while emulator.count() < before + 3 {
            assert!(
                Instant::now() < deadline,
                "{format}: the emulator saw {} reports in 30 s\nbroker log:\n{}",
                emulator.count() - before,
                broker.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop_agent(agent);
        tokio::time::sleep(Duration::from_millis(500)).await;

        let (exchanges, _) = emulator.exchanges_since(before);
        let mut last = 0;
        for x in &exchanges {
            assert_eq!(x.thing, THING);
            assert_eq!(
                x.outcome,
                Outcome::Accepted,
                "{format}: {:?} {:?}",
                x.problems,
                x.topic
            );
            assert!(
                x.problems.is_empty() && x.flags.is_empty(),
                "{format}: {:?} {:?}",
                x.problems,
                x.flags
            );
            let rid = x.report_id.unwrap();
            assert!(
                rid > last,
                "{format}: report ids must increase ({rid} after {last})"
            );
            last = rid;
            let doc = x.document.as_ref().unwrap();
            assert!(
                doc["custom_metrics"]["local_violations"][0]["number"]
                    .as_f64()
                    .unwrap_or(0.0)
                    >= 1.0
                    || doc["custom_metrics"].get("local_violations").is_none(),
                "{format}: {doc}"
            );
        }
        let suffix = if format == "cbor" { "cbor" } else { "json" };
        assert!(
            exchanges.iter().all(|x| x.topic.ends_with(suffix)),
            "{format}"
        );
        // Everything published was acknowledged before the agent exited.
        let spool = run_dir.join("state/spool");
        let depth = edgewarden::spool::Spool::open(
            &spool,
            &edgewarden::config::Config::embedded_default().spool,
        )
        .unwrap()
        .len();
        assert_eq!(
            depth, 0,
            "{format}: records left in the spool after a clean stop"
        );
    }

    // The always-violated behaviour raised violations, published on our own topic.
    let v = tokio::time::timeout(Duration::from_secs(5), violations.recv())
        .await
        .expect("a violation on the violations topic")
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&v).unwrap();
    assert_eq!(v["thingName"], THING);
    assert_eq!(v["behavior"]["name"], "no-processes-expected");
    assert_eq!(v["violationEventType"], "in-alarm");
    assert!(
        v["explanation"].as_str().unwrap().contains("process_count"),
        "{v}"
    );
}

/// Starts mosquitto and the Device Defender emulator; `None` (after printing why) without
/// mosquitto.
async fn broker_and_emulator(dir: &Path) -> Option<(Pki, Broker, EmulatorHandle)> {
    if Command::new("mosquitto").arg("-h").output().is_err()
        && !Path::new("/usr/sbin/mosquitto").exists()
    {
        eprintln!("SKIPPED agent end-to-end test: mosquitto is not installed");
        return None;
    }
    let pki = Pki::new(dir, "e2e").unwrap();
    let broker = Broker::start(dir, &pki, &[(THING, ThingAccess::ReadWrite)]).unwrap();
    let em = broker.emulator_identity().clone();
    let mut opts = EmulatorOptions::new("localhost", broker.port());
    opts.tls = Some(TlsOptions {
        ca_file: pki.ca_file().to_owned(),
        client_auth: Some((em.cert.clone(), em.key.clone())),
        alpn: None,
    });
    let emulator = Emulator::spawn(opts)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", broker.log()));
    Some((pki, broker, emulator))
}

async fn wait_for_reports(emulator: &EmulatorHandle, broker: &Broker, n: usize, within: Duration) {
    let deadline = Instant::now() + within;
    while emulator.count() < n {
        assert!(
            Instant::now() < deadline,
            "the emulator saw {} of {n} reports in {within:?}\nbroker log:\n{}",
            emulator.count(),
            broker.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_due_at_sigterm_is_accepted_before_the_agent_exits() {
    let dir = tempfile::tempdir().unwrap();
    let Some((pki, broker, emulator)) = broker_and_emulator(dir.path()).await else {
        return;
    };
    let id = pki.client(THING, Validity::Current).unwrap();
    // One report after the warm-up, the next not for an hour: the only other report is the
    // final one written at SIGTERM.
    let cfg = write_config_with(dir.path(), &broker, &pki, &id, "json", "200ms", "1h");
    let agent = start_agent(&cfg);
    wait_for_reports(&emulator, &broker, 1, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop_agent(agent);
    // stop_agent returned: the process has exited. The final report was accepted before that.
    let (exchanges, _) = emulator.exchanges_since(0);
    assert_eq!(
        exchanges.len(),
        2,
        "the final report must be delivered at SIGTERM\nbroker log:\n{}",
        broker.log()
    );
    assert!(exchanges.iter().all(|x| x.outcome == Outcome::Accepted));
    assert!(exchanges[1].report_id > exchanges[0].report_id);
    let spool = dir.path().join("state/spool");
    let depth = edgewarden::spool::Spool::open(
        &spool,
        &edgewarden::config::Config::embedded_default().spool,
    )
    .unwrap()
    .len();
    assert_eq!(depth, 0, "records left in the spool after a clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_keep_their_cadence_without_drift() {
    let dir = tempfile::tempdir().unwrap();
    let Some((pki, broker, emulator)) = broker_and_emulator(dir.path()).await else {
        return;
    };
    let id = pki.client(THING, Validity::Current).unwrap();
    // 250 ms ticks and a 1 s interval: every fourth tick reports. A slot recomputed from the
    // (slightly late) tick would slip to every fifth tick, 1.25 s apart.
    let cfg = write_config_with(dir.path(), &broker, &pki, &id, "json", "250ms", "1s");
    let agent = start_agent(&cfg);
    wait_for_reports(&emulator, &broker, 8, Duration::from_secs(40)).await;
    stop_agent(agent);
    let (exchanges, _) = emulator.exchanges_since(0);
    // Report ids are the wall clock (ms) at which each report was made; the final report made at
    // SIGTERM is off the cadence by design.
    let ids: Vec<u64> = exchanges
        .iter()
        .take(7)
        .map(|x| x.report_id.unwrap())
        .collect();
    let gaps: Vec<u64> = ids.windows(2).map(|w| w[1] - w[0]).collect();
    for g in &gaps {
        assert!(
            (850..=1150).contains(g),
            "reports must come 1 s apart (± one tick's jitter): gaps {gaps:?} ms"
        );
    }
    let total = ids[6] - ids[0];
    assert!(
        (5800..=6200).contains(&total),
        "six intervals must take 6 s, no drift: {total} ms ({gaps:?})"
    );
}
