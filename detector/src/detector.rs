//! The streaming [`Detector`]: validates samples, runs the per-feature baselines and the
//! k-means models, combines their calibrated scores into one [`Verdict`], and schedules
//! retraining.
//!
//! # Combination
//! Each component yields a tail probability `p` (see [`crate::calibrate`]): every
//! feature's tests (overall baseline, time of day, time of week when enabled, and the
//! short-term volatility), and the k-means models as a whole. The combined probability is
//! the smallest of them, Bonferroni-corrected for the number of tests, and the score is
//! `min(1, -log10(p) / score_decades)`. A score therefore means the same thing for any
//! metric and any number of features: with the defaults, 0.5 is `p <= 1e-5`.
//!
//! # Alarms
//! A sample is anomalous when the detector is armed (past `warmup_samples`) and its
//! score reaches `threshold`. Before that decision the evidence is judged against the
//! evidence of earlier samples, which the history keeps: evidence that the series
//! already produced at about this time of day on `repeat_days` of the previous seven
//! days is a daily repeat and counts a tenth (a nightly backup raises an alarm on its
//! first days, then fades). A value beyond the whole range its feature has taken, by
//! more than `range_margin` of that range, scores 1 whatever the calibration says (a
//! level break, a record spike). For `refractory_samples` after an alarm, scores are
//! multiplied by `refractory_damping`, so one event raises one alarm.
//!
//! # Bad input
//! A sample with the wrong number of values, a NaN or infinite value, a value beyond
//! [`MAX_ABS_VALUE`] or a timestamp earlier than the previous accepted one is skipped:
//! its verdict has status [`Status::Skipped`], score 0, no alarm, and it is counted by
//! reason ([`Detector::skipped`]). A repeated timestamp is accepted. A gap longer than
//! `gap_factor` typical intervals restarts the k-means input windows (no window spans
//! it); the baselines simply continue.

use serde::{Deserialize, Serialize};

use crate::baseline::{Baseline, Range, Seasonal, DAY_MS, WEEK_MS};
use crate::calibrate::Calibrator;
use crate::history::History;
use crate::kmeans::{window_at, LagModel, TrainError, TrainingSet};
use crate::params::{DetectorParams, DetectorValidParams, ParamsError, MAX_TOP};

/// Per-sample decay factor of a quantity with the given half-life in samples.
fn alpha_decay(half_life: u64) -> f64 {
    0.5f64.powf(1.0 / half_life.max(1) as f64)
}

/// An earlier day repeats a candidate alarm when its evidence (log p) near the same time
/// of day was alarm-level and at least this share of the candidate's.
const REPEAT_SLACK: f64 = 0.5;
/// Days looked back by the daily repeat check.
const REPEAT_LOOKBACK_DAYS: u64 = 7;
/// Floor of the volatility, relative to the feature's spread, before its logarithm.
const VOL_FLOOR: f64 = 1e-3;
/// Factor applied to the evidence (log p-value) of a repeat.
const REPEAT_DISCOUNT: f64 = 0.1;
/// How far from the same time of day an earlier value may lie to repeat a daily pattern.
const REPEAT_TOLERANCE_MS: u64 = 20 * 60 * 1000;

/// Approximate size of one calibrator.
const CALIBRATOR_BYTES: usize = 2400;

/// Inputs whose magnitude exceeds this are refused as out of range; it keeps every
/// intermediate (squares, sums) finite.
pub const MAX_ABS_VALUE: f64 = 1e100;

/// Why a sample was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SkipReason {
    /// The number of values differs from the number of features.
    WrongLength,
    /// A value is NaN or infinite.
    NonFinite,
    /// A value's magnitude exceeds [`MAX_ABS_VALUE`].
    OutOfRange,
    /// The timestamp is earlier than the previous accepted sample's.
    OutOfOrder,
}

/// Counts of samples that were skipped, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkipCounts {
    /// Samples with the wrong number of values.
    pub wrong_length: u64,
    /// Samples with a NaN or infinite value.
    pub non_finite: u64,
    /// Samples with a value beyond [`MAX_ABS_VALUE`].
    pub out_of_range: u64,
    /// Samples older than the previous accepted one.
    pub out_of_order: u64,
}

