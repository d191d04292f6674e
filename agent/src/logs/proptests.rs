//! Property tests: framing, classification, line splitting and analysis never panic, whatever
//! the bytes, and the classifier's address is always a slice of its input.

use proptest::prelude::*;

use super::analyze::{Analyzer, Stream};
use super::classify::classify;
use super::format::{frame, strip_inner_prefix};
use super::lines::{LineSplitter, Piece};
use super::tracker::Rules;

/// Pieces of log lines (daemon phrases, addresses, framing).
fn loggy_word() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "Failed password for ",
        "invalid user ",
        " from ",
        " port ",
        " ssh2",
        ": ",
        "[preauth]",
        "Connection closed by ",
        "Disconnected from ",
        "Invalid user ",
        "User ",
        " not allowed because ",
        "pam_unix(sshd:auth): authentication failure; ",
        "rhost=",
        " user=",
        "Client ",
        " disconnected, not authorised.",
        "New connection from ",
        "OpenSSL Error[0]: ",
        "Unable to negotiate with ",
        "refused connect from ",
        "Exit before auth from <",
        ">",
        "1.2.3.4",
        "::ffff:10.0.0.1",
        "fe80::1:22",
        "example.com",
        "SRC=",
        " DPT=",
        "IN=",
        "Jan  1 00:00:00 h sshd[1]: ",
        "<38>1 2019-07-08T17:40:16-04:00 h sshd 1 - [a b=\"]\"] ",
        "2015-04-16T18:02:50.3+00:00 host sshd[2]: ",
        "1795801273: ",
        "{\"MESSAGE\":\"",
        "\"}",
        "[825] Jul 10 23:53:52 ",
        "[ID 800047 auth.info] ",
        "error: ",
        "fatal: ",
        "\u{0}",
        "\u{ff}",
        " ",
        "(",
        ")",
        "'",
        ":",
        "message repeated ",
        "3 times: [ ",
        " times: [",
        "]",
    ])
}

/// Bytes that look like log lines often enough to reach deep branches.
fn loggy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        prop::collection::vec(loggy_word(), 0..24).prop_map(|w| w.concat().into_bytes()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn framing_and_classification_never_panic(line in loggy()) {
        let f = frame(&line);
        let c = classify(&f.msg);
        if let Some(addr) = c.addr {
            prop_assert!(!addr.is_empty());
        }
        let _ = classify(&line);
        let _ = strip_inner_prefix(&line);
    }

    #[test]
    fn classifier_addresses_point_into_the_message(line in loggy()) {
        let c = classify(&line);
        if let Some(addr) = c.addr {
            let base = line.as_ptr() as usize;
            let a = addr.as_ptr() as usize;
            prop_assert!(a >= base && a + addr.len() <= base + line.len());
        }
    }

    #[test]
    fn analysis_of_any_stream_never_panics(lines in prop::collection::vec(loggy(), 0..40)) {
        let mut a = Analyzer::new(Rules { max_sources: 16, ..Rules::default() });
        let mut s = Stream::new();
        for l in &lines {
            let _ = a.line(&mut s, l, 1_800_000_000_000);
        }
        let acc = a.take();
        prop_assert_eq!(acc.lines, lines.len() as u64);
        prop_assert_eq!(acc.counts.total(), lines.len() as u64 + acc.repeated);
    }

    #[test]
    fn the_log_line_fuzz_target_holds_on_any_stream(lines in prop::collection::vec(loggy(), 0..20)) {
        crate::fuzzing::log_line(&lines.join(&b'\n'));
    }

    #[test]
    fn a_repeated_message_counts_as_that_many_lines(
        words in prop::collection::vec(loggy_word(), 0..16),
        program in prop::sample::select(vec!["sshd", "mosquitto", "kernel", "myapp"]),
        n in 1u32..40,
    ) {
        let inner = words.concat();
        let inner = inner.trim_start_matches([' ', '\t']);
        prop_assume!(!inner.starts_with("message repeated "));
        let head = format!("Mar  1 10:00:00 gw {program}[41]: ");
        let run = |lines: &[String]| {
            let mut a = Analyzer::new(Rules { max_sources: 16, ..Rules::default() });
            let mut s = Stream::new();
            for l in lines {
                let _ = a.line(&mut s, l.as_bytes(), 1_800_000_000_000);
            }
            let acc = a.take();
            let alerts: Vec<_> = acc.alerts.iter().map(|a| (a.kind, a.events, a.host.clone())).collect();
            (acc.counts, acc.auth_attempts, acc.sources, acc.forged, alerts)
        };
        let one_by_one: Vec<String> = (0..=n).map(|_| format!("{head}{inner}")).collect();
        let reduced = vec![
            format!("{head}{inner}"),
            format!("{head}message repeated {n} times: [ {inner}]"),
        ];
        prop_assert_eq!(run(&reduced), run(&one_by_one), "{}", inner);
    }

    #[test]
    fn splitter_delivers_every_line_of_any_chunking(
        data in prop::collection::vec(prop_oneof![Just(b'\n'), any::<u8>()], 0..400),
        cuts in prop::collection::vec(0usize..400, 0..8),
        cap in 1usize..64,
    ) {
        let mut want: Vec<Option<Vec<u8>>> = Vec::new();
        let mut parts: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
        if data.last() == Some(&b'\n') || data.is_empty() {
            parts.pop();
        }
        for p in parts {
            want.push(if p.len() > cap { None } else { Some(p.to_vec()) });
        }
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
        cuts.sort_unstable();
        let mut s = LineSplitter::with_cap(cap);
        let mut got: Vec<Option<Vec<u8>>> = Vec::new();
        let mut push = |p: Piece<'_>| got.push(match p {
            Piece::Line(l) => Some(l.to_vec()),
            Piece::Oversized => None,
        });
        let mut at = 0;
        for c in cuts {
            s.feed(&data[at..c], &mut push);
            at = c;
        }
        s.feed(&data[at..], &mut push);
        s.finish(&mut push);
        prop_assert_eq!(got, want);
    }
}

