//! Glue from raw line to counts and alerts: frame → classify → connection context → tracker.
//!
//! One [`Analyzer`] holds what is shared by every log stream (the per-source tracker and the
//! counts since the last drain); each stream (file, journal) has its own [`Stream`] (connection
//! context and clock). The offline scan and the live monitor both use it, so `logs scan` shows
//! exactly what the agent would count.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};

use super::class::{ClassCounts, EventClass};
use super::classify::{classify, Classified, Hint};
use super::context::{Attribution, Context};
use super::format::{frame, repeated, strip_inner_prefix, year_of_epoch_ms, Format, Frame, Stamp};
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
    /// Authentication attempts the line added (every occurrence of a repeated message).
    pub attempts: u32,
    /// Occurrences of the event the line stands for: 1, or N for an rsyslog
    /// `message repeated N times: [ … ]` line (fewer when the source's line budget refused
    /// some).
    pub occurrences: u32,
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
    /// Occurrences per class: one per line, N for a `message repeated N times` line.
    pub counts: ClassCounts,
    /// Occurrences beyond the line itself that `message repeated N times` lines added (so
    /// `counts` sums to `lines + repeated`).
    pub repeated: u64,
    /// Authentication attempts (SSH, PAM, Dropbear, sudo; MQTT refusals are in
    /// `counts[MqttNotAuthorised]`).
    pub auth_attempts: u64,
    /// Lines read.
    pub lines: u64,
    /// Lines skipped (longer than the line cap).
    pub skipped: u64,
    /// Lines (or further occurrences of a repeated message) read but not analysed: their
    /// source exceeded its line budget.
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
    /// timestamp and to pick the year of syslog timestamps. A `message repeated N times` line
    /// counts as N occurrences of its inner message (see [`format::repeated`](super::format::repeated)).
    pub fn line(&mut self, stream: &mut Stream, line: &[u8], now_ms: i64) -> LineOutcome {
        self.line_within(stream, line, now_ms, |n| n)
    }

    /// As [`Analyzer::line`], for a source with a line budget: the line itself has been paid
    /// for; the further occurrences of a `message repeated N times` line are asked of `grant`
    /// (`grant(n)` returns how many of `n` it allows), and those it refuses are counted as
    /// dropped, as lines beyond the budget are.
    pub fn line_within(
        &mut self,
        stream: &mut Stream,
        line: &[u8],
        now_ms: i64,
        grant: impl FnOnce(u32) -> u32,
    ) -> LineOutcome {
        let mut f = frame(line);
        if !stream.journal_fields {
            f.trusted = None;
        }
        let mut times = 1;
        if let Some((n, inner)) = repeated(&f) {
            let more = grant(n - 1).min(n - 1);
            self.acc.dropped += u64::from(n - 1 - more);
            times += more;
            f.msg = Cow::Borrowed(inner);
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
        self.acc.lines += 1;
        self.acc.repeated += u64::from(times - 1);
        let cursor = f.cursor.as_ref().map(|c| c.clone().into_owned());
        if forged {
            // Kept out of the connection context too: a forged line must not re-attribute a
            // real connection.
            self.acc.forged += u64::from(times);
            self.acc.counts.add_n(EventClass::Other, u64::from(times));
            return LineOutcome {
                format: f.format,
                class: EventClass::Other,
                src: None,
                peer: None,
                attempts: 0,
                occurrences: times,
                at_ms,
                cursor,
                forged,
            };
        }
        let mut outcome = LineOutcome {
            format: f.format,
            class: c.class,
            src: None,
            peer: None,
            attempts: 0,
            occurrences: times,
            at_ms,
            cursor,
            forged,
        };
        for i in 0..times {
            let attr = self.occurrence(stream, &f, &c, at_ms, now_ms);
            if i == 0 {
                outcome.src = attr.src;
                outcome.peer = attr.peer;
            }
            outcome.attempts += u32::from(attr.attempts);
        }
        outcome
    }

    /// One occurrence of a classified, genuine event: connection context, duplicate check,
    /// counts, sources and the per-source rules.
    fn occurrence(
        &mut self,
        stream: &mut Stream,
        f: &Frame<'_>,
        c: &Classified<'_>,
        at_ms: i64,
        now_ms: i64,
    ) -> Attribution {
        let attr = stream.ctx.attribute(f.host, f.program, f.pid, c);
        if c.class != EventClass::Other {
            if let Some(pid) = f.pid {
                if self.is_duplicate(
                    event_key(f.program, pid, strip_inner_prefix(&f.msg)),
                    stream.id,
                    now_ms,
                ) {
                    self.acc.duplicates += 1;
                    return attr;
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
        attr
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

    /// 2027-01-15; the March dates below resolve to 2026, all within one window.
    const NOW: i64 = 1_800_000_000_000;
    const FAILED: &str = "Failed password for root from 192.0.2.9 port 22 ssh2";

    #[test]
    fn a_repeated_message_line_counts_as_its_repetitions() {
        let mut a = Analyzer::new(Rules::default());
        let mut s = Stream::new();
        a.line(
            &mut s,
            format!("Mar  1 10:00:00 gw sshd[41]: {FAILED}").as_bytes(),
            NOW,
        );
        let o = a.line(
            &mut s,
            format!("Mar  1 10:00:05 gw sshd[41]: message repeated 5 times: [ {FAILED}]")
                .as_bytes(),
            NOW,
        );
        assert_eq!(
            (o.class, o.occurrences, o.attempts),
            (EventClass::AuthFailure, 5, 5)
        );
        assert_eq!(o.src.as_deref(), Some("192.0.2.9"));
        let acc = a.take();
        assert_eq!((acc.lines, acc.repeated), (2, 4));
        assert_eq!(acc.counts.get(EventClass::AuthFailure), 6);
        assert_eq!(acc.counts.total(), acc.lines + acc.repeated);
        assert_eq!(acc.auth_attempts, 6);
        assert!(acc
            .sources
            .contains(&"192.0.2.9".parse::<IpAddr>().unwrap()));
        // Six attempts exceed the brute-force limit of five: the same alert six lines raise.
        assert_eq!(acc.alerts.len(), 1);
        assert_eq!(acc.alerts[0].kind, crate::logs::AlertKind::BruteForce);
        assert_eq!(acc.alerts[0].events, 6);
    }

    #[test]
    fn a_repeated_line_and_the_same_number_of_lines_count_alike() {
        let run = |lines: &[String]| {
            let mut a = Analyzer::new(Rules::default());
            let mut s = Stream::new();
            for l in lines {
                a.line(&mut s, l.as_bytes(), NOW);
            }
            let acc = a.take();
            (acc.counts, acc.auth_attempts, acc.alerts.len())
        };
        // The connection context sees every occurrence: the first failure completes the
        // attempt the invalid-user line opened, the others are attempts of their own.
        let head = "Mar  1 10:00:00 gw sshd[41]: ";
        let invalid = format!("{head}Invalid user admin from 192.0.2.7 port 4000");
        let failed = "Failed password for invalid user admin from 192.0.2.7 port 4000 ssh2";
        let mut one_by_one = vec![invalid.clone()];
        one_by_one.extend((0..6).map(|_| format!("{head}{failed}")));
        let reduced = vec![
            invalid,
            format!("{head}{failed}"),
            format!("{head}message repeated 5 times: [ {failed}]"),
        ];
        let (counts, attempts, alerts) = run(&one_by_one);
        assert_eq!((attempts, alerts), (6, 1), "six attempts: brute force");
        assert_eq!(run(&reduced), (counts, attempts, alerts));
        // `[preauth]` ends the inner message: only the last bracket is rsyslog's.
        let closed = "Connection closed by authenticating user root 192.0.2.7 port 4000 [preauth]";
        let (counts, ..) = run(&[format!("{head}message repeated 3 times: [ {closed}]")]);
        assert_eq!(counts.get(EventClass::PreauthDisconnect), 3);
    }

    #[test]
    fn a_user_name_holding_the_phrase_multiplies_nothing() {
        let mut a = Analyzer::new(Rules::default());
        let mut s = Stream::new();
        for line in [
            "Mar  1 10:00:00 gw sshd[41]: Failed password for invalid user message repeated 999 times: [ x from 192.0.2.9 port 22 ssh2]",
            "Mar  1 10:00:00 gw sshd[42]: Invalid user message repeated 999 times: [ from 192.0.2.9 port 22",
            "Mar  1 10:00:00 gw sshd[43]: error: message repeated 999 times: [ Failed password for root from 192.0.2.9 port 22 ssh2]",
        ] {
            let o = a.line(&mut s, line.as_bytes(), NOW);
            assert_eq!(o.occurrences, 1, "{line}");
        }
        let acc = a.take();
        assert_eq!((acc.lines, acc.repeated), (3, 0));
        assert_eq!(acc.auth_attempts, 2);
    }

    #[test]
    fn the_inner_message_belongs_to_the_lines_own_tag() {
        let mut a = Analyzer::new(Rules::default());
        let mut s = Stream::new();
        // A program that does not report logins: forged, however many times.
        let o = a.line(
            &mut s,
            format!("Mar  1 10:00:00 gw myapp[5]: message repeated 9 times: [ {FAILED}]")
                .as_bytes(),
            NOW,
        );
        assert!(o.forged);
        assert_eq!(
            (o.class, o.occurrences, o.src),
            (EventClass::Other, 9, None)
        );
        // The inner text is not framed again, so it cannot name another program.
        let o = a.line(
            &mut s,
            format!("Mar  1 10:00:00 gw myapp[5]: message repeated 9 times: [ sshd[41]: {FAILED}]")
                .as_bytes(),
            NOW,
        );
        assert_eq!((o.class, o.attempts), (EventClass::Other, 0));
        // journald does not reduce repeats: in a journal entry the phrase is the program's text.
        let j = format!(
            r#"{{"MESSAGE":"message repeated 9 times: [ {FAILED}]","SYSLOG_IDENTIFIER":"sshd","_PID":"41","_COMM":"sshd","_UID":"0","_TRANSPORT":"syslog"}}"#
        );
        let o = a.line(&mut Stream::new(), j.as_bytes(), NOW);
        assert_eq!((o.class, o.occurrences), (EventClass::Other, 1));
        let acc = a.take();
        assert_eq!((acc.forged, acc.auth_attempts), (9, 0));
        assert!(acc.sources.is_empty() && acc.alerts.is_empty());
    }

    #[test]
    fn the_repeat_count_is_capped_and_charged_to_the_budget() {
        let mut a = Analyzer::new(Rules::default());
        let mut s = Stream::new();
        let huge = format!(
            "Mar  1 10:00:00 gw sshd[41]: message repeated 99999999999999 times: [ {FAILED}]"
        );
        let o = a.line(&mut s, huge.as_bytes(), NOW);
        assert_eq!(o.occurrences, super::super::format::MAX_REPEAT);
        let acc = a.take();
        assert_eq!(
            acc.auth_attempts,
            u64::from(super::super::format::MAX_REPEAT)
        );
        // A budget that grants two more occurrences: the rest are dropped, not analysed.
        let o = a.line_within(
            &mut s,
            format!("Mar  1 10:00:00 gw sshd[41]: message repeated 7 times: [ {FAILED}]")
                .as_bytes(),
            NOW,
            |n| {
                assert_eq!(n, 6);
                2
            },
        );
        assert_eq!(o.occurrences, 3);
        let acc = a.take();
        assert_eq!((acc.auth_attempts, acc.dropped, acc.repeated), (3, 4, 2));
    }

    #[test]
    fn repetitions_already_read_from_the_journal_count_once() {
        let mut a = Analyzer::new(Rules::default());
        let mut journal = Stream::new();
        let mut file = Stream::new();
        let j = format!(r#"{{"MESSAGE":"{FAILED}","SYSLOG_IDENTIFIER":"sshd","_PID":"41"}}"#);
        for _ in 0..4 {
            a.line(&mut journal, j.as_bytes(), NOW);
        }
        a.line(
            &mut file,
            format!("Mar  1 10:00:00 gw sshd[41]: {FAILED}").as_bytes(),
            NOW,
        );
        a.line(
            &mut file,
            format!("Mar  1 10:00:00 gw sshd[41]: message repeated 3 times: [ {FAILED}]")
                .as_bytes(),
            NOW,
        );
        let acc = a.take();
        assert_eq!((acc.auth_attempts, acc.duplicates), (4, 4));
    }
}
