//! Whether a line comes from the program whose event it reports.
//!
//! Any local user can write `sshd[1]: Failed password for root from 10.9.9.9 port 22 ssh2` into the
//! logs (`logger -t sshd …`), and any program's message can contain `authentication failure; …
//! rhost=` or `SRC=… DPT=`. So an event line counts only when the writer is one of the programs
//! that report that kind of event:
//!
//! - **Journal entries** are judged by the fields journald adds itself, which the sender cannot
//!   set: the sender's user id (`_UID`, from the socket credentials) must be a system account
//!   (below 1000), and when journald recorded them, the process name (`_COMM`) and the
//!   executable's base name (`_EXE`) must be one of the expected programs, the executable living
//!   under `/usr`, `/bin`, `/sbin` or `/lib`. Kernel firewall lines must have come through the
//!   kernel transport. `SYSLOG_IDENTIFIER` is only the sender's claim and is not trusted.
//! - **Text-file lines** carry only the syslog tag, so the tag must name an expected program.
//!   Lines without a tag count only as broker events (Mosquitto's own log file has none).
//!
//! Lines that fail the check are *forged*: they are counted (`log_forged_events`) and otherwise
//! ignored, connection context included, so a forged `Connection from` cannot re-attribute a real
//! connection either.

use super::class::EventClass;
use super::classify::{Classified, Hint};
use super::format::{Format, Frame};

/// Programs that report logins and their failures (OpenSSH, Dropbear, PAM users, sudo, tcp
/// wrappers). Compared with the tag's or executable's base name, up to a `(` (`pop(pam_unix)`).
pub const AUTH_PROGRAMS: &[&str] = &[
    "sshd",
    "sshd-session",
    "sshd-auth",
    "dropbear",
    "login",
    "su",
    "sudo",
    "passwd",
    "chsh",
    "chfn",
    "newgrp",
    "unix_chkpwd",
    "polkit-agent-helper-1",
    "polkitd",
    "systemd-logind",
    "vsftpd",
    "proftpd",
    "pure-ftpd",
    "dovecot",
    "pop",
    "imap",
    "ipop3d",
    "imapd",
    "xinetd",
    "tcpd",
    "in.telnetd",
    "in.ftpd",
];

/// Programs that report MQTT broker events.
pub const BROKER_PROGRAMS: &[&str] = &["mosquitto"];

/// Highest user id of a system account (Debian's `SYS_UID_MAX`).
const SYS_UID_MAX: u32 = 999;

/// Who may report a class of event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reporter {
    /// Any program (the line reports nothing).
    Anyone,
    /// One of [`AUTH_PROGRAMS`].
    Auth,
    /// One of [`BROKER_PROGRAMS`].
    Broker,
    /// The kernel.
    Kernel,
}

fn reporter(c: &Classified<'_>) -> Reporter {
    match c.class {
        EventClass::Other => match c.hint {
            // Connection-opening lines set the context later events are attributed with.
            Hint::ProcessConnStart => Reporter::Auth,
            Hint::BrokerConnStart => Reporter::Broker,
            _ => Reporter::Anyone,
        },
        EventClass::FwDrop => Reporter::Kernel,
        EventClass::MqttNotAuthorised
        | EventClass::MqttAclDenied
        | EventClass::MqttClientIdConflict
        | EventClass::MqttKeepaliveTimeout
        | EventClass::MqttProtocolError
        | EventClass::TlsFailure => Reporter::Broker,
        EventClass::ConnRefused
        | EventClass::AuthSuccess
        | EventClass::AuthLimit
        | EventClass::PamFailure
        | EventClass::AuthFailure
        | EventClass::InvalidUser
        | EventClass::NegotiationFailure
        | EventClass::PreauthDisconnect => Reporter::Auth,
    }
}

/// The program part of a tag or path: base name, cut at `(`.
fn base_name(p: &[u8]) -> &[u8] {
    let p = match p.iter().rposition(|&b| b == b'/') {
        Some(i) => &p[i + 1..],
        None => p,
    };
    match p.iter().position(|&b| b == b'(') {
        Some(i) => &p[..i],
        None => p,
    }
}

fn listed(list: &[&str], name: &[u8]) -> bool {
    let name = base_name(name);
    list.iter().any(|p| p.as_bytes() == name)
}

fn is_system_path(exe: &[u8]) -> bool {
    [&b"/usr/"[..], b"/bin/", b"/sbin/", b"/lib/", b"/lib64/"]
        .iter()
        .any(|p| exe.starts_with(p))
        && !exe.windows(4).any(|w| w == b"/../")
}

