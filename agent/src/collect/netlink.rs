//! Netlink dumps: a small synchronous request/response loop over `netlink-sys`, used for
//! `NETLINK_SOCK_DIAG` (inet_diag socket lists, see [`SockDiag`]) and `NETLINK_ROUTE`
//! (`RTM_GETADDR`, see `interfaces.rs`).
//!
//! The socket is non-blocking: the kernel produces the first batch of a dump while handling the
//! request and each further batch while the previous one is read, so a complete dump never
//! waits. A dump that stalls anyway is abandoned after a short bounded wait instead of hanging
//! the collector. Replies are matched on the request's sequence number, so a batch left over
//! from an abandoned dump is never mistaken for the current one. Receive and request buffers
//! are owned and reused across ticks.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use netlink_packet_core::{
    DoneBuffer, ErrorBuffer, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    NetlinkSerializable, Parseable, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::constants::{
    AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP, SOCK_DIAG_BY_FAMILY,
};
use netlink_packet_sock_diag::inet::{
    ExtensionFlags, InetRequest, InetResponseHeader, SocketId, StateFlags,
};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket};

use super::raw::RawSocket;

const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
/// `MSG_TRUNC` (Linux, every architecture): `recv` returns a datagram's real length even when it
/// did not fit, so a cut reply is detected.
const MSG_TRUNC: i32 = 0x20;
/// Netlink messages are padded to 4 bytes.
const NLMSG_ALIGN: usize = 4;

/// Receive buffer. The kernel sizes dump batches up to 32 KiB when the reader's buffer allows it;
/// anything larger is detected (`MSG_TRUNC`) and reported, never silently cut.
const RECV_BUF: usize = 64 * 1024;
/// How long a dump may stall between two batches before it is abandoned.
const STALL_LIMIT: Duration = Duration::from_millis(200);

/// Why a netlink dump failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetlinkError {
    /// Opening, binding or using the socket failed.
    #[error("netlink socket: {0}")]
    Io(#[from] io::Error),
    /// The kernel answered the request with an error.
    #[error("netlink request refused by the kernel: {0}")]
    Refused(io::Error),
    /// A reply did not decode.
    #[error("malformed netlink reply: {0}")]
    Malformed(String),
    /// A reply did not fit the receive buffer.
    #[error("netlink reply of {0} bytes does not fit the {RECV_BUF}-byte receive buffer")]
    Truncated(usize),
    /// The dump stopped before its end marker.
    #[error("netlink dump stalled for {STALL_LIMIT:?} before completing")]
    Stalled,
    /// No socket is open (the last full read failed or fell back to `/proc/net`).
    #[error("no netlink sock_diag socket is open")]
    NotOpen,
}

/// What one received datagram meant for the dump in progress.
#[derive(Debug, PartialEq, Eq)]
pub enum Batch {
    /// More batches follow.
    More,
    /// The end-of-dump marker was seen.
    Done,
}

/// Walks the netlink messages of one datagram, calling `each(message_type, payload)` for every
/// message of the dump with sequence number `seq`. Messages of other sequences (left over from
/// an abandoned dump) are ignored.
pub fn parse_batch(
    data: &[u8],
    seq: u32,
    mut each: impl FnMut(u16, &[u8]),
) -> Result<Batch, NetlinkError> {
    let mut off = 0;
    while off < data.len() {
        let rest = &data[off..];
        let msg = NetlinkBuffer::new_checked(rest)
            .map_err(|e| NetlinkError::Malformed(format!("at byte {off}: {e}")))?;
        let len = msg.length() as usize;
        let payload = &rest[16..len];
        if msg.sequence_number() == seq {
            match msg.message_type() {
                NLMSG_NOOP => {}
                NLMSG_DONE => {
                    // A dump may end with an error code (e.g. -EINTR-like interruptions).
                    if payload.len() >= 4 {
                        let done = DoneBuffer::new_checked(payload)
                            .map_err(|e| NetlinkError::Malformed(e.to_string()))?;
                        if done.code() < 0 {
                            return Err(NetlinkError::Refused(io::Error::from_raw_os_error(
                                done.code().saturating_neg(),
                            )));
                        }
                    }
                    return Ok(Batch::Done);
                }
                NLMSG_ERROR => {
                    let err = ErrorBuffer::new_checked(payload)
                        .map_err(|e| NetlinkError::Malformed(e.to_string()))?;
                    return match err.code() {
                        Some(code) => Err(NetlinkError::Refused(io::Error::from_raw_os_error(
                            code.get().saturating_neg(),
                        ))),
                        // An ACK; dumps are not acked, but it ends the exchange either way.
                        None => Ok(Batch::Done),
                    };
                }
                NLMSG_OVERRUN => {
                    return Err(NetlinkError::Malformed("kernel reported overrun".into()))
                }
                t => each(t, payload),
            }
        }
        let step = len.div_ceil(NLMSG_ALIGN) * NLMSG_ALIGN;
        off = off.saturating_add(step.max(NLMSG_ALIGN));
    }
    Ok(Batch::More)
}

