//! Device audit: the gateway's own security configuration, checked against fixed rules.
//!
//! Each check family is one module and reads only below [`AuditInputs::root`] (`/` on a device,
//! a fixture tree in tests), so every path in a finding is the path *on the device*:
//!
//! | module | checks |
//! |---|---|
//! | [`certs`] | `DEVICE_CERTIFICATE_KEY_QUALITY`, `DEVICE_CERTIFICATE_EXPIRING`, `DEVICE_CERTIFICATE_EXPIRED`, `CA_CERTIFICATE_EXPIRING`, `DEVICE_CERTIFICATE_SHARED` |
//! | [`keys`] | `PRIVATE_KEY_PERMISSIVE` |
//! | [`logging`] | `LOGGING_DISABLED` |
//! | [`services`] | `INSECURE_SERVICE_EXPOSED` |
//! | [`ssh`] | `SSH_WEAK_CONFIG` |
//! | [`sessions`] | `CONFLICTING_CLIENT_IDS` |
//! | [`agent`] | `AGENT_CONFIG_INSECURE` |
//!
//! A finding is a Device Defender-like object ([`Finding`]); its `findingId` is a hash of the
//! thing, the check and the resource, so the same problem keeps its id from one audit to the
//! next. A file that cannot be read or parsed becomes a [`CheckError`] naming the file and the
//! reason; the other checks still run. Nothing here panics on bad input.

pub mod agent;
pub mod certs;
pub mod command;
pub mod keys;
pub mod logging;
pub mod services;
pub mod sessions;
pub mod ssh;
pub mod stage;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Config;

/// `DEVICE_CERTIFICATE_KEY_QUALITY`
pub const DEVICE_CERTIFICATE_KEY_QUALITY: &str = "DEVICE_CERTIFICATE_KEY_QUALITY";
/// `DEVICE_CERTIFICATE_EXPIRING`
pub const DEVICE_CERTIFICATE_EXPIRING: &str = "DEVICE_CERTIFICATE_EXPIRING";
/// `DEVICE_CERTIFICATE_EXPIRED`
pub const DEVICE_CERTIFICATE_EXPIRED: &str = "DEVICE_CERTIFICATE_EXPIRED";
/// `CA_CERTIFICATE_EXPIRING`
pub const CA_CERTIFICATE_EXPIRING: &str = "CA_CERTIFICATE_EXPIRING";
/// `DEVICE_CERTIFICATE_SHARED`
pub const DEVICE_CERTIFICATE_SHARED: &str = "DEVICE_CERTIFICATE_SHARED";
/// `PRIVATE_KEY_PERMISSIVE`
pub const PRIVATE_KEY_PERMISSIVE: &str = "PRIVATE_KEY_PERMISSIVE";
/// `LOGGING_DISABLED`
pub const LOGGING_DISABLED: &str = "LOGGING_DISABLED";
/// `INSECURE_SERVICE_EXPOSED`
pub const INSECURE_SERVICE_EXPOSED: &str = "INSECURE_SERVICE_EXPOSED";
/// `SSH_WEAK_CONFIG`
pub const SSH_WEAK_CONFIG: &str = "SSH_WEAK_CONFIG";
/// `CONFLICTING_CLIENT_IDS`
pub const CONFLICTING_CLIENT_IDS: &str = "CONFLICTING_CLIENT_IDS";
/// `AGENT_CONFIG_INSECURE`
pub const AGENT_CONFIG_INSECURE: &str = "AGENT_CONFIG_INSECURE";

/// Every check, in report order.
pub const CHECKS: &[&str] = &[
    DEVICE_CERTIFICATE_KEY_QUALITY,
    DEVICE_CERTIFICATE_EXPIRING,
    DEVICE_CERTIFICATE_EXPIRED,
    CA_CERTIFICATE_EXPIRING,
    DEVICE_CERTIFICATE_SHARED,
    PRIVATE_KEY_PERMISSIVE,
    LOGGING_DISABLED,
    INSECURE_SERVICE_EXPOSED,
    SSH_WEAK_CONFIG,
    CONFLICTING_CLIENT_IDS,
    AGENT_CONFIG_INSECURE,
];

