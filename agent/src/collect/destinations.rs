//! Outbound destinations, per remote address *and port*, and which of them are long-lived or
//! recur: the `destination_endpoints` and `recurring_destinations` metrics.
//!
//! A connection is *outbound* when its local port is not one the gateway listened on within the
//! last [`LISTEN_MEMORY_TICKS`] ticks (a service restarting keeps its inbound connections
//! inbound). Every connected TCP state counts, `TIME_WAIT` included: a short connection the
//! gateway closed first stays visible for 60 s, so a check-in once a second leaves a trail even
//! when no sample falls inside one of its connections.
//!
//! A destination *recurs* at a tick when it has a connection now and either
//! - the same connection (local port) was already there at the previous tick and is established
//!   now (long-lived: a reverse shell, an upload, a session), or
//! - at least two different connections (local ports) to it were seen within the last
//!   [`RECUR_WINDOW_TICKS`] ticks (a beacon, a poll).
//!
//! A one-off short connection never recurs. State is bounded: at most [`MAX_DESTINATIONS`]
//! destinations (least recently seen dropped first) and [`MAX_PORTS`] connections each.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use super::raw::{state, RawSocket};

/// Ticks over which two different connections to one destination make it recur.
pub const RECUR_WINDOW_TICKS: u64 = 30;
/// Ticks a local port stays "a listening port" after its listener closed.
pub const LISTEN_MEMORY_TICKS: u64 = 30;
/// Destinations tracked at most.
pub const MAX_DESTINATIONS: usize = 2048;
/// Connections looked at per destination and tick.
pub const MAX_PORTS: usize = 4096;

#[derive(Debug, Clone, Default)]
struct Dest {
    last_tick: u64,
    /// Local ports of its connections at the previous tick (sorted).
    prev: Vec<u16>,
    /// Local ports of its connections this tick, established ones flagged.
    cur: Vec<(u16, bool)>,
    /// Last tick a new connection to it appeared.
    last_fresh: Option<u64>,
}

/// What one tick says about outbound destinations.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DestinationSample {
    /// Every outbound destination with a connection now, `addr:port`, sorted.
    pub current: Vec<String>,
    /// Those that are long-lived or recur (see the module documentation), sorted.
    pub recurring: Vec<String>,
}

/// Destination state carried between ticks.
#[derive(Debug, Default)]
pub struct DestinationTracker {
    tick: u64,
    dests: HashMap<SocketAddr, Dest>,
    /// Local listening port → last tick it listened.
    listening: HashMap<u16, u64>,
}

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

fn is_connected(st: u8) -> bool {
    matches!(
        st,
        state::ESTABLISHED
            | state::SYN_SENT
            | state::FIN_WAIT1
            | state::FIN_WAIT2
            | state::TIME_WAIT
            | state::CLOSE_WAIT
            | state::LAST_ACK
            | state::CLOSING
    )
}

fn show(a: &SocketAddr) -> String {
    match a.ip() {
        IpAddr::V4(_) => a.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]:{}", a.port()),
    }
}

impl DestinationTracker {
    /// Destinations tracked now.
    pub fn len(&self) -> usize {
        self.dests.len()
    }