/// An open netlink socket that runs dumps, reusing its buffers.
pub struct Dumper {
    sock: Socket,
    seq: u32,
    req: Vec<u8>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Dumper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dumper").field("seq", &self.seq).finish()
    }
}

impl Dumper {
    /// Opens and connects a netlink socket of `protocol` (`netlink_sys::protocols::*`).
    pub fn open(protocol: isize) -> Result<Dumper, NetlinkError> {
        let mut sock = Socket::new(protocol)?;
        sock.bind_auto()?;
        sock.connect(&netlink_sys::SocketAddr::new(0, 0))?;
        sock.set_non_blocking(true)?;
        Ok(Dumper {
            sock,
            seq: 0,
            req: Vec::with_capacity(128),
            buf: vec![0; RECV_BUF],
        })
    }

    /// Sends `request` as a dump and calls `each(message_type, payload)` for every reply.
    pub fn dump<M: NetlinkSerializable>(
        &mut self,
        request: M,
        mut each: impl FnMut(u16, &[u8]),
    ) -> Result<(), NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        header.sequence_number = self.seq;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(request));
        msg.finalize();
        self.req.clear();
        self.req.resize(msg.buffer_len(), 0);
        msg.serialize(&mut self.req);
        let sent = self.sock.send(&self.req, 0)?;
        if sent != self.req.len() {
            return Err(NetlinkError::Io(io::Error::new(
                io::ErrorKind::WriteZero,
                "short netlink send",
            )));
        }
        let mut stalled_since: Option<Instant> = None;
        loop {
            let mut slice: &mut [u8] = &mut self.buf[..];
            match self.sock.recv(&mut slice, MSG_TRUNC) {
                Ok(n) if n > RECV_BUF => return Err(NetlinkError::Truncated(n)),
                Ok(n) => {
                    stalled_since = None;
                    if parse_batch(&self.buf[..n], self.seq, &mut each)? == Batch::Done {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let since = *stalled_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > STALL_LIMIT {
                        return Err(NetlinkError::Stalled);
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(e) => return Err(NetlinkError::Io(e)),
            }
        }
    }
}

/// `TCPDIAG_GETSOCK`: the original inet_diag request. Unlike `SOCK_DIAG_BY_FAMILY`, which is
/// dispatched per address family, it dumps IPv4 and IPv6 TCP sockets in **one** walk of the
/// kernel's connection hash table. That walk visits every bucket (their number scales with RAM,
/// not with the sockets in use) and dominates the cost of a TCP dump for established states,
/// so one walk instead of two halves it.
const TCPDIAG_GETSOCK: u16 = 18;
/// `sizeof(struct inet_diag_req)`: family, src_len, dst_len, ext, `inet_diag_sockid` (48
/// bytes), states, dbs.
const INET_DIAG_REQ_V1_LEN: usize = 60;

/// The `TCPDIAG_GETSOCK` dump request (all fields zero but the state filter).
struct TcpDiagCompatRequest {
    states: u32,
}

impl NetlinkSerializable for TcpDiagCompatRequest {
    fn message_type(&self) -> u16 {
        TCPDIAG_GETSOCK
    }
    fn buffer_len(&self) -> usize {
        INET_DIAG_REQ_V1_LEN
    }
    fn serialize(&self, buffer: &mut [u8]) {
        buffer.fill(0);
        buffer[52..56].copy_from_slice(&self.states.to_ne_bytes());
    }
}

/// `inet_diag` over `NETLINK_SOCK_DIAG`, with kernel-side state filters.
#[derive(Debug)]
pub struct SockDiag {
    dumper: Dumper,
    /// False once the kernel refused `TCPDIAG_GETSOCK`; per-family dumps are used from then on.
    tcp_compat: bool,
}

/// Which sockets to ask the kernel for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// TCP
    Tcp,
    /// UDP
    Udp,
}

impl SockDiag {
    /// Opens the sock_diag socket. Fails where netlink is unavailable (old kernels, seccomp,
    /// `RestrictAddressFamilies=` without `AF_NETLINK`).
    pub fn open() -> Result<SockDiag, NetlinkError> {
        Ok(SockDiag {
            dumper: Dumper::open(NETLINK_SOCK_DIAG)?,
            tcp_compat: true,
        })
    }

    /// True while TCP is dumped with one `TCPDIAG_GETSOCK` walk for both address families.
    pub fn uses_tcp_compat(&self) -> bool {
        self.tcp_compat
    }

