//! Device Defender answers: the one parser of the accepted/rejected documents (spec §3.1–§3.2),
//! the report id of an outgoing report, and the correlation of answers with published reports.
//! Both transports and the fuzz target use this module.
//!
//! The parser accepts what the service documents (`reportId`, `status`, `statusDetails` with
//! `ErrorCode`/`ErrorMessage`) and tolerates what it does not promise: a missing `reportId` (a
//! rejection of a report that could not be parsed has none), a missing `status` (the topic says
//! it), a numeric string id, other key casings, extra fields. A field that is present with a
//! value it cannot have is an error naming the topic and the field; so is a document that is
//! not a single JSON object / CBOR map. Nothing a peer sends can make it panic or allocate
//! without bound: answers over [`MAX_RESPONSE_LEN`] are not decoded and texts are cut to
//! [`MAX_TEXT_CHARS`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use crate::config::ReportFormat;

/// Answers larger than this are not parsed (real ones are about 200 bytes).
pub const MAX_RESPONSE_LEN: usize = 16 * 1024;

/// `ErrorCode` and `ErrorMessage` are cut to this many characters.
pub const MAX_TEXT_CHARS: usize = 512;

/// Encoding of a topic's payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `…/json…`
    Json,
    /// `…/cbor…`
    Cbor,
}

impl From<ReportFormat> for Encoding {
    fn from(f: ReportFormat) -> Encoding {
        match f {
            ReportFormat::Cbor => Encoding::Cbor,
            ReportFormat::Json | ReportFormat::JsonShort => Encoding::Json,
        }
    }
}

impl Encoding {
    const fn name(self) -> &'static str {
        match self {
            Encoding::Json => "JSON",
            Encoding::Cbor => "CBOR",
        }
    }
}

/// A Device Defender answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// On `…/accepted`.
    Accepted {
        /// The report it answers, when present.
        report_id: Option<u64>,
    },
    /// On `…/rejected`.
    Rejected {
        /// The report it answers; may be missing when the report could not be parsed.
        report_id: Option<u64>,
        /// `statusDetails.ErrorCode` (`"(none)"` when absent).
        code: String,
        /// `statusDetails.ErrorMessage` (empty when absent).
        message: String,
    },
}

/// An answer that was not understood: the topic it came on and what was wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Device Defender answer on {topic}: {problem}")]
pub struct ResponseError {
    /// The topic the answer arrived on.
    pub topic: String,
    /// What was wrong.
    pub problem: ResponseProblem,
}

/// What was wrong with an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResponseProblem {
    /// Larger than [`MAX_RESPONSE_LEN`]; not decoded.
    #[error("{0} bytes, larger than the {MAX_RESPONSE_LEN}-byte limit")]
    TooLarge(usize),
    /// Not one document of the topic's encoding.
    #[error("not a valid {encoding} document: {reason}")]
    Undecodable {
        /// `JSON` or `CBOR`.
        encoding: &'static str,
        /// What the decoder said.
        reason: String,
    },
    /// A document, but not a JSON object / CBOR map.
    #[error("the {0} document is not an object")]
    NotAnObject(&'static str),
    /// A field present with a value it cannot have.
    #[error("field {field} {problem}")]
    Field {
        /// The field as spelled in the answer (`statusDetails.ErrorCode` for a nested one).
        field: String,
        /// What is wrong with its value.
        problem: String,
    },
}

/// Decodes one JSON or CBOR document into a JSON value. CBOR maps keep text keys only;
/// byte strings become `null`, tags their content.
fn decode(payload: &[u8], enc: Encoding) -> Result<Value, String> {
    match enc {
        Encoding::Json => serde_json::from_slice(payload).map_err(|e| e.to_string()),
        Encoding::Cbor => {
            let mut rest = payload;
            let v: ciborium::Value = ciborium::de::from_reader(&mut rest).map_err(|e| match e {
                ciborium::de::Error::Io(e) => format!("truncated ({e})"),
                ciborium::de::Error::Syntax(at) => format!("invalid CBOR at byte {at}"),
                ciborium::de::Error::Semantic(Some(at), msg) => format!("{msg} (at byte {at})"),
                ciborium::de::Error::Semantic(None, msg) => msg,
                ciborium::de::Error::RecursionLimitExceeded => "nested too deep".to_owned(),
            })?;
            if !rest.is_empty() {
                return Err(format!("{} bytes after the document", rest.len()));
            }
            Ok(cbor_to_json(v))
        }
    }
}

