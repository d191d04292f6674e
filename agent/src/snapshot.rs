//! The types that cross stage boundaries: one [`Snapshot`] per collection tick.
//!
//! A snapshot is owned, `Send` and cheap to move. Collectors fill it, the log monitor adds its
//! per-interval counts as custom metrics, the local detector reads it, and the report aggregator
//! folds a report interval's worth of snapshots into one Device Defender report.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

/// Per-interval traffic deltas, summed over the included interfaces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetDelta {
    /// Bytes received in the interval.
    pub bytes_in: u64,
    /// Bytes sent in the interval.
    pub bytes_out: u64,
    /// Packets received in the interval.
    pub packets_in: u64,
    /// Packets sent in the interval.
    pub packets_out: u64,
}

impl NetDelta {
    /// Adds another delta, saturating (deltas are already clamped, so this never saturates in practice).
    pub fn add(&mut self, o: &NetDelta) {
        self.bytes_in = self.bytes_in.saturating_add(o.bytes_in);
        self.bytes_out = self.bytes_out.saturating_add(o.bytes_out);
        self.packets_in = self.packets_in.saturating_add(o.packets_in);
        self.packets_out = self.packets_out.saturating_add(o.packets_out);
    }
}

/// A listening TCP or UDP socket.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ListenPort {
    /// Local port (1–65535).
    pub port: u16,
    /// Bound address (`0.0.0.0` / `::` for wildcard binds).
    pub addr: IpAddr,
    /// Interface owning the bound address; `None` for wildcard binds or when unknown.
    pub interface: Option<String>,
    /// Name of the owning process, where permissions allow finding it; else `uid:N`, the
    /// socket's owner UID.
    pub process: Option<String>,
}

/// An established TCP connection.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TcpConn {
    /// Local address and port.
    pub local: SocketAddr,
    /// Remote address and port.
    pub remote: SocketAddr,
    /// Interface owning the local address, when known.
    pub interface: Option<String>,
}

/// A value of a custom metric, in the four Device Defender custom metric types.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricValue {
    /// `number`
    Number(f64),
    /// `number-list`
    NumberList(Vec<f64>),
    /// `string-list`
    StringList(Vec<String>),
    /// `ip-address-list`
    IpList(Vec<IpAddr>),
}

/// Everything one collection tick learned about the machine.
///
/// A field is `None` when its collector failed this tick (the failure is logged and counted);
/// an empty `Vec` means the collector worked and found nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Tick counter since the agent started (first tick is 1).
    pub seq: u64,
    /// Wall-clock time of the sample, ms since the UNIX epoch.
    pub at_ms: u64,
    /// Monotonic time since the previous sample, ms (0 on the first, warm-up sample).
    pub interval_ms: u64,
    /// Traffic since the previous sample.
    pub net: Option<NetDelta>,
    /// Listening TCP sockets.
    pub tcp_listen: Option<Vec<ListenPort>>,
    /// Listening (bound, unconnected) UDP sockets.
    pub udp_listen: Option<Vec<ListenPort>>,
    /// Established TCP connections.
    pub established: Option<Vec<TcpConn>>,
    /// Custom metrics of this tick, keyed by their registered name (see [`crate::metrics`]).
    pub custom: BTreeMap<String, MetricValue>,
}
