//! Learned behaviours: `mlDetectionConfig` on a numeric metric (an anomaly scorer per behaviour)
//! and on a set metric (set novelty: a port, address or name never seen in the baseline).
//!
//! Device Defender refuses `mlDetectionConfig` on set metrics; on the device that combination
//! selects set novelty, so such behaviours belong in a device-only profile.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// `mlDetectionConfig.confidenceLevel`. `HIGH` means fewer, surer alarms; `LOW` more sensitive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ConfidenceLevel {
    /// High sensitivity, more alarms.
    Low,
    /// The middle ground.
    Medium,
    /// Low sensitivity, fewer alarms.
    High,
}

impl ConfidenceLevel {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            ConfidenceLevel::Low => "LOW",
            ConfidenceLevel::Medium => "MEDIUM",
            ConfidenceLevel::High => "HIGH",
        }
    }

    /// Parses `LOW`, `MEDIUM` or `HIGH`.
    pub fn parse(s: &str) -> Option<ConfidenceLevel> {
        match s {
            "LOW" => Some(ConfidenceLevel::Low),
            "MEDIUM" => Some(ConfidenceLevel::Medium),
            "HIGH" => Some(ConfidenceLevel::High),
            _ => None,
        }
    }

    /// Anomaly score (0–1) at or above which a numeric ML datapoint violates.
    pub const fn score_threshold(self) -> f64 {
        match self {
            ConfidenceLevel::Low => 0.80,
            ConfidenceLevel::Medium => 0.90,
            ConfidenceLevel::High => 0.97,
        }
    }

    /// Novelty score at or above which a set datapoint violates: with the novelty score
    /// `1 - 2^-m` (see [`NoveltySet::score`]), one never-seen item gives 0.5, two give 0.75,
    /// three 0.875, so LOW alarms on one new item, MEDIUM on two, HIGH on three.
    pub const fn novelty_threshold(self) -> f64 {
        match self {
            ConfidenceLevel::Low => 0.5,
            ConfidenceLevel::Medium => 0.75,
            ConfidenceLevel::High => 0.875,
        }
    }
}

/// A model fit that runs off the evaluation path; its result goes to [`MlScorer::install`].
pub type TrainFn = Box<dyn FnOnce() -> Option<Box<dyn Any + Send>> + Send>;

/// An anomaly scorer for one numeric behaviour.
///
/// `observe` rates a datapoint against the baseline learned so far and then folds it into the
/// baseline as the model sees fit (a robust model keeps outliers out of its baseline, so an
/// attack in progress does not become normal). Models that need a heavier fit hand out a
/// [`TrainFn`] when one is due; the caller runs it on a worker thread and installs the result.
pub trait MlScorer: Send + std::fmt::Debug {
    /// Anomaly score in [0, 1] of `value` at `at_ms`.
    fn observe(&mut self, at_ms: u64, value: f64) -> f64;
    /// True once the baseline has seen enough datapoints to be trusted.
    fn is_trained(&self) -> bool;
    /// Serialized learned state.
    fn save(&self) -> serde_json::Value;
    /// A fit to run off the evaluation path, when one is due.
    fn training_job(&mut self) -> Option<TrainFn> {
        None
    }
    /// Installs the result of a [`TrainFn`]; false when it does not fit this scorer.
    fn install(&mut self, _model: Box<dyn Any + Send>) -> bool {
        false
    }
}

/// Builds scorers, fresh or from a saved state.
pub trait ScorerFactory: Send + Sync + std::fmt::Debug {
    /// A new, untrained scorer.
    fn create(&self) -> Box<dyn MlScorer>;
    /// A scorer restored from [`MlScorer::save`]; `None` if the state is not usable.
    fn restore(&self, state: &serde_json::Value) -> Option<Box<dyn MlScorer>>;
    /// Score at or above which a datapoint violates at `level`, on this scorer's scale.
    fn threshold(&self, level: ConfidenceLevel) -> f64 {
        level.score_threshold()
    }
}

/// Minimum datapoints before a baseline is trusted.
pub const MIN_TRAINED_DATAPOINTS: u64 = 30;

/// A robust streaming baseline: exponentially weighted mean and mean absolute deviation, with
/// the score a smooth function of the deviation in robust standard deviations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EwmaScorer {
    mean: f64,
    mad: f64,
    n: u64,
}

/// Weight of a new datapoint in the EWMA (a memory of about 200 datapoints).
const EWMA_ALPHA: f64 = 0.005;

impl EwmaScorer {
    fn scale(&self) -> f64 {
        // A deviation floor: 1.4826·MAD estimates σ; flat series get 5 % of the level or 1 unit.
        (1.4826 * self.mad).max(0.05 * self.mean.abs()).max(1.0)
    }
}

impl EwmaScorer {
    fn score(&self, value: f64) -> f64 {
        if self.n == 0 {
            return 0.0;
        }
        let z = (value - self.mean).abs() / self.scale();
        // z = 4 → 0.5, z = 6 → 0.84, z = 8 → 0.94, z = 12 → 0.99.
        let r = (z / 4.0).powi(4);
        r / (1.0 + r)
    }

