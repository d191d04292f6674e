//! The engine: evaluates a profile's behaviours on every snapshot and emits violation events.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use serde::{Deserialize, Serialize};
use tracing::warn;

use super::eval::{set_offenders, AlarmTracker, Percentiles, SumWindow, Transition};
use super::eval::{MIN_PERCENTILE_HISTORY, PERCENTILE_HISTORY};
use super::metric::{ItemFold, NoveltyOptions, Observation};
use super::ml::{normalise_name, DetectorFactory, MlScorer, NoveltySet, ScorerFactory, TrainFn};
use super::profile::{Behavior, Check, DefenderValue, Profile};
use super::violation::{AdditionalInfo, ViolationEvent, ViolationEventType};
use crate::config::DetectConfig;
use crate::metrics;
use crate::snapshot::{MetricValue, Snapshot};

// The pipeline moves the engine and its fits between threads.
const _: () = {
    const fn send<T: Send>() {}
    send::<Engine>();
    send::<TrainingJob>();
    send::<TrainedModel>();
};

/// An alarm whose metric produced no datapoint for this long is invalidated (Device Defender's
/// rule for devices that stop reporting).
pub const INVALIDATE_AFTER_MS: u64 = 2 * 86_400_000;
/// Novel set items are adopted into the baseline after being present this long, or the
/// learning period if longer.
pub const MIN_ADOPT_AFTER_MS: u64 = 3_600_000;
/// Scores kept per learned behaviour for `status`.
const RECENT_SCORES: usize = 8;
/// Version of [`EngineState`]'s layout.
pub const STATE_VERSION: u32 = 1;
/// Cap on items listed in an event's `metricValue` (the explanation names the offenders).
const MAX_VALUE_ITEMS: usize = 50;

/// An alarm in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveAlarm {
    /// The id shared by its events.
    pub violation_id: String,
    /// When it was raised (ms since the epoch).
    pub since_ms: u64,
    /// Score of the datapoint that raised it.
    pub score: f64,
    /// Value of that datapoint.
    pub metric_value: Option<DefenderValue>,
    /// Its explanation.
    pub explanation: String,
}

/// Persisted state of one behaviour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BehaviorState {
    /// Hash of the behaviour's metric and criteria; learned state is dropped when it changes.
    pub fingerprint: String,
    /// The behaviour as written, so an alarm can be invalidated after the behaviour is gone.
    pub behavior: serde_json::Value,
    /// Observed time spent learning.
    pub learned_ms: u64,
    /// Alarm in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alarm: Option<ActiveAlarm>,
    /// Time of the last datapoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_datapoint_ms: Option<u64>,
    /// Percentile history, oldest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<f64>>,
    /// Learned set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub novelty: Option<NoveltySet>,
    /// ML model state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<serde_json::Value>,
}

/// The engine's persisted state (`<state_dir>/detect.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EngineState {
    /// Layout version ([`STATE_VERSION`]).
    pub version: u32,
    /// Profile the state was learned under.
    pub security_profile_name: String,
    /// Per behaviour, by name.
    pub behaviors: BTreeMap<String, BehaviorState>,
}

/// Baseline phase shown by `edgewarden status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Some learned behaviour is still building its baseline.
    Learning,
    /// Every behaviour may alarm.
    Armed,
}

/// How a behaviour is evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BehaviorKind {
    /// Fixed threshold or set.
    Rule,
    /// Percentile of the metric's own history.
    Statistical,
    /// Anomaly score.
    Ml,
    /// Set novelty.
    Novelty,
}

/// One behaviour in `status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BehaviorStatus {
    /// Name.
    pub name: String,
    /// Metric.
    pub metric: String,
    /// Kind.
    pub kind: BehaviorKind,
    /// Still learning its baseline.
    pub learning: bool,
    /// In alarm.
    pub in_alarm: bool,
    /// Latest scores, oldest first (learned behaviours).
    pub recent_scores: Vec<f64>,
}

/// An active violation in `status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveViolation {
    /// Behaviour name.
    pub behavior: String,
    /// The alarm.
    #[serde(flatten)]
    pub alarm: ActiveAlarm,
}

/// What `edgewarden status` shows about local detection.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EngineStatus {
    /// Profile name.
    pub security_profile_name: String,
    /// Learning or armed.
    pub phase: Phase,
    /// Configured learning period.
    pub learning_period_ms: u64,
    /// Learning time left for the slowest learned behaviour.
    pub learning_remaining_ms: u64,
    /// Every behaviour.
    pub behaviors: Vec<BehaviorStatus>,
    /// Alarms in progress.
    pub active_violations: Vec<ActiveViolation>,
    /// Behaviours relearned because their saved state did not match the profile, with why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub relearned_behaviors: Vec<String>,
}

