//! The noisy-gateway lab: a gateway with busy, irregular normal traffic, and the attacks hidden
//! in it, on real kernels.
//!
//! Two network namespaces joined by one veth pair, both created here (`unshare`), so they vanish
//! with their processes:
//!
//! - the **gateway** (own network, PID and mount namespaces): `lab/gateway.py` as PID 1 starts the
//!   gateway's services, each its own process under its own name: a cloud agent (MQTT-like
//!   session with reconnects, HTTPS-like API polls), firmware-size downloads, log uploads, a
//!   Modbus-like poller of the LAN sensors, a local broker and web UI that LAN devices use, DNS
//!   and NTP over UDP, and cron jobs that start short-lived processes. Services restart now and
//!   then. Every period and size is drawn from a seeded generator.
//! - the **peer** (`lab/peer.py`): every other host: LAN sensors and devices, the cloud
//!   endpoints, the DNS and NTP servers and the attackers' endpoints, all addresses of its end of
//!   the veth.
//!
//! All addresses are IPv4 link-local (169.254.0.0/16) on that veth pair: nothing leaves the
//! namespaces. The real [`edgewarden::collect::Collector`] samples the gateway from inside it
//! (`lab-collector`, entered with `nsenter`) and streams one snapshot per tick to the test, which
//! runs the detection engine on it.
//!
//! Attacks run on the gateway under a name the gateway already uses (see [`Attack`]); the inbound
//! scan comes from the peer.
//!
//! Needs root, `unshare`/`nsenter` (util-linux), `ip` (iproute2) and python3; [`skip_reason`]
//! says what is missing.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use edgewarden::snapshot::{ListenPort, MetricValue, NetDelta, Snapshot, TcpConn};
use serde_json::{json, Value};

/// The gateway's address.
pub const GATEWAY: &str = "169.254.77.1";
/// The peer's main LAN address (DNS server, scan and SYN flood target).
pub const PEER: &str = "169.254.77.2";
/// Prefix length of every lab address.
const PREFIX: u8 = 16;

const GATEWAY_PY: &str = include_str!("lab/gateway.py");
const PEER_PY: &str = include_str!("lab/peer.py");

/// LAN sensors the gateway polls (port 502).
fn lan_sensors() -> Vec<String> {
    (20..26).map(|i| format!("169.254.77.{i}")).collect()
}
/// LAN devices publishing to the gateway's broker.
fn lan_devices() -> Vec<String> {
    (30..36).map(|i| format!("169.254.77.{i}")).collect()
}
const UI_CLIENT: &str = "169.254.77.40";
const CLOUD_MQTT: (&str, u16) = ("169.254.78.10", 8883);
const CLOUD_API: [(&str, u16); 2] = [("169.254.78.11", 443), ("169.254.78.12", 443)];
const CLOUD_FIRMWARE: (&str, u16) = ("169.254.78.13", 443);
const CLOUD_LOGS: (&str, u16) = ("169.254.78.14", 443);
const NTP: (&str, u16) = ("169.254.78.20", 123);
const DNS: (&str, u16) = (PEER, 53);
/// The attackers' hosts: never contacted by the benign traffic.
const C2: (&str, u16) = ("169.254.90.1", 8443);
const SHELL_HANDLER: (&str, u16) = ("169.254.90.2", 4444);
const EXFIL_SINK: (&str, u16) = ("169.254.90.3", 443);
const FLOOD_SINK: (&str, u16) = ("169.254.90.4", 9999);
/// The burst's 20 never-seen addresses (port 80).
fn burst_targets() -> Vec<String> {
    (1..=20).map(|i| format!("169.254.91.{i}")).collect()
}

