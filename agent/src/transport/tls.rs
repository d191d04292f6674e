//! TLS for the MQTT connection: loading the device certificate, key and CA bundle, the early
//! checks run before any connection attempt, and operator-readable TLS failure messages.
//!
//! Mutual TLS only, TLS 1.2 and 1.3, rustls with the `ring` provider, server certificates
//! verified against the configured CA bundle, SNI = the configured endpoint.

use std::io;
use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::{AlertDescription, CertificateError, ClientConfig, RootCertStore};

use super::TransportError;
use crate::config::MqttConfig;

/// The crypto provider used for every connection.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The permission bits of a private key file that must be clear (group and others).
const KEY_MODE_FORBIDDEN: u32 = 0o077;

fn read_file(path: &Path, what: &'static str) -> Result<Vec<u8>, TransportError> {
    std::fs::read(path).map_err(|source| TransportError::ReadFile {
        what,
        path: path.to_owned(),
        source,
    })
}

fn pem_error(path: &Path, what: &'static str, detail: impl Into<String>) -> TransportError {
    TransportError::BadPem {
        what,
        path: path.to_owned(),
        detail: detail.into(),
    }
}

/// Parses every certificate of a PEM file.
fn load_certs(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let bytes = read_file(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, what, format!("unreadable PEM: {e}")))?;
    if certs.is_empty() {
        return Err(pem_error(
            path,
            what,
            "no \"BEGIN CERTIFICATE\" block found (is it a PEM file?)",
        ));
    }
    Ok(certs)
}

/// Parses the private key (PKCS#1 RSA, PKCS#8, or SEC1 EC) of a PEM file.
fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TransportError> {
    let bytes = read_file(path, "private key")?;
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(k) => Ok(k),
        Err(pem::Error::NoItemsFound) => Err(pem_error(
            path,
            "private key",
            "no \"BEGIN PRIVATE KEY\", \"BEGIN RSA PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\" block found",
        )),
        Err(e) => Err(pem_error(path, "private key", format!("unreadable PEM: {e}"))),
    }
}

/// Refuses a private key readable by group or others, as the AWS IoT Device Client does.
pub fn check_key_mode(path: &Path) -> Result<(), TransportError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|source| TransportError::ReadFile {
        what: "private key",
        path: path.to_owned(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & KEY_MODE_FORBIDDEN != 0 {
        return Err(TransportError::KeyFileMode {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// The device certificate chain and key, checked to belong together.
fn load_identity(cfg: &MqttConfig) -> Result<CertifiedKey, TransportError> {
    check_key_mode(&cfg.key_file)?;
    let certs = load_certs(&cfg.cert_file, "certificate")?;
    let key = load_key(&cfg.key_file)?;
    let signing_key = provider().key_provider.load_private_key(key).map_err(|e| {
        pem_error(
            &cfg.key_file,
            "private key",
            format!("not a usable RSA or EC (P-256/P-384) key: {e}"),
        )
    })?;
    let certified = CertifiedKey::new(certs, signing_key);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(TransportError::KeyMismatch {
                cert: cfg.cert_file.clone(),
                key: cfg.key_file.clone(),
            })
        }
        // The key type cannot tell its public key: nothing to compare, the handshake will tell.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(certified),
        Err(e) => Err(pem_error(
            &cfg.cert_file,
            "certificate",
            format!("not a valid X.509 certificate: {e}"),
        )),
    }
}

/// The CA bundle the server certificate is verified against.
fn load_roots(path: &Path) -> Result<RootCertStore, TransportError> {
    let certs = load_certs(path, "CA bundle")?;
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(pem_error(
            path,
            "CA bundle",
            format!("none of its {ignored} certificates is a usable CA certificate"),
        ));
    }
    Ok(roots)
}

/// Checks, before any connection attempt, everything about `[mqtt]` that can be known early:
/// the key file's mode, that certificate, key and CA bundle parse as PEM, that the key belongs
/// to the certificate, and that the endpoint resolves. Each error names its file or setting.
///
/// Resolution is checked last and reported as [`TransportError::Resolve`], so a caller that
/// starts at boot before DNS is up can choose to only warn about it.
pub fn check_mqtt_files(cfg: &MqttConfig) -> Result<(), TransportError> {
    load_identity(cfg)?;
    load_roots(&cfg.ca_file)?;
    (cfg.endpoint.as_str(), cfg.port)
        .to_socket_addrs()
        .map_err(|source| TransportError::Resolve {
            endpoint: cfg.endpoint.clone(),
            source,
        })?
        .next()
        .ok_or_else(|| TransportError::Resolve {
            endpoint: cfg.endpoint.clone(),
            source: io::Error::new(io::ErrorKind::NotFound, "no address"),
        })?;
    Ok(())
}

/// Builds the rustls client configuration: TLS 1.2+, the CA bundle as the only trust anchors,
/// the device certificate for client authentication, and ALPN when configured.
pub fn client_config(cfg: &MqttConfig) -> Result<Arc<ClientConfig>, TransportError> {
    let identity = load_identity(cfg)?;
    let roots = load_roots(&cfg.ca_file)?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TransportError::TlsSetup(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(SingleIdentity(Arc::new(identity))));
    config.alpn_protocols = cfg.alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    Ok(Arc::new(config))
}

/// Always offers the device certificate.
#[derive(Debug)]
struct SingleIdentity(Arc<CertifiedKey>);

impl rustls::client::ResolvesClientCert for SingleIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        // Offer the certificate even if the key cannot sign with any offered scheme; the
        // server then fails the handshake with an alert we can report.
        let _ = sigschemes;
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Finds a rustls error in an error chain (also inside `io::Error`s, whose `source()` skips
/// the wrapped error itself).
pub fn find_tls_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(t) = find_tls_error(inner) {
                    return Some(t);
                }
            }
        }
        cur = e.source();
    }
    None
}

