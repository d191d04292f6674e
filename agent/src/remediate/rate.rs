//! Per-action rate limits: at most `max_per_hour` attempts of one action in any sliding hour.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::config::RemediationAction;

/// The sliding window.
pub const WINDOW: Duration = Duration::from_secs(3600);

/// Attempt times per action, at most `max_per_hour` of them each.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    limits: BTreeMap<RemediationAction, u32>,
    recent: BTreeMap<RemediationAction, VecDeque<Instant>>,
}

impl RateLimiter {
    /// A limiter with these limits (an action without one is never allowed).
    pub fn new(limits: BTreeMap<RemediationAction, u32>) -> RateLimiter {
        RateLimiter {
            limits,
            recent: BTreeMap::new(),
        }
    }

    /// Takes one attempt of `action` at `now` if the window has room; false when rate-limited.
    pub fn allow(&mut self, action: RemediationAction, now: Instant) -> bool {
        let limit = self.limits.get(&action).copied().unwrap_or(0) as usize;
        let q = self.recent.entry(action).or_default();
        while q
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= WINDOW)
        {
            q.pop_front();
        }
        if q.len() >= limit {
            return false;
        }
        q.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_the_limit_per_sliding_hour_per_action() {
        let mut r = RateLimiter::new(
            [
                (RemediationAction::Hook, 3),
                (RemediationAction::Publish, 1),
            ]
            .into_iter()
            .collect(),
        );
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(r.allow(RemediationAction::Hook, at(0)));
        assert!(r.allow(RemediationAction::Hook, at(10)));
        assert!(r.allow(RemediationAction::Hook, at(20)));
        assert!(!r.allow(RemediationAction::Hook, at(30)));
        // Another action has its own budget.
        assert!(r.allow(RemediationAction::Publish, at(30)));
        assert!(!r.allow(RemediationAction::Publish, at(40)));
        // No configured limit: never.
        assert!(!r.allow(RemediationAction::BlockSource, at(40)));
        // The first attempt leaves the window after an hour: one more is allowed.
        assert!(!r.allow(RemediationAction::Hook, at(3599)));
        assert!(r.allow(RemediationAction::Hook, at(3600)));
        assert!(!r.allow(RemediationAction::Hook, at(3601)));
        assert!(r.allow(RemediationAction::Hook, at(3610)));
    }
}
