//! Certificates: key quality, expiry (device and CA), and one certificate used by two agents.
//!
//! Certificates are parsed with `x509-parser`; signatures are not verified (the TLS stack does
//! that when connecting), only what the certificate declares is judged. A PEM bundle may hold
//! several certificates: every one of the CA bundle is checked for expiry; the first one of the
//! device file is the device certificate.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use x509_parser::prelude::*;

use super::{
    Draft, Findings, Severity, CA_CERTIFICATE_EXPIRING, DEVICE_CERTIFICATE_EXPIRED,
    DEVICE_CERTIFICATE_EXPIRING, DEVICE_CERTIFICATE_KEY_QUALITY, DEVICE_CERTIFICATE_SHARED,
    IDENTITY_FILE,
};

const OID_EC_P256: &str = "1.2.840.10045.3.1.7";
const OID_EC_P384: &str = "1.3.132.0.34";
/// Signature algorithms built on broken hashes (MD2, MD5, SHA-1).
const WEAK_SIGNATURES: &[(&str, &str)] = &[
    ("1.2.840.113549.1.1.2", "md2WithRSAEncryption"),
    ("1.2.840.113549.1.1.4", "md5WithRSAEncryption"),
    ("1.2.840.113549.1.1.5", "sha1WithRSAEncryption"),
    ("1.2.840.10045.4.1", "ecdsa-with-SHA1"),
    ("1.2.840.10040.4.3", "dsa-with-sha1"),
];

/// What the audit learned about one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// SHA-256 of the DER, lower-case hex.
    pub fingerprint: String,
    /// Subject, as text.
    pub subject: String,
    /// End of validity, seconds since the UNIX epoch.
    pub not_after: i64,
    /// Key problems found (empty when the key and signature are acceptable).
    pub weaknesses: Vec<String>,
}

/// This agent's identity as written to `<state_dir>/audit-identity.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    /// Thing name.
    pub thing_name: String,
    /// SHA-256 fingerprint of the device certificate.
    pub certificate_fingerprint: String,
}

/// Parses every certificate of a PEM (or a single DER) file.
pub fn parse_bundle(bytes: &[u8]) -> Result<Vec<CertInfo>, String> {
    let mut out = Vec::new();
    if bytes.first() == Some(&0x30) {
        out.push(inspect(bytes)?);
        return Ok(out);
    }
    for (i, pem) in Pem::iter_from_buffer(bytes).enumerate() {
        let pem = pem.map_err(|e| format!("PEM block {}: {e}", i + 1))?;
        if pem.label != "CERTIFICATE" {
            continue;
        }
        out.push(inspect(&pem.contents).map_err(|e| format!("certificate {}: {e}", i + 1))?);
    }
    if out.is_empty() {
        return Err("no CERTIFICATE block".into());
    }
    Ok(out)
}

