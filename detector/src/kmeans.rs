//! Multivariate model: k-means (linfa) on windows of differenced, lagged, standardized
//! features, trained on a rolling history and retrained off the scoring path.
//!
//! # Input window
//! For every feature `j` and sample `t`, the window holds `lags` smoothed differences
//! `(x[t-l] - x[t-l-s]) / s` for `l = 0..lags` (`s = smoothing`, i.e. the mean of `s`
//! consecutive first differences) and the level `x[t]`. Differences capture the shape of
//! the recent trajectory whatever its level; the level (weighted by `level_weight`)
//! catches values never seen in training. Each dimension is standardized with the mean
//! and standard deviation of the training set, stored in the model.
//!
//! # Score
//! The raw score of a window is the root-mean-square distance to the nearest centroid,
//! minimised over every model kept: a pattern close to anything learned in the last
//! `max_models` trainings is normal, which suppresses alarms on patterns that recur less
//! often than one training window. The per-feature split of the squared distance to the
//! nearest centroid is the explanation.
//!
//! # Cost
//! Scoring: `O(models × clusters × window_dim)` flops, no allocation. Training:
//! `O(iterations × vectors × clusters × window_dim)`. State: a model holds
//! `(clusters + 2) × window_dim` floats.

use linfa::traits::Fit;
use linfa::DatasetBase;
use linfa_clustering::KMeans;
use ndarray::Array2;
use rand_xoshiro::rand_core::SeedableRng;
use rand_xoshiro::Xoshiro256Plus;
use serde::{Deserialize, Serialize};

use crate::history::History;
use crate::params::{DetectorValidParams, MAX_LAGS};

/// Largest absolute value of one standardized dimension; bounds the distances of
/// arbitrarily large inputs.
const MAX_STD_VALUE: f64 = 1e6;
/// Standard deviations below this (relative to the dimension's magnitude) count as zero:
/// a dimension that was constant in training is ignored by the model.
const REL_STD_FLOOR: f64 = 1e-12;

/// Fills `out` (length `n_features * (lags + 1)`) with the raw input window ending at the
/// newest sample of `history`. The caller guarantees `history.run() >= lags + smoothing`.
pub(crate) fn window_at(
    history: &History,
    back: usize,
    lags: usize,
    smoothing: usize,
    out: &mut [f64],
) {
    let width = lags + 1;
    let s = smoothing as f64;
    // Row offsets of the samples the window reads: back .. back + lags + smoothing - 1.
    let mut rows = [0usize; 2 * MAX_LAGS];
    for (k, r) in rows.iter_mut().enumerate().take(lags + smoothing) {
        *r = history.row_offset(back + k);
    }
    let values = history.values();
    for (j, dims) in out.chunks_exact_mut(width).enumerate() {
        for (l, d) in dims[..lags].iter_mut().enumerate() {
            *d = (values[rows[l] + j] - values[rows[l + smoothing] + j]) / s;
        }
        dims[lags] = values[rows[0] + j];
    }
}

/// Squared Euclidean distance, with four independent accumulators so the loop vectorizes
/// (the summation order is fixed, so results are reproducible), abandoned as soon as the
/// partial sum exceeds `bound`: `None` then. The partial sums only grow, so the nearest
/// centroid and its distance are exactly those of the full computation; a nearest-centroid
/// search skips most of the work this way.
fn squared_distance_within(a: &[f64], b: &[f64], bound: f64) -> Option<f64> {
    /// Dimensions between two checks of the bound.
    const BLOCK: usize = 32;
    let mut acc = [0.0f64; 4];
    let (a4, a_rest) = a.split_at(a.len() - a.len() % 4);
    let (b4, b_rest) = b.split_at(a4.len());
    for (xb, yb) in a4.chunks(BLOCK).zip(b4.chunks(BLOCK)) {
        for (x, y) in xb.chunks_exact(4).zip(yb.chunks_exact(4)) {
            for k in 0..4 {
                let d = x[k] - y[k];
                acc[k] += d * d;
            }
        }
        if (acc[0] + acc[1]) + (acc[2] + acc[3]) > bound {
            return None;
        }
    }
    let mut tail = 0.0;
    for (x, y) in a_rest.iter().zip(b_rest) {
        tail += (x - y) * (x - y);
    }
    Some((acc[0] + acc[1]) + (acc[2] + acc[3]) + tail)
}

