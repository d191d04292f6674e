//! The Greengrass connection loop: spool → nucleus (`PublishToIoTCore`), Device Defender
//! answers → counters, component configuration → the pipeline.
//!
//! One session = one IPC connection. After the handshake it reads the component configuration
//! (`GetConfiguration`), subscribes to its changes (`SubscribeToConfigurationUpdate`), subscribes
//! to Device Defender's `accepted`/`rejected` topics of both encodings (`SubscribeToIoTCore`),
//! then publishes spooled records oldest first at QoS 1, at most [`PUBLISH_WINDOW`] awaiting
//! their answer. A record leaves the spool only when the nucleus answers its publish with a
//! response (the nucleus answers a QoS 1 publish once IoT Core acknowledged it); an error or a
//! timeout leaves it spooled:
//!
//! * `UnauthorizedError` / `InvalidArgumentsError` (the recipe's `accessControl` or the record
//!   is wrong): counted, logged once per topic, retried after a backoff; later records go on.
//! * `ServiceError`, unmodeled errors, timeouts: publishing pauses for a backoff, then resumes
//!   from the oldest record still spooled, one publish at a time until one succeeds, so reports
//!   stay in order.
//!
//! A configuration change event is debounced, then the whole configuration is read again and
//! sent to the pipeline. Connection-level faults (protocol or internal error, a frame that does
//! not decode, a frame for a stream never opened) are counted in `ipc_protocol_errors` and end
//! the session; the loop reconnects with capped exponential backoff and jitter, re-subscribes
//! and re-reads the configuration. On stop it publishes what it can within the drain deadline
//! (the nucleus kills a component 5 s after SIGTERM), then closes the connection.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::config::{parse_settings, ComponentSettings, NucleusEnv};
use super::frame::{
    Frame, FrameError, Header, MessageType, FLAG_TERMINATE_STREAM, SERVICE_MODEL_TYPE,
};
use super::rpc::{Connection, IpcError, RpcError, MAX_OUTGOING_FRAME};
use crate::spool::{SharedSpool, SpoolId};
use crate::transport::mqtt::Backoff;
use crate::transport::response::{report_id_of, Awaiting, Encoding};
use crate::transport::stats::TransportStats;

/// Publishes awaiting the nucleus's answer at once.
pub const PUBLISH_WINDOW: usize = 16;
/// Time given at shutdown to publish what is spooled (the nucleus kills the component 5 s after
/// SIGTERM, and the pipeline needs a moment for its last report).
pub const DEFAULT_DRAIN_DEADLINE: Duration = Duration::from_secs(3);
/// Wait after a configuration change event before reading the configuration (one deployment
/// sends one event per changed key).
const CONFIG_DEBOUNCE: Duration = Duration::from_millis(500);
/// A session that lasted this long (or got a publish acknowledged) resets the backoff.
const HEALTHY_SESSION: Duration = Duration::from_secs(30);
/// Base64 and the request's JSON add to the payload; keep the frame within the client's cap.
const MAX_PAYLOAD: usize = (MAX_OUTGOING_FRAME - 1024) / 4 * 3;

/// What the Greengrass transport needs besides the spool and counters.
#[derive(Debug, Clone)]
pub struct GreengrassParams {
    /// Socket, token and thing name from the nucleus.
    pub env: NucleusEnv,
    /// Thing name of the Device Defender topics.
    pub thing: String,
    /// Time given at shutdown to publish and collect answers.
    pub drain_deadline: Duration,
    /// Time allowed for the socket connection plus CONNECT_ACK.
    pub connect_timeout: Duration,
    /// Time allowed for a configuration answer.
    pub request_timeout: Duration,
    /// Time allowed for a publish's answer (the nucleus answers after IoT Core's PUBACK).
    pub publish_timeout: Duration,
    /// Wait for Device Defender's accepted/rejected.
    pub response_timeout: Duration,
    /// First reconnect (and publish retry) delay.
    pub reconnect_min: Duration,
    /// Cap of the exponential backoff.
    pub reconnect_max: Duration,
    /// Largest frame accepted from the nucleus.
    pub max_frame: usize,
}