/// One attack class of the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attack {
    /// A backdoor: a new listening TCP port.
    NewListener,
    /// UDP datagrams as fast as the gateway sends them.
    UdpFlood,
    /// Connections to 20 never-seen addresses at once, held open.
    BurstToNewAddresses,
    /// A connect scan of the gateway from the LAN.
    InboundScan,
    /// A connect scan of a LAN host from the gateway.
    OutboundScan,
    /// One outbound connection to a never-seen address and port, held open, owned by a shell.
    ReverseShell,
    /// Crafted SYNs (raw socket) to a closed port; the RSTs come back.
    SynFloodClosedPort,
    /// One process at 100 % of a core under the name of a normal service.
    CryptoMiner,
    /// Small (≈100 B) check-ins to one never-seen address, once per second.
    C2Beacon,
    /// A bulk upload to a never-seen address at the rate of the gateway's own uploads.
    Exfiltration,
}

impl Attack {
    /// Every attack class.
    pub const ALL: [Attack; 10] = [
        Attack::NewListener,
        Attack::UdpFlood,
        Attack::BurstToNewAddresses,
        Attack::InboundScan,
        Attack::OutboundScan,
        Attack::ReverseShell,
        Attack::SynFloodClosedPort,
        Attack::CryptoMiner,
        Attack::C2Beacon,
        Attack::Exfiltration,
    ];

    /// A short name.
    pub fn name(self) -> &'static str {
        match self {
            Attack::NewListener => "new listener",
            Attack::UdpFlood => "UDP flood",
            Attack::BurstToNewAddresses => "burst to 20 new addresses",
            Attack::InboundScan => "inbound scan",
            Attack::OutboundScan => "outbound scan",
            Attack::ReverseShell => "reverse shell",
            Attack::SynFloodClosedPort => "SYN flood to a closed port",
            Attack::CryptoMiner => "crypto-miner",
            Attack::C2Beacon => "C2 beacon",
            Attack::Exfiltration => "exfiltration",
        }
    }

    /// How long the attack runs.
    pub fn duration(self) -> Duration {
        Duration::from_secs(match self {
            Attack::InboundScan | Attack::OutboundScan => 4,
            Attack::Exfiltration => 5,
            Attack::CryptoMiner => 8,
            _ => 6,
        })
    }
}

/// Lab settings.
#[derive(Debug, Clone)]
pub struct LabConfig {
    /// Seed of every random choice of the benign traffic.
    pub seed: u64,
    /// Collection tick.
    pub tick: Duration,
    /// Multiplies every period of the benign traffic (1: the default recipe).
    pub scale: f64,
}

