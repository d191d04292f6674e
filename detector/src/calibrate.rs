//! Score calibration: turns a raw nonconformity value (a distance, a z-score) into a
//! tail probability, so that scores of different models and metrics mean the same thing.
//!
//! A [`Calibrator`] models the logarithm of recent raw values as a Gaussian with
//! exponentially weighted mean and variance (the raw values of all our models are
//! positive and right-skewed, and roughly log-normal). The p-value of a new value is its
//! upper tail probability under that Gaussian, computed in log space so that it never
//! underflows. The value is tested against the state *before* it is learned (no
//! look-ahead), and its update is winsorized at four standard deviations so a single
//! outlier does not widen the distribution it is judged by.
//!
//! Cost: O(1) per value (plus `averaging` for the short-term mean), 64 + 8 × averaging
//! bytes of state.

use serde::{Deserialize, Serialize};

/// Offset added to raw values before taking the logarithm; raw values are in
/// standardized units, so this is far below any meaningful deviation.
const RAW_FLOOR: f64 = 1e-6;
/// Smallest standard deviation of the log-raw distribution. It keeps a nearly constant
/// history from turning tiny wiggles into alarms.
const MIN_LOG_STD: f64 = 0.25;
/// Winsorization of updates, in standard deviations.
const CLIP_SIGMAS: f64 = 4.0;

/// Streaming calibrator of one raw score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibrator {
    alpha: f64,
    min_samples: u64,
    seen: u64,
    mean: f64,
    var: f64,
    recent: Vec<f64>,
    recent_pos: usize,
    recent_len: usize,
}

impl Calibrator {
    /// A calibrator with the given half-life (samples), warm-up and short-term averaging.
    pub fn new(half_life: f64, min_samples: u64, averaging: usize) -> Self {
        Self {
            alpha: alpha_of(half_life),
            min_samples,
            seen: 0,
            mean: 0.0,
            var: 0.0,
            recent: vec![0.0; averaging.max(1)],
            recent_pos: 0,
            recent_len: 0,
        }
    }

    /// Number of values learned so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Returns the natural log of the upper tail probability of `raw` (<= 0), then
    /// learns it. Before `min_samples` values have been seen the result is 0 (p = 1).
    pub fn test_and_learn(&mut self, raw: f64) -> f64 {
        let raw = if raw.is_finite() { raw.max(0.0) } else { 0.0 };
        let x = (raw + RAW_FLOOR).ln();
        // Short-term mean of the log values.
        self.recent[self.recent_pos] = x;
        self.recent_pos = (self.recent_pos + 1) % self.recent.len();
        self.recent_len = (self.recent_len + 1).min(self.recent.len());
        let avg = self.recent[..self.recent_len].iter().sum::<f64>() / self.recent_len as f64;

        let std = self.var.sqrt().max(MIN_LOG_STD);
        let ln_p = if self.seen >= self.min_samples {
            // Averaging n values shrinks the spread by sqrt(n).
            let z = (avg - self.mean) / (std / (self.recent_len as f64).sqrt());
            ln_upper_tail(z)
        } else {
            0.0
        };

        if self.seen == 0 {
            self.mean = x;
            self.var = 0.0;
        } else {
            let a = self.alpha.max(1.0 / (self.seen as f64 + 1.0));
            let limit = CLIP_SIGMAS * std;
            let d = (x - self.mean).clamp(-limit, limit);
            self.mean += a * d;
            self.var = (1.0 - a) * (self.var + a * d * d);
        }
        self.seen += 1;
        ln_p
    }
}

/// Smoothing factor of an exponentially weighted average with the given half-life.
pub(crate) fn alpha_of(half_life: f64) -> f64 {
    1.0 - 0.5f64.powf(1.0 / half_life.max(1.0))
}

/// Natural log of the standard normal upper tail probability Q(z), accurate to ~1e-7
/// relative and free of underflow for any finite z.
pub(crate) fn ln_upper_tail(z: f64) -> f64 {
    if !z.is_finite() {
        return if z > 0.0 { -1e6 } else { 0.0 };
    }
    // Q(z) = erfc(z / sqrt 2) / 2
    let x = z / std::f64::consts::SQRT_2;
    if x < 0.0 {
        // erfc(x) = 2 - erfc(-x), in [1, 2]
        let v = 2.0 - ln_erfc_pos(-x).exp();
        return (v / 2.0).ln().min(0.0);
    }
    ln_erfc_pos(x) - std::f64::consts::LN_2
}

/// ln erfc(x) for x >= 0 (Chebyshev fit of Numerical Recipes `erfcc`).
fn ln_erfc_pos(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.5 * x);
    let poly = -1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    t.ln() - x * x + poly
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_tail_matches_known_values() {
        let cases = [
            (0.0, 0.5),
            (1.0, 0.158_655_25),
            (3.0, 1.349_898e-3),
            (-2.0, 0.977_249_87),
        ];
        for (z, q) in cases {
            let got = ln_upper_tail(z).exp();
            assert!((got - q).abs() / q < 1e-5, "Q({z}) = {got}, want {q}");
        }
        // Far tail: ln Q(40) ~ -804.6, no underflow to -inf.
        let far = ln_upper_tail(40.0);
        assert!(far.is_finite() && (far + 804.6).abs() < 0.5, "{far}");
    }

    #[test]
    fn outlier_gets_a_small_p_value_after_warm_up() {
        let mut c = Calibrator::new(100.0, 20, 1);
        for i in 0..200 {
            let raw = 1.0 + 0.1 * ((i % 7) as f64);
            let ln_p = c.test_and_learn(raw);
            assert!(ln_p > -10.0);
        }
        assert!(c.test_and_learn(1000.0) < -20.0);
    }

    #[test]
    fn constant_raw_values_never_look_extreme() {
        let mut c = Calibrator::new(50.0, 5, 3);
        for _ in 0..1000 {
            assert!(c.test_and_learn(0.0) > -1.0);
        }
    }
}
