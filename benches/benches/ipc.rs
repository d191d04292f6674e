//! Greengrass IPC frames: encoding a `PublishToIoTCore` request carrying a metrics report
//! (payload in base64 inside the request JSON, as the transport builds it) and decoding frames
//! through the incremental decoder, for a small (1 KiB) and a large (8 KiB) report.
//!
//! `cargo bench -j2 -p benches --bench ipc`

use base64::Engine as _;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use edgewarden::transport::greengrass::frame::{Decoder, Frame, DEFAULT_MAX_FRAME_LEN};

/// A request as the transport sends it: the report is base64 inside the JSON.
fn publish_request(report_len: usize) -> Frame {
    let mut rng = fastrand::Rng::with_seed(7);
    let report: Vec<u8> = (0..report_len).map(|_| rng.u8(32..127)).collect();
    let body = serde_json::json!({
        "topicName": "$aws/things/gw-0042/defender/metrics/json",
        "qos": "1",
        "payload": base64::engine::general_purpose::STANDARD.encode(&report),
    });
    Frame::request(
        17,
        "PublishToIoTCore",
        serde_json::to_vec(&body).expect("JSON"),
    )
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("ipc_frame");
    for len in [1024usize, 8192] {
        let frame = publish_request(len);
        let bytes = frame.encode(DEFAULT_MAX_FRAME_LEN).expect("encodes");
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_with_input(BenchmarkId::new("encode", len), &frame, |b, f| {
            b.iter(|| black_box(f.encode(DEFAULT_MAX_FRAME_LEN).expect("encodes")))
        });
        g.bench_with_input(BenchmarkId::new("decode", len), &bytes, |b, bytes| {
            b.iter(|| {
                let mut d = Decoder::new(DEFAULT_MAX_FRAME_LEN);
                d.push(bytes);
                black_box(d.next_frame().expect("decodes").expect("whole"))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
