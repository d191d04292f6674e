//! Engine and profile tests against hand-computed cases.

use std::time::Duration;

use super::ml::{MlScorer, ScorerFactory};
use super::*;
use crate::config::DetectConfig;
use crate::snapshot::{ListenPort, MetricValue, NetDelta, Snapshot, TcpConn};

const TICK: u64 = 10_000;

fn cfg(learning: Duration) -> DetectConfig {
    DetectConfig {
        enabled: true,
        profile: None,
        learning_period: learning,
        violations_topic: "edgewarden/{thing}/violations".into(),
    }
}

fn profile(json: &str) -> Profile {
    match parse_profile(json, "test") {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

fn errors(json: &str) -> Vec<String> {
    match parse_profile(json, "test") {
        Ok(_) => panic!("accepted: {json}"),
        Err(e) => {
            let all = e.to_string();
            let mut v: Vec<String> = e.issues().iter().map(ToString::to_string).collect();
            if v.is_empty() {
                v.push(all);
            }
            v
        }
    }
}

/// A snapshot at tick `seq` with the given custom numbers.
fn snap(seq: u64, custom: &[(&str, f64)]) -> Snapshot {
    let mut s = Snapshot {
        seq,
        at_ms: 1_700_000_000_000 + seq * TICK,
        interval_ms: TICK,
        net: Some(NetDelta::default()),
        tcp_listen: Some(vec![]),
        udp_listen: Some(vec![]),
        established: Some(vec![]),
        ..Snapshot::default()
    };
    for (k, v) in custom {
        s.custom.insert((*k).into(), MetricValue::Number(*v));
    }
    s
}

fn listening(ports: &[u16]) -> Vec<ListenPort> {
    ports
        .iter()
        .map(|&port| ListenPort {
            port,
            addr: "0.0.0.0".parse().unwrap(),
            interface: None,
            process: None,
        })
        .collect()
}

fn kinds(ev: &[ViolationEvent]) -> Vec<(String, ViolationEventType)> {
    ev.iter()
        .map(|e| (e.behavior.name.clone(), e.violation_event_type))
        .collect()
}

fn run(engine: &mut Engine, snaps: impl IntoIterator<Item = Snapshot>) -> Vec<Vec<ViolationEvent>> {
    snaps.into_iter().map(|s| engine.evaluate(&s)).collect()
}

// ---------------------------------------------------------------- profiles

const DESCRIBE_OUTPUT: &str = r#"{
    "securityProfileName": "gateway-fleet",
    "securityProfileArn": "arn:aws:iot:eu-west-1:123456789012:securityprofile/gateway-fleet",
    "securityProfileDescription": "Gateways in the field",
    "behaviors": [
        {
            "name": "Listening-TCP-ports",
            "metric": "aws:listening-tcp-ports",
            "criteria": { "comparisonOperator": "in-port-set", "value": { "ports": [22, 8883] } },
            "suppressAlerts": false
        },
        {
            "name": "Bytes-out",
            "metric": "aws:all-bytes-out",
            "criteria": {
                "comparisonOperator": "less-than",
                "value": { "count": 1000000 },
                "durationSeconds": 300,
                "consecutiveDatapointsToAlarm": 2,
                "consecutiveDatapointsToClear": 2
            }
        },
        {
            "name": "Destination-IPs",
            "metric": "aws:destination-ip-addresses",
            "criteria": { "comparisonOperator": "in-cidr-set", "value": { "cidrs": ["203.0.113.0/24", "2001:db8::/32"] } }
        },
        {
            "name": "Established-p90",
            "metric": "aws:num-established-tcp-connections",
            "criteria": { "comparisonOperator": "less-than-equals", "statisticalThreshold": { "statistic": "p90" } }
        },
        {
            "name": "ML-bytes-in",
            "metric": "aws:all-bytes-in",
            "criteria": {
                "consecutiveDatapointsToAlarm": 1,
                "consecutiveDatapointsToClear": 1,
                "mlDetectionConfig": { "confidenceLevel": "HIGH" }
            },
            "suppressAlerts": true
        },
        {
            "name": "cpu",
            "metric": "cpu_usage",
            "criteria": { "comparisonOperator": "less-than", "value": { "number": 90 } },
            "exportMetric": true
        }
    ],
    "alertTargets": {
        "SNS": { "alertTargetArn": "arn:aws:sns:eu-west-1:123456789012:alerts", "roleArn": "arn:aws:iam::123456789012:role/defender" }
    },
    "additionalMetricsToRetainV2": [ { "metric": "aws:num-listening-udp-ports" } ],
    "version": 3,
    "creationDate": "2026-01-05T10:00:00.000000+00:00",
    "lastModifiedDate": "2026-02-01T10:00:00.000000+00:00"
}"#;

#[test]
fn describe_security_profile_output_is_accepted_whole() {
    let p = profile(DESCRIBE_OUTPUT);
    assert_eq!(p.name, "gateway-fleet");
    assert_eq!(p.behaviors.len(), 6);
    let b = &p.behaviors[1];
    assert_eq!(b.metric, "aws:all-bytes-out");
    assert_eq!(b.criteria.duration_seconds, Some(300));
    assert_eq!(b.criteria.consecutive_datapoints_to_alarm, Some(2));
    assert_eq!(b.criteria.value.as_ref().unwrap().count, Some(1_000_000));
    assert!(p.behaviors[4].is_learned());
    assert_eq!(p.behaviors[4].suppress_alerts, Some(true));
    // Cloud-only fields are reported, not silently dropped.
    let notes = p.notes.join("\n");
    assert!(notes.contains("alertTargets"), "{notes}");
    assert!(notes.contains("additionalMetricsToRetainV2"), "{notes}");
    assert!(notes.contains("\"cpu\": exportMetric"), "{notes}");
}

#[test]
fn bare_array_and_behaviors_object_parse_to_the_same_behaviours() {
    let whole = profile(DESCRIBE_OUTPUT);
    let v: serde_json::Value = serde_json::from_str(DESCRIBE_OUTPUT).unwrap();
    let arr = serde_json::to_string(&v["behaviors"]).unwrap();
    let bare = profile(&arr);
    let obj = profile(&format!("{{\"behaviors\": {arr}}}"));
    assert_eq!(bare.behaviors, whole.behaviors);
    assert_eq!(obj.behaviors, whole.behaviors);
    assert_eq!(bare.name, "test");
}

#[test]
fn behaviours_serialize_back_to_device_defender_shape() {
    let p = profile(DESCRIBE_OUTPUT);
    let v = serde_json::to_value(&p.behaviors[1]).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "name": "Bytes-out",
            "metric": "aws:all-bytes-out",
            "criteria": {
                "comparisonOperator": "less-than",
                "value": { "count": 1000000 },
                "durationSeconds": 300,
                "consecutiveDatapointsToAlarm": 2,
                "consecutiveDatapointsToClear": 2
            }
        })
    );
    let back: Behavior = serde_json::from_value(v).unwrap();
    assert_eq!(back, p.behaviors[1]);
}

