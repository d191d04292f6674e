//! Line framing: splits one log line into timestamp, host, program, pid and message.
//!
//! Recognised forms (detected per line, so a file may mix them):
//!
//! - BSD syslog (RFC 3164), as written by rsyslog's default template and `journalctl -o short`:
//!   `[<PRI>]Mmm dd hh:mm:ss[.frac] [host] tag[pid]: message`. The host may be missing
//!   (`Nov 23 21:50:19 sshd[8148]: …`) and the tag may be bracketed (`[sshd]: …`, `[sshd] …`).
//! - ISO 8601 timestamps (rsyslog `RSYSLOG_FileFormat`, `journalctl -o short-iso`):
//!   `2015-04-16T18:02:50.321974+00:00 host tag[pid]: message`.
//! - RFC 5424: `<PRI>1 TIMESTAMP HOST APP PROCID MSGID STRUCTURED-DATA MSG` with `-` for nil
//!   values; structured data may hold quoted values with brackets in them.
//! - `journalctl -o json`: one JSON object per line; `MESSAGE` (a string, or an array of bytes for
//!   non-UTF-8 messages), `SYSLOG_IDENTIFIER` (falling back to `_COMM`), `SYSLOG_PID`/`_PID`,
//!   `_HOSTNAME`, `__REALTIME_TIMESTAMP` and `__CURSOR`.
//! - Mosquitto's own log file: `1795801273: message` (epoch seconds), or an ISO timestamp followed
//!   by `: ` when `log_timestamp_format` is set.
//!
//! - Syslog lines without a timestamp: `host prog[pid]: message`, `prog[pid]: message`,
//!   `host prog: message` (a leading `word: ` alone is not a tag: sshd writes `error: …`).
//! - `journalctl -o export` records, once [`super::export`] has turned them into journal JSON.
//!
//! Anything else is framed as a bare message. Framing never fails and never allocates for the text
//! forms; journal messages with JSON escapes are unescaped into an owned buffer.
//!
//! A line of rsyslog's repeated-message reduction (`message repeated N times: [ … ]`) is
//! recognised by [`repeated`], which gives the count and the inner message.
//!
//! After framing, [`strip_inner_prefix`] removes prefixes some daemons put inside the message: a
//! Mosquitto epoch (`1795801481: ` under syslog), Dropbear's `[pid] Mmm dd hh:mm:ss ` and Solaris'
//! `[ID 800047 auth.info] `.

use std::borrow::Cow;

use serde::Deserialize;

/// The line form [`frame`] recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// BSD syslog (RFC 3164).
    Syslog,
    /// ISO 8601 timestamp, syslog-like remainder.
    Iso,
    /// RFC 5424.
    Rfc5424,
    /// `journalctl -o json`.
    Journal,
    /// Mosquitto file log (epoch seconds prefix).
    Mosquitto,
    /// Syslog-like line without a timestamp (`host prog[pid]: message`).
    Untimed,
    /// Nothing recognised: the whole line is the message.
    Plain,
}

impl Format {
    /// Short lowercase name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Format::Syslog => "syslog",
            Format::Iso => "iso8601",
            Format::Rfc5424 => "rfc5424",
            Format::Journal => "journal-json",
            Format::Mosquitto => "mosquitto",
            Format::Untimed => "syslog-untimed",
            Format::Plain => "plain",
        }
    }
}

/// A timestamp as found in the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stamp {
    /// Milliseconds since the UNIX epoch.
    EpochMs(i64),
    /// BSD syslog time without a year (UTC assumed; the year is supplied by the reader).
    NoYear {
        /// 1–12.
        month: u8,
        /// 1–31.
        day: u8,
        /// Seconds since midnight.
        secs: u32,
    },
}

impl Stamp {
    /// Resolves to epoch milliseconds, using `year` for syslog stamps that lack one.
    pub fn to_epoch_ms(self, year: i32) -> i64 {
        match self {
            Stamp::EpochMs(ms) => ms,
            Stamp::NoYear { month, day, secs } => {
                days_from_civil(year, month, day) * 86_400_000 + i64::from(secs) * 1000
            }
        }
    }
}

/// One framed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Detected form.
    pub format: Format,
    /// Timestamp, when the line has a parseable one.
    pub stamp: Option<Stamp>,
    /// Host name field (empty when absent).
    pub host: &'a [u8],
    /// Program / syslog tag (empty when absent).
    pub program: &'a [u8],
    /// Process id, when given.
    pub pid: Option<u32>,
    /// The message (inner prefixes not yet stripped).
    pub msg: Cow<'a, [u8]>,
    /// Journal cursor (`__CURSOR`), journal lines only.
    pub cursor: Option<Cow<'a, str>>,
    /// The fields journald itself adds to an entry (journal lines only): what the process is,
    /// as opposed to what its message says it is.
    pub trusted: Option<Trusted<'a>>,
}

/// Fields journald adds to an entry from the kernel's view of the sender; a client cannot set them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trusted<'a> {
    /// `_COMM`: the process name (settable by the process itself; empty when absent).
    pub comm: &'a [u8],
    /// `_EXE`: the executable's path (empty when absent, e.g. the process had already exited).
    pub exe: &'a [u8],
    /// `_UID`: the sender's user id, from the socket credentials.
    pub uid: Option<u32>,
    /// `_TRANSPORT`: `syslog`, `journal`, `stdout`, `kernel`, … (empty when absent).
    pub transport: &'a [u8],
}

impl Trusted<'_> {
    /// True when the entry carries none of the trusted fields (not written by journald).
    pub fn is_empty(&self) -> bool {
        self.comm.is_empty()
            && self.exe.is_empty()
            && self.uid.is_none()
            && self.transport.is_empty()
    }
}

impl<'a> Frame<'a> {
    fn plain(format: Format, msg: &'a [u8]) -> Frame<'a> {
        Frame {
            format,
            stamp: None,
            host: b"",
            program: b"",
            pid: None,
            msg: Cow::Borrowed(msg),
            cursor: None,
            trusted: None,
        }
    }
}

/// Frames one line (without its trailing newline; a trailing `\r` is ignored).
pub fn frame(line: &[u8]) -> Frame<'_> {
    let line = trim_end(line);
    let mut s = line;
    // Leading whitespace and a UTF-8 BOM never matter.
    if let Some(rest) = s.strip_prefix(b"\xEF\xBB\xBF") {
        s = rest;
    }
    let s = trim_start(s);
    // `journalctl -o json-seq` starts each record with an ASCII record separator.
    let s = s.strip_prefix(b"\x1e").unwrap_or(s);
    match s.first() {
        Some(b'{') => {
            if let Some(f) = frame_journal(s) {
                return f;
            }
        }
        Some(b'<') => {
            if let Some(f) = frame_pri(s) {
                return f;
            }
        }
        Some(b'A'..=b'Z') => {
            if let Some(f) = frame_bsd(s).or_else(|| frame_weekday(s)) {
                return f;
            }
        }
        Some(b'0'..=b'9') => {
            if let Some(f) = frame_numeric(s) {
                return f;
            }
        }
        Some(b'[') => {
            if let Some(f) = frame_monotonic(s) {
                return f;
            }
        }
        _ => {}
    }
    frame_untimed(s).unwrap_or_else(|| Frame::plain(Format::Plain, s))
}

