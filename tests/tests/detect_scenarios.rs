//! Attack scenarios on a real kernel: the local Detect engine with the default profile, fed with
//! snapshots sampled from a network namespace, must flag each injected attack within two
//! collection intervals and stay silent on a run without injections.
//!
//! Two namespaces joined by a veth pair (IPv4 link-local 169.254.77.0/24 and IPv6 ULA
//! fd00:ee:77::/64): the *gateway* namespace, whose kernel counters, sockets and processes make
//! the snapshots, and a *peer*. Traffic generators are this test binary re-executed inside a
//! namespace (`ip netns exec … <exe> generator --exact --ignored`), each bounded in time and
//! count. Snapshots are sampled by a small /proc reader scoped to the gateway namespace: the
//! network files of a process living there and the processes sharing its network namespace.
//!
//! Needs root and `ip` (iproute2); without them the test is skipped with the reason. Run with
//! `--nocapture` to see each scenario's verdicts and the engine status; `EW_DEBUG=1` also prints
//! every sampled tick.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edgewarden::config::DetectConfig;
use edgewarden::detect::{default_profile, Engine, ViolationEvent, ViolationEventType};
use edgewarden::snapshot::{ListenPort, MetricValue, NetDelta, Snapshot, TcpConn};

/// Collection interval of the scenarios.
const TICK: Duration = Duration::from_millis(500);
/// Ticks of normal traffic before the first injection (the ML models arm after 60 samples).
const BASELINE_TICKS: u64 = 80;
/// Ticks allowed between injections for alarms to clear.
const RECOVERY_TICKS: u64 = 12;
/// Longest any generator runs.
const MAX_GENERATOR_SECS: u64 = 240;

const GW_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 77, 1);
const PEER_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 77, 2);
const ECHO_PORT: u16 = 7000;
const DISCARD_PORT: u16 = 7001;
const GW_SERVICE_PORT: u16 = 8000;
/// Extra peer addresses for the fan-out scenario.
const FANOUT_ADDRS: u16 = 24;

fn peer_v6(i: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0xee, 0x77, 0, 0, 0, 1, i)
}

// ------------------------------------------------------------------ generators

/// Entry point of the traffic generators, run inside a namespace by the scenarios.
#[test]
#[ignore = "traffic generator entry point; the scenarios run it inside a namespace"]
fn generator() {
    let spec = std::env::var("EW_GEN").expect("EW_GEN names the generator to run");
    let args: Vec<&str> = spec.split_whitespace().collect();
    let secs = |i: usize| -> Duration {
        Duration::from_secs(
            args[i]
                .parse::<u64>()
                .expect("seconds")
                .min(MAX_GENERATOR_SECS),
        )
    };
    match args[0] {
        // serve ADDR PORT SECS echo|discard
        "serve" => serve(
            args[1].parse().expect("addr"),
            args[2].parse().expect("port"),
            secs(3),
            args[4] == "echo",
        ),
        // client PEER PORT SECS: one persistent connection plus a short request every 250 ms
        "client" => normal_client(
            args[1].parse().expect("addr"),
            args[2].parse().expect("port"),
            secs(3),
        ),
        // listen PORT SECS: a backdoor listener that accepts nothing
        "listen" => {
            let l = TcpListener::bind(("0.0.0.0", args[1].parse::<u16>().expect("port")))
                .expect("bind backdoor");
            std::thread::sleep(secs(2));
            drop(l);
        }
        // flood PEER PORT SECS MAX_MIB
        "flood" => {
            let deadline = Instant::now() + secs(3);
            let max = args[4].parse::<usize>().expect("MiB") << 20;
            let mut s = TcpStream::connect((
                args[1].parse::<IpAddr>().expect("addr"),
                args[2].parse::<u16>().expect("port"),
            ))
            .expect("connect flood sink");
            let buf = vec![0x5au8; 64 * 1024];
            let mut sent = 0;
            while sent < max && Instant::now() < deadline {
                match s.write(&buf) {
                    Ok(n) => sent += n,
                    Err(_) => break,
                }
            }
        }
        // scan TARGET FIRST LAST: one connect per port, refused or timed out
        "scan" => {
            let target: IpAddr = args[1].parse().expect("addr");
            let (first, last): (u16, u16) = (
                args[2].parse().expect("first"),
                args[3].parse().expect("last"),
            );
            for port in first..=last.min(first.saturating_add(4000)) {
                let _ = TcpStream::connect_timeout(
                    &SocketAddr::new(target, port),
                    Duration::from_millis(50),
                );
            }
        }
        // fanout PORT HOLD_SECS ADDR…: connect to every address and hold the connections
        "fanout" => {
            let port: u16 = args[1].parse().expect("port");
            let conns: Vec<TcpStream> = args[3..]
                .iter()
                .take(256)
                .filter_map(|a| {
                    TcpStream::connect_timeout(
                        &SocketAddr::new(a.parse().expect("addr"), port),
                        Duration::from_secs(1),
                    )
                    .ok()
                })
                .collect();
            std::thread::sleep(secs(2));
            drop(conns);
        }
        // spin SECS: a CPU-bound loop
        "spin" => {
            let deadline = Instant::now() + secs(1);
            let mut x = 0u64;
            while Instant::now() < deadline {
                for i in 0..100_000u64 {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
                }
            }
            std::hint::black_box(x);
        }
        other => panic!("unknown generator {other:?}"),
    }
}

