//! The Device Defender report: golden encodings and the strict validator (spec §2, §9.2).

use std::path::PathBuf;
use std::time::Duration;

use edgewarden::config::{ReportConfig, ReportFormat};
use edgewarden::metrics;
use edgewarden::report::{encode, Aggregator, MetricsReport};
use edgewarden::snapshot::{ListenPort, MetricValue, NetDelta, Snapshot, TcpConn};
use integration_tests::validator::{
    Encoding, KeyStyle, Mode, Registry, Validator, MAX_PAYLOAD_BYTES,
};
use proptest::prelude::*;
use serde_json::{json, Value};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/report")
        .join(name)
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

/// The fixed report of the golden files: three ticks (a warm-up and two regular ones) with caps
/// of 4 ports and 3 connections, so truncation, deduplication and every custom type show.
fn golden_report() -> MetricsReport {
    let cfg = ReportConfig {
        interval: Duration::from_secs(300),
        format: ReportFormat::Json,
        max_ports: 4,
        max_connections: 3,
        warm_up: Duration::from_secs(10),
    };
    let mut a = Aggregator::new(&cfg);
    let warm = Snapshot {
        seq: 1,
        at_ms: 1_767_225_300_000,
        interval_ms: 0,
        net: Some(NetDelta {
            bytes_in: 9_999_999_999,
            bytes_out: 9_999_999_999,
            packets_in: 99_999_999,
            packets_out: 99_999_999,
        }),
        ..Snapshot::default()
    };
    a.add(&warm);
    for seq in 2..=3u64 {
        let mut s = Snapshot {
            seq,
            at_ms: 1_767_225_300_000 + seq * 10_000,
            interval_ms: 10_000,
            net: Some(NetDelta {
                bytes_in: 24_000 + seq,
                bytes_out: 9_600 + seq,
                packets_in: 150 + seq,
                packets_out: 100 + seq,
            }),
            tcp_listen: Some(vec![
                listen(22, "0.0.0.0", None),
                listen(22, "::", None),
                listen(8443, "192.0.2.5", Some("eth0")),
                listen(1883, "127.0.0.1", Some("lo")),
                listen(9100, "::", None),
                listen(5000 + seq as u16, "0.0.0.0", None),
            ]),
            udp_listen: Some(vec![listen(5353, "0.0.0.0", Some("wlan0"))]),
            established: Some(vec![
                conn("192.0.2.5:51522", "203.0.113.10:8883", Some("eth0")),
                conn("[2001:db8::2]:22", "[2001:db8::7]:60211", Some("eth0")),
                conn("[::ffff:192.0.2.5]:22", "[::ffff:198.51.100.4]:50022", None),
                conn("[fe80::2%2]:22", "[fe80::9%2]:41000", Some("eth0")),
            ]),
            ..Snapshot::default()
        };
        s.custom.insert(
            metrics::CPU_USAGE.into(),
            MetricValue::Number(12.25 * seq as f64),
        );
        s.custom.insert(
            metrics::PROCESS_COUNT.into(),
            MetricValue::Number(140.0 + seq as f64),
        );
        s.custom
            .insert(metrics::TCP_ACTIVE_OPENS.into(), MetricValue::Number(3.0));
        s.custom.insert(
            metrics::NEW_PROCESS_NAMES.into(),
            MetricValue::StringList(vec![format!("worker {seq}"), "sshd".into()]),
        );
        a.add(&s);
    }
    a.add_custom(
        "dns_servers",
        MetricValue::IpList(vec![
            "192.0.2.53".parse().unwrap(),
            "2001:db8::53".parse().unwrap(),
        ]),
    );
    a.add_custom(
        "proc_counts",
        MetricValue::NumberList(vec![142.0, 3.0, 0.1 + 0.2]),
    );
    a.take(1_767_225_600_123)
}

const GOLDEN: [(ReportFormat, &str); 3] = [
    (ReportFormat::Json, "report.json"),
    (ReportFormat::JsonShort, "report-short.json"),
    (ReportFormat::Cbor, "report.cbor"),
];

fn encoding_of(f: ReportFormat) -> Encoding {
    match f {
        ReportFormat::Json | ReportFormat::JsonShort => Encoding::Json,
        ReportFormat::Cbor => Encoding::Cbor,
    }
}

