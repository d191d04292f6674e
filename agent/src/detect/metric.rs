//! Behaviour metrics on the device: Device Defender's device-side metric names and every custom
//! metric the agent reports, each mapped to the [`Snapshot`] field that feeds it.
//!
//! | Behaviour metric | Snapshot source | Kind |
//! |---|---|---|
//! | `aws:all-bytes-out` / `aws:all-bytes-in` | `net.bytes_out` / `net.bytes_in` | counter |
//! | `aws:all-packets-out` / `aws:all-packets-in` | `net.packets_out` / `net.packets_in` | counter |
//! | `aws:num-listening-tcp-ports` / `aws:num-listening-udp-ports` | length of `tcp_listen` / `udp_listen` (the report's `total`) | gauge |
//! | `aws:num-established-tcp-connections` | length of `established` | gauge |
//! | `aws:listening-tcp-ports` / `aws:listening-udp-ports` | distinct ports of `tcp_listen` / `udp_listen` | port set |
//! | `aws:destination-ip-addresses` | distinct remote addresses of `established` | address set |
//! | custom `number`, folded by sum | `custom[name]` | counter |
//! | custom `number`, folded by last/max | `custom[name]` | gauge |
//! | custom `string-list` | `custom[name]` | string set |
//! | custom `ip-address-list` | `custom[name]` | address set |
//!
//! A *counter* is a per-tick delta: a behaviour with `durationSeconds` compares the sum over that
//! trailing window. A *gauge* is a level: the latest value is compared. Device Defender's cloud-side
//! metrics (`aws:num-messages-sent`, `aws:num-authorization-failures`, …) are computed by AWS IoT
//! from the device's MQTT traffic and cannot be evaluated here; they are refused by name.

use std::fmt;
use std::net::IpAddr;

use crate::metrics::{self, CloudType, Fold};
use crate::snapshot::{MetricValue, Snapshot};

/// What a metric's values are, which decides the operators and value kinds it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// A per-tick delta (bytes, packets, kernel counters): summed over `durationSeconds`.
    Counter,
    /// A level (number of ports, connections, CPU percent): the latest value.
    Gauge,
    /// A set of ports (`in-port-set` / `not-in-port-set`, `value.ports`).
    PortSet,
    /// A set of IP addresses (`in-cidr-set` / `not-in-cidr-set`, `value.cidrs`).
    IpSet,
    /// A set of strings (`in-set` / `not-in-set`, `value.strings`).
    StringSet,
}

impl MetricKind {
    /// True for the two numeric kinds.
    pub const fn is_numeric(self) -> bool {
        matches!(self, MetricKind::Counter | MetricKind::Gauge)
    }

    /// Human description used in error messages.
    pub const fn describe(self) -> &'static str {
        match self {
            MetricKind::Counter => "a per-interval count",
            MetricKind::Gauge => "a level (gauge)",
            MetricKind::PortSet => "a set of ports",
            MetricKind::IpSet => "a set of IP addresses",
            MetricKind::StringSet => "a set of strings",
        }
    }
}

/// Where a metric's value comes from in a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    BytesOut,
    BytesIn,
    PacketsOut,
    PacketsIn,
    NumListeningTcp,
    NumListeningUdp,
    NumEstablished,
    ListeningTcpPorts,
    ListeningUdpPorts,
    DestinationIps,
    Custom,
}

/// A resolved behaviour metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    /// The name as written in the behaviour (`aws:all-bytes-out`, `tcp_out_rsts`, …).
    pub name: &'static str,
    /// Its kind.
    pub kind: MetricKind,
    /// True for Device Defender's built-in device-side metrics (they take `value.count`);
    /// custom `number` metrics take `value.number`.
    pub builtin: bool,
    source: Source,
}

/// Device Defender's device-side metrics (spec §4.1).
pub const DEVICE_METRICS: &[(&str, MetricKind)] = &[
    ("aws:all-bytes-out", MetricKind::Counter),
    ("aws:all-bytes-in", MetricKind::Counter),
    ("aws:all-packets-out", MetricKind::Counter),
    ("aws:all-packets-in", MetricKind::Counter),
    ("aws:num-listening-tcp-ports", MetricKind::Gauge),
    ("aws:num-listening-udp-ports", MetricKind::Gauge),
    ("aws:num-established-tcp-connections", MetricKind::Gauge),
    ("aws:listening-tcp-ports", MetricKind::PortSet),
    ("aws:listening-udp-ports", MetricKind::PortSet),
    ("aws:destination-ip-addresses", MetricKind::IpSet),
];