impl fmt::Display for EngineStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let phase = match self.phase {
            Phase::Armed => "armed".to_owned(),
            Phase::Learning => format!(
                "learning ({} left of {})",
                crate::units::format_duration(std::time::Duration::from_millis(
                    self.learning_remaining_ms.div_ceil(1000) * 1000
                )),
                crate::units::format_duration(std::time::Duration::from_millis(
                    self.learning_period_ms
                )),
            ),
        };
        // The count and the list below are the same vector: every behaviour of the profile.
        let listed = &self.behaviors;
        writeln!(
            f,
            "profile {}: {} behaviours, {phase}",
            self.security_profile_name,
            listed.len()
        )?;
        if !self.relearned_behaviors.is_empty() {
            writeln!(
                f,
                "relearning {} behaviour(s) whose saved state did not match the profile: {}",
                self.relearned_behaviors.len(),
                self.relearned_behaviors.join(", ")
            )?;
        }
        if self.active_violations.is_empty() {
            writeln!(f, "active violations: none")?;
        } else {
            writeln!(f, "active violations:")?;
            for v in &self.active_violations {
                writeln!(
                    f,
                    "  {} since {} ms (score {:.2}): {}",
                    v.behavior, v.alarm.since_ms, v.alarm.score, v.alarm.explanation
                )?;
            }
        }
        writeln!(f, "behaviours:")?;
        for b in listed {
            write!(
                f,
                "  {:<32} {:<12} {}{}",
                b.name,
                format!("{:?}", b.kind).to_lowercase(),
                if b.learning { "learning" } else { "armed" },
                if b.in_alarm { ", IN ALARM" } else { "" },
            )?;
            // Rules compare each sample with a fixed value: they keep no scores.
            if b.kind != BehaviorKind::Rule {
                let scores: Vec<String> =
                    b.recent_scores.iter().map(|s| format!("{s:.2}")).collect();
                write!(f, " scores [{}]", scores.join(" "))?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// A model fit due for one ML behaviour. Run it off the evaluation path (a worker thread,
/// `spawn_blocking`), then give the result to [`Engine::install`].
pub struct TrainingJob {
    behavior: String,
    fingerprint: String,
    run: TrainFn,
}

impl fmt::Debug for TrainingJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrainingJob")
            .field("behavior", &self.behavior)
            .finish_non_exhaustive()
    }
}

impl TrainingJob {
    /// The behaviour whose model this fits.
    pub fn behavior(&self) -> &str {
        &self.behavior
    }

    /// Fits the model (CPU-bound; milliseconds).
    pub fn run(self) -> TrainedModel {
        TrainedModel {
            behavior: self.behavior,
            fingerprint: self.fingerprint,
            model: (self.run)(),
        }
    }
}

/// The result of a [`TrainingJob`].
pub struct TrainedModel {
    behavior: String,
    fingerprint: String,
    model: Option<Box<dyn std::any::Any + Send>>,
}

impl fmt::Debug for TrainedModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrainedModel")
            .field("behavior", &self.behavior)
            .field("fitted", &self.model.is_some())
            .finish()
    }
}

/// Runtime state of one behaviour.
#[derive(Debug)]
struct Row {
    behavior: Behavior,
    fingerprint: String,
    tracker: AlarmTracker,
    alarm: Option<ActiveAlarm>,
    window: Option<SumWindow>,
    history: Option<Percentiles>,
    scorer: Option<Box<dyn MlScorer>>,
    novelty: Option<NoveltySet>,
    learned_ms: u64,
    last_datapoint_ms: Option<u64>,
    recent: VecDeque<f64>,
}

/// What every behaviour's evaluation of one tick shares.
#[derive(Clone, Copy)]
struct Tick<'a> {
    factory: &'a dyn ScorerFactory,
    snap: &'a Snapshot,
    learning_period_ms: u64,
    adopt_after_ms: u64,
}

/// What an event says about its datapoint.
struct EventBody {
    score: f64,
    metric_value: Option<DefenderValue>,
    explanation: String,
}

/// One evaluated datapoint.
struct Datapoint {
    violating: bool,
    score: f64,
    value: DefenderValue,
    explanation: String,
}

