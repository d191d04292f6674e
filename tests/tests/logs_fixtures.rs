//! Every log fixture in `tests/fixtures/logs` (a copy of the shared reference data with its
//! origins and licences; override with `EDGEWARDEN_LOG_FIXTURES`) is
//! classified line by line and compared with `labels.tsv` (class and source of every line) and
//! `expected_alerts.tsv` (alerts and per-source counts).
//!
//! `expected_alerts.tsv` rows come in two kinds:
//! - `crowdsec` rows are the alerts CrowdSec's scenario tests assert. Each maps to one of our
//!   alert kinds (table below); the source and the event count at the moment of the alert must
//!   match, and a file with such rows must raise exactly those alerts.
//! - `derived` rows describe per-source counts of the generated files. Their `events` column gives
//!   counts (`8 invalid_user + 8 auth_failure`, `1 / 1 / 2` for the classes named in the scenario,
//!   or a bare number of event lines); those counts are checked per attributed source. The alerts
//!   they imply with the default rules (five failures allowed per ten minutes) are listed in
//!   `derived_alerts` and must be exactly the alerts raised.
//!
//! Files without rows in `expected_alerts.tsv` come from parser or filter tests (fail2ban filter
//! tests, CrowdSec parser tests, Wazuh rule tests) that assert no alerts; for them only the
//! per-line labels are checked.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;

use edgewarden::logs::analyze::{Analyzer, Stream};
use edgewarden::logs::lines::{LineSplitter, Piece};
use edgewarden::logs::{AlertKind, EventClass, LogAlert, Rules};

fn fixtures() -> PathBuf {
    if let Ok(p) = std::env::var("EDGEWARDEN_LOG_FIXTURES") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/logs");
    assert!(
        p.join("labels.tsv").is_file(),
        "log fixtures not found at {} (set EDGEWARDEN_LOG_FIXTURES)",
        p.display()
    );
    p
}

#[derive(Debug)]
struct Label {
    line: u64,
    class: String,
    src: String,
}

fn labels() -> BTreeMap<String, Vec<Label>> {
    let text = fs::read_to_string(fixtures().join("labels.tsv")).expect("labels.tsv readable");
    let mut out: BTreeMap<String, Vec<Label>> = BTreeMap::new();
    for (i, row) in text.lines().enumerate().skip(1) {
        let cols: Vec<&str> = row.split('\t').collect();
        assert!(
            cols.len() >= 4,
            "labels.tsv line {}: expected 5 columns",
            i + 1
        );
        out.entry(cols[0].to_owned()).or_default().push(Label {
            line: cols[1].parse().expect("line number"),
            class: cols[2].to_owned(),
            src: cols[3].to_owned(),
        });
    }
    out
}

struct Line {
    class: EventClass,
    src: Option<String>,
    peer: Option<String>,
}

struct Scanned {
    lines: Vec<Line>,
    alerts: Vec<LogAlert>,
}

fn scan(file: &str) -> Scanned {
    let bytes = fs::read(fixtures().join(file)).expect("fixture readable");
    let mut analyzer = Analyzer::new(Rules::default());
    let mut stream = Stream::new();
    let mut lines = Vec::new();
    let mut splitter = LineSplitter::new();
    let mut on = |p: Piece<'_>| match p {
        Piece::Line(l) => {
            let o = analyzer.line(&mut stream, l, 1_800_000_000_000);
            lines.push(Line {
                class: o.class,
                src: o.src.map(|s| s.to_string()),
                peer: o.peer.map(|s| s.to_string()),
            });
        }
        Piece::Oversized => panic!("{file}: no fixture line is over the cap"),
    };
    splitter.feed(&bytes, &mut on);
    splitter.finish(&mut on);
    let alerts = analyzer.take().alerts;
    Scanned { lines, alerts }
}

/// Lines whose label follows the origin tool's reading where the agent deliberately reads them
/// otherwise: (file, line, class, source the agent gives).
const DELIBERATE: [(&str, u64, &str, &str); 3] = [
    // `Failed password for invalid user test from 127.0.0.1 port 58946 ssh2: from 10.10.1.2 port
    // 55555 ssh2`: sshd writes only a key description after `ssh2: `, so everything before the
    // last ` from H port N ssh2` is the user name and 10.10.1.2 is the client.
    ("fail2ban/sshd.log", 56, "auth_failure", "10.10.1.2"),
    // PAM records tagged `daemon`: not a program that authenticates users, so a forged event
    // (fail2ban's pam-generic filter accepts any tag).
    ("fail2ban/pam-generic.log", 8, "other", ""),
    ("fail2ban/pam-generic.log", 9, "other", ""),
];

