//! Detector costs: scoring one sample of 30 features, and retraining the k-means models
//! on six hours of 10-second samples (2160 samples × 30 features).
//!
//! `cargo bench -p benches --bench detector`

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use edgewarden_detector::{Detector, DetectorParams};

const FEATURES: usize = 30;
const STEP_MS: u64 = 10_000;
/// Six hours of 10-second samples.
const SIX_HOURS: usize = 6 * 360;

/// Deterministic synthetic metrics: a daily cycle per feature plus pseudo-random noise.
fn sample(i: usize, out: &mut [f64]) {
    let day = (i as f64 * STEP_MS as f64 / 86_400_000.0 * std::f64::consts::TAU).sin();
    let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    for (j, v) in out.iter_mut().enumerate() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let noise = (x % 10_000) as f64 / 10_000.0;
        *v = 100.0 * (j + 1) as f64 + 20.0 * day + 5.0 * noise;
    }
}

/// A detector that has seen `rows` samples and trained its models inline.
fn warmed_detector(rows: usize) -> Detector {
    let params = DetectorParams::with_features((0..FEATURES).map(|j| format!("metric_{j}")));
    let mut det = Detector::new(params).expect("default params are valid");
    let mut row = vec![0.0; FEATURES];
    for i in 0..rows {
        sample(i, &mut row);
        det.observe_and_retrain(i as u64 * STEP_MS, &row);
    }
    det
}

fn scoring(c: &mut Criterion) {
    let warm = 3 * SIX_HOURS;
    let mut det = warmed_detector(warm);
    assert!(det.n_models() > 0 && !det.is_learning());
    // Inputs are built outside the timed closure.
    let rows: Vec<Vec<f64>> = (0..4096)
        .map(|i| {
            let mut r = vec![0.0; FEATURES];
            sample(warm + i, &mut r);
            r
        })
        .collect();
    let mut i = 0usize;
    let mut group = c.benchmark_group("score");
    let id = format!("{FEATURES}_features/{}_models", det.n_models());
    group.bench_function(BenchmarkId::new("observe", id), |b| {
        b.iter(|| {
            let row = &rows[i % rows.len()];
            let v = det.observe((warm + i) as u64 * STEP_MS, black_box(row));
            i += 1;
            black_box(v)
        })
    });
    group.finish();
}

fn retraining(c: &mut Criterion) {
    let mut det = warmed_detector(SIX_HOURS + 64);
    let mut group = c.benchmark_group("retrain");
    group.sample_size(20);
    let id = format!("{SIX_HOURS}_samples/{FEATURES}_features");
    group.bench_function(BenchmarkId::new("snapshot", &id), |b| {
        b.iter(|| black_box(det.train_snapshot()))
    });
    let set = det.train_snapshot();
    group.bench_function(BenchmarkId::new("fit", &id), |b| {
        b.iter(|| black_box(set.fit().expect("training succeeds")))
    });
    group.finish();
}

criterion_group!(benches, scoring, retraining);
criterion_main!(benches);