/// A fitted k-means model over input windows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LagModel {
    dim: usize,
    width: usize,
    centroids: Vec<f64>,
    mean: Vec<f64>,
    scale: Vec<f64>,
    trained_on: usize,
    trained_at_sample: u64,
}

impl LagModel {
    /// Number of centroids.
    pub fn n_clusters(&self) -> usize {
        self.centroids.len() / self.dim.max(1)
    }

    /// Width of the input window this model scores.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of windows the model was trained on.
    pub fn trained_on(&self) -> usize {
        self.trained_on
    }

    /// Sample count of the detector when the training snapshot was taken.
    pub fn trained_at_sample(&self) -> u64 {
        self.trained_at_sample
    }

    /// Whether the model's arrays agree with each other (checked after deserialization
    /// and before installation).
    pub fn is_consistent(&self) -> bool {
        self.dim > 0
            && self.width > 0
            && self.dim.is_multiple_of(self.width)
            && !self.centroids.is_empty()
            && self.centroids.len().is_multiple_of(self.dim)
            && self.mean.len() == self.dim
            && self.scale.len() == self.dim
            && self
                .centroids
                .iter()
                .chain(&self.mean)
                .chain(&self.scale)
                .all(|v| v.is_finite())
    }

    /// Standardizes `window` into `scratch` and returns the squared distance to the
    /// nearest centroid and that centroid's index.
    pub(crate) fn nearest(&self, window: &[f64], scratch: &mut [f64]) -> (f64, usize) {
        self.nearest_within(window, scratch, f64::INFINITY)
    }

    /// [`LagModel::nearest`] among the centroids closer than `bound` (squared); returns
    /// `(f64::INFINITY, 0)` when none is. `scratch` holds the standardized window after.
    pub(crate) fn nearest_within(
        &self,
        window: &[f64],
        scratch: &mut [f64],
        bound: f64,
    ) -> (f64, usize) {
        for (((u, &v), &m), &s) in scratch
            .iter_mut()
            .zip(window)
            .zip(&self.mean)
            .zip(&self.scale)
        {
            *u = ((v - m) * s).clamp(-MAX_STD_VALUE, MAX_STD_VALUE);
        }
        let mut best = (f64::INFINITY, 0);
        let mut limit = bound;
        for (c, centroid) in self.centroids.chunks_exact(self.dim).enumerate() {
            if let Some(d2) = squared_distance_within(scratch, centroid, limit) {
                if d2 < best.0 {
                    best = (d2, c);
                    limit = limit.min(d2);
                }
            }
        }
        best
    }

    /// Adds the squared distance of the standardized window in `scratch` to centroid `c`
    /// to `per_feature`, feature by feature.
    pub(crate) fn contributions(&self, scratch: &[f64], c: usize, per_feature: &mut [f64]) {
        let centroid = &self.centroids[c * self.dim..(c + 1) * self.dim];
        for ((f, u), m) in per_feature
            .iter_mut()
            .zip(scratch.chunks_exact(self.width))
            .zip(centroid.chunks_exact(self.width))
        {
            *f += u.iter().zip(m).map(|(a, b)| (a - b) * (a - b)).sum::<f64>();
        }
    }
}

/// Owned copy of the training windows, taken by
/// [`Detector::train_snapshot`](crate::Detector::train_snapshot). `Send`, so it can be
/// fitted on another thread while the detector keeps scoring.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingSet {
    dim: usize,
    width: usize,
    lags: usize,
    level_weight: f64,
    clusters: usize,
    max_iterations: u64,
    seed: u64,
    taken_at_sample: u64,
    windows: Vec<f64>,
}