fn cbor_to_json(v: ciborium::Value) -> Value {
    use ciborium::Value as C;
    match v {
        C::Integer(i) => {
            let i = i128::from(i);
            if let Ok(u) = u64::try_from(i) {
                Value::from(u)
            } else if let Ok(s) = i64::try_from(i) {
                Value::from(s)
            } else {
                Value::Null
            }
        }
        C::Float(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        C::Text(s) => Value::String(s),
        C::Bool(b) => Value::Bool(b),
        C::Array(a) => Value::Array(a.into_iter().map(cbor_to_json).collect()),
        C::Map(m) => Value::Object(
            m.into_iter()
                .filter_map(|(k, v)| match k {
                    C::Text(k) => Some((k, cbor_to_json(v))),
                    _ => None,
                })
                .collect(),
        ),
        C::Tag(_, inner) => cbor_to_json(*inner),
        _ => Value::Null,
    }
}

/// A positive integer, also written as a string of digits.
fn as_id(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().filter(|&n| n > 0),
        Value::String(s) => s.trim().parse().ok().filter(|&n: &u64| n > 0),
        _ => None,
    }
}

/// Looks up the first of several key spellings; gives the spelling found with the value.
/// `null` counts as absent.
fn field<'a>(
    obj: &'a serde_json::Map<String, Value>,
    keys: &[&str],
) -> Option<(&'a str, &'a Value)> {
    keys.iter()
        .find_map(|k| obj.get_key_value(*k))
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.as_str(), v))
}

/// A value as quoted in an error: JSON text, cut.
fn shown(v: &Value) -> String {
    let t = v.to_string();
    if t.chars().count() > 64 {
        let mut cut: String = t.chars().take(64).collect();
        cut.push('…');
        cut
    } else {
        t
    }
}

fn bad(field: impl Into<String>, problem: String) -> ResponseProblem {
    ResponseProblem::Field {
        field: field.into(),
        problem,
    }
}

/// A text field: a string (cut to [`MAX_TEXT_CHARS`]); absent or `null` is `None`.
fn text(
    obj: &serde_json::Map<String, Value>,
    keys: &[&str],
    parent: &str,
) -> Result<Option<String>, ResponseProblem> {
    match field(obj, keys) {
        None => Ok(None),
        Some((_, Value::String(s))) => Ok(Some(s.chars().take(MAX_TEXT_CHARS).collect())),
        Some((k, v)) => Err(bad(
            format!("{parent}.{k}"),
            format!("is not a string: {}", shown(v)),
        )),
    }
}

/// Parses an answer that arrived on `topic`, an `accepted` (`rejected == false`) or `rejected`
/// topic of encoding `enc`.
pub fn parse_response(
    topic: &str,
    payload: &[u8],
    enc: Encoding,
    rejected: bool,
) -> Result<Response, ResponseError> {
    parse(payload, enc, rejected).map_err(|problem| ResponseError {
        topic: topic.to_owned(),
        problem,
    })
}

