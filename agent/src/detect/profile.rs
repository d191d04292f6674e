//! Security profiles in Device Defender's behaviour format, parsed and validated.
//!
//! A profile file is JSON in one of three shapes, so the `behaviors` of an existing cloud profile
//! can be pasted as they are:
//!
//! 1. a bare array of behaviours: `[ {"name": …, "metric": …, "criteria": {…}}, … ]`;
//! 2. an object `{"behaviors": [ … ]}`, optionally with `securityProfileName`;
//! 3. the whole output of `aws iot describe-security-profile`. Its cloud-only fields
//!    (`alertTargets`, `additionalMetricsToRetainV2`, `metricsExportConfig`, ARN, version, dates)
//!    have no effect on the device and are reported as notes.
//!
//! Every field of a behaviour is parsed. What the device cannot honour (a cloud-side metric, a
//! metric dimension, an unknown field, an operator or value that does not fit the metric) is
//! refused with the behaviour's name and the field's path; all problems of a file are reported at
//! once.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::eval::{statistic_percentile, Cidr, Operator, STATISTICS};
use super::metric::{self, Metric, MetricKind};
use super::ml::ConfidenceLevel;

/// Device Defender's limit on behaviours per profile.
pub const MAX_BEHAVIORS: usize = 100;
/// `durationSeconds` values Device Defender accepts; others work on the device only.
pub const CLOUD_DURATIONS: &[u32] = &[300, 600, 900, 1800, 3600];
/// Upper bound of `durationSeconds` on the device.
pub const MAX_DURATION_SECONDS: u64 = 3600;

/// A validated security profile.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Profile {
    /// `securityProfileName`, or the file's stem when the file has none.
    #[serde(rename = "securityProfileName")]
    pub name: String,
    /// The behaviours, in file order.
    pub behaviors: Vec<Behavior>,
    /// Non-fatal remarks: fields accepted for compatibility that have no effect on the device,
    /// and device-only extensions a cloud profile would refuse.
    #[serde(skip)]
    pub notes: Vec<String>,
}

/// `behavior.criteria.value` and a violation's `metricValue`: exactly one field is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DefenderValue {
    /// Non-negative count (device-side numeric metrics).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// CIDR blocks (address-set metrics).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cidrs: Option<Vec<String>>,
    /// Ports (port-set metrics).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<u16>>,
    /// A number (custom `number` metrics).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number: Option<f64>,
    /// Numbers (custom `number-list` metrics).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub numbers: Option<Vec<f64>>,
    /// Strings (custom `string-list` metrics).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strings: Option<Vec<String>>,
}

/// `criteria.statisticalThreshold`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatisticalThreshold {
    /// `p0` … `p100`.
    pub statistic: String,
}

/// `criteria.mlDetectionConfig`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MlDetectionConfig {
    /// `LOW`, `MEDIUM` or `HIGH`.
    pub confidence_level: ConfidenceLevel,
}

/// `behavior.criteria`, as written.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Criteria {
    /// Comparison or set operator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comparison_operator: Option<Operator>,
    /// Threshold or set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<DefenderValue>,
    /// Trailing window of a counter metric.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<u32>,
    /// Violating datapoints in a row that raise the alarm (1–10, default 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consecutive_datapoints_to_alarm: Option<u8>,
    /// Conforming datapoints in a row that clear it (1–10, default 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consecutive_datapoints_to_clear: Option<u8>,
    /// Percentile threshold over the metric's own rolling history.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statistical_threshold: Option<StatisticalThreshold>,
    /// Learned behaviour.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ml_detection_config: Option<MlDetectionConfig>,
}

/// One behaviour, as written, with its compiled evaluation.
///
/// Serializes back to Device Defender's shape (this is the `behavior` of a violation event);
/// deserializing validates it like a profile file does.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Behavior {
    /// Unique name within the profile.
    pub name: String,
    /// Metric name.
    pub metric: String,
    /// Criteria.
    pub criteria: Criteria,
    /// Violations are recorded but not alerted on (see [`super::ViolationEvent::alerts_suppressed`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suppress_alerts: Option<bool>,
    /// Cloud-side metric export; no effect on the device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export_metric: Option<bool>,
    #[serde(skip)]
    pub(crate) spec: Spec,
}

