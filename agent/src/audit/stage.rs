//! The audit stage of `run`: one audit at start, then one every `[audit] interval`, and the
//! remediation of findings and violations.
//!
//! The stage is its own task that sleeps until the next audit or the next violation that has
//! remediation actions: between two audits it does no work at all. Checks and actions run on the
//! blocking pool. Every finding of an audit is written to `<state_dir>/outbox/audit.jsonl`
//! (outbox) or spooled on the audit topic (MQTT); every action to `outbox/actions.jsonl`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::{AuditInputs, SessionCounts};
use crate::config::Config;
use crate::metrics;
use crate::outbox::Outbox;
use crate::remediate::{Outcome, Remediator, Trigger};
use crate::snapshot::MetricValue;
use crate::spool::SharedSpool;
use crate::transport::TransportStats;

/// Outbox stream of findings.
pub const AUDIT_STREAM: &str = "audit";
/// Outbox stream of remediation actions.
pub const ACTIONS_STREAM: &str = "actions";
/// Outbox stream of the `publish` action without a transport.
pub const REMEDIATION_STREAM: &str = "remediation";
/// Violations waiting for remediation; beyond this they are dropped (and logged).
const QUEUE: usize = 64;

/// Where findings and published remediation messages go.
#[derive(Debug)]
pub enum Output {
    /// The local outbox.
    Outbox {
        /// Also print each finding on stdout.
        stdout: bool,
    },
    /// The spool in front of the MQTT transport.
    Spool(SharedSpool),
}

/// Counters reported as custom metrics.
#[derive(Debug, Default)]
pub struct AuditStats {
    audited: AtomicBool,
    findings: AtomicU64,
    noncompliant: Mutex<Vec<String>>,
    actions: AtomicU64,
    failures: AtomicU64,
    remediation: bool,
}

impl AuditStats {
    /// Custom metrics for the current tick: the latest audit's findings (after the first audit)
    /// and the remediation actions since the previous call (when remediation is on).
    pub fn custom_metrics(&self) -> Vec<(&'static str, MetricValue)> {
        let mut v = Vec::new();
        if self.audited.load(Ordering::Relaxed) {
            v.push((
                metrics::AUDIT_FINDINGS,
                MetricValue::Number(self.findings.load(Ordering::Relaxed) as f64),
            ));
            let names = self
                .noncompliant
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            v.push((
                metrics::AUDIT_NONCOMPLIANT_CHECKS,
                MetricValue::StringList(names),
            ));
        }
        if self.remediation {
            v.push((
                metrics::REMEDIATION_ACTIONS,
                MetricValue::Number(self.actions.swap(0, Ordering::Relaxed) as f64),
            ));
            v.push((
                metrics::REMEDIATION_FAILURES,
                MetricValue::Number(self.failures.swap(0, Ordering::Relaxed) as f64),
            ));
        }
        v
    }
}

/// The pipeline's handle on the stage.
#[derive(Debug, Clone)]
pub struct AuditHandle {
    stats: Arc<AuditStats>,
    tx: Option<mpsc::Sender<Trigger>>,
    filter: Option<Arc<Remediator>>,
}

impl AuditHandle {
    /// Custom metrics to add to the tick's snapshot.
    pub fn custom_metrics(&self) -> Vec<(&'static str, MetricValue)> {
        self.stats.custom_metrics()
    }

