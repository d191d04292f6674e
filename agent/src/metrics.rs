//! The registry of every custom metric the agent reports.
//!
//! Each name here is a Device Defender custom metric (`aws iot create-custom-metric`). The table
//! drives three things: how a report interval's snapshots are folded into one value
//! ([`Fold`]), the cloud `metricType`, and the README's custom-metric table
//! (`edgewarden metrics` prints it). Adding a metric means adding one line here.

/// How the values of one report interval are folded into the reported value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fold {
    /// Per-tick deltas: the report carries their sum.
    Sum,
    /// A gauge: the report carries the last value.
    Last,
    /// A gauge: the report carries the maximum seen in the interval.
    Max,
    /// A list: the report carries the union of the interval's lists (deduplicated, capped).
    Union,
}

/// Device Defender custom metric type (`--metric-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloudType {
    /// `number`
    Number,
    /// `string-list`
    StringList,
    /// `ip-address-list`
    IpAddressList,
}

impl CloudType {
    /// The name used by `aws iot create-custom-metric --metric-type`.
    pub const fn as_str(self) -> &'static str {
        match self {
            CloudType::Number => "number",
            CloudType::StringList => "string-list",
            CloudType::IpAddressList => "ip-address-list",
        }
    }
}

/// One custom metric.
#[derive(Debug, Clone, Copy)]
pub struct CustomMetricDef {
    /// Registered name (`[a-zA-Z0-9:_-]{1,128}`, never starting with `aws:`).
    pub name: &'static str,
    /// Cloud metric type.
    pub cloud_type: CloudType,
    /// How a report interval is folded.
    pub fold: Fold,
    /// One line for operators.
    pub description: &'static str,
}

macro_rules! metric_names {
    ($($konst:ident = $name:literal, $ty:ident, $fold:ident, $desc:literal;)*) => {
        $(
            #[doc = $desc]
            pub const $konst: &str = $name;
        )*
        /// Every custom metric the agent may report, in README order.
        pub const CUSTOM_METRICS: &[CustomMetricDef] = &[
            $(CustomMetricDef { name: $name, cloud_type: CloudType::$ty, fold: Fold::$fold, description: $desc },)*
        ];
    };
}