#[test]
fn default_profile_is_valid_and_covers_the_documented_behaviours() {
    let p = default_profile();
    assert_eq!(p.name, "edgewarden-default");
    let names: Vec<&str> = p.behaviors.iter().map(|b| b.name.as_str()).collect();
    for n in [
        "traffic-bytes-out",
        "connections-opened-out",
        "processes-cpu",
        "new-listening-tcp-port",
        "new-destination-addresses",
        "new-cpu-heavy-process",
        "scan-inbound-tcp",
        "scan-inbound-udp",
        "scan-outbound-connect-failures",
        "burst-outbound-connections",
        "new-recurring-destination",
        "process-cpu-above-its-history",
        "raw-packets-out",
    ] {
        assert!(names.contains(&n), "{n} missing");
    }
    let readme = include_str!("README.md");
    for n in names {
        assert!(readme.contains(n), "README does not document {n}");
    }
}

#[test]
fn errors_name_the_behaviour_and_the_field() {
    let e = errors(
        r#"[{"name": "scan", "metric": "tcp_out_rsts",
             "criteria": {"comparisonOperator": "greater-thn", "value": {"number": 5}}}]"#,
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with(r#"behavior "scan" (behaviors[0]), field criteria.comparisonOperator: unknown operator "greater-thn""#),
        "{e:?}"
    );

    let e = errors(
        r#"[{"name": "x", "metric": "aws:all-byte-out", "criteria": {"comparisonOperator": "less-than", "value": {"count": 1}}}]"#,
    );
    assert!(e[0].contains("field metric: unknown metric \"aws:all-byte-out\"; did you mean \"aws:all-bytes-out\"?"), "{e:?}");

    // Wrong value kind for the metric.
    let e = errors(
        r#"[{"name": "ports", "metric": "aws:listening-tcp-ports", "criteria": {"comparisonOperator": "in-port-set", "value": {"cidrs": ["10.0.0.0/8"]}}}]"#,
    );
    assert!(
        e[0].contains(r#"behavior "ports""#)
            && e[0].contains("criteria.value.cidrs")
            && e[0].contains("takes value.ports"),
        "{e:?}"
    );

    let e = errors(
        r#"[{"name": "bo", "metric": "aws:all-bytes-out", "criteria": {"comparisonOperator": "less-than", "value": {"number": 1.5}}}]"#,
    );
    assert!(
        e[0].contains("criteria.value.number") && e[0].contains("takes value.count"),
        "{e:?}"
    );

    // Operator that does not fit the metric.
    let e = errors(
        r#"[{"name": "bo", "metric": "aws:all-bytes-out", "criteria": {"comparisonOperator": "in-port-set", "value": {"ports": [1]}}}]"#,
    );
    assert!(
        e[0].contains("criteria.comparisonOperator")
            && e[0].contains("in-port-set does not apply to aws:all-bytes-out"),
        "{e:?}"
    );

    // Cloud-side metric.
    let e = errors(
        r#"[{"name": "auth", "metric": "aws:num-authorization-failures", "criteria": {"comparisonOperator": "less-than", "value": {"count": 5}, "durationSeconds": 300}}]"#,
    );
    assert!(
        e[0].contains(r#"behavior "auth""#)
            && e[0].contains("field metric")
            && e[0].contains("cloud-side"),
        "{e:?}"
    );

    // Bad element inside a list.
    let e = errors(
        r#"[{"name": "p", "metric": "aws:listening-tcp-ports", "criteria": {"comparisonOperator": "in-port-set", "value": {"ports": [22, 70000, "x"]}}}]"#,
    );
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].contains("criteria.value.ports[1]") && e[0].contains("70000"),
        "{e:?}"
    );
    assert!(e[1].contains("criteria.value.ports[2]"), "{e:?}");
}

#[test]
fn every_problem_of_a_file_is_reported_at_once() {
    let e = errors(
        r#"{"behaviors": [
            {"name": "a", "metric": "aws:num-listening-tcp-ports",
             "metricDimension": {"dimensionName": "TopicFilter", "operator": "IN"},
             "criteria": {"comparisonOperator": "less-than", "value": {"count": 5}, "durationSeconds": 300}},
            {"name": "b", "metric": "aws:all-bytes-in",
             "criteria": {"mlDetectionConfig": {"confidenceLevel": "EXTREME"}, "value": {"count": 1}}},
            {"name": "c", "metric": "cpu_usage", "criteria": {"comparisonOperator": "less-than", "value": {"number": 1}, "consecutiveDatapointsToAlarm": 11}, "colour": "red"},
            {"name": "c", "metric": "cpu_usage", "criteria": {"comparisonOperator": "less-than", "value": {"number": 1}}},
            {"metric": "cpu_usage"},
            {"name": "s", "metric": "aws:all-bytes-out", "criteria": {"comparisonOperator": "in-set", "statisticalThreshold": {"statistic": "p95"}}}
        ], "surprise": 1}"#,
    );
    let all = e.join("\n");
    for want in [
        "field surprise: unknown field",
        r#"behavior "a" (behaviors[0]), field metricDimension: not supported on the device"#,
        r#"behavior "a" (behaviors[0]), field criteria.durationSeconds: aws:num-listening-tcp-ports is a level"#,
        r#"behavior "b" (behaviors[1]), field criteria.mlDetectionConfig.confidenceLevel: unknown level "EXTREME""#,
        r#"behavior "b" (behaviors[1]), field criteria.value: not allowed with mlDetectionConfig"#,
        r#"behavior "c" (behaviors[2]), field colour: unknown field"#,
        r#"behavior "c" (behaviors[2]), field criteria.consecutiveDatapointsToAlarm: expected an integer from 1 to 10, found 11"#,
        r#"behavior "c" (behaviors[3]), field name: duplicate behaviour name"#,
        "behaviors[4], field name: missing",
        "behaviors[4], field criteria: missing",
        r#"behavior "s" (behaviors[5]), field criteria.statisticalThreshold.statistic: unknown statistic "p95""#,
    ] {
        assert!(all.contains(want), "missing {want:?} in\n{all}");
    }
}

