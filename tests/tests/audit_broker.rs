//! The device audit over MQTT against a real mosquitto with mutual TLS: two agents that share one
//! certificate and one client id take each other's session over again and again; the audit of
//! each finds `CONFLICTING_CLIENT_IDS` (from the sessions the broker closed right after CONNACK)
//! and `DEVICE_CERTIFICATE_SHARED` (from the other agent's state directory), and the findings
//! arrive through the spool on `edgewarden/{thing}/audit`.
#![cfg(feature = "broker-tests")]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use integration_tests::broker::{Broker, Identity, Pki, ThingAccess, Validity};
use integration_tests::edgewarden_bin;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS, TlsConfiguration, Transport};

const THING: &str = "audit-twin";

fn write_config(
    dir: &Path,
    state: &str,
    broker: &Broker,
    pki: &Pki,
    id: &Identity,
) -> std::path::PathBuf {
    let cfg = dir.join(format!("{state}.toml"));
    std::fs::write(
        &cfg,
        format!(
            r#"thing_name = "{THING}"
state_dir = "{dir}/{state}"
[collect]
interval = "500ms"
[report]
# No report before the test ends: sessions then never see a PUBACK before the takeover.
interval = "1h"
warm_up = "1h"
[logs]
enabled = false
[detect]
enabled = false
[audit]
interval = "10s"
sshd_test = false
peer_state_dirs = ["{dir}"]
[mqtt]
endpoint = "localhost"
port = {port}
ca_file = "{ca}"
cert_file = "{cert}"
key_file = "{key}"
reconnect_min = "100ms"
reconnect_max = "1s"
"#,
            dir = dir.display(),
            port = broker.port(),
            ca = pki.ca_file().display(),
            cert = id.cert.display(),
            key = id.key.display(),
        ),
    )
    .unwrap();
    cfg
}

fn start(cfg: &Path) -> Child {
    Command::new(edgewarden_bin())
        .args(["run", "--config", cfg.to_str().unwrap()])
        .env_remove("EDGEWARDEN_THING_NAME")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the agent starts")
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twin_agents_are_found_sharing_a_certificate_and_a_client_id_and_findings_are_published() {
    if Command::new("mosquitto").arg("-h").output().is_err()
        && !Path::new("/usr/sbin/mosquitto").exists()
    {
        eprintln!("SKIPPED audit over MQTT: mosquitto is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "audit").unwrap();
    let broker = Broker::start(dir.path(), &pki, &[(THING, ThingAccess::ReadWrite)]).unwrap();
    let id = pki.client(THING, Validity::Current).unwrap();

    // Listen on the audit topic as the emulator's identity (allowed everywhere by the ACL).
    let em = broker.emulator_identity();
    let mut o = MqttOptions::new("audit-listener", "localhost", broker.port());
    o.set_transport(Transport::Tls(TlsConfiguration::Simple {
        ca: std::fs::read(pki.ca_file()).unwrap(),
        alpn: None,
        client_auth: Some((
            std::fs::read(&em.cert).unwrap(),
            std::fs::read(&em.key).unwrap(),
        )),
    }));
    let (client, mut ev) = AsyncClient::new(o, 64);
    client
        .subscribe(format!("edgewarden/{THING}/audit"), QoS::AtLeastOnce)
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<serde_json::Value>();
    let listener = tokio::spawn(async move {
        let _client = client;
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    if let Ok(v) = serde_json::from_slice(&p.payload) {
                        let _ = tx.send(v);
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });

    let a = start(&write_config(dir.path(), "a", &broker, &pki, &id));
    let b = start(&write_config(dir.path(), "b", &broker, &pki, &id));
    let want: BTreeSet<&str> = ["CONFLICTING_CLIENT_IDS", "DEVICE_CERTIFICATE_SHARED"]
        .into_iter()
        .collect();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut findings = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !want.iter().all(|w| seen.contains(*w)) && Instant::now() < deadline {
        if let Ok(Some(f)) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
            seen.insert(f["checkName"].as_str().unwrap_or_default().to_owned());
            findings.push(f);
        }
    }
    stop(a);
    stop(b);
    listener.abort();
    assert!(
        want.iter().all(|w| seen.contains(*w)),
        "findings seen on the audit topic: {seen:?}\n{findings:#?}\nbroker log:\n{}",
        broker.log()
    );
    let conflict = findings
        .iter()
        .find(|f| f["checkName"] == "CONFLICTING_CLIENT_IDS")
        .unwrap();
    assert_eq!(conflict["thingName"], THING);
    assert_eq!(
        conflict["resource"]["resourceIdentifier"]["clientId"],
        THING
    );
    let shared = findings
        .iter()
        .find(|f| f["checkName"] == "DEVICE_CERTIFICATE_SHARED")
        .unwrap();
    assert_eq!(shared["severity"], "CRITICAL");
    assert_eq!(
        shared["resource"]["resourceIdentifier"]["deviceCertificateId"]
            .as_str()
            .unwrap()
            .len(),
        64
    );
}
