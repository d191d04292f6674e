//! Score calibration: turns a raw nonconformity value (a distance, a z-score) into a
//! tail probability, so that scores of different models and metrics mean the same thing.
//!
//! A [`Calibrator`] keeps a decayed histogram of the logarithm of recent raw values and
//! fits an exponential tail to its top (peaks over threshold). A new value is tested
//! against the state *before* it is learned (no look-ahead).
//!
//! Cost: O(1) per value plus, every sixteenth value, a scan of the top of the histogram (a
//! few dozen bins); about 2.3 KiB of state.

use serde::{Deserialize, Serialize};

/// Offset added to raw values before taking the logarithm; raw values are in
/// standardized units, so this is far below any meaningful deviation.
const RAW_FLOOR: f64 = 1e-6;
/// Width of one histogram bin, in natural-log units of the raw value.
const BIN_WIDTH: f64 = 0.1;
/// Bins per natural-log unit (`1 / BIN_WIDTH`).
const BINS_PER_UNIT: f64 = 10.0;
/// Lowest log-raw value the histogram resolves (`ln RAW_FLOOR`).
const LOG_MIN: f64 = -13.815_510_557_964_274;
/// Number of histogram bins: log-raw values from `LOG_MIN` up to about `ln 1e6`.
const BINS: usize = 277;
/// Smallest tail scale, in log units: keeps a history of identical values from turning
/// rounding differences into alarms.
const MIN_TAIL_SCALE: f64 = 0.1;
/// Values between two refits of the tail (the fit moves slowly; refitting on every
/// value would dominate the scoring cost).
const REFIT_EVERY: u32 = 16;
/// Renormalize the lazily decayed histogram when the increment exceeds this.
const RESCALE_AT: f64 = 1e100;

/// Streaming calibrator of one raw score.
///
/// Keeps an exponentially decayed histogram of `ln(raw)`. The p-value of a value `x` is
/// that of a peaks-over-threshold fit: `u` is the `(1 - tail)` quantile of the history
/// (rounded up to a bin edge) and `beta` the mean excess over `u`; values up to `u` get
/// `p = 1` and values beyond get `p = tail * exp(-(x - u) / beta)`, an exponential tail
/// in log space (a Pareto tail for the raw value). A history of identical values therefore
/// never makes a repeat of them look unusual; values beyond anything seen get ever smaller p, so the score
/// ranks never-seen deviations by how far they go. A deviation that recurs (a daily
/// peak, a square wave's edges) fills the tail and stops alarming.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibrator {
    /// `1 / decay`: the growth of the increment per value.
    growth: f64,
    tail: f64,
    min_samples: u64,
    seen: u64,
    /// Weight added by the next value (grows by `1 / decay` per value, instead of
    /// decaying every bin).
    increment: f64,
    total: f64,
    /// Highest bin ever filled: the tail scan starts there.
    top_bin: usize,
    /// Current tail fit `(u, beta)` and values learned since it was computed.
    fit: (f64, f64),
    fit_age: u32,
    counts: Vec<f64>,
    recent: Vec<f64>,
    recent_pos: usize,
    recent_len: usize,
}

impl Calibrator {
    /// A calibrator with the given half-life (samples), warm-up, short-term averaging and
    /// tail fraction (in (0, 0.5]).
    pub fn new(half_life: f64, min_samples: u64, averaging: usize, tail: f64) -> Self {
        Self {
            growth: 1.0 / (1.0 - alpha_of(half_life)),
            tail,
            min_samples,
            seen: 0,
            increment: 1.0,
            total: 0.0,
            top_bin: 0,
            fit: (LOG_MIN, MIN_TAIL_SCALE),
            fit_age: REFIT_EVERY,
            counts: vec![0.0; BINS],
            recent: vec![0.0; averaging.max(1)],
            recent_pos: 0,
            recent_len: 0,
        }
    }

