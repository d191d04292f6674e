//! Fixture trees for every check, passing and failing. Certificates are generated here with
//! rcgen; "now" is fixed at 2030-01-01 so that validity dates are fixed too.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;

use super::*;

/// 2030-01-01T00:00:00Z in ms.
const NOW_MS: u64 = 1_893_456_000_000;

struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    /// A tree with a readable authentication log, so that only what a test adds is judged.
    fn new() -> Tree {
        let t = Tree {
            dir: tempfile::tempdir().unwrap(),
        };
        t.write("/var/log/auth.log", "");
        t
    }
    fn root(&self) -> &Path {
        self.dir.path()
    }
    fn write(&self, device_path: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let p = self.root().join(device_path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        p
    }
    fn chmod(&self, device_path: &str, mode: u32) {
        let p = self.root().join(device_path.trim_start_matches('/'));
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    fn mkdir(&self, device_path: &str) {
        std::fs::create_dir_all(self.root().join(device_path.trim_start_matches('/'))).unwrap();
    }
    /// Inputs with nothing configured: each test turns on what it looks at.
    fn inputs(&self) -> AuditInputs {
        AuditInputs {
            root: self.root().to_owned(),
            thing_name: "gw-test".into(),
            client_id: None,
            now_ms: NOW_MS,
            cert_expiry_warning: Duration::from_secs(30 * 86_400),
            cert_file: None,
            key_file: None,
            ca_file: None,
            service_user: None,
            sshd_test: false,
            mosquitto_config: "/etc/mosquitto/mosquitto.conf".into(),
            log_files: vec!["/var/log/auth.log".into()],
            journal: false,
            config_file: None,
            state_dir: "/var/lib/edgewarden".into(),
            binary: None,
            peer_state_dirs: Vec::new(),
            sessions: None,
        }
    }
}

fn checks(r: &AuditReport) -> Vec<(&str, Severity)> {
    r.findings
        .iter()
        .map(|f| (f.check_name.as_str(), f.severity))
        .collect()
}

fn only(r: &AuditReport, check: &str) -> Vec<Finding> {
    r.findings
        .iter()
        .filter(|f| f.check_name == check)
        .cloned()
        .collect()
}

// ---- certificates ----------------------------------------------------------------------------

/// An RSA "key" for rcgen: rcgen (through ring) cannot generate RSA keys nor sign with keys under
/// 2048 bits, and the audit never verifies signatures, so the public key is a well-formed
/// RSAPublicKey of the wanted size and the signature is filler.
struct FakeRsa {
    public: Vec<u8>,
    bits: usize,
}

impl FakeRsa {
    fn new(bits: usize) -> FakeRsa {
        let n_len = bits / 8;
        let mut modulus = vec![0x00, 0xC3];
        modulus.extend(std::iter::repeat_n(0x5A, n_len - 1));
        let mut int = vec![0x02];
        int.extend(der_len(modulus.len()));
        int.extend(&modulus);
        int.extend([0x02, 0x03, 0x01, 0x00, 0x01]);
        let mut seq = vec![0x30];
        seq.extend(der_len(int.len()));
        seq.extend(int);
        FakeRsa { public: seq, bits }
    }
}

fn der_len(n: usize) -> Vec<u8> {
    if n < 0x80 {
        vec![n as u8]
    } else if n < 0x100 {
        vec![0x81, n as u8]
    } else {
        vec![0x82, (n >> 8) as u8, n as u8]
    }
}

impl rcgen::RemoteKeyPair for FakeRsa {
    fn public_key(&self) -> &[u8] {
        &self.public
    }
    fn sign(&self, _msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        Ok(vec![0x11; self.bits / 8])
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_RSA_SHA256
    }
}

fn params(not_after: (i32, u8, u8)) -> rcgen::CertificateParams {
    let mut p = rcgen::CertificateParams::new(vec!["gw-test".into()]).unwrap();
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
    p
}

/// A P-256 certificate valid until `not_after`.
fn ec_cert(not_after: (i32, u8, u8)) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    params(not_after).self_signed(&key).unwrap().pem()
}

/// An RSA certificate of `bits` bits, valid until 2040.
fn rsa_cert_der(bits: usize) -> Vec<u8> {
    let key = rcgen::KeyPair::from_remote(Box::new(FakeRsa::new(bits))).unwrap();
    params((2040, 1, 1))
        .self_signed(&key)
        .unwrap()
        .der()
        .to_vec()
}

