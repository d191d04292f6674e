//! The line classifier: one message in, one [`EventClass`] plus the client address out.
//!
//! Pure and allocation-free: it works on bytes (invalid UTF-8 is just bytes that match nothing),
//! dispatches on the first word of the message and only then looks further, so a typical sshd
//! line costs a few hundred nanoseconds. It knows the messages of OpenSSH (including the
//! `sshd-session` and Solaris variants), Dropbear, Linux-PAM, sudo/su/login, Mosquitto and kernel
//! firewall `LOG` lines; it does not care which program wrote the line.
//!
//! The client address is taken from the field the daemon writes it in. User names, PAM `ruser=`/
//! `user=` values and MQTT client ids are attacker-controlled and come *before* the address, so
//! addresses are parsed from the end: each pattern takes the last ` from <host>` whose remainder is
//! exactly what the daemon writes after the address (`port N`, `ssh2`, end of line,
//! `: <key type> <fingerprint>`, `via <host>` …). When the text admits more than one reading (a
//! PAM record whose `ruser=` or `user=` holds another `rhost=`, a certificate key id holding a
//! `from`), no address is returned: the event still counts, but names no source.

use super::class::EventClass;
use super::format::strip_inner_prefix;

/// How a line relates to the connection it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint<'a> {
    /// Nothing special.
    None,
    /// The line opens a connection handled by a dedicated process (sshd, dropbear): later lines of
    /// the same process id that carry no address belong to this client.
    ProcessConnStart,
    /// The line opens a connection on a single-process server (Mosquitto): refusals logged next,
    /// without an address, most likely concern this client.
    BrokerConnStart,
    /// A sign of pre-authentication race probing (`Timeout before authentication`, MAC errors
    /// during the handshake), the CVE-2024-6387 exploit pattern.
    Probe,
    /// A firewall line: destination port, and whether the packet was dropped (not an
    /// `ALLOW`/`AUDIT` log rule).
    Firewall {
        /// Destination port (0 when the protocol has none).
        dport: u16,
        /// Dropped or rejected (false for `ALLOW`/`AUDIT`/`ACCEPT` logging rules).
        dropped: bool,
    },
    /// The MQTT client id concerned.
    ClientId(&'a [u8]),
    /// `Failed publickey` for an existing user: a client offering its keys one by one, normal
    /// before the right key is accepted (fail2ban does not count it either).
    KeyOffer,
}

/// The classifier's verdict on one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classified<'a> {
    /// The line's class.
    pub class: EventClass,
    /// Client address (IP literal or host name) as written in the line, IPv4-mapped IPv6
    /// (`::ffff:1.2.3.4`) reduced to IPv4.
    pub addr: Option<&'a [u8]>,
    /// The user name the line is about, when it names one that does not exist (invalid user).
    pub invalid_user: Option<&'a [u8]>,
    /// Relation to the connection.
    pub hint: Hint<'a>,
}

impl<'a> Classified<'a> {
    const fn new(class: EventClass) -> Classified<'a> {
        Classified {
            class,
            addr: None,
            invalid_user: None,
            hint: Hint::None,
        }
    }

    const fn with(class: EventClass, addr: Option<&'a [u8]>) -> Classified<'a> {
        Classified {
            class,
            addr,
            invalid_user: None,
            hint: Hint::None,
        }
    }

    const fn hint(mut self, hint: Hint<'a>) -> Classified<'a> {
        self.hint = hint;
        self
    }
}

const OTHER: Classified<'static> = Classified::new(EventClass::Other);

/// Classifies one message (the part after the syslog tag). Inner prefixes (Mosquitto epoch,
/// Dropbear `[pid] date`, Solaris `[ID …]`) are removed first.
pub fn classify(msg: &[u8]) -> Classified<'_> {
    let mut m = trim_end_ws(strip_inner_prefix(msg));
    let mut fatal = false;
    // `error: `, `fatal: ` and similar severity words prefix many sshd messages.
    loop {
        if let Some(r) = m.strip_prefix(b"error: ") {
            m = r;
        } else if let Some(r) = m.strip_prefix(b"fatal: ") {
            fatal = true;
            m = r;
        } else if let Some(r) = m.strip_prefix(b"warning: ") {
            m = r;
        } else {
            break;
        }
    }
    let Some(&first) = m.first() else {
        return OTHER;
    };
    let c = match first {
        b'A' => classify_a(m),
        b'B' | b'b' => classify_b(m),
        b'C' => classify_c(m),
        b'D' => classify_d(m),
        b'E' => classify_e(m),
        b'F' => classify_f(m),
        b'I' => classify_i(m),
        b'L' | b'l' => classify_l(m),
        b'M' | b'm' => classify_m(m),
        b'N' | b'n' => classify_n(m),
        b'O' => classify_o(m),
        b'P' => classify_p(m),
        b'R' | b'r' => classify_r(m),
        b'S' | b's' => classify_s(m),
        b'T' => classify_t(m),
        b'U' => classify_u(m),
        b'i' => classify_lower_i(m),
        b'd' => classify_lower_d(m),
        b'k' => Some(OTHER),
        _ => None,
    };
    if let Some(c) = c {
        return c;
    }
    let c = classify_generic(m);
    if c.class == EventClass::Other && fatal && has_preauth(m) {
        // sshd ends the connection on any fatal error; before authentication that is a
        // pre-auth disconnect whatever the reason.
        return Classified::new(EventClass::PreauthDisconnect);
    }
    c
}

// ---------------------------------------------------------------------------------------------
// Dispatch by first letter.

fn classify_a(m: &[u8]) -> Option<Classified<'_>> {
    if let Some(r) = m.strip_prefix(b"Accepted ") {
        let addr = sshd_from_tail(r).0;
        return Some(Classified::with(EventClass::AuthSuccess, addr));
    }
    if m.starts_with(b"Address ") {
        // Reverse DNS mismatch: informational.
        return Some(OTHER);
    }
    None
}

fn classify_b(m: &[u8]) -> Option<Classified<'_>> {
    if let Some(r) = strip_prefix_ci(m, b"bad password attempt for ")
        .or_else(|| strip_prefix_ci(m, b"bad PAM password attempt for "))
    {
        return Some(Classified::with(EventClass::AuthFailure, dropbear_from(r)));
    }
    if let Some(r) = m.strip_prefix(b"Bad protocol version identification ") {
        let addr = from_host(r, |rest| after_port(rest).is_empty());
        return Some(Classified::with(EventClass::PreauthDisconnect, addr));
    }
    if let Some(r) = m.strip_prefix(b"banner exchange: Connection from ") {
        return Some(Classified::with(
            EventClass::PreauthDisconnect,
            host_token(r).map(|h| h.0),
        ));
    }
    if m.starts_with(b"Bad packet length ") {
        return Some(preauth_or_other(m, None));
    }
    if m.starts_with(b"bad ") || m.starts_with(b"Bad ") {
        return Some(preauth_or_other(m, None));
    }
    None
}