fn serve(addr: IpAddr, port: u16, secs: Duration, echo: bool) {
    let l = TcpListener::bind((addr, port)).expect("bind server");
    l.set_nonblocking(true).expect("nonblocking listener");
    let deadline = Instant::now() + secs;
    let mut accepted = 0u32;
    while Instant::now() < deadline && accepted < 100_000 {
        match l.accept() {
            Ok((mut s, _)) => {
                accepted += 1;
                s.set_nonblocking(false).expect("blocking stream");
                s.set_read_timeout(Some(Duration::from_secs(5)))
                    .expect("timeout");
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || (echo && s.write_all(&buf[..n]).is_err()) {
                            break;
                        }
                    }
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn normal_client(peer: IpAddr, port: u16, secs: Duration) {
    let deadline = Instant::now() + secs;
    let mut persistent = TcpStream::connect((peer, port)).ok();
    let mut buf = [0u8; 256];
    let mut n = 0u32;
    while Instant::now() < deadline && n < 10_000 {
        n += 1;
        if let Some(p) = persistent.as_mut() {
            if p.write_all(b"heartbeat\n").is_ok() {
                let _ = p.read(&mut buf);
            }
        }
        if let Ok(mut s) =
            TcpStream::connect_timeout(&SocketAddr::new(peer, port), Duration::from_secs(1))
        {
            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
            if s.write_all(&[0x42; 200]).is_ok() {
                let _ = s.read(&mut buf);
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

// ------------------------------------------------------------------ the lab

/// Two namespaces joined by a veth pair; removed on drop, with every process started in them.
struct Lab {
    gw: String,
    peer: String,
    children: Vec<Child>,
    holder: Child,
    bin_dir: tempfile::TempDir,
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

impl Lab {
    fn new(tag: &str) -> Result<Lab, String> {
        let id = std::process::id() % 100_000;
        let gw = format!("ewgw-{tag}-{id}");
        let peer = format!("ewpe-{tag}-{id}");
        let (va, vb) = (format!("ewa{tag}{id}"), format!("ewb{tag}{id}"));
        ip(&["netns", "add", &gw])?;
        if let Err(e) = ip(&["netns", "add", &peer]) {
            let _ = ip(&["netns", "del", &gw]);
            return Err(e);
        }
        let setup = || -> Result<(), String> {
            ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb])?;
            ip(&["link", "set", &va, "netns", &gw])?;
            ip(&["link", "set", &vb, "netns", &peer])?;
            for (ns, dev, v4, v6) in [
                (&gw, &va, "169.254.77.1/24", "fd00:ee:77::1/64"),
                (&peer, &vb, "169.254.77.2/24", "fd00:ee:77::2/64"),
            ] {
                ip(&["-n", ns, "link", "set", "lo", "up"])?;
                ip(&["-n", ns, "addr", "add", v4, "dev", dev])?;
                ip(&["-n", ns, "addr", "add", v6, "dev", dev, "nodad"])?;
                ip(&["-n", ns, "link", "set", dev, "up"])?;
            }
            for i in 1..=FANOUT_ADDRS {
                ip(&[
                    "-n",
                    &peer,
                    "addr",
                    "add",
                    &format!("{}/64", peer_v6(i)),
                    "dev",
                    &vb,
                    "nodad",
                ])?;
            }
            Ok(())
        };
        let cleanup = |e: String| {
            let _ = ip(&["netns", "del", &gw]);
            let _ = ip(&["netns", "del", &peer]);
            e
        };
        setup().map_err(cleanup)?;
        let holder = Command::new("ip")
            .args([
                "netns",
                "exec",
                &gw,
                "sleep",
                &MAX_GENERATOR_SECS.to_string(),
            ])
            .spawn()
            .map_err(|e| cleanup(format!("cannot start the namespace holder: {e}")))?;
        let bin_dir = tempfile::tempdir().map_err(|e| cleanup(e.to_string()))?;
        let lab = Lab {
            gw,
            peer,
            children: Vec::new(),
            holder,
            bin_dir,
        };
        // Wait until the holder has entered the namespace.
        for _ in 0..100 {
            if lab.holder_pid().is_some() {
                return Ok(lab);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err("the namespace holder did not start".into())
    }

    /// PID of the `sleep` inside the gateway namespace (`ip netns exec` execs into it).
    fn holder_pid(&self) -> Option<u32> {
        let pid = self.holder.id();
        let link = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()?;
        let own = std::fs::read_link("/proc/self/ns/net").ok()?;
        (link != own).then_some(pid)
    }

    /// Runs a generator inside `ns`, under `name` (the process name the gateway sees).
    fn spawn(&mut self, ns: &str, spec: &str, name: Option<&str>) {
        let exe = std::env::current_exe().expect("test binary path");
        let exe = match name {
            Some(n) => {
                let link = self.bin_dir.path().join(n);
                if !link.exists() {
                    std::os::unix::fs::symlink(&exe, &link).expect("symlink generator");
                }
                link
            }
            None => exe,
        };
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(&exe)
            .args([
                "generator",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
                "-q",
            ])
            .env("EW_GEN", spec)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn generator");
        self.children.push(child);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in self
            .children
            .iter_mut()
            .chain(std::iter::once(&mut self.holder))
        {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = ip(&["netns", "del", &self.gw]);
        let _ = ip(&["netns", "del", &self.peer]);
    }
}

// ------------------------------------------------------------------ snapshots from /proc

/// Samples snapshots of the namespace `holder` lives in.
struct Sampler {
    holder: u32,
    netns: PathBuf,
    seq: u64,
    last: Option<Instant>,
    last_counters: BTreeMap<&'static str, u64>,
    last_net: Option<NetDelta>,
    last_cpu: BTreeMap<u32, (String, u64)>,
    ticks_per_sec: f64,
    cpus: f64,
}

const COUNTERS: &[(&str, &str, &str)] = &[
    ("Tcp", "ActiveOpens", "tcp_active_opens"),
    ("Tcp", "PassiveOpens", "tcp_passive_opens"),
    ("Tcp", "AttemptFails", "tcp_attempt_fails"),
    ("Tcp", "EstabResets", "tcp_estab_resets"),
    ("Tcp", "OutRsts", "tcp_out_rsts"),
    ("Tcp", "InErrs", "tcp_in_errs"),
    ("Udp", "InDatagrams", "udp_in_datagrams"),
    ("Udp", "OutDatagrams", "udp_out_datagrams"),
    ("Udp", "NoPorts", "udp_no_ports"),
    ("Udp", "InErrors", "udp_in_errors"),
];

impl Sampler {
    fn new(holder: u32) -> Sampler {
        Sampler {
            holder,
            netns: std::fs::read_link(format!("/proc/{holder}/ns/net")).expect("holder netns"),
            seq: 0,
            last: None,
            last_counters: BTreeMap::new(),
            last_net: None,
            last_cpu: BTreeMap::new(),
            ticks_per_sec: 100.0,
            cpus: std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64),
        }
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(format!("/proc/{}/net/{file}", self.holder)).unwrap_or_default()
    }

    fn counters(&self) -> BTreeMap<&'static str, u64> {
        let snmp = self.read("snmp");
        let snmp6 = self.read("snmp6");
        let lines: Vec<&str> = snmp.lines().collect();
        let mut out = BTreeMap::new();
        for pair in lines.chunks(2) {
            let [head, vals] = pair else { continue };
            let (Some((proto, names)), Some((_, values))) =
                (head.split_once(':'), vals.split_once(':'))
            else {
                continue;
            };
            for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
                if let Some((_, _, key)) = COUNTERS.iter().find(|(p, f, _)| *p == proto && *f == n)
                {
                    *out.entry(*key).or_insert(0) += v.parse::<u64>().unwrap_or(0);
                }
            }
        }
        for line in snmp6.lines() {
            let mut it = line.split_whitespace();
            let (Some(name), Some(v)) = (it.next(), it.next()) else {
                continue;
            };
            if let Some(field) = name.strip_prefix("Udp6") {
                if let Some((_, _, key)) =
                    COUNTERS.iter().find(|(p, f, _)| *p == "Udp" && *f == field)
                {
                    *out.entry(*key).or_insert(0) += v.parse::<u64>().unwrap_or(0);
                }
            }
        }
        out
    }

    fn net(&self) -> NetDelta {
        let mut d = NetDelta::default();
        for line in self.read("dev").lines().skip(2) {
            let Some((iface, rest)) = line.split_once(':') else {
                continue;
            };
            if iface.trim() == "lo" {
                continue;
            }
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(|x| x.parse().unwrap_or(0))
                .collect();
            if f.len() >= 10 {
                d.add(&NetDelta {
                    bytes_in: f[0],
                    packets_in: f[1],
                    bytes_out: f[8],
                    packets_out: f[9],
                });
            }
        }
        d
    }

    /// (state, local, remote) of every socket in /proc/net/{tcp,tcp6} or {udp,udp6}.
    fn sockets(&self, proto: &str) -> Vec<(u8, SocketAddr, SocketAddr)> {
        let mut out = Vec::new();
        for file in [proto.to_owned(), format!("{proto}6")] {
            for line in self.read(&file).lines().skip(1) {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.len() < 4 {
                    continue;
                }
                let (Some(l), Some(r), Ok(st)) =
                    (hex_addr(f[1]), hex_addr(f[2]), u8::from_str_radix(f[3], 16))
                else {
                    continue;
                };
                out.push((st, l, r));
            }
        }
        out
    }

    /// Processes in the namespace: pid → (name, utime + stime ticks).
    fn processes(&self) -> BTreeMap<u32, (String, u64)> {
        let mut out = BTreeMap::new();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return out;
        };
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if std::fs::read_link(format!("/proc/{pid}/ns/net"))
                .ok()
                .as_deref()
                != Some(self.netns.as_path())
            {
                continue;
            }
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let name = stat[open + 1..close].to_owned();
            let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
            // Fields 14 and 15 of stat: utime, stime (rest[0] is field 3).
            let cpu = rest
                .get(11)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                + rest
                    .get(12)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            out.insert(pid, (name, cpu));
        }
        out
    }

    fn sample(&mut self) -> Snapshot {
        let now = Instant::now();
        let interval = self.last.map_or(Duration::ZERO, |l| now - l);
        self.last = Some(now);
        self.seq += 1;
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_millis() as u64;
        let counters = self.counters();
        let net = self.net();
        let mut s = Snapshot {
            seq: self.seq,
            at_ms,
            interval_ms: interval.as_millis() as u64,
            ..Snapshot::default()
        };
        if let Some(prev) = self.last_net {
            s.net = Some(NetDelta {
                bytes_in: net.bytes_in.saturating_sub(prev.bytes_in),
                bytes_out: net.bytes_out.saturating_sub(prev.bytes_out),
                packets_in: net.packets_in.saturating_sub(prev.packets_in),
                packets_out: net.packets_out.saturating_sub(prev.packets_out),
            });
            for (k, v) in &counters {
                let d = v.saturating_sub(self.last_counters.get(k).copied().unwrap_or(*v));
                s.custom
                    .insert((*k).to_owned(), MetricValue::Number(d as f64));
            }
        } else {
            s.net = Some(NetDelta::default());
        }
        self.last_net = Some(net);
        self.last_counters = counters;

        let tcp = self.sockets("tcp");
        let listen = |st: u8, socks: &[(u8, SocketAddr, SocketAddr)]| -> Vec<ListenPort> {
            socks
                .iter()
                .filter(|(s, _, _)| *s == st)
                .map(|(_, l, _)| ListenPort {
                    port: l.port(),
                    addr: l.ip(),
                    interface: None,
                    process: None,
                })
                .collect()
        };
        s.tcp_listen = Some(listen(0x0A, &tcp));
        s.udp_listen = Some(listen(0x07, &self.sockets("udp")));
        s.established = Some(
            tcp.iter()
                .filter(|(st, _, _)| *st == 0x01)
                .map(|(_, l, r)| TcpConn {
                    local: *l,
                    remote: *r,
                    interface: None,
                })
                .collect(),
        );

        let procs = self.processes();
        let secs = interval.as_secs_f64().max(1e-3);
        let mut used: Vec<(f64, &str)> = procs
            .iter()
            .map(|(pid, (name, cpu))| {
                // A process new since the last sample spent all its time in this interval.
                let before = self.last_cpu.get(pid).map_or(0, |(_, c)| *c);
                (
                    (cpu.saturating_sub(before)) as f64 / self.ticks_per_sec / secs,
                    name.as_str(),
                )
            })
            .collect();
        let total: f64 = used.iter().map(|u| u.0).sum();
        used.sort_by(|a, b| b.0.total_cmp(&a.0));
        let new_names: BTreeSet<String> = if self.last_cpu.is_empty() && self.seq == 1 {
            BTreeSet::new()
        } else {
            procs
                .iter()
                .filter(|(pid, _)| !self.last_cpu.contains_key(pid))
                .map(|(_, (n, _))| n.clone())
                .collect()
        };
        let num = |v: f64| MetricValue::Number(v);
        s.custom.insert(
            "cpu_usage".into(),
            num((total / self.cpus * 100.0).min(100.0)),
        );
        s.custom
            .insert("process_count".into(), num(procs.len() as f64));
        s.custom.insert(
            "top_cpu_processes".into(),
            MetricValue::StringList(
                used.iter()
                    .filter(|u| u.0 > 0.05)
                    .take(5)
                    .map(|u| u.1.to_owned())
                    .collect(),
            ),
        );
        s.custom.insert(
            "new_process_names".into(),
            MetricValue::StringList(new_names.into_iter().collect()),
        );
        self.last_cpu = procs;
        s
    }
}

/// Parses `0100007F:1F90` (IPv4) or the 32-hex-digit IPv6 form of /proc/net/tcp6.
fn hex_addr(s: &str) -> Option<SocketAddr> {
    let (a, p) = s.split_once(':')?;
    let port = u16::from_str_radix(p, 16).ok()?;
    let ip = match a.len() {
        8 => IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(a, 16).ok()?.swap_bytes(),
        )),
        32 => {
            let mut b = [0u8; 16];
            for w in 0..4 {
                let word = u32::from_str_radix(&a[w * 8..w * 8 + 8], 16)
                    .ok()?
                    .swap_bytes();
                b[w * 4..w * 4 + 4].copy_from_slice(&word.to_be_bytes());
            }
            let v6 = Ipv6Addr::from(b);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

// ------------------------------------------------------------------ the scenarios

/// One run: a lab with normal traffic, an engine on the default profile, a tick loop.
struct Run {
    lab: Lab,
    sampler: Sampler,
    engine: Engine,
    next: Instant,
    events: Vec<(u64, ViolationEvent)>,
}

impl Run {
    fn start(tag: &str) -> Result<Run, String> {
        let mut lab = Lab::new(tag)?;
        let holder = lab.holder_pid().ok_or("no holder")?;
        let secs = MAX_GENERATOR_SECS.to_string();
        let peer = lab.peer.clone();
        let gw = lab.gw.clone();
        lab.spawn(&peer, &format!("serve :: {ECHO_PORT} {secs} echo"), None);
        lab.spawn(
            &peer,
            &format!("serve 0.0.0.0 {DISCARD_PORT} {secs} discard"),
            None,
        );
        lab.spawn(
            &gw,
            &format!("serve 0.0.0.0 {GW_SERVICE_PORT} {secs} echo"),
            None,
        );
        std::thread::sleep(Duration::from_millis(300));
        lab.spawn(&gw, &format!("client {PEER_V4} {ECHO_PORT} {secs}"), None);
        lab.spawn(
            &peer,
            &format!("client {GW_V4} {GW_SERVICE_PORT} {secs}"),
            None,
        );
        let cfg = DetectConfig {
            enabled: true,
            profile: None,
            learning_period: TICK * 60,
            violations_topic: "edgewarden/{thing}/violations".into(),
        };
        Ok(Run {
            sampler: Sampler::new(holder),
            engine: Engine::new(default_profile(), &cfg, "scenario-gw", None),
            lab,
            next: Instant::now(),
            events: Vec::new(),
        })
    }

    /// Waits for the next tick, samples, evaluates; returns this tick's events.
    fn tick(&mut self) -> Vec<ViolationEvent> {
        self.next += TICK;
        if let Some(d) = self.next.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        let snap = self.sampler.sample();
        if std::env::var_os("EW_DEBUG").is_some() {
            eprintln!(
                "tick {}: {:?} established {:?}",
                snap.seq,
                snap.net,
                snap.established
                    .as_ref()
                    .map(|e| e.iter().map(|c| c.remote).collect::<Vec<_>>())
            );
        }
        let ev = self.engine.evaluate(&snap);
        self.engine.train_inline();
        for e in &ev {
            self.events.push((snap.seq, e.clone()));
        }
        ev
    }

    fn ticks(&mut self, n: u64) -> Vec<ViolationEvent> {
        (0..n).flat_map(|_| self.tick()).collect()
    }
}

/// One line per event.
fn summary(ev: &[(u64, ViolationEvent)]) -> String {
    ev.iter()
        .map(|(seq, e)| {
            format!(
                "  tick {seq}: {} {} score {:.2}: {}",
                e.behavior.name,
                e.violation_event_type.as_str(),
                e.score,
                e.explanation
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn raised(ev: &[ViolationEvent]) -> BTreeSet<String> {
    ev.iter()
        .filter(|e| e.violation_event_type == ViolationEventType::InAlarm)
        .map(|e| e.behavior.name.clone())
        .collect()
}

fn namespaces_available() -> Result<(), String> {
    if !Path::new("/proc/self/ns/net").exists() {
        return Err("no network namespaces in this kernel".into());
    }
    let probe = format!("ewprobe-{}", std::process::id());
    ip(&["netns", "add", &probe])
        .map_err(|e| format!("cannot create a network namespace (needs root and iproute2): {e}"))?;
    ip(&["netns", "del", &probe])
}

#[test]
fn attacks_are_flagged_within_two_intervals_and_a_quiet_run_raises_nothing() {
    if let Err(reason) = namespaces_available() {
        eprintln!("SKIPPED attack scenarios: {reason}");
        return;
    }
    // The quiet run: the same baseline and duration, no injections.
    let quiet = {
        let mut run = Run::start("q").expect("quiet lab");
        run.ticks(BASELINE_TICKS + 6 * (2 + RECOVERY_TICKS));
        assert_eq!(run.engine.status().phase, edgewarden::detect::Phase::Armed);
        run.events
    };
    let false_alarms = raised(&quiet.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>());
    assert!(
        false_alarms.is_empty(),
        "a run without injections raised {false_alarms:?}:\n{}",
        summary(&quiet)
    );

    let mut run = Run::start("a").expect("attack lab");
    let baseline = run.ticks(BASELINE_TICKS);
    let baseline: Vec<(u64, ViolationEvent)> = baseline.into_iter().map(|e| (0, e)).collect();
    assert!(
        baseline.is_empty(),
        "alarms during the baseline:\n{}",
        summary(&baseline)
    );
    assert_eq!(run.engine.status().phase, edgewarden::detect::Phase::Armed);
    let gw = run.lab.gw.clone();
    let peer = run.lab.peer.clone();

    let fanout: Vec<String> = (1..=FANOUT_ADDRS).map(|i| peer_v6(i).to_string()).collect();
    type Scenario = (
        &'static str,
        String,
        bool,
        Option<&'static str>,
        &'static str,
    );
    let scenarios: Vec<Scenario> = vec![
        (
            "backdoor listener",
            "listen 31337 3".to_owned(),
            true,
            None,
            "new-listening-tcp-port",
        ),
        (
            "outbound flood",
            format!("flood {PEER_V4} {DISCARD_PORT} 2 512"),
            true,
            None,
            "traffic-bytes-out",
        ),
        (
            "inbound port scan",
            format!("scan {GW_V4} 1 1500"),
            false,
            None,
            "scan-inbound-tcp",
        ),
        (
            "lateral connect scan",
            format!("scan {PEER_V4} 1 500"),
            true,
            None,
            "scan-outbound-connect-failures",
        ),
        (
            "burst to new addresses",
            format!("fanout {ECHO_PORT} 3 {}", fanout.join(" ")),
            true,
            None,
            "new-destination-addresses",
        ),
        (
            "CPU-bound new process",
            "spin 4".to_owned(),
            true,
            Some("xmrig-spin"),
            "new-cpu-heavy-process",
        ),
    ];
    let mut failures = Vec::new();
    for (what, spec, from_gateway, name, behavior) in scenarios {
        run.lab
            .spawn(if from_gateway { &gw } else { &peer }, &spec, name);
        let ev = run.ticks(2);
        let got = raised(&ev);
        eprintln!("{what}: raised {got:?}\n{}", run.engine.status());
        if !got.contains(behavior) {
            failures.push(format!(
                "{what}: expected {behavior} within two intervals, got {got:?}"
            ));
        }
        // Let the generator finish and the alarms clear.
        run.ticks(RECOVERY_TICKS);
    }
    assert!(
        failures.is_empty(),
        "{}\nevents:\n{}",
        failures.join("\n"),
        summary(&run.events)
    );
}
