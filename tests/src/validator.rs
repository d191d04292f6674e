//! A strict validator of Device Defender metrics reports (spec §9.1–§9.2).
//!
//! Written from the specification alone, independently of the agent's encoder, so that a bug in
//! one is not mirrored in the other. It decodes JSON or CBOR into a neutral tree that keeps
//! integer/float distinction, key order and duplicate keys, then checks the report the way the
//! emulator (and, as far as known, the service) does:
//!
//! - *problems* reject the report (`InvalidPayload` / `Malformed metrics report`);
//! - *warnings* are legal but suspicious shapes (e.g. `total < len(list)`);
//! - *flags* are value-quality issues the service drops without rejecting (more than 15
//!   significant digits, characters outside the `string_list` set, invalid IPs, unregistered
//!   custom metric names, a value type that contradicts the registered type).
//!
//! [`Mode::Strict`] (the default) additionally rejects mixed long/short keys, unknown keys, a
//! version other than `"1.0"`, a port entry without `port`, `null` interfaces and duplicate keys.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// AWS IoT Core's MQTT payload limit.
pub const MAX_PAYLOAD_BYTES: usize = 131_072;
/// `ErrorCode` of a schema rejection.
pub const INVALID_PAYLOAD: &str = "InvalidPayload";
/// `ErrorMessage` of a schema rejection.
pub const MALFORMED_MESSAGE: &str = "Malformed metrics report";
/// Largest valid `report_id`.
pub const MAX_REPORT_ID: u64 = i64::MAX as u64;

/// Report encoding, from the last topic level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// `…/metrics/json`
    Json,
    /// `…/metrics/cbor`
    Cbor,
}

impl Encoding {
    /// `json` or `cbor`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Encoding::Json => "json",
            Encoding::Cbor => "cbor",
        }
    }
}

/// How strictly to judge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Our CI default: everything §9 lists as strict.
    #[default]
    Strict,
    /// Only what the service is known to reject.
    Lenient,
}

/// Key style of a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStyle {
    /// `header`, `metrics`, …
    Long,
    /// `hed`, `met`, …
    Short,
}

/// A custom metric's cloud type (`--metric-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    /// `number`
    Number,
    /// `number-list`
    NumberList,
    /// `string-list`
    StringList,
    /// `ip-address-list`
    IpAddressList,
}

impl MetricType {
    /// Parses the CLI spelling (`number`, `number-list`, `string-list`, `ip-address-list`).
    pub fn parse(s: &str) -> Option<MetricType> {
        Some(match s {
            "number" => MetricType::Number,
            "number-list" => MetricType::NumberList,
            "string-list" => MetricType::StringList,
            "ip-address-list" => MetricType::IpAddressList,
            _ => return None,
        })
    }

    /// The CLI spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            MetricType::Number => "number",
            MetricType::NumberList => "number-list",
            MetricType::StringList => "string-list",
            MetricType::IpAddressList => "ip-address-list",
        }
    }

    fn value_key(self) -> &'static str {
        match self {
            MetricType::Number => "number",
            MetricType::NumberList => "number_list",
            MetricType::StringList => "string_list",
            MetricType::IpAddressList => "ip_list",
        }
    }
}

/// The custom metrics "created in the account", for flagging unknown names and wrong types.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    metrics: BTreeMap<String, MetricType>,
}

impl Registry {
    /// An empty registry (every custom metric is flagged as unregistered).
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Every custom metric edgewarden's registry declares.
    pub fn edgewarden() -> Registry {
        let mut r = Registry::new();
        for d in edgewarden::metrics::CUSTOM_METRICS {
            let ty = match d.cloud_type {
                edgewarden::metrics::CloudType::Number => MetricType::Number,
                edgewarden::metrics::CloudType::StringList => MetricType::StringList,
                edgewarden::metrics::CloudType::IpAddressList => MetricType::IpAddressList,
            };
            r.register(d.name, ty);
        }
        r
    }

    /// Adds (or retypes) one metric.
    pub fn register(&mut self, name: &str, ty: MetricType) -> &mut Self {
        self.metrics.insert(name.to_owned(), ty);
        self
    }

    /// The registered type of `name`.
    pub fn get(&self, name: &str) -> Option<MetricType> {
        self.metrics.get(name).copied()
    }
}

