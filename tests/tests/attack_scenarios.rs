//! Attack scenarios on real kernels.
//!
//! Two network namespaces joined by a veth pair: the agent runs in `gw` (the gateway) with the
//! built-in default profile and a short collection interval, `peer` plays the rest of the
//! network. Addresses are IPv4 link-local (169.254.77.0/24) on the veth pair only, so nothing
//! leaves the namespaces. After a baseline of normal traffic, each attack is injected on its own
//! and must raise a violation naming the right behaviour within two collection intervals; a run
//! with the same baseline and no injection must raise none. Every traffic generator is bounded
//! in time and count.
//!
//! The gateway side also gets its own PID namespace (`unshare --pid --mount-proc`), as a real
//! gateway has its own process table: the agent sees the processes of the scenario, not those of
//! the machine running the tests.
//!
//! Needs root (namespaces), `unshare` and python3 (traffic generators); skips loudly otherwise.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use integration_tests::edgewarden_bin;

const TICK: Duration = Duration::from_millis(500);
const LEARNING: Duration = Duration::from_secs(45);
const GW_ADDR: &str = "169.254.77.1";
const PEER_ADDR: &str = "169.254.77.2";
/// Addresses of the peer never contacted during the baseline.
const NEW_PEERS: std::ops::Range<u8> = 100..140;

/// Namespaces and veth pair, removed on drop.
struct Net {
    gw: String,
    peer: String,
}

impl Net {
    fn create(tag: &str) -> Result<Net, String> {
        let id = std::process::id();
        let net = Net {
            gw: format!("ew-gw-{tag}-{id}"),
            peer: format!("ew-peer-{tag}-{id}"),
        };
        let veth_gw = format!("ewg{tag}{}", id % 100_000);
        let veth_peer = format!("ewp{tag}{}", id % 100_000);
        ip(&["netns", "add", &net.gw])?;
        ip(&["netns", "add", &net.peer])?;
        ip(&[
            "link", "add", &veth_gw, "type", "veth", "peer", "name", &veth_peer,
        ])?;
        ip(&["link", "set", &veth_gw, "netns", &net.gw])?;
        ip(&["link", "set", &veth_peer, "netns", &net.peer])?;
        for (ns, dev, addr) in [
            (&net.gw, &veth_gw, GW_ADDR),
            (&net.peer, &veth_peer, PEER_ADDR),
        ] {
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        for i in NEW_PEERS {
            ip(&[
                "-n",
                &net.peer,
                "addr",
                "add",
                &format!("169.254.77.{i}/32"),
                "dev",
                &veth_peer,
            ])?;
        }
        Ok(net)
    }

    fn exec(&self, ns: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).args(args);
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }

    /// Runs a bounded python3 generator in a namespace.
    fn py(&self, ns: &str, code: &str) -> Child {
        self.exec(ns, &["python3", "-c", code])
            .spawn()
            .expect("python3 runs")
    }
}

/// The gateway: a shell as PID 1 of its own PID namespace inside the `gw` network namespace,
/// starting each command it reads on stdin in the background. Closing stdin ends the shell, and
/// with it every process of the namespace.
struct Gateway {
    shell: Child,
}

impl Gateway {
    fn start(net: &Net) -> Gateway {
        let shell = Command::new("ip")
            .args([
                "netns",
                "exec",
                &net.gw,
                "unshare",
                "--pid",
                "--fork",
                "--mount-proc",
                "sh",
                "-c",
            ])
            .arg("while IFS= read -r line; do sh -c \"$line\" & done")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("unshare runs");
        Gateway { shell }
    }

    fn sh(&mut self, cmd: &str) {
        use std::io::Write as _;
        let stdin = self.shell.stdin.as_mut().expect("stdin is piped");
        writeln!(stdin, "{cmd}").expect("the gateway shell reads commands");
        stdin.flush().expect("the gateway shell reads commands");
    }

