//! The AWS IoT Device Defender report schema: the only module that knows its field names (the
//! service's answers are parsed in [`crate::transport::response`]).
//!
//! One set of types serves both key styles. Each type serializes itself through a key table
//! (`Keys`), so the long-name and short-name documents cannot drift apart, and CBOR (text keys,
//! definite lengths) reuses the very same serializer. Invariants the service depends on live in the
//! types rather than in the encoder:
//!
//! - a custom metric is a [`CustomMetric`], which *is* the mandatory one-element array: there is no
//!   way to serialize a bare `{"number": …}` object;
//! - a listening [`Port`] is never 0 and an [`InterfaceName`] is never empty, never an address;
//! - a [`PortList`] / [`ConnectionList`] is sorted, capped and carries the true `total`;
//! - a [`Number`] has at most 15 significant digits and is written as an integer when integral;
//! - `string_list` values only hold Device Defender's allowed characters.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU16;

use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::Serialize;

use crate::snapshot::{ListenPort, MetricValue, NetDelta, TcpConn};

/// `header.version` sent by every current agent.
pub const VERSION: &str = "1.0";

/// Largest `report_id` the service accepts (a positive signed 64-bit integer).
pub const MAX_REPORT_ID: u64 = i64::MAX as u64;

/// Longest string kept in a `string_list` value; longer ones are cut.
pub const MAX_STRING_LEN: usize = 256;

/// Key names of one style (long or short). Custom metric value keys have no short form and are
/// therefore not in this table.
#[derive(Debug)]
pub(crate) struct Keys {
    header: &'static str,
    report_id: &'static str,
    version: &'static str,
    metrics: &'static str,
    custom_metrics: &'static str,
    listening_tcp_ports: &'static str,
    listening_udp_ports: &'static str,
    ports: &'static str,
    port: &'static str,
    interface: &'static str,
    total: &'static str,
    network_stats: &'static str,
    bytes_in: &'static str,
    bytes_out: &'static str,
    packets_in: &'static str,
    packets_out: &'static str,
    tcp_connections: &'static str,
    established_connections: &'static str,
    connections: &'static str,
    remote_addr: &'static str,
    local_port: &'static str,
    local_interface: &'static str,
}

/// Long names (spec §2.1–§2.3).
pub(crate) const LONG: Keys = Keys {
    header: "header",
    report_id: "report_id",
    version: "version",
    metrics: "metrics",
    custom_metrics: "custom_metrics",
    listening_tcp_ports: "listening_tcp_ports",
    listening_udp_ports: "listening_udp_ports",
    ports: "ports",
    port: "port",
    interface: "interface",
    total: "total",
    network_stats: "network_stats",
    bytes_in: "bytes_in",
    bytes_out: "bytes_out",
    packets_in: "packets_in",
    packets_out: "packets_out",
    tcp_connections: "tcp_connections",
    established_connections: "established_connections",
    connections: "connections",
    remote_addr: "remote_addr",
    local_port: "local_port",
    local_interface: "local_interface",
};

/// Short names (spec §2.1–§2.3).
pub(crate) const SHORT: Keys = Keys {
    header: "hed",
    report_id: "rid",
    version: "v",
    metrics: "met",
    custom_metrics: "cmet",
    listening_tcp_ports: "tp",
    listening_udp_ports: "up",
    ports: "pts",
    port: "pt",
    interface: "if",
    total: "t",
    network_stats: "ns",
    bytes_in: "bi",
    bytes_out: "bo",
    packets_in: "pi",
    packets_out: "po",
    tcp_connections: "tc",
    established_connections: "ec",
    connections: "cs",
    remote_addr: "rad",
    local_port: "lp",
    local_interface: "li",
};

/// Which key names a document uses. A document never mixes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStyle {
    /// `header`, `metrics`, `listening_tcp_ports`, …
    Long,
    /// `hed`, `met`, `tp`, …
    Short,
}

impl KeyStyle {
    pub(crate) const fn keys(self) -> &'static Keys {
        match self {
            KeyStyle::Long => &LONG,
            KeyStyle::Short => &SHORT,
        }
    }
}