/// Evaluates a security profile on snapshots.
#[derive(Debug)]
pub struct Engine {
    profile_name: String,
    thing: String,
    learning_period_ms: u64,
    adopt_after_ms: u64,
    rows: Vec<Row>,
    factory: Box<dyn ScorerFactory>,
    rng: fastrand::Rng,
    /// Alarms of behaviours removed or changed since the state was saved, announced on the
    /// first evaluation (which supplies the time).
    orphaned: Vec<(Behavior, ActiveAlarm)>,
    /// Behaviours whose saved state did not match the profile and were relearned, with why.
    relearned: Vec<String>,
    interval_alarmed: BTreeSet<String>,
    interval_max_score: f64,
    scratch: String,
}

/// The ML scorer used by [`Engine::new`]: the `edgewarden-detector` library.
pub fn default_scorers() -> Box<dyn ScorerFactory> {
    Box::new(DetectorFactory)
}

fn fingerprint(b: &Behavior) -> String {
    let text = serde_json::to_string(&(&b.metric, &b.criteria))
        .expect("metric and criteria always serialize");
    // Stable across builds and platforms: it is persisted in the learned state.
    let h = crate::hash::fnv1a(text.as_bytes());
    format!("{h:016x}")
}

fn finite(x: f64) -> f64 {
    if x.is_finite() {
        // `+ 0.0` turns a negative zero into zero.
        x.clamp(0.0, 1.0) + 0.0
    } else {
        0.0
    }
}

fn fmt_num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x:.3}")
    }
}

fn list<T: ToString>(items: &[T]) -> String {
    let mut s: Vec<String> = items.iter().take(10).map(ToString::to_string).collect();
    if items.len() > 10 {
        s.push(format!("… ({} in all)", items.len()));
    }
    s.join(", ")
}

impl Engine {
    /// An engine for `profile`, restoring what `state` learned for unchanged behaviours.
    pub fn new(
        profile: Profile,
        cfg: &DetectConfig,
        thing: &str,
        state: Option<EngineState>,
    ) -> Engine {
        Engine::with_scorers(profile, cfg, thing, state, default_scorers())
    }

    /// As [`Engine::new`], with another ML scorer.
    pub fn with_scorers(
        profile: Profile,
        cfg: &DetectConfig,
        thing: &str,
        state: Option<EngineState>,
        factory: Box<dyn ScorerFactory>,
    ) -> Engine {
        let learning_period_ms = u64::try_from(cfg.learning_period.as_millis()).unwrap_or(u64::MAX);
        // Learned state that does not fit the profile is relearned, counted and logged once.
        let mut relearned: Vec<String> = Vec::new();
        let mut saved = match state {
            Some(s) if s.version == STATE_VERSION => s.behaviors,
            Some(s) => {
                relearned.extend(
                    s.behaviors
                        .keys()
                        .map(|n| format!("{n} (state layout version {})", s.version)),
                );
                BTreeMap::new()
            }
            None => BTreeMap::new(),
        };
        let mut orphaned = Vec::new();
        let mut rows = Vec::with_capacity(profile.behaviors.len());
        for b in profile.behaviors {
            let fp = fingerprint(&b);
            let spec = &b.spec;
            let mut row = Row {
                tracker: AlarmTracker::new(spec.to_alarm, spec.to_clear),
                alarm: None,
                window: spec.duration_ms.map(SumWindow::new),
                history: matches!(spec.check, Check::Statistical { .. })
                    .then(|| Percentiles::new(PERCENTILE_HISTORY)),
                scorer: matches!(spec.check, Check::Ml { .. }).then(|| factory.create()),
                novelty: matches!(spec.check, Check::Novelty { .. }).then(NoveltySet::default),
                learned_ms: 0,
                last_datapoint_ms: None,
                recent: VecDeque::new(),
                fingerprint: fp,
                behavior: b,
            };
            if let Some(s) = saved.remove(&row.behavior.name) {
                if s.fingerprint != row.fingerprint {
                    relearned.push(format!(
                        "{} (learned under another metric or criteria)",
                        row.behavior.name
                    ));
                    if let Some(a) = s.alarm {
                        if let Ok(old) = serde_json::from_value::<Behavior>(s.behavior) {
                            orphaned.push((old, a));
                        }
                    }
                } else if let Err(why) = row.state_fits(&s) {
                    relearned.push(format!("{} ({why})", row.behavior.name));
                } else if !row.restore(s, factory.as_ref()) {
                    relearned.push(format!("{} (model unreadable)", row.behavior.name));
                }
            }
            rows.push(row);
        }
        for (_, s) in saved {
            if let Some(a) = s.alarm {
                if let Ok(old) = serde_json::from_value::<Behavior>(s.behavior) {
                    orphaned.push((old, a));
                }
            }
        }
        if !relearned.is_empty() {
            warn!(
                profile = %profile.name,
                behaviors = %relearned.join(", "),
                count = relearned.len(),
                "Learned detector state does not match the profile; relearning these behaviours."
            );
        }
        let mut interval_alarmed = BTreeSet::new();
        for r in &rows {
            if r.alarm.is_some() {
                interval_alarmed.insert(r.behavior.name.clone());
            }
        }
        Engine {
            profile_name: profile.name,
            thing: thing.to_owned(),
            learning_period_ms,
            adopt_after_ms: learning_period_ms.max(MIN_ADOPT_AFTER_MS),
            rows,
            factory,
            rng: fastrand::Rng::new(),
            orphaned,
            relearned,
            interval_alarmed,
            interval_max_score: 0.0,
            scratch: String::new(),
        }
    }