/// What a behaviour checks, compiled from its criteria.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Check {
    /// `lt/lte/gt/gte` against a fixed value.
    Threshold { op: Operator, value: f64 },
    /// Port set rule; `set` sorted.
    Ports {
        requires_inside: bool,
        set: Vec<u16>,
    },
    /// CIDR set rule.
    Cidrs {
        requires_inside: bool,
        set: Vec<Cidr>,
    },
    /// String set rule; `set` sorted.
    Strings {
        requires_inside: bool,
        set: Vec<String>,
    },
    /// Comparison against a percentile of the metric's own history.
    Statistical { op: Operator, percentile: f64 },
    /// Anomaly score of a numeric metric.
    Ml { confidence: ConfidenceLevel },
    /// Novelty of a set metric.
    Novelty { confidence: ConfidenceLevel },
}

impl Check {
    /// True for behaviours that learn a baseline first.
    pub(crate) fn learns(&self) -> bool {
        matches!(
            self,
            Check::Statistical { .. } | Check::Ml { .. } | Check::Novelty { .. }
        )
    }
}

/// A compiled behaviour.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Spec {
    pub(crate) metric: Metric,
    pub(crate) check: Check,
    pub(crate) duration_ms: Option<u64>,
    pub(crate) to_alarm: u8,
    pub(crate) to_clear: u8,
}

impl Behavior {
    /// The resolved metric.
    pub fn metric_kind(&self) -> MetricKind {
        self.spec.metric.kind
    }

    /// True for ML, novelty and statistical behaviours, which stay silent while learning.
    pub fn is_learned(&self) -> bool {
        self.spec.check.learns()
    }
}

impl<'de> Deserialize<'de> for Behavior {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let mut issues = Vec::new();
        let mut notes = Vec::new();
        match parse_behavior(0, &v, &mut issues, &mut notes) {
            Some(b) if issues.is_empty() => Ok(b),
            _ => Err(serde::de::Error::custom(
                issues
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            )),
        }
    }
}

/// One problem in a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileIssue {
    /// Position in `behaviors`, when the problem is inside a behaviour.
    pub index: Option<usize>,
    /// The behaviour's name, when it has a readable one.
    pub behavior: Option<String>,
    /// Path of the field inside the behaviour (or the document), e.g. `criteria.value.ports[2]`.
    pub field: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl fmt::Display for ProfileIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.behavior, self.index) {
            (Some(n), Some(i)) => write!(f, "behavior {n:?} (behaviors[{i}])")?,
            (None, Some(i)) => write!(f, "behaviors[{i}]")?,
            (Some(n), None) => write!(f, "behavior {n:?}")?,
            (None, None) => {}
        }
        let lead = self.behavior.is_some() || self.index.is_some();
        match (lead, self.field.is_empty()) {
            (true, false) => write!(f, ", field {}: {}", self.field, self.message),
            (true, true) => write!(f, ": {}", self.message),
            (false, false) => write!(f, "field {}: {}", self.field, self.message),
            (false, true) => write!(f, "{}", self.message),
        }
    }
}

/// Why a profile could not be loaded.
#[derive(Debug)]
#[non_exhaustive]
pub enum ProfileError {
    /// The file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not JSON.
    Syntax {
        /// The file, when loaded from one.
        path: Option<PathBuf>,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// The JSON is not a valid profile; every problem found.
    Invalid {
        /// The file, when loaded from one.
        path: Option<PathBuf>,
        /// The problems, in document order.
        issues: Vec<ProfileIssue>,
    },
}

impl ProfileError {
    /// The problems of an [`ProfileError::Invalid`] profile (empty for the other kinds).
    pub fn issues(&self) -> &[ProfileIssue] {
        match self {
            ProfileError::Invalid { issues, .. } => issues,
            _ => &[],
        }
    }

