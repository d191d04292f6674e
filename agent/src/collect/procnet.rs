//! Parser of `/proc/net/{tcp,tcp6,udp,udp6}`: the socket source used when netlink sock_diag is
//! unavailable (or disabled with `[collect] netlink = false`).
//!
//! Format (one header line, then one line per socket; columns separated by runs of spaces):
//!
//! ```text
//!   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
//!    0: 0100007F:0035 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 …
//! ```
//!
//! Addresses are printed as the kernel holds them in memory: IPv4 as one `%08X` of the
//! network-order `u32`, IPv6 as four such words. On a little-endian host `0100007F` is therefore
//! `127.0.0.1`; [`parse_addr`] decodes with the host's byte order, like the kernel encoded it.
//! Ports are plain hex in host order. A line that does not have this shape is skipped and
//! counted, never trusted partially.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::raw::RawSocket;
use super::text::{dec_u64, fields, hex_u32_exact, hex_u64, lines, trim};

pub use super::raw::state;

/// Decodes `ADDR:PORT` as printed in `/proc/net/*` (8 hex digits for IPv4, 32 for IPv6).
pub fn parse_addr(s: &[u8]) -> Option<SocketAddr> {
    let colon = s.iter().rposition(|&b| b == b':')?;
    let (addr, port) = (&s[..colon], &s[colon + 1..]);
    if port.is_empty() || port.len() > 4 {
        return None;
    }
    let port = u16::try_from(hex_u64(port)?).ok()?;
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(hex_u32_exact(addr)?.to_ne_bytes())),
        32 => {
            let mut octets = [0u8; 16];
            for (i, word) in addr.chunks_exact(8).enumerate() {
                octets[i * 4..i * 4 + 4].copy_from_slice(&hex_u32_exact(word)?.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Parses one socket line (already known not to be the header).
fn parse_line(line: &[u8]) -> Option<RawSocket> {
    let mut it = fields(line);
    let sl = it.next()?;
    if sl.last() != Some(&b':') || dec_u64(&sl[..sl.len() - 1]).is_none() {
        return None;
    }
    let local = parse_addr(it.next()?)?;
    let remote = parse_addr(it.next()?)?;
    if local.is_ipv4() != remote.is_ipv4() {
        return None;
    }
    let st = it.next()?;
    if st.len() != 2 {
        return None;
    }
    let state = u8::try_from(hex_u64(st)?).ok()?;
    let _queues = it.next()?;
    let _timer = it.next()?;
    let _retransmits = it.next()?;
    let uid = u32::try_from(dec_u64(it.next()?)?).ok()?;
    let _timeout = it.next()?;
    let inode = dec_u64(it.next()?)?;
    Some(RawSocket {
        local,
        remote,
        state,
        uid,
        inode,
    })
}

/// Parses a whole `/proc/net/{tcp,tcp6,udp,udp6}` file, calling `each` for every socket whose
/// state bit is set in `states` (bit `1 << state`). Returns the number of malformed lines
/// skipped, and the 1-based line number of the first one.
pub fn parse(data: &[u8], states: u32, mut each: impl FnMut(RawSocket)) -> (u64, Option<usize>) {
    let mut skipped = 0;
    let mut first_bad = None;
    for (i, line) in lines(data).enumerate() {
        let t = trim(line);
        if t.is_empty() || (i == 0 && t.starts_with(b"sl")) {
            continue;
        }
        match parse_line(t) {
            Some(s) => {
                if s.state < 32 && states & (1u32 << s.state) != 0 {
                    each(s);
                }
            }
            None => {
                skipped += 1;
                first_bad.get_or_insert(i + 1);
            }
        }
    }
    (skipped, first_bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(data: &[u8]) -> (Vec<RawSocket>, u64) {
        let mut v = Vec::new();
        let (skipped, _) = parse(data, u32::MAX, |s| v.push(s));
        (v, skipped)
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn ipv4_addresses_decode_in_kernel_byte_order() {
        assert_eq!(
            parse_addr(b"0100007F:0035"),
            Some("127.0.0.1:53".parse().unwrap())
        );
        assert_eq!(
            parse_addr(b"0F02000A:01BB"),
            Some("10.0.2.15:443".parse().unwrap())
        );
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn ipv6_addresses_decode_as_four_little_endian_words() {
        assert_eq!(
            parse_addr(b"00000000000000000000000001000000:1F90"),
            Some("[::1]:8080".parse().unwrap())
        );
        assert_eq!(
            parse_addr(b"B80D0120000000000000000001000000:0016"),
            Some("[2001:db8::1]:22".parse().unwrap())
        );
        assert_eq!(
            parse_addr(b"0000000000000000FFFF00000F02000A:0050"),
            Some("[::ffff:10.0.2.15]:80".parse().unwrap())
        );
    }

    #[test]
    fn bad_addresses_are_rejected() {
        for bad in [
            &b""[..],
            b":",
            b"0100007F",
            b"0100007F:",
            b"0100007F:10000",
            b"100007F:0035",
            b"0100007G:0035",
            b"000000000000000000000000010000:0035",
        ] {
            assert_eq!(parse_addr(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn header_and_sockets_parse_with_state_filter() {
        let data = b"  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1473 1 0000000000000000 100 0 0 10 0\n   1: 0F02000A:0016 0202000A:D431 01 00000000:00000000 02:0000A2E5 00000000     0        0 2001 4 0000000000000000 20 4 31 10 -1\n";
        let (v, skipped) = all(data);
        assert_eq!(skipped, 0);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].state, state::LISTEN);
        assert_eq!(v[0].inode, 1473);
        assert_eq!(v[1].state, state::ESTABLISHED);
        let mut listen = Vec::new();
        parse(data, 1 << state::LISTEN, |s| listen.push(s));
        assert_eq!(listen.len(), 1);
    }

    #[test]
    fn truncated_and_garbage_lines_are_skipped_and_counted() {
        let data = b"  sl  local_address rem_address   st\n   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1473\n   1: 0F02000A:0016 0202000A:D431 01 0000\ngarbage\n\n   2: 00000000:0016 00000000:0000 ZZ 00000000:00000000 00:00000000 00000000     0        0 1\n";
        let mut v = Vec::new();
        let (skipped, first) = parse(data, u32::MAX, |s| v.push(s));
        assert_eq!(v.len(), 1);
        assert_eq!(skipped, 3);
        assert_eq!(first, Some(3));
    }

    #[test]
    fn tabs_and_extra_spaces_are_tolerated() {
        let data = b"sl local rem\n\t0:\t00000000:0016    00000000:0000\t0A 00000000:00000000 00:00000000 00000000 0 0 7";
        let (v, skipped) = all(data);
        assert_eq!((v.len(), skipped), (1, 0));
        assert_eq!(v[0].inode, 7);
    }
}