/// A syslog line without its timestamp, as journald's `short` output minus the date or as
/// fail2ban reads the journal: `host prog[pid]: message`, `prog[pid]: message` or
/// `host prog: message`. A bare `word: message` is not taken for a tag (sshd writes `error: …`).
fn frame_untimed(s: &[u8]) -> Option<Frame<'_>> {
    if !s.first().is_some_and(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let f = host_tag(Format::Untimed, None, s);
    let tagged = !f.program.is_empty() && (f.pid.is_some() || !f.host.is_empty());
    tagged.then_some(f)
}

/// `<PRI>` followed by RFC 5424 (`1 `), ISO or BSD syslog.
fn frame_pri(s: &[u8]) -> Option<Frame<'_>> {
    let close = s.iter().take(5).position(|&b| b == b'>')?;
    if close < 2 || !s[1..close].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let rest = &s[close + 1..];
    if let Some(r) = rest.strip_prefix(b"1 ") {
        return frame_5424(r);
    }
    match rest.first() {
        Some(b'0'..=b'9') => frame_numeric(rest),
        Some(b'A'..=b'Z') => frame_bsd(rest),
        _ => None,
    }
}

/// RFC 5424 after `<PRI>1 `.
fn frame_5424(s: &[u8]) -> Option<Frame<'_>> {
    let (ts, rest) = split_token(s)?;
    let stamp = if ts == b"-" {
        None
    } else {
        Some(Stamp::EpochMs(parse_iso(ts)?.0))
    };
    let (host, rest) = split_token(rest)?;
    let (app, rest) = split_token(rest)?;
    let (procid, rest) = split_token(rest)?;
    let (_msgid, rest) = split_token(rest)?;
    // Structured data: `-` or one or more `[id k="v" …]`; quoted values may contain `]`.
    let rest = if let Some(r) = rest.strip_prefix(b"-") {
        r
    } else if rest.first() == Some(&b'[') {
        let mut i = 0;
        let mut in_quotes = false;
        let mut depth_open = false;
        while i < rest.len() {
            let b = rest[i];
            if in_quotes {
                if b == b'\\' {
                    i += 1;
                } else if b == b'"' {
                    in_quotes = false;
                }
            } else if b == b'"' {
                in_quotes = true;
            } else if b == b'[' {
                depth_open = true;
            } else if b == b']' {
                depth_open = false;
                if rest.get(i + 1) != Some(&b'[') {
                    i += 1;
                    break;
                }
            }
            i += 1;
        }
        if depth_open {
            return None;
        }
        &rest[i.min(rest.len())..]
    } else {
        return None;
    };
    let msg = rest.strip_prefix(b" ").unwrap_or(rest);
    let msg = msg.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(msg);
    Some(Frame {
        format: Format::Rfc5424,
        stamp,
        host: nil(host),
        program: nil(app),
        pid: parse_u32(procid),
        msg: Cow::Borrowed(msg),
        cursor: None,
        trusted: None,
    })
}

fn nil(f: &[u8]) -> &[u8] {
    if f == b"-" {
        b""
    } else {
        f
    }
}

/// Lines starting with a digit: ISO timestamp or Mosquitto epoch prefix.
fn frame_numeric(s: &[u8]) -> Option<Frame<'_>> {
    // Mosquitto: `1795801273: message`.
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if (9..=11).contains(&digits)
        && s.get(digits) == Some(&b':')
        && s.get(digits + 1) == Some(&b' ')
    {
        let secs = parse_u64(&s[..digits])?;
        return Some(Frame {
            format: Format::Mosquitto,
            stamp: Some(Stamp::EpochMs(
                i64::try_from(secs).ok()?.saturating_mul(1000),
            )),
            host: b"",
            program: b"",
            pid: None,
            msg: Cow::Borrowed(&s[digits + 2..]),
            cursor: None,
            trusted: None,
        });
    }
    if (9..=11).contains(&digits) && s.get(digits) == Some(&b'.') {
        // `journalctl -o short-unix`: `1709287200.123456 host tag[pid]: message`.
        let frac = s[digits + 1..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if frac > 0 && s.get(digits + 1 + frac) == Some(&b' ') {
            let secs = i64::try_from(parse_u64(&s[..digits])?).ok()?;
            let ms3 = s[digits + 1..digits + 1 + frac.min(3)]
                .iter()
                .fold(0i64, |a, &b| a * 10 + i64::from(b - b'0'))
                * 10i64.pow(3 - frac.min(3) as u32);
            let rest = trim_start(&s[digits + 2 + frac..]);
            return Some(host_tag(
                Format::Syslog,
                Some(Stamp::EpochMs(secs * 1000 + ms3)),
                rest,
            ));
        }
    }
    let (ms, used) = parse_iso(s)?;
    let rest = &s[used..];
    if let Some(msg) = rest.strip_prefix(b": ") {
        // Mosquitto with an ISO `log_timestamp_format`.
        return Some(Frame {
            format: Format::Mosquitto,
            stamp: Some(Stamp::EpochMs(ms)),
            host: b"",
            program: b"",
            pid: None,
            msg: Cow::Borrowed(msg),
            cursor: None,
            trusted: None,
        });
    }
    let rest = rest.strip_prefix(b" ")?;
    Some(host_tag(
        Format::Iso,
        Some(Stamp::EpochMs(ms)),
        trim_start(rest),
    ))
}

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// BSD syslog: `Mmm dd hh:mm:ss[.frac] …`.
fn frame_bsd(s: &[u8]) -> Option<Frame<'_>> {
    let (stamp, used) = parse_bsd_date(s)?;
    let rest = match s.get(used) {
        None => &s[used..],
        Some(b' ') => &s[used + 1..],
        Some(_) => return None,
    };
    Some(host_tag(Format::Syslog, Some(stamp), trim_start(rest)))
}

