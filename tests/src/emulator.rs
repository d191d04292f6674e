//! A Device Defender emulator (spec §9): an MQTT client that answers metrics reports the way the
//! service does, so the agent can be tested end to end against any broker.
//!
//! It subscribes to `$aws/things/+/defender/metrics/+`, checks each report with the strict
//! [`validator`](crate::validator), keeps per-thing `report_id` order, and answers on
//! `…/accepted` or `…/rejected` with the payloads of spec §3.1–§3.2, in the report's encoding.
//! Every exchange is recorded for tests ([`EmulatorHandle::exchanges`],
//! [`EmulatorHandle::wait_for`]).
//!
//! The decision logic is [`Engine`], which has no I/O and can be driven directly. Things an
//! MQTT subscriber cannot observe are not emulated: the publisher's client id (so the
//! "thing name equals client id" rule), RETAIN on the original publish, and subscriptions to the
//! publish topic; those are broker-side rules.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, SubscribeReasonCode, TlsConfiguration,
    Transport,
};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::validator::{
    check_thing_name, parse_report_topic, Encoding, Finding, Mode, Registry, Validator,
    INVALID_PAYLOAD, MALFORMED_MESSAGE, MAX_PAYLOAD_BYTES,
};

/// The subscription covering every thing's report topic in both encodings.
pub const REPORT_FILTER: &str = "$aws/things/+/defender/metrics/+";
/// Error code of a throttled report; deliberately not an AWS code (the real one is unknown).
pub const THROTTLED_CODE: &str = "EmulatorThrottled";
/// Error message of a report on a thing name Device Defender refuses.
pub const BAD_THING_MESSAGE: &str = "Invalid thing name";
/// Accepted reports kept per thing for [`Engine::series`]; older ones are forgotten.
pub const SERIES_CAP: usize = 10_000;

/// What to do with a report that comes sooner than the minimum interval after the thing's last
/// accepted one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ThrottleMode {
    /// Accept it.
    #[default]
    Off,
    /// Ingest nothing, answer nothing.
    Drop,
    /// Reject it with [`THROTTLED_CODE`].
    Reject,
}

impl ThrottleMode {
    /// Parses `off`, `drop` or `reject`.
    pub fn parse(s: &str) -> Option<ThrottleMode> {
        match s {
            "off" => Some(ThrottleMode::Off),
            "drop" => Some(ThrottleMode::Drop),
            "reject" => Some(ThrottleMode::Reject),
            _ => None,
        }
    }
}

/// Client certificate, key and CA for a TLS broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    /// CA bundle (PEM) that signed the broker's certificate.
    pub ca_file: PathBuf,
    /// Client certificate and key (PEM), when the broker wants one.
    pub client_auth: Option<(PathBuf, PathBuf)>,
    /// ALPN protocol to offer, if any.
    pub alpn: Option<String>,
}

/// How to reach the broker and how to judge reports.
#[derive(Debug, Clone)]
pub struct EmulatorOptions {
    /// Broker host name or address.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// TLS, or plain TCP when `None`.
    pub tls: Option<TlsOptions>,
    /// MQTT client id of the emulator.
    pub client_id: String,
    /// Strict (default) or lenient validation.
    pub mode: Mode,
    /// Registered custom metrics; `None` skips the registration flags.
    pub registry: Option<Registry>,
    /// Throttling of reports that come too soon.
    pub throttle: ThrottleMode,
    /// Minimum interval between accepted reports of one thing (Device Defender's is 300 s).
    pub min_interval: Duration,
    /// How long [`Emulator::spawn`] waits for the subscription to be acknowledged.
    pub connect_timeout: Duration,
    /// Decide and record answers but publish none (to test a device's response timeout).
    pub silent: bool,
    /// Exchanges kept in memory; the oldest are forgotten beyond it (they stay counted).
    pub max_exchanges: usize,
}

impl EmulatorOptions {
    /// Plain TCP to `host:port`, strict, edgewarden's metric registry, no throttling.
    pub fn new(host: impl Into<String>, port: u16) -> EmulatorOptions {
        EmulatorOptions {
            host: host.into(),
            port,
            tls: None,
            client_id: format!("defender-emulator-{}", std::process::id()),
            mode: Mode::Strict,
            registry: Some(Registry::edgewarden()),
            throttle: ThrottleMode::Off,
            min_interval: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(10),
            silent: false,
            max_exchanges: 100_000,
        }
    }
}