/// A network interface name as reported in `interface` / `local_interface`.
///
/// Never empty, never an IP address (wildcard binds carry no interface at all), no whitespace,
/// control characters or `/`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InterfaceName(String);

impl InterfaceName {
    /// Checks a name; `None` when it cannot be an interface name (empty, longer than 64 bytes,
    /// an IP address, or holding whitespace, control characters, `/` or `%`).
    pub fn new(name: &str) -> Option<InterfaceName> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| !c.is_whitespace() && !c.is_control() && c != '/' && c != '%')
            && name.parse::<IpAddr>().is_err();
        ok.then(|| InterfaceName(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InterfaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A custom metric name: `[a-zA-Z0-9:_-]{1,128}`, never starting with `aws:`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MetricName(String);

impl MetricName {
    /// Checks a name; `None` when Device Defender would refuse it.
    pub fn new(name: &str) -> Option<MetricName> {
        crate::metrics::is_valid_name(name).then(|| MetricName(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MetricName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `report_id` and `version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    report_id: u64,
}

impl Header {
    /// The report id (`1..=MAX_REPORT_ID`).
    pub fn report_id(&self) -> u64 {
        self.report_id
    }
    /// Always [`VERSION`].
    pub fn version(&self) -> &'static str {
        VERSION
    }
}

/// One listening socket: `{"port": 22, "interface": "eth0"}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port {
    port: NonZeroU16,
    interface: Option<InterfaceName>,
}

impl Port {
    /// A port entry; `None` for port 0, which a listening socket never has.
    pub fn new(port: u16, interface: Option<InterfaceName>) -> Option<Port> {
        NonZeroU16::new(port).map(|port| Port { port, interface })
    }

    /// From a collected socket. The interface is dropped when it is not a valid name.
    pub fn from_listen(l: &ListenPort) -> Option<Port> {
        Port::new(l.port, l.interface.as_deref().and_then(InterfaceName::new))
    }

    /// The port number.
    pub fn port(&self) -> u16 {
        self.port.get()
    }

    /// The interface, when bound to a specific one.
    pub fn interface(&self) -> Option<&InterfaceName> {
        self.interface.as_ref()
    }
}

/// What capping a list did: kept entries and the true count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capped {
    /// Entries kept in the list.
    pub kept: usize,
    /// The true number of distinct entries.
    pub total: u64,
}

impl Capped {
    /// True when entries were left out.
    pub fn truncated(&self) -> bool {
        (self.kept as u64) < self.total
    }
}

/// `listening_tcp_ports` / `listening_udp_ports`: a sorted, deduplicated, capped list and the
/// true number of distinct `(port, interface)` entries.
///
/// A daemon bound to both `0.0.0.0:22` and `[::]:22` is one entry `{"port": 22}`: the report has
/// no address family, so the two binds are the same listening port to Device Defender.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortList {
    ports: Vec<Port>,
    total: u64,
}

impl PortList {
    /// Sorts by port then interface, removes duplicates, keeps the first `cap` and counts all.
    pub fn capped(ports: impl IntoIterator<Item = Port>, cap: usize) -> (PortList, Capped) {
        let mut ports: Vec<Port> = ports.into_iter().collect();
        ports.sort_unstable();
        ports.dedup();
        let total = ports.len() as u64;
        ports.truncate(cap);
        let kept = ports.len();
        (PortList { ports, total }, Capped { kept, total })
    }

    /// The listed entries (at most the cap).
    pub fn ports(&self) -> &[Port] {
        &self.ports
    }

    /// The true count.
    pub fn total(&self) -> u64 {
        self.total
    }
}

/// `network_stats`: deltas over the report interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NetworkStats {
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Packets received.
    pub packets_in: u64,
    /// Packets sent.
    pub packets_out: u64,
}

impl From<NetDelta> for NetworkStats {
    fn from(d: NetDelta) -> Self {
        NetworkStats {
            bytes_in: d.bytes_in,
            bytes_out: d.bytes_out,
            packets_in: d.packets_in,
            packets_out: d.packets_out,
        }
    }
}

/// One established TCP connection.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Connection {
    // Field order is the sort order: by peer, then local port.
    remote: SocketAddr,
    local_port: u16,
    local_interface: Option<InterfaceName>,
}

impl Connection {
    /// A connection entry. IPv4-mapped IPv6 peers are written as IPv4; an IPv6 scope id is dropped.
    pub fn new(
        remote: SocketAddr,
        local_port: u16,
        local_interface: Option<InterfaceName>,
    ) -> Self {
        let remote = SocketAddr::new(remote.ip().to_canonical(), remote.port());
        Connection {
            remote,
            local_port,
            local_interface,
        }
    }

    /// From a collected connection.
    pub fn from_conn(c: &TcpConn) -> Connection {
        Connection::new(
            c.remote,
            c.local.port(),
            c.interface.as_deref().and_then(InterfaceName::new),
        )
    }

    /// `remote_addr` as sent: `a.b.c.d:port` or `[v6]:port`.
    pub fn remote_addr(&self) -> String {
        format_remote_addr(&self.remote)
    }

    /// Local port.
    pub fn local_port(&self) -> u16 {
        self.local_port
    }

    /// Local interface, when known.
    pub fn local_interface(&self) -> Option<&InterfaceName> {
        self.local_interface.as_ref()
    }
}

/// Formats a peer as `a.b.c.d:port` or `[v6]:port`, without an IPv6 scope id (which the service
/// could not parse and which means nothing off the device).
pub fn format_remote_addr(a: &SocketAddr) -> String {
    RemoteAddr(a).to_string()
}

/// `remote_addr` text, written without an intermediate `String`.
struct RemoteAddr<'a>(&'a SocketAddr);

impl fmt::Display for RemoteAddr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.ip().to_canonical() {
            IpAddr::V4(ip) => write!(f, "{ip}:{}", self.0.port()),
            IpAddr::V6(ip) => write!(f, "[{ip}]:{}", self.0.port()),
        }
    }
}