/// `Mmm dd hh:mm:ss[.frac]`; returns the stamp and the bytes used.
fn parse_bsd_date(s: &[u8]) -> Option<(Stamp, usize)> {
    if s.len() < 14 {
        return None;
    }
    let month = MONTHS.iter().position(|m| &s[..3] == *m)? as u8 + 1;
    if s[3] != b' ' {
        return None;
    }
    let mut i = 4;
    if s[i] == b' ' {
        i += 1;
    }
    let d0 = s.get(i).copied()?;
    if !d0.is_ascii_digit() {
        return None;
    }
    let mut day = d0 - b'0';
    i += 1;
    if let Some(&d1) = s.get(i) {
        if d1.is_ascii_digit() {
            day = day * 10 + (d1 - b'0');
            i += 1;
        }
    }
    if s.get(i) != Some(&b' ') || day == 0 || day > 31 {
        return None;
    }
    i += 1;
    let secs = parse_hms(s.get(i..i + 8)?)?;
    i += 8;
    if s.get(i) == Some(&b'.') {
        i += 1;
        while s.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
    }
    Some((Stamp::NoYear { month, day, secs }, i))
}

const WEEKDAYS: [&[u8; 3]; 7] = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];

/// Lines starting with a weekday: `journalctl -o short-full` (`Fri 2024-03-01 10:00:00 UTC host
/// tag: …`) and BusyBox/OpenWrt `logread` (`Fri Mar  1 10:00:00 2024 authpriv.warn tag: …`).
fn frame_weekday(s: &[u8]) -> Option<Frame<'_>> {
    if s.len() < 20 || !WEEKDAYS.iter().any(|w| &s[..3] == *w) || s[3] != b' ' {
        return None;
    }
    let r = &s[4..];
    if let Some((ms, used)) = parse_iso(r) {
        // The zone token (`UTC`, `CET`, `+0100`) follows; the time is taken as UTC.
        let rest = trim_start(&r[used..]);
        let rest = match split_token(rest) {
            Some((zone, after))
                if zone
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-') =>
            {
                after
            }
            _ => rest,
        };
        return Some(host_tag(Format::Syslog, Some(Stamp::EpochMs(ms)), rest));
    }
    let (stamp, used) = parse_bsd_date(r)?;
    let rest = r.get(used..)?.strip_prefix(b" ")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits != 4 || rest.get(4) != Some(&b' ') {
        return None;
    }
    let year = i32::try_from(parse_u64(&rest[..4])?).ok()?;
    let stamp = Stamp::EpochMs(stamp.to_epoch_ms(year));
    Some(host_tag(
        Format::Syslog,
        Some(stamp),
        trim_start(&rest[5..]),
    ))
}

/// `journalctl -o short-monotonic`: `[  510.990087] host tag[pid]: message`.
fn frame_monotonic(s: &[u8]) -> Option<Frame<'_>> {
    let close = s.iter().take(32).position(|&b| b == b']')?;
    let inner = &s[1..close];
    if inner.is_empty()
        || !inner
            .iter()
            .all(|&b| b.is_ascii_digit() || b == b'.' || b == b' ')
    {
        return None;
    }
    let rest = trim_start(&s[close + 1..]);
    let f = host_tag(Format::Syslog, None, rest);
    // A kernel ring-buffer line (`[12.3] IN=eth0 …`) has no tag: keep the whole line then.
    if f.program.is_empty() {
        return None;
    }
    Some(f)
}

/// A syslog `facility.level` token (BusyBox syslogd, OpenWrt logread).
fn is_facility_level(tok: &[u8]) -> bool {
    const LEVELS: [&[u8]; 11] = [
        b"emerg", b"alert", b"crit", b"err", b"error", b"warn", b"warning", b"notice", b"info",
        b"debug", b"panic",
    ];
    let Some(dot) = tok.iter().position(|&b| b == b'.') else {
        return false;
    };
    let (fac, lvl) = (&tok[..dot], &tok[dot + 1..]);
    !fac.is_empty()
        && fac
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && LEVELS.contains(&lvl)
}

/// The `[host] tag[pid]: message` part shared by BSD syslog and ISO lines.
fn host_tag(format: Format, stamp: Option<Stamp>, s: &[u8]) -> Frame<'_> {
    let mut f = Frame {
        format,
        stamp,
        host: b"",
        program: b"",
        pid: None,
        msg: Cow::Borrowed(s),
        cursor: None,
        trusted: None,
    };
    let mut s = s;
    // BusyBox syslogd and logread put `facility.level` before or after the host.
    if let Some((tok, rest)) = split_token(s) {
        if is_facility_level(tok) {
            s = rest;
            f.msg = Cow::Borrowed(s);
        }
    }
    let Some((tok1, rest1)) = split_token(s) else {
        // A single token: either a tag with nothing after it, or a bare message.
        if let Some((prog, pid)) = parse_tag(s) {
            f.program = prog;
            f.pid = pid;
            f.msg = Cow::Borrowed(b"");
        }
        return f;
    };
    if let Some((prog, pid)) = parse_tag(tok1) {
        f.program = prog;
        f.pid = pid;
        f.msg = Cow::Borrowed(rest1);
        return f;
    }
    // tok1 is the host; the tag follows.
    f.host = tok1;
    let mut rest1 = rest1;
    if let Some((tok, rest)) = split_token(rest1) {
        if is_facility_level(tok) {
            rest1 = rest;
        }
    }
    match split_token(rest1) {
        Some((tok2, rest2)) => {
            if let Some((prog, pid)) = parse_tag(tok2) {
                f.program = prog;
                f.pid = pid;
                f.msg = Cow::Borrowed(rest2);
            } else {
                f.msg = Cow::Borrowed(rest1);
            }
        }
        None => {
            if let Some((prog, pid)) = parse_tag(rest1) {
                f.program = prog;
                f.pid = pid;
                f.msg = Cow::Borrowed(b"");
            } else {
                f.msg = Cow::Borrowed(rest1);
            }
        }
    }
    f
}

/// A syslog tag token: `prog:`, `prog[pid]:`, `[prog]:`, `[prog]`, `prog(x)[pid]:`.
fn parse_tag(tok: &[u8]) -> Option<(&[u8], Option<u32>)> {
    if tok.is_empty() || tok.len() > 96 {
        return None;
    }
    if tok[0] == b'[' {
        let t = tok.strip_suffix(b":").unwrap_or(tok);
        let inner = t.strip_prefix(b"[")?.strip_suffix(b"]")?;
        if inner.is_empty() || !inner.iter().all(|&b| is_tag_byte(b)) {
            return None;
        }
        return Some((inner, None));
    }
    let t = tok.strip_suffix(b":")?;
    if let Some(open) = t.iter().rposition(|&b| b == b'[') {
        let pid = t[open + 1..].strip_suffix(b"]")?;
        let prog = &t[..open];
        if prog.is_empty() || !prog.iter().all(|&b| is_tag_byte(b)) {
            return None;
        }
        return Some((prog, parse_u32(pid)));
    }
    if t.is_empty() || !t.iter().all(|&b| is_tag_byte(b)) || t.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some((t, None))
}