#[test]
fn malformed_json_names_line_and_column() {
    let err = parse_profile(
        "[\n  {\"name\": \"x\",\n   \"metric\" \"aws:all-bytes-out\"}\n]",
        "t",
    )
    .unwrap_err();
    match &err {
        ProfileError::Syntax { line, column, .. } => {
            assert_eq!(*line, 3);
            assert!(*column > 1);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string()
            .starts_with("malformed JSON at line 3, column"),
        "{err}"
    );
    let e = errors(r#"{"name": "x", "metric": "aws:all-bytes-out", "criteria": {}}"#);
    assert!(e[0].contains("single behaviour: wrap it in [ … ]"), "{e:?}");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(errors("[]")[0].contains("at least one behaviour"));
    assert!(errors("42")[0].contains("found a number"));
}

#[test]
fn load_profile_reports_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("my-profile.json");
    std::fs::write(&path, DESCRIBE_OUTPUT).unwrap();
    assert_eq!(load_profile(&path).unwrap().name, "gateway-fleet");
    std::fs::write(
        &path,
        r#"[{"name": "n", "metric": "nope", "criteria": {}}]"#,
    )
    .unwrap();
    let e = load_profile(&path).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{}: ", path.display())), "{e}");
    assert!(e.contains("behavior \"n\""), "{e}");
    let e = load_profile(&dir.path().join("missing.json")).unwrap_err();
    assert!(matches!(e, ProfileError::Read { .. }), "{e}");
    std::fs::write(&path, r#"[{"name": "n", "metric": "cpu_usage", "criteria": {"comparisonOperator": "less-than", "value": {"number": 1}}}]"#).unwrap();
    assert_eq!(load_profile(&path).unwrap().name, "my-profile");
}

proptest::proptest! {
    #[test]
    fn profile_parser_never_panics_on_any_text(s in ".{0,300}") {
        let _ = parse_profile(&s, "p");
    }

    #[test]
    fn profile_parser_never_panics_on_behaviour_like_json(
        name in proptest::option::of("[a-z:_ -]{0,12}"),
        metric in proptest::sample::select(vec!["aws:all-bytes-out", "aws:listening-tcp-ports", "aws:destination-ip-addresses", "cpu_usage", "top_cpu_processes", "aws:num-disconnects", "x"]),
        op in proptest::sample::select(vec!["less-than", "in-port-set", "in-cidr-set", "in-set", "not-in-set", "bogus"]),
        key in proptest::sample::select(vec!["count", "number", "ports", "cidrs", "strings", "numbers", "other"]),
        val in proptest::sample::select(vec!["1", "-1", "1.5", "[1, 2]", "[\"a\"]", "[\"10.0.0.0/8\"]", "null", "{}", "1e400"]),
        extra in proptest::sample::select(vec!["", ", \"durationSeconds\": 300", ", \"durationSeconds\": 0", ", \"statisticalThreshold\": {\"statistic\": \"p50\"}", ", \"mlDetectionConfig\": {\"confidenceLevel\": \"LOW\"}", ", \"consecutiveDatapointsToClear\": 0"]),
    ) {
        let name = name.map(|n| format!("\"name\": \"{n}\",")).unwrap_or_default();
        let json = format!(r#"[{{{name} "metric": "{metric}", "criteria": {{"comparisonOperator": "{op}", "value": {{"{key}": {val}}}{extra}}}}}]"#);
        if let Err(ProfileError::Invalid { issues, .. }) = parse_profile(&json, "p") {
            proptest::prop_assert!(!issues.is_empty());
        }
    }
}

// ---------------------------------------------------------------- rules

#[test]
fn duration_window_rule_alarms_and_clears_on_hand_computed_sums() {
    // Normal: at most 100 resets in 30 s (3 ticks).
    let p = profile(
        r#"[{"name": "rst", "metric": "tcp_out_rsts",
            "criteria": {"comparisonOperator": "less-than-equals", "value": {"number": 100}, "durationSeconds": 30}}]"#,
    );
    let mut e = Engine::new(p, &cfg(Duration::ZERO), "gw", None);
    let values = [10.0, 20.0, 30.0, 60.0, 15.0, 10.0, 20.0, 80.0];
    //            sums: 10   30    60    110   105   85    45    110
    // covered from the 3rd tick; violating at ticks 4, 5 (110, 105), conforming at 6 (85).
    let evs = run(
        &mut e,
        values
            .iter()
            .enumerate()
            .map(|(i, v)| snap(i as u64 + 1, &[("tcp_out_rsts", *v)])),
    );
    let types: Vec<Vec<ViolationEventType>> = evs
        .iter()
        .map(|v| v.iter().map(|e| e.violation_event_type).collect())
        .collect();
    use ViolationEventType::*;
    assert_eq!(
        types,
        vec![
            vec![],
            vec![],
            vec![],
            vec![InAlarm],
            vec![],
            vec![AlarmCleared],
            vec![],
            vec![InAlarm]
        ]
    );
    let raised = &evs[3][0];
    assert_eq!(raised.metric_value.as_ref().unwrap().number, Some(110.0));
    assert_eq!(raised.score, 1.0);
    assert_eq!(
        raised.explanation,
        "tcp_out_rsts: 110 in the last 30 s; normal is less-than-equals 100"
    );
    assert_eq!(evs[5][0].violation_id, raised.violation_id);
    assert_eq!(evs[5][0].metric_value.as_ref().unwrap().number, Some(85.0));
    assert_ne!(evs[7][0].violation_id, raised.violation_id);
}

#[test]
fn a_partial_window_already_over_an_upper_bound_alarms_at_once() {
    let p = profile(
        r#"[{"name": "rst", "metric": "tcp_out_rsts",
            "criteria": {"comparisonOperator": "less-than", "value": {"number": 100}, "durationSeconds": 60}}]"#,
    );
    let mut e = Engine::new(p, &cfg(Duration::ZERO), "gw", None);
    assert!(e.evaluate(&snap(1, &[("tcp_out_rsts", 5.0)])).is_empty());
    let ev = e.evaluate(&snap(2, &[("tcp_out_rsts", 500.0)]));
    assert_eq!(
        kinds(&ev),
        vec![("rst".into(), ViolationEventType::InAlarm)]
    );
    // A lower bound is not judged on a partial window.
    let p = profile(
        r#"[{"name": "alive", "metric": "aws:all-packets-out",
            "criteria": {"comparisonOperator": "greater-than", "value": {"count": 10}, "durationSeconds": 30}}]"#,
    );
    let mut e = Engine::new(p, &cfg(Duration::ZERO), "gw", None);
    let quiet = |seq| {
        let mut s = snap(seq, &[]);
        s.net = Some(NetDelta {
            packets_out: 1,
            ..NetDelta::default()
        });
        s
    };
    assert!(e.evaluate(&quiet(1)).is_empty());
    assert!(e.evaluate(&quiet(2)).is_empty());
    let ev = e.evaluate(&quiet(3));
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].metric_value.as_ref().unwrap().count, Some(3));
    assert_eq!(
        ev[0].explanation,
        "aws:all-packets-out: 3 in the last 30 s; normal is greater-than 10"
    );
}