impl Serialize for RemoteAddr<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// IP addresses as a list of strings, written without intermediate `String`s.
struct IpStrings<'a>(&'a [IpAddr]);

impl Serialize for IpStrings<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for ip in self.0 {
            seq.serialize_element(&IpText(ip))?;
        }
        seq.end()
    }
}

struct IpText<'a>(&'a IpAddr);

impl Serialize for IpText<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self.0)
    }
}

/// `tcp_connections.established_connections`: sorted, capped, with the true total.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectionList {
    connections: Vec<Connection>,
    total: u64,
}

impl ConnectionList {
    /// Sorts by peer then local port, keeps the first `cap` and counts all.
    pub fn capped(
        conns: impl IntoIterator<Item = Connection>,
        cap: usize,
    ) -> (ConnectionList, Capped) {
        let mut connections: Vec<Connection> = conns.into_iter().collect();
        connections.sort_unstable();
        let total = connections.len() as u64;
        connections.truncate(cap);
        let kept = connections.len();
        (
            ConnectionList { connections, total },
            Capped { kept, total },
        )
    }

    /// The listed connections (at most the cap).
    pub fn connections(&self) -> &[Connection] {
        &self.connections
    }

    /// The true count.
    pub fn total(&self) -> u64 {
        self.total
    }
}

/// The standard `metrics` block. A `None` field is omitted (its collector failed all interval).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Metrics {
    /// `listening_tcp_ports`
    pub listening_tcp_ports: Option<PortList>,
    /// `listening_udp_ports`
    pub listening_udp_ports: Option<PortList>,
    /// `network_stats`
    pub network_stats: Option<NetworkStats>,
    /// `tcp_connections.established_connections`
    pub tcp_connections: Option<ConnectionList>,
}

impl Metrics {
    /// True when no block is present.
    pub fn is_empty(&self) -> bool {
        self.listening_tcp_ports.is_none()
            && self.listening_udp_ports.is_none()
            && self.network_stats.is_none()
            && self.tcp_connections.is_none()
    }
}

/// A custom `number`: finite, at most 15 significant digits, integral values written as integers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Number(NumberRepr);

#[derive(Debug, Clone, Copy, PartialEq)]
enum NumberRepr {
    Int(i64),
    Float(f64),
}

/// Integral values below this are written as integers (they have at most 15 digits).
const INT_LIMIT: f64 = 1e15;

