//! Device Defender report: folding a report interval and encoding a report with 50 listening
//! ports (TCP and UDP) and 50 connections in each format.
//!
//! `cargo bench -j2 -p benches --bench report`

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use edgewarden::config::{ReportConfig, ReportFormat};
use edgewarden::metrics;
use edgewarden::report::{encode, Aggregator, MetricsReport};
use edgewarden::snapshot::{ListenPort, MetricValue, NetDelta, Snapshot, TcpConn};

const PORTS: u16 = 50;
const CONNECTIONS: u16 = 50;

fn config() -> ReportConfig {
    ReportConfig {
        interval: Duration::from_secs(300),
        format: ReportFormat::Json,
        max_ports: 50,
        max_connections: 50,
        warm_up: Duration::from_secs(10),
    }
}

/// One tick of a busy gateway: 50 TCP + 50 UDP listeners, 50 connections (half IPv6), the
/// process and kernel custom metrics.
fn snapshot(seq: u64) -> Snapshot {
    let listen = |i: u16| ListenPort {
        port: 1000 + i * 7,
        addr: if i.is_multiple_of(3) {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::new(192, 168, 1, 20))
        },
        interface: (!i.is_multiple_of(3)).then(|| "eth0".to_owned()),
        process: Some(format!("daemon{i}")),
    };
    let conn = |i: u16| TcpConn {
        local: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 20)), 40_000 + i),
        remote: if i.is_multiple_of(2) {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, i as u8)), 443)
        } else {
            SocketAddr::new(
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i)),
                8883,
            )
        },
        interface: Some("eth0".to_owned()),
    };
    let mut s = Snapshot {
        seq,
        at_ms: 1_767_225_600_000 + seq * 10_000,
        interval_ms: 10_000,
        net: Some(NetDelta {
            bytes_in: 48_213,
            bytes_out: 19_377,
            packets_in: 311,
            packets_out: 207,
        }),
        tcp_listen: Some((0..PORTS).map(listen).collect()),
        udp_listen: Some((0..PORTS).map(listen).collect()),
        established: Some((0..CONNECTIONS).map(conn).collect()),
        ..Snapshot::default()
    };
    for d in metrics::CUSTOM_METRICS {
        let v = match d.cloud_type {
            metrics::CloudType::Number => MetricValue::Number(seq as f64 * 1.25),
            metrics::CloudType::StringList => {
                MetricValue::StringList((0..5).map(|i| format!("proc-{seq}-{i}")).collect())
            }
            metrics::CloudType::IpAddressList => {
                MetricValue::IpList(vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 53))])
            }
        };
        s.custom.insert(d.name.to_owned(), v);
    }
    s
}

fn report() -> MetricsReport {
    let mut a = Aggregator::new(&config());
    a.add(&snapshot(2));
    a.take(1_767_225_600_123)
}

fn bench_encode(c: &mut Criterion) {
    let r = report();
    let mut g = c.benchmark_group("report_encode_50_ports_50_conns");
    for format in [
        ReportFormat::Json,
        ReportFormat::JsonShort,
        ReportFormat::Cbor,
    ] {
        let size = encode(&r, format).len();
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(
            BenchmarkId::new(format.as_str(), format!("{size}B")),
            &format,
            |b, f| b.iter(|| encode(black_box(&r), *f)),
        );
    }
    g.finish();
}

fn bench_fold(c: &mut Criterion) {
    // A 300 s report interval of 10 s ticks.
    let snaps: Vec<Snapshot> = (1..=30).map(snapshot).collect();
    let cfg = config();
    c.bench_function("report_fold_30_ticks_and_take", |b| {
        b.iter(|| {
            let mut a = Aggregator::new(&cfg);
            for s in &snaps {
                a.add(black_box(s));
            }
            a.take(1_767_225_600_123)
        })
    });
    let one = snapshot(2);
    let mut a = Aggregator::new(&cfg);
    c.bench_function("report_add_one_tick", |b| b.iter(|| a.add(black_box(&one))));
}

criterion_group!(benches, bench_encode, bench_fold);
criterion_main!(benches);
