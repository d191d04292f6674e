//! When the TCP connection table may be reused: the kernel's own counters say whether any TCP
//! socket came, went or changed between established and not since the last full walk.
//!
//! The full TCP dump walks the kernel's whole established hash, whose size follows the machine's
//! memory rather than the number of sockets: on a quiet gateway that walk is most of a tick's
//! CPU. Listeners and UDP are dumped every tick (small tables); the connected part of the TCP
//! table is re-dumped only when one of these moved since the counters read just before the last
//! full walk (all per network namespace, like the dump):
//!
//! | counter | file | moves when |
//! |---|---|---|
//! | `ActiveOpens` | `/proc/net/snmp` `Tcp:` | a connect sends its SYN (a new `SYN_SENT` socket) |
//! | `PassiveOpens` | `/proc/net/snmp` `Tcp:` | an inbound handshake completes (a new connected socket) |
//! | `AttemptFails` | `/proc/net/snmp` `Tcp:` | a handshake fails |
//! | `EstabResets` | `/proc/net/snmp` `Tcp:` | a connection is reset |
//! | `CurrEstab` | `/proc/net/snmp` `Tcp:` | a socket enters or leaves `ESTABLISHED` |
//! | `inuse` | `/proc/net/sockstat` `TCP:`, `/proc/net/sockstat6` `TCP6:` | a full socket is hashed or unhashed (closed, or turned into `TIME_WAIT`) |
//! | `tw` | `/proc/net/sockstat` `TCP:` | a `TIME_WAIT` socket is created or expires |
//!
//! A walk's result is reused only when it was *settled*: it saw no `SYN_SENT` socket (one that
//! completes its handshake moves only `CurrEstab`, which another connection leaving
//! `ESTABLISHED` at the same time could cancel out), and it saw exactly as many sockets as
//! `inuse + tw` counts (nothing the dump does not report, such as a Fast Open child still in
//! `SYN_RECV`, can later become established unseen). A kernel whose `tw` is not counted per
//! namespace never matches: it walks every tick, as without the gate.
//!
//! What a reused table cannot see: a change between two connected states other than
//! `ESTABLISHED` (`FIN_WAIT1` to `FIN_WAIT2`, `CLOSE_WAIT` to `LAST_ACK`), which moves no
//! counter. Nothing the agent reports or detects tells those states apart: connection lists
//! hold established connections, destinations count every connected state alike.
//!
//! On any doubt the walk is full: no previous walk, an unreadable or unfamiliar counter file
//! (a missing column, a kernel without `/proc/net/sockstat`), a walk older than the maximum age
//! (at least one full walk per report interval), or a previous walk that failed. Counters that
//! went backwards or wrapped differ, so they too cause a full walk.

use std::time::{Duration, Instant};

use super::text::{dec_u64, fields, lines};

/// Why a tick walked the whole TCP table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkReason {
    /// No settled walk to reuse (the first tick, or the last walk was not settled).
    NoBaseline,
    /// A counter moved.
    CountersMoved,
    /// The last full walk is older than the maximum age.
    MaxAge,
    /// A counter file could not be read or understood.
    Doubt,
    /// Gating is off (a `/proc/net` source, where a listener-only read costs a full one).
    Disabled,
}

/// The counters compared between ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpFingerprint {
    /// `ActiveOpens`, `PassiveOpens`, `AttemptFails`, `EstabResets`, `CurrEstab`.
    pub snmp: [u64; 5],
    /// `TCP: inuse` plus `TCP6: inuse` (0 without `sockstat6`).
    pub inuse: u64,
    /// `TCP: tw`.
    pub tw: u64,
}

/// Why a sockstat file could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SockstatError {
    /// The protocol line is missing.
    #[error("no \"{0}\" line")]
    NoLine(&'static str),
    /// The line lacks a field, or a field is not a number.
    #[error("line {line}: {proto} {field} missing or not a number")]
    BadField {
        /// 1-based line.
        line: usize,
        /// Protocol prefix.
        proto: &'static str,
        /// Field name.
        field: &'static str,
    },
}

