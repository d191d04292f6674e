//! `[audit]` and `[remediation]`: the device audit's inputs and the automated responses.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::raw::{RawAudit, RawRemediation};
use super::{MqttConfig, Validator};
use crate::units::format_duration;

/// Default topic of audit findings; `{thing}` is replaced.
pub const DEFAULT_AUDIT_TOPIC: &str = "edgewarden/{thing}/audit";
/// Default second topic of the `publish` remediation action.
pub const DEFAULT_REMEDIATION_TOPIC: &str = "edgewarden/{thing}/remediation";
/// Default nftables set of `block_source`: family, table, set.
pub const DEFAULT_NFT_SET: &str = "inet edgewarden blocked";

/// `[audit]`
#[derive(Debug, Clone, PartialEq)]
pub struct AuditConfig {
    /// Periodic audit inside `run` on or off (`edgewarden audit` always works).
    pub enabled: bool,
    /// Time between two audits (one also runs at start).
    pub interval: Duration,
    /// A certificate expiring within this is reported.
    pub cert_expiry_warning: Duration,
    /// Device certificate (default: `[mqtt] cert_file`).
    pub cert_file: Option<PathBuf>,
    /// Device private key (default: `[mqtt] key_file`).
    pub key_file: Option<PathBuf>,
    /// CA bundle (default: `[mqtt] ca_file`).
    pub ca_file: Option<PathBuf>,
    /// User (name or uid) that must own the private key; default: the user running the audit.
    pub service_user: Option<String>,
    /// Ask `sshd -T` for the effective SSH settings when auditing `/` (falls back to the files).
    pub sshd_test: bool,
    /// Mosquitto's main configuration file (its `include_dir` is followed).
    pub mosquitto_config: PathBuf,
    /// Directories whose subdirectories are other agents' state directories.
    pub peer_state_dirs: Vec<PathBuf>,
    /// Topic template of findings; `{thing}` is replaced.
    pub topic: String,
    /// The configuration file the agent was started with (set by [`super::Config::load`]).
    pub config_file: Option<PathBuf>,
}

/// One automated response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RemediationAction {
    /// Run `[remediation] hook` with the finding or violation as JSON.
    Hook,
    /// Publish the finding or violation on `[remediation] publish_topic` as well.
    Publish,
    /// Add a violation's source address to the nftables set, with a timeout.
    BlockSource,
    /// Run `[remediation] logging_command` (restart the journal with persistent storage).
    ReenableLogging,
}

impl RemediationAction {
    /// Every action.
    pub const ALL: [RemediationAction; 4] = [
        RemediationAction::Hook,
        RemediationAction::Publish,
        RemediationAction::BlockSource,
        RemediationAction::ReenableLogging,
    ];
    /// Name in the configuration and in `actions.jsonl`.
    pub const fn as_str(self) -> &'static str {
        match self {
            RemediationAction::Hook => "hook",
            RemediationAction::Publish => "publish",
            RemediationAction::BlockSource => "block_source",
            RemediationAction::ReenableLogging => "reenable_logging",
        }
    }
    /// Parses [`RemediationAction::as_str`].
    pub fn from_name(s: &str) -> Option<RemediationAction> {
        RemediationAction::ALL.into_iter().find(|a| a.as_str() == s)
    }
    /// Default bound on attempts per hour.
    pub const fn default_per_hour(self) -> u32 {
        match self {
            RemediationAction::Hook => 10,
            RemediationAction::Publish => 60,
            RemediationAction::BlockSource => 30,
            RemediationAction::ReenableLogging => 2,
        }
    }
}

