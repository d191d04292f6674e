//! Collector tests on the live machine; fixture-driven tests live in the `integration-tests`
//! crate (`tests/tests/collect.rs`).

use std::net::{TcpListener, UdpSocket};
use std::time::Duration;

use super::*;
use crate::config::Config;

/// `EPROTONOSUPPORT`, as every Linux architecture numbers it.
const PROTOCOL_NOT_SUPPORTED: i32 = 93;

fn cfg(netlink: bool) -> CollectConfig {
    let mut c = Config::embedded_default().collect;
    c.netlink = netlink;
    c
}

#[test]
fn live_sample_fills_every_field_and_warm_up_has_zero_deltas() {
    let _l = TcpListener::bind("127.0.0.1:0").unwrap();
    let _u = UdpSocket::bind("127.0.0.1:0").unwrap();
    for netlink in [true, false] {
        let mut c = Collector::new(&cfg(netlink));
        let s = c.sample();
        assert_eq!(s.seq, 1);
        assert_eq!(s.interval_ms, 0);
        assert_eq!(s.net, Some(crate::snapshot::NetDelta::default()));
        assert!(s.tcp_listen.as_ref().is_some_and(|v| !v.is_empty()));
        assert!(s.udp_listen.as_ref().is_some_and(|v| !v.is_empty()));
        assert!(s.established.is_some());
        assert!(!s.custom.contains_key(metrics::CPU_USAGE));
        assert_eq!(
            s.custom.get(metrics::TCP_ACTIVE_OPENS),
            Some(&MetricValue::Number(0.0))
        );
        assert_eq!(
            s.custom.get(metrics::NEW_PROCESS_NAMES),
            Some(&MetricValue::StringList(vec![]))
        );
        std::thread::sleep(Duration::from_millis(20));
        let s2 = c.sample();
        assert_eq!(s2.seq, 2);
        assert!(s2.interval_ms >= 20);
        assert!(s2.custom.contains_key(metrics::CPU_USAGE));
        for m in [
            metrics::MEMORY_USED_PCT,
            metrics::LOAD_AVG_1M,
            metrics::UPTIME_S,
            metrics::PROCESS_COUNT,
            metrics::TOP_MEMORY_PROCESSES,
            metrics::TOP_CPU_PROCESSES,
            metrics::LISTENING_PROCESS_NAMES,
            metrics::UDP_NO_PORTS,
            metrics::COLLECTOR_ERRORS,
        ] {
            assert!(s2.custom.contains_key(m), "{m} missing");
        }
        assert_eq!(c.errors(), 0, "netlink={netlink}");
    }
}

#[test]
fn socket_owners_are_cached_and_walks_are_rate_limited() {
    let first = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut c = Collector::new(&cfg(true));
    let s = c.sample();
    let me = |s: &Snapshot, port: u16| {
        s.tcp_listen
            .as_ref()
            .unwrap()
            .iter()
            .find(|p| p.port == port)
            .map(|p| p.process.clone())
    };
    let p1 = first.local_addr().unwrap().port();
    let owner = me(&s, p1).expect("listener reported");
    assert!(owner.is_some(), "owner of our own listener is visible");
    // A second listener right after the walk: reported at once, its owner deferred.
    let second = TcpListener::bind("127.0.0.1:0").unwrap();
    let p2 = second.local_addr().unwrap().port();
    let s = c.sample();
    assert_eq!(me(&s, p1), Some(owner.clone()), "cached owner kept");
    assert_eq!(me(&s, p2), Some(None), "walk deferred by the minimum gap");
    // Closing a listener needs no walk and drops it from the cache.
    drop(first);
    let s = c.sample();
    assert_eq!(me(&s, p1), None);
}