impl SkipCounts {
    /// Total skipped samples.
    pub fn total(&self) -> u64 {
        self.wrong_length + self.non_finite + self.out_of_range + self.out_of_order
    }

    fn count(&mut self, reason: SkipReason) {
        let c = match reason {
            SkipReason::WrongLength => &mut self.wrong_length,
            SkipReason::NonFinite => &mut self.non_finite,
            SkipReason::OutOfRange => &mut self.out_of_range,
            SkipReason::OutOfOrder => &mut self.out_of_order,
        };
        *c += 1;
    }
}

/// State of the detector when it judged a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Still learning: the score is 0 and no alarm is raised.
    Learning,
    /// Armed: the score is meaningful.
    Armed,
    /// The sample was skipped (and counted); it did not reach the models.
    Skipped(SkipReason),
}

/// A feature's share of an anomaly.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    /// Index of the feature in [`DetectorParams::features`].
    pub feature: usize,
    /// Share of the anomaly explained by this feature, in [0, 1].
    pub share: f64,
}

/// The detector's judgement of one sample. `Copy`: building it allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Calibrated anomaly score in [0, 1]; `-log10(p) / score_decades`, capped.
    pub score: f64,
    /// The threshold in force.
    pub threshold: f64,
    /// Whether the sample is an alarm (armed and `score >= threshold`).
    pub anomalous: bool,
    /// Learning, armed or skipped.
    pub status: Status,
    /// Score of the per-feature baselines alone (same scale).
    pub baseline_score: f64,
    /// Score of the k-means models alone (same scale; 0 until a model is installed).
    pub model_score: f64,
    top: [Contribution; MAX_TOP],
    top_len: u8,
}

impl Verdict {
    fn quiet(threshold: f64, status: Status) -> Self {
        Self {
            score: 0.0,
            threshold,
            anomalous: false,
            status,
            baseline_score: 0.0,
            model_score: 0.0,
            top: [Contribution {
                feature: 0,
                share: 0.0,
            }; MAX_TOP],
            top_len: 0,
        }
    }

    /// The features that contributed most, largest share first (empty when the score
    /// is 0). Resolve names with [`Detector::feature_names`].
    pub fn top(&self) -> &[Contribution] {
        &self.top[..usize::from(self.top_len)]
    }
}

/// Scratch buffers of the scoring path, allocated once (not persisted).
#[derive(Debug, Clone, Default)]
struct Scratch {
    window: Vec<f64>,
    standardized: Vec<f64>,
    per_feature: Vec<f64>,
}

impl Scratch {
    fn ensure(&mut self, dim: usize, n_features: usize) {
        if self.window.len() != dim {
            self.window = vec![0.0; dim];
            self.standardized = vec![0.0; dim];
        }
        if self.per_feature.len() != n_features {
            self.per_feature = vec![0.0; n_features];
        }
    }
}

/// Multivariate streaming anomaly detector over named numeric features.
///
/// Feed samples in time order with [`Detector::observe`]. Retraining is split so it can
/// run off the scoring path: when [`Detector::needs_retrain`] says so, take a
/// [`Detector::train_snapshot`], call [`TrainingSet::fit`] anywhere (another thread),
/// and [`Detector::install`] the model; [`Detector::retrain`] does all three inline.
///
/// The whole learned state derives serde's `Serialize`/`Deserialize`; a deserialized
/// detector behaves exactly like the original (deserialization re-checks the
/// parameters and the state's shape).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "DetectorState", into = "DetectorState")]
pub struct Detector {
    state: DetectorState,
    scratch: Scratch,
}

/// The serialized form of a [`Detector`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct DetectorState {
    params: DetectorValidParams,
    baselines: Vec<Baseline>,
    baseline_calibrators: Vec<Calibrator>,
    seasonal: Vec<Seasonal>,
    seasonal_calibrators: Vec<Calibrator>,
    weekly: Vec<Seasonal>,
    weekly_calibrators: Vec<Calibrator>,
    model_calibrator: Calibrator,
    /// Range of each feature (empty when `range_margin` is 0).
    ranges: Vec<Range>,
    /// Short-term volatility of each feature and its previous value (empty when
    /// `volatility_half_life` is 0), with its baseline and calibrator.
    vol: Vec<(f64, f64)>,
    vol_baselines: Vec<Baseline>,
    vol_calibrators: Vec<Calibrator>,
    history: History,
    models: Vec<LagModel>,
    skipped: SkipCounts,
    last_ms: Option<u64>,
    typical_dt_ms: f64,
    samples: u64,
    since_snapshot: u64,
    refractory_left: u64,

    recent_peak: f64,
    train_failures: u64,
}

