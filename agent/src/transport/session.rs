//! State of one MQTT session, with no I/O: which spooled record each packet id carries.
//!
//! rumqttc's `publish()` returns no packet id. Each session uses a fresh client and event
//! loop, so the `Outgoing::Publish(pkid)` events of a session come exactly in the order of our
//! publish requests (QoS 1 only; rumqttc defers a request whose packet id is still in use and
//! emits its event when it is finally written, still in request order). So: every request
//! is queued here in send order; each `Outgoing::Publish(pkid)` takes the oldest queued
//! request and binds it to `pkid`; `Incoming::PubAck(pkid)` releases the binding and the
//! record may be acknowledged in the spool. A packet id is reused by rumqttc only after its
//! PUBACK, so a binding is never overwritten in a well-behaved session; if it were, the older
//! record simply stays in the spool and is sent again in the next session.
//!
//! Nothing of this survives a session: after a reconnect, every record still in the spool is
//! published again, oldest first, and bound anew.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use crate::spool::SpoolId;

/// A connection closed this soon after a publish that got no PUBACK counts as the broker's
/// refusal of that publish (what AWS IoT Core does on MQTT 3.1.1).
pub const PUBLISH_AUTH_WINDOW: Duration = Duration::from_secs(3);

/// A record handed to the MQTT client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// Spool id.
    pub id: SpoolId,
    /// Topic it was published on.
    pub topic: String,
    /// The report id inside, for reports on a Device Defender topic.
    pub report_id: Option<u64>,
    /// When it was handed to the client.
    pub at: Instant,
}

/// Something that should not happen in a well-behaved session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Anomaly {
    /// `Outgoing::Publish` with no request waiting for a packet id.
    UnexpectedPublish(u16),
    /// A packet id was bound again before its PUBACK; the displaced record stays spooled.
    PkidReused {
        /// The packet id.
        pkid: u16,
        /// The record that lost its binding.
        displaced: SpoolId,
    },
}

/// Publish window and packet-id bindings of one session.
#[derive(Debug)]
pub struct Session {
    window: usize,
    /// Handed to the client, waiting for their `Outgoing::Publish(pkid)`.
    queued: VecDeque<Sent>,
    /// Written with a packet id, waiting for PUBACK.
    inflight: HashMap<u16, Sent>,
    /// Replay cursor: the last spool id handed to the client in this session.
    pub cursor: Option<SpoolId>,
    /// When the last publish was written to the connection.
    last_written: Option<Instant>,
}

impl Session {
    /// A new session allowing `window` unacknowledged publishes.
    pub fn new(window: usize) -> Session {
        Session {
            window: window.max(1),
            queued: VecDeque::new(),
            inflight: HashMap::new(),
            cursor: None,
            last_written: None,
        }
    }

    /// True when another record may be published.
    pub fn can_send(&self) -> bool {
        self.outstanding() < self.window
    }

    /// Records handed to the client and not yet acknowledged.
    pub fn outstanding(&self) -> usize {
        self.queued.len() + self.inflight.len()
    }

    /// Records a publish request handed to the client.
    pub fn queued(&mut self, sent: Sent) {
        self.cursor = Some(sent.id);
        self.queued.push_back(sent);
    }

    /// Binds the oldest queued request to `pkid`.
    pub fn on_outgoing_publish(&mut self, pkid: u16, now: Instant) -> Result<(), Anomaly> {
        let Some(sent) = self.queued.pop_front() else {
            return Err(Anomaly::UnexpectedPublish(pkid));
        };
        self.last_written = Some(now);
        match self.inflight.insert(pkid, sent) {
            None => Ok(()),
            Some(old) => Err(Anomaly::PkidReused {
                pkid,
                displaced: old.id,
            }),
        }
    }

    /// Releases the binding of `pkid`; the record it carried may leave the spool.
    pub fn on_puback(&mut self, pkid: u16) -> Option<Sent> {
        self.inflight.remove(&pkid)
    }

    /// When the oldest publish still waiting for its PUBACK was handed to the client.
    pub fn oldest_unacked(&self) -> Option<Instant> {
        self.inflight
            .values()
            .chain(self.queued.iter())
            .map(|s| s.at)
            .min()
    }

