//! Collector tests on the live machine; fixture-driven tests live in the `integration-tests`
//! crate (`tests/tests/collect.rs`).

use std::net::{TcpListener, UdpSocket};
use std::time::Duration;

use super::*;
use crate::config::Config;

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
