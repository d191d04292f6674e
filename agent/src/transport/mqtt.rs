//! The MQTT connection loop: spool → broker, answers → counters.
//!
//! One session = one fresh rumqttc client and event loop with a clean MQTT session. After
//! CONNACK the session subscribes to Device Defender's `accepted` and `rejected` topics and
//! publishes spooled records oldest first at QoS 1 (never retained), at most
//! [`PUBLISH_WINDOW`] unacknowledged at a time. A record is acknowledged in the spool only on
//! its PUBACK (see [`super::session`] for how packet ids are matched to spool ids). When the
//! session ends for any reason, whatever was not acknowledged is still in the spool and is
//! published again in the next session, oldest first, with its original payload (and so its
//! original `report_id`).
//!
//! The event loop is polled in its own task and its events are forwarded over a channel, so no
//! half-completed `poll()` is ever cancelled by the `select!` of this loop.
//!
//! Broker behaviours worth knowing (MQTT 3.1.1):
//! * AWS IoT Core closes the connection on an unauthorized publish; this loop counts a close
//!   within [`super::session::PUBLISH_AUTH_WINDOW`] of an unacknowledged publish as a publish
//!   authorization error, and keeps the record to retry it with backoff.
//! * mosquitto instead acknowledges a publish its ACL denies (PUBACK, message silently
//!   discarded). Nothing on the wire tells them apart from a delivered message, so such a
//!   record leaves the spool; a Device Defender report then shows up as
//!   `defender_no_response` after `[mqtt] response_timeout`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, Incoming, MqttOptions, Outgoing, QoS,
    StateError, SubscribeFilter, SubscribeReasonCode, TlsConfiguration, Transport,
};
use rustls::ClientConfig;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::response::{report_id_of, Awaiting, Encoding};
use super::session::{Sent, Session};
use super::stats::TransportStats;
use super::tls::{self, TlsNames};
use super::TransportError;
use crate::config::{MqttConfig, ReportFormat};
use crate::spool::{SharedSpool, SpoolId};

/// Unacknowledged publishes allowed at once (AWS IoT allows 100 per connection).
pub const PUBLISH_WINDOW: usize = 16;
/// Time given at shutdown to publish what is spooled and collect PUBACKs.
pub const DEFAULT_DRAIN_DEADLINE: Duration = Duration::from_secs(10);
/// Longest a stopping agent waits for the transport: the drain deadline, the disconnect grace
/// and a margin. Below the unit's `TimeoutStopSec` (30 s).
pub const SHUTDOWN_DEADLINE: Duration =
    Duration::from_secs(DEFAULT_DRAIN_DEADLINE.as_secs() + DISCONNECT_GRACE.as_secs() + 2);
/// A publish without PUBACK for this long ends the session (a broker that withholds acks
/// would otherwise stall the window forever).
pub const DEFAULT_PUBACK_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest packet accepted from the broker. AWS IoT's payload limit is 128 KB; larger answers
/// end the connection (rumqttc refuses them), which is then re-established.
const MAX_INCOMING_PACKET: usize = 256 * 1024;
/// Largest packet sent: AWS IoT's 128 KB payload limit plus topic and header.
const MAX_OUTGOING_PACKET: usize = 128 * 1024 + 512;
/// TCP + TLS + CONNACK must complete within this many seconds.
const CONNECT_TIMEOUT_SECS: u64 = 10;
/// A session that lasted this long (or got a PUBACK) resets the reconnect backoff.
const HEALTHY_SESSION: Duration = Duration::from_secs(30);
/// Time allowed for DISCONNECT to be written at shutdown.
const DISCONNECT_GRACE: Duration = Duration::from_secs(2);

/// What the transport needs besides the spool and counters.
#[derive(Debug, Clone)]
pub struct TransportParams {
    /// `[mqtt]`
    pub mqtt: MqttConfig,
    /// Thing name (the `{thing}` of the Device Defender topics).
    pub thing: String,
    /// Report encoding: selects the `json` or `cbor` answer topics.
    pub format: ReportFormat,
    /// Time given at shutdown to publish and collect PUBACKs.
    pub drain_deadline: Duration,
    /// A publish without PUBACK for this long ends the session; it is sent again after
    /// reconnecting.
    pub puback_timeout: Duration,
}