#[test]
fn one_tcp_dump_covers_both_families_with_the_kernel_state_filter() {
    let v4 = TcpListener::bind("127.0.0.1:0").unwrap();
    let v6 = TcpListener::bind("[::1]:0").ok();
    let mut diag = match netlink::SockDiag::open() {
        Ok(d) => d,
        // qemu-user translates no NETLINK_SOCK_DIAG: the /proc/net fallback is what runs there
        // (and `live_sample_fills_every_field_and_warm_up_has_zero_deltas` covers it).
        Err(netlink::NetlinkError::Io(e)) if e.raw_os_error() == Some(PROTOCOL_NOT_SUPPORTED) => {
            eprintln!("SKIPPED: netlink sock_diag dump: not supported here ({e})");
            return;
        }
        Err(e) => panic!("netlink sock_diag: {e}"),
    };
    let mut out = Vec::new();
    diag.dump_all(Proto::Tcp, sockets::TCP_STATES, &mut out)
        .unwrap();
    assert!(
        diag.uses_tcp_compat(),
        "this kernel supports TCPDIAG_GETSOCK"
    );
    assert!(out
        .iter()
        .all(|s| s.state < 32 && sockets::TCP_STATES & (1 << s.state) != 0));
    let has = |a: std::net::SocketAddr| out.iter().any(|s| s.local == a);
    assert!(has(v4.local_addr().unwrap()));
    if let Some(v6) = v6 {
        assert!(has(v6.local_addr().unwrap()));
    }
    let mut listen_only = Vec::new();
    diag.dump_all(Proto::Tcp, 1 << procnet::state::LISTEN, &mut listen_only)
        .unwrap();
    assert!(listen_only
        .iter()
        .all(|s| s.state == procnet::state::LISTEN));
}

mod properties {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

    use proptest::prelude::*;

    use crate::collect::procnet;
    use crate::collect::sockets::RawSocket;
    use crate::fuzzing;

    /// Text made of the characters `/proc` files are made of, so parsers get past their first
    /// checks more often than with uniform bytes.
    fn proc_like() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                8 => proptest::sample::select(
                    b"0123456789ABCDEFabcdef:  \t\n()|/-.[]x".to_vec()
                ),
                1 => any::<u8>(),
            ],
            0..600,
        )
    }

    fn every_parser(d: &[u8]) {
        fuzzing::proc_net(d);
        fuzzing::net_dev(d);
        fuzzing::snmp(d);
        fuzzing::proc_stat(d);
        fuzzing::system(d);
        fuzzing::interfaces(d);
        fuzzing::netlink(d);
    }

    fn kernel_addr(a: SocketAddr) -> String {
        let ip = match a.ip() {
            IpAddr::V4(v) => format!("{:08X}", u32::from_ne_bytes(v.octets())),
            IpAddr::V6(v) => v
                .octets()
                .chunks_exact(4)
                .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
                .collect(),
        };
        format!("{ip}:{:04X}", a.port())
    }

    fn addr(v6: bool) -> impl Strategy<Value = SocketAddr> {
        if v6 {
            (any::<[u8; 16]>(), any::<u16>())
                .prop_map(|(o, p)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(o)), p))
                .boxed()
        } else {
            (any::<[u8; 4]>(), any::<u16>())
                .prop_map(|(o, p)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(o)), p))
                .boxed()
        }
    }

    fn socket() -> impl Strategy<Value = RawSocket> {
        any::<bool>().prop_flat_map(|v6| {
            (addr(v6), addr(v6), 1u8..12, any::<u32>(), any::<u64>()).prop_map(
                |(local, remote, state, uid, inode)| RawSocket {
                    local,
                    remote,
                    state,
                    uid,
                    inode,
                },
            )
        })
    }

    proptest! {
        #[test]
        fn no_input_panics_any_parser(d in proptest::collection::vec(any::<u8>(), 0..400)) {
            every_parser(&d);
        }

        #[test]
        fn no_proc_like_text_panics_any_parser(d in proc_like()) {
            every_parser(&d);
        }

        #[test]
        fn proc_net_lines_round_trip(socks in proptest::collection::vec(socket(), 0..20), pad in 1usize..4) {
            let sp = " ".repeat(pad);
            let mut text = String::from("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n");
            for (i, s) in socks.iter().enumerate() {
                text += &format!(
                    "{sp}{i}: {}{sp}{} {:02X} 00000000:00000000 00:00000000 00000000 {sp}{} {sp}0 {} 1 0000000000000000 100 0 0 10 0\n",
                    kernel_addr(s.local), kernel_addr(s.remote), s.state, s.uid, s.inode
                );
            }
            let mut got = Vec::new();
            let (skipped, _) = procnet::parse(text.as_bytes(), u32::MAX, |s| got.push(s));
            prop_assert_eq!(skipped, 0);
            prop_assert_eq!(got, socks);
        }
    }
}