fn is_tag_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/' | b'(' | b')' | b'@')
}

/// Parses `YYYY-MM-DDThh:mm:ss[.frac](Z|±hh:mm)`; returns epoch ms and bytes used.
pub(crate) fn parse_iso(s: &[u8]) -> Option<(i64, usize)> {
    if s.len() < 19 {
        return None;
    }
    let year = i32::try_from(parse_u64(&s[0..4])?).ok()?;
    if s[4] != b'-' || s[7] != b'-' || !(s[10] == b'T' || s[10] == b' ') {
        return None;
    }
    let month = u8::try_from(parse_u64(&s[5..7])?).ok()?;
    let day = u8::try_from(parse_u64(&s[8..10])?).ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let secs = parse_hms(&s[11..19])?;
    let mut i = 19;
    let mut frac_ms: i64 = 0;
    if s.get(i) == Some(&b'.') || s.get(i) == Some(&b',') {
        i += 1;
        let start = i;
        while s.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 3 {
                frac_ms = frac_ms * 10 + i64::from(s[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..3 {
            frac_ms *= 10;
        }
    }
    let mut offset_s: i64 = 0;
    match s.get(i) {
        Some(b'Z') => i += 1,
        Some(&sign @ (b'+' | b'-')) => {
            let hh = parse_u64(s.get(i + 1..i + 3)?)?;
            let (mm, used) = if s.get(i + 3) == Some(&b':') {
                (parse_u64(s.get(i + 4..i + 6)?)?, 6)
            } else {
                (parse_u64(s.get(i + 3..i + 5)?)?, 5)
            };
            let off = i64::try_from(hh * 3600 + mm * 60).ok()?;
            offset_s = if sign == b'+' { off } else { -off };
            i += used;
        }
        _ => {}
    }
    let days = days_from_civil(year, month, day);
    let ms = (days * 86_400 + i64::from(secs) - offset_s) * 1000 + frac_ms;
    Some((ms, i))
}

fn parse_hms(s: &[u8]) -> Option<u32> {
    if s.len() != 8 || s[2] != b':' || s[5] != b':' {
        return None;
    }
    let h = parse_u64(&s[0..2])?;
    let m = parse_u64(&s[3..5])?;
    let sec = parse_u64(&s[6..8])?;
    if h > 23 || m > 59 || sec > 60 {
        return None;
    }
    u32::try_from(h * 3600 + m * 60 + sec).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub(crate) fn days_from_civil(y: i32, m: u8, d: u8) -> i64 {
    let y = i64::from(y) - i64::from(m <= 2);
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Civil year of an epoch-ms instant.
pub(crate) fn year_of_epoch_ms(ms: i64) -> i32 {
    let days = ms.div_euclid(86_400_000);
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    i32::try_from(y).unwrap_or(1970)
}

fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u64::from(b - b'0');
    }
    Some(v)
}

fn parse_u32(s: &[u8]) -> Option<u32> {
    parse_u64(s).and_then(|v| u32::try_from(v).ok())
}

/// Next space-delimited token and the rest after the separating spaces.
fn split_token(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let sp = s.iter().position(|&b| b == b' ')?;
    Some((&s[..sp], trim_start(&s[sp + 1..])))
}

fn trim_start(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
    &s[n..]
}

fn trim_end(s: &[u8]) -> &[u8] {
    let mut e = s.len();
    while e > 0 && matches!(s[e - 1], b'\r' | b'\n') {
        e -= 1;
    }
    &s[..e]
}

#[derive(Deserialize, Default)]
struct JournalEntry<'a> {
    #[serde(rename = "MESSAGE", default)]
    message: Option<JournalText<'a>>,
    #[serde(rename = "SYSLOG_IDENTIFIER", borrow, default)]
    ident: Option<JournalText<'a>>,
    #[serde(rename = "_COMM", borrow, default)]
    comm: Option<JournalText<'a>>,
    #[serde(rename = "_EXE", borrow, default)]
    exe: Option<JournalText<'a>>,
    #[serde(rename = "_UID", borrow, default)]
    uid: Option<JournalText<'a>>,
    #[serde(rename = "_TRANSPORT", borrow, default)]
    transport: Option<JournalText<'a>>,
    #[serde(rename = "SYSLOG_PID", borrow, default)]
    syslog_pid: Option<JournalText<'a>>,
    #[serde(rename = "_PID", borrow, default)]
    pid: Option<JournalText<'a>>,
    #[serde(rename = "_HOSTNAME", borrow, default)]
    hostname: Option<JournalText<'a>>,
    #[serde(rename = "__REALTIME_TIMESTAMP", borrow, default)]
    realtime: Option<JournalText<'a>>,
    #[serde(rename = "__CURSOR", borrow, default)]
    cursor: Option<Cow<'a, str>>,
    /// Docker `json-file` logs: `{"log":"…\n","stream":"stderr","time":"…"}`.
    #[serde(borrow, default)]
    log: Option<JournalText<'a>>,
    #[serde(borrow, default)]
    time: Option<JournalText<'a>>,
}

/// A journal field: a string, or an array of bytes when the value is not valid UTF-8.
enum JournalText<'a> {
    Text(Cow<'a, str>),
    Bytes(Vec<u8>),
    /// Several values for one field; the first is used.
    Many(Vec<JournalText<'a>>),
}

/// Deserialised by hand rather than as an untagged enum, which would buffer every value and try
/// each variant in turn: journal lines are parsed once per entry, and this is most of the cost.
impl<'de: 'a, 'a> Deserialize<'de> for JournalText<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextVisitor(std::marker::PhantomData))
    }
}

struct TextVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> serde::de::Visitor<'de> for TextVisitor<'a> {
    type Value = JournalText<'a>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string, an array of bytes or an array of values")
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(JournalText::Text(Cow::Borrowed(v)))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(JournalText::Text(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(JournalText::Text(Cow::Owned(v)))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut bytes = Vec::new();
        let mut many = Vec::new();
        while let Some(e) = seq.next_element::<JournalElem<'a>>()? {
            match e {
                JournalElem::Byte(b) => bytes.push(b),
                JournalElem::Value(v) => many.push(v),
            }
        }
        Ok(if many.is_empty() {
            JournalText::Bytes(bytes)
        } else {
            JournalText::Many(many)
        })
    }
}