    fn with_path(self, p: &Path) -> ProfileError {
        match self {
            ProfileError::Syntax {
                line,
                column,
                message,
                ..
            } => ProfileError::Syntax {
                path: Some(p.to_owned()),
                line,
                column,
                message,
            },
            ProfileError::Invalid { issues, .. } => ProfileError::Invalid {
                path: Some(p.to_owned()),
                issues,
            },
            e => e,
        }
    }
}

impl fmt::Display for ProfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = |p: &Option<PathBuf>| match p {
            Some(p) => format!("{}: ", p.display()),
            None => String::new(),
        };
        match self {
            ProfileError::Read { path, source } => {
                write!(
                    f,
                    "cannot read security profile {}: {source}",
                    path.display()
                )
            }
            ProfileError::Syntax {
                path,
                line,
                column,
                message,
            } => write!(
                f,
                "{}malformed JSON at line {line}, column {column}: {message}",
                prefix(path)
            ),
            ProfileError::Invalid { path, issues } => {
                let n = issues.len();
                write!(
                    f,
                    "{}{n} problem{} in the security profile",
                    prefix(path),
                    if n == 1 { "" } else { "s" }
                )?;
                for i in issues {
                    write!(f, "\n  {i}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ProfileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProfileError::Read { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Reads and validates a profile file.
pub fn load_profile(path: &Path) -> Result<Profile, ProfileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| valid_name(s))
        .unwrap_or("local-profile");
    parse_profile(&text, stem).map_err(|e| e.with_path(path))
}

/// Parses and validates profile JSON; `default_name` names it when the document does not.
pub fn parse_profile(text: &str, default_name: &str) -> Result<Profile, ProfileError> {
    let v: Value = serde_json::from_str(text).map_err(|e| ProfileError::Syntax {
        path: None,
        line: e.line(),
        column: e.column(),
        message: strip_position(&e.to_string()),
    })?;
    let mut issues = Vec::new();
    let mut notes = Vec::new();
    let profile = parse_document(&v, default_name, &mut issues, &mut notes);
    match profile {
        Some(mut p) if issues.is_empty() => {
            p.notes = notes;
            Ok(p)
        }
        _ => Err(ProfileError::Invalid { path: None, issues }),
    }
}

fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// The behaviour and profile name rule: 1–128 of `[a-zA-Z0-9:_-]`.
pub fn valid_name(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'-'))
}

/// Top-level keys of `describe-security-profile` output that only matter in the cloud.
const CLOUD_ONLY_KEYS: &[(&str, &str)] = &[
    ("securityProfileArn", ""),
    ("securityProfileDescription", ""),
    ("version", ""),
    ("creationDate", ""),
    ("lastModifiedDate", ""),
    ("alertTargets", "alertTargets (SNS) are cloud-side; on the device violations go to the outbox and the violations topic"),
    ("additionalMetricsToRetain", "additionalMetricsToRetain only affects cloud retention; the device reports every metric anyway"),
    ("additionalMetricsToRetainV2", "additionalMetricsToRetainV2 only affects cloud retention; the device reports every metric anyway"),
    ("metricsExportConfig", "metricsExportConfig is a cloud-side export; it has no effect on the device"),
    ("tags", "tags are cloud-side; they have no effect on the device"),
];

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn top_issue(issues: &mut Vec<ProfileIssue>, field: &str, message: String) {
    issues.push(ProfileIssue {
        index: None,
        behavior: None,
        field: field.to_owned(),
        message,
    });
}

fn parse_document(
    v: &Value,
    default_name: &str,
    issues: &mut Vec<ProfileIssue>,
    notes: &mut Vec<String>,
) -> Option<Profile> {
    let mut name = default_name.to_owned();
    let behaviors = match v {
        Value::Array(a) => a,
        Value::Object(o)
            if !o.contains_key("behaviors")
                && (o.contains_key("metric") || o.contains_key("criteria")) =>
        {
            top_issue(
                issues,
                "behaviors",
                "missing: this looks like a single behaviour: wrap it in [ … ]".to_owned(),
            );
            return None;
        }
        Value::Object(o) => {
            for (k, val) in o {
                match k.as_str() {
                    "behaviors" => {}
                    "securityProfileName" => match val.as_str() {
                        Some(s) if valid_name(s) => name = s.to_owned(),
                        Some(s) => top_issue(
                            issues,
                            k,
                            format!(
                                "{s:?} is not a valid profile name (1–128 of a-z A-Z 0-9 : _ -)"
                            ),
                        ),
                        None => top_issue(
                            issues,
                            k,
                            format!("expected a string, found {}", type_name(val)),
                        ),
                    },
                    _ => match CLOUD_ONLY_KEYS.iter().find(|(c, _)| c == k) {
                        Some((_, note)) if !note.is_empty() => notes.push((*note).to_owned()),
                        Some(_) => {}
                        None => top_issue(
                            issues,
                            k,
                            "unknown field; expected a `behaviors` array, optionally with \
                             `securityProfileName` and the other fields of \
                             `aws iot describe-security-profile` output"
                                .to_owned(),
                        ),
                    },
                }
            }
            match o.get("behaviors") {
                Some(Value::Array(a)) => a,
                Some(other) => {
                    top_issue(
                        issues,
                        "behaviors",
                        format!(
                            "expected an array of behaviours, found {}",
                            type_name(other)
                        ),
                    );
                    return None;
                }
                None => {
                    top_issue(
                        issues,
                        "behaviors",
                        "missing: a profile needs a `behaviors` array".to_owned(),
                    );
                    return None;
                }
            }
        }
        other => {
            top_issue(
                issues,
                "",
                format!(
                    "expected a behaviours array or an object with `behaviors`, found {}",
                    type_name(other)
                ),
            );
            return None;
        }
    };
    if behaviors.is_empty() {
        top_issue(
            issues,
            "behaviors",
            "is empty: a profile needs at least one behaviour".to_owned(),
        );
    }
    if behaviors.len() > MAX_BEHAVIORS {
        top_issue(
            issues,
            "behaviors",
            format!(
                "has {} behaviours; Device Defender allows at most {MAX_BEHAVIORS}",
                behaviors.len()
            ),
        );
    }
    let mut out = Vec::with_capacity(behaviors.len());
    let mut seen = BTreeSet::new();
    for (i, b) in behaviors.iter().enumerate() {
        if let Some(n) = b.get("name").and_then(Value::as_str) {
            if !seen.insert(n) {
                issues.push(ProfileIssue {
                    index: Some(i),
                    behavior: Some(n.to_owned()),
                    field: "name".to_owned(),
                    message: "duplicate behaviour name; names must be unique in a profile"
                        .to_owned(),
                });
            }
        }
        if let Some(b) = parse_behavior(i, b, issues, notes) {
            out.push(b);
        }
    }
    Some(Profile {
        name,
        behaviors: out,
        notes: Vec::new(),
    })
}

/// Collects the problems of one behaviour.
struct Ctx<'a> {
    index: usize,
    name: Option<String>,
    issues: &'a mut Vec<ProfileIssue>,
    failed: bool,
}