/// What the emulator did with one publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Ingested; answered on `…/accepted`.
    Accepted,
    /// Answered on `…/rejected`.
    Rejected {
        /// `ErrorCode`
        code: String,
        /// `ErrorMessage`
        message: String,
    },
    /// `report_id` not above the thing's last accepted one: in strict mode not ingested and not
    /// answered (in lenient mode the report is accepted and only counted).
    Duplicate {
        /// The thing's last accepted id.
        last: u64,
    },
    /// Came sooner than the minimum interval, in [`ThrottleMode::Drop`]: no answer.
    Dropped {
        /// Time since the thing's last accepted report.
        since_last: Duration,
    },
    /// Over the 128 KiB MQTT payload limit: a broker drops the connection, no answer.
    Oversized {
        /// Payload length.
        len: usize,
    },
    /// A topic under the subscription that is not a report topic (e.g. `…/metrics/xml`).
    Ignored,
}

/// The answer sent for a report.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// `…/accepted` or `…/rejected`.
    pub topic: String,
    /// The encoded payload, as published.
    pub payload: Vec<u8>,
    /// The same payload as JSON, for assertions.
    pub body: Value,
}

/// One received report and what came of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Exchange {
    /// Receipt time, ms since the epoch.
    pub received_ms: u64,
    /// Topic the report came on.
    pub topic: String,
    /// Thing name from the topic (empty when the topic is not a report topic).
    pub thing: String,
    /// Encoding from the topic.
    pub encoding: Option<Encoding>,
    /// The report as received.
    pub payload: Vec<u8>,
    /// `header.report_id`, when readable.
    pub report_id: Option<u64>,
    /// What happened.
    pub outcome: Outcome,
    /// The answer, if one was sent.
    pub response: Option<Response>,
    /// Why it was rejected.
    pub problems: Vec<Finding>,
    /// Legal but suspicious shapes.
    pub warnings: Vec<Finding>,
    /// Value-quality issues the service would drop silently.
    pub flags: Vec<Finding>,
    /// The report with long key names, when it validated.
    pub document: Option<Value>,
}

impl fmt::Display for Exchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rid = self
            .report_id
            .map_or_else(|| "-".to_owned(), |r| r.to_string());
        let enc = self.encoding.map_or("?", Encoding::as_str);
        write!(f, "{} {enc} report_id={rid} ", self.thing)?;
        match &self.outcome {
            Outcome::Accepted => write!(f, "ACCEPTED")?,
            Outcome::Rejected { code, message } => write!(f, "REJECTED {code}: {message}")?,
            Outcome::Duplicate { last } => {
                write!(f, "DUPLICATE (last accepted {last}), no answer")?
            }
            Outcome::Dropped { since_last } => write!(
                f,
                "THROTTLED ({:.1}s after the last accepted report), dropped",
                since_last.as_secs_f64()
            )?,
            Outcome::Oversized { len } => {
                write!(f, "OVERSIZED ({len} bytes > {MAX_PAYLOAD_BYTES}), dropped")?
            }
            Outcome::Ignored => write!(f, "IGNORED (not a report topic: {})", self.topic)?,
        }
        for p in &self.problems {
            write!(f, "\n  problem: {p}")?;
        }
        for w in &self.warnings {
            write!(f, "\n  warning: {w}")?;
        }
        for fl in &self.flags {
            write!(f, "\n  flag: {fl}")?;
        }
        Ok(())
    }
}

/// Counts over all exchanges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Publishes received.
    pub received: u64,
    /// Reports accepted.
    pub accepted: u64,
    /// Reports rejected (any code).
    pub rejected: u64,
    /// Duplicate or decreasing ids (in both modes).
    pub duplicates: u64,
    /// Reports throttled (dropped or rejected).
    pub throttled: u64,
    /// Oversized payloads.
    pub oversized: u64,
    /// Reports accepted with value-quality flags.
    pub flagged: u64,
    /// Answers that could not be queued for publishing.
    pub response_errors: u64,
}

#[derive(Debug, Default)]
struct ThingState {
    last_id: Option<u64>,
    last_accepted: Option<Instant>,
    /// Accepted reports: (report_id, long-name document), at most [`SERIES_CAP`].
    series: VecDeque<(u64, Value)>,
}