impl TryFrom<DetectorState> for Detector {
    type Error = String;
    fn try_from(state: DetectorState) -> Result<Self, Self::Error> {
        let n = state.params.n_features();
        let dim = state.params.window_dim();
        // Disabled seasonal components keep no per-feature state.
        let n_if = |bins: usize| if bins > 0 { n } else { 0 };
        let bins = state.params.get().seasonal_bins;
        if state.baselines.len() != n
            || state.baseline_calibrators.len() != n
            || state.seasonal.len() != n_if(state.params.get().seasonal_bins)
            || state.seasonal_calibrators.len() != n_if(state.params.get().seasonal_bins)
            || state.weekly.len() != n_if(state.params.get().weekly_bins)
            || state.weekly_calibrators.len() != n_if(state.params.get().weekly_bins)
        {
            return Err(format!(
                "state holds baselines for another number of features than {n}"
            ));
        }
        let weekly_bins = state.params.get().weekly_bins;
        if state.seasonal.iter().any(|s| !s.is_consistent(bins))
            || state.weekly.iter().any(|s| !s.is_consistent(weekly_bins))
            || !state
                .baseline_calibrators
                .iter()
                .chain(&state.seasonal_calibrators)
                .chain(&state.weekly_calibrators)
                .chain(&state.vol_calibrators)
                .chain(std::iter::once(&state.model_calibrator))
                .all(Calibrator::is_consistent)
        {
            return Err("baselines do not match the parameters".to_owned());
        }
        let n_vol = if state.params.get().volatility_half_life > 0.0 {
            n
        } else {
            0
        };
        if state.ranges.len()
            != if state.params.get().range_margin > 0.0 {
                n
            } else {
                0
            }
            || state.vol.len() != n_vol
            || state.vol_baselines.len() != n_vol
            || state.vol_calibrators.len() != n_vol
        {
            return Err(
                "state holds ranges or volatilities for another number of features".to_owned(),
            );
        }
        if !state.history.is_consistent(n) {
            return Err("history does not match the parameters".to_owned());
        }
        if state.models.len() > state.params.get().max_models
            || state
                .models
                .iter()
                .any(|m| m.dim() != dim || !m.is_consistent())
        {
            return Err("models do not match the parameters".to_owned());
        }
        let mut scratch = Scratch::default();
        scratch.ensure(dim, n);
        Ok(Self { state, scratch })
    }
}

impl From<Detector> for DetectorState {
    fn from(d: Detector) -> Self {
        d.state
    }
}

impl PartialEq for Detector {
    fn eq(&self, other: &Self) -> bool {
        self.state == other.state
    }
}

impl Detector {
    /// Builds a detector; fails with the first parameter that breaks its rule.
    pub fn new(params: DetectorParams) -> Result<Self, ParamsError> {
        Ok(Self::with_valid_params(params.validate()?))
    }

