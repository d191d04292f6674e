//! Encoding reports (long JSON, short JSON, CBOR) and decoding Device Defender's responses.
//!
//! CBOR documents use short key names as text strings (never integer keys), definite-length maps
//! and arrays and the smallest integer width, like AWS's own CBOR agents (spec §2.10). CBOR is
//! written with `ciborium`: `serde_cbor` is unmaintained (RUSTSEC-2021-0127), and ciborium
//! writes the same text-keyed maps from the same serde implementations.

use std::fmt;

use super::defender::{
    DefenderResponse, KeyStyle, MetricsReport, RawResponse, ResponseStatus, STATUS_ACCEPTED,
    STATUS_REJECTED,
};
use crate::config::ReportFormat;

/// AWS IoT Core's MQTT payload limit (128 KiB); a larger report is refused by the broker.
pub const MAX_PAYLOAD_BYTES: usize = 131_072;

/// Largest response accepted by [`parse_response`]. Real responses are about 200 bytes.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024;

/// Longest `thingName` (Device Defender's own limit, in bytes).
const MAX_THING_NAME: usize = 128;
/// Longest `ErrorCode` kept.
const MAX_ERROR_CODE: usize = 128;
/// `ErrorMessage` is cut to this many bytes.
const MAX_ERROR_MESSAGE: usize = 1024;

/// The key names `format` uses.
pub const fn key_style(format: ReportFormat) -> KeyStyle {
    match format {
        ReportFormat::Json => KeyStyle::Long,
        ReportFormat::JsonShort | ReportFormat::Cbor => KeyStyle::Short,
    }
}

/// Encodes a report: compact long-name JSON, compact short-name JSON, or short-name CBOR.
pub fn encode(report: &MetricsReport, format: ReportFormat) -> Vec<u8> {
    let doc = report.keyed(key_style(format));
    match format {
        ReportFormat::Json | ReportFormat::JsonShort => serde_json::to_vec(&doc)
            .expect("report types serialize only string keys and finite numbers"),
        ReportFormat::Cbor => {
            let mut out = Vec::with_capacity(1024);
            ciborium::into_writer(&doc, &mut out)
                .expect("writing CBOR into a Vec cannot fail for report types");
            out
        }
    }
}

/// Like [`encode`], with JSON indented for people (CBOR is returned as [`encode`] makes it).
pub fn encode_pretty(report: &MetricsReport, format: ReportFormat) -> Vec<u8> {
    let doc = report.keyed(key_style(format));
    match format {
        ReportFormat::Json | ReportFormat::JsonShort => serde_json::to_vec_pretty(&doc)
            .expect("report types serialize only string keys and finite numbers"),
        ReportFormat::Cbor => encode(report, format),
    }
}

/// Why a response payload was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResponseError {
    /// The payload is larger than [`MAX_RESPONSE_BYTES`].
    TooLarge {
        /// Payload length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not a JSON object / CBOR map of the response shape.
    Malformed {
        /// `json` or `cbor`.
        encoding: &'static str,
        /// What the decoder said.
        reason: String,
    },
    /// No `status` field.
    MissingStatus,
    /// `status` is neither `ACCEPTED` nor `REJECTED`.
    UnknownStatus(String),
    /// An acceptance without `reportId` cannot be matched to a report.
    AcceptedWithoutReportId,
    /// A string field is longer than allowed.
    FieldTooLong {
        /// Wire name of the field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
}

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResponseError::TooLarge { len, max } => {
                write!(f, "response of {len} bytes exceeds the {max}-byte limit")
            }
            ResponseError::Malformed { encoding, reason } => {
                write!(f, "malformed {encoding} response: {reason}")
            }
            ResponseError::MissingStatus => write!(f, "response has no \"status\" field"),
            ResponseError::UnknownStatus(s) => write!(
                f,
                "response status {s:?} is neither \"ACCEPTED\" nor \"REJECTED\""
            ),
            ResponseError::AcceptedWithoutReportId => {
                write!(f, "accepted response has no \"reportId\"")
            }
            ResponseError::FieldTooLong { field, len, max } => {
                write!(
                    f,
                    "response field {field:?} is {len} bytes long (limit {max})"
                )
            }
        }
    }
}

