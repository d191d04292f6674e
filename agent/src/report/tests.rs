use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::config::{ReportConfig, ReportFormat};
use crate::metrics;
use crate::snapshot::{ListenPort, MetricValue, NetDelta, Snapshot, TcpConn};

fn cfg(max_ports: usize, max_connections: usize) -> ReportConfig {
    ReportConfig {
        interval: Duration::from_secs(300),
        format: ReportFormat::Json,
        max_ports,
        max_connections,
        warm_up: Duration::from_secs(10),
    }
}

fn listen(port: u16, addr: &str, iface: Option<&str>) -> ListenPort {
    ListenPort {
        port,
        addr: addr.parse().unwrap(),
        interface: iface.map(str::to_owned),
        process: None,
    }
}

fn conn(local: &str, remote: &str, iface: Option<&str>) -> TcpConn {
    TcpConn {
        local: local.parse().unwrap(),
        remote: remote.parse().unwrap(),
        interface: iface.map(str::to_owned),
    }
}

fn net(b: u64) -> NetDelta {
    NetDelta {
        bytes_in: b,
        bytes_out: 2 * b,
        packets_in: b / 10,
        packets_out: b / 5,
    }
}

fn snap(seq: u64, interval_ms: u64) -> Snapshot {
    Snapshot {
        seq,
        at_ms: 1_767_225_600_000 + seq * 10_000,
        interval_ms,
        ..Snapshot::default()
    }
}

fn json_of(r: &MetricsReport, f: ReportFormat) -> Value {
    serde_json::from_slice(&encode(r, f)).unwrap()
}

#[test]
fn cbor_matches_the_spec_test_vector_byte_for_byte() {
    let mut custom = BTreeMap::new();
    custom.insert(
        MetricName::new("spool_depth").unwrap(),
        CustomMetric(CustomValue::from_metric(&MetricValue::Number(0.0)).unwrap()),
    );
    let r = MetricsReport::new(1_767_225_900_456, Metrics::default(), custom);
    let bytes = encode(&r, ReportFormat::Cbor);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex,
        "a263686564a2637269641b0000019b76df3da8617663312e3064636d6574a16b73706f6f6c5f646570746881a1666e756d62657200"
    );
    assert_eq!(
        json_of(&r, ReportFormat::Json),
        json!({"header": {"report_id": 1_767_225_900_456u64, "version": "1.0"},
               "custom_metrics": {"spool_depth": [{"number": 0}]}})
    );
}

#[test]
fn long_and_short_documents_carry_the_same_values() {
    let mut a = Aggregator::new(&cfg(50, 50));
    let mut s = snap(2, 10_000);
    s.net = Some(net(48_213));
    s.tcp_listen = Some(vec![
        listen(22, "0.0.0.0", None),
        listen(8443, "192.0.2.5", Some("eth0")),
    ]);
    s.udp_listen = Some(vec![]);
    s.established = Some(vec![
        conn("192.0.2.5:51522", "203.0.113.10:8883", Some("eth0")),
        conn("[2001:db8::2]:22", "[2001:db8::7]:60211", None),
    ]);
    s.custom
        .insert(metrics::CPU_USAGE.into(), MetricValue::Number(61.5));
    a.add(&s);
    let r = a.take(1_767_225_600_123);
    let long = json_of(&r, ReportFormat::Json);
    assert_eq!(
        long,
        json!({
            "header": {"report_id": 1_767_225_600_123u64, "version": "1.0"},
            "metrics": {
                "listening_tcp_ports": {"ports": [{"port": 22}, {"port": 8443, "interface": "eth0"}], "total": 2},
                "listening_udp_ports": {"ports": [], "total": 0},
                "network_stats": {"bytes_in": 48213, "bytes_out": 96426, "packets_in": 4821, "packets_out": 9642},
                "tcp_connections": {"established_connections": {"connections": [
                    {"remote_addr": "203.0.113.10:8883", "local_port": 51522, "local_interface": "eth0"},
                    {"remote_addr": "[2001:db8::7]:60211", "local_port": 22}
                ], "total": 2}}
            },
            "custom_metrics": {"cpu_usage": [{"number": 61.5}]}
        })
    );
    let short = json_of(&r, ReportFormat::JsonShort);
    assert_eq!(short["hed"]["rid"], json!(1_767_225_600_123u64));
    assert_eq!(
        short["met"]["tp"]["pts"][1],
        json!({"pt": 8443, "if": "eth0"})
    );
    assert_eq!(short["met"]["up"], json!({"pts": [], "t": 0}));
    assert_eq!(
        short["met"]["tc"]["ec"]["cs"][1],
        json!({"rad": "[2001:db8::7]:60211", "lp": 22})
    );
    assert_eq!(short["cmet"]["cpu_usage"], json!([{"number": 61.5}]));
    let cbor: Value = ciborium::from_reader(&encode(&r, ReportFormat::Cbor)[..]).unwrap();
    assert_eq!(cbor, short);
}

