//! The systemd service contract (`Type=notify`): `READY=1` once the first tick has completed,
//! `WATCHDOG=1` from the tick loop, `STOPPING=1` when shutting down.
//!
//! The protocol is one datagram per message to the Unix socket named by `$NOTIFY_SOCKET`
//! (`sd_notify(3)`): a path, or an abstract socket when it starts with `@`. No library and no
//! unsafe code: `std`'s `UnixDatagram` does it all. Without `$NOTIFY_SOCKET` (run by hand, in
//! tests, under another supervisor) every call is a no-op.
//!
//! The watchdog (`WatchdogSec=` in the unit, passed as `$WATCHDOG_USEC`) is kept alive at half
//! its period from the same loop that collects and stores: a loop that stalls stops pinging, and
//! systemd kills and restarts the service.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use tracing::{debug, warn};

/// Environment variable naming the notification socket.
pub const ENV_NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
/// Environment variable carrying the watchdog period in microseconds.
pub const ENV_WATCHDOG_USEC: &str = "WATCHDOG_USEC";
/// Environment variable naming the process the watchdog period is meant for.
pub const ENV_WATCHDOG_PID: &str = "WATCHDOG_PID";

/// Why `$NOTIFY_SOCKET` cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// The variable is neither an absolute path nor an abstract name (`@…`).
    #[error(
        "${ENV_NOTIFY_SOCKET}={0:?} is neither an absolute path nor an abstract socket name (@…)"
    )]
    BadAddress(String),
    /// The socket address cannot be built or the socket cannot be created.
    #[error("${ENV_NOTIFY_SOCKET}={addr:?}: {source}")]
    Socket {
        /// The variable's value.
        addr: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// A connection to systemd's notification socket.
#[derive(Debug)]
pub struct Notifier {
    sock: UnixDatagram,
    addr: SocketAddr,
    /// What `$NOTIFY_SOCKET` said, for messages.
    name: String,
}

impl Notifier {
    /// Parses a `$NOTIFY_SOCKET` value: `/path` or `@abstract-name`.
    pub fn new(value: &str) -> Result<Notifier, NotifyError> {
        let socket_err = |source| NotifyError::Socket {
            addr: value.to_owned(),
            source,
        };
        let addr = if let Some(name) = value.strip_prefix('@') {
            abstract_addr(name.as_bytes()).map_err(socket_err)?
        } else if value.starts_with('/') {
            SocketAddr::from_pathname(value).map_err(socket_err)?
        } else {
            return Err(NotifyError::BadAddress(value.to_owned()));
        };
        let sock = UnixDatagram::unbound().map_err(socket_err)?;
        Ok(Notifier {
            sock,
            addr,
            name: value.to_owned(),
        })
    }

    /// The notifier of `$NOTIFY_SOCKET`, `None` when it is unset or empty.
    pub fn from_env() -> Result<Option<Notifier>, NotifyError> {
        match std::env::var(ENV_NOTIFY_SOCKET) {
            Ok(v) if !v.is_empty() => Notifier::new(&v).map(Some),
            Ok(_) | Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(v)) => {
                Err(NotifyError::BadAddress(v.to_string_lossy().into_owned()))
            }
        }
    }

    /// Sends one message, e.g. `READY=1` (several assignments are separated by newlines).
    pub fn send(&self, message: &str) -> io::Result<()> {
        let n = self.sock.send_to_addr(message.as_bytes(), &self.addr)?;
        if n != message.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short datagram: {n} of {} bytes", message.len()),
            ));
        }
        Ok(())
    }

    /// The socket the messages go to, as `$NOTIFY_SOCKET` named it.
    pub fn socket_name(&self) -> &str {
        &self.name
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_addr(name: &[u8]) -> io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt as _;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_addr(_name: &[u8]) -> io::Result<SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract Unix sockets exist only on Linux",
    ))
}

/// The watchdog period for this process: `$WATCHDOG_USEC` when set, positive, and meant for us
/// (`$WATCHDOG_PID` unset or equal to our pid).
pub fn watchdog_period() -> Option<Duration> {
    watchdog_period_from(
        std::env::var(ENV_WATCHDOG_USEC).ok().as_deref(),
        std::env::var(ENV_WATCHDOG_PID).ok().as_deref(),
        std::process::id(),
    )
}

fn watchdog_period_from(usec: Option<&str>, pid: Option<&str>, own: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(p) = pid.filter(|p| !p.is_empty()) {
        if p.trim().parse::<u32>().ok()? != own {
            return None;
        }
    }
    Some(Duration::from_micros(usec))
}

/// The agent's side of the contract, driven by the tick loop.
#[derive(Debug)]
pub struct ServiceNotify {
    notifier: Option<Notifier>,
    watchdog: Option<Duration>,
    ready: bool,
    failed: bool,
}