/// One finding, located by a dotted path in long-name terms plus the key actually used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Where, e.g. `metrics.listening_tcp_ports.ports[2].port`.
    pub path: String,
    /// What.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// A report that passed.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidReport {
    /// `header.report_id`.
    pub report_id: u64,
    /// `header.version`.
    pub version: String,
    /// Key style of the document.
    pub key_style: KeyStyle,
    /// Legal but suspicious shapes.
    pub warnings: Vec<Finding>,
    /// Value-quality issues the service would drop silently.
    pub flags: Vec<Finding>,
    /// The document with long key names, as JSON (for comparing encodings and for time series).
    pub document: Value,
}

/// A report that the service would reject with `InvalidPayload`.
#[derive(Debug, Clone, PartialEq)]
pub struct InvalidReport {
    /// The report id, when the header could be read.
    pub report_id: Option<u64>,
    /// Every problem found (at least one).
    pub problems: Vec<Finding>,
}

impl InvalidReport {
    /// True when some problem's text contains `needle` (for tests).
    pub fn mentions(&self, needle: &str) -> bool {
        self.problems.iter().any(|p| p.to_string().contains(needle))
    }
}

impl fmt::Display for InvalidReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid report")?;
        if let Some(id) = self.report_id {
            write!(f, " {id}")?;
        }
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for InvalidReport {}

/// The thing and encoding named by a report topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportTopic {
    /// `<thingName>`.
    pub thing: String,
    /// `<fmt>`.
    pub encoding: Encoding,
}

/// Matches `^\$aws/things/([^/]+)/defender/metrics/(json|cbor)$`.
pub fn parse_report_topic(topic: &str) -> Option<ReportTopic> {
    let rest = topic.strip_prefix("$aws/things/")?;
    let (thing, rest) = rest.split_once('/')?;
    let fmt = rest.strip_prefix("defender/metrics/")?;
    let encoding = match fmt {
        "json" => Encoding::Json,
        "cbor" => Encoding::Cbor,
        _ => return None,
    };
    (!thing.is_empty()).then(|| ReportTopic {
        thing: thing.to_owned(),
        encoding,
    })
}

/// Thing-name rules: 1–128 bytes, no control characters; strict also `[a-zA-Z0-9:_-]+`.
pub fn check_thing_name(name: &str, mode: Mode) -> Result<(), String> {
    if name.is_empty() || name.len() > 128 {
        return Err(format!(
            "thing name must be 1-128 bytes, got {}",
            name.len()
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("thing name contains control characters".into());
    }
    if mode == Mode::Strict
        && !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'-'))
    {
        return Err(format!("thing name {name:?} is not [a-zA-Z0-9:_-]+"));
    }
    Ok(())
}

/// True when `name` is a valid custom metric name.
pub fn valid_metric_name(name: &str) -> bool {
    (1..=128).contains(&name.chars().count())
        && !name.starts_with("aws:")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'-'))
}

/// Validates report payloads.
#[derive(Debug, Clone, Default)]
pub struct Validator {
    /// Strictness.
    pub mode: Mode,
    /// Registered custom metrics; `None` skips the registration checks.
    pub registry: Option<Registry>,
}

impl Validator {
    /// Strict, without a registry.
    pub fn strict() -> Validator {
        Validator {
            mode: Mode::Strict,
            registry: None,
        }
    }

    /// Lenient, without a registry.
    pub fn lenient() -> Validator {
        Validator {
            mode: Mode::Lenient,
            registry: None,
        }
    }

    /// With a registry of custom metrics to flag against.
    pub fn with_registry(mut self, registry: Registry) -> Validator {
        self.registry = Some(registry);
        self
    }

    /// Checks a publish as the service receives it: the topic must be a report topic with a
    /// valid thing name, then the payload is validated in the topic's encoding.
    pub fn validate_publish(
        &self,
        topic: &str,
        payload: &[u8],
    ) -> Result<(ReportTopic, ValidReport), InvalidReport> {
        let fail = |message: String| InvalidReport {
            report_id: None,
            problems: vec![Finding {
                path: String::new(),
                message,
            }],
        };
        let rt = parse_report_topic(topic).ok_or_else(|| {
            fail(format!(
                "{topic:?} is not $aws/things/<thingName>/defender/metrics/(json|cbor)"
            ))
        })?;
        check_thing_name(&rt.thing, self.mode).map_err(fail)?;
        let ok = self.validate(payload, rt.encoding)?;
        Ok((rt, ok))
    }

