//! The shortcut of a quiet tick is safe: a collector that reuses its last TCP walk and skips the
//! `/proc` listing while the kernel's counters have not moved sees exactly what a collector
//! that walks everything every tick sees.
//!
//! The test re-runs itself in fresh network, PID and mount namespaces (root; else `SKIPPED`), so
//! that the only sockets and processes are the ones it makes. A seeded random sequence of steps
//! (listeners opened and closed on IPv4 and IPv6, connections accepted and closed from either
//! side, refused connects, connects left in `SYN_SENT` towards a silent address, UDP sockets,
//! processes started and killed, and quiet steps) runs; after each step a gated collector and a
//! full one sample back to back, and their snapshots and the verdicts of two detection engines
//! (the default profile) fed with them must be equal. `EW_GATING_SEED=<n>` replays a run.
//!
//! Clocks and kernel timers move some values between the two collectors' reads: CPU figures
//! (`cpu_usage`, `load_avg_1m`, `memory_used_pct`, `uptime_s`, `top_cpu_processes`,
//! `process_cpu_levels`) and packet counters that SYN retransmissions move (interface counters,
//! `tcp_in_segs`, `tcp_out_segs`, `raw_packets_out`). These are not compared; the full snapshot
//! takes the gated one's values of them before its engine sees it. Gating
//! changes which sockets and processes are read, never how one is read: what gating could hide
//! (a socket, a connection, a listener, a process, a name) is all compared.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edgewarden::collect::Collector;
use edgewarden::config::{Config, DetectConfig};
use edgewarden::detect::{default_profile, Engine};
use edgewarden::metrics;
use edgewarden::snapshot::{MetricValue, Snapshot};
use integration_tests::lab;

const INNER: &str = "EW_GATING_INNER";
const STEPS: usize = 240;
/// A local address on one end of a veth pair: connections to it are not loopback ones (the
/// destination tracker ignores loopback). A second address on that network has a static
/// neighbour entry that nothing answers to, so a connect to it stays in `SYN_SENT`.
const DUMMY_LOCAL: &str = "10.77.0.1";
const SILENT: &str = "10.77.0.2";
/// Values that clocks and kernel timers move between the two collectors' reads (CPU times, SYN
/// retransmissions to the silent address); both modes read them afresh every tick.
const INSTANT_METRICS: [&str; 9] = [
    metrics::CPU_USAGE,
    metrics::LOAD_AVG_1M,
    metrics::MEMORY_USED_PCT,
    metrics::UPTIME_S,
    metrics::TOP_CPU_PROCESSES,
    metrics::PROCESS_CPU_LEVELS,
    metrics::TCP_IN_SEGS,
    metrics::TCP_OUT_SEGS,
    metrics::RAW_PACKETS_OUT,
];

