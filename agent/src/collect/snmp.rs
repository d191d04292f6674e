//! Kernel protocol counters from `/proc/net/snmp` (TCP, and UDP over IPv4) and
//! `/proc/net/snmp6` (UDP over IPv6), as per-interval deltas.
//!
//! Scans, beacons and floods made of short-lived connections rarely show in a socket snapshot;
//! they show here (`OutRsts` for a TCP port scan, `NoPorts` for a UDP scan).
//!
//! ```text
//! Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets …
//! Tcp: 1 200 120000 -1 55 2 0 42 …
//! ```
//! `/proc/net/snmp` pairs a header line with a value line per protocol; `/proc/net/snmp6` has
//! one `Name value` per line. The TCP MIB is shared by IPv4 and IPv6; UDP is summed over both.
//! A counter that goes down (namespace re-created, wrap) contributes zero and is re-baselined.

use crate::metrics;

use super::text::{dec_i64, fields, lines};

/// The counters reported, in [`COUNTER_METRICS`] order.
pub const COUNTERS: usize = 15;
/// Counters reported as metrics (the first ones); the others only feed derived metrics.
pub const REPORTED: usize = 12;
/// Index of IP datagrams handed to the IP layer (`Ip: OutRequests` + `Ip6OutRequests`).
pub const IP_OUT_REQUESTS: usize = 12;
/// Index of ICMP messages sent (`Icmp: OutMsgs` + `Icmp6OutMsgs`).
pub const ICMP_OUT_MSGS: usize = 13;
/// Index of `Tcp: ActiveOpens`.
pub const TCP_ACTIVE_OPENS: usize = 0;
/// Index of `Tcp: PassiveOpens`.
pub const TCP_PASSIVE_OPENS: usize = 1;
/// Index of `Tcp: AttemptFails`.
pub const TCP_ATTEMPT_FAILS: usize = 2;
/// Index of `Tcp: EstabResets`.
pub const TCP_ESTAB_RESETS: usize = 3;
/// Index of `Tcp: CurrEstab`, a gauge (connections now in `ESTABLISHED`), read for
/// [`super::gate`] only.
pub const TCP_CURR_ESTAB: usize = 14;
/// Index of TCP segments sent.
pub const TCP_OUT_SEGS: usize = 11;
/// Index of UDP datagrams sent.
pub const UDP_OUT_DATAGRAMS: usize = 7;

/// Metric name of each counter.
pub const COUNTER_METRICS: [&str; REPORTED] = [
    metrics::TCP_ACTIVE_OPENS,
    metrics::TCP_PASSIVE_OPENS,
    metrics::TCP_ATTEMPT_FAILS,
    metrics::TCP_ESTAB_RESETS,
    metrics::TCP_OUT_RSTS,
    metrics::TCP_IN_ERRS,
    metrics::UDP_IN_DATAGRAMS,
    metrics::UDP_OUT_DATAGRAMS,
    metrics::UDP_NO_PORTS,
    metrics::UDP_IN_ERRORS,
    metrics::TCP_IN_SEGS,
    metrics::TCP_OUT_SEGS,
];

/// `(protocol, column)` in `/proc/net/snmp` for each counter.
const SNMP_COLUMNS: [(&[u8], &[u8]); COUNTERS] = [
    (b"Tcp:", b"ActiveOpens"),
    (b"Tcp:", b"PassiveOpens"),
    (b"Tcp:", b"AttemptFails"),
    (b"Tcp:", b"EstabResets"),
    (b"Tcp:", b"OutRsts"),
    (b"Tcp:", b"InErrs"),
    (b"Udp:", b"InDatagrams"),
    (b"Udp:", b"OutDatagrams"),
    (b"Udp:", b"NoPorts"),
    (b"Udp:", b"InErrors"),
    (b"Tcp:", b"InSegs"),
    (b"Tcp:", b"OutSegs"),
    (b"Ip:", b"OutRequests"),
    (b"Icmp:", b"OutMsgs"),
    (b"Tcp:", b"CurrEstab"),
];

