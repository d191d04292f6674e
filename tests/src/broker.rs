//! A real `mosquitto` with mutual TLS for integration tests, and the certificates it needs.
//!
//! [`Pki`] makes a CA and signs server and device certificates with `rcgen` (EC P-256).
//! [`Broker::start`] writes a `mosquitto.conf` with `require_certificate true` and
//! `use_identity_as_username true` (the certificate's CN is the MQTT username), an ACL that lets
//! each thing publish and subscribe only under `$aws/things/{thing}/defender/#` and
//! `edgewarden/{thing}/#`, and a superuser identity ([`EMULATOR_IDENTITY`]) for a Device
//! Defender emulator that may use every thing's topics. The broker listens on a free loopback
//! port, is stopped, killed and restarted by PID, and writes its log to `mosquitto.log` in its
//! directory (shown by [`Broker::log`]). Broker persistence is on, so a client with a
//! persistent session (clean session off, like an emulator should use) keeps its subscriptions
//! and queued QoS 1 messages across [`Broker::restart`].
//!
//! `MQTT_BROKER_MOSQUITTO` overrides the `mosquitto` binary.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use edgewarden::config::MqttConfig;

/// Common name (= MQTT username) of the superuser identity an emulator connects with.
pub const EMULATOR_IDENTITY: &str = "defender-emulator";

/// A certificate and its private key on disk.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Common name; the MQTT username under `use_identity_as_username`.
    pub name: String,
    /// PEM certificate.
    pub cert: PathBuf,
    /// PEM private key (mode 0600).
    pub key: PathBuf,
}

/// Validity of a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// Valid from yesterday for ten years.
    Current,
    /// Expired: valid only during 2020.
    Expired,
}

/// A test certificate authority.
pub struct Pki {
    dir: PathBuf,
    name: String,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
    ca_file: PathBuf,
}

fn write_private(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod {}", path.display()))
}

fn set_validity(params: &mut CertificateParams, validity: Validity) {
    match validity {
        Validity::Current => {
            params.not_before = rcgen::date_time_ymd(2024, 1, 1);
            params.not_after = rcgen::date_time_ymd(2040, 1, 1);
        }
        Validity::Expired => {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 12, 31);
        }
    }
}

impl Pki {
    /// A new CA named `name`, its files in `dir` (created).
    pub fn new(dir: &Path, name: &str) -> Result<Pki> {
        std::fs::create_dir_all(dir)?;
        let ca_key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("{name} test CA"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        set_validity(&mut params, Validity::Current);
        let ca = params.self_signed(&ca_key)?;
        let ca_file = dir.join(format!("{name}-ca.crt"));
        std::fs::write(&ca_file, ca.pem())?;
        Ok(Pki {
            dir: dir.to_owned(),
            name: name.to_owned(),
            ca,
            ca_key,
            ca_file,
        })
    }

    /// The CA certificate (PEM).
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    fn issue(
        &self,
        cn: &str,
        sans: Vec<String>,
        server: bool,
        validity: Validity,
    ) -> Result<Identity> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(sans)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        set_validity(&mut params, validity);
        let cert = params.signed_by(&key, &self.ca, &self.ca_key)?;
        let stem = format!(
            "{}-{cn}{}",
            self.name,
            match validity {
                Validity::Current => "",
                Validity::Expired => "-expired",
            }
        );
        let cert_path = self.dir.join(format!("{stem}.crt"));
        let key_path = self.dir.join(format!("{stem}.key"));
        std::fs::write(&cert_path, cert.pem())?;
        write_private(&key_path, &key.serialize_pem())?;
        Ok(Identity {
            name: cn.to_owned(),
            cert: cert_path,
            key: key_path,
        })
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    pub fn server(&self) -> Result<Identity> {
        self.issue(
            "localhost",
            vec!["localhost".into(), "127.0.0.1".into()],
            true,
            Validity::Current,
        )
    }

    /// A device (client) certificate whose CN is `thing`.
    pub fn client(&self, thing: &str, validity: Validity) -> Result<Identity> {
        self.issue(thing, Vec::new(), false, validity)
    }
}

/// What a thing may do on its own topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThingAccess {
    /// Publish and subscribe under `$aws/things/{thing}/defender/#` and `edgewarden/{thing}/#`.
    ReadWrite,
    /// Subscribe only: every publish is denied by the ACL.
    ReadOnly,
    /// Nothing: every publish and subscription is denied by the ACL.
    NoAccess,
}

