//! Socket tables: listening TCP, bound unconnected UDP, and established TCP, IPv4 and IPv6.
//!
//! The primary source is netlink `NETLINK_SOCK_DIAG` (inet_diag) with a kernel-side state
//! filter: the kernel returns only the sockets asked for, in binary, instead of formatting every
//! socket as text; one hash-table walk serves IPv4 and IPv6 TCP (see `netlink.rs`). On this
//! machine that is about a tenth of the CPU time of reading `/proc/net/{tcp,tcp6,udp,udp6}`. The
//! `/proc/net/{tcp,tcp6,udp,udp6}` parser is the fallback: used when `[collect] netlink = false`,
//! when the netlink socket cannot be opened (then for the rest of the run), and for a tick
//! whose netlink dump failed (netlink is retried on the next tick).
//!
//! UDP has no listening state: a bound, unconnected UDP socket (state `CLOSE`, no peer) is what
//! receives datagrams from anyone, so that is what "listening UDP" means here.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::snapshot::{ListenPort, TcpConn};

use super::interfaces::{AddrTable, Lookup};
use super::netlink::{NetlinkError, Proto, SockDiag};
use super::procnet;
use super::raw::state;
use super::text::read_into;

pub use super::raw::RawSocket;

/// TCP states of a connection with a peer, from the first SYN sent to the end of `TIME_WAIT`
/// (not `SYN_RECV`: a half-open inbound connection names no destination of the gateway).
pub const TCP_CONNECTED_STATES: u32 = (1 << state::ESTABLISHED)
    | (1 << state::SYN_SENT)
    | (1 << state::FIN_WAIT1)
    | (1 << state::FIN_WAIT2)
    | (1 << state::TIME_WAIT)
    | (1 << state::CLOSE_WAIT)
    | (1 << state::LAST_ACK)
    | (1 << state::CLOSING);
/// States asked for TCP: listening, and every connected state (established connections are
/// reported; the others, short-lived or closing, feed the destination tracker).
pub const TCP_STATES: u32 = (1 << state::LISTEN) | TCP_CONNECTED_STATES;
/// States asked for UDP: unconnected.
pub const UDP_STATES: u32 = 1 << state::CLOSE;

/// Where a table came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketSource {
    /// netlink sock_diag
    Netlink,
    /// `/proc/net/*`
    ProcNet,
}

/// Malformed `/proc/net` lines skipped in one read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The file.
    pub path: PathBuf,
    /// Lines skipped.
    pub lines: u64,
    /// 1-based number of the first one.
    pub first_line: usize,
}

/// How one protocol's table was read.
#[derive(Debug, Default)]
pub struct ReadReport {
    /// Source that produced the table (`None` if none did).
    pub source: Option<SocketSource>,
    /// Netlink failure that caused a fall back to `/proc/net` this tick.
    pub netlink_failed: Option<NetlinkError>,
    /// True when that failure was opening the socket: netlink is off for the rest of the run.
    pub netlink_disabled: bool,
    /// Malformed lines skipped in `/proc/net` files.
    pub skipped: Vec<Skipped>,
}

/// Why a protocol's table could not be read at all.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}: {source}")]
pub struct SocketReadError {
    /// The file that failed.
    pub path: PathBuf,
    /// The error.
    #[source]
    pub source: io::Error,
}

/// Reads socket tables by netlink, falling back to `/proc/net`.
#[derive(Debug)]
pub struct SocketReader {
    proc_root: PathBuf,
    use_netlink: bool,
    diag: Option<SockDiag>,
    buf: Vec<u8>,
}

impl SocketReader {
    /// `use_netlink = false` reads `/proc/net` only.
    pub fn new(proc_root: &Path, use_netlink: bool) -> SocketReader {
        SocketReader {
            proc_root: proc_root.to_owned(),
            use_netlink,
            diag: None,
            buf: Vec::new(),
        }
    }

    /// True while netlink is (still) the primary source.
    pub fn uses_netlink(&self) -> bool {
        self.use_netlink
    }

    /// Replaces `out` with the `proto` sockets (IPv4 then IPv6) in the states of interest.
    pub fn read(
        &mut self,
        proto: Proto,
        out: &mut Vec<RawSocket>,
    ) -> Result<ReadReport, (ReadReport, SocketReadError)> {
        let mut report = ReadReport::default();
        out.clear();
        if self.use_netlink {
            match self.read_netlink(proto, out) {
                Ok(()) => {
                    report.source = Some(SocketSource::Netlink);
                    return Ok(report);
                }
                Err((e, opening)) => {
                    out.clear();
                    self.diag = None;
                    if opening {
                        self.use_netlink = false;
                        report.netlink_disabled = true;
                    }
                    report.netlink_failed = Some(e);
                }
            }
        }
        match read_procnet(
            &self.proc_root,
            proto,
            &mut self.buf,
            out,
            &mut report.skipped,
        ) {
            Ok(()) => {
                report.source = Some(SocketSource::ProcNet);
                Ok(report)
            }
            Err(e) => {
                out.clear();
                Err((report, e))
            }
        }
    }