impl Number {
    /// Rounds to 15 significant digits; `None` for NaN and infinities, which no encoding carries.
    pub fn new(v: f64) -> Option<Number> {
        if !v.is_finite() {
            return None;
        }
        let r = round_significant(v);
        if r.fract() == 0.0 && r.abs() < INT_LIMIT {
            // Exact: |r| < 1e15 < 2^63 and r is integral.
            Some(Number(NumberRepr::Int(r as i64)))
        } else {
            Some(Number(NumberRepr::Float(r)))
        }
    }

    /// The value.
    pub fn value(&self) -> f64 {
        match self.0 {
            NumberRepr::Int(i) => i as f64,
            NumberRepr::Float(f) => f,
        }
    }
}

/// The double nearest to `v` rounded to 15 significant decimal digits. Doubles hold 15 decimal
/// digits exactly (DBL_DIG), so the shortest text that reproduces the result has at most 15.
fn round_significant(v: f64) -> f64 {
    if v == 0.0 {
        return 0.0;
    }
    let r: f64 = format!("{v:.14e}")
        .parse()
        .expect("a formatted finite f64 parses back");
    if r.is_finite() {
        r
    } else {
        // Rounding up near f64::MAX overflowed: the largest 15-digit value below it instead.
        LARGEST_15_DIGITS.copysign(v)
    }
}

/// The largest 15-significant-digit decimal that is a finite double.
const LARGEST_15_DIGITS: f64 = 1.79769313486231e308;

impl Serialize for Number {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            NumberRepr::Int(i) => s.serialize_i64(i),
            NumberRepr::Float(f) => s.serialize_f64(f),
        }
    }
}

/// A custom metric value, in the four Device Defender custom metric types.
#[derive(Debug, Clone, PartialEq)]
pub enum CustomValue {
    /// `{"number": x}`
    Number(Number),
    /// `{"number_list": [..]}`
    NumberList(Vec<Number>),
    /// `{"string_list": [..]}`, sanitised (see [`sanitize_string`]).
    StringList(Vec<String>),
    /// `{"ip_list": [..]}`
    IpList(Vec<IpAddr>),
}

impl CustomValue {
    /// Converts a collected value. Non-finite numbers are dropped (a lone one gives `None`),
    /// strings are sanitised and deduplicated, empty strings dropped, IPv4-mapped addresses
    /// written as IPv4.
    pub fn from_metric(v: &MetricValue) -> Option<CustomValue> {
        Some(match v {
            MetricValue::Number(x) => CustomValue::Number(Number::new(*x)?),
            MetricValue::NumberList(xs) => {
                CustomValue::NumberList(xs.iter().filter_map(|x| Number::new(*x)).collect())
            }
            MetricValue::StringList(xs) => {
                let mut out: Vec<String> = Vec::with_capacity(xs.len());
                for s in xs {
                    let s = sanitize_string(s);
                    if !s.is_empty() && !out.contains(&s) {
                        out.push(s);
                    }
                }
                CustomValue::StringList(out)
            }
            MetricValue::IpList(ips) => {
                let mut out: Vec<IpAddr> = Vec::with_capacity(ips.len());
                for ip in ips.iter().map(|ip| ip.to_canonical()) {
                    if !out.contains(&ip) {
                        out.push(ip);
                    }
                }
                CustomValue::IpList(out)
            }
        })
    }

    /// The cloud metric type this value belongs to.
    pub fn type_name(&self) -> &'static str {
        match self {
            CustomValue::Number(_) => "number",
            CustomValue::NumberList(_) => "number-list",
            CustomValue::StringList(_) => "string-list",
            CustomValue::IpList(_) => "ip-address-list",
        }
    }

    const fn value_key(&self) -> &'static str {
        match self {
            CustomValue::Number(_) => "number",
            CustomValue::NumberList(_) => "number_list",
            CustomValue::StringList(_) => "string_list",
            CustomValue::IpList(_) => "ip_list",
        }
    }
}