    /// Builds a detector from already checked parameters.
    pub fn with_valid_params(params: DetectorValidParams) -> Self {
        let p = params.get();
        let n = params.n_features();
        let history = History::new(n, p.train_window + params.window_span());
        let baselines = vec![Baseline::new(p.baseline_half_life); n];
        let calibrator = Calibrator::new(
            p.calibration_half_life,
            p.calibration_min_samples,
            p.score_averaging,
            p.tail_fraction,
        );
        let seasonal = Seasonal::new(
            p.seasonal_bins,
            DAY_MS,
            p.seasonal_half_life,
            p.baseline_half_life,
        );
        let n_if = |bins: usize| if bins > 0 { n } else { 0 };
        let weekly = Seasonal::new(
            p.weekly_bins,
            WEEK_MS,
            p.seasonal_half_life,
            p.baseline_half_life,
        );
        let n_vol = if p.volatility_half_life > 0.0 { n } else { 0 };
        let mut scratch = Scratch::default();
        scratch.ensure(params.window_dim(), n);
        Self {
            state: DetectorState {
                baselines,
                baseline_calibrators: vec![calibrator.clone(); n],
                seasonal: vec![seasonal; n_if(p.seasonal_bins)],
                seasonal_calibrators: vec![calibrator.clone(); n_if(p.seasonal_bins)],
                weekly: vec![weekly; n_if(p.weekly_bins)],
                weekly_calibrators: vec![calibrator.clone(); n_if(p.weekly_bins)],
                model_calibrator: calibrator.clone(),
                ranges: vec![Range::default(); if p.range_margin > 0.0 { n } else { 0 }],
                vol: vec![(0.0, 0.0); n_vol],
                vol_baselines: vec![Baseline::new(p.baseline_half_life); n_vol],
                vol_calibrators: vec![calibrator; n_vol],
                history,
                models: Vec::new(),
                skipped: SkipCounts::default(),
                last_ms: None,
                typical_dt_ms: 0.0,
                samples: 0,
                since_snapshot: 0,
                refractory_left: 0,

                recent_peak: 0.0,
                train_failures: 0,
                params,
            },
            scratch,
        }
    }

    /// The validated parameters.
    pub fn params(&self) -> &DetectorParams {
        self.state.params.get()
    }

    /// Feature names, in the order `observe` expects values.
    pub fn feature_names(&self) -> &[String] {
        &self.state.params.get().features
    }

    /// Samples accepted so far.
    pub fn samples_seen(&self) -> u64 {
        self.state.samples
    }

    /// Whether the detector is still learning (not yet armed).
    pub fn is_learning(&self) -> bool {
        self.state.samples < self.state.params.get().warmup_samples
    }

    /// Skipped samples, by reason.
    pub fn skipped(&self) -> SkipCounts {
        self.state.skipped
    }

    /// Number of k-means models installed.
    pub fn n_models(&self) -> usize {
        self.state.models.len()
    }

    /// Approximate heap and inline size of the learned state in bytes (what a
    /// serialized snapshot must hold; fixed once the history is full).
    pub fn state_bytes(&self) -> usize {
        let p = &self.state.params;
        let n = p.n_features();
        // Per row: the values, the run length, the timestamp and the evidence.
        let history = (p.get().train_window + p.window_span()) * (8 * n + 24);
        let models: usize = self
            .state
            .models
            .iter()
            .map(|m| (m.n_clusters() + 2) * m.dim() * 8 + 64)
            .sum();
        let seasonal_parts =
            usize::from(p.get().seasonal_bins > 0) + usize::from(p.get().weekly_bins > 0);
        let vol = usize::from(p.get().volatility_half_life > 0.0);
        let range = usize::from(p.get().range_margin > 0.0);
        let per_feature = n
            * ((1 + seasonal_parts + vol) * CALIBRATOR_BYTES
                + 32
                + 48 * vol
                + 24 * range
                + 12 * (p.get().seasonal_bins + p.get().weekly_bins));
        let names: usize = p.get().features.iter().map(|f| f.len() + 24).sum();
        std::mem::size_of::<Self>() + history + models + per_feature + names
    }

    /// Scores one sample. `values` holds one value per feature, in
    /// [`Detector::feature_names`] order. Samples with a wrong length, a non-finite or
    /// out-of-range value, or a timestamp earlier than the previous accepted sample are
    /// skipped and counted; they never reach the models. Equal timestamps are accepted.
    /// Allocation-free once constructed.
    pub fn observe(&mut self, timestamp_ms: u64, values: &[f64]) -> Verdict {
        let threshold = self.state.params.get().threshold;
        if let Err(reason) = self.check(timestamp_ms, values) {
            self.state.skipped.count(reason);
            return Verdict::quiet(threshold, Status::Skipped(reason));
        }
        let restart = self.track_time(timestamp_ms);
        self.state.history.push(values, restart, timestamp_ms);
        self.state.samples += 1;
        self.state.since_snapshot += 1;
        self.score(timestamp_ms, values)
    }