impl GreengrassParams {
    /// The defaults: 3 s drain, 10 s connect and configuration timeouts, 60 s publish timeout,
    /// 30 s Device Defender answer timeout, backoff 1 s → 60 s, 1 MiB frames.
    pub fn new(env: NucleusEnv, thing: String) -> GreengrassParams {
        GreengrassParams {
            env,
            thing,
            drain_deadline: DEFAULT_DRAIN_DEADLINE,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            publish_timeout: Duration::from_secs(60),
            response_timeout: Duration::from_secs(30),
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(60),
            max_frame: super::frame::DEFAULT_MAX_FRAME_LEN,
        }
    }
}

/// What an open stream is for.
#[derive(Debug)]
enum Stream {
    GetConfiguration { deadline: Instant },
    ConfigurationUpdates,
    Answers { topic: String },
    UpdateState { deadline: Instant },
    Publish(InFlight),
}

#[derive(Debug)]
struct InFlight {
    id: SpoolId,
    topic: String,
    report_id: Option<u64>,
    deadline: Instant,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum SessionEnd {
    Stopped,
    Lost { healthy: bool },
}

struct Transporter {
    params: GreengrassParams,
    spool: SharedSpool,
    stats: Arc<TransportStats>,
    live: watch::Sender<ComponentSettings>,
    awaiting: Awaiting,
    answer_prefix: String,
    publish_prefix: String,
    /// Topics whose publish authorization error was already logged.
    denied_topics: HashSet<String>,
    retry: Backoff,
}

/// Runs the transport until `stop` is cancelled, then drains for up to the drain deadline and
/// closes the connection. Configuration read from the nucleus goes to `live`. Never fails:
/// every problem is counted, logged and retried.
pub async fn run(
    params: GreengrassParams,
    spool: SharedSpool,
    stats: Arc<TransportStats>,
    live: watch::Sender<ComponentSettings>,
    stop: CancellationToken,
) {
    stats.attach_spool(&spool);
    stats.mark_ipc();
    let mut backoff = Backoff::new(params.reconnect_min, params.reconnect_max);
    let base = format!("$aws/things/{}/defender/metrics/", params.thing);
    let mut t = Transporter {
        awaiting: Awaiting::new(params.response_timeout),
        answer_prefix: base.clone(),
        publish_prefix: base,
        denied_topics: HashSet::new(),
        retry: Backoff::new(params.reconnect_min, params.reconnect_max),
        params,
        spool,
        stats,
        live,
    };
    loop {
        let delay = match t.session(&stop, &mut backoff).await {
            SessionEnd::Stopped => break,
            SessionEnd::Lost { healthy } => {
                if healthy {
                    backoff.reset();
                }
                backoff.next_delay()
            }
        };
        info!(
            delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "Reconnecting to the nucleus after a delay."
        );
        let wake = Instant::now() + delay;
        loop {
            tokio::select! {
                _ = stop.cancelled() => {
                    info!("Transport stopped while disconnected; records stay spooled.");
                    return;
                }
                _ = sleep_until(wake) => break,
                _ = until(t.awaiting.next_deadline()) => t.expire_answers(),
            }
        }
    }
    info!("Transport stopped.");
}

/// Sleeps until `deadline`, or forever without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// State of one session.
struct Session {
    conn: Connection,
    streams: HashMap<i32, Stream>,
    in_flight: HashSet<SpoolId>,
    cursor: Option<SpoolId>,
    /// Publishing is paused until then (after a retryable error).
    paused_until: Option<Instant>,
    /// The spool is replayed from its oldest record then (after any publish error).
    replay_at: Option<Instant>,
    /// A configuration read is due then (debounced change event, or a retry).
    config_at: Option<Instant>,
    /// After a retryable failure, one publish at a time until one succeeds, so that a retried
    /// report is not overtaken by the records after it.
    probing: bool,
    state_reported: bool,
    got_ack: bool,
}

impl Session {
    fn publishes(&self) -> usize {
        self.in_flight.len()
    }

