//! Validated configuration.
//!
//! `edgewarden.toml` is parsed into [`raw::RawConfig`] and checked by [`Config::from_toml`], which
//! collects *every* problem (unknown keys, wrong types, bad values) into [`ConfigErrors`], each
//! naming its key and line, so one `edgewarden validate` run shows them all. Only a validated
//! [`Config`] reaches the pipeline; its fields hold `Duration`s, sizes and paths, never raw strings.

mod audit;
pub mod raw;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use raw::RawConfig;

pub use audit::{AuditConfig, RemediationAction, RemediationConfig};

use crate::units::{format_duration, format_size, parse_duration, parse_size};

/// Default configuration path.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/edgewarden/edgewarden.toml";
/// Default state directory when running as root.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/edgewarden";
/// Environment variable naming the configuration file.
pub const ENV_CONFIG: &str = "EDGEWARDEN_CONFIG";
/// Environment variable overriding `thing_name`.
pub const ENV_THING_NAME: &str = "EDGEWARDEN_THING_NAME";
/// Device Defender's minimum report interval; shorter ones are allowed with a warning.
pub const DEFENDER_MIN_INTERVAL: Duration = Duration::from_secs(300);

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key, e.g. `mqtt.port`; empty for syntax errors.
    pub key: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.line, self.key.is_empty()) {
            (Some(l), false) => write!(f, "line {l}: {}: {}", self.key, self.message),
            (Some(l), true) => write!(f, "line {l}: {}", self.message),
            (None, false) => write!(f, "{}: {}", self.key, self.message),
            (None, true) => write!(f, "{}", self.message),
        }
    }
}

/// Every problem found in one configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    /// The file, when the configuration came from one.
    pub path: Option<PathBuf>,
    /// The problems, in file order where lines are known.
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        match &self.path {
            Some(p) => write!(
                f,
                "{}: {n} configuration problem{}",
                p.display(),
                if n == 1 { "" } else { "s" }
            )?,
            None => write!(
                f,
                "{n} configuration problem{}",
                if n == 1 { "" } else { "s" }
            )?,
        }
        for e in &self.errors {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Device Defender report encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    /// JSON with long key names.
    Json,
    /// JSON with short key names.
    JsonShort,
    /// CBOR with short key names.
    Cbor,
}

impl ReportFormat {
    /// Name as written in the config and on the CLI.
    pub const fn as_str(self) -> &'static str {
        match self {
            ReportFormat::Json => "json",
            ReportFormat::JsonShort => "json-short",
            ReportFormat::Cbor => "cbor",
        }
    }
    /// Last topic level of `$aws/things/{thing}/defender/metrics/{json|cbor}`.
    pub const fn topic_suffix(self) -> &'static str {
        match self {
            ReportFormat::Json | ReportFormat::JsonShort => "json",
            ReportFormat::Cbor => "cbor",
        }
    }
    /// Parses `json`, `json-short` or `cbor`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "json" => Some(ReportFormat::Json),
            "json-short" => Some(ReportFormat::JsonShort),
            "cbor" => Some(ReportFormat::Cbor),
            _ => None,
        }
    }
}

/// `[collect]`
#[derive(Debug, Clone, PartialEq)]
pub struct CollectConfig {
    /// Collection tick.
    pub interval: Duration,
    /// Only these interfaces count towards traffic (empty: all). Each entry is an exact name or
    /// a prefix ending in `*` (`"wlan*"`).
    pub include_interfaces: Vec<String>,
    /// These interfaces never count towards traffic (same patterns; exclusion wins).
    pub exclude_interfaces: Vec<String>,
    /// Count `lo` traffic (off by default; naming `lo` in `include_interfaces` also counts it).
    pub include_loopback: bool,
    /// How many top CPU / memory consumers to name.
    pub top_processes: usize,
    /// Use netlink sock_diag for sockets (falls back to /proc/net when unavailable).
    pub netlink: bool,
    /// Reuse the last TCP connection walk, and skip listing `/proc`, while the kernel's counters
    /// show that no connection and no process came or went (see `collect::gate`).
    pub skip_unchanged: bool,
}