    /// Hands a violation to remediation when it has actions; otherwise does nothing.
    pub fn violation(&self, name: &str, source: Option<IpAddr>, json: &[u8]) {
        let (Some(tx), Some(filter)) = (&self.tx, &self.filter) else {
            return;
        };
        if !filter.wants(name) {
            return;
        }
        let id = serde_json::from_slice::<serde_json::Value>(json)
            .ok()
            .and_then(|v| {
                v.get("violationId")
                    .and_then(|x| x.as_str())
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        let t = Trigger {
            name: name.to_owned(),
            id,
            source,
            json: json.to_vec(),
        };
        if tx.try_send(t).is_err() {
            warn!(
                violation = name,
                "Remediation queue full; violation not remediated."
            );
        }
    }
}

/// Starts the stage (when the audit or remediation is on) on `tasks`.
pub fn spawn(
    tasks: &TaskTracker,
    cfg: &Config,
    output: Output,
    transport: Option<Arc<TransportStats>>,
    stop: CancellationToken,
) -> AuditHandle {
    let stats = Arc::new(AuditStats {
        remediation: cfg.remediation.enabled,
        ..AuditStats::default()
    });
    if !cfg.audit.enabled && !cfg.remediation.enabled {
        return AuditHandle {
            stats,
            tx: None,
            filter: None,
        };
    }
    let remediator = Remediator::new(&cfg.remediation, &cfg.thing_name);
    let (tx, rx) = mpsc::channel(QUEUE);
    let handle = AuditHandle {
        stats: stats.clone(),
        tx: cfg.remediation.enabled.then_some(tx),
        filter: Some(Arc::new(remediator.clone())),
    };
    let stage = Stage {
        cfg: cfg.clone(),
        output,
        stats,
        transport,
        last_sessions: SessionCounts::default(),
        remediator: Some(remediator),
    };
    tasks.spawn(stage.run(rx, stop));
    handle
}

struct Stage {
    cfg: Config,
    output: Output,
    stats: Arc<AuditStats>,
    transport: Option<Arc<TransportStats>>,
    last_sessions: SessionCounts,
    remediator: Option<Remediator>,
}

impl Stage {
    async fn run(mut self, mut rx: mpsc::Receiver<Trigger>, stop: CancellationToken) {
        let mut next_audit = Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep_until(next_audit), if self.cfg.audit.enabled => {
                    next_audit = Instant::now() + self.cfg.audit.interval;
                    self.audit().await;
                }
                Some(t) = rx.recv() => self.remediate(vec![t]).await,
            }
        }
    }

    fn sessions(&mut self) -> Option<SessionCounts> {
        let t = self.transport.as_ref()?;
        let now = SessionCounts {
            connects: t.connects.load(Ordering::Relaxed),
            short_sessions: t.short_sessions.load(Ordering::Relaxed),
        };
        let delta = SessionCounts {
            connects: now.connects.saturating_sub(self.last_sessions.connects),
            short_sessions: now
                .short_sessions
                .saturating_sub(self.last_sessions.short_sessions),
        };
        self.last_sessions = now;
        Some(delta)
    }