/// A running lab; dropping it ends every process and both namespaces.
pub struct Lab {
    cfg: LabConfig,
    gateway: Child,
    gateway_in: Option<ChildStdin>,
    peer: Child,
    peer_in: Option<ChildStdin>,
    collector: Child,
    snapshots: BufReader<ChildStdout>,
    _dir: tempfile::TempDir,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
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

/// Runs `ip` inside the network namespace of `pid`.
fn ns_ip(pid: u32, args: &[&str]) -> Result<(), String> {
    let out = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", "ip"])
        .args(args)
        .output()
        .map_err(|e| format!("cannot run nsenter: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {} (in {pid}): {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Why the lab cannot run here, if it cannot.
pub fn skip_reason() -> Option<String> {
    for (tool, arg) in [
        ("python3", "--version"),
        ("unshare", "--version"),
        ("nsenter", "--version"),
        ("ip", "-V"),
    ] {
        if Command::new(tool).arg(arg).output().is_err() {
            return Some(format!("{tool} is not installed"));
        }
    }
    let out = Command::new("unshare")
        .args(["--net", "--pid", "--fork", "--mount-proc", "true"])
        .output();
    match out {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "cannot create namespaces ({}); run as root",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!("cannot run unshare: {e}")),
    }
}

/// The path of a binary of this package next to the running executable (`target/<profile>/`).
pub fn sibling_bin(name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(format!(
        "CARGO_BIN_EXE_{}",
        name.replace('-', "_").to_uppercase()
    )) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("the executable has a path");
    let mut dir = exe.parent().expect("in a directory").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join(name)
}

/// The first child of `pid` (the process `unshare --fork` started), waiting for it.
fn child_of(pid: u32) -> Result<u32, String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        if let Some(c) = children.split_whitespace().next() {
            return c.parse().map_err(|e| format!("{e}"));
        }
        if Instant::now() > deadline {
            return Err(format!("process {pid} started no child"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn spawn_ns(script: &Path, comm: &str) -> Result<(Child, ChildStdin, u32), String> {
    let mut child = Command::new("unshare")
        .args([
            "--net",
            "--pid",
            "--fork",
            "--mount-proc",
            "--kill-child",
            "python3",
            "-u",
        ])
        .arg(script)
        .arg(comm)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot run unshare: {e}"))?;
    let stdin = child.stdin.take().expect("piped");
    let pid = child_of(child.id())?;
    Ok((child, stdin, pid))
}

impl Lab {
    /// Creates the namespaces, starts the benign traffic and the collector. The first snapshot
    /// (the collector's warm-up) is consumed here.
    pub fn start(cfg: LabConfig) -> Result<Lab, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let gw_py = dir.path().join("gateway.py");
        let peer_py = dir.path().join("peer.py");
        std::fs::write(&gw_py, GATEWAY_PY).map_err(|e| e.to_string())?;
        std::fs::write(&peer_py, PEER_PY).map_err(|e| e.to_string())?;

        let (mut gateway, mut gw_in, gw_pid) = spawn_ns(&gw_py, "gateway")?;
        let (mut peer, mut peer_in, peer_pid) = match spawn_ns(&peer_py, "peer") {
            Ok(p) => p,
            Err(e) => {
                let _ = gateway.kill();
                return Err(e);
            }
        };
        let mut peer_out = BufReader::new(peer.stdout.take().expect("piped"));
        let mut cleanup = |e: String| {
            let _ = gateway.kill();
            let _ = peer.kill();
            let _ = gateway.wait();
            let _ = peer.wait();
            e
        };
        let tag = std::process::id() % 100_000;
        let (vg, vp) = (format!("ewlg{tag}"), format!("ewlp{tag}"));
        let setup = || -> Result<(), String> {
            ip(&["link", "add", &vg, "type", "veth", "peer", "name", &vp])?;
            ip(&["link", "set", &vg, "netns", &gw_pid.to_string()])?;
            ip(&["link", "set", &vp, "netns", &peer_pid.to_string()])?;
            ns_ip(gw_pid, &["link", "set", "lo", "up"])?;
            ns_ip(peer_pid, &["link", "set", "lo", "up"])?;
            ns_ip(
                gw_pid,
                &["addr", "add", &format!("{GATEWAY}/{PREFIX}"), "dev", &vg],
            )?;
            let mut peer_addrs: Vec<String> = vec![PEER.to_owned(), UI_CLIENT.to_owned()];
            peer_addrs.extend(lan_sensors());
            peer_addrs.extend(lan_devices());
            for a in [
                CLOUD_MQTT.0,
                CLOUD_API[0].0,
                CLOUD_API[1].0,
                CLOUD_FIRMWARE.0,
                CLOUD_LOGS.0,
                NTP.0,
                C2.0,
                SHELL_HANDLER.0,
                EXFIL_SINK.0,
                FLOOD_SINK.0,
            ] {
                peer_addrs.push(a.to_owned());
            }
            peer_addrs.extend(burst_targets());
            for a in &peer_addrs {
                ns_ip(
                    peer_pid,
                    &["addr", "add", &format!("{a}/{PREFIX}"), "dev", &vp],
                )?;
            }
            ns_ip(gw_pid, &["link", "set", &vg, "up"])?;
            ns_ip(peer_pid, &["link", "set", &vp, "up"])?;
            Ok(())
        };
        setup().map_err(&mut cleanup)?;

        // The peer's servers first, then the gateway's traffic.
        let mut servers: Vec<Value> = Vec::new();
        for a in lan_sensors() {
            servers.push(json!(["modbus", a, 502]));
        }
        servers.push(json!(["mqtt", CLOUD_MQTT.0, CLOUD_MQTT.1]));
        for (a, p) in CLOUD_API {
            servers.push(json!(["api", a, p]));
        }
        servers.push(json!(["firmware", CLOUD_FIRMWARE.0, CLOUD_FIRMWARE.1]));
        servers.push(json!(["logs", CLOUD_LOGS.0, CLOUD_LOGS.1]));
        servers.push(json!(["dns", DNS.0, DNS.1]));
        servers.push(json!(["ntp", NTP.0, NTP.1]));
        servers.push(json!(["c2", C2.0, C2.1]));
        servers.push(json!(["rshell", SHELL_HANDLER.0, SHELL_HANDLER.1]));
        servers.push(json!(["sink", EXFIL_SINK.0, EXFIL_SINK.1]));
        for a in burst_targets() {
            servers.push(json!(["sink", a, 80]));
        }
        let peer_start = json!({
            "cmd": "start", "seed": cfg.seed, "scale": cfg.scale, "gateway": GATEWAY,
            "servers": servers, "devices": lan_devices(), "ui_client": UI_CLIENT,
        });
        writeln!(peer_in, "{peer_start}").map_err(|e| cleanup(e.to_string()))?;
        let mut line = String::new();
        peer_out
            .read_line(&mut line)
            .map_err(|e| cleanup(e.to_string()))?;
        if line.trim() != "ready" {
            return Err(cleanup(format!("the peer did not start: {line:?}")));
        }
        let addr = |(a, p): (&str, u16)| json!([a, p]);
        let gw_start = json!({
            "cmd": "start", "seed": cfg.seed, "scale": cfg.scale,
            "lan": lan_sensors().iter().map(|a| json!([a, 502])).collect::<Vec<_>>(),
            "cloud": {
                "mqtt": addr(CLOUD_MQTT),
                "api": CLOUD_API.iter().map(|&a| addr(a)).collect::<Vec<_>>(),
                "firmware": addr(CLOUD_FIRMWARE),
                "logs": addr(CLOUD_LOGS),
            },
            "dns": addr(DNS), "ntp": addr(NTP),
        });
        writeln!(gw_in, "{gw_start}").map_err(|e| cleanup(e.to_string()))?;

        // The collector, inside the gateway's namespaces.
        let mut collector = Command::new("nsenter")
            .args(["-t", &gw_pid.to_string(), "-n", "-p", "-m", "--"])
            .arg(sibling_bin("lab-collector"))
            .arg(cfg.tick.as_millis().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| cleanup(format!("cannot start lab-collector: {e}")))?;
        let snapshots = BufReader::new(collector.stdout.take().expect("piped"));
        let mut lab = Lab {
            cfg,
            gateway,
            gateway_in: Some(gw_in),
            peer,
            peer_in: Some(peer_in),
            collector,
            snapshots,
            _dir: dir,
        };
        lab.next_snapshot()?;
        Ok(lab)
    }

    /// The settings.
    pub fn config(&self) -> &LabConfig {
        &self.cfg
    }

    /// Waits for the collector's next tick.
    pub fn next_snapshot(&mut self) -> Result<Snapshot, String> {
        let mut line = String::new();
        match self.snapshots.read_line(&mut line) {
            Ok(0) => Err("the collector stopped".into()),
            Ok(_) => snapshot_from_json(&line),
            Err(e) => Err(format!("reading the collector: {e}")),
        }
    }

    fn gateway_cmd(&mut self, v: Value) {
        if let Some(w) = self.gateway_in.as_mut() {
            let _ = writeln!(w, "{v}").and_then(|()| w.flush());
        }
    }

    fn peer_cmd(&mut self, v: Value) {
        if let Some(w) = self.peer_in.as_mut() {
            let _ = writeln!(w, "{v}").and_then(|()| w.flush());
        }
    }

    /// Starts an attack; it stops by itself after [`Attack::duration`].
    pub fn attack(&mut self, a: Attack) {
        let secs = a.duration().as_secs_f64();
        let addr = |(h, p): (&str, u16)| json!([h, p]);
        let (name, comm, args) = match a {
            Attack::InboundScan => {
                self.peer_cmd(
                    json!({"cmd": "scan", "host": GATEWAY, "first": 20000, "last": 20800}),
                );
                return;
            }
            Attack::NewListener => ("listener", "web-ui", json!({"port": 4444})),
            Attack::UdpFlood => ("udp_flood", "resolver", json!({"target": addr(FLOOD_SINK)})),
            Attack::BurstToNewAddresses => (
                "fanout",
                "edge-agent",
                json!({"targets": burst_targets().iter().map(|a| json!([a, 80])).collect::<Vec<_>>()}),
            ),
            Attack::OutboundScan => (
                "scan_out",
                "modbus-poll",
                json!({"host": PEER, "first": 30000, "last": 30400}),
            ),
            Attack::ReverseShell => (
                "reverse_shell",
                "crond",
                json!({"target": addr(SHELL_HANDLER)}),
            ),
            Attack::SynFloodClosedPort => (
                "syn_flood",
                "edge-agent",
                json!({"source": GATEWAY, "target": [PEER, 9], "rate": 2000}),
            ),
            Attack::CryptoMiner => ("miner", "log-shipper", json!({})),
            Attack::C2Beacon => (
                "beacon",
                "edge-agent",
                json!({"target": addr(C2), "period": 1.0}),
            ),
            Attack::Exfiltration => (
                "exfil",
                "log-shipper",
                json!({"target": addr(EXFIL_SINK), "rate": 2 << 20}),
            ),
        };
        let mut args = args;
        args["secs"] = json!(secs);
        self.gateway_cmd(json!({"cmd": "attack", "name": name, "comm": comm, "args": args}));
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // End of input ends both scripts; their PID namespaces take every other process along.
        drop(self.gateway_in.take());
        drop(self.peer_in.take());
        for c in [&mut self.collector, &mut self.gateway, &mut self.peer] {
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ------------------------------------------------------------------ snapshots as JSON lines

fn metric_json(v: &MetricValue) -> Value {
    match v {
        MetricValue::Number(x) => json!({ "n": x }),
        MetricValue::NumberList(l) => json!({ "nl": l }),
        MetricValue::StringList(l) => json!({ "sl": l }),
        MetricValue::IpList(l) => {
            json!({ "il": l.iter().map(ToString::to_string).collect::<Vec<_>>() })
        }
    }
}

fn ports_json(l: &Option<Vec<ListenPort>>) -> Value {
    match l {
        None => Value::Null,
        Some(l) => l
            .iter()
            .map(|p| json!([p.port, p.addr.to_string(), p.interface, p.process]))
            .collect(),
    }
}

/// One snapshot as a JSON line (the lab collector's output).
pub fn snapshot_to_json(s: &Snapshot) -> String {
    let custom: serde_json::Map<String, Value> = s
        .custom
        .iter()
        .map(|(k, v)| (k.clone(), metric_json(v)))
        .collect();
    json!({
        "seq": s.seq, "at_ms": s.at_ms, "interval_ms": s.interval_ms,
        "net": s.net.map(|n| json!([n.bytes_in, n.bytes_out, n.packets_in, n.packets_out])),
        "tcp_listen": ports_json(&s.tcp_listen),
        "udp_listen": ports_json(&s.udp_listen),
        "established": s.established.as_ref().map(|l| l.iter().map(|c| json!([c.local.to_string(), c.remote.to_string(), c.interface])).collect::<Vec<_>>()),
        "custom": custom,
    })
    .to_string()
}

fn parse_ports(v: &Value) -> Result<Option<Vec<ListenPort>>, String> {
    let Some(a) = v.as_array() else {
        return Ok(None);
    };
    a.iter()
        .map(|p| {
            Ok(ListenPort {
                port: p[0].as_u64().ok_or("port")? as u16,
                addr: p[1]
                    .as_str()
                    .and_then(|s| s.parse::<IpAddr>().ok())
                    .ok_or("addr")?,
                interface: p[2].as_str().map(str::to_owned),
                process: p[3].as_str().map(str::to_owned),
            })
        })
        .collect::<Result<Vec<_>, &str>>()
        .map(Some)
        .map_err(|e| format!("bad listening port: {e}"))
}

/// Parses a line of [`snapshot_to_json`].
pub fn snapshot_from_json(line: &str) -> Result<Snapshot, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("bad snapshot line: {e}"))?;
    let u = |k: &str| v[k].as_u64().unwrap_or(0);
    let net = v["net"].as_array().map(|n| NetDelta {
        bytes_in: n[0].as_u64().unwrap_or(0),
        bytes_out: n[1].as_u64().unwrap_or(0),
        packets_in: n[2].as_u64().unwrap_or(0),
        packets_out: n[3].as_u64().unwrap_or(0),
    });
    let established = match v["established"].as_array() {
        None => None,
        Some(a) => Some(
            a.iter()
                .map(|c| {
                    let sa = |x: &Value| x.as_str().and_then(|s| s.parse::<SocketAddr>().ok());
                    Some(TcpConn {
                        local: sa(&c[0])?,
                        remote: sa(&c[1])?,
                        interface: c[2].as_str().map(str::to_owned),
                    })
                })
                .collect::<Option<Vec<_>>>()
                .ok_or("bad connection")?,
        ),
    };
    let mut custom = BTreeMap::new();
    if let Some(m) = v["custom"].as_object() {
        for (k, x) in m {
            let strs = |x: &Value| -> Vec<String> {
                x.as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let val = if let Some(n) = x.get("n") {
                MetricValue::Number(n.as_f64().unwrap_or(f64::NAN))
            } else if let Some(l) = x.get("nl") {
                MetricValue::NumberList(
                    l.as_array()
                        .map(|a| a.iter().filter_map(Value::as_f64).collect())
                        .unwrap_or_default(),
                )
            } else if let Some(l) = x.get("sl") {
                MetricValue::StringList(strs(l))
            } else if let Some(l) = x.get("il") {
                MetricValue::IpList(strs(l).iter().filter_map(|s| s.parse().ok()).collect())
            } else {
                continue;
            };
            custom.insert(k.clone(), val);
        }
    }
    Ok(Snapshot {
        seq: u("seq"),
        at_ms: u("at_ms"),
        interval_ms: u("interval_ms"),
        net,
        tcp_listen: parse_ports(&v["tcp_listen"])?,
        udp_listen: parse_ports(&v["udp_listen"])?,
        established,
        custom,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_round_trip_through_json() {
        let mut s = Snapshot {
            seq: 3,
            at_ms: 1_700_000_000_000,
            interval_ms: 1000,
            net: Some(NetDelta {
                bytes_in: 1,
                bytes_out: 2,
                packets_in: 3,
                packets_out: 4,
            }),
            tcp_listen: Some(vec![ListenPort {
                port: 22,
                addr: "::".parse().unwrap(),
                interface: None,
                process: Some("sshd".into()),
            }]),
            udp_listen: None,
            established: Some(vec![TcpConn {
                local: "169.254.77.1:5000".parse().unwrap(),
                remote: "169.254.78.10:8883".parse().unwrap(),
                interface: Some("eth0".into()),
            }]),
            custom: BTreeMap::new(),
        };
        s.custom
            .insert("cpu_usage".into(), MetricValue::Number(12.5));
        s.custom.insert(
            "new_process_names".into(),
            MetricValue::StringList(vec!["sh".into()]),
        );
        s.custom.insert(
            "auth_failure_sources".into(),
            MetricValue::IpList(vec!["169.254.77.9".parse().unwrap()]),
        );
        assert_eq!(snapshot_from_json(&snapshot_to_json(&s)).unwrap(), s);
    }
}