metric_names! {
    CPU_USAGE = "cpu_usage", Number, Max, "System CPU usage in percent over the last collection interval (maximum within the report interval).";
    MEMORY_USED_PCT = "memory_used_pct", Number, Max, "Memory in use (total minus available) in percent of total.";
    LOAD_AVG_1M = "load_avg_1m", Number, Max, "One-minute load average.";
    UPTIME_S = "uptime_s", Number, Last, "Seconds since boot.";
    PROCESS_COUNT = "process_count", Number, Max, "Number of processes.";
    NEW_PROCESS_NAMES = "new_process_names", StringList, Union, "Names of processes started since the previous sample.";
    TOP_CPU_PROCESSES = "top_cpu_processes", StringList, Last, "Names of the processes using the most CPU in the last interval.";
    TOP_MEMORY_PROCESSES = "top_memory_processes", StringList, Last, "Names of the processes with the largest resident memory.";
    LISTENING_PROCESS_NAMES = "listening_process_names", StringList, Last, "Names of the processes that own listening sockets (where permissions allow).";
    TCP_ACTIVE_OPENS = "tcp_active_opens", Number, Sum, "Outbound TCP connection attempts (kernel ActiveOpens delta).";
    TCP_PASSIVE_OPENS = "tcp_passive_opens", Number, Sum, "Inbound TCP connections accepted (kernel PassiveOpens delta).";
    TCP_ATTEMPT_FAILS = "tcp_attempt_fails", Number, Sum, "Failed TCP connection attempts (kernel AttemptFails delta).";
    TCP_ESTAB_RESETS = "tcp_estab_resets", Number, Sum, "Established TCP connections reset (kernel EstabResets delta).";
    TCP_OUT_RSTS = "tcp_out_rsts", Number, Sum, "TCP resets sent, typical of a port scan against the gateway (kernel OutRsts delta).";
    TCP_IN_ERRS = "tcp_in_errs", Number, Sum, "TCP segments received in error (kernel InErrs delta).";
    UDP_IN_DATAGRAMS = "udp_in_datagrams", Number, Sum, "UDP datagrams received (kernel InDatagrams delta, IPv4 and IPv6).";
    UDP_OUT_DATAGRAMS = "udp_out_datagrams", Number, Sum, "UDP datagrams sent (kernel OutDatagrams delta, IPv4 and IPv6).";
    UDP_NO_PORTS = "udp_no_ports", Number, Sum, "UDP datagrams to closed ports, typical of a UDP scan (kernel NoPorts delta).";
    UDP_IN_ERRORS = "udp_in_errors", Number, Sum, "UDP datagrams received in error (kernel InErrors delta).";
    TCP_IN_SEGS = "tcp_in_segs", Number, Sum, "TCP segments received, resets to closed ports included (kernel InSegs delta).";
    TCP_OUT_SEGS = "tcp_out_segs", Number, Sum, "TCP segments sent by the kernel's TCP (kernel OutSegs delta).";
    RAW_PACKETS_OUT = "raw_packets_out", Number, Sum, "IP packets sent that TCP, UDP and ICMP do not account for: raw sockets, crafted packets (IP OutRequests minus TCP OutSegs, UDP OutDatagrams and ICMP OutMsgs, never negative).";
    DESTINATION_ENDPOINTS = "destination_endpoints", StringList, Union, "Remote address:port of the gateway's outbound TCP connections in any connected state (TIME_WAIT included).";
    RECURRING_DESTINATIONS = "recurring_destinations", StringList, Union, "Outbound destinations (address:port) that are long-lived (one connection held across two samples) or recur (two connections within 30 samples).";
    PROCESS_CPU_LEVELS = "process_cpu_levels", StringList, Last, "Per process name, the CPU levels (name@5 to name@90, percent of one core over the last two intervals) its busiest process reached.";
    COLLECTOR_ERRORS = "collector_errors", Number, Sum, "Collector failures (unreadable or vanished /proc entries, netlink errors) in the interval.";
    MQTT_CONNECTS = "mqtt_connects", Number, Last, "MQTT sessions established since the agent started.";
    MQTT_CONNECT_FAILURES = "mqtt_connect_failures", Number, Last, "MQTT connection attempts that failed for network reasons since start.";
    MQTT_CONNECT_AUTH_ERRORS = "mqtt_connect_auth_errors", Number, Last, "CONNACK refusals (not authorized, bad credentials) and connections closed before CONNACK since start.";
    MQTT_SUBSCRIBE_AUTH_ERRORS = "mqtt_subscribe_auth_errors", Number, Last, "SUBACK failures (not authorized or throttled) since start.";
    MQTT_PUBLISH_AUTH_ERRORS = "mqtt_publish_auth_errors", Number, Last, "Connections closed by the broker right after an unacknowledged publish (unauthorized publish) since start.";
    MQTT_TLS_FAILURES = "mqtt_tls_failures", Number, Last, "TLS handshake failures (unknown CA, expired or revoked certificate) since start.";
    MQTT_DISCONNECTS = "mqtt_disconnects", Number, Last, "Established MQTT sessions lost since start.";
    MQTT_PUBLISHED = "mqtt_published", Number, Last, "Records acknowledged by the broker (PUBACK) since start.";
    DEFENDER_REPORTS_ACCEPTED = "defender_reports_accepted", Number, Last, "Reports Device Defender accepted since start.";
    DEFENDER_REPORTS_REJECTED = "defender_reports_rejected", Number, Last, "Reports Device Defender rejected (any ErrorCode) since start.";
    DEFENDER_NO_RESPONSE = "defender_no_response", Number, Last, "Reports Device Defender did not answer within mqtt.response_timeout since start.";
    SPOOL_DEPTH = "spool_depth", Number, Last, "Reports waiting in the spool for a PUBACK.";
    SPOOL_DROPPED = "spool_dropped", Number, Last, "Reports dropped unpublished from the full spool since start.";
    SPOOL_DROPPED_UNAUTHORIZED = "spool_dropped_unauthorized", Number, Last, "Spooled records dropped after the broker refused them repeatedly (connection closed right after each publish, alone in flight) since start.";
    SPOOL_CORRUPT_SKIPPED = "spool_corrupt_skipped", Number, Last, "Corrupt spool records or regions skipped since start.";
    LOCAL_VIOLATIONS = "local_violations", Number, Max, "Behaviours of the local security profile in alarm at any time in the interval.";
    LOCAL_ANOMALY_SCORE = "local_anomaly_score", Number, Max, "Highest anomaly score (0 to 1) of the local ML and novelty behaviours in the interval.";
    LOCAL_VIOLATION_BEHAVIORS = "local_violation_behaviors", StringList, Union, "Names of the local behaviours in alarm at any time in the interval.";
    AUTH_FAILURES = "auth_failures", Number, Sum, "Failed login attempts in system logs (SSH, PAM, Dropbear, sudo), counted per attempt, not per line.";
    AUTH_SUCCESSES = "auth_successes", Number, Sum, "Accepted logins in system logs.";
    SSH_INVALID_USERS = "ssh_invalid_users", Number, Sum, "Log lines naming an unknown or refused user name.";
    SSH_PREAUTH_DISCONNECTS = "ssh_preauth_disconnects", Number, Sum, "SSH connections that ended before authentication finished.";
    SSH_NEGOTIATION_FAILURES = "ssh_negotiation_failures", Number, Sum, "SSH connections with no common algorithm (scanners, outdated clients).";
    MQTT_AUTH_FAILURES = "mqtt_auth_failures", Number, Sum, "CONNECTs refused by the local MQTT broker (bad or missing credentials).";
    MQTT_ACL_DENIALS = "mqtt_acl_denials", Number, Sum, "Publishes or subscriptions denied by the local broker's ACL.";
    MQTT_CLIENT_ID_CONFLICTS = "mqtt_client_id_conflicts", Number, Sum, "Client ids taken over by a second connection on the local broker.";
    MQTT_KEEPALIVE_TIMEOUTS = "mqtt_keepalive_timeouts", Number, Sum, "Local broker clients dropped for exceeding their keepalive.";
    MQTT_PROTOCOL_ERRORS = "mqtt_protocol_errors", Number, Sum, "Local broker clients dropped for malformed or non-MQTT traffic.";
    TLS_FAILURES = "tls_failures", Number, Sum, "Failed TLS handshakes on the local broker (missing, untrusted or expired client certificates, plain TCP).";
    CONNECTIONS_REFUSED = "connections_refused", Number, Sum, "Connections refused before any protocol exchange (tcp wrappers, MaxStartups).";
    FIREWALL_DROPS = "firewall_drops", Number, Sum, "Kernel firewall log lines (iptables/nftables LOG).";
    AUTH_FAILURE_SOURCES = "auth_failure_sources", IpAddressList, Union, "Addresses that failed authentication (SSH, PAM, MQTT, TLS) in the interval.";
    LOG_ALERTS = "log_alerts", Number, Sum, "Alerts raised from logs (brute force, user enumeration, scans, client-id takeover).";
    LOG_LINES_SKIPPED = "log_lines_skipped", Number, Sum, "Log lines skipped for exceeding the line length cap.";
    LOG_SOURCES_EVICTED = "log_sources_evicted", Number, Sum, "Source addresses dropped from the log tracker because its table was full.";
    VIOLATIONS_DROPPED = "violations_dropped", Number, Sum, "Violations not stored because their share of the spool (one eighth) was full; reports are never dropped for them.";
    LOG_LINES_DROPPED = "log_lines_dropped", Number, Sum, "Log lines read but not analysed because their source exceeded its budget (20,000 lines/s, bursts of 200,000).";
    LOG_FORGED_EVENTS = "log_forged_events", Number, Sum, "Log lines reporting a security event without coming from a program that reports it (journald's process fields or the syslog tag); not counted as events.";
    AUDIT_FINDINGS = "audit_findings", Number, Last, "Findings of the latest device audit (security configuration of the gateway itself).";
    AUDIT_NONCOMPLIANT_CHECKS = "audit_noncompliant_checks", StringList, Last, "Audit checks with at least one finding in the latest device audit.";
    REMEDIATION_ACTIONS = "remediation_actions", Number, Sum, "Remediation actions carried out or simulated (dry run) in the interval.";
    REMEDIATION_FAILURES = "remediation_failures", Number, Sum, "Remediation actions that failed (command error, timeout, nft missing) in the interval.";
    IPC_PROTOCOL_ERRORS = "ipc_protocol_errors", Number, Last, "Greengrass IPC protocol faults (undecodable frames, unknown message types, protocol errors from the nucleus) since start; reported in Greengrass mode only.";
}