fn classify_c(m: &[u8]) -> Option<Classified<'_>> {
    if let Some(r) = m
        .strip_prefix(b"Connection closed by ")
        .or_else(|| m.strip_prefix(b"Connection reset by "))
    {
        let tail = TailAddr::parse(r);
        let class = if tail.preauth || tail.port {
            EventClass::PreauthDisconnect
        } else {
            EventClass::Other
        };
        return Some(Classified::with(class, tail.addr));
    }
    if let Some(r) = m.strip_prefix(b"Connection from ") {
        // `Connection from H port N on H2 port M [rdomain ""]` (LogLevel VERBOSE) or the old
        // `Connection from H`.
        let addr = host_token(r).map(|h| h.0);
        return Some(Classified::with(EventClass::Other, addr).hint(Hint::ProcessConnStart));
    }
    if let Some(r) = m.strip_prefix(b"Client ") {
        return Some(classify_mqtt_client(r));
    }
    if let Some(r) = m.strip_prefix(b"Child connection from ") {
        let addr = host_port_token(r);
        return Some(Classified::with(EventClass::Other, addr).hint(Hint::ProcessConnStart));
    }
    if m.starts_with(b"Corrupted MAC on input") {
        return Some(preauth_or_other(m, None));
    }
    None
}

fn classify_d(m: &[u8]) -> Option<Classified<'_>> {
    if let Some(r) = m.strip_prefix(b"Disconnected from ") {
        let tail = TailAddr::parse(r);
        let class = if tail.preauth {
            EventClass::PreauthDisconnect
        } else {
            EventClass::Other
        };
        return Some(Classified::with(class, tail.addr));
    }
    if let Some(r) = m.strip_prefix(b"Disconnecting") {
        if let Some(reason) = r.strip_prefix(b": ") {
            if reason.starts_with(b"Too many authentication failures") {
                return Some(Classified::new(EventClass::AuthLimit));
            }
            return Some(preauth_or_other(m, None));
        }
        if r.starts_with(b" invalid user ")
            || r.starts_with(b" authenticating user ")
            || r.starts_with(b" user ")
        {
            // `Disconnecting invalid user X H port N: <reason> [preauth]`.
            let addr = host_before_port_colon(r);
            let class = if has_preauth(m) {
                EventClass::PreauthDisconnect
            } else {
                EventClass::Other
            };
            return Some(Classified::with(class, addr));
        }
        return Some(preauth_or_other(m, None));
    }
    if let Some(r) = m.strip_prefix(b"Did not receive identification string from ") {
        return Some(Classified::with(
            EventClass::PreauthDisconnect,
            host_token(r).map(|h| h.0),
        ));
    }
    if let Some(r) = m.strip_prefix(b"Denied ") {
        // Mosquitto (debug level): `Denied PUBLISH from sensor-7 (d0, q0, r0, m0, 'topic', …)`.
        if r.first().is_some_and(u8::is_ascii_uppercase) {
            let id = r
                .iter()
                .position(|&b| b == b' ')
                .and_then(|sp| r[sp..].strip_prefix(b" from "))
                .map(|rest| &rest[..rest.iter().position(|&b| b == b' ').unwrap_or(rest.len())]);
            let c = Classified::new(EventClass::MqttAclDenied);
            return Some(match id {
                Some(id) => c.hint(Hint::ClientId(&id[..id.len().min(MAX_CLIENT_ID)])),
                None => c,
            });
        }
    }
    None
}

fn classify_e(m: &[u8]) -> Option<Classified<'_>> {
    if let Some(r) = m.strip_prefix(b"Exit before auth") {
        // Dropbear: `Exit before auth (user 'root', 10 fails): Max auth tries reached - user 'root' from H:P`
        // or `Exit before auth from <H:P>: (user 'root', 10 fails): Max auth tries reached - …`.
        // The user name is quoted later in the line and may hold `<H:P>` or ` from H:P`: the
        // address is either right after `Exit before auth` or at the very end.
        let addr = match r.strip_prefix(b" from ") {
            Some(a) if a.starts_with(b"<") => angle_host(a),
            _ => last_from_host_port(r),
        };
        let class = if find(r, b"Max auth tries reached").is_some() {
            EventClass::AuthLimit
        } else {
            EventClass::PreauthDisconnect
        };
        return Some(Classified::with(class, addr));
    }
    None
}

fn classify_f(m: &[u8]) -> Option<Classified<'_>> {
    if let Some(r) = m.strip_prefix(b"Failed ") {
        // `Failed <method> for [invalid user ]U from H port N ssh2[: <key>]`.
        let Some(sp) = r.iter().position(|&b| b == b' ') else {
            return Some(OTHER);
        };
        let Some(rest) = r[sp..].strip_prefix(b" for ") else {
            return Some(OTHER);
        };
        let (addr, user_end) = sshd_from_tail(rest);
        let mut c = Classified::with(EventClass::AuthFailure, addr);
        if let Some(u) = rest.strip_prefix(b"invalid user ") {
            let end = user_end
                .map(|e| e.saturating_sub(13))
                .unwrap_or(0)
                .min(u.len());
            c.invalid_user = Some(&u[..end]);
        } else if &r[..sp] == b"publickey" {
            c.hint = Hint::KeyOffer;
        }
        return Some(c);
    }
    if m.starts_with(b"FAILED SU ") || m.starts_with(b"FAILED su for ") {
        return Some(Classified::new(EventClass::AuthFailure));
    }
    if let Some(r) = m.strip_prefix(b"FAILED LOGIN ") {
        // login(1): `FAILED LOGIN (1) on '/dev/tty1' FROM 'host' FOR 'user', Authentication failure`.
        let addr = find(r, b" FROM '").and_then(|i| {
            let h = &r[i + 7..];
            h.iter()
                .position(|&b| b == b'\'')
                .and_then(|e| norm_host(&h[..e]))
        });
        return Some(Classified::with(EventClass::AuthFailure, addr));
    }
    None
}

fn classify_i(m: &[u8]) -> Option<Classified<'_>> {
    if let Some(r) = m
        .strip_prefix(b"Invalid user ")
        .or_else(|| m.strip_prefix(b"Illegal user "))
    {
        let (addr, user_end) = from_host_pos(r, |rest| {
            let rest = after_port(rest);
            rest.is_empty() || rest == b" [preauth]"
        });
        let mut c = Classified::with(EventClass::InvalidUser, addr);
        c.invalid_user = Some(&r[..user_end.unwrap_or(r.len()).min(r.len())]);
        return Some(c);
    }
    if let Some(r) = m.strip_prefix(b"Invalid protocol version ") {
        // Mosquitto: `Invalid protocol version 9 in CONNECT from 127.0.0.1.`
        let addr = find(r, b" from ")
            .and_then(|i| host_token(&r[i + 6..]))
            .map(|h| h.0);
        return Some(Classified::with(EventClass::Other, addr));
    }
    None
}

