//! Set novelty: learns which discrete items (listening ports, remote addresses, process
//! names) are normal during a baseline period and flags items never seen before.
//!
//! A z-score on a count says little about discrete events: one new listening port is
//! the signal, whatever the number of ports. [`SetNovelty`] keeps the set of items seen
//! during its baseline (the first `baseline_ms` after the first observation) and, once
//! armed, reports every item outside it as [`Novelty::Novel`]. With `learn_novel`, a
//! novel item is added to the set after being reported, so it alarms once.
//!
//! Memory is bounded by `max_items`: when the set is full, the least recently seen item
//! is evicted (and counted in [`SetNovelty::evicted`]). Cost: `O(log n)` per item, plus
//! `O(n)` on an eviction.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Raw parameters of a [`SetNovelty`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SetNoveltyParams {
    /// Length of the baseline period, from the first observation, in milliseconds.
    pub baseline_ms: u64,
    /// Largest number of items remembered, in 1..=1_000_000.
    pub max_items: usize,
    /// Whether a novel item joins the set once reported (it then alarms only once).
    pub learn_novel: bool,
    /// Largest item length in bytes, in 1..=4096; longer items are truncated (at a
    /// character boundary) before lookup.
    pub max_item_len: usize,
}

impl Default for SetNoveltyParams {
    fn default() -> Self {
        Self {
            baseline_ms: 24 * 3600 * 1000,
            max_items: 4096,
            learn_novel: true,
            max_item_len: 256,
        }
    }
}

impl SetNoveltyParams {
    /// Checks the parameters.
    pub fn validate(self) -> Result<SetNoveltyValidParams, SetNoveltyParamsError> {
        if !(1..=1_000_000).contains(&self.max_items) {
            return Err(SetNoveltyParamsError::MaxItems(self.max_items));
        }
        if !(1..=4096).contains(&self.max_item_len) {
            return Err(SetNoveltyParamsError::MaxItemLen(self.max_item_len));
        }
        Ok(SetNoveltyValidParams(self))
    }
}

/// Parameters that passed [`SetNoveltyParams::validate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "SetNoveltyParams", into = "SetNoveltyParams")]
pub struct SetNoveltyValidParams(SetNoveltyParams);

impl SetNoveltyValidParams {
    /// The checked parameters.
    pub fn get(&self) -> &SetNoveltyParams {
        &self.0
    }
}

impl TryFrom<SetNoveltyParams> for SetNoveltyValidParams {
    type Error = SetNoveltyParamsError;
    fn try_from(p: SetNoveltyParams) -> Result<Self, Self::Error> {
        p.validate()
    }
}

impl From<SetNoveltyValidParams> for SetNoveltyParams {
    fn from(p: SetNoveltyValidParams) -> Self {
        p.0
    }
}

/// A [`SetNoveltyParams`] field broke its rule.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SetNoveltyParamsError {
    /// `max_items` out of range.
    #[error("max_items must be in 1..=1000000, got {0}")]
    MaxItems(usize),
    /// `max_item_len` out of range.
    #[error("max_item_len must be in 1..=4096, got {0}")]
    MaxItemLen(usize),
}

/// What [`SetNovelty::observe`] concluded about one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Novelty {
    /// Still in the baseline period; the item was learned.
    Learning,
    /// The item is in the learned set.
    Known,
    /// The item was never seen (or was evicted long ago): an alarm.
    Novel,
}

impl Novelty {
    /// Whether this is an alarm.
    pub fn is_novel(self) -> bool {
        self == Novelty::Novel
    }

    /// The item's anomaly score on the detector scale: 1 for a novel item, else 0.
    pub fn score(self) -> f64 {
        if self.is_novel() {
            1.0
        } else {
            0.0
        }
    }
}

/// Novelty detector over a set of strings. Serializable (learned state included).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetNovelty {
    params: SetNoveltyValidParams,
    started_ms: Option<u64>,
    /// Item → last time it was seen (ms).
    items: BTreeMap<String, u64>,
    evicted: u64,
    novel: u64,
}

impl SetNovelty {
    /// A novelty detector with no learned item.
    pub fn new(params: SetNoveltyParams) -> Result<Self, SetNoveltyParamsError> {
        Ok(Self {
            params: params.validate()?,
            started_ms: None,
            items: BTreeMap::new(),
            evicted: 0,
            novel: 0,
        })
    }