impl Ctx<'_> {
    fn err(&mut self, field: &str, message: impl Into<String>) {
        self.failed = true;
        self.issues.push(ProfileIssue {
            index: Some(self.index),
            behavior: self.name.clone(),
            field: field.to_owned(),
            message: message.into(),
        });
    }

    fn unknown_keys(&mut self, o: &Map<String, Value>, prefix: &str, allowed: &[&str]) {
        for k in o.keys() {
            if !allowed.contains(&k.as_str()) {
                let mut msg = "unknown field".to_owned();
                if let Some(near) = allowed
                    .iter()
                    .find(|a| a.eq_ignore_ascii_case(k) || a.trim_end_matches('s') == k)
                {
                    msg.push_str(&format!("; did you mean {near:?}?"));
                } else {
                    msg.push_str(&format!("; expected one of: {}", allowed.join(", ")));
                }
                self.err(&format!("{prefix}{k}"), msg);
            }
        }
    }

    fn bool_field(&mut self, o: &Map<String, Value>, key: &str) -> Option<bool> {
        match o.get(key)? {
            Value::Bool(b) => Some(*b),
            other => {
                self.err(
                    key,
                    format!("expected true or false, found {}", type_name(other)),
                );
                None
            }
        }
    }

    fn small_count(&mut self, o: &Map<String, Value>, key: &str) -> Option<u8> {
        let v = o.get(key)?;
        match v.as_u64() {
            Some(n @ 1..=10) => Some(n as u8),
            _ => {
                self.err(
                    &format!("criteria.{key}"),
                    format!("expected an integer from 1 to 10, found {v}"),
                );
                None
            }
        }
    }
}

const BEHAVIOR_KEYS: &[&str] = &[
    "name",
    "metric",
    "metricDimension",
    "criteria",
    "suppressAlerts",
    "exportMetric",
];
const CRITERIA_KEYS: &[&str] = &[
    "comparisonOperator",
    "value",
    "durationSeconds",
    "consecutiveDatapointsToAlarm",
    "consecutiveDatapointsToClear",
    "statisticalThreshold",
    "mlDetectionConfig",
];
const VALUE_KEYS: &[&str] = &["count", "cidrs", "ports", "number", "numbers", "strings"];

