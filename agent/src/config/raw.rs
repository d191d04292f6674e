//! The configuration file as written: serde structs, every field optional, defaults in `default_…`.
//!
//! Nothing here is validated; [`super::Config::from_toml`] turns this into a checked `Config`,
//! collecting every problem at once.

use serde::{Deserialize, Serialize};

/// Top level of `edgewarden.toml`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// AWS IoT thing name; default: the hostname.
    pub thing_name: Option<String>,
    /// Where state, spool and outbox live.
    pub state_dir: Option<String>,
    /// `[collect]`
    #[serde(default)]
    pub collect: RawCollect,
    /// `[report]`
    #[serde(default)]
    pub report: RawReport,
    /// `[outbox]`
    #[serde(default)]
    pub outbox: RawOutbox,
    /// `[mqtt]`; absent means the embedded default (local outbox).
    pub mqtt: Option<RawMqtt>,
    /// `[spool]`
    #[serde(default)]
    pub spool: RawSpool,
    /// `[detect]`
    #[serde(default)]
    pub detect: RawDetect,
    /// `[logs]`
    #[serde(default)]
    pub logs: RawLogs,
    /// `[audit]`
    #[serde(default)]
    pub audit: RawAudit,
    /// `[remediation]`
    #[serde(default)]
    pub remediation: RawRemediation,
}

/// `[collect]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCollect {
    pub interval: Option<String>,
    pub include_interfaces: Option<Vec<String>>,
    pub exclude_interfaces: Option<Vec<String>>,
    pub include_loopback: Option<bool>,
    pub top_processes: Option<i64>,
    pub netlink: Option<bool>,
    pub skip_unchanged: Option<bool>,
}

/// `[report]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawReport {
    pub interval: Option<String>,
    pub format: Option<String>,
    pub max_ports: Option<i64>,
    pub max_connections: Option<i64>,
    pub warm_up: Option<String>,
}

/// `[outbox]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutbox {
    pub max_bytes: Option<String>,
    pub stdout: Option<bool>,
}

/// `[mqtt]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawMqtt {
    pub endpoint: Option<String>,
    pub port: Option<i64>,
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub client_id: Option<String>,
    pub keep_alive: Option<String>,
    pub alpn: Option<String>,
    pub response_timeout: Option<String>,
    pub reconnect_min: Option<String>,
    pub reconnect_max: Option<String>,
}

/// `[spool]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpool {
    pub max_bytes: Option<String>,
    pub max_records: Option<i64>,
}

/// `[detect]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDetect {
    pub enabled: Option<bool>,
    pub profile: Option<String>,
    pub learning_period: Option<String>,
    pub violations_topic: Option<String>,
}

/// `[logs]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogs {
    pub enabled: Option<bool>,
    pub journal: Option<bool>,
    pub files: Option<Vec<String>>,
    pub brute_force_failures: Option<i64>,
    pub brute_force_window: Option<String>,
    pub max_sources: Option<i64>,
}

/// `[audit]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    pub enabled: Option<bool>,
    pub interval: Option<String>,
    pub cert_expiry_warning: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub ca_file: Option<String>,
    pub service_user: Option<String>,
    pub sshd_test: Option<bool>,
    pub mosquitto_config: Option<String>,
    pub peer_state_dirs: Option<Vec<String>>,
    pub topic: Option<String>,
}

/// `[remediation]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRemediation {
    pub enabled: Option<bool>,
    pub dry_run: Option<bool>,
    pub hook: Option<Vec<String>>,
    pub hook_timeout: Option<String>,
    pub publish_topic: Option<String>,
    pub nft: Option<String>,
    pub nft_set: Option<String>,
    pub block_timeout: Option<String>,
    pub allow_list: Option<Vec<String>>,
    pub logging_command: Option<Vec<String>>,
    pub actions: Option<std::collections::BTreeMap<String, Vec<String>>>,
    pub max_per_hour: Option<std::collections::BTreeMap<String, i64>>,
}