#[test]
fn golden_report_matches_the_committed_files_in_all_three_encodings() {
    let report = golden_report();
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for (format, file) in GOLDEN {
        let got = encode(&report, format);
        let path = fixture(file);
        if update {
            std::fs::write(&path, &got).unwrap();
            continue;
        }
        let want = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
                path.display()
            )
        });
        assert!(
            got == want,
            "{} differs from the encoder's output:\n got: {}\nwant: {}",
            path.display(),
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want)
        );
    }
}

#[test]
fn golden_report_has_the_expected_content() {
    let v: Value = serde_json::from_slice(&encode(&golden_report(), ReportFormat::Json)).unwrap();
    assert_eq!(
        v,
        json!({
            "header": {"report_id": 1_767_225_600_123u64, "version": "1.0"},
            "metrics": {
                "listening_tcp_ports": {
                    "ports": [{"port": 22}, {"port": 1883, "interface": "lo"},
                              {"port": 5003}, {"port": 8443, "interface": "eth0"}],
                    "total": 5
                },
                "listening_udp_ports": {"ports": [{"port": 5353, "interface": "wlan0"}], "total": 1},
                "network_stats": {"bytes_in": 48005, "bytes_out": 19205, "packets_in": 305, "packets_out": 205},
                "tcp_connections": {"established_connections": {
                    "connections": [
                        {"remote_addr": "198.51.100.4:50022", "local_port": 22},
                        {"remote_addr": "203.0.113.10:8883", "local_port": 51522, "local_interface": "eth0"},
                        {"remote_addr": "[2001:db8::7]:60211", "local_port": 22, "local_interface": "eth0"}
                    ],
                    "total": 4
                }}
            },
            "custom_metrics": {
                "cpu_usage": [{"number": 36.75}],
                "dns_servers": [{"ip_list": ["192.0.2.53", "2001:db8::53"]}],
                "new_process_names": [{"string_list": ["worker_2", "sshd", "worker_3"]}],
                "proc_counts": [{"number_list": [142, 3, 0.3]}],
                "process_count": [{"number": 143}],
                "tcp_active_opens": [{"number": 6}]
            }
        })
    );
}

#[test]
fn every_encoding_passes_the_strict_validator_and_decodes_to_the_same_document() {
    let report = golden_report();
    let validator = Validator::strict().with_registry({
        let mut r = Registry::edgewarden();
        r.register(
            "dns_servers",
            integration_tests::validator::MetricType::IpAddressList,
        );
        r.register(
            "proc_counts",
            integration_tests::validator::MetricType::NumberList,
        );
        r
    });
    let mut docs = Vec::new();
    for (format, _) in GOLDEN {
        let bytes = encode(&report, format);
        let ok = validator
            .validate(&bytes, encoding_of(format))
            .unwrap_or_else(|e| panic!("{format:?}: {e}"));
        assert_eq!(ok.report_id, 1_767_225_600_123);
        assert_eq!(ok.version, "1.0");
        assert!(ok.warnings.is_empty(), "{format:?}: {:?}", ok.warnings);
        assert!(ok.flags.is_empty(), "{format:?}: {:?}", ok.flags);
        let style = if format == ReportFormat::Json {
            KeyStyle::Long
        } else {
            KeyStyle::Short
        };
        assert_eq!(ok.key_style, style);
        docs.push(ok.document);
    }
    assert_eq!(docs[0], docs[1]);
    assert_eq!(docs[0], docs[2]);
}

// -------------------------------------------------------------------------------------------
// Validator: documented good and bad cases
// -------------------------------------------------------------------------------------------

fn check(
    doc: &Value,
) -> Result<integration_tests::validator::ValidReport, integration_tests::validator::InvalidReport>
{
    Validator::strict().validate(&serde_json::to_vec(doc).unwrap(), Encoding::Json)
}

fn lenient(
    doc: &Value,
) -> Result<integration_tests::validator::ValidReport, integration_tests::validator::InvalidReport>
{
    Validator::lenient().validate(&serde_json::to_vec(doc).unwrap(), Encoding::Json)
}

