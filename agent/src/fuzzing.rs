//! Entry points for the fuzz targets in `agent/fuzz/` (one line each, e.g.
//! `fuzz_target!(|d: &[u8]| edgewarden::fuzzing::defender_response(d));`). Not a public API.

use crate::config::ReportFormat;

/// Decodes `data` as a Device Defender response in JSON and in CBOR; must never panic.
pub fn defender_response(data: &[u8]) {
    for format in [ReportFormat::Json, ReportFormat::Cbor] {
        // Only the absence of a panic matters here.
        let _ = crate::report::parse_response(data, format);
    }
}