    /// Starts a bounded python3 generator on the gateway.
    fn py(&mut self, code: &str) {
        let b64 = base64(code.as_bytes());
        self.sh(&format!(
            "exec python3 -c \"$(echo {b64} | base64 -d)\" >/dev/null 2>&1"
        ));
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        drop(self.shell.stdin.take());
        let _ = self.shell.kill();
        let _ = self.shell.wait();
    }
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting the namespaces also deletes the veth pair and ends nothing else.
        let _ = ip(&["netns", "del", &self.gw]);
        let _ = ip(&["netns", "del", &self.peer]);
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn skip_reason() -> Option<String> {
    if Command::new("python3").arg("--version").output().is_err() {
        return Some("python3 is not installed".into());
    }
    if Command::new("unshare").arg("--version").output().is_err() {
        return Some("unshare (util-linux) is not installed".into());
    }
    let probe = format!("ew-probe-{}", std::process::id());
    match ip(&["netns", "add", &probe]) {
        Ok(()) => {
            let _ = ip(&["netns", "del", &probe]);
            None
        }
        Err(e) => Some(format!(
            "cannot create network namespaces ({e}); run as root"
        )),
    }
}

/// The peer's services and the gateway's normal traffic, for the whole run (bounded).
fn baseline(net: &Net, gw: &mut Gateway, run_for: Duration) -> Vec<Child> {
    let secs = run_for.as_secs();
    let server = format!(
        r#"
import socket, threading, time
end = time.time() + {secs}
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080)); s.listen(256); s.settimeout(0.5)
def serve(c):
    c.settimeout(1.0)
    try:
        while time.time() < end:
            d = c.recv(4096)
            if not d: break
            c.sendall(d)
    except Exception: pass
    c.close()
while time.time() < end:
    try: c, _ = s.accept()
    except socket.timeout: continue
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#
    );
    // Normal gateway traffic: one long-lived connection plus a small request every 0.5 s.
    let client = format!(
        r#"
import socket, time
end = time.time() + {secs}
keep = None
while time.time() < end:
    try:
        if keep is None:
            keep = socket.create_connection(("{PEER_ADDR}", 8080), timeout=1)
        keep.sendall(b"k" * 64); keep.recv(64)
        c = socket.create_connection(("{PEER_ADDR}", 8080), timeout=1)
        c.sendall(b"x" * 200); c.recv(200); c.close()
    except Exception:
        keep = None
    time.sleep(0.5)
"#
    );
    let a = net.py(&net.peer, &server);
    std::thread::sleep(Duration::from_millis(300));
    gw.py(&client);
    vec![a]
}

struct Agent {
    violations: PathBuf,
    _dir: tempfile::TempDir,
}