fn classify_l(m: &[u8]) -> Option<Classified<'_>> {
    if let Some(r) = strip_prefix_ci(m, b"login attempt for nonexistent user") {
        // Dropbear: `Login attempt for nonexistent user from H:P` or `… user 'x' from H:P`.
        let mut c = Classified::with(EventClass::InvalidUser, dropbear_from(r));
        if let Some(q) = r.strip_prefix(b" '") {
            if let Some(e) = q.iter().position(|&b| b == b'\'') {
                c.invalid_user = Some(&q[..e]);
            }
        }
        return Some(c);
    }
    None
}

fn classify_m(m: &[u8]) -> Option<Classified<'_>> {
    if let Some(r) = m.strip_prefix(b"maximum authentication attempts exceeded for ") {
        let addr = from_host(r, |rest| {
            let rest = after_port(rest);
            rest.is_empty() || rest == b" [preauth]"
        });
        return Some(Classified::with(EventClass::AuthLimit, addr));
    }
    if let Some(r) = m.strip_prefix(b"Magic value check failed") {
        let addr = from_host(r, |rest| after_port(rest).is_empty());
        return Some(Classified::with(EventClass::PreauthDisconnect, addr));
    }
    if m.starts_with(b"mosquitto version ") {
        return Some(OTHER);
    }
    None
}

fn classify_n(m: &[u8]) -> Option<Classified<'_>> {
    if let Some(r) = m.strip_prefix(b"New connection from ") {
        return Some(
            Classified::with(EventClass::Other, host_port_token(r)).hint(Hint::BrokerConnStart),
        );
    }
    if let Some(r) = m.strip_prefix(b"New client connected from ") {
        return Some(Classified::with(EventClass::Other, host_port_token(r)));
    }
    if m.starts_with(b"no matching ") && find(m, b" found").is_some() {
        return Some(Classified::new(EventClass::NegotiationFailure));
    }
    None
}

fn classify_o(m: &[u8]) -> Option<Classified<'_>> {
    if m.starts_with(b"OpenSSL Error: ") {
        // Mosquitto 1.x: one line per queued error, without an index.
        return Some(Classified::new(EventClass::TlsFailure));
    }
    if let Some(r) = m.strip_prefix(b"OpenSSL Error[") {
        // One failed handshake can log several `OpenSSL Error[i]` lines; count the first.
        if r.starts_with(b"0]") {
            return Some(Classified::new(EventClass::TlsFailure));
        }
        return Some(OTHER);
    }
    None
}

fn classify_p(m: &[u8]) -> Option<Classified<'_>> {
    if let Some(r) = m.strip_prefix(b"Protocol major versions differ for ") {
        // Old OpenSSH: `Protocol major versions differ for H port N: SSH-2.0-… vs. SSH-1.5-…`.
        let addr = host_token(r).map(|h| h.0);
        return Some(Classified::with(EventClass::PreauthDisconnect, addr));
    }
    if let Some(r) = m.strip_prefix(b"PAM: ") {
        // `PAM: Authentication failure for U from H`, `PAM: authentication error for U from H via X`,
        // `PAM: User not known to the underlying authentication module for illegal user U from H`.
        if starts_with_ci(r, b"authentication failure for ")
            || starts_with_ci(r, b"authentication error for ")
            || r.starts_with(b"User not known to the underlying authentication module for ")
        {
            let addr = from_host(r, |rest| {
                rest.is_empty() || rest.starts_with(b" via ") || rest == b" [preauth]"
            });
            return Some(Classified::with(EventClass::AuthFailure, addr));
        }
        return None;
    }
    if let Some(r) = m.strip_prefix(b"PAM ") {
        // `PAM 2 more authentication failures; logname= … rhost=H user=U`.
        if find(r, b"more authentication failure").is_some() {
            return Some(Classified::with(EventClass::AuthLimit, pam_rhost(r)));
        }
        return None;
    }
    if let Some(r) = m.strip_prefix(b"Postponed ") {
        let addr = sshd_from_tail(r).0;
        return Some(Classified::with(EventClass::Other, addr));
    }
    if let Some(r) = m
        .strip_prefix(b"Password auth succeeded for ")
        .or_else(|| m.strip_prefix(b"Pubkey auth succeeded for "))
    {
        return Some(Classified::with(EventClass::AuthSuccess, dropbear_from(r)));
    }
    None
}

fn classify_r(m: &[u8]) -> Option<Classified<'_>> {
    if let Some(r) = m.strip_prefix(b"Received disconnect from ") {
        let addr = host_token(r).map(|h| h.0);
        let class = if find(r, b"Auth fail").is_some() {
            // The client reports that authentication failed (JSch and friends).
            EventClass::AuthFailure
        } else if has_preauth(r) {
            EventClass::PreauthDisconnect
        } else {
            EventClass::Other
        };
        return Some(Classified::with(class, addr));
    }
    if let Some(r) = m.strip_prefix(b"ROOT LOGIN REFUSED FROM ") {
        return Some(Classified::with(
            EventClass::InvalidUser,
            host_token(r).map(|h| h.0),
        ));
    }
    if let Some(r) = m.strip_prefix(b"refused connect from ") {
        // tcp wrappers: `refused connect from NAME (ADDR)` or `refused connect from ADDR`.
        let t = trim_end_ws(r);
        let addr = if t.last() == Some(&b')') {
            t.iter()
                .rposition(|&b| b == b'(')
                .and_then(|o| norm_host(&t[o + 1..t.len() - 1]))
        } else {
            host_token(t).map(|h| h.0)
        };
        return Some(Classified::with(EventClass::ConnRefused, addr));
    }
    if m.starts_with(b"Read from socket failed") || m.starts_with(b"Read error from remote host") {
        return Some(preauth_or_other(m, None));
    }
    None
}

fn classify_s(m: &[u8]) -> Option<Classified<'_>> {
    if let Some(r) = m.strip_prefix(b"ssh_dispatch_run_fatal: Connection from ") {
        let addr = host_before_port_colon(r);
        let mut c = preauth_or_other(m, addr);
        if find(r, b"message authentication code incorrect").is_some() {
            c.hint = Hint::Probe;
        }
        return Some(c);
    }
    if let Some(r) = m.strip_prefix(b"SSH: Server;Ltype: ") {
        // `SSH: Server;Ltype: Version;Remote: 127.0.0.1-1780;Protocol: 2.0;…`
        let addr = find(r, b"Remote: ").and_then(|i| {
            let h = &r[i + 8..];
            let end = h
                .iter()
                .position(|&b| b == b';' || b == b' ')
                .unwrap_or(h.len());
            let h = &h[..end];
            let h = match h.iter().rposition(|&b| b == b'-') {
                Some(d) if h[d + 1..].iter().all(u8::is_ascii_digit) => &h[..d],
                _ => h,
            };
            norm_host(h)
        });
        return Some(Classified::with(EventClass::Other, addr).hint(Hint::ProcessConnStart));
    }
    if m.starts_with(b"Server listening on ")
        || m.starts_with(b"session opened")
        || m.starts_with(b"session closed")
    {
        return Some(OTHER);
    }
    None
}

fn classify_t(m: &[u8]) -> Option<Classified<'_>> {
    if let Some(r) = m.strip_prefix(b"Timeout before authentication for ") {
        let r = r.strip_prefix(b"connection from ").unwrap_or(r);
        let addr = host_token(r).map(|h| h.0);
        return Some(Classified::with(EventClass::PreauthDisconnect, addr).hint(Hint::Probe));
    }
    None
}