#[test]
fn every_comparison_operator_alarms_on_its_boundary() {
    use ViolationEventType::*;
    // (operator, threshold, values, expected event per tick)
    type Case = (&'static str, f64, [f64; 3], [Option<ViolationEventType>; 3]);
    let cases: [Case; 4] = [
        (
            "less-than",
            50.0,
            [49.0, 50.0, 49.0],
            [None, Some(InAlarm), Some(AlarmCleared)],
        ),
        (
            "less-than-equals",
            50.0,
            [50.0, 51.0, 50.0],
            [None, Some(InAlarm), Some(AlarmCleared)],
        ),
        (
            "greater-than",
            50.0,
            [51.0, 50.0, 51.0],
            [None, Some(InAlarm), Some(AlarmCleared)],
        ),
        (
            "greater-than-equals",
            50.0,
            [50.0, 49.0, 50.0],
            [None, Some(InAlarm), Some(AlarmCleared)],
        ),
    ];
    for (op, t, vals, want) in cases {
        let p = profile(&format!(
            r#"[{{"name": "cpu", "metric": "cpu_usage", "criteria": {{"comparisonOperator": "{op}", "value": {{"number": {t}}}}}}}]"#
        ));
        let mut e = Engine::new(p, &cfg(Duration::ZERO), "gw", None);
        let got: Vec<Option<ViolationEventType>> = vals
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let ev = e.evaluate(&snap(i as u64 + 1, &[("cpu_usage", *v)]));
                assert!(ev.len() <= 1);
                ev.first().map(|e| e.violation_event_type)
            })
            .collect();
        assert_eq!(got, want, "{op}");
    }
}

#[test]
fn consecutive_datapoints_to_alarm_and_clear_in_the_engine() {
    let p = profile(
        r#"[{"name": "cpu", "metric": "cpu_usage",
            "criteria": {"comparisonOperator": "less-than", "value": {"number": 90},
                         "consecutiveDatapointsToAlarm": 2, "consecutiveDatapointsToClear": 3}}]"#,
    );
    let mut e = Engine::new(p, &cfg(Duration::ZERO), "gw", None);
    let cpu = [95.0, 10.0, 95.0, 95.0, 10.0, 10.0, 95.0, 10.0, 10.0, 10.0];
    let mut seq = 0;
    let evs: Vec<Option<ViolationEventType>> = cpu
        .iter()
        .map(|v| {
            seq += 1;
            let mut s = snap(seq, &[("cpu_usage", *v)]);
            if seq == 6 {
                // A tick without the metric neither extends nor breaks a run.
                s.custom.clear();
            }
            e.evaluate(&s).first().map(|e| e.violation_event_type)
        })
        .collect();
    use ViolationEventType::*;
    assert_eq!(
        evs,
        vec![
            None,
            None,
            None,
            Some(InAlarm),
            None,
            None,
            None,
            None,
            None,
            Some(AlarmCleared)
        ]
    );
}