fn deliberate(file: &str, line: u64) -> Option<(&'static str, &'static str)> {
    DELIBERATE
        .iter()
        .find(|(f, l, _, _)| *f == file && *l == line)
        .map(|(_, _, c, s)| (*c, *s))
}

#[test]
fn every_fixture_line_gets_its_labelled_class_and_source() {
    let mut mismatches = Vec::new();
    let mut checked = 0;
    for (file, labels) in labels() {
        let s = scan(&file);
        assert_eq!(s.lines.len(), labels.len(), "{file}: line count");
        for l in &labels {
            let got = &s.lines[(l.line - 1) as usize];
            let (want_class, want_src) = deliberate(&file, l.line).unwrap_or((&l.class, &l.src));
            let want_class = EventClass::from_name(want_class)
                .unwrap_or_else(|| panic!("unknown class {want_class}"));
            let got_src = got.src.clone().unwrap_or_default();
            if got.class != want_class || got_src != want_src {
                mismatches.push(format!(
                    "{file}:{}: want {} [{}], got {} [{}]",
                    l.line, l.class, l.src, got.class, got_src
                ));
            }
            checked += 1;
        }
    }
    assert!(checked > 500, "only {checked} labelled lines");
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

#[test]
fn class_counts_per_file_equal_the_labels() {
    for (file, labels) in labels() {
        let s = scan(&file);
        let mut want: BTreeMap<String, u64> = BTreeMap::new();
        for l in &labels {
            let class = deliberate(&file, l.line).map_or(l.class.as_str(), |d| d.0);
            *want.entry(class.to_owned()).or_default() += 1;
        }
        let mut got: BTreeMap<String, u64> = BTreeMap::new();
        for l in &s.lines {
            *got.entry(l.class.as_str().to_owned()).or_default() += 1;
        }
        assert_eq!(got, want, "{file}");
    }
}

#[derive(Debug)]
struct ExpectedRow {
    file: String,
    tool: String,
    scenario: String,
    source: String,
    events: String,
}

fn expected_rows() -> Vec<ExpectedRow> {
    let text = fs::read_to_string(fixtures().join("expected_alerts.tsv"))
        .expect("expected_alerts.tsv readable");
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|row| {
            let c: Vec<&str> = row.split('\t').collect();
            assert!(c.len() >= 5, "expected_alerts.tsv: short row {row}");
            ExpectedRow {
                file: c[0].to_owned(),
                tool: c[1].to_owned(),
                scenario: c[2].to_owned(),
                source: c[3].to_owned(),
                events: c[4].to_owned(),
            }
        })
        .collect()
}

/// CrowdSec scenario → our alert kind.
fn crowdsec_kind(scenario: &str) -> AlertKind {
    match scenario {
        "crowdsecurity/ssh-bf" => AlertKind::BruteForce,
        "crowdsecurity/ssh-bf_user-enum" => AlertKind::UserEnumeration,
        "lepresidente/ssh-bad-keyexchange-bf" => AlertKind::NegotiationScan,
        "crowdsecurity/ssh-cve-2024-6387" => AlertKind::PreauthProbe,
        "crowdsecurity/iptables-scan-multi_ports" => AlertKind::PortScan,
        "crowdsecurity/ssh-refused-conn" => AlertKind::ConnectionRefused,
        other => panic!("no mapping for CrowdSec scenario {other}"),
    }
}

/// Alerts the derived rows imply under the default rules: (kind, source).
fn derived_alerts(row: &ExpectedRow, s: &Scanned) -> Vec<(AlertKind, String)> {
    let first_ip = row
        .source
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_owned();
    match row.scenario.as_str() {
        // Attempts from one source above five within ten minutes; eight distinct unknown names
        // are also a user enumeration.
        "ssh password brute force per source" => {
            vec![
                (AlertKind::BruteForce, first_ip.clone()),
                (AlertKind::UserEnumeration, first_ip),
            ]
        }
        // Refused CONNECTs: the client of the preceding `New connection` line is only a guess,
        // so the brute-force alert names no source.
        "mqtt_not_authorised burst" => {
            let peers: BTreeSet<String> = s
                .lines
                .iter()
                .filter(|l| l.class == EventClass::MqttNotAuthorised)
                .filter_map(|l| l.peer.clone())
                .collect();
            assert_eq!(
                peers.len(),
                1,
                "{}: refused CONNECTs attributed to {peers:?}",
                row.file
            );
            vec![(AlertKind::BruteForce, String::new())]
        }
        // The takeover line has no address: the alert names the client id, not a source.
        s if s.contains("mqtt_client_id_conflict") => {
            vec![(AlertKind::ClientIdTakeover, String::new())]
        }
        // Four attempts, below the limit; scanner counts and TLS failures raise nothing.
        _ => vec![],
    }
}

