//! The Device Defender emulator through a real mosquitto (feature `broker-tests`).
#![cfg(feature = "broker-tests")]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use edgewarden::config::{ReportConfig, ReportFormat};
use edgewarden::report::{encode, Aggregator, Topics};
use edgewarden::snapshot::{ListenPort, MetricValue, Snapshot};
use edgewarden::transport::response::{parse_response, Encoding, Response};
use integration_tests::emulator::{Emulator, EmulatorOptions, Outcome, TlsOptions};
use integration_tests::plain_broker::PlainBroker;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use tokio::sync::mpsc;

const THING: &str = "gw-test";
const WAIT: Duration = Duration::from_secs(10);

fn report(id: u64, format: ReportFormat) -> Vec<u8> {
    let cfg = ReportConfig {
        interval: Duration::from_secs(300),
        format,
        max_ports: 50,
        max_connections: 50,
        warm_up: Duration::from_secs(10),
    };
    let mut a = Aggregator::new(&cfg);
    let mut s = Snapshot {
        seq: 2,
        at_ms: 1,
        interval_ms: 10_000,
        tcp_listen: Some(vec![ListenPort {
            port: 22,
            addr: "0.0.0.0".parse().unwrap(),
            interface: None,
            process: None,
        }]),
        ..Snapshot::default()
    };
    s.custom
        .insert("cpu_usage".into(), MetricValue::Number(12.5));
    a.add(&s);
    encode(&a.take(id), format)
}

/// A device-side client subscribed to its thing's accepted/rejected topics.
struct Device {
    client: AsyncClient,
    responses: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    task: tokio::task::JoinHandle<()>,
}

impl Device {
    async fn connect(broker: &PlainBroker) -> Device {
        Device::connect_with(broker, None).await
    }

