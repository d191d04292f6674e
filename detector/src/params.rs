//! Detector parameters: the raw, deserializable [`DetectorParams`] and the checked
//! [`DetectorValidParams`] that a [`Detector`](crate::Detector) is built from.
//!
//! Every rule is checked at construction. A violation is reported as a [`ParamsError`]
//! variant that names the parameter and the rule, so a bad configuration never reaches
//! the scoring path.

use serde::{Deserialize, Serialize};

/// Largest number of features a detector accepts.
pub const MAX_FEATURES: usize = 256;
/// Largest number of lagged samples in one model input window.
pub const MAX_LAGS: usize = 64;
/// Number of contributing features a [`Verdict`](crate::Verdict) can carry.
pub const MAX_TOP: usize = 3;

/// Raw detector parameters, as read from a configuration file.
///
/// All fields have defaults ([`Default`]), tuned once on public benchmark data and used
/// unchanged for every metric. Call [`DetectorParams::validate`] (or
/// [`Detector::new`](crate::Detector::new)) to obtain checked parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorParams {
    /// Feature names, one per value passed to `observe`. Non-empty, unique, at most
    /// [`MAX_FEATURES`].
    pub features: Vec<String>,
    /// Score at or above which a sample is flagged anomalous, in (0, 1].
    ///
    /// Scores are calibrated: a score `s` means the combined tail probability of the
    /// sample is about `10^(-s * score_decades)`.
    pub threshold: f64,
    /// Number of decades of tail probability that map onto the score range [0, 1]. A
    /// score of 1 means a tail probability of `10^-score_decades` or smaller. > 0.
    pub score_decades: f64,
    /// Accepted samples before the detector is armed (scores are 0 while learning).
    pub warmup_samples: u64,
    /// Half-life, in samples, of the per-feature robust baseline (centre and spread). >= 1.
    pub baseline_half_life: f64,
    /// Half-life, in samples, of the score calibrators. >= 1.
    pub calibration_half_life: f64,
    /// Samples a calibrator must see before it produces p-values below 1. >= 1.
    pub calibration_min_samples: u64,
    /// Fraction of the calibration history treated as its tail: the p-value of a value
    /// beyond the `(1 - tail_fraction)` quantile decays exponentially with its distance
    /// (in log units) from that quantile. In (0, 0.5].
    pub tail_fraction: f64,
    /// Number of time-of-day bins of the seasonal baseline (0 disables it), <= 1440.
    pub seasonal_bins: usize,
    /// Number of time-of-week bins of the weekly baseline (0 disables it), <= 10080.
    pub weekly_bins: usize,
    /// Half-life of a seasonal bin's centre, in visits of that bin. >= 1.
    pub seasonal_half_life: f64,
    /// Number of recent raw scores averaged before calibration (1 = no averaging),
    /// in 1..=64.
    pub score_averaging: usize,
    /// Number of lagged, differenced values per feature in the k-means input window,
    /// in 1..=[`MAX_LAGS`].
    pub lags: usize,
    /// Number of consecutive differences averaged into each lagged value (1 = none),
    /// in 1..=[`MAX_LAGS`].
    pub smoothing: usize,
    /// Weight of the standardized level of each feature in the k-means window (0 drops
    /// it and keeps only the shape). Finite and >= 0.
    pub level_weight: f64,
    /// Number of k-means clusters per model, in 1..=256 and at most a tenth of
    /// `min_train_samples`.
    pub clusters: usize,
    /// Number of k-means models kept; a sample is only as anomalous as its distance to
    /// the closest model, so older models suppress alarms on recurring patterns. 1..=16.
    pub max_models: usize,
    /// Samples kept in the rolling training history (the window models are trained on).
    /// >= `min_train_samples`.
    pub train_window: usize,
    /// Usable samples needed before the first model is trained. >= 10.
    pub min_train_samples: usize,
    /// Samples between two retrainings. >= 1.
    pub retrain_every: u64,
    /// Largest number of windows one training uses (the history is subsampled with a
    /// fixed stride above this). >= `min_train_samples`.
    pub max_train_vectors: usize,
    /// Largest number of Lloyd iterations of one k-means fit. >= 1.
    pub max_iterations: u64,
    /// Seed of the k-means initialisation; a fixed seed makes training deterministic.
    pub seed: u64,
    /// Weight in [0, 1] of the baselines' evidence (their log p-value) in the combined
    /// score; 0 ignores them.
    pub baseline_weight: f64,
    /// Weight in [0, 1] of the k-means models' evidence in the combined score.
    pub model_weight: f64,
    /// Half-life, in samples, of the memory of the recent score peak (0 disables peak
    /// discounting). A score below the remembered peak is reduced by `peak_discount`,
    /// so a lasting disturbance is reported at its onset rather than on every sample.
    pub peak_memory: u64,
    /// Fraction in [0, 1] by which a score below the recent peak is reduced.
    pub peak_discount: f64,
    /// After an alarm, number of samples during which scores are damped so that one
    /// event raises one alarm rather than a burst.
    pub refractory_samples: u64,
    /// Factor in [0, 1] applied to scores during the refractory period.
    pub refractory_damping: f64,
    /// A gap longer than this multiple of the typical sampling interval restarts the
    /// input windows (0 disables gap handling). Finite and 0 or >= 1.
    pub gap_factor: f64,
    /// Number of contributing features reported in a verdict, in 0..=[`MAX_TOP`].
    pub top_features: usize,
    /// A value beyond every value its feature has taken, by more than this fraction of
    /// the range seen, is a first-time extreme (a level break, a record spike) and scores
    /// 1 however noisy the series is (0 disables the path). Finite and >= 0.
    pub range_margin: f64,
    /// A candidate alarm whose evidence was matched (alarm-level, and at least half as
    /// strong in log p) within 20 minutes of the same time of day on at least this many
    /// of the previous seven days is a daily repeat: its evidence is cut to a tenth, so a
    /// pattern that recurs every day fades after a few days instead of alarming every day
    /// (0 disables the check; at most 7).
    pub repeat_days: usize,
    /// Half-life, in samples, of each feature's short-term volatility (the mean absolute
    /// change between consecutive samples), judged in log scale against its own long-term
    /// baseline: reveals a frozen or stalled series, a change of variance and a burst of
    /// moderate changes none of which is extreme alone (0 disables it). 0 or finite and
    /// >= 1.
    pub volatility_half_life: f64,
}

