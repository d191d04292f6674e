//! Entry points for the cargo-fuzz targets in `agent/fuzz/` (not a stable API).

/// One arbitrary log line through framing, classification and the full per-line analysis.
pub fn log_line(data: &[u8]) {
    let f = crate::logs::frame(data);
    let _ = crate::logs::classify(&f.msg);
    let mut a = crate::logs::Analyzer::new(crate::logs::Rules::default());
    let mut s = crate::logs::Stream::new();
    for line in data.split(|&b| b == b'\n') {
        let _ = a.line(&mut s, line, 1_800_000_000_000);
    }
}