    async fn connect_with(broker: &PlainBroker, tls: Option<TlsConfiguration>) -> Device {
        let mut o = MqttOptions::new(THING, broker.host.clone(), broker.port);
        if let Some(tls) = tls {
            o.set_transport(Transport::tls_with_config(tls));
        }
        o.set_keep_alive(Duration::from_secs(30));
        o.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(o, 64);
        for fmt in ["json", "cbor"] {
            for what in ["accepted", "rejected"] {
                client
                    .subscribe(
                        format!("$aws/things/{THING}/defender/metrics/{fmt}/{what}"),
                        QoS::AtLeastOnce,
                    )
                    .await
                    .unwrap();
            }
        }
        let (tx, responses) = mpsc::unbounded_channel();
        let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut subacks = 0;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        subacks += 1;
                        if subacks == 4 {
                            let _ = ready_tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(WAIT, ready_rx.recv())
            .await
            .expect("device subscriptions acknowledged");
        Device {
            client,
            responses,
            task,
        }
    }

    async fn publish(&self, format: ReportFormat, payload: Vec<u8>) {
        let topic = Topics::new(THING, format).report;
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }

    async fn response(&mut self) -> (String, Vec<u8>) {
        tokio::time::timeout(WAIT, self.responses.recv())
            .await
            .expect("a response within the timeout")
            .expect("device task alive")
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulator_answers_reports_in_every_encoding_through_mosquitto() {
    let Some(broker) = PlainBroker::start() else {
        return;
    };
    let emulator = Emulator::spawn(EmulatorOptions::new(broker.host.clone(), broker.port))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\nbroker log:\n{}", broker.log()));
    let mut device = Device::connect(&broker).await;

    let formats = [
        ReportFormat::Json,
        ReportFormat::JsonShort,
        ReportFormat::Cbor,
    ];
    for (i, format) in formats.into_iter().enumerate() {
        let id = 1_767_225_600_000 + i as u64;
        device.publish(format, report(id, format)).await;
        let (topic, payload) = device.response().await;
        let topics = Topics::new(THING, format);
        assert_eq!(topic, topics.accepted, "{format:?}");
        let r = parse_response(&topic, &payload, Encoding::from(format), false).unwrap();
        assert_eq!(
            r,
            Response::Accepted {
                report_id: Some(id)
            }
        );
    }

    // A bare-object custom metric is rejected, with its report id.
    let bad = br#"{"header":{"report_id":1767225700000,"version":"1.0"},"custom_metrics":{"cpu_usage":{"number":1}}}"#;
    device.publish(ReportFormat::Json, bad.to_vec()).await;
    let (topic, payload) = device.response().await;
    assert_eq!(topic, Topics::new(THING, ReportFormat::Json).rejected);
    let r = parse_response(&topic, &payload, Encoding::Json, true).unwrap();
    assert_eq!(
        r,
        Response::Rejected {
            report_id: Some(1_767_225_700_000),
            code: "InvalidPayload".into(),
            message: "Malformed metrics report".into(),
        }
    );

    // A CBOR document that cannot be decoded is rejected without a report id, in CBOR.
    device.publish(ReportFormat::Cbor, vec![0xff, 0x00]).await;
    let (topic, payload) = device.response().await;
    assert_eq!(topic, Topics::new(THING, ReportFormat::Cbor).rejected);
    let r = parse_response(&topic, &payload, Encoding::Cbor, true).unwrap();
    assert!(
        matches!(
            r,
            Response::Rejected {
                report_id: None,
                ..
            }
        ),
        "{r:?}"
    );

    // A duplicate id is not answered (strict) but recorded and counted.
    device
        .publish(
            ReportFormat::Json,
            report(1_767_225_600_001, ReportFormat::Json),
        )
        .await;
    let all = emulator.wait_for(6, WAIT).await.unwrap();
    assert_eq!(
        all[5].outcome,
        Outcome::Duplicate {
            last: 1_767_225_600_002
        }
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), device.responses.recv())
            .await
            .is_err(),
        "a duplicate must not be answered"
    );

    let stats = emulator.stats();
    assert_eq!(
        (
            stats.received,
            stats.accepted,
            stats.rejected,
            stats.duplicates
        ),
        (6, 3, 2, 1)
    );
    let series = emulator.series(THING);
    assert_eq!(series.len(), 3);
    assert!(series.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(
        series[2].1["custom_metrics"]["cpu_usage"],
        serde_json::json!([{"number": 12.5}])
    );
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulator_binary_prints_each_exchange() {
    let Some(broker) = PlainBroker::start() else {
        return;
    };
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_defender-emulator"))
            .args([
                "--broker",
                &broker.addr(),
                "--throttle",
                "reject",
                "--min-interval",
                "300s",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // The binary announces itself on stderr once subscribed.
    let stderr = child.0.stderr.take().unwrap();
    let mut err_lines = BufReader::new(stderr).lines();
    let first = err_lines.next().unwrap().unwrap();
    assert!(first.contains("listening on"), "{first}");

    let mut device = Device::connect(&broker).await;
    device
        .publish(ReportFormat::Json, report(10, ReportFormat::Json))
        .await;
    assert!(device.response().await.0.ends_with("/accepted"));
    device
        .publish(ReportFormat::Json, report(11, ReportFormat::Json))
        .await;
    let (topic, payload) = device.response().await;
    assert!(topic.ends_with("/rejected"));
    match parse_response(&topic, &payload, Encoding::Json, true).unwrap() {
        Response::Rejected { code, .. } => assert_eq!(code, "EmulatorThrottled"),
        other => panic!("expected a throttling rejection, got {other:?}"),
    }
    let stdout = child.0.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let l1 = lines.next().unwrap().unwrap();
    assert!(l1.contains("gw-test json report_id=10 ACCEPTED"), "{l1}");
    let l2 = lines.next().unwrap().unwrap();
    assert!(
        l2.contains("report_id=11 REJECTED EmulatorThrottled"),
        "{l2}"
    );
}

/// Kills the child process (by its PID) even when an assertion fails first.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A CA and certificates signed by it, written as PEM files.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "edgewarden test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        for (name, sans) in [
            (
                "server",
                vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
            ),
            ("emulator", vec![]),
            (THING, vec![]),
        ] {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(sans).unwrap();
            p.distinguished_name.push(DnType::CommonName, name);
            let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
            std::fs::write(dir.path().join(format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.path().join(format!("{name}.key")), key.serialize_pem()).unwrap();
        }
        Pki { dir }
    }

    fn path(&self, file: &str) -> std::path::PathBuf {
        self.dir.path().join(file)
    }

    fn broker_options(&self) -> String {
        format!(
            "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\nuse_identity_as_username true\n",
            self.path("ca.pem").display(),
            self.path("server.pem").display(),
            self.path("server.key").display()
        )
    }

    fn client(&self, name: &str) -> TlsOptions {
        TlsOptions {
            ca_file: self.path("ca.pem"),
            client_auth: Some((
                self.path(&format!("{name}.pem")),
                self.path(&format!("{name}.key")),
            )),
            alpn: None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulator_works_over_mutual_tls_and_names_a_wrong_ca() {
    let pki = Pki::new();
    let Some(broker) = PlainBroker::start_with(&pki.broker_options()) else {
        return;
    };
    let mut opts = EmulatorOptions::new(broker.host.clone(), broker.port);
    opts.tls = Some(pki.client("emulator"));
    let emulator = Emulator::spawn(opts)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\nbroker log:\n{}", broker.log()));

    let device_tls = TlsConfiguration::Simple {
        ca: std::fs::read(pki.path("ca.pem")).unwrap(),
        alpn: None,
        client_auth: Some((
            std::fs::read(pki.path(&format!("{THING}.pem"))).unwrap(),
            std::fs::read(pki.path(&format!("{THING}.key"))).unwrap(),
        )),
    };
    let mut device = Device::connect_with(&broker, Some(device_tls)).await;
    device
        .publish(ReportFormat::Cbor, report(42, ReportFormat::Cbor))
        .await;
    let (topic, payload) = device.response().await;
    assert_eq!(topic, Topics::new(THING, ReportFormat::Cbor).accepted);
    assert_eq!(
        parse_response(&topic, &payload, Encoding::Cbor, false),
        Ok(Response::Accepted {
            report_id: Some(42)
        })
    );
    emulator.shutdown().await;

    // A CA that did not sign the broker's certificate: spawning fails and says why.
    let other = Pki::new();
    let mut opts = EmulatorOptions::new(broker.host.clone(), broker.port);
    opts.tls = Some(TlsOptions {
        ca_file: other.path("ca.pem"),
        ..pki.client("emulator")
    });
    opts.connect_timeout = Duration::from_secs(2);
    let e = Emulator::spawn(opts).await.unwrap_err().to_string();
    assert!(
        e.contains("no subscription") && e.to_lowercase().contains("certificate"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_emulator_records_but_does_not_answer_and_keeps_only_recent_exchanges() {
    let Some(broker) = PlainBroker::start() else {
        return;
    };
    let mut opts = EmulatorOptions::new(broker.host.clone(), broker.port);
    opts.silent = true;
    opts.max_exchanges = 2;
    let emulator = Emulator::spawn(opts).await.unwrap();
    let mut device = Device::connect(&broker).await;
    for id in 1..=3 {
        device
            .publish(ReportFormat::Json, report(id, ReportFormat::Json))
            .await;
    }
    emulator.wait_for(3, WAIT).await.unwrap();
    let kept = emulator.exchanges();
    assert_eq!(kept.len(), 2);
    assert_eq!(kept[0].report_id, Some(2));
    assert!(kept
        .iter()
        .all(|e| e.outcome == Outcome::Accepted && e.response.is_some()));
    let (since, next) = emulator.exchanges_since(2);
    assert_eq!((since.len(), next), (1, 3));
    assert_eq!(emulator.stats().accepted, 3);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), device.responses.recv())
            .await
            .is_err(),
        "a silent emulator must not answer"
    );
}
