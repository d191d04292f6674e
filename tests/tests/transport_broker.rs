//! The MQTT transport and spool against a real mosquitto over mutual TLS.
//!
//! Run with: `cargo test -p integration-tests --features broker-tests --test transport_broker`
//! (needs the `mosquitto` binary).
#![cfg(feature = "broker-tests")]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgewarden::config::{MqttConfig, ReportFormat, SpoolConfig};
use edgewarden::spool::{SharedSpool, Spool};
use edgewarden::transport::response::{report_id_of, Encoding};
use edgewarden::transport::{self, TransportParams, TransportStats};
use integration_tests::broker::{wait_for, Broker, Identity, Pki, ThingAccess, Validity};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS, TlsConfiguration, Transport};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const THING: &str = "gw-1";

fn spool_cfg() -> SpoolConfig {
    SpoolConfig {
        max_bytes: 16 * 1024 * 1024,
        max_records: 100_000,
    }
}

/// A report of the given format with `rid` as its report id: (topic, payload).
fn report(rid: u64, format: ReportFormat) -> (String, Vec<u8>) {
    let topic = format!(
        "$aws/things/{THING}/defender/metrics/{}",
        format.topic_suffix()
    );
    let long = serde_json::json!({"header": {"report_id": rid, "version": "1.0"},
        "custom_metrics": {"spool_depth": [{"number": 0}]}});
    let short = serde_json::json!({"hed": {"rid": rid, "v": "1.0"},
        "cmet": {"spool_depth": [{"number": 0}]}});
    let payload = match format {
        ReportFormat::Json => serde_json::to_vec(&long).unwrap(),
        ReportFormat::JsonShort => serde_json::to_vec(&short).unwrap(),
        ReportFormat::Cbor => {
            let mut out = Vec::new();
            ciborium::ser::into_writer(&short, &mut out).unwrap();
            out
        }
    };
    (topic, payload)
}

/// What the stand-in for Device Defender does with each report.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Accept,
    Reject(&'static str),
}

/// A minimal stand-in for Device Defender on the emulator identity (persistent session):
/// answers each new report id of a thing once, in the report's encoding, and records what it
/// saw. A repeated or decreasing report id gets no answer and is recorded as a duplicate.
struct Responder {
    seen: Arc<Mutex<Vec<u64>>>,
    duplicates: Arc<Mutex<Vec<u64>>>,
    client: AsyncClient,
    task: JoinHandle<()>,
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn tls_for(cfg: &MqttConfig) -> Arc<rustls::ClientConfig> {
    transport::tls::client_config(cfg).expect("valid test identity")
}

fn options(cfg: &MqttConfig, clean: bool) -> MqttOptions {
    let mut o = MqttOptions::new(cfg.client_id.clone(), cfg.endpoint.clone(), cfg.port);
    o.set_clean_session(clean)
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(1 << 20, 1 << 20)
        .set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            tls_for(cfg),
        )));
    o
}

async fn responder(broker: &Broker, answer: Answer) -> Responder {
    let cfg = broker.mqtt_config(broker.emulator_identity());
    let (client, mut ev) = AsyncClient::new(options(&cfg, false), 64);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let duplicates = Arc::new(Mutex::new(Vec::new()));
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (s, d, c) = (seen.clone(), duplicates.clone(), client.clone());
    let task = tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        let mut last: BTreeMap<String, u64> = BTreeMap::new();
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                    c.subscribe("$aws/things/+/defender/metrics/+", QoS::AtLeastOnce)
                        .await
                        .unwrap();
                }
                Ok(Event::Incoming(Incoming::SubAck(_))) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    let parts: Vec<&str> = p.topic.split('/').collect();
                    let (thing, fmt) = (parts[2].to_owned(), parts[5]);
                    let enc = if fmt == "cbor" {
                        Encoding::Cbor
                    } else {
                        Encoding::Json
                    };
                    let Some(rid) = report_id_of(&p.payload, enc) else {
                        continue;
                    };
                    if last.get(&thing).is_some_and(|&l| rid <= l) {
                        d.lock().unwrap().push(rid);
                        continue;
                    }
                    last.insert(thing.clone(), rid);
                    s.lock().unwrap().push(rid);
                    let (suffix, body) = match &answer {
                        Answer::Accept => (
                            "accepted",
                            serde_json::json!({"thingName": thing, "reportId": rid,
                                "status": "ACCEPTED", "timestamp": 1}),
                        ),
                        Answer::Reject(code) => (
                            "rejected",
                            serde_json::json!({"thingName": thing, "reportId": rid,
                                "status": "REJECTED", "timestamp": 1,
                                "statusDetails": {"ErrorCode": code, "ErrorMessage": "Malformed metrics report"}}),
                        ),
                    };
                    let payload = if enc == Encoding::Cbor {
                        let mut out = Vec::new();
                        ciborium::ser::into_writer(&body, &mut out).unwrap();
                        out
                    } else {
                        serde_json::to_vec(&body).unwrap()
                    };
                    c.publish(
                        format!("{}/{suffix}", p.topic),
                        QoS::AtLeastOnce,
                        false,
                        payload,
                    )
                    .await
                    .unwrap();
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), ready_rx)
        .await
        .expect("responder subscribed within 10 s")
        .unwrap();
    Responder {
        seen,
        duplicates,
        client,
        task,
    }
}