fn rejected(doc: Value, needle: &str) {
    let e = check(&doc).expect_err(&format!("should be rejected: {doc}"));
    assert!(e.mentions(needle), "expected {needle:?} in:\n{e}");
}

fn header() -> Value {
    json!({"report_id": 1_767_225_600_123u64, "version": "1.0"})
}

#[test]
fn the_spec_examples_are_valid() {
    let long = json!({
      "header": { "report_id": 1_767_225_600_123u64, "version": "1.0" },
      "metrics": {
        "listening_tcp_ports": { "ports": [ { "interface": "eth0", "port": 22 }, { "interface": "eth0", "port": 8443 } ], "total": 2 },
        "listening_udp_ports": { "ports": [ { "interface": "wlan0", "port": 5353 } ], "total": 1 },
        "network_stats": { "bytes_in": 48213, "bytes_out": 19377, "packets_in": 311, "packets_out": 207 },
        "tcp_connections": { "established_connections": { "connections": [
              { "local_interface": "eth0", "local_port": 51522, "remote_addr": "203.0.113.10:8883" },
              { "local_interface": "eth0", "local_port": 22, "remote_addr": "[2001:db8::7]:60211" } ], "total": 2 } }
      },
      "custom_metrics": {
        "cpu_temp_c":      [ { "number": 61.5 } ],
        "proc_counts":     [ { "number_list": [ 142, 3, 0 ] } ],
        "unexpected_exes": [ { "string_list": [ "/dev/shm/x", "/var/lib/y" ] } ],
        "dns_servers":     [ { "ip_list": [ "192.0.2.53", "2001:db8::53" ] } ]
      }
    });
    let short = json!({
      "hed": { "rid": 1_767_225_600_123u64, "v": "1.0" },
      "met": {
        "tp": { "pts": [ { "if": "eth0", "pt": 22 }, { "if": "eth0", "pt": 8443 } ], "t": 2 },
        "up": { "pts": [ { "if": "wlan0", "pt": 5353 } ], "t": 1 },
        "ns": { "bi": 48213, "bo": 19377, "pi": 311, "po": 207 },
        "tc": { "ec": { "cs": [
                  { "li": "eth0", "lp": 51522, "rad": "203.0.113.10:8883" },
                  { "li": "eth0", "lp": 22, "rad": "[2001:db8::7]:60211" } ], "t": 2 } }
      },
      "cmet": { "cpu_temp_c":  [ { "number": 61.5 } ], "dns_servers": [ { "ip_list": [ "192.0.2.53" ] } ] }
    });
    let minimal = json!({ "header": { "report_id": 1_767_225_900_456u64, "version": "1.0" },
      "custom_metrics": { "spool_depth": [ { "number": 0 } ] } });
    for doc in [&long, &short, &minimal] {
        let ok = check(doc).unwrap_or_else(|e| panic!("{e}"));
        assert!(ok.warnings.is_empty() && ok.flags.is_empty());
    }
    assert_eq!(check(&short).unwrap().key_style, KeyStyle::Short);
    // The spec's CBOR test vector.
    let hex = "a263686564a2637269641b0000019b76df3da8617663312e3064636d6574a16b73706f6f6c5f646570746881a1666e756d62657200";
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let ok = Validator::strict()
        .validate(&bytes, Encoding::Cbor)
        .unwrap();
    assert_eq!(ok.report_id, 1_767_225_900_456);
    assert_eq!(ok.document, check(&json!({"hed": {"rid": 1_767_225_900_456u64, "v": "1.0"}, "cmet": {"spool_depth": [{"number": 0}]}})).unwrap().document);
}

#[test]
fn a_bare_object_custom_metric_is_rejected() {
    rejected(
        json!({"header": header(), "custom_metrics": {"my_metric": {"number": 0}}}),
        "one-element array",
    );
    rejected(
        json!({"header": header(), "custom_metrics": {"m": [{"number": 0}, {"number": 1}]}}),
        "got 2 elements",
    );
    rejected(
        json!({"header": header(), "custom_metrics": {"m": [{"number": 0, "string_list": []}]}}),
        "exactly one value key",
    );
    rejected(
        json!({"header": header(), "custom_metrics": {"m": [{"numbers": [1]}]}}),
        "unknown value key",
    );
    rejected(
        json!({"header": header(), "custom_metrics": {"m": [{"string_list": ["a", 1]}]}}),
        "must be a string",
    );
    rejected(
        json!({"header": header(), "custom_metrics": {"m": [{"number": "1"}]}}),
        "must be a number",
    );
}