fn parse(payload: &[u8], enc: Encoding, rejected: bool) -> Result<Response, ResponseProblem> {
    if payload.len() > MAX_RESPONSE_LEN {
        return Err(ResponseProblem::TooLarge(payload.len()));
    }
    let doc = decode(payload, enc).map_err(|reason| ResponseProblem::Undecodable {
        encoding: enc.name(),
        reason,
    })?;
    let Value::Object(obj) = doc else {
        return Err(ResponseProblem::NotAnObject(enc.name()));
    };
    let report_id = match field(&obj, &["reportId", "report_id", "reportID"]) {
        None => None,
        Some((k, v)) => Some(
            as_id(v).ok_or_else(|| bad(k, format!("is not a positive integer: {}", shown(v))))?,
        ),
    };
    match field(&obj, &["status", "Status"]) {
        None => {}
        Some((k, Value::String(status))) => {
            let says_rejected = status.eq_ignore_ascii_case("REJECTED");
            if !says_rejected && !status.eq_ignore_ascii_case("ACCEPTED") {
                return Err(bad(
                    k,
                    format!(
                        "is {}, neither \"ACCEPTED\" nor \"REJECTED\"",
                        shown(&Value::String(status.clone()))
                    ),
                ));
            }
            if says_rejected != rejected {
                let topic = if rejected {
                    "a rejected"
                } else {
                    "an accepted"
                };
                return Err(bad(k, format!("is {status:?} on {topic} topic")));
            }
        }
        Some((k, v)) => return Err(bad(k, format!("is not a string: {}", shown(v)))),
    }
    if !rejected {
        return Ok(Response::Accepted { report_id });
    }
    let (code, message) = match field(&obj, &["statusDetails", "status_details", "StatusDetails"]) {
        None => (None, None),
        Some((k, Value::Object(d))) => (
            text(d, &["ErrorCode", "errorCode", "error_code"], k)?,
            text(d, &["ErrorMessage", "errorMessage", "error_message"], k)?,
        ),
        Some((k, v)) => return Err(bad(k, format!("is not an object: {}", shown(v)))),
    };
    Ok(Response::Rejected {
        report_id,
        code: code.unwrap_or_else(|| "(none)".to_owned()),
        message: message.unwrap_or_default(),
    })
}

/// Parses an answer received on `topic` and counts it: accepted, rejected by code, matched or
/// not with a report we wait for, or malformed. Shared by every transport.
pub fn record_answer(
    stats: &super::TransportStats,
    awaiting: &mut Awaiting,
    topic: &str,
    payload: &[u8],
    enc: Encoding,
    rejected: bool,
) {
    use super::TransportStats;
    match parse_response(topic, payload, enc, rejected) {
        Err(e) => {
            TransportStats::incr(&stats.malformed_responses);
            tracing::warn!(bytes = payload.len(), error = %e, "Ignoring a Device Defender answer that cannot be understood.");
        }
        Ok(Response::Accepted { report_id }) => {
            TransportStats::incr(&stats.reports_accepted);
            if awaiting.answer(report_id, false) == Outcome::Unmatched {
                TransportStats::incr(&stats.unmatched_responses);
            }
            tracing::debug!(report_id = ?report_id, "Device Defender accepted a report.");
        }
        Ok(Response::Rejected {
            report_id,
            code,
            message,
        }) => {
            stats.count_rejection(&code);
            if awaiting.answer(report_id, true) == Outcome::Unmatched {
                TransportStats::incr(&stats.unmatched_responses);
            }
            tracing::warn!(report_id = ?report_id, code = %code, message = %message, "Device Defender rejected a report.");
        }
    }
}

/// The `header.report_id` (or short `hed.rid`) of an outgoing report, if it has one.
pub fn report_id_of(payload: &[u8], enc: Encoding) -> Option<u64> {
    let Ok(Value::Object(doc)) = decode(payload, enc) else {
        return None;
    };
    let header = match field(&doc, &["header", "hed"])? {
        (_, Value::Object(h)) => h,
        _ => return None,
    };
    field(header, &["report_id", "rid"]).and_then(|(_, v)| as_id(v))
}

/// What an answer meant for the reports we wait for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It answered a report we waited for.
    Matched,
    /// It answered a report we do not wait for (late, duplicate, or someone else's).
    Unmatched,
}

/// Reports published (PUBACKed) and waiting for Device Defender's answer.
#[derive(Debug)]
pub struct Awaiting {
    timeout: Duration,
    /// report id → deadline
    by_id: BTreeMap<u64, Instant>,
}