    /// Replaces `out` with the listening TCP sockets only: a walk of the kernel's small
    /// listening hash, not of the established one. Netlink only; an error leaves the caller to
    /// read the whole table with [`SocketReader::read`], which also handles the fallback.
    pub fn read_tcp_listeners(&mut self, out: &mut Vec<RawSocket>) -> Result<(), NetlinkError> {
        out.clear();
        let r = match self.diag.as_mut() {
            Some(diag) => diag.dump_all(Proto::Tcp, 1 << state::LISTEN, out),
            None => Err(NetlinkError::NotOpen),
        };
        if r.is_err() {
            out.clear();
            self.diag = None;
        }
        r
    }

    fn read_netlink(
        &mut self,
        proto: Proto,
        out: &mut Vec<RawSocket>,
    ) -> Result<(), (NetlinkError, bool)> {
        let diag = match &mut self.diag {
            Some(d) => d,
            None => self.diag.insert(SockDiag::open().map_err(|e| (e, true))?),
        };
        let states = match proto {
            Proto::Tcp => TCP_STATES,
            Proto::Udp => UDP_STATES,
        };
        diag.dump_all(proto, states, out).map_err(|e| (e, false))
    }
}

/// Reads `<proc_root>/net/{tcp,tcp6}` or `{udp,udp6}` into `out`, keeping the states of
/// interest. A missing `*6` file means a kernel without IPv6 and is not an error.
pub fn read_procnet(
    proc_root: &Path,
    proto: Proto,
    buf: &mut Vec<u8>,
    out: &mut Vec<RawSocket>,
    skipped: &mut Vec<Skipped>,
) -> Result<(), SocketReadError> {
    let (files, states): ([&str; 2], u32) = match proto {
        Proto::Tcp => (["net/tcp", "net/tcp6"], TCP_STATES),
        Proto::Udp => (["net/udp", "net/udp6"], UDP_STATES),
    };
    for (i, f) in files.iter().enumerate() {
        let path = proc_root.join(f);
        let data = match read_into(&path, buf) {
            Ok(d) => d,
            Err(e) if i == 1 && e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => return Err(SocketReadError { path, source }),
        };
        let (lines, first) = procnet::parse(data, states, |s| out.push(s));
        if let Some(first_line) = first {
            skipped.push(Skipped {
                path,
                lines,
                first_line,
            });
        }
    }
    Ok(())
}

/// True for a UDP socket that receives from anyone: unconnected, with no peer.
fn is_udp_listener(s: &RawSocket) -> bool {
    s.state == state::CLOSE && s.remote.port() == 0 && s.remote.ip().is_unspecified()
}

/// Listening sockets as reported: one entry per distinct (port, address), IPv4-mapped addresses
/// shown as IPv4, sorted by port then address. `udp` selects the UDP rule for "listening".
pub fn listen_ports(
    socks: &[RawSocket],
    udp: bool,
    addrs: &AddrTable,
    owners: &HashMap<u64, String>,
) -> Vec<ListenPort> {
    let mut v: Vec<ListenPort> = socks
        .iter()
        .filter(|s| {
            s.local.port() != 0
                && if udp {
                    is_udp_listener(s)
                } else {
                    s.state == state::LISTEN
                }
        })
        .map(|s| ListenPort {
            port: s.local.port(),
            addr: s.local.ip().to_canonical(),
            interface: addrs.lookup(s.local.ip()).name().map(str::to_owned),
            process: owners.get(&s.inode).cloned(),
        })
        .collect();
    v.sort();
    // SO_REUSEPORT groups (one socket per worker) are one listener; keep the entry that names
    // a process, which sorts last among equals.
    v.dedup_by(|later, earlier| {
        if later.port == earlier.port && later.addr == earlier.addr {
            if earlier.process.is_none() {
                earlier.process = later.process.take();
            }
            true
        } else {
            false
        }
    });
    v
}

/// The owner UID of the socket with this inode, if either table holds it.
pub fn uid_of(tcp: &[RawSocket], udp: &[RawSocket], inode: u64) -> Option<u32> {
    tcp.iter()
        .chain(udp)
        .find(|s| s.inode == inode)
        .map(|s| s.uid)
}

/// Established TCP connections, IPv4-mapped addresses shown as IPv4, sorted.
pub fn established(socks: &[RawSocket], addrs: &AddrTable) -> Vec<TcpConn> {
    let mut v: Vec<TcpConn> = socks
        .iter()
        .filter(|s| s.state == state::ESTABLISHED)
        .map(|s| TcpConn {
            local: SocketAddr::new(s.local.ip().to_canonical(), s.local.port()),
            remote: SocketAddr::new(s.remote.ip().to_canonical(), s.remote.port()),
            interface: addrs.lookup(s.local.ip()).name().map(str::to_owned),
        })
        .collect();
    v.sort();
    v
}

