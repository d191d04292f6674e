//! Transport counters, reported upstream as custom metrics in the next report.
//!
//! Counters are cumulative since the agent started. They are plain atomics so that the report
//! stage can read them at any time without waiting for the transport.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use crate::metrics;
use crate::spool::{SharedSpool, SpoolStats};

/// Counters of the MQTT transport and the Device Defender exchange.
#[derive(Debug, Default)]
pub struct TransportStats {
    /// Sessions established (CONNACK accepted).
    pub connects: AtomicU64,
    /// Connection attempts that failed for network reasons (refused, unreachable, timeout).
    pub connect_failures: AtomicU64,
    /// CONNACK refusals for authorization (not authorized, bad credentials) and connections
    /// closed by the broker before any CONNACK (AWS IoT's answer to an unauthorized connect).
    pub connect_auth_errors: AtomicU64,
    /// SUBACK failures (not authorized, or throttled: MQTT 3.1.1 cannot tell them apart).
    pub subscribe_auth_errors: AtomicU64,
    /// Connections closed by the broker right after a publish that got no PUBACK (AWS IoT's
    /// answer to an unauthorized publish on MQTT 3.1.1).
    pub publish_auth_errors: AtomicU64,
    /// Records dropped from the spool after the broker refused them
    /// [`POISON_REFUSALS`](super::mqtt::POISON_REFUSALS) times.
    pub dropped_unauthorized: AtomicU64,
    /// TLS handshake failures (unknown CA, expired or revoked certificates, ...).
    pub tls_failures: AtomicU64,
    /// Established sessions that ended other than by our own disconnect.
    pub disconnects: AtomicU64,
    /// Sessions the broker closed shortly after CONNACK with nothing acknowledged (what a second
    /// client taking over our client id looks like); read by the device audit.
    pub short_sessions: AtomicU64,
    /// Records published and acknowledged by the broker (PUBACK).
    pub published: AtomicU64,
    /// Reports Device Defender accepted.
    pub reports_accepted: AtomicU64,
    /// Reports Device Defender rejected (all codes).
    pub reports_rejected: AtomicU64,
    /// Reports with no answer within `[mqtt] response_timeout`.
    pub no_response: AtomicU64,
    /// Answers that matched no report we wait for (late, duplicate, or for another client).
    pub unmatched_responses: AtomicU64,
    /// Messages on the response topics that could not be understood.
    pub malformed_responses: AtomicU64,
    /// Greengrass IPC protocol faults: undecodable frames, unknown message types, frames on
    /// streams never opened, PROTOCOL_ERROR / INTERNAL_ERROR from the nucleus.
    pub ipc_protocol_errors: AtomicU64,
    ipc: OnceLock<()>,
    rejected_by_code: Mutex<BTreeMap<String, u64>>,
    last_error: Mutex<Option<String>>,
    spool: OnceLock<SharedSpool>,
}

/// Bound on distinct rejection codes kept (codes are opaque strings chosen by the service).
const MAX_REJECTION_CODES: usize = 32;
/// Bucket for codes beyond [`MAX_REJECTION_CODES`].
const OTHER_CODES: &str = "(other)";