fn parse_behavior(
    index: usize,
    v: &Value,
    issues: &mut Vec<ProfileIssue>,
    notes: &mut Vec<String>,
) -> Option<Behavior> {
    let name_v = v.get("name").and_then(Value::as_str).map(str::to_owned);
    let mut cx = Ctx {
        index,
        name: name_v.clone(),
        issues,
        failed: false,
    };
    let Value::Object(o) = v else {
        cx.err(
            "",
            format!("expected a behaviour object, found {}", type_name(v)),
        );
        return None;
    };
    cx.unknown_keys(o, "", BEHAVIOR_KEYS);
    match (o.get("name"), &name_v) {
        (None, _) => cx.err("name", "missing; every behaviour needs a unique name"),
        (Some(_), Some(n)) if !valid_name(n) => cx.err(
            "name",
            format!("{n:?} is not a valid behaviour name (1–128 of a-z A-Z 0-9 : _ -)"),
        ),
        (Some(other), None) => cx.err(
            "name",
            format!("expected a string, found {}", type_name(other)),
        ),
        _ => {}
    }
    let metric = match o.get("metric") {
        None => {
            cx.err(
                "metric",
                "missing; name the metric this behaviour evaluates",
            );
            None
        }
        Some(Value::String(s)) => match metric::resolve(s) {
            Ok(m) => Some(m),
            Err(e) => {
                cx.err("metric", e.0);
                None
            }
        },
        Some(other) => {
            cx.err(
                "metric",
                format!("expected a string, found {}", type_name(other)),
            );
            None
        }
    };
    if o.contains_key("metricDimension") {
        cx.err(
            "metricDimension",
            "not supported on the device: dimensions (topic filters) apply only to the \
             cloud-side message metrics",
        );
    }
    let suppress_alerts = cx.bool_field(o, "suppressAlerts");
    let export_metric = cx.bool_field(o, "exportMetric");
    if export_metric.is_some() {
        if let Some(n) = &name_v {
            notes.push(format!(
                "behavior {n:?}: exportMetric is a cloud-side export; it has no effect on the device"
            ));
        }
    }
    let criteria = match o.get("criteria") {
        Some(Value::Object(c)) => Some(c),
        Some(other) => {
            cx.err(
                "criteria",
                format!("expected an object, found {}", type_name(other)),
            );
            None
        }
        None => {
            cx.err(
                "criteria",
                "missing; a behaviour without criteria only retains metrics in the cloud and \
                 has nothing to evaluate on the device",
            );
            None
        }
    };
    let (criteria, spec) = match criteria {
        Some(c) => parse_criteria(&mut cx, c, metric, &name_v, notes)?,
        None => return None,
    };
    if cx.failed {
        return None;
    }
    Some(Behavior {
        name: name_v?,
        metric: metric?.name.to_owned(),
        criteria,
        suppress_alerts,
        export_metric,
        spec: spec?,
    })
}

