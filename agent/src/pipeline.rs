//! The one place that wires the stages together and runs them.
//!
//! ```text
//!  tick ──► collect::Collector::sample ─┐ (spawn_blocking)
//!           logs::LogMonitor::drain ────┼──► Snapshot ──► detect::Engine::evaluate ──► violations ─┐
//!                                       │                                                     │
//!                                       └──► report::Aggregator ──(every report interval)──► report ┤
//!                                                                                             ▼
//!                                     outbox (embedded default)  or  spool ──► transport::mqtt
//! ```
//!
//! Collection runs on a fixed tick (default 10 s); detection runs on every tick, independent of the
//! Device Defender report period (default 300 s). Reports and violations are written durably
//! (outbox file, or the spool before any publish) before the tick ends.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::cli::LogsScanArgs;
use crate::collect::Collector;
use crate::config::{Config, ReportFormat};
use crate::detect::{self, Engine, EngineState, ViolationEvent};
use crate::logs::{LogAlert, LogMonitor};
use crate::metrics;
use crate::outbox::{Outbox, OutboxError, REPORTS, VIOLATIONS};
use crate::report::{self, Aggregator, ReportIds};
use crate::snapshot::{MetricValue, Snapshot};
use crate::spool::{SharedSpool, Spool, SpoolError};
use crate::transport::{self, TransportStats};

/// File in the state directory holding the detector's learned state.
pub const DETECT_STATE_FILE: &str = "detect.json";

/// A failure that stops the agent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The state directory cannot be used.
    #[error("state directory {path}: {source}")]
    StateDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The outbox cannot be written.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// The spool cannot be opened or written.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The security profile cannot be loaded.
    #[error("security profile: {0}")]
    Profile(String),
    /// The MQTT files or settings are unusable.
    #[error(transparent)]
    Transport(#[from] transport::TransportError),
}

/// Wall clock in ms since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Checks what can be known before starting: MQTT files (modes, PEM, key matches certificate)
/// and the security profile.
pub fn preflight(cfg: &Config) -> Result<(), AgentError> {
    if let Some(m) = &cfg.mqtt {
        transport::check_mqtt_files(m)?;
    }
    if let Some(p) = &cfg.detect.profile {
        detect::load_profile(p).map_err(|e| AgentError::Profile(e.to_string()))?;
    }
    Ok(())
}

/// Where reports and violations go.
enum Sink {
    /// Embedded default: JSON lines on disk (and optionally stdout).
    Outbox { outbox: Outbox, stdout: bool },
    /// The durable spool in front of the MQTT transport.
    Spool {
        spool: SharedSpool,
        stats: Arc<TransportStats>,
    },
}

impl Sink {
    async fn report(
        &mut self,
        cfg: &Config,
        rep: &report::MetricsReport,
    ) -> Result<(), AgentError> {
        match self {
            Sink::Outbox { outbox, stdout } => {
                let fmt = match cfg.report.format {
                    ReportFormat::Cbor => ReportFormat::Json,
                    f => f,
                };
                let line = report::encode(rep, fmt);
                outbox.append(REPORTS, &line)?;
                if *stdout {
                    crate::outbox::write_stdout_line(&line);
                }
                Ok(())
            }
            Sink::Spool { spool, .. } => {
                let payload = report::encode(rep, cfg.report.format);
                spool.append(cfg.defender_topic(), payload).await?;
                Ok(())
            }
        }
    }

    async fn violation(&mut self, cfg: &Config, line: Vec<u8>) -> Result<(), AgentError> {
        match self {
            Sink::Outbox { outbox, stdout } => {
                outbox.append(VIOLATIONS, &line)?;
                if *stdout {
                    crate::outbox::write_stdout_line(&line);
                }
            }
            Sink::Spool { spool, .. } => {
                spool.append(cfg.violations_topic(), line).await?;
            }
        }
        Ok(())
    }

    /// Where the audit stage writes: the same kind of sink.
    fn audit_output(&self) -> (crate::audit::stage::Output, Option<Arc<TransportStats>>) {
        match self {
            Sink::Outbox { stdout, .. } => (
                crate::audit::stage::Output::Outbox { stdout: *stdout },
                None,
            ),
            Sink::Spool { spool, stats } => (
                crate::audit::stage::Output::Spool(spool.clone()),
                Some(stats.clone()),
            ),
        }
    }

    fn custom_metrics(&self) -> Vec<(&'static str, MetricValue)> {
        match self {
            Sink::Outbox { .. } => Vec::new(),
            Sink::Spool { stats, .. } => stats
                .custom_metrics()
                .into_iter()
                .map(|(k, x)| (k, MetricValue::Number(x)))
                .collect(),
        }
    }
}

