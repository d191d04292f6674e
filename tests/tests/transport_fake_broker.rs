//! The transport against a scripted MQTT-over-TLS broker that answers like AWS IoT Core where
//! mosquitto cannot: CONNACK refusals, a connection closed before CONNACK, a connection closed
//! right after an unauthorized publish (MQTT 3.1.1), SUBACK failures.
//!
//! The broker is a thread speaking just enough MQTT 3.1.1 by hand over a rustls server
//! connection with client certificate verification.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use edgewarden::config::{MqttConfig, ReportFormat, SpoolConfig};
use edgewarden::spool::{SharedSpool, Spool};
use edgewarden::transport::{self, TransportParams, TransportStats};
use integration_tests::broker::{wait_for, Identity, Pki, Validity};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection, StreamOwned};
use tokio_util::sync::CancellationToken;

const THING: &str = "gw-1";

/// How the scripted broker answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Script {
    /// CONNACK with this return code (5 = not authorized, 4 = bad credentials).
    RefuseConnack(u8),
    /// Read CONNECT, then close the connection without CONNACK.
    CloseBeforeConnack,
    /// Accept the session, then close the connection on the first PUBLISH (no PUBACK).
    CloseOnPublish,
    /// Accept the session, PUBACK every PUBLISH except those on this topic, on which the
    /// connection is closed (an IoT policy that denies one topic).
    CloseOnPublishTo(&'static str),
    /// Accept the session, answer SUBSCRIBE with failure (0x80) for every filter, PUBACK
    /// every PUBLISH.
    SubackFailure,
    /// Accept the session and every packet, but never send a PUBACK.
    WithholdPuback,
}

struct FakeBroker {
    port: u16,
    connections: Arc<AtomicUsize>,
    publishes: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Drop for FakeBroker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn load_certs(path: &Path) -> Vec<CertificateDer<'static>> {
    let pem = std::fs::read(path).unwrap();
    CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .unwrap()
}

fn load_key(path: &Path) -> PrivateKeyDer<'static> {
    let pem = std::fs::read(path).unwrap();
    PrivateKeyDer::from_pem_slice(&pem).unwrap()
}

fn server_config(pki: &Pki, server: &Identity) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for c in load_certs(pki.ca_file()) {
        roots.add(c).unwrap();
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .unwrap();
    let cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(&server.cert), load_key(&server.key))
        .unwrap();
    Arc::new(cfg)
}

type Tls = StreamOwned<ServerConnection, TcpStream>;

/// Reads one MQTT packet: (first header byte, body).
fn read_packet(s: &mut Tls) -> std::io::Result<(u8, Vec<u8>)> {
    let mut b = [0u8; 1];
    s.read_exact(&mut b)?;
    let header = b[0];
    let mut len = 0usize;
    for i in 0..4 {
        s.read_exact(&mut b)?;
        len |= usize::from(b[0] & 0x7f) << (7 * i);
        if b[0] & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    Ok((header, body))
}

fn serve(
    stream: TcpStream,
    cfg: Arc<ServerConfig>,
    script: Script,
    publishes: &AtomicUsize,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let conn = ServerConnection::new(cfg).map_err(std::io::Error::other)?;
    let mut s = StreamOwned::new(conn, stream);
    let (header, _) = read_packet(&mut s)?;
    assert_eq!(header >> 4, 1, "CONNECT first");
    match script {
        Script::CloseBeforeConnack => return Ok(()),
        Script::RefuseConnack(code) => {
            s.write_all(&[0x20, 2, 0, code])?;
            s.flush()?;
            return Ok(());
        }
        Script::CloseOnPublish
        | Script::CloseOnPublishTo(_)
        | Script::SubackFailure
        | Script::WithholdPuback => {
            s.write_all(&[0x20, 2, 0, 0])?;
            s.flush()?;
        }
    }
    loop {
        let (header, body) = read_packet(&mut s)?;
        match header >> 4 {
            8 => {
                // SUBSCRIBE: packet id, then (filter, qos) pairs.
                let mut n = 0;
                let mut i = 2;
                while i + 2 <= body.len() {
                    let l = usize::from(u16::from_be_bytes([body[i], body[i + 1]]));
                    i += 2 + l + 1;
                    n += 1;
                }
                let code = if script == Script::SubackFailure {
                    0x80
                } else {
                    1
                };
                let mut ack = vec![0x90, 2 + n as u8, body[0], body[1]];
                ack.extend(std::iter::repeat_n(code, n));
                s.write_all(&ack)?;
                s.flush()?;
            }
            3 => {
                publishes.fetch_add(1, Ordering::Relaxed);
                if script == Script::CloseOnPublish {
                    // AWS IoT Core's answer to an unauthorized publish on MQTT 3.1.1.
                    return Ok(());
                }
                if script == Script::WithholdPuback {
                    continue;
                }
                let tlen = usize::from(u16::from_be_bytes([body[0], body[1]]));
                if let Script::CloseOnPublishTo(denied) = script {
                    if body.get(2..2 + tlen) == Some(denied.as_bytes()) {
                        return Ok(());
                    }
                }
                let pkid = [body[2 + tlen], body[3 + tlen]];
                s.write_all(&[0x40, 2, pkid[0], pkid[1]])?;
                s.flush()?;
            }
            12 => {
                s.write_all(&[0xd0, 0])?;
                s.flush()?;
            }
            14 => return Ok(()),
            _ => {}
        }
    }
}

fn fake_broker(pki: &Pki, script: Script) -> FakeBroker {
    let server = pki.server().unwrap();
    let cfg = server_config(pki, &server);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let publishes = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (c, p, st) = (connections.clone(), publishes.clone(), stop.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            if st.load(Ordering::Relaxed) {
                break;
            }
            let Ok(stream) = stream else { continue };
            c.fetch_add(1, Ordering::Relaxed);
            let (cfg, p) = (cfg.clone(), p.clone());
            std::thread::spawn(move || {
                let _ = serve(stream, cfg, script, &p);
            });
        }
    });
    FakeBroker {
        port,
        connections,
        publishes,
        stop,
    }
}