const DEVICE_SOURCES: [Source; 10] = [
    Source::BytesOut,
    Source::BytesIn,
    Source::PacketsOut,
    Source::PacketsIn,
    Source::NumListeningTcp,
    Source::NumListeningUdp,
    Source::NumEstablished,
    Source::ListeningTcpPorts,
    Source::ListeningUdpPorts,
    Source::DestinationIps,
];

/// Device Defender's cloud-side metrics (spec §4.2): computed by AWS IoT, not by the device.
pub const CLOUD_METRICS: &[&str] = &[
    "aws:message-byte-size",
    "aws:num-messages-sent",
    "aws:num-messages-received",
    "aws:num-authorization-failures",
    "aws:source-ip-address",
    "aws:num-connection-attempts",
    "aws:num-disconnects",
];

/// Custom metrics computed from the local verdicts themselves; a behaviour on them would feed
/// back on its own output.
pub const SELF_METRICS: &[&str] = &[
    metrics::LOCAL_VIOLATIONS,
    metrics::LOCAL_ANOMALY_SCORE,
    metrics::LOCAL_VIOLATION_BEHAVIORS,
];

/// Why a metric name is not usable in a behaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricError(pub String);

impl fmt::Display for MetricError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Resolves a behaviour's `metric` name.
pub fn resolve(name: &str) -> Result<Metric, MetricError> {
    if let Some(i) = DEVICE_METRICS.iter().position(|(n, _)| *n == name) {
        let (n, kind) = DEVICE_METRICS[i];
        return Ok(Metric {
            name: n,
            kind,
            builtin: true,
            source: DEVICE_SOURCES[i],
        });
    }
    if CLOUD_METRICS.contains(&name) {
        return Err(MetricError(format!(
            "{name:?} is a cloud-side metric, computed by AWS IoT from the device's MQTT traffic; \
             it cannot be evaluated on the device (keep this behaviour in the cloud profile)"
        )));
    }
    if SELF_METRICS.contains(&name) {
        return Err(MetricError(format!(
            "{name:?} summarises this profile's own verdicts for the cloud; a local behaviour on it \
             would evaluate its own output"
        )));
    }
    if let Some(def) = metrics::find(name) {
        let kind = match (def.cloud_type, def.fold) {
            (CloudType::Number, Fold::Sum) => MetricKind::Counter,
            (CloudType::Number, _) => MetricKind::Gauge,
            (CloudType::StringList, _) => MetricKind::StringSet,
            (CloudType::IpAddressList, _) => MetricKind::IpSet,
        };
        return Ok(Metric {
            name: def.name,
            kind,
            builtin: false,
            source: Source::Custom,
        });
    }
    let mut msg = format!("unknown metric {name:?}");
    if let Some(near) = nearest_name(name) {
        msg.push_str(&format!("; did you mean {near:?}?"));
    } else {
        msg.push_str(
            "; expected a device-side metric (aws:all-bytes-out, aws:listening-tcp-ports, …) or a \
             custom metric the agent reports (`edgewarden metrics` lists them)",
        );
    }
    Err(MetricError(msg))
}

/// Every metric name a behaviour may use.
pub fn all_names() -> impl Iterator<Item = &'static str> {
    DEVICE_METRICS.iter().map(|(n, _)| *n).chain(
        metrics::CUSTOM_METRICS
            .iter()
            .map(|d| d.name)
            .filter(|n| !SELF_METRICS.contains(n)),
    )
}

fn nearest_name(name: &str) -> Option<&'static str> {
    let (best, d) = all_names()
        .map(|c| (c, edit_distance(name, c)))
        .min_by_key(|(_, d)| *d)?;
    (d <= 3.max(name.len() / 4)).then_some(best)
}

/// Levenshtein distance over bytes (metric names are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, &ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// How the items of a set metric are compared for novelty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemFold {
    /// As they are (addresses, `address:port` destinations, ports).
    Exact,
    /// Process names: digit runs folded (`kworker/1:2` ≡ `kworker/0:0`).
    ProcessName,
    /// `name@level`: the name folded as a process name, the level kept.
    ProcessNameBeforeAt,
}

/// How set novelty treats a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoveltyOptions {
    /// Item comparison.
    pub fold: ItemFold,
    /// Only never-seen items count (else rarely seen ones add up, see `NoveltySet::score`).
    pub never_seen_only: bool,
    /// Another set metric whose items are learned into the same baseline while learning.
    pub learn_also: Option<&'static str>,
}