#[test]
fn custom_metric_names_must_be_valid_and_not_aws_prefixed() {
    rejected(
        json!({"header": header(), "custom_metrics": {"aws:cpu": [{"number": 1}]}}),
        "invalid custom metric name",
    );
    rejected(
        json!({"header": header(), "custom_metrics": {"cpu temp": [{"number": 1}]}}),
        "invalid custom metric name",
    );
    rejected(
        json!({"header": header(), "custom_metrics": {"": [{"number": 1}]}}),
        "invalid custom metric name",
    );
}

#[test]
fn mixed_long_and_short_keys_are_rejected_in_strict_mode_only() {
    let doc = json!({"hed": {"rid": 5, "v": "1.0"}, "metrics": {"network_stats": {"bi": 1}}});
    let e = check(&doc).unwrap_err();
    assert!(e.mentions("mixed long and short key names"), "{e}");
    let ok = lenient(&doc).unwrap();
    assert!(ok.warnings.iter().any(|w| w.message.contains("mixed")));
    assert_eq!(
        ok.document["metrics"]["network_stats"]["bytes_in"],
        json!(1)
    );
}

#[test]
fn listening_ports_must_be_in_range() {
    for bad in [json!(0), json!(65536), json!(-1), json!(22.0), json!("22")] {
        let doc = json!({"header": header(), "metrics": {"listening_tcp_ports": {"ports": [{"port": bad}], "total": 1}}});
        assert!(check(&doc).is_err(), "port {bad} accepted");
        assert!(lenient(&doc).is_err(), "port {bad} accepted leniently");
    }
    rejected(
        json!({"header": header(), "metrics": {"listening_udp_ports": {"ports": [{"interface": "eth0"}], "total": 1}}}),
        "without \"port\"",
    );
    rejected(
        json!({"header": header(), "metrics": {"listening_tcp_ports": {"ports": [{"port": 22, "interface": 7}]}}}),
        "must be a string",
    );
    rejected(
        json!({"header": header(), "metrics": {"listening_tcp_ports": {"ports": [{"port": 22}], "total": -1}}}),
        "listening_tcp_ports.total",
    );
    rejected(
        json!({"header": header(), "metrics": {"listening_tcp_ports": {"ports": {"port": 22}}}}),
        "must be an array",
    );
}

#[test]
fn null_interfaces_are_rejected_in_strict_mode_only() {
    let doc = json!({"header": header(), "metrics": {"listening_tcp_ports": {"ports": [{"port": 22, "interface": null}], "total": 1}}});
    assert!(check(&doc)
        .unwrap_err()
        .mentions("must be a string, got null"));
    assert!(lenient(&doc).is_ok());
}

#[test]
fn remote_addresses_must_be_ip_and_port() {
    for bad in [
        "203.0.113.10",
        "2001:db8::7:60211",
        "[fe80::1%eth0]:22",
        "gateway:22",
        "203.0.113.10:99999",
        "",
    ] {
        rejected(
            json!({"header": header(), "metrics": {"tcp_connections": {"established_connections": {"connections": [{"remote_addr": bad, "local_port": 22}], "total": 1}}}}),
            "remote_addr",
        );
    }
    rejected(
        json!({"header": header(), "metrics": {"tcp_connections": {"established_connections": {"connections": [{"remote_addr": 3_405_803_786u64}], "total": 1}}}}),
        "must be a string",
    );
    rejected(
        json!({"header": header(), "metrics": {"tcp_connections": {"established_connections": {"connections": [{"local_port": 22}], "total": 1}}}}),
        "without \"remote_addr\"",
    );
    rejected(
        json!({"header": header(), "metrics": {"tcp_connections": {"established_connections": {"connections": [{"remote_addr": "192.0.2.1:1", "local_port": 70000}]}}}}),
        "local_port",
    );
    let bare_v6 = json!({"header": header(), "metrics": {"tcp_connections": {"established_connections": {"connections": [{"remote_addr": "2001:db8::7:60211"}], "total": 1}}}});
    assert!(lenient(&bare_v6).is_ok());
}

