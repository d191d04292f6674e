//! Learned behaviours: `mlDetectionConfig` on a numeric metric (an anomaly scorer per behaviour)
//! and on a set metric (set novelty: a port, address or name never seen in the baseline).
//!
//! Device Defender refuses `mlDetectionConfig` on set metrics; on the device that combination
//! selects set novelty, so such behaviours belong in a device-only profile.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};

use edgewarden_detector::{Detector, DetectorParams, LagModel, Status};
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

    /// Anomaly score (0–1) at or above which a numeric ML datapoint violates. On the
    /// detector's scale (`-log10(p) / 10`) these are tail probabilities of 1e-5, 1e-6 and 1e-7
    /// per datapoint: at a 10 s tick a well-calibrated normal metric crosses HIGH about once in
    /// three years.
    pub const fn score_threshold(self) -> f64 {
        match self {
            ConfidenceLevel::Low => 0.5,
            ConfidenceLevel::Medium => 0.6,
            ConfidenceLevel::High => 0.7,
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

/// The anomaly scorer of ML behaviours: an `edgewarden-detector` [`Detector`] over the one
/// metric (robust per-feature baseline with time-of-day seasonality, k-means on lagged windows,
/// calibrated to a tail probability; score `-log10(p) / 10`), backed by a [`MagnitudeGuard`].
#[derive(Debug)]
pub struct DetectorScorer {
    det: Detector,
    guard: MagnitudeGuard,
    range: SeenRange,
}

/// The range a metric took in normal operation: the largest and smallest values it had while
/// scoring as normal (below 0.5), warm-up included.
///
/// A datapoint inside the range, widened by [`RANGE_MARGIN`] (up to four times the largest
/// normal value, down to a quarter of the smallest), is never anomalous: a gateway whose uploads reached 3 MB in
/// a tick does not alarm on the next 3 MB upload because uploads are rare, while a flood a
/// hundred times larger still does. Attacks do not widen the range, as their scores are high.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SeenRange {
    lo: Option<f64>,
    hi: Option<f64>,
}

/// How far outside the normal range a datapoint must be before it can be anomalous.
pub const RANGE_MARGIN: f64 = 4.0;

impl SeenRange {
    /// True when `x` is within the widened range.
    pub fn contains(&self, x: f64) -> bool {
        match (self.lo, self.hi) {
            (Some(lo), Some(hi)) => {
                let low = if lo >= 0.0 {
                    lo / RANGE_MARGIN
                } else {
                    lo * RANGE_MARGIN
                };
                let high = if hi >= 0.0 {
                    hi * RANGE_MARGIN
                } else {
                    hi / RANGE_MARGIN
                };
                x >= low && x <= high
            }
            _ => false,
        }
    }

    /// Widens the range to `x`.
    pub fn learn(&mut self, x: f64) {
        if x.is_finite() {
            self.lo = Some(self.lo.map_or(x, |l| l.min(x)));
            self.hi = Some(self.hi.map_or(x, |h| h.max(x)));
        }
    }
}

/// A magnitude check beside the detector.
///
/// The detector's score is relative to the deviations it has seen. On a near-constant metric (a
/// gateway's heartbeat traffic, two established connections) ordinary jitter already looks
/// extreme to it, and a change by orders of magnitude scores little more. The guard measures the
/// deviation `z` from a robust level in units of a floor scale: the robust spread, at least a
/// quarter of the level and at least 1. It does two things:
///
/// - it gates the detector: a datapoint within [`GATE_Z`] floor scales of the level is never
///   anomalous (a third connection, 20 % more bytes);
/// - it scores gross changes itself, `log10(z / 10) / 3`: 10× the floor scores 0, 1,000× scores
///   0.67 and 10,000× scores 1.
///
/// Its updates are clipped to three scales, so an attack does not move its level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MagnitudeGuard {
    centre: f64,
    mad: f64,
    n: u64,
}

impl MagnitudeGuard {
    fn scale(&self) -> f64 {
        (1.4826 * self.mad).max(0.25 * self.centre.abs()).max(1.0)
    }