/// Keeps Device Defender's `string_list` characters (`A–Z a–z 0–9 : _ - / .`), replacing each
/// other character with `_`, and cuts the result at [`MAX_STRING_LEN`].
pub fn sanitize_string(s: &str) -> String {
    s.chars()
        .take(MAX_STRING_LEN)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '-' | '/' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A custom metric as reported: the mandatory one-element array holding one value object,
/// `[{"number": 61.5}]`. The wrapper is part of the type, so it cannot be forgotten.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomMetric(pub CustomValue);

impl Serialize for CustomMetric {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Inner<'a>(&'a CustomValue);
        impl Serialize for Inner<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(1))?;
                let key = self.0.value_key();
                match self.0 {
                    CustomValue::Number(n) => m.serialize_entry(key, n)?,
                    CustomValue::NumberList(ns) => m.serialize_entry(key, ns)?,
                    CustomValue::StringList(ss) => m.serialize_entry(key, ss)?,
                    CustomValue::IpList(ips) => m.serialize_entry(key, &IpStrings(ips))?,
                }
                m.end()
            }
        }
        let mut seq = s.serialize_seq(Some(1))?;
        seq.serialize_element(&Inner(&self.0))?;
        seq.end()
    }
}

/// A complete Device Defender metrics report.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsReport {
    header: Header,
    metrics: Metrics,
    custom_metrics: BTreeMap<MetricName, CustomMetric>,
}

impl MetricsReport {
    /// Builds a report. `report_id` must be in `1..=MAX_REPORT_ID` ([`super::ReportIds`] makes
    /// such ids); an id outside is clamped into the range.
    ///
    /// The `metrics` block is omitted when it is empty and custom metrics are present; a report
    /// with neither still carries an empty `metrics` object, so it always has one of the two.
    pub fn new(
        report_id: u64,
        metrics: Metrics,
        custom_metrics: BTreeMap<MetricName, CustomMetric>,
    ) -> MetricsReport {
        let clamped = report_id.clamp(1, MAX_REPORT_ID);
        if clamped != report_id {
            tracing::warn!(report_id, clamped, "Report id outside 1..=2^63-1; clamped.");
        }
        MetricsReport {
            header: Header { report_id: clamped },
            metrics,
            custom_metrics,
        }
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Shortcut for `header().report_id()`.
    pub fn report_id(&self) -> u64 {
        self.header.report_id
    }

    /// The standard metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The custom metrics, by name.
    pub fn custom_metrics(&self) -> &BTreeMap<MetricName, CustomMetric> {
        &self.custom_metrics
    }

    /// One line for logs: id, list totals, traffic and the number of custom metrics.
    pub fn summary(&self) -> String {
        let m = &self.metrics;
        let total =
            |l: &Option<PortList>| l.as_ref().map_or("-".to_owned(), |l| l.total.to_string());
        let conns = m
            .tcp_connections
            .as_ref()
            .map_or("-".to_owned(), |c| c.total.to_string());
        let net = m.network_stats.map_or("-".to_owned(), |n| {
            format!(
                "{}/{} B in/out, {}/{} packets in/out",
                n.bytes_in, n.bytes_out, n.packets_in, n.packets_out
            )
        });
        format!(
            "report {}: {} TCP / {} UDP listening ports, {} connections, {}, {} custom metrics",
            self.header.report_id,
            total(&m.listening_tcp_ports),
            total(&m.listening_udp_ports),
            conns,
            net,
            self.custom_metrics.len()
        )
    }

    fn sends_metrics(&self) -> bool {
        !self.metrics.is_empty() || self.custom_metrics.is_empty()
    }

    /// A serializable view with the given key names.
    pub(crate) fn keyed(&self, style: KeyStyle) -> Keyed<'_, MetricsReport> {
        Keyed(self, style.keys())
    }
}

/// A value paired with the key table to serialize it with.
pub(crate) struct Keyed<'a, T>(&'a T, &'static Keys);

macro_rules! keyed_ref {
    ($v:expr, $k:expr) => {
        &Keyed($v, $k)
    };
}

impl Serialize for Keyed<'_, MetricsReport> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (r, k) = (self.0, self.1);
        let with_metrics = r.sends_metrics();
        let with_custom = !r.custom_metrics.is_empty();
        let n = 1 + usize::from(with_metrics) + usize::from(with_custom);
        let mut m = s.serialize_map(Some(n))?;
        m.serialize_entry(k.header, keyed_ref!(&r.header, k))?;
        if with_metrics {
            m.serialize_entry(k.metrics, keyed_ref!(&r.metrics, k))?;
        }
        if with_custom {
            m.serialize_entry(k.custom_metrics, &r.custom_metrics)?;
        }
        m.end()
    }
}

