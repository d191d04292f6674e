//! Collectors on captured and hand-made `/proc` trees (`tests/fixtures/proc/`), and the
//! netlink/`/proc` agreement on this machine's live sockets.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};

use edgewarden::collect::netlink::Proto;
use edgewarden::collect::sockets::{RawSocket, SocketReader, SocketSource};
use edgewarden::collect::Collector;
use edgewarden::config::{CollectConfig, Config};
use edgewarden::metrics;
use edgewarden::snapshot::{ListenPort, MetricValue, NetDelta, Snapshot};

fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/proc")
        .join(case)
}

fn cfg() -> CollectConfig {
    Config::embedded_default().collect
}

/// Copies a fixture tree (keeping symlinks as symlinks) so a test can change files between ticks.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let ty = e.file_type().unwrap();
        let dst = to.join(e.file_name());
        if ty.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(e.path()).unwrap(), dst).unwrap();
        } else if ty.is_dir() {
            copy_tree(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

fn strings(s: &Snapshot, name: &str) -> Vec<String> {
    match s.custom.get(name) {
        Some(MetricValue::StringList(v)) => v.clone(),
        other => panic!("{name}: expected a string list, got {other:?}"),
    }
}

fn number(s: &Snapshot, name: &str) -> f64 {
    match s.custom.get(name) {
        Some(MetricValue::Number(v)) => *v,
        other => panic!("{name}: expected a number, got {other:?}"),
    }
}

fn ports(v: &[ListenPort]) -> Vec<(u16, String, Option<&str>, Option<&str>)> {
    v.iter()
        .map(|p| {
            (
                p.port,
                p.addr.to_string(),
                p.interface.as_deref(),
                p.process.as_deref(),
            )
        })
        .collect()
}

#[cfg(target_endian = "little")]
#[test]
fn edge_case_tree_gives_exact_sockets_interfaces_owners_and_counted_skips() {
    let mut c = Collector::with_root(&cfg(), fixture("edge-cases"));
    assert!(!c.uses_netlink());
    let s = c.sample();

    assert_eq!(
        ports(s.tcp_listen.as_ref().unwrap()),
        vec![
            (22, "0.0.0.0".into(), None, Some("sshd")),
            // Owners no /proc/<pid>/fd shows are reported by the socket's UID.
            (22, "192.168.1.20".into(), Some("wlan0"), Some("uid:0")),
            (22, "::".into(), None, Some("sshd")),
            (631, "::1".into(), Some("lo"), Some("uid:0")),
            (1883, "127.0.0.1".into(), Some("lo"), Some("mosquitto")),
            (8443, "10.0.2.15".into(), Some("eth0"), Some("uid:1000")),
            (8883, "2001:db8::2".into(), Some("wlan0"), Some("uid:0")),
        ]
    );
    assert_eq!(
        ports(s.udp_listen.as_ref().unwrap()),
        vec![
            (123, "10.0.2.15".into(), Some("eth0"), Some("uid:0")),
            (5353, "0.0.0.0".into(), None, Some("uid:102")),
            (5353, "::".into(), None, Some("uid:102")),
        ]
    );
    let est: Vec<(String, String, Option<&str>)> = s
        .established
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c.local.to_string(),
                c.remote.to_string(),
                c.interface.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        est,
        vec![
            (
                "10.0.2.15:22".into(),
                "203.0.113.10:60211".into(),
                Some("eth0")
            ),
            (
                "10.0.2.15:51522".into(),
                "203.0.113.10:8883".into(),
                Some("eth0")
            ),
            (
                "[2001:db8::2]:22".into(),
                "[2001:db8::7]:60211".into(),
                Some("wlan0")
            ),
        ]
    );
    // Warm-up: zero deltas.
    assert_eq!(s.interval_ms, 0);
    assert_eq!(s.net, Some(NetDelta::default()));
    assert_eq!(number(&s, metrics::TCP_OUT_RSTS), 0.0);
    // Processes 400 (no stat) and 500 (truncated stat) are skipped.
    assert_eq!(number(&s, metrics::PROCESS_COUNT), 5.0);
    assert_eq!(
        strings(&s, metrics::TOP_MEMORY_PROCESSES),
        vec!["systemd", "mosquitto", "sshd", "tmux: server", "a) b"]
    );
    assert!(strings(&s, metrics::NEW_PROCESS_NAMES).is_empty());
    assert!(!s.custom.contains_key(metrics::TOP_CPU_PROCESSES));
    assert_eq!(
        strings(&s, metrics::LISTENING_PROCESS_NAMES),
        vec!["mosquitto", "sshd"]
    );
    assert_eq!(number(&s, metrics::MEMORY_USED_PCT), 60.0);
    assert_eq!(number(&s, metrics::LOAD_AVG_1M), 0.52);
    assert_eq!(number(&s, metrics::UPTIME_S), 12345.67);
    // Skips: tcp 2 lines, tcp6 1, udp 1, net/dev 1, one malformed stat.
    assert_eq!(number(&s, metrics::COLLECTOR_ERRORS), 6.0);
    assert_eq!(c.errors(), 6);
    assert_eq!(c.vanished(), 1);
}

#[test]
fn second_tick_turns_counters_into_deltas_with_resets_and_new_processes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("proc");
    copy_tree(&fixture("edge-cases"), &root);
    let mut c = Collector::with_root(&cfg(), root.clone());
    c.sample();
    for f in ["net/dev", "net/snmp", "stat"] {
        std::fs::rename(root.join(format!("{f}.next")), root.join(f)).unwrap();
    }
    // One new process, and sshd used CPU.
    std::fs::create_dir(root.join("600")).unwrap();
    std::fs::write(
        root.join("600/stat"),
        "600 (newproc) R 1 600 600 0 -1 0 0 0 0 0 3 1 0 0 20 0 1 0 9000 1000 10 0\n",
    )
    .unwrap();
    std::fs::write(
        root.join("200/stat"),
        "200 (sshd) S 1 200 200 0 -1 0 0 0 0 0 30 5 0 0 20 0 1 0 500 1000000 1500 0\n",
    )
    .unwrap();
    let s = c.sample();
    // eth0 only: lo is excluded, wlan0 went down (reset: zero), docker0 is new (baseline).
    assert_eq!(
        s.net,
        Some(NetDelta {
            bytes_in: 1000,
            bytes_out: 500,
            packets_in: 10,
            packets_out: 5
        })
    );
    assert_eq!(c.counter_resets(), 1);
    assert_eq!(number(&s, metrics::TCP_ACTIVE_OPENS), 5.0);
    assert_eq!(number(&s, metrics::TCP_ATTEMPT_FAILS), 1.0);
    assert_eq!(number(&s, metrics::TCP_OUT_RSTS), 1000.0);
    assert_eq!(number(&s, metrics::UDP_NO_PORTS), 250.0);
    assert_eq!(number(&s, metrics::UDP_IN_DATAGRAMS), 4.0);
    assert_eq!(number(&s, metrics::CPU_USAGE), 40.0);
    assert_eq!(strings(&s, metrics::NEW_PROCESS_NAMES), vec!["newproc"]);
    assert_eq!(
        strings(&s, metrics::TOP_CPU_PROCESSES),
        vec!["sshd", "newproc"]
    );
    assert_eq!(number(&s, metrics::PROCESS_COUNT), 6.0);
}

