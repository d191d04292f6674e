//! Per-source detection rules over sliding windows, with a bounded table of sources.
//!
//! Each rule counts events of one source address inside a window and raises one alert when the
//! count goes *above* its limit (the event that overflows the limit raises it, and the alert
//! carries that count). After an alert the source's count for that rule restarts, and the rule
//! stays quiet for that source for one window, so a sustained attack gives one alert per window.
//!
//! | alert | counts | limit | window |
//! |---|---|---|---|
//! | `brute_force` | authentication attempts (SSH/PAM/Dropbear attempts counted per connection, pre-auth disconnects of connections that counted nothing else, refused MQTT CONNECTs) | `[logs] brute_force_failures` (5) | `[logs] brute_force_window` (10 min) |
//! | `user_enumeration` | distinct non-existent or refused user names | 5 | brute-force window |
//! | `ssh_negotiation_scan` | SSH algorithm negotiation failures | 5 | brute-force window |
//! | `ssh_preauth_probe` | `Timeout before authentication` / MAC errors before auth (CVE-2024-6387 probing) | 3 | brute-force window |
//! | `port_scan` | distinct destination ports in dropped firewall packets | 15 | 60 s |
//! | `connection_refused` | refused connections (tcp wrappers, MaxStartups) | 0 (every one) | brute-force window (quiet period) |
//! | `client_id_takeover` | an MQTT client id taken over by a second connection (per client id) | 0 (every one) | brute-force window (quiet period) |
//!
//! With the defaults the brute-force rule fires on the sixth attempt within ten minutes: CrowdSec's
//! `ssh-bf` (bucket capacity 5) does the same; fail2ban's `maxretry = 5` bans on the fifth.
//!
//! Memory: at most `[logs] max_sources` sources are tracked; when a new source arrives and the
//! table is full, the least recently seen eighth is evicted and the eviction counted. Per source,
//! the attempt ring holds at most `brute_force_failures + 1` timestamps (capped at 1024).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum AlertKind {
    /// Too many failed authentication attempts from one source.
    BruteForce,
    /// Too many distinct unknown or refused user names from one source.
    UserEnumeration,
    /// Repeated SSH algorithm negotiation failures (scanners, outdated tools).
    NegotiationScan,
    /// Repeated pre-authentication timeouts or MAC errors (race-condition exploit probing).
    PreauthProbe,
    /// Packets to many distinct ports dropped by the firewall.
    PortScan,
    /// A refused connection (tcp wrappers, connection limits).
    ConnectionRefused,
    /// An MQTT client id taken over by a second connection on the local broker.
    ClientIdTakeover,
}

impl AlertKind {
    /// Every kind.
    pub const ALL: [AlertKind; 7] = [
        AlertKind::BruteForce,
        AlertKind::UserEnumeration,
        AlertKind::NegotiationScan,
        AlertKind::PreauthProbe,
        AlertKind::PortScan,
        AlertKind::ConnectionRefused,
        AlertKind::ClientIdTakeover,
    ];

    /// Snake-case name used in output and violations.
    pub const fn as_str(self) -> &'static str {
        match self {
            AlertKind::BruteForce => "brute_force",
            AlertKind::UserEnumeration => "user_enumeration",
            AlertKind::NegotiationScan => "ssh_negotiation_scan",
            AlertKind::PreauthProbe => "ssh_preauth_probe",
            AlertKind::PortScan => "port_scan",
            AlertKind::ConnectionRefused => "connection_refused",
            AlertKind::ClientIdTakeover => "client_id_takeover",
        }
    }

    /// Parses [`AlertKind::as_str`].
    pub fn from_name(s: &str) -> Option<AlertKind> {
        AlertKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for AlertKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A security alert raised from logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogAlert {
    /// What happened.
    pub kind: AlertKind,
    /// The offending address, when it is an IP literal.
    pub source: Option<IpAddr>,
    /// The offending address or host name as logged (empty when unknown).
    pub host: String,
    /// Events counted when the alert fired.
    pub events: u32,
    /// One sentence for operators.
    pub detail: String,
    /// Time of the event that raised the alert, ms since the UNIX epoch.
    pub at_ms: u64,
}

/// Thresholds of the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Brute force: attempts above this within `window` alarm.
    pub brute_force_failures: u32,
    /// Window of every rule but the port scan.
    pub window: Duration,
    /// Distinct user names above this within `window` alarm.
    pub user_enumeration: u32,
    /// Negotiation failures above this within `window` alarm.
    pub negotiation: u32,
    /// Pre-auth probes above this within `window` alarm.
    pub preauth_probe: u32,
    /// Distinct dropped destination ports above this within `port_scan_window` alarm.
    pub port_scan_ports: u32,
    /// Window of the port-scan rule.
    pub port_scan_window: Duration,
    /// Sources tracked at most.
    pub max_sources: usize,
}

impl Default for Rules {
    fn default() -> Rules {
        Rules {
            brute_force_failures: 5,
            window: Duration::from_secs(600),
            user_enumeration: 5,
            negotiation: 5,
            preauth_probe: 3,
            port_scan_ports: 15,
            port_scan_window: Duration::from_secs(60),
            max_sources: 4096,
        }
    }
}