/// One element of an array value: a byte, or a value of a field given several times.
enum JournalElem<'a> {
    Byte(u8),
    Value(JournalText<'a>),
}

impl<'de: 'a, 'a> Deserialize<'de> for JournalElem<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = JournalElem<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte or a field value")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                u8::try_from(v)
                    .map(JournalElem::Byte)
                    .map_err(|_| E::custom("byte out of range"))
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                v: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(JournalElem::Value(JournalText::Text(Cow::Borrowed(v))))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(JournalElem::Value(JournalText::Text(Cow::Owned(
                    v.to_owned(),
                ))))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(JournalElem::Value(JournalText::Text(Cow::Owned(v))))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<Self::Value, A::Error> {
                TextVisitor(std::marker::PhantomData)
                    .visit_seq(seq)
                    .map(JournalElem::Value)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

impl<'a> JournalText<'a> {
    fn into_bytes(self) -> Cow<'a, [u8]> {
        match self {
            JournalText::Text(Cow::Borrowed(s)) => Cow::Borrowed(s.as_bytes()),
            JournalText::Text(Cow::Owned(s)) => Cow::Owned(s.into_bytes()),
            JournalText::Bytes(b) => Cow::Owned(b),
            JournalText::Many(v) => v
                .into_iter()
                .next()
                .map(JournalText::into_bytes)
                .unwrap_or(Cow::Borrowed(b"")),
        }
    }

    fn as_borrowed(&self) -> &'a [u8] {
        match self {
            JournalText::Text(Cow::Borrowed(s)) => s.as_bytes(),
            _ => b"",
        }
    }

    fn number(&self) -> Option<u64> {
        match self {
            JournalText::Text(s) => parse_u64(s.as_bytes()),
            _ => None,
        }
    }
}

/// One `journalctl -o json` line.
fn frame_journal(s: &[u8]) -> Option<Frame<'_>> {
    let e = match fast_journal_entry(s) {
        Some(e) => e,
        None => serde_json::from_slice::<JournalEntry<'_>>(s).ok()?,
    };
    journal_frame(e)
}

/// The fields of a `journalctl -o json` line read without a JSON parser, for the common case:
/// one object whose fields of interest are strings without escapes. Anything else in those
/// fields (escapes, control characters, other types, duplicates) or a container log line
/// gives `None`, and the line goes through `serde_json`. Values of other fields are
/// skipped by their brackets and quotes, not validated.
fn fast_journal_entry(s: &[u8]) -> Option<JournalEntry<'_>> {
    let mut e = JournalEntry::default();
    let mut i = skip_ws(s, 1);
    if s.first() != Some(&b'{') {
        return None;
    }
    if s.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            if s.get(i) != Some(&b'"') {
                return None;
            }
            let (key, key_esc, end) = raw_string(s, i + 1)?;
            i = skip_ws(s, end);
            if s.get(i) != Some(&b':') {
                return None;
            }
            i = skip_ws(s, i + 1);
            let slot = match (key_esc, key) {
                (true, _) => return None,
                (false, b"MESSAGE") => Some(&mut e.message),
                (false, b"SYSLOG_IDENTIFIER") => Some(&mut e.ident),
                (false, b"_COMM") => Some(&mut e.comm),
                (false, b"_EXE") => Some(&mut e.exe),
                (false, b"_UID") => Some(&mut e.uid),
                (false, b"_TRANSPORT") => Some(&mut e.transport),
                (false, b"SYSLOG_PID") => Some(&mut e.syslog_pid),
                (false, b"_PID") => Some(&mut e.pid),
                (false, b"_HOSTNAME") => Some(&mut e.hostname),
                (false, b"__REALTIME_TIMESTAMP") => Some(&mut e.realtime),
                (false, b"__CURSOR") => {
                    if s.get(i) != Some(&b'"') || e.cursor.is_some() {
                        return None;
                    }
                    let (v, esc, end) = raw_string(s, i + 1)?;
                    if esc {
                        return None;
                    }
                    e.cursor = Some(Cow::Borrowed(std::str::from_utf8(v).ok()?));
                    i = skip_ws(s, end);
                    match s.get(i) {
                        Some(b',') => {
                            i = skip_ws(s, i + 1);
                            continue;
                        }
                        Some(b'}') => {
                            i += 1;
                            break;
                        }
                        _ => return None,
                    }
                }
                (false, b"log" | b"time") => return None,
                _ => None,
            };
            match slot {
                Some(slot) => {
                    if s.get(i) != Some(&b'"') || slot.is_some() {
                        return None;
                    }
                    let (v, esc, end) = raw_string(s, i + 1)?;
                    if esc {
                        return None;
                    }
                    let v = std::str::from_utf8(v).ok()?;
                    *slot = Some(JournalText::Text(Cow::Borrowed(v)));
                    i = end;
                }
                None => i = skip_value(s, i)?,
            }
            i = skip_ws(s, i);
            match s.get(i) {
                Some(b',') => i = skip_ws(s, i + 1),
                Some(b'}') => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    (skip_ws(s, i) == s.len()).then_some(e)
}

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while matches!(s.get(i), Some(b' ' | b'\t' | b'\r' | b'\n')) {
        i += 1;
    }
    i
}

/// The string starting at `i` (after its opening quote): its raw bytes, whether it has escapes
/// (or control characters, which only a JSON parser should judge), and the index after it.
fn raw_string(s: &[u8], start: usize) -> Option<(&[u8], bool, usize)> {
    let mut i = start;
    let mut esc = false;
    loop {
        let rel = s
            .get(i..)?
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        i += rel;
        match s[i] {
            b'"' => return Some((&s[start..i], esc, i + 1)),
            b'\\' => {
                esc = true;
                i += 2;
            }
            _ => {
                esc = true;
                i += 1;
            }
        }
    }
}

/// Skips one JSON value of a field not read (string, number, literal, array or object).
fn skip_value(s: &[u8], mut i: usize) -> Option<usize> {
    let mut depth = 0usize;
    loop {
        match *s.get(i)? {
            b'"' => i = raw_string(s, i + 1)?.2,
            b'[' | b'{' => {
                depth += 1;
                i += 1;
            }
            b']' | b'}' => {
                if depth == 0 {
                    return Some(i);
                }
                depth -= 1;
                i += 1;
            }
            b',' if depth == 0 => return Some(i),
            _ => i += 1,
        }
        if depth == 0 && matches!(s.get(i), Some(b',' | b'}' | b']')) {
            return Some(i);
        }
    }
}