/// `[remediation]`
#[derive(Debug, Clone, PartialEq)]
pub struct RemediationConfig {
    /// Off by default.
    pub enabled: bool,
    /// When on, actions are recorded but not carried out (the default).
    pub dry_run: bool,
    /// Command (program and arguments) of the `hook` action.
    pub hook: Vec<String>,
    /// The hook is killed after this.
    pub hook_timeout: Duration,
    /// Topic template of the `publish` action; `{thing}` is replaced.
    pub publish_topic: String,
    /// The `nft` program.
    pub nft: PathBuf,
    /// nftables family, table and set of `block_source`.
    pub nft_set: (String, String, String),
    /// Timeout of a blocked address in the set.
    pub block_timeout: Duration,
    /// Networks never blocked (loopback never is, whatever this says).
    pub allow_list: Vec<(IpAddr, u8)>,
    /// Command of `reenable_logging`.
    pub logging_command: Vec<String>,
    /// Check or violation name → actions, in order.
    pub actions: BTreeMap<String, Vec<RemediationAction>>,
    /// Attempts allowed per action per hour.
    pub max_per_hour: BTreeMap<RemediationAction, u32>,
}

pub(super) fn audit_from_raw(
    v: &mut Validator<'_>,
    a: &RawAudit,
    mqtt: Option<&MqttConfig>,
) -> AuditConfig {
    let topic = a
        .topic
        .clone()
        .unwrap_or_else(|| DEFAULT_AUDIT_TOPIC.to_owned());
    check_topic(v, "audit", "topic", &topic);
    AuditConfig {
        enabled: a.enabled.unwrap_or(true),
        interval: v.duration(
            "audit",
            "interval",
            a.interval.as_deref(),
            "1h",
            Duration::from_secs(10),
            Duration::from_secs(7 * 86_400),
        ),
        cert_expiry_warning: v.duration(
            "audit",
            "cert_expiry_warning",
            a.cert_expiry_warning.as_deref(),
            "30d",
            Duration::ZERO,
            Duration::from_secs(3650 * 86_400),
        ),
        cert_file: a
            .cert_file
            .as_deref()
            .map(PathBuf::from)
            .or_else(|| mqtt.map(|m| m.cert_file.clone())),
        key_file: a
            .key_file
            .as_deref()
            .map(PathBuf::from)
            .or_else(|| mqtt.map(|m| m.key_file.clone())),
        ca_file: a
            .ca_file
            .as_deref()
            .map(PathBuf::from)
            .or_else(|| mqtt.map(|m| m.ca_file.clone())),
        service_user: a.service_user.clone().filter(|s| !s.is_empty()),
        sshd_test: a.sshd_test.unwrap_or(true),
        mosquitto_config: PathBuf::from(
            a.mosquitto_config
                .as_deref()
                .unwrap_or("/etc/mosquitto/mosquitto.conf"),
        ),
        peer_state_dirs: a
            .peer_state_dirs
            .clone()
            .unwrap_or_else(|| vec!["/var/lib".to_owned()])
            .into_iter()
            .map(PathBuf::from)
            .collect(),
        topic,
        config_file: None,
    }
}

fn check_topic(v: &mut Validator<'_>, section: &str, key: &str, topic: &str) {
    if topic.starts_with("$aws/") || topic.contains(['+', '#']) || topic.is_empty() {
        v.err(
            section,
            key,
            format!("{topic:?} must be a plain topic outside $aws/ (no wildcards)"),
        );
    }
}

/// Parses `addr/prefix` or a bare address (a host).
pub fn parse_cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let (a, p) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let ip: IpAddr = a
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not an address or CIDR network"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = match p {
        None => max,
        Some(p) => match p.trim().parse::<u8>() {
            Ok(n) if n <= max => n,
            _ => return Err(format!("{s:?}: prefix must be 0 to {max}")),
        },
    };
    Ok((ip, prefix))
}