fn parse_value(cx: &mut Ctx<'_>, v: &Value) -> Option<DefenderValue> {
    const F: &str = "criteria.value";
    let Value::Object(o) = v else {
        cx.err(
            F,
            format!(
                "expected an object with one of {}, found {}",
                VALUE_KEYS.join(", "),
                type_name(v)
            ),
        );
        return None;
    };
    cx.unknown_keys(o, "criteria.value.", VALUE_KEYS);
    let present: Vec<&str> = VALUE_KEYS
        .iter()
        .copied()
        .filter(|k| o.contains_key(*k))
        .collect();
    if present.len() != 1 {
        cx.err(
            F,
            if present.is_empty() {
                format!("has none of {}; give exactly one", VALUE_KEYS.join(", "))
            } else {
                format!("has {}; give exactly one", present.join(" and "))
            },
        );
        return None;
    }
    let key = present[0];
    let field = format!("{F}.{key}");
    let val = &o[key];
    let mut out = DefenderValue::default();
    let list = |cx: &mut Ctx<'_>| -> Option<&Vec<Value>> {
        match val {
            Value::Array(a) => Some(a),
            other => {
                cx.err(
                    &field,
                    format!("expected an array, found {}", type_name(other)),
                );
                None
            }
        }
    };
    match key {
        "count" => match val.as_u64() {
            Some(n) => out.count = Some(n),
            None => cx.err(
                &field,
                format!("expected a non-negative integer, found {val}"),
            ),
        },
        "number" => match val.as_f64().filter(|x| x.is_finite()) {
            Some(x) => out.number = Some(x),
            None => cx.err(&field, format!("expected a number, found {val}")),
        },
        "ports" => {
            let a = list(cx)?;
            let mut ports = Vec::with_capacity(a.len());
            for (i, p) in a.iter().enumerate() {
                match p.as_u64().and_then(|n| u16::try_from(n).ok()) {
                    Some(n) => ports.push(n),
                    None => cx.err(
                        &format!("{field}[{i}]"),
                        format!("expected a port number 0–65535, found {p}"),
                    ),
                }
            }
            out.ports = Some(ports);
        }
        "cidrs" => {
            let a = list(cx)?;
            let mut cidrs = Vec::with_capacity(a.len());
            for (i, c) in a.iter().enumerate() {
                match c.as_str() {
                    Some(s) if !(2..=43).contains(&s.len()) => cx.err(
                        &format!("{field}[{i}]"),
                        format!("{s:?} must be 2–43 characters"),
                    ),
                    Some(s) => match Cidr::parse(s) {
                        Ok(_) => cidrs.push(s.to_owned()),
                        Err(e) => cx.err(&format!("{field}[{i}]"), e),
                    },
                    None => cx.err(
                        &format!("{field}[{i}]"),
                        format!("expected a CIDR string, found {}", type_name(c)),
                    ),
                }
            }
            out.cidrs = Some(cidrs);
        }
        "numbers" => {
            let a = list(cx)?;
            let mut nums = Vec::with_capacity(a.len());
            for (i, n) in a.iter().enumerate() {
                match n.as_f64() {
                    Some(x) => nums.push(x),
                    None => cx.err(
                        &format!("{field}[{i}]"),
                        format!("expected a number, found {n}"),
                    ),
                }
            }
            out.numbers = Some(nums);
        }
        "strings" => {
            let a = list(cx)?;
            let mut strs = Vec::with_capacity(a.len());
            for (i, s) in a.iter().enumerate() {
                match s.as_str() {
                    Some(s) => strs.push(s.to_owned()),
                    None => cx.err(
                        &format!("{field}[{i}]"),
                        format!("expected a string, found {}", type_name(s)),
                    ),
                }
            }
            out.strings = Some(strs);
        }
        _ => unreachable!("key comes from VALUE_KEYS"),
    }
    Some(out)
}

/// The value field and operators a metric kind takes.
fn expected_for(m: &Metric) -> (&'static str, &'static [Operator]) {
    use Operator::*;
    match m.kind {
        MetricKind::Counter | MetricKind::Gauge if m.builtin => (
            "count",
            &[LessThan, LessThanEquals, GreaterThan, GreaterThanEquals],
        ),
        MetricKind::Counter | MetricKind::Gauge => (
            "number",
            &[LessThan, LessThanEquals, GreaterThan, GreaterThanEquals],
        ),
        MetricKind::PortSet => ("ports", &[InPortSet, NotInPortSet]),
        MetricKind::IpSet => ("cidrs", &[InCidrSet, NotInCidrSet]),
        MetricKind::StringSet => ("strings", &[InSet, NotInSet]),
    }
}