    /// Behaviours whose saved state did not match the profile and are learning again, each with
    /// the reason (logged once, when the engine was built).
    pub fn relearned(&self) -> &[String] {
        &self.relearned
    }

    /// The profile's name.
    pub fn profile_name(&self) -> &str {
        &self.profile_name
    }

    fn new_violation_id(&mut self) -> String {
        let a = self.rng.u64(..);
        let b = self.rng.u64(..);
        // UUID version 4 layout.
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0x0fff,
            ((b >> 48) & 0x3fff) | 0x8000,
            b & 0xffff_ffff_ffff
        )
    }

    fn event(
        &self,
        behavior: &Behavior,
        violation_id: String,
        kind: ViolationEventType,
        at_ms: u64,
        body: EventBody,
    ) -> ViolationEvent {
        let EventBody {
            score,
            metric_value,
            explanation,
        } = body;
        let additional = match behavior.spec.check {
            Check::Ml { confidence } | Check::Novelty { confidence } => Some(AdditionalInfo {
                confidence_level: confidence,
            }),
            _ => None,
        };
        ViolationEvent {
            violation_id,
            thing_name: self.thing.clone(),
            security_profile_name: self.profile_name.clone(),
            behavior: behavior.clone(),
            metric_value,
            violation_event_additional_info: additional,
            violation_event_type: kind,
            violation_event_time: at_ms,
            score: finite(score),
            explanation,
        }
    }

    /// Evaluates every behaviour on one snapshot; returns the events of this tick.
    pub fn evaluate(&mut self, snap: &Snapshot) -> Vec<ViolationEvent> {
        let mut events = Vec::new();
        for (b, a) in std::mem::take(&mut self.orphaned) {
            let ev = self.event(
                &b,
                a.violation_id,
                ViolationEventType::AlarmInvalidated,
                snap.at_ms,
                EventBody {
                    score: 0.0,
                    metric_value: None,
                    explanation: format!(
                        "{}: behaviour removed or changed in profile {}",
                        b.metric, self.profile_name
                    ),
                },
            );
            events.push(ev);
        }
        for i in 0..self.rows.len() {
            let tick = Tick {
                factory: self.factory.as_ref(),
                snap,
                learning_period_ms: self.learning_period_ms,
                adopt_after_ms: self.adopt_after_ms,
            };
            let row = &mut self.rows[i];
            let dp = row.datapoint(&tick, &mut self.scratch, &mut self.interval_max_score);
            let Some(dp) = dp else {
                let stale = row
                    .last_datapoint_ms
                    .is_some_and(|t| snap.at_ms.saturating_sub(t) > INVALIDATE_AFTER_MS);
                if stale && row.tracker.is_in_alarm() {
                    if let Some(a) = row.alarm.take() {
                        row.tracker = AlarmTracker::new(
                            row.behavior.spec.to_alarm,
                            row.behavior.spec.to_clear,
                        );
                        let name = row.behavior.metric.clone();
                        let b = row.behavior.clone();
                        events.push(self.event(
                            &b,
                            a.violation_id,
                            ViolationEventType::AlarmInvalidated,
                            snap.at_ms,
                            EventBody {
                                score: 0.0,
                                metric_value: None,
                                explanation: format!("{name}: no datapoint for more than 2 days"),
                            },
                        ));
                    }
                }
                continue;
            };
            row.last_datapoint_ms = Some(snap.at_ms);
            match row.tracker.push(dp.violating) {
                Transition::None => {}
                Transition::Raised => {
                    let id = self.new_violation_id();
                    let row = &mut self.rows[i];
                    row.alarm = Some(ActiveAlarm {
                        violation_id: id.clone(),
                        since_ms: snap.at_ms,
                        score: finite(dp.score),
                        metric_value: Some(dp.value.clone()),
                        explanation: dp.explanation.clone(),
                    });
                    let b = row.behavior.clone();
                    events.push(self.event(
                        &b,
                        id,
                        ViolationEventType::InAlarm,
                        snap.at_ms,
                        EventBody {
                            score: dp.score,
                            metric_value: Some(dp.value),
                            explanation: dp.explanation,
                        },
                    ));
                }
                Transition::Cleared => {
                    if let Some(a) = row.alarm.take() {
                        let b = row.behavior.clone();
                        events.push(self.event(
                            &b,
                            a.violation_id,
                            ViolationEventType::AlarmCleared,
                            snap.at_ms,
                            EventBody {
                                score: dp.score,
                                metric_value: Some(dp.value),
                                explanation: format!("back to normal: {}", dp.explanation),
                            },
                        ));
                    }
                }
            }
            let row = &self.rows[i];
            if row.tracker.is_in_alarm() && !self.interval_alarmed.contains(&row.behavior.name) {
                self.interval_alarmed.insert(row.behavior.name.clone());
            }
        }
        events
    }

    /// The custom metrics summarising local verdicts since the previous call: behaviours in
    /// alarm at any time (count and names) and the highest anomaly score. Call once per report
    /// interval (or per tick: the registry folds them by max and union).
    pub fn summary_metrics(&mut self) -> Vec<(&'static str, MetricValue)> {
        let names: Vec<String> = self.interval_alarmed.iter().cloned().collect();
        let out = vec![
            (
                metrics::LOCAL_VIOLATIONS,
                MetricValue::Number(names.len() as f64),
            ),
            (
                metrics::LOCAL_ANOMALY_SCORE,
                MetricValue::Number((self.interval_max_score * 1000.0).round() / 1000.0),
            ),
            (
                metrics::LOCAL_VIOLATION_BEHAVIORS,
                MetricValue::StringList(names),
            ),
        ];
        self.interval_alarmed = self
            .rows
            .iter()
            .filter(|r| r.tracker.is_in_alarm())
            .map(|r| r.behavior.name.clone())
            .collect();
        self.interval_max_score = 0.0;
        out
    }

    /// The state to persist.
    pub fn state(&self) -> EngineState {
        EngineState {
            version: STATE_VERSION,
            security_profile_name: self.profile_name.clone(),
            behaviors: self
                .rows
                .iter()
                .map(|r| (r.behavior.name.clone(), r.save()))
                .collect(),
        }
    }

    /// Baseline phase, active violations and recent scores.
    pub fn status(&self) -> EngineStatus {
        let remaining = self
            .rows
            .iter()
            .filter(|r| r.behavior.is_learned())
            .map(|r| self.learning_period_ms.saturating_sub(r.learned_ms))
            .max()
            .unwrap_or(0);
        let learning = self
            .rows
            .iter()
            .any(|r| r.is_learning(self.learning_period_ms));
        EngineStatus {
            security_profile_name: self.profile_name.clone(),
            phase: if learning {
                Phase::Learning
            } else {
                Phase::Armed
            },
            learning_period_ms: self.learning_period_ms,
            learning_remaining_ms: remaining,
            behaviors: self
                .rows
                .iter()
                .map(|r| BehaviorStatus {
                    name: r.behavior.name.clone(),
                    metric: r.behavior.metric.clone(),
                    kind: match r.behavior.spec.check {
                        Check::Statistical { .. } => BehaviorKind::Statistical,
                        Check::Ml { .. } => BehaviorKind::Ml,
                        Check::Novelty { .. } => BehaviorKind::Novelty,
                        _ => BehaviorKind::Rule,
                    },
                    learning: r.is_learning(self.learning_period_ms),
                    in_alarm: r.tracker.is_in_alarm(),
                    recent_scores: r.recent.iter().copied().collect(),
                })
                .collect(),
            active_violations: self
                .rows
                .iter()
                .filter_map(|r| {
                    r.alarm.as_ref().map(|a| ActiveViolation {
                        behavior: r.behavior.name.clone(),
                        alarm: a.clone(),
                    })
                })
                .collect(),
            relearned_behaviors: self.relearned.clone(),
        }
    }

    /// Model fits that are due, to run off the evaluation path. Call after [`Engine::evaluate`];
    /// cheap when nothing is due.
    pub fn training_jobs(&mut self) -> Vec<TrainingJob> {
        let mut jobs = Vec::new();
        for r in &mut self.rows {
            if let Some(run) = r.scorer.as_mut().and_then(|s| s.training_job()) {
                jobs.push(TrainingJob {
                    behavior: r.behavior.name.clone(),
                    fingerprint: r.fingerprint.clone(),
                    run,
                });
            }
        }
        jobs
    }

    /// Installs a fitted model; false when the fit failed or its behaviour has since been
    /// removed or changed.
    pub fn install(&mut self, trained: TrainedModel) -> bool {
        let Some(model) = trained.model else {
            return false;
        };
        self.rows
            .iter_mut()
            .find(|r| r.behavior.name == trained.behavior && r.fingerprint == trained.fingerprint)
            .and_then(|r| r.scorer.as_mut())
            .is_some_and(|s| s.install(model))
    }

    /// Runs the due fits on this thread and installs them (replays, tests); returns how many
    /// models were installed.
    pub fn train_inline(&mut self) -> usize {
        let jobs = self.training_jobs();
        jobs.into_iter()
            .map(|j| self.install(j.run()))
            .filter(|&ok| ok)
            .count()
    }

    /// The scorer factory in use.
    pub fn scorers(&self) -> &dyn ScorerFactory {
        self.factory.as_ref()
    }
}