#[cfg(target_endian = "little")]
#[test]
fn captured_tree_resolves_wildcard_loopback_and_specific_binds() {
    let mut c = Collector::with_root(&cfg(), fixture("live-capture"));
    let s = c.sample();
    let tcp = s.tcp_listen.unwrap();
    let ours: Vec<_> = tcp.into_iter().filter(|p| p.port >= 18080).collect();
    assert_eq!(
        ports(&ours),
        vec![
            (18080, "0.0.0.0".into(), None, Some("python3")),
            (18080, "::".into(), None, Some("python3")),
            (18081, "127.0.0.1".into(), Some("lo"), Some("python3")),
            (18082, "192.0.2.2".into(), Some("eth0"), Some("python3")),
            (18083, "::1".into(), Some("lo"), Some("python3")),
            (18084, "fd00::2".into(), Some("eth0"), Some("python3")),
            (18085, "::".into(), None, Some("python3")),
        ]
    );
    assert_eq!(
        ports(&s.udp_listen.unwrap()),
        vec![
            (15353, "0.0.0.0".into(), None, Some("python3")),
            (15354, "127.0.0.1".into(), Some("lo"), Some("python3")),
            (15355, "::".into(), None, Some("python3")),
            (15356, "fd00::2".into(), Some("eth0"), Some("python3")),
        ]
    );
    let est = s.established.unwrap();
    // Both ends of three loopback connections; the dual-stack one is shown as IPv4.
    assert_eq!(est.len(), 6);
    assert!(est.iter().all(|c| c.interface.as_deref() == Some("lo")));
    assert!(est
        .iter()
        .any(|c| c.local.port() == 18085 && c.remote.ip() == IpAddr::from([127, 0, 0, 1])));
    assert_eq!(c.errors(), 0);
}