/// True when `name` is a valid custom metric name.
pub fn is_valid_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && !name.starts_with("aws:")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'-'))
}

/// Looks a metric up by name.
pub fn find(name: &str) -> Option<&'static CustomMetricDef> {
    CUSTOM_METRICS.iter().find(|d| d.name == name)
}

/// The custom-metric table in Markdown (the README's table).
pub fn markdown_table() -> String {
    let mut s = String::from("| name | type | per report | meaning |\n|---|---|---|---|\n");
    for d in CUSTOM_METRICS {
        let fold = match d.fold {
            Fold::Sum => "sum",
            Fold::Last => "last",
            Fold::Max => "max",
            Fold::Union => "union",
        };
        s.push_str(&format!(
            "| `{}` | {} | {fold} | {} |\n",
            d.name,
            d.cloud_type.as_str(),
            d.description
        ));
    }
    s
}

/// The `aws iot create-custom-metric` commands that register every custom metric.
pub fn create_commands() -> String {
    let mut s = String::new();
    for d in CUSTOM_METRICS {
        s.push_str(&format!(
            "aws iot create-custom-metric --metric-name {} --metric-type {} --display-name {}\n",
            d.name,
            d.cloud_type.as_str(),
            d.name
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_readme_lists_every_custom_metric_as_the_registry_does() {
        let readme = include_str!("../../README.md");
        let table = markdown_table();
        assert!(
            readme.contains(&table),
            "README.md's custom metric table differs from `edgewarden metrics --markdown`; paste its output:\n{table}"
        );
    }

    use super::*;

    #[test]
    fn every_registered_name_is_valid_and_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for d in CUSTOM_METRICS {
            assert!(is_valid_name(d.name), "{}", d.name);
            assert!(seen.insert(d.name), "duplicate {}", d.name);
        }
    }
}