fn op_list(ops: &[Operator]) -> String {
    ops.iter()
        .map(|o| o.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

type ParsedCriteria = (Criteria, Option<Spec>);

fn parse_criteria(
    cx: &mut Ctx<'_>,
    c: &Map<String, Value>,
    metric: Option<Metric>,
    name: &Option<String>,
    notes: &mut Vec<String>,
) -> Option<ParsedCriteria> {
    cx.unknown_keys(c, "criteria.", CRITERIA_KEYS);
    let op = match c.get("comparisonOperator") {
        None => None,
        Some(Value::String(s)) => match Operator::parse(s) {
            Some(o) => Some(o),
            None => {
                cx.err(
                    "criteria.comparisonOperator",
                    format!(
                        "unknown operator {s:?}; expected one of: {}",
                        op_list(&Operator::ALL)
                    ),
                );
                None
            }
        },
        Some(other) => {
            cx.err(
                "criteria.comparisonOperator",
                format!("expected a string, found {}", type_name(other)),
            );
            None
        }
    };
    let value = c.get("value").and_then(|v| parse_value(cx, v));
    let duration = match c.get("durationSeconds") {
        None => None,
        Some(v) => match v.as_u64() {
            Some(n @ 1..=MAX_DURATION_SECONDS) => Some(n as u32),
            _ => {
                cx.err(
                    "criteria.durationSeconds",
                    format!("expected whole seconds from 1 to {MAX_DURATION_SECONDS}, found {v}"),
                );
                None
            }
        },
    };
    if let (Some(d), Some(n)) = (duration, name) {
        if !CLOUD_DURATIONS.contains(&d) {
            notes.push(format!(
                "behavior {n:?}: durationSeconds {d} works on the device; a cloud profile accepts \
                 only 300, 600, 900, 1800 or 3600"
            ));
        }
    }
    let to_alarm = cx.small_count(c, "consecutiveDatapointsToAlarm");
    let to_clear = cx.small_count(c, "consecutiveDatapointsToClear");
    let statistical = match c.get("statisticalThreshold") {
        None => None,
        Some(Value::Object(s)) => {
            cx.unknown_keys(s, "criteria.statisticalThreshold.", &["statistic"]);
            match s.get("statistic") {
                Some(Value::String(st)) => match statistic_percentile(st) {
                    Some(p) => Some((st.clone(), p)),
                    None => {
                        cx.err(
                            "criteria.statisticalThreshold.statistic",
                            format!(
                                "unknown statistic {st:?}; expected one of: {}",
                                STATISTICS
                                    .iter()
                                    .map(|(n, _)| *n)
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        );
                        None
                    }
                },
                Some(other) => {
                    cx.err(
                        "criteria.statisticalThreshold.statistic",
                        format!(
                            "expected a string such as \"p90\", found {}",
                            type_name(other)
                        ),
                    );
                    None
                }
                None => {
                    cx.err(
                        "criteria.statisticalThreshold.statistic",
                        "missing; give a percentile such as \"p90\"",
                    );
                    None
                }
            }
        }
        Some(other) => {
            cx.err(
                "criteria.statisticalThreshold",
                format!("expected an object, found {}", type_name(other)),
            );
            None
        }
    };
    let ml = match c.get("mlDetectionConfig") {
        None => None,
        Some(Value::Object(m)) => {
            cx.unknown_keys(m, "criteria.mlDetectionConfig.", &["confidenceLevel"]);
            match m.get("confidenceLevel") {
                Some(Value::String(s)) => match ConfidenceLevel::parse(s) {
                    Some(l) => Some(l),
                    None => {
                        cx.err(
                            "criteria.mlDetectionConfig.confidenceLevel",
                            format!("unknown level {s:?}; expected LOW, MEDIUM or HIGH"),
                        );
                        None
                    }
                },
                Some(other) => {
                    cx.err(
                        "criteria.mlDetectionConfig.confidenceLevel",
                        format!(
                            "expected \"LOW\", \"MEDIUM\" or \"HIGH\", found {}",
                            type_name(other)
                        ),
                    );
                    None
                }
                None => {
                    cx.err(
                        "criteria.mlDetectionConfig.confidenceLevel",
                        "missing; give LOW, MEDIUM or HIGH",
                    );
                    None
                }
            }
        }
        Some(other) => {
            cx.err(
                "criteria.mlDetectionConfig",
                format!("expected an object, found {}", type_name(other)),
            );
            None
        }
    };

    let criteria = Criteria {
        comparison_operator: op,
        value: value.clone(),
        duration_seconds: duration,
        consecutive_datapoints_to_alarm: to_alarm,
        consecutive_datapoints_to_clear: to_clear,
        statistical_threshold: statistical.as_ref().map(|(s, _)| StatisticalThreshold {
            statistic: s.clone(),
        }),
        ml_detection_config: ml.map(|l| MlDetectionConfig {
            confidence_level: l,
        }),
    };
    let Some(metric) = metric else {
        return Some((criteria, None));
    };
    let (value_key, ops) = expected_for(&metric);
    let mname = metric.name;

    let check = if c.contains_key("mlDetectionConfig") {
        for k in [
            "comparisonOperator",
            "value",
            "statisticalThreshold",
            "durationSeconds",
        ] {
            if c.contains_key(k) {
                cx.err(
                    &format!("criteria.{k}"),
                    "not allowed with mlDetectionConfig: a learned behaviour has no fixed \
                     threshold or window",
                );
            }
        }
        let level = ml?;
        if metric.kind.is_numeric() {
            Check::Ml { confidence: level }
        } else {
            if let Some(n) = name {
                notes.push(format!(
                    "behavior {n:?}: mlDetectionConfig on the set metric {mname} selects set \
                     novelty on the device; a cloud profile would refuse it"
                ));
            }
            Check::Novelty { confidence: level }
        }
    } else if c.contains_key("statisticalThreshold") {
        if c.contains_key("value") {
            cx.err(
                "criteria.value",
                "not allowed with statisticalThreshold: the threshold is the percentile",
            );
        }
        if !metric.kind.is_numeric() {
            cx.err(
                "criteria.statisticalThreshold",
                format!(
                    "{mname} is {}; percentile thresholds need a numeric metric",
                    metric.kind.describe()
                ),
            );
        }
        let Some(o) = op else {
            if !c.contains_key("comparisonOperator") {
                cx.err(
                    "criteria.comparisonOperator",
                    "missing; a statistical threshold compares with less-than, less-than-equals, \
                     greater-than or greater-than-equals",
                );
            }
            return Some((criteria, None));
        };
        if !o.is_comparison() {
            cx.err(
                "criteria.comparisonOperator",
                format!(
                    "{o} does not compare numbers; a statistical threshold takes less-than, \
                     less-than-equals, greater-than or greater-than-equals"
                ),
            );
        }
        Check::Statistical {
            op: o,
            percentile: statistical?.1,
        }
    } else {
        let Some(o) = op else {
            if !c.contains_key("comparisonOperator") {
                cx.err(
                    "criteria.comparisonOperator",
                    "missing; criteria need comparisonOperator with value, comparisonOperator \
                     with statisticalThreshold, or mlDetectionConfig",
                );
            }
            return Some((criteria, None));
        };
        if !ops.contains(&o) {
            cx.err(
                "criteria.comparisonOperator",
                format!(
                    "{o} does not apply to {mname}, which is {}; use {}",
                    metric.kind.describe(),
                    op_list(ops)
                ),
            );
            return Some((criteria, None));
        }
        let Some(v) = value else {
            if !c.contains_key("value") {
                cx.err(
                    "criteria.value",
                    format!("missing; {o} on {mname} needs value.{value_key}"),
                );
            }
            return Some((criteria, None));
        };
        let given = VALUE_KEYS
            .iter()
            .copied()
            .find(|k| c["value"].get(*k).is_some())
            .unwrap_or("");
        if given != value_key {
            let what = match value_key {
                "count" => "a non-negative integer",
                "number" => "a number",
                "ports" => "a list of ports",
                "cidrs" => "a list of CIDR blocks",
                _ => "a list of strings",
            };
            cx.err(
                &format!("criteria.value.{given}"),
                format!("wrong value kind: {mname} takes value.{value_key} ({what})"),
            );
            return Some((criteria, None));
        }
        let requires_inside = o.requires_inside();
        match metric.kind {
            MetricKind::Counter | MetricKind::Gauge => Check::Threshold {
                op: o,
                value: v.count.map(|n| n as f64).or(v.number)?,
            },
            MetricKind::PortSet => {
                let mut set = v.ports?;
                set.sort_unstable();
                set.dedup();
                Check::Ports {
                    requires_inside,
                    set,
                }
            }
            MetricKind::IpSet => Check::Cidrs {
                requires_inside,
                set: v
                    .cidrs?
                    .iter()
                    .filter_map(|s| Cidr::parse(s).ok())
                    .collect(),
            },
            MetricKind::StringSet => {
                let mut set = v.strings?;
                set.sort_unstable();
                set.dedup();
                Check::Strings {
                    requires_inside,
                    set,
                }
            }
        }
    };
    if duration.is_some() {
        match metric.kind {
            MetricKind::Counter => {}
            MetricKind::Gauge => cx.err(
                "criteria.durationSeconds",
                format!(
                    "{mname} is a level, not a count over time; durationSeconds does not apply \
                     (remove it)"
                ),
            ),
            _ => cx.err(
                "criteria.durationSeconds",
                format!(
                    "{mname} is {}; durationSeconds is not allowed with list metrics",
                    metric.kind.describe()
                ),
            ),
        }
    }
    let spec = Spec {
        metric,
        check,
        duration_ms: duration.map(|d| u64::from(d) * 1000),
        to_alarm: to_alarm.unwrap_or(1),
        to_clear: to_clear.unwrap_or(1),
    };
    Some((criteria, Some(spec)))
}
