//! Log alerts as violations: coalesced per kind and rate-limited, so a flood of log lines gives a
//! bounded number of violations.
//!
//! Every alert of one kind raised since the kind's previous violation goes into one violation
//! listing up to [`MAX_LISTED_SOURCES`] sources and the totals (alerts, events, sources left
//! out). A kind gives at most one violation per [`MIN_GAP`]; alerts raised in between wait
//! for the next one, so nothing is lost from the counts. With seven kinds that is at most seven
//! violations per minute, whatever the logs say. The spool then holds violations in a budget of
//! their own ([`crate::spool::Spool::append_many_budgeted`]), so they cannot push reports out.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::tracker::{AlertKind, LogAlert};
use crate::detect::{DefenderValue, ViolationEventType};
use crate::metrics;

/// Sources named in one violation; the rest are counted.
pub const MAX_LISTED_SOURCES: usize = 16;
/// Shortest time between two violations of one kind.
pub const MIN_GAP: Duration = Duration::from_secs(60);
/// Share of the spool violations may hold (one eighth).
pub const SPOOL_SHARE: u64 = 8;

/// The alerts of one kind gathered into one violation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertBatch {
    /// The kind.
    pub kind: AlertKind,
    /// Alerts gathered.
    pub alerts: u64,
    /// Events counted by those alerts.
    pub events: u64,
    /// Distinct sources named (address or host name as logged), at most [`MAX_LISTED_SOURCES`].
    pub sources: BTreeSet<String>,
    /// Alerts whose source is not listed (list full).
    pub unlisted: u64,
    /// Alerts whose line named no source (events attributed to a guessed peer).
    pub unnamed: u64,
    /// Time of the first and of the last alert, ms since the epoch.
    pub first_ms: u64,
    /// See `first_ms`.
    pub last_ms: u64,
    /// The first alert's explanation.
    pub first_detail: String,
}

impl AlertBatch {
    fn new(a: &LogAlert) -> AlertBatch {
        AlertBatch {
            kind: a.kind,
            alerts: 0,
            events: 0,
            sources: BTreeSet::new(),
            unlisted: 0,
            unnamed: 0,
            first_ms: a.at_ms,
            last_ms: a.at_ms,
            first_detail: a.detail.clone(),
        }
    }

    fn add(&mut self, a: &LogAlert) {
        self.alerts += 1;
        self.events += u64::from(a.events);
        self.first_ms = self.first_ms.min(a.at_ms);
        self.last_ms = self.last_ms.max(a.at_ms);
        if a.host.is_empty() {
            self.unnamed += 1;
        } else if self.sources.contains(&a.host) {
        } else if self.sources.len() < MAX_LISTED_SOURCES {
            self.sources.insert(a.host.clone());
        } else {
            self.unlisted += 1;
        }
    }

    /// One sentence for operators.
    pub fn explanation(&self) -> String {
        if self.alerts == 1 {
            return self.first_detail.clone();
        }
        let mut s = format!(
            "{} {} alerts ({} events)",
            self.alerts,
            self.kind.as_str(),
            self.events
        );
        if !self.sources.is_empty() {
            let list: Vec<&str> = self.sources.iter().map(String::as_str).collect();
            s.push_str(&format!(" from {}", list.join(", ")));
        }
        if self.unlisted > 0 {
            s.push_str(&format!(", {} more from other sources", self.unlisted));
        }
        if self.unnamed > 0 {
            s.push_str(&format!(
                ", {} from clients whose address was not logged",
                self.unnamed
            ));
        }
        s.push_str(&format!("; first: {}", self.first_detail));
        s
    }

    /// The batch as a violation event, in the shape of the security-profile violations.
    pub fn violation(&self, thing: &str, profile: &str) -> Vec<u8> {
        let v = self.violation_event(thing, profile);
        // Strings, integers and one finite float: serializing cannot fail.
        serde_json::to_vec(&v).unwrap_or_default()
    }