    /// Publishes allowed in flight now.
    fn window(&self) -> usize {
        if self.probing {
            1
        } else {
            PUBLISH_WINDOW
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.streams
            .values()
            .filter_map(|s| match s {
                Stream::Publish(p) => Some(p.deadline),
                Stream::GetConfiguration { deadline } | Stream::UpdateState { deadline } => {
                    Some(*deadline)
                }
                _ => None,
            })
            .min()
    }
}

impl Transporter {
    fn protocol_error(&self, message: String) {
        self.stats
            .ipc_protocol_errors
            .fetch_add(1, Ordering::Relaxed);
        warn!(socket = %self.params.env.socket.display(), "{message}.");
        self.stats.set_last_error(message);
    }

    async fn session(&mut self, stop: &CancellationToken, backoff: &mut Backoff) -> SessionEnd {
        let p = &self.params;
        debug!(socket = %p.env.socket.display(), "Connecting to the nucleus.");
        let conn = tokio::select! {
            _ = stop.cancelled() => return SessionEnd::Stopped,
            r = Connection::connect(&p.env.socket, p.env.token.expose(), p.connect_timeout, p.max_frame) => r,
        };
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                match &e {
                    IpcError::AuthRejected(_) => {
                        TransportStats::incr(&self.stats.connect_auth_errors);
                        // Not retried fast: the token will not change until the nucleus restarts us.
                        for _ in 0..4 {
                            backoff.next_delay();
                        }
                    }
                    IpcError::Frame(_) | IpcError::Protocol(_) => {
                        TransportStats::incr(&self.stats.ipc_protocol_errors)
                    }
                    _ => TransportStats::incr(&self.stats.connect_failures),
                }
                let message = format!("Cannot connect to the nucleus: {e}");
                warn!(socket = %self.params.env.socket.display(), pending = self.spool.stats().depth, "{message}; retrying with backoff.");
                self.stats.set_last_error(message);
                return SessionEnd::Lost { healthy: false };
            }
        };
        TransportStats::incr(&self.stats.connects);
        let connected_at = Instant::now();
        info!(
            socket = %self.params.env.socket.display(),
            thing = %self.params.thing,
            pending = self.spool.stats().depth,
            "Connected to the Greengrass nucleus."
        );
        let mut s = Session {
            conn,
            streams: HashMap::new(),
            in_flight: HashSet::new(),
            cursor: None,
            paused_until: None,
            replay_at: None,
            config_at: None,
            probing: false,
            state_reported: false,
            got_ack: false,
        };
        let end = self.serve(&mut s, stop).await;
        let healthy = s.got_ack || connected_at.elapsed() >= HEALTHY_SESSION;
        match end {
            Ok(()) => {
                for (id, st) in &s.streams {
                    if matches!(st, Stream::Answers { .. } | Stream::ConfigurationUpdates) {
                        let _ = s.conn.terminate(*id).await;
                    }
                }
                s.conn.close().await;
                SessionEnd::Stopped
            }
            Err(message) => {
                TransportStats::incr(&self.stats.disconnects);
                warn!(
                    socket = %self.params.env.socket.display(),
                    pending = self.spool.stats().depth,
                    "{message}; unanswered publishes stay spooled, reconnecting with backoff."
                );
                self.stats.set_last_error(message);
                SessionEnd::Lost { healthy }
            }
        }
    }

