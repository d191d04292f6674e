//! A plain (no TLS) mosquitto on a free loopback port, for tests that only need a broker.
//!
//! [`PlainBroker::start_with`] adds listener options (e.g. TLS files) for the occasional test
//! that needs them. `MQTT_BROKER_ADDR=host:port` makes [`PlainBroker::start`] reuse a running
//! broker instead. When mosquitto is not
//! installed, [`PlainBroker::start`] says so loudly on stderr and returns `None`, so the caller can
//! skip. The broker is killed (by its PID) when the value is dropped.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Environment variable naming an already running broker to use instead of starting one.
pub const ENV_BROKER_ADDR: &str = "MQTT_BROKER_ADDR";

/// A running broker.
#[derive(Debug)]
pub struct PlainBroker {
    /// Host to connect to.
    pub host: String,
    /// Port to connect to.
    pub port: u16,
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
}

impl PlainBroker {
    /// Starts `mosquitto` with `allow_anonymous true` on 127.0.0.1 (or uses `MQTT_BROKER_ADDR`).
    /// `None` (with a message on stderr) when mosquitto is not installed.
    pub fn start() -> Option<PlainBroker> {
        if let Ok(addr) = std::env::var(ENV_BROKER_ADDR) {
            let (host, port) = crate::emulator::parse_broker(&addr)
                .unwrap_or_else(|e| panic!("{ENV_BROKER_ADDR}: {e}"));
            return Some(PlainBroker {
                host,
                port,
                child: None,
                dir: None,
            });
        }
        PlainBroker::start_with("")
    }

    /// Starts a private mosquitto whose listener also gets `listener_options` (mosquitto.conf
    /// lines such as `cafile …`, `require_certificate true`). `None` when mosquitto is missing.
    pub fn start_with(listener_options: &str) -> Option<PlainBroker> {
        let Some(bin) = find_mosquitto() else {
            eprintln!(
                "SKIPPED: mosquitto is not installed (apt-get install -y mosquitto), \
                 or set {ENV_BROKER_ADDR}=host:port"
            );
            return None;
        };
        // Another process may take the port between our probe and mosquitto's bind: retry.
        let mut last_err = String::new();
        for _ in 0..5 {
            match try_start(&bin, listener_options) {
                Ok(b) => return Some(b),
                Err(e) => last_err = e,
            }
        }
        panic!("could not start mosquitto: {last_err}");
    }

    /// `host:port`.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The broker's log so far (empty for a reused broker).
    pub fn log(&self) -> String {
        self.dir
            .as_ref()
            .and_then(|d| std::fs::read_to_string(d.path().join("mosquitto.log")).ok())
            .unwrap_or_default()
    }
}

impl Drop for PlainBroker {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn find_mosquitto() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|d| d.join("mosquitto"))
        .find(|p| p.is_file())
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind 127.0.0.1:0: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("local_addr: {e}"))
}

fn try_start(bin: &PathBuf, listener_options: &str) -> Result<PlainBroker, String> {
    let port = free_port()?;
    let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let conf = dir.path().join("mosquitto.conf");
    let log = dir.path().join("mosquitto.log");
    let mut f = std::fs::File::create(&conf).map_err(|e| format!("{}: {e}", conf.display()))?;
    // `user root`: started as root, mosquitto would otherwise switch to its own user and lose
    // access to the private temporary directory (log, certificates). Ignored when not root.
    write!(
        f,
        "user root\npersistence false\nlog_dest file {}\nlog_type all\n\
         allow_anonymous true\nlistener {port} 127.0.0.1\n{listener_options}\n",
        log.display()
    )
    .map_err(|e| format!("{}: {e}", conf.display()))?;
    drop(f);
    let mut child = Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(format!("mosquitto exited with {status}: {log}"));
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(PlainBroker {
                host: "127.0.0.1".into(),
                port,
                child: Some(child),
                dir: Some(dir),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(format!(
        "mosquitto did not listen on port {port} within 5 s"
    ))
}