impl TransportParams {
    /// With the default drain deadline.
    pub fn new(mqtt: MqttConfig, thing: String, format: ReportFormat) -> TransportParams {
        TransportParams {
            mqtt,
            thing,
            format,
            drain_deadline: DEFAULT_DRAIN_DEADLINE,
            puback_timeout: DEFAULT_PUBACK_TIMEOUT,
        }
    }
}

/// Capped exponential backoff with equal jitter: each delay is drawn from `[d/2, d]`, then `d`
/// doubles up to the cap.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// Starts at `min`, never exceeds `max`.
    pub fn new(min: Duration, max: Duration) -> Backoff {
        let min = min.max(Duration::from_millis(1));
        Backoff {
            min,
            max: max.max(min),
            current: min,
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = d / 2;
        let jitter_ms = fastrand::u64(0..=u64::try_from(half.as_millis()).unwrap_or(u64::MAX));
        half + Duration::from_millis(jitter_ms)
    }

    /// Back to the first delay (after a healthy session).
    pub fn reset(&mut self) {
        self.current = self.min;
    }
}

/// Topics of this thing's Device Defender exchange.
#[derive(Debug, Clone)]
struct Topics {
    publish_prefix: String,
    accepted: String,
    rejected: String,
    encoding: Encoding,
}

impl Topics {
    fn new(thing: &str, format: ReportFormat) -> Topics {
        let t = crate::report::Topics::new(thing, format);
        let publish_prefix = t.report[..=t.report.rfind('/').unwrap_or(0)].to_owned();
        Topics {
            accepted: t.accepted,
            rejected: t.rejected,
            publish_prefix,
            encoding: Encoding::from(format),
        }
    }