pub(super) fn remediation_from_raw(v: &mut Validator<'_>, r: &RawRemediation) -> RemediationConfig {
    let publish_topic = r
        .publish_topic
        .clone()
        .unwrap_or_else(|| DEFAULT_REMEDIATION_TOPIC.to_owned());
    check_topic(v, "remediation", "publish_topic", &publish_topic);
    let set_text = r.nft_set.as_deref().unwrap_or(DEFAULT_NFT_SET);
    let parts: Vec<&str> = set_text.split_whitespace().collect();
    let nft_set = match parts.as_slice() {
        [f, t, s]
            if matches!(*f, "inet" | "ip" | "ip6")
                && [t, s].iter().all(|x| {
                    x.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                }) =>
        {
            (f.to_string(), t.to_string(), s.to_string())
        }
        _ => {
            v.err(
                "remediation",
                "nft_set",
                format!("{set_text:?} must be \"FAMILY TABLE SET\" (family inet, ip or ip6; names of a-z 0-9 _ -)"),
            );
            ("inet".into(), "edgewarden".into(), "blocked".into())
        }
    };
    let mut allow_list = Vec::new();
    for s in r.allow_list.clone().unwrap_or_default() {
        match parse_cidr(&s) {
            Ok(n) => allow_list.push(n),
            Err(e) => v.err("remediation", "allow_list", e),
        }
    }
    let hook = r.hook.clone().unwrap_or_default();
    let logging_command = r.logging_command.clone().unwrap_or_default();
    let mut actions = BTreeMap::new();
    for (name, list) in r.actions.clone().unwrap_or_default() {
        let mut parsed = Vec::new();
        for a in list {
            match RemediationAction::from_name(&a) {
                Some(RemediationAction::Hook) if hook.is_empty() => v.err(
                    "remediation",
                    "actions",
                    format!("{name}: action \"hook\" needs remediation.hook (a command)"),
                ),
                Some(RemediationAction::ReenableLogging) if logging_command.is_empty() => v.err(
                    "remediation",
                    "actions",
                    format!("{name}: action \"reenable_logging\" needs remediation.logging_command"),
                ),
                Some(x) => parsed.push(x),
                None => v.err(
                    "remediation",
                    "actions",
                    format!("{name}: unknown action {a:?} (hook, publish, block_source, reenable_logging)"),
                ),
            }
        }
        actions.insert(name, parsed);
    }
    let mut max_per_hour: BTreeMap<RemediationAction, u32> = RemediationAction::ALL
        .into_iter()
        .map(|a| (a, a.default_per_hour()))
        .collect();
    for (name, n) in r.max_per_hour.clone().unwrap_or_default() {
        match RemediationAction::from_name(&name) {
            Some(a) => {
                let n = v.int("remediation", "max_per_hour", Some(n), 1, 0, 100_000);
                max_per_hour.insert(a, n as u32);
            }
            None => v.err(
                "remediation",
                "max_per_hour",
                format!("unknown action {name:?}"),
            ),
        }
    }
    RemediationConfig {
        enabled: r.enabled.unwrap_or(false),
        dry_run: r.dry_run.unwrap_or(true),
        hook,
        hook_timeout: v.duration(
            "remediation",
            "hook_timeout",
            r.hook_timeout.as_deref(),
            "10s",
            Duration::from_millis(10),
            Duration::from_secs(3600),
        ),
        publish_topic,
        nft: PathBuf::from(r.nft.as_deref().unwrap_or("nft")),
        nft_set,
        block_timeout: v.duration(
            "remediation",
            "block_timeout",
            r.block_timeout.as_deref(),
            "1h",
            Duration::from_secs(1),
            Duration::from_secs(30 * 86_400),
        ),
        allow_list,
        logging_command,
        actions,
        max_per_hour,
    }
}

impl AuditConfig {
    pub(super) fn to_raw(&self) -> RawAudit {
        let p = |x: &Option<PathBuf>| x.as_ref().map(|p| p.display().to_string());
        RawAudit {
            enabled: Some(self.enabled),
            interval: Some(format_duration(self.interval)),
            cert_expiry_warning: Some(format_duration(self.cert_expiry_warning)),
            cert_file: p(&self.cert_file),
            key_file: p(&self.key_file),
            ca_file: p(&self.ca_file),
            service_user: self.service_user.clone(),
            sshd_test: Some(self.sshd_test),
            mosquitto_config: Some(self.mosquitto_config.display().to_string()),
            peer_state_dirs: Some(
                self.peer_state_dirs
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect(),
            ),
            topic: Some(self.topic.clone()),
        }
    }
}

