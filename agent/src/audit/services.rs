//! `INSECURE_SERVICE_EXPOSED`: plain-text remote-access services listening, an MQTT broker on
//! 1883 reachable beyond loopback, a local broker that lets anonymous clients in.
//!
//! Listening sockets come from `<root>/proc/net/{tcp,tcp6,udp,udp6}` (the same parser the
//! collector uses); the broker's settings from `mosquitto.conf` and its `include_dir`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::{dir_files, read_optional, Draft, Findings, Severity, INSECURE_SERVICE_EXPOSED};
use crate::collect::procnet::{self, state};

/// Plain-text services and how bad exposing them is: (protocol, port, service, severity).
const INSECURE: &[(&str, u16, &str, Severity)] = &[
    ("tcp", 23, "telnet", Severity::Critical),
    ("tcp", 512, "rexec", Severity::Critical),
    ("tcp", 513, "rlogin", Severity::Critical),
    ("tcp", 514, "rsh", Severity::Critical),
    ("tcp", 21, "ftp", Severity::High),
    ("udp", 69, "tftp", Severity::High),
    ("tcp", 1883, "mqtt (plain text)", Severity::High),
];

/// Listening (TCP) and bound (UDP) sockets: (protocol, local address).
pub fn listening(out: &mut Findings<'_>) -> BTreeSet<(&'static str, SocketAddr)> {
    let mut set = BTreeSet::new();
    for (file, proto, states) in [
        ("/proc/net/tcp", "tcp", 1u32 << state::LISTEN),
        ("/proc/net/tcp6", "tcp", 1u32 << state::LISTEN),
        ("/proc/net/udp", "udp", 1u32 << state::CLOSE),
        ("/proc/net/udp6", "udp", 1u32 << state::CLOSE),
    ] {
        let path = Path::new(file);
        let data = match read_proc(&out.inputs().path(path)) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                out.error(INSECURE_SERVICE_EXPOSED, path, format!("cannot read: {e}"));
                continue;
            }
        };
        let (skipped, first_bad) = procnet::parse(&data, states, |s| {
            set.insert((proto, s.local));
        });
        if skipped > 0 {
            out.error(
                INSECURE_SERVICE_EXPOSED,
                path,
                format!(
                    "{skipped} malformed line(s) skipped, first at line {}",
                    first_bad.unwrap_or(0)
                ),
            );
        }
    }
    set
}

/// Reads a `/proc/net` table with a large first read. `std::fs::read` sizes its buffer from the
/// file's length, which procfs reports as 0, and then grows it from 32 bytes; every read makes the
/// kernel walk its socket hash table again, so a handful of small reads costs milliseconds.
fn read_proc(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut f = std::fs::File::open(path)?;
    let mut data = Vec::with_capacity(64 * 1024);
    // Bounded: a table larger than 16 MiB is cut there (and its last line reported malformed).
    f.by_ref().take(16 << 20).read_to_end(&mut data)?;
    Ok(data)
}

/// Runs the check.
pub fn check(out: &mut Findings<'_>) {
    let socks = listening(out);
    for &(proto, port, service, severity) in INSECURE {
        let addrs: Vec<String> = socks
            .iter()
            .filter(|(p, a)| {
                *p == proto && a.port() == port && !a.ip().to_canonical().is_loopback()
            })
            .map(|(_, a)| a.to_string())
            .collect();
        if addrs.is_empty() {
            continue;
        }
        out.add(Draft {
            check: INSECURE_SERVICE_EXPOSED,
            severity,
            resource_type: "SERVICE",
            id: vec![("port", format!("{proto}/{port}"))],
            info: vec![("service", service.into()), ("listening", addrs.join(", "))],
            reason: format!(
                "{service} listens on {proto}/{port} beyond loopback ({}).",
                addrs.join(", ")
            ),
            fix: if port == 1883 {
                "Bind the broker's plain listener to 127.0.0.1 (listener 1883 127.0.0.1) and serve remote clients on 8883 with TLS.".into()
            } else {
                format!("Disable {service} (systemctl disable --now, or remove the package); use SSH instead.")
            },
        });
    }
    mosquitto(out);
}

/// `allow_anonymous true` in the broker's configuration.
fn mosquitto(out: &mut Findings<'_>) {
    let main = out.inputs().mosquitto_config.clone();
    let Some(text) = read_optional(out, INSECURE_SERVICE_EXPOSED, &main) else {
        return;
    };
    let mut files: Vec<(PathBuf, String)> = vec![(main.clone(), text.clone())];
    for line in text.lines() {
        if let Some(dir) = line.trim().strip_prefix("include_dir") {
            for f in dir_files(out.inputs(), Path::new(dir.trim()), ".conf") {
                if let Some(t) = read_optional(out, INSECURE_SERVICE_EXPOSED, &f) {
                    files.push((f, t));
                }
            }
        }
    }
    for (file, text) in files {
        for (i, line) in text.lines().enumerate() {
            let mut w = line.split_whitespace();
            if w.next() == Some("allow_anonymous") && w.next() == Some("true") {
                out.add(Draft {
                    check: INSECURE_SERVICE_EXPOSED,
                    severity: Severity::High,
                    resource_type: "MQTT_BROKER",
                    id: vec![("setting", "allow_anonymous".into()), ("path", file.display().to_string())],
                    info: vec![("line", (i + 1).to_string())],
                    reason: format!(
                        "The local MQTT broker accepts anonymous clients ({}:{}: allow_anonymous true).",
                        file.display(),
                        i + 1
                    ),
                    fix: "Set allow_anonymous false and give clients a password_file or client certificates (require_certificate true).".into(),
                });
            }
        }
    }
}
