//! Folding one report interval of [`Snapshot`]s into one [`MetricsReport`].
//!
//! - Traffic deltas are summed. A warm-up snapshot (`interval_ms == 0`) has no previous sample to
//!   subtract, so its traffic is ignored: a report never carries cumulative counters.
//! - Port and connection lists are the latest ones seen (they are states, not events). A list whose
//!   collector failed all interval is omitted; one that worked and found nothing is sent empty with
//!   `total: 0`, which is what clears a port-set violation in the cloud.
//! - Custom metrics fold per [`crate::metrics::Fold`]; names the registry does not know fold as
//!   `Last`. Values whose type does not match the registered cloud type are dropped (logged).

use std::collections::BTreeMap;
use std::net::IpAddr;

use tracing::debug;

use super::defender::{
    Connection, ConnectionList, CustomMetric, CustomValue, MetricName, Metrics, MetricsReport,
    NetworkStats, Port, PortList,
};
use crate::config::ReportConfig;
use crate::metrics::{self, CloudType, Fold};
use crate::snapshot::{ListenPort, MetricValue, NetDelta, Snapshot, TcpConn};

/// Longest list value of a custom metric (Device Defender documents no limit; the reference
/// agents keep lists to 50 entries).
pub const MAX_CUSTOM_LIST_LEN: usize = 50;

/// Folds one report interval of snapshots.
#[derive(Debug, Clone)]
pub struct Aggregator {
    max_ports: usize,
    max_connections: usize,
    snapshots: u64,
    net: Option<NetDelta>,
    tcp_listen: Option<Vec<ListenPort>>,
    udp_listen: Option<Vec<ListenPort>>,
    established: Option<Vec<TcpConn>>,
    custom: BTreeMap<String, MetricValue>,
}

impl Aggregator {
    /// An empty aggregator with the list caps of `cfg`.
    pub fn new(cfg: &ReportConfig) -> Self {
        Aggregator {
            max_ports: cfg.max_ports,
            max_connections: cfg.max_connections,
            snapshots: 0,
            net: None,
            tcp_listen: None,
            udp_listen: None,
            established: None,
            custom: BTreeMap::new(),
        }
    }

    /// Adds one collection tick.
    pub fn add(&mut self, snap: &Snapshot) {
        self.snapshots += 1;
        if let Some(d) = &snap.net {
            if snap.interval_ms == 0 {
                debug!(
                    seq = snap.seq,
                    "Warm-up snapshot carries traffic counters; ignoring them."
                );
            } else {
                self.net.get_or_insert_with(NetDelta::default).add(d);
            }
        }
        keep_latest(&mut self.tcp_listen, &snap.tcp_listen);
        keep_latest(&mut self.udp_listen, &snap.udp_listen);
        keep_latest(&mut self.established, &snap.established);
        for (name, value) in &snap.custom {
            self.fold_custom(name, value.clone());
        }
    }

    /// Adds a value for this interval that no snapshot carries (e.g. transport counters). It
    /// folds like a snapshot value of the same name.
    pub fn add_custom(&mut self, name: &str, value: MetricValue) {
        self.fold_custom(name, value);
    }

    /// True when nothing was added since the last [`Aggregator::take`].
    pub fn is_empty(&self) -> bool {
        self.snapshots == 0 && self.custom.is_empty()
    }

    /// Number of snapshots added since the last [`Aggregator::take`].
    pub fn snapshots(&self) -> u64 {
        self.snapshots
    }

    /// Builds the report of the interval and starts a new interval.
    pub fn take(&mut self, report_id: u64) -> MetricsReport {
        let listening_tcp_ports = self
            .tcp_listen
            .take()
            .map(|l| port_list(&l, self.max_ports, "listening_tcp_ports"));
        let listening_udp_ports = self
            .udp_listen
            .take()
            .map(|l| port_list(&l, self.max_ports, "listening_udp_ports"));
        let tcp_connections = self.established.take().map(|l| {
            let (list, capped) =
                ConnectionList::capped(l.iter().map(Connection::from_conn), self.max_connections);
            if capped.truncated() {
                debug!(
                    kept = capped.kept,
                    total = capped.total,
                    "Connection list truncated to its cap."
                );
            }
            list
        });
        let metrics = Metrics {
            listening_tcp_ports,
            listening_udp_ports,
            network_stats: self.net.take().map(NetworkStats::from),
            tcp_connections,
        };
        let mut custom = BTreeMap::new();
        for (name, value) in std::mem::take(&mut self.custom) {
            if let Some((n, v)) = custom_entry(&name, &value) {
                custom.insert(n, CustomMetric(v));
            }
        }
        self.snapshots = 0;
        MetricsReport::new(report_id, metrics, custom)
    }