    /// Dumps IPv4 and IPv6 sockets of `proto` in the states of `states`, appending to `out`.
    /// TCP uses one `TCPDIAG_GETSOCK` walk where the kernel supports it.
    pub fn dump_all(
        &mut self,
        proto: Proto,
        states: u32,
        out: &mut Vec<RawSocket>,
    ) -> Result<(), NetlinkError> {
        if proto == Proto::Tcp && self.tcp_compat {
            let mark = out.len();
            match self.collect(TcpDiagCompatRequest { states }, TCPDIAG_GETSOCK, out) {
                Ok(()) => return Ok(()),
                Err(NetlinkError::Refused(e)) => {
                    tracing::debug!(error = %e, "TCPDIAG_GETSOCK refused; dumping TCP per address family.");
                    out.truncate(mark);
                    self.tcp_compat = false;
                }
                Err(e) => return Err(e),
            }
        }
        self.dump(proto, false, states, out)?;
        self.dump(proto, true, states, out)
    }

    /// Dumps the IPv4 (`v6 = false`) or IPv6 sockets of `proto` whose state bit is set in
    /// `states` (bit `1 << state`, as in `/proc/net/tcp`'s `st` column), appending to `out`.
    pub fn dump(
        &mut self,
        proto: Proto,
        v6: bool,
        states: u32,
        out: &mut Vec<RawSocket>,
    ) -> Result<(), NetlinkError> {
        let request = SockDiagMessage::InetRequest(InetRequest {
            family: if v6 { AF_INET6 } else { AF_INET },
            protocol: match proto {
                Proto::Tcp => IPPROTO_TCP,
                Proto::Udp => IPPROTO_UDP,
            },
            extensions: ExtensionFlags::empty(),
            states: StateFlags::from_bits_retain(states),
            socket_id: if v6 {
                SocketId::new_v6()
            } else {
                SocketId::new_v4()
            },
        });
        self.collect(request, SOCK_DIAG_BY_FAMILY, out)
    }

    /// Runs one dump and decodes its `reply_type` messages.
    fn collect<M: NetlinkSerializable>(
        &mut self,
        request: M,
        reply_type: u16,
        out: &mut Vec<RawSocket>,
    ) -> Result<(), NetlinkError> {
        let mut bad: Option<String> = None;
        self.dumper.dump(request, |t, payload| {
            if t != reply_type {
                return;
            }
            match decode_inet(payload) {
                Ok(s) => out.push(s),
                Err(e) => {
                    bad.get_or_insert(e);
                }
            }
        })?;
        match bad {
            Some(e) => Err(NetlinkError::Malformed(e)),
            None => Ok(()),
        }
    }
}

/// Decodes one `inet_diag_msg` into a [`RawSocket`].
pub fn decode_inet(payload: &[u8]) -> Result<RawSocket, String> {
    let h = InetResponseHeader::parse(payload).map_err(|e| e.to_string())?;
    Ok(RawSocket {
        local: SocketAddr::new(h.socket_id.source_address, h.socket_id.source_port),
        remote: SocketAddr::new(
            h.socket_id.destination_address,
            h.socket_id.destination_port,
        ),
        state: h.state,
        uid: h.uid,
        inode: u64::from(h.inode),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(msg_type: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let len = 16 + payload.len();
        let mut v = Vec::new();
        v.extend_from_slice(&(len as u32).to_ne_bytes());
        v.extend_from_slice(&msg_type.to_ne_bytes());
        v.extend_from_slice(&2u16.to_ne_bytes());
        v.extend_from_slice(&seq.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v.extend_from_slice(payload);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    #[test]
    fn batch_calls_back_for_matching_sequence_only_and_sees_done() {
        let mut data = message(20, 7, &[1, 2, 3, 4]);
        data.extend(message(20, 6, &[9, 9, 9, 9]));
        data.extend(message(NLMSG_DONE, 7, &0i32.to_ne_bytes()));
        let mut seen = Vec::new();
        let r = parse_batch(&data, 7, |t, p| seen.push((t, p.to_vec()))).unwrap();
        assert_eq!(r, Batch::Done);
        assert_eq!(seen, vec![(20, vec![1, 2, 3, 4])]);
    }

    #[test]
    fn batch_reports_kernel_errors() {
        let mut payload = (-13i32).to_ne_bytes().to_vec();
        payload.extend_from_slice(&[0; 16]);
        let data = message(NLMSG_ERROR, 1, &payload);
        match parse_batch(&data, 1, |_, _| {}) {
            Err(NetlinkError::Refused(e)) => assert_eq!(e.raw_os_error(), Some(13)),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn batch_rejects_lengths_beyond_the_datagram() {
        let mut data = message(20, 1, &[0; 8]);
        data[0] = 200;
        assert!(matches!(
            parse_batch(&data, 1, |_, _| {}),
            Err(NetlinkError::Malformed(_))
        ));
        assert!(matches!(
            parse_batch(&[1, 2, 3], 1, |_, _| {}),
            Err(NetlinkError::Malformed(_))
        ));
    }

    #[test]
    fn short_inet_diag_payloads_are_errors_not_panics() {
        assert!(decode_inet(&[2, 10]).is_err());
        assert!(decode_inet(&[]).is_err());
    }
}