    /// Runs a connected session; `Ok` when stopped and drained, `Err(why)` when lost.
    async fn serve(&mut self, s: &mut Session, stop: &CancellationToken) -> Result<(), String> {
        let io = |e: IpcError| format!("IPC connection lost: {e}");
        self.open(s, "GetConfiguration", json!({}))
            .await
            .map_err(io)?;
        self.open(s, "SubscribeToConfigurationUpdate", json!({}))
            .await
            .map_err(io)?;
        for enc in ["json", "cbor"] {
            for answer in ["accepted", "rejected"] {
                let topic = format!("{}{enc}/{answer}", self.answer_prefix);
                let body = json!({ "topicName": topic, "qos": "1" });
                let id = s
                    .conn
                    .request("SubscribeToIoTCore", &body)
                    .await
                    .map_err(io)?;
                s.streams.insert(id, Stream::Answers { topic });
            }
        }
        let mut drain_until: Option<Instant> = None;
        loop {
            let now = Instant::now();
            if s.paused_until.is_some_and(|t| t <= now) {
                s.paused_until = None;
            }
            if s.replay_at.is_some_and(|t| t <= now) {
                // Resume from the oldest record still spooled (in-flight ones are skipped).
                s.replay_at = None;
                s.cursor = None;
            }
            let mut exhausted = false;
            if s.paused_until.is_none() {
                exhausted = self.fill(s).await.map_err(io)?;
            }
            if drain_until.is_some() && exhausted && s.publishes() == 0 {
                info!("Spool drained; closing the IPC connection.");
                return Ok(());
            }
            let can_send = s.paused_until.is_none() && s.publishes() < s.window();
            let (paused_until, replay_at, config_at) = (s.paused_until, s.replay_at, s.config_at);
            let request_deadline = s.next_deadline();
            tokio::select! {
                biased;
                _ = stop.cancelled(), if drain_until.is_none() => {
                    info!(
                        in_flight = s.publishes(),
                        pending = self.spool.stats().depth,
                        "Stopping: publishing what is spooled before closing."
                    );
                    drain_until = Some(Instant::now() + self.params.drain_deadline);
                }
                _ = until(drain_until) => {
                    warn!(
                        in_flight = s.publishes(),
                        pending = self.spool.stats().depth,
                        "Drain deadline reached; unacknowledged records stay spooled for the next start."
                    );
                    return Ok(());
                }
                r = s.conn.next_frame() => match r {
                    Ok(f) => self.on_frame(s, f).await?,
                    Err(e @ (IpcError::Frame(_) | IpcError::Protocol(_))) => {
                        TransportStats::incr(&self.stats.ipc_protocol_errors);
                        return Err(format!("IPC connection dropped: {e}"));
                    }
                    Err(e) => return Err(io(e)),
                },
                _ = self.spool.appended(), if can_send => {}
                _ = until(paused_until) => {}
                _ = until(replay_at) => {}
                _ = until(config_at) => {
                    s.config_at = None;
                    self.open(s, "GetConfiguration", json!({})).await.map_err(io)?;
                }
                _ = until(request_deadline) => self.expire_requests(s).await.map_err(io)?,
                _ = until(self.awaiting.next_deadline()) => self.expire_answers(),
            }
        }
    }

    async fn open(&self, s: &mut Session, op: &str, body: Value) -> Result<(), IpcError> {
        let id = s.conn.request(op, &body).await?;
        let deadline = Instant::now() + self.params.request_timeout;
        let st = match op {
            "GetConfiguration" => Stream::GetConfiguration { deadline },
            "UpdateState" => Stream::UpdateState { deadline },
            _ => Stream::ConfigurationUpdates,
        };
        s.streams.insert(id, st);
        Ok(())
    }

