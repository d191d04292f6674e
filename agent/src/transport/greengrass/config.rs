//! What the nucleus gives the component: its environment (socket, token, thing name), and the
//! component configuration, read with `GetConfiguration` and applied live.
//!
//! The configuration mirrors the TOML keys that make sense across a fleet:
//!
//! ```json
//! { "report":  { "interval": "300s", "format": "json" },
//!   "collect": { "interval": "10s" },
//!   "detect":  { "enabled": true, "learning_period": "1h" },
//!   "logs":    { "enabled": true } }
//! ```
//!
//! A deployment's JSON may turn numbers into floats or strings, so a duration is a duration
//! string (`"5m"`), or a number of seconds (`300`, `300.0`, `"300"`); a boolean is `true`,
//! `false`, `"true"` or `"false"`. A value that is invalid is ignored with a warning naming its
//! key path, and the setting in force stays.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::config::ReportFormat;
use crate::units::{format_duration, parse_duration};

/// The IPC socket path (absolute, or relative to the component's working directory).
pub const ENV_SOCKET: &str = "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT";
/// The component's IPC token.
pub const ENV_SVCUID: &str = "SVCUID";
/// The core device's thing name.
pub const ENV_THING_NAME: &str = "AWS_IOT_THING_NAME";

/// The component's IPC token. Secret: it never appears in logs or debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Wraps a token.
    pub fn new(s: impl Into<String>) -> Token {
        Token(s.into())
    }

    /// The token itself, for the CONNECT frame only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(<{} characters>)", self.0.len())
    }
}

/// The nucleus's runtime contract, from the environment of a component's lifecycle step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NucleusEnv {
    /// The IPC socket, made absolute against the start directory.
    pub socket: PathBuf,
    /// `SVCUID`
    pub token: Token,
    /// `AWS_IOT_THING_NAME`, when set.
    pub thing_name: Option<String>,
}

impl NucleusEnv {
    /// From this process's environment; `None` unless both the socket variable and `SVCUID`
    /// are set and non-empty.
    pub fn from_env() -> Option<NucleusEnv> {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        NucleusEnv::from_vars(|k| std::env::var(k).ok(), &cwd)
    }

    /// From any variable source; a relative socket path is resolved against `cwd`.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>, cwd: &Path) -> Option<NucleusEnv> {
        let nonempty = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let socket = PathBuf::from(nonempty(ENV_SOCKET)?);
        let token = Token(nonempty(ENV_SVCUID)?);
        let socket = if socket.is_absolute() {
            socket
        } else {
            cwd.join(socket)
        };
        Some(NucleusEnv {
            socket,
            token,
            thing_name: nonempty(ENV_THING_NAME).map(|s| s.trim().to_owned()),
        })
    }
}

/// The settings a component configuration carries; `None` where it says nothing (or nothing
/// valid), so the value in force stays.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ComponentSettings {
    /// `report.interval`
    pub report_interval: Option<Duration>,
    /// `report.format`
    pub report_format: Option<ReportFormat>,
    /// `collect.interval`
    pub collect_interval: Option<Duration>,
    /// `detect.enabled`
    pub detect_enabled: Option<bool>,
    /// `detect.learning_period`
    pub learning_period: Option<Duration>,
    /// `logs.enabled`
    pub logs_enabled: Option<bool>,
}

fn duration_of(v: &Value) -> Result<Duration, String> {
    let secs = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.trim().parse::<f64>() {
            Ok(x) => Some(x),
            Err(_) => return parse_duration(s),
        },
        other => return Err(format!("{other} is not a duration (write e.g. \"300s\")")),
    };
    match secs {
        Some(x) if x.is_finite() && (0.0..=1e9).contains(&x) => Ok(Duration::from_secs_f64(x)),
        _ => Err(format!("{v} is not a number of seconds")),
    }
}

fn bool_of(v: &Value) -> Result<bool, String> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.trim().eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.trim().eq_ignore_ascii_case("false") => Ok(false),
        other => Err(format!("{other} is not true or false")),
    }
}

/// Reads a component configuration (the `value` of a `GetConfiguration` answer). Returns the
/// settings and one warning per key that was present but invalid.
pub fn parse_settings(value: &Value) -> (ComponentSettings, Vec<String>) {
    let mut s = ComponentSettings::default();
    let mut warnings = Vec::new();
    let get = |section: &str, key: &str| value.get(section).and_then(|v| v.get(key));
    let mut dur = |section: &str, key: &str, min: Duration, max: Duration| {
        let v = get(section, key)?;
        match duration_of(v) {
            Ok(d) if d >= min && d <= max => Some(d),
            Ok(d) => {
                warnings.push(format!(
                    "component configuration /{section}/{key}: {} is out of range ({} to {}); ignored",
                    format_duration(d),
                    format_duration(min),
                    format_duration(max)
                ));
                None
            }
            Err(e) => {
                warnings.push(format!(
                    "component configuration /{section}/{key}: {e}; ignored"
                ));
                None
            }
        }
    };
    s.report_interval = dur(
        "report",
        "interval",
        Duration::from_secs(1),
        Duration::from_secs(86_400),
    );
    s.collect_interval = dur(
        "collect",
        "interval",
        Duration::from_millis(100),
        Duration::from_secs(3600),
    );
    s.learning_period = dur(
        "detect",
        "learning_period",
        Duration::ZERO,
        Duration::from_secs(30 * 86_400),
    );
    if let Some(v) = get("report", "format") {
        match v.as_str().and_then(|f| ReportFormat::parse(f.trim())) {
            Some(f) => s.report_format = Some(f),
            None => warnings.push(format!(
                "component configuration /report/format: {v} is not one of \"json\", \"json-short\", \"cbor\"; ignored"
            )),
        }
    }
    for (section, slot) in [
        ("detect", &mut s.detect_enabled),
        ("logs", &mut s.logs_enabled),
    ] {
        if let Some(v) = get(section, "enabled") {
            match bool_of(v) {
                Ok(b) => *slot = Some(b),
                Err(e) => warnings.push(format!(
                    "component configuration /{section}/enabled: {e}; ignored"
                )),
            }
        }
    }
    (s, warnings)
}