    fn learn(&mut self, value: f64) {
        self.n = self.n.saturating_add(1);
        let a = if self.n < 50 {
            1.0 / self.n as f64
        } else {
            EWMA_ALPHA
        };
        let dev = (value - self.mean).abs();
        self.mean += a * (value - self.mean);
        self.mad += a * (dev - self.mad);
    }
}

/// Scores at or above this are outliers and stay out of the EWMA baseline once it is trained.
const EWMA_OUTLIER: f64 = 0.8;

impl MlScorer for EwmaScorer {
    fn observe(&mut self, _at_ms: u64, value: f64) -> f64 {
        if !value.is_finite() {
            return 0.0;
        }
        let score = self.score(value);
        if score < EWMA_OUTLIER || !self.is_trained() {
            self.learn(value);
        }
        score
    }

    fn is_trained(&self) -> bool {
        self.n >= MIN_TRAINED_DATAPOINTS
    }

    fn save(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// Factory of [`EwmaScorer`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct EwmaFactory;

impl ScorerFactory for EwmaFactory {
    fn create(&self) -> Box<dyn MlScorer> {
        Box::new(EwmaScorer {
            mean: 0.0,
            mad: 0.0,
            n: 0,
        })
    }

    fn restore(&self, state: &serde_json::Value) -> Option<Box<dyn MlScorer>> {
        let s: EwmaScorer = serde_json::from_value(state.clone()).ok()?;
        (s.mean.is_finite() && s.mad.is_finite() && s.mad >= 0.0)
            .then(|| Box::new(s) as Box<dyn MlScorer>)
    }
}

/// Bound on the items of one learned set.
pub const MAX_BASELINE_ITEMS: usize = 512;
/// Bound on the novel items awaiting adoption.
pub const MAX_PENDING_ITEMS: usize = 256;

/// A bounded learned set: how often each item was seen while learning, and the novel items seen
/// since, which are adopted into the baseline once present for `adopt_after_ms` of observed time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NoveltySet {
    /// Item → datapoints it appeared in (saturating).
    baseline: HashMap<String, u32>,
    /// Novel item → observed milliseconds it has been present.
    pending: BTreeMap<String, u64>,
    /// Items dropped at the bounds (an evicted baseline item becomes novel again).
    pub evicted: u64,
}

impl NoveltySet {
    /// Items in the baseline.
    pub fn len(&self) -> usize {
        self.baseline.len()
    }

    /// True when nothing has been learned.
    pub fn is_empty(&self) -> bool {
        self.baseline.is_empty()
    }

    /// Novelty of one item: 1 when never seen in the baseline, `1/(1+n)` when seen in `n`
    /// datapoints.
    pub fn item_novelty(&self, item: &str) -> f64 {
        match self.baseline.get(item) {
            None => 1.0,
            Some(&n) => 1.0 / (1.0 + f64::from(n)),
        }
    }

    /// Novelty score of a datapoint, `1 - 2^-m` where `m` sums the items' novelty, with the
    /// never-seen items (ascending). 0 when every item is well known.
    pub fn score<'a>(&self, items: impl Iterator<Item = &'a str>) -> (f64, Vec<&'a str>) {
        let mut m = 0.0;
        let mut novel = Vec::new();
        for it in items {
            let v = self.item_novelty(it);
            if v >= 1.0 {
                novel.push(it);
            }
            m += v;
        }
        (1.0 - (-m * std::f64::consts::LN_2).exp(), novel)
    }

    /// Learning: counts every item of the datapoint into the baseline.
    pub fn learn<'a>(&mut self, items: impl Iterator<Item = &'a str>) {
        for it in items {
            if let Some(n) = self.baseline.get_mut(it) {
                *n = n.saturating_add(1);
            } else {
                if self.baseline.len() >= MAX_BASELINE_ITEMS {
                    self.evict_rarest();
                }
                self.baseline.insert(it.to_owned(), 1);
            }
        }
    }

    /// Armed: known items keep counting; novel ones accrue presence time and are adopted into
    /// the baseline after `adopt_after_ms`. Returns the adopted items.
    pub fn track<'a>(
        &mut self,
        items: impl Iterator<Item = &'a str>,
        interval_ms: u64,
        adopt_after_ms: u64,
    ) -> Vec<String> {
        let mut adopted = Vec::new();
        for it in items {
            if let Some(n) = self.baseline.get_mut(it) {
                *n = n.saturating_add(1);
                continue;
            }
            let t = match self.pending.get_mut(it) {
                Some(t) => t,
                None => {
                    if self.pending.len() >= MAX_PENDING_ITEMS {
                        self.evicted += 1;
                        continue;
                    }
                    self.pending.entry(it.to_owned()).or_insert(0)
                }
            };
            *t = t.saturating_add(interval_ms);
            if *t >= adopt_after_ms {
                adopted.push(it.to_owned());
            }
        }
        for it in &adopted {
            self.pending.remove(it);
            if self.baseline.len() >= MAX_BASELINE_ITEMS {
                self.evict_rarest();
            }
            self.baseline.insert(it.clone(), 1);
        }
        adopted
    }

    fn evict_rarest(&mut self) {
        if let Some(k) = self
            .baseline
            .iter()
            .min_by(|a, b| a.1.cmp(b.1).then_with(|| a.0.cmp(b.0)))
            .map(|(k, _)| k.clone())
        {
            self.baseline.remove(&k);
            self.evicted += 1;
        }
    }

    /// Drops items beyond the bounds (a restored state from a larger build).
    pub fn enforce_bounds(&mut self) {
        while self.baseline.len() > MAX_BASELINE_ITEMS {
            self.evict_rarest();
        }
        while self.pending.len() > MAX_PENDING_ITEMS {
            self.pending.pop_last();
            self.evicted += 1;
        }
    }
}