/// A journal line framed by the fast path (when it applies) and by `serde_json` (tests).
#[cfg(test)]
pub(crate) fn frame_journal_both_ways(s: &[u8]) -> (Option<Frame<'_>>, Option<Frame<'_>>) {
    (
        fast_journal_entry(s).and_then(journal_frame),
        serde_json::from_slice::<JournalEntry<'_>>(s)
            .ok()
            .and_then(journal_frame),
    )
}

fn journal_frame(e: JournalEntry<'_>) -> Option<Frame<'_>> {
    let program = e
        .ident
        .as_ref()
        .map(JournalText::as_borrowed)
        .filter(|p| !p.is_empty())
        .or_else(|| e.comm.as_ref().map(JournalText::as_borrowed))
        .unwrap_or(b"");
    let pid = e
        .syslog_pid
        .as_ref()
        .and_then(JournalText::number)
        .or_else(|| e.pid.as_ref().and_then(JournalText::number))
        .and_then(|p| u32::try_from(p).ok());
    let stamp = e
        .realtime
        .as_ref()
        .and_then(JournalText::number)
        .and_then(|us| i64::try_from(us / 1000).ok())
        .or_else(|| {
            e.time
                .as_ref()
                .and_then(|t| parse_iso(t.as_borrowed()).map(|(ms, _)| ms))
        })
        .map(Stamp::EpochMs);
    if e.message.is_none() {
        if let Some(log) = e.log {
            // A container's output line: frame it like a line of a text file.
            let text = log.into_bytes();
            return Some(match text {
                Cow::Borrowed(b) => {
                    let mut inner = frame(b);
                    inner.stamp = inner.stamp.or(stamp);
                    inner
                }
                Cow::Owned(b) => Frame {
                    format: Format::Journal,
                    stamp,
                    host: b"",
                    program: b"",
                    pid: None,
                    msg: Cow::Owned(trim_end(&b).to_vec()),
                    cursor: None,
                    trusted: None,
                },
            });
        }
    }
    Some(Frame {
        format: Format::Journal,
        stamp,
        host: e
            .hostname
            .as_ref()
            .map(JournalText::as_borrowed)
            .unwrap_or(b""),
        program,
        pid,
        msg: e
            .message
            .map(JournalText::into_bytes)
            .unwrap_or(Cow::Borrowed(b"")),
        cursor: e.cursor,
        trusted: Some(Trusted {
            comm: e.comm.as_ref().map(JournalText::as_borrowed).unwrap_or(b""),
            exe: e.exe.as_ref().map(JournalText::as_borrowed).unwrap_or(b""),
            uid: e
                .uid
                .as_ref()
                .and_then(JournalText::number)
                .and_then(|u| u32::try_from(u).ok()),
            transport: e
                .transport
                .as_ref()
                .map(JournalText::as_borrowed)
                .unwrap_or(b""),
        }),
    })
}

/// Occurrences one `message repeated N times: [ … ]` line counts at most.
///
/// rsyslog writes such a line when a run of identical messages ends, so N is the length of one
/// run of identical lines from one process. For a per-connection sshd process that is bounded by
/// its authentication tries (6 by default); only a single-process server (Mosquitto) logging the
/// same refusal over and over with nothing else in between comes near this cap, and by then
/// every alert threshold of the default rules is long exceeded. The cap bounds what one line
/// can add to the counts when its number is corrupted or written by a local process
/// (`logger -t sshd` passes the tag check as any forged line does), and the analysis work one
/// line costs: each occurrence goes through the connection context and the per-source rules.
/// The live monitor also charges every occurrence to the source's line budget.
pub const MAX_REPEAT: u32 = 1000;

/// rsyslog's repeated-message reduction (`$RepeatedMsgReduction on`, or the rate limiter of
/// `imuxsock`): `sshd[41]: message repeated 3 times: [ Failed password for root from … ssh2]`
/// stands for 3 more occurrences of the bracketed message, from the same program, pid and host.
///
/// Returns the count (at most [`MAX_REPEAT`]) and the inner message when `f` is such a line:
/// a text line written by a syslog daemon (BSD syslog, ISO 8601, RFC 5424 or untimed) with a
/// tag, whose message *starts* with the phrase (the part rsyslog writes, before anything the
/// program or its client wrote), a count of at least 1 and the message in brackets up to the
/// end of the line. The inner message keeps the line's tag: it is not framed again, so it cannot
/// claim another program. Journal entries are never unwrapped: journald does not reduce
/// repeats, so there the phrase would be the program's own text.
pub fn repeated<'a>(f: &Frame<'a>) -> Option<(u32, &'a [u8])> {
    if !matches!(
        f.format,
        Format::Syslog | Format::Iso | Format::Rfc5424 | Format::Untimed
    ) || f.program.is_empty()
    {
        return None;
    }
    let Cow::Borrowed(msg) = f.msg else {
        return None;
    };
    let rest = trim_start(msg).strip_prefix(b"message repeated ")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let (number, rest) = rest.split_at(digits);
    let inner = rest.strip_prefix(b" times: [")?.strip_suffix(b"]")?;
    let n = number.iter().fold(0u32, |n, &d| {
        n.saturating_mul(10).saturating_add(u32::from(d - b'0'))
    });
    if n == 0 {
        return None;
    }
    Some((n.min(MAX_REPEAT), trim_start(inner)))
}