fn classify_u(m: &[u8]) -> Option<Classified<'_>> {
    if let Some(r) = m.strip_prefix(b"Unable to negotiate") {
        let addr = r.strip_prefix(b" with ").and_then(host_token).map(|h| h.0);
        return Some(Classified::with(EventClass::NegotiationFailure, addr));
    }
    if let Some(r) = m.strip_prefix(b"User ") {
        // `User U from H not allowed because …` / `User U not allowed because …`.
        let because = find(r, b" not allowed because ")?;
        let (addr, user_end) = from_host_pos(r, |rest| rest.starts_with(b" not allowed because "));
        let mut c = Classified::with(EventClass::InvalidUser, addr);
        c.invalid_user = Some(&r[..user_end.unwrap_or(because).min(r.len())]);
        return Some(c);
    }
    None
}

fn classify_lower_i(m: &[u8]) -> Option<Classified<'_>> {
    if let Some(r) = m.strip_prefix(b"input_userauth_request: invalid user ") {
        let end = r.iter().position(|&b| b == b' ').unwrap_or(r.len());
        let mut c = Classified::new(EventClass::InvalidUser);
        c.invalid_user = Some(&r[..end]);
        return Some(c);
    }
    None
}

fn classify_lower_d(m: &[u8]) -> Option<Classified<'_>> {
    if let Some(r) = m.strip_prefix(b"drop connection #") {
        // sshd MaxStartups: `drop connection #3 from [1.2.3.4]:22 on [5.6.7.8]:22 past MaxStartups`.
        let addr = find(r, b" from [").and_then(|i| {
            let h = &r[i + 7..];
            h.iter()
                .position(|&b| b == b']')
                .and_then(|e| norm_host(&h[..e]))
        });
        return Some(Classified::with(EventClass::ConnRefused, addr));
    }
    None
}

/// Longest MQTT client id kept (bytes); longer ids are cut (MQTT allows 65,535).
pub const MAX_CLIENT_ID: usize = 256;

/// Mosquitto's endings of `Client <id> …` lines. The id may contain spaces and any text, so a line
/// is matched by its exact ending and the id is everything between `Client ` and that ending.
const MQTT_CLIENT_ENDINGS: [(&[u8], EventClass); 6] = [
    (
        b" disconnected, not authorised.",
        EventClass::MqttNotAuthorised,
    ),
    (
        b" disconnected, not authorized.",
        EventClass::MqttNotAuthorised,
    ),
    (
        b" already connected, closing old connection.",
        EventClass::MqttClientIdConflict,
    ),
    (
        b" has exceeded timeout, disconnecting.",
        EventClass::MqttKeepaliveTimeout,
    ),
    (
        b" disconnected due to protocol error.",
        EventClass::MqttProtocolError,
    ),
    (
        b" disconnected due to malformed packet.",
        EventClass::MqttProtocolError,
    ),
];

/// Mosquitto `Client <id> …` lines.
fn classify_mqtt_client(r: &[u8]) -> Classified<'_> {
    // `Client connection from H failed: error:0A00010B:SSL routines::wrong version number.`
    if let Some(rest) = r.strip_prefix(b"connection from ") {
        if let Some(f) = find(rest, b" failed: ") {
            if let Some(addr) = norm_host(&rest[..f]) {
                return Classified::with(EventClass::TlsFailure, Some(addr));
            }
        }
    }
    for (ending, class) in MQTT_CLIENT_ENDINGS {
        let Some(mut id) = r.strip_suffix(ending).or_else(|| {
            // Mosquitto ≤ 1.6 writes some of them without the final full stop.
            ending.strip_suffix(b".").and_then(|e| r.strip_suffix(e))
        }) else {
            continue;
        };
        // Newer brokers add the address after the id: `Client <id> [H:P] disconnected, …`.
        let mut addr = None;
        if id.last() == Some(&b']') {
            if let Some(open) = rfind(id, b" [") {
                if let Some(a) = host_port_token(&id[open + 2..id.len() - 1]) {
                    addr = Some(a);
                    id = &id[..open];
                }
            }
        }
        let id = &id[..id.len().min(MAX_CLIENT_ID)];
        return Classified::with(class, addr).hint(Hint::ClientId(id));
    }
    OTHER
}

/// Lines not recognised by their first word: PAM records, kernel firewall lines, sudo.
fn classify_generic(m: &[u8]) -> Classified<'_> {
    // Only where a PAM module writes it: at the start, or after the module's name. Elsewhere (a
    // command line in a sudo record, say) it is text someone typed.
    let pam_at = |needle: &[u8]| {
        find(m, needle).filter(|&i| {
            let prefix = &m[..i];
            prefix.len() <= 64
                && (prefix.is_empty()
                    || prefix.starts_with(b"pam_")
                    || prefix.starts_with(b"(pam_"))
        })
    };
    if let Some(i) = pam_at(b"authentication failure; ") {
        // `pam_unix(sshd:auth): authentication failure; logname= … rhost=H [user=U]`,
        // `(pam_unix) authentication failure; …`, `pam_unix: …`, or the tag held the module.
        let r = &m[i..];
        if i >= 5 && find(&m[..i], b"more ").is_some() {
            return Classified::with(EventClass::AuthLimit, pam_rhost(r));
        }
        return Classified::with(EventClass::PamFailure, pam_rhost(r));
    }
    if pam_at(b"check pass; user unknown").is_some() {
        return Classified::new(EventClass::PamFailure);
    }
    if let Some(src) = find(m, b"SRC=") {
        if find(m, b"IN=").is_some() || find(m, b" DST=").is_some() {
            return classify_firewall(m, src);
        }
    }
    if let Some(i) = rfind(m, b"FAIL LOGIN: Client \"") {
        // vsftpd: `[pid 1] [user] FAIL LOGIN: Client "::ffff:1.2.3.4"`; the user name comes
        // first, so the last occurrence is vsftpd's.
        let h = &m[i + 20..];
        let addr = h
            .iter()
            .position(|&b| b == b'"')
            .and_then(|e| norm_host(&h[..e]));
        return Classified::with(EventClass::AuthFailure, addr);
    }
    // sudo: `user : 3 incorrect password attempts ; TTY=pts/0 ; … ; COMMAND=…`, `user : user NOT
    // in sudoers ; …`. Only before the first ` ; `: the command line comes after it.
    let head = &m[..find(m, b" ; ").unwrap_or(m.len())];
    if find(head, b" : user NOT in sudoers").is_some() {
        return Classified::new(EventClass::InvalidUser);
    }
    if let Some(i) = find(head, b" incorrect password attempt") {
        let count = &head[..i];
        let digits = count
            .iter()
            .rev()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits > 0 && count[..count.len() - digits].ends_with(b" : ") {
            return Classified::new(EventClass::AuthLimit);
        }
    }
    OTHER
}