/// Normalises a process or kernel-thread name for novelty: runs of digits become `#`, so
/// `kworker/1:2H-events` and `kworker/0:0H-events` are one item.
pub fn normalise_name(s: &str, out: &mut String) {
    out.clear();
    let mut in_digits = false;
    for c in s.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('#');
            }
            in_digits = true;
        } else {
            out.push(c);
            in_digits = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn novelty_score_counts_never_seen_items() {
        let mut s = NoveltySet::default();
        for _ in 0..100 {
            s.learn(["22", "443"].into_iter());
        }
        s.learn(["8080"].into_iter());
        let (score, novel) = s.score(["22", "443"].into_iter());
        assert!(score < 0.02, "{score}");
        assert!(novel.is_empty());
        let (score, novel) = s.score(["22", "4444"].into_iter());
        assert!((score - 0.5).abs() < 0.01, "{score}");
        assert_eq!(novel, vec!["4444"]);
        // Seen once while learning: novelty 1/2.
        let (score, novel) = s.score(["8080"].into_iter());
        assert!((score - (1.0 - 0.5f64.powf(0.5))).abs() < 1e-9, "{score}");
        assert!(novel.is_empty());
        let (score, _) = s.score(["1", "2", "3"].into_iter());
        assert!(score >= ConfidenceLevel::High.novelty_threshold());
        let (score, _) = s.score(["1", "2"].into_iter());
        assert!(score >= ConfidenceLevel::Medium.novelty_threshold());
        assert!(score < ConfidenceLevel::High.novelty_threshold());
    }

    #[test]
    fn novel_items_are_adopted_after_presence_time() {
        let mut s = NoveltySet::default();
        s.learn(["22"].into_iter());
        assert!(s
            .track(["22", "4444"].into_iter(), 10_000, 30_000)
            .is_empty());
        assert!(s.track(["4444"].into_iter(), 10_000, 30_000).is_empty());
        assert_eq!(s.track(["4444"].into_iter(), 10_000, 30_000), vec!["4444"]);
        assert!(s.item_novelty("4444") < 1.0);
    }

    #[test]
    fn learned_sets_stay_bounded() {
        let mut s = NoveltySet::default();
        let names: Vec<String> = (0..MAX_BASELINE_ITEMS + 50)
            .map(|i| format!("n{i}"))
            .collect();
        s.learn(names.iter().map(String::as_str));
        assert_eq!(s.len(), MAX_BASELINE_ITEMS);
        assert_eq!(s.evicted, 50);
        let more: Vec<String> = (0..MAX_PENDING_ITEMS + 5)
            .map(|i| format!("p{i}"))
            .collect();
        s.track(more.iter().map(String::as_str), 1, u64::MAX);
        assert_eq!(s.pending.len(), MAX_PENDING_ITEMS);
    }

    #[test]
    fn names_are_normalised_over_digit_runs() {
        let mut o = String::new();
        normalise_name("kworker/12:0H-events", &mut o);
        assert_eq!(o, "kworker/#:#H-events");
        normalise_name("sshd", &mut o);
        assert_eq!(o, "sshd");
    }

    #[test]
    fn ewma_scores_outliers_high_and_the_baseline_low() {
        let f = EwmaFactory;
        let mut s = f.create();
        for i in 0..200u64 {
            let v = 1000.0 + (i % 7) as f64 * 10.0;
            assert!(s.observe(i, v).is_finite());
        }
        assert!(s.is_trained());
        assert!(s.observe(200, 1030.0) < 0.2);
        // An outlier scores high and stays out of the baseline: it scores the same again.
        let a = s.observe(201, 100_000.0);
        assert!(a > 0.99);
        assert_eq!(s.observe(202, 100_000.0), a);
        let r = f.restore(&s.save()).unwrap();
        assert!(r.is_trained());
        assert!(f.restore(&serde_json::json!({"nonsense": 1})).is_none());
    }
}