/// `[report]`
#[derive(Debug, Clone, PartialEq)]
pub struct ReportConfig {
    /// Device Defender report period.
    pub interval: Duration,
    /// Encoding.
    pub format: ReportFormat,
    /// Cap on each listening-port list (the true total is always reported).
    pub max_ports: usize,
    /// Cap on the connection list.
    pub max_connections: usize,
    /// Delay before the first report, so it carries deltas, never cumulative counters.
    pub warm_up: Duration,
}

/// `[outbox]`: the embedded default sink.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxConfig {
    /// Bound on each outbox file; the older file is rotated out beyond it.
    pub max_bytes: u64,
    /// Also print each report as one JSON line on stdout.
    pub stdout: bool,
}

/// `[mqtt]`
#[derive(Debug, Clone, PartialEq)]
pub struct MqttConfig {
    /// IoT Core data endpoint (or a local broker).
    pub endpoint: String,
    /// 8883, or 443 with ALPN.
    pub port: u16,
    /// CA bundle used to verify the server.
    pub ca_file: PathBuf,
    /// Device certificate (PEM).
    pub cert_file: PathBuf,
    /// Device private key (PEM); must not be readable by group or others.
    pub key_file: PathBuf,
    /// MQTT client id (default: thing name).
    pub client_id: String,
    /// MQTT keep-alive (IoT Core accepts 30–1200 s).
    pub keep_alive: Duration,
    /// ALPN protocol; `x-amzn-mqtt-ca` by default on port 443, none otherwise.
    pub alpn: Option<String>,
    /// How long to wait for Device Defender's accepted/rejected answer.
    pub response_timeout: Duration,
    /// First reconnect delay.
    pub reconnect_min: Duration,
    /// Cap of the exponential reconnect backoff.
    pub reconnect_max: Duration,
}

/// `[spool]`
#[derive(Debug, Clone, PartialEq)]
pub struct SpoolConfig {
    /// Bound on spooled bytes; the oldest records are dropped (and counted) beyond it.
    pub max_bytes: u64,
    /// Bound on spooled records.
    pub max_records: usize,
}

/// `[detect]`
#[derive(Debug, Clone, PartialEq)]
pub struct DetectConfig {
    /// Local detection on or off.
    pub enabled: bool,
    /// Security profile file (Device Defender behaviour JSON); `None`: the built-in default profile.
    pub profile: Option<PathBuf>,
    /// Time spent learning the baseline before ML and novelty behaviours may alarm.
    pub learning_period: Duration,
    /// Topic template of the violations topic; `{thing}` is replaced.
    pub violations_topic: String,
}

/// `[logs]`
#[derive(Debug, Clone, PartialEq)]
pub struct LogsConfig {
    /// Security events from logs on or off.
    pub enabled: bool,
    /// Follow the systemd journal (`journalctl --follow -o json`).
    pub journal: bool,
    /// Text log files to follow.
    pub files: Vec<PathBuf>,
    /// Failures from one source allowed within the window; the next one raises a brute-force
    /// violation …
    pub brute_force_failures: u32,
    /// … within this window.
    pub brute_force_window: Duration,
    /// Cap on distinct tracked source addresses (LRU eviction, counted).
    pub max_sources: usize,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// AWS IoT thing name.
    pub thing_name: String,
    /// State directory (report ids, spool, outbox, learned baseline, log positions).
    pub state_dir: PathBuf,
    /// `[collect]`
    pub collect: CollectConfig,
    /// `[report]`
    pub report: ReportConfig,
    /// `[outbox]`
    pub outbox: OutboxConfig,
    /// `[mqtt]`; `None` = embedded default (outbox).
    pub mqtt: Option<MqttConfig>,
    /// `[spool]`
    pub spool: SpoolConfig,
    /// `[detect]`
    pub detect: DetectConfig,
    /// `[logs]`
    pub logs: LogsConfig,
    /// `[audit]`
    pub audit: AuditConfig,
    /// `[remediation]`
    pub remediation: RemediationConfig,
    /// Non-fatal remarks (e.g. a report interval below 300 s), logged once at start.
    pub warnings: Vec<String>,
}

/// Default text log files followed when present.
pub const DEFAULT_LOG_FILES: &[&str] = &[
    "/var/log/auth.log",
    "/var/log/secure",
    "/var/log/mosquitto/mosquitto.log",
];

