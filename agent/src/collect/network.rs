//! Per-interface traffic from `/proc/net/dev`, turned into per-interval deltas.
//!
//! ```text
//! Inter-|   Receive                                                |  Transmit
//!  face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets …
//!   eth0: 102821280    5769    0    0    0     0          0         0   402180    3284 …
//! ```
//!
//! Counters are 64-bit. When any counter of an interface goes down (interface re-created, driver
//! reset, a 32-bit counter wrapping) that interface contributes **zero** for the interval and is
//! re-baselined: a reset never produces a negative or huge delta. An interface seen for the first
//! time is baselined the same way, so one that appears between two samples adds nothing until
//! the next interval; one that disappears simply stops contributing.

use std::collections::HashMap;

use crate::snapshot::NetDelta;

use super::text::{dec_u64, fields, lines, trim};

/// Cumulative counters of one interface.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IfCounters {
    /// Received bytes.
    pub rx_bytes: u64,
    /// Received packets.
    pub rx_packets: u64,
    /// Transmitted bytes.
    pub tx_bytes: u64,
    /// Transmitted packets.
    pub tx_packets: u64,
}

/// Parses `/proc/net/dev`, calling `each(name, counters)` per interface. Returns the number of
/// malformed lines skipped.
pub fn parse_net_dev(data: &[u8], mut each: impl FnMut(&str, IfCounters)) -> u64 {
    let mut skipped = 0;
    for line in lines(data) {
        let t = trim(line);
        // The two header lines are the only ones with '|'.
        if t.is_empty() || t.contains(&b'|') {
            continue;
        }
        match parse_dev_line(t) {
            Some((name, c)) => each(name, c),
            None => skipped += 1,
        }
    }
    skipped
}

fn parse_dev_line(t: &[u8]) -> Option<(&str, IfCounters)> {
    // Interface names cannot contain ':'; the numbers may follow it without a space.
    let colon = t.iter().position(|&b| b == b':')?;
    let name = std::str::from_utf8(trim(&t[..colon])).ok()?;
    if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace()) {
        return None;
    }
    let mut v = [0u64; 16];
    let mut n = 0;
    for f in fields(&t[colon + 1..]) {
        if n == v.len() {
            return None;
        }
        v[n] = dec_u64(f)?;
        n += 1;
    }
    if n != 16 {
        return None;
    }
    Some((
        name,
        IfCounters {
            rx_bytes: v[0],
            rx_packets: v[1],
            tx_bytes: v[8],
            tx_packets: v[9],
        },
    ))
}

/// Which interfaces count towards traffic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IfFilter {
    include: Vec<String>,
    exclude: Vec<String>,
    include_loopback: bool,
}

impl IfFilter {
    /// Patterns are exact names, or a prefix followed by `*` (`"wlan*"`). An empty `include`
    /// means every interface. `lo` is excluded unless `include_loopback` or `include` names it.
    pub fn new(include: &[String], exclude: &[String], include_loopback: bool) -> IfFilter {
        IfFilter {
            include: include.to_vec(),
            exclude: exclude.to_vec(),
            include_loopback,
        }
    }

    /// True when traffic of `name` is counted.
    pub fn admits(&self, name: &str) -> bool {
        let named = self.include.iter().any(|p| matches(p, name));
        if self.exclude.iter().any(|p| matches(p, name)) {
            return false;
        }
        if name == super::interfaces::LOOPBACK && !self.include_loopback {
            return self.include.iter().any(|p| p == name);
        }
        self.include.is_empty() || named
    }
}

fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

#[derive(Debug, Clone, Copy)]
struct Prev {
    counters: IfCounters,
    /// Tick at which the interface was last seen; older entries are dropped.
    seen: u64,
}

/// Previous counters per interface, and the delta logic.
#[derive(Debug, Default)]
pub struct NetState {
    prev: HashMap<String, Prev>,
    tick: u64,
    resets: u64,
}

impl NetState {
    /// Counter resets seen so far (an interface's counter went down).
    pub fn resets(&self) -> u64 {
        self.resets
    }

