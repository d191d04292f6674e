//! Entry points for the fuzz targets in `agent/fuzz/` (one function per target). Not part of
//! the public API; each takes arbitrary bytes and must never panic.

use crate::collect::{gate, interfaces, netlink, network, process, procnet, snmp, system};

/// `/proc/net/{tcp,tcp6,udp,udp6}`.
pub fn proc_net(data: &[u8]) {
    let mut n = 0usize;
    let _ = procnet::parse(data, u32::MAX, |_| n += 1);
}

/// `/proc/net/dev`, through the delta logic twice (the second pass sees its own baseline).
pub fn net_dev(data: &[u8]) {
    let filter = network::IfFilter::new(&[], &[], true);
    let mut state = network::NetState::default();
    let _ = state.update(data, &filter);
    let _ = state.update(data, &filter);
}

/// `/proc/net/snmp`, `/proc/net/snmp6`, `/proc/net/sockstat` and `/proc/net/sockstat6`.
pub fn snmp(data: &[u8]) {
    let mut c = snmp::parse_snmp(data).unwrap_or([None; snmp::COUNTERS]);
    let _ = snmp::add_snmp6(data, &mut c);
    let mut s = snmp::SnmpState::default();
    let _ = s.update(c);
    let _ = gate::parse_sockstat(data);
    let _ = gate::parse_sockstat6(data);
}

/// `/proc/<pid>/stat`.
pub fn proc_stat(data: &[u8]) {
    let _ = process::parse_stat(data);
    let _ = process::socket_inode(data);
}

/// `/proc/stat`, `/proc/meminfo`, `/proc/loadavg`, `/proc/uptime`.
pub fn system(data: &[u8]) {
    let _ = system::parse_stat_cpu(data);
    let _ = system::parse_stat_forks(data);
    let _ = system::parse_meminfo_used_pct(data);
    let _ = system::parse_loadavg_1m(data);
    let _ = system::parse_uptime_s(data);
}

/// `/proc/net/if_inet6`, `/proc/net/fib_trie`, `/proc/net/route`.
pub fn interfaces(data: &[u8]) {
    let _ = interfaces::parse_if_inet6(data, |_, _| {});
    let (locals, _) = interfaces::parse_fib_trie_local(data);
    let mut routes = Vec::new();
    let _ = interfaces::parse_route(data, |r| routes.push(r));
    let _ = interfaces::attribute_v4(&locals, &routes);
}

/// One netlink datagram: message framing, `inet_diag_msg` and `RTM_NEWADDR` payloads.
pub fn netlink(data: &[u8]) {
    let seq = data
        .get(8..12)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_ne_bytes);
    let _ = netlink::parse_batch(data, seq, |_, payload| {
        let _ = netlink::decode_inet(payload);
        let _ = interfaces::decode_newaddr_v4(payload);
    });
}

/// Decodes `data` as a Device Defender answer in JSON and in CBOR, on an accepted and a rejected
/// topic, through the parser the transports use; must never panic. An error names its topic,
/// and kept texts respect their cap.
pub fn defender_response(data: &[u8]) {
    use crate::transport::response::{
        parse_response, report_id_of, Encoding, Response, MAX_TEXT_CHARS,
    };
    for (enc, topic) in [
        (Encoding::Json, "$aws/things/fuzz/defender/metrics/json"),
        (Encoding::Cbor, "$aws/things/fuzz/defender/metrics/cbor"),
    ] {
        for rejected in [false, true] {
            let topic = format!("{topic}/{}", if rejected { "rejected" } else { "accepted" });
            match parse_response(&topic, data, enc, rejected) {
                Ok(Response::Accepted { report_id }) => {
                    assert!(!rejected && report_id != Some(0));
                }
                Ok(Response::Rejected {
                    report_id,
                    code,
                    message,
                }) => {
                    assert!(rejected && report_id != Some(0));
                    assert!(code.chars().count() <= MAX_TEXT_CHARS);
                    assert!(message.chars().count() <= MAX_TEXT_CHARS);
                }
                Err(e) => assert!(e.to_string().contains(&topic)),
            }
        }
        let _ = report_id_of(data, enc);
    }
}

/// One arbitrary log line through framing, classification and the full per-line analysis,
/// then every line of the input, with and without a line budget for repeated messages. The
/// counts must cover every occurrence: one per line plus the further occurrences of
/// `message repeated N times` lines, never more than the cap allows.
pub fn log_line(data: &[u8]) {
    let f = crate::logs::frame(data);
    let _ = crate::logs::classify(&f.msg);
    if let Some((n, inner)) = crate::logs::format::repeated(&f) {
        assert!((1..=crate::logs::format::MAX_REPEAT).contains(&n));
        assert!(inner.len() < data.len());
    }
    let mut a = crate::logs::Analyzer::new(crate::logs::Rules::default());
    let mut s = crate::logs::Stream::new();
    let mut lines = 0u64;
    for (i, line) in data.split(|&b| b == b'\n').enumerate() {
        let o = if i % 2 == 0 {
            a.line(&mut s, line, 1_800_000_000_000)
        } else {
            a.line_within(&mut s, line, 1_800_000_000_000, |n| n / 2)
        };
        assert!((1..=crate::logs::format::MAX_REPEAT).contains(&o.occurrences));
        lines += 1;
    }
    let acc = a.take();
    assert_eq!(acc.lines, lines);
    assert_eq!(acc.counts.total(), acc.lines + acc.repeated);
    assert!(acc.repeated <= lines * u64::from(crate::logs::format::MAX_REPEAT - 1));
}

/// Arbitrary bytes as a configuration file: parsed and validated, never a panic.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::config::Config::from_toml_in(text, &crate::config::Environment::fixed());
    }
}

/// Arbitrary bytes as a certificate file (PEM bundle or DER), as the device audit reads it.
pub fn certificate(data: &[u8]) {
    let _ = crate::audit::certs::parse_bundle(data);
}

/// Greengrass IPC frames: the incremental decoder over the input as a byte stream, and every
/// decoded frame's standard headers and re-encoding.
pub fn ipc_frame(data: &[u8]) {
    use crate::transport::greengrass::frame::{decode_frame, Decoder};
    let mut d = Decoder::new(64 * 1024);
    for chunk in data.chunks(97) {
        d.push(chunk);
        while let Ok(Some(f)) = d.next_frame() {
            let _ = (f.message_type(), f.flags(), f.stream_id());
            let bytes = f.encode(64 * 1024).expect("a decoded frame re-encodes");
            assert_eq!(
                decode_frame(&bytes, 64 * 1024).as_ref(),
                Ok(&f),
                "a re-encoded frame decodes to itself"
            );
        }
    }
}