    /// Publishes spooled records while the window allows. Returns true when the spool has
    /// nothing more to send in this session.
    async fn fill(&mut self, s: &mut Session) -> Result<bool, IpcError> {
        while s.publishes() < s.window() {
            let rec = match self.spool.next_after(s.cursor).await {
                Ok(Some(r)) => r,
                Ok(None) => return Ok(true),
                Err(e) => {
                    error!(error = %e, "Cannot read the spool; retrying later.");
                    return Ok(false);
                }
            };
            s.cursor = Some(rec.id);
            if s.in_flight.contains(&rec.id) {
                continue;
            }
            if rec.topic.is_empty()
                || rec.topic.contains(['+', '#', '\0'])
                || rec.payload.len() > MAX_PAYLOAD
            {
                error!(
                    id = %rec.id,
                    topic = %rec.topic,
                    bytes = rec.payload.len(),
                    "Spooled record can never be published (invalid topic, or larger than the IPC frame limit); dropping it."
                );
                if let Err(e) = self.spool.ack_many(vec![rec.id]).await {
                    error!(error = %e, "Cannot remove the record from the spool.");
                }
                continue;
            }
            let report_id = self
                .report_encoding(&rec.topic)
                .and_then(|enc| report_id_of(&rec.payload, enc));
            let body = json!({
                "topicName": rec.topic,
                "qos": "1",
                "payload": base64::engine::general_purpose::STANDARD.encode(&rec.payload),
            });
            let stream = s.conn.request("PublishToIoTCore", &body).await?;
            debug!(id = %rec.id, stream, topic = %rec.topic, report_id = ?report_id, "Publishing through the nucleus.");
            s.in_flight.insert(rec.id);
            s.streams.insert(
                stream,
                Stream::Publish(InFlight {
                    id: rec.id,
                    topic: rec.topic,
                    report_id,
                    deadline: Instant::now() + self.params.publish_timeout,
                }),
            );
        }
        Ok(false)
    }

    fn report_encoding(&self, topic: &str) -> Option<Encoding> {
        match topic.strip_prefix(&self.publish_prefix)? {
            "json" => Some(Encoding::Json),
            "cbor" => Some(Encoding::Cbor),
            _ => None,
        }
    }

