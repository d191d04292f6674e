//! Per-stream connection context: which client a line without an address belongs to, and how
//! many authentication attempts a line adds.
//!
//! sshd and Dropbear fork one process per connection, so lines of the same (host, program, pid)
//! belong to one client. A connection-opening line (`Connection from H port N on …`,
//! `SSH: Server;…;Remote: H-port`, Dropbear's `Child connection from H:P`) gives the process its
//! client address; later lines of that process without an address inherit it as their source.
//! Mosquitto is a single process: its refusal lines (`not authorised`, `OpenSSL Error`) carry no
//! address, and the client is most likely the one of the latest `New connection from` line. That
//! guess is used to attribute the event (the *peer*) but is not reported as the line's source.
//!
//! One SSH attempt writes several lines (a PAM failure, a `Failed password`, a `Connection
//! closed … [preauth]`). Attempts, not lines, are counted: a `Failed …` line is one attempt; an
//! `Invalid user`/PAM line opens an attempt that the next `Failed …` of the same process
//! completes; a summary or disconnect line counts only when the connection counted nothing else.
//! `Failed publickey` for an existing user is a client offering its keys one by one and is not
//! counted (the connection's disconnect or auth-limit line counts if no key is accepted).
//!
//! The table is bounded; when full, the least recently used half is dropped.

use crate::hash::fnv1a;
use std::collections::HashMap;
use std::sync::Arc;

use super::class::EventClass;
use super::classify::{Classified, Hint};

/// Connections remembered per stream before the oldest are dropped.
pub const MAX_CONNECTIONS: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ConnKey {
    host: u64,
    program: u64,
    pid: u32,
}

#[derive(Debug, Default)]
struct ConnState {
    /// Address from the connection-opening line (process-per-connection servers).
    start: Option<Arc<str>>,
    /// Latest address seen on this process (or, for single-process servers, on the stream).
    last: Option<Arc<str>>,
    /// Something on this connection was counted as an attempt.
    counted: bool,
    /// An attempt was counted from a precursor line (invalid user, PAM) and not yet completed
    /// by its `Failed …` line.
    open_attempt: bool,
    open_user: u64,
    used: u64,
}

/// What the context adds to a classified line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribution {
    /// The line's client address: its own, or the one of its process' connection-opening line.
    pub src: Option<Arc<str>>,
    /// Best guess at the client, for counting and alerts: `src`, else the latest address seen on
    /// the same process (or on the single-process server's stream).
    pub peer: Option<Arc<str>>,
    /// Authentication attempts this line adds (0 or 1).
    pub attempts: u8,
}

/// Connection context of one stream (one file or the journal).
#[derive(Debug, Default)]
pub struct Context {
    conns: HashMap<ConnKey, ConnState>,
    clock: u64,
    evicted: u64,
}

fn to_shared(b: &[u8]) -> Arc<str> {
    Arc::from(String::from_utf8_lossy(b))
}

impl Context {
    /// An empty context.
    pub fn new() -> Context {
        Context::default()
    }

    /// Connections dropped because the table was full.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Attributes one classified line of (`host`, `program`, `pid`).
    pub fn attribute(
        &mut self,
        host: &[u8],
        program: &[u8],
        pid: Option<u32>,
        c: &Classified<'_>,
    ) -> Attribution {
        self.clock += 1;
        let own: Option<Arc<str>> = c.addr.map(to_shared);
        let key = ConnKey {
            host: fnv1a(host),
            program: fnv1a(program),
            pid: pid.unwrap_or(0),
        };
        if self.conns.len() >= MAX_CONNECTIONS && !self.conns.contains_key(&key) {
            self.evict_half();
        }
        let clock = self.clock;
        let st = self.conns.entry(key).or_default();
        st.used = clock;
        if c.hint == Hint::ProcessConnStart && own.is_some() && pid.is_some() {
            // A new connection on this process id (pids are reused): forget the old one.
            *st = ConnState {
                start: own.clone(),
                last: own.clone(),
                used: clock,
                ..ConnState::default()
            };
        }
        // The connection-opening line is written before the client sends anything, so its address
        // is the connection's own; a later line of the same process naming another address has
        // been shaped by client input and yields to it.
        let start = if pid.is_some() {
            st.start.clone()
        } else {
            None
        };
        let src = match (own.clone(), start) {
            (Some(o), Some(s)) if o != s => Some(s),
            (o, s) => o.or(s),
        };
        let peer = src.clone().or_else(|| st.last.clone());
        if let Some(o) = own {
            st.last = Some(o);
        }
        let attempts = count_attempt(st, pid.is_some(), c);
        Attribution {
            src,
            peer,
            attempts,
        }
    }

    fn evict_half(&mut self) {
        let mut ages: Vec<u64> = self.conns.values().map(|s| s.used).collect();
        let mid = ages.len() / 2;
        let (_, cut, _) = ages.select_nth_unstable(mid);
        let cut = *cut;
        let before = self.conns.len();
        self.conns.retain(|_, s| s.used > cut);
        self.evicted += (before - self.conns.len()) as u64;
    }
}

