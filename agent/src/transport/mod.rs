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
//! * [`greengrass`]: the same delivery through the Greengrass nucleus's IPC.
//! * [`publisher`]: the [`Publisher`] seam that selects one of the two.
//!
//! # Configuration
//!
//! ```toml
//! [mqtt]
//! endpoint = "abcdefgh12345-ats.iot.eu-west-1.amazonaws.com"  # iot:Data-ATS endpoint; also the SNI name
//! port = 8883                        # or 443: ALPN "x-amzn-mqtt-ca" is then the default
//! ca_file = "/etc/edgewarden/AmazonRootCA1.pem"
//! cert_file = "/etc/edgewarden/device.pem.crt"
//! key_file = "/etc/edgewarden/private.pem.key"  # RSA or EC, PKCS#1/PKCS#8/SEC1; mode 0600 or stricter
//! client_id = "gw-0042"              # default: thing_name
//! keep_alive = "60s"                 # IoT Core accepts 30 s to 20 min
//! alpn = "none"                      # or a protocol name; default depends on port
//! response_timeout = "30s"           # wait for Device Defender's accepted/rejected
//! reconnect_min = "1s"               # first reconnect delay (jittered)
//! reconnect_max = "120s"             # cap of the exponential backoff
//!
//! [spool]
//! max_bytes = "16MiB"                # pending report bytes; the oldest are dropped beyond it
//! max_records = 100000
//! ```
//!
//! [`check_mqtt_files`] validates the files (and the endpoint's resolution) before the first
//! connection attempt; [`run`] refuses to start when the files are unusable.

pub mod greengrass;
pub mod mqtt;
pub mod publisher;
pub mod response;
pub mod session;
pub mod stats;
pub mod tls;

use std::path::PathBuf;

pub use mqtt::{
    run, Backoff, TransportParams, DEFAULT_DRAIN_DEADLINE, DEFAULT_PUBACK_TIMEOUT, PUBLISH_WINDOW,
};
pub use publisher::Publisher;
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