    async fn audit(&mut self) {
        let mut inputs =
            AuditInputs::from_config(&self.cfg, Path::new("/"), crate::pipeline::now_ms());
        inputs.sessions = self.sessions();
        let state_dir = self.cfg.state_dir.clone();
        let thing = self.cfg.thing_name.clone();
        let cert = inputs.cert_file.clone();
        let report = match tokio::task::spawn_blocking(move || {
            if let Some(c) = cert {
                write_identity(&state_dir, &thing, &c);
            }
            super::run(&inputs)
        })
        .await
        {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "Audit task failed; next audit at the next interval.");
                return;
            }
        };
        for e in &report.errors {
            warn!(check = %e.check_name, resource = %e.resource, error = %e.message, "Audit check incomplete.");
        }
        info!(
            findings = report.findings.len(),
            noncompliant = ?report.noncompliant_checks(),
            errors = report.errors.len(),
            "Device audit done."
        );
        self.stats
            .findings
            .store(report.findings.len() as u64, Ordering::Relaxed);
        *self
            .stats
            .noncompliant
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = report.noncompliant_checks();
        self.stats.audited.store(true, Ordering::Relaxed);
        let topic = self
            .cfg
            .audit
            .topic
            .replace("{thing}", &self.cfg.thing_name);
        let mut triggers = Vec::new();
        for f in &report.findings {
            let line = serde_json::to_vec(f).expect("a finding always serializes");
            warn!(check = %f.check_name, severity = f.severity.as_str(), finding = %f.finding_id, reason = %f.reason_for_non_compliance, "Audit finding.");
            self.write(AUDIT_STREAM, &topic, line.clone()).await;
            triggers.push(Trigger {
                name: f.check_name.clone(),
                id: f.finding_id.clone(),
                source: None,
                json: line,
            });
        }
        self.remediate(triggers).await;
    }

    async fn write(&mut self, stream: &str, topic: &str, line: Vec<u8>) {
        match &self.output {
            Output::Outbox { stdout } => {
                let stdout = *stdout;
                let res = Outbox::open(&self.cfg.state_dir, self.cfg.outbox.max_bytes)
                    .and_then(|mut o| o.append(stream, &line));
                match res {
                    Ok(()) if stdout => crate::outbox::write_stdout_line(&line),
                    Ok(()) => {}
                    Err(e) => warn!(error = %e, "Cannot store an audit record; it is lost."),
                }
            }
            Output::Spool(spool) => {
                if let Err(e) = spool.append(topic.to_owned(), line).await {
                    warn!(error = %e, topic, "Cannot spool an audit record; it is lost.");
                }
            }
        }
    }

    async fn remediate(&mut self, triggers: Vec<Trigger>) {
        let Some(r) = self.remediator.take() else {
            return;
        };
        let triggers: Vec<Trigger> = triggers.into_iter().filter(|t| r.wants(&t.name)).collect();
        if triggers.is_empty() {
            self.remediator = Some(r);
            return;
        }
        let joined = tokio::task::spawn_blocking(move || {
            let mut r = r;
            let out: Vec<_> = triggers
                .iter()
                .map(|t| r.handle(t, std::time::Instant::now(), crate::pipeline::now_ms()))
                .collect();
            (r, out)
        })
        .await;
        let (r, handled) = match joined {
            Ok(v) => v,
            Err(e) => {
                warn!(error = %e, "Remediation task failed; its actions are not recorded.");
                self.remediator =
                    Some(Remediator::new(&self.cfg.remediation, &self.cfg.thing_name));
                return;
            }
        };
        self.remediator = Some(r);
        let actions_file: PathBuf = self.cfg.state_dir.join("outbox");
        for h in handled {
            for rec in &h.records {
                match rec.outcome {
                    Outcome::Done | Outcome::DryRun => {
                        self.stats.actions.fetch_add(1, Ordering::Relaxed);
                    }
                    Outcome::Failed => {
                        self.stats.actions.fetch_add(1, Ordering::Relaxed);
                        self.stats.failures.fetch_add(1, Ordering::Relaxed);
                    }
                    // Recorded, not attempted.
                    Outcome::Refused | Outcome::RateLimited => {}
                }
                let level_warn = rec.outcome == Outcome::Failed;
                if level_warn {
                    warn!(action = %rec.action, trigger = %rec.trigger, detail = %rec.detail, "Remediation failed.");
                } else {
                    info!(action = %rec.action, trigger = %rec.trigger, outcome = ?rec.outcome, detail = %rec.detail, "Remediation.");
                }
                let line = serde_json::to_vec(rec).expect("an action record always serializes");
                let res = Outbox::open(&self.cfg.state_dir, self.cfg.outbox.max_bytes)
                    .and_then(|mut o| o.append(ACTIONS_STREAM, &line));
                if let Err(e) = res {
                    warn!(dir = %actions_file.display(), error = %e, "Cannot record a remediation action.");
                }
            }
            for (topic, payload) in h.publish {
                self.write(REMEDIATION_STREAM, &topic, payload).await;
            }
        }
    }
}

fn write_identity(state_dir: &Path, thing: &str, cert: &Path) {
    if let Some(fp) = super::certs::device_fingerprint(cert) {
        if let Err(e) = super::certs::write_identity(state_dir, thing, &fp) {
            warn!(dir = %state_dir.display(), error = %e, "Cannot write the audit identity file.");
        }
    }
}