impl Rules {
    /// The rules of a `[logs]` configuration section.
    pub fn from_config(cfg: &crate::config::LogsConfig) -> Rules {
        Rules {
            brute_force_failures: cfg.brute_force_failures,
            window: cfg.brute_force_window,
            max_sources: cfg.max_sources,
            ..Rules::default()
        }
    }
}

/// One event fed to the tracker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal<'a> {
    /// An authentication attempt (`service` names it in the alert).
    Attempt {
        /// `login`, `MQTT authentication`, … for the alert text.
        service: &'static str,
    },
    /// A user name tried that does not exist or is refused.
    User(&'a [u8]),
    /// An SSH negotiation failure.
    Negotiation,
    /// A pre-auth timeout or MAC error.
    Probe,
    /// A dropped firewall packet to `port`.
    Port(u16),
    /// A refused connection.
    Refused,
}

const RULES: usize = 6;

#[derive(Debug, Default)]
struct SourceState {
    attempts: VecDeque<i64>,
    users: Vec<(u64, i64)>,
    negotiation: VecDeque<i64>,
    probes: VecDeque<i64>,
    ports: Vec<(u16, i64)>,
    quiet_until: [i64; RULES],
    used: u64,
}

/// Per-source windows.
#[derive(Debug)]
pub struct Tracker {
    rules: Rules,
    sources: HashMap<Box<str>, SourceState>,
    clock: u64,
    evicted: u64,
    takeovers: HashMap<Box<[u8]>, i64>,
}

fn window_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Pushes `ts` into `ring`, drops entries outside `window` of it, keeps at most `limit + 1`;
/// returns the count when it exceeds `limit`.
fn push_ring(ring: &mut VecDeque<i64>, ts: i64, window: i64, limit: u32) -> Option<u32> {
    ring.retain(|&e| (ts - e).abs() <= window);
    ring.push_back(ts);
    let keep = (limit as usize).saturating_add(1).min(1024);
    while ring.len() > keep {
        ring.pop_front();
    }
    let n = u32::try_from(ring.len()).unwrap_or(u32::MAX);
    (n > limit).then_some(n)
}

fn push_distinct<K: PartialEq + Copy>(
    set: &mut Vec<(K, i64)>,
    key: K,
    ts: i64,
    window: i64,
    limit: u32,
) -> Option<u32> {
    set.retain(|&(_, e)| (ts - e).abs() <= window);
    if let Some(slot) = set.iter_mut().find(|(k, _)| *k == key) {
        slot.1 = ts;
    } else {
        set.push((key, ts));
    }
    let keep = (limit as usize).saturating_add(1).min(1024);
    if set.len() > keep {
        set.remove(0);
    }
    let n = u32::try_from(set.len()).unwrap_or(u32::MAX);
    (n > limit).then_some(n)
}

/// How alert texts name the clients of events whose line gave no address.
const UNNAMED_CLIENTS: &str = "clients whose address was not logged";

