//! The rules of a behaviour's evaluation, each a small state machine testable on its own:
//! comparison and set operators, `durationSeconds` windows, `consecutiveDatapointsToAlarm` /
//! `consecutiveDatapointsToClear`, and `statisticalThreshold` percentiles over a rolling history.
//!
//! A behaviour describes what is *normal*, as in Device Defender: `aws:all-bytes-out less-than
//! 1000` means up to 999 bytes is normal, and a datapoint of 1000 or more violates it;
//! `aws:listening-tcp-ports in-port-set [22, 443]` means every listening port must be 22 or 443.
//! An empty set always conforms.

use std::collections::VecDeque;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// `criteria.comparisonOperator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Operator {
    /// `less-than`
    LessThan,
    /// `less-than-equals`
    LessThanEquals,
    /// `greater-than`
    GreaterThan,
    /// `greater-than-equals`
    GreaterThanEquals,
    /// `in-cidr-set`
    InCidrSet,
    /// `not-in-cidr-set`
    NotInCidrSet,
    /// `in-port-set`
    InPortSet,
    /// `not-in-port-set`
    NotInPortSet,
    /// `in-set`
    InSet,
    /// `not-in-set`
    NotInSet,
}

impl Operator {
    /// Every operator, in Device Defender's order.
    pub const ALL: [Operator; 10] = [
        Operator::LessThan,
        Operator::LessThanEquals,
        Operator::GreaterThan,
        Operator::GreaterThanEquals,
        Operator::InCidrSet,
        Operator::NotInCidrSet,
        Operator::InPortSet,
        Operator::NotInPortSet,
        Operator::InSet,
        Operator::NotInSet,
    ];

    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Operator::LessThan => "less-than",
            Operator::LessThanEquals => "less-than-equals",
            Operator::GreaterThan => "greater-than",
            Operator::GreaterThanEquals => "greater-than-equals",
            Operator::InCidrSet => "in-cidr-set",
            Operator::NotInCidrSet => "not-in-cidr-set",
            Operator::InPortSet => "in-port-set",
            Operator::NotInPortSet => "not-in-port-set",
            Operator::InSet => "in-set",
            Operator::NotInSet => "not-in-set",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Operator> {
        Operator::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// True for the four numeric comparisons.
    pub const fn is_comparison(self) -> bool {
        matches!(
            self,
            Operator::LessThan
                | Operator::LessThanEquals
                | Operator::GreaterThan
                | Operator::GreaterThanEquals
        )
    }

    /// True for operators whose normal state is "every value inside the set".
    pub const fn requires_inside(self) -> bool {
        matches!(
            self,
            Operator::InCidrSet | Operator::InPortSet | Operator::InSet
        )
    }

    /// For a comparison operator: is `value` normal against `threshold`? NaN is never normal.
    pub fn conforms(self, value: f64, threshold: f64) -> bool {
        match self {
            Operator::LessThan => value < threshold,
            Operator::LessThanEquals => value <= threshold,
            Operator::GreaterThan => value > threshold,
            Operator::GreaterThanEquals => value >= threshold,
            _ => false,
        }
    }

    /// True when a larger value can only move a datapoint from conforming to violating (an upper
    /// bound: `less-than`, `less-than-equals`).
    pub const fn is_upper_bound(self) -> bool {
        matches!(self, Operator::LessThan | Operator::LessThanEquals)
    }
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Items of an observed set that break a set rule: with an `in-…` operator, those outside the
/// set; with a `not-in-…` operator, those inside it. An empty result conforms.
pub fn set_offenders<T: Copy>(
    observed: &[T],
    inside: impl Fn(T) -> bool,
    requires_inside: bool,
) -> Vec<T> {
    observed
        .iter()
        .copied()
        .filter(|&v| inside(v) != requires_inside)
        .collect()
}

/// An address block of `value.cidrs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n`, `v6/n`, or a bare address (a host block).
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("{s:?} is not a CIDR block: {a:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => {
                    return Err(format!(
                        "{s:?} is not a CIDR block: prefix length must be 0–{max}"
                    ))
                }
            },
        };
        Ok(Cidr { addr, prefix })
    }

    /// True when `ip` is inside the block. An IPv4-mapped IPv6 address matches IPv4 blocks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// `statisticalThreshold.statistic`: the percentile names Device Defender accepts.