struct Run {
    _dir: tempfile::TempDir,
    broker: FakeBroker,
    spool: SharedSpool,
    stats: Arc<TransportStats>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), transport::TransportError>>,
}

impl Run {
    fn count(&self, f: impl Fn(&TransportStats) -> &std::sync::atomic::AtomicU64) -> u64 {
        f(&self.stats).load(Ordering::Relaxed)
    }

    async fn shutdown(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

async fn run(script: Script) -> Run {
    run_with(
        script,
        &[(
            format!("$aws/things/{THING}/defender/metrics/json"),
            br#"{"header":{"report_id":1,"version":"1.0"},"metrics":{}}"#.to_vec(),
        )],
    )
    .await
}

/// A transport over a spool holding `records` (topic, payload), oldest first.
async fn run_with(script: Script, records: &[(String, Vec<u8>)]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"), "test").unwrap();
    let device = pki.client(THING, Validity::Current).unwrap();
    let broker = fake_broker(&pki, script);
    let cfg = MqttConfig {
        endpoint: "localhost".into(),
        port: broker.port,
        ca_file: pki.ca_file().to_owned(),
        cert_file: device.cert.clone(),
        key_file: device.key.clone(),
        client_id: THING.into(),
        keep_alive: Duration::from_secs(30),
        alpn: None,
        response_timeout: Duration::from_secs(5),
        reconnect_min: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(400),
    };
    let spool = Spool::open(
        &dir.path().join("spool"),
        &SpoolConfig {
            max_bytes: 1 << 20,
            max_records: 1000,
        },
    )
    .unwrap();
    let spool = SharedSpool::new(spool);
    for (topic, payload) in records {
        spool.append(topic.clone(), payload.clone()).await.unwrap();
    }
    let stats = Arc::new(TransportStats::new());
    let stop = CancellationToken::new();
    let mut params = TransportParams::new(cfg, THING.into(), ReportFormat::Json);
    params.puback_timeout = Duration::from_millis(500);
    let task = tokio::spawn(transport::run(
        params,
        spool.clone(),
        stats.clone(),
        stop.clone(),
    ));
    Run {
        _dir: dir,
        broker,
        spool,
        stats,
        stop,
        task,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connack_not_authorized_is_a_connect_auth_error_retried_with_backoff() {
    let r = run(Script::RefuseConnack(5)).await;
    assert!(
        wait_for(Duration::from_secs(10), || r
            .count(|s| &s.connect_auth_errors)
            >= 3)
        .await
    );
    assert_eq!(r.count(|s| &s.connects), 0);
    assert_eq!(r.count(|s| &s.tls_failures), 0);
    assert_eq!(r.spool.stats().depth, 1);
    let why = r.stats.last_error().unwrap();
    assert!(
        why.contains("NotAuthorized") && why.contains(".crt"),
        "{why}"
    );
    assert!(r.broker.connections.load(Ordering::Relaxed) >= 3);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connack_bad_credentials_is_a_connect_auth_error() {
    let r = run(Script::RefuseConnack(4)).await;
    assert!(
        wait_for(Duration::from_secs(10), || r
            .count(|s| &s.connect_auth_errors)
            >= 2)
        .await
    );
    assert_eq!(r.count(|s| &s.connect_failures), 0);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_closed_before_connack_is_a_connect_auth_error() {
    let r = run(Script::CloseBeforeConnack).await;
    assert!(
        wait_for(Duration::from_secs(10), || r
            .count(|s| &s.connect_auth_errors)
            >= 2)
        .await
    );
    assert_eq!(r.count(|s| &s.connects), 0);
    assert_eq!(
        r.count(|s| &s.tls_failures),
        0,
        "the TLS handshake succeeded"
    );
    let why = r.stats.last_error().unwrap();
    assert!(why.contains("before CONNACK"), "{why}");
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_closed_after_publish_is_a_publish_auth_error_retried_then_dropped() {
    let r = run(Script::CloseOnPublish).await;
    assert!(
        wait_for(Duration::from_secs(15), || r
            .count(|s| &s.dropped_unauthorized)
            == 1)
        .await,
        "refused {} times, dropped {}",
        r.count(|s| &s.publish_auth_errors),
        r.count(|s| &s.dropped_unauthorized)
    );
    // Retried until refused POISON_REFUSALS times, never acknowledged, then dropped.
    assert_eq!(
        r.count(|s| &s.publish_auth_errors),
        u64::from(transport::mqtt::POISON_REFUSALS)
    );
    assert_eq!(
        r.broker.publishes.load(Ordering::Relaxed),
        transport::mqtt::POISON_REFUSALS as usize
    );
    assert_eq!(r.count(|s| &s.published), 0);
    assert_eq!(r.spool.stats().depth, 0);
    let why = r.stats.last_error().unwrap();
    assert!(why.contains("defender/metrics/json"), "{why}");
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_refused_by_policy_does_not_block_the_records_behind_it() {
    const DENIED: &str = "edgewarden/gw-1/denied";
    let report = |id: u64| {
        (
            format!("$aws/things/{THING}/defender/metrics/json"),
            format!(r#"{{"header":{{"report_id":{id},"version":"1.0"}},"metrics":{{}}}}"#)
                .into_bytes(),
        )
    };
    // Reports before and after a record on a topic the policy denies.
    let records = [
        report(1),
        report(2),
        (DENIED.to_owned(), b"{}".to_vec()),
        report(3),
        report(4),
        report(5),
    ];
    let r = run_with(Script::CloseOnPublishTo(DENIED), &records).await;
    assert!(
        wait_for(Duration::from_secs(20), || r.spool.stats().depth == 0).await,
        "spool still holds {} records; refused {} times",
        r.spool.stats().depth,
        r.count(|s| &s.publish_auth_errors)
    );
    assert_eq!(r.count(|s| &s.published), 5, "every report delivered");
    assert_eq!(r.count(|s| &s.dropped_unauthorized), 1);
    assert!(r.count(|s| &s.publish_auth_errors) >= u64::from(transport::mqtt::POISON_REFUSALS));
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suback_failure_is_a_subscribe_auth_error_and_publishing_goes_on() {
    let r = run(Script::SubackFailure).await;
    assert!(
        wait_for(Duration::from_secs(10), || r
            .count(|s| &s.subscribe_auth_errors)
            == 2)
        .await
    );
    assert!(wait_for(Duration::from_secs(10), || r.spool.stats().depth == 0).await);
    assert_eq!(r.count(|s| &s.published), 1);
    assert_eq!(r.count(|s| &s.connects), 1);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withheld_puback_ends_the_session_and_the_record_is_sent_again() {
    let r = run(Script::WithholdPuback).await;
    assert!(
        wait_for(Duration::from_secs(10), || r
            .broker
            .publishes
            .load(Ordering::Relaxed)
            >= 3)
        .await
    );
    assert!(r.count(|s| &s.connects) >= 3);
    assert_eq!(r.count(|s| &s.published), 0);
    assert_eq!(
        r.spool.stats().depth,
        1,
        "never acknowledged: still spooled"
    );
    assert!(r.stats.last_error().unwrap().contains("No PUBACK"));
    r.shutdown().await;
}