impl Serialize for MetricName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl Serialize for Keyed<'_, Header> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry(self.1.report_id, &self.0.report_id)?;
        m.serialize_entry(self.1.version, VERSION)?;
        m.end()
    }
}

impl Serialize for Keyed<'_, Metrics> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (x, k) = (self.0, self.1);
        let n = [
            x.listening_tcp_ports.is_some(),
            x.listening_udp_ports.is_some(),
            x.network_stats.is_some(),
            x.tcp_connections.is_some(),
        ]
        .into_iter()
        .filter(|b| *b)
        .count();
        let mut m = s.serialize_map(Some(n))?;
        if let Some(p) = &x.listening_tcp_ports {
            m.serialize_entry(k.listening_tcp_ports, keyed_ref!(p, k))?;
        }
        if let Some(p) = &x.listening_udp_ports {
            m.serialize_entry(k.listening_udp_ports, keyed_ref!(p, k))?;
        }
        if let Some(ns) = &x.network_stats {
            m.serialize_entry(k.network_stats, keyed_ref!(ns, k))?;
        }
        if let Some(c) = &x.tcp_connections {
            struct Tc<'a>(&'a ConnectionList, &'static Keys);
            impl Serialize for Tc<'_> {
                fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                    let mut m = s.serialize_map(Some(1))?;
                    m.serialize_entry(self.1.established_connections, keyed_ref!(self.0, self.1))?;
                    m.end()
                }
            }
            m.serialize_entry(k.tcp_connections, &Tc(c, k))?;
        }
        m.end()
    }
}

impl Serialize for Keyed<'_, PortList> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (x, k) = (self.0, self.1);
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry(k.ports, &KeyedSlice(&x.ports, k))?;
        m.serialize_entry(k.total, &x.total)?;
        m.end()
    }
}

impl Serialize for Keyed<'_, Port> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (x, k) = (self.0, self.1);
        let mut m = s.serialize_map(Some(1 + usize::from(x.interface.is_some())))?;
        m.serialize_entry(k.port, &x.port.get())?;
        if let Some(i) = &x.interface {
            m.serialize_entry(k.interface, i.as_str())?;
        }
        m.end()
    }
}

impl Serialize for Keyed<'_, NetworkStats> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (x, k) = (self.0, self.1);
        let mut m = s.serialize_map(Some(4))?;
        m.serialize_entry(k.bytes_in, &x.bytes_in)?;
        m.serialize_entry(k.bytes_out, &x.bytes_out)?;
        m.serialize_entry(k.packets_in, &x.packets_in)?;
        m.serialize_entry(k.packets_out, &x.packets_out)?;
        m.end()
    }
}

impl Serialize for Keyed<'_, ConnectionList> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (x, k) = (self.0, self.1);
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry(k.connections, &KeyedSlice(&x.connections, k))?;
        m.serialize_entry(k.total, &x.total)?;
        m.end()
    }
}

impl Serialize for Keyed<'_, Connection> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (x, k) = (self.0, self.1);
        let mut m = s.serialize_map(Some(2 + usize::from(x.local_interface.is_some())))?;
        m.serialize_entry(k.remote_addr, &RemoteAddr(&x.remote))?;
        m.serialize_entry(k.local_port, &x.local_port)?;
        if let Some(i) = &x.local_interface {
            m.serialize_entry(k.local_interface, i.as_str())?;
        }
        m.end()
    }
}

/// A slice whose elements serialize with a key table.
struct KeyedSlice<'a, T>(&'a [T], &'static Keys);

impl<'a, T> Serialize for KeyedSlice<'a, T>
where
    for<'b> Keyed<'b, T>: Serialize,
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for x in self.0 {
            seq.serialize_element(&Keyed(x, self.1))?;
        }
        seq.end()
    }
}

/// The three MQTT topics of one thing's report exchange (spec §1.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// `$aws/things/{thing}/defender/metrics/{json|cbor}`: publish only, never subscribe.
    pub report: String,
    /// `…/accepted`: subscribe.
    pub accepted: String,
    /// `…/rejected`: subscribe.
    pub rejected: String,
}