    fn check(&self, timestamp_ms: u64, values: &[f64]) -> Result<(), SkipReason> {
        if values.len() != self.state.params.n_features() {
            return Err(SkipReason::WrongLength);
        }
        if values.iter().any(|v| !v.is_finite()) {
            return Err(SkipReason::NonFinite);
        }
        if values.iter().any(|v| v.abs() > MAX_ABS_VALUE) {
            return Err(SkipReason::OutOfRange);
        }
        if self.state.last_ms.is_some_and(|last| timestamp_ms < last) {
            return Err(SkipReason::OutOfOrder);
        }
        Ok(())
    }

    /// Updates the typical sampling interval; returns whether a gap restarts the input
    /// windows.
    fn track_time(&mut self, timestamp_ms: u64) -> bool {
        let s = &mut self.state;
        let Some(last) = s.last_ms.replace(timestamp_ms) else {
            return true;
        };
        let dt = (timestamp_ms - last) as f64;
        if dt <= 0.0 {
            return false;
        }
        let gap_factor = s.params.get().gap_factor;
        let gap = gap_factor > 0.0 && s.typical_dt_ms > 0.0 && dt > gap_factor * s.typical_dt_ms;
        if s.typical_dt_ms == 0.0 {
            s.typical_dt_ms = dt;
        } else if !gap {
            // A slow-moving estimate, robust to one-off jitter.
            s.typical_dt_ms += 0.05 * (dt.min(4.0 * s.typical_dt_ms) - s.typical_dt_ms);
        }
        gap
    }