/// One tick's value of a metric.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation<'a> {
    /// Counter delta or gauge level.
    Number(f64),
    /// Distinct ports, ascending.
    Ports(Vec<u16>),
    /// Distinct addresses, ascending.
    Ips(Vec<IpAddr>),
    /// Distinct strings, ascending.
    Strings(Vec<&'a str>),
}

impl Metric {
    /// How set novelty compares this metric's items.
    pub fn novelty_options(&self) -> NoveltyOptions {
        let (fold, never_seen_only, learn_also) = match (self.source, self.name) {
            (Source::Custom, metrics::RECURRING_DESTINATIONS) => {
                (ItemFold::Exact, true, Some(metrics::DESTINATION_ENDPOINTS))
            }
            (Source::Custom, metrics::DESTINATION_ENDPOINTS) => (ItemFold::Exact, false, None),
            (Source::Custom, metrics::PROCESS_CPU_LEVELS) => {
                (ItemFold::ProcessNameBeforeAt, true, None)
            }
            (Source::Custom, _) if self.kind == MetricKind::StringSet => {
                (ItemFold::ProcessName, false, None)
            }
            _ => (ItemFold::Exact, false, None),
        };
        NoveltyOptions {
            fold,
            never_seen_only,
            learn_also,
        }
    }

    /// The metric's value in `snap`, or `None` when the snapshot has no datapoint for it: its
    /// collector failed this tick, a custom metric is absent or of another type, or it is a
    /// counter on the warm-up tick (no interval, so no meaningful delta).
    pub fn observe<'a>(&self, snap: &'a Snapshot) -> Option<Observation<'a>> {
        let counter_ok = snap.interval_ms > 0;
        let n = |v: u64| Observation::Number(v as f64);
        match self.source {
            Source::BytesOut => snap.net.filter(|_| counter_ok).map(|d| n(d.bytes_out)),
            Source::BytesIn => snap.net.filter(|_| counter_ok).map(|d| n(d.bytes_in)),
            Source::PacketsOut => snap.net.filter(|_| counter_ok).map(|d| n(d.packets_out)),
            Source::PacketsIn => snap.net.filter(|_| counter_ok).map(|d| n(d.packets_in)),
            Source::NumListeningTcp => snap.tcp_listen.as_ref().map(|l| n(l.len() as u64)),
            Source::NumListeningUdp => snap.udp_listen.as_ref().map(|l| n(l.len() as u64)),
            Source::NumEstablished => snap.established.as_ref().map(|l| n(l.len() as u64)),
            Source::ListeningTcpPorts => snap.tcp_listen.as_ref().map(|l| ports(l)),
            Source::ListeningUdpPorts => snap.udp_listen.as_ref().map(|l| ports(l)),
            Source::DestinationIps => snap.established.as_ref().map(|l| {
                let mut v: Vec<IpAddr> = l.iter().map(|c| c.remote.ip()).collect();
                v.sort_unstable();
                v.dedup();
                Observation::Ips(v)
            }),
            Source::Custom => match (self.kind, snap.custom.get(self.name)?) {
                (MetricKind::Counter, MetricValue::Number(x)) if counter_ok && x.is_finite() => {
                    Some(Observation::Number(*x))
                }
                (MetricKind::Gauge, MetricValue::Number(x)) if x.is_finite() => {
                    Some(Observation::Number(*x))
                }
                (MetricKind::StringSet, MetricValue::StringList(l)) => {
                    let mut v: Vec<&str> = l.iter().map(String::as_str).collect();
                    v.sort_unstable();
                    v.dedup();
                    Some(Observation::Strings(v))
                }
                (MetricKind::IpSet, MetricValue::IpList(l)) => {
                    let mut v = l.clone();
                    v.sort_unstable();
                    v.dedup();
                    Some(Observation::Ips(v))
                }
                _ => None,
            },
        }
    }
}

