//! The one place that wires the stages together and runs them.
//!
//! ```text
//!  tick ──► collect::Collector::sample ─┐ (on the runtime thread: a tick is ~1 ms of reads)
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

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::collect::Collector;
use crate::config::{Config, ReportFormat};
use crate::detect::{self, Engine, EngineState, ViolationEvent};
use crate::logs::{self, alerts::AlertCoalescer, LogAlert, LogMonitor};
use crate::metrics;
use crate::outbox::{Outbox, OutboxError, REPORTS, VIOLATIONS};
use crate::report::{self, Aggregator, ReportIds};
use crate::snapshot::MetricValue;
use crate::spool::{SharedSpool, Spool, SpoolError};
use crate::transport::greengrass::ComponentSettings;
use crate::transport::{self, TransportStats};

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
/// and the security profile. Returns the problems that do not stop the agent: an endpoint that
/// does not resolve (yet: at boot, DNS may come up after the agent; the transport retries).
pub fn preflight(cfg: &Config) -> Result<Vec<String>, AgentError> {
    let mut warnings = Vec::new();
    if let Some(m) = &cfg.mqtt {
        match transport::check_mqtt_files(m) {
            Ok(()) => {}
            Err(e @ transport::TransportError::Resolve { .. }) => {
                warnings.push(format!("{e} (the agent keeps retrying)"))
            }
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(p) = &cfg.detect.profile {
        detect::load_profile(p).map_err(|e| AgentError::Profile(e.to_string()))?;
    }
    Ok(warnings)
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

    /// Stores one tick's violations; returns how many were refused for lack of room (the spool
    /// keeps violations within their own budget, see [`logs::alerts::SPOOL_SHARE`]).
    async fn violations(&mut self, cfg: &Config, lines: Vec<Vec<u8>>) -> Result<u64, AgentError> {
        if lines.is_empty() {
            return Ok(0);
        }
        match self {
            Sink::Outbox { outbox, stdout } => {
                for line in lines {
                    outbox.append(VIOLATIONS, &line)?;
                    if *stdout {
                        crate::outbox::write_stdout_line(&line);
                    }
                }
                Ok(0)
            }
            Sink::Spool { spool, .. } => Ok(spool
                .append_many_budgeted(cfg.violations_topic(), lines, logs::alerts::SPOOL_SHARE)
                .await?),
        }
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
pub async fn run(mut cfg: Config, stop: CancellationToken) -> Result<(), AgentError> {
    std::fs::create_dir_all(&cfg.state_dir).map_err(|source| AgentError::StateDir {
        path: cfg.state_dir.clone(),
        source,
    })?;
    for w in &cfg.warnings {
        warn!("{w}");
    }
    for w in preflight(&cfg)? {
        warn!("{w}");
    }
    let publisher = transport::Publisher::select(&cfg);
    if let Some(p) = &publisher {
        cfg.thing_name = p.thing_name().to_owned();
    }
    info!(
        thing = %cfg.thing_name,
        state_dir = %cfg.state_dir.display(),
        collect_interval = ?cfg.collect.interval,
        report_interval = ?cfg.report.interval,
        transport = publisher.as_ref().map_or("outbox", |p| p.name()),
        "Agent starting."
    );

    let tasks = tokio_util::task::TaskTracker::new();
    // Configuration pushed by the platform (Greengrass component configuration), applied live.
    let (live_tx, mut live_rx) = tokio::sync::watch::channel(ComponentSettings::default());
    // The transport drains once the pipeline has written its last report, not before.
    let transport_stop = CancellationToken::new();
    let mut sink = match publisher {
        None => {
            let outbox = Outbox::open(&cfg.state_dir, cfg.outbox.max_bytes)?;
            info!(dir = %outbox.dir().display(), "No transport configured; writing reports to the local outbox.");
            Sink::Outbox {
                outbox,
                stdout: cfg.outbox.stdout,
            }
        }
        Some(publisher) => {
            let spool = SharedSpool::new(Spool::open(&cfg.state_dir.join("spool"), &cfg.spool)?);
            let stats = Arc::new(TransportStats::default());
            let (spool2, stats2, stop2) = (spool.clone(), stats.clone(), stop.clone());
            let transport_stop = transport_stop.clone();
            tasks.spawn(async move {
                if let Err(e) = publisher.run(spool2, stats2, live_tx, transport_stop).await {
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
    let mut logs_stop = stop.child_token();
    let mut logs = cfg
        .logs
        .enabled
        .then(|| LogMonitor::spawn(&cfg.logs, &cfg.state_dir, logs_stop.clone()));
    let mut engine = new_engine(&cfg, detect::persist::load(&cfg.state_dir))?;

    let mut aggregator = Aggregator::new(&cfg.report);
    // A report the sink refused (disk full): offered again at every tick.
    let mut held_report: Option<report::MetricsReport> = None;
    let mut collector = new_collector(&cfg);
    let mut ticker = tokio::time::interval(cfg.collect.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let started = Instant::now();
    // Log alerts of the current report interval, summarised with the engine's own violations.
    let mut interval_log_alerts: Vec<&'static str> = Vec::new();
    // Log alerts become at most one violation per kind per minute.
    let mut coalescer = AlertCoalescer::default();
    // The first report waits for the warm-up so that it carries deltas, never cumulative counters.
    let mut next_report = started + cfg.report.warm_up.max(cfg.collect.interval);
    let mut next_state_save = started + Duration::from_secs(300);
    // systemd: READY after the first tick, watchdog pings only while this loop turns.
    let mut service = crate::notify::ServiceNotify::from_env();
    let mut watchdog =
        tokio::time::interval(service.ping_every().unwrap_or(Duration::from_secs(3600)));
    watchdog.set_missed_tick_behavior(MissedTickBehavior::Delay);

    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {}
            _ = watchdog.tick() => {
                service.watchdog();
                continue;
            }
            Ok(()) = live_rx.changed() => {
                let settings = live_rx.borrow_and_update().clone();
                let changed = transport::greengrass::apply_settings(&mut cfg, &settings);
                if changed.any() {
                    info!(
                        collect_interval = ?cfg.collect.interval,
                        report_interval = ?cfg.report.interval,
                        format = cfg.report.format.as_str(),
                        detect = cfg.detect.enabled,
                        logs = cfg.logs.enabled,
                        "Configuration changed; applied without a restart."
                    );
                }
                if changed.collect {
                    ticker = tokio::time::interval(cfg.collect.interval);
                    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
                }
                if changed.report {
                    next_report = next_report.min(Instant::now() + cfg.report.interval);
                    collector.set_full_walk_max_age(cfg.report.interval);
                }
                if changed.detect {
                    let state = engine.as_ref().map(|e| e.state());
                    if let Some(s) = &state {
                        detect::persist::save(&cfg.state_dir, s);
                    }
                    match new_engine(&cfg, state.or_else(|| detect::persist::load(&cfg.state_dir))) {
                        Ok(e) => engine = e,
                        Err(e) => error!(error = %e, "Cannot rebuild the detector; keeping the previous one."),
                    }
                }
                if changed.logs {
                    logs_stop.cancel();
                    logs_stop = stop.child_token();
                    logs = cfg
                        .logs
                        .enabled
                        .then(|| LogMonitor::spawn(&cfg.logs, &cfg.state_dir, logs_stop.clone()));
                }
                continue;
            }
        }
        // On the runtime's own thread: a tick is a millisecond or two of reads that never block
        // on the network, and handing it to another thread cost more in wake-ups than it saved.
        let mut snap = collector.sample();
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
        coalescer.push(&log_alerts);
        let due =
            coalescer.take_due(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
        lines.extend(log_alert_violations(
            &cfg.thing_name,
            due,
            &mut interval_log_alerts,
            |kind, source, line| audit.violation(kind, source, line),
        ));
        let dropped = store_violations(&cfg, &mut sink, lines).await;
        retry_held_report(&cfg, &mut sink, &mut held_report).await;
        snap.custom.insert(
            metrics::VIOLATIONS_DROPPED.to_owned(),
            MetricValue::Number(dropped as f64),
        );
        aggregator.add(&snap);

        let now = Instant::now();
        if now >= next_report {
            next_report = next_slot(next_report, now, cfg.report.interval);
            emit_report(
                &cfg,
                &mut sink,
                &mut held_report,
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
                detect::persist::save(&cfg.state_dir, &e.state());
            }
        }
        service.tick_done();
    }
    service.stopping();

    // Drain: write what we hold, then let the transport publish within its deadline.
    let held = log_alert_violations(
        &cfg.thing_name,
        coalescer.take_all(),
        &mut interval_log_alerts,
        |kind, source, line| audit.violation(kind, source, line),
    );
    let dropped = store_violations(&cfg, &mut sink, held).await;
    if dropped > 0 {
        aggregator.add_custom(
            metrics::VIOLATIONS_DROPPED,
            MetricValue::Number(dropped as f64),
        );
    }
    retry_held_report(&cfg, &mut sink, &mut held_report).await;
    if !aggregator.is_empty() {
        emit_report(
            &cfg,
            &mut sink,
            &mut held_report,
            &mut aggregator,
            &mut ids,
            engine.as_mut(),
            &mut interval_log_alerts,
        )
        .await;
    }
    if let Some(rep) = held_report.take() {
        error!(
            report_id = rep.report_id(),
            "Cannot store the report before stopping; it is lost."
        );
    }
    if let Some(e) = &engine {
        detect::persist::save(&cfg.state_dir, &e.state());
    }
    // Only now, with the final report spooled, is the transport told to drain; it publishes what
    // it can within its own deadline, which stays below the unit's `TimeoutStopSec`.
    transport_stop.cancel();
    tasks.close();
    if tokio::time::timeout(transport::mqtt::SHUTDOWN_DEADLINE, tasks.wait())
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
    held: &mut Option<report::MetricsReport>,
    aggregator: &mut Aggregator,
    ids: &mut ReportIds,
    engine: Option<&mut Engine>,
    log_alerts: &mut Vec<&'static str>,
) {
    let mut local = engine.map(|e| e.summary_metrics()).unwrap_or_default();
    add_log_alert_summary(&mut local, log_alerts);
    log_alerts.clear();
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
    store_report(cfg, sink, held, rep).await;
}

/// True when a report refused with `e` can never be stored, however often it is offered.
fn refused_for_good(e: &AgentError) -> bool {
    matches!(
        e,
        AgentError::Spool(SpoolError::RecordTooLarge { .. } | SpoolError::TopicTooLong(_))
    )
}

/// Stores a new report. One the sink refuses for now (disk full, I/O error) is held in memory
/// and offered again at every tick ([`retry_held_report`]) rather than lost.
///
/// At most one report is held, and the newest wins: a held report is offered once more before
/// the new one, and if it is still refused it is dropped (and logged as lost) and the new one
/// takes its place. Device Defender judges the device by its latest report, reports reach the
/// spool in id order, and one held report bounds the memory a long disk outage can take.
async fn store_report(
    cfg: &Config,
    sink: &mut Sink,
    held: &mut Option<report::MetricsReport>,
    rep: report::MetricsReport,
) {
    let id = rep.report_id();
    retry_held_report(cfg, sink, held).await;
    if let Some(old) = held.take() {
        error!(
            report_id = old.report_id(),
            newer = id,
            "A held report still cannot be stored and a newer one is due; the held one is lost."
        );
    }
    match sink.report(cfg, &rep).await {
        Ok(()) => info!(report_id = id, summary = %rep.summary(), "Report stored."),
        Err(e) if refused_for_good(&e) => {
            error!(report_id = id, error = %e, "Cannot store the report; it is lost.")
        }
        Err(e) => {
            warn!(report_id = id, error = %e, "Cannot store the report; keeping it in memory and trying again at the next tick.");
            *held = Some(rep);
        }
    }
}

/// Offers the held report (see [`store_report`]) to the sink again; it stays held if refused.
async fn retry_held_report(
    cfg: &Config,
    sink: &mut Sink,
    held: &mut Option<report::MetricsReport>,
) {
    let Some(rep) = held.take() else { return };
    let id = rep.report_id();
    match sink.report(cfg, &rep).await {
        Ok(()) => info!(report_id = id, summary = %rep.summary(), "Held report stored."),
        Err(e) => {
            debug!(report_id = id, error = %e, "The held report still cannot be stored.");
            *held = Some(rep);
        }
    }
}

/// Adds the log alert kinds raised in the interval to the local summary metrics, by the rule
/// the engine uses for its behaviours: `local_violation_behaviors` lists every distinct name in
/// alarm in the interval, and `local_violations` is how many there are (kinds, not events).
fn add_log_alert_summary(local: &mut Vec<(&'static str, MetricValue)>, kinds: &[&'static str]) {
    if kinds.is_empty() {
        return;
    }
    let mut names: Vec<String> = Vec::new();
    local.retain_mut(|(name, value)| match (*name, value) {
        (metrics::LOCAL_VIOLATION_BEHAVIORS, MetricValue::StringList(l)) => {
            names.append(l);
            false
        }
        (metrics::LOCAL_VIOLATIONS, _) => false,
        _ => true,
    });
    names.extend(kinds.iter().map(|k| (*k).to_owned()));
    names.sort();
    names.dedup();
    local.push((
        metrics::LOCAL_VIOLATIONS,
        MetricValue::Number(names.len() as f64),
    ));
    local.push((
        metrics::LOCAL_VIOLATION_BEHAVIORS,
        MetricValue::StringList(names),
    ));
}

/// The report slot after `slot`, given that a tick at `now` has just used it: one interval
/// later, so that a tick firing late does not push every later report back, and past `now`, so
/// that slots missed while the agent was stalled are skipped rather than sent in a burst.
fn next_slot(slot: Instant, now: Instant, interval: Duration) -> Instant {
    let next = slot + interval;
    if next > now {
        return next;
    }
    let behind = now.duration_since(next).as_nanos();
    let skip = behind / interval.as_nanos().max(1) + 1;
    next + interval * u32::try_from(skip).unwrap_or(u32::MAX)
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

/// Coalesced log alerts as violation events, in the same shape as the security-profile
/// violations; their kinds are noted for the interval's summary metrics. `remediate(kind,
/// source, violation)` is told of each source a violation names (once without a source when it
/// names none).
fn log_alert_violations(
    thing: &str,
    batches: Vec<logs::alerts::AlertBatch>,
    interval_kinds: &mut Vec<&'static str>,
    mut remediate: impl FnMut(&str, Option<std::net::IpAddr>, &[u8]),
) -> Vec<Vec<u8>> {
    batches
        .into_iter()
        .map(|b| {
            let explanation = b.explanation();
            warn!(alert = b.kind.as_str(), alerts = b.alerts, events = b.events, explanation = %explanation, "Violation from logs.");
            interval_kinds.push(b.kind.as_str());
            let line = b.violation(thing, LOG_RULES_PROFILE);
            let mut named = false;
            for ip in b.sources.iter().filter_map(|s| s.parse().ok()) {
                named = true;
                remediate(b.kind.as_str(), Some(ip), &line);
            }
            if !named {
                remediate(b.kind.as_str(), None, &line);
            }
            line
        })
        .collect()
}

/// Stores violations; returns how many were refused (no room in their spool budget).
async fn store_violations(cfg: &Config, sink: &mut Sink, lines: Vec<Vec<u8>>) -> u64 {
    let n = lines.len() as u64;
    match sink.violations(cfg, lines).await {
        Ok(0) => 0,
        Ok(refused) => {
            warn!(
                refused,
                "Violations refused: their share of the spool is full; reports are kept."
            );
            refused
        }
        Err(e) => {
            error!(error = %e, "Cannot store violations; they are lost.");
            n
        }
    }
}

/// The collector, with a full TCP walk at least once per report interval.
fn new_collector(cfg: &Config) -> Collector {
    let mut c = Collector::new(&cfg.collect);
    c.set_full_walk_max_age(cfg.report.interval);
    c
}

/// The detection engine `cfg` asks for (`None` when detection is off), resuming `state`.
fn new_engine(cfg: &Config, state: Option<EngineState>) -> Result<Option<Engine>, AgentError> {
    if !cfg.detect.enabled {
        return Ok(None);
    }
    let profile = match &cfg.detect.profile {
        Some(p) => detect::load_profile(p).map_err(|e| AgentError::Profile(e.to_string()))?,
        None => detect::default_profile(),
    };
    Ok(Some(Engine::new(
        profile,
        &cfg.detect,
        &cfg.thing_name,
        state,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_alerts_count_as_distinct_kinds_beside_the_engines_behaviours() {
        let mut local = vec![
            (metrics::LOCAL_VIOLATIONS, MetricValue::Number(2.0)),
            (metrics::LOCAL_ANOMALY_SCORE, MetricValue::Number(0.9)),
            (
                metrics::LOCAL_VIOLATION_BEHAVIORS,
                MetricValue::StringList(vec!["a-behaviour".into(), "ssh_brute_force".into()]),
            ),
        ];
        // Three alerts of two kinds, one of them already named.
        add_log_alert_summary(
            &mut local,
            &["ssh_brute_force", "ssh_brute_force", "mqtt_auth_flood"],
        );
        local.sort_by_key(|(n, _)| *n);
        assert_eq!(
            local,
            vec![
                (metrics::LOCAL_ANOMALY_SCORE, MetricValue::Number(0.9)),
                (
                    metrics::LOCAL_VIOLATION_BEHAVIORS,
                    MetricValue::StringList(vec![
                        "a-behaviour".into(),
                        "mqtt_auth_flood".into(),
                        "ssh_brute_force".into()
                    ])
                ),
                (metrics::LOCAL_VIOLATIONS, MetricValue::Number(3.0)),
            ]
        );
        // Detection off: the log alerts alone.
        let mut only = Vec::new();
        add_log_alert_summary(&mut only, &["ssh_brute_force", "ssh_brute_force"]);
        assert_eq!(
            only[0],
            (metrics::LOCAL_VIOLATIONS, MetricValue::Number(1.0))
        );
    }

    #[test]
    fn report_slots_keep_their_cadence_when_ticks_fire_late() {
        let t0 = Instant::now();
        let iv = Duration::from_secs(2);
        // A tick 30 ms late uses the slot at 2 s; the next slot is 4 s, not 4.03 s.
        assert_eq!(
            next_slot(t0 + iv, t0 + iv + Duration::from_millis(30), iv),
            t0 + 2 * iv
        );
        // Ten late ticks in a row never drift.
        let mut slot = t0 + iv;
        for _ in 0..10 {
            slot = next_slot(slot, slot + Duration::from_millis(999), iv);
        }
        assert_eq!(slot, t0 + 11 * iv);
    }

    #[test]
    fn report_slots_missed_during_a_stall_are_skipped_not_sent_in_a_burst() {
        let t0 = Instant::now();
        let iv = Duration::from_secs(2);
        // Stalled until 7.5 s: slots 4 s and 6 s are skipped; the next is 8 s.
        assert_eq!(
            next_slot(t0 + iv, t0 + Duration::from_millis(7500), iv),
            t0 + 4 * iv
        );
        // Exactly on a slot boundary: that slot is used now, the next follows.
        assert_eq!(next_slot(t0 + iv, t0 + 3 * iv, iv), t0 + 4 * iv);
    }

    /// A spool sink in `dir` whose next `failures` appends fail as on a full disk.
    fn failing_spool_sink(dir: &std::path::Path, failures: u32) -> (Sink, SharedSpool) {
        let cfg = Config::from_toml("").unwrap();
        let mut spool = Spool::open(dir, &cfg.spool).unwrap();
        spool.fail_next_appends(failures);
        let spool = SharedSpool::new(spool);
        let sink = Sink::Spool {
            spool: spool.clone(),
            stats: Arc::new(TransportStats::default()),
        };
        (sink, spool)
    }

    fn spooled_report_ids(spool: &SharedSpool) -> Vec<u64> {
        let mut ids = Vec::new();
        let mut after = None;
        let mut s = spool.lock();
        while let Some(r) = s.next_after(after).unwrap() {
            let enc = crate::transport::response::Encoding::Json;
            ids.push(crate::transport::response::report_id_of(&r.payload, enc).unwrap());
            after = Some(r.id);
        }
        ids
    }

    #[tokio::test]
    async fn a_report_the_disk_refuses_is_kept_and_stored_at_the_next_tick() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::from_toml("").unwrap();
        let (mut sink, spool) = failing_spool_sink(dir.path(), 1);
        let mut agg = Aggregator::new(&cfg.report);
        let mut held = None;
        store_report(&cfg, &mut sink, &mut held, agg.take(10)).await;
        assert_eq!(
            held.as_ref().map(report::MetricsReport::report_id),
            Some(10)
        );
        assert!(spooled_report_ids(&spool).is_empty());
        // The next tick: the disk has room again.
        retry_held_report(&cfg, &mut sink, &mut held).await;
        assert!(held.is_none());
        assert_eq!(spooled_report_ids(&spool), vec![10]);
        // Nothing held: a retry does nothing.
        retry_held_report(&cfg, &mut sink, &mut held).await;
        assert_eq!(spooled_report_ids(&spool), vec![10]);
    }

    #[tokio::test]
    async fn one_report_is_held_and_the_newest_wins() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::from_toml("").unwrap();
        // Report 10, its retry at the next tick, its last retry before report 11, and report 11
        // are refused.
        let (mut sink, spool) = failing_spool_sink(dir.path(), 4);
        let mut agg = Aggregator::new(&cfg.report);
        let mut held = None;
        store_report(&cfg, &mut sink, &mut held, agg.take(10)).await;
        retry_held_report(&cfg, &mut sink, &mut held).await;
        assert_eq!(
            held.as_ref().map(report::MetricsReport::report_id),
            Some(10)
        );
        store_report(&cfg, &mut sink, &mut held, agg.take(11)).await;
        assert_eq!(
            held.as_ref().map(report::MetricsReport::report_id),
            Some(11)
        );
        retry_held_report(&cfg, &mut sink, &mut held).await;
        assert!(held.is_none());
        assert_eq!(spooled_report_ids(&spool), vec![11]);
        // With the disk back, reports are stored at once and nothing is held.
        store_report(&cfg, &mut sink, &mut held, agg.take(12)).await;
        assert!(held.is_none());
        assert_eq!(spooled_report_ids(&spool), vec![11, 12]);
    }

    #[tokio::test]
    async fn a_held_report_goes_before_a_newer_one_when_the_disk_has_room_again() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::from_toml("").unwrap();
        let (mut sink, spool) = failing_spool_sink(dir.path(), 1);
        let mut agg = Aggregator::new(&cfg.report);
        let mut held = None;
        store_report(&cfg, &mut sink, &mut held, agg.take(10)).await;
        // The next report is due before any tick retried the held one.
        store_report(&cfg, &mut sink, &mut held, agg.take(11)).await;
        assert!(held.is_none());
        assert_eq!(spooled_report_ids(&spool), vec![10, 11]);
    }

    #[test]
    fn only_transient_store_failures_are_retried() {
        let enospc = AgentError::Spool(SpoolError::Io {
            op: "write",
            path: "/x".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        });
        assert!(!refused_for_good(&enospc));
        assert!(refused_for_good(&AgentError::Spool(
            SpoolError::RecordTooLarge { size: 10, max: 5 }
        )));
    }
}