    fn score(&mut self, timestamp_ms: u64, values: &[f64]) -> Verdict {
        let n = self.state.params.n_features();
        let dim = self.state.params.window_dim();
        let span = self.state.params.window_span() as u64;
        let p = Knobs::of(self.state.params.get());
        self.scratch.ensure(dim, n);
        let s = &mut self.state;

        // Per-feature tests: overall baseline, time of day, time of week, volatility.
        let mut ln_p_base = 0.0f64;
        let seasonal = p.seasonal_bins > 0;
        let weekly = p.weekly_bins > 0;
        let vol = p.vol_alpha > 0.0;
        for (j, &x) in values.iter().enumerate() {
            let z = s.baselines[j].test_and_learn(x);
            let mut ln_p = s.baseline_calibrators[j].test_and_learn(z);
            if seasonal {
                let z = s.seasonal[j].test_and_learn(timestamp_ms, x);
                ln_p = ln_p.min(s.seasonal_calibrators[j].test_and_learn(z));
            }
            if weekly {
                let z = s.weekly[j].test_and_learn(timestamp_ms, x);
                ln_p = ln_p.min(s.weekly_calibrators[j].test_and_learn(z));
            }
            if vol {
                let (v, prev) = &mut s.vol[j];
                if s.samples > 1 {
                    *v += p.vol_alpha * ((x - *prev).abs() - *v);
                }
                *prev = x;
                // Judged in log scale: a frozen series (volatility falling towards 0) is as
                // visible as a burst. The floor keeps a constant series at a constant value.
                let floor = VOL_FLOOR * s.baselines[j].spread();
                let z = s.vol_baselines[j].test_and_learn((*v + floor).ln());
                ln_p = ln_p.min(s.vol_calibrators[j].test_and_learn(z));
            }
            self.scratch.per_feature[j] = -ln_p;
            ln_p_base = ln_p_base.min(ln_p);
        }
        let tests = n * (1 + usize::from(seasonal) + usize::from(weekly) + usize::from(vol));
        ln_p_base = (ln_p_base + (tests as f64).ln()).min(0.0);

        // k-means models.
        let mut ln_p_model = 0.0;
        let mut model_best = None;
        if !s.models.is_empty() && s.history.run() >= span {
            window_at(&s.history, 0, p.lags, p.smoothing, &mut self.scratch.window);
            let mut best = (f64::INFINITY, 0, 0);
            for (m, model) in s.models.iter().enumerate() {
                let (d2, c) = model.nearest_within(
                    &self.scratch.window,
                    &mut self.scratch.standardized,
                    best.0,
                );
                if d2 < best.0 {
                    best = (d2, m, c);
                }
            }
            let raw = (best.0 / dim as f64).sqrt();
            ln_p_model = s.model_calibrator.test_and_learn(raw);
            model_best = Some((best.1, best.2));
        }

        let components = if model_best.is_some() { 2.0f64 } else { 1.0 };
        let mut ln_p = ((p.baseline_weight * ln_p_base).min(p.model_weight * ln_p_model)
            + components.ln())
        .min(0.0);
        // The alarm stage judges this evidence against the evidence of earlier samples,
        // kept with the history: evidence that the series produced at this time of day on
        // earlier days is a repeat and counts half.
        s.history.set_newest_evidence(ln_p);
        let alarm_ln_p = -p.threshold * std::f64::consts::LN_10 * p.score_decades;
        if p.repeat_days > 0
            && ln_p <= alarm_ln_p
            && s.refractory_left == 0
            && s.samples > p.warmup_samples
        {
            let tolerance = REPEAT_TOLERANCE_MS.max(2 * s.typical_dt_ms as u64);
            // An earlier day matches when its evidence was alarm-level itself and at least
            // a set share of today's (calibration sharpens as it matures, so a recurring
            // pattern's evidence can grow from day to day).
            let bar = (REPEAT_SLACK * ln_p).min(alarm_ln_p);
            let days =
                s.history
                    .periods_with_evidence(bar, DAY_MS, REPEAT_LOOKBACK_DAYS, tolerance);
            if days >= p.repeat_days {
                ln_p *= REPEAT_DISCOUNT;
            }
        }

        let to_score = |ln_p: f64| -> f64 {
            let v = -ln_p / (std::f64::consts::LN_10 * p.score_decades);
            if v.is_finite() {
                v.clamp(0.0, 1.0)
            } else {
                0.0
            }
        };
        let mut score = to_score(ln_p);
        let baseline_score = to_score(ln_p_base);
        let model_score = to_score(ln_p_model);

        // First-time extremes bypass calibration: a value beyond the whole range seen, by
        // a margin, scores 1.
        let mut extreme = false;
        if p.range_margin > 0.0 {
            let mut beyond = 0.0f64;
            for (r, &x) in s.ranges.iter_mut().zip(values) {
                beyond = beyond.max(r.test_and_learn(x));
            }
            extreme = beyond > p.range_margin;
        }

        if p.peak_memory > 0 {
            // Only a new local maximum is reported in full: a lasting disturbance
            // is reported at its onset, and again only if it escalates.
            let peak = s.recent_peak;
            s.recent_peak = (peak * alpha_decay(p.peak_memory)).max(score);
            if score < peak {
                score *= 1.0 - p.peak_discount;
            }
        }
        if extreme {
            score = 1.0;
        }

        if s.samples <= p.warmup_samples {
            let mut v = Verdict::quiet(p.threshold, Status::Learning);
            v.baseline_score = baseline_score;
            v.model_score = model_score;
            return v;
        }

        let mut anomalous = false;
        if s.refractory_left > 0 {
            s.refractory_left -= 1;
            score *= p.refractory_damping;
        } else if score >= p.threshold {
            anomalous = true;
            s.refractory_left = p.refractory_samples;
        }

        let mut verdict = Verdict {
            score,
            threshold: p.threshold,
            anomalous,
            status: Status::Armed,
            baseline_score,
            model_score,
            ..Verdict::quiet(p.threshold, Status::Armed)
        };
        if score > 0.0 && p.top_features > 0 {
            // Explain with the component that decided the score.
            if let (Some((m, c)), true) = (model_best, ln_p_model < ln_p_base) {
                let model = &s.models[m];
                model.nearest(&self.scratch.window, &mut self.scratch.standardized);
                self.scratch.per_feature.iter_mut().for_each(|v| *v = 0.0);
                model.contributions(&self.scratch.standardized, c, &mut self.scratch.per_feature);
            }
            fill_top(&self.scratch.per_feature, p.top_features, &mut verdict);
        }
        verdict
    }