/// File in the state directory naming this agent's certificate, for `DEVICE_CERTIFICATE_SHARED`.
pub const IDENTITY_FILE: &str = "audit-identity.json";

/// How bad a finding is (Device Defender's audit severities).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Critical.
    Critical,
}

impl Severity {
    /// Upper-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "LOW",
            Severity::Medium => "MEDIUM",
            Severity::High => "HIGH",
            Severity::Critical => "CRITICAL",
        }
    }
}

/// The thing a finding is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource {
    /// `DEVICE_CERTIFICATE`, `CA_CERTIFICATE`, `FILE`, `SERVICE`, `SSH_SETTING`, `MQTT_SESSION`…
    pub resource_type: String,
    /// What identifies the resource (path, port, setting, certificate fingerprint).
    pub resource_identifier: BTreeMap<String, String>,
    /// Evidence.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub additional_info: BTreeMap<String, String>,
}

/// One non-compliant resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// Stable across audits for the same check, thing and resource.
    pub finding_id: String,
    /// Check id, e.g. `SSH_WEAK_CONFIG`.
    pub check_name: String,
    /// Severity.
    pub severity: Severity,
    /// What is wrong, in one sentence.
    pub reason_for_non_compliance: String,
    /// The resource.
    pub resource: Resource,
    /// When the audit found it, ms since the UNIX epoch.
    pub finding_time: u64,
    /// The thing audited.
    pub thing_name: String,
    /// How to fix it.
    pub fix_hint: String,
}

/// A check that could not look at something.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckError {
    /// Check id.
    pub check_name: String,
    /// The file or command, as on the device.
    pub resource: String,
    /// Why.
    pub message: String,
}

/// A check that did not apply to this device or configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckSkipped {
    /// Check id.
    pub check_name: String,
    /// Why it did not run.
    pub reason: String,
}

/// MQTT sessions since the previous audit (from the live transport).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionCounts {
    /// Sessions established.
    pub connects: u64,
    /// Sessions the broker closed shortly after CONNACK, before any PUBACK.
    pub short_sessions: u64,
}

/// Everything an audit looks at, resolved from the configuration.
#[derive(Debug, Clone)]
pub struct AuditInputs {
    /// Filesystem root of the device (`/`, or a fixture tree).
    pub root: PathBuf,
    /// Thing name (part of every finding id).
    pub thing_name: String,
    /// Client id of our MQTT session.
    pub client_id: Option<String>,
    /// "Now", ms since the UNIX epoch.
    pub now_ms: u64,
    /// Certificates expiring within this are reported.
    pub cert_expiry_warning: Duration,
    /// Device certificate (device path).
    pub cert_file: Option<PathBuf>,
    /// Device private key (device path).
    pub key_file: Option<PathBuf>,
    /// CA bundle (device path).
    pub ca_file: Option<PathBuf>,
    /// User that must own the private key (name or uid); `None`: the user running the audit.
    pub service_user: Option<String>,
    /// Run `sshd -T` (only when `root` is `/`).
    pub sshd_test: bool,
    /// Mosquitto configuration (device path).
    pub mosquitto_config: PathBuf,
    /// Log files the agent follows (device paths).
    pub log_files: Vec<PathBuf>,
    /// Whether the agent reads the journal.
    pub journal: bool,
    /// The agent's configuration file (device path).
    pub config_file: Option<PathBuf>,
    /// The agent's state directory (device path).
    pub state_dir: PathBuf,
    /// The agent's binary (device path); `None`: not known.
    pub binary: Option<PathBuf>,
    /// Directories holding other agents' state directories (device paths).
    pub peer_state_dirs: Vec<PathBuf>,
    /// Live MQTT session counts; `None` outside `run` or without MQTT.
    pub sessions: Option<SessionCounts>,
}