    /// True when nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.dests.is_empty()
    }

    /// One tick over the TCP table (every state read).
    pub fn update(&mut self, tcp: &[RawSocket]) -> DestinationSample {
        self.tick += 1;
        let t = self.tick;
        for s in tcp.iter().filter(|s| s.state == state::LISTEN) {
            self.listening.insert(s.local.port(), t);
        }
        self.listening
            .retain(|_, last| t.saturating_sub(*last) <= LISTEN_MEMORY_TICKS);
        for s in tcp {
            if !is_connected(s.state)
                || s.remote.port() == 0
                || self.listening.contains_key(&s.local.port())
            {
                continue;
            }
            let remote = canonical(s.remote);
            if remote.ip().is_loopback() {
                continue;
            }
            let d = self.dests.entry(remote).or_default();
            if d.last_tick != t {
                d.last_tick = t;
                d.cur.clear();
            }
            if d.cur.len() < MAX_PORTS {
                d.cur.push((s.local.port(), s.state == state::ESTABLISHED));
            }
        }
        let mut current: Vec<SocketAddr> = Vec::new();
        let mut recurring: Vec<SocketAddr> = Vec::new();
        for (remote, d) in &mut self.dests {
            if d.last_tick != t {
                d.prev.clear();
                continue;
            }
            current.push(*remote);
            let mut fresh = 0;
            let mut long_lived = false;
            for &(lp, established) in &d.cur {
                if d.prev.binary_search(&lp).is_ok() {
                    long_lived |= established;
                } else {
                    fresh += 1;
                }
            }
            // The first tick has no previous one: nothing is new or long-lived yet.
            let warm_up = t == 1;
            let recurs = !warm_up
                && (long_lived
                    || (fresh > 0
                        && (fresh >= 2
                            || d.last_fresh.is_some_and(|f| t - f <= RECUR_WINDOW_TICKS))));
            if fresh > 0 && !warm_up {
                d.last_fresh = Some(t);
            }
            if recurs {
                recurring.push(*remote);
            }
            d.prev.clear();
            d.prev.extend(d.cur.iter().map(|e| e.0));
            d.prev.sort_unstable();
        }
        self.bound();
        current.sort_unstable();
        recurring.sort_unstable();
        DestinationSample {
            current: current.iter().map(show).collect(),
            recurring: recurring.iter().map(show).collect(),
        }
    }

    fn bound(&mut self) {
        let t = self.tick;
        if self.tick.is_multiple_of(16) {
            self.dests
                .retain(|_, d| t.saturating_sub(d.last_tick) < RECUR_WINDOW_TICKS);
        }
        if self.dests.len() > MAX_DESTINATIONS {
            let mut by_age: Vec<(u64, SocketAddr)> =
                self.dests.iter().map(|(a, d)| (d.last_tick, *a)).collect();
            by_age.sort_unstable();
            let excess = self.dests.len() - MAX_DESTINATIONS;
            for (_, a) in &by_age[..excess] {
                self.dests.remove(a);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sock(local: &str, remote: &str, st: u8) -> RawSocket {
        RawSocket {
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            state: st,
            uid: 0,
            inode: 0,
        }
    }

    const LISTEN_1883: &str = "0.0.0.0:1883";

    #[test]
    fn a_connection_held_over_two_ticks_recurs_a_one_off_does_not() {
        let mut t = DestinationTracker::default();
        let shell = sock("10.0.0.1:40000", "203.0.113.9:4444", state::ESTABLISHED);
        let once = sock("10.0.0.1:40001", "198.51.100.7:443", state::TIME_WAIT);
        let s = t.update(&[shell, once]);
        assert_eq!(s.current, ["198.51.100.7:443", "203.0.113.9:4444"]);
        assert!(s.recurring.is_empty());
        let s = t.update(&[shell, once]);
        assert_eq!(s.recurring, ["203.0.113.9:4444"]);
        let s = t.update(&[once]);
        assert!(s.recurring.is_empty());
    }

    #[test]
    fn two_connections_within_the_window_recur() {
        let mut t = DestinationTracker::default();
        let a = sock("10.0.0.1:40000", "203.0.113.9:8443", state::TIME_WAIT);
        let b = sock("10.0.0.1:40002", "203.0.113.9:8443", state::TIME_WAIT);
        t.update(&[]);
        assert!(t.update(&[a]).recurring.is_empty());
        assert_eq!(t.update(&[a, b]).recurring, ["203.0.113.9:8443"]);
        // The trail of closed connections alone does not keep it recurring.
        assert!(t.update(&[a, b]).recurring.is_empty());
        // Long after, a single new connection starts over.
        for _ in 0..RECUR_WINDOW_TICKS {
            t.update(&[]);
        }
        let c = sock("10.0.0.1:40004", "203.0.113.9:8443", state::TIME_WAIT);
        assert!(t.update(&[c]).recurring.is_empty());
    }

    #[test]
    fn inbound_connections_are_not_destinations_even_while_the_service_restarts() {
        let mut t = DestinationTracker::default();
        let listen = sock(LISTEN_1883, "0.0.0.0:0", state::LISTEN);
        let inbound = sock("10.0.0.1:1883", "10.0.0.7:51234", state::ESTABLISHED);
        let s = t.update(&[listen, inbound]);
        assert!(s.current.is_empty());
        // The listener is gone for a tick (restart); the connection is still inbound.
        let s = t.update(&[inbound]);
        assert!(s.current.is_empty() && s.recurring.is_empty());
    }

    #[test]
    fn ipv6_and_mapped_addresses_print_canonically() {
        let mut t = DestinationTracker::default();
        let v6 = sock("[fd00::1]:40000", "[fd00::9]:443", state::ESTABLISHED);
        let mapped = sock(
            "[::ffff:10.0.0.1]:40001",
            "[::ffff:10.0.0.9]:443",
            state::SYN_SENT,
        );
        let s = t.update(&[v6, mapped]);
        assert_eq!(s.current, ["10.0.0.9:443", "[fd00::9]:443"]);
    }

    #[test]
    fn state_is_bounded() {
        let mut t = DestinationTracker::default();
        let many: Vec<RawSocket> = (0..3000u32)
            .map(|i| {
                sock(
                    &format!("10.0.0.1:{}", 30000 + (i % 30000)),
                    &format!("198.18.{}.{}:443", i / 250, i % 250),
                    state::TIME_WAIT,
                )
            })
            .collect();
        t.update(&many);
        assert!(t.len() <= MAX_DESTINATIONS);
    }
}