pub const STATISTICS: &[(&str, f64)] = &[
    ("p0", 0.0),
    ("p0.1", 0.1),
    ("p0.01", 0.01),
    ("p1", 1.0),
    ("p10", 10.0),
    ("p50", 50.0),
    ("p90", 90.0),
    ("p99", 99.0),
    ("p99.9", 99.9),
    ("p99.99", 99.99),
    ("p100", 100.0),
];

/// The percentile (0–100) of a statistic name.
pub fn statistic_percentile(name: &str) -> Option<f64> {
    STATISTICS.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
}

/// What one datapoint did to a behaviour's alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// No change.
    None,
    /// The behaviour went into alarm.
    Raised,
    /// The alarm cleared.
    Cleared,
}

/// `consecutiveDatapointsToAlarm` / `consecutiveDatapointsToClear`.
///
/// Out of alarm, `to_alarm` violating datapoints in a row raise it; in alarm, `to_clear`
/// conforming datapoints in a row clear it. A tick without a datapoint (collector failure)
/// neither extends nor breaks a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmTracker {
    to_alarm: u8,
    to_clear: u8,
    run: u8,
    in_alarm: bool,
}

impl AlarmTracker {
    /// A tracker out of alarm. Zero counts are treated as 1.
    pub fn new(to_alarm: u8, to_clear: u8) -> AlarmTracker {
        AlarmTracker {
            to_alarm: to_alarm.max(1),
            to_clear: to_clear.max(1),
            run: 0,
            in_alarm: false,
        }
    }

    /// A tracker restored in alarm (after a restart).
    pub fn in_alarm(to_alarm: u8, to_clear: u8) -> AlarmTracker {
        AlarmTracker {
            in_alarm: true,
            ..AlarmTracker::new(to_alarm, to_clear)
        }
    }

    /// True while in alarm.
    pub fn is_in_alarm(&self) -> bool {
        self.in_alarm
    }

    /// Feeds one datapoint.
    pub fn push(&mut self, violating: bool) -> Transition {
        if violating != self.in_alarm {
            self.run = self.run.saturating_add(1);
            let needed = if self.in_alarm {
                self.to_clear
            } else {
                self.to_alarm
            };
            if self.run >= needed {
                self.in_alarm = violating;
                self.run = 0;
                return if violating {
                    Transition::Raised
                } else {
                    Transition::Cleared
                };
            }
        } else {
            self.run = 0;
        }
        Transition::None
    }
}

/// The trailing `durationSeconds` window of a counter metric.
///
/// Each entry is one tick's delta, covering `(at_ms - interval_ms, at_ms]`. The window sums the
/// entries lying mostly (more than half) inside `(now - duration, now]`, and always at least the
/// current tick. It is *covered* once its entries span the whole duration, within half a tick:
/// after a start or a collection gap it is partial, because missing ticks span nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct SumWindow {
    duration_ms: u64,
    entries: VecDeque<(u64, u64, f64)>,
}

/// Upper bound on window entries (one hour of 250 ms ticks); older entries are dropped first.
const MAX_WINDOW_ENTRIES: usize = 14_400;

impl SumWindow {
    /// An empty window.
    pub fn new(duration_ms: u64) -> SumWindow {
        SumWindow {
            duration_ms,
            entries: VecDeque::new(),
        }
    }

    /// Adds one tick's delta and returns `(sum, covered)`.
    pub fn push(&mut self, at_ms: u64, interval_ms: u64, value: f64) -> (f64, bool) {
        // A clock step backwards restarts the window rather than mixing timelines.
        if self.entries.back().is_some_and(|&(t, _, _)| t > at_ms) {
            self.entries.clear();
        }
        self.entries.push_back((at_ms, interval_ms, value));
        let start = at_ms.saturating_sub(self.duration_ms);
        while self.entries.len() > 1
            && (self.entries.len() > MAX_WINDOW_ENTRIES
                || self
                    .entries
                    .front()
                    .is_some_and(|&(t, iv, _)| t.saturating_sub(iv / 2) <= start))
        {
            self.entries.pop_front();
        }
        let sum = self.entries.iter().map(|e| e.2).sum();
        let spanned: u64 = self.entries.iter().map(|e| e.1).sum();
        let half_first = self.entries.front().map_or(0, |e| e.1 / 2);
        (sum, spanned + half_first >= self.duration_ms)
    }
}