/// User names as an attacker would pick them: any text, often imitating the daemon's own words.
fn user_name() -> impl Strategy<Value = String> {
    let words = prop::sample::select(vec![
        "a",
        " from ",
        "10.9.9.9",
        " port ",
        "22",
        " ssh2",
        ": ",
        "RSA SHA256:x",
        " [preauth]",
        " user=",
        " rhost=",
        "ruser=",
        "invalid user ",
        "::1",
        " ",
        "x.example.com",
    ]);
    prop_oneof![
        any::<String>(),
        prop::collection::vec(words, 0..12).prop_map(|w| w.concat()),
    ]
}

fn address() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<std::net::Ipv4Addr>().prop_map(|a| a.to_string()),
        any::<std::net::Ipv6Addr>().prop_map(|a| a.to_string()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_user_name_leaves_the_failing_address(u in user_name(), b in address(), n in 1u16..) {
        let line = format!("Failed password for invalid user {u} from {b} port {n} ssh2");
        let c = classify(line.as_bytes());
        let want = b.strip_prefix("::ffff:").filter(|v| v.contains('.')).unwrap_or(&b);
        prop_assert_eq!(c.addr, Some(want.as_bytes()), "{}", line);
        prop_assert_eq!(c.invalid_user, Some(u.as_bytes()));
        let line = format!("Failed password for {u} from {b} port {n} ssh2");
        prop_assert_eq!(classify(line.as_bytes()).addr, Some(want.as_bytes()), "{}", line);
        let line = format!("Failed publickey for {u} from {b} port {n} ssh2: ED25519 SHA256:Zm9vYmFy");
        prop_assert_eq!(classify(line.as_bytes()).addr, Some(want.as_bytes()), "{}", line);
    }

    #[test]
    fn a_pam_user_name_never_names_another_address(u in user_name(), r in user_name(), b in address()) {
        let line = format!(
            "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser={r} rhost={b}  user={u}"
        );
        let c = classify(line.as_bytes());
        let want = b.strip_prefix("::ffff:").filter(|v| v.contains('.')).unwrap_or(&b);
        prop_assert!(c.addr.is_none() || c.addr == Some(want.as_bytes()), "{}", line);
    }
}

/// Journal entries as journalctl writes them: string fields (some of interest, some not), values
/// with escapes, byte arrays, several values for a field.
fn journal_entry() -> impl Strategy<Value = Vec<u8>> {
    let key = prop::sample::select(vec![
        "MESSAGE",
        "SYSLOG_IDENTIFIER",
        "_COMM",
        "_EXE",
        "_UID",
        "_TRANSPORT",
        "SYSLOG_PID",
        "_PID",
        "_HOSTNAME",
        "__REALTIME_TIMESTAMP",
        "__CURSOR",
        "PRIORITY",
        "_CMDLINE",
        "X",
    ]);
    let value = prop_oneof![
        any::<String>().prop_map(serde_json::Value::from),
        "[a-z0-9 /=.:-]{0,20}".prop_map(serde_json::Value::from),
        prop::collection::vec(any::<u8>(), 0..6).prop_map(serde_json::Value::from),
        prop::collection::vec("[a-z]{0,4}", 1..3).prop_map(serde_json::Value::from),
        Just(serde_json::Value::Null),
        any::<u32>().prop_map(serde_json::Value::from),
    ];
    prop::collection::vec((key, value), 0..10).prop_map(|fields| {
        let mut text = b"{".to_vec();
        for (i, (k, v)) in fields.iter().enumerate() {
            if i > 0 {
                text.extend_from_slice(b", ");
            }
            text.extend(serde_json::to_vec(k).unwrap());
            text.push(b':');
            text.extend(serde_json::to_vec(v).unwrap());
        }
        text.push(b'}');
        text
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn the_journal_fast_path_frames_as_the_json_parser_does(line in journal_entry()) {
        let (fast, parsed) = super::format::frame_journal_both_ways(&line);
        if let Some(fast) = fast {
            prop_assert_eq!(Some(fast), parsed, "{}", String::from_utf8_lossy(&line));
        }
    }
}

#[test]
fn the_log_line_fuzz_corpus_passes_the_fuzz_target() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/log_line");
    let mut seen = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        crate::fuzzing::log_line(&std::fs::read(e.unwrap().path()).unwrap());
        seen += 1;
    }
    assert!(seen >= 7);
}