fn pem(der: &[u8]) -> String {
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for chunk in der.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    let body: Vec<String> = s
        .as_bytes()
        .chunks(64)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        body.join("\n")
    )
}

/// sha256WithRSAEncryption → sha1WithRSAEncryption in both AlgorithmIdentifiers (rcgen has no
/// SHA-1 signer; the audit judges the declared algorithm, so the OID is all that matters).
fn as_sha1(mut der: Vec<u8>) -> Vec<u8> {
    let sha256 = [
        0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x0B,
    ];
    let mut patched = 0;
    let mut i = 0;
    while i + sha256.len() <= der.len() {
        if der[i..i + sha256.len()] == sha256 {
            der[i + sha256.len() - 1] = 0x05;
            patched += 1;
        }
        i += 1;
    }
    assert_eq!(patched, 2, "both signature AlgorithmIdentifiers patched");
    der
}

fn with_cert(t: &Tree, pem_text: &str) -> AuditInputs {
    t.write("/etc/edgewarden/cert.pem", pem_text);
    let mut i = t.inputs();
    i.cert_file = Some("/etc/edgewarden/cert.pem".into());
    i
}

#[test]
fn valid_p256_certificate_passes_every_certificate_check() {
    let t = Tree::new();
    let r = run(&with_cert(&t, &ec_cert((2035, 1, 1))));
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
}

#[test]
fn rsa_1024_certificate_is_weak_and_rsa_2048_is_not() {
    let t = Tree::new();
    let r = run(&with_cert(&t, &pem(&rsa_cert_der(1024))));
    let f = only(&r, DEVICE_CERTIFICATE_KEY_QUALITY);
    assert_eq!(f.len(), 1, "{:?}", r.findings);
    assert_eq!(f[0].severity, Severity::Critical);
    assert!(
        f[0].reason_for_non_compliance
            .contains("RSA key of 1024 bits"),
        "{}",
        f[0].reason_for_non_compliance
    );
    assert_eq!(f[0].resource.resource_type, "DEVICE_CERTIFICATE");
    assert_eq!(
        f[0].resource.resource_identifier["path"],
        "/etc/edgewarden/cert.pem"
    );

    let t = Tree::new();
    let r = run(&with_cert(&t, &pem(&rsa_cert_der(2048))));
    assert!(r.findings.is_empty(), "{:?}", r.findings);
}

#[test]
fn sha1_signed_certificate_is_weak() {
    let t = Tree::new();
    let r = run(&with_cert(&t, &pem(&as_sha1(rsa_cert_der(2048)))));
    let f = only(&r, DEVICE_CERTIFICATE_KEY_QUALITY);
    assert_eq!(f.len(), 1, "{:?}", r.findings);
    assert!(f[0]
        .reason_for_non_compliance
        .contains("sha1WithRSAEncryption"));
}

#[test]
fn expired_certificate_is_reported_as_expired_only() {
    let t = Tree::new();
    let r = run(&with_cert(&t, &ec_cert((2029, 6, 1))));
    assert_eq!(
        checks(&r),
        vec![(DEVICE_CERTIFICATE_EXPIRED, Severity::Critical)]
    );
    assert!(r.findings[0]
        .reason_for_non_compliance
        .contains("214 days ago"));
}

#[test]
fn certificate_expiring_within_the_warning_is_reported() {
    let t = Tree::new();
    let mut i = with_cert(&t, &ec_cert((2030, 1, 15)));
    let r = run(&i);
    assert_eq!(
        checks(&r),
        vec![(DEVICE_CERTIFICATE_EXPIRING, Severity::Medium)]
    );
    assert!(r.findings[0]
        .reason_for_non_compliance
        .contains("in 14 days"));
    i.cert_expiry_warning = Duration::from_secs(7 * 86_400);
    assert!(run(&i).findings.is_empty());
}

#[test]
fn ca_bundle_certificates_are_checked_one_by_one() {
    let t = Tree::new();
    let bundle = format!("{}{}", ec_cert((2035, 1, 1)), ec_cert((2030, 1, 10)));
    t.write("/etc/edgewarden/ca.pem", bundle);
    let mut i = t.inputs();
    i.ca_file = Some("/etc/edgewarden/ca.pem".into());
    let r = run(&i);
    assert_eq!(
        checks(&r),
        vec![(CA_CERTIFICATE_EXPIRING, Severity::Medium)]
    );
    assert!(r.findings[0].resource.resource_identifier["caCertificateId"].len() == 64);

    t.write("/etc/edgewarden/ca.pem", ec_cert((2035, 1, 1)));
    assert!(run(&i).findings.is_empty());
}