#[test]
fn the_summary_names_totals_traffic_and_custom_metrics() {
    let mut a = Aggregator::new(&cfg(1, 1));
    let mut s = snap(2, 10_000);
    s.net = Some(net(100));
    s.tcp_listen = Some(vec![
        listen(22, "0.0.0.0", None),
        listen(80, "0.0.0.0", None),
    ]);
    s.custom.insert("x".into(), MetricValue::Number(1.0));
    a.add(&s);
    assert_eq!(
        a.take(9).summary(),
        "report 9: 2 TCP / - UDP listening ports, - connections, 100/200 B in/out, 10/20 packets in/out, 1 custom metrics"
    );
}

#[test]
fn traffic_deltas_are_summed_and_warm_up_counters_ignored() {
    let mut a = Aggregator::new(&cfg(50, 50));
    let mut warm = snap(1, 0);
    warm.net = Some(net(1_000_000_000));
    a.add(&warm);
    for seq in 2..=4 {
        let mut s = snap(seq, 10_000);
        s.net = Some(net(100));
        a.add(&s);
    }
    let r = a.take(1);
    let ns = r.metrics().network_stats.unwrap();
    assert_eq!(ns.bytes_in, 300);
    assert_eq!(ns.bytes_out, 600);
    assert_eq!(ns.packets_in, 30);
    assert_eq!(ns.packets_out, 60);
    assert!(a.is_empty());
    // An interval where traffic collection never worked omits the block.
    a.add(&snap(5, 10_000));
    assert!(a.take(2).metrics().network_stats.is_none());
}

#[test]
fn lists_are_the_latest_capped_with_the_true_total_and_empty_lists_are_sent_empty() {
    let mut a = Aggregator::new(&cfg(3, 2));
    let mut s1 = snap(1, 10_000);
    s1.tcp_listen = Some(vec![listen(1, "0.0.0.0", None)]);
    a.add(&s1);
    let mut s2 = snap(2, 10_000);
    s2.tcp_listen = Some(
        [8080, 22, 443, 80, 22, 0]
            .into_iter()
            .map(|p| listen(p, "0.0.0.0", None))
            .collect(),
    );
    s2.udp_listen = Some(vec![]);
    s2.established = Some(
        (1..=5)
            .map(|i| conn("192.0.2.5:40000", &format!("198.51.100.{i}:443"), None))
            .collect(),
    );
    a.add(&s2);
    // A later tick whose collector failed does not erase the latest lists.
    a.add(&snap(3, 10_000));
    let r = a.take(7);
    let v = json_of(&r, ReportFormat::Json);
    let m = &v["metrics"];
    assert_eq!(
        m["listening_tcp_ports"],
        json!({"ports": [{"port": 22}, {"port": 80}, {"port": 443}], "total": 4})
    );
    assert_eq!(m["listening_udp_ports"], json!({"ports": [], "total": 0}));
    let ec = &m["tcp_connections"]["established_connections"];
    assert_eq!(ec["total"], json!(5));
    assert_eq!(ec["connections"].as_array().unwrap().len(), 2);
    assert_eq!(
        ec["connections"][0]["remote_addr"],
        json!("198.51.100.1:443")
    );
}

#[test]
fn interfaces_that_are_addresses_or_empty_are_omitted() {
    let mut a = Aggregator::new(&cfg(50, 50));
    let mut s = snap(1, 10_000);
    s.tcp_listen = Some(vec![
        listen(22, "0.0.0.0", Some("0.0.0.0")),
        listen(23, "::", Some("")),
    ]);
    s.established = Some(vec![conn("10.0.0.2:22", "10.0.0.9:5000", Some("::1"))]);
    a.add(&s);
    let v = json_of(&a.take(1), ReportFormat::Json);
    assert_eq!(
        v["metrics"]["listening_tcp_ports"]["ports"],
        json!([{"port": 22}, {"port": 23}])
    );
    assert_eq!(
        v["metrics"]["tcp_connections"]["established_connections"]["connections"][0],
        json!({"remote_addr": "10.0.0.9:5000", "local_port": 22})
    );
}