#[test]
fn port_cidr_and_string_set_rules_name_their_offenders() {
    let p = profile(
        r#"[
        {"name": "ports", "metric": "aws:listening-tcp-ports", "criteria": {"comparisonOperator": "in-port-set", "value": {"ports": [22, 8883]}}},
        {"name": "no-telnet", "metric": "aws:listening-tcp-ports", "criteria": {"comparisonOperator": "not-in-port-set", "value": {"ports": [23]}}},
        {"name": "dest", "metric": "aws:destination-ip-addresses", "criteria": {"comparisonOperator": "in-cidr-set", "value": {"cidrs": ["203.0.113.0/24"]}}},
        {"name": "no-bogons", "metric": "aws:destination-ip-addresses", "criteria": {"comparisonOperator": "not-in-cidr-set", "value": {"cidrs": ["198.51.100.0/24"]}}},
        {"name": "procs", "metric": "listening_process_names", "criteria": {"comparisonOperator": "in-set", "value": {"strings": ["sshd", "mosquitto"]}}},
        {"name": "no-nc", "metric": "new_process_names", "criteria": {"comparisonOperator": "not-in-set", "value": {"strings": ["nc"]}}}
    ]"#,
    );
    let mut e = Engine::new(p, &cfg(Duration::ZERO), "gw", None);
    let conn = |ip: &str| TcpConn {
        local: "192.0.2.1:40000".parse().unwrap(),
        remote: format!("{ip}:443").parse().unwrap(),
        interface: None,
    };
    let mut normal = snap(1, &[]);
    normal.tcp_listen = Some(listening(&[22, 8883]));
    normal.established = Some(vec![conn("203.0.113.5")]);
    normal.custom.insert(
        "listening_process_names".into(),
        MetricValue::StringList(vec!["sshd".into()]),
    );
    normal.custom.insert(
        "new_process_names".into(),
        MetricValue::StringList(vec!["cron".into()]),
    );
    assert!(e.evaluate(&normal).is_empty());

    let mut bad = normal.clone();
    bad.seq = 2;
    bad.at_ms += TICK;
    bad.tcp_listen = Some(listening(&[22, 23, 8883]));
    bad.established = Some(vec![conn("203.0.113.5"), conn("198.51.100.7")]);
    bad.custom.insert(
        "listening_process_names".into(),
        MetricValue::StringList(vec!["sshd".into(), "telnetd".into()]),
    );
    bad.custom.insert(
        "new_process_names".into(),
        MetricValue::StringList(vec!["nc".into()]),
    );
    let ev = e.evaluate(&bad);
    let by = |n: &str| {
        ev.iter()
            .find(|e| e.behavior.name == n)
            .unwrap_or_else(|| panic!("{n}: {ev:?}"))
    };
    assert_eq!(ev.len(), 6);
    assert_eq!(
        by("ports").explanation,
        "aws:listening-tcp-ports: 23 not in the allowed set [22, 8883]"
    );
    assert_eq!(
        by("ports").metric_value.as_ref().unwrap().ports,
        Some(vec![22, 23, 8883])
    );
    assert_eq!(
        by("no-telnet").explanation,
        "aws:listening-tcp-ports: 23 in the forbidden set [23]"
    );
    assert_eq!(
        by("dest").explanation,
        "aws:destination-ip-addresses: 198.51.100.7 not in the allowed set [203.0.113.0/24]"
    );
    assert!(by("no-bogons")
        .explanation
        .contains("198.51.100.7 in the forbidden set"));
    assert!(by("procs")
        .explanation
        .contains("telnetd not in the allowed set"));
    assert!(by("no-nc").explanation.contains("nc in the forbidden set"));

    // Empty sets conform and clear every alarm.
    let mut empty = snap(3, &[]);
    empty.custom.insert(
        "listening_process_names".into(),
        MetricValue::StringList(vec![]),
    );
    empty
        .custom
        .insert("new_process_names".into(), MetricValue::StringList(vec![]));
    let ev = e.evaluate(&empty);
    assert_eq!(ev.len(), 6);
    assert!(ev
        .iter()
        .all(|e| e.violation_event_type == ViolationEventType::AlarmCleared));
}

#[test]
fn statistical_threshold_compares_with_a_percentile_of_the_history() {
    let p = profile(
        r#"[{"name": "conns", "metric": "aws:num-established-tcp-connections",
            "criteria": {"comparisonOperator": "less-than-equals", "statisticalThreshold": {"statistic": "p90"}}}]"#,
    );
    let mut e = Engine::new(p, &cfg(Duration::ZERO), "gw", None);
    let conns = |seq: u64, n: usize| {
        let mut s = snap(seq, &[]);
        s.established = Some(
            (0..n)
                .map(|i| TcpConn {
                    local: format!("192.0.2.1:{}", 40000 + i).parse().unwrap(),
                    remote: "203.0.113.1:443".parse().unwrap(),
                    interface: None,
                })
                .collect(),
        );
        s
    };
    // 30 datapoints 1..=10 three times: p90 = rank 27 of 30 → 9.
    let mut seq = 0;
    for _ in 0..3 {
        for n in 1..=10 {
            seq += 1;
            assert!(e.evaluate(&conns(seq, n)).is_empty(), "history still short");
        }
    }
    seq += 1;
    assert!(e.evaluate(&conns(seq, 9)).is_empty(), "9 <= p90 (9)");
    seq += 1;
    let ev = e.evaluate(&conns(seq, 10));
    assert_eq!(ev.len(), 1);
    assert_eq!(
        ev[0].explanation,
        "aws:num-established-tcp-connections: 10; normal is less-than-equals the p90 of its history, 9"
    );
    seq += 1;
    let ev = e.evaluate(&conns(seq, 3));
    assert_eq!(ev[0].violation_event_type, ViolationEventType::AlarmCleared);
}

// ---------------------------------------------------------------- learned behaviours

/// Scores `value / 100`, trained after 3 datapoints; counts what it learned.
#[derive(Debug, Default)]
struct LinearScorer {
    learned: Vec<f64>,
}

impl MlScorer for LinearScorer {
    fn observe(&mut self, _at_ms: u64, value: f64) -> f64 {
        self.learned.push(value);
        value / 100.0
    }
    fn is_trained(&self) -> bool {
        self.learned.len() >= 3
    }
    fn save(&self) -> serde_json::Value {
        serde_json::json!(self.learned)
    }
}

#[derive(Debug)]
struct LinearFactory;

impl ScorerFactory for LinearFactory {
    fn create(&self) -> Box<dyn MlScorer> {
        Box::new(LinearScorer::default())
    }
    fn restore(&self, state: &serde_json::Value) -> Option<Box<dyn MlScorer>> {
        Some(Box::new(LinearScorer {
            learned: serde_json::from_value(state.clone()).ok()?,
        }))
    }
}

