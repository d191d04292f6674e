//! Spool costs: one report's durable round trip (append + fsync + ack + fsync) and reopening a
//! full 16 MiB spool (recovery scan of every segment with checksums).
//!
//! `cargo bench -p benches --bench spool`. The spool lives in the system temp directory
//! (`TMPDIR` selects another file system, e.g. the SD card on a gateway).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use edgewarden::config::SpoolConfig;
use edgewarden::spool::Spool;

const TOPIC: &str = "$aws/things/gw-0042/defender/metrics/json";

fn cfg(max_bytes: u64) -> SpoolConfig {
    SpoolConfig {
        max_bytes,
        max_records: 1_000_000,
    }
}

/// Deterministic, incompressible-looking payload.
fn payload(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn append_fsync_ack(c: &mut Criterion) {
    let mut g = c.benchmark_group("spool_append_fsync_ack");
    for len in [1024usize, 5 * 1024] {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut spool = Spool::open(dir.path(), &cfg(16 * 1024 * 1024)).expect("open");
        let p = payload(len);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(BenchmarkId::from_parameter(len), &p, |b, p| {
            b.iter(|| {
                let id = spool.append(TOPIC, black_box(p)).expect("append");
                spool.ack(id).expect("ack");
            })
        });
    }
    g.finish();
}

fn append_fsync(c: &mut Criterion) {
    let mut g = c.benchmark_group("spool_append_fsync");
    let len = 5 * 1024usize;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut spool = Spool::open(dir.path(), &cfg(16 * 1024 * 1024)).expect("open");
    let p = payload(len);
    g.throughput(Throughput::Bytes(len as u64));
    g.bench_with_input(BenchmarkId::from_parameter(len), &p, |b, p| {
        // The spool is bounded: once full, each append also drops (and records) the oldest.
        b.iter(|| spool.append(TOPIC, black_box(p)).expect("append"))
    });
    g.finish();
}

fn reopen_full(c: &mut Criterion) {
    let mut g = c.benchmark_group("spool_reopen_full");
    g.sample_size(20);
    let max = 16 * 1024 * 1024u64;
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let mut spool = Spool::open(dir.path(), &cfg(max)).expect("open");
        let p = payload(5 * 1024);
        // Fill until the bound starts dropping: the spool is then as full as it gets.
        while spool.stats().dropped == 0 {
            spool.append(TOPIC, &p).expect("append");
        }
        let s = spool.stats();
        eprintln!(
            "full spool: {} records, {} bytes on disk",
            s.depth, s.disk_bytes
        );
    }
    g.bench_function(BenchmarkId::new("max_bytes", "16MiB"), |b| {
        b.iter(|| {
            let s = Spool::open(dir.path(), &cfg(max)).expect("reopen");
            black_box(s.len())
        })
    });
    g.finish();
}

criterion_group!(benches, append_fsync_ack, append_fsync, reopen_full);
criterion_main!(benches);