impl Config {
    /// The embedded default: no file at all.
    pub fn embedded_default() -> Config {
        Config::from_raw(RawConfig::default(), "")
            .expect("the embedded default configuration is valid")
    }

    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let src = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
            path: Some(path.to_owned()),
            errors: vec![ConfigError {
                key: String::new(),
                line: None,
                message: format!("cannot read {}: {e}", path.display()),
            }],
        })?;
        let mut cfg = Config::from_toml(&src).map_err(|mut e| {
            e.path = Some(path.to_owned());
            e
        })?;
        cfg.audit.config_file = Some(path.to_owned());
        Ok(cfg)
    }

    /// Parses and validates TOML text, with the defaults this machine gives (see
    /// [`Environment::probe`]).
    pub fn from_toml(src: &str) -> Result<Config, ConfigErrors> {
        Config::from_toml_in(src, &Environment::probe())
    }

    /// Parses and validates TOML text against given defaults: reads no environment variable and
    /// no file (the fuzz target and tests use this).
    pub fn from_toml_in(src: &str, env: &Environment) -> Result<Config, ConfigErrors> {
        let table: toml::Table = match src.parse() {
            Ok(t) => t,
            Err(e) => {
                let e: toml::de::Error = e;
                let line = e.span().map(|s| line_of(src, s.start));
                return Err(ConfigErrors {
                    path: None,
                    errors: vec![ConfigError {
                        key: String::new(),
                        line,
                        message: format!("invalid TOML: {}", e.message()),
                    }],
                });
            }
        };
        let mut errors = Vec::new();
        // Deserialize section by section so one bad section does not hide problems in another.
        let mut raw = RawConfig::default();
        for (key, mut value) in table {
            // Report every unknown key of a section, then check the rest of it: serde stops at
            // the first unknown field, so remove each one it names and try again.
            if let toml::Value::Table(t) = &mut value {
                loop {
                    let probe: Result<(), toml::de::Error> = match key.as_str() {
                        "collect" => toml::Value::Table(t.clone())
                            .try_into::<raw::RawCollect>()
                            .map(drop),
                        "report" => toml::Value::Table(t.clone())
                            .try_into::<raw::RawReport>()
                            .map(drop),
                        "outbox" => toml::Value::Table(t.clone())
                            .try_into::<raw::RawOutbox>()
                            .map(drop),
                        "mqtt" => toml::Value::Table(t.clone())
                            .try_into::<raw::RawMqtt>()
                            .map(drop),
                        "spool" => toml::Value::Table(t.clone())
                            .try_into::<raw::RawSpool>()
                            .map(drop),
                        "detect" => toml::Value::Table(t.clone())
                            .try_into::<raw::RawDetect>()
                            .map(drop),
                        "logs" => toml::Value::Table(t.clone())
                            .try_into::<raw::RawLogs>()
                            .map(drop),
                        "audit" => toml::Value::Table(t.clone())
                            .try_into::<raw::RawAudit>()
                            .map(drop),
                        "remediation" => toml::Value::Table(t.clone())
                            .try_into::<raw::RawRemediation>()
                            .map(drop),
                        _ => Ok(()),
                    };
                    let Err(e) = probe else { break };
                    let msg = e.message().to_owned();
                    let Some(field) = msg
                        .strip_prefix("unknown field `")
                        .and_then(|r| r.split('`').next())
                        .map(str::to_owned)
                    else {
                        break;
                    };
                    if t.remove(&field).is_none() {
                        break;
                    }
                    errors.push(serde_error(src, &key, &e));
                }
            }
            let res: Result<(), toml::de::Error> = (|| {
                match key.as_str() {
                    "thing_name" => raw.thing_name = Some(value.try_into()?),
                    "state_dir" => raw.state_dir = Some(value.try_into()?),
                    "collect" => raw.collect = value.try_into()?,
                    "report" => raw.report = value.try_into()?,
                    "outbox" => raw.outbox = value.try_into()?,
                    "mqtt" => raw.mqtt = Some(value.try_into()?),
                    "spool" => raw.spool = value.try_into()?,
                    "detect" => raw.detect = value.try_into()?,
                    "logs" => raw.logs = value.try_into()?,
                    "audit" => raw.audit = value.try_into()?,
                    "remediation" => raw.remediation = value.try_into()?,
                    _ => {
                        errors.push(ConfigError {
                            line: locate(src, "", &key),
                            message: "unknown key".into(),
                            key: key.clone(),
                        });
                    }
                }
                Ok(())
            })();
            if let Err(e) = res {
                errors.push(serde_error(src, &key, &e));
            }
        }
        match Config::from_raw_in(raw, src, env) {
            Ok(c) if errors.is_empty() => Ok(c),
            Ok(_) => Err(sorted(errors)),
            Err(mut more) => {
                errors.append(&mut more.errors);
                Err(sorted(errors))
            }
        }
    }

    /// Validates raw values with this machine's defaults; `src` is only used to find line
    /// numbers.
    pub fn from_raw(raw: RawConfig, src: &str) -> Result<Config, ConfigErrors> {
        Config::from_raw_in(raw, src, &Environment::probe())
    }

    /// Validates raw values against given defaults; touches nothing outside its arguments.
    pub fn from_raw_in(
        raw: RawConfig,
        src: &str,
        env: &Environment,
    ) -> Result<Config, ConfigErrors> {
        let mut v = Validator {
            src,
            errors: Vec::new(),
            warnings: Vec::new(),
        };

        let thing_name = env
            .thing_name
            .clone()
            .or(raw.thing_name.clone())
            .unwrap_or_else(|| env.hostname_thing_name.clone());
        if !valid_thing_name(&thing_name) {
            v.err(
                "",
                "thing_name",
                format!("{thing_name:?} is not a valid thing name (1-128 characters of a-z A-Z 0-9 : _ -)"),
            );
        }
        let state_dir = raw
            .state_dir
            .as_deref()
            .map(PathBuf::from)
            .unwrap_or_else(|| env.state_dir.clone());

        let c = &raw.collect;
        let collect = CollectConfig {
            interval: v.duration(
                "collect",
                "interval",
                c.interval.as_deref(),
                "10s",
                Duration::from_millis(100),
                Duration::from_secs(3600),
            ),
            include_interfaces: c.include_interfaces.clone().unwrap_or_default(),
            exclude_interfaces: c.exclude_interfaces.clone().unwrap_or_default(),
            include_loopback: c.include_loopback.unwrap_or(false),
            top_processes: v.int("collect", "top_processes", c.top_processes, 5, 0, 50) as usize,
            netlink: c.netlink.unwrap_or(true),
            skip_unchanged: c.skip_unchanged.unwrap_or(true),
        };

        let r = &raw.report;
        let interval = v.duration(
            "report",
            "interval",
            r.interval.as_deref(),
            "300s",
            Duration::from_secs(1),
            Duration::from_secs(86_400),
        );
        if interval < DEFENDER_MIN_INTERVAL {
            v.warnings.push(format!(
                "report.interval {} is below Device Defender's 300s minimum; the service may throttle or drop reports",
                format_duration(interval)
            ));
        }
        let format = match r.format.as_deref() {
            None => ReportFormat::Json,
            Some(s) => ReportFormat::parse(s).unwrap_or_else(|| {
                v.err(
                    "report",
                    "format",
                    format!("{s:?} is not one of \"json\", \"json-short\", \"cbor\""),
                );
                ReportFormat::Json
            }),
        };
        let report = ReportConfig {
            interval,
            format,
            max_ports: v.int("report", "max_ports", r.max_ports, 50, 0, 10_000) as usize,
            max_connections: v.int(
                "report",
                "max_connections",
                r.max_connections,
                50,
                0,
                10_000,
            ) as usize,
            warm_up: v.duration(
                "report",
                "warm_up",
                r.warm_up.as_deref(),
                "10s",
                Duration::ZERO,
                Duration::from_secs(3600),
            ),
        };

        let outbox = OutboxConfig {
            max_bytes: v.size(
                "outbox",
                "max_bytes",
                raw.outbox.max_bytes.as_deref(),
                "8MiB",
                4096,
            ),
            stdout: raw.outbox.stdout.unwrap_or(false),
        };

        let mqtt = raw.mqtt.as_ref().map(|m| {
            let mut req = |key: &str, val: &Option<String>| -> String {
                match val {
                    Some(s) if !s.trim().is_empty() => s.clone(),
                    _ => {
                        v.err("mqtt", key, "is required when [mqtt] is present".into());
                        String::new()
                    }
                }
            };
            let endpoint = req("endpoint", &m.endpoint);
            let ca_file = PathBuf::from(req("ca_file", &m.ca_file));
            let cert_file = PathBuf::from(req("cert_file", &m.cert_file));
            let key_file = PathBuf::from(req("key_file", &m.key_file));
            let port = v.int("mqtt", "port", m.port, 8883, 1, 65535) as u16;
            let keep_alive = v.duration(
                "mqtt",
                "keep_alive",
                m.keep_alive.as_deref(),
                "60s",
                Duration::from_secs(5),
                Duration::from_secs(1200),
            );
            let alpn = match m.alpn.as_deref() {
                Some("") | Some("none") => None,
                Some(s) => Some(s.to_owned()),
                None if port == 443 => Some("x-amzn-mqtt-ca".to_owned()),
                None => None,
            };
            let client_id = m.client_id.clone().unwrap_or_else(|| thing_name.clone());
            if client_id.is_empty() || client_id.len() > 128 {
                v.err("mqtt", "client_id", "must be 1-128 characters".into());
            }
            MqttConfig {
                endpoint,
                port,
                ca_file,
                cert_file,
                key_file,
                client_id,
                keep_alive,
                alpn,
                response_timeout: v.duration(
                    "mqtt",
                    "response_timeout",
                    m.response_timeout.as_deref(),
                    "30s",
                    Duration::from_millis(100),
                    Duration::from_secs(3600),
                ),
                reconnect_min: v.duration(
                    "mqtt",
                    "reconnect_min",
                    m.reconnect_min.as_deref(),
                    "1s",
                    Duration::from_millis(10),
                    Duration::from_secs(3600),
                ),
                reconnect_max: v.duration(
                    "mqtt",
                    "reconnect_max",
                    m.reconnect_max.as_deref(),
                    "120s",
                    Duration::from_millis(10),
                    Duration::from_secs(86_400),
                ),
            }
        });

        let spool = SpoolConfig {
            max_bytes: v.size(
                "spool",
                "max_bytes",
                raw.spool.max_bytes.as_deref(),
                "16MiB",
                64 * 1024,
            ),
            max_records: v.int(
                "spool",
                "max_records",
                raw.spool.max_records,
                100_000,
                1,
                10_000_000,
            ) as usize,
        };

        let d = &raw.detect;
        let violations_topic = d
            .violations_topic
            .clone()
            .unwrap_or_else(|| "edgewarden/{thing}/violations".to_owned());
        if violations_topic.starts_with("$aws/")
            || violations_topic.contains(['+', '#'])
            || violations_topic.is_empty()
        {
            v.err(
                "detect",
                "violations_topic",
                format!("{violations_topic:?} must be a plain topic outside $aws/ (no wildcards)"),
            );
        } else if let Some(why) = topic_problem(&violations_topic.replace("{thing}", &thing_name)) {
            v.err(
                "detect",
                "violations_topic",
                format!("{violations_topic:?} for thing {thing_name:?}: {why}"),
            );
        }
        let detect = DetectConfig {
            enabled: d.enabled.unwrap_or(true),
            profile: d.profile.as_deref().map(PathBuf::from),
            learning_period: v.duration(
                "detect",
                "learning_period",
                d.learning_period.as_deref(),
                "1h",
                Duration::ZERO,
                Duration::from_secs(30 * 86_400),
            ),
            violations_topic,
        };

        let l = &raw.logs;
        let logs = LogsConfig {
            enabled: l.enabled.unwrap_or(true),
            journal: l.journal.unwrap_or(true),
            files: l
                .files
                .clone()
                .unwrap_or_else(|| DEFAULT_LOG_FILES.iter().map(|s| s.to_string()).collect())
                .into_iter()
                .map(PathBuf::from)
                .collect(),
            brute_force_failures: v.int(
                "logs",
                "brute_force_failures",
                l.brute_force_failures,
                5,
                1,
                1_000_000,
            ) as u32,
            brute_force_window: v.duration(
                "logs",
                "brute_force_window",
                l.brute_force_window.as_deref(),
                "10m",
                Duration::from_secs(1),
                Duration::from_secs(86_400),
            ),
            max_sources: v.int("logs", "max_sources", l.max_sources, 4096, 16, 10_000_000) as usize,
        };

        let audit = audit::audit_from_raw(&mut v, &raw.audit, mqtt.as_ref());
        let remediation = audit::remediation_from_raw(&mut v, &raw.remediation);

        if !v.errors.is_empty() {
            return Err(sorted(v.errors));
        }
        Ok(Config {
            thing_name,
            state_dir,
            collect,
            report,
            outbox,
            mqtt,
            spool,
            detect,
            logs,
            audit,
            remediation,
            warnings: v.warnings,
        })
    }

    /// The effective configuration as TOML (what `print-config` shows).
    pub fn to_toml(&self) -> String {
        let d = |x: Duration| format_duration(x);
        let mut raw = RawConfig {
            thing_name: Some(self.thing_name.clone()),
            state_dir: Some(self.state_dir.display().to_string()),
            ..RawConfig::default()
        };
        raw.collect = raw::RawCollect {
            interval: Some(d(self.collect.interval)),
            include_interfaces: Some(self.collect.include_interfaces.clone()),
            exclude_interfaces: Some(self.collect.exclude_interfaces.clone()),
            include_loopback: Some(self.collect.include_loopback),
            top_processes: Some(self.collect.top_processes as i64),
            netlink: Some(self.collect.netlink),
            skip_unchanged: Some(self.collect.skip_unchanged),
        };
        raw.report = raw::RawReport {
            interval: Some(d(self.report.interval)),
            format: Some(self.report.format.as_str().into()),
            max_ports: Some(self.report.max_ports as i64),
            max_connections: Some(self.report.max_connections as i64),
            warm_up: Some(d(self.report.warm_up)),
        };
        raw.outbox = raw::RawOutbox {
            max_bytes: Some(format_size(self.outbox.max_bytes)),
            stdout: Some(self.outbox.stdout),
        };
        raw.mqtt = self.mqtt.as_ref().map(|m| raw::RawMqtt {
            endpoint: Some(m.endpoint.clone()),
            port: Some(m.port.into()),
            ca_file: Some(m.ca_file.display().to_string()),
            cert_file: Some(m.cert_file.display().to_string()),
            key_file: Some(m.key_file.display().to_string()),
            client_id: Some(m.client_id.clone()),
            keep_alive: Some(d(m.keep_alive)),
            alpn: Some(m.alpn.clone().unwrap_or_else(|| "none".into())),
            response_timeout: Some(d(m.response_timeout)),
            reconnect_min: Some(d(m.reconnect_min)),
            reconnect_max: Some(d(m.reconnect_max)),
        });
        raw.spool = raw::RawSpool {
            max_bytes: Some(format_size(self.spool.max_bytes)),
            max_records: Some(self.spool.max_records as i64),
        };
        raw.detect = raw::RawDetect {
            enabled: Some(self.detect.enabled),
            profile: self
                .detect
                .profile
                .as_ref()
                .map(|p| p.display().to_string()),
            learning_period: Some(d(self.detect.learning_period)),
            violations_topic: Some(self.detect.violations_topic.clone()),
        };
        raw.logs = raw::RawLogs {
            enabled: Some(self.logs.enabled),
            journal: Some(self.logs.journal),
            files: Some(
                self.logs
                    .files
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect(),
            ),
            brute_force_failures: Some(self.logs.brute_force_failures.into()),
            brute_force_window: Some(d(self.logs.brute_force_window)),
            max_sources: Some(self.logs.max_sources as i64),
        };
        raw.audit = self.audit.to_raw();
        raw.remediation = self.remediation.to_raw();
        toml::to_string_pretty(&raw).expect("a RawConfig always serializes")
    }

    /// The violations topic with `{thing}` filled in.
    pub fn violations_topic(&self) -> String {
        self.detect
            .violations_topic
            .replace("{thing}", &self.thing_name)
    }

    /// The Device Defender metrics topic for this thing and format.
    pub fn defender_topic(&self) -> String {
        crate::report::Topics::new(&self.thing_name, self.report.format).report
    }
}