/// Which parts of the configuration a [`ComponentSettings`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changed {
    /// `report.interval` or `report.format`.
    pub report: bool,
    /// `collect.interval`.
    pub collect: bool,
    /// `detect.enabled` or `detect.learning_period`.
    pub detect: bool,
    /// `logs.enabled`.
    pub logs: bool,
}

impl Changed {
    /// True when anything changed.
    pub fn any(self) -> bool {
        self.report || self.collect || self.detect || self.logs
    }
}

/// Writes the settings that differ into `cfg` and says what changed.
pub fn apply_settings(cfg: &mut crate::config::Config, s: &ComponentSettings) -> Changed {
    fn set<T: PartialEq + Copy>(slot: &mut T, v: Option<T>) -> bool {
        match v {
            Some(v) if *slot != v => {
                *slot = v;
                true
            }
            _ => false,
        }
    }
    let mut c = Changed::default();
    c.report |= set(&mut cfg.report.interval, s.report_interval);
    c.report |= set(&mut cfg.report.format, s.report_format);
    c.collect |= set(&mut cfg.collect.interval, s.collect_interval);
    c.detect |= set(&mut cfg.detect.enabled, s.detect_enabled);
    c.detect |= set(&mut cfg.detect.learning_period, s.learning_period);
    c.logs |= set(&mut cfg.logs.enabled, s.logs_enabled);
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn environment_needs_socket_and_token_and_resolves_relative_paths() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let cwd = Path::new("/greengrass/v2/work/com.edgewarden.Agent");
        assert_eq!(
            NucleusEnv::from_vars(vars(&[(ENV_SOCKET, "/gg/ipc.socket")]), cwd),
            None
        );
        assert_eq!(
            NucleusEnv::from_vars(
                vars(&[(ENV_SOCKET, "/gg/ipc.socket"), (ENV_SVCUID, "")]),
                cwd
            ),
            None
        );
        let env = NucleusEnv::from_vars(
            vars(&[
                (ENV_SOCKET, "../../ipc.socket"),
                (ENV_SVCUID, "ABCDEFGHIJKLMNOP"),
                (ENV_THING_NAME, "gw-01"),
            ]),
            cwd,
        )
        .unwrap();
        assert_eq!(
            env.socket,
            Path::new("/greengrass/v2/work/com.edgewarden.Agent/../../ipc.socket")
        );
        assert_eq!(env.thing_name.as_deref(), Some("gw-01"));
        assert_eq!(env.token.expose(), "ABCDEFGHIJKLMNOP");
        assert!(!format!("{env:?}").contains("ABCDEFGHIJKLMNOP"));
    }

    #[test]
    fn settings_accept_the_value_shapes_a_deployment_produces() {
        let (s, w) = parse_settings(&json!({
            "report": {"interval": 300.0, "format": "cbor"},
            "collect": {"interval": "15s"},
            "detect": {"enabled": "false", "learning_period": "600"},
            "logs": {"enabled": true},
            "accessControl": {}
        }));
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(
            s,
            ComponentSettings {
                report_interval: Some(Duration::from_secs(300)),
                report_format: Some(ReportFormat::Cbor),
                collect_interval: Some(Duration::from_secs(15)),
                detect_enabled: Some(false),
                learning_period: Some(Duration::from_secs(600)),
                logs_enabled: Some(true),
            }
        );
        let (s, w) = parse_settings(&json!({}));
        assert_eq!(s, ComponentSettings::default());
        assert!(w.is_empty());
    }

    #[test]
    fn invalid_values_are_ignored_with_a_warning_naming_the_key() {
        let (s, w) = parse_settings(&json!({
            "report": {"interval": "soon", "format": "xml"},
            "collect": {"interval": 0},
            "detect": {"enabled": 3},
        }));
        assert_eq!(s, ComponentSettings::default());
        assert_eq!(w.len(), 4, "{w:?}");
        assert!(w[0].starts_with("component configuration /report/interval:"));
        assert!(w[1].contains("/collect/interval") && w[1].contains("out of range"));
        assert!(w[2].contains("/report/format"));
        assert!(w[3].contains("/detect/enabled"));
    }

    #[test]
    fn applying_settings_reports_only_real_changes() {
        let mut cfg = crate::config::Config::embedded_default();
        let same = ComponentSettings {
            report_interval: Some(cfg.report.interval),
            ..ComponentSettings::default()
        };
        assert!(!apply_settings(&mut cfg, &same).any());
        let s = ComponentSettings {
            report_interval: Some(Duration::from_secs(60)),
            logs_enabled: Some(!cfg.logs.enabled),
            ..ComponentSettings::default()
        };
        let c = apply_settings(&mut cfg, &s);
        assert_eq!(
            c,
            Changed {
                report: true,
                collect: false,
                detect: false,
                logs: true
            }
        );
        assert_eq!(cfg.report.interval, Duration::from_secs(60));
    }
}