/// Files named in TLS failure messages.
#[derive(Debug, Clone)]
pub struct TlsNames {
    /// `[mqtt] endpoint`
    pub endpoint: String,
    /// `[mqtt] ca_file`
    pub ca_file: PathBuf,
    /// `[mqtt] cert_file`
    pub cert_file: PathBuf,
    /// `[mqtt] alpn`
    pub alpn: Option<String>,
}

impl TlsNames {
    /// From the configuration.
    pub fn new(cfg: &MqttConfig) -> TlsNames {
        TlsNames {
            endpoint: cfg.endpoint.clone(),
            ca_file: cfg.ca_file.clone(),
            cert_file: cfg.cert_file.clone(),
            alpn: cfg.alpn.clone(),
        }
    }
}

/// An explanation of a TLS failure for an operator: what was rejected, by whom, and which
/// file or setting to look at.
pub fn describe_tls_error(e: &rustls::Error, n: &TlsNames) -> String {
    let ca = n.ca_file.display();
    let cert = n.cert_file.display();
    let ep = &n.endpoint;
    match e {
        rustls::Error::InvalidCertificate(ce) => match ce {
            CertificateError::UnknownIssuer => format!(
                "the server certificate of {ep} is not issued by a CA in {ca} (wrong ca_file, or not the expected server)"
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => format!(
                "the server certificate of {ep} has expired (or this device's clock is wrong)"
            ),
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => format!(
                "the server certificate of {ep} is not valid yet: check this device's clock"
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("the server certificate is not valid for the name {ep} (check [mqtt] endpoint)")
            }
            CertificateError::Revoked => format!("the server certificate of {ep} is revoked"),
            other => format!("the server certificate of {ep} was rejected: {other:?}"),
        },
        rustls::Error::AlertReceived(alert) => match alert {
            AlertDescription::CertificateExpired => format!(
                "the broker rejected this device's certificate {cert}: it has expired (or is not valid yet)"
            ),
            AlertDescription::UnknownCA => format!(
                "the broker does not trust the issuer of this device's certificate {cert} (unknown or unregistered device certificate)"
            ),
            AlertDescription::CertificateRevoked => format!(
                "the broker rejected this device's certificate {cert}: it is revoked"
            ),
            AlertDescription::BadCertificate
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::AccessDenied => format!(
                "the broker rejected this device's certificate {cert} ({alert:?}): it is unknown, inactive or revoked"
            ),
            AlertDescription::CertificateRequired => format!(
                "the broker requires a client certificate but did not accept {cert}"
            ),
            AlertDescription::NoApplicationProtocol => format!(
                "the broker does not accept the ALPN protocol {:?} (check [mqtt] alpn and port)",
                n.alpn.as_deref().unwrap_or("none")
            ),
            AlertDescription::HandshakeFailure | AlertDescription::ProtocolVersion => format!(
                "TLS handshake with {ep} failed ({alert:?}): no common TLS version or cipher suite, or the client certificate was refused"
            ),
            other => format!("the broker ended the TLS handshake with alert {other:?}"),
        },
        rustls::Error::NoCertificatesPresented => format!("{ep} presented no server certificate"),
        other => format!("TLS failure with {ep}: {other}"),
    }
}

#[cfg(test)]
mod tests;