fn classify_firewall(m: &[u8], src_at: usize) -> Classified<'_> {
    let src = &m[src_at + 4..];
    let end = src.iter().position(|&b| b == b' ').unwrap_or(src.len());
    let addr = norm_host(&src[..end]);
    let Some(d) = find(m, b" DPT=") else {
        return Classified::with(EventClass::Other, addr);
    };
    let dp = &m[d + 5..];
    let dend = dp.iter().position(|&b| b == b' ').unwrap_or(dp.len());
    let dport = parse_u16(&dp[..dend]).unwrap_or(0);
    // The log prefix (`[UFW BLOCK]`, `iptables-drop:` …) is before `IN=`.
    let prefix = &m[..find(m, b"IN=").unwrap_or(src_at)];
    let dropped = !(find(prefix, b"ALLOW").is_some()
        || find(prefix, b"AUDIT").is_some()
        || find(prefix, b"ACCEPT").is_some());
    Classified::with(EventClass::FwDrop, addr).hint(Hint::Firewall { dport, dropped })
}

// ---------------------------------------------------------------------------------------------
// Address helpers.

/// `[preauth]` at the end of an sshd message.
fn has_preauth(m: &[u8]) -> bool {
    trim_end_ws(m).ends_with(b"[preauth]")
}

fn preauth_or_other<'a>(m: &[u8], addr: Option<&'a [u8]>) -> Classified<'a> {
    let class = if has_preauth(m) {
        EventClass::PreauthDisconnect
    } else {
        EventClass::Other
    };
    Classified::with(class, addr)
}

/// Address at the end of `… H port N [preauth]`, `… H [preauth]`, `… H port N` or `… H`.
struct TailAddr<'a> {
    addr: Option<&'a [u8]>,
    port: bool,
    preauth: bool,
}

impl<'a> TailAddr<'a> {
    fn parse(r: &'a [u8]) -> TailAddr<'a> {
        let mut t = trim_end_ws(r);
        let mut preauth = false;
        if let Some(x) = t.strip_suffix(b"[preauth]") {
            preauth = true;
            t = trim_end_ws(x);
        }
        let mut port = false;
        if let Some(sp) = t.iter().rposition(|&b| b == b' ') {
            if t[sp + 1..].iter().all(u8::is_ascii_digit) && sp + 1 < t.len() {
                if let Some(x) = t[..sp].strip_suffix(b" port") {
                    port = true;
                    t = x;
                }
            }
        }
        let start = t.iter().rposition(|&b| b == b' ').map_or(0, |p| p + 1);
        TailAddr {
            addr: norm_host(&t[start..]),
            port,
            preauth,
        }
    }
}

/// Token right before ` port N:` (`… user X H port N: reason`). The user name comes before it and
/// some reasons quote user names after it, so every such token is a candidate; when they
/// disagree the line gives no address.
fn host_before_port_colon(r: &[u8]) -> Option<&[u8]> {
    let mut found: Option<&[u8]> = None;
    let mut from = 0;
    while let Some(i) = find(&r[from..], b" port ") {
        let at = from + i;
        let digits = r[at + 6..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits > 0 && matches!(r.get(at + 6 + digits), Some(b':') | None) {
            let start = r[..at]
                .iter()
                .rposition(|&b| b == b' ')
                .map_or(0, |p| p + 1);
            if let Some(h) = norm_host(&r[start..at]) {
                match found {
                    None => found = Some(h),
                    Some(f) if f == h => {}
                    Some(_) => return None,
                }
            }
        }
        from = at + 6;
    }
    found
}

/// Skips ` port N` and ` sshN` after an address; returns the remainder.
fn after_port(rest: &[u8]) -> &[u8] {
    let mut r = rest;
    if let Some(x) = r.strip_prefix(b" port ") {
        let d = x.iter().take_while(|b| b.is_ascii_digit()).count();
        if d > 0 {
            r = &x[d..];
        }
    }
    if let Some(x) = r.strip_prefix(b" ssh") {
        let d = x.iter().take_while(|b| b.is_ascii_digit()).count();
        r = &x[d..];
    }
    r
}

/// The address of `Failed`/`Accepted`/`Postponed` lines (`… for U from H port N sshN[: <key>]`),
/// parsed from the end, and where its ` from ` starts (the end of the user name).
///
/// The last ` from H port N` followed by what sshd writes there (end of line, `[preauth]`, or a
/// key description) is the daemon's: the user name comes before it and cannot add text after it.
/// Otherwise (old `ssh1: ruser …` suffixes, a certificate key id containing ` from `), a single
/// ` from H port N: …` candidate is taken; several are ambiguous and give no address. A line
/// without a port (`… from H` at the end) is the last resort.
fn sshd_from_tail(s: &[u8]) -> (Option<&[u8]>, Option<usize>) {
    // Candidates in strict form, last first; a certificate's key id comes after the address and
    // may imitate one, so a certificate line with two strict candidates is ambiguous.
    let mut strict: (Option<&[u8]>, Option<usize>) = (None, None);
    let mut strict_cert = false;
    let mut strict_count = 0;
    for_each_from(s, |h, start, rest| {
        let (ported, r) = after_port_checked(rest);
        if !ported {
            return false;
        }
        let r = trim_end_ws(r);
        let key = match r.strip_prefix(b": ") {
            Some(k) => key_suffix(k),
            None if r.is_empty() || r == b" [preauth]" => KeySuffix::Plain,
            None => KeySuffix::No,
        };
        if key == KeySuffix::No {
            return false;
        }
        strict_count += 1;
        if strict_count == 1 {
            strict = (Some(h), Some(start));
            strict_cert = key == KeySuffix::Cert;
            // Nothing client-supplied follows a plain key: the last candidate is the daemon's.
            return !strict_cert;
        }
        true
    });
    if strict_count == 1 || (strict_count > 1 && !strict_cert) {
        return strict;
    }
    if strict_count > 1 {
        return (None, None);
    }
    let mut found: (Option<&[u8]>, Option<usize>) = (None, None);
    let mut candidates = 0;
    for_each_from(s, |h, start, rest| {
        let (ported, r) = after_port_checked(rest);
        if ported && r.first() == Some(&b':') {
            candidates += 1;
            found = (Some(h), Some(start));
        }
        false
    });
    match candidates {
        1 => found,
        0 => from_host_pos(s, |rest| trim_end_ws(rest).is_empty()),
        _ => (None, None),
    }
}

/// ` port N` then an optional ` sshN`: whether the port was there, and the remainder.
fn after_port_checked(rest: &[u8]) -> (bool, &[u8]) {
    let r = after_port(rest);
    (r.len() < rest.len() && rest.starts_with(b" port "), r)
}

/// How the text after `sshN: ` reads as a key description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeySuffix {
    /// Not a key description.
    No,
    /// `TYPE FINGERPRINT` (or nothing at all).
    Plain,
    /// `TYPE-CERT FP ID <key id> (serial N) CA TYPE FP`: the key id is client-supplied.
    Cert,
}

/// What sshd writes after `sshN: ` for a key: `TYPE FINGERPRINT`, or for a certificate
/// `TYPE-CERT FP ID <key id> (serial N) CA TYPE FP`.
fn key_suffix(r: &[u8]) -> KeySuffix {
    let word = |t: &[u8]| {
        !t.is_empty()
            && t.iter()
                .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'@' | b'.'))
    };
    let fp = |t: &[u8]| !t.is_empty() && !t.contains(&b' ');
    let mut parts = r.splitn(3, |&b| b == b' ');
    let (Some(kind), Some(print)) = (parts.next(), parts.next()) else {
        return KeySuffix::No;
    };
    if !word(kind) || !fp(print) {
        return KeySuffix::No;
    }
    let Some(cert) = parts.next() else {
        return KeySuffix::Plain;
    };
    let Some(id_and_ca) = cert.strip_prefix(b"ID ") else {
        return KeySuffix::No;
    };
    let Some(ca) = rfind(id_and_ca, b" CA ") else {
        return KeySuffix::No;
    };
    let mut t = id_and_ca[ca + 4..].splitn(2, |&b| b == b' ');
    match (t.next(), t.next()) {
        (Some(k), Some(p)) if word(k) && fp(p) && id_and_ca[..ca].ends_with(b")") => {
            KeySuffix::Cert
        }
        _ => KeySuffix::No,
    }
}