impl RemediationConfig {
    pub(super) fn to_raw(&self) -> RawRemediation {
        let (f, t, s) = &self.nft_set;
        RawRemediation {
            enabled: Some(self.enabled),
            dry_run: Some(self.dry_run),
            hook: Some(self.hook.clone()),
            hook_timeout: Some(format_duration(self.hook_timeout)),
            publish_topic: Some(self.publish_topic.clone()),
            nft: Some(self.nft.display().to_string()),
            nft_set: Some(format!("{f} {t} {s}")),
            block_timeout: Some(format_duration(self.block_timeout)),
            allow_list: Some(
                self.allow_list
                    .iter()
                    .map(|(ip, p)| format!("{ip}/{p}"))
                    .collect(),
            ),
            logging_command: Some(self.logging_command.clone()),
            actions: Some(
                self.actions
                    .iter()
                    .map(|(k, v)| (k.clone(), v.iter().map(|a| a.as_str().to_owned()).collect()))
                    .collect(),
            ),
            max_per_hour: Some(
                self.max_per_hour
                    .iter()
                    .map(|(a, n)| (a.as_str().to_owned(), i64::from(*n)))
                    .collect(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::{Config, RemediationAction};

    #[test]
    fn defaults_audit_hourly_and_keep_remediation_off_and_dry() {
        let c = Config::from_toml("").unwrap();
        assert!(c.audit.enabled);
        assert_eq!(c.audit.interval, Duration::from_secs(3600));
        assert_eq!(
            c.audit.cert_expiry_warning,
            Duration::from_secs(30 * 86_400)
        );
        assert!(!c.remediation.enabled);
        assert!(c.remediation.dry_run);
        assert_eq!(
            c.remediation.max_per_hour[&RemediationAction::ReenableLogging],
            2
        );
    }

    #[test]
    fn audit_files_default_to_the_mqtt_files() {
        let c = Config::from_toml(
            "[mqtt]\nendpoint = \"x\"\nca_file = \"/c/ca.pem\"\ncert_file = \"/c/d.crt\"\nkey_file = \"/c/d.key\"\n[audit]\nkey_file = \"/other.key\"\n",
        )
        .unwrap();
        assert_eq!(
            c.audit.cert_file.as_deref(),
            Some(std::path::Path::new("/c/d.crt"))
        );
        assert_eq!(
            c.audit.ca_file.as_deref(),
            Some(std::path::Path::new("/c/ca.pem"))
        );
        assert_eq!(
            c.audit.key_file.as_deref(),
            Some(std::path::Path::new("/other.key"))
        );
    }

    #[test]
    fn every_remediation_problem_is_reported_with_its_key_and_line() {
        let e = Config::from_toml(
            "[audit]\ninterval = \"1s\"\ncolour = 1\n[remediation]\nnft_set = \"bridge x\"\nallow_list = [\"10.0.0.0/33\"]\nactions = { brute_force = [\"block_source\", \"reboot\"], LOGGING_DISABLED = [\"reenable_logging\"], X = [\"hook\"] }\nmax_per_hour = { nap = 3 }\n",
        )
        .unwrap_err();
        let text = e.to_string();
        for want in [
            "line 2: audit.interval",
            "line 3: audit.colour: unknown key",
            "line 5: remediation.nft_set",
            "line 6: remediation.allow_list: \"10.0.0.0/33\": prefix must be 0 to 32",
            "unknown action \"reboot\"",
            "LOGGING_DISABLED: action \"reenable_logging\" needs remediation.logging_command",
            "X: action \"hook\" needs remediation.hook",
            "remediation.max_per_hour: unknown action \"nap\"",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
    }

    #[test]
    fn print_config_round_trips_audit_and_remediation() {
        let c = Config::from_toml(
            "[remediation]\nenabled = true\nhook = [\"/bin/true\"]\nallow_list = [\"10.0.0.0/8\", \"fd00::/8\"]\n[remediation.actions]\nbrute_force = [\"block_source\", \"hook\"]\n",
        )
        .unwrap();
        let again = Config::from_toml(&c.to_toml()).unwrap();
        assert_eq!(again.audit, c.audit);
        assert_eq!(again.remediation, c.remediation);
    }
}