/// True when some socket's local address is neither wildcard, loopback, nor in `addrs`: the
/// address table is stale (an address was added since it was read).
pub fn has_unknown_address(socks: &[RawSocket], addrs: &AddrTable) -> bool {
    socks
        .iter()
        .any(|s| addrs.lookup(s.local.ip()) == Lookup::Unknown)
}

/// Sorted, deduplicated inodes of the listening sockets (TCP `LISTEN`, UDP unconnected).
pub fn listening_inodes(tcp: &[RawSocket], udp: &[RawSocket], out: &mut Vec<u64>) {
    out.clear();
    out.extend(
        tcp.iter()
            .filter(|s| s.state == state::LISTEN)
            .chain(udp.iter().filter(|s| is_udp_listener(s)))
            .map(|s| s.inode)
            .filter(|&i| i != 0),
    );
    out.sort_unstable();
    out.dedup();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sock(local: &str, remote: &str, st: u8, inode: u64) -> RawSocket {
        RawSocket {
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            state: st,
            uid: 0,
            inode,
        }
    }

    fn table() -> AddrTable {
        AddrTable::from_entries([
            ("10.0.2.15".parse().unwrap(), "eth0".to_owned()),
            ("fd00::2".parse().unwrap(), "eth0".to_owned()),
        ])
    }

    #[test]
    fn listeners_resolve_interfaces_and_leave_wildcards_without_one() {
        let socks = [
            sock("0.0.0.0:22", "0.0.0.0:0", state::LISTEN, 1),
            sock("[::]:22", "[::]:0", state::LISTEN, 2),
            sock("127.0.0.1:631", "0.0.0.0:0", state::LISTEN, 3),
            sock("[::1]:631", "[::]:0", state::LISTEN, 4),
            sock("10.0.2.15:8443", "0.0.0.0:0", state::LISTEN, 5),
            sock("[fd00::2]:8883", "[::]:0", state::LISTEN, 6),
            sock("10.0.2.15:22", "10.0.2.2:5000", state::ESTABLISHED, 7),
        ];
        let mut owners = HashMap::new();
        owners.insert(1, "sshd".to_owned());
        let v = listen_ports(&socks, false, &table(), &owners);
        let got: Vec<(u16, String, Option<&str>, Option<&str>)> = v
            .iter()
            .map(|p| {
                (
                    p.port,
                    p.addr.to_string(),
                    p.interface.as_deref(),
                    p.process.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (22, "0.0.0.0".into(), None, Some("sshd")),
                (22, "::".into(), None, None),
                (631, "127.0.0.1".into(), Some("lo"), None),
                (631, "::1".into(), Some("lo"), None),
                (8443, "10.0.2.15".into(), Some("eth0"), None),
                (8883, "fd00::2".into(), Some("eth0"), None),
            ]
        );
    }

    #[test]
    fn reuseport_groups_collapse_to_one_listener_keeping_the_owner() {
        let socks = [
            sock("0.0.0.0:80", "0.0.0.0:0", state::LISTEN, 10),
            sock("0.0.0.0:80", "0.0.0.0:0", state::LISTEN, 11),
        ];
        let mut owners = HashMap::new();
        owners.insert(11, "nginx".to_owned());
        let v = listen_ports(&socks, false, &table(), &owners);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].process.as_deref(), Some("nginx"));
    }

    #[test]
    fn udp_listeners_are_unconnected_bound_sockets() {
        let socks = [
            sock("0.0.0.0:5353", "0.0.0.0:0", state::CLOSE, 1),
            sock("10.0.2.15:40000", "8.8.8.8:53", state::ESTABLISHED, 2),
            sock("[::ffff:10.0.2.15]:123", "[::]:0", state::CLOSE, 3),
        ];
        let v = listen_ports(&socks, true, &table(), &HashMap::new());
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].port, 123);
        assert_eq!(v[0].addr.to_string(), "10.0.2.15");
        assert_eq!(v[0].interface.as_deref(), Some("eth0"));
        let mut inodes = Vec::new();
        listening_inodes(&[], &socks, &mut inodes);
        assert_eq!(inodes, vec![1, 3]);
    }

    #[test]
    fn established_maps_v4_in_v6_and_names_the_local_interface() {
        let socks = [
            sock(
                "[::ffff:10.0.2.15]:22",
                "[::ffff:203.0.113.9]:5000",
                state::ESTABLISHED,
                1,
            ),
            sock("[fd00::2]:22", "[2001:db8::7]:60211", state::ESTABLISHED, 2),
            sock("0.0.0.0:22", "0.0.0.0:0", state::LISTEN, 3),
        ];
        let v = established(&socks, &table());
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].remote.to_string(), "203.0.113.9:5000");
        assert_eq!(v[0].interface.as_deref(), Some("eth0"));
        assert_eq!(v[1].remote.to_string(), "[2001:db8::7]:60211");
        assert!(!has_unknown_address(&socks, &table()));
        assert!(has_unknown_address(
            &[sock("192.0.2.1:1", "0.0.0.0:0", state::LISTEN, 1)],
            &table()
        ));
    }
}