    /// When the connection was closed by the broker at `now`: the publish it most likely
    /// refused (the most recently written one without PUBACK, if written within
    /// [`PUBLISH_AUTH_WINDOW`]).
    pub fn publish_auth_suspect(&self, now: Instant) -> Option<&Sent> {
        let last = self.last_written?;
        if now.duration_since(last) > PUBLISH_AUTH_WINDOW {
            return None;
        }
        self.inflight.values().max_by_key(|s| (s.at, s.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(id: u64, at: Instant) -> Sent {
        Sent {
            id: SpoolId(id),
            topic: "t".into(),
            report_id: None,
            at,
        }
    }

    #[test]
    fn packet_ids_are_bound_in_send_order_and_released_on_puback() {
        let now = Instant::now();
        let mut s = Session::new(3);
        s.queued(sent(10, now));
        s.queued(sent(11, now));
        s.queued(sent(12, now));
        assert!(!s.can_send());
        s.on_outgoing_publish(1, now).unwrap();
        s.on_outgoing_publish(2, now).unwrap();
        // Acks may come out of order.
        assert_eq!(s.on_puback(2).map(|x| x.id), Some(SpoolId(11)));
        assert!(s.can_send());
        s.on_outgoing_publish(3, now).unwrap();
        assert_eq!(s.on_puback(1).map(|x| x.id), Some(SpoolId(10)));
        assert_eq!(s.on_puback(3).map(|x| x.id), Some(SpoolId(12)));
        assert_eq!(s.on_puback(3), None, "a duplicate PUBACK releases nothing");
        assert_eq!(s.outstanding(), 0);
        assert_eq!(s.cursor, Some(SpoolId(12)));
    }

    #[test]
    fn packet_id_reuse_after_puback_binds_the_new_record() {
        let now = Instant::now();
        let mut s = Session::new(1);
        s.queued(sent(1, now));
        s.on_outgoing_publish(1, now).unwrap();
        assert_eq!(s.on_puback(1).map(|x| x.id), Some(SpoolId(1)));
        s.queued(sent(2, now));
        s.on_outgoing_publish(1, now).unwrap();
        assert_eq!(s.on_puback(1).map(|x| x.id), Some(SpoolId(2)));
    }

    #[test]
    fn anomalies_are_reported_not_hidden() {
        let now = Instant::now();
        let mut s = Session::new(4);
        assert_eq!(
            s.on_outgoing_publish(5, now),
            Err(Anomaly::UnexpectedPublish(5))
        );
        s.queued(sent(1, now));
        s.queued(sent(2, now));
        s.on_outgoing_publish(7, now).unwrap();
        assert_eq!(
            s.on_outgoing_publish(7, now),
            Err(Anomaly::PkidReused {
                pkid: 7,
                displaced: SpoolId(1)
            })
        );
        assert_eq!(s.on_puback(7).map(|x| x.id), Some(SpoolId(2)));
    }

    #[test]
    fn close_right_after_an_unacked_publish_is_suspected_as_publish_refusal() {
        let t0 = Instant::now();
        let mut s = Session::new(4);
        assert!(s.publish_auth_suspect(t0).is_none());
        s.queued(sent(1, t0));
        s.on_outgoing_publish(1, t0).unwrap();
        assert_eq!(
            s.publish_auth_suspect(t0 + Duration::from_millis(50))
                .map(|x| x.id),
            Some(SpoolId(1))
        );
        assert!(s
            .publish_auth_suspect(t0 + PUBLISH_AUTH_WINDOW + Duration::from_millis(1))
            .is_none());
        s.on_puback(1);
        assert!(
            s.publish_auth_suspect(t0).is_none(),
            "acknowledged: not refused"
        );
    }

    proptest::proptest! {
        /// Whatever the interleaving of requests, packet-id assignment (rumqttc reuses an id
        /// only after its PUBACK) and out-of-order PUBACKs, each PUBACK releases exactly the
        /// record that was sent with that packet id, and nothing is released twice.
        #[test]
        fn pubacks_release_exactly_the_records_sent_with_their_packet_ids(
            ops in proptest::collection::vec((0u8..3, 0usize..16), 1..200)
        ) {
            let now = Instant::now();
            let mut s = Session::new(8);
            let mut next_id = 0u64;
            let mut queued = std::collections::VecDeque::new();
            let mut bound: HashMap<u16, u64> = HashMap::new();
            let mut released = std::collections::HashSet::new();
            for (op, n) in ops {
                match op {
                    0 if s.can_send() => {
                        next_id += 1;
                        s.queued(sent(next_id, now));
                        queued.push_back(next_id);
                    }
                    1 => {
                        if let Some(id) = queued.pop_front() {
                            // rumqttc picks a free packet id.
                            let pkid = (1..=8u16).find(|p| !bound.contains_key(p)).unwrap();
                            s.on_outgoing_publish(pkid, now).unwrap();
                            bound.insert(pkid, id);
                        }
                    }
                    _ => {
                        let mut keys: Vec<u16> = bound.keys().copied().collect();
                        keys.sort_unstable();
                        if !keys.is_empty() {
                            let pkid = keys[n % keys.len()];
                            let want = bound.remove(&pkid).unwrap();
                            let got = s.on_puback(pkid).map(|x| x.id.0);
                            proptest::prop_assert_eq!(got, Some(want));
                            proptest::prop_assert!(released.insert(want));
                        }
                    }
                }
                proptest::prop_assert_eq!(s.outstanding(), queued.len() + bound.len());
            }
        }
    }
}