#[test]
fn the_header_is_required_and_checked() {
    rejected(json!({"metrics": {}}), "header: required");
    rejected(
        json!({"header": {"version": "1.0"}, "metrics": {}}),
        "header.report_id: required",
    );
    rejected(
        json!({"header": {"report_id": 5}, "metrics": {}}),
        "header.version: required",
    );
    rejected(
        json!({"header": {"report_id": 0, "version": "1.0"}, "metrics": {}}),
        "1..=2^63-1",
    );
    rejected(
        json!({"header": {"report_id": -5, "version": "1.0"}, "metrics": {}}),
        "1..=2^63-1",
    );
    rejected(
        json!({"header": {"report_id": 9_223_372_036_854_775_808u64, "version": "1.0"}, "metrics": {}}),
        "1..=2^63-1",
    );
    rejected(
        json!({"header": {"report_id": 1.5, "version": "1.0"}, "metrics": {}}),
        "must be an integer, got a float",
    );
    rejected(
        json!({"header": {"report_id": 5.0, "version": "1.0"}, "metrics": {}}),
        "must be an integer, got a float",
    );
    rejected(
        json!({"header": {"report_id": "5", "version": "1.0"}, "metrics": {}}),
        "must be an integer",
    );
    rejected(
        json!({"header": {"report_id": 5, "version": "1"}, "metrics": {}}),
        "not Major.Minor",
    );
    rejected(
        json!({"header": {"report_id": 5, "version": 1.0}, "metrics": {}}),
        "must be a string",
    );
    rejected(
        json!({"header": header()}),
        "neither metrics nor custom_metrics",
    );
    let v11 = json!({"header": {"report_id": 5, "version": "1.1"}, "metrics": {}});
    assert!(check(&v11).unwrap_err().mentions("is not \"1.0\""));
    assert_eq!(lenient(&v11).unwrap().version, "1.1");
}

#[test]
fn a_rejection_still_names_the_report_id_when_the_header_was_readable() {
    let e =
        check(&json!({"header": header(), "custom_metrics": {"m": {"number": 1}}})).unwrap_err();
    assert_eq!(e.report_id, Some(1_767_225_600_123));
    let e =
        check(&json!({"header": {"report_id": "x", "version": "1.0"}, "metrics": {}})).unwrap_err();
    assert_eq!(e.report_id, None);
}

#[test]
fn unknown_keys_are_rejected_in_strict_mode_and_ignored_in_lenient_mode() {
    for doc in [
        json!({"header": header(), "metrics": {}, "extra": 1}),
        json!({"header": {"report_id": 5, "version": "1.0", "ts": 1}, "metrics": {}}),
        json!({"header": header(), "metrics": {"kernel_metrics": {}}}),
        json!({"header": header(), "metrics": {"tcp_connections": {"established_connections": {"connections": [{"remote_addr": "192.0.2.1:5", "remote_port": 5, "status": "x"}], "total": 1}}}}),
    ] {
        assert!(check(&doc).unwrap_err().mentions("unknown key"), "{doc}");
        let ok = lenient(&doc).unwrap();
        assert!(ok.warnings.iter().any(|w| w.message == "unknown key"));
    }
}

#[test]
fn empty_and_omitted_lists_are_accepted_and_short_totals_only_warn() {
    let empty = json!({"header": header(), "metrics": {
        "listening_tcp_ports": {"ports": [], "total": 0},
        "listening_udp_ports": {},
        "tcp_connections": {"established_connections": {"connections": [], "total": 0}}}});
    let ok = check(&empty).unwrap();
    assert!(ok.warnings.is_empty());
    let short = json!({"header": header(), "metrics": {"listening_tcp_ports": {"ports": [{"port": 1}, {"port": 2}], "total": 1}}});
    let ok = check(&short).unwrap();
    assert!(
        ok.warnings[0].message.contains("less than the 2 listed"),
        "{:?}",
        ok.warnings
    );
    let capped = json!({"header": header(), "metrics": {"listening_tcp_ports": {"ports": [{"port": 1}], "total": 500}}});
    assert!(check(&capped).unwrap().warnings.is_empty());
}