    /// Folds one `/proc/net/dev` read into the interval's delta over the admitted interfaces.
    /// Returns the delta and the number of malformed lines skipped.
    pub fn update(&mut self, data: &[u8], filter: &IfFilter) -> (NetDelta, u64) {
        self.tick += 1;
        let tick = self.tick;
        let mut total = NetDelta::default();
        let mut resets = 0;
        let skipped = parse_net_dev(data, |name, cur| {
            if !filter.admits(name) {
                return;
            }
            match self.prev.get_mut(name) {
                Some(p) => {
                    let d = (
                        cur.rx_bytes.checked_sub(p.counters.rx_bytes),
                        cur.tx_bytes.checked_sub(p.counters.tx_bytes),
                        cur.rx_packets.checked_sub(p.counters.rx_packets),
                        cur.tx_packets.checked_sub(p.counters.tx_packets),
                    );
                    match d {
                        (Some(bi), Some(bo), Some(pi), Some(po)) => total.add(&NetDelta {
                            bytes_in: bi,
                            bytes_out: bo,
                            packets_in: pi,
                            packets_out: po,
                        }),
                        _ => {
                            resets += 1;
                            tracing::debug!(
                                interface = name,
                                "Interface counter went down; counting zero for this interval."
                            );
                        }
                    }
                    *p = Prev {
                        counters: cur,
                        seen: tick,
                    };
                }
                None => {
                    self.prev.insert(
                        name.to_owned(),
                        Prev {
                            counters: cur,
                            seen: tick,
                        },
                    );
                }
            }
        });
        self.resets += resets;
        if self.prev.values().any(|p| p.seen != tick) {
            self.prev.retain(|_, p| p.seen == tick);
        }
        (total, skipped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n";

    fn dev(rows: &[(&str, u64, u64, u64, u64)]) -> Vec<u8> {
        let mut s = HEADER.to_owned();
        for (n, rb, rp, tb, tp) in rows {
            s += &format!("  {n}: {rb} {rp} 0 0 0 0 0 0 {tb} {tp} 0 0 0 0 0 0\n");
        }
        s.into_bytes()
    }

    #[test]
    fn parses_names_glued_to_numbers_and_counts_bad_lines() {
        let data = b"Inter-| x\n face |y\n  eth0:123 4 0 0 0 0 0 0 567 8 0 0 0 0 0 0\nbroken line\n  wlan0: 1 2 3\n";
        let mut v = Vec::new();
        let skipped = parse_net_dev(data, |n, c| v.push((n.to_owned(), c)));
        assert_eq!(skipped, 2);
        assert_eq!(
            v,
            vec![(
                "eth0".to_owned(),
                IfCounters {
                    rx_bytes: 123,
                    rx_packets: 4,
                    tx_bytes: 567,
                    tx_packets: 8
                }
            )]
        );
    }

    #[test]
    fn first_sample_is_zero_then_deltas_sum_over_admitted_interfaces() {
        let f = IfFilter::new(&[], &[], false);
        let mut s = NetState::default();
        let (d, _) = s.update(&dev(&[("lo", 10, 1, 10, 1), ("eth0", 100, 2, 50, 1)]), &f);
        assert_eq!(d, NetDelta::default());
        let (d, _) = s.update(&dev(&[("lo", 99, 9, 99, 9), ("eth0", 150, 4, 80, 3)]), &f);
        assert_eq!(
            d,
            NetDelta {
                bytes_in: 50,
                bytes_out: 30,
                packets_in: 2,
                packets_out: 2
            }
        );
    }

    #[test]
    fn a_counter_reset_or_wrap_counts_zero_and_rebaselines() {
        let f = IfFilter::new(&[], &[], false);
        let mut s = NetState::default();
        s.update(&dev(&[("eth0", u64::MAX - 5, 10, 1000, 10)]), &f);
        let (d, _) = s.update(&dev(&[("eth0", 3, 11, 1100, 11)]), &f);
        assert_eq!(d, NetDelta::default());
        assert_eq!(s.resets(), 1);
        let (d, _) = s.update(&dev(&[("eth0", 13, 12, 1200, 12)]), &f);
        assert_eq!(
            d,
            NetDelta {
                bytes_in: 10,
                bytes_out: 100,
                packets_in: 1,
                packets_out: 1
            }
        );
    }

    #[test]
    fn appearing_and_vanishing_interfaces_never_distort_the_total() {
        let f = IfFilter::new(&[], &[], false);
        let mut s = NetState::default();
        s.update(&dev(&[("eth0", 100, 1, 100, 1)]), &f);
        // usb0 appears with large counters: baselined, contributes nothing yet.
        let (d, _) = s.update(
            &dev(&[("eth0", 110, 2, 100, 1), ("usb0", 9_000_000, 9, 9, 9)]),
            &f,
        );
        assert_eq!(d.bytes_in, 10);
        // eth0 vanishes, then comes back with fresh counters: baselined again.
        let (d, _) = s.update(&dev(&[("usb0", 9_000_100, 10, 9, 9)]), &f);
        assert_eq!(d.bytes_in, 100);
        let (d, _) = s.update(
            &dev(&[("eth0", 5, 1, 5, 1), ("usb0", 9_000_100, 10, 9, 9)]),
            &f,
        );
        assert_eq!(d, NetDelta::default());
        assert_eq!(s.resets(), 0);
    }

    #[test]
    fn filter_applies_include_exclude_and_loopback_rules() {
        let f = IfFilter::new(&[], &["docker*".into()], false);
        assert!(f.admits("eth0"));
        assert!(!f.admits("docker0"));
        assert!(!f.admits("lo"));
        let f = IfFilter::new(&["wlan*".into(), "lo".into()], &["wlan1".into()], false);
        assert!(f.admits("wlan0"));
        assert!(!f.admits("wlan1"));
        assert!(!f.admits("eth0"));
        assert!(f.admits("lo"));
        let f = IfFilter::new(&[], &[], true);
        assert!(f.admits("lo"));
    }
}