    /// Whether the baseline period is still running at `now_ms` (true before any item).
    pub fn is_learning(&self, now_ms: u64) -> bool {
        match self.started_ms {
            None => true,
            Some(start) => now_ms.saturating_sub(start) < self.params.get().baseline_ms,
        }
    }

    /// Number of items remembered.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether no item is remembered.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Items evicted to respect `max_items`.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Novel items reported so far.
    pub fn novel_count(&self) -> u64 {
        self.novel
    }

    /// Whether `item` is in the learned set (no side effect).
    pub fn contains(&self, item: &str) -> bool {
        self.items.contains_key(self.truncate(item))
    }

    fn truncate<'a>(&self, item: &'a str) -> &'a str {
        let max = self.params.get().max_item_len;
        if item.len() <= max {
            return item;
        }
        let mut end = max;
        while !item.is_char_boundary(end) {
            end -= 1;
        }
        &item[..end]
    }

    /// Observes one item at `now_ms` and says whether it is novel.
    pub fn observe(&mut self, now_ms: u64, item: &str) -> Novelty {
        let start = *self.started_ms.get_or_insert(now_ms);
        let learning = now_ms.saturating_sub(start) < self.params.get().baseline_ms;
        let key = self.truncate(item);
        if let Some(last) = self.items.get_mut(key) {
            *last = (*last).max(now_ms);
            return if learning {
                Novelty::Learning
            } else {
                Novelty::Known
            };
        }
        if learning || self.params.get().learn_novel {
            self.insert(key.to_owned(), now_ms);
        }
        if learning {
            Novelty::Learning
        } else {
            self.novel += 1;
            Novelty::Novel
        }
    }

    fn insert(&mut self, key: String, now_ms: u64) {
        if self.items.len() >= self.params.get().max_items {
            let oldest = self
                .items
                .iter()
                .min_by_key(|(k, &t)| (t, (*k).clone()))
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.items.remove(&k);
                self.evicted += 1;
            }
        }
        self.items.insert(key, now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(baseline_ms: u64, max_items: usize) -> SetNoveltyParams {
        SetNoveltyParams {
            baseline_ms,
            max_items,
            ..SetNoveltyParams::default()
        }
    }

    #[test]
    fn items_seen_in_the_baseline_are_known_and_new_ones_novel() {
        let mut s = SetNovelty::new(params(1000, 16)).expect("valid params");
        assert_eq!(s.observe(0, "22/tcp"), Novelty::Learning);
        assert_eq!(s.observe(500, "443/tcp"), Novelty::Learning);
        assert!(s.is_learning(999));
        assert!(!s.is_learning(1000));
        assert_eq!(s.observe(2000, "22/tcp"), Novelty::Known);
        assert_eq!(s.observe(2001, "4444/tcp"), Novelty::Novel);
        // learned after being reported once
        assert_eq!(s.observe(2002, "4444/tcp"), Novelty::Known);
        assert_eq!(s.novel_count(), 1);
    }

    #[test]
    fn memory_is_capped_and_evictions_counted() {
        let mut s = SetNovelty::new(params(10_000, 3)).expect("valid params");
        for (t, item) in ["a", "b", "c", "d"].iter().enumerate() {
            s.observe(t as u64, item);
        }
        assert_eq!(s.len(), 3);
        assert_eq!(s.evicted(), 1);
        assert!(!s.contains("a"), "least recently seen goes first");
    }

    #[test]
    fn long_items_are_truncated_on_a_char_boundary() {
        let mut p = params(0, 8);
        p.max_item_len = 4;
        let mut s = SetNovelty::new(p).expect("valid params");
        assert_eq!(s.observe(0, "ééé"), Novelty::Novel);
        assert!(s.contains("éé"));
    }

    #[test]
    fn invalid_params_are_refused() {
        assert_eq!(
            SetNovelty::new(params(0, 0)).err(),
            Some(SetNoveltyParamsError::MaxItems(0))
        );
    }

    #[test]
    fn round_trip_keeps_the_learned_set() {
        let mut s = SetNovelty::new(params(10, 8)).expect("valid params");
        s.observe(0, "sshd");
        let json = serde_json::to_string(&s).expect("serialize");
        let mut back: SetNovelty = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, s);
        assert_eq!(back.observe(100, "sshd"), Novelty::Known);
        assert_eq!(back.observe(100, "nc"), Novelty::Novel);
    }
}