#[test]
fn network_stats_must_be_non_negative_integers() {
    rejected(
        json!({"header": header(), "metrics": {"network_stats": {"bytes_in": -1}}}),
        "bytes_in",
    );
    rejected(
        json!({"header": header(), "metrics": {"network_stats": {"bytes_out": 1.5}}}),
        "bytes_out",
    );
    rejected(
        json!({"header": header(), "metrics": {"network_stats": {"packets_in": "7"}}}),
        "packets_in",
    );
}

#[test]
fn value_quality_problems_are_flagged_not_rejected() {
    let mut reg = Registry::new();
    reg.register("cpu", integration_tests::validator::MetricType::Number);
    reg.register(
        "names",
        integration_tests::validator::MetricType::StringList,
    );
    let doc = json!({"header": header(), "custom_metrics": {
        "cpu": [{"number": 0.30000000000000004}],
        "names": [{"string_list": ["One Fish", "ok/path.1"]}],
        "ips": [{"ip_list": ["192.0.2.1", "not-an-ip"]}],
        "big": [{"number": 1_234_567_890_123_456u64}],
    }});
    let v = Validator::strict().with_registry(reg.clone());
    let ok = v
        .validate(&serde_json::to_vec(&doc).unwrap(), Encoding::Json)
        .unwrap();
    let text: Vec<String> = ok.flags.iter().map(ToString::to_string).collect();
    let has = |s: &str| text.iter().any(|t| t.contains(s));
    assert!(
        has("custom_metrics.cpu[0].number: 3.0000000000000004e-1 has 17 significant digits"),
        "{text:?}"
    );
    assert!(has("\"One Fish\" contains ' '"), "{text:?}");
    assert!(has("\"not-an-ip\" is not an IP address"), "{text:?}");
    assert!(
        has("custom_metrics.ips: custom metric is not registered"),
        "{text:?}"
    );
    assert!(
        has("1234567890123456 has 16 significant digits"),
        "{text:?}"
    );
    assert!(!has("ok/path.1"), "{text:?}");
    let typed = json!({"header": header(), "custom_metrics": {"names": [{"number": 1}]}});
    let ok = v
        .validate(&serde_json::to_vec(&typed).unwrap(), Encoding::Json)
        .unwrap();
    assert!(
        ok.flags[0]
            .message
            .contains("registered as string-list but sent as number"),
        "{:?}",
        ok.flags
    );
}

#[test]
fn undecodable_payloads_are_rejected() {
    let v = Validator::strict();
    assert!(v
        .validate(b"[1,2,3]", Encoding::Json)
        .unwrap_err()
        .mentions("must be an object"));
    assert!(v
        .validate(b"{\"header\":", Encoding::Json)
        .unwrap_err()
        .mentions("not JSON"));
    assert!(v
        .validate(b"\xff\xfe", Encoding::Json)
        .unwrap_err()
        .mentions("not UTF-8"));
    assert!(v.validate(b"{\"a\":1}", Encoding::Cbor).is_err());
    let dup = br#"{"header":{"report_id":5,"version":"1.0"},"metrics":{},"metrics":{}}"#;
    assert!(v
        .validate(dup, Encoding::Json)
        .unwrap_err()
        .mentions("duplicate key"));
    // CBOR map with an integer key.
    let mut int_key = Vec::new();
    let doc = ciborium::Value::Map(vec![
        (
            ciborium::Value::Text("hed".into()),
            ciborium::Value::Map(vec![
                (
                    ciborium::Value::Text("rid".into()),
                    ciborium::Value::Integer(5.into()),
                ),
                (
                    ciborium::Value::Text("v".into()),
                    ciborium::Value::Text("1.0".into()),
                ),
            ]),
        ),
        (
            ciborium::Value::Integer(1.into()),
            ciborium::Value::Map(vec![]),
        ),
    ]);
    ciborium::into_writer(&doc, &mut int_key).unwrap();
    assert!(v
        .validate(&int_key, Encoding::Cbor)
        .unwrap_err()
        .mentions("map key must be a text string"));
    // CBOR floats for ids and NaN numbers.
    let mut float_id = Vec::new();
    let doc = ciborium::Value::Map(vec![
        (
            ciborium::Value::Text("hed".into()),
            ciborium::Value::Map(vec![
                (
                    ciborium::Value::Text("rid".into()),
                    ciborium::Value::Float(5.0),
                ),
                (
                    ciborium::Value::Text("v".into()),
                    ciborium::Value::Text("1.0".into()),
                ),
            ]),
        ),
        (
            ciborium::Value::Text("cmet".into()),
            ciborium::Value::Map(vec![(
                ciborium::Value::Text("x".into()),
                ciborium::Value::Array(vec![ciborium::Value::Map(vec![(
                    ciborium::Value::Text("number".into()),
                    ciborium::Value::Float(f64::NAN),
                )])]),
            )]),
        ),
    ]);
    ciborium::into_writer(&doc, &mut float_id).unwrap();
    let e = v.validate(&float_id, Encoding::Cbor).unwrap_err();
    assert!(
        e.mentions("header.report_id: must be an integer, got a float"),
        "{e}"
    );
    assert!(e.mentions("must be a finite number"), "{e}");
    let mut big = b"{\"header\":{\"report_id\":5,\"version\":\"1.0\"},\"custom_metrics\":{\"m\":[{\"string_list\":[\"".to_vec();
    big.resize(MAX_PAYLOAD_BYTES, b'a');
    big.extend_from_slice(b"\"]}]}}");
    assert!(v
        .validate(&big, Encoding::Json)
        .unwrap_err()
        .mentions("over the 131072-byte limit"));
}