/// The emulator's decisions, without I/O: feed it publishes, get exchanges.
#[derive(Debug)]
pub struct Engine {
    validator: Validator,
    throttle: ThrottleMode,
    min_interval: Duration,
    things: HashMap<String, ThingState>,
    stats: Stats,
}

#[derive(Serialize)]
struct ResponseBody<'a> {
    #[serde(rename = "thingName")]
    thing_name: &'a str,
    #[serde(rename = "reportId", skip_serializing_if = "Option::is_none")]
    report_id: Option<u64>,
    status: &'static str,
    #[serde(rename = "statusDetails", skip_serializing_if = "Option::is_none")]
    status_details: Option<StatusDetails<'a>>,
    timestamp: u64,
}

#[derive(Serialize)]
struct StatusDetails<'a> {
    #[serde(rename = "ErrorCode")]
    code: &'a str,
    #[serde(rename = "ErrorMessage")]
    message: &'a str,
}

fn encode_body(body: &ResponseBody<'_>, encoding: Encoding) -> (Vec<u8>, Value) {
    let json = serde_json::to_value(body).expect("response bodies are plain JSON");
    let payload = match encoding {
        Encoding::Json => serde_json::to_vec(body).expect("response bodies are plain JSON"),
        Encoding::Cbor => {
            let mut out = Vec::new();
            ciborium::into_writer(body, &mut out).expect("writing CBOR into a Vec cannot fail");
            out
        }
    };
    (payload, json)
}

impl Engine {
    /// An engine judging with `validator`.
    pub fn new(validator: Validator, throttle: ThrottleMode, min_interval: Duration) -> Engine {
        Engine {
            validator,
            throttle,
            min_interval,
            things: HashMap::new(),
            stats: Stats::default(),
        }
    }