#[test]
fn gated_collection_sees_what_a_full_walk_sees() {
    if std::env::var_os(INNER).is_some() {
        inner();
        return;
    }
    if let Some(why) = lab::skip_reason() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let exe = std::env::current_exe().expect("test executable");
    let out = Command::new("unshare")
        .args(["--net", "--pid", "--fork", "--mount-proc"])
        .arg(exe)
        .args([
            "--exact",
            "gated_collection_sees_what_a_full_walk_sees",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(INNER, "1")
        .stdin(Stdio::null())
        .output()
        .expect("unshare runs");
    std::io::stderr().write_all(&out.stderr).ok();
    std::io::stderr().write_all(&out.stdout).ok();
    assert!(out.status.success(), "the run in namespaces failed");
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[derive(Default)]
struct World {
    listeners: Vec<TcpListener>,
    pairs: Vec<(Option<TcpStream>, Option<TcpStream>)>,
    udp: Vec<UdpSocket>,
    children: Vec<Child>,
    /// Processes holding a connect in `SYN_SENT`.
    pending: Vec<Child>,
}

impl World {
    fn step(&mut self, rng: &mut Rng) -> String {
        match rng.below(14) {
            0 | 1 => {
                let addr = ["127.0.0.1:0", "[::1]:0", "0.0.0.0:0", "[::]:0"][rng.below(4)];
                let l = TcpListener::bind(addr).expect("bind");
                let a = l.local_addr().unwrap();
                self.listeners.push(l);
                format!("listen {a}")
            }
            2 if !self.listeners.is_empty() => {
                let l = self.listeners.remove(rng.below(self.listeners.len()));
                format!("close listener {}", l.local_addr().unwrap())
            }
            3..=5 if !self.listeners.is_empty() => {
                let l = &self.listeners[rng.below(self.listeners.len())];
                let a = l.local_addr().unwrap();
                let target: SocketAddr = match (a.is_ipv4(), a.ip().is_unspecified()) {
                    (true, true) => format!("{DUMMY_LOCAL}:{}", a.port()).parse().unwrap(),
                    (false, true) => format!("[::1]:{}", a.port()).parse().unwrap(),
                    _ => a,
                };
                let c = TcpStream::connect(target).expect("connect");
                let (s, _) = l.accept().expect("accept");
                self.pairs.push((Some(c), Some(s)));
                format!("connect {target}")
            }
            6 | 7 if !self.pairs.is_empty() => {
                let i = rng.below(self.pairs.len());
                let side = rng.below(2);
                let p = &mut self.pairs[i];
                if side == 0 {
                    p.0.take()
                } else {
                    p.1.take()
                };
                if p.0.is_none() && p.1.is_none() {
                    self.pairs.remove(i);
                }
                format!("close {} side of pair {i}", ["client", "server"][side])
            }
            8 => {
                // A port nobody listens on: RST, AttemptFails.
                let u = UdpSocket::bind("127.0.0.1:0").unwrap();
                let port = u.local_addr().unwrap().port();
                drop(u);
                let r = TcpStream::connect(("127.0.0.1", port));
                format!("refused connect :{port} ({})", r.is_err())
            }
            9 if self.pending.is_empty() => {
                let port = 1000 + rng.below(50000) as u16;
                let code = format!(
                    "import socket,sys,time\ns=socket.socket()\ns.setblocking(False)\ns.connect_ex(('{SILENT}',{port}))\nprint('sent',flush=True)\ntime.sleep(600)"
                );
                let mut c = Command::new("python3")
                    .args(["-c", &code])
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("python3");
                let mut line = String::new();
                std::io::BufRead::read_line(
                    &mut std::io::BufReader::new(c.stdout.as_mut().unwrap()),
                    &mut line,
                )
                .unwrap();
                self.pending.push(c);
                format!("connect {SILENT}:{port} (left in SYN_SENT)")
            }
            9 => {
                let mut c = self.pending.remove(rng.below(self.pending.len()));
                c.kill().ok();
                c.wait().ok();
                "close a SYN_SENT connect".to_owned()
            }
            10 => {
                let (prog, args): (&str, &[&str]) = match rng.below(3) {
                    0 => ("sleep", &["300"]),
                    1 => ("cat", &[]),
                    _ => ("tail", &["-f", "/dev/null"]),
                };
                let c = Command::new(prog)
                    .args(args)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("spawn");
                let pid = c.id();
                self.children.push(c);
                format!("start {prog} ({pid})")
            }
            11 if !self.children.is_empty() => {
                let mut c = self.children.remove(rng.below(self.children.len()));
                c.kill().ok();
                c.wait().ok();
                format!("kill {}", c.id())
            }
            12 => {
                if self.udp.len() < 4 || rng.below(2) == 0 {
                    let u = UdpSocket::bind(["127.0.0.1:0", "[::1]:0"][rng.below(2)]).unwrap();
                    let a = u.local_addr().unwrap();
                    self.udp.push(u);
                    format!("udp bind {a}")
                } else {
                    let u = self.udp.remove(rng.below(self.udp.len()));
                    format!("udp close {}", u.local_addr().unwrap())
                }
            }
            _ => "quiet".to_owned(),
        }
    }
}

fn comparable(s: &Snapshot) -> String {
    let mut custom: BTreeMap<&str, &MetricValue> = BTreeMap::new();
    for (k, v) in &s.custom {
        if !INSTANT_METRICS.contains(&k.as_str()) {
            custom.insert(k, v);
        }
    }
    format!(
        "tcp_listen={:?}\nudp_listen={:?}\nestablished={:?}\ncustom={custom:#?}",
        s.tcp_listen, s.udp_listen, s.established
    )
}

fn verdicts(engine: &mut Engine, s: &Snapshot) -> Vec<String> {
    let mut v: Vec<String> = engine
        .evaluate(s)
        .iter()
        .map(|e| format!("{} {:?}", e.behavior.name, e.violation_event_type))
        .collect();
    for job in engine.training_jobs() {
        engine.install(job.run());
    }
    v.sort();
    v
}

fn inner() {
    let seed = std::env::var("EW_GATING_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("gating equivalence: seed {seed} (EW_GATING_SEED={seed} replays it)");
    ip(&["link", "set", "lo", "up"]);
    ip(&["link", "add", "gw0", "type", "veth", "peer", "name", "gw1"]);
    for dev in ["gw0", "gw1"] {
        // No router solicitations or address detection traffic of its own.
        std::fs::write(format!("/proc/sys/net/ipv6/conf/{dev}/disable_ipv6"), "1").ok();
    }
    ip(&["addr", "add", &format!("{DUMMY_LOCAL}/24"), "dev", "gw0"]);
    ip(&["link", "set", "gw1", "up"]);
    ip(&["link", "set", "gw0", "up"]);
    ip(&[
        "neigh",
        "add",
        SILENT,
        "lladdr",
        "02:00:00:00:77:02",
        "dev",
        "gw0",
        "nud",
        "permanent",
    ]);

    let mut base = Config::embedded_default().collect;
    base.netlink = true;
    base.skip_unchanged = true;
    let mut gated = Collector::new(&base);
    base.skip_unchanged = false;
    let mut full = Collector::new(&base);
    let dcfg = DetectConfig {
        enabled: true,
        profile: None,
        learning_period: Duration::from_secs(2),
        violations_topic: "edgewarden/{thing}/violations".into(),
    };
    let mut engine_gated = Engine::new(default_profile(), &dcfg, "gw", None);
    let mut engine_full = Engine::new(default_profile(), &dcfg, "gw", None);

    let mut rng = Rng(seed);
    let mut world = World::default();
    let mut history: Vec<String> = Vec::new();
    let mut alarms = 0;
    for step in 0..STEPS {
        history.push(world.step(&mut rng));
        // Loopback handshakes and closes complete at once; let the threads run.
        std::thread::sleep(Duration::from_millis(25));
        let g = gated.sample();
        let mut f = full.sample();
        let (cg, cf) = (comparable(&g), comparable(&f));
        if cg != cf {
            let from = history.len().saturating_sub(8);
            panic!(
                "step {step} (seed {seed}): the gated collector saw\n{cg}\nthe full walk saw\n{cf}\nlast steps: {:#?}",
                &history[from..]
            );
        }
        f.net = g.net;
        for m in INSTANT_METRICS {
            match g.custom.get(m) {
                Some(v) => f.custom.insert(m.to_owned(), v.clone()),
                None => f.custom.remove(m),
            };
        }
        let (vg, vf) = (
            verdicts(&mut engine_gated, &g),
            verdicts(&mut engine_full, &f),
        );
        assert_eq!(vg, vf, "step {step} (seed {seed}): verdicts differ");
        alarms += vg.len();
    }
    let gs = gated.gate_stats();
    let (listed, skipped) = gated.process_listings();
    eprintln!(
        "{STEPS} steps: TCP table walked {} times, reused {} times ({} doubts); /proc listed {listed} times, skipped {skipped}; {alarms} verdicts compared",
        gs.full_walks, gs.reused, gs.doubts
    );
    assert_eq!(full.gate_stats().reused, 0);
    assert_eq!(
        gs.doubts, 0,
        "the counter files of this kernel are understood"
    );
    assert!(gs.reused >= 20, "quiet steps reuse the walk: {gs:?}");
    assert!(
        gs.full_walks >= 20,
        "steps that change sockets walk: {gs:?}"
    );
    for mut c in world.children {
        c.kill().ok();
        c.wait().ok();
    }
    for mut c in world.pending {
        c.kill().ok();
        c.wait().ok();
    }
}
