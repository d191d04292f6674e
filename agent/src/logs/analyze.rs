//! Glue from raw line to counts and alerts: frame → classify → connection context → tracker.
//!
//! One [`Analyzer`] holds what is shared by every log stream (the per-source tracker and the
//! counts since the last drain); each stream (file, journal) has its own [`Stream`] (connection
//! context and clock). The offline scan and the live monitor both use it, so `logs scan` shows
//! exactly what the agent would count.

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};

use super::class::{ClassCounts, EventClass};
use super::classify::{classify, Classified, Hint};
use super::context::Context;
use super::format::{frame, strip_inner_prefix, year_of_epoch_ms, Format, Stamp};
use super::provenance;
use super::tracker::{LogAlert, Rules, Signal, Tracker};

/// Distinct source addresses kept per drain for the `auth_failure_sources` list.
pub const MAX_REPORTED_SOURCES: usize = 128;
/// Alerts kept between two drains; more are counted in [`Accumulated::alerts_dropped`].
pub const MAX_PENDING_ALERTS: usize = 1024;
/// A line read from two streams within this time (by arrival) is the same event logged twice,
/// e.g. by journald and by rsyslog into `/var/log/auth.log`; it is counted once.
pub const DUPLICATE_WINDOW_MS: i64 = 30_000;
/// Recent events remembered for duplicate detection.
const MAX_RECENT: usize = 8192;

/// One stream's state.
#[derive(Debug)]
pub struct Stream {
    id: u32,
    ctx: Context,
    last_ts: Option<i64>,
    /// journald's own fields of JSON lines are believed (the journal, an explicit scan); in a
    /// followed text file they are text like any other.
    journal_fields: bool,
}

impl Default for Stream {
    fn default() -> Stream {
        static NEXT: AtomicU32 = AtomicU32::new(1);
        Stream {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            ctx: Context::new(),
            last_ts: None,
            journal_fields: true,
        }
    }
}

impl Stream {
    /// A fresh stream.
    pub fn new() -> Stream {
        Stream::default()
    }

    /// A stream of a followed text file: JSON lines in it are framed, but their journald fields
    /// (`_COMM`, `_UID` …) are not believed, since whoever writes the file writes them.
    pub fn text_file() -> Stream {
        Stream {
            journal_fields: false,
            ..Stream::default()
        }
    }

    /// Connections dropped from this stream's context table.
    pub fn evicted(&self) -> u64 {
        self.ctx.evicted()
    }
}

/// What one line turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineOutcome {
    /// Detected line form.
    pub format: Format,
    /// The line's class.
    pub class: EventClass,
    /// The client address of the line (own, or of its process' connection).
    pub src: Option<std::sync::Arc<str>>,
    /// The client the event is attributed to for counting and alerts.
    pub peer: Option<std::sync::Arc<str>>,
    /// Authentication attempts the line added.
    pub attempts: u8,
    /// Event time used, ms since the epoch.
    pub at_ms: i64,
    /// Journal cursor of the entry, journal lines only.
    pub cursor: Option<String>,
    /// The line reports an event but does not come from a program that reports it (see
    /// [`provenance`]); it is counted as `other` and otherwise ignored.
    pub forged: bool,
}

/// Counts and alerts accumulated since the last [`Analyzer::take`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Accumulated {
    /// Lines per class.
    pub counts: ClassCounts,
    /// Authentication attempts (SSH, PAM, Dropbear, sudo; MQTT refusals are in
    /// `counts[MqttNotAuthorised]`).
    pub auth_attempts: u64,
    /// Lines read.
    pub lines: u64,
    /// Lines skipped (longer than the line cap).
    pub skipped: u64,
    /// Lines read but not analysed: their source exceeded its line budget.
    pub dropped: u64,
    /// Addresses that failed authentication (IP literals only), at most [`MAX_REPORTED_SOURCES`].
    pub sources: BTreeSet<IpAddr>,
    /// Addresses left out of `sources` because of the cap.
    pub sources_dropped: u64,
    /// Alerts raised.
    pub alerts: Vec<LogAlert>,
    /// Alerts not kept because [`MAX_PENDING_ALERTS`] were already waiting.
    pub alerts_dropped: u64,
    /// Events seen a second time through another stream (not counted again).
    pub duplicates: u64,
    /// Lines reporting an event without coming from a program that reports it.
    pub forged: u64,
}

/// Shared analysis state.
#[derive(Debug)]
pub struct Analyzer {
    tracker: Tracker,
    acc: Accumulated,
    evicted_reported: u64,
    /// Event key → (stream, arrival, occurrences not yet matched by another stream).
    recent: HashMap<u64, (u32, i64, u32), BuildHasherDefault<KeyHasher>>,
}