/// Calls `f(host, start_of_from, rest_after_host)` for each ` from <host>` of `s`, last first,
/// until `f` returns true.
fn for_each_from<'a>(s: &'a [u8], mut f: impl FnMut(&'a [u8], usize, &'a [u8]) -> bool) {
    let mut end = s.len();
    while let Some(at) = rfind(&s[..end], b"from ") {
        if at == 0 || s[at - 1] == b' ' {
            let start = at.saturating_sub(1);
            if let Some((h, used)) = host_token(&s[at + 5..]) {
                if f(h, start, &s[at + 5 + used..]) {
                    return;
                }
            }
        }
        // Occurrences of `from ` cannot overlap: the next one ends before this one starts.
        end = at;
    }
}

/// Last ` from <host>` whose remainder satisfies `accept`.
fn from_host(s: &[u8], accept: impl Fn(&[u8]) -> bool) -> Option<&[u8]> {
    from_host_pos(s, accept).0
}

/// Like [`from_host`], also returning where the accepted ` from ` starts (end of the user name).
/// Scans from the end: what a daemon writes after the address follows every client-supplied
/// field, so the last match is the daemon's.
fn from_host_pos(s: &[u8], accept: impl Fn(&[u8]) -> bool) -> (Option<&[u8]>, Option<usize>) {
    let mut out = (None, None);
    for_each_from(s, |h, start, rest| {
        if accept(rest) {
            out = (Some(h), Some(start));
            true
        } else {
            false
        }
    });
    out
}

/// Dropbear: ` from H:P` at the end of the line (the last one: user names are quoted earlier).
fn dropbear_from(r: &[u8]) -> Option<&[u8]> {
    last_from_host_port(r)
}

fn last_from_host_port(r: &[u8]) -> Option<&[u8]> {
    let t = trim_end_ws(r);
    let i = rfind(t, b" from ")?;
    let tok = &t[i + 6..];
    if tok.contains(&b' ') {
        return None;
    }
    host_port_token(tok)
}

/// `<H:P>`.
fn angle_host(r: &[u8]) -> Option<&[u8]> {
    let o = find(r, b"<")?;
    let c = r[o..].iter().position(|&b| b == b'>')?;
    host_port_token(&r[o + 1..o + c])
}

/// `H:P` (Dropbear, Mosquitto), with or without the port; `[H]:P` too.
fn host_port_token(r: &[u8]) -> Option<&[u8]> {
    let end = r.iter().position(|&b| b == b' ').unwrap_or(r.len());
    let tok = trim_punct(&r[..end]);
    if let Some(inner) = tok.strip_prefix(b"[") {
        let c = inner.iter().position(|&b| b == b']')?;
        return norm_host(&inner[..c]);
    }
    if let Some(c) = tok.iter().rposition(|&b| b == b':') {
        if c + 1 < tok.len() && tok[c + 1..].iter().all(u8::is_ascii_digit) {
            if let Some(h) = norm_host(&tok[..c]) {
                return Some(h);
            }
        }
    }
    norm_host(tok)
}

/// The address token at the start of `s` (up to a space), trailing punctuation removed.
/// Returns the normalised host and the bytes consumed.
fn host_token(s: &[u8]) -> Option<(&[u8], usize)> {
    let end = s.iter().position(|&b| b == b' ').unwrap_or(s.len());
    norm_host(trim_punct(&s[..end])).map(|h| (h, end))
}

fn trim_punct(t: &[u8]) -> &[u8] {
    let mut e = t.len();
    while e > 0 && matches!(t[e - 1], b':' | b',' | b'.' | b';' | b')' | b'\'' | b'"') {
        // Keep the `::` of an IPv6 address like `fe80::`.
        if t[e - 1] == b':' && e >= 2 && t[e - 2] == b':' {
            break;
        }
        e -= 1;
    }
    &t[..e]
}

/// `rhost=` of a PAM record (`… ruser=R rhost=H [user=U]`). `ruser=` and `user=` are
/// client-controlled and may hold text like ` rhost=X user=`, so every `rhost=` that follows a
/// `ruser=` and is followed by what libpam writes next (end of record, `user=`, `[preauth]`) is a
/// candidate; when the candidates disagree the record is ambiguous and gives no address.
fn pam_rhost(r: &[u8]) -> Option<&[u8]> {
    let first_ruser = find(r, b"ruser=");
    let mut found: Option<&[u8]> = None;
    let mut from = 0;
    while let Some(i) = find(&r[from..], b"rhost=") {
        let at = from + i;
        from = at + 6;
        if at == 0 || r[at - 1] != b' ' || first_ruser.is_some_and(|u| at < u) {
            continue;
        }
        let v = &r[at + 6..];
        let end = v.iter().position(|&b| b == b' ').unwrap_or(v.len());
        let rest = trim_start_ws(trim_end_ws(&v[end..]));
        if !(rest.is_empty() || rest.starts_with(b"user=") || rest == b"[preauth]") {
            continue;
        }
        // An empty `rhost=` (local login) is a candidate too: it disagrees with any address.
        let h = &v[..end];
        match found {
            None => found = Some(h),
            Some(f) if f == h => {}
            Some(_) => return None,
        }
    }
    found.and_then(norm_host)
}

/// Normalises and validates an address token: an IP literal (IPv4-mapped IPv6 reduced to IPv4)
/// or a DNS name. Anything else (`UNKNOWN`, `183.106.179.x`, quotes) is rejected.
pub(crate) fn norm_host(t: &[u8]) -> Option<&[u8]> {
    if t.is_empty() || t.len() > 255 {
        return None;
    }
    let t = if t.len() > 7 && t[..7].eq_ignore_ascii_case(b"::ffff:") && is_ipv4ish(&t[7..]) {
        &t[7..]
    } else {
        t
    };
    if is_ipv4ish(t) || is_ipv6(t) || is_dns_name(t) {
        Some(t)
    } else {
        None
    }
}

