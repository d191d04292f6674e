//! Per-feature robust statistical baseline: an exponentially weighted centre and mean
//! absolute deviation, with winsorized updates.
//!
//! For each sample the baseline reports `|x - centre| / spread`, a robust z-score, and
//! then learns the sample. Updates are clipped at `CLIP` spreads from the centre, so a
//! spike moves the baseline only a little while a lasting level shift is absorbed within
//! a few half-lives. A feature that has been constant has a zero deviation and therefore
//! a zero score (it never alarms while it stays constant).
//!
//! Cost: a handful of flops and 32 bytes of state per feature.

use serde::{Deserialize, Serialize};

use crate::calibrate::alpha_of;

/// Winsorization of updates, in spreads.
const CLIP: f64 = 3.0;
/// Ratio of the standard deviation to the mean absolute deviation of a Gaussian.
const MAD_TO_STD: f64 = 1.253_314_137;
/// Smallest spread, relative to the magnitude of the centre, so that a series that is
/// constant up to rounding noise keeps finite, small scores.
const REL_FLOOR: f64 = 1e-9;
/// Largest z-score reported.
pub(crate) const MAX_Z: f64 = 1e6;

/// Robust baseline of one feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    alpha: f64,
    seen: u64,
    centre: f64,
    mad: f64,
}

impl Baseline {
    /// A baseline with the given half-life in samples.
    pub fn new(half_life: f64) -> Self {
        Self {
            alpha: alpha_of(half_life),
            seen: 0,
            centre: 0.0,
            mad: 0.0,
        }
    }

    /// Current centre.
    pub fn centre(&self) -> f64 {
        self.centre
    }

    /// Current spread (standard-deviation equivalent, floored).
    pub fn spread(&self) -> f64 {
        (self.mad * MAD_TO_STD).max(REL_FLOOR * (self.centre.abs() + REL_FLOOR))
    }

    /// Robust z-score of `x` against what was learned so far (0 for the first sample),
    /// then learns `x`. `x` must be finite.
    pub fn test_and_learn(&mut self, x: f64) -> f64 {
        if self.seen == 0 {
            self.centre = x;
            self.mad = 0.0;
            self.seen = 1;
            return 0.0;
        }
        let spread = self.spread();
        let dev = x - self.centre;
        let z = if dev == 0.0 {
            0.0
        } else {
            (dev.abs() / spread).min(MAX_Z)
        };
        let a = self.alpha.max(1.0 / (self.seen as f64 + 1.0));
        let limit = CLIP * spread;
        let d = if self.mad > 0.0 {
            dev.clamp(-limit, limit)
        } else {
            dev
        };
        self.centre += a * d;
        self.mad += a * (d.abs() - self.mad);
        self.seen += 1;
        z
    }
}

/// Milliseconds in a day.
pub const DAY_MS: u64 = 86_400_000;
/// Milliseconds in a week.
pub const WEEK_MS: u64 = 7 * DAY_MS;

/// Seasonal baseline of one feature: a centre per bin of the period (time of day, or
/// time of week), exponentially weighted over that bin's visits, and a spread pooled over
/// all bins.
///
/// It scores `|x - centre[bin]| / spread`. Gateway metrics follow the day (traffic,
/// load, temperature); judging a value against the same time on previous days catches
/// a missing peak or a flat stretch that is unremarkable against the overall range.
/// A bin never visited starts from the value itself. Cost: O(1) per sample,
/// `8 × bins + 32` bytes per feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seasonal {
    period_ms: u64,
    alpha_bin: f64,
    alpha_spread: f64,
    centres: Vec<f64>,
    visits: Vec<u32>,
    mad: f64,
    seen: u64,
}

impl Seasonal {
    /// A baseline with `bins` bins per period of `period_ms` (e.g. [`DAY_MS`]), a centre
    /// half-life of `bin_half_life` visits and a spread half-life of `spread_half_life`
    /// samples.
    pub fn new(bins: usize, period_ms: u64, bin_half_life: f64, spread_half_life: f64) -> Self {
        Self {
            period_ms: period_ms.max(1),
            alpha_bin: alpha_of(bin_half_life),
            alpha_spread: alpha_of(spread_half_life),
            centres: vec![0.0; bins],
            visits: vec![0; bins],
            mad: 0.0,
            seen: 0,
        }
    }

    /// Whether the arrays agree (checked after deserialization).
    pub(crate) fn is_consistent(&self, bins: usize) -> bool {
        self.centres.len() == bins && self.visits.len() == bins && self.period_ms > 0
    }

    /// Centre of the bin of `timestamp_ms` (0 when disabled or never visited).
    pub fn centre_at(&self, timestamp_ms: u64) -> f64 {
        match self.bin_of(timestamp_ms) {
            Some(bin) => self.centres[bin],
            None => 0.0,
        }
    }

    fn bin_of(&self, timestamp_ms: u64) -> Option<usize> {
        let bins = self.centres.len();
        if bins == 0 {
            return None;
        }
        let period = self.period_ms;
        let phase = timestamp_ms % period;
        let bin = match phase.checked_mul(bins as u64) {
            Some(scaled) => (scaled / period) as usize,
            None => ((phase as f64 / period as f64) * bins as f64) as usize,
        };
        Some(bin.min(bins - 1))
    }

