//! Streaming anomaly detection for gateway metrics.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