#[test]
fn an_empty_proc_root_leaves_every_field_empty_and_counts_failures() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Collector::with_root(&cfg(), dir.path().to_owned());
    for _ in 0..3 {
        let s = c.sample();
        assert_eq!(s.net, None);
        assert_eq!(s.tcp_listen, None);
        assert_eq!(s.udp_listen, None);
        assert_eq!(s.established, None);
        assert_eq!(number(&s, metrics::PROCESS_COUNT), 0.0);
        assert!(number(&s, metrics::COLLECTOR_ERRORS) >= 8.0);
    }
    let missing = Collector::with_root(&cfg(), PathBuf::from("/nonexistent/proc")).sample();
    assert_eq!(missing.net, None);
    assert!(!missing.custom.contains_key(metrics::PROCESS_COUNT));
}

#[test]
fn garbage_files_are_skipped_and_counted_never_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("net")).unwrap();
    for f in [
        "net/dev",
        "net/tcp",
        "net/tcp6",
        "net/udp",
        "net/udp6",
        "net/snmp",
        "net/snmp6",
        "net/if_inet6",
        "net/fib_trie",
        "net/route",
        "stat",
        "meminfo",
        "loadavg",
        "uptime",
    ] {
        std::fs::write(root.join(f), "\u{0}\u{ff}garbage: ( ) | 0A:ZZ\n\n   1: x\n").unwrap();
    }
    let mut c = Collector::with_root(&cfg(), root.to_owned());
    let s = c.sample();
    assert_eq!(s.net, Some(NetDelta::default()));
    assert_eq!(s.tcp_listen, Some(vec![]));
    assert_eq!(s.udp_listen, Some(vec![]));
    assert!(c.errors() >= 10, "errors {}", c.errors());
}

/// Sockets of either source restricted to the given local or remote ports, comparable as a set.
fn ours(v: &[RawSocket], ports: &BTreeSet<u16>) -> BTreeSet<(SocketAddr, SocketAddr, u8, u64)> {
    v.iter()
        .filter(|s| ports.contains(&s.local.port()) || ports.contains(&s.remote.port()))
        .map(|s| (s.local, s.remote, s.state, s.inode))
        .collect()
}

#[test]
fn netlink_and_proc_net_agree_on_live_sockets() {
    let l4 = TcpListener::bind("0.0.0.0:0").unwrap();
    let l4lo = TcpListener::bind("127.0.0.1:0").unwrap();
    let l6 = TcpListener::bind("[::]:0");
    let l6lo = TcpListener::bind("[::1]:0");
    let u4 = UdpSocket::bind("0.0.0.0:0").unwrap();
    let u4lo = UdpSocket::bind("127.0.0.1:0").unwrap();
    let u6 = UdpSocket::bind("[::]:0");
    let u6lo = UdpSocket::bind("[::1]:0");
    let conn = TcpStream::connect(l4lo.local_addr().unwrap()).unwrap();
    let (accepted, _) = l4lo.accept().unwrap();
    let mut ports: BTreeSet<u16> = [&l4, &l4lo]
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .chain([&u4, &u4lo].iter().map(|u| u.local_addr().unwrap().port()))
        .collect();
    for l in [&l6, &l6lo].into_iter().flatten() {
        ports.insert(l.local_addr().unwrap().port());
    }
    for u in [&u6, &u6lo].into_iter().flatten() {
        ports.insert(u.local_addr().unwrap().port());
    }
    let mut nl = SocketReader::new(Path::new("/proc"), true);
    let mut pr = SocketReader::new(Path::new("/proc"), false);
    for proto in [Proto::Tcp, Proto::Udp] {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let ra = nl.read(proto, &mut a).map_err(|(_, e)| e).unwrap();
        let rb = pr.read(proto, &mut b).map_err(|(_, e)| e).unwrap();
        assert_eq!(
            ra.source,
            Some(SocketSource::Netlink),
            "{:?}",
            ra.netlink_failed
        );
        assert_eq!(rb.source, Some(SocketSource::ProcNet));
        let (a, b) = (ours(&a, &ports), ours(&b, &ports));
        assert_eq!(a, b, "{proto:?}");
        let expected = match proto {
            // listeners (2 v4 + up to 2 v6) and both ends of the connection
            Proto::Tcp => 4 + [&l6, &l6lo].iter().filter(|l| l.is_ok()).count(),
            Proto::Udp => 2 + [&u6, &u6lo].iter().filter(|u| u.is_ok()).count(),
        };
        assert_eq!(a.len(), expected, "{proto:?}: {a:?}");
    }
    drop((conn, accepted));
}

#[test]
fn collector_without_netlink_reads_proc_net_and_finds_a_fresh_listener() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let mut c = cfg();
    c.netlink = false;
    let mut col = Collector::new(&c);
    assert!(!col.uses_netlink());
    let s = col.sample();
    let found = s
        .tcp_listen
        .unwrap()
        .into_iter()
        .find(|p| p.port == port)
        .expect("the listener is reported");
    assert_eq!(found.interface.as_deref(), Some("lo"));
    assert!(found.process.is_some());
}