/// Removes prefixes daemons put inside the message: a Mosquitto epoch (`1795801481: `),
/// Dropbear's `[pid] Mmm dd hh:mm:ss `, Solaris' `[ID 800047 auth.info] `.
pub fn strip_inner_prefix(msg: &[u8]) -> &[u8] {
    let mut m = trim_start(msg);
    match m.first() {
        Some(b'0'..=b'9') => {
            let digits = m.iter().take_while(|b| b.is_ascii_digit()).count();
            if (9..=11).contains(&digits) && m.get(digits..digits + 2) == Some(b": ") {
                m = &m[digits + 2..];
            }
        }
        Some(b'[') => {
            if let Some(rest) = m.strip_prefix(b"[ID ") {
                if let Some(close) = rest.iter().take(64).position(|&b| b == b']') {
                    m = trim_start(&rest[close + 1..]);
                }
            } else if let Some(close) = m.iter().take(12).position(|&b| b == b']') {
                if close > 1 && m[1..close].iter().all(u8::is_ascii_digit) {
                    let rest = trim_start(&m[close + 1..]);
                    if let Some((_, used)) = parse_bsd_date(rest) {
                        m = trim_start(&rest[used..]);
                    }
                }
            }
        }
        _ => {}
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg<'a>(f: &'a Frame<'a>) -> &'a str {
        std::str::from_utf8(&f.msg).unwrap()
    }

    #[test]
    fn bsd_syslog_with_host_and_pid() {
        let f = frame(
            b"Feb 25 14:34:10 belka sshd[31602]: Failed password for x from 1.2.3.4 port 1 ssh2",
        );
        assert_eq!(f.format, Format::Syslog);
        assert_eq!(f.host, b"belka");
        assert_eq!(f.program, b"sshd");
        assert_eq!(f.pid, Some(31602));
        assert_eq!(msg(&f), "Failed password for x from 1.2.3.4 port 1 ssh2");
        assert_eq!(
            f.stamp,
            Some(Stamp::NoYear {
                month: 2,
                day: 25,
                secs: 14 * 3600 + 34 * 60 + 10
            })
        );
    }

    #[test]
    fn bsd_syslog_without_host_or_with_bracketed_tag() {
        let f = frame(b"Nov 23 21:50:19 sshd[8148]: Disconnecting: x");
        assert_eq!(
            (f.host, f.program, f.pid),
            (&b""[..], &b"sshd"[..], Some(8148))
        );
        assert_eq!(msg(&f), "Disconnecting: x");
        let f = frame(b"Mar  3 00:17:22 [sshd]: User root from 1.2.3.4 not allowed");
        assert_eq!((f.host, f.program), (&b""[..], &b"sshd"[..]));
        assert_eq!(msg(&f), "User root from 1.2.3.4 not allowed");
        let f = frame(b"Jun 25 23:53:34 [sshd] User root from 1.2.3.4 not allowed");
        assert_eq!(msg(&f), "User root from 1.2.3.4 not allowed");
        let f = frame(b"Feb 7 16:01:07 linux-m899 sshd[5106]: User root");
        assert_eq!(f.host, b"linux-m899");
        let f = frame(b"Nov 25 17:12:13 webmail pop(pam_unix)[4920]: authentication failure; x");
        assert_eq!(f.program, b"pop(pam_unix)");
        assert_eq!(msg(&f), "authentication failure; x");
    }

    #[test]
    fn lines_without_a_timestamp() {
        let f = frame(b"gw sshd[812]: Failed password for root from 192.0.2.1 port 22 ssh2");
        assert_eq!(f.format, Format::Untimed);
        assert_eq!(
            (f.host, f.program, f.pid),
            (&b"gw"[..], &b"sshd"[..], Some(812))
        );
        assert_eq!(
            msg(&f),
            "Failed password for root from 192.0.2.1 port 22 ssh2"
        );
        let f = frame(b"sshd-session[9]: Connection closed by 192.0.2.1 port 4 [preauth]");
        assert_eq!(
            (f.host, f.program, f.pid),
            (&b""[..], &b"sshd-session"[..], Some(9))
        );
        let f = frame(b"gw kernel: [UFW BLOCK] IN=eth0 SRC=192.0.2.1 DPT=22");
        assert_eq!((f.host, f.program), (&b"gw"[..], &b"kernel"[..]));
        // Bare sshd messages stay bare.
        for bare in [
            "error: kex_exchange_identification: Connection closed by remote host",
            "Disconnecting: Too many authentication failures [preauth]",
            "Connection closed by 192.0.2.1 port 22 [preauth]",
            "pam_unix(sshd:auth): authentication failure; logname= uid=0",
            "Client gw-1 disconnected, not authorised.",
        ] {
            let f = frame(bare.as_bytes());
            assert_eq!((f.format, msg(&f)), (Format::Plain, bare), "{bare}");
        }
    }

    #[test]
    fn iso_and_rfc5424_lines() {
        let f = frame(b"2015-04-16T18:02:50.321974+00:00 host sshd[2716]: pam_unix(sshd:auth): x");
        assert_eq!(f.format, Format::Iso);
        assert_eq!(f.stamp, Some(Stamp::EpochMs(1_429_207_370_321)));
        assert_eq!(msg(&f), "pam_unix(sshd:auth): x");
        let f = frame(
            b"<38>1 2019-07-08T17:40:17.954167-04:00 h.example.com sshd 55555 - [timeQuality tzKnown=\"1\"][xxx@123 test=\"[brackets]\"] Failed unknown for x",
        );
        assert_eq!(f.format, Format::Rfc5424);
        assert_eq!(
            (f.host, f.program, f.pid),
            (&b"h.example.com"[..], &b"sshd"[..], Some(55555))
        );
        assert_eq!(msg(&f), "Failed unknown for x");
    }

    #[test]
    fn journal_json_lines() {
        let f = frame(br#"{"MESSAGE":"Failed \"x\"","SYSLOG_IDENTIFIER":"sshd","_PID":"42","__REALTIME_TIMESTAMP":"1795801411249695","__CURSOR":"s=1"}"#);
        assert_eq!(f.format, Format::Journal);
        assert_eq!(msg(&f), "Failed \"x\"");
        assert_eq!((f.program, f.pid), (&b"sshd"[..], Some(42)));
        assert_eq!(f.stamp, Some(Stamp::EpochMs(1_795_801_411_249)));
        assert_eq!(f.cursor.as_deref(), Some("s=1"));
        let f = frame(br#"{"MESSAGE":[104,105,255],"_COMM":"x"}"#);
        assert_eq!(&*f.msg, b"hi\xff");
        assert_eq!(f.program, b"x");
        // A field given several times; a value too large for journalctl (null); trusted fields.
        let f = frame(
            br#"{"MESSAGE":["first",[104,105]],"SYSLOG_IDENTIFIER":"sshd","_COMM":"sshd","_EXE":"/usr/sbin/sshd","_UID":"0","_TRANSPORT":"syslog","X":null,"N":5}"#,
        );
        assert_eq!(f.format, Format::Journal);
        assert_eq!(msg(&f), "first");
        let t = f.trusted.unwrap();
        assert_eq!(
            (t.comm, t.exe, t.uid, t.transport),
            (
                &b"sshd"[..],
                &b"/usr/sbin/sshd"[..],
                Some(0),
                &b"syslog"[..]
            )
        );
        let line = br#"{"__CURSOR":"s=9;i=1","_UID":"0","_COMM":"sshd","MESSAGE":"Failed password","_PID":"5","PRIORITY":"6","_CMDLINE":"\"sshd: x [priv]\"","N":[1,{"a":"]"}],"SYSLOG_IDENTIFIER":"sshd"}"#;
        let fast = fast_journal_entry(line).and_then(journal_frame).unwrap();
        assert_eq!(Some(fast), frame_journal_both_ways(line).1);
        let f = frame(br#"{"MESSAGE":null,"SYSLOG_IDENTIFIER":"sshd"}"#);
        assert_eq!((f.format, msg(&f)), (Format::Journal, ""));
    }

    #[test]
    fn journalctl_lines_take_the_fast_path_and_frame_as_the_json_parser_does() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/logs/journal/gateway-sshd-mosquitto.jsonl"
        );
        let text = std::fs::read(path).unwrap();
        let (mut fast, mut all) = (0, 0);
        for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            all += 1;
            let (f, parsed) = frame_journal_both_ways(line);
            assert!(parsed.is_some());
            if let Some(f) = f {
                fast += 1;
                assert_eq!(Some(f), parsed);
            }
        }
        assert!(
            fast * 10 >= all * 9,
            "{fast} of {all} lines on the fast path"
        );
    }

    #[test]
    fn mosquitto_and_inner_prefixes() {
        let f = frame(b"1795801273: mosquitto version 2.0.11 starting");
        assert_eq!(f.format, Format::Mosquitto);
        assert_eq!(msg(&f), "mosquitto version 2.0.11 starting");
        assert_eq!(
            strip_inner_prefix(b"1795801481: New connection"),
            b"New connection"
        );
        assert_eq!(
            strip_inner_prefix(b"[825] Jul 10 23:53:52 Bad password attempt for 'root'"),
            b"Bad password attempt for 'root'"
        );
        assert_eq!(
            strip_inner_prefix(b"[ID 800047 auth.info] Failed none"),
            b"Failed none"
        );
    }

    #[test]
    fn journalctl_short_variants_busybox_and_docker() {
        let f = frame(b"Fri 2024-03-01 10:00:00 UTC gw sshd[7]: Invalid user x from 1.2.3.4");
        assert_eq!(
            (f.host, f.program, f.pid),
            (&b"gw"[..], &b"sshd"[..], Some(7))
        );
        assert_eq!(msg(&f), "Invalid user x from 1.2.3.4");
        let f =
            frame(b"Fri Mar  1 10:00:00 2024 authpriv.warn dropbear[1234]: Bad password attempt");
        assert_eq!((f.host, f.program), (&b""[..], &b"dropbear"[..]));
        assert_eq!(msg(&f), "Bad password attempt");
        let f =
            frame(b"Mar  1 10:00:00 gw authpriv.info dropbear[9]: Child connection from 1.2.3.4:5");
        assert_eq!((f.host, f.program), (&b"gw"[..], &b"dropbear"[..]));
        let f = frame(b"1709287200.123456 gw sshd[1]: Accepted");
        assert_eq!(f.stamp, Some(Stamp::EpochMs(1_709_287_200_123)));
        assert_eq!(msg(&f), "Accepted");
        let f = frame(b"[  510.990087] gw sshd[1]: Accepted");
        assert_eq!(msg(&f), "Accepted");
        let f = frame(b"\x1e{\"MESSAGE\":\"x\"}");
        assert_eq!(msg(&f), "x");
        let f = frame(br#"{"log":"1709287200: Client <unknown> disconnected, not authorised.\n","stream":"stderr","time":"2024-03-01T10:00:00.5Z"}"#);
        assert_eq!(
            msg(&f),
            "1709287200: Client <unknown> disconnected, not authorised."
        );
    }

    #[test]
    fn civil_date_helpers_agree() {
        for &(y, m, d) in &[(1970, 1, 1), (2000, 2, 29), (2026, 12, 31), (1969, 12, 31)] {
            let ms = days_from_civil(y, m, d) * 86_400_000;
            assert_eq!(year_of_epoch_ms(ms), y);
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
    }

    #[test]
    fn rsyslog_repeated_message_lines() {
        let rep = |l: &str| {
            let f = frame(l.as_bytes());
            repeated(&f).map(|(n, m)| (n, String::from_utf8_lossy(m).into_owned()))
        };
        let inner = "Failed password for root from 192.0.2.9 port 22 ssh2";
        let want = Some((3, inner.to_owned()));
        assert_eq!(
            rep(&format!(
                "Mar  1 10:00:00 gw sshd[41]: message repeated 3 times: [ {inner}]"
            )),
            want
        );
        assert_eq!(rep(&format!("2015-04-16T18:02:50.321974+00:00 gw sshd[41]: message repeated 3 times: [ {inner}]")), want);
        assert_eq!(rep(&format!("<38>1 2019-07-08T17:40:16-04:00 gw sshd 41 - -  message repeated 3 times: [ {inner}]")), want);
        assert_eq!(
            rep(&format!(
                "gw sshd[41]: message repeated 3 times: [ {inner}]\r"
            )),
            want
        );
        // The last bracket is rsyslog's; the message may end in one of its own.
        assert_eq!(
            rep("Mar  1 10:00:00 gw sshd[41]: message repeated 2 times: [ Connection closed by 192.0.2.9 port 22 [preauth]]"),
            Some((2, "Connection closed by 192.0.2.9 port 22 [preauth]".to_owned()))
        );
        assert_eq!(
            rep(&format!(
                "Mar  1 10:00:00 gw sshd[41]: message repeated 4294967296 times: [ {inner}]"
            )),
            Some((MAX_REPEAT, inner.to_owned()))
        );
        // Not rsyslog's: count missing or zero, no closing bracket, phrase not at the start, no
        // tag, a journal entry, a Mosquitto log line.
        for l in [
            format!("Mar  1 10:00:00 gw sshd[41]: message repeated 0 times: [ {inner}]"),
            format!("Mar  1 10:00:00 gw sshd[41]: message repeated  times: [ {inner}]"),
            format!("Mar  1 10:00:00 gw sshd[41]: message repeated -3 times: [ {inner}]"),
            format!("Mar  1 10:00:00 gw sshd[41]: message repeated 3 times: [ {inner}"),
            format!("Mar  1 10:00:00 gw sshd[41]: error: message repeated 3 times: [ {inner}]"),
            format!("message repeated 3 times: [ {inner}]"),
            format!(
                r#"{{"MESSAGE":"message repeated 3 times: [ {inner}]","SYSLOG_IDENTIFIER":"sshd"}}"#
            ),
            format!("1795801273: message repeated 3 times: [ {inner}]"),
        ] {
            assert_eq!(rep(&l), None, "{l}");
        }
    }
}