#[test]
fn ml_behaviours_learn_silently_then_alarm_at_their_confidence_threshold() {
    let p = profile(
        r#"[{"name": "ml-cpu", "metric": "cpu_usage", "criteria": {"consecutiveDatapointsToClear": 2, "mlDetectionConfig": {"confidenceLevel": "MEDIUM"}}}]"#,
    );
    // Learning period 30 s = 3 ticks.
    let mut e = Engine::with_scorers(
        p,
        &cfg(Duration::from_secs(30)),
        "gw",
        None,
        Box::new(LinearFactory),
    );
    assert_eq!(e.status().phase, Phase::Learning);
    for seq in 1..=3 {
        // Even a maximal score stays silent while learning.
        assert!(e.evaluate(&snap(seq, &[("cpu_usage", 99.0)])).is_empty());
    }
    assert_eq!(e.status().phase, Phase::Armed);
    // MEDIUM threshold 0.60: 59 conforms, 60 violates.
    assert!(e.evaluate(&snap(4, &[("cpu_usage", 59.0)])).is_empty());
    let ev = e.evaluate(&snap(5, &[("cpu_usage", 60.0)]));
    assert_eq!(
        kinds(&ev),
        vec![("ml-cpu".into(), ViolationEventType::InAlarm)]
    );
    assert_eq!(ev[0].score, 0.6);
    assert_eq!(
        ev[0]
            .violation_event_additional_info
            .unwrap()
            .confidence_level,
        ConfidenceLevel::Medium
    );
    assert!(
        ev[0]
            .explanation
            .contains("anomaly score 0.600 ≥ 0.60 (confidence MEDIUM)"),
        "{}",
        ev[0].explanation
    );
    assert!(e.evaluate(&snap(6, &[("cpu_usage", 10.0)])).is_empty());
    let ev = e.evaluate(&snap(7, &[("cpu_usage", 10.0)]));
    assert_eq!(ev[0].violation_event_type, ViolationEventType::AlarmCleared);
    // Every datapoint reached the scorer, and its state is persisted.
    let st = e.state();
    let learned: Vec<f64> =
        serde_json::from_value(st.behaviors["ml-cpu"].model.clone().unwrap()).unwrap();
    assert_eq!(learned, vec![99.0, 99.0, 99.0, 59.0, 60.0, 10.0, 10.0]);
    let status = e.status();
    assert_eq!(
        status.behaviors[0].recent_scores,
        vec![0.99, 0.99, 0.99, 0.59, 0.6, 0.1, 0.1]
    );
}

#[test]
fn novelty_alarms_on_a_port_never_seen_while_learning() {
    let p = profile(
        r#"[{"name": "new-port", "metric": "aws:listening-tcp-ports", "criteria": {"mlDetectionConfig": {"confidenceLevel": "LOW"}}}]"#,
    );
    assert!(p.notes.iter().any(|n| n.contains("set novelty")));
    let mut e = Engine::new(p, &cfg(Duration::from_secs(60)), "gw", None);
    let with = |seq: u64, ports: &[u16]| {
        let mut s = snap(seq, &[]);
        s.tcp_listen = Some(listening(ports));
        s
    };
    for seq in 1..=6 {
        assert!(e.evaluate(&with(seq, &[22, 8883])).is_empty());
    }
    assert!(e.evaluate(&with(7, &[22, 8883])).is_empty());
    let ev = e.evaluate(&with(8, &[22, 4444, 8883]));
    assert_eq!(
        kinds(&ev),
        vec![("new-port".into(), ViolationEventType::InAlarm)]
    );
    assert!(
        ev[0]
            .explanation
            .starts_with("aws:listening-tcp-ports: never seen in the baseline: 4444 (novelty 0.5"),
        "{}",
        ev[0].explanation
    );
    assert_eq!(e.status().active_violations.len(), 1);
    let ev = e.evaluate(&with(9, &[22, 8883]));
    assert_eq!(ev[0].violation_event_type, ViolationEventType::AlarmCleared);
}

// ---------------------------------------------------------------- state, summary, events

#[test]
fn state_round_trips_through_json_and_keeps_alarms_and_baselines() {
    let json = r#"[
        {"name": "new-port", "metric": "aws:listening-tcp-ports", "criteria": {"mlDetectionConfig": {"confidenceLevel": "LOW"}}},
        {"name": "conns", "metric": "aws:num-established-tcp-connections", "criteria": {"comparisonOperator": "less-than-equals", "statisticalThreshold": {"statistic": "p100"}}},
        {"name": "ml-cpu", "metric": "cpu_usage", "criteria": {"mlDetectionConfig": {"confidenceLevel": "HIGH"}}}
    ]"#;
    let c = cfg(Duration::from_secs(20));
    let mut e = Engine::with_scorers(profile(json), &c, "gw", None, Box::new(LinearFactory));
    let mut s = snap(1, &[("cpu_usage", 5.0)]);
    s.tcp_listen = Some(listening(&[22]));
    for seq in 1..=40 {
        s.seq = seq;
        s.at_ms = snap(seq, &[]).at_ms;
        e.evaluate(&s);
    }
    s.seq = 41;
    s.at_ms += TICK;
    s.tcp_listen = Some(listening(&[22, 4444]));
    let raised = e.evaluate(&s);
    assert_eq!(raised.len(), 1);

    let state = e.state();
    let text = serde_json::to_string(&state).unwrap();
    let back: EngineState = serde_json::from_str(&text).unwrap();
    assert_eq!(back, state);
    assert_eq!(back.behaviors["conns"].history.as_ref().unwrap().len(), 41);
    assert_eq!(back.behaviors["new-port"].learned_ms, 410_000);

    let mut e2 = Engine::with_scorers(profile(json), &c, "gw", Some(back), Box::new(LinearFactory));
    let st = e2.status();
    assert_eq!(st.phase, Phase::Armed, "a restart does not relearn");
    assert_eq!(st.active_violations.len(), 1);
    assert_eq!(e2.state(), state);
    // The same violation clears after the restart.
    s.seq = 42;
    s.at_ms += TICK;
    s.tcp_listen = Some(listening(&[22]));
    let ev = e2.evaluate(&s);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].violation_event_type, ViolationEventType::AlarmCleared);
    assert_eq!(ev[0].violation_id, raised[0].violation_id);
}