/// Minimum history before a percentile threshold is trusted.
pub const MIN_PERCENTILE_HISTORY: usize = 30;
/// Capacity of a percentile history (12 hours of 10 s datapoints).
pub const PERCENTILE_HISTORY: usize = 4_320;

/// A rolling history of datapoints with nearest-rank percentiles.
///
/// The p-th percentile of N sorted values is the value of rank ⌈p/100 · N⌉ (at least 1): `p0`
/// is the minimum and `p100` the maximum. Insertion and eviction keep a sorted copy, so a
/// percentile is O(1) and an update O(N) memmove on at most [`PERCENTILE_HISTORY`] values.
#[derive(Debug, Clone, PartialEq)]
pub struct Percentiles {
    cap: usize,
    ring: VecDeque<f64>,
    sorted: Vec<f64>,
}

impl Percentiles {
    /// An empty history holding at most `cap` values.
    pub fn new(cap: usize) -> Percentiles {
        Percentiles {
            cap: cap.max(1),
            ring: VecDeque::new(),
            sorted: Vec::new(),
        }
    }

    /// Restores a history from its values in arrival order.
    pub fn from_values(cap: usize, values: &[f64]) -> Percentiles {
        let mut p = Percentiles::new(cap);
        for &v in values {
            p.push(v);
        }
        p
    }