#[test]
fn unparsable_or_unreadable_certificate_is_an_error_and_the_audit_goes_on() {
    let t = Tree::new();
    let mut i = with_cert(
        &t,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    t.write("/etc/ssh/sshd_config", "PermitEmptyPasswords yes\n");
    let r = run(&i);
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    assert_eq!(r.errors[0].check_name, DEVICE_CERTIFICATE_KEY_QUALITY);
    assert_eq!(r.errors[0].resource, "/etc/edgewarden/cert.pem");
    assert!(
        r.errors[0].message.contains("does not parse"),
        "{:?}",
        r.errors
    );
    // The SSH check still ran.
    assert!(!only(&r, SSH_WEAK_CONFIG).is_empty());

    // A directory where the certificate should be: unreadable even for root.
    t.mkdir("/etc/edgewarden/dir.pem");
    i.cert_file = Some("/etc/edgewarden/dir.pem".into());
    let r = run(&i);
    assert!(
        r.errors[0].message.contains("cannot read"),
        "{:?}",
        r.errors
    );

    t.write("/etc/edgewarden/junk.pem", b"\x00\x01garbage");
    i.cert_file = Some("/etc/edgewarden/junk.pem".into());
    let r = run(&i);
    assert!(
        r.errors[0].message.contains("does not parse"),
        "{:?}",
        r.errors
    );
}

#[test]
fn certificate_shared_with_another_agent_on_the_host_is_reported() {
    let t = Tree::new();
    let cert = ec_cert((2035, 1, 1));
    let mut i = with_cert(&t, &cert);
    i.peer_state_dirs = vec!["/var/lib".into()];
    let fp = certs::parse_bundle(cert.as_bytes()).unwrap()[0]
        .fingerprint
        .clone();
    t.mkdir("/var/lib/edgewarden");
    certs::write_identity(&t.root().join("var/lib/edgewarden"), "gw-test", &fp).unwrap();
    // Our own state directory does not count.
    assert!(run(&i).findings.is_empty());
    t.mkdir("/var/lib/edgewarden-copy");
    certs::write_identity(
        &t.root().join("var/lib/edgewarden-copy"),
        "gw-other",
        "00ff",
    )
    .unwrap();
    assert!(run(&i).findings.is_empty());
    certs::write_identity(&t.root().join("var/lib/edgewarden-copy"), "gw-other", &fp).unwrap();
    let r = run(&i);
    let f = only(&r, DEVICE_CERTIFICATE_SHARED);
    assert_eq!(f.len(), 1, "{:?}", r.findings);
    assert!(
        f[0].resource.additional_info["sharedWith"].contains("/var/lib/edgewarden-copy (gw-other)")
    );
}

// ---- private key -----------------------------------------------------------------------------

#[test]
fn private_key_readable_by_others_or_foreign_owner_is_reported() {
    let t = Tree::new();
    t.write("/etc/edgewarden/key.pem", "key");
    t.chmod("/etc/edgewarden/key.pem", 0o600);
    let mut i = t.inputs();
    i.key_file = Some("/etc/edgewarden/key.pem".into());
    assert!(run(&i).findings.is_empty(), "{:?}", run(&i).findings);

    t.chmod("/etc/edgewarden/key.pem", 0o640);
    let r = run(&i);
    let f = only(&r, PRIVATE_KEY_PERMISSIVE);
    assert_eq!(f.len(), 1);
    assert!(f[0]
        .reason_for_non_compliance
        .contains("mode 0640 lets group"));

    t.chmod("/etc/edgewarden/key.pem", 0o600);
    t.write(
        "/etc/passwd",
        "root:x:0:0::/root:/bin/sh\nsvc:x:4242:4242::/:/usr/sbin/nologin\n",
    );
    i.service_user = Some("svc".into());
    let r = run(&i);
    let f = only(&r, PRIVATE_KEY_PERMISSIVE);
    assert_eq!(f.len(), 1, "{:?}", r.findings);
    assert!(f[0]
        .reason_for_non_compliance
        .contains("instead of the service user (uid 4242)"));

    i.service_user = Some("nobody-here".into());
    let r = run(&i);
    assert!(r.errors[0].message.contains("not in /etc/passwd"));

    i.key_file = Some("/etc/edgewarden/missing.pem".into());
    let r = run(&i);
    assert!(r.errors.iter().any(|e| e.message.contains("cannot stat")));
}

// ---- logging ---------------------------------------------------------------------------------

fn journald_tree(conf: &str) -> (Tree, AuditInputs) {
    let t = Tree::new();
    t.write("/usr/lib/systemd/systemd-journald", "");
    t.write("/etc/systemd/journald.conf", conf);
    let mut i = t.inputs();
    i.journal = true;
    (t, i)
}

#[test]
fn persistent_journal_passes() {
    let (_t, i) = journald_tree("[Journal]\nStorage=persistent\n");
    assert!(run(&i).findings.is_empty());
    let (t, i) = journald_tree("[Journal]\n#Storage=auto\n");
    t.mkdir("/var/log/journal");
    assert!(run(&i).findings.is_empty());
}

#[test]
fn volatile_or_disabled_journal_is_reported() {
    let (_t, i) = journald_tree("[Journal]\nStorage=volatile\n");
    assert_eq!(checks(&run(&i)), vec![(LOGGING_DISABLED, Severity::Medium)]);
    // auto without /var/log/journal is volatile too.
    let (_t, i) = journald_tree("[Journal]\n");
    assert_eq!(checks(&run(&i)), vec![(LOGGING_DISABLED, Severity::Medium)]);
    // A drop-in overrides the main file; Storage=none also leaves no auth log to read.
    let (t, mut i) = journald_tree("[Journal]\nStorage=persistent\n");
    i.log_files.clear();
    t.write(
        "/etc/systemd/journald.conf.d/50-none.conf",
        "[Journal]\nStorage=none\n",
    );
    let r = run(&i);
    assert_eq!(
        checks(&r),
        vec![
            (LOGGING_DISABLED, Severity::High),
            (LOGGING_DISABLED, Severity::High)
        ]
    );
    assert!(r
        .findings
        .iter()
        .any(|f| f.resource.additional_info.get("setBy")
            == Some(&"/etc/systemd/journald.conf.d/50-none.conf".to_owned())));
}

#[test]
fn no_readable_auth_log_is_reported_and_a_readable_one_passes() {
    let t = Tree::new();
    let mut i = t.inputs();
    i.log_files = vec!["/var/log/secure".into()];
    let r = run(&i);
    assert_eq!(checks(&r), vec![(LOGGING_DISABLED, Severity::High)]);
    assert_eq!(
        r.findings[0].resource.resource_identifier["log"],
        "authentication"
    );
    t.write("/var/log/secure", "");
    assert!(run(&i).findings.is_empty());
}

// ---- services --------------------------------------------------------------------------------

const TCP_HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";

fn sock(i: usize, local: &str, st: &str) -> String {
    format!("   {i}: {local} 00000000:0000 {st} 00000000:00000000 00:00000000 00000000     0        0 {} 1 0000000000000000 100 0 0 10 0\n", 1000 + i)
}

#[test]
fn telnet_tftp_and_exposed_mqtt_are_reported_loopback_is_not() {
    let t = Tree::new();
    let tcp = format!(
        "{TCP_HEADER}{}{}{}",
        sock(0, "00000000:0017", "0A"), // 0.0.0.0:23 telnet
        sock(1, "0100007F:075B", "0A"), // 127.0.0.1:1883
        sock(2, "00000000:0016", "0A"), // 0.0.0.0:22 ssh, fine
    );
    t.write("/proc/net/tcp", &tcp);
    t.write(
        "/proc/net/udp",
        format!("{TCP_HEADER}{}", sock(0, "00000000:0045", "07")),
    );
    let r = run(&t.inputs());
    let ports: Vec<(&str, Severity)> = r
        .findings
        .iter()
        .map(|f| (f.resource.resource_identifier["port"].as_str(), f.severity))
        .collect();
    assert_eq!(
        ports,
        vec![("tcp/23", Severity::Critical), ("udp/69", Severity::High)]
    );

    // The broker on all addresses is exposed.
    t.write(
        "/proc/net/tcp",
        format!("{TCP_HEADER}{}", sock(0, "00000000:075B", "0A")),
    );
    t.write("/proc/net/udp", TCP_HEADER);
    let r = run(&t.inputs());
    assert_eq!(
        r.findings[0].resource.resource_identifier["port"],
        "tcp/1883"
    );
    // Only loopback and SSH: nothing.
    t.write(
        "/proc/net/tcp",
        format!(
            "{TCP_HEADER}{}{}",
            sock(0, "0100007F:075B", "0A"),
            sock(1, "00000000:0016", "0A")
        ),
    );
    assert!(run(&t.inputs()).findings.is_empty());
}

#[test]
fn malformed_proc_net_lines_are_an_error_not_a_panic() {
    let t = Tree::new();
    t.write(
        "/proc/net/tcp",
        format!(
            "{TCP_HEADER}garbage line\n{}",
            sock(1, "00000000:0017", "0A")
        ),
    );
    let r = run(&t.inputs());
    assert_eq!(r.findings.len(), 1);
    assert!(r.errors[0]
        .message
        .contains("1 malformed line(s) skipped, first at line 2"));
}

#[test]
fn anonymous_broker_access_is_reported_from_included_files() {
    let t = Tree::new();
    t.write(
        "/etc/mosquitto/mosquitto.conf",
        "per_listener_settings false\ninclude_dir /etc/mosquitto/conf.d\nallow_anonymous false\n",
    );
    assert!(run(&t.inputs()).findings.is_empty());
    t.write(
        "/etc/mosquitto/conf.d/local.conf",
        "listener 1883\n# allow_anonymous true\nallow_anonymous true\n",
    );
    let r = run(&t.inputs());
    assert_eq!(checks(&r), vec![(INSECURE_SERVICE_EXPOSED, Severity::High)]);
    assert!(r.findings[0]
        .reason_for_non_compliance
        .contains("/etc/mosquitto/conf.d/local.conf:3"));
}

// ---- ssh -------------------------------------------------------------------------------------

#[test]
fn hardened_sshd_passes() {
    let t = Tree::new();
    t.write(
        "/etc/ssh/sshd_config",
        "PermitRootLogin no\nPasswordAuthentication no\nPermitEmptyPasswords no\n",
    );
    assert!(run(&t.inputs()).findings.is_empty());
    // No SSH server at all: nothing to judge.
    let t = Tree::new();
    assert!(run(&t.inputs()).findings.is_empty());
}

#[test]
fn weak_sshd_settings_are_reported_with_first_value_wins_and_includes() {
    let t = Tree::new();
    t.write(
        "/etc/ssh/sshd_config",
        "Include /etc/ssh/sshd_config.d/*.conf\nPermitRootLogin no\nPermitEmptyPasswords=yes\nMatch User backup\n  PasswordAuthentication no\n",
    );
    t.write(
        "/etc/ssh/sshd_config.d/10-root.conf",
        "permitrootlogin yes\n",
    );
    t.write(
        "/etc/ssh/sshd_config.d/20-ignored.txt",
        "PermitRootLogin no\n",
    );
    let r = run(&t.inputs());
    let got: Vec<(String, Severity, String)> = r
        .findings
        .iter()
        .map(|f| {
            (
                f.resource.resource_identifier["setting"].clone(),
                f.severity,
                f.resource.additional_info["source"].clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "PermitEmptyPasswords".into(),
                Severity::Critical,
                "/etc/ssh/sshd_config".into()
            ),
            (
                "PermitRootLogin".into(),
                Severity::High,
                "/etc/ssh/sshd_config.d/10-root.conf".into()
            ),
            (
                "PasswordAuthentication".into(),
                Severity::Medium,
                "OpenSSH default".into()
            ),
        ]
    );
}

// ---- sessions --------------------------------------------------------------------------------

#[test]
fn repeated_short_sessions_mean_a_conflicting_client_id() {
    let t = Tree::new();
    let mut i = t.inputs();
    i.client_id = Some("gw-test".into());
    assert!(run(&i).findings.is_empty());
    i.sessions = Some(SessionCounts {
        connects: 2,
        short_sessions: 2,
    });
    assert!(run(&i).findings.is_empty());
    i.sessions = Some(SessionCounts {
        connects: 5,
        short_sessions: 4,
    });
    let r = run(&i);
    assert_eq!(checks(&r), vec![(CONFLICTING_CLIENT_IDS, Severity::High)]);
    assert_eq!(
        r.findings[0].resource.resource_identifier["clientId"],
        "gw-test"
    );
}

// ---- the agent's own files -------------------------------------------------------------------

#[test]
fn world_writable_agent_paths_are_reported() {
    let t = Tree::new();
    t.mkdir("/var/lib/edgewarden");
    t.write("/usr/bin/edgewarden", "");
    t.chmod("/var/lib/edgewarden", 0o750);
    t.chmod("/usr/bin/edgewarden", 0o755);
    let mut i = t.inputs();
    i.binary = Some("/usr/bin/edgewarden".into());
    assert!(run(&i).findings.is_empty());
    t.chmod("/var/lib/edgewarden", 0o777);
    t.chmod("/usr/bin/edgewarden", 0o757);
    let r = run(&i);
    assert_eq!(
        checks(&r),
        vec![
            (AGENT_CONFIG_INSECURE, Severity::Critical),
            (AGENT_CONFIG_INSECURE, Severity::High)
        ]
    );
    assert_eq!(r.findings[0].fix_hint, "chmod o-w /usr/bin/edgewarden");
}

// ---- ids, exit codes -------------------------------------------------------------------------

#[test]
fn finding_ids_are_stable_across_audits_and_differ_per_resource() {
    let t = Tree::new();
    t.write(
        "/etc/ssh/sshd_config",
        "PermitRootLogin yes\nPasswordAuthentication yes\n",
    );
    let mut i = t.inputs();
    let a = run(&i);
    i.now_ms += 3_600_000;
    let b = run(&i);
    let ids = |r: &AuditReport| {
        r.findings
            .iter()
            .map(|f| f.finding_id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&a), ids(&b));
    assert_ne!(ids(&a)[0], ids(&a)[1]);
    assert_ne!(a.findings[0].finding_time, b.findings[0].finding_time);
    i.thing_name = "gw-other".into();
    assert_ne!(ids(&run(&i)), ids(&a));
}

#[test]
fn exit_code_follows_the_worst_severity() {
    let mut r = AuditReport::default();
    assert_eq!(r.exit_code(), 0);
    let t = Tree::new();
    t.write("/etc/ssh/sshd_config", "PermitRootLogin no\n");
    r = run(&t.inputs());
    assert_eq!(r.exit_code(), 3, "PasswordAuthentication is medium");
    t.write("/etc/ssh/sshd_config", "PermitRootLogin yes\n");
    r = run(&t.inputs());
    assert_eq!(r.exit_code(), 4);
    assert_eq!(r.noncompliant_checks(), vec![SSH_WEAK_CONFIG.to_owned()]);
}

proptest! {
    #[test]
    fn certificate_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = certs::parse_bundle(&bytes);
    }

    #[test]
    fn pem_framed_garbage_is_an_error(body in "[A-Za-z0-9+/]{0,300}") {
        let text = format!("-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n");
        prop_assert!(certs::parse_bundle(text.as_bytes()).is_err());
    }

    #[test]
    fn config_file_checks_never_panic(sshd in "[ -~\n]{0,400}", mosq in "[ -~\n]{0,400}", journald in "[ -~\n]{0,200}") {
        let t = Tree::new();
        t.write("/etc/ssh/sshd_config", &sshd);
        t.write("/etc/mosquitto/mosquitto.conf", &mosq);
        t.write("/etc/systemd/journald.conf", &journald);
        t.write("/usr/lib/systemd/systemd-journald", "");
        let _ = run(&t.inputs());
    }
}

#[test]
fn openssl_made_rsa_1024_sha1_certificate_is_weak_in_pem_and_der() {
    // Seeds of the `certificate` fuzz target, made with
    // `openssl req -x509 -newkey rsa:1024 -sha1` (really signed, unlike the rcgen ones above).
    for bytes in [
        &include_bytes!("../../fuzz/corpus/certificate/rsa1024-sha1.pem")[..],
        &include_bytes!("../../fuzz/corpus/certificate/rsa1024-sha1.der")[..],
    ] {
        let c = &certs::parse_bundle(bytes).unwrap()[0];
        assert_eq!(
            c.weaknesses,
            vec![
                "RSA key of 1024 bits (minimum 2048)".to_owned(),
                "signed with sha1WithRSAEncryption".to_owned()
            ]
        );
    }
    let p256 =
        &certs::parse_bundle(include_bytes!("../../fuzz/corpus/certificate/p256.pem")).unwrap()[0];
    assert!(p256.weaknesses.is_empty(), "{:?}", p256.weaknesses);
}