/// `/proc/net/snmp6` names added to the UDP counters (index into [`COUNTERS`]).
const SNMP6_NAMES: [(&[u8], usize); 6] = [
    (b"Udp6InDatagrams", 6),
    (b"Udp6OutDatagrams", 7),
    (b"Udp6NoPorts", 8),
    (b"Udp6InErrors", 9),
    (b"Ip6OutRequests", IP_OUT_REQUESTS),
    (b"Icmp6OutMsgs", ICMP_OUT_MSGS),
];

/// IP datagrams sent that neither TCP, UDP nor ICMP accounts for, from one tick's deltas: what
/// raw sockets send (crafted SYNs, hand-made packets). TCP segmentation offload makes TCP count
/// more segments than the IP layer sees datagrams, so the estimate is clamped at zero and can
/// only under-count while bulk TCP transfers run.
pub fn raw_packets_out(deltas: &Counters) -> Option<u64> {
    let ip = deltas[IP_OUT_REQUESTS]?;
    let accounted = deltas[TCP_OUT_SEGS]?
        .saturating_add(deltas[UDP_OUT_DATAGRAMS]?)
        .saturating_add(deltas[ICMP_OUT_MSGS].unwrap_or(0));
    Some(ip.saturating_sub(accounted))
}

/// Cumulative counter values; `None` where the file did not carry the counter.
pub type Counters = [Option<u64>; COUNTERS];

/// Why a `/proc/net/snmp` file could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnmpFormatError {
    /// A header line has no value line after it, or the two differ in length.
    #[error("line {0}: {1} header and value lines do not pair up")]
    Unpaired(usize, String),
    /// A value is not a number.
    #[error("line {line}: {proto} {column} is not a number")]
    NotANumber {
        /// 1-based line.
        line: usize,
        /// Protocol prefix.
        proto: String,
        /// Column name.
        column: String,
    },
}

/// Parses `/proc/net/snmp` into the TCP and UDP counters it carries.
pub fn parse_snmp(data: &[u8]) -> Result<Counters, SnmpFormatError> {
    let mut out: Counters = [None; COUNTERS];
    let mut it = lines(data).enumerate();
    while let Some((i, header)) = it.next() {
        let mut hf = fields(header);
        let Some(proto) = hf.next() else { continue };
        if !SNMP_COLUMNS.iter().any(|(p, _)| *p == proto) {
            continue;
        }
        let unpaired = || SnmpFormatError::Unpaired(i + 1, String::from_utf8_lossy(proto).into());
        let Some((j, values)) = it.next() else {
            return Err(unpaired());
        };
        let mut vf = fields(values);
        if vf.next() != Some(proto) {
            return Err(unpaired());
        }
        loop {
            let (name, value) = match (hf.next(), vf.next()) {
                (Some(n), Some(v)) => (n, v),
                (None, None) => break,
                _ => return Err(unpaired()),
            };
            let Some(k) = SNMP_COLUMNS
                .iter()
                .position(|(p, col)| *p == proto && *col == name)
            else {
                continue;
            };
            // MaxConn is -1; the counters read here are never negative, so a negative one is
            // data damage and rejected like any other non-number.
            let v = dec_i64(value)
                .and_then(|v| u64::try_from(v).ok())
                .ok_or_else(|| SnmpFormatError::NotANumber {
                    line: j + 1,
                    proto: String::from_utf8_lossy(proto).into(),
                    column: String::from_utf8_lossy(name).into(),
                })?;
            out[k] = Some(v);
        }
    }
    Ok(out)
}

/// Parses `/proc/net/snmp6` and adds its UDP counters into `into`. Returns the number of
/// malformed lines skipped.
pub fn add_snmp6(data: &[u8], into: &mut Counters) -> u64 {
    let mut skipped = 0;
    for line in lines(data) {
        let mut f = fields(line);
        let (Some(name), Some(value), None) = (f.next(), f.next(), f.next()) else {
            if !line.trim_ascii().is_empty() {
                skipped += 1;
            }
            continue;
        };
        if let Some(&(_, k)) = SNMP6_NAMES.iter().find(|(n, _)| *n == name) {
            match super::text::dec_u64(value) {
                Some(v) => into[k] = Some(into[k].unwrap_or(0).saturating_add(v)),
                None => skipped += 1,
            }
        }
    }
    skipped
}

