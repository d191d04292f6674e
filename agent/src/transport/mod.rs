//! Delivery of spooled records to AWS IoT Core (or any MQTT broker) over mutual TLS.
//!
//! * [`mqtt`]: the connection loop ([`run`]): rumqttc (MQTT 3.1.1) over rustls, reconnect with
//!   capped exponential backoff and jitter, QoS 1 publishes of spooled records oldest first,
//!   spool acknowledgement on PUBACK, the Device Defender accepted/rejected exchange, and
//!   authorization error accounting.
//! * [`session`]: per-session packet-id ↔ spool-id bindings, no I/O.
//! * [`response`]: the tolerant parser of Device Defender answers and their correlation.
//! * [`tls`]: certificate, key and CA loading, early checks, TLS failure messages.
//! * [`stats`]: counters, exported as custom metrics.

pub mod mqtt;
pub mod response;
pub mod session;
pub mod stats;
pub mod tls;

use std::path::PathBuf;

pub use mqtt::{run, Backoff, TransportParams, DEFAULT_DRAIN_DEADLINE, PUBLISH_WINDOW};
pub use stats::TransportStats;
pub use tls::check_mqtt_files;

/// Transport failures that stop it (configuration problems); connection problems never do:
/// they are counted, logged and retried.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// A certificate, key or CA file cannot be read.
    #[error("[mqtt] {what} file {}: {source}", path.display())]
    ReadFile {
        /// Which file (`certificate`, `private key`, `CA bundle`).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not the PEM it should be.
    #[error("[mqtt] {what} file {}: {detail}", path.display())]
    BadPem {
        /// Which file.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The private key is readable by group or others.
    #[error("[mqtt] private key file {} has mode {mode:04o}: it must not be readable by group or others (run: chmod 600 {})", path.display(), path.display())]
    KeyFileMode {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The private key does not belong to the certificate.
    #[error("[mqtt] private key {} does not match certificate {}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The endpoint does not resolve.
    #[error("[mqtt] endpoint {endpoint:?} does not resolve: {source}")]
    Resolve {
        /// The configured endpoint.
        endpoint: String,
        /// The resolver error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS configuration could not be built.
    #[error("[mqtt] TLS setup: {0}")]
    TlsSetup(String),
}