    /// Whether enough new samples arrived since the last training snapshot to train (the
    /// first model) or retrain.
    pub fn needs_retrain(&self) -> bool {
        let p = self.state.params.get();
        let due = if self.state.models.is_empty() {
            (p.min_train_samples + self.state.params.window_span()) as u64
        } else {
            p.retrain_every
        };
        self.state.since_snapshot >= due
    }

    /// Copies the training windows out of the rolling history and restarts the retrain
    /// countdown. The copy is independent of the detector: fit it anywhere.
    pub fn train_snapshot(&mut self) -> TrainingSet {
        self.state.since_snapshot = 0;
        TrainingSet::from_history(&self.state.params, &self.state.history, self.state.samples)
    }

    /// Installs a fitted model. The oldest model is dropped beyond `max_models`. Fails
    /// (and changes nothing) if the model was trained for another window shape.
    pub fn install(&mut self, model: LagModel) -> Result<(), TrainError> {
        let want = self.state.params.window_dim();
        if model.dim() != want || !model.is_consistent() {
            return Err(TrainError::ShapeMismatch {
                got: model.dim(),
                want,
            });
        }
        self.state.models.push(model);
        let max = self.state.params.get().max_models;
        if self.state.models.len() > max {
            let excess = self.state.models.len() - max;
            self.state.models.drain(..excess);
        }
        Ok(())
    }

    /// [`Detector::observe`], then [`Detector::retrain`] inline when due; a failed fit
    /// keeps the current models and is counted in [`Detector::train_failures`]. For
    /// offline use (replays, tests); on a device, retrain off the scoring path.
    pub fn observe_and_retrain(&mut self, timestamp_ms: u64, values: &[f64]) -> Verdict {
        let verdict = self.observe(timestamp_ms, values);
        if self.retrain().is_err() {
            self.state.train_failures += 1;
        }
        verdict
    }

    /// Number of failed trainings in [`Detector::observe_and_retrain`].
    pub fn train_failures(&self) -> u64 {
        self.state.train_failures
    }

    /// Retrains inline if [`Detector::needs_retrain`]: snapshot, fit, install. Returns
    /// whether a model was installed. For callers that do not need the split API.
    pub fn retrain(&mut self) -> Result<bool, TrainError> {
        if !self.needs_retrain() {
            return Ok(false);
        }
        let set = self.train_snapshot();
        let model = set.fit()?;
        self.install(model)?;
        Ok(true)
    }
}

/// The scalar parameters of the scoring path, copied out so the state can be borrowed
/// mutably.
#[derive(Clone, Copy)]
struct Knobs {
    lags: usize,
    smoothing: usize,
    score_decades: f64,
    warmup_samples: u64,
    threshold: f64,
    refractory_samples: u64,
    refractory_damping: f64,
    top_features: usize,
    seasonal_bins: usize,
    weekly_bins: usize,
    baseline_weight: f64,
    model_weight: f64,
    peak_memory: u64,
    peak_discount: f64,
    /// Smoothing factor of the short-term volatility (0 when disabled).
    vol_alpha: f64,
    range_margin: f64,
    repeat_days: usize,
}

impl Knobs {
    fn of(p: &DetectorParams) -> Self {
        Self {
            lags: p.lags,
            smoothing: p.smoothing,
            score_decades: p.score_decades,
            warmup_samples: p.warmup_samples,
            threshold: p.threshold,
            refractory_samples: p.refractory_samples,
            refractory_damping: p.refractory_damping,
            top_features: p.top_features,
            seasonal_bins: p.seasonal_bins,
            weekly_bins: p.weekly_bins,
            baseline_weight: p.baseline_weight,
            model_weight: p.model_weight,
            peak_memory: p.peak_memory,
            peak_discount: p.peak_discount,
            range_margin: p.range_margin,
            repeat_days: p.repeat_days,
            vol_alpha: if p.volatility_half_life > 0.0 {
                crate::calibrate::alpha_of(p.volatility_half_life)
            } else {
                0.0
            },
        }
    }
}