impl AuditInputs {
    /// The inputs of an audit of `root` with this configuration.
    pub fn from_config(cfg: &Config, root: &Path, now_ms: u64) -> AuditInputs {
        let a = &cfg.audit;
        let binary = if root == Path::new("/") {
            std::env::current_exe().ok()
        } else {
            Some(PathBuf::from("/usr/bin/edgewarden"))
        };
        AuditInputs {
            root: root.to_owned(),
            thing_name: cfg.thing_name.clone(),
            client_id: cfg.mqtt.as_ref().map(|m| m.client_id.clone()),
            now_ms,
            cert_expiry_warning: a.cert_expiry_warning,
            cert_file: a.cert_file.clone(),
            key_file: a.key_file.clone(),
            ca_file: a.ca_file.clone(),
            service_user: a.service_user.clone(),
            sshd_test: a.sshd_test,
            mosquitto_config: a.mosquitto_config.clone(),
            log_files: cfg.logs.files.clone(),
            journal: cfg.logs.enabled && cfg.logs.journal,
            config_file: a.config_file.clone(),
            state_dir: cfg.state_dir.clone(),
            binary,
            peer_state_dirs: a.peer_state_dirs.clone(),
            sessions: None,
        }
    }

    /// `device_path` below the audited root.
    pub fn path(&self, device_path: &Path) -> PathBuf {
        let rel = device_path.strip_prefix("/").unwrap_or(device_path);
        if rel.as_os_str().is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        }
    }
}

/// The outcome of one audit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditReport {
    /// Thing audited.
    pub thing_name: String,
    /// Start of the audit, ms since the UNIX epoch.
    pub audit_time: u64,
    /// Checks run.
    pub checks: Vec<String>,
    /// Findings, most severe first.
    pub findings: Vec<Finding>,
    /// What could not be checked, and why.
    pub errors: Vec<CheckError>,
    /// Checks that did not apply (nothing configured to look at), and why.
    #[serde(default)]
    pub skipped: Vec<CheckSkipped>,
}

impl AuditReport {
    /// The highest severity found.
    pub fn worst(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).max()
    }

    /// `edgewarden audit`'s exit code: 0 no finding, 3 low/medium, 4 high/critical.
    pub fn exit_code(&self) -> u8 {
        match self.worst() {
            None => 0,
            Some(Severity::Low | Severity::Medium) => 3,
            Some(Severity::High | Severity::Critical) => 4,
        }
    }

    /// Distinct check names with at least one finding, sorted.
    pub fn noncompliant_checks(&self) -> Vec<String> {
        let mut v: Vec<String> = self.findings.iter().map(|f| f.check_name.clone()).collect();
        v.sort();
        v.dedup();
        v
    }

    /// Human-readable text.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for f in &self.findings {
            s.push_str(&format!(
                "{:<8} {}  {}\n         {}\n         fix: {}\n",
                f.severity.as_str(),
                f.check_name,
                resource_label(&f.resource),
                f.reason_for_non_compliance,
                f.fix_hint
            ));
        }
        for e in &self.errors {
            s.push_str(&format!(
                "ERROR    {}  {}: {}\n",
                e.check_name, e.resource, e.message
            ));
        }
        for k in &self.skipped {
            s.push_str(&format!("SKIPPED  {}: {}\n", k.check_name, k.reason));
        }
        let count = |sev| self.findings.iter().filter(|f| f.severity == sev).count();
        s.push_str(&format!(
            "{} finding{} ({} critical, {} high, {} medium, {} low), {} check{} run, {} skipped, {} could not be completed\n",
            self.findings.len(),
            if self.findings.len() == 1 { "" } else { "s" },
            count(Severity::Critical),
            count(Severity::High),
            count(Severity::Medium),
            count(Severity::Low),
            self.checks.len() - self.skipped.len(),
            if self.checks.len() - self.skipped.len() == 1 { "" } else { "s" },
            self.skipped.len(),
            self.errors.len(),
        ));
        s
    }
}

fn resource_label(r: &Resource) -> String {
    let ids: Vec<String> = r
        .resource_identifier
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    format!("{} {}", r.resource_type, ids.join(" "))
}

/// Collects the findings and errors of one audit.
#[derive(Debug)]
pub struct Findings<'a> {
    inputs: &'a AuditInputs,
    findings: Vec<Finding>,
    errors: Vec<CheckError>,
    skipped: Vec<CheckSkipped>,
}