struct Agent {
    spool: SharedSpool,
    stats: Arc<TransportStats>,
    stop: CancellationToken,
    task: JoinHandle<Result<(), transport::TransportError>>,
}

impl Agent {
    fn start(cfg: MqttConfig, format: ReportFormat, spool_dir: &Path) -> Agent {
        let spool = SharedSpool::new(Spool::open(spool_dir, &spool_cfg()).unwrap());
        Agent::start_with(cfg, format, spool)
    }

    fn start_with(cfg: MqttConfig, format: ReportFormat, spool: SharedSpool) -> Agent {
        let stats = Arc::new(TransportStats::new());
        let stop = CancellationToken::new();
        let params = TransportParams::new(cfg, THING.into(), format);
        let task = tokio::spawn(transport::run(
            params,
            spool.clone(),
            stats.clone(),
            stop.clone(),
        ));
        Agent {
            spool,
            stats,
            stop,
            task,
        }
    }

    async fn append(&self, rid: u64, format: ReportFormat) {
        let (t, p) = report(rid, format);
        self.spool.append(t, p).await.unwrap();
    }

    fn count(&self, f: impl Fn(&TransportStats) -> &std::sync::atomic::AtomicU64) -> u64 {
        f(&self.stats).load(Ordering::Relaxed)
    }

