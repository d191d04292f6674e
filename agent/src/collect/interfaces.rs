//! The interface address table: which interface owns a local IP address, so a socket bound to
//! (or connected from) that address can name its interface.
//!
//! Sources, all without `unsafe`:
//! - IPv4: netlink `RTM_GETADDR` over `NETLINK_ROUTE` (the label of each address, alias suffix
//!   `:N` removed). Where netlink is unavailable: the `LOCAL` host entries of
//!   `/proc/net/fib_trie`, each attributed to the interface of the most specific directly
//!   connected route in `/proc/net/route` that contains it.
//! - IPv6: `/proc/net/if_inet6` (address, index, flags, name).
//!
//! Lookups: a wildcard address has no interface; any loopback address (`127.0.0.0/8`, `::1`)
//! is `lo`; IPv4-mapped IPv6 addresses are looked up as IPv4; anything else must match an
//! address of the table exactly.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use netlink_packet_core::{NetlinkSerializable, NlasIterator};
use netlink_sys::protocols::NETLINK_ROUTE;

use super::netlink::{Dumper, NetlinkError};
use super::text::{fields, hex_u32_exact, hex_u64, lines, read_into, trim};

const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_LABEL: u16 = 3;
const AF_INET: u8 = 2;
/// `struct ifaddrmsg`: family, prefixlen, flags, scope, index (u32).
const IFADDRMSG_LEN: usize = 8;
/// Name of the loopback interface on Linux.
pub const LOOPBACK: &str = "lo";

/// Local addresses and the interfaces that own them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddrTable {
    v4: Vec<(Ipv4Addr, String)>,
    v6: Vec<(Ipv6Addr, String)>,
}

impl AddrTable {
    /// Builds a table from explicit entries (tests, fixtures).
    pub fn from_entries(entries: impl IntoIterator<Item = (IpAddr, String)>) -> AddrTable {
        let mut t = AddrTable::default();
        for (ip, name) in entries {
            match ip {
                IpAddr::V4(a) => t.v4.push((a, name)),
                IpAddr::V6(a) => t.v6.push((a, name)),
            }
        }
        t
    }

    /// Number of addresses known.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// True when no address is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The interface owning `ip`; `None` for wildcard binds and unknown addresses.
    pub fn lookup(&self, ip: IpAddr) -> Lookup<'_> {
        let ip = ip.to_canonical();
        if ip.is_unspecified() {
            return Lookup::Wildcard;
        }
        if ip.is_loopback() {
            return Lookup::Found(LOOPBACK);
        }
        let found = match ip {
            IpAddr::V4(a) => self.v4.iter().find(|(x, _)| *x == a).map(|(_, n)| n),
            IpAddr::V6(a) => self.v6.iter().find(|(x, _)| *x == a).map(|(_, n)| n),
        };
        match found {
            Some(n) => Lookup::Found(n),
            None => Lookup::Unknown,
        }
    }
}

/// Result of [`AddrTable::lookup`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// A wildcard bind (`0.0.0.0`, `::`): no interface by definition.
    Wildcard,
    /// The owning interface.
    Found(&'a str),
    /// Not an address of this machine's table (yet): the table may be stale.
    Unknown,
}

impl<'a> Lookup<'a> {
    /// The interface name, if any.
    pub fn name(self) -> Option<&'a str> {
        match self {
            Lookup::Found(n) => Some(n),
            Lookup::Wildcard | Lookup::Unknown => None,
        }
    }
}

/// Parses `/proc/net/if_inet6`: `ADDR(32 hex) IFINDEX PREFIXLEN SCOPE FLAGS NAME` per line.
/// Returns the number of malformed lines skipped.
pub fn parse_if_inet6(data: &[u8], mut each: impl FnMut(Ipv6Addr, &str)) -> u64 {
    let mut skipped = 0;
    for line in lines(data) {
        if trim(line).is_empty() {
            continue;
        }
        let mut it = fields(line);
        let parsed = (|| {
            let hex = it.next()?;
            if hex.len() != 32 {
                return None;
            }
            let mut octets = [0u8; 16];
            for (i, pair) in hex.chunks_exact(2).enumerate() {
                octets[i] = u8::try_from(hex_u64(pair)?).ok()?;
            }
            for _ in 0..4 {
                hex_u64(it.next()?)?;
            }
            let name = std::str::from_utf8(it.next()?).ok()?;
            if it.next().is_some() {
                return None;
            }
            Some((Ipv6Addr::from(octets), name))
        })();
        match parsed {
            Some((a, n)) => each(a, n),
            None => skipped += 1,
        }
    }
    skipped
}