/// Writes the `k` largest entries of `weights` (as shares of their sum) into `verdict`.
fn fill_top(weights: &[f64], k: usize, verdict: &mut Verdict) {
    let total: f64 = weights.iter().filter(|w| w.is_finite() && **w > 0.0).sum();
    if !(total > 0.0 && total.is_finite()) {
        return;
    }
    let mut len = 0usize;
    for (j, &w) in weights.iter().enumerate() {
        if !(w.is_finite() && w > 0.0) {
            continue;
        }
        let share = w / total;
        // Insertion into a tiny sorted array.
        let mut pos = len;
        while pos > 0 && verdict.top[pos - 1].share < share {
            pos -= 1;
        }
        if pos >= k {
            continue;
        }
        let end = len.min(k - 1);
        for i in (pos..end).rev() {
            verdict.top[i + 1] = verdict.top[i];
        }
        verdict.top[pos] = Contribution { feature: j, share };
        len = (len + 1).min(k);
    }
    verdict.top_len = u8::try_from(len).expect("at most MAX_TOP contributions");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic noise in [-1, 1).
    fn noise(state: &mut u64) -> f64 {
        *state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (*state >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }

    /// Gaussian-ish noise with unit scale.
    fn bell(rng: &mut u64) -> f64 {
        noise(rng) + noise(rng) + noise(rng)
    }

    const FIVE_MIN: u64 = 300_000;

    #[test]
    fn a_spike_repeated_daily_stops_alarming_after_a_few_days() {
        let mut d = Detector::new(DetectorParams::default()).expect("valid parameters");
        let mut rng = 11u64;
        let per_day = DAY_MS / FIVE_MIN;
        let mut alarm_days = Vec::new();
        for i in 0..per_day * 14 {
            // A backup job: one sample at 12:50 every day, far above the noise.
            let spike = if i % per_day == 154 { 40.0 } else { 0.0 };
            let v = d.observe(i * FIVE_MIN, &[50.0 + bell(&mut rng) + spike]);
            if v.anomalous {
                alarm_days.push(i / per_day);
            }
        }
        assert!(
            alarm_days.iter().all(|&day| day < 6),
            "the daily spike still alarms on days {alarm_days:?}"
        );
    }

    #[test]
    fn a_first_time_level_break_alarms_within_two_samples() {
        let mut d = Detector::new(DetectorParams::default()).expect("valid parameters");
        let mut rng = 5u64;
        for i in 0..3000u64 {
            let v = d.observe(i * FIVE_MIN, &[20.0 + 3.0 * bell(&mut rng)]);
            assert!(i < 2900 || !v.anomalous, "false alarm at {i}");
        }
        let first = (3000..3002u64)
            .map(|i| d.observe(i * FIVE_MIN, &[80.0 + bell(&mut rng)]))
            .position(|v| v.anomalous);
        assert!(
            first.is_some(),
            "a break to three times the range went unflagged"
        );
    }

    #[test]
    fn volatility_reveals_a_frozen_series() {
        let run = |volatility_half_life: f64| {
            let mut d = Detector::new(DetectorParams {
                volatility_half_life,
                ..DetectorParams::default()
            })
            .expect("valid parameters");
            let mut rng = 3u64;
            for i in 0..3000u64 {
                d.observe(i * FIVE_MIN, &[100.0 + 5.0 * bell(&mut rng)]);
            }
            // The sensor freezes at an ordinary value. (The evidence is compared with the
            // threshold directly: an alarm the noise raised just before would hold the
            // freeze inside its refractory period.)
            (3000..3100u64)
                .map(|i| d.observe(i * FIVE_MIN, &[101.0]).baseline_score)
                .fold(0.0, f64::max)
        };
        let threshold = DetectorParams::default().threshold;
        let with = run(8.0);
        let without = run(0.0);
        assert!(with > 2.0 * threshold, "a frozen sensor scores only {with}");
        assert!(
            without < threshold,
            "without the volatility test it scores {without}"
        );
    }

    #[test]
    fn disabled_components_keep_no_state() {
        let d = Detector::new(DetectorParams {
            volatility_half_life: 0.0,
            range_margin: 0.0,
            ..DetectorParams::default()
        })
        .expect("valid parameters");
        assert!(d.state.vol.is_empty() && d.state.vol_calibrators.is_empty());
        assert!(d.state.ranges.is_empty());
    }
}