/// Four dot-separated groups of 1–3 digits (leading zeros kept as written).
fn is_ipv4ish(t: &[u8]) -> bool {
    let mut groups = 0;
    for g in t.split(|&b| b == b'.') {
        if g.is_empty() || g.len() > 3 || !g.iter().all(u8::is_ascii_digit) {
            return false;
        }
        groups += 1;
    }
    groups == 4
}

fn is_ipv6(t: &[u8]) -> bool {
    let t = match t.iter().position(|&b| b == b'%') {
        Some(p) => &t[..p],
        None => t,
    };
    let colons = t.iter().filter(|&&b| b == b':').count();
    if !(2..=7).contains(&colons) {
        return false;
    }
    std::str::from_utf8(t)
        .ok()
        .and_then(|s| s.parse::<std::net::Ipv6Addr>().ok())
        .is_some()
}

fn is_dns_name(t: &[u8]) -> bool {
    if !t.contains(&b'.') || t.first() == Some(&b'.') || t.first() == Some(&b'-') {
        return false;
    }
    if !t
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return false;
    }
    let t = t.strip_suffix(b".").unwrap_or(t);
    let Some(tld) = t.rsplit(|&b| b == b'.').next() else {
        return false;
    };
    tld.len() >= 2
        && tld.iter().all(|b| b.is_ascii_alphabetic())
        && t.split(|&b| b == b'.').all(|l| !l.is_empty())
}

// ---------------------------------------------------------------------------------------------
// Byte helpers.

/// Position of `needle` in `hay`.
#[inline]
pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    if hay.len() < needle.len() {
        return None;
    }
    let last_start = hay.len() - needle.len();
    let mut i = 0;
    while i <= last_start {
        match hay[i..=last_start].iter().position(|&b| b == first) {
            None => return None,
            Some(p) => {
                i += p;
                if &hay[i + 1..i + needle.len()] == rest {
                    return Some(i);
                }
                i += 1;
            }
        }
    }
    None
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if hay.len() < needle.len() || needle.is_empty() {
        return None;
    }
    (0..=hay.len() - needle.len())
        .rev()
        .find(|&i| &hay[i..i + needle.len()] == needle)
}

fn starts_with_ci(s: &[u8], p: &[u8]) -> bool {
    s.len() >= p.len() && s[..p.len()].eq_ignore_ascii_case(p)
}

fn strip_prefix_ci<'a>(s: &'a [u8], p: &[u8]) -> Option<&'a [u8]> {
    if starts_with_ci(s, p) {
        Some(&s[p.len()..])
    } else {
        None
    }
}

fn trim_end_ws(s: &[u8]) -> &[u8] {
    let mut e = s.len();
    while e > 0 && matches!(s[e - 1], b' ' | b'\t' | b'\r' | b'\n') {
        e -= 1;
    }
    &s[..e]
}

fn trim_start_ws(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
    &s[n..]
}