    /// Counts so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Accepted reports of `thing`, oldest first: `(report_id, long-name document)`.
    pub fn series(&self, thing: &str) -> Vec<(u64, Value)> {
        self.things
            .get(thing)
            .map(|t| t.series.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Judges one publish received at `now` (`now_ms` is the wall clock for `timestamp`).
    pub fn handle(&mut self, topic: &str, payload: &[u8], now: Instant, now_ms: u64) -> Exchange {
        self.stats.received += 1;
        let mut ex = Exchange {
            received_ms: now_ms,
            topic: topic.to_owned(),
            thing: String::new(),
            encoding: None,
            payload: payload.to_vec(),
            report_id: None,
            outcome: Outcome::Ignored,
            response: None,
            problems: Vec::new(),
            warnings: Vec::new(),
            flags: Vec::new(),
            document: None,
        };
        let Some(rt) = parse_report_topic(topic) else {
            return ex;
        };
        ex.thing = rt.thing.clone();
        ex.encoding = Some(rt.encoding);
        if payload.len() > MAX_PAYLOAD_BYTES {
            self.stats.oversized += 1;
            ex.outcome = Outcome::Oversized { len: payload.len() };
            return ex;
        }
        if let Err(why) = check_thing_name(&rt.thing, self.validator.mode) {
            ex.problems.push(Finding {
                path: String::new(),
                message: why,
            });
            self.reject(&mut ex, INVALID_PAYLOAD, BAD_THING_MESSAGE, now_ms);
            return ex;
        }
        let valid = match self.validator.validate(payload, rt.encoding) {
            Ok(v) => v,
            Err(invalid) => {
                ex.report_id = invalid.report_id;
                ex.problems = invalid.problems;
                self.reject(&mut ex, INVALID_PAYLOAD, MALFORMED_MESSAGE, now_ms);
                return ex;
            }
        };
        ex.report_id = Some(valid.report_id);
        ex.warnings = valid.warnings;
        ex.flags = valid.flags;
        let state = self.things.entry(rt.thing.clone()).or_default();
        if let Some(last) = state.last_id.filter(|last| valid.report_id <= *last) {
            self.stats.duplicates += 1;
            if self.validator.mode == Mode::Strict {
                ex.outcome = Outcome::Duplicate { last };
                return ex;
            }
            ex.warnings.push(Finding {
                path: "header.report_id".into(),
                message: format!("not above the last accepted id {last}; accepted (lenient)"),
            });
        }
        if let Some(prev) = state.last_accepted {
            let since_last = now.saturating_duration_since(prev);
            if since_last < self.min_interval {
                match self.throttle {
                    ThrottleMode::Off => {}
                    ThrottleMode::Drop => {
                        self.stats.throttled += 1;
                        ex.outcome = Outcome::Dropped { since_last };
                        return ex;
                    }
                    ThrottleMode::Reject => {
                        self.stats.throttled += 1;
                        let msg = format!(
                            "Report {:.1}s after the previous one; the minimum interval is {}s",
                            since_last.as_secs_f64(),
                            self.min_interval.as_secs()
                        );
                        self.reject(&mut ex, THROTTLED_CODE, &msg, now_ms);
                        return ex;
                    }
                }
            }
        }
        state.last_id = Some(
            state
                .last_id
                .map_or(valid.report_id, |l| l.max(valid.report_id)),
        );
        state.last_accepted = Some(now);
        if state.series.len() == SERIES_CAP {
            state.series.pop_front();
        }
        state
            .series
            .push_back((valid.report_id, valid.document.clone()));
        self.stats.accepted += 1;
        if !ex.flags.is_empty() {
            self.stats.flagged += 1;
        }
        ex.document = Some(valid.document);
        ex.outcome = Outcome::Accepted;
        let body = ResponseBody {
            thing_name: &rt.thing,
            report_id: ex.report_id,
            status: "ACCEPTED",
            status_details: None,
            timestamp: now_ms,
        };
        let (payload, body) = encode_body(&body, rt.encoding);
        ex.response = Some(Response {
            topic: format!("{topic}/accepted"),
            payload,
            body,
        });
        ex
    }

    fn reject(&mut self, ex: &mut Exchange, code: &str, message: &str, now_ms: u64) {
        self.stats.rejected += 1;
        let encoding = ex.encoding.unwrap_or(Encoding::Json);
        let body = ResponseBody {
            thing_name: &ex.thing,
            report_id: ex.report_id,
            status: "REJECTED",
            status_details: Some(StatusDetails { code, message }),
            timestamp: now_ms,
        };
        let (payload, body) = encode_body(&body, encoding);
        ex.response = Some(Response {
            topic: format!("{}/rejected", ex.topic),
            payload,
            body,
        });
        ex.outcome = Outcome::Rejected {
            code: code.to_owned(),
            message: message.to_owned(),
        };
    }
}

#[derive(Debug)]
struct Shared {
    engine: Engine,
    /// The most recent exchanges, at most `max_exchanges`.
    exchanges: VecDeque<Exchange>,
    /// Exchanges forgotten from the front of `exchanges`.
    forgotten: usize,
    max_exchanges: usize,
    last_error: Option<String>,
}

/// Starts emulators.
#[derive(Debug)]
pub struct Emulator;

impl Emulator {
    /// Connects, subscribes to [`REPORT_FILTER`] and waits for the subscription to be granted
    /// (up to `opts.connect_timeout`). The emulator runs until the handle is shut down or dropped,
    /// reconnecting and resubscribing when the broker goes away.
    pub async fn spawn(opts: EmulatorOptions) -> anyhow::Result<EmulatorHandle> {
        let mut mqtt = MqttOptions::new(opts.client_id.clone(), opts.host.clone(), opts.port);
        mqtt.set_keep_alive(Duration::from_secs(30));
        mqtt.set_clean_session(true);
        // Large enough to receive (and report) payloads over the 128 KiB service limit.
        mqtt.set_max_packet_size(1 << 20, 1 << 20);
        if let Some(tls) = &opts.tls {
            mqtt.set_transport(Transport::tls_with_config(tls_config(tls)?));
        }
        let (client, eventloop) = AsyncClient::new(mqtt, 256);
        let validator = Validator {
            mode: opts.mode,
            registry: opts.registry.clone(),
        };
        let shared = Arc::new(Mutex::new(Shared {
            engine: Engine::new(validator, opts.throttle, opts.min_interval),
            exchanges: VecDeque::new(),
            forgotten: 0,
            max_exchanges: opts.max_exchanges.max(1),
            last_error: None,
        }));
        let (count_tx, count_rx) = watch::channel(0usize);
        let (ready_tx, ready_rx) = oneshot::channel();
        let (pub_tx, pub_rx) = mpsc::unbounded_channel();
        let poller = tokio::spawn(poll(
            eventloop,
            client.clone(),
            pub_tx,
            Some(ready_tx),
            shared.clone(),
        ));
        let worker = tokio::spawn(work(
            pub_rx,
            client.clone(),
            shared.clone(),
            count_tx,
            opts.silent,
        ));
        let handle = EmulatorHandle {
            client,
            shared,
            count: count_rx,
            tasks: vec![poller, worker],
        };
        match tokio::time::timeout(opts.connect_timeout, ready_rx).await {
            Ok(Ok(Ok(()))) => Ok(handle),
            Ok(Ok(Err(e))) => Err(anyhow!("{e}")),
            Ok(Err(_)) => Err(anyhow!(
                "the emulator's connection task ended before subscribing"
            )),
            Err(_) => {
                let last = handle.last_error().unwrap_or_else(|| "no answer".into());
                Err(anyhow!(
                    "no subscription to {REPORT_FILTER} on {}:{} within {:?} (last error: {last})",
                    opts.host,
                    opts.port,
                    opts.connect_timeout
                ))
            }
        }
    }
}

fn tls_config(tls: &TlsOptions) -> anyhow::Result<TlsConfiguration> {
    // rustls needs one process-wide crypto provider; more than one crate feature may offer one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let read =
        |p: &PathBuf| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
    let ca = read(&tls.ca_file)?;
    let client_auth = match &tls.client_auth {
        Some((cert, key)) => Some((read(cert)?, read(key)?)),
        None => None,
    };
    Ok(TlsConfiguration::Simple {
        ca,
        alpn: tls.alpn.as_ref().map(|a| vec![a.as_bytes().to_vec()]),
        client_auth,
    })
}

async fn poll(
    mut eventloop: EventLoop,
    client: AsyncClient,
    publishes: mpsc::UnboundedSender<(String, Vec<u8>, Instant, u64)>,
    mut ready: Option<oneshot::Sender<Result<(), String>>>,
    shared: Arc<Mutex<Shared>>,
) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                // Clean session: subscribe on every connection.
                if let Err(e) = client.try_subscribe(REPORT_FILTER, QoS::AtLeastOnce) {
                    tracing::warn!(error = %e, "Emulator could not queue its subscription.");
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let ok = ack
                    .return_codes
                    .iter()
                    .all(|c| matches!(c, SubscribeReasonCode::Success(_)));
                if let Some(tx) = ready.take() {
                    let res = if ok {
                        Ok(())
                    } else {
                        Err(format!(
                            "broker refused the subscription to {REPORT_FILTER}: {:?}",
                            ack.return_codes
                        ))
                    };
                    let _ = tx.send(res);
                } else if !ok {
                    tracing::warn!("Broker refused the emulator's resubscription.");
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let now_ms = wall_ms();
                let topic = p.topic.clone();
                if publishes
                    .send((topic, p.payload.to_vec(), Instant::now(), now_ms))
                    .is_err()
                {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                let msg = e.to_string();
                tracing::debug!(error = %msg, "Emulator connection error; retrying.");
                lock(&shared).last_error = Some(msg);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

async fn work(
    mut publishes: mpsc::UnboundedReceiver<(String, Vec<u8>, Instant, u64)>,
    client: AsyncClient,
    shared: Arc<Mutex<Shared>>,
    count: watch::Sender<usize>,
    silent: bool,
) {
    while let Some((topic, payload, at, at_ms)) = publishes.recv().await {
        let ex = lock(&shared).engine.handle(&topic, &payload, at, at_ms);
        tracing::info!("{ex}");
        if let Some(r) = ex.response.as_ref().filter(|_| !silent) {
            if let Err(e) = client
                .publish(r.topic.clone(), QoS::AtLeastOnce, false, r.payload.clone())
                .await
            {
                tracing::warn!(error = %e, topic = %r.topic, "Emulator could not queue its answer.");
                lock(&shared).engine.stats.response_errors += 1;
            }
        }
        let n = {
            let mut s = lock(&shared);
            if s.exchanges.len() >= s.max_exchanges {
                s.exchanges.pop_front();
                s.forgotten += 1;
            }
            s.exchanges.push_back(ex);
            s.forgotten + s.exchanges.len()
        };
        let _ = count.send(n);
    }
}

fn lock(m: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    // A panic while holding the lock would already have failed the test; keep the data.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A running emulator. Dropping it stops it.
#[derive(Debug)]
pub struct EmulatorHandle {
    client: AsyncClient,
    shared: Arc<Mutex<Shared>>,
    count: watch::Receiver<usize>,
    tasks: Vec<JoinHandle<()>>,
}

impl EmulatorHandle {
    /// Every exchange so far (the most recent `max_exchanges`), in arrival order.
    pub fn exchanges(&self) -> Vec<Exchange> {
        lock(&self.shared).exchanges.iter().cloned().collect()
    }

    /// The exchanges from the `n`-th on (0-based, counting forgotten ones), as far as still
    /// kept, and the index to ask from next time.
    pub fn exchanges_since(&self, n: usize) -> (Vec<Exchange>, usize) {
        let s = lock(&self.shared);
        let skip = n.saturating_sub(s.forgotten);
        let next = s.forgotten + s.exchanges.len();
        (s.exchanges.iter().skip(skip).cloned().collect(), next)
    }

    /// Number of exchanges recorded so far, including forgotten ones.
    pub fn count(&self) -> usize {
        *self.count.borrow()
    }

    /// Counts so far.
    pub fn stats(&self) -> Stats {
        lock(&self.shared).engine.stats()
    }

    /// Accepted reports of `thing`: `(report_id, long-name document)`, oldest first.
    pub fn series(&self, thing: &str) -> Vec<(u64, Value)> {
        lock(&self.shared).engine.series(thing)
    }

    /// The last connection error, if any.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.shared).last_error.clone()
    }

    /// Waits until at least `n` exchanges were recorded and returns all of them.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> anyhow::Result<Vec<Exchange>> {
        let mut rx = self.count.clone();
        let res = tokio::time::timeout(timeout, rx.wait_for(|c| *c >= n)).await;
        match res {
            Ok(Ok(_)) => Ok(self.exchanges()),
            Ok(Err(_)) => bail!("the emulator stopped"),
            Err(_) => {
                let got = *self.count.borrow();
                bail!("only {got} of {n} exchanges within {timeout:?}")
            }
        }
    }

    /// Disconnects and stops.
    pub async fn shutdown(self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.client.disconnect()).await;
        // Let the event loop send the DISCONNECT before the tasks go.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Drop for EmulatorHandle {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Parses `HOST:PORT` or `[V6]:PORT`.
pub fn parse_broker(s: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("broker {s:?} is not HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| anyhow!("broker {s:?}: {port:?} is not a port number"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        bail!("broker {s:?} has no host");
    }
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn engine(mode: Mode, throttle: ThrottleMode) -> Engine {
        let v = Validator {
            mode,
            registry: None,
        };
        Engine::new(v, throttle, Duration::from_secs(300))
    }

    fn report(id: u64) -> Vec<u8> {
        serde_json::to_vec(&json!({"header": {"report_id": id, "version": "1.0"}, "metrics": {}}))
            .unwrap()
    }

    const TOPIC: &str = "$aws/things/gw-1/defender/metrics/json";

    #[test]
    fn accepts_and_answers_with_the_spec_payload() {
        let mut e = engine(Mode::Strict, ThrottleMode::Off);
        let ex = e.handle(TOPIC, &report(10), Instant::now(), 1_767_225_601_877);
        assert_eq!(ex.outcome, Outcome::Accepted);
        let r = ex.response.unwrap();
        assert_eq!(r.topic, format!("{TOPIC}/accepted"));
        assert_eq!(
            String::from_utf8(r.payload).unwrap(),
            r#"{"thingName":"gw-1","reportId":10,"status":"ACCEPTED","timestamp":1767225601877}"#
        );
    }

    #[test]
    fn rejects_malformed_reports_with_invalid_payload() {
        let mut e = engine(Mode::Strict, ThrottleMode::Off);
        let bad =
            br#"{"header":{"report_id":7,"version":"1.0"},"custom_metrics":{"m":{"number":0}}}"#;
        let ex = e.handle(TOPIC, bad, Instant::now(), 5);
        let r = ex.response.unwrap();
        assert_eq!(r.topic, format!("{TOPIC}/rejected"));
        assert_eq!(
            String::from_utf8(r.payload).unwrap(),
            r#"{"thingName":"gw-1","reportId":7,"status":"REJECTED","statusDetails":{"ErrorCode":"InvalidPayload","ErrorMessage":"Malformed metrics report"},"timestamp":5}"#
        );
        let ex = e.handle(TOPIC, b"not json", Instant::now(), 6);
        assert!(ex.response.unwrap().body.get("reportId").is_none());
    }

    #[test]
    fn duplicates_get_no_answer_in_strict_mode_and_are_counted_in_both() {
        let now = Instant::now();
        let mut e = engine(Mode::Strict, ThrottleMode::Off);
        assert_eq!(
            e.handle(TOPIC, &report(10), now, 1).outcome,
            Outcome::Accepted
        );
        let dup = e.handle(TOPIC, &report(10), now, 2);
        assert_eq!(dup.outcome, Outcome::Duplicate { last: 10 });
        assert!(dup.response.is_none());
        assert_eq!(
            e.handle(TOPIC, &report(9), now, 3).outcome,
            Outcome::Duplicate { last: 10 }
        );
        // Other things have their own order.
        let other = "$aws/things/gw-2/defender/metrics/json";
        assert_eq!(
            e.handle(other, &report(1), now, 4).outcome,
            Outcome::Accepted
        );
        assert_eq!(e.stats().duplicates, 2);
        let mut l = engine(Mode::Lenient, ThrottleMode::Off);
        l.handle(TOPIC, &report(10), now, 1);
        assert_eq!(
            l.handle(TOPIC, &report(10), now, 2).outcome,
            Outcome::Accepted
        );
        assert_eq!(l.stats().duplicates, 1);
    }

    #[test]
    fn throttling_drops_or_rejects_reports_that_come_too_soon() {
        let t0 = Instant::now();
        let mut d = engine(Mode::Strict, ThrottleMode::Drop);
        d.handle(TOPIC, &report(1), t0, 1);
        let ex = d.handle(TOPIC, &report(2), t0 + Duration::from_secs(10), 2);
        assert!(matches!(ex.outcome, Outcome::Dropped { .. }));
        assert!(ex.response.is_none());
        let ex = d.handle(TOPIC, &report(3), t0 + Duration::from_secs(301), 3);
        assert_eq!(ex.outcome, Outcome::Accepted);
        let mut r = engine(Mode::Strict, ThrottleMode::Reject);
        r.handle(TOPIC, &report(1), t0, 1);
        let ex = r.handle(TOPIC, &report(2), t0 + Duration::from_secs(10), 2);
        assert_eq!(
            ex.response.unwrap().body["statusDetails"]["ErrorCode"],
            json!(THROTTLED_CODE)
        );
        assert_eq!(r.stats().throttled, 1);
        assert_eq!(r.series("gw-1").len(), 1);
    }

    #[test]
    fn cbor_reports_are_answered_in_cbor() {
        let mut e = engine(Mode::Strict, ThrottleMode::Off);
        let mut bytes = Vec::new();
        ciborium::into_writer(
            &json!({"hed": {"rid": 3, "v": "1.0"}, "met": {}}),
            &mut bytes,
        )
        .unwrap();
        let ex = e.handle(
            "$aws/things/gw-1/defender/metrics/cbor",
            &bytes,
            Instant::now(),
            9,
        );
        let r = ex.response.unwrap();
        let v: Value = ciborium::from_reader(&r.payload[..]).unwrap();
        assert_eq!(
            v,
            json!({"thingName": "gw-1", "reportId": 3, "status": "ACCEPTED", "timestamp": 9})
        );
    }

    #[test]
    fn oversized_payloads_and_foreign_topics_get_no_answer() {
        let mut e = engine(Mode::Strict, ThrottleMode::Off);
        let big = vec![b' '; MAX_PAYLOAD_BYTES + 1];
        let ex = e.handle(TOPIC, &big, Instant::now(), 1);
        assert_eq!(
            ex.outcome,
            Outcome::Oversized {
                len: MAX_PAYLOAD_BYTES + 1
            }
        );
        let ex = e.handle(
            "$aws/things/gw-1/defender/metrics/xml",
            &report(1),
            Instant::now(),
            1,
        );
        assert_eq!(ex.outcome, Outcome::Ignored);
        assert!(ex.response.is_none());
    }

    #[test]
    fn broker_addresses_parse() {
        assert_eq!(
            parse_broker("localhost:1883").unwrap(),
            ("localhost".into(), 1883)
        );
        assert_eq!(parse_broker("[::1]:8883").unwrap(), ("::1".into(), 8883));
        assert!(parse_broker("localhost").is_err());
        assert!(parse_broker(":1883").is_err());
        assert!(parse_broker("h:99999").is_err());
    }
}