    fn fold_custom(&mut self, name: &str, value: MetricValue) {
        let fold = metrics::find(name).map_or(Fold::Last, |d| d.fold);
        match self.custom.get_mut(name) {
            None => {
                let mut value = value;
                if fold == Fold::Union {
                    cap_list(&mut value);
                }
                self.custom.insert(name.to_owned(), value);
            }
            Some(acc) => fold_into(acc, value, fold, name),
        }
    }
}

fn keep_latest<T: Clone>(slot: &mut Option<Vec<T>>, new: &Option<Vec<T>>) {
    if let Some(v) = new {
        match slot {
            Some(s) => s.clone_from(v),
            None => *slot = Some(v.clone()),
        }
    }
}

fn port_list(l: &[ListenPort], cap: usize, what: &'static str) -> PortList {
    let (list, capped) = PortList::capped(l.iter().filter_map(Port::from_listen), cap);
    if capped.truncated() {
        debug!(
            list = what,
            kept = capped.kept,
            total = capped.total,
            "Port list truncated to its cap."
        );
    }
    list
}

fn fold_into(acc: &mut MetricValue, new: MetricValue, fold: Fold, name: &str) {
    match (fold, &mut *acc, new) {
        (Fold::Sum, MetricValue::Number(a), MetricValue::Number(b)) => {
            if b.is_finite() {
                *a = if a.is_finite() { *a + b } else { b };
            }
        }
        (Fold::Max, MetricValue::Number(a), MetricValue::Number(b)) => *a = a.max(b),
        (Fold::Union, MetricValue::StringList(a), MetricValue::StringList(b)) => union(a, b),
        (Fold::Union, MetricValue::IpList(a), MetricValue::IpList(b)) => union(a, b),
        (Fold::Union, MetricValue::NumberList(a), MetricValue::NumberList(b)) => {
            for x in b {
                if a.len() >= MAX_CUSTOM_LIST_LEN {
                    break;
                }
                if !a.iter().any(|y| y.to_bits() == x.to_bits()) {
                    a.push(x);
                }
            }
        }
        (_, _, new) => {
            if std::mem::discriminant(&*acc) != std::mem::discriminant(&new) {
                debug!(
                    metric = name,
                    "Custom metric changed value type within an interval; keeping the last."
                );
            }
            *acc = new;
            if fold == Fold::Union {
                cap_list(acc);
            }
        }
    }
}

fn union<T: PartialEq>(acc: &mut Vec<T>, new: Vec<T>) {
    for x in new {
        if acc.len() >= MAX_CUSTOM_LIST_LEN {
            break;
        }
        if !acc.contains(&x) {
            acc.push(x);
        }
    }
}

fn cap_list(v: &mut MetricValue) {
    match v {
        MetricValue::Number(_) => {}
        MetricValue::NumberList(l) => l.truncate(MAX_CUSTOM_LIST_LEN),
        MetricValue::StringList(l) => l.truncate(MAX_CUSTOM_LIST_LEN),
        MetricValue::IpList(l) => l.truncate(MAX_CUSTOM_LIST_LEN),
    }
}

/// Checks a folded custom metric and converts it; `None` (logged) when it cannot be sent.
fn custom_entry(name: &str, value: &MetricValue) -> Option<(MetricName, CustomValue)> {
    let Some(metric_name) = MetricName::new(name) else {
        debug!(metric = name, "Invalid custom metric name; not reported.");
        return None;
    };
    let Some(mut v) = CustomValue::from_metric(value) else {
        debug!(
            metric = name,
            "Custom metric value is not a finite number; not reported."
        );
        return None;
    };
    if let Some(def) = metrics::find(name) {
        let matches = matches!(
            (def.cloud_type, &v),
            (CloudType::Number, CustomValue::Number(_))
                | (CloudType::StringList, CustomValue::StringList(_))
                | (CloudType::IpAddressList, CustomValue::IpList(_))
        );
        if !matches {
            debug!(
                metric = name,
                registered = def.cloud_type.as_str(),
                got = v.type_name(),
                "Custom metric value does not match its registered type; not reported."
            );
            return None;
        }
    }
    let len = match &mut v {
        CustomValue::Number(_) => 0,
        CustomValue::NumberList(l) => truncate_len(l),
        CustomValue::StringList(l) => truncate_len(l),
        CustomValue::IpList(l) => truncate_len::<IpAddr>(l),
    };
    if len > MAX_CUSTOM_LIST_LEN {
        debug!(
            metric = name,
            len,
            cap = MAX_CUSTOM_LIST_LEN,
            "Custom metric list truncated to its cap."
        );
    }
    Some((metric_name, v))
}

fn truncate_len<T>(l: &mut Vec<T>) -> usize {
    let n = l.len();
    l.truncate(MAX_CUSTOM_LIST_LEN);
    n
}