/// Reads `name value` pairs after `proto` in a sockstat file: `TCP: inuse 5 orphan 0 tw 2 …`.
fn sockstat_fields<const N: usize>(
    data: &[u8],
    proto: &'static str,
    names: [&'static str; N],
) -> Result<[u64; N], SockstatError> {
    let (i, line) = lines(data)
        .enumerate()
        .find(|(_, l)| fields(l).next() == Some(proto.as_bytes()))
        .ok_or(SockstatError::NoLine(proto))?;
    let mut out = [None; N];
    let mut f = fields(line).skip(1);
    while let (Some(name), Some(value)) = (f.next(), f.next()) {
        if let Some(k) = names.iter().position(|n| n.as_bytes() == name) {
            out[k] = dec_u64(value);
        }
    }
    let mut vals = [0u64; N];
    for (k, v) in out.iter().enumerate() {
        vals[k] = v.ok_or(SockstatError::BadField {
            line: i + 1,
            proto,
            field: names[k],
        })?;
    }
    Ok(vals)
}

/// `(inuse, tw)` of the `TCP:` line of `/proc/net/sockstat`.
pub fn parse_sockstat(data: &[u8]) -> Result<(u64, u64), SockstatError> {
    let [inuse, tw] = sockstat_fields(data, "TCP:", ["inuse", "tw"])?;
    Ok((inuse, tw))
}

/// `inuse` of the `TCP6:` line of `/proc/net/sockstat6`.
pub fn parse_sockstat6(data: &[u8]) -> Result<u64, SockstatError> {
    let [inuse] = sockstat_fields(data, "TCP6:", ["inuse"])?;
    Ok(inuse)
}

/// What the gate counted since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GateStats {
    /// Ticks that walked the whole TCP table.
    pub full_walks: u64,
    /// Ticks that reused the last walk's connected sockets.
    pub reused: u64,
    /// Full walks caused by doubt (unreadable or unfamiliar counters).
    pub doubts: u64,
}

/// Decides, tick by tick, whether the last full walk's connected sockets still hold.
#[derive(Debug)]
pub struct TcpGate {
    enabled: bool,
    max_age: Duration,
    /// Counters read before the last settled full walk, and when it ran.
    settled: Option<(TcpFingerprint, Instant)>,
    stats: GateStats,
}

impl TcpGate {
    /// A gate forcing a full walk at least every `max_age`.
    pub fn new(enabled: bool, max_age: Duration) -> TcpGate {
        TcpGate {
            enabled,
            max_age,
            settled: None,
            stats: GateStats::default(),
        }
    }

    /// Turns gating on or off; off walks every tick.
    pub fn set_enabled(&mut self, on: bool) {
        self.enabled = on;
        if !on {
            self.settled = None;
        }
    }

    /// True while gating may skip walks.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Sets the maximum age of a reused walk.
    pub fn set_max_age(&mut self, max_age: Duration) {
        self.max_age = max_age;
    }

    /// Counted decisions so far.
    pub fn stats(&self) -> GateStats {
        self.stats
    }

    /// `None` when the last walk may be reused, else why not. `now` is the tick's counters
    /// (`None` when they could not be read), read before this tick's dumps.
    pub fn decide(&mut self, now: Option<&TcpFingerprint>, at: Instant) -> Option<WalkReason> {
        let reason = if !self.enabled {
            Some(WalkReason::Disabled)
        } else {
            match (now, &self.settled) {
                (None, _) => Some(WalkReason::Doubt),
                (Some(_), None) => Some(WalkReason::NoBaseline),
                (Some(now), Some((then, when))) => {
                    if now != then {
                        Some(WalkReason::CountersMoved)
                    } else if at.saturating_duration_since(*when) >= self.max_age {
                        Some(WalkReason::MaxAge)
                    } else {
                        None
                    }
                }
            }
        };
        match reason {
            None => self.stats.reused += 1,
            Some(r) => {
                self.stats.full_walks += 1;
                if r == WalkReason::Doubt {
                    self.stats.doubts += 1;
                }
                // Until a settled walk says otherwise, nothing is reused.
                self.settled = None;
            }
        }
        reason
    }

    /// Records a full walk that succeeded, with the counters read before it, the number of
    /// sockets it saw (every state) and of `SYN_SENT` sockets among them. It is reused later
    /// only when settled (see the module documentation).
    pub fn walked(
        &mut self,
        before: Option<TcpFingerprint>,
        sockets: u64,
        syn_sent: u64,
        at: Instant,
    ) {
        self.settled = before
            .filter(|fp| {
                self.enabled && syn_sent == 0 && fp.inuse.checked_add(fp.tw) == Some(sockets)
            })
            .map(|fp| (fp, at));
    }