    /// Scores `x` as `(score, z)`, then learns it (clipped to three scales).
    pub fn observe(&mut self, x: f64) -> (f64, f64) {
        if !x.is_finite() {
            return (0.0, 0.0);
        }
        if self.n == 0 {
            self.centre = x;
            self.n = 1;
            return (0.0, 0.0);
        }
        let scale = self.scale();
        let dev = x - self.centre;
        let z = dev.abs() / scale;
        let score = if z > 10.0 {
            ((z / 10.0).log10() / 3.0).min(1.0)
        } else {
            0.0
        };
        self.n = self.n.saturating_add(1);
        let a = (1.0 / self.n as f64).max(0.002);
        let d = dev.clamp(-3.0 * scale, 3.0 * scale);
        self.centre += a * d;
        self.mad += a * (d.abs() - self.mad);
        (score, z)
    }
}

/// Deviation, in floor scales, below which the detector's score is not trusted.
pub const GATE_Z: f64 = 3.0;

/// Samples a detector sees before it scores (10 minutes of 10 s ticks); the engine's learning
/// period usually ends later.
const DETECTOR_WARMUP: u64 = 60;

/// Builds [`DetectorScorer`]s with the agent's parameters.
#[derive(Debug, Clone, Default)]
pub struct DetectorFactory;

impl DetectorFactory {
    /// The detector parameters for one behaviour's metric.
    pub fn params() -> DetectorParams {
        DetectorParams {
            warmup_samples: DETECTOR_WARMUP,
            // A lasting anomaly keeps its score, so the alarm lasts as long as it does;
            // consecutiveDatapointsToClear handles flapping.
            refractory_samples: 0,
            ..DetectorParams::with_features(["value"])
        }
    }
}

/// Persisted form of a [`DetectorScorer`].
#[derive(Serialize, Deserialize)]
struct DetectorScorerState {
    detector: Detector,
    guard: MagnitudeGuard,
    #[serde(default)]
    range: SeenRange,
}

impl ScorerFactory for DetectorFactory {
    fn create(&self) -> Box<dyn MlScorer> {
        Box::new(DetectorScorer {
            det: Detector::new(Self::params())
                .expect("the built-in detector parameters are valid (checked by a unit test)"),
            guard: MagnitudeGuard {
                centre: 0.0,
                mad: 0.0,
                n: 0,
            },
            range: SeenRange::default(),
        })
    }

    fn restore(&self, state: &serde_json::Value) -> Option<Box<dyn MlScorer>> {
        let s: DetectorScorerState = serde_json::from_value(state.clone()).ok()?;
        let ok = s.detector.feature_names().len() == 1
            && s.guard.centre.is_finite()
            && s.guard.mad.is_finite();
        ok.then(|| {
            Box::new(DetectorScorer {
                det: s.detector,
                guard: s.guard,
                range: s.range,
            }) as Box<dyn MlScorer>
        })
    }
}

impl MlScorer for DetectorScorer {
    fn observe(&mut self, at_ms: u64, value: f64) -> f64 {
        let v = self.det.observe(at_ms, &[value]);
        let (guard, z) = self.guard.observe(value);
        let score = match v.status {
            Status::Armed if v.score.is_finite() => {
                let det = if z >= GATE_Z {
                    v.score.clamp(0.0, 1.0)
                } else {
                    0.0
                };
                det.max(guard)
            }
            _ => 0.0,
        };
        let score = if self.range.contains(value) {
            0.0
        } else {
            score
        };
        if score < 0.5 {
            self.range.learn(value);
        }
        score
    }

    fn is_trained(&self) -> bool {
        !self.det.is_learning()
    }

    fn save(&self) -> serde_json::Value {
        serde_json::to_value(DetectorScorerState {
            detector: self.det.clone(),
            guard: self.guard.clone(),
            range: self.range.clone(),
        })
        .unwrap_or(serde_json::Value::Null)
    }

    fn training_job(&mut self) -> Option<TrainFn> {
        if !self.det.needs_retrain() {
            return None;
        }
        let set = self.det.train_snapshot();
        Some(Box::new(move || {
            set.fit().ok().map(|m| Box::new(m) as Box<dyn Any + Send>)
        }))
    }