impl TrainingSet {
    /// Builds the training windows from the history (subsampled with a fixed stride to at
    /// most `max_train_vectors`).
    pub(crate) fn from_history(
        params: &DetectorValidParams,
        history: &History,
        taken_at_sample: u64,
    ) -> Self {
        let p = params.get();
        let dim = params.window_dim();
        let span = params.window_span();
        let usable: Vec<usize> = (0..history.len())
            .filter(|&back| back + span <= history.len() && history.run_at(back) >= span as u64)
            .collect();
        let stride = usable.len().div_ceil(p.max_train_vectors.max(1)).max(1);
        let mut windows = Vec::with_capacity(dim * usable.len().div_ceil(stride));
        let mut buf = vec![0.0; dim];
        for (i, &back) in usable.iter().enumerate() {
            if i % stride != 0 {
                continue;
            }
            window_at(history, back, p.lags, p.smoothing, &mut buf);
            windows.extend_from_slice(&buf);
        }
        Self {
            dim,
            width: p.lags + 1,
            lags: p.lags,
            level_weight: p.level_weight,
            clusters: p.clusters,
            max_iterations: p.max_iterations,
            seed: p.seed,
            taken_at_sample,
            windows,
        }
    }

    /// Number of windows in the set.
    pub fn len(&self) -> usize {
        self.windows.len() / self.dim.max(1)
    }

    /// Whether the set holds no window.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// Fits a k-means model. CPU-bound (see the module documentation for its cost); run
    /// it off the scoring path and hand the result to
    /// [`Detector::install`](crate::Detector::install).
    pub fn fit(&self) -> Result<LagModel, TrainError> {
        let n = self.len();
        if n < self.clusters.max(2) {
            return Err(TrainError::TooFewWindows {
                got: n,
                need: self.clusters.max(2),
            });
        }
        let dim = self.dim;
        let mut mean = vec![0.0; dim];
        for row in self.windows.chunks_exact(dim) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += v;
            }
        }
        for m in &mut mean {
            *m /= n as f64;
        }
        let mut var = vec![0.0; dim];
        for row in self.windows.chunks_exact(dim) {
            for ((s, &v), &m) in var.iter_mut().zip(row).zip(&mean) {
                *s += (v - m) * (v - m);
            }
        }
        let scale: Vec<f64> = var
            .iter()
            .zip(&mean)
            .enumerate()
            .map(|(d, (&s, &m))| {
                let std = (s / n as f64).sqrt();
                let weight = if d % self.width == self.lags {
                    self.level_weight
                } else {
                    1.0
                };
                if std > REL_STD_FLOOR * (m.abs() + REL_STD_FLOOR) {
                    weight / std
                } else {
                    0.0
                }
            })
            .collect();
        let mut data = Array2::<f64>::zeros((n, dim));
        for (mut out, row) in data
            .rows_mut()
            .into_iter()
            .zip(self.windows.chunks_exact(dim))
        {
            for ((o, &v), (&m, &s)) in out.iter_mut().zip(row).zip(mean.iter().zip(&scale)) {
                *o = ((v - m) * s).clamp(-MAX_STD_VALUE, MAX_STD_VALUE);
            }
        }
        let total_var: f64 = data.iter().map(|v| v * v).sum();
        let centroids = if total_var <= 1e-18 {
            // Every window is the same point: one centroid at the origin.
            vec![0.0; dim]
        } else {
            let rng = Xoshiro256Plus::seed_from_u64(self.seed);
            let model = KMeans::params_with_rng(self.clusters, rng)
                .n_runs(1)
                .max_n_iterations(self.max_iterations)
                .tolerance(1e-4)
                .fit(&DatasetBase::from(data))
                .map_err(|e| TrainError::KMeans(e.to_string()))?;
            let mut centroids = Vec::with_capacity(self.clusters * dim);
            for row in model.centroids().rows() {
                if row.iter().all(|v| v.is_finite()) {
                    centroids.extend(row.iter().copied());
                }
            }
            if centroids.is_empty() {
                return Err(TrainError::KMeans("no finite centroid".to_owned()));
            }
            centroids
        };
        Ok(LagModel {
            dim,
            width: self.width,
            centroids,
            mean,
            scale,
            trained_on: n,
            trained_at_sample: self.taken_at_sample,
        })
    }
}

/// Training failed; the detector keeps its current models.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// Not enough usable windows in the history yet.
    #[error("training needs at least {need} windows, got {got}")]
    TooFewWindows {
        /// Windows available.
        got: usize,
        /// Windows needed.
        need: usize,
    },
    /// The k-means fit failed.
    #[error("k-means fit failed: {0}")]
    KMeans(String),
    /// The model was trained for another window shape than the detector's.
    #[error("model window width {got} does not match the detector's {want}")]
    ShapeMismatch {
        /// Width of the model.
        got: usize,
        /// Width the detector needs.
        want: usize,
    },
}