/// Extracts the local host addresses (`/32 host LOCAL`) from `/proc/net/fib_trie`, deduplicated.
/// Returns the addresses and the number of malformed lines skipped.
pub fn parse_fib_trie_local(data: &[u8]) -> (Vec<Ipv4Addr>, u64) {
    let mut out = Vec::new();
    let mut skipped = 0;
    let mut current: Option<Ipv4Addr> = None;
    for line in lines(data) {
        let t = trim(line);
        if let Some(rest) = t.strip_prefix(b"|-- ") {
            current = std::str::from_utf8(trim(rest))
                .ok()
                .and_then(|s| s.parse().ok());
            if current.is_none() {
                skipped += 1;
            }
        } else if t.starts_with(b"/") {
            let mut it = fields(t);
            let prefix = it.next();
            let scope = it.next();
            let kind = it.next();
            if prefix == Some(b"/32") && scope == Some(b"host") && kind == Some(b"LOCAL") {
                if let Some(a) = current {
                    if !out.contains(&a) {
                        out.push(a);
                    }
                }
            }
        }
    }
    (out, skipped)
}

/// One line of `/proc/net/route`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route<'a> {
    /// Output interface.
    pub iface: &'a str,
    /// Destination network.
    pub dest: Ipv4Addr,
    /// Gateway (`0.0.0.0` for a directly connected network).
    pub gateway: Ipv4Addr,
    /// Network mask.
    pub mask: Ipv4Addr,
}

/// Parses `/proc/net/route` (header line, then tab-separated rows with addresses as `%08X` of the
/// network-order value). Returns the number of malformed lines skipped.
pub fn parse_route<'a>(data: &'a [u8], mut each: impl FnMut(Route<'a>)) -> u64 {
    let mut skipped = 0;
    for (i, line) in lines(data).enumerate() {
        let t = trim(line);
        if t.is_empty() || (i == 0 && t.starts_with(b"Iface")) {
            continue;
        }
        let mut it = fields(t);
        let parsed = (|| {
            let iface = std::str::from_utf8(it.next()?).ok()?;
            let ip = |f: &[u8]| hex_u32_exact(f).map(|v| Ipv4Addr::from(v.to_ne_bytes()));
            let dest = ip(it.next()?)?;
            let gateway = ip(it.next()?)?;
            let _flags = it.next()?;
            let _refcnt = it.next()?;
            let _use = it.next()?;
            let _metric = it.next()?;
            let mask = ip(it.next()?)?;
            Some(Route {
                iface,
                dest,
                gateway,
                mask,
            })
        })();
        match parsed {
            Some(r) => each(r),
            None => skipped += 1,
        }
    }
    skipped
}

