//! Device Defender answers: a small tolerant parser, the report id of an outgoing report, and
//! the correlation of answers with published reports.
//!
//! The parser accepts what the service documents (`reportId`, `status`, `statusDetails` with
//! `ErrorCode`/`ErrorMessage`) and tolerates what it does not promise: a missing `reportId`, a
//! numeric string id, other key casings, extra fields. Anything else is "malformed" and
//! counted; nothing a peer sends can make it panic or allocate without bound.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

/// Answers larger than this are not parsed (real ones are about 200 bytes).
pub const MAX_RESPONSE_LEN: usize = 16 * 1024;

/// Encoding of a topic's payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `…/json…`
    Json,
    /// `…/cbor…`
    Cbor,
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

/// Why an answer was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// Larger than [`MAX_RESPONSE_LEN`].
    #[error("answer of {0} bytes is larger than {MAX_RESPONSE_LEN} bytes")]
    TooLarge(usize),
    /// Not a JSON object / CBOR map.
    #[error("answer is not a {0} object")]
    NotAnObject(&'static str),
    /// `status` contradicts the topic.
    #[error("answer status {0:?} contradicts its topic")]
    StatusMismatch(String),
}

/// Decodes a JSON or CBOR document into a JSON value. CBOR maps keep text keys only;
/// byte strings and tags become `null`.
fn decode(payload: &[u8], enc: Encoding) -> Option<Value> {
    match enc {
        Encoding::Json => serde_json::from_slice(payload).ok(),
        Encoding::Cbor => {
            let v: ciborium::Value = ciborium::de::from_reader(payload).ok()?;
            Some(cbor_to_json(v))
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

/// Looks up the first of several key spellings.
fn field<'a>(obj: &'a serde_json::Map<String, Value>, keys: &[&str]) -> Option<&'a Value> {
    keys.iter().find_map(|k| obj.get(*k))
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.chars().take(512).collect()),
        Value::Null => None,
        other => Some(other.to_string().chars().take(512).collect()),
    }
}

/// Parses an answer that arrived on an `accepted` (`rejected == false`) or `rejected` topic.
pub fn parse_response(
    payload: &[u8],
    enc: Encoding,
    rejected: bool,
) -> Result<Response, ResponseError> {
    if payload.len() > MAX_RESPONSE_LEN {
        return Err(ResponseError::TooLarge(payload.len()));
    }
    let kind = match enc {
        Encoding::Json => "JSON",
        Encoding::Cbor => "CBOR",
    };
    let Some(Value::Object(obj)) = decode(payload, enc) else {
        return Err(ResponseError::NotAnObject(kind));
    };
    let report_id = field(&obj, &["reportId", "report_id", "reportID"]).and_then(as_id);
    if let Some(status) = text(field(&obj, &["status", "Status"])) {
        let says_rejected = status.eq_ignore_ascii_case("REJECTED");
        let says_accepted = status.eq_ignore_ascii_case("ACCEPTED");
        if (rejected && says_accepted) || (!rejected && says_rejected) {
            return Err(ResponseError::StatusMismatch(status));
        }
    }
    if !rejected {
        return Ok(Response::Accepted { report_id });
    }
    let details = match field(&obj, &["statusDetails", "status_details", "StatusDetails"]) {
        Some(Value::Object(d)) => Some(d),
        _ => None,
    };
    let code = details
        .and_then(|d| text(field(d, &["ErrorCode", "errorCode", "error_code"])))
        .unwrap_or_else(|| "(none)".to_owned());
    let message = details
        .and_then(|d| text(field(d, &["ErrorMessage", "errorMessage", "error_message"])))
        .unwrap_or_default();
    Ok(Response::Rejected {
        report_id,
        code,
        message,
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
    match parse_response(payload, enc, rejected) {
        Err(e) => {
            TransportStats::incr(&stats.malformed_responses);
            tracing::warn!(topic, bytes = payload.len(), error = %e, "Ignoring a Device Defender answer that cannot be understood.");
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
    let Value::Object(doc) = decode(payload, enc)? else {
        return None;
    };
    let header = match field(&doc, &["header", "hed"])? {
        Value::Object(h) => h,
        _ => return None,
    };
    field(header, &["report_id", "rid"]).and_then(as_id)
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

    fn cbor(v: &serde_json::Value) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::ser::into_writer(v, &mut out).unwrap();
        out
    }

    #[test]
    fn documented_accepted_answer_parses() {
        let p = br#"{"thingName":"gw-0042","reportId":1767225600123,"status":"ACCEPTED","timestamp":1767225601877}"#;
        assert_eq!(
            parse_response(p, Encoding::Json, false),
            Ok(Response::Accepted {
                report_id: Some(1767225600123)
            })
        );
    }

    #[test]
    fn documented_rejected_answer_parses_in_json_and_cbor() {
        let v = serde_json::json!({"thingName":"gw-0042","reportId":1767225600123u64,"status":"REJECTED",
            "statusDetails":{"ErrorCode":"InvalidPayload","ErrorMessage":"Malformed metrics report"},
            "timestamp":1767225601877u64});
        let want = Response::Rejected {
            report_id: Some(1767225600123),
            code: "InvalidPayload".into(),
            message: "Malformed metrics report".into(),
        };
        assert_eq!(
            parse_response(v.to_string().as_bytes(), Encoding::Json, true),
            Ok(want.clone())
        );
        assert_eq!(parse_response(&cbor(&v), Encoding::Cbor, true), Ok(want));
    }

    #[test]
    fn rejection_without_report_id_is_accepted() {
        let p = br#"{"status":"REJECTED","statusDetails":{"ErrorCode":"InvalidPayload"}}"#;
        assert_eq!(
            parse_response(p, Encoding::Json, true),
            Ok(Response::Rejected {
                report_id: None,
                code: "InvalidPayload".into(),
                message: String::new()
            })
        );
    }

    #[test]
    fn garbage_and_oversized_answers_are_errors() {
        assert!(parse_response(b"not json", Encoding::Json, false).is_err());
        assert!(parse_response(b"[1,2]", Encoding::Json, false).is_err());
        assert!(parse_response(&[0xff, 0x00], Encoding::Cbor, false).is_err());
        let big = vec![b' '; MAX_RESPONSE_LEN + 1];
        assert_eq!(
            parse_response(&big, Encoding::Json, false),
            Err(ResponseError::TooLarge(MAX_RESPONSE_LEN + 1))
        );
        assert!(matches!(
            parse_response(br#"{"status":"REJECTED"}"#, Encoding::Json, false),
            Err(ResponseError::StatusMismatch(_))
        ));
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
        fn parsing_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), rej: bool) {
            let _ = parse_response(&bytes, Encoding::Json, rej);
            let _ = parse_response(&bytes, Encoding::Cbor, rej);
            let _ = report_id_of(&bytes, Encoding::Json);
            let _ = report_id_of(&bytes, Encoding::Cbor);
        }

        #[test]
        fn any_json_object_with_an_id_is_matched(id in 1u64.., extra in "[a-z]{0,8}") {
            let p = serde_json::json!({"reportId": id, "status": "ACCEPTED", extra: 1}).to_string();
            prop_assert_eq!(parse_response(p.as_bytes(), Encoding::Json, false), Ok(Response::Accepted { report_id: Some(id) }));
        }
    }
}