    async fn shutdown(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("transport stops within its drain deadline")
            .unwrap()
            .unwrap();
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    pki: Pki,
    broker: Broker,
    device: Identity,
}

/// Test output shows the agent's log (`RUST_LOG` filters it; `edgewarden=info` by default).
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("edgewarden=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

fn fixture(access: ThingAccess) -> Fixture {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"), "test").unwrap();
    let broker = Broker::start(&dir.path().join("broker"), &pki, &[(THING, access)]).unwrap();
    let device = pki.client(THING, Validity::Current).unwrap();
    Fixture {
        dir,
        pki,
        broker,
        device,
    }
}

async fn accepted_end_to_end(format: ReportFormat) {
    let f = fixture(ThingAccess::ReadWrite);
    let r = responder(&f.broker, Answer::Accept).await;
    let spool_dir = f.dir.path().join("spool");
    let cfg = f.broker.mqtt_config(&f.device);
    // Spooled before the transport starts: replayed oldest first on connect.
    {
        let mut s = Spool::open(&spool_dir, &spool_cfg()).unwrap();
        for rid in 1..=3 {
            let (t, p) = report(rid, format);
            s.append(&t, &p).unwrap();
        }
    }
    let agent = Agent::start(cfg, format, &spool_dir);
    agent.append(4, format).await;
    assert!(
        wait_for(Duration::from_secs(15), || agent
            .count(|s| &s.reports_accepted)
            == 4)
        .await,
        "accepted {} of 4; broker log:\n{}",
        agent.count(|s| &s.reports_accepted),
        f.broker.log()
    );
    assert_eq!(*r.seen.lock().unwrap(), [1, 2, 3, 4]);
    assert_eq!(agent.spool.stats().depth, 0);
    assert_eq!(agent.count(|s| &s.published), 4);
    assert_eq!(agent.count(|s| &s.no_response), 0);
    assert_eq!(agent.count(|s| &s.connects), 1);
    let metrics = agent.stats.custom_metrics();
    assert!(metrics.contains(&("defender_reports_accepted", 4.0)));
    assert!(metrics.contains(&("spool_depth", 0.0)));
    agent.shutdown().await;
    // Nothing comes back after a restart: every record was acknowledged on disk.
    assert!(Spool::open(&spool_dir, &spool_cfg()).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_reports_are_accepted_end_to_end() {
    accepted_end_to_end(ReportFormat::Json).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_json_reports_are_accepted_end_to_end() {
    accepted_end_to_end(ReportFormat::JsonShort).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cbor_reports_are_accepted_end_to_end() {
    accepted_end_to_end(ReportFormat::Cbor).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_report_is_counted_by_code() {
    let f = fixture(ThingAccess::ReadWrite);
    let _r = responder(&f.broker, Answer::Reject("InvalidPayload")).await;
    let agent = Agent::start(
        f.broker.mqtt_config(&f.device),
        ReportFormat::Json,
        &f.dir.path().join("spool"),
    );
    agent.append(10, ReportFormat::Json).await;
    assert!(
        wait_for(Duration::from_secs(10), || agent
            .count(|s| &s.reports_rejected)
            == 1)
        .await
    );
    assert_eq!(
        agent.stats.rejected_by_code(),
        BTreeMap::from([("InvalidPayload".to_owned(), 1)])
    );
    assert_eq!(agent.count(|s| &s.reports_accepted), 0);
    assert_eq!(agent.spool.stats().depth, 0, "PUBACKed: left the spool");
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_loses_nothing_and_keeps_order() {
    let mut f = fixture(ThingAccess::ReadWrite);
    let r = responder(&f.broker, Answer::Accept).await;
    let agent = Agent::start(
        f.broker.mqtt_config(&f.device),
        ReportFormat::Json,
        &f.dir.path().join("spool"),
    );
    for rid in 1..=2 {
        agent.append(rid, ReportFormat::Json).await;
    }
    assert!(
        wait_for(Duration::from_secs(10), || agent
            .count(|s| &s.reports_accepted)
            == 2)
        .await
    );

    f.broker.stop().unwrap();
    for rid in 3..=9 {
        agent.append(rid, ReportFormat::Json).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Nothing can be acknowledged while the broker is down.
    assert_eq!(agent.spool.stats().depth, 7);
    assert!(agent.count(|s| &s.disconnects) >= 1);
    assert!(
        agent.count(|s| &s.connect_failures) >= 1,
        "reconnects were attempted"
    );

    f.broker.restart().unwrap();
    assert!(
        wait_for(Duration::from_secs(20), || agent
            .count(|s| &s.reports_accepted)
            == 9)
        .await,
        "accepted {}; seen {:?}",
        agent.count(|s| &s.reports_accepted),
        r.seen.lock().unwrap()
    );
    assert_eq!(*r.seen.lock().unwrap(), (1..=9).collect::<Vec<_>>());
    assert!(
        r.duplicates.lock().unwrap().is_empty(),
        "no report sent twice"
    );
    assert_eq!(agent.spool.stats().depth, 0);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_dropped_mid_flight_replays_every_unacknowledged_record() {
    let f = fixture(ThingAccess::ReadWrite);
    let r = responder(&f.broker, Answer::Accept).await;
    let spool_dir = f.dir.path().join("spool");
    let cfg = f.broker.mqtt_config(&f.device);
    let agent = Agent::start(cfg.clone(), ReportFormat::Json, &spool_dir);
    for rid in 1..=40 {
        agent.append(rid, ReportFormat::Json).await;
    }
    // Abort without any shutdown while publishes are in flight, as a crash would.
    let Agent {
        spool, stats, task, ..
    } = agent;
    task.abort();
    let _ = task.await;
    // Let spool operations the aborted task had already handed to the blocking pool finish.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let acked_before = spool.stats().acked;
    drop((spool, stats));

    let spool = Spool::open(&spool_dir, &spool_cfg()).unwrap();
    let pending = spool.len() as u64;
    assert_eq!(
        acked_before + pending,
        40,
        "every record is either acknowledged or pending"
    );
    let agent = Agent::start_with(cfg, ReportFormat::Json, SharedSpool::new(spool));
    assert!(wait_for(Duration::from_secs(20), || agent.spool.stats().depth == 0).await);
    assert!(
        wait_for(Duration::from_secs(10), || r.seen.lock().unwrap().len()
            == 40)
        .await,
        "seen {:?}",
        r.seen.lock().unwrap()
    );
    assert_eq!(*r.seen.lock().unwrap(), (1..=40).collect::<Vec<_>>());
    agent.shutdown().await;
}

async fn tls_failure_is_counted_and_retried(cfg: MqttConfig, spool_dir: &Path, explains: &str) {
    let agent = Agent::start(cfg, ReportFormat::Json, spool_dir);
    agent.append(1, ReportFormat::Json).await;
    assert!(
        wait_for(Duration::from_secs(10), || agent.count(|s| &s.tls_failures)
            >= 3)
        .await,
        "tls failures: {}",
        agent.count(|s| &s.tls_failures)
    );
    assert_eq!(agent.count(|s| &s.connects), 0);
    assert_eq!(agent.count(|s| &s.connect_auth_errors), 0);
    assert_eq!(agent.spool.stats().depth, 1, "nothing leaves the spool");
    let why = agent.stats.last_error().unwrap_or_default();
    assert!(why.contains(explains), "{why:?} does not say {explains:?}");
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ca_is_a_counted_tls_failure() {
    let f = fixture(ThingAccess::ReadWrite);
    let other = Pki::new(&f.dir.path().join("other"), "other").unwrap();
    let mut cfg = f.broker.mqtt_config(&f.device);
    cfg.ca_file = other.ca_file().to_owned();
    tls_failure_is_counted_and_retried(
        cfg,
        &f.dir.path().join("spool"),
        "is not issued by a CA in",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_client_certificate_is_a_counted_tls_failure() {
    let f = fixture(ThingAccess::ReadWrite);
    let expired = f.pki.client(THING, Validity::Expired).unwrap();
    let cfg = f.broker.mqtt_config(&expired);
    tls_failure_is_counted_and_retried(cfg, &f.dir.path().join("spool"), "it has expired").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_client_certificate_is_a_counted_tls_failure() {
    let f = fixture(ThingAccess::ReadWrite);
    let other = Pki::new(&f.dir.path().join("other"), "other").unwrap();
    let stranger = other.client(THING, Validity::Current).unwrap();
    let mut cfg = f.broker.mqtt_config(&stranger);
    // The device trusts the real broker; the broker does not know the device's issuer.
    cfg.ca_file = f.pki.ca_file().to_owned();
    tls_failure_is_counted_and_retried(
        cfg,
        &f.dir.path().join("spool"),
        "does not trust the issuer",
    )
    .await;
}

/// mosquitto with MQTT 3.1.1 acknowledges a QoS 1 publish its ACL denies and discards it
/// (AWS IoT Core closes the connection instead; see `transport_fake_broker`). The record
/// therefore leaves the spool, and the missing Device Defender answer is what shows it.
/// (mosquitto's ACL file also never refuses a SUBSCRIBE: it filters at delivery, so SUBACK
/// failures are tested against the scripted broker of `transport_fake_broker`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_denied_publish_on_mosquitto_shows_as_no_response() {
    let f = fixture(ThingAccess::ReadOnly);
    let r = responder(&f.broker, Answer::Accept).await;
    let mut cfg = f.broker.mqtt_config(&f.device);
    cfg.response_timeout = Duration::from_secs(1);
    let agent = Agent::start(cfg, ReportFormat::Json, &f.dir.path().join("spool"));
    agent.append(1, ReportFormat::Json).await;
    assert!(
        wait_for(Duration::from_secs(10), || agent.count(|s| &s.no_response)
            == 1)
        .await
    );
    assert_eq!(agent.count(|s| &s.published), 1, "mosquitto sent PUBACK");
    assert_eq!(agent.spool.stats().depth, 0);
    assert!(r.seen.lock().unwrap().is_empty(), "the broker discarded it");
    assert_eq!(agent.count(|s| &s.connects), 1, "and kept the connection");
    assert_eq!(agent.count(|s| &s.publish_auth_errors), 0);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_or_oversized_answers_do_not_disturb_the_transport() {
    let f = fixture(ThingAccess::ReadWrite);
    let r = responder(&f.broker, Answer::Accept).await;
    let agent = Agent::start(
        f.broker.mqtt_config(&f.device),
        ReportFormat::Json,
        &f.dir.path().join("spool"),
    );
    agent.append(1, ReportFormat::Json).await;
    assert!(
        wait_for(Duration::from_secs(10), || agent
            .count(|s| &s.reports_accepted)
            == 1)
        .await
    );

    let accepted = format!("$aws/things/{THING}/defender/metrics/json/accepted");
    let junk: Vec<Vec<u8>> = vec![
        b"\xff\xfe not json at all".to_vec(),
        b"{\"reportId\":".to_vec(),
        b"[1,2,3]".to_vec(),
        b"{\"status\":\"REJECTED\"}".to_vec(),
        vec![b'{'; 100_000],
    ];
    for j in junk {
        r.client
            .publish(accepted.clone(), QoS::AtLeastOnce, false, j)
            .await
            .unwrap();
    }
    assert!(
        wait_for(Duration::from_secs(10), || agent
            .count(|s| &s.malformed_responses)
            == 5)
        .await,
        "malformed: {}",
        agent.count(|s| &s.malformed_responses)
    );
    assert_eq!(
        agent.count(|s| &s.connects),
        1,
        "the session was not disturbed"
    );
    // Larger than the client accepts at all (256 KiB, twice AWS IoT's limit): rumqttc ends the
    // session, and the transport reconnects and carries on.
    r.client
        .publish(
            accepted.clone(),
            QoS::AtLeastOnce,
            false,
            vec![b' '; 300 * 1024],
        )
        .await
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || agent.count(|s| &s.connects)
            == 2)
        .await
    );
    for rid in 2..=3 {
        agent.append(rid, ReportFormat::Json).await;
    }
    assert!(
        wait_for(Duration::from_secs(15), || agent
            .count(|s| &s.reports_accepted)
            == 3)
        .await,
        "accepted {}",
        agent.count(|s| &s.reports_accepted)
    );
    assert_eq!(agent.spool.stats().depth, 0);
    assert_eq!(*r.seen.lock().unwrap(), [1, 2, 3]);
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_the_spool_then_disconnects() {
    let f = fixture(ThingAccess::ReadWrite);
    let r = responder(&f.broker, Answer::Accept).await;
    let spool_dir = f.dir.path().join("spool");
    let agent = Agent::start(
        f.broker.mqtt_config(&f.device),
        ReportFormat::Json,
        &spool_dir,
    );
    assert!(
        wait_for(Duration::from_secs(10), || agent.count(|s| &s.connects)
            == 1)
        .await
    );
    for rid in 1..=20 {
        agent.append(rid, ReportFormat::Json).await;
    }
    agent.shutdown().await;
    assert!(Spool::open(&spool_dir, &spool_cfg()).unwrap().is_empty());
    assert!(
        wait_for(Duration::from_secs(5), || r.seen.lock().unwrap().len()
            == 20)
        .await
    );
}

/// (utime + stime in clock ticks, VmRSS in KiB) of this process.
fn cpu_ticks_and_rss_kib() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    (ticks, rss)
}

/// Keeps an idle session open (only keep-alive traffic) and prints the process's CPU and RSS.
/// `EDGEWARDEN_IDLE_SECS` (default 20) and `EDGEWARDEN_IDLE_KEEP_ALIVE_SECS` (default 5)
/// set the duration and keep-alive; the session must survive it without a reconnect.
#[tokio::test(flavor = "current_thread")]
#[ignore = "measurement; run with --ignored --nocapture"]
async fn idle_connected_transport_cost() {
    let secs: u64 = std::env::var("EDGEWARDEN_IDLE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let keep_alive: u64 = std::env::var("EDGEWARDEN_IDLE_KEEP_ALIVE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let f = fixture(ThingAccess::ReadWrite);
    let mut cfg = f.broker.mqtt_config(&f.device);
    cfg.keep_alive = Duration::from_secs(keep_alive);
    let agent = Agent::start(cfg, ReportFormat::Json, &f.dir.path().join("spool"));
    agent.append(1, ReportFormat::Json).await;
    assert!(
        wait_for(Duration::from_secs(10), || agent.count(|s| &s.published)
            == 1)
        .await
    );
    let (t0, _) = cpu_ticks_and_rss_kib();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (t1, rss) = cpu_ticks_and_rss_kib();
    let cpu_pct = (t1 - t0) as f64 / 100.0 / secs as f64 * 100.0;
    eprintln!(
        "idle {secs} s, keep-alive {keep_alive} s: CPU {cpu_pct:.3} % of one core ({} ticks), RSS {rss} KiB (whole test process)",
        t1 - t0
    );
    assert_eq!(
        agent.count(|s| &s.connects),
        1,
        "the idle session stayed up"
    );
    assert_eq!(agent.count(|s| &s.disconnects), 0);
    agent.shutdown().await;
}