/// The keys of `recent` are already hashes: use them as they are.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// Key of an event for duplicate detection: program, pid and message.
fn event_key(program: &[u8], pid: u32, msg: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in program.iter().chain(&pid.to_le_bytes()).chain(msg) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl Analyzer {
    /// An analyzer with the given rules.
    pub fn new(rules: Rules) -> Analyzer {
        Analyzer {
            tracker: Tracker::new(rules),
            acc: Accumulated::default(),
            evicted_reported: 0,
            recent: HashMap::default(),
        }
    }

    /// Source evictions since the previous call (tracker table full).
    pub fn take_evictions(&mut self) -> u64 {
        let e = self.tracker.evicted();
        let d = e - self.evicted_reported;
        self.evicted_reported = e;
        d
    }

    /// Counts one line longer than the cap.
    pub fn skipped_line(&mut self) {
        self.acc.skipped += 1;
    }

    /// Counts one line read but not analysed (its source exceeded its line budget).
    pub fn dropped_line(&mut self) {
        self.acc.dropped += 1;
    }

    /// Takes the accumulated counts and alerts.
    pub fn take(&mut self) -> Accumulated {
        std::mem::take(&mut self.acc)
    }

    fn push_alert(&mut self, a: LogAlert) {
        if self.acc.alerts.len() < MAX_PENDING_ALERTS {
            self.acc.alerts.push(a);
        } else {
            self.acc.alerts_dropped += 1;
        }
    }

    /// Analyses one line of `stream`. `now_ms` is the wall clock, used for lines without a
    /// timestamp and to pick the year of syslog timestamps.
    pub fn line(&mut self, stream: &mut Stream, line: &[u8], now_ms: i64) -> LineOutcome {
        let mut f = frame(line);
        if !stream.journal_fields {
            f.trusted = None;
        }
        let mut c = classify(&f.msg);
        let forged = !provenance::genuine(&f, &c);
        if forged {
            c = Classified {
                class: EventClass::Other,
                addr: None,
                invalid_user: None,
                hint: Hint::None,
            };
        }
        let at_ms = match f.stamp {
            Some(Stamp::EpochMs(ms)) => ms,
            Some(s @ Stamp::NoYear { .. }) => {
                // Syslog has no year: take the current one, or the previous one for a date
                // more than a day in the future (a December line read in January).
                let year = year_of_epoch_ms(now_ms);
                let t = s.to_epoch_ms(year);
                if t > now_ms + 86_400_000 {
                    s.to_epoch_ms(year - 1)
                } else {
                    t
                }
            }
            None => stream.last_ts.unwrap_or(now_ms),
        };
        stream.last_ts = Some(at_ms);
        if forged {
            // Kept out of the connection context too: a forged line must not re-attribute a
            // real connection.
            self.acc.lines += 1;
            self.acc.forged += 1;
            self.acc.counts.add(EventClass::Other);
            return LineOutcome {
                format: f.format,
                class: EventClass::Other,
                src: None,
                peer: None,
                attempts: 0,
                at_ms,
                cursor: f.cursor.as_ref().map(|c| c.clone().into_owned()),
                forged,
            };
        }
        let attr = stream.ctx.attribute(f.host, f.program, f.pid, &c);
        let outcome = LineOutcome {
            format: f.format,
            class: c.class,
            src: attr.src.clone(),
            peer: attr.peer.clone(),
            attempts: attr.attempts,
            at_ms,
            cursor: f.cursor.as_ref().map(|c| c.clone().into_owned()),
            forged,
        };
        self.acc.lines += 1;
        if c.class != EventClass::Other {
            if let Some(pid) = f.pid {
                if self.is_duplicate(
                    event_key(f.program, pid, strip_inner_prefix(&f.msg)),
                    stream.id,
                    now_ms,
                ) {
                    self.acc.duplicates += 1;
                    return outcome;
                }
            }
        }
        self.acc.counts.add(c.class);
        let credential = matches!(
            c.class,
            EventClass::AuthFailure
                | EventClass::InvalidUser
                | EventClass::PamFailure
                | EventClass::AuthLimit
        );
        if attr.attempts > 0 && credential {
            self.acc.auth_attempts += u64::from(attr.attempts);
        }
        // Only an address written in the line (or by the connection's own opening line) names a
        // source; a peer guessed from the latest connection of a single-process server counts
        // the event above but never reaches the source list or the per-source rules.
        // Such events feed the per-source rules under the empty host, whose alerts name no one.
        let named = attr.src.as_deref();
        if let Some(peer) = named.or(attr.peer.as_ref().map(|_| "")) {
            let failed = credential
                || c.class == EventClass::MqttNotAuthorised
                || c.class == EventClass::TlsFailure;
            if failed && named.is_some() {
                if let Ok(ip) = peer.parse::<IpAddr>() {
                    if self.acc.sources.len() < MAX_REPORTED_SOURCES
                        || self.acc.sources.contains(&ip)
                    {
                        self.acc.sources.insert(ip);
                    } else {
                        self.acc.sources_dropped += 1;
                    }
                }
            }
            let mut signals: [Option<Signal<'_>>; 2] = [None, None];
            if attr.attempts > 0 {
                let service = if c.class == EventClass::MqttNotAuthorised {
                    "MQTT authentication"
                } else {
                    "login"
                };
                signals[0] = Some(Signal::Attempt { service });
            }
            match (c.class, c.hint) {
                (_, Hint::Probe) => signals[1] = Some(Signal::Probe),
                (EventClass::NegotiationFailure, _) => signals[1] = Some(Signal::Negotiation),
                (
                    EventClass::FwDrop,
                    Hint::Firewall {
                        dport,
                        dropped: true,
                    },
                ) => signals[1] = Some(Signal::Port(dport)),
                (EventClass::ConnRefused, _) => signals[1] = Some(Signal::Refused),
                _ => {}
            }
            if let Some(u) = c.invalid_user {
                if !u.is_empty()
                    && matches!(c.class, EventClass::InvalidUser | EventClass::AuthFailure)
                {
                    signals[1] = Some(Signal::User(u));
                }
            }
            for s in signals.into_iter().flatten() {
                if let Some(a) = self.tracker.observe(peer, at_ms, s) {
                    self.push_alert(a);
                }
            }
        }
        if c.class == EventClass::MqttClientIdConflict {
            if let Hint::ClientId(id) = c.hint {
                if let Some(a) = self.tracker.takeover(id, attr.src.as_deref(), at_ms) {
                    self.push_alert(a);
                }
            }
        }
        outcome
    }

    /// True when `key` matches an occurrence from another stream, seen within
    /// [`DUPLICATE_WINDOW_MS`] and not yet matched. Each occurrence matches at most one
    /// occurrence of another stream, so an event logged twice in both places counts twice.
    fn is_duplicate(&mut self, key: u64, stream: u32, now_ms: i64) -> bool {
        if let Some(e) = self.recent.get_mut(&key) {
            let fresh = (now_ms - e.1).abs() <= DUPLICATE_WINDOW_MS;
            if e.0 != stream && fresh && e.2 > 0 {
                e.2 -= 1;
                return true;
            }
            if e.0 == stream && fresh {
                e.1 = now_ms;
                e.2 = e.2.saturating_add(1);
                return false;
            }
        }
        if self.recent.len() >= MAX_RECENT {
            self.recent
                .retain(|_, e| (now_ms - e.1).abs() <= DUPLICATE_WINDOW_MS);
            if self.recent.len() >= MAX_RECENT {
                self.recent.clear();
            }
        }
        self.recent.insert(key, (stream, now_ms, 1));
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_logged_by_journald_and_rsyslog_counts_once() {
        let mut a = Analyzer::new(Rules::default());
        let mut journal = Stream::new();
        let mut file = Stream::new();
        let j = br#"{"MESSAGE":"Failed password for root from 192.0.2.9 port 22 ssh2","SYSLOG_IDENTIFIER":"sshd","_PID":"41"}"#;
        let f =
            b"Mar  1 10:00:00 gw sshd[41]: Failed password for root from 192.0.2.9 port 22 ssh2";
        a.line(&mut journal, j, 1_000);
        a.line(&mut file, f, 2_000);
        // The same line twice in one stream is two events.
        a.line(&mut file, f, 3_000);
        let acc = a.take();
        assert_eq!((acc.auth_attempts, acc.duplicates), (2, 1));
    }

    #[test]
    fn a_journal_entry_claiming_sshd_from_logger_counts_nothing() {
        let mut a = Analyzer::new(Rules {
            brute_force_failures: 1,
            ..Rules::default()
        });
        let mut journal = Stream::new();
        for port in 1..=5 {
            let j = format!(
                r#"{{"MESSAGE":"Failed password for invalid user x from 10.9.9.9 port {port} ssh2","SYSLOG_IDENTIFIER":"sshd","SYSLOG_PID":"41","_PID":"4242","_COMM":"logger","_EXE":"/usr/bin/logger","_UID":"1000","_TRANSPORT":"syslog"}}"#
            );
            let o = a.line(&mut journal, j.as_bytes(), 1_000);
            assert!(o.forged);
            assert_eq!((o.class, o.src), (EventClass::Other, None));
        }
        let acc = a.take();
        assert_eq!(acc.forged, 5);
        assert_eq!(acc.auth_attempts, 0);
        assert_eq!(acc.counts.get(EventClass::Other), 5);
        assert!(acc.sources.is_empty() && acc.alerts.is_empty());
    }
}