    /// The encoding of a Device Defender report topic, `None` for any other topic.
    fn report_encoding(&self, topic: &str) -> Option<Encoding> {
        match topic.strip_prefix(&self.publish_prefix)? {
            "json" => Some(Encoding::Json),
            "cbor" => Some(Encoding::Cbor),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SessionEnd {
    /// Asked to stop.
    Stopped,
    /// The connection failed or was lost; `healthy` resets the backoff.
    Lost { healthy: bool },
}

struct Transporter {
    params: TransportParams,
    tls: Arc<ClientConfig>,
    names: TlsNames,
    topics: Topics,
    spool: SharedSpool,
    stats: Arc<TransportStats>,
    awaiting: Awaiting,
    /// Unambiguous refusals (connection closed right after the record's publish while it was
    /// the only one in flight) per spooled record. Entries leave on PUBACK or drop.
    refusals: HashMap<SpoolId, u32>,
    /// Publish one record at a time, so that a refusal names its record. Set by a suspected
    /// refusal, cleared once no suspect is left.
    serial: bool,
}

/// A record the broker refused this many times, alone in flight each time, is dropped from the
/// spool (counted in `spool_dropped_unauthorized`) so that the records behind it are delivered.
pub const POISON_REFUSALS: u32 = 3;
/// Bound on records with refusals remembered.
const MAX_SUSPECTS: usize = 256;

/// Runs the transport until `stop` is cancelled, then drains for up to
/// `params.drain_deadline` and disconnects. Returns an error only for configuration problems
/// found before the first connection (certificate, key, CA); everything else is retried.
pub async fn run(
    params: TransportParams,
    spool: SharedSpool,
    stats: Arc<TransportStats>,
    stop: CancellationToken,
) -> Result<(), TransportError> {
    let tls = tls::client_config(&params.mqtt)?;
    stats.attach_spool(&spool);
    let mut backoff = Backoff::new(params.mqtt.reconnect_min, params.mqtt.reconnect_max);
    let mut t = Transporter {
        names: TlsNames::new(&params.mqtt),
        topics: Topics::new(&params.thing, params.format),
        awaiting: Awaiting::new(params.mqtt.response_timeout),
        refusals: HashMap::new(),
        serial: false,
        params,
        tls,
        spool,
        stats,
    };
    loop {
        match t.session(&stop).await {
            SessionEnd::Stopped => break,
            SessionEnd::Lost { healthy } => {
                if healthy {
                    backoff.reset();
                }
            }
        }
        let delay = backoff.next_delay();
        info!(
            delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "Reconnecting after a delay."
        );
        let wake = Instant::now() + delay;
        loop {
            tokio::select! {
                _ = stop.cancelled() => {
                    info!("Transport stopped while disconnected; records stay spooled.");
                    return Ok(());
                }
                _ = sleep_until(wake) => break,
                _ = until(t.awaiting.next_deadline()) => t.expire_answers(),
            }
        }
    }
    info!("Transport stopped.");
    Ok(())
}

/// Sleeps until `deadline`, or forever without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Aborts the event loop task when the session ends, however it ends.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Transporter {
    fn options(&self) -> MqttOptions {
        let m = &self.params.mqtt;
        let mut opts = MqttOptions::new(m.client_id.clone(), m.endpoint.clone(), m.port);
        opts.set_keep_alive(m.keep_alive.max(Duration::from_secs(1)))
            .set_clean_session(true)
            .set_max_packet_size(MAX_INCOMING_PACKET, MAX_OUTGOING_PACKET)
            .set_inflight(u16::try_from(PUBLISH_WINDOW).expect("the window is small"))
            .set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                Arc::clone(&self.tls),
            )));
        opts
    }

    async fn session(&mut self, stop: &CancellationToken) -> SessionEnd {
        let (client, mut eventloop) = AsyncClient::new(self.options(), PUBLISH_WINDOW + 8);
        let mut net = eventloop.network_options();
        net.set_connection_timeout(CONNECT_TIMEOUT_SECS);
        eventloop.set_network_options(net);
        let (tx, mut rx) = mpsc::channel(32);
        let poller = tokio::spawn(async move {
            loop {
                let ev = eventloop.poll().await;
                let failed = ev.is_err();
                if tx.send(ev).await.is_err() || failed {
                    break;
                }
            }
        });
        let _abort = AbortOnDrop(poller.abort_handle());

        let mut st = Session::new(if self.serial { 1 } else { PUBLISH_WINDOW });
        let mut connected_at: Option<Instant> = None;
        let mut got_puback = false;
        let mut drain_until: Option<Instant> = None;
        let mut disconnect_by: Option<Instant> = None;
        debug!(endpoint = %self.params.mqtt.endpoint, port = self.params.mqtt.port, "Connecting.");

        loop {
            if connected_at.is_some() && disconnect_by.is_none() {
                let exhausted = self.fill(&client, &mut st).await;
                if drain_until.is_some() && exhausted && st.outstanding() == 0 {
                    info!("Spool drained; disconnecting.");
                    let _ = client.try_disconnect();
                    disconnect_by = Some(Instant::now() + DISCONNECT_GRACE);
                }
            }
            let connected = connected_at.is_some();
            let can_send = connected && st.can_send() && disconnect_by.is_none();
            tokio::select! {
                biased;
                _ = stop.cancelled(), if drain_until.is_none() => {
                    if !connected {
                        return SessionEnd::Stopped;
                    }
                    info!(
                        outstanding = st.outstanding(),
                        pending = self.spool.stats().depth,
                        "Stopping: publishing what is spooled before disconnecting."
                    );
                    drain_until = Some(Instant::now() + self.params.drain_deadline);
                }
                _ = until(disconnect_by) => return SessionEnd::Stopped,
                _ = until(drain_until), if disconnect_by.is_none() => {
                    warn!(
                        outstanding = st.outstanding(),
                        pending = self.spool.stats().depth,
                        "Drain deadline reached; unacknowledged records stay spooled for the next start."
                    );
                    let _ = client.try_disconnect();
                    disconnect_by = Some(Instant::now() + DISCONNECT_GRACE);
                }
                ev = rx.recv() => match ev {
                    Some(Ok(Event::Outgoing(Outgoing::Disconnect))) if disconnect_by.is_some() => {
                        return SessionEnd::Stopped;
                    }
                    Some(Ok(event)) => {
                        self.on_event(event, &client, &mut st, &mut connected_at, &mut got_puback).await;
                    }
                    Some(Err(e)) => {
                        if disconnect_by.is_some() {
                            return SessionEnd::Stopped;
                        }
                        self.on_error(&e, connected, &st);
                        let healthy = connected_at
                            .is_some_and(|t| got_puback || t.elapsed() >= HEALTHY_SESSION);
                        if connected_at.is_some() && !healthy {
                            TransportStats::incr(&self.stats.short_sessions);
                        }
                        return SessionEnd::Lost { healthy };
                    }
                    None => return SessionEnd::Lost { healthy: false },
                },
                _ = until(st.oldest_unacked().map(|t| t + self.params.puback_timeout)), if disconnect_by.is_none() => {
                    TransportStats::incr(&self.stats.disconnects);
                    let message = format!(
                        "No PUBACK within {} s; reconnecting to publish the record again",
                        self.params.puback_timeout.as_secs_f32()
                    );
                    warn!(endpoint = %self.params.mqtt.endpoint, outstanding = st.outstanding(), "{message}.");
                    self.stats.set_last_error(message);
                    return SessionEnd::Lost { healthy: false };
                }
                _ = self.spool.appended(), if can_send => {}
                _ = until(self.awaiting.next_deadline()) => self.expire_answers(),
            }
        }
    }

    /// Hands spooled records to the client while the window allows. Returns true when the
    /// spool has nothing more to send in this session.
    async fn fill(&mut self, client: &AsyncClient, st: &mut Session) -> bool {
        while st.can_send() {
            let rec = match self.spool.next_after(st.cursor).await {
                Ok(Some(r)) => r,
                Ok(None) => return true,
                Err(e) => {
                    error!(error = %e, "Cannot read the spool; retrying later.");
                    return false;
                }
            };
            if self.refusals.get(&rec.id).copied().unwrap_or(0) >= POISON_REFUSALS {
                error!(
                    id = %rec.id,
                    topic = %rec.topic,
                    refusals = POISON_REFUSALS,
                    "The broker refused this record every time it was published (check the IoT policy for this topic); dropping it so that the records behind it are delivered."
                );
                if let Err(e) = self.spool.ack_many(vec![rec.id]).await {
                    error!(error = %e, "Cannot remove the record from the spool.");
                }
                TransportStats::incr(&self.stats.dropped_unauthorized);
                self.refusals.remove(&rec.id);
                self.serial = !self.refusals.is_empty();
                st.cursor = Some(rec.id);
                continue;
            }
            if let Some(reason) = unpublishable(&rec.topic, rec.payload.len()) {
                error!(
                    id = %rec.id,
                    topic = %rec.topic,
                    bytes = rec.payload.len(),
                    reason,
                    "Spooled record can never be published; dropping it."
                );
                if let Err(e) = self.spool.ack_many(vec![rec.id]).await {
                    error!(error = %e, "Cannot remove the record from the spool.");
                }
                st.cursor = Some(rec.id);
                continue;
            }
            let report_id = self
                .topics
                .report_encoding(&rec.topic)
                .and_then(|enc| report_id_of(&rec.payload, enc));
            let sent = Sent {
                id: rec.id,
                topic: rec.topic.clone(),
                report_id,
                at: Instant::now(),
            };
            match client.try_publish(rec.topic, QoS::AtLeastOnce, false, rec.payload) {
                Ok(()) => {
                    debug!(id = %sent.id, topic = %sent.topic, report_id = ?report_id, "Publishing.");
                    st.queued(sent);
                }
                Err(e) => {
                    // Only when the session is ending (the request channel is sized for the
                    // window); the record stays spooled.
                    debug!(error = %e, "MQTT client does not take more requests.");
                    return false;
                }
            }
        }
        false
    }

    async fn on_event(
        &mut self,
        event: Event,
        client: &AsyncClient,
        st: &mut Session,
        connected_at: &mut Option<Instant>,
        got_puback: &mut bool,
    ) {
        match event {
            Event::Incoming(Incoming::ConnAck(ack)) => {
                *connected_at = Some(Instant::now());
                TransportStats::incr(&self.stats.connects);
                info!(
                    endpoint = %self.params.mqtt.endpoint,
                    port = self.params.mqtt.port,
                    client_id = %self.params.mqtt.client_id,
                    session_present = ack.session_present,
                    pending = self.spool.stats().depth,
                    "Connected to MQTT broker."
                );
                let filters = vec![
                    SubscribeFilter::new(self.topics.accepted.clone(), QoS::AtLeastOnce),
                    SubscribeFilter::new(self.topics.rejected.clone(), QoS::AtLeastOnce),
                ];
                if let Err(e) = client.try_subscribe_many(filters) {
                    warn!(error = %e, "Cannot subscribe to Device Defender answers.");
                }
            }
            Event::Incoming(Incoming::SubAck(ack)) => {
                let filters = [&self.topics.accepted, &self.topics.rejected];
                for (code, filter) in ack.return_codes.iter().zip(filters) {
                    if *code == SubscribeReasonCode::Failure {
                        TransportStats::incr(&self.stats.subscribe_auth_errors);
                        warn!(
                            filter = %filter,
                            "Broker refused the subscription (SUBACK failure: not authorized, or throttled); Device Defender answers on it will not arrive."
                        );
                    }
                }
            }
            Event::Incoming(Incoming::PubAck(ack)) => match st.on_puback(ack.pkid) {
                Some(sent) => {
                    *got_puback = true;
                    if self.refusals.remove(&sent.id).is_some() && self.refusals.is_empty() {
                        self.serial = false;
                    }
                    TransportStats::incr(&self.stats.published);
                    if let Err(e) = self.spool.ack_many(vec![sent.id]).await {
                        error!(id = %sent.id, error = %e, "Cannot acknowledge a published record in the spool; it will be published again.");
                    }
                    debug!(id = %sent.id, pkid = ack.pkid, "PUBACK: record left the spool.");
                    if let Some(rid) = sent.report_id {
                        let evicted = self.awaiting.expect(rid, Instant::now());
                        self.stats
                            .no_response
                            .fetch_add(evicted, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                None => debug!(pkid = ack.pkid, "PUBACK for a packet id not in flight."),
            },
            Event::Incoming(Incoming::Publish(p)) => self.on_message(&p.topic, &p.payload),
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                if let Err(anomaly) = st.on_outgoing_publish(pkid, Instant::now()) {
                    warn!(
                        ?anomaly,
                        "Unexpected packet id sequence; affected records stay spooled."
                    );
                }
            }
            _ => {}
        }
    }

    fn on_message(&mut self, topic: &str, payload: &[u8]) {
        let rejected = if topic == self.topics.accepted {
            false
        } else if topic == self.topics.rejected {
            true
        } else {
            debug!(
                topic,
                "Message on a topic we did not subscribe to; ignored."
            );
            return;
        };
        super::response::record_answer(
            &self.stats,
            &mut self.awaiting,
            topic,
            payload,
            self.topics.encoding,
            rejected,
        );
    }

    fn expire_answers(&mut self) {
        for report_id in self.awaiting.expire(Instant::now()) {
            TransportStats::incr(&self.stats.no_response);
            warn!(
                report_id,
                timeout_ms = u64::try_from(self.params.mqtt.response_timeout.as_millis())
                    .unwrap_or(u64::MAX),
                "No answer from Device Defender for a published report."
            );
        }
    }

    fn on_error(&mut self, e: &ConnectionError, connected: bool, st: &Session) {
        if connected && closed_by_peer(e) {
            if let Some(sent) = st.publish_auth_suspect(Instant::now()) {
                // Only a record alone in flight is surely the refused one; otherwise publish
                // one at a time from now on until the suspect is found.
                if st.outstanding() == 1 && self.refusals.len() < MAX_SUSPECTS {
                    *self.refusals.entry(sent.id).or_insert(0) += 1;
                }
                self.serial = true;
            }
        }
        let (counter, message) = self.classify(e, connected, st);
        if let Some(c) = counter {
            TransportStats::incr(c);
        }
        if connected {
            TransportStats::incr(&self.stats.disconnects);
        }
        warn!(
            endpoint = %self.params.mqtt.endpoint,
            port = self.params.mqtt.port,
            pending = self.spool.stats().depth,
            "{message}; retrying with backoff."
        );
        self.stats.set_last_error(message);
    }

    /// The counter a connection error goes to, and its explanation for an operator.
    fn classify<'s>(
        &'s self,
        e: &ConnectionError,
        connected: bool,
        st: &Session,
    ) -> (Option<&'s std::sync::atomic::AtomicU64>, String) {
        let s = &*self.stats;
        let m = &self.params.mqtt;
        if let Some(t) = tls::find_tls_error(e) {
            return (
                Some(&s.tls_failures),
                format!("TLS failure: {}", tls::describe_tls_error(t, &self.names)),
            );
        }
        if let ConnectionError::Tls(te) = e {
            return (Some(&s.tls_failures), format!("TLS failure: {te}"));
        }
        if let ConnectionError::ConnectionRefused(code) = e {
            return match code {
                ConnectReturnCode::NotAuthorized | ConnectReturnCode::BadUserNamePassword => (
                    Some(&s.connect_auth_errors),
                    format!(
                        "Broker refused the connection ({code:?}): check the policy attached to certificate {} and the client id {:?}",
                        m.cert_file.display(),
                        m.client_id
                    ),
                ),
                _ => (
                    Some(&s.connect_failures),
                    format!("Broker refused the connection ({code:?})"),
                ),
            };
        }
        if !connected {
            if closed_by_peer(e) {
                return (
                    Some(&s.connect_auth_errors),
                    format!(
                        "Broker closed the connection before CONNACK (AWS IoT does this when certificate {} or its policy does not allow connecting as client id {:?}): {e}",
                        m.cert_file.display(),
                        m.client_id
                    ),
                );
            }
            return (
                Some(&s.connect_failures),
                format!("Cannot connect to the broker: {e}"),
            );
        }
        if closed_by_peer(e) {
            if let Some(sent) = st.publish_auth_suspect(Instant::now()) {
                return (
                    Some(&s.publish_auth_errors),
                    format!(
                        "Broker closed the connection right after a publish on {} (record {}) that got no PUBACK: the policy probably does not allow publishing there; the record stays spooled",
                        sent.topic, sent.id
                    ),
                );
            }
        }
        (
            None,
            format!("Connection lost, unacknowledged records will be published again: {e}"),
        )
    }
}