    /// The batch as a typed violation event.
    pub fn violation_event(&self, thing: &str, profile: &str) -> LogAlertViolation {
        let metric = match self.kind {
            AlertKind::ClientIdTakeover => metrics::MQTT_CLIENT_ID_CONFLICTS,
            _ => metrics::AUTH_FAILURE_SOURCES,
        };
        let cidrs: Vec<String> = self
            .sources
            .iter()
            .filter_map(|h| h.parse::<std::net::IpAddr>().ok())
            .map(|ip| format!("{ip}/{}", if ip.is_ipv4() { 32 } else { 128 }))
            .collect();
        let metric_value = if cidrs.is_empty() || self.kind == AlertKind::ClientIdTakeover {
            DefenderValue {
                count: Some(self.alerts),
                ..DefenderValue::default()
            }
        } else {
            DefenderValue {
                cidrs: Some(cidrs),
                ..DefenderValue::default()
            }
        };
        let id = format!(
            "{:016x}",
            crate::hash::fnv1a(
                format!(
                    "{thing}/{}/{}/{}/{}",
                    self.kind.as_str(),
                    self.first_ms,
                    self.last_ms,
                    self.alerts
                )
                .as_bytes()
            )
        );
        LogAlertViolation {
            violation_id: id,
            thing_name: thing.to_owned(),
            security_profile_name: profile.to_owned(),
            behavior: LogAlertBehavior {
                name: self.kind.as_str().to_owned(),
                metric: metric.to_owned(),
            },
            metric_value,
            violation_event_type: ViolationEventType::InAlarm,
            violation_event_time: self.last_ms,
            score: 1.0,
            explanation: self.explanation(),
            sources: self.sources.iter().cloned().collect(),
            alerts: self.alerts,
            events: self.events,
            unlisted_alerts: self.unlisted,
            unnamed_alerts: self.unnamed,
        }
    }
}

/// The behaviour a log alert violation names: the alert kind and the metric it counts in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogAlertBehavior {
    /// The alert kind (`ssh_brute_force`, …).
    pub name: String,
    /// The custom metric the alerts count in.
    pub metric: String,
}

/// A violation raised by the log rules: the fields of a security-profile violation
/// ([`crate::detect::ViolationEvent`], same names and meaning), then what the logs add.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogAlertViolation {
    /// Stable for one batch of alerts.
    pub violation_id: String,
    /// The thing.
    pub thing_name: String,
    /// The log rules' profile name.
    pub security_profile_name: String,
    /// The alert kind and its metric.
    pub behavior: LogAlertBehavior,
    /// The sources as CIDRs, or the number of alerts when no source is an address.
    pub metric_value: DefenderValue,
    /// Always `in-alarm`: log alerts are events, they do not clear.
    pub violation_event_type: ViolationEventType,
    /// Time of the batch's last alert, ms since the UNIX epoch.
    pub violation_event_time: u64,
    /// Always 1.
    pub score: f64,
    /// One line for operators.
    pub explanation: String,
    /// Sources named (up to [`MAX_LISTED_SOURCES`]).
    pub sources: Vec<String>,
    /// Alerts in the batch.
    pub alerts: u64,
    /// Log events behind them.
    pub events: u64,
    /// Alerts whose source did not fit the list.
    pub unlisted_alerts: u64,
    /// Alerts without a source.
    pub unnamed_alerts: u64,
}

#[derive(Debug, Default)]
struct KindState {
    pending: Option<AlertBatch>,
    /// Earliest time of the next violation of this kind (monotonic ms).
    next_ms: u64,
}

/// Gathers alerts per kind and releases at most one violation per kind per [`MIN_GAP`].
#[derive(Debug)]
pub struct AlertCoalescer {
    gap_ms: u64,
    kinds: BTreeMap<AlertKind, KindState>,
}

impl Default for AlertCoalescer {
    fn default() -> AlertCoalescer {
        AlertCoalescer::new(MIN_GAP)
    }
}

impl AlertCoalescer {
    /// A coalescer releasing one violation per kind per `gap`.
    pub fn new(gap: Duration) -> AlertCoalescer {
        AlertCoalescer {
            gap_ms: u64::try_from(gap.as_millis()).unwrap_or(u64::MAX),
            kinds: BTreeMap::new(),
        }
    }

    /// Adds alerts.
    pub fn push(&mut self, alerts: &[LogAlert]) {
        for a in alerts {
            self.kinds
                .entry(a.kind)
                .or_default()
                .pending
                .get_or_insert_with(|| AlertBatch::new(a))
                .add(a);
        }
    }