#[test]
fn changed_or_removed_behaviours_invalidate_their_alarms() {
    let old = r#"[{"name": "cpu", "metric": "cpu_usage", "criteria": {"comparisonOperator": "less-than", "value": {"number": 50}}},
                  {"name": "gone", "metric": "process_count", "criteria": {"comparisonOperator": "less-than", "value": {"number": 5}}}]"#;
    let c = cfg(Duration::ZERO);
    let mut e = Engine::new(profile(old), &c, "gw", None);
    let ev = e.evaluate(&snap(1, &[("cpu_usage", 90.0), ("process_count", 10.0)]));
    assert_eq!(ev.len(), 2);
    let new = r#"[{"name": "cpu", "metric": "cpu_usage", "criteria": {"comparisonOperator": "less-than", "value": {"number": 95}}}]"#;
    let mut e2 = Engine::new(profile(new), &c, "gw", Some(e.state()));
    let inv = e2.evaluate(&snap(2, &[("cpu_usage", 10.0)]));
    assert_eq!(inv.len(), 2, "{inv:?}");
    assert!(inv
        .iter()
        .all(|e| e.violation_event_type == ViolationEventType::AlarmInvalidated));
    let ids: Vec<&str> = inv.iter().map(|e| e.violation_id.as_str()).collect();
    assert!(
        ids.contains(&ev[0].violation_id.as_str()) && ids.contains(&ev[1].violation_id.as_str())
    );
    // The invalidated "cpu" event carries the old behaviour (threshold 50).
    let cpu = inv.iter().find(|e| e.behavior.name == "cpu").unwrap();
    assert_eq!(
        cpu.behavior.criteria.value.as_ref().unwrap().number,
        Some(50.0)
    );
}

#[test]
fn alarms_without_datapoints_for_two_days_are_invalidated() {
    let p = profile(
        r#"[{"name": "cpu", "metric": "cpu_usage", "criteria": {"comparisonOperator": "less-than", "value": {"number": 50}}}]"#,
    );
    let mut e = Engine::new(p, &cfg(Duration::ZERO), "gw", None);
    assert_eq!(e.evaluate(&snap(1, &[("cpu_usage", 90.0)])).len(), 1);
    assert!(e.evaluate(&snap(2, &[])).is_empty());
    let mut late = snap(3, &[]);
    late.at_ms += INVALIDATE_AFTER_MS;
    let ev = e.evaluate(&late);
    assert_eq!(
        ev[0].violation_event_type,
        ViolationEventType::AlarmInvalidated
    );
    assert!(e.status().active_violations.is_empty());
}

#[test]
fn summary_metrics_cover_the_interval_and_reset() {
    let p = profile(
        r#"[{"name": "cpu", "metric": "cpu_usage", "criteria": {"comparisonOperator": "less-than", "value": {"number": 50}}},
            {"name": "procs", "metric": "process_count", "criteria": {"comparisonOperator": "less-than", "value": {"number": 100}}},
            {"name": "ml", "metric": "memory_used_pct", "criteria": {"mlDetectionConfig": {"confidenceLevel": "HIGH"}}}]"#,
    );
    let mut e = Engine::with_scorers(p, &cfg(Duration::ZERO), "gw", None, Box::new(LinearFactory));
    for seq in 1..=3 {
        e.evaluate(&snap(seq, &[("memory_used_pct", 10.0)]));
    }
    // procs raised and cleared within the interval, cpu still in alarm at its end.
    e.evaluate(&snap(
        4,
        &[
            ("cpu_usage", 90.0),
            ("process_count", 200.0),
            ("memory_used_pct", 42.0),
        ],
    ));
    e.evaluate(&snap(
        5,
        &[
            ("cpu_usage", 90.0),
            ("process_count", 20.0),
            ("memory_used_pct", 20.0),
        ],
    ));
    let m = e.summary_metrics();
    assert_eq!(
        m[0],
        (crate::metrics::LOCAL_VIOLATIONS, MetricValue::Number(2.0))
    );
    assert_eq!(
        m[1],
        (
            crate::metrics::LOCAL_ANOMALY_SCORE,
            MetricValue::Number(0.42)
        )
    );
    assert_eq!(
        m[2],
        (
            crate::metrics::LOCAL_VIOLATION_BEHAVIORS,
            MetricValue::StringList(vec!["cpu".into(), "procs".into()])
        )
    );
    for (name, _) in &m {
        assert!(
            crate::metrics::find(name).is_some(),
            "{name} not registered"
        );
    }
    // Next interval: cpu is still in alarm; nothing else happened.
    let m = e.summary_metrics();
    assert_eq!(m[0].1, MetricValue::Number(1.0));
    assert_eq!(m[1].1, MetricValue::Number(0.0));
    assert_eq!(m[2].1, MetricValue::StringList(vec!["cpu".into()]));
}

#[test]
fn violation_events_have_device_defenders_shape() {
    let p = profile(
        r#"[{"name": "ports", "metric": "aws:listening-tcp-ports", "criteria": {"comparisonOperator": "in-port-set", "value": {"ports": [22]}}, "suppressAlerts": true}]"#,
    );
    let mut e = Engine::new(p, &cfg(Duration::ZERO), "gw-0042", None);
    let mut s = snap(1, &[]);
    s.tcp_listen = Some(listening(&[22, 4444]));
    let ev = e.evaluate(&s).remove(0);
    assert!(ev.alerts_suppressed());
    let v: serde_json::Value = serde_json::from_str(&ev.to_json_line()).unwrap();
    assert_eq!(v["thingName"], "gw-0042");
    assert_eq!(v["securityProfileName"], "test");
    assert_eq!(v["violationEventType"], "in-alarm");
    assert_eq!(v["violationEventTime"], s.at_ms);
    assert_eq!(v["metricValue"], serde_json::json!({"ports": [22, 4444]}));
    assert_eq!(
        v["behavior"]["criteria"]["comparisonOperator"],
        "in-port-set"
    );
    assert_eq!(v["behavior"]["suppressAlerts"], true);
    assert_eq!(v["score"], 1.0);
    let id = v["violationId"].as_str().unwrap();
    assert_eq!(id.len(), 36);
    assert_eq!(id.as_bytes()[14], b'4');
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    for k in keys {
        assert!(
            [
                "violationId",
                "thingName",
                "securityProfileName",
                "behavior",
                "metricValue",
                "violationEventType",
                "violationEventTime",
                "score",
                "explanation"
            ]
            .contains(&k),
            "unexpected key {k}"
        );
    }
    let back: ViolationEvent = serde_json::from_value(v).unwrap();
    assert_eq!(back, ev);
}