/// Why a record can never be published, if so.
fn unpublishable(topic: &str, payload_len: usize) -> Option<&'static str> {
    if topic.is_empty() || topic.contains(['+', '#', '\0']) {
        Some("invalid topic")
    } else if topic.len() + payload_len + 8 > MAX_OUTGOING_PACKET {
        Some("larger than the 128 KB MQTT payload limit of AWS IoT")
    } else {
        None
    }
}

/// True when the error means the peer closed or reset the connection.
fn closed_by_peer(e: &ConnectionError) -> bool {
    use std::io::ErrorKind;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(StateError::ConnectionAborted) = err.downcast_ref::<StateError>() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                ErrorKind::UnexpectedEof
                    | ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::BrokenPipe
            );
        }
        cur = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let mut caps = Vec::new();
        for _ in 0..8 {
            let d = b.next_delay();
            caps.push(d);
        }
        let expected = [100u64, 200, 400, 800, 1000, 1000, 1000, 1000];
        for (d, cap) in caps.iter().zip(expected) {
            let cap = Duration::from_millis(cap);
            assert!(
                *d >= cap / 2 && *d <= cap,
                "{d:?} not in [{:?}, {cap:?}]",
                cap / 2
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn report_topics_are_recognised_by_encoding() {
        let t = Topics::new("gw-1", ReportFormat::JsonShort);
        assert_eq!(
            t.accepted,
            "$aws/things/gw-1/defender/metrics/json/accepted"
        );
        assert_eq!(
            t.rejected,
            "$aws/things/gw-1/defender/metrics/json/rejected"
        );
        assert_eq!(
            t.report_encoding("$aws/things/gw-1/defender/metrics/cbor"),
            Some(Encoding::Cbor)
        );
        assert_eq!(t.report_encoding("edgewarden/gw-1/violations"), None);
        assert_eq!(
            t.report_encoding("$aws/things/gw-1/defender/metrics/json/accepted"),
            None
        );
    }

    #[test]
    fn unpublishable_records_are_recognised() {
        assert_eq!(unpublishable("a/b", 10), None);
        assert!(unpublishable("a/+", 10).is_some());
        assert!(unpublishable("", 10).is_some());
        assert!(unpublishable("a", 200 * 1024).is_some());
    }

    #[test]
    fn peer_close_is_recognised_through_the_error_chain() {
        let e = ConnectionError::MqttState(StateError::ConnectionAborted);
        assert!(closed_by_peer(&e));
        let e = ConnectionError::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(closed_by_peer(&e));
        let e = ConnectionError::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(!closed_by_peer(&e));
        assert!(!closed_by_peer(&ConnectionError::NetworkTimeout));
    }
}