/// Runs the agent until `stop` is cancelled.
pub async fn run(cfg: Config, stop: CancellationToken) -> Result<(), AgentError> {
    std::fs::create_dir_all(&cfg.state_dir).map_err(|source| AgentError::StateDir {
        path: cfg.state_dir.clone(),
        source,
    })?;
    for w in &cfg.warnings {
        warn!("{w}");
    }
    preflight(&cfg)?;
    info!(
        thing = %cfg.thing_name,
        state_dir = %cfg.state_dir.display(),
        collect_interval = ?cfg.collect.interval,
        report_interval = ?cfg.report.interval,
        transport = if cfg.mqtt.is_some() { "mqtt" } else { "outbox" },
        "Agent starting."
    );

    let tasks = tokio_util::task::TaskTracker::new();
    let mut sink = match &cfg.mqtt {
        None => {
            let outbox = Outbox::open(&cfg.state_dir, cfg.outbox.max_bytes)?;
            info!(dir = %outbox.dir().display(), "No transport configured; writing reports to the local outbox.");
            Sink::Outbox {
                outbox,
                stdout: cfg.outbox.stdout,
            }
        }
        Some(m) => {
            let spool = SharedSpool::new(Spool::open(&cfg.state_dir.join("spool"), &cfg.spool)?);
            let stats = Arc::new(TransportStats::default());
            let params = transport::mqtt::TransportParams::new(
                m.clone(),
                cfg.thing_name.clone(),
                cfg.report.format,
            );
            let (spool2, stats2, stop2) = (spool.clone(), stats.clone(), stop.clone());
            tasks.spawn(async move {
                if let Err(e) = transport::mqtt::run(params, spool2, stats2, stop2.clone()).await {
                    error!(error = %e, "Transport stopped; reports stay in the spool.");
                    stop2.cancel();
                }
            });
            Sink::Spool { spool, stats }
        }
    };

    // Device audit and remediation: their own task, asleep between audits.
    let (audit_output, audit_transport) = sink.audit_output();
    let audit =
        crate::audit::stage::spawn(&tasks, &cfg, audit_output, audit_transport, stop.clone());

    let mut ids = ReportIds::open(&cfg.state_dir).map_err(|source| AgentError::StateDir {
        path: cfg.state_dir.clone(),
        source,
    })?;
    let logs = cfg
        .logs
        .enabled
        .then(|| LogMonitor::spawn(&cfg.logs, &cfg.state_dir, stop.clone()));
    let mut engine = if cfg.detect.enabled {
        let profile = match &cfg.detect.profile {
            Some(p) => detect::load_profile(p).map_err(|e| AgentError::Profile(e.to_string()))?,
            None => detect::default_profile(),
        };
        let state = load_engine_state(&cfg.state_dir);
        Some(Engine::new(profile, &cfg.detect, &cfg.thing_name, state))
    } else {
        None
    };

    let mut aggregator = Aggregator::new(&cfg.report);
    let mut collector = Some(Collector::new(&cfg.collect));
    let mut ticker = tokio::time::interval(cfg.collect.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let started = Instant::now();
    // Log alerts of the current report interval, summarised with the engine's own violations.
    let mut interval_log_alerts: Vec<&'static str> = Vec::new();
    // The first report waits for the warm-up so that it carries deltas, never cumulative counters.
    let mut next_report = started + cfg.report.warm_up.max(cfg.collect.interval);
    let mut next_state_save = started + Duration::from_secs(300);

    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let Some(c) = collector.take() else { break };
        let (c, mut snap) = match tokio::task::spawn_blocking(move || {
            let mut c = c;
            let s = c.sample();
            (c, s)
        })
        .await
        {
            Ok(v) => v,
            Err(e) => {
                error!(error = %e, "Collector task failed; restarting the collector.");
                collector = Some(Collector::new(&cfg.collect));
                continue;
            }
        };
        collector = Some(c);
        let mut log_alerts: Vec<LogAlert> = Vec::new();
        if let Some(l) = &logs {
            let tick = l.drain();
            for (name, value) in tick.custom_metrics() {
                snap.custom.insert(name.to_owned(), value);
            }
            log_alerts = tick.alerts;
        }
        for (name, value) in audit.custom_metrics() {
            snap.custom.insert(name.to_owned(), value);
        }
        let mut lines: Vec<Vec<u8>> = Vec::new();
        if let Some(engine) = engine.as_mut() {
            for v in engine.evaluate(&snap) {
                log_violation(&v);
                if v.alerts_suppressed() {
                    // suppressAlerts: kept in the engine's status, never published.
                    continue;
                }
                let line = serde_json::to_vec(&v).expect("a violation event always serializes");
                if v.violation_event_type == detect::ViolationEventType::InAlarm {
                    audit.violation(&v.behavior.name, None, &line);
                }
                lines.push(line);
            }
            // Model (re)training runs on the blocking pool, off the async workers.
            let jobs = engine.training_jobs();
            if !jobs.is_empty() {
                match tokio::task::spawn_blocking(move || {
                    jobs.into_iter().map(|j| j.run()).collect::<Vec<_>>()
                })
                .await
                {
                    Ok(models) => {
                        for m in models {
                            engine.install(m);
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, "Model training failed; the previous models stay in use.")
                    }
                }
            }
        }
        for a in &log_alerts {
            warn!(alert = a.kind.as_str(), source = %a.host, events = a.events, explanation = %a.detail, "Violation from logs.");
            interval_log_alerts.push(a.kind.as_str());
            let line = log_alert_violation(&cfg.thing_name, a);
            audit.violation(a.kind.as_str(), a.source, &line);
            lines.push(line);
        }
        for line in lines {
            if let Err(e) = sink.violation(&cfg, line).await {
                error!(error = %e, "Cannot store a violation; it is lost.");
            }
        }
        aggregator.add(&snap);

        let now = Instant::now();
        if now >= next_report {
            next_report = now + cfg.report.interval;
            emit_report(
                &cfg,
                &mut sink,
                &mut aggregator,
                &mut ids,
                engine.as_mut(),
                &mut interval_log_alerts,
            )
            .await;
        }
        if now >= next_state_save {
            next_state_save = now + Duration::from_secs(300);
            if let Some(e) = &engine {
                save_engine_state(&cfg.state_dir, &e.state());
            }
        }
    }

    // Drain: write what we hold, then let the transport publish within its deadline.
    if !aggregator.is_empty() {
        emit_report(
            &cfg,
            &mut sink,
            &mut aggregator,
            &mut ids,
            engine.as_mut(),
            &mut interval_log_alerts,
        )
        .await;
    }
    if let Some(e) = &engine {
        save_engine_state(&cfg.state_dir, &e.state());
    }
    tasks.close();
    if tokio::time::timeout(Duration::from_secs(4), tasks.wait())
        .await
        .is_err()
    {
        warn!("Transport did not drain in time; unacknowledged records stay in the spool.");
    }
    info!("Agent stopped.");
    Ok(())
}