    /// Robust z-score of `x` at `timestamp_ms` against the same phase of the period, then learns
    /// it. Returns 0 until the bin has been visited on an earlier sample.
    pub fn test_and_learn(&mut self, timestamp_ms: u64, x: f64) -> f64 {
        // Periods and bin counts are small enough (a week in ms times 10080 bins is
        // below 2^43) for the product to fit in u64.
        let Some(bin) = self.bin_of(timestamp_ms) else {
            return 0.0;
        };
        if self.visits[bin] == 0 {
            self.centres[bin] = x;
            self.visits[bin] = 1;
            return 0.0;
        }
        let centre = self.centres[bin];
        let spread = (self.mad * MAD_TO_STD).max(REL_FLOOR * (centre.abs() + REL_FLOOR));
        let dev = x - centre;
        let z = if dev == 0.0 {
            0.0
        } else {
            (dev.abs() / spread).min(MAX_Z)
        };
        let limit = CLIP * spread;
        let d = if self.mad > 0.0 {
            dev.clamp(-limit, limit)
        } else {
            dev
        };
        let a = self
            .alpha_bin
            .max(1.0 / (f64::from(self.visits[bin]) + 1.0));
        self.centres[bin] += a * d;
        self.visits[bin] = self.visits[bin].saturating_add(1);
        let a = self.alpha_spread.max(1.0 / (self.seen as f64 + 1.0));
        self.mad += a * (d.abs() - self.mad);
        self.seen += 1;
        z
    }
}

/// Range of the values a feature has taken: the un-averaged path for first-time extremes.
///
/// A value beyond everything the feature has taken so far, by a margin of the range seen,
/// is a level break or a record spike. It is reported at once, however noisy the series
/// is and whatever the calibrators have learned. Cost: 24 bytes per feature.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Range {
    lo: f64,
    hi: f64,
    seen: u64,
}

impl Default for Range {
    fn default() -> Self {
        Self {
            lo: 0.0,
            hi: 0.0,
            seen: 0,
        }
    }
}

impl Range {
    /// How far `x` lies beyond the range seen so far, in units of that range (0 inside it,
    /// or while the range is empty), then widens the range to include `x`.
    pub fn test_and_learn(&mut self, x: f64) -> f64 {
        if self.seen == 0 {
            self.lo = x;
            self.hi = x;
            self.seen = 1;
            return 0.0;
        }
        let width = self.hi - self.lo;
        let beyond = if width > 0.0 {
            ((x - self.hi).max(self.lo - x) / width).max(0.0)
        } else {
            0.0
        };
        self.lo = self.lo.min(x);
        self.hi = self.hi.max(x);
        self.seen += 1;
        if beyond.is_finite() {
            beyond
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_feature_scores_zero() {
        let mut b = Baseline::new(100.0);
        for _ in 0..1000 {
            assert_eq!(b.test_and_learn(42.5), 0.0);
        }
    }

    #[test]
    fn spike_scores_high_and_barely_moves_the_centre() {
        let mut b = Baseline::new(100.0);
        for i in 0..500 {
            b.test_and_learn(10.0 + if i % 2 == 0 { 1.0 } else { -1.0 });
        }
        let before = b.centre();
        let z = b.test_and_learn(100.0);
        assert!(z > 50.0, "z = {z}");
        assert!((b.centre() - before).abs() < 0.1);
    }

    #[test]
    fn seasonal_baseline_flags_a_missing_daily_peak() {
        let mut s = Seasonal::new(24, DAY_MS, 3.0, 500.0);
        let hour = 3_600_000u64;
        let value = |h: u64| if h % 24 == 12 { 10.0 } else { 1.0 } + 0.01 * (h % 5) as f64;
        let mut last_noon = 0.0;
        for h in 0..24 * 10 {
            let z = s.test_and_learn(h * hour, value(h));
            if h > 48 && h % 24 == 12 {
                last_noon = z;
            }
        }
        assert!(last_noon < 5.0, "a regular peak is normal, z = {last_noon}");
        let z = s.test_and_learn(24 * 10 * hour + 12 * hour, 1.0);
        assert!(z > 50.0, "missing peak, z = {z}");
    }

    #[test]
    fn range_reports_first_time_extremes_in_units_of_the_range() {
        let mut r = Range::default();
        for x in [10.0, 19.0] {
            r.test_and_learn(x);
        }
        for i in 0..100 {
            assert_eq!(r.test_and_learn(10.0 + (i % 10) as f64), 0.0);
        }
        assert!((r.test_and_learn(28.0) - 1.0).abs() < 1e-12);
        assert_eq!(
            r.test_and_learn(28.0),
            0.0,
            "a repeat of the extreme is inside the range"
        );
        assert!((r.test_and_learn(1.0) - 0.5).abs() < 1e-12);
        assert!(r.test_and_learn(f64::MAX).is_finite());
    }

    #[test]
    fn level_shift_is_absorbed() {
        let mut b = Baseline::new(20.0);
        for i in 0..200 {
            b.test_and_learn(if i % 2 == 0 { 1.0 } else { -1.0 });
        }
        let mut last = 0.0;
        for i in 0..400 {
            last = b.test_and_learn(50.0 + if i % 2 == 0 { 1.0 } else { -1.0 });
        }
        assert!(last < 3.0, "z after shift = {last}");
    }
}