fn count_attempt(st: &mut ConnState, per_process: bool, c: &Classified<'_>) -> u8 {
    let user = c.invalid_user.map(fnv1a).unwrap_or(0);
    match c.class {
        // A key offered and refused for an existing user is not a guess; the connection's
        // outcome (accepted, or a pre-auth disconnect / auth limit) is what counts.
        EventClass::AuthFailure if c.hint == Hint::KeyOffer => 0,
        EventClass::AuthFailure => {
            st.counted = true;
            if per_process && st.open_attempt {
                st.open_attempt = false;
                0
            } else {
                1
            }
        }
        EventClass::InvalidUser => {
            st.counted = true;
            if per_process
                && st.open_attempt
                && (st.open_user == user || user == 0 || st.open_user == 0)
            {
                if user != 0 {
                    st.open_user = user;
                }
                0
            } else {
                st.open_attempt = per_process;
                st.open_user = user;
                1
            }
        }
        EventClass::PamFailure => {
            st.counted = true;
            if per_process && st.open_attempt {
                0
            } else {
                st.open_attempt = per_process;
                st.open_user = 0;
                1
            }
        }
        EventClass::AuthLimit | EventClass::PreauthDisconnect => {
            if per_process && st.counted {
                0
            } else {
                st.counted = true;
                1
            }
        }
        EventClass::MqttNotAuthorised => 1,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::classify::classify;

    fn attempts(lines: &[(u32, &str)]) -> u32 {
        let mut ctx = Context::new();
        lines
            .iter()
            .map(|(pid, m)| {
                u32::from(
                    ctx.attribute(b"h", b"sshd", Some(*pid), &classify(m.as_bytes()))
                        .attempts,
                )
            })
            .sum()
    }

    #[test]
    fn one_ssh_attempt_over_several_lines_counts_once() {
        assert_eq!(
            attempts(&[
                (7, "Invalid user admin from 192.0.2.3 port 4"),
                (7, "pam_unix(sshd:auth): check pass; user unknown"),
                (7, "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=192.0.2.3"),
                (7, "Failed password for invalid user admin from 192.0.2.3 port 4 ssh2"),
                (7, "Connection closed by invalid user admin 192.0.2.3 port 4 [preauth]"),
            ]),
            1
        );
    }

    #[test]
    fn several_passwords_on_one_connection_count_each() {
        assert_eq!(
            attempts(&[
                (8, "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=192.0.2.4  user=root"),
                (8, "Failed password for root from 192.0.2.4 port 5 ssh2"),
                (8, "Failed password for root from 192.0.2.4 port 5 ssh2"),
                (8, "Failed password for root from 192.0.2.4 port 5 ssh2"),
                (8, "error: maximum authentication attempts exceeded for root from 192.0.2.4 port 5 ssh2 [preauth]"),
                (8, "Disconnecting authenticating user root 192.0.2.4 port 5: Too many authentication failures [preauth]"),
            ]),
            3
        );
    }

    #[test]
    fn refused_keys_of_an_existing_user_are_not_guesses() {
        assert_eq!(
            attempts(&[
                (
                    9,
                    "Failed publickey for git from 192.0.2.1 port 6 ssh2: ECDSA 0e:ff"
                ),
                (
                    9,
                    "Failed publickey for git from 192.0.2.1 port 6 ssh2: RSA 04:bc"
                ),
                (
                    9,
                    "Accepted publickey for git from 192.0.2.1 port 6 ssh2: DSA 36:48"
                ),
            ]),
            0
        );
    }

    #[test]
    fn the_connection_address_is_inherited_by_lines_without_one() {
        let mut ctx = Context::new();
        let c = classify(b"Connection from 192.0.2.10 port 62004 on 192.0.2.1 port 22");
        ctx.attribute(b"h", b"sshd", Some(3), &c);
        let a = ctx.attribute(
            b"h",
            b"sshd",
            Some(3),
            &classify(b"fatal: Unable to negotiate a key exchange method [preauth]"),
        );
        assert_eq!(a.src.as_deref(), Some("192.0.2.10"));
        let other = ctx.attribute(
            b"h",
            b"sshd",
            Some(4),
            &classify(b"fatal: Unable to negotiate a key exchange method [preauth]"),
        );
        assert_eq!(other.src, None);
    }

    #[test]
    fn a_line_naming_another_address_than_its_connection_yields_to_the_connection() {
        let mut ctx = Context::new();
        let c = classify(b"Connection from 192.0.2.10 port 62004 on 192.0.2.1 port 22");
        ctx.attribute(b"h", b"sshd", Some(3), &c);
        let forged = classify(b"Failed password for invalid user x from 10.9.9.9 port 22 ssh2");
        let a = ctx.attribute(b"h", b"sshd", Some(3), &forged);
        assert_eq!(a.src.as_deref(), Some("192.0.2.10"));
    }
}