impl Row {
    /// Whether a saved state of this behaviour (same fingerprint) holds what its kind needs and
    /// nothing another kind would.
    fn state_fits(&self, s: &BehaviorState) -> Result<(), &'static str> {
        let (history, novelty, model) =
            (s.history.is_some(), s.novelty.is_some(), s.model.is_some());
        let fits = match self.behavior.spec.check {
            Check::Statistical { .. } => history && !novelty && !model,
            Check::Ml { .. } => model && !history && !novelty,
            Check::Novelty { .. } => novelty && !history && !model,
            _ => !history && !novelty && !model,
        };
        if fits {
            Ok(())
        } else {
            Err("saved state of another kind of behaviour")
        }
    }

    /// Restores a saved state that [`Row::state_fits`]; false when its model cannot be read
    /// (the behaviour then learns again from scratch).
    fn restore(&mut self, s: BehaviorState, factory: &dyn ScorerFactory) -> bool {
        self.learned_ms = s.learned_ms;
        self.last_datapoint_ms = s.last_datapoint_ms;
        if let Some(a) = s.alarm {
            self.tracker =
                AlarmTracker::in_alarm(self.behavior.spec.to_alarm, self.behavior.spec.to_clear);
            self.alarm = Some(a);
        }
        if let (Some(h), Some(vals)) = (self.history.as_mut(), s.history) {
            *h = Percentiles::from_values(PERCENTILE_HISTORY, &vals);
        }
        if let (Some(n), Some(mut saved)) = (self.novelty.as_mut(), s.novelty) {
            saved.enforce_bounds();
            *n = saved;
        }
        if let (Some(sc), Some(m)) = (self.scorer.as_mut(), s.model) {
            match factory.restore(&m) {
                Some(r) => *sc = r,
                // An unusable model means relearning from scratch.
                None => {
                    self.learned_ms = 0;
                    return false;
                }
            }
        }
        true
    }

    fn save(&self) -> BehaviorState {
        BehaviorState {
            fingerprint: self.fingerprint.clone(),
            behavior: serde_json::to_value(&self.behavior).expect("a behaviour always serializes"),
            learned_ms: self.learned_ms,
            alarm: self.alarm.clone(),
            last_datapoint_ms: self.last_datapoint_ms,
            history: self.history.as_ref().map(|h| h.values().collect()),
            novelty: self.novelty.clone(),
            model: self.scorer.as_ref().map(|s| s.save()),
        }
    }

    fn is_learning(&self, period_ms: u64) -> bool {
        self.behavior.is_learned()
            && (self.learned_ms < period_ms
                || self.scorer.as_ref().is_some_and(|s| !s.is_trained()))
    }

    /// This tick's datapoint, or `None` when there is none (no value, window not yet covered,
    /// still learning).
    fn datapoint(
        &mut self,
        tick: &Tick<'_>,
        scratch: &mut String,
        max_score: &mut f64,
    ) -> Option<Datapoint> {
        let Tick {
            factory,
            snap,
            learning_period_ms,
            adopt_after_ms,
        } = *tick;
        let obs = self.behavior.spec.metric.observe(snap)?;
        let learning = self.is_learning(learning_period_ms);
        if self.behavior.is_learned() {
            self.learned_ms = self.learned_ms.saturating_add(snap.interval_ms);
        }
        let metric = self.behavior.metric.as_str();
        let spec = &self.behavior.spec;
        match (&spec.check, obs) {
            (Check::Threshold { op, value }, Observation::Number(x)) => {
                let (v, covered) = match self.window.as_mut() {
                    Some(w) => w.push(snap.at_ms, snap.interval_ms, x),
                    None => (x, true),
                };
                let conforms = op.conforms(v, *value);
                // A partial window only proves a violation of an upper bound.
                if !covered && (!op.is_upper_bound() || conforms) {
                    return None;
                }
                let span = match spec.duration_ms {
                    Some(d) => format!(" in the last {} s", d / 1000),
                    None => String::new(),
                };
                Some(Datapoint {
                    violating: !conforms,
                    score: if conforms { 0.0 } else { 1.0 },
                    value: number_value(spec.metric.builtin, v),
                    explanation: format!(
                        "{metric}: {}{span}; normal is {op} {}",
                        fmt_num(v),
                        fmt_num(*value)
                    ),
                })
            }
            (Check::Statistical { op, percentile }, Observation::Number(x)) => {
                let (v, covered) = match self.window.as_mut() {
                    Some(w) => w.push(snap.at_ms, snap.interval_ms, x),
                    None => (x, true),
                };
                if !covered {
                    return None;
                }
                let hist = self.history.as_mut()?;
                let threshold = if learning || hist.len() < MIN_PERCENTILE_HISTORY {
                    None
                } else {
                    hist.percentile(*percentile)
                };
                hist.push(v);
                let t = threshold?;
                let conforms = op.conforms(v, t);
                let stat = self
                    .behavior
                    .criteria
                    .statistical_threshold
                    .as_ref()
                    .map_or("", |s| s.statistic.as_str());
                Some(Datapoint {
                    violating: !conforms,
                    score: if conforms { 0.0 } else { 1.0 },
                    value: number_value(spec.metric.builtin, v),
                    explanation: format!(
                        "{metric}: {}; normal is {op} the {stat} of its history, {}",
                        fmt_num(v),
                        fmt_num(t)
                    ),
                })
            }
            (Check::Ml { confidence }, Observation::Number(x)) => {
                let scorer = self.scorer.as_mut()?;
                let score = finite(scorer.observe(snap.at_ms, x));
                let threshold = factory.threshold(*confidence);
                let violating = !learning && score >= threshold;
                note_score(&mut self.recent, score, max_score, !learning);
                if learning {
                    return None;
                }
                Some(Datapoint {
                    violating,
                    score,
                    value: number_value(self.behavior.spec.metric.builtin, x),
                    explanation: format!(
                        "{metric}: {} this interval; anomaly score {score:.3} {} {threshold:.2} \
                         (confidence {})",
                        fmt_num(x),
                        if violating { "≥" } else { "<" },
                        confidence.as_str()
                    ),
                })
            }
            (Check::Novelty { confidence }, obs) => {
                let opts = spec.metric.novelty_options();
                let fold = |s: &str, scratch: &mut String| -> String {
                    match opts.fold {
                        ItemFold::Exact => s.to_owned(),
                        ItemFold::ProcessName => {
                            normalise_name(s, scratch);
                            scratch.clone()
                        }
                        ItemFold::ProcessNameBeforeAt => match s.rsplit_once('@') {
                            Some((name, level)) => {
                                normalise_name(name, scratch);
                                scratch.push('@');
                                scratch.push_str(level);
                                scratch.clone()
                            }
                            None => {
                                normalise_name(s, scratch);
                                scratch.clone()
                            }
                        },
                    }
                };
                let items: Vec<String> = match &obs {
                    Observation::Ports(p) => p.iter().map(u16::to_string).collect(),
                    Observation::Ips(a) => a.iter().map(ToString::to_string).collect(),
                    Observation::Strings(s) => s.iter().map(|s| fold(s, scratch)).collect(),
                    Observation::Number(_) => return None,
                };
                let set = self.novelty.as_mut()?;
                fn score_of<'a>(
                    opts: NoveltyOptions,
                    set: &NoveltySet,
                    items: &'a [String],
                ) -> (f64, Vec<&'a str>) {
                    if opts.never_seen_only {
                        set.score_never_seen(items.iter().map(String::as_str))
                    } else {
                        set.score(items.iter().map(String::as_str))
                    }
                }
                if learning {
                    set.learn(items.iter().map(String::as_str));
                    // Context seen while learning is part of the baseline too (a destination
                    // contacted once is not never-seen when it later recurs).
                    if let Some(Observation::Strings(ctx)) = opts
                        .learn_also
                        .and_then(|m| super::metric::resolve(m).ok())
                        .and_then(|m| m.observe(snap))
                    {
                        let ctx: Vec<String> = ctx.iter().map(|s| fold(s, scratch)).collect();
                        set.learn(ctx.iter().map(String::as_str));
                    }
                    let (score, _) = score_of(opts, set, &items);
                    note_score(&mut self.recent, score, max_score, false);
                    return None;
                }
                let (score, novel) = score_of(opts, set, &items);
                let threshold = confidence.novelty_threshold();
                let violating = score >= threshold;
                let novel: Vec<String> = novel.into_iter().map(str::to_owned).collect();
                let adopted = set.track(
                    items.iter().map(String::as_str),
                    snap.interval_ms,
                    adopt_after_ms,
                );
                note_score(&mut self.recent, score, max_score, true);
                let explanation = if !novel.is_empty() {
                    format!(
                        "{metric}: never seen in the baseline: {} (novelty {score:.3}, confidence {})",
                        list(&novel),
                        confidence.as_str()
                    )
                } else if !adopted.is_empty() {
                    format!(
                        "{metric}: {} adopted into the baseline after being present for {} s",
                        list(&adopted),
                        adopt_after_ms / 1000
                    )
                } else {
                    format!("{metric}: every value is in the baseline (novelty {score:.3})")
                };
                Some(Datapoint {
                    violating,
                    score,
                    value: set_value(&obs),
                    explanation,
                })
            }
            (
                Check::Ports {
                    requires_inside,
                    set,
                },
                Observation::Ports(p),
            ) => {
                let off = set_offenders(&p, |x| set.binary_search(&x).is_ok(), *requires_inside);
                Some(set_datapoint(
                    metric,
                    &off,
                    *requires_inside,
                    set_value(&Observation::Ports(p.clone())),
                    || list(set),
                ))
            }
            (
                Check::Cidrs {
                    requires_inside,
                    set,
                },
                Observation::Ips(a),
            ) => {
                let off = set_offenders(
                    &a,
                    |ip| set.iter().any(|c| c.contains(ip)),
                    *requires_inside,
                );
                let cidrs = self
                    .behavior
                    .criteria
                    .value
                    .as_ref()
                    .and_then(|v| v.cidrs.as_ref());
                Some(set_datapoint(
                    metric,
                    &off,
                    *requires_inside,
                    set_value(&Observation::Ips(a.clone())),
                    || cidrs.map(|c| list(c)).unwrap_or_default(),
                ))
            }
            (
                Check::Strings {
                    requires_inside,
                    set,
                },
                Observation::Strings(s),
            ) => {
                let off = set_offenders(
                    &s,
                    |x: &str| set.binary_search_by(|e| e.as_str().cmp(x)).is_ok(),
                    *requires_inside,
                );
                let value = set_value(&Observation::Strings(s.clone()));
                Some(set_datapoint(metric, &off, *requires_inside, value, || {
                    list(set)
                }))
            }
            _ => None,
        }
    }
}