/// The ACL file: each thing under its own topics, the emulator everywhere.
pub fn acl(things: &[(&str, ThingAccess)]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "user {EMULATOR_IDENTITY}");
    let _ = writeln!(s, "topic readwrite $aws/things/+/defender/#");
    let _ = writeln!(s, "topic readwrite edgewarden/#");
    for (thing, access) in things {
        let mode = match access {
            ThingAccess::ReadWrite => "readwrite",
            ThingAccess::ReadOnly => "read",
            ThingAccess::NoAccess => {
                let _ = writeln!(s, "\nuser {thing}");
                continue;
            }
        };
        let _ = writeln!(s, "\nuser {thing}");
        let _ = writeln!(s, "topic {mode} $aws/things/{thing}/defender/#");
        let _ = writeln!(s, "topic {mode} edgewarden/{thing}/#");
    }
    s
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// A running (or stopped) mosquitto.
pub struct Broker {
    dir: PathBuf,
    port: u16,
    conf: PathBuf,
    child: Option<Child>,
    server: Identity,
    ca_file: PathBuf,
    emulator: Identity,
}

impl Broker {
    /// Writes the configuration into `dir` and starts mosquitto on a free loopback port.
    /// `pki` issues the server certificate and the emulator identity; devices must be issued
    /// by the same `pki` to be accepted.
    pub fn start(dir: &Path, pki: &Pki, things: &[(&str, ThingAccess)]) -> Result<Broker> {
        std::fs::create_dir_all(dir)?;
        let server = pki.server()?;
        let emulator = pki.client(EMULATOR_IDENTITY, Validity::Current)?;
        let acl_path = dir.join("acl");
        std::fs::write(&acl_path, acl(things))?;
        let mut last_err = None;
        for _ in 0..5 {
            let port = free_port()?;
            let mut b = Broker {
                dir: dir.to_owned(),
                port,
                conf: dir.join("mosquitto.conf"),
                child: None,
                server: server.clone(),
                ca_file: pki.ca_file().to_owned(),
                emulator: emulator.clone(),
            };
            b.write_conf(&acl_path)?;
            match b.spawn() {
                Ok(()) => return Ok(b),
                // Another process took the port between our probe and mosquitto's bind.
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("mosquitto did not start")))
    }

    fn write_conf(&self, acl_path: &Path) -> Result<()> {
        let mut c = String::new();
        if running_as_root() {
            // Otherwise mosquitto switches to user "mosquitto", who cannot read our key files.
            c.push_str("user root\n");
        }
        let _ = write!(
            c,
            "per_listener_settings false\n\
             allow_anonymous false\n\
             persistence true\n\
             persistence_location {dir}/\n\
             autosave_interval 1\n\
             log_dest stderr\n\
             log_type error\nlog_type warning\nlog_type notice\nlog_type information\nlog_type subscribe\n\
             connection_messages true\n\
             acl_file {acl}\n\
             listener {port} 127.0.0.1\n\
             cafile {ca}\n\
             certfile {cert}\n\
             keyfile {key}\n\
             require_certificate true\n\
             use_identity_as_username true\n",
            dir = self.dir.display(),
            acl = acl_path.display(),
            port = self.port,
            ca = self.ca_file.display(),
            cert = self.server.cert.display(),
            key = self.server.key.display(),
        );
        std::fs::write(&self.conf, c)?;
        Ok(())
    }

    fn spawn(&mut self) -> Result<()> {
        let bin = std::env::var("MQTT_BROKER_MOSQUITTO").unwrap_or_else(|_| "mosquitto".into());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("mosquitto.log"))?;
        let mut child = Command::new(&bin)
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {bin} (install the mosquitto package)"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "mosquitto exited with {status} on port {}:\n{}",
                    self.port,
                    self.log()
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("mosquitto did not listen on port {} within 10 s", self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while the broker process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Stops the broker with SIGTERM (by PID) and waits for it.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            let status = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status()?;
            if !status.success() {
                child.kill()?;
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    child.kill()?;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(())
    }

    /// Kills the broker with SIGKILL.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts the broker again on the same port with the same configuration.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.spawn()
    }

    /// Replaces the ACL and restarts the broker.
    pub fn set_acl(&mut self, things: &[(&str, ThingAccess)]) -> Result<()> {
        std::fs::write(self.dir.join("acl"), acl(things))?;
        self.restart()
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }

    /// The CA bundle that verifies the broker.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The superuser identity for an emulator.
    pub fn emulator_identity(&self) -> &Identity {
        &self.emulator
    }

    /// An `[mqtt]` configuration that connects `id` to this broker (endpoint `localhost`, so
    /// SNI and host name verification are exercised), with fast reconnects for tests.
    pub fn mqtt_config(&self, id: &Identity) -> MqttConfig {
        MqttConfig {
            endpoint: "localhost".into(),
            port: self.port,
            ca_file: self.ca_file.clone(),
            cert_file: id.cert.clone(),
            key_file: id.key.clone(),
            client_id: id.name.clone(),
            keep_alive: Duration::from_secs(30),
            alpn: None,
            response_timeout: Duration::from_secs(5),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_millis(800),
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits until `f` is true, polling every 20 ms, for at most `timeout`.
pub async fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