#[test]
fn custom_metrics_fold_per_registry_and_unknown_names_keep_the_last() {
    let mut a = Aggregator::new(&cfg(50, 50));
    for (i, (cpu, opens)) in [(10.0, 3.0), (80.5, 4.0), (20.0, 5.0)]
        .into_iter()
        .enumerate()
    {
        let mut s = snap(i as u64 + 1, 10_000);
        s.custom
            .insert(metrics::CPU_USAGE.into(), MetricValue::Number(cpu));
        s.custom
            .insert(metrics::TCP_ACTIVE_OPENS.into(), MetricValue::Number(opens));
        s.custom.insert(
            metrics::UPTIME_S.into(),
            MetricValue::Number(100.0 + i as f64),
        );
        s.custom.insert(
            metrics::NEW_PROCESS_NAMES.into(),
            MetricValue::StringList(vec![format!("p{i}"), "sshd".into()]),
        );
        s.custom
            .insert("site_specific".into(), MetricValue::Number(i as f64));
        a.add(&s);
    }
    a.add_custom("transport_rejected", MetricValue::Number(1.0));
    a.add_custom("transport_rejected", MetricValue::Number(2.0));
    // Invalid names and types that contradict the registry are not reported.
    a.add_custom("aws:cpu", MetricValue::Number(1.0));
    a.add_custom(
        metrics::PROCESS_COUNT,
        MetricValue::StringList(vec!["x".into()]),
    );
    a.add_custom("not_a_number", MetricValue::Number(f64::NAN));
    let v = json_of(&a.take(9), ReportFormat::Json);
    assert_eq!(
        v["custom_metrics"],
        json!({
            "cpu_usage": [{"number": 80.5}],
            "tcp_active_opens": [{"number": 12}],
            "uptime_s": [{"number": 102}],
            "new_process_names": [{"string_list": ["p0", "sshd", "p1", "p2"]}],
            "site_specific": [{"number": 2}],
            "transport_rejected": [{"number": 2}],
        })
    );
    // With only custom metrics, the (empty) metrics block is left out.
    assert!(v.get("metrics").is_none());
}

#[test]
fn union_lists_are_capped() {
    let mut a = Aggregator::new(&cfg(50, 50));
    for i in 0..3 {
        let names = (0..40).map(|j| format!("proc{i}_{j}")).collect();
        a.add_custom(metrics::NEW_PROCESS_NAMES, MetricValue::StringList(names));
    }
    a.add_custom(
        "ips",
        MetricValue::IpList((0..=255u8).map(|i| IpAddr::from([10, 0, 0, i])).collect()),
    );
    let v = json_of(&a.take(1), ReportFormat::Json);
    let names = v["custom_metrics"]["new_process_names"][0]["string_list"]
        .as_array()
        .unwrap();
    assert_eq!(names.len(), MAX_CUSTOM_LIST_LEN);
    assert_eq!(names[0], json!("proc0_0"));
    assert_eq!(names[40], json!("proc1_0"));
    let ips = v["custom_metrics"]["ips"][0]["ip_list"].as_array().unwrap();
    assert_eq!(ips.len(), MAX_CUSTOM_LIST_LEN);
}

#[test]
fn an_empty_interval_still_makes_a_report_with_a_metrics_block() {
    let mut a = Aggregator::new(&cfg(50, 50));
    assert!(a.is_empty());
    let v = json_of(&a.take(5), ReportFormat::Json);
    assert_eq!(
        v,
        json!({"header": {"report_id": 5, "version": "1.0"}, "metrics": {}})
    );
}

#[test]
fn custom_values_are_sanitised_rounded_and_wrapped() {
    let mut a = Aggregator::new(&cfg(50, 50));
    a.add_custom("third", MetricValue::Number(1.0 / 3.0));
    a.add_custom("big", MetricValue::Number(123_456_789_012_345_678.0));
    a.add_custom(
        "names",
        MetricValue::StringList(vec!["One Fish".into(), "".into(), "One_Fish".into()]),
    );
    a.add_custom(
        "peers",
        MetricValue::IpList(vec![
            "::ffff:192.0.2.1".parse().unwrap(),
            "2001:db8::1".parse().unwrap(),
        ]),
    );
    a.add_custom(
        "nums",
        MetricValue::NumberList(vec![1.0, f64::INFINITY, 2.5]),
    );
    let v = json_of(&a.take(1), ReportFormat::JsonShort);
    assert_eq!(
        v["cmet"],
        json!({
            "big": [{"number": 1.23456789012346e17}],
            "names": [{"string_list": ["One_Fish"]}],
            "nums": [{"number_list": [1, 2.5]}],
            "peers": [{"ip_list": ["192.0.2.1", "2001:db8::1"]}],
            "third": [{"number": 0.333333333333333}],
        })
    );
}