    async fn on_frame(&mut self, s: &mut Session, f: Frame) -> Result<(), String> {
        let (ty, flags, stream) = match (f.message_type(), f.flags(), f.stream_id()) {
            (Ok(t), Ok(fl), Ok(id)) => (t, fl, id),
            (Err(FrameError::UnknownMessageType(code)), _, Ok(id)) => {
                self.protocol_error(format!(
                    "Ignoring a frame of unknown message type {code} on stream {id}"
                ));
                return Ok(());
            }
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                TransportStats::incr(&self.stats.ipc_protocol_errors);
                return Err(format!("IPC frame without its standard headers: {e}"));
            }
        };
        if stream == 0 {
            return match ty {
                MessageType::Ping => {
                    let mut pong = Frame::new(MessageType::PingResponse, 0, 0);
                    pong.headers.extend(
                        f.headers
                            .iter()
                            .filter(|h| !h.name.starts_with(':'))
                            .cloned()
                            .collect::<Vec<Header>>(),
                    );
                    pong.payload = f.payload;
                    s.conn
                        .send(&pong)
                        .await
                        .map_err(|e| format!("IPC connection lost: {e}"))
                }
                MessageType::PingResponse => Ok(()),
                MessageType::ProtocolError | MessageType::InternalError => {
                    TransportStats::incr(&self.stats.ipc_protocol_errors);
                    Err(format!(
                        "The nucleus ended the IPC connection with {ty:?}: {}",
                        String::from_utf8_lossy(&f.payload)
                            .chars()
                            .take(300)
                            .collect::<String>()
                    ))
                }
                other => {
                    TransportStats::incr(&self.stats.ipc_protocol_errors);
                    Err(format!("Unexpected {other:?} on stream 0 from the nucleus"))
                }
            };
        }
        if stream < 0 || stream > s.conn.last_stream() {
            TransportStats::incr(&self.stats.ipc_protocol_errors);
            return Err(format!(
                "The nucleus sent a frame on stream {stream}, which was never opened"
            ));
        }
        if !matches!(
            ty,
            MessageType::ApplicationMessage | MessageType::ApplicationError
        ) {
            TransportStats::incr(&self.stats.ipc_protocol_errors);
            return Err(format!(
                "The nucleus sent {ty:?} on operation stream {stream}"
            ));
        }
        let terminate = flags & FLAG_TERMINATE_STREAM != 0;
        let Some(st) = s.streams.get(&stream) else {
            debug!(stream, "Frame for a closed stream; dropped.");
            return Ok(());
        };
        let error = (ty == MessageType::ApplicationError).then(|| RpcError::from_frame(&f));
        match st {
            Stream::Publish(_) => {
                let Some(Stream::Publish(p)) = s.streams.remove(&stream) else {
                    unreachable!("matched above")
                };
                s.in_flight.remove(&p.id);
                match error {
                    None => self.published(s, p).await,
                    Some(e) => self.publish_failed(s, p, e),
                }
            }
            Stream::GetConfiguration { .. } => {
                s.streams.remove(&stream);
                match error {
                    None => self.configuration(s, &f.payload).await,
                    Some(e) if e.code == "ResourceNotFoundError" => {
                        debug!("The component has no configuration; defaults stay in force.")
                    }
                    Some(e) => {
                        warn!(error = %e, "Cannot read the component configuration; retrying.");
                        s.config_at = Some(Instant::now() + self.params.request_timeout);
                    }
                }
            }
            Stream::UpdateState { .. } => {
                s.streams.remove(&stream);
                if let Some(e) = error {
                    debug!(error = %e, "UpdateState failed.");
                }
            }
            Stream::ConfigurationUpdates => {
                if let Some(e) = error {
                    s.streams.remove(&stream);
                    warn!(error = %e, "Cannot subscribe to configuration updates; changes apply after a restart.");
                } else if f.string(SERVICE_MODEL_TYPE)
                    == Some("aws.greengrass#ConfigurationUpdateEvents")
                {
                    debug!("Component configuration changed.");
                    s.config_at
                        .get_or_insert_with(|| Instant::now() + CONFIG_DEBOUNCE);
                } else if terminate {
                    s.streams.remove(&stream);
                    warn!("The nucleus ended the configuration update subscription.");
                }
            }
            Stream::Answers { topic } => {
                let topic = topic.clone();
                if let Some(e) = error {
                    s.streams.remove(&stream);
                    if e.code == "UnauthorizedError" {
                        TransportStats::incr(&self.stats.subscribe_auth_errors);
                    }
                    warn!(filter = %topic, error = %e, "The nucleus refused the subscription; Device Defender answers on it will not arrive.");
                } else if f.string(SERVICE_MODEL_TYPE) == Some("aws.greengrass#IoTCoreMessage") {
                    self.on_iot_message(&f.payload);
                } else if terminate {
                    s.streams.remove(&stream);
                    warn!(filter = %topic, "The nucleus ended a Device Defender answer subscription.");
                }
            }
        }
        Ok(())
    }

    async fn published(&mut self, s: &mut Session, p: InFlight) {
        s.got_ack = true;
        s.probing = false;
        self.retry.reset();
        TransportStats::incr(&self.stats.published);
        if let Err(e) = self.spool.ack_many(vec![p.id]).await {
            error!(id = %p.id, error = %e, "Cannot acknowledge a published record in the spool; it will be published again.");
        }
        debug!(id = %p.id, "Nucleus acknowledged the publish: record left the spool.");
        if let Some(rid) = p.report_id {
            let evicted = self.awaiting.expect(rid, Instant::now());
            self.stats.no_response.fetch_add(evicted, Ordering::Relaxed);
        }
    }

    fn publish_failed(&mut self, s: &mut Session, p: InFlight, e: RpcError) {
        let now = Instant::now();
        let delay = self.retry.next_delay();
        if e.retryable() {
            s.paused_until = Some(now + delay);
            s.probing = true;
            warn!(id = %p.id, topic = %p.topic, error = %e, "Publish failed; record stays spooled, publishing pauses and resumes from the oldest record.");
        } else {
            if e.code == "UnauthorizedError" {
                TransportStats::incr(&self.stats.publish_auth_errors);
            }
            if self.denied_topics.insert(p.topic.clone()) {
                warn!(id = %p.id, topic = %p.topic, error = %e, "The nucleus refused the publish (check the recipe's accessControl); the record stays spooled and is retried with backoff.");
            } else {
                debug!(id = %p.id, topic = %p.topic, error = %e, "Publish refused again.");
            }
        }
        self.stats
            .set_last_error(format!("PublishToIoTCore on {} failed: {e}", p.topic));
        s.replay_at.get_or_insert(now + delay);
    }

    async fn configuration(&mut self, s: &mut Session, payload: &[u8]) {
        let value = match serde_json::from_slice::<Value>(payload) {
            Ok(v) => v.get("value").cloned().unwrap_or(Value::Null),
            Err(e) => {
                self.protocol_error(format!("GetConfiguration answer is not JSON: {e}"));
                return;
            }
        };
        let (settings, warnings) = parse_settings(&value);
        for w in &warnings {
            warn!("{w}.");
        }
        let changed = self.live.send_if_modified(|cur| {
            if *cur == settings {
                false
            } else {
                *cur = settings.clone();
                true
            }
        });
        if changed {
            info!(settings = ?settings, "Component configuration applied.");
        }
        if !s.state_reported {
            s.state_reported = true;
            if let Err(e) = self
                .open(s, "UpdateState", json!({ "state": "RUNNING" }))
                .await
            {
                debug!(error = %e, "Cannot report the RUNNING state.");
            }
        }
    }

    fn on_iot_message(&mut self, payload: &[u8]) {
        let parsed = serde_json::from_slice::<Value>(payload).ok().and_then(|v| {
            let m = v.get("message")?;
            let topic = m.get("topicName")?.as_str()?.to_owned();
            let body = base64::engine::general_purpose::STANDARD
                .decode(m.get("payload")?.as_str()?)
                .ok()?;
            Some((topic, body))
        });
        let Some((topic, body)) = parsed else {
            TransportStats::incr(&self.stats.malformed_responses);
            warn!(
                bytes = payload.len(),
                "IoTCoreMessage without a topic name and base64 payload; ignored."
            );
            return;
        };
        let rest = topic.strip_prefix(&self.answer_prefix).unwrap_or("");
        let (encoding, rejected) = match rest {
            "json/accepted" => (Encoding::Json, false),
            "json/rejected" => (Encoding::Json, true),
            "cbor/accepted" => (Encoding::Cbor, false),
            "cbor/rejected" => (Encoding::Cbor, true),
            _ => {
                debug!(
                    topic,
                    "Message on a topic we did not subscribe to; ignored."
                );
                return;
            }
        };
        crate::transport::response::record_answer(
            &self.stats,
            &mut self.awaiting,
            &topic,
            &body,
            encoding,
            rejected,
        );
    }

    async fn expire_requests(&mut self, s: &mut Session) -> Result<(), IpcError> {
        let now = Instant::now();
        let expired: Vec<i32> = s
            .streams
            .iter()
            .filter(|(_, st)| match st {
                Stream::Publish(p) => p.deadline <= now,
                Stream::GetConfiguration { deadline } | Stream::UpdateState { deadline } => {
                    *deadline <= now
                }
                _ => false,
            })
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            s.conn.terminate(id).await?;
            match s.streams.remove(&id) {
                Some(Stream::Publish(p)) => {
                    s.in_flight.remove(&p.id);
                    let e = RpcError {
                        code: "Timeout".into(),
                        message: format!(
                            "no answer within {} s",
                            self.params.publish_timeout.as_secs_f32()
                        ),
                    };
                    self.publish_failed(s, p, e);
                }
                Some(Stream::GetConfiguration { .. }) => {
                    warn!("No answer to GetConfiguration; asking again.");
                    s.config_at = Some(now + self.params.request_timeout);
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn expire_answers(&mut self) {
        for report_id in self.awaiting.expire(Instant::now()) {
            TransportStats::incr(&self.stats.no_response);
            warn!(
                report_id,
                "No answer from Device Defender for a published report."
            );
        }
    }
}