/// Checks the per-source counts a derived row states.
fn check_derived_counts(row: &ExpectedRow, s: &Scanned) {
    let count = |class: Option<EventClass>, source: &str| -> u64 {
        s.lines
            .iter()
            .filter(|l| match class {
                Some(c) => l.class == c,
                None => l.class != EventClass::Other,
            })
            .filter(|l| source.is_empty() || l.peer.as_deref() == Some(source))
            .count() as u64
    };
    let sources: Vec<String> = row
        .source
        .split(" / ")
        .map(|s| s.split_whitespace().next().unwrap_or("").to_owned())
        .map(|s| {
            if s.parse::<std::net::IpAddr>().is_ok() {
                s
            } else {
                String::new()
            }
        })
        .collect();
    if row.events.contains(" + ") || row.events.split_whitespace().count() == 2 {
        // `8 invalid_user + 8 auth_failure` / `4 auth_failure`.
        for part in row.events.split(" + ") {
            let mut it = part.split_whitespace();
            let n: u64 = it.next().and_then(|n| n.parse().ok()).expect("count");
            let class = EventClass::from_name(it.next().expect("class")).expect("known class");
            assert_eq!(
                count(Some(class), &sources[0]),
                n,
                "{}: {} from {}",
                row.file,
                class,
                sources[0]
            );
        }
        return;
    }
    let numbers: Vec<u64> = row
        .events
        .split(" / ")
        .map(|n| n.trim().parse().expect("count"))
        .collect();
    let classes: Vec<Option<EventClass>> = row
        .scenario
        .split(" / ")
        .map(|c| EventClass::from_name(c.trim()))
        .collect();
    for (i, n) in numbers.iter().enumerate() {
        let class = if classes.len() == numbers.len() {
            classes[i]
        } else {
            classes.first().copied().flatten()
        };
        let class = class.or_else(|| {
            // `mqtt_not_authorised burst`: the class is the first word.
            row.scenario
                .split_whitespace()
                .next()
                .and_then(EventClass::from_name)
        });
        let source = if sources.len() == numbers.len() {
            &sources[i]
        } else {
            &sources[0]
        };
        assert_eq!(
            count(class, source),
            *n,
            "{}: {:?} from {source:?} ({})",
            row.file,
            class,
            row.scenario
        );
    }
}

#[test]
fn alerts_equal_the_expected_alerts() {
    let rows = expected_rows();
    let files: BTreeSet<String> = rows.iter().map(|r| r.file.clone()).collect();
    for file in files {
        let s = scan(&file);
        let mut want: Vec<(AlertKind, String, Option<u32>)> = Vec::new();
        for row in rows.iter().filter(|r| r.file == file) {
            match row.tool.as_str() {
                "crowdsec" => want.push((
                    crowdsec_kind(&row.scenario),
                    row.source.clone(),
                    Some(row.events.parse().expect("event count")),
                )),
                "derived" => {
                    check_derived_counts(row, &s);
                    want.extend(
                        derived_alerts(row, &s)
                            .into_iter()
                            .map(|(k, src)| (k, src, None)),
                    );
                }
                other => panic!("unknown tool {other}"),
            }
        }
        if rows.iter().any(|r| r.file == file && r.tool == "derived") {
            // A client id taken over on the local broker always raises an alert.
            for l in s
                .lines
                .iter()
                .filter(|l| l.class == EventClass::MqttClientIdConflict)
            {
                want.push((
                    AlertKind::ClientIdTakeover,
                    l.src.clone().unwrap_or_default(),
                    None,
                ));
            }
        }
        want.sort();
        want.dedup();
        let mut got: Vec<(AlertKind, String, Option<u32>)> = s
            .alerts
            .iter()
            .map(|a| {
                let exact = want
                    .iter()
                    .any(|w| w.0 == a.kind && w.1 == a.host && w.2.is_some());
                (a.kind, a.host.clone(), exact.then_some(a.events))
            })
            .collect();
        got.sort();
        assert_eq!(got, want, "{file}: alerts {:#?}", s.alerts);
    }
}