impl std::error::Error for ResponseError {}

/// Decodes an accepted/rejected response (spec §3.1–§3.2) received on the `json` or `cbor`
/// response topic of `format`.
///
/// Tolerant where the service is known to vary: a rejection may lack `reportId`,
/// `statusDetails`, `thingName` and `timestamp`; unknown fields are ignored. Refuses oversized
/// payloads, payloads that are not a single JSON object / CBOR map, and wrong field types. Never
/// panics, whatever the input.
pub fn parse_response(
    payload: &[u8],
    format: ReportFormat,
) -> Result<DefenderResponse, ResponseError> {
    if payload.len() > MAX_RESPONSE_BYTES {
        return Err(ResponseError::TooLarge {
            len: payload.len(),
            max: MAX_RESPONSE_BYTES,
        });
    }
    let raw: RawResponse = match format {
        ReportFormat::Json | ReportFormat::JsonShort => {
            serde_json::from_slice(payload).map_err(|e| ResponseError::Malformed {
                encoding: "json",
                reason: e.to_string(),
            })?
        }
        ReportFormat::Cbor => {
            let mut rest = payload;
            let raw = ciborium::from_reader(&mut rest).map_err(|e| ResponseError::Malformed {
                encoding: "cbor",
                reason: cbor_error(e),
            })?;
            if !rest.is_empty() {
                return Err(ResponseError::Malformed {
                    encoding: "cbor",
                    reason: format!("{} trailing bytes after the response map", rest.len()),
                });
            }
            raw
        }
    };
    from_raw(raw)
}

fn cbor_error(e: ciborium::de::Error<std::io::Error>) -> String {
    match e {
        ciborium::de::Error::Io(e) => format!("truncated input ({e})"),
        ciborium::de::Error::Syntax(at) => format!("invalid CBOR at byte {at}"),
        ciborium::de::Error::Semantic(at, msg) => match at {
            Some(at) => format!("{msg} (at byte {at})"),
            None => msg,
        },
        ciborium::de::Error::RecursionLimitExceeded => "nesting too deep".to_owned(),
    }
}

fn from_raw(raw: RawResponse) -> Result<DefenderResponse, ResponseError> {
    if let Some(t) = &raw.thing_name {
        check_len("thingName", t, MAX_THING_NAME)?;
    }
    let status = match raw.status.as_deref() {
        None => return Err(ResponseError::MissingStatus),
        Some(STATUS_ACCEPTED) => {
            if raw.report_id.is_none() {
                return Err(ResponseError::AcceptedWithoutReportId);
            }
            ResponseStatus::Accepted
        }
        Some(STATUS_REJECTED) => {
            let (code, message) = match raw.status_details {
                Some(d) => (d.error_code, d.error_message),
                None => (None, None),
            };
            if let Some(c) = &code {
                check_len("ErrorCode", c, MAX_ERROR_CODE)?;
            }
            ResponseStatus::Rejected {
                error_code: code,
                error_message: message.map(|m| cut(m, MAX_ERROR_MESSAGE)),
            }
        }
        Some(other) => {
            return Err(ResponseError::UnknownStatus(cut(
                other.to_owned(),
                MAX_ERROR_CODE,
            )))
        }
    };
    Ok(DefenderResponse {
        thing_name: raw.thing_name,
        report_id: raw.report_id,
        status,
        timestamp: raw.timestamp,
    })
}

fn check_len(field: &'static str, s: &str, max: usize) -> Result<(), ResponseError> {
    if s.len() > max {
        Err(ResponseError::FieldTooLong {
            field,
            len: s.len(),
            max,
        })
    } else {
        Ok(())
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary.
fn cut(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}