impl Agent {
    fn start(gw: &mut Gateway) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("agent.toml");
        std::fs::write(
            &cfg,
            format!(
                "thing_name = \"attack-test\"\nstate_dir = \"{}\"\n[collect]\ninterval = \"{}ms\"\n[report]\ninterval = \"30s\"\n[detect]\nlearning_period = \"{}s\"\n[logs]\nenabled = false\n",
                dir.path().join("state").display(),
                TICK.as_millis(),
                LEARNING.as_secs()
            ),
        )
        .unwrap();
        let bin = edgewarden_bin();
        gw.sh(&format!(
            "exec {} run --config {}",
            bin.display(),
            cfg.display()
        ));
        Agent {
            violations: dir.path().join("state/outbox/violations.jsonl"),
            _dir: dir,
        }
    }

    /// In-alarm violations written so far: (behaviour name, event time in ms).
    fn alarms(&self) -> Vec<(String, u64, String)> {
        let text = std::fs::read_to_string(&self.violations).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["violationEventType"] == "in-alarm")
            .map(|v| {
                (
                    v["behavior"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    v["violationEventTime"].as_u64().unwrap_or(0),
                    v["explanation"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    /// Waits up to two collection intervals (plus the time one tick takes) for an in-alarm
    /// violation of one of `behaviors` raised at or after `since_ms`.
    fn expect_alarm(&self, scenario: &str, behaviors: &[&str], since_ms: u64) {
        let deadline = Instant::now() + 2 * TICK + Duration::from_millis(700);
        loop {
            let hits: Vec<_> = self
                .alarms()
                .into_iter()
                .filter(|(b, t, _)| *t + 100 >= since_ms && behaviors.contains(&b.as_str()))
                .collect();
            if let Some((b, t, why)) = hits.first() {
                let after = t.saturating_sub(since_ms);
                eprintln!("{scenario}: {b} after {after} ms: {why}");
                assert!(
                    after <= 2 * TICK.as_millis() as u64 + 500,
                    "{scenario}: {b} raised after {after} ms"
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{scenario}: no violation of {behaviors:?} within two collection intervals; alarms so far: {:#?}",
                self.alarms()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn finish(children: Vec<Child>) {
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
}

fn settle() {
    std::thread::sleep(4 * TICK);
}

fn attacks(net: &Net, gw: &mut Gateway, agent: &Agent, tmp: &Path) {
    // 1. A backdoor: a new listening TCP port on the gateway, for 8 s.
    let t0 = now_ms();
    gw.py(
        "import socket,time\ns=socket.socket();s.bind(('0.0.0.0',4444));s.listen(1);time.sleep(8)",
    );
    agent.expect_alarm("backdoor listener", &["new-listening-tcp-port"], t0);
    settle();

    // 2. An outbound flood: UDP datagrams to the peer, at most 4 s or 400,000 datagrams.
    let t0 = now_ms();
    gw.py(&format!(
        "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.connect(('{PEER_ADDR}',9999))\nend=time.time()+4\nb=b'f'*1200\nn=0\nwhile time.time()<end and n<400000:\n try: s.send(b)\n except OSError: pass\n n+=1"
    ));
    agent.expect_alarm(
        "outbound flood",
        &["traffic-bytes-out", "traffic-packets-out"],
        t0,
    );
    settle();

    // 3. A port scan of the gateway from the peer: 600 closed ports, once each.
    let t0 = now_ms();
    let scan = net.py(
        &net.peer,
        &format!(
            "import socket\nfor p in range(20000,20600):\n s=socket.socket();s.settimeout(0.2)\n try: s.connect(('{GW_ADDR}',p))\n except Exception: pass\n s.close()"
        ),
    );
    agent.expect_alarm("inbound port scan", &["scan-inbound-tcp"], t0);
    finish(vec![scan]);
    settle();

    // 4. A lateral connect scan from the gateway: 200 closed ports of the peer, once each.
    let t0 = now_ms();
    gw.py(&format!(
        "import socket\nfor p in range(30000,30200):\n s=socket.socket();s.settimeout(0.2)\n try: s.connect(('{PEER_ADDR}',p))\n except Exception: pass\n s.close()"
    ));
    agent.expect_alarm(
        "lateral connect scan",
        &["scan-outbound-connect-failures"],
        t0,
    );
    settle();

    // 5. A burst of connections to many new addresses, held open for 6 s.
    let t0 = now_ms();
    gw.py(&format!(
        "import socket,time\ncs=[]\nfor i in range({},{}):\n try: cs.append(socket.create_connection(('169.254.77.%d'%i,8080),timeout=1))\n except Exception: pass\ntime.sleep(6)",
        NEW_PEERS.start, NEW_PEERS.end
    ));
    agent.expect_alarm("burst to new addresses", &["new-destination-addresses"], t0);
    settle();

    // 6. A sustained CPU-bound new process (a renamed `yes`), at most 10 s.
    let miner = tmp.join("ew-cryptominer");
    std::fs::copy("/usr/bin/yes", &miner).unwrap();
    let t0 = now_ms();
    gw.sh(&format!("exec timeout 10 {} >/dev/null", miner.display()));
    agent.expect_alarm(
        "cpu-bound new process",
        &["new-process-names", "new-cpu-heavy-process"],
        t0,
    );
}

#[test]
fn attacks_raise_the_right_violations_and_a_quiet_run_raises_none() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED attack scenarios: {why}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();

    // The quiet run first: same baseline, no injection, must raise nothing.
    {
        let net = Net::create("q").expect("namespaces");
        let mut gw = Gateway::start(&net);
        let run_for = LEARNING + 12 * TICK;
        let base = baseline(&net, &mut gw, run_for + Duration::from_secs(5));
        let agent = Agent::start(&mut gw);
        std::thread::sleep(run_for);
        let alarms = agent.alarms();
        finish(base);
        assert!(
            alarms.is_empty(),
            "violations without any attack: {alarms:#?}"
        );
    }

    // Then the attacks, one at a time after the learning period.
    let net = Net::create("a").expect("namespaces");
    let mut gw = Gateway::start(&net);
    let base = baseline(&net, &mut gw, LEARNING + Duration::from_secs(150));
    let agent = Agent::start(&mut gw);
    std::thread::sleep(LEARNING + 3 * TICK);
    let before = agent.alarms();
    assert!(
        before.is_empty(),
        "violations during the baseline: {before:#?}"
    );
    attacks(&net, &mut gw, &agent, tmp.path());
    finish(base);
}