/// Bound on reports awaited at once; the oldest is given up (and counted unanswered) beyond it.
const MAX_AWAITING: usize = 4096;

impl Awaiting {
    /// Waits `timeout` for each answer.
    pub fn new(timeout: Duration) -> Awaiting {
        Awaiting {
            timeout,
            by_id: BTreeMap::new(),
        }
    }

    /// Starts waiting for the answer to `report_id`. Returns how many waits were given up to
    /// stay within bounds (counted as unanswered by the caller).
    pub fn expect(&mut self, report_id: u64, now: Instant) -> u64 {
        self.by_id.insert(report_id, now + self.timeout);
        let mut evicted = 0;
        while self.by_id.len() > MAX_AWAITING {
            self.by_id.pop_first();
            evicted += 1;
        }
        evicted
    }

    /// Matches an answer. A rejection without a report id is attributed to the oldest report
    /// awaited (answers come in publish order); without any awaited report it is unmatched.
    pub fn answer(&mut self, report_id: Option<u64>, rejected: bool) -> Outcome {
        let removed = match report_id {
            Some(id) => self.by_id.remove(&id).is_some(),
            None if rejected => self.by_id.pop_first().is_some(),
            None => false,
        };
        if removed {
            Outcome::Matched
        } else {
            Outcome::Unmatched
        }
    }

    /// Gives up on every report whose deadline passed; returns their ids.
    pub fn expire(&mut self, now: Instant) -> Vec<u64> {
        let expired: Vec<u64> = self
            .by_id
            .iter()
            .filter(|(_, &d)| d <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in &expired {
            self.by_id.remove(id);
        }
        expired
    }

    /// The earliest deadline, if any report is awaited.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.by_id.values().min().copied()
    }

    /// Number of reports awaited.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// True when no report is awaited.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const ACCEPTED: &str = "$aws/things/gw-0042/defender/metrics/json/accepted";
    const REJECTED: &str = "$aws/things/gw-0042/defender/metrics/json/rejected";
    const CBOR_REJECTED: &str = "$aws/things/gw-0042/defender/metrics/cbor/rejected";