/// A finding under construction.
#[derive(Debug, Clone)]
pub struct Draft {
    /// Check id.
    pub check: &'static str,
    /// Severity.
    pub severity: Severity,
    /// Resource type.
    pub resource_type: &'static str,
    /// Identifier pairs.
    pub id: Vec<(&'static str, String)>,
    /// Evidence pairs.
    pub info: Vec<(&'static str, String)>,
    /// Reason.
    pub reason: String,
    /// Fix hint.
    pub fix: String,
}

impl<'a> Findings<'a> {
    fn new(inputs: &'a AuditInputs) -> Findings<'a> {
        Findings {
            inputs,
            findings: Vec::new(),
            errors: Vec::new(),
            skipped: Vec::new(),
        }
    }

    /// Records a check that does not apply here.
    pub fn skip(&mut self, check: &str, reason: impl Into<String>) {
        self.skipped.push(CheckSkipped {
            check_name: check.to_owned(),
            reason: reason.into(),
        });
    }

    /// The inputs.
    pub fn inputs(&self) -> &'a AuditInputs {
        self.inputs
    }

    /// Adds a finding.
    pub fn add(&mut self, d: Draft) {
        let resource_identifier: BTreeMap<String, String> =
            d.id.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        let key: Vec<String> = resource_identifier
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let finding_id = format!(
            "{:016x}",
            crate::hash::fnv1a(
                format!(
                    "{}/{}/{}/{}",
                    self.inputs.thing_name,
                    d.check,
                    d.resource_type,
                    key.join("\u{1f}")
                )
                .as_bytes()
            )
        );
        self.findings.push(Finding {
            finding_id,
            check_name: d.check.to_owned(),
            severity: d.severity,
            reason_for_non_compliance: d.reason,
            resource: Resource {
                resource_type: d.resource_type.to_owned(),
                resource_identifier,
                additional_info: d.info.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            },
            finding_time: self.inputs.now_ms,
            thing_name: self.inputs.thing_name.clone(),
            fix_hint: d.fix,
        });
    }

    /// Records what could not be checked.
    pub fn error(&mut self, check: &str, resource: &Path, message: impl Into<String>) {
        self.errors.push(CheckError {
            check_name: check.to_owned(),
            resource: resource.display().to_string(),
            message: message.into(),
        });
    }
}

/// Runs every check.
pub fn run(inputs: &AuditInputs) -> AuditReport {
    let mut out = Findings::new(inputs);
    certs::check(&mut out);
    keys::check(&mut out);
    logging::check(&mut out);
    services::check(&mut out);
    ssh::check(&mut out);
    sessions::check(&mut out);
    agent::check(&mut out);
    let Findings {
        mut findings,
        errors,
        skipped,
        ..
    } = out;
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| a.check_name.cmp(&b.check_name))
            .then_with(|| a.finding_id.cmp(&b.finding_id))
    });
    findings.dedup_by(|a, b| a.finding_id == b.finding_id);
    AuditReport {
        thing_name: inputs.thing_name.clone(),
        audit_time: inputs.now_ms,
        checks: CHECKS.iter().map(|s| s.to_string()).collect(),
        findings,
        errors,
        skipped,
    }
}

/// Runs a command for a check: (exit status, stdout).
pub(crate) fn run_with_timeout(
    program: &str,
    args: &[&str],
    timeout: Duration,
) -> Result<(Option<i32>, Vec<u8>), String> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    command::run(program, &args, &[], b"", timeout).map(|o| (o.status, o.stdout))
}

/// Reads a small text file below the root; `Ok(None)` when it does not exist.
pub(crate) fn read_optional(
    out: &mut Findings<'_>,
    check: &str,
    device_path: &Path,
) -> Option<String> {
    let p = out.inputs().path(device_path);
    match std::fs::read(&p) {
        Ok(b) => Some(String::from_utf8_lossy(&b).into_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            out.error(check, device_path, format!("cannot read: {e}"));
            None
        }
    }
}

/// Files of `dir` (device path) whose names end in `suffix`, sorted; empty when it is absent.
pub(crate) fn dir_files(inputs: &AuditInputs, dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(inputs.path(dir)) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(suffix))
        .map(|e| dir.join(e.file_name()))
        .collect();
    v.sort();
    v
}