async fn emit_report(
    cfg: &Config,
    sink: &mut Sink,
    aggregator: &mut Aggregator,
    ids: &mut ReportIds,
    engine: Option<&mut Engine>,
    log_alerts: &mut Vec<&'static str>,
) {
    let mut local = engine.map(|e| e.summary_metrics()).unwrap_or_default();
    if !log_alerts.is_empty() {
        let mut merged = false;
        for (name, value) in local.iter_mut() {
            match (*name, value) {
                (metrics::LOCAL_VIOLATIONS, MetricValue::Number(n)) => {
                    *n += log_alerts.len() as f64;
                    merged = true;
                }
                (metrics::LOCAL_VIOLATION_BEHAVIORS, MetricValue::StringList(l)) => {
                    l.extend(log_alerts.iter().map(|s| s.to_string()));
                    l.sort();
                    l.dedup();
                }
                _ => {}
            }
        }
        if !merged {
            local.push((
                metrics::LOCAL_VIOLATIONS,
                MetricValue::Number(log_alerts.len() as f64),
            ));
            let mut names: Vec<String> = log_alerts.iter().map(|s| s.to_string()).collect();
            names.sort();
            names.dedup();
            local.push((
                metrics::LOCAL_VIOLATION_BEHAVIORS,
                MetricValue::StringList(names),
            ));
        }
        log_alerts.clear();
    }
    for (name, value) in local {
        aggregator.add_custom(name, value);
    }
    for (name, value) in sink.custom_metrics() {
        aggregator.add_custom(name, value);
    }
    let id = match ids.next(now_ms()) {
        Ok(id) => id,
        Err(e) => {
            error!(error = %e, "Cannot persist the report id; report not sent this period.");
            return;
        }
    };
    let rep = aggregator.take(id);
    match sink.report(cfg, &rep).await {
        Ok(()) => info!(report_id = id, summary = %rep.summary(), "Report stored."),
        Err(e) => error!(report_id = id, error = %e, "Cannot store the report; it is lost."),
    }
}

fn log_violation(v: &ViolationEvent) {
    warn!(
        behavior = %v.behavior.name,
        metric = %v.behavior.metric,
        event = v.violation_event_type.as_str(),
        score = v.score,
        explanation = %v.explanation,
        "Violation."
    );
}

/// Profile name of the violations raised by log rules.
pub const LOG_RULES_PROFILE: &str = "edgewarden-log-rules";