fn ports(l: &[crate::snapshot::ListenPort]) -> Observation<'static> {
    let mut v: Vec<u16> = l.iter().map(|p| p.port).collect();
    v.sort_unstable();
    v.dedup();
    Observation::Ports(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{ListenPort, NetDelta, TcpConn};

    fn snap() -> Snapshot {
        let lp = |port: u16, addr: &str| ListenPort {
            port,
            addr: addr.parse().unwrap(),
            interface: None,
            process: None,
        };
        let mut s = Snapshot {
            seq: 2,
            at_ms: 20_000,
            interval_ms: 10_000,
            net: Some(NetDelta {
                bytes_in: 100,
                bytes_out: 200,
                packets_in: 3,
                packets_out: 4,
            }),
            tcp_listen: Some(vec![lp(22, "0.0.0.0"), lp(22, "::"), lp(8443, "0.0.0.0")]),
            udp_listen: Some(vec![]),
            established: Some(vec![
                TcpConn {
                    local: "192.0.2.1:50000".parse().unwrap(),
                    remote: "203.0.113.10:8883".parse().unwrap(),
                    interface: None,
                },
                TcpConn {
                    local: "192.0.2.1:50001".parse().unwrap(),
                    remote: "203.0.113.10:443".parse().unwrap(),
                    interface: None,
                },
            ]),
            custom: Default::default(),
        };
        s.custom
            .insert("tcp_out_rsts".into(), MetricValue::Number(7.0));
        s.custom.insert(
            "top_cpu_processes".into(),
            MetricValue::StringList(vec!["b".into(), "a".into(), "b".into()]),
        );
        s
    }

    #[test]
    fn device_metrics_map_to_snapshot_fields() {
        let s = snap();
        let v = |n: &str| resolve(n).unwrap().observe(&s);
        assert_eq!(v("aws:all-bytes-out"), Some(Observation::Number(200.0)));
        assert_eq!(v("aws:all-bytes-in"), Some(Observation::Number(100.0)));
        assert_eq!(v("aws:all-packets-in"), Some(Observation::Number(3.0)));
        assert_eq!(v("aws:all-packets-out"), Some(Observation::Number(4.0)));
        assert_eq!(
            v("aws:num-listening-tcp-ports"),
            Some(Observation::Number(3.0))
        );
        assert_eq!(
            v("aws:num-listening-udp-ports"),
            Some(Observation::Number(0.0))
        );
        assert_eq!(
            v("aws:num-established-tcp-connections"),
            Some(Observation::Number(2.0))
        );
        assert_eq!(
            v("aws:listening-tcp-ports"),
            Some(Observation::Ports(vec![22, 8443]))
        );
        assert_eq!(
            v("aws:destination-ip-addresses"),
            Some(Observation::Ips(vec!["203.0.113.10".parse().unwrap()]))
        );
        assert_eq!(v("tcp_out_rsts"), Some(Observation::Number(7.0)));
        assert_eq!(
            v("top_cpu_processes"),
            Some(Observation::Strings(vec!["a", "b"]))
        );
        assert_eq!(
            v("cpu_usage"),
            None,
            "absent custom metric has no datapoint"
        );
    }

    #[test]
    fn counters_have_no_datapoint_on_the_warm_up_tick_but_gauges_do() {
        let mut s = snap();
        s.interval_ms = 0;
        assert_eq!(resolve("aws:all-bytes-out").unwrap().observe(&s), None);
        assert_eq!(resolve("tcp_out_rsts").unwrap().observe(&s), None);
        assert!(resolve("aws:num-listening-tcp-ports")
            .unwrap()
            .observe(&s)
            .is_some());
    }

    #[test]
    fn every_registered_custom_metric_resolves_with_a_kind() {
        for d in metrics::CUSTOM_METRICS {
            if SELF_METRICS.contains(&d.name) {
                assert!(resolve(d.name).is_err());
            } else {
                let m = resolve(d.name).unwrap();
                assert_eq!(m.name, d.name);
                assert!(!m.builtin);
            }
        }
        assert_eq!(resolve("tcp_out_rsts").unwrap().kind, MetricKind::Counter);
        assert_eq!(resolve("cpu_usage").unwrap().kind, MetricKind::Gauge);
        assert_eq!(
            resolve("new_process_names").unwrap().kind,
            MetricKind::StringSet
        );
    }

    #[test]
    fn cloud_and_unknown_metrics_are_refused_with_a_reason() {
        let e = resolve("aws:num-authorization-failures").unwrap_err();
        assert!(e.0.contains("cloud-side"), "{e}");
        let e = resolve("aws:all-byte-out").unwrap_err();
        assert!(e.0.contains("did you mean \"aws:all-bytes-out\""), "{e}");
        let e = resolve("zzzzzzzzzzzzzzzzzzzzzzz").unwrap_err();
        assert!(e.0.contains("unknown metric"), "{e}");
    }
}