    fn cbor(v: &serde_json::Value) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::ser::into_writer(v, &mut out).unwrap();
        out
    }

    fn problem(topic: &str, payload: &[u8], enc: Encoding, rejected: bool) -> ResponseProblem {
        let e = parse_response(topic, payload, enc, rejected).unwrap_err();
        assert_eq!(e.topic, topic);
        assert!(e.to_string().contains(topic), "{e}");
        e.problem
    }

    #[test]
    fn documented_accepted_answer_parses_in_json_and_cbor() {
        let v = json!({"thingName":"gw-0042","reportId":1_767_225_600_123u64,"status":"ACCEPTED","timestamp":1_767_225_601_877u64});
        let want = Ok(Response::Accepted {
            report_id: Some(1_767_225_600_123),
        });
        assert_eq!(
            parse_response(ACCEPTED, v.to_string().as_bytes(), Encoding::Json, false),
            want
        );
        assert_eq!(
            parse_response(ACCEPTED, &cbor(&v), Encoding::Cbor, false),
            want
        );
    }

    #[test]
    fn documented_rejected_answer_parses_in_json_and_cbor() {
        let v = json!({"thingName":"gw-0042","reportId":1_767_225_600_123u64,"status":"REJECTED",
            "statusDetails":{"ErrorCode":"InvalidPayload","ErrorMessage":"Malformed metrics report"},
            "timestamp":1_767_225_601_877u64});
        let want = Response::Rejected {
            report_id: Some(1_767_225_600_123),
            code: "InvalidPayload".into(),
            message: "Malformed metrics report".into(),
        };
        assert_eq!(
            parse_response(REJECTED, v.to_string().as_bytes(), Encoding::Json, true),
            Ok(want.clone())
        );
        assert_eq!(
            parse_response(CBOR_REJECTED, &cbor(&v), Encoding::Cbor, true),
            Ok(want)
        );
    }

    #[test]
    fn rejection_without_report_id_status_or_details_is_understood() {
        let p = br#"{"status":"REJECTED","statusDetails":{"ErrorCode":"InvalidPayload"}}"#;
        assert_eq!(
            parse_response(REJECTED, p, Encoding::Json, true),
            Ok(Response::Rejected {
                report_id: None,
                code: "InvalidPayload".into(),
                message: String::new()
            })
        );
        assert_eq!(
            parse_response(REJECTED, b"{}", Encoding::Json, true),
            Ok(Response::Rejected {
                report_id: None,
                code: "(none)".into(),
                message: String::new()
            })
        );
        // A numeric string id and another key spelling are tolerated.
        assert_eq!(
            parse_response(ACCEPTED, br#"{"report_id":" 42 "}"#, Encoding::Json, false),
            Ok(Response::Accepted {
                report_id: Some(42)
            })
        );
    }

    #[test]
    fn bad_answers_name_the_topic_and_the_field() {
        let json = |s: &str, rejected: bool| {
            let topic = if rejected { REJECTED } else { ACCEPTED };
            problem(topic, s.as_bytes(), Encoding::Json, rejected)
        };
        let field = |p: ResponseProblem| match p {
            ResponseProblem::Field { field, .. } => field,
            other => panic!("not a field problem: {other}"),
        };
        assert_eq!(field(json(r#"{"reportId": -1}"#, false)), "reportId");
        assert_eq!(field(json(r#"{"reportId": 0}"#, false)), "reportId");
        assert_eq!(field(json(r#"{"reportID": "x1"}"#, false)), "reportID");
        assert_eq!(field(json(r#"{"reportId": 1.5}"#, true)), "reportId");
        assert_eq!(
            field(json(r#"{"status": "MAYBE", "reportId": 1}"#, false)),
            "status"
        );
        assert_eq!(field(json(r#"{"status": 1}"#, false)), "status");
        let p = json(r#"{"status": "REJECTED"}"#, false);
        assert_eq!(
            p.to_string(),
            "field status is \"REJECTED\" on an accepted topic"
        );
        let p = json(r#"{"Status": "ACCEPTED"}"#, true);
        assert_eq!(
            p.to_string(),
            "field Status is \"ACCEPTED\" on a rejected topic"
        );
        assert_eq!(
            field(json(r#"{"statusDetails": "x"}"#, true)),
            "statusDetails"
        );
        let p = json(r#"{"statusDetails": {"ErrorCode": 7}}"#, true);
        assert_eq!(
            p.to_string(),
            "field statusDetails.ErrorCode is not a string: 7"
        );
        assert_eq!(
            field(json(r#"{"statusDetails": {"ErrorMessage": ["a"]}}"#, true)),
            "statusDetails.ErrorMessage"
        );
        assert!(matches!(
            json("[1,2]", false),
            ResponseProblem::NotAnObject("JSON")
        ));
        assert!(matches!(
            json("not json", false),
            ResponseProblem::Undecodable {
                encoding: "JSON",
                ..
            }
        ));
        assert!(matches!(
            problem(CBOR_REJECTED, &[0xff, 0x00], Encoding::Cbor, true),
            ResponseProblem::Undecodable {
                encoding: "CBOR",
                ..
            }
        ));
        let mut trailing = cbor(&json!({"status": "REJECTED"}));
        trailing.push(0);
        let p = problem(CBOR_REJECTED, &trailing, Encoding::Cbor, true);
        assert!(p.to_string().contains("1 bytes after the document"), "{p}");
        let big = vec![b' '; MAX_RESPONSE_LEN + 1];
        assert_eq!(
            problem(ACCEPTED, &big, Encoding::Json, false),
            ResponseProblem::TooLarge(MAX_RESPONSE_LEN + 1)
        );
        let e =
            parse_response(ACCEPTED, br#"{"reportId": true}"#, Encoding::Json, false).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("Device Defender answer on {ACCEPTED}: field reportId is not a positive integer: true")
        );
    }

    #[test]
    fn long_texts_are_cut() {
        let v = json!({"status": "REJECTED", "statusDetails": {"ErrorCode": "C".repeat(5000), "ErrorMessage": "é".repeat(5000)}});
        match parse_response(REJECTED, v.to_string().as_bytes(), Encoding::Json, true) {
            Ok(Response::Rejected { code, message, .. }) => {
                assert_eq!(code.chars().count(), MAX_TEXT_CHARS);
                assert_eq!(message.chars().count(), MAX_TEXT_CHARS);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn report_id_is_found_in_long_and_short_reports() {
        let long = serde_json::json!({"header":{"report_id":17,"version":"1.0"},"metrics":{}});
        let short = serde_json::json!({"hed":{"rid":18,"v":"1.0"},"met":{}});
        assert_eq!(
            report_id_of(long.to_string().as_bytes(), Encoding::Json),
            Some(17)
        );
        assert_eq!(report_id_of(&cbor(&short), Encoding::Cbor), Some(18));
        assert_eq!(report_id_of(b"{}", Encoding::Json), None);
    }

    #[test]
    fn awaiting_matches_expires_and_attributes_anonymous_rejections() {
        let t0 = Instant::now();
        let mut a = Awaiting::new(Duration::from_secs(30));
        a.expect(1, t0);
        a.expect(2, t0 + Duration::from_secs(10));
        a.expect(3, t0 + Duration::from_secs(20));
        assert_eq!(a.answer(Some(2), false), Outcome::Matched);
        assert_eq!(a.answer(Some(2), false), Outcome::Unmatched);
        assert_eq!(a.answer(None, false), Outcome::Unmatched);
        assert_eq!(a.answer(None, true), Outcome::Matched); // oldest: 1
        assert_eq!(a.next_deadline(), Some(t0 + Duration::from_secs(50)));
        assert_eq!(a.expire(t0 + Duration::from_secs(49)), Vec::<u64>::new());
        assert_eq!(a.expire(t0 + Duration::from_secs(50)), vec![3]);
        assert!(a.is_empty());
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            crate::fuzzing::defender_response(&bytes);
        }

        #[test]
        fn near_valid_answers_parse_or_name_a_field(
            id in any::<i128>(), status in "[A-Z]{0,9}", code in ".{0,40}", cut in 0usize..200, rejected: bool,
        ) {
            let code = serde_json::to_string(&code).unwrap();
            let doc = format!(
                r#"{{"thingName":"t","reportId":{id},"status":"{status}","statusDetails":{{"ErrorCode":{code}}},"timestamp":1}}"#
            );
            let bytes = doc.as_bytes();
            let _ = parse_response(REJECTED, &bytes[..cut.min(bytes.len())], Encoding::Json, rejected);
            match parse_response(REJECTED, bytes, Encoding::Json, rejected) {
                Ok(Response::Accepted { report_id }) | Ok(Response::Rejected { report_id, .. }) => {
                    prop_assert_eq!(report_id.map(i128::from), Some(id));
                    prop_assert_eq!(status.as_str(), if rejected { "REJECTED" } else { "ACCEPTED" });
                }
                Err(ResponseError { problem: ResponseProblem::Field { field, .. }, .. }) => {
                    prop_assert!(field == "reportId" || field == "status", "{}", field);
                }
                Err(e) => prop_assert!(false, "{}", e),
            }
        }

        #[test]
        fn any_json_object_with_an_id_is_matched(id in 1u64.., extra in "[a-z]{0,8}") {
            let p = serde_json::json!({"reportId": id, "status": "ACCEPTED", extra: 1}).to_string();
            prop_assert_eq!(parse_response(ACCEPTED, p.as_bytes(), Encoding::Json, false), Ok(Response::Accepted { report_id: Some(id) }));
        }
    }
}
