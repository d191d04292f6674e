//! Security events from the gateway's logs: authentication failures, brute force, broker abuse.
//!
//! Module map, in the order a line travels:
//!
//! - [`source`]: follows text files (position persisted, rotation, truncation, late files) and the
//!   systemd journal (`journalctl --follow --output=json`, cursor persisted);
//! - [`lines`]: splits bytes into lines with a length cap (longer lines are skipped and counted);
//! - [`export`]: turns `journalctl -o export` records into journal JSON lines (`logs scan`);
//! - [`format`](mod@format): frames a line (BSD syslog, ISO 8601, RFC 5424, journal JSON, Mosquitto);
//! - [`classify`](mod@classify): the pure, allocation-free classifier: one [`EventClass`] and the client address;
//! - [`provenance`]: whether the line comes from a program that reports such events (journald's
//!   own fields for journal entries, the syslog tag for text lines); forged events are counted
//!   apart and otherwise ignored;
//! - [`context`]: per-stream connection context (address of lines that carry none, attempts
//!   counted per connection rather than per line);
//! - [`tracker`]: per-source windows raising [`LogAlert`]s (brute force, user enumeration,
//!   negotiation scans, pre-auth probing, port scans, refused connections, client-id takeover);
//! - [`analyze`]: the glue used by both the live [`LogMonitor`] and the offline [`scan`].
//!
//! The monitor's counts become custom metrics ([`LogTick::custom_metrics`]); its alerts become
//! violations through [`alerts`]: coalesced per kind, rate-limited, and stored within their own
//! share of the spool.

pub mod alerts;
pub mod analyze;
pub mod class;
pub mod classify;
pub mod context;
pub mod export;
pub mod format;
pub mod lines;
pub mod provenance;
pub mod scan;
pub mod source;
pub mod tracker;

#[cfg(test)]
mod proptests;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::metrics;
use crate::snapshot::MetricValue;

pub use analyze::{Analyzer, LineOutcome, Stream};
pub use class::{ClassCounts, EventClass};
pub use classify::{classify, Classified, Hint};
pub use format::{frame, Format, Frame};
pub use scan::{
    scan_files, scan_reader, FileSummary, LineRow, ScanAlert, ScanOptions, ScanSummary,
};
pub use tracker::{AlertKind, LogAlert, Rules};

use source::{lock, FileFollower, Positions, Shared};

/// What the logs said since the previous [`LogMonitor::drain`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogTick {
    /// Events per class: one per line, N for an rsyslog `message repeated N times: [ … ]`
    /// line.
    pub counts: ClassCounts,
    /// Failed login attempts (SSH, PAM, Dropbear, sudo), counted per attempt.
    pub auth_attempts: u64,
    /// Lines read.
    pub lines: u64,
    /// Lines skipped for exceeding the line cap.
    pub skipped: u64,
    /// Lines (or further occurrences of a repeated message) read but not analysed because
    /// their source exceeded its line budget.
    pub dropped: u64,
    /// Source addresses evicted from the tracker (table full).
    pub evicted: u64,
    /// Addresses that failed authentication (SSH, PAM, MQTT, TLS), sorted, at most 128.
    pub sources: Vec<IpAddr>,
    /// Alerts raised.
    pub alerts: Vec<LogAlert>,
    /// Alerts lost because too many were raised between two drains.
    pub alerts_dropped: u64,
    /// Events read a second time through another source (journald and rsyslog both logging
    /// them) and not counted again.
    pub duplicates: u64,
    /// Lines reporting an event without coming from a program that reports it.
    pub forged: u64,
}

impl LogTick {
    /// The tick as custom metrics (names registered in [`crate::metrics`]). Every number is
    /// present, zero included; `auth_failure_sources` is always present, possibly empty.
    pub fn custom_metrics(&self) -> Vec<(&'static str, MetricValue)> {
        let n = |v: u64| MetricValue::Number(v as f64);
        let c = |k: EventClass| n(self.counts.get(k));
        vec![
            (metrics::AUTH_FAILURES, n(self.auth_attempts)),
            (metrics::AUTH_SUCCESSES, c(EventClass::AuthSuccess)),
            (metrics::SSH_INVALID_USERS, c(EventClass::InvalidUser)),
            (
                metrics::SSH_PREAUTH_DISCONNECTS,
                c(EventClass::PreauthDisconnect),
            ),
            (
                metrics::SSH_NEGOTIATION_FAILURES,
                c(EventClass::NegotiationFailure),
            ),
            (
                metrics::MQTT_AUTH_FAILURES,
                c(EventClass::MqttNotAuthorised),
            ),
            (metrics::MQTT_ACL_DENIALS, c(EventClass::MqttAclDenied)),
            (
                metrics::MQTT_CLIENT_ID_CONFLICTS,
                c(EventClass::MqttClientIdConflict),
            ),
            (
                metrics::MQTT_KEEPALIVE_TIMEOUTS,
                c(EventClass::MqttKeepaliveTimeout),
            ),
            (
                metrics::MQTT_PROTOCOL_ERRORS,
                c(EventClass::MqttProtocolError),
            ),
            (metrics::TLS_FAILURES, c(EventClass::TlsFailure)),
            (metrics::CONNECTIONS_REFUSED, c(EventClass::ConnRefused)),
            (metrics::FIREWALL_DROPS, c(EventClass::FwDrop)),
            (
                metrics::AUTH_FAILURE_SOURCES,
                MetricValue::IpList(self.sources.clone()),
            ),
            (
                metrics::LOG_ALERTS,
                n(self.alerts.len() as u64 + self.alerts_dropped),
            ),
            (metrics::LOG_LINES_SKIPPED, n(self.skipped)),
            (metrics::LOG_SOURCES_EVICTED, n(self.evicted)),
            (metrics::LOG_FORGED_EVENTS, n(self.forged)),
            (metrics::LOG_LINES_DROPPED, n(self.dropped)),
        ]
    }
}