struct Validator<'a> {
    src: &'a str,
    errors: Vec<ConfigError>,
    warnings: Vec<String>,
}

impl Validator<'_> {
    fn err(&mut self, section: &str, key: &str, message: String) {
        let full = if section.is_empty() {
            key.to_owned()
        } else {
            format!("{section}.{key}")
        };
        self.errors.push(ConfigError {
            line: locate(self.src, section, key),
            key: full,
            message,
        });
    }

    fn duration(
        &mut self,
        section: &str,
        key: &str,
        val: Option<&str>,
        default: &str,
        min: Duration,
        max: Duration,
    ) -> Duration {
        let def = parse_duration(default).expect("defaults are valid durations");
        let Some(s) = val else { return def };
        match parse_duration(s) {
            Ok(d) if d < min || d > max => {
                self.err(
                    section,
                    key,
                    format!(
                        "{s:?} is out of range ({} to {})",
                        format_duration(min),
                        format_duration(max)
                    ),
                );
                def
            }
            Ok(d) => d,
            Err(e) => {
                self.err(section, key, e);
                def
            }
        }
    }

    fn size(
        &mut self,
        section: &str,
        key: &str,
        val: Option<&str>,
        default: &str,
        min: u64,
    ) -> u64 {
        let def = parse_size(default).expect("defaults are valid sizes");
        let Some(s) = val else { return def };
        match parse_size(s) {
            Ok(b) if b < min => {
                self.err(
                    section,
                    key,
                    format!("{s:?} is below the minimum of {}", format_size(min)),
                );
                def
            }
            Ok(b) => b,
            Err(e) => {
                self.err(section, key, e);
                def
            }
        }
    }

    fn int(
        &mut self,
        section: &str,
        key: &str,
        val: Option<i64>,
        default: i64,
        min: i64,
        max: i64,
    ) -> i64 {
        match val {
            None => default,
            Some(n) if n < min || n > max => {
                self.err(
                    section,
                    key,
                    format!("{n} is out of range ({min} to {max})"),
                );
                default
            }
            Some(n) => n,
        }
    }
}

