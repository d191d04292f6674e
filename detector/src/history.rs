//! Rolling history of accepted samples: the training window of the k-means models and
//! the source of the lagged input windows.
//!
//! A fixed-capacity ring of `capacity × n_features` values, plus for each row the length
//! of the contiguous run it ends (a gap restarts the run, so no input window spans a
//! gap). Memory: `capacity × (8 × n_features + 8)` bytes, allocated once.

use serde::{Deserialize, Serialize};

/// Ring buffer of the most recent samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct History {
    n_features: usize,
    capacity: usize,
    /// Row-major values; row `r` lives at `r * n_features`.
    values: Vec<f64>,
    runs: Vec<u64>,
    /// Timestamp (ms) of each row.
    #[serde(default)]
    stamps: Vec<u64>,
    /// Evidence (combined log p-value) the detector gave each row.
    #[serde(default)]
    evidence: Vec<f64>,
    /// Index of the slot the next row goes to.
    head: usize,
    len: usize,
}

impl History {
    pub(crate) fn new(n_features: usize, capacity: usize) -> Self {
        Self {
            n_features,
            capacity,
            values: vec![0.0; n_features * capacity],
            runs: vec![0; capacity],
            stamps: vec![0; capacity],
            evidence: vec![0.0; capacity],
            head: 0,
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Length of the contiguous run ending at the newest row (0 when empty).
    pub(crate) fn run(&self) -> u64 {
        if self.len == 0 {
            0
        } else {
            self.run_at(0)
        }
    }

    /// Appends a row; `restart` begins a new contiguous run.
    pub(crate) fn push(&mut self, row: &[f64], restart: bool, timestamp_ms: u64) {
        let run = if restart { 1 } else { self.run() + 1 };
        let at = self.head * self.n_features;
        self.values[at..at + self.n_features].copy_from_slice(row);
        self.runs[self.head] = run;
        self.stamps[self.head] = timestamp_ms;
        self.evidence[self.head] = 0.0;
        self.head = (self.head + 1) % self.capacity;
        self.len = (self.len + 1).min(self.capacity);
    }

    fn slot(&self, back: usize) -> usize {
        debug_assert!(back < self.len);
        (self.head + self.capacity - 1 - back) % self.capacity
    }

    /// Offset in [`History::values`] of the row `back` rows before the newest.
    pub(crate) fn row_offset(&self, back: usize) -> usize {
        self.slot(back) * self.n_features
    }

    /// All stored values, row-major (see [`History::row_offset`]).
    pub(crate) fn values(&self) -> &[f64] {
        &self.values
    }

    /// Value of feature `j`, `back` rows before the newest (0 = newest).
    #[cfg(test)]
    pub(crate) fn value(&self, back: usize, j: usize) -> f64 {
        self.values[self.slot(back) * self.n_features + j]
    }

    /// Records the evidence (log p-value, <= 0) of the newest row.
    pub(crate) fn set_newest_evidence(&mut self, ln_p: f64) {
        if self.len > 0 {
            let slot = self.slot(0);
            self.evidence[slot] = ln_p;
        }
    }

    /// Number of earlier periods (up to `periods`, at most 8, back) in which a row within
    /// `tolerance_ms` of the same phase as the newest row had evidence at least as strong
    /// as `bar`.
    pub(crate) fn periods_with_evidence(
        &self,
        bar: f64,
        period_ms: u64,
        periods: u64,
        tolerance_ms: u64,
    ) -> usize {
        if self.len == 0 || period_ms == 0 {
            return 0;
        }
        let now = self.stamps[self.slot(0)];
        let mut hit = [false; 8];
        let periods = periods.min(hit.len() as u64);
        for back in 1..self.len {
            let slot = self.slot(back);
            let age = now.saturating_sub(self.stamps[slot]);
            let k = (age + period_ms / 2) / period_ms;
            if k == 0 || k > periods || age.abs_diff(k * period_ms) > tolerance_ms {
                continue;
            }
            if self.evidence[slot] <= bar {
                hit[(k - 1) as usize] = true;
            }
        }
        hit.iter().filter(|h| **h).count()
    }

    /// Run length at the row `back` rows before the newest.
    pub(crate) fn run_at(&self, back: usize) -> u64 {
        self.runs[self.slot(back)]
    }

    /// Whether the structure is consistent (used after deserialization).
    pub(crate) fn is_consistent(&self, n_features: usize) -> bool {
        self.n_features == n_features
            && self.capacity > 0
            && self.values.len() == self.n_features * self.capacity
            && self.runs.len() == self.capacity
            && self.stamps.len() == self.capacity
            && self.evidence.len() == self.capacity
            && self.head < self.capacity
            && self.len <= self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_newest_rows_and_runs() {
        let mut h = History::new(2, 3);
        for i in 0..5 {
            h.push(&[i as f64, -(i as f64)], i == 3, i * 1000);
        }
        assert_eq!(h.len(), 3);
        assert_eq!(h.value(0, 0), 4.0);
        assert_eq!(h.value(2, 1), -2.0);
        assert_eq!(h.run_at(0), 2);
        assert_eq!(h.run_at(1), 1);
        assert_eq!(h.run_at(2), 3);
    }
}
