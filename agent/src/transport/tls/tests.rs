//! Key, certificate and CA checks with keys of every supported encoding, made by `openssl`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::*;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed certificate `name.crt` with key `name.key` (PKCS#8) of the given kind.
fn self_signed(dir: &Path, name: &str, rsa: bool) -> (PathBuf, PathBuf) {
    let key = format!("{name}.key");
    let crt = format!("{name}.crt");
    let newkey: &[&str] = if rsa {
        &["-newkey", "rsa:2048"]
    } else {
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    };
    let mut args = vec![
        "req",
        "-x509",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=localhost",
    ];
    args.extend_from_slice(newkey);
    args.extend_from_slice(&["-keyout", &key, "-out", &crt]);
    openssl(dir, &args);
    let key = dir.join(key);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    (dir.join(crt), key)
}

fn cfg(ca: &Path, cert: &Path, key: &Path) -> MqttConfig {
    MqttConfig {
        endpoint: "localhost".into(),
        port: 8883,
        ca_file: ca.to_owned(),
        cert_file: cert.to_owned(),
        key_file: key.to_owned(),
        client_id: "gw-1".into(),
        keep_alive: Duration::from_secs(60),
        alpn: None,
        response_timeout: Duration::from_secs(30),
        reconnect_min: Duration::from_secs(1),
        reconnect_max: Duration::from_secs(60),
    }
}

#[test]
fn rsa_and_ec_keys_in_every_pem_encoding_are_accepted() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let (rsa_crt, rsa_key) = self_signed(dir, "rsa", true);
    let (ec_crt, ec_key) = self_signed(dir, "ec", false);
    openssl(
        dir,
        &["rsa", "-in", "rsa.key", "-traditional", "-out", "rsa1.key"],
    );
    openssl(dir, &["ec", "-in", "ec.key", "-out", "sec1.key"]);
    for k in ["rsa1.key", "sec1.key"] {
        std::fs::set_permissions(dir.join(k), std::fs::Permissions::from_mode(0o400)).unwrap();
    }
    assert!(std::fs::read_to_string(dir.join("rsa1.key"))
        .unwrap()
        .contains("BEGIN RSA PRIVATE KEY"));
    assert!(std::fs::read_to_string(dir.join("sec1.key"))
        .unwrap()
        .contains("BEGIN EC PRIVATE KEY"));
    for (crt, key) in [
        (&rsa_crt, rsa_key.clone()),
        (&rsa_crt, dir.join("rsa1.key")),
        (&ec_crt, ec_key.clone()),
        (&ec_crt, dir.join("sec1.key")),
    ] {
        let c = cfg(&rsa_crt, crt, &key);
        check_mqtt_files(&c).unwrap_or_else(|e| panic!("{}: {e}", key.display()));
        client_config(&c).unwrap();
    }
}

#[test]
fn group_or_world_readable_key_is_refused_naming_file_and_mode() {
    let d = tempfile::tempdir().unwrap();
    let (crt, key) = self_signed(d.path(), "dev", false);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = check_mqtt_files(&cfg(&crt, &crt, &key)).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, TransportError::KeyFileMode { mode: 0o640, .. }),
        "{msg}"
    );
    assert!(
        msg.contains(&key.display().to_string()) && msg.contains("0640"),
        "{msg}"
    );
}

#[test]
fn key_of_another_certificate_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let (crt, _) = self_signed(d.path(), "a", false);
    let (_, other_key) = self_signed(d.path(), "b", false);
    let err = check_mqtt_files(&cfg(&crt, &crt, &other_key)).unwrap_err();
    assert!(matches!(err, TransportError::KeyMismatch { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("a.crt") && msg.contains("b.key"), "{msg}");
}

#[test]
fn files_that_are_not_pem_are_named() {
    let d = tempfile::tempdir().unwrap();
    let (crt, key) = self_signed(d.path(), "dev", true);
    let junk = d.path().join("junk.pem");
    std::fs::write(&junk, "hello, not a certificate\n").unwrap();

    let err = check_mqtt_files(&cfg(&junk, &crt, &key)).unwrap_err();
    assert!(
        matches!(&err, TransportError::BadPem { what: "CA bundle", path, .. } if path == &junk),
        "{err}"
    );
    let err = check_mqtt_files(&cfg(&crt, &junk, &key)).unwrap_err();
    assert!(
        matches!(
            &err,
            TransportError::BadPem {
                what: "certificate",
                ..
            }
        ),
        "{err}"
    );
    std::fs::set_permissions(&junk, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = check_mqtt_files(&cfg(&crt, &crt, &junk)).unwrap_err();
    assert!(
        matches!(
            &err,
            TransportError::BadPem {
                what: "private key",
                ..
            }
        ),
        "{err}"
    );
    // A certificate block whose content is not a certificate.
    let bad = d.path().join("bad.crt");
    std::fs::write(
        &bad,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let err = check_mqtt_files(&cfg(&crt, &bad, &key)).unwrap_err();
    assert!(err.to_string().contains("bad.crt"), "{err}");
    let missing = d.path().join("missing.pem");
    let err = check_mqtt_files(&cfg(&missing, &crt, &key)).unwrap_err();
    assert!(err.to_string().contains("missing.pem"), "{err}");
}

#[test]
fn unresolvable_endpoint_is_named() {
    let d = tempfile::tempdir().unwrap();
    let (crt, key) = self_signed(d.path(), "dev", false);
    let mut c = cfg(&crt, &crt, &key);
    c.endpoint = "no-such-host.invalid".into();
    let err = check_mqtt_files(&c).unwrap_err();
    assert!(matches!(err, TransportError::Resolve { .. }), "{err}");
    assert!(err.to_string().contains("no-such-host.invalid"));
}

#[test]
fn tls_errors_are_found_inside_io_errors_and_explained() {
    let inner = rustls::Error::AlertReceived(AlertDescription::CertificateExpired);
    let io = io::Error::new(io::ErrorKind::InvalidData, inner);
    let wrapped = rumqttc::ConnectionError::Io(io);
    let found = find_tls_error(&wrapped).expect("found");
    let names = TlsNames {
        endpoint: "broker".into(),
        ca_file: "/etc/ca.pem".into(),
        cert_file: "/etc/dev.crt".into(),
        alpn: None,
    };
    let msg = describe_tls_error(found, &names);
    assert!(
        msg.contains("/etc/dev.crt") && msg.contains("expired"),
        "{msg}"
    );
    let msg = describe_tls_error(
        &rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        &names,
    );
    assert!(msg.contains("/etc/ca.pem"), "{msg}");
}

#[test]
fn client_config_offers_tls12_and_13_and_the_configured_alpn() {
    let d = tempfile::tempdir().unwrap();
    let (crt, key) = self_signed(d.path(), "dev", false);
    let mut c = cfg(&crt, &crt, &key);
    c.port = 443;
    c.alpn = Some("x-amzn-mqtt-ca".into());
    let tls = client_config(&c).unwrap();
    assert_eq!(tls.alpn_protocols, vec![b"x-amzn-mqtt-ca".to_vec()]);
    assert!(tls.enable_sni, "SNI carries the endpoint name");
    c.alpn = None;
    assert!(client_config(&c).unwrap().alpn_protocols.is_empty());
}