    /// Number of values learned so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Whether the arrays have the expected sizes (checked after deserialization).
    pub(crate) fn is_consistent(&self) -> bool {
        self.counts.len() == BINS
            && self.top_bin < BINS
            && !self.recent.is_empty()
            && self.recent_pos < self.recent.len()
            && self.recent_len <= self.recent.len()
            && self.increment.is_finite()
            && self.total.is_finite()
    }

    fn bin_of(x: f64) -> usize {
        (((x - LOG_MIN) * BINS_PER_UNIT).max(0.0) as usize).min(BINS - 1)
    }

    /// Tail quantile `u` and mean excess `beta` of the history.
    fn tail_fit(&self) -> (f64, f64) {
        let want = self.tail * self.total;
        let mut mass = 0.0;
        let mut moment = 0.0;
        let mut u = LOG_MIN;
        for (b, &c) in self.counts[..=self.top_bin].iter().enumerate().rev() {
            if c <= 0.0 {
                continue;
            }
            let centre = LOG_MIN + (b as f64 + 0.5) * BIN_WIDTH;
            if mass + c >= want {
                // The quantile falls in this bin; values up to its upper edge are
                // not in the tail.
                u = centre + 0.5 * BIN_WIDTH;
                break;
            }
            mass += c;
            moment += c * centre;
        }
        let beta = if mass > 0.0 { moment / mass - u } else { 0.0 };
        (u, beta.max(MIN_TAIL_SCALE))
    }

    /// Returns the natural log of the tail probability of `raw` (<= 0), then learns it.
    /// Before `min_samples` values have been seen the result is 0 (p = 1).
    pub fn test_and_learn(&mut self, raw: f64) -> f64 {
        let raw = if raw.is_finite() { raw.max(0.0) } else { 0.0 };
        let x = (raw + RAW_FLOOR).ln();
        let avg = if self.recent.len() == 1 {
            x
        } else {
            self.recent[self.recent_pos] = x;
            self.recent_pos = (self.recent_pos + 1) % self.recent.len();
            self.recent_len = (self.recent_len + 1).min(self.recent.len());
            self.recent[..self.recent_len].iter().sum::<f64>() / self.recent_len as f64
        };

        let ln_p = if self.seen >= self.min_samples {
            if self.fit_age >= REFIT_EVERY {
                self.fit = self.tail_fit();
                self.fit_age = 0;
            }
            let (u, beta) = self.fit;
            if avg <= u {
                0.0
            } else {
                self.tail.ln() - (avg - u) / beta
            }
        } else {
            0.0
        };

        let bin = Self::bin_of(avg);
        self.counts[bin] += self.increment;
        self.top_bin = self.top_bin.max(bin);
        self.total += self.increment;
        self.increment *= self.growth;
        if self.increment > RESCALE_AT {
            let k = 1.0 / self.increment;
            self.counts.iter_mut().for_each(|c| *c *= k);
            self.total *= k;
            self.increment = 1.0;
        }
        self.fit_age = self.fit_age.saturating_add(1);
        self.seen += 1;
        ln_p
    }
}

/// Smoothing factor of an exponentially weighted average with the given half-life.
pub(crate) fn alpha_of(half_life: f64) -> f64 {
    1.0 - 0.5f64.powf(1.0 / half_life.max(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outlier_gets_a_small_p_value_after_warm_up() {
        let mut c = Calibrator::new(100.0, 20, 1, 0.02);
        for i in 0..200 {
            let raw = 1.0 + 0.1 * ((i % 7) as f64);
            let ln_p = c.test_and_learn(raw);
            assert!(ln_p > -10.0);
        }
        assert!(c.test_and_learn(1000.0) < -20.0);
    }

    #[test]
    fn constant_raw_values_never_look_extreme() {
        let mut c = Calibrator::new(50.0, 5, 3, 0.02);
        for _ in 0..1000 {
            assert_eq!(c.test_and_learn(0.0), 0.0);
        }
    }
}