    /// Decodes and checks one payload.
    pub fn validate(
        &self,
        payload: &[u8],
        encoding: Encoding,
    ) -> Result<ValidReport, InvalidReport> {
        let fail = |message: String| InvalidReport {
            report_id: None,
            problems: vec![Finding {
                path: String::new(),
                message,
            }],
        };
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(fail(format!(
                "payload is {} bytes, over the {MAX_PAYLOAD_BYTES}-byte limit",
                payload.len()
            )));
        }
        let root = decode(payload, encoding).map_err(fail)?;
        let mut c = Checker {
            mode: self.mode,
            registry: self.registry.as_ref(),
            problems: Vec::new(),
            warnings: Vec::new(),
            flags: Vec::new(),
            style: None,
            mixed_reported: false,
        };
        let (report_id, version, document) = c.root(&root);
        match (report_id, c.problems.is_empty()) {
            (Some(report_id), true) => Ok(ValidReport {
                report_id,
                version: version.unwrap_or_default(),
                key_style: c.style.map_or(KeyStyle::Long, |(s, _)| s),
                warnings: c.warnings,
                flags: c.flags,
                document,
            }),
            _ => Err(InvalidReport {
                report_id,
                problems: c.problems,
            }),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Neutral decoded tree
// ---------------------------------------------------------------------------------------------

/// A decoded JSON or CBOR item. Maps keep order and duplicates; keys may be any item (CBOR).
#[derive(Debug, Clone, PartialEq)]
enum Node {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
    Array(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    fn kind(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool(_) => "a boolean",
            Node::Int(_) => "an integer",
            Node::Float(_) => "a float",
            Node::Text(_) => "a string",
            Node::Bytes(_) => "a byte string",
            Node::Array(_) => "an array",
            Node::Map(_) => "an object",
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON or CBOR item")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Int(v.into()))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Node, E> {
        Ok(Node::Int(v))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Node, E> {
        i128::try_from(v)
            .map(Node::Int)
            .map_err(|_| E::custom("integer out of range"))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Text(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::Text(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Node, E> {
        Ok(Node::Bytes(v.to_owned()))
    }
    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Node, E> {
        Ok(Node::Bytes(v))
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
        let mut v = Vec::new();
        while let Some(x) = a.next_element()? {
            v.push(x);
        }
        Ok(Node::Array(v))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
        let mut v = Vec::new();
        while let Some(kv) = a.next_entry()? {
            v.push(kv);
        }
        Ok(Node::Map(v))
    }
}

fn decode(payload: &[u8], encoding: Encoding) -> Result<Node, String> {
    match encoding {
        Encoding::Json => {
            std::str::from_utf8(payload).map_err(|e| format!("payload is not UTF-8: {e}"))?;
            serde_json::from_slice(payload).map_err(|e| format!("payload is not JSON: {e}"))
        }
        Encoding::Cbor => {
            let mut rest = payload;
            let node: Node = ciborium::from_reader(&mut rest)
                .map_err(|e| format!("payload is not CBOR: {e:?}"))?;
            if !rest.is_empty() {
                return Err(format!("{} trailing bytes after the CBOR item", rest.len()));
            }
            Ok(node)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Schema checks
// ---------------------------------------------------------------------------------------------

/// A schema field: long name, short name.
type Field = (&'static str, &'static str);

const HEADER: Field = ("header", "hed");
const METRICS: Field = ("metrics", "met");
const CUSTOM: Field = ("custom_metrics", "cmet");
const REPORT_ID: Field = ("report_id", "rid");
const VERSION: Field = ("version", "v");
const TCP_PORTS: Field = ("listening_tcp_ports", "tp");
const UDP_PORTS: Field = ("listening_udp_ports", "up");
const PORTS: Field = ("ports", "pts");
const PORT: Field = ("port", "pt");
const INTERFACE: Field = ("interface", "if");
const TOTAL: Field = ("total", "t");
const NET: Field = ("network_stats", "ns");
const BYTES_IN: Field = ("bytes_in", "bi");
const BYTES_OUT: Field = ("bytes_out", "bo");
const PACKETS_IN: Field = ("packets_in", "pi");
const PACKETS_OUT: Field = ("packets_out", "po");
const TCP_CONNS: Field = ("tcp_connections", "tc");
const ESTABLISHED: Field = ("established_connections", "ec");
const CONNECTIONS: Field = ("connections", "cs");
const REMOTE_ADDR: Field = ("remote_addr", "rad");
const LOCAL_PORT: Field = ("local_port", "lp");
const LOCAL_INTERFACE: Field = ("local_interface", "li");

const CUSTOM_VALUE_KEYS: [&str; 4] = ["number", "number_list", "string_list", "ip_list"];

struct Checker<'r> {
    mode: Mode,
    registry: Option<&'r Registry>,
    problems: Vec<Finding>,
    warnings: Vec<Finding>,
    flags: Vec<Finding>,
    /// First key style seen, and the key that set it.
    style: Option<(KeyStyle, String)>,
    mixed_reported: bool,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

impl Checker<'_> {
    fn problem(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Finding {
            path: path.to_owned(),
            message: message.into(),
        });
    }

    /// A problem in strict mode, a warning in lenient mode.
    fn strict_problem(&mut self, path: &str, message: impl Into<String>) {
        let f = Finding {
            path: path.to_owned(),
            message: message.into(),
        };
        match self.mode {
            Mode::Strict => self.problems.push(f),
            Mode::Lenient => self.warnings.push(f),
        }
    }

    fn warn(&mut self, path: &str, message: impl Into<String>) {
        self.warnings.push(Finding {
            path: path.to_owned(),
            message: message.into(),
        });
    }

    fn flag(&mut self, path: &str, message: impl Into<String>) {
        self.flags.push(Finding {
            path: path.to_owned(),
            message: message.into(),
        });
    }

    /// Text-keyed entries of an object, or a problem.
    fn entries<'n>(&mut self, node: &'n Node, path: &str) -> Option<Vec<(&'n str, &'n Node)>> {
        let Node::Map(entries) = node else {
            self.problem(path, format!("must be an object, got {}", node.kind()));
            return None;
        };
        let mut out = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            match k {
                Node::Text(k) => {
                    if out.iter().any(|(seen, _)| *seen == k.as_str()) {
                        self.strict_problem(path, format!("duplicate key {k:?}"));
                    } else {
                        out.push((k.as_str(), v));
                    }
                }
                other => self.problem(
                    path,
                    format!("map key must be a text string, got {}", other.kind()),
                ),
            }
        }
        Some(out)
    }

    /// Picks the schema fields of an object, checking key style and unknown keys.
    fn fields<'n, const N: usize>(
        &mut self,
        node: &'n Node,
        path: &str,
        spec: [Field; N],
    ) -> Option<[Option<&'n Node>; N]> {
        let entries = self.entries(node, path)?;
        let mut out = [None; N];
        for (key, value) in entries {
            let hit = spec.iter().enumerate().find_map(|(i, (long, short))| {
                if key == *long {
                    Some((i, KeyStyle::Long))
                } else if key == *short {
                    Some((i, KeyStyle::Short))
                } else {
                    None
                }
            });
            match hit {
                Some((i, style)) => {
                    let long = spec[i].0;
                    self.note_style(style, &join(path, key));
                    if out[i].is_some() {
                        self.problem(path, format!("{long:?} given both in long and short form"));
                    }
                    out[i] = Some(value);
                }
                None => self.strict_problem(&join(path, key), "unknown key"),
            }
        }
        Some(out)
    }

    fn note_style(&mut self, style: KeyStyle, at: &str) {
        match &self.style {
            None => self.style = Some((style, at.to_owned())),
            Some((first, first_at)) if *first != style && !self.mixed_reported => {
                let msg = format!(
                    "mixed long and short key names ({first_at} is {first:?}, {at} is {style:?})"
                );
                self.mixed_reported = true;
                self.strict_problem("", msg);
            }
            Some(_) => {}
        }
    }

    fn uint(&mut self, node: &Node, path: &str, max: u64) -> Option<u64> {
        match node {
            Node::Int(i) if (0..=i128::from(max)).contains(i) => {
                Some(u64::try_from(*i).expect("range checked"))
            }
            Node::Int(i) => {
                self.problem(path, format!("must be an integer in 0..={max}, got {i}"));
                None
            }
            other => {
                self.problem(path, format!("must be an integer, got {}", other.kind()));
                None
            }
        }
    }

    fn text<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n str> {
        match node {
            Node::Text(s) => Some(s),
            Node::Null if self.mode == Mode::Lenient => {
                self.warn(path, "null instead of a string; ignored");
                None
            }
            other => {
                self.problem(path, format!("must be a string, got {}", other.kind()));
                None
            }
        }
    }

    fn root(&mut self, root: &Node) -> (Option<u64>, Option<String>, Value) {
        let mut doc = Map::new();
        let Some([header, metrics, custom]) = self.fields(root, "", [HEADER, METRICS, CUSTOM])
        else {
            return (None, None, Value::Null);
        };
        let (mut report_id, mut version) = (None, None);
        match header {
            None => self.problem("header", "required"),
            Some(h) => {
                if let Some([rid, v]) = self.fields(h, "header", [REPORT_ID, VERSION]) {
                    match rid {
                        None => self.problem("header.report_id", "required"),
                        Some(Node::Int(i)) if (1..=i128::from(MAX_REPORT_ID)).contains(i) => {
                            report_id = Some(u64::try_from(*i).expect("range checked"));
                        }
                        Some(Node::Int(i)) => self.problem(
                            "header.report_id",
                            format!("must be in 1..=2^63-1, got {i}"),
                        ),
                        Some(other) => self.problem(
                            "header.report_id",
                            format!("must be an integer, got {}", other.kind()),
                        ),
                    }
                    match v {
                        None => self.problem("header.version", "required"),
                        Some(Node::Text(s)) => {
                            let well_formed = s.split_once('.').is_some_and(|(a, b)| {
                                !a.is_empty()
                                    && !b.is_empty()
                                    && a.bytes().all(|c| c.is_ascii_digit())
                                    && b.bytes().all(|c| c.is_ascii_digit())
                            });
                            if !well_formed {
                                self.problem("header.version", format!("{s:?} is not Major.Minor"));
                            } else if s != "1.0" {
                                self.strict_problem(
                                    "header.version",
                                    format!("{s:?} is not \"1.0\""),
                                );
                            }
                            version = Some(s.clone());
                        }
                        Some(other) => self.problem(
                            "header.version",
                            format!("must be a string, got {}", other.kind()),
                        ),
                    }
                }
                doc.insert(
                    "header".into(),
                    json!({"report_id": report_id, "version": version}),
                );
            }
        }
        if metrics.is_none() && custom.is_none() {
            self.problem("", "neither metrics nor custom_metrics is present");
        }
        if let Some(m) = metrics {
            let v = self.metrics(m);
            doc.insert("metrics".into(), v);
        }
        if let Some(c) = custom {
            let v = self.custom_metrics(c);
            doc.insert("custom_metrics".into(), v);
        }
        (report_id, version, Value::Object(doc))
    }

    fn metrics(&mut self, node: &Node) -> Value {
        let mut doc = Map::new();
        let Some([tp, up, ns, tc]) =
            self.fields(node, "metrics", [TCP_PORTS, UDP_PORTS, NET, TCP_CONNS])
        else {
            return Value::Null;
        };
        if let Some(n) = tp {
            doc.insert(
                TCP_PORTS.0.into(),
                self.port_list(n, "metrics.listening_tcp_ports"),
            );
        }
        if let Some(n) = up {
            doc.insert(
                UDP_PORTS.0.into(),
                self.port_list(n, "metrics.listening_udp_ports"),
            );
        }
        if let Some(n) = ns {
            let path = "metrics.network_stats";
            let mut o = Map::new();
            if let Some(vals) = self.fields(n, path, [BYTES_IN, BYTES_OUT, PACKETS_IN, PACKETS_OUT])
            {
                for (field, v) in [BYTES_IN, BYTES_OUT, PACKETS_IN, PACKETS_OUT]
                    .iter()
                    .zip(vals)
                {
                    if let Some(v) = v {
                        if let Some(x) = self.uint(v, &join(path, field.0), u64::MAX) {
                            o.insert(field.0.into(), json!(x));
                        }
                    }
                }
            }
            doc.insert(NET.0.into(), Value::Object(o));
        }
        if let Some(n) = tc {
            let path = "metrics.tcp_connections";
            let mut o = Map::new();
            if let Some([Some(ec)]) = self.fields(n, path, [ESTABLISHED]) {
                o.insert(
                    ESTABLISHED.0.into(),
                    self.connections(ec, &join(path, ESTABLISHED.0)),
                );
            }
            doc.insert(TCP_CONNS.0.into(), Value::Object(o));
        }
        Value::Object(doc)
    }

    fn total(&mut self, node: Option<&Node>, listed: Option<usize>, path: &str) -> Option<u64> {
        let t = self.uint(node?, &join(path, "total"), u64::MAX)?;
        if let Some(n) = listed {
            if t < n as u64 {
                self.warn(
                    &join(path, "total"),
                    format!("total {t} is less than the {n} listed entries"),
                );
            }
        }
        Some(t)
    }

    fn port_list(&mut self, node: &Node, path: &str) -> Value {
        let mut o = Map::new();
        let Some([ports, total]) = self.fields(node, path, [PORTS, TOTAL]) else {
            return Value::Null;
        };
        let mut listed = None;
        if let Some(ports) = ports {
            let list_path = join(path, PORTS.0);
            match ports {
                Node::Array(items) => {
                    listed = Some(items.len());
                    let mut out = Vec::with_capacity(items.len());
                    for (i, item) in items.iter().enumerate() {
                        let p = format!("{list_path}[{i}]");
                        let mut e = Map::new();
                        if let Some([port, iface]) = self.fields(item, &p, [PORT, INTERFACE]) {
                            match port {
                                Some(port) => {
                                    let pp = join(&p, PORT.0);
                                    if let Some(x) = self.uint(port, &pp, 65_535) {
                                        if x == 0 {
                                            self.problem(&pp, "must be in 1..=65535, got 0");
                                        } else {
                                            e.insert("port".into(), json!(x));
                                        }
                                    }
                                }
                                None => self.strict_problem(&p, "port entry without \"port\""),
                            }
                            if let Some(iface) = iface {
                                if let Some(s) = self.text(iface, &join(&p, INTERFACE.0)) {
                                    e.insert("interface".into(), json!(s));
                                }
                            }
                        }
                        out.push(Value::Object(e));
                    }
                    o.insert("ports".into(), Value::Array(out));
                }
                other => self.problem(
                    &list_path,
                    format!("must be an array, got {}", other.kind()),
                ),
            }
        }
        if let Some(t) = self.total(total, listed, path) {
            o.insert("total".into(), json!(t));
        }
        Value::Object(o)
    }

    fn connections(&mut self, node: &Node, path: &str) -> Value {
        let mut o = Map::new();
        let Some([conns, total]) = self.fields(node, path, [CONNECTIONS, TOTAL]) else {
            return Value::Null;
        };
        let mut listed = None;
        if let Some(conns) = conns {
            let list_path = join(path, CONNECTIONS.0);
            match conns {
                Node::Array(items) => {
                    listed = Some(items.len());
                    let mut out = Vec::with_capacity(items.len());
                    for (i, item) in items.iter().enumerate() {
                        let p = format!("{list_path}[{i}]");
                        let mut e = Map::new();
                        if let Some([rad, lp, li]) =
                            self.fields(item, &p, [REMOTE_ADDR, LOCAL_PORT, LOCAL_INTERFACE])
                        {
                            match rad {
                                None => self.problem(&p, "connection without \"remote_addr\""),
                                Some(Node::Text(s)) => match parse_remote_addr(s, self.mode) {
                                    Ok(()) => {
                                        e.insert("remote_addr".into(), json!(s));
                                    }
                                    Err(why) => self.problem(&join(&p, REMOTE_ADDR.0), why),
                                },
                                Some(other) => self.problem(
                                    &join(&p, REMOTE_ADDR.0),
                                    format!("must be a string \"ip:port\", got {}", other.kind()),
                                ),
                            }
                            if let Some(lp) = lp {
                                if let Some(x) = self.uint(lp, &join(&p, LOCAL_PORT.0), 65_535) {
                                    e.insert("local_port".into(), json!(x));
                                }
                            }
                            if let Some(li) = li {
                                if let Some(s) = self.text(li, &join(&p, LOCAL_INTERFACE.0)) {
                                    e.insert("local_interface".into(), json!(s));
                                }
                            }
                        }
                        out.push(Value::Object(e));
                    }
                    o.insert("connections".into(), Value::Array(out));
                }
                other => self.problem(
                    &list_path,
                    format!("must be an array, got {}", other.kind()),
                ),
            }
        }
        if let Some(t) = self.total(total, listed, path) {
            o.insert("total".into(), json!(t));
        }
        Value::Object(o)
    }

    fn custom_metrics(&mut self, node: &Node) -> Value {
        let mut doc = Map::new();
        let Some(entries) = self.entries(node, "custom_metrics") else {
            return Value::Null;
        };
        for (name, value) in entries {
            let path = join("custom_metrics", name);
            if !valid_metric_name(name) {
                self.problem(
                    &path,
                    "invalid custom metric name (1-128 of [a-zA-Z0-9:_-], not starting with \"aws:\")",
                );
                continue;
            }
            let Node::Array(items) = value else {
                self.problem(
                    &path,
                    format!(
                        "must be a one-element array [{{\"number\": ...}}], got {}",
                        value.kind()
                    ),
                );
                continue;
            };
            if items.len() != 1 {
                self.problem(
                    &path,
                    format!("must be a one-element array, got {} elements", items.len()),
                );
                continue;
            }
            let Some(inner) = self.entries(&items[0], &format!("{path}[0]")) else {
                continue;
            };
            if inner.len() != 1 {
                self.problem(
                    &format!("{path}[0]"),
                    format!("must hold exactly one value key, got {}", inner.len()),
                );
                continue;
            }
            let (key, v) = inner[0];
            let vpath = format!("{path}[0].{key}");
            let ty = match key {
                "number" => MetricType::Number,
                "number_list" => MetricType::NumberList,
                "string_list" => MetricType::StringList,
                "ip_list" => MetricType::IpAddressList,
                other => {
                    self.problem(
                        &vpath,
                        format!(
                            "unknown value key {other:?} (expected one of {CUSTOM_VALUE_KEYS:?})"
                        ),
                    );
                    continue;
                }
            };
            let Some(value) = self.custom_value(ty, v, &vpath) else {
                continue;
            };
            if let Some(reg) = self.registry {
                match reg.get(name) {
                    None => self.flag(
                        &path,
                        "custom metric is not registered; its data would be dropped",
                    ),
                    Some(t) if t != ty => self.flag(
                        &path,
                        format!(
                            "registered as {} but sent as {} ({:?})",
                            t.as_str(),
                            ty.as_str(),
                            t.value_key()
                        ),
                    ),
                    Some(_) => {}
                }
            }
            doc.insert(name.to_owned(), json!([{ key: value }]));
        }
        Value::Object(doc)
    }

    fn number(&mut self, node: &Node, path: &str) -> Option<Value> {
        match node {
            Node::Int(i) => {
                let digits = significant_digits_int(*i);
                if digits > 15 {
                    self.flag(
                        path,
                        format!("{i} has {digits} significant digits (more than 15)"),
                    );
                }
                // Values beyond i64/u64 cannot be carried in the normalised JSON document.
                if let Ok(v) = i64::try_from(*i) {
                    Some(json!(v))
                } else if let Ok(v) = u64::try_from(*i) {
                    Some(json!(v))
                } else {
                    Some(json!(*i as f64))
                }
            }
            Node::Float(f) if f.is_finite() => {
                let digits = significant_digits_float(*f);
                if digits > 15 {
                    self.flag(
                        path,
                        format!("{f:e} has {digits} significant digits (more than 15)"),
                    );
                }
                Some(json!(f))
            }
            Node::Float(f) => {
                self.problem(path, format!("must be a finite number, got {f}"));
                None
            }
            other => {
                self.problem(path, format!("must be a number, got {}", other.kind()));
                None
            }
        }
    }

    fn custom_value(&mut self, ty: MetricType, v: &Node, path: &str) -> Option<Value> {
        if ty == MetricType::Number {
            return self.number(v, path);
        }
        let Node::Array(items) = v else {
            self.problem(path, format!("must be an array, got {}", v.kind()));
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let p = format!("{path}[{i}]");
            match ty {
                MetricType::Number => unreachable!("handled above"),
                MetricType::NumberList => match self.number(item, &p) {
                    Some(x) => out.push(x),
                    None => ok = false,
                },
                MetricType::StringList | MetricType::IpAddressList => {
                    let Node::Text(s) = item else {
                        self.problem(&p, format!("must be a string, got {}", item.kind()));
                        ok = false;
                        continue;
                    };
                    if ty == MetricType::StringList {
                        if let Some(c) = s.chars().find(|c| !allowed_string_char(*c)) {
                            self.flag(
                                &p,
                                format!("{s:?} contains {c:?}, outside [A-Za-z0-9:_-/.]"),
                            );
                        }
                    } else if s.parse::<IpAddr>().is_err() {
                        self.flag(&p, format!("{s:?} is not an IP address"));
                    }
                    out.push(json!(s));
                }
            }
        }
        ok.then_some(Value::Array(out))
    }
}

fn allowed_string_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '-' | '/' | '.')
}

fn significant_digits_int(i: i128) -> usize {
    let s = i.unsigned_abs().to_string();
    s.trim_end_matches('0').len().max(1)
}

/// Digits of the shortest decimal that reproduces `f` (Rust's `{:e}` prints exactly that).
fn significant_digits_float(f: f64) -> usize {
    let s = format!("{:e}", f.abs());
    let mantissa = s.split('e').next().unwrap_or("0");
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    digits.trim_start_matches('0').len().max(1)
}

/// `a.b.c.d:port` or `[v6]:port` (no scope id); lenient also takes a bare v6 address + `:port`.
fn parse_remote_addr(s: &str, mode: Mode) -> Result<(), String> {
    if s.contains('%') {
        return Err(format!("{s:?} carries an IPv6 scope id"));
    }
    let ok = match s.parse::<SocketAddr>() {
        Ok(SocketAddr::V4(_)) => true,
        Ok(SocketAddr::V6(_)) => s.starts_with('['),
        Err(_) => {
            mode == Mode::Lenient
                && s.rsplit_once(':').is_some_and(|(ip, port)| {
                    ip.parse::<Ipv6Addr>().is_ok() && port.parse::<u16>().is_ok()
                })
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{s:?} is not \"a.b.c.d:port\" or \"[ipv6]:port\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn significant_digits_are_counted_on_the_shortest_form() {
        assert_eq!(significant_digits_float(61.5), 3);
        assert_eq!(significant_digits_float(0.1 + 0.2), 17);
        assert_eq!(significant_digits_float(1e20), 1);
        assert_eq!(significant_digits_float(0.000_123), 3);
        assert_eq!(significant_digits_int(1_767_225_600_123), 13);
        assert_eq!(significant_digits_int(1_000_000_000_000_000_000), 1);
        assert_eq!(significant_digits_int(-1_234_567_890_123_456), 16);
        assert_eq!(significant_digits_int(0), 1);
    }

    #[test]
    fn report_topics_are_recognised() {
        assert_eq!(
            parse_report_topic("$aws/things/gw-1/defender/metrics/cbor"),
            Some(ReportTopic {
                thing: "gw-1".into(),
                encoding: Encoding::Cbor
            })
        );
        assert!(parse_report_topic("$aws/things/gw-1/defender/metrics/json/accepted").is_none());
        assert!(parse_report_topic("$aws/things//defender/metrics/json").is_none());
        assert!(parse_report_topic("$aws/things/gw-1/defender/metrics/JSON").is_none());
    }

    #[test]
    fn remote_addresses_need_brackets_for_ipv6_in_strict_mode() {
        assert!(parse_remote_addr("203.0.113.10:8883", Mode::Strict).is_ok());
        assert!(parse_remote_addr("[2001:db8::7]:60211", Mode::Strict).is_ok());
        assert!(parse_remote_addr("2001:db8::7:60211", Mode::Strict).is_err());
        assert!(parse_remote_addr("2001:db8::7:60211", Mode::Lenient).is_ok());
        assert!(parse_remote_addr("[fe80::1%2]:22", Mode::Lenient).is_err());
        assert!(parse_remote_addr("203.0.113.10", Mode::Lenient).is_err());
        assert!(parse_remote_addr("host:22", Mode::Lenient).is_err());
    }
}