fn sorted(mut errors: Vec<ConfigError>) -> ConfigErrors {
    errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
    ConfigErrors { path: None, errors }
}

/// Turns a serde error inside section `section` into a keyed, located error.
fn serde_error(src: &str, section: &str, e: &toml::de::Error) -> ConfigError {
    let msg = e.message().to_owned();
    // "unknown field `foo`, expected one of …" names the key in backticks.
    if let Some(field) = msg
        .strip_prefix("unknown field `")
        .and_then(|r| r.split('`').next())
    {
        return ConfigError {
            key: format!("{section}.{field}"),
            line: locate(src, section, field),
            message: "unknown key".into(),
        };
    }
    // "invalid type: …" for a field: toml reports the offending key path in `e.keys()`-less form,
    // so find the first key of the section whose line is mentioned, else the section itself.
    let field = msg
        .split('`')
        .nth(1)
        .filter(|f| !f.contains(' '))
        .map(str::to_owned);
    match field {
        Some(f) if locate(src, section, &f).is_some() => ConfigError {
            key: format!("{section}.{f}"),
            line: locate(src, section, &f),
            message: msg,
        },
        _ => ConfigError {
            key: section.to_owned(),
            line: locate(src, "", section).or_else(|| locate_section(src, section)),
            message: msg,
        },
    }
}

