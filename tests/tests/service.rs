//! The real binary as systemd runs it: the `Type=notify` contract over a notification socket,
//! logs without colour codes off a terminal, and `validate` as the unit's `ExecStartPre`.

use std::io::Read as _;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use integration_tests::broker::{Pki, Validity};
use integration_tests::edgewarden_bin;

fn recv_until(sock: &UnixDatagram, want: &str, within: Duration) -> Vec<String> {
    let mut seen = Vec::new();
    let t = Instant::now();
    let mut buf = [0u8; 512];
    while t.elapsed() < within {
        match sock.recv(&mut buf) {
            Ok(n) => {
                let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                let done = m.starts_with(want);
                seen.push(m);
                if done {
                    return seen;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("notification socket: {e}"),
        }
    }
    panic!("no {want:?} within {within:?}; got {seen:?}");
}

#[test]
fn run_notifies_ready_pings_the_watchdog_and_says_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "thing_name = \"svc\"\nstate_dir = \"{}\"\n[collect]\ninterval = \"1s\"\n[logs]\nenabled = false\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(edgewarden_bin())
        .args(["run", "--config", cfg.to_str().unwrap()])
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "600000")
        .env_remove("WATCHDOG_PID")
        .env_remove("NO_COLOR")
        // Not our stderr: the variable alone must not drop the timestamps.
        .env("JOURNAL_STREAM", "0:0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the agent starts");
    let seen = recv_until(&sock, "READY=1", Duration::from_secs(20));
    assert_eq!(seen.len(), 1, "nothing before READY=1: {seen:?}");
    // 0.6 s watchdog: pings every 0.3 s even between 1 s ticks.
    let t = Instant::now();
    recv_until(&sock, "WATCHDOG=1", Duration::from_secs(5));
    recv_until(&sock, "WATCHDOG=1", Duration::from_secs(5));
    assert!(t.elapsed() < Duration::from_secs(5));
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    recv_until(&sock, "STOPPING=1", Duration::from_secs(10));
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(stderr.contains("Agent starting."), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in logs that go to a pipe: {stderr:?}"
    );
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("20"),
        "timestamp kept when JOURNAL_STREAM is not our stderr: {first}"
    );
}

#[test]
fn validate_only_warns_when_the_endpoint_does_not_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"), "svc").unwrap();
    let id = pki.client("gw", Validity::Current).unwrap();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "thing_name = \"gw\"\nstate_dir = \"{state}\"\n[mqtt]\nendpoint = \"no-such-host.invalid\"\nca_file = \"{ca}\"\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\n",
            state = dir.path().join("state").display(),
            ca = pki.ca_file().display(),
            cert = id.cert.display(),
            key = id.key.display(),
        ),
    )
    .unwrap();
    let out = Command::new(edgewarden_bin())
        .args(["validate", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: [mqtt] endpoint \"no-such-host.invalid\" does not resolve"),
        "{err}"
    );
    assert!(err.contains("configuration is valid"), "{err}");
}

#[test]
fn validate_exits_2_naming_a_state_directory_it_cannot_create() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"").unwrap();
    let state = blocker.join("state");
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!("thing_name = \"gw\"\nstate_dir = \"{}\"\n", state.display()),
    )
    .unwrap();
    let out = Command::new(edgewarden_bin())
        .args(["validate", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "state directory {}: cannot create",
            state.display()
        )),
        "{err}"
    );
}