/// True when the line may report what it was classified as; false for a forged event.
pub fn genuine(f: &Frame<'_>, c: &Classified<'_>) -> bool {
    let who = reporter(c);
    let list: &[&str] = match who {
        Reporter::Anyone => return true,
        Reporter::Auth => AUTH_PROGRAMS,
        Reporter::Broker => BROKER_PROGRAMS,
        Reporter::Kernel => &["kernel"],
    };
    match f.trusted {
        Some(t) if !t.is_empty() => {
            if who == Reporter::Kernel {
                return t.transport == b"kernel";
            }
            if t.transport == b"kernel" {
                return false;
            }
            let uid_fits = t.uid.is_some_and(|u| u <= SYS_UID_MAX);
            let comm_fits = t.comm.is_empty() || listed(list, t.comm);
            let exe_fits = t.exe.is_empty() || (listed(list, t.exe) && is_system_path(t.exe));
            uid_fits && comm_fits && exe_fits
        }
        _ => {
            if f.program.is_empty() {
                // Mosquitto's own log file (epoch prefix or bare messages) has no tags.
                who == Reporter::Broker && matches!(f.format, Format::Mosquitto | Format::Plain)
            } else {
                listed(list, f.program)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::classify::classify;
    use crate::logs::format::frame;

    fn ok(line: &str) -> bool {
        let f = frame(line.as_bytes());
        let c = classify(&f.msg);
        genuine(&f, &c)
    }

    fn journal(comm: &str, exe: &str, uid: u32, msg: &str) -> String {
        format!(
            r#"{{"MESSAGE":"{msg}","SYSLOG_IDENTIFIER":"sshd","_PID":"7","_COMM":"{comm}","_EXE":"{exe}","_UID":"{uid}","_TRANSPORT":"syslog"}}"#
        )
    }

    const FAILED: &str = "Failed password for root from 192.0.2.1 port 22 ssh2";

    #[test]
    fn journal_entries_are_judged_by_journald_fields_not_the_identifier() {
        assert!(ok(&journal("sshd", "/usr/sbin/sshd", 0, FAILED)));
        assert!(ok(&journal(
            "sshd-session",
            "/usr/lib/openssh/sshd-session",
            0,
            FAILED
        )));
        assert!(!ok(&journal("logger", "/usr/bin/logger", 0, FAILED)));
        assert!(!ok(&journal("sshd", "/usr/sbin/sshd", 1000, FAILED)));
        assert!(!ok(&journal("sshd", "/home/eve/sshd", 0, FAILED)));
        assert!(!ok(&journal("sshd", "/usr/../home/eve/sshd", 0, FAILED)));
        // The process had exited before journald looked: the user id decides.
        assert!(ok(&journal("", "", 0, FAILED)));
        assert!(!ok(&journal("", "", 1000, FAILED)));
        // Mosquitto lines from sshd, sshd lines from Mosquitto.
        assert!(!ok(&journal(
            "sshd",
            "/usr/sbin/sshd",
            0,
            "Client x disconnected, not authorised."
        )));
        assert!(ok(&journal(
            "mosquitto",
            "/usr/sbin/mosquitto",
            102,
            "Client x disconnected, not authorised."
        )));
        // Lines that report nothing are never forged.
        assert!(ok(&journal("logger", "/usr/bin/logger", 1000, "hello")));
    }

    #[test]
    fn text_lines_are_judged_by_their_tag() {
        assert!(ok(&format!("Jan  1 00:00:00 gw sshd[5]: {FAILED}")));
        assert!(!ok(&format!("Jan  1 00:00:00 gw myapp[5]: {FAILED}")));
        assert!(!ok("Jan  1 00:00:00 gw myapp[5]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=192.0.2.1"));
        assert!(ok("Jan  1 00:00:00 gw su[5]: pam_unix(su:auth): authentication failure; logname=pi uid=1000 euid=0 tty=pts/0 ruser=pi rhost=  user=root"));
        assert!(!ok("Jan  1 00:00:00 gw myapp: [UFW BLOCK] IN=eth0 OUT= SRC=192.0.2.1 DST=10.0.0.1 PROTO=TCP SPT=1 DPT=22"));
        assert!(ok("Jan  1 00:00:00 gw kernel: [UFW BLOCK] IN=eth0 OUT= SRC=192.0.2.1 DST=10.0.0.1 PROTO=TCP SPT=1 DPT=22"));
        assert!(ok(
            "1795801275: Client <unknown> disconnected, not authorised."
        ));
        assert!(!ok(FAILED));
    }
}
