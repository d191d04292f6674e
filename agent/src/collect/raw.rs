//! What both socket sources produce: one socket, and the kernel's state numbers. A leaf: the
//! netlink and `/proc/net` readers depend on it, it depends on nothing, so that `sockets` (which
//! picks a source) sits above both readers and nothing loops back.

use std::net::SocketAddr;

/// Kernel TCP state numbers (`include/net/tcp_states.h`), shared by the UDP tables.
pub mod state {
    /// `TCP_ESTABLISHED`; also a connected UDP socket.
    pub const ESTABLISHED: u8 = 1;
    /// `TCP_SYN_SENT`: an outbound connection being opened.
    pub const SYN_SENT: u8 = 2;
    /// `TCP_FIN_WAIT1`
    pub const FIN_WAIT1: u8 = 4;
    /// `TCP_FIN_WAIT2`
    pub const FIN_WAIT2: u8 = 5;
    /// `TCP_TIME_WAIT`: closed here first, kept for 60 s.
    pub const TIME_WAIT: u8 = 6;
    /// `TCP_CLOSE`; an unconnected (bound) UDP socket.
    pub const CLOSE: u8 = 7;
    /// `TCP_CLOSE_WAIT`
    pub const CLOSE_WAIT: u8 = 8;
    /// `TCP_LAST_ACK`
    pub const LAST_ACK: u8 = 9;
    /// `TCP_LISTEN`
    pub const LISTEN: u8 = 10;
    /// `TCP_CLOSING`
    pub const CLOSING: u8 = 11;
}

/// One socket as either source reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RawSocket {
    /// Local address and port.
    pub local: SocketAddr,
    /// Remote address and port (unspecified for listening and unconnected sockets).
    pub remote: SocketAddr,
    /// Kernel state number (see [`state`]).
    pub state: u8,
    /// Owner UID.
    pub uid: u32,
    /// Socket inode (0 for sockets without a file, e.g. `TIME_WAIT`).
    pub inode: u64,
}