impl Default for DetectorParams {
    fn default() -> Self {
        Self {
            features: vec!["value".to_owned()],
            threshold: 0.145,
            score_decades: 10.0,
            warmup_samples: 200,
            baseline_half_life: 2000.0,
            calibration_half_life: 5000.0,
            calibration_min_samples: 50,
            score_averaging: 1,
            tail_fraction: 0.05,
            seasonal_bins: 48,
            weekly_bins: 0,
            seasonal_half_life: 4.0,
            lags: 5,
            smoothing: 3,
            level_weight: 2.0,
            clusters: 6,
            max_models: 2,
            train_window: 2160,
            min_train_samples: 150,
            retrain_every: 360,
            max_train_vectors: 1000,
            max_iterations: 30,
            seed: 42,
            baseline_weight: 1.0,
            model_weight: 0.5,
            peak_memory: 0,
            peak_discount: 1.0,
            refractory_samples: 150,
            refractory_damping: 0.0,
            gap_factor: 4.0,
            top_features: MAX_TOP,
            range_margin: 0.2,
            repeat_days: 3,
            volatility_half_life: 8.0,
        }
    }
}

impl DetectorParams {
    /// Parameters with defaults for the given feature names.
    pub fn with_features<I, S>(features: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            features: features.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// Checks every rule and returns the validated parameters, or the first violation.
    pub fn validate(self) -> Result<DetectorValidParams, ParamsError> {
        let p = self;
        if p.features.is_empty() {
            return Err(ParamsError::NoFeatures);
        }
        if p.features.len() > MAX_FEATURES {
            return Err(ParamsError::TooManyFeatures(p.features.len()));
        }
        for (i, name) in p.features.iter().enumerate() {
            if name.trim().is_empty() {
                return Err(ParamsError::EmptyFeatureName(i));
            }
            if p.features[..i].contains(name) {
                return Err(ParamsError::DuplicateFeature(name.clone()));
            }
        }
        check(
            p.threshold > 0.0 && p.threshold <= 1.0,
            "threshold",
            "in (0, 1]",
            p.threshold,
        )?;
        check(
            p.score_decades.is_finite() && p.score_decades > 0.0,
            "score_decades",
            "finite and > 0",
            p.score_decades,
        )?;
        check(
            p.baseline_half_life.is_finite() && p.baseline_half_life >= 1.0,
            "baseline_half_life",
            "finite and >= 1",
            p.baseline_half_life,
        )?;
        check(
            p.calibration_half_life.is_finite() && p.calibration_half_life >= 1.0,
            "calibration_half_life",
            "finite and >= 1",
            p.calibration_half_life,
        )?;
        check(
            p.calibration_min_samples >= 1,
            "calibration_min_samples",
            ">= 1",
            p.calibration_min_samples as f64,
        )?;
        check(
            p.tail_fraction > 0.0 && p.tail_fraction <= 0.5,
            "tail_fraction",
            "in (0, 0.5]",
            p.tail_fraction,
        )?;
        check(
            p.seasonal_bins <= 1440,
            "seasonal_bins",
            "<= 1440",
            p.seasonal_bins as f64,
        )?;
        check(
            p.weekly_bins <= 10080,
            "weekly_bins",
            "<= 10080",
            p.weekly_bins as f64,
        )?;
        check(
            p.seasonal_half_life.is_finite() && p.seasonal_half_life >= 1.0,
            "seasonal_half_life",
            "finite and >= 1",
            p.seasonal_half_life,
        )?;
        check(
            (1..=64).contains(&p.score_averaging),
            "score_averaging",
            "in 1..=64",
            p.score_averaging as f64,
        )?;
        check(
            (1..=MAX_LAGS).contains(&p.lags),
            "lags",
            "in 1..=64",
            p.lags as f64,
        )?;
        check(
            (1..=MAX_LAGS).contains(&p.smoothing),
            "smoothing",
            "in 1..=64",
            p.smoothing as f64,
        )?;
        check(
            p.level_weight.is_finite() && p.level_weight >= 0.0,
            "level_weight",
            "finite and >= 0",
            p.level_weight,
        )?;
        check(
            (1..=MAX_MODELS).contains(&p.max_models),
            "max_models",
            "in 1..=16",
            p.max_models as f64,
        )?;
        check(
            p.min_train_samples >= 10,
            "min_train_samples",
            ">= 10",
            p.min_train_samples as f64,
        )?;
        check(
            (1..=256).contains(&p.clusters) && p.clusters * 10 <= p.min_train_samples,
            "clusters",
            "in 1..=256 and at most min_train_samples / 10",
            p.clusters as f64,
        )?;
        check(
            p.train_window >= p.min_train_samples,
            "train_window",
            ">= min_train_samples",
            p.train_window as f64,
        )?;
        check(
            p.train_window <= 1 << 20,
            "train_window",
            "<= 1048576",
            p.train_window as f64,
        )?;
        check(
            p.max_train_vectors >= p.min_train_samples,
            "max_train_vectors",
            ">= min_train_samples",
            p.max_train_vectors as f64,
        )?;
        check(
            p.retrain_every >= 1,
            "retrain_every",
            ">= 1",
            p.retrain_every as f64,
        )?;
        check(
            p.max_iterations >= 1,
            "max_iterations",
            ">= 1",
            p.max_iterations as f64,
        )?;
        check(
            (0.0..=1.0).contains(&p.baseline_weight),
            "baseline_weight",
            "in [0, 1]",
            p.baseline_weight,
        )?;
        check(
            (0.0..=1.0).contains(&p.model_weight),
            "model_weight",
            "in [0, 1]",
            p.model_weight,
        )?;
        check(
            (0.0..=1.0).contains(&p.peak_discount),
            "peak_discount",
            "in [0, 1]",
            p.peak_discount,
        )?;
        check(
            (0.0..=1.0).contains(&p.refractory_damping),
            "refractory_damping",
            "in [0, 1]",
            p.refractory_damping,
        )?;
        check(
            p.gap_factor.is_finite() && (p.gap_factor == 0.0 || p.gap_factor >= 1.0),
            "gap_factor",
            "finite and 0 or >= 1",
            p.gap_factor,
        )?;
        check(
            p.top_features <= MAX_TOP,
            "top_features",
            "<= 3",
            p.top_features as f64,
        )?;
        check(
            p.range_margin.is_finite() && p.range_margin >= 0.0,
            "range_margin",
            "finite and >= 0",
            p.range_margin,
        )?;
        check(
            p.repeat_days <= 7,
            "repeat_days",
            "in 0..=7",
            p.repeat_days as f64,
        )?;
        check(
            p.volatility_half_life == 0.0
                || (p.volatility_half_life.is_finite() && p.volatility_half_life >= 1.0),
            "volatility_half_life",
            "0 or finite and >= 1",
            p.volatility_half_life,
        )?;
        Ok(DetectorValidParams(p))
    }
}

/// Largest number of k-means models a detector keeps.
pub const MAX_MODELS: usize = 16;

fn check(ok: bool, name: &'static str, rule: &'static str, got: f64) -> Result<(), ParamsError> {
    if ok {
        Ok(())
    } else {
        Err(ParamsError::OutOfRange { name, rule, got })
    }
}

/// Parameters that passed [`DetectorParams::validate`]. Read-only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "DetectorParams", into = "DetectorParams")]
pub struct DetectorValidParams(DetectorParams);

impl DetectorValidParams {
    /// The checked parameters.
    pub fn get(&self) -> &DetectorParams {
        &self.0
    }