#[test]
fn strict_is_the_default_mode() {
    assert_eq!(Validator::default().mode, Mode::Strict);
}

fn arb_snapshot() -> impl Strategy<Value = Snapshot> {
    let port = (
        any::<u16>(),
        proptest::option::of("[a-z]{1,4}[0-9]{0,2}"),
        any::<bool>(),
    );
    let conn = (any::<[u8; 16]>(), any::<u16>(), any::<u16>(), any::<bool>());
    let custom_value = prop_oneof![
        any::<f64>().prop_map(MetricValue::Number),
        prop_oneof![
            Just(f64::MAX),
            Just(f64::MIN),
            Just(f64::MIN_POSITIVE),
            Just(5e-324),
            Just(-0.0),
            Just(9.999_999_999_999_999e14),
        ]
        .prop_map(MetricValue::Number),
        proptest::collection::vec(any::<f64>(), 0..8).prop_map(MetricValue::NumberList),
        proptest::collection::vec(".{0,20}", 0..8).prop_map(MetricValue::StringList),
        proptest::collection::vec(any::<[u8; 16]>(), 0..8).prop_map(|ips| {
            MetricValue::IpList(
                ips.into_iter()
                    .map(|b| std::net::IpAddr::from(b).to_canonical())
                    .collect(),
            )
        }),
    ];
    (
        proptest::collection::vec(port, 0..70),
        proptest::collection::vec(conn, 0..70),
        proptest::collection::btree_map("[a-zA-Z0-9:_-]{1,20}", custom_value, 0..6),
        proptest::option::of(any::<(u32, u32, u32, u32)>()),
    )
        .prop_map(|(ports, conns, custom, net)| Snapshot {
            seq: 2,
            at_ms: 1,
            interval_ms: 10_000,
            net: net.map(|(a, b, c, d)| NetDelta {
                bytes_in: a.into(),
                bytes_out: b.into(),
                packets_in: c.into(),
                packets_out: d.into(),
            }),
            tcp_listen: Some(
                ports
                    .iter()
                    .map(|(p, i, v6)| listen(*p, if *v6 { "::" } else { "0.0.0.0" }, i.as_deref()))
                    .collect(),
            ),
            udp_listen: Some(Vec::new()),
            established: Some(
                conns
                    .iter()
                    .map(|(ip, rp, lp, v4)| {
                        let remote = if *v4 {
                            std::net::IpAddr::from([ip[0], ip[1], ip[2], ip[3]])
                        } else {
                            std::net::IpAddr::from(*ip)
                        };
                        TcpConn {
                            local: std::net::SocketAddr::from(([10, 0, 0, 1], *lp)),
                            remote: std::net::SocketAddr::new(remote, *rp),
                            interface: Some("eth0".into()),
                        }
                    })
                    .collect(),
            ),
            custom: custom
                .into_iter()
                .filter(|(name, _)| !name.starts_with("aws:"))
                .collect(),
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Whatever the collectors hand over, the agent's report passes the strict validator in
    /// every encoding, carries no value-quality flag (numbers are rounded, strings sanitised),
    /// and the three encodings decode to the same document.
    #[test]
    fn every_aggregated_report_is_strictly_valid_in_every_encoding(
        snap in arb_snapshot(),
        rid in 1u64..=i64::MAX as u64,
    ) {
        let cfg = ReportConfig {
            interval: Duration::from_secs(300),
            format: ReportFormat::Json,
            max_ports: 50,
            max_connections: 50,
            warm_up: Duration::from_secs(10),
        };
        let mut a = Aggregator::new(&cfg);
        a.add(&snap);
        let report = a.take(rid);
        let mut docs = Vec::new();
        for (format, _) in GOLDEN {
            let bytes = encode(&report, format);
            let ok = Validator::strict()
                .validate(&bytes, encoding_of(format))
                .map_err(|e| TestCaseError::fail(format!("{format:?}: {e}")))?;
            prop_assert_eq!(ok.report_id, rid);
            prop_assert!(ok.flags.is_empty(), "{:?}: {:?}", format, ok.flags);
            prop_assert!(ok.warnings.is_empty(), "{:?}: {:?}", format, ok.warnings);
            docs.push(ok.document);
        }
        prop_assert_eq!(&docs[0], &docs[1]);
        prop_assert_eq!(&docs[0], &docs[2]);
    }
}

proptest! {
    #[test]
    fn the_validator_never_panics_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        let v = Validator::strict();
        let _ = v.validate(&data, Encoding::Json);
        let _ = v.validate(&data, Encoding::Cbor);
    }

    #[test]
    fn the_validator_never_panics_on_mutated_reports(
        format in prop_oneof![Just(ReportFormat::Json), Just(ReportFormat::JsonShort), Just(ReportFormat::Cbor)],
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = encode(&golden_report(), format);
        for (i, b) in edits {
            let at = i.index(bytes.len());
            bytes[at] = b;
        }
        let at = cut.index(bytes.len() + 1);
        bytes.truncate(at.max(1));
        let _ = Validator::strict().validate(&bytes, encoding_of(format));
        let _ = Validator::lenient().validate(&bytes, encoding_of(format));
    }
}

#[test]
fn publishes_are_checked_by_topic_thing_name_and_payload() {
    let v = Validator::strict();
    let payload = encode(&golden_report(), ReportFormat::Cbor);
    let (topic, ok) = v
        .validate_publish("$aws/things/gw-0042/defender/metrics/cbor", &payload)
        .unwrap();
    assert_eq!(topic.thing, "gw-0042");
    assert_eq!(topic.encoding, Encoding::Cbor);
    assert_eq!(ok.report_id, 1_767_225_600_123);
    // The payload is decoded as the topic says.
    let e = v
        .validate_publish("$aws/things/gw-0042/defender/metrics/json", &payload)
        .unwrap_err();
    assert!(e.mentions("not UTF-8") || e.mentions("not JSON"), "{e}");
    let e = v
        .validate_publish(
            "$aws/things/gw-0042/defender/metrics/json/accepted",
            &payload,
        )
        .unwrap_err();
    assert!(e.mentions("is not $aws/things/"), "{e}");
    let e = v
        .validate_publish("$aws/things/gw 42/defender/metrics/cbor", &payload)
        .unwrap_err();
    assert!(e.mentions("is not [a-zA-Z0-9:_-]+"), "{e}");
    let long = format!("$aws/things/{}/defender/metrics/cbor", "g".repeat(129));
    assert!(v
        .validate_publish(&long, &payload)
        .unwrap_err()
        .mentions("1-128 bytes"));
    assert!(Validator::lenient()
        .validate_publish("$aws/things/gw 42/defender/metrics/cbor", &payload)
        .is_ok());
}