#[test]
fn default_profile_is_quiet_while_learning_then_flags_a_backdoor_port() {
    let mut e = Engine::new(
        default_profile(),
        &cfg(Duration::from_secs(120)),
        "gw",
        None,
    );
    let base = |seq: u64| {
        let mut s = snap(
            seq,
            &[
                ("cpu_usage", 5.0 + (seq % 3) as f64),
                ("process_count", 120.0),
                ("tcp_active_opens", (seq % 2) as f64),
                ("tcp_passive_opens", 0.0),
                ("tcp_out_rsts", 0.0),
                ("udp_no_ports", 0.0),
                ("tcp_attempt_fails", 0.0),
            ],
        );
        s.net = Some(NetDelta {
            bytes_in: 4000 + seq % 5 * 10,
            bytes_out: 3000,
            packets_in: 40,
            packets_out: 30,
        });
        s.tcp_listen = Some(listening(&[22, 1883]));
        s.custom.insert(
            "top_cpu_processes".into(),
            MetricValue::StringList(vec!["mosquitto".into(), "kworker/0:1".into()]),
        );
        s.custom
            .insert("new_process_names".into(), MetricValue::StringList(vec![]));
        for m in ["recurring_destinations", "process_cpu_levels"] {
            s.custom.insert(m.into(), MetricValue::StringList(vec![]));
        }
        s
    };
    for seq in 1..=60 {
        let ev = e.evaluate(&base(seq));
        assert!(ev.is_empty(), "tick {seq}: {ev:?}");
    }
    assert_eq!(e.status().phase, Phase::Armed);
    let mut s = base(61);
    s.tcp_listen = Some(listening(&[22, 1883, 31337]));
    s.custom.insert(
        "top_cpu_processes".into(),
        MetricValue::StringList(vec!["mosquitto".into(), "kworker/1:2".into()]),
    );
    let ev = e.evaluate(&s);
    assert_eq!(
        kinds(&ev),
        vec![("new-listening-tcp-port".into(), ViolationEventType::InAlarm)],
        "{ev:?}"
    );
    let text = e.status().to_string();
    assert!(text.contains("new-listening-tcp-port"), "{text}");
}

#[test]
fn a_learned_state_that_does_not_match_the_profile_is_relearned_and_counted() {
    let json = r#"[
        {"name": "new-port", "metric": "aws:listening-tcp-ports", "criteria": {"mlDetectionConfig": {"confidenceLevel": "LOW"}}},
        {"name": "conns", "metric": "aws:num-established-tcp-connections", "criteria": {"comparisonOperator": "less-than-equals", "statisticalThreshold": {"statistic": "p100"}}}
    ]"#;
    let c = cfg(Duration::from_secs(20));
    let mut e = Engine::new(profile(json), &c, "gw", None);
    let mut s = snap(1, &[]);
    s.tcp_listen = Some(listening(&[22]));
    for seq in 1..=40 {
        s.seq = seq;
        s.at_ms = snap(seq, &[]).at_ms;
        e.evaluate(&s);
    }
    assert_eq!(e.status().phase, Phase::Armed);
    let good = e.state();
    assert!(Engine::new(profile(json), &c, "gw", Some(good.clone()))
        .relearned()
        .is_empty());

    // The novelty behaviour's saved set swapped for a percentile history: another kind's state.
    let mut bad = good.clone();
    let b = bad.behaviors.get_mut("new-port").unwrap();
    b.history = Some(vec![1.0, 2.0]);
    b.novelty = None;
    let e2 = Engine::new(profile(json), &c, "gw", Some(bad));
    assert_eq!(e2.relearned().len(), 1, "{:?}", e2.relearned());
    assert!(e2.relearned()[0].starts_with("new-port"));
    let st = e2.status();
    assert_eq!(
        st.phase,
        Phase::Learning,
        "relearned, not armed on an empty set"
    );
    assert_eq!(st.relearned_behaviors.len(), 1);
    assert!(st.to_string().contains("new-port"), "{st}");

    // Another layout version: everything relearns.
    let mut old = good;
    old.version += 1;
    let e3 = Engine::new(profile(json), &c, "gw", Some(old));
    assert_eq!(e3.relearned().len(), 2);
    assert_eq!(e3.status().phase, Phase::Learning);
}

#[test]
fn profiles_on_unknown_metrics_or_dimensions_are_refused_with_the_behaviour_name() {
    let e = errors(
        r#"[{"name": "beacons", "metric": "recurring_destination", "criteria": {"mlDetectionConfig": {"confidenceLevel": "LOW"}}},
            {"name": "per-topic", "metric": "tcp_out_rsts", "metricDimension": {"dimensionName": "TopicFilter"},
             "criteria": {"comparisonOperator": "less-than", "value": {"number": 5}}}]"#,
    );
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].contains("\"beacons\"") && e[0].contains("recurring_destinations"),
        "{}",
        e[0]
    );
    assert!(
        e[1].contains("\"per-topic\"") && e[1].contains("metricDimension"),
        "{}",
        e[1]
    );
}

#[test]
fn status_text_counts_the_behaviours_it_lists() {
    let p = default_profile();
    let names: Vec<String> = p.behaviors.iter().map(|b| b.name.clone()).collect();
    assert!(
        p.behaviors.iter().any(|b| !b.is_learned()),
        "the default profile has rule behaviours"
    );
    let e = Engine::new(p, &cfg(Duration::from_secs(60)), "gw", None);
    let text = e.status().to_string();
    let header = text.lines().next().unwrap();
    let count: usize = header
        .split(": ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {header:?}"));
    let listed: Vec<&str> = text
        .lines()
        .skip_while(|l| *l != "behaviours:")
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(count, listed.len(), "{text}");
    assert_eq!(listed, names, "{text}");
}