fn get(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

impl TransportStats {
    /// All counters at zero.
    pub fn new() -> TransportStats {
        TransportStats::default()
    }

    /// Adds one to a counter.
    pub fn incr(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Makes the spool's depth and drops part of [`TransportStats::custom_metrics`]. The
    /// transport does this itself; later calls are ignored.
    pub fn attach_spool(&self, spool: &SharedSpool) {
        let _ = self.spool.set(spool.clone());
    }

    /// Marks these counters as the Greengrass transport's: [`TransportStats::custom_metrics`]
    /// then includes `ipc_protocol_errors`.
    pub fn mark_ipc(&self) {
        let _ = self.ipc.set(());
    }

    /// Counts a rejection by its `ErrorCode`.
    pub fn count_rejection(&self, code: &str) {
        Self::incr(&self.reports_rejected);
        let mut map = self
            .rejected_by_code
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let key = if map.contains_key(code) || map.len() < MAX_REJECTION_CODES {
            code
        } else {
            OTHER_CODES
        };
        *map.entry(key.to_owned()).or_insert(0) += 1;
    }

    /// Remembers the explanation of the latest connection problem.
    pub fn set_last_error(&self, message: String) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(message);
    }

    /// The explanation of the latest connection problem (TLS, authorization, network), as
    /// logged at WARN.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Rejections so far, by `ErrorCode`.
    pub fn rejected_by_code(&self) -> BTreeMap<String, u64> {
        self.rejected_by_code
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The spool's counters, when a spool is attached.
    pub fn spool_stats(&self) -> Option<SpoolStats> {
        self.spool.get().map(SharedSpool::stats)
    }

    /// Every counter as `(custom metric name, value)`; names are registered in
    /// [`crate::metrics`].
    pub fn custom_metrics(&self) -> Vec<(&'static str, f64)> {
        let mut v = vec![
            (metrics::MQTT_CONNECTS, get(&self.connects) as f64),
            (
                metrics::MQTT_CONNECT_FAILURES,
                get(&self.connect_failures) as f64,
            ),
            (
                metrics::MQTT_CONNECT_AUTH_ERRORS,
                get(&self.connect_auth_errors) as f64,
            ),
            (
                metrics::MQTT_SUBSCRIBE_AUTH_ERRORS,
                get(&self.subscribe_auth_errors) as f64,
            ),
            (
                metrics::MQTT_PUBLISH_AUTH_ERRORS,
                get(&self.publish_auth_errors) as f64,
            ),
            (
                metrics::SPOOL_DROPPED_UNAUTHORIZED,
                get(&self.dropped_unauthorized) as f64,
            ),
            (metrics::MQTT_TLS_FAILURES, get(&self.tls_failures) as f64),
            (metrics::MQTT_DISCONNECTS, get(&self.disconnects) as f64),
            (metrics::MQTT_PUBLISHED, get(&self.published) as f64),
            (
                metrics::DEFENDER_REPORTS_ACCEPTED,
                get(&self.reports_accepted) as f64,
            ),
            (
                metrics::DEFENDER_REPORTS_REJECTED,
                get(&self.reports_rejected) as f64,
            ),
            (metrics::DEFENDER_NO_RESPONSE, get(&self.no_response) as f64),
        ];
        if self.ipc.get().is_some() {
            v.push((
                metrics::IPC_PROTOCOL_ERRORS,
                get(&self.ipc_protocol_errors) as f64,
            ));
        }
        if let Some(s) = self.spool_stats() {
            v.push((metrics::SPOOL_DEPTH, s.depth as f64));
            v.push((metrics::SPOOL_DROPPED, s.dropped as f64));
            v.push((metrics::SPOOL_CORRUPT_SKIPPED, s.corrupt_skipped as f64));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_custom_metric_is_registered() {
        let dir = tempfile::tempdir().unwrap();
        let spool = crate::spool::Spool::open(
            dir.path(),
            &crate::config::SpoolConfig {
                max_bytes: 1 << 20,
                max_records: 10,
            },
        )
        .unwrap();
        let s = TransportStats::new();
        s.attach_spool(&SharedSpool::new(spool));
        TransportStats::incr(&s.tls_failures);
        let m = s.custom_metrics();
        assert_eq!(m.len(), 15);
        for (name, _) in &m {
            assert!(metrics::find(name).is_some(), "{name} is not registered");
        }
        assert!(m.contains(&(metrics::MQTT_TLS_FAILURES, 1.0)));
    }

    #[test]
    fn rejection_codes_are_bounded() {
        let s = TransportStats::new();
        for i in 0..100 {
            s.count_rejection(&format!("Code{i}"));
        }
        s.count_rejection("Code0");
        let m = s.rejected_by_code();
        assert_eq!(m.len(), MAX_REJECTION_CODES + 1);
        assert_eq!(m["Code0"], 2);
        assert_eq!(m[OTHER_CODES], 100 - MAX_REJECTION_CODES as u64);
        assert_eq!(get(&s.reports_rejected), 101);
    }
}