    /// Number of features.
    pub fn n_features(&self) -> usize {
        self.0.features.len()
    }

    /// Width of one k-means input window: `n_features * (lags + 1)`.
    pub fn window_dim(&self) -> usize {
        self.0.features.len() * (self.0.lags + 1)
    }

    /// Contiguous samples needed before an input window can be built.
    pub fn window_span(&self) -> usize {
        self.0.lags + self.0.smoothing
    }
}

impl TryFrom<DetectorParams> for DetectorValidParams {
    type Error = ParamsError;
    fn try_from(p: DetectorParams) -> Result<Self, Self::Error> {
        p.validate()
    }
}

impl From<DetectorValidParams> for DetectorParams {
    fn from(p: DetectorValidParams) -> Self {
        p.0
    }
}

/// A parameter broke one of its rules.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ParamsError {
    /// `features` is empty.
    #[error("features must name at least one feature")]
    NoFeatures,
    /// `features` has more than [`MAX_FEATURES`] entries.
    #[error("features must hold at most 256 names, got {0}")]
    TooManyFeatures(usize),
    /// A feature name is empty or blank.
    #[error("features[{0}] must not be empty")]
    EmptyFeatureName(usize),
    /// A feature name appears twice.
    #[error("features must be unique, {0:?} appears twice")]
    DuplicateFeature(String),
    /// A numeric parameter is outside its allowed range.
    #[error("{name} must be {rule}, got {got}")]
    OutOfRange {
        /// Parameter name, as spelled in the configuration.
        name: &'static str,
        /// The rule it broke.
        rule: &'static str,
        /// The offending value.
        got: f64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name_of(err: ParamsError) -> String {
        match err {
            ParamsError::OutOfRange { name, .. } => name.to_owned(),
            other => other.to_string(),
        }
    }

    #[test]
    fn defaults_are_valid() {
        assert!(DetectorParams::default().validate().is_ok());
    }

    #[test]
    fn each_rule_names_its_parameter() {
        type Case = (fn(&mut DetectorParams), &'static str);
        let cases: Vec<Case> = vec![
            (|p| p.threshold = 0.0, "threshold"),
            (|p| p.threshold = f64::NAN, "threshold"),
            (|p| p.score_decades = -1.0, "score_decades"),
            (|p| p.baseline_half_life = 0.5, "baseline_half_life"),
            (
                |p| p.calibration_half_life = f64::INFINITY,
                "calibration_half_life",
            ),
            (|p| p.calibration_min_samples = 0, "calibration_min_samples"),
            (|p| p.score_averaging = 0, "score_averaging"),
            (|p| p.tail_fraction = 0.0, "tail_fraction"),
            (|p| p.seasonal_bins = 2000, "seasonal_bins"),
            (|p| p.seasonal_half_life = 0.0, "seasonal_half_life"),
            (|p| p.weekly_bins = 20000, "weekly_bins"),
            (|p| p.lags = 0, "lags"),
            (|p| p.smoothing = 65, "smoothing"),
            (|p| p.level_weight = -0.1, "level_weight"),
            (|p| p.max_models = 0, "max_models"),
            (|p| p.min_train_samples = 5, "min_train_samples"),
            (|p| p.clusters = 100, "clusters"),
            (|p| p.train_window = 10, "train_window"),
            (|p| p.max_train_vectors = 10, "max_train_vectors"),
            (|p| p.retrain_every = 0, "retrain_every"),
            (|p| p.max_iterations = 0, "max_iterations"),
            (|p| p.refractory_damping = 1.5, "refractory_damping"),
            (|p| p.baseline_weight = 2.0, "baseline_weight"),
            (|p| p.model_weight = -1.0, "model_weight"),
            (|p| p.peak_discount = f64::NAN, "peak_discount"),
            (|p| p.gap_factor = 0.5, "gap_factor"),
            (|p| p.top_features = 4, "top_features"),
            (|p| p.range_margin = -0.1, "range_margin"),
            (|p| p.repeat_days = 8, "repeat_days"),
            (|p| p.volatility_half_life = 0.5, "volatility_half_life"),
        ];
        for (mutate, want) in cases {
            let mut p = DetectorParams::default();
            mutate(&mut p);
            let err = p.validate().expect_err(want);
            assert!(err.to_string().starts_with(want), "{err}");
            assert_eq!(name_of(err), want);
        }
    }

    #[test]
    fn feature_names_must_be_present_unique_and_non_blank() {
        let p = DetectorParams::with_features(Vec::<String>::new());
        assert_eq!(p.validate(), Err(ParamsError::NoFeatures));
        let p = DetectorParams::with_features(["a", " "]);
        assert_eq!(p.validate(), Err(ParamsError::EmptyFeatureName(1)));
        let p = DetectorParams::with_features(["a", "b", "a"]);
        assert_eq!(
            p.validate(),
            Err(ParamsError::DuplicateFeature("a".to_owned()))
        );
    }

    #[test]
    fn valid_params_refuse_invalid_json() {
        let json = r#"{"features":["x"],"threshold":2.0}"#;
        let raw: DetectorParams = serde_json::from_str(json).expect("raw params parse");
        assert!(raw.validate().is_err());
    }
}