#[test]
fn collector_can_move_into_a_blocking_task() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<Collector>();
}

#[test]
fn listeners_of_unseen_processes_are_owned_by_their_uid() {
    let root = tempfile::tempdir().unwrap();
    let net = root.path().join("net");
    std::fs::create_dir(&net).unwrap();
    let header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";
    // Port 22 on 127.0.0.1, listening, uid 0, inode 424242: no /proc/<pid>/fd holds it.
    let tcp = format!("{header}   0: 0100007F:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 424242 1 0000000000000000 100 0 0 10 0\n");
    std::fs::write(net.join("tcp"), tcp).unwrap();
    for f in ["tcp6", "udp", "udp6"] {
        std::fs::write(net.join(f), header).unwrap();
    }
    let mut c = Collector::with_root(&cfg(false), root.path().to_owned());
    let s = c.sample();
    let l = s.tcp_listen.as_ref().expect("tcp table read");
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].port, 22);
    assert_eq!(l[0].process.as_deref(), Some("uid:0"));
    assert_eq!(
        s.custom.get(metrics::LISTENING_PROCESS_NAMES),
        Some(&MetricValue::StringList(Vec::new())),
        "a uid names no process"
    );
}

#[test]
fn live_samples_carry_destinations_cpu_levels_and_raw_packets() {
    let mut c = Collector::new(&cfg(true));
    let s = c.sample();
    assert!(s.custom.contains_key(metrics::DESTINATION_ENDPOINTS));
    assert!(s.custom.contains_key(metrics::RECURRING_DESTINATIONS));
    assert!(s.custom.contains_key(metrics::RAW_PACKETS_OUT));
    assert!(
        !s.custom.contains_key(metrics::PROCESS_CPU_LEVELS),
        "no interval yet"
    );
    // Keep this process busy for the interval.
    let cpu_before = own_cpu_ticks();
    let end = std::time::Instant::now() + Duration::from_millis(300);
    let mut x = 1u64;
    while std::time::Instant::now() < end {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
    let s = c.sample();
    let Some(MetricValue::StringList(levels)) = s.custom.get(metrics::PROCESS_CPU_LEVELS) else {
        panic!("no process_cpu_levels: {:?}", s.custom);
    };
    // qemu-user shows emulated processes with CPU times of zero in /proc: nothing to see there.
    if own_cpu_ticks() <= cpu_before {
        eprintln!(
            "SKIPPED: per-name CPU levels: this process's CPU time does not show in /proc here"
        );
        return;
    }
    assert!(levels.iter().any(|l| l.ends_with("@50")), "{levels:?}");
}

/// utime + stime of this process from `/proc/self/stat`, in clock ticks.
fn own_cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_comm = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let f: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields after the command: state is index 0, utime 11, stime 12.
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

#[test]
fn cpu_levels_name_every_level_reached() {
    let by_name = vec![
        ("miner".to_owned(), 190u64),
        ("idle".to_owned(), 1),
        ("cron".to_owned(), 12),
    ];
    // Over a 2 s window: 190 ticks = 95 %, 1 tick = 0.5 %, 12 ticks = 6 %.
    let l = cpu_levels(&by_name, 2000);
    assert_eq!(
        l,
        [
            "miner@5", "miner@10", "miner@20", "miner@35", "miner@50", "miner@70", "miner@90",
            "cron@5"
        ]
    );
}