impl Topics {
    /// Topics for `thing` in `format` (`json` for both JSON styles, `cbor` for CBOR).
    pub fn new(thing: &str, format: crate::config::ReportFormat) -> Topics {
        let report = format!(
            "$aws/things/{thing}/defender/metrics/{}",
            format.topic_suffix()
        );
        Topics {
            accepted: format!("{report}/accepted"),
            rejected: format!("{report}/rejected"),
            report,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_at_most_fifteen_significant_digits() {
        assert_eq!(Number::new(0.1 + 0.2).map(|n| n.value()), Some(0.3));
        assert_eq!(
            Number::new(1.0 / 3.0).map(|n| n.value()),
            Some(0.333333333333333)
        );
        assert_eq!(Number::new(142.0), Some(Number(NumberRepr::Int(142))));
        assert_eq!(Number::new(-0.0), Some(Number(NumberRepr::Int(0))));
        assert_eq!(
            Number::new(1234567890123456789.0).map(|n| n.value()),
            Some(1.23456789012346e18)
        );
        assert_eq!(
            Number::new(f64::MAX).map(|n| n.value()),
            Some(1.79769313486231e308)
        );
        assert_eq!(
            Number::new(f64::MIN).map(|n| n.value()),
            Some(-1.79769313486231e308)
        );
        assert_eq!(Number::new(5e-324).map(|n| n.value()), Some(5e-324));
        assert!(Number::new(f64::NAN).is_none());
        assert!(Number::new(f64::INFINITY).is_none());
    }

    #[test]
    fn strings_are_sanitised_to_the_allowed_characters() {
        assert_eq!(sanitize_string("kworker/0:1"), "kworker/0:1");
        assert_eq!(sanitize_string("One Fish"), "One_Fish");
        assert_eq!(sanitize_string("naïve\"x"), "na_ve_x");
        assert_eq!(sanitize_string(&"a".repeat(1000)).len(), MAX_STRING_LEN);
    }

    #[test]
    fn interface_names_are_never_addresses_or_empty() {
        assert!(InterfaceName::new("eth0").is_some());
        assert!(InterfaceName::new("eth0:1").is_some());
        assert!(InterfaceName::new("").is_none());
        assert!(InterfaceName::new("0.0.0.0").is_none());
        assert!(InterfaceName::new("::").is_none());
        assert!(InterfaceName::new("fe80::1").is_none());
        assert!(InterfaceName::new("a b").is_none());
        assert!(InterfaceName::new("fe80::1%eth0").is_none());
    }

    #[test]
    fn remote_addresses_use_brackets_for_ipv6_and_drop_scope_and_mapping() {
        let v4: SocketAddr = "203.0.113.10:8883".parse().unwrap();
        assert_eq!(format_remote_addr(&v4), "203.0.113.10:8883");
        let v6: SocketAddr = "[2001:db8::7]:60211".parse().unwrap();
        assert_eq!(format_remote_addr(&v6), "[2001:db8::7]:60211");
        let scoped: SocketAddr = "[fe80::1%2]:22".parse().unwrap();
        assert_eq!(format_remote_addr(&scoped), "[fe80::1]:22");
        let mapped: SocketAddr = "[::ffff:192.0.2.1]:443".parse().unwrap();
        assert_eq!(format_remote_addr(&mapped), "192.0.2.1:443");
    }

    #[test]
    fn port_lists_are_sorted_deduplicated_and_capped_with_the_true_total() {
        let eth0 = InterfaceName::new("eth0");
        let ports = [443, 22, 22, 80, 8080]
            .into_iter()
            .filter_map(|p| Port::new(p, None))
            .chain(Port::new(22, eth0.clone()));
        let (list, capped) = PortList::capped(ports, 3);
        assert_eq!(list.total(), 5);
        assert!(capped.truncated());
        let got: Vec<(u16, Option<&str>)> = list
            .ports()
            .iter()
            .map(|p| (p.port(), p.interface().map(InterfaceName::as_str)))
            .collect();
        assert_eq!(got, vec![(22, None), (22, Some("eth0")), (80, None)]);
        assert!(Port::new(0, None).is_none());
    }
}