/// Attributes each local address to the interface of the most specific directly connected route
/// containing it. Addresses without such a route are left out (a `/32` point-to-point address,
/// for instance); loopback addresses need no entry.
pub fn attribute_v4(locals: &[Ipv4Addr], routes: &[Route<'_>]) -> Vec<(Ipv4Addr, String)> {
    let mut out = Vec::with_capacity(locals.len());
    for &a in locals {
        if a.is_loopback() {
            continue;
        }
        let best = routes
            .iter()
            .filter(|r| r.gateway.is_unspecified())
            .filter(|r| {
                let m = u32::from(r.mask);
                u32::from(a) & m == u32::from(r.dest) & m
            })
            .max_by_key(|r| u32::from(r.mask).count_ones());
        if let Some(r) = best {
            out.push((a, r.iface.to_owned()));
        }
    }
    out
}

/// `RTM_GETADDR` dump request for one address family.
struct GetAddr {
    family: u8,
}

impl NetlinkSerializable for GetAddr {
    fn message_type(&self) -> u16 {
        RTM_GETADDR
    }
    fn buffer_len(&self) -> usize {
        IFADDRMSG_LEN
    }
    fn serialize(&self, buffer: &mut [u8]) {
        buffer.fill(0);
        buffer[0] = self.family;
    }
}

/// Decodes one `RTM_NEWADDR` payload into an IPv4 address and the interface name (its label
/// without an alias suffix). Other families and incomplete messages give `None`.
pub fn decode_newaddr_v4(payload: &[u8]) -> Option<(Ipv4Addr, String)> {
    if payload.len() < IFADDRMSG_LEN || payload[0] != AF_INET {
        return None;
    }
    let mut local = None;
    let mut address = None;
    let mut label = None;
    for nla in NlasIterator::new(&payload[IFADDRMSG_LEN..]) {
        let nla = nla.ok()?;
        let v = nla.value();
        match nla.kind() {
            IFA_LOCAL if v.len() == 4 => local = Some(Ipv4Addr::new(v[0], v[1], v[2], v[3])),
            IFA_ADDRESS if v.len() == 4 => address = Some(Ipv4Addr::new(v[0], v[1], v[2], v[3])),
            IFA_LABEL => {
                let v = v.split(|&b| b == 0).next().unwrap_or_default();
                label = std::str::from_utf8(v).ok().map(str::to_owned);
            }
            _ => {}
        }
    }
    let mut name = label?;
    // An alias label `eth0:1` belongs to device `eth0` (device names cannot contain ':').
    if let Some(colon) = name.find(':') {
        name.truncate(colon);
    }
    if name.is_empty() {
        return None;
    }
    Some((local.or(address)?, name))
}

/// Reads the table. `route` is the `NETLINK_ROUTE` socket, opened lazily; `None` after a failed
/// open means netlink is not used (fixtures, or unavailable) and `/proc/net` serves IPv4 too.
#[derive(Debug)]
pub struct AddrReader {
    route: Option<Dumper>,
    use_netlink: bool,
}

/// What went wrong while reading the table; the table is still built from what could be read.
#[derive(Debug, Default)]
pub struct AddrProblems {
    /// Netlink failure (the `/proc` fallback was used for IPv4).
    pub netlink: Option<NetlinkError>,
    /// Unreadable files, with their paths.
    pub unreadable: Vec<(std::path::PathBuf, std::io::Error)>,
    /// Malformed lines skipped.
    pub skipped: u64,
}

impl AddrReader {
    /// `use_netlink`: try `RTM_GETADDR` for IPv4 before `/proc/net/fib_trie`.
    pub fn new(use_netlink: bool) -> AddrReader {
        AddrReader {
            route: None,
            use_netlink,
        }
    }

    /// Builds a fresh table from `proc_root` (and netlink when enabled).
    pub fn read(&mut self, proc_root: &Path, buf: &mut Vec<u8>) -> (AddrTable, AddrProblems) {
        let mut table = AddrTable::default();
        let mut problems = AddrProblems::default();
        let mut have_v4 = false;
        if self.use_netlink {
            match self.read_netlink_v4(&mut table.v4) {
                Ok(()) => have_v4 = true,
                Err(e) => {
                    self.route = None;
                    table.v4.clear();
                    problems.netlink = Some(e);
                }
            }
        }
        if !have_v4 {
            let trie = proc_root.join("net/fib_trie");
            match read_into(&trie, buf) {
                Ok(data) => {
                    let (locals, skipped) = parse_fib_trie_local(data);
                    problems.skipped += skipped;
                    let route_path = proc_root.join("net/route");
                    let mut route_buf = Vec::new();
                    match read_into(&route_path, &mut route_buf) {
                        Ok(rdata) => {
                            let mut routes = Vec::new();
                            problems.skipped += parse_route(rdata, |r| routes.push(r));
                            table.v4 = attribute_v4(&locals, &routes);
                        }
                        Err(e) => problems.unreadable.push((route_path, e)),
                    }
                }
                Err(e) => problems.unreadable.push((trie, e)),
            }
        }
        let v6 = proc_root.join("net/if_inet6");
        match read_into(&v6, buf) {
            Ok(data) => {
                problems.skipped += parse_if_inet6(data, |a, n| table.v6.push((a, n.to_owned())));
            }
            // No IPv6 in this kernel: an empty table is the truth, not a failure.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => problems.unreadable.push((v6, e)),
        }
        (table, problems)
    }

    fn read_netlink_v4(&mut self, out: &mut Vec<(Ipv4Addr, String)>) -> Result<(), NetlinkError> {
        if self.route.is_none() {
            self.route = Some(Dumper::open(NETLINK_ROUTE)?);
        }
        let dumper = self
            .route
            .as_mut()
            .expect("the route socket was opened just above");
        dumper.dump(GetAddr { family: AF_INET }, |t, payload| {
            if t == RTM_NEWADDR {
                if let Some(e) = decode_newaddr_v4(payload) {
                    out.push(e);
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_handles_wildcards_loopback_and_mapped_addresses() {
        let t = AddrTable::from_entries([
            ("10.0.2.15".parse().unwrap(), "eth0".to_owned()),
            ("2001:db8::2".parse().unwrap(), "wlan0".to_owned()),
        ]);
        assert_eq!(t.lookup("0.0.0.0".parse().unwrap()), Lookup::Wildcard);
        assert_eq!(t.lookup("::".parse().unwrap()), Lookup::Wildcard);
        assert_eq!(t.lookup("127.0.0.53".parse().unwrap()), Lookup::Found("lo"));
        assert_eq!(t.lookup("::1".parse().unwrap()), Lookup::Found("lo"));
        assert_eq!(
            t.lookup("::ffff:10.0.2.15".parse().unwrap()),
            Lookup::Found("eth0")
        );
        assert_eq!(
            t.lookup("2001:db8::2".parse().unwrap()),
            Lookup::Found("wlan0")
        );
        assert_eq!(t.lookup("192.0.2.9".parse().unwrap()), Lookup::Unknown);
    }

    #[test]
    fn if_inet6_lines_parse_and_bad_ones_are_counted() {
        let data = b"fe8000000000000000fc00fffe000001 04 40 20 80     eth0\n00000000000000000000000000000001 01 80 10 80       lo\nshort 01\n20010db8000000000000000000000002 05 40 00 00 wlan0 extra\n";
        let mut v = Vec::new();
        let skipped = parse_if_inet6(data, |a, n| v.push((a, n.to_owned())));
        assert_eq!(skipped, 2);
        assert_eq!(
            v,
            vec![
                ("fe80::fc:ff:fe00:1".parse().unwrap(), "eth0".to_owned()),
                ("::1".parse().unwrap(), "lo".to_owned())
            ]
        );
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn fib_trie_and_route_attribute_local_addresses() {
        let trie = b"Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     +-- 127.0.0.0/8 2 0 2\n           |-- 127.0.0.1\n              /32 host LOCAL\n     +-- 192.0.2.0/24 2 0 2\n           |-- 192.0.2.0\n              /24 link UNICAST\n           |-- 192.0.2.2\n              /32 host LOCAL\n        |-- 192.0.2.255\n           /32 link BROADCAST\nLocal:\n           |-- 192.0.2.2\n              /32 host LOCAL\n";
        let (locals, skipped) = parse_fib_trie_local(trie);
        assert_eq!(skipped, 0);
        assert_eq!(
            locals,
            vec![Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(192, 0, 2, 2)]
        );
        let route = b"Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\neth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\neth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let mut routes = Vec::new();
        assert_eq!(parse_route(route, |r| routes.push(r)), 0);
        assert_eq!(routes.len(), 2);
        assert_eq!(
            attribute_v4(&locals, &routes),
            vec![(Ipv4Addr::new(192, 0, 2, 2), "eth0".to_owned())]
        );
    }

    #[test]
    fn newaddr_payload_decodes_label_without_alias() {
        let mut p = vec![AF_INET, 24, 0, 0, 2, 0, 0, 0];
        // IFA_ADDRESS 10.0.0.1
        p.extend_from_slice(&8u16.to_ne_bytes());
        p.extend_from_slice(&IFA_ADDRESS.to_ne_bytes());
        p.extend_from_slice(&[10, 0, 0, 1]);
        // IFA_LOCAL 10.0.0.2
        p.extend_from_slice(&8u16.to_ne_bytes());
        p.extend_from_slice(&IFA_LOCAL.to_ne_bytes());
        p.extend_from_slice(&[10, 0, 0, 2]);
        // IFA_LABEL "eth0:1\0" (7 bytes + 1 pad)
        p.extend_from_slice(&11u16.to_ne_bytes());
        p.extend_from_slice(&IFA_LABEL.to_ne_bytes());
        p.extend_from_slice(b"eth0:1\0\0");
        assert_eq!(
            decode_newaddr_v4(&p),
            Some((Ipv4Addr::new(10, 0, 0, 2), "eth0".to_owned()))
        );
        assert_eq!(decode_newaddr_v4(&p[..4]), None);
        let mut v6 = p.clone();
        v6[0] = 10;
        assert_eq!(decode_newaddr_v4(&v6), None);
    }
}