    fn install(&mut self, model: Box<dyn Any + Send>) -> bool {
        model
            .downcast::<LagModel>()
            .is_ok_and(|m| self.det.install(*m).is_ok())
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

    /// As [`NoveltySet::score`], but only never-seen items count (1 each): rarely seen items,
    /// however many, never add up to an alarm.
    pub fn score_never_seen<'a>(
        &self,
        items: impl Iterator<Item = &'a str>,
    ) -> (f64, Vec<&'a str>) {
        let novel: Vec<&str> = items
            .filter(|it| !self.baseline.contains_key(*it))
            .collect();
        let m = novel.len() as f64;
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
    fn values_within_the_normal_range_never_alarm_a_flood_beyond_it_does() {
        let f = DetectorFactory;
        let mut sc = f.create();
        let mut t = 1_767_225_600_000u64;
        // Mostly idle, an upload of up to 2.5 MB every 20 ticks.
        for i in 0..400u64 {
            t += 1000;
            let v = if i % 20 < 2 {
                1.5e6 + (i % 7) as f64 * 1.5e5
            } else {
                4000.0 + (i % 13) as f64 * 50.0
            };
            sc.observe(t, v);
        }
        assert!(sc.is_trained());
        t += 1000;
        assert_eq!(
            sc.observe(t, 2.9e6),
            0.0,
            "a normal upload, a little larger than before"
        );
        t += 1000;
        let flood = sc.observe(t, 4.5e8);
        assert!(flood >= ConfidenceLevel::High.score_threshold(), "{flood}");
        // The flood did not widen the range.
        assert_eq!(sc.save()["range"]["hi"], serde_json::json!(2.9e6));
        let mut r = SeenRange::default();
        assert!(!r.contains(1.0));
        r.learn(10.0);
        r.learn(100.0);
        assert!(r.contains(2.5) && r.contains(400.0) && !r.contains(2.4) && !r.contains(401.0));
    }

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
    fn detector_scorer_is_quiet_on_noise_and_loud_on_a_flood() {
        let f = DetectorFactory;
        let mut s = f.create();
        let mut rng = fastrand::Rng::with_seed(7);
        let mut max_normal = 0.0f64;
        for i in 0..3000u64 {
            let v = 20_000.0 + rng.f64() * 5_000.0;
            let sc = s.observe(i * 10_000, v);
            assert!((0.0..=1.0).contains(&sc));
            if i > 400 {
                max_normal = max_normal.max(sc);
            }
            if let Some(job) = s.training_job() {
                assert!(job().is_some_and(|m| s.install(m)));
            }
        }
        assert!(s.is_trained());
        assert!(
            max_normal < f.threshold(ConfidenceLevel::Low),
            "{max_normal}"
        );
        let flood = s.observe(3000 * 10_000, 5_000_000.0);
        assert!(flood >= f.threshold(ConfidenceLevel::High), "{flood}");
        let restored = f.restore(&s.save()).unwrap();
        assert!(restored.is_trained());
    }

    #[test]
    fn a_jump_by_orders_of_magnitude_alarms_even_after_a_flat_baseline() {
        let f = DetectorFactory;
        let mut s = f.create();
        for i in 0..200u64 {
            // Heartbeat traffic: almost always the same byte count.
            let v = if i % 17 == 0 { 2040.0 } else { 2588.0 };
            assert!(s.observe(i * 500, v) < ConfidenceLevel::Low.score_threshold());
        }
        assert!(s.observe(200 * 500, 537_466_782.0) >= ConfidenceLevel::High.score_threshold());
        // The guard kept its level: normal traffic is normal again.
        assert!(s.observe(201 * 500, 2588.0) < ConfidenceLevel::Low.score_threshold());
    }

    #[test]
    fn a_rare_small_step_on_a_constant_count_is_not_anomalous() {
        let f = DetectorFactory;
        let mut s = f.create();
        for i in 0..300u64 {
            let v = if i % 50 == 7 { 3.0 } else { 2.0 };
            s.observe(i * 500, v);
        }
        assert_eq!(s.observe(300 * 500, 3.0), 0.0, "within the gate");
        assert!(s.observe(301 * 500, 20_000.0) >= ConfidenceLevel::High.score_threshold());
    }

    #[test]
    fn magnitude_guard_scores_hand_computed_deviations() {
        let mut g = MagnitudeGuard {
            centre: 0.0,
            mad: 0.0,
            n: 0,
        };
        for _ in 0..1000 {
            g.observe(1000.0);
        }
        // Scale floor: a quarter of the level, 250.
        assert_eq!(g.observe(3500.0), (0.0, 10.0));
        let (s, z) = g.observe(1000.0 + 250.0 * 1000.0); // z = 1000 → log10(100) / 3
        assert!(
            (s - 2.0 / 3.0).abs() < 0.01 && (z - 1000.0).abs() < 2.0,
            "{s} {z}"
        );
        assert_eq!(g.observe(1e12).0, 1.0);
    }
}