#[test]
fn report_ids_increase_across_reopen_and_clock_steps_back() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut ids = ReportIds::open(&state).unwrap();
    assert_eq!(ids.last(), 0);
    assert_eq!(ids.next(1_000).unwrap(), 1_000);
    assert_eq!(ids.next(1_000).unwrap(), 1_001);
    assert_eq!(ids.next(5_000).unwrap(), 5_000);
    // Clock stepped back by an hour.
    assert_eq!(ids.next(1_500).unwrap(), 5_001);
    drop(ids);
    let mut ids = ReportIds::open(&state).unwrap();
    assert_eq!(ids.last(), 5_001);
    // Restart with a clock still behind (e.g. no RTC before NTP sync).
    assert_eq!(ids.next(0).unwrap(), 5_002);
    assert_eq!(ids.next(9_000).unwrap(), 9_000);
    assert_eq!(
        std::fs::read_to_string(state.join(REPORT_ID_FILE)).unwrap(),
        "9000\n"
    );
    assert!(!state.join("report_id.tmp").exists());
}

#[test]
fn a_report_id_file_without_a_number_restarts_at_the_clock() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(REPORT_ID_FILE), "garbage").unwrap();
    let mut ids = ReportIds::open(dir.path()).unwrap();
    assert_eq!(ids.next(42).unwrap(), 42);
}

#[test]
fn report_ids_never_exceed_the_signed_range() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(REPORT_ID_FILE),
        (MAX_REPORT_ID - 1).to_string(),
    )
    .unwrap();
    let mut ids = ReportIds::open(dir.path()).unwrap();
    assert_eq!(ids.next(u64::MAX).unwrap(), MAX_REPORT_ID);
    let e = ids.next(u64::MAX).unwrap_err();
    assert!(e.to_string().contains("exhausted"), "{e}");
}

#[test]
fn report_ids_fail_cleanly_when_the_state_dir_is_unusable() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not_a_dir");
    std::fs::write(&file, "x").unwrap();
    let e = ReportIds::open(&file).unwrap_err();
    assert!(e.to_string().contains("not_a_dir"), "{e}");
}

#[test]
fn topics_follow_the_reserved_names() {
    let t = Topics::new("gw-0042", ReportFormat::JsonShort);
    assert_eq!(t.report, "$aws/things/gw-0042/defender/metrics/json");
    assert_eq!(
        t.accepted,
        "$aws/things/gw-0042/defender/metrics/json/accepted"
    );
    let t = Topics::new("gw-0042", ReportFormat::Cbor);
    assert_eq!(
        t.rejected,
        "$aws/things/gw-0042/defender/metrics/cbor/rejected"
    );
}

proptest! {
    #[test]
    fn encoded_reports_agree_across_encodings(
        ports in proptest::collection::vec((0u16..=65535, proptest::option::of("[a-z]{1,5}[0-9]")), 0..80),
        peers in proptest::collection::vec((any::<[u8; 4]>(), any::<u16>(), any::<u16>()), 0..80),
        number in any::<f64>(),
        rid in 1u64..=MAX_REPORT_ID,
    ) {
        let mut a = Aggregator::new(&cfg(50, 50));
        let mut s = snap(1, 10_000);
        s.tcp_listen = Some(ports.iter().map(|(p, i)| listen(*p, "0.0.0.0", i.as_deref())).collect());
        s.established = Some(peers.iter().map(|(ip, rp, lp)| TcpConn {
            local: SocketAddr::from(([10, 0, 0, 1], *lp)),
            remote: SocketAddr::from((*ip, *rp)),
            interface: None,
        }).collect());
        s.custom.insert("value".into(), MetricValue::Number(number));
        a.add(&s);
        let r = a.take(rid);
        let short = json_of(&r, ReportFormat::JsonShort);
        let from_cbor: Value = ciborium::from_reader(&encode(&r, ReportFormat::Cbor)[..]).unwrap();
        prop_assert_eq!(&short, &from_cbor);
        let long = json_of(&r, ReportFormat::Json);
        let tp = &long["metrics"]["listening_tcp_ports"];
        prop_assert!(tp["ports"].as_array().unwrap().len() <= 50);
        prop_assert!(tp["total"].as_u64().unwrap() >= tp["ports"].as_array().unwrap().len() as u64);
        prop_assert_eq!(&long["header"]["report_id"], &json!(rid));
    }
}