    /// The batches whose kind may raise a violation at `now_ms` (a monotonic clock in ms).
    pub fn take_due(&mut self, now_ms: u64) -> Vec<AlertBatch> {
        let mut out = Vec::new();
        for st in self.kinds.values_mut() {
            if st.pending.is_some() && now_ms >= st.next_ms {
                out.extend(st.pending.take());
                st.next_ms = now_ms.saturating_add(self.gap_ms);
            }
        }
        out
    }

    /// Every pending batch, whatever the rate limit (at shutdown).
    pub fn take_all(&mut self) -> Vec<AlertBatch> {
        self.kinds
            .values_mut()
            .filter_map(|st| st.pending.take())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(kind: AlertKind, host: &str, at_ms: u64) -> LogAlert {
        LogAlert {
            kind,
            source: host.parse().ok(),
            host: host.to_owned(),
            events: 1,
            detail: format!("{kind} from {host}"),
            at_ms,
        }
    }

    #[test]
    fn a_flood_gives_one_violation_per_kind_per_gap_and_keeps_the_totals() {
        let mut c = AlertCoalescer::new(Duration::from_secs(60));
        let flood: Vec<LogAlert> = (0..10_000u64)
            .map(|i| {
                alert(
                    AlertKind::ClientIdTakeover,
                    &format!("10.0.{}.{}", i / 256, i % 256),
                    i,
                )
            })
            .collect();
        c.push(&flood);
        c.push(&[alert(AlertKind::BruteForce, "192.0.2.1", 5)]);
        let first = c.take_due(1_000);
        assert_eq!(first.len(), 2);
        let t = first
            .iter()
            .find(|b| b.kind == AlertKind::ClientIdTakeover)
            .unwrap();
        assert_eq!(t.alerts, 10_000);
        assert_eq!(t.sources.len(), MAX_LISTED_SOURCES);
        assert_eq!(t.unlisted, 10_000 - MAX_LISTED_SOURCES as u64);
        let v: serde_json::Value = serde_json::from_slice(&t.violation("gw", "p")).unwrap();
        assert_eq!(v["alerts"], 10_000);
        assert!(v["explanation"].as_str().unwrap().contains("9984 more"));
        // Within the gap: held, not lost.
        c.push(&flood[..3]);
        assert!(c.take_due(30_000).is_empty());
        let later = c.take_due(61_000);
        assert_eq!(later.len(), 1);
        assert_eq!(later[0].alerts, 3);
        c.push(&flood[..1]);
        assert_eq!(c.take_all().len(), 1);
    }

    #[test]
    fn a_single_alert_keeps_its_own_explanation_and_cidr() {
        let mut c = AlertCoalescer::default();
        c.push(&[alert(AlertKind::BruteForce, "192.0.2.1", 5)]);
        let b = c.take_due(0).pop().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&b.violation("gw", "p")).unwrap();
        assert_eq!(v["explanation"], "brute_force from 192.0.2.1");
        assert_eq!(v["metricValue"]["cidrs"][0], "192.0.2.1/32");
        assert_eq!(v["sources"][0], "192.0.2.1");
    }

    #[test]
    fn a_log_alert_violation_reads_back_typed_and_shares_the_profile_violations_keys() {
        let mut c = AlertCoalescer::default();
        c.push(&[
            alert(AlertKind::BruteForce, "192.0.2.1", 5),
            alert(AlertKind::BruteForce, "2001:db8::1", 7),
        ]);
        let b = c.take_due(0).pop().unwrap();
        let line = b.violation("gw", "edgewarden-log-rules");
        let back: LogAlertViolation = serde_json::from_slice(&line).unwrap();
        assert_eq!(back, b.violation_event("gw", "edgewarden-log-rules"));
        assert_eq!(back.violation_event_type, ViolationEventType::InAlarm);
        assert_eq!(back.sources.len(), 2);
        assert_eq!(back.alerts, 2);
        // Every key a profile violation has (but the ML-only additional info) is here too.
        let v: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&line).unwrap();
        for k in [
            "violationId",
            "thingName",
            "securityProfileName",
            "behavior",
            "metricValue",
            "violationEventType",
            "violationEventTime",
            "score",
            "explanation",
        ] {
            assert!(v.contains_key(k), "{k} missing");
        }
        assert!(!v.contains_key("source"));
    }
}