/// 1-based line of byte offset `pos`.
pub fn line_of(src: &str, pos: usize) -> usize {
    src[..pos.min(src.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

fn locate_section(src: &str, section: &str) -> Option<usize> {
    src.lines()
        .position(|l| {
            let t = l.trim();
            t.starts_with('[') && t.trim_start_matches('[').trim_end_matches(']').trim() == section
        })
        .map(|i| i + 1)
}

/// Finds the line where `key` is assigned inside `[section]` (top level when `section` is empty).
pub fn locate(src: &str, section: &str, key: &str) -> Option<usize> {
    let mut current = String::new();
    for (i, line) in src.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') {
            current = t
                .trim_start_matches('[')
                .trim_end_matches(']')
                .trim()
                .to_owned();
            continue;
        }
        let Some((k, _)) = t.split_once('=') else {
            continue;
        };
        let k = k.trim().trim_matches('"');
        let (sec, k) = match k.rsplit_once('.') {
            Some((s, k)) if current.is_empty() => (s.trim().to_owned(), k.trim()),
            _ => (current.clone(), k),
        };
        if sec == section && k == key {
            return Some(i + 1);
        }
    }
    None
}

/// AWS IoT Core's limits on a topic name: at most [`MAX_TOPIC_BYTES`] bytes and
/// [`MAX_TOPIC_SLASHES`] slashes, no NUL. A topic beyond them is refused by the broker, which
/// closes the connection. `None` when `topic` is within them.
pub fn topic_problem(topic: &str) -> Option<String> {
    if topic.len() > MAX_TOPIC_BYTES {
        return Some(format!(
            "the topic is {} bytes long; AWS IoT allows {MAX_TOPIC_BYTES}",
            topic.len()
        ));
    }
    let slashes = topic.bytes().filter(|&b| b == b'/').count();
    if slashes > MAX_TOPIC_SLASHES {
        return Some(format!(
            "the topic has {slashes} slashes; AWS IoT allows {MAX_TOPIC_SLASHES}"
        ));
    }
    if topic.contains('\0') {
        return Some("the topic contains a NUL character".to_owned());
    }
    None
}

/// Longest topic name AWS IoT Core accepts, in bytes.
pub const MAX_TOPIC_BYTES: usize = 256;
/// Most forward slashes AWS IoT Core accepts in a topic name.
pub const MAX_TOPIC_SLASHES: usize = 7;

fn valid_thing_name(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'-'))
}