fn note_score(recent: &mut VecDeque<f64>, score: f64, max: &mut f64, armed: bool) {
    let s = finite(score);
    if recent.len() == RECENT_SCORES {
        recent.pop_front();
    }
    recent.push_back((s * 1000.0).round() / 1000.0);
    if armed && s > *max {
        *max = s;
    }
}

fn number_value(builtin: bool, v: f64) -> DefenderValue {
    if builtin && v >= 0.0 && v.fract() == 0.0 && v < u64::MAX as f64 {
        DefenderValue {
            count: Some(v as u64),
            ..DefenderValue::default()
        }
    } else {
        DefenderValue {
            number: Some(v),
            ..DefenderValue::default()
        }
    }
}

fn set_value(obs: &Observation<'_>) -> DefenderValue {
    match obs {
        Observation::Number(x) => number_value(false, *x),
        Observation::Ports(p) => DefenderValue {
            ports: Some(p.iter().copied().take(MAX_VALUE_ITEMS).collect()),
            ..DefenderValue::default()
        },
        Observation::Ips(a) => DefenderValue {
            cidrs: Some(
                a.iter()
                    .take(MAX_VALUE_ITEMS)
                    .map(ToString::to_string)
                    .collect(),
            ),
            ..DefenderValue::default()
        },
        Observation::Strings(s) => DefenderValue {
            strings: Some(
                s.iter()
                    .take(MAX_VALUE_ITEMS)
                    .map(|s| (*s).to_owned())
                    .collect(),
            ),
            ..DefenderValue::default()
        },
    }
}

fn set_datapoint<T: ToString>(
    metric: &str,
    offenders: &[T],
    requires_inside: bool,
    value: DefenderValue,
    set: impl FnOnce() -> String,
) -> Datapoint {
    let violating = !offenders.is_empty();
    let explanation = if !violating {
        format!("{metric}: every value conforms")
    } else if requires_inside {
        format!(
            "{metric}: {} not in the allowed set [{}]",
            list(offenders),
            set()
        )
    } else {
        format!(
            "{metric}: {} in the forbidden set [{}]",
            list(offenders),
            set()
        )
    };
    Datapoint {
        violating,
        score: if violating { 1.0 } else { 0.0 },
        value,
        explanation,
    }
}