/// Previous values and the delta logic.
#[derive(Debug, Default)]
pub struct SnmpState {
    prev: Option<Counters>,
}

impl SnmpState {
    /// Returns the per-counter deltas since the previous call (zero on the first call, and for a
    /// counter that went down); `None` for counters missing now.
    pub fn update(&mut self, cur: Counters) -> Counters {
        let mut out: Counters = [None; COUNTERS];
        for k in 0..COUNTERS {
            out[k] = cur[k].map(|c| {
                let prev = self.prev.as_ref().and_then(|p| p[k]);
                prev.map_or(0, |p| c.saturating_sub(p))
            });
        }
        self.prev = Some(cur);
        out
    }

    /// Forgets the baseline (after a failed read, the next good one starts over).
    pub fn reset(&mut self) {
        self.prev = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNMP: &[u8] = b"Ip: Forwarding DefaultTTL\nIp: 2 64\nTcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors\nTcp: 1 200 120000 -1 55 2 3 42 0 5685 3240 0 7 49 0\nUdp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors\nUdp: 106 4 5 107 0 0 0 0 0\nUdpLite: InDatagrams NoPorts\nUdpLite: 0 0\n";

    #[test]
    fn snmp_columns_are_found_by_name() {
        let c = parse_snmp(SNMP).unwrap();
        assert_eq!(
            c,
            [
                Some(55),
                Some(2),
                Some(3),
                Some(42),
                Some(49),
                Some(7),
                Some(106),
                Some(107),
                Some(4),
                Some(5),
                Some(5685),
                Some(3240),
                None,
                None,
                Some(0)
            ]
        );
    }

    #[test]
    fn raw_packets_are_what_ip_sent_beyond_tcp_udp_and_icmp() {
        let mut d: Counters = [Some(0); COUNTERS];
        d[IP_OUT_REQUESTS] = Some(5_120);
        d[TCP_OUT_SEGS] = Some(100);
        d[UDP_OUT_DATAGRAMS] = Some(15);
        d[ICMP_OUT_MSGS] = Some(5);
        assert_eq!(raw_packets_out(&d), Some(5_000));
        // Segmentation offload: TCP counts more than IP saw; never negative.
        d[TCP_OUT_SEGS] = Some(9_000);
        assert_eq!(raw_packets_out(&d), Some(0));
        d[IP_OUT_REQUESTS] = None;
        assert_eq!(raw_packets_out(&d), None);
    }

    #[test]
    fn snmp6_udp_counters_are_added() {
        let mut c = parse_snmp(SNMP).unwrap();
        let skipped = add_snmp6(
            b"Ip6InReceives \t1\nUdp6InDatagrams\t10\nUdp6NoPorts   2\ngarbage\nUdp6OutDatagrams x\n",
            &mut c,
        );
        assert_eq!(skipped, 2);
        assert_eq!(c[6], Some(116));
        assert_eq!(c[8], Some(6));
        assert_eq!(c[7], Some(107));
    }

    #[test]
    fn unpaired_or_non_numeric_lines_are_errors_naming_the_line() {
        let e = parse_snmp(b"Tcp: ActiveOpens PassiveOpens\nTcp: 1\n").unwrap_err();
        assert_eq!(e, SnmpFormatError::Unpaired(1, "Tcp:".into()));
        let e = parse_snmp(b"Tcp: ActiveOpens\n").unwrap_err();
        assert!(matches!(e, SnmpFormatError::Unpaired(1, _)));
        let e = parse_snmp(b"Udp: NoPorts\nUdp: x\n").unwrap_err();
        assert_eq!(e.to_string(), "line 2: Udp: NoPorts is not a number");
    }

    #[test]
    fn deltas_start_at_zero_and_resets_count_zero() {
        let mut s = SnmpState::default();
        let mut c: Counters = [Some(10); COUNTERS];
        assert_eq!(s.update(c), [Some(0); COUNTERS]);
        c[0] = Some(15);
        c[1] = Some(3);
        c[2] = None;
        let d = s.update(c);
        assert_eq!(d[0], Some(5));
        assert_eq!(d[1], Some(0));
        assert_eq!(d[2], None);
        assert_eq!(d[3], Some(0));
    }
}