/// The live log monitor: file followers on their own threads and a journal task, drained once
/// per collection tick.
#[derive(Debug)]
pub struct LogMonitor {
    shared: Arc<Mutex<Shared>>,
    positions_dir: PathBuf,
    saved: Mutex<Positions>,
}

impl LogMonitor {
    /// Starts following the journal (a Tokio task; must be called inside a Tokio runtime) and
    /// the configured files (one thread each). Positions are loaded from and saved to `<state_dir>/logs/`. With `[logs]
    /// enabled = false` nothing is followed and every drain is empty. A missing journal or file
    /// is reported once; followers stop when `stop` is cancelled.
    pub fn spawn(
        cfg: &crate::config::LogsConfig,
        state_dir: &Path,
        stop: CancellationToken,
    ) -> LogMonitor {
        let positions_dir = state_dir.join("logs");
        let saved = Positions::load(&positions_dir);
        let shared = Arc::new(Mutex::new(Shared {
            analyzer: Analyzer::new(Rules::from_config(cfg)),
            positions: saved.clone(),
        }));
        if cfg.enabled {
            if cfg.journal {
                tokio::spawn(source::follow_journal(shared.clone(), stop.clone()));
            }
            let paths: std::collections::BTreeSet<&PathBuf> = cfg.files.iter().collect();
            for path in paths {
                let follower = FileFollower::new(path.clone(), saved.files.get(path).copied());
                if let Err(e) = source::spawn_file_follower(follower, shared.clone(), stop.clone())
                {
                    warn!(path = %path.display(), error = %e, "Cannot start a thread to follow a log file; it is not followed.");
                }
            }
        }
        LogMonitor {
            shared,
            positions_dir,
            saved: Mutex::new(saved),
        }
    }

    /// Counts and alerts since the previous drain. Saves the positions of the lines these
    /// counts cover, so a restart neither loses nor repeats them.
    pub fn drain(&self) -> LogTick {
        let (acc, evicted, positions) = {
            let mut sh = lock(&self.shared);
            let acc = sh.analyzer.take();
            let evicted = sh.analyzer.take_evictions();
            (acc, evicted, sh.positions.clone())
        };
        let mut saved = self
            .saved
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if positions != *saved || positions.journal_cursor != saved.journal_cursor {
            match positions.save(&self.positions_dir) {
                Ok(()) => *saved = positions,
                Err(e) => {
                    warn!(dir = %self.positions_dir.display(), error = %e, "Log positions not saved; lines may be counted again after a restart.")
                }
            }
        }
        LogTick {
            counts: acc.counts,
            auth_attempts: acc.auth_attempts,
            lines: acc.lines,
            skipped: acc.skipped,
            dropped: acc.dropped,
            evicted,
            sources: acc.sources.into_iter().collect(),
            alerts_dropped: acc.alerts_dropped,
            duplicates: acc.duplicates,
            forged: acc.forged,
            alerts: acc.alerts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;

    #[test]
    fn every_custom_metric_is_registered() {
        for (name, value) in LogTick::default().custom_metrics() {
            let def = metrics::find(name).unwrap_or_else(|| panic!("{name} not registered"));
            let list = matches!(value, MetricValue::IpList(_));
            assert_eq!(
                list,
                def.cloud_type == metrics::CloudType::IpAddressList,
                "{name}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn monitor_counts_new_lines_and_saves_positions_at_drain() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("auth.log");
        let state = dir.path().join("state");
        let cfg = crate::config::LogsConfig {
            enabled: true,
            journal: false,
            files: vec![log.clone()],
            brute_force_failures: 2,
            brute_force_window: Duration::from_secs(600),
            max_sources: 64,
        };
        let stop = CancellationToken::new();
        let mon = LogMonitor::spawn(&cfg, &state, stop.clone());
        tokio::time::sleep(Duration::from_millis(1500)).await;
        {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap();
            for port in 1..=3 {
                writeln!(f, "Jan  1 00:00:0{port} h sshd[{port}]: Failed password for root from 192.0.2.7 port {port} ssh2").unwrap();
            }
        }
        let mut tick = LogTick::default();
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let t = mon.drain();
            tick.auth_attempts += t.auth_attempts;
            tick.alerts.extend(t.alerts);
            tick.sources.extend(t.sources);
            if tick.auth_attempts >= 3 {
                break;
            }
        }
        stop.cancel();
        assert_eq!(tick.auth_attempts, 3);
        assert_eq!(tick.sources, vec!["192.0.2.7".parse::<IpAddr>().unwrap()]);
        assert_eq!(tick.alerts.len(), 1);
        assert_eq!(tick.alerts[0].kind, AlertKind::BruteForce);
        let saved = Positions::load(&state.join("logs"));
        assert_eq!(
            saved.files.get(&log).map(|p| p.offset),
            Some(std::fs::metadata(&log).unwrap().len())
        );
    }
}