fn parse_u16(s: &[u8]) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter()
        .try_fold(0u32, |a, &b| Some(a * 10 + u32::from(b - b'0')))
        .and_then(|v| u16::try_from(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(msg: &str) -> (EventClass, Option<String>) {
        let r = classify(msg.as_bytes());
        (
            r.class,
            r.addr.map(|a| String::from_utf8_lossy(a).into_owned()),
        )
    }

    fn is(msg: &str, class: EventClass, addr: Option<&str>) {
        assert_eq!(c(msg), (class, addr.map(str::to_owned)), "{msg}");
    }

    #[test]
    fn failed_password_takes_the_address_from_the_daemon_field_not_the_user_name() {
        use EventClass::AuthFailure as F;
        is(
            "Failed password for invalid user from 10.10.1.1 from 127.0.0.1 port 58946 ssh2",
            F,
            Some("127.0.0.1"),
        );
        is(
            "Failed password for invalid user test from 10.10.1.2 port 55555 ssh2 from 127.0.0.1 port 58946 ssh2",
            F,
            Some("127.0.0.1"),
        );
        // sshd writes nothing but a key description after `ssh2: `, so this is the user name
        // `test from 127.0.0.1 port 58946 ssh2:` failing from 10.10.1.2.
        is("Failed password for invalid user test from 127.0.0.1 port 58946 ssh2: from 10.10.1.2 port 55555 ssh2", F, Some("10.10.1.2"));
        is(
            "Failed password for user from 127.0.0.1 port 20000 ssh1: ruser from 1.2.3.4",
            F,
            Some("127.0.0.1"),
        );
        is(
            "Failed password for invalid user a from 10.9.9.9 port 22 ssh2: x from 192.0.2.5 port 4711 ssh2",
            F,
            Some("192.0.2.5"),
        );
        is(
            "Failed publickey for invalid user a from 10.9.9.9 port 22 ssh2: RSA SHA256:x from 192.0.2.5 port 4711 ssh2: ED25519 SHA256:Zm9v",
            F,
            Some("192.0.2.5"),
        );
        is(
            "Accepted publickey for git from 192.0.2.6 port 9 ssh2: ED25519-CERT SHA256:AAA ID gw-7 (serial 3) CA ED25519 SHA256:BBB",
            EventClass::AuthSuccess,
            Some("192.0.2.6"),
        );
        // A certificate key id containing ` from … ssh2: `: one reading only, the key id's.
        is(
            "Failed publickey for invalid user a from 192.0.2.6 port 9 ssh2: ED25519-CERT SHA256:AAA ID x from 10.9.9.9 port 22 ssh2: y (serial 3) CA ED25519 SHA256:BBB",
            F,
            Some("192.0.2.6"),
        );
        // A key id imitating a whole certificate description: two readings, no address.
        is(
            "Failed publickey for invalid user a from 192.0.2.6 port 9 ssh2: ED25519-CERT SHA256:AAA ID x from 10.9.9.9 port 22 ssh2: T-CERT F ID z (serial 3) CA ED25519 SHA256:BBB",
            F,
            None,
        );
        is(
            "Failed password for invalid user ROOT from aaaa:bbbb:cccc:1234::1:1",
            F,
            Some("aaaa:bbbb:cccc:1234::1:1"),
        );
    }

    #[test]
    fn pam_rhost_ignores_injected_values() {
        use EventClass::PamFailure as P;
        is("pam_unix(auth): authentication failure; logname= uid=0 euid=0 tty=xxx ruser=test rhost=192.0.2.151 rhost=192.0.2.1", P, Some("192.0.2.1"));
        // `user=` holding a second `rhost=`: two readings, no address.
        is("pam_unix(auth): authentication failure; logname= uid=0 euid=0 tty=xxx ruser= rhost=192.0.2.2 user=test rhost=192.0.2.152", P, None);
        // `ruser=` holding `rhost=A user=…` before the real `rhost=`: two readings, no address.
        is("pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser=x rhost=10.9.9.9 user=y rhost=192.0.2.3  user=root", P, None);
        is("pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=192.0.2.3  user=root", P, Some("192.0.2.3"));
        is("pam_unix(sshd:auth): check pass; user unknown", P, None);
    }

    #[test]
    fn mosquitto_and_dropbear_lines() {
        is(
            "1795801275: Client <unknown> disconnected, not authorised.",
            EventClass::MqttNotAuthorised,
            None,
        );
        is(
            "Client gw-telemetry already connected, closing old connection.",
            EventClass::MqttClientIdConflict,
            None,
        );
        is(
            "New connection from 127.0.0.1:38614 on port 18830.",
            EventClass::Other,
            Some("127.0.0.1"),
        );
        is("Client connection from 127.0.0.1 failed: error:0A00010B:SSL routines::wrong version number.", EventClass::TlsFailure, Some("127.0.0.1"));
        is(
            "login attempt for nonexistent user from ::ffff:198.51.100.215:60495",
            EventClass::InvalidUser,
            Some("198.51.100.215"),
        );
        is("[825] Jul 10 23:57:29 Exit before auth from <192.0.2.3:52289>: (user 'root', 10 fails): Max auth tries reached - user 'root'", EventClass::AuthLimit, Some("192.0.2.3"));
        is("Exit before auth (user 'x <10.9.9.9:22>', 10 fails): Max auth tries reached - user 'x <10.9.9.9:22>' from 192.0.2.4:5", EventClass::AuthLimit, Some("192.0.2.4"));
    }

    #[test]
    fn text_typed_into_a_command_line_or_user_name_is_not_an_event() {
        use EventClass::*;
        is("pi : TTY=pts/0 ; PWD=/home/pi ; USER=root ; COMMAND=/bin/echo authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=10.9.9.9", Other, None);
        is("pi : TTY=pts/0 ; PWD=/home/pi ; USER=root ; COMMAND=/bin/echo pi : 3 incorrect password attempts", Other, None);
        is(
            "pi : TTY=pts/0 ; PWD=/ ; USER=root ; COMMAND=/bin/echo x : user NOT in sudoers",
            Other,
            None,
        );
        is("pi : 3 incorrect password attempts ; TTY=pts/0 ; PWD=/home/pi ; USER=root ; COMMAND=/bin/ls", AuthLimit, None);
        is(
            "mosquitto_sub: authentication failure; rhost=10.9.9.9",
            Other,
            None,
        );
        is(
            "[pid 1] [x] FAIL LOGIN: Client \"10.9.9.9\"] FAIL LOGIN: Client \"::ffff:192.0.2.8\"",
            AuthFailure,
            Some("192.0.2.8"),
        );
    }

    #[test]
    fn mqtt_client_ids_are_matched_by_the_whole_ending() {
        let evil = classify(
            b"Client evil already connected, closing old connection. closed its connection.",
        );
        assert_eq!(evil.class, EventClass::Other);
        let real = classify(b"Client a b already connected, closing old connection.");
        assert_eq!(real.class, EventClass::MqttClientIdConflict);
        assert_eq!(real.hint, Hint::ClientId(b"a b"));
        let long = format!(
            "Client {} already connected, closing old connection.",
            "x".repeat(60 * 1024)
        );
        match classify(long.as_bytes()).hint {
            Hint::ClientId(id) => assert_eq!(id.len(), MAX_CLIENT_ID),
            h => panic!("{h:?}"),
        }
    }

    #[test]
    fn lines_of_other_daemons_and_versions() {
        use EventClass::*;
        is("Disconnecting authenticating user root 198.51.100.4 port 22: Too many authentication failures [preauth]", PreauthDisconnect, Some("198.51.100.4"));
        is("Disconnecting invalid user a 10.9.9.9 port 22: x 198.51.100.4 port 22: Too many authentication failures [preauth]", PreauthDisconnect, None);
        is(
            "Connection closed by UNKNOWN port 65535 [preauth]",
            PreauthDisconnect,
            None,
        );
        is(
            "fatal: ssh_packet_get_string: string is too large [preauth]",
            PreauthDisconnect,
            None,
        );
        is("Protocol major versions differ for 198.51.100.5 port 4000: SSH-2.0-OpenSSH vs. SSH-1.5-Nmap", PreauthDisconnect, Some("198.51.100.5"));
        is(
            "drop connection #3 from [198.51.100.6]:5000 on [10.0.0.1]:22 past MaxStartups",
            ConnRefused,
            Some("198.51.100.6"),
        );
        is("pi : 3 incorrect password attempts ; TTY=pts/0 ; PWD=/home/pi ; USER=root ; COMMAND=/bin/ls", AuthLimit, None);
        is("pam_unix(sudo:auth): authentication failure; logname=pi uid=1000 euid=0 tty=/dev/pts/0 ruser=pi rhost=  user=pi", PamFailure, None);
        is("FAILED LOGIN (1) on '/dev/tty1' FROM '198.51.100.7' FOR 'root', Authentication failure", AuthFailure, Some("198.51.100.7"));
        is(
            "OpenSSL Error: error:14094418:SSL routines:ssl3_read_bytes:tlsv1 alert unknown ca",
            TlsFailure,
            None,
        );
        is(
            "OpenSSL Error[1]: error:0A000126:SSL routines::unexpected eof while reading",
            Other,
            None,
        );
        is(
            "Client sensor-1 [198.51.100.8:4000] disconnected, not authorised.",
            MqttNotAuthorised,
            Some("198.51.100.8"),
        );
        is(
            "Denied PUBLISH from sensor-7 (d0, q0, r0, m0, 'plant/secret', ... (5 bytes))",
            MqttAclDenied,
            None,
        );
        is("[UFW BLOCK] IN=eth0 OUT= MAC=00 SRC=2001:db8::1 DST=2001:db8::2 LEN=60 PROTO=TCP SPT=1 DPT=22", FwDrop, Some("2001:db8::1"));
        is(
            "[UFW BLOCK] IN=eth0 OUT= SRC=198.51.100.9 DST=10.0.0.1 LEN=84 PROTO=ICMP TYPE=8",
            Other,
            Some("198.51.100.9"),
        );
        is(
            "Exit before auth from <198.51.100.10:5000>: Exited normally",
            PreauthDisconnect,
            Some("198.51.100.10"),
        );
        is("Pubkey auth succeeded for 'root' with ssh-ed25519 key SHA256:abc from 198.51.100.11:5000", AuthSuccess, Some("198.51.100.11"));
        is(
            "Timeout, client not responding from user root 198.51.100.12 port 22",
            Other,
            None,
        );
        is("\u{0}\u{ff}\u{fe} garbage", Other, None);
    }

    #[test]
    fn hosts_are_validated() {
        assert_eq!(norm_host(b"183.106.179.x"), None);
        assert_eq!(norm_host(b"UNKNOWN"), None);
        assert_eq!(norm_host(b"example.com"), Some(&b"example.com"[..]));
        assert_eq!(norm_host(b"::ffff:1.2.3.4"), Some(&b"1.2.3.4"[..]));
        assert_eq!(norm_host(b"192.030.0.6"), Some(&b"192.030.0.6"[..]));
        assert_eq!(find(b"abcabd", b"abd"), Some(3));
        assert_eq!(find(b"ab", b"abc"), None);
    }
}