/// What the configuration takes from the machine where the file is silent, read once per load
/// so that validation itself is a pure function of the text and these values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    /// `EDGEWARDEN_THING_NAME`, when set and not empty (it overrides the file).
    pub thing_name: Option<String>,
    /// The hostname made into a thing name (the default thing name).
    pub hostname_thing_name: String,
    /// The default state directory ([`default_state_dir`]).
    pub state_dir: PathBuf,
}

impl Environment {
    /// Reads the environment variable, the hostname and the state directory's owner.
    pub fn probe() -> Environment {
        Environment {
            thing_name: std::env::var(ENV_THING_NAME).ok().filter(|s| !s.is_empty()),
            hostname_thing_name: default_thing_name(),
            state_dir: default_state_dir(),
        }
    }

    /// Fixed values, for tests and fuzzing: thing `edgewarden`, state in `/nonexistent`.
    pub fn fixed() -> Environment {
        Environment {
            thing_name: None,
            hostname_thing_name: "edgewarden".into(),
            state_dir: PathBuf::from("/nonexistent/edgewarden"),
        }
    }
}

/// The hostname, made into a valid thing name.
pub fn default_thing_name() -> String {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = h
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(128)
        .collect();
    if name.is_empty() {
        "edgewarden".into()
    } else {
        name
    }
}

/// `/var/lib/edgewarden` when it exists and belongs to this process's user (the packaged service
/// user), else a directory of the user's own. Nothing is created or written here: a hand run as
/// root never leaves root-owned files in the service's directory, and commands that only read
/// the configuration (`validate`, `print-config`, `collect`) touch no state.
pub fn default_state_dir() -> PathBuf {
    let system = Path::new(DEFAULT_STATE_DIR);
    if owned_dir(system) {
        return system.to_owned();
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|s| !s.is_empty()) {
        return PathBuf::from(d).join("edgewarden");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|s| !s.is_empty()) {
        return PathBuf::from(h).join(".local/state/edgewarden");
    }
    std::env::temp_dir().join("edgewarden")
}

/// True when `p` is a directory owned by this process's effective user (the owner of
/// `/proc/self`).
fn owned_dir(p: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (std::fs::metadata(p), std::fs::metadata("/proc/self")) {
        (Ok(d), Ok(me)) => d.is_dir() && d.uid() == me.uid(),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