impl ServiceNotify {
    /// From the environment systemd sets; a bad `$NOTIFY_SOCKET` is logged and ignored (the
    /// agent still runs; under `Type=notify` systemd will then time the start out and say so).
    pub fn from_env() -> ServiceNotify {
        let notifier = match Notifier::from_env() {
            Ok(n) => n,
            Err(e) => {
                warn!(error = %e, "Cannot notify systemd; readiness and watchdog are not reported.");
                None
            }
        };
        let watchdog = notifier.as_ref().and(watchdog_period());
        ServiceNotify::new(notifier, watchdog)
    }

    /// With an explicit notifier and watchdog period (tests).
    pub fn new(notifier: Option<Notifier>, watchdog: Option<Duration>) -> ServiceNotify {
        ServiceNotify {
            notifier,
            watchdog,
            ready: false,
            failed: false,
        }
    }

    /// How often [`ServiceNotify::watchdog`] must be called: half the watchdog period, or
    /// `None` without a watchdog.
    pub fn ping_every(&self) -> Option<Duration> {
        self.watchdog
            .map(|w| (w / 2).max(Duration::from_millis(100)))
    }

    /// A tick completed: `READY=1` the first time, and a watchdog ping.
    pub fn tick_done(&mut self) {
        if !self.ready {
            self.ready = true;
            self.send("READY=1\nSTATUS=Collecting.");
        }
        self.watchdog();
    }

    /// Keeps the watchdog alive (only once ready; before that, `TimeoutStartSec` applies).
    pub fn watchdog(&mut self) {
        if self.ready && self.watchdog.is_some() {
            self.send("WATCHDOG=1");
        }
    }

    /// The agent is shutting down.
    pub fn stopping(&mut self) {
        self.send("STOPPING=1\nSTATUS=Stopping: storing the last report.");
    }

    /// True once `READY=1` was sent (or would have been, without a socket).
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    fn send(&mut self, message: &str) {
        let Some(n) = &self.notifier else { return };
        match n.send(message) {
            Ok(()) => {
                debug!(socket = n.socket_name(), message, "Notified systemd.");
                self.failed = false;
            }
            Err(e) if !self.failed => {
                self.failed = true;
                warn!(socket = n.socket_name(), error = %e, "Cannot notify systemd.");
            }
            Err(e) => debug!(socket = n.socket_name(), error = %e, "Cannot notify systemd."),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 256];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn messages_reach_a_path_socket_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(path.to_str().unwrap()).unwrap();
        let mut s = ServiceNotify::new(Some(n), Some(Duration::from_secs(60)));
        assert_eq!(s.ping_every(), Some(Duration::from_secs(30)));
        s.watchdog(); // not ready yet: nothing sent
        s.tick_done();
        s.tick_done();
        s.stopping();
        assert_eq!(recv(&server), "READY=1\nSTATUS=Collecting.");
        assert_eq!(recv(&server), "WATCHDOG=1");
        assert_eq!(recv(&server), "WATCHDOG=1");
        assert!(recv(&server).starts_with("STOPPING=1\n"));
        assert!(s.is_ready());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn abstract_socket_names_start_with_at() {
        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("edgewarden-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier::new(&format!("@{name}")).unwrap();
        n.send("READY=1").unwrap();
        assert_eq!(recv(&server), "READY=1");
    }

    #[test]
    fn without_a_watchdog_only_readiness_and_stopping_are_sent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        server.set_nonblocking(true).unwrap();
        let n = Notifier::new(path.to_str().unwrap()).unwrap();
        let mut s = ServiceNotify::new(Some(n), None);
        assert_eq!(s.ping_every(), None);
        s.tick_done();
        s.tick_done();
        assert_eq!(recv(&server), "READY=1\nSTATUS=Collecting.");
        let mut buf = [0u8; 64];
        assert_eq!(
            server.recv(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }

    #[test]
    fn relative_or_empty_socket_names_are_refused() {
        assert!(matches!(
            Notifier::new("run/notify"),
            Err(NotifyError::BadAddress(_))
        ));
        assert!(matches!(Notifier::new(""), Err(NotifyError::BadAddress(_))));
    }

    #[test]
    fn a_missing_socket_is_reported_once_and_never_stops_the_agent() {
        let dir = tempfile::tempdir().unwrap();
        let n = Notifier::new(dir.path().join("absent").to_str().unwrap()).unwrap();
        assert!(n.send("READY=1").is_err());
        let mut s = ServiceNotify::new(Some(n), Some(Duration::from_secs(10)));
        s.tick_done();
        s.tick_done();
        assert!(s.is_ready());
    }

    #[test]
    fn watchdog_period_applies_to_our_pid_only() {
        let d = Some(Duration::from_micros(30_000_000));
        assert_eq!(watchdog_period_from(Some("30000000"), None, 7), d);
        assert_eq!(watchdog_period_from(Some("30000000"), Some("7"), 7), d);
        assert_eq!(watchdog_period_from(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_period_from(Some("0"), None, 7), None);
        assert_eq!(watchdog_period_from(Some("x"), None, 7), None);
        assert_eq!(watchdog_period_from(None, Some("7"), 7), None);
    }
}
