//! Log line classification throughput on the sshd fixtures (framing + classification, the work
//! done for every line read), the full per-line analysis (context, provenance and tracker
//! included), and framing + classification of `journalctl -o json` entries (the journal
//! fixture). Inputs are loaded outside the timed closure.
//!
//! `cargo bench -j2 -p benches --bench logs`

use std::path::PathBuf;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use edgewarden::logs::analyze::{Analyzer, Stream};
use edgewarden::logs::{classify, frame, Rules};

const SSHD_FIXTURES: &[&str] = &[
    "fail2ban/sshd.log",
    "crowdsec/sshd-logs.log",
    "crowdsec/ssh-bf.log",
    "crowdsec/sshd-invalid-bf.log",
    "crowdsec/sshd_banner_exchange.log",
    "crowdsec/sshd-bad-keyexchange-bf.log",
    "crowdsec/ssh-timeout.log",
    "wazuh/sshd-ruletests.log",
];

fn fixture_dir() -> PathBuf {
    std::env::var("EDGEWARDEN_LOG_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/logs")
        })
}

fn lines_of(files: &[&str]) -> Vec<Vec<u8>> {
    let dir = fixture_dir();
    let mut lines = Vec::new();
    for f in files {
        let path = dir.join(f);
        let text = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        lines.extend(
            text.split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(<[u8]>::to_vec),
        );
    }
    lines
}

fn bench(c: &mut Criterion) {
    let lines = lines_of(SSHD_FIXTURES);
    let mut g = c.benchmark_group("logs");
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.bench_with_input(
        BenchmarkId::new("classify_sshd_lines", lines.len()),
        &lines,
        |b, lines| {
            b.iter(|| {
                let mut n = 0usize;
                for l in lines {
                    let f = frame(l);
                    let c = classify(&f.msg);
                    n += c.class as usize + usize::from(c.addr.is_some());
                }
                black_box(n)
            })
        },
    );
    g.bench_with_input(
        BenchmarkId::new("analyze_sshd_lines", lines.len()),
        &lines,
        |b, lines| {
            b.iter(|| {
                let mut a = Analyzer::new(Rules::default());
                let mut s = Stream::new();
                for l in lines {
                    black_box(a.line(&mut s, l, 1_800_000_000_000));
                }
                black_box(a.take())
            })
        },
    );
    let journal = lines_of(&["journal/gateway-sshd-mosquitto.jsonl"]);
    g.throughput(Throughput::Elements(journal.len() as u64));
    g.bench_with_input(
        BenchmarkId::new("classify_journal_json", journal.len()),
        &journal,
        |b, lines| {
            b.iter(|| {
                let mut n = 0usize;
                for l in lines {
                    let f = frame(l);
                    let c = classify(&f.msg);
                    n += c.class as usize + usize::from(f.trusted.is_some());
                }
                black_box(n)
            })
        },
    );
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