    /// A walk failed: the next tick walks again.
    pub fn failed(&mut self) {
        self.settled = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sockstat_lines_parse_by_name() {
        let s =
            b"sockets: used 18\nTCP: inuse 5 orphan 0 tw 2 alloc 5 mem 354\nUDP: inuse 0 mem 0\n";
        assert_eq!(parse_sockstat(s), Ok((5, 2)));
        assert_eq!(parse_sockstat6(b"TCP6: inuse 3\nUDP6: inuse 1\n"), Ok(3));
        assert_eq!(
            parse_sockstat(b"UDP: inuse 0\n"),
            Err(SockstatError::NoLine("TCP:"))
        );
        let e = parse_sockstat(b"x\nTCP: inuse 5 orphan 0 alloc 5\n").unwrap_err();
        assert_eq!(e.to_string(), "line 2: TCP: tw missing or not a number");
        assert!(parse_sockstat(b"TCP: inuse -1 tw 0\n").is_err());
    }

    fn fp(active: u64) -> TcpFingerprint {
        TcpFingerprint {
            snmp: [active, 0, 0, 0, 1],
            inuse: 2,
            tw: 0,
        }
    }

    #[test]
    fn only_a_settled_walk_with_unmoved_counters_is_reused() {
        let t0 = Instant::now();
        let mut g = TcpGate::new(true, Duration::from_secs(300));
        assert_eq!(g.decide(Some(&fp(1)), t0), Some(WalkReason::NoBaseline));
        g.walked(Some(fp(1)), 2, 0, t0);
        assert_eq!(g.decide(Some(&fp(1)), t0), None);
        assert_eq!(g.decide(Some(&fp(2)), t0), Some(WalkReason::CountersMoved));
        // Not settled: a SYN_SENT socket, or a count the dump does not match.
        g.walked(Some(fp(2)), 2, 1, t0);
        assert_eq!(g.decide(Some(&fp(2)), t0), Some(WalkReason::NoBaseline));
        g.walked(Some(fp(2)), 3, 0, t0);
        assert_eq!(g.decide(Some(&fp(2)), t0), Some(WalkReason::NoBaseline));
        g.walked(Some(fp(2)), 2, 0, t0);
        assert_eq!(g.decide(None, t0), Some(WalkReason::Doubt));
        assert_eq!(g.decide(Some(&fp(2)), t0), Some(WalkReason::NoBaseline));
        g.walked(Some(fp(2)), 2, 0, t0);
        let later = t0 + Duration::from_secs(300);
        assert_eq!(g.decide(Some(&fp(2)), later), Some(WalkReason::MaxAge));
        g.walked(Some(fp(2)), 2, 0, later);
        g.failed();
        assert_eq!(g.decide(Some(&fp(2)), later), Some(WalkReason::NoBaseline));
        g.set_enabled(false);
        g.walked(Some(fp(2)), 2, 0, later);
        assert_eq!(g.decide(Some(&fp(2)), later), Some(WalkReason::Disabled));
        let s = g.stats();
        assert_eq!((s.reused, s.doubts), (1, 1));
        assert_eq!(s.full_walks, 9);
    }

    proptest! {
        #[test]
        fn sockstat_parsers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_sockstat(&data);
            let _ = parse_sockstat6(&data);
        }

        #[test]
        fn any_moved_counter_forces_a_walk(k in 0usize..7, by in 1u64..u64::MAX) {
            let t0 = Instant::now();
            let mut g = TcpGate::new(true, Duration::from_secs(300));
            let base = fp(7);
            g.walked(Some(base), 2, 0, t0);
            let mut now = base;
            match k {
                0..=4 => now.snmp[k] = now.snmp[k].wrapping_add(by),
                5 => now.inuse = now.inuse.wrapping_add(by),
                _ => now.tw = now.tw.wrapping_add(by),
            }
            prop_assert_eq!(g.decide(Some(&now), t0), Some(WalkReason::CountersMoved));
        }
    }
}
