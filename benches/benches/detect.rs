//! Local Detect: evaluating the default profile on one collection tick, with a learned
//! baseline (target ≤ 100 µs). The tick carries every metric the default profile reads, the
//! destination and per-name CPU sets included.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use edgewarden::config::DetectConfig;
use edgewarden::detect::{default_profile, Engine};
use edgewarden::snapshot::{ListenPort, MetricValue, NetDelta, Snapshot, TcpConn};

const TICK_MS: u64 = 10_000;

/// A busy gateway's tick: `ports` listening sockets, `conns` established connections, a few
/// dozen process names.
fn gateway_tick(seq: u64, ports: usize, conns: usize) -> Snapshot {
    let mut rng = fastrand::Rng::with_seed(seq);
    let listen: Vec<ListenPort> = (0..ports)
        .map(|i| ListenPort {
            port: 1000 + i as u16,
            addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            interface: None,
            process: Some(format!("svc{i}")),
        })
        .collect();
    let established: Vec<TcpConn> = (0..conns)
        .map(|i| TcpConn {
            local: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 40_000 + i as u16),
            remote: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, (i % 20) as u8)), 443),
            interface: Some("eth0".into()),
        })
        .collect();
    let mut s = Snapshot {
        seq,
        at_ms: 1_767_225_600_000 + seq * TICK_MS,
        interval_ms: TICK_MS,
        net: Some(NetDelta {
            bytes_in: 40_000 + rng.u64(0..5_000),
            bytes_out: 20_000 + rng.u64(0..5_000),
            packets_in: 300 + rng.u64(0..40),
            packets_out: 200 + rng.u64(0..40),
        }),
        tcp_listen: Some(listen.clone()),
        udp_listen: Some(listen[..ports / 2].to_vec()),
        established: Some(established),
        ..Snapshot::default()
    };
    let num = |v: f64| MetricValue::Number(v);
    for (k, v) in [
        ("cpu_usage", num(5.0 + rng.f64() * 3.0)),
        ("process_count", num(140.0 + rng.u64(0..3) as f64)),
        ("tcp_active_opens", num(rng.u64(0..4) as f64)),
        ("tcp_passive_opens", num(rng.u64(0..2) as f64)),
        ("tcp_attempt_fails", num(0.0)),
        ("tcp_out_rsts", num(rng.u64(0..2) as f64)),
        ("udp_no_ports", num(0.0)),
        ("udp_out_datagrams", num(rng.u64(0..20) as f64)),
        ("tcp_in_segs", num(300.0 + rng.u64(0..40) as f64)),
        ("tcp_out_segs", num(200.0 + rng.u64(0..40) as f64)),
        ("raw_packets_out", num(0.0)),
    ] {
        s.custom.insert(k.into(), v);
    }
    let names = |n: usize, p: &str| -> Vec<String> {
        (0..n)
            .map(|i| format!("{p}{}", (i as u64 + seq) % 40))
            .collect()
    };
    s.custom.insert(
        "top_cpu_processes".into(),
        MetricValue::StringList(names(5, "worker")),
    );
    s.custom.insert(
        "new_process_names".into(),
        MetricValue::StringList(names(3, "job")),
    );
    let endpoints: Vec<String> = (0..conns.min(20))
        .map(|i| format!("198.51.100.{i}:443"))
        .collect();
    s.custom.insert(
        "destination_endpoints".into(),
        MetricValue::StringList(endpoints.clone()),
    );
    s.custom.insert(
        "recurring_destinations".into(),
        MetricValue::StringList(endpoints[..endpoints.len() / 2].to_vec()),
    );
    let levels: Vec<String> = (0..15)
        .flat_map(|i| {
            let n = format!("svc{i}");
            [format!("{n}@5"), format!("{n}@10")]
        })
        .collect();
    s.custom
        .insert("process_cpu_levels".into(), MetricValue::StringList(levels));
    s
}

fn bench_detect(c: &mut Criterion) {
    let cfg = DetectConfig {
        enabled: true,
        profile: None,
        learning_period: Duration::from_secs(3600),
        violations_topic: "edgewarden/{thing}/violations".into(),
    };
    let mut group = c.benchmark_group("detect_default_profile_tick");
    for (ports, conns) in [(8usize, 10usize), (40, 50)] {
        let mut engine = Engine::new(default_profile(), &cfg, "bench-gw", None);
        // Learn the baseline: two hours of ticks, fits included.
        let mut seq = 0;
        for _ in 0..720 {
            seq += 1;
            engine.evaluate(&gateway_tick(seq, ports, conns));
            engine.train_inline();
        }
        let ticks: Vec<Snapshot> = (0..64)
            .map(|i| gateway_tick(seq + 1 + i, ports, conns))
            .collect();
        let mut k = 0u64;
        let id = BenchmarkId::new("evaluate", format!("{ports}ports_{conns}conns"));
        group.bench_function(id, |b| {
            b.iter_batched(
                || {
                    let mut s = ticks[(k % 64) as usize].clone();
                    k += 1;
                    s.seq = seq + k;
                    s.at_ms = 1_767_225_600_000 + s.seq * TICK_MS;
                    s
                },
                |s| std::hint::black_box(engine.evaluate(&s)),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(4));
    targets = bench_detect
}
criterion_main!(benches);