    /// Values in arrival order.
    pub fn values(&self) -> impl Iterator<Item = f64> + '_ {
        self.ring.iter().copied()
    }

    /// Number of values held.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// Adds a value, evicting the oldest beyond capacity. Non-finite values are skipped.
    pub fn push(&mut self, v: f64) {
        if !v.is_finite() {
            return;
        }
        if self.ring.len() == self.cap {
            if let Some(old) = self.ring.pop_front() {
                let i = self.sorted.partition_point(|&x| x < old);
                if i < self.sorted.len() {
                    self.sorted.remove(i);
                }
            }
        }
        self.ring.push_back(v);
        let i = self.sorted.partition_point(|&x| x < v);
        self.sorted.insert(i, v);
    }

    /// The `p`-th percentile (0–100), `None` when empty.
    pub fn percentile(&self, p: f64) -> Option<f64> {
        let n = self.sorted.len();
        if n == 0 {
            return None;
        }
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        Some(self.sorted[rank.clamp(1, n) - 1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparison_operators_match_hand_computed_cases() {
        use Operator::*;
        // (operator, value, threshold, conforms)
        let cases = [
            (LessThan, 9.0, 10.0, true),
            (LessThan, 10.0, 10.0, false),
            (LessThan, 11.0, 10.0, false),
            (LessThanEquals, 10.0, 10.0, true),
            (LessThanEquals, 10.5, 10.0, false),
            (GreaterThan, 11.0, 10.0, true),
            (GreaterThan, 10.0, 10.0, false),
            (GreaterThanEquals, 10.0, 10.0, true),
            (GreaterThanEquals, 9.99, 10.0, false),
            (LessThan, f64::NAN, 10.0, false),
            (GreaterThan, f64::NAN, 10.0, false),
        ];
        for (op, v, t, want) in cases {
            assert_eq!(op.conforms(v, t), want, "{v} {op} {t}");
        }
        assert!(LessThan.is_upper_bound() && LessThanEquals.is_upper_bound());
        assert!(!GreaterThan.is_upper_bound());
    }

    #[test]
    fn operators_round_trip_their_wire_names() {
        for op in Operator::ALL {
            assert_eq!(Operator::parse(op.as_str()), Some(op));
            let json = serde_json::to_string(&op).unwrap();
            assert_eq!(json, format!("\"{}\"", op.as_str()));
        }
        assert_eq!(Operator::parse("lt"), None);
    }

    #[test]
    fn port_set_operators_name_the_offending_ports() {
        let allowed = [22u16, 443];
        let inside = |p: u16| allowed.contains(&p);
        let observed = [22u16, 443, 4444];
        assert_eq!(
            set_offenders(&observed, inside, Operator::InPortSet.requires_inside()),
            vec![4444]
        );
        assert_eq!(
            set_offenders(&observed, inside, Operator::NotInPortSet.requires_inside()),
            vec![22, 443]
        );
        assert!(set_offenders(&[22u16], inside, true).is_empty());
        assert!(set_offenders::<u16>(&[], inside, true).is_empty());
        assert!(set_offenders::<u16>(&[], inside, false).is_empty());
    }

    #[test]
    fn cidr_sets_match_v4_v6_and_mapped_addresses() {
        let net = Cidr::parse("192.0.2.0/24").unwrap();
        assert!(net.contains("192.0.2.77".parse().unwrap()));
        assert!(!net.contains("192.0.3.1".parse().unwrap()));
        assert!(net.contains("::ffff:192.0.2.9".parse().unwrap()));
        let host = Cidr::parse("203.0.113.10").unwrap();
        assert!(host.contains("203.0.113.10".parse().unwrap()));
        assert!(!host.contains("203.0.113.11".parse().unwrap()));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!(!all.contains("2001:db8::1".parse().unwrap()));
        let v6 = Cidr::parse("fd00:ee::/32").unwrap();
        assert!(v6.contains("fd00:ee:1::5".parse().unwrap()));
        assert!(!v6.contains("fd00:ef::5".parse().unwrap()));
        assert!(Cidr::parse("::/0")
            .unwrap()
            .contains("2001:db8::1".parse().unwrap()));
        assert!(Cidr::parse("192.0.2.0/33").unwrap_err().contains("0–32"));
        assert!(Cidr::parse("nonsense/8").is_err());
        let inside = |ip: IpAddr| net.contains(ip);
        let seen: Vec<IpAddr> = vec![
            "192.0.2.1".parse().unwrap(),
            "198.51.100.1".parse().unwrap(),
        ];
        assert_eq!(
            set_offenders(&seen, inside, Operator::InCidrSet.requires_inside()),
            vec!["198.51.100.1".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            set_offenders(&seen, inside, Operator::NotInCidrSet.requires_inside()),
            vec!["192.0.2.1".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn string_set_operators() {
        let set = ["sshd", "mosquitto"];
        let inside = |s: &str| set.contains(&s);
        let seen = ["sshd", "nc"];
        assert_eq!(
            set_offenders(&seen, inside, Operator::InSet.requires_inside()),
            vec!["nc"]
        );
        assert_eq!(
            set_offenders(&seen, inside, Operator::NotInSet.requires_inside()),
            vec!["sshd"]
        );
    }

    #[test]
    fn one_datapoint_alarms_and_clears_by_default() {
        let mut t = AlarmTracker::new(1, 1);
        assert_eq!(t.push(false), Transition::None);
        assert_eq!(t.push(true), Transition::Raised);
        assert_eq!(t.push(true), Transition::None);
        assert_eq!(t.push(false), Transition::Cleared);
        assert!(!t.is_in_alarm());
    }

    #[test]
    fn consecutive_datapoints_to_alarm_need_an_unbroken_run() {
        let mut t = AlarmTracker::new(3, 2);
        // V V N V V V: the normal datapoint resets the run; the alarm comes on the 6th.
        let seq = [true, true, false, true, true, true];
        let got: Vec<_> = seq.iter().map(|&v| t.push(v)).collect();
        assert_eq!(
            got,
            [
                Transition::None,
                Transition::None,
                Transition::None,
                Transition::None,
                Transition::None,
                Transition::Raised
            ]
        );
        // Clearing: N V N N: one normal, a violation breaks it, then two normals clear.
        let got: Vec<_> = [false, true, false, false]
            .iter()
            .map(|&v| t.push(v))
            .collect();
        assert_eq!(
            got,
            [
                Transition::None,
                Transition::None,
                Transition::None,
                Transition::Cleared
            ]
        );
    }

    #[test]
    fn restored_alarm_clears_after_the_clear_count() {
        let mut t = AlarmTracker::in_alarm(1, 3);
        assert_eq!(t.push(false), Transition::None);
        assert_eq!(t.push(false), Transition::None);
        assert_eq!(t.push(false), Transition::Cleared);
    }

    #[test]
    fn duration_window_sums_the_trailing_duration_and_reports_coverage() {
        // 30 s window, 10 s ticks.
        let mut w = SumWindow::new(30_000);
        assert_eq!(w.push(10_000, 10_000, 5.0), (5.0, false));
        assert_eq!(w.push(20_000, 10_000, 7.0), (12.0, false));
        assert_eq!(w.push(30_000, 10_000, 1.0), (13.0, true));
        // At 40 s the 10 s entry (covering 0–10 s) leaves the window.
        assert_eq!(w.push(40_000, 10_000, 2.0), (10.0, true));
        assert_eq!(w.push(50_000, 10_000, 0.0), (3.0, true));
        // A 40 s collection gap: the window is partial again.
        assert_eq!(w.push(90_000, 10_000, 4.0), (4.0, false));
        assert_eq!(w.push(100_000, 10_000, 4.0), (8.0, false));
        assert_eq!(w.push(110_000, 10_000, 4.0), (12.0, true));
        // Clock stepping backwards restarts the window.
        assert_eq!(w.push(60_000, 10_000, 1.0), (1.0, false));
        // Jittery ticks still cover the window.
        let mut w = SumWindow::new(30_000);
        w.push(10_005, 10_000, 1.0);
        w.push(20_010, 10_005, 1.0);
        assert_eq!(w.push(30_000, 9_990, 1.0), (3.0, true));
        // A duration shorter than the tick: the current tick alone.
        let mut w = SumWindow::new(5_000);
        assert_eq!(w.push(10_000, 10_000, 3.0), (3.0, true));
        assert_eq!(w.push(20_000, 10_000, 4.0), (4.0, true));
    }

    #[test]
    fn nearest_rank_percentiles_match_hand_computed_values() {
        // 1..=10 shuffled.
        let p = Percentiles::from_values(100, &[7.0, 3.0, 10.0, 1.0, 5.0, 9.0, 2.0, 8.0, 4.0, 6.0]);
        assert_eq!(p.percentile(0.0), Some(1.0));
        assert_eq!(p.percentile(0.1), Some(1.0)); // rank ceil(0.01) = 1
        assert_eq!(p.percentile(10.0), Some(1.0)); // rank 1
        assert_eq!(p.percentile(50.0), Some(5.0)); // rank 5
        assert_eq!(p.percentile(90.0), Some(9.0)); // rank 9
        assert_eq!(p.percentile(99.0), Some(10.0)); // rank ceil(9.9) = 10
        assert_eq!(p.percentile(100.0), Some(10.0));
        assert_eq!(Percentiles::new(4).percentile(50.0), None);
    }

    #[test]
    fn percentile_history_evicts_oldest_beyond_capacity() {
        let mut p = Percentiles::from_values(3, &[100.0, 1.0, 2.0]);
        assert_eq!(p.percentile(100.0), Some(100.0));
        p.push(3.0); // evicts 100
        assert_eq!(p.values().collect::<Vec<_>>(), vec![1.0, 2.0, 3.0]);
        assert_eq!(p.percentile(100.0), Some(3.0));
        assert_eq!(p.percentile(50.0), Some(2.0)); // rank ceil(1.5) = 2
        p.push(f64::NAN);
        assert_eq!(p.len(), 3);
    }

    #[test]
    fn statistic_names_are_devices_defenders() {
        assert_eq!(statistic_percentile("p99.9"), Some(99.9));
        assert_eq!(statistic_percentile("p0.01"), Some(0.01));
        assert_eq!(statistic_percentile("p95"), None);
        assert_eq!(STATISTICS.len(), 11);
    }

    proptest::proptest! {
        #[test]
        fn percentile_equals_a_sort_of_the_history(vals in proptest::collection::vec(-1e6f64..1e6, 1..200), cap in 1usize..64, p in 0.0f64..100.0) {
            let h = Percentiles::from_values(cap, &vals);
            let mut tail: Vec<f64> = vals[vals.len().saturating_sub(cap)..].to_vec();
            tail.sort_by(f64::total_cmp);
            let rank = ((p / 100.0) * tail.len() as f64).ceil() as usize;
            proptest::prop_assert_eq!(h.percentile(p), Some(tail[rank.clamp(1, tail.len()) - 1]));
        }
    }
}
