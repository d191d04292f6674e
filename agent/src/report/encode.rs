//! Encoding reports (long JSON, short JSON, CBOR). Device Defender's answers are parsed by
//! [`crate::transport::response`].
//!
//! CBOR documents use short key names as text strings (never integer keys), definite-length maps
//! and arrays and the smallest integer width, like AWS's own CBOR agents (spec §2.10). CBOR is
//! written with `ciborium`: `serde_cbor` is unmaintained (RUSTSEC-2021-0127), and ciborium
//! writes the same text-keyed maps from the same serde implementations.

use super::defender::{KeyStyle, MetricsReport};
use crate::config::ReportFormat;

/// AWS IoT Core's MQTT payload limit (128 KiB); a larger report is refused by the broker.
pub const MAX_PAYLOAD_BYTES: usize = 131_072;

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