fn inspect(der: &[u8]) -> Result<CertInfo, String> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| format!("not X.509: {e}"))?;
    let mut weaknesses = Vec::new();
    let spki = cert.public_key();
    match spki.parsed() {
        Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => {
            let bits = rsa.key_size();
            if bits < 2048 {
                weaknesses.push(format!("RSA key of {bits} bits (minimum 2048)"));
            }
        }
        Ok(x509_parser::public_key::PublicKey::EC(_)) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string())
                .unwrap_or_else(|| "unnamed".into());
            if curve != OID_EC_P256 && curve != OID_EC_P384 {
                weaknesses.push(format!(
                    "EC key on curve {curve} (only P-256 and P-384 are accepted)"
                ));
            }
        }
        Ok(x509_parser::public_key::PublicKey::DSA(_)) => {
            weaknesses.push("DSA key (not accepted; use RSA 2048+ or EC P-256/P-384)".into())
        }
        Ok(_) => {}
        Err(e) => weaknesses.push(format!("public key does not parse: {e}")),
    }
    let sig = cert.signature_algorithm.algorithm.to_id_string();
    if let Some((_, name)) = WEAK_SIGNATURES.iter().find(|(oid, _)| *oid == sig) {
        weaknesses.push(format!("signed with {name}"));
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    Ok(CertInfo {
        fingerprint: hex(digest.as_ref()),
        subject: cert.subject().to_string(),
        not_after: cert.validity().not_after.timestamp(),
        weaknesses,
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn load(out: &mut Findings<'_>, check: &str, path: &Path) -> Option<Vec<CertInfo>> {
    let real = out.inputs().path(path);
    let bytes = match std::fs::read(&real) {
        Ok(b) => b,
        Err(e) => {
            out.error(check, path, format!("cannot read the certificate: {e}"));
            return None;
        }
    };
    match parse_bundle(&bytes) {
        Ok(c) => Some(c),
        Err(e) => {
            out.error(check, path, format!("certificate does not parse: {e}"));
            None
        }
    }
}

fn days(secs: i64) -> i64 {
    secs.div_euclid(86_400)
}

fn date(secs: i64) -> String {
    ASN1Time::from_timestamp(secs)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| secs.to_string())
}

/// Runs the certificate checks.
pub fn check(out: &mut Findings<'_>) {
    let inputs = out.inputs();
    let now = (inputs.now_ms / 1000) as i64;
    let warn = inputs.cert_expiry_warning.as_secs() as i64;
    if inputs.cert_file.is_none() {
        for check in [
            DEVICE_CERTIFICATE_KEY_QUALITY,
            DEVICE_CERTIFICATE_EXPIRING,
            DEVICE_CERTIFICATE_EXPIRED,
            DEVICE_CERTIFICATE_SHARED,
        ] {
            out.skip(
                check,
                "no device certificate configured ([mqtt] cert_file or [audit] cert_file)",
            );
        }
    }
    if inputs.ca_file.is_none() {
        out.skip(
            CA_CERTIFICATE_EXPIRING,
            "no CA bundle configured ([mqtt] ca_file or [audit] ca_file)",
        );
    }
    if let Some(path) = inputs.cert_file.clone() {
        if let Some(certs) = load(out, DEVICE_CERTIFICATE_KEY_QUALITY, &path) {
            let c = &certs[0];
            let id = || {
                vec![
                    ("deviceCertificateId", c.fingerprint.clone()),
                    ("path", path.display().to_string()),
                ]
            };
            let info = || {
                vec![
                    ("subject", c.subject.clone()),
                    ("notAfter", date(c.not_after)),
                ]
            };
            if !c.weaknesses.is_empty() {
                out.add(Draft {
                    check: DEVICE_CERTIFICATE_KEY_QUALITY,
                    severity: Severity::Critical,
                    resource_type: "DEVICE_CERTIFICATE",
                    id: id(),
                    info: info(),
                    reason: format!("Device certificate is weak: {}.", c.weaknesses.join("; ")),
                    fix: "Issue a new device certificate with an RSA 2048+ or EC P-256/P-384 key signed with SHA-256 or better, and revoke this one.".into(),
                });
            }
            if c.not_after <= now {
                out.add(Draft {
                    check: DEVICE_CERTIFICATE_EXPIRED,
                    severity: Severity::Critical,
                    resource_type: "DEVICE_CERTIFICATE",
                    id: id(),
                    info: info(),
                    reason: format!(
                        "Device certificate expired on {} ({} days ago).",
                        date(c.not_after),
                        days(now - c.not_after)
                    ),
                    fix: "Rotate the device certificate now; the gateway cannot connect to AWS IoT with it.".into(),
                });
            } else if c.not_after - now <= warn {
                out.add(Draft {
                    check: DEVICE_CERTIFICATE_EXPIRING,
                    severity: Severity::Medium,
                    resource_type: "DEVICE_CERTIFICATE",
                    id: id(),
                    info: info(),
                    reason: format!(
                        "Device certificate expires on {} (in {} days).",
                        date(c.not_after),
                        days(c.not_after - now)
                    ),
                    fix: "Rotate the device certificate before it expires.".into(),
                });
            }
            shared(out, &c.fingerprint);
        }
    }
    if let Some(path) = inputs.ca_file.clone() {
        if let Some(certs) = load(out, CA_CERTIFICATE_EXPIRING, &path) {
            for c in &certs {
                if c.not_after - now > warn {
                    continue;
                }
                let (severity, reason) = if c.not_after <= now {
                    (
                        Severity::High,
                        format!(
                            "CA certificate {} expired on {}.",
                            c.subject,
                            date(c.not_after)
                        ),
                    )
                } else {
                    (
                        Severity::Medium,
                        format!(
                            "CA certificate {} expires on {} (in {} days).",
                            c.subject,
                            date(c.not_after),
                            days(c.not_after - now)
                        ),
                    )
                };
                out.add(Draft {
                    check: CA_CERTIFICATE_EXPIRING,
                    severity,
                    resource_type: "CA_CERTIFICATE",
                    id: vec![
                        ("caCertificateId", c.fingerprint.clone()),
                        ("path", path.display().to_string()),
                    ],
                    info: vec![
                        ("subject", c.subject.clone()),
                        ("notAfter", date(c.not_after)),
                    ],
                    reason,
                    fix: "Install the CA's current certificate in the CA bundle.".into(),
                });
            }
        }
    }
}

/// `DEVICE_CERTIFICATE_SHARED`: another agent's state directory on this host names the same
/// certificate.
fn shared(out: &mut Findings<'_>, fingerprint: &str) {
    let inputs = out.inputs();
    let own = std::fs::canonicalize(inputs.path(&inputs.state_dir)).ok();
    let mut others: Vec<(PathBuf, String)> = Vec::new();
    for dir in &inputs.peer_state_dirs {
        let Ok(rd) = std::fs::read_dir(inputs.path(dir)) else {
            continue;
        };
        for e in rd.filter_map(Result::ok) {
            let real = e.path();
            if own.is_some() && std::fs::canonicalize(&real).ok() == own {
                continue;
            }
            let Ok(bytes) = std::fs::read(real.join(IDENTITY_FILE)) else {
                continue;
            };
            let device = dir.join(e.file_name());
            match serde_json::from_slice::<Identity>(&bytes) {
                Ok(id) if id.certificate_fingerprint == fingerprint => {
                    others.push((device, id.thing_name));
                }
                Ok(_) => {}
                Err(e) => out.error(
                    DEVICE_CERTIFICATE_SHARED,
                    &device.join(IDENTITY_FILE),
                    format!("unreadable identity: {e}"),
                ),
            }
        }
    }
    others.sort();
    if !others.is_empty() {
        let list: Vec<String> = others
            .iter()
            .map(|(d, t)| format!("{} ({t})", d.display()))
            .collect();
        out.add(Draft {
            check: DEVICE_CERTIFICATE_SHARED,
            severity: Severity::Critical,
            resource_type: "DEVICE_CERTIFICATE",
            id: vec![("deviceCertificateId", fingerprint.to_owned())],
            info: vec![("sharedWith", list.join(", "))],
            reason: format!(
                "The device certificate is also used by {} other agent{} on this host.",
                others.len(),
                if others.len() == 1 { "" } else { "s" }
            ),
            fix: "Give every agent its own certificate and thing; a shared certificate lets one impersonate the other.".into(),
        });
    }
}

/// Writes `<state_dir>/audit-identity.json` naming this agent's certificate (best effort).
pub fn write_identity(state_dir: &Path, thing: &str, fingerprint: &str) -> std::io::Result<()> {
    let id = Identity {
        thing_name: thing.to_owned(),
        certificate_fingerprint: fingerprint.to_owned(),
    };
    let tmp = state_dir.join(format!("{IDENTITY_FILE}.tmp"));
    std::fs::write(
        &tmp,
        serde_json::to_vec(&id).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(&tmp, state_dir.join(IDENTITY_FILE))
}

/// The device certificate's fingerprint, when it is readable.
pub fn device_fingerprint(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    parse_bundle(&bytes)
        .ok()?
        .into_iter()
        .next()
        .map(|c| c.fingerprint)
}