/// A log alert as a violation event, in the same shape as the security-profile violations.
fn log_alert_violation(thing: &str, a: &LogAlert) -> Vec<u8> {
    use crate::logs::AlertKind;
    let (metric, value) = match a.kind {
        AlertKind::ClientIdTakeover => (
            metrics::MQTT_AUTH_FAILURES,
            serde_json::json!({ "count": a.events }),
        ),
        _ => match a.source {
            Some(ip) => (
                metrics::AUTH_FAILURE_SOURCES,
                serde_json::json!({ "cidrs": [format!("{ip}/{}", if ip.is_ipv4() { 32 } else { 128 })] }),
            ),
            None => (
                metrics::AUTH_FAILURE_SOURCES,
                serde_json::json!({ "count": a.events }),
            ),
        },
    };
    let id = format!(
        "{:016x}",
        crate::hash::fnv1a(
            format!("{thing}/{}/{}/{}", a.kind.as_str(), a.host, a.at_ms).as_bytes()
        )
    );
    let v = serde_json::json!({
        "violationId": id,
        "thingName": thing,
        "securityProfileName": LOG_RULES_PROFILE,
        "behavior": { "name": a.kind.as_str(), "metric": metric },
        "metricValue": value,
        "violationEventType": "in-alarm",
        "violationEventTime": a.at_ms,
        "score": 1.0,
        "explanation": a.detail,
        "source": a.host,
    });
    serde_json::to_vec(&v).expect("a JSON value always serializes")
}

fn load_engine_state(dir: &Path) -> Option<EngineState> {
    let path = dir.join(DETECT_STATE_FILE);
    let bytes = std::fs::read(&path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(file = %path.display(), error = %e, "Learned detector state unreadable; learning again.");
            None
        }
    }
}

fn save_engine_state(dir: &Path, state: &EngineState) {
    let path = dir.join(DETECT_STATE_FILE);
    let tmp = dir.join(format!("{DETECT_STATE_FILE}.tmp"));
    // Streamed to the file: the state can be hundreds of KiB and is never held twice.
    let res = std::fs::File::create(&tmp)
        .and_then(|f| {
            use std::io::Write as _;
            let mut w = std::io::BufWriter::new(f);
            serde_json::to_writer(&mut w, state).map_err(std::io::Error::other)?;
            w.flush()?;
            w.into_inner().map_err(|e| e.into_error())?.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = res {
        warn!(file = %path.display(), error = %e, "Cannot save the learned detector state.");
    }
}

/// One report of this machine: two samples `warm_up`-apart (at least 1 s) so that the report
/// carries deltas.
pub fn collect_once(cfg: &Config, format: ReportFormat, pretty: bool) -> anyhow::Result<Vec<u8>> {
    let mut c = Collector::new(&cfg.collect);
    let mut agg = Aggregator::new(&cfg.report);
    let first: Snapshot = c.sample();
    agg.add(&first);
    std::thread::sleep(
        cfg.report
            .warm_up
            .clamp(Duration::from_secs(1), Duration::from_secs(2)),
    );
    agg.add(&c.sample());
    let id = ReportIds::open(&cfg.state_dir)
        .and_then(|mut ids| ids.next(now_ms()))
        .unwrap_or_else(|_| now_ms());
    let rep = agg.take(id);
    let bytes = report::encode(&rep, format);
    if pretty && format != ReportFormat::Cbor {
        let v: serde_json::Value = serde_json::from_slice(&bytes)?;
        return Ok(serde_json::to_vec_pretty(&v)?);
    }
    Ok(bytes)
}

/// `edgewarden status`: the persisted detector state and the outbox/spool position.
pub fn status_text(cfg: &Config) -> anyhow::Result<String> {
    let mut s = format!(
        "thing: {}\nstate_dir: {}\n",
        cfg.thing_name,
        cfg.state_dir.display()
    );
    match load_engine_state(&cfg.state_dir) {
        None => s.push_str(
            "detector: no learned state yet (the agent has not run, or detection is off)\n",
        ),
        Some(state) => {
            let profile = match &cfg.detect.profile {
                Some(p) => detect::load_profile(p).map_err(|e| anyhow::anyhow!("{e}"))?,
                None => detect::default_profile(),
            };
            let engine = Engine::new(profile, &cfg.detect, &cfg.thing_name, Some(state));
            s.push_str(&engine.status().to_string());
        }
    }
    Ok(s)
}

/// `edgewarden logs scan`.
pub fn logs_scan(cfg: &Config, args: &LogsScanArgs) -> anyhow::Result<ExitCode> {
    let opts = crate::logs::ScanOptions {
        json: args.json,
        lines: args.lines,
        rules: Some(crate::logs::Rules::from_config(&cfg.logs)),
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    crate::logs::scan_files(&args.files, opts, &mut out)?;
    std::io::Write::flush(&mut out)?;
    Ok(ExitCode::SUCCESS)
}