fn user_hash(u: &[u8]) -> u64 {
    // FNV-1a: stable and cheap; collisions only merge two user names.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in u {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl Tracker {
    /// An empty tracker.
    pub fn new(rules: Rules) -> Tracker {
        Tracker {
            rules,
            sources: HashMap::new(),
            clock: 0,
            evicted: 0,
            takeovers: HashMap::new(),
        }
    }

    /// The rules in force.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Sources evicted so far because the table was full.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Sources currently tracked.
    pub fn tracked(&self) -> usize {
        self.sources.len()
    }

    /// Feeds one signal of `host` at `ts_ms`; returns an alert when a rule fires. The empty host
    /// stands for every client whose address the log line did not give (its alerts name no
    /// source).
    pub fn observe(&mut self, host: &str, ts_ms: i64, signal: Signal<'_>) -> Option<LogAlert> {
        self.clock += 1;
        if !self.sources.contains_key(host) {
            if self.sources.len() >= self.rules.max_sources.max(1) {
                self.evict();
            }
            self.sources.insert(host.into(), SourceState::default());
        }
        let rules = self.rules;
        let window = window_ms(rules.window);
        let st = self.sources.get_mut(host).expect("inserted above");
        st.used = self.clock;
        let (rule, fired, kind) = match signal {
            Signal::Attempt { .. } => (
                0,
                push_ring(&mut st.attempts, ts_ms, window, rules.brute_force_failures),
                AlertKind::BruteForce,
            ),
            Signal::User(u) => (
                1,
                push_distinct(
                    &mut st.users,
                    user_hash(u),
                    ts_ms,
                    window,
                    rules.user_enumeration,
                ),
                AlertKind::UserEnumeration,
            ),
            Signal::Negotiation => (
                2,
                push_ring(&mut st.negotiation, ts_ms, window, rules.negotiation),
                AlertKind::NegotiationScan,
            ),
            Signal::Probe => (
                3,
                push_ring(&mut st.probes, ts_ms, window, rules.preauth_probe),
                AlertKind::PreauthProbe,
            ),
            Signal::Port(p) => (
                4,
                push_distinct(
                    &mut st.ports,
                    p,
                    ts_ms,
                    window_ms(rules.port_scan_window),
                    rules.port_scan_ports,
                ),
                AlertKind::PortScan,
            ),
            Signal::Refused => (5, Some(1), AlertKind::ConnectionRefused),
        };
        let n = fired?;
        if ts_ms < st.quiet_until[rule] {
            return None;
        }
        st.quiet_until[rule] = ts_ms.saturating_add(window);
        match rule {
            0 => st.attempts.clear(),
            1 => st.users.clear(),
            2 => st.negotiation.clear(),
            3 => st.probes.clear(),
            4 => st.ports.clear(),
            _ => {}
        }
        let host_text = host;
        let host = if host.is_empty() {
            UNNAMED_CLIENTS
        } else {
            host
        };
        let detail = match signal {
            Signal::Attempt { service } => format!(
                "{n} failed {service} attempts from {host} within {}",
                fmt_dur(rules.window)
            ),
            Signal::User(_) => format!("{n} distinct unknown or refused user names tried from {host} within {}", fmt_dur(rules.window)),
            Signal::Negotiation => format!("{n} SSH algorithm negotiation failures from {host} within {}", fmt_dur(rules.window)),
            Signal::Probe => format!(
                "{n} pre-authentication timeouts or MAC errors from {host} within {} (race-condition exploit probing)",
                fmt_dur(rules.window)
            ),
            Signal::Port(_) => format!(
                "firewall dropped packets from {host} to {n} distinct ports within {}",
                fmt_dur(rules.port_scan_window)
            ),
            Signal::Refused => format!("connection from {host} refused"),
        };
        Some(LogAlert {
            kind,
            source: host_text.parse().ok(),
            host: host_text.to_owned(),
            events: n,
            detail,
            at_ms: u64::try_from(ts_ms).unwrap_or(0),
        })
    }

    /// An MQTT client id taken over; one alert per client id per window.
    pub fn takeover(
        &mut self,
        client_id: &[u8],
        peer: Option<&str>,
        ts_ms: i64,
    ) -> Option<LogAlert> {
        let window = window_ms(self.rules.window);
        if let Some(&quiet) = self.takeovers.get(client_id) {
            if ts_ms < quiet {
                return None;
            }
        }
        if self.takeovers.len() >= self.rules.max_sources.max(1) {
            self.takeovers.retain(|_, &mut q| q > ts_ms);
            if self.takeovers.len() >= self.rules.max_sources.max(1) {
                self.takeovers.clear();
            }
        }
        self.takeovers
            .insert(client_id.into(), ts_ms.saturating_add(window));
        let id = String::from_utf8_lossy(client_id);
        let detail = match peer {
            Some(p) => {
                format!("MQTT client id {id} taken over by a new connection, most likely from {p}")
            }
            None => format!("MQTT client id {id} taken over by a new connection"),
        };
        Some(LogAlert {
            kind: AlertKind::ClientIdTakeover,
            source: peer.and_then(|p| p.parse().ok()),
            host: peer.unwrap_or("").to_owned(),
            events: 1,
            detail,
            at_ms: u64::try_from(ts_ms).unwrap_or(0),
        })
    }

    fn evict(&mut self) {
        let n = self.sources.len();
        let drop = (n / 8).max(1);
        let mut ages: Vec<u64> = self.sources.values().map(|s| s.used).collect();
        let (_, cut, _) = ages.select_nth_unstable(drop - 1);
        let cut = *cut;
        self.sources.retain(|_, s| s.used > cut);
        self.evicted += (n - self.sources.len()) as u64;
    }
}

fn fmt_dur(d: Duration) -> String {
    crate::units::format_duration(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brute_force_fires_once_on_the_attempt_above_the_limit() {
        let mut t = Tracker::new(Rules::default());
        let mut fired = vec![];
        for i in 0..12 {
            if let Some(a) = t.observe("1.2.3.4", i * 1000, Signal::Attempt { service: "ssh" }) {
                fired.push((i, a.events));
            }
        }
        assert_eq!(fired, vec![(5, 6)]);
    }

    #[test]
    fn attempts_outside_the_window_do_not_add_up() {
        let mut t = Tracker::new(Rules::default());
        for i in 0..20 {
            assert!(t
                .observe("1.2.3.4", i * 200_000, Signal::Attempt { service: "ssh" })
                .is_none());
        }
    }

    #[test]
    fn source_table_is_bounded_and_evictions_are_counted() {
        let mut t = Tracker::new(Rules {
            max_sources: 16,
            ..Rules::default()
        });
        for i in 0..1000 {
            t.observe(
                &format!("10.0.{}.{}", i / 256, i % 256),
                i,
                Signal::Attempt { service: "ssh" },
            );
        }
        assert!(t.tracked() <= 16);
        assert!(t.evicted() >= 984);
    }
}
