//! Detector invariants under arbitrary input: scores are finite and in [0, 1], bad
//! samples are skipped and counted, constant series never flag, runs are deterministic.

use edgewarden_detector::{Detector, DetectorParams, Status};
use proptest::prelude::*;

/// Small parameters so that models train within a short generated stream.
fn small_params(n_features: usize) -> DetectorParams {
    DetectorParams {
        features: (0..n_features).map(|i| format!("f{i}")).collect(),
        warmup_samples: 20,
        calibration_min_samples: 10,
        min_train_samples: 40,
        train_window: 120,
        max_train_vectors: 100,
        retrain_every: 30,
        clusters: 4,
        lags: 3,
        smoothing: 2,
        seasonal_bins: 12,
        ..DetectorParams::default()
    }
}

fn any_value() -> impl Strategy<Value = f64> {
    prop_oneof![
        6 => -1e3f64..1e3,
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => prop_oneof![Just(f64::MAX), Just(-f64::MAX), Just(1e300), Just(1e99), Just(-1e99)],
        1 => Just(0.0),
        1 => proptest::num::f64::ANY,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn scores_are_finite_and_in_unit_range_for_any_input(
        n_features in 1usize..4,
        rows in proptest::collection::vec(
            (0u64..5_000_000, proptest::collection::vec(any_value(), 0..5)),
            1..300,
        ),
    ) {
        let mut det = Detector::new(small_params(n_features)).expect("valid params");
        let mut t = 0u64;
        let mut skipped = 0u64;
        for (i, (dt, raw)) in rows.iter().enumerate() {
            // Mostly increasing timestamps, sometimes a step back.
            t = if i % 17 == 16 { t.saturating_sub(*dt) } else { t + dt };
            let values: Vec<f64> = (0..n_features).map(|j| raw.get(j).copied().unwrap_or(1.0)).collect();
            let values = if raw.len() == 4 { raw.clone() } else { values };
            let v = det.observe_and_retrain(t, &values);
            prop_assert!(v.score.is_finite() && (0.0..=1.0).contains(&v.score), "score {}", v.score);
            prop_assert!(v.baseline_score.is_finite() && (0.0..=1.0).contains(&v.baseline_score));
            prop_assert!(v.model_score.is_finite() && (0.0..=1.0).contains(&v.model_score));
            prop_assert!(v.top().iter().all(|c| c.feature < n_features && (0.0..=1.0).contains(&c.share)));
            if let Status::Skipped(_) = v.status {
                skipped += 1;
                prop_assert!(!v.anomalous && v.score == 0.0);
            }
            if v.anomalous {
                prop_assert!(v.status == Status::Armed && v.score >= v.threshold);
            }
        }
        prop_assert_eq!(det.skipped().total(), skipped);
        prop_assert_eq!(det.samples_seen() + skipped, rows.len() as u64);
    }

    #[test]
    fn constant_series_never_flag(
        n_features in 1usize..4,
        level in prop_oneof![-1e12f64..1e12, Just(0.0), Just(1e99)],
        len in 50usize..600,
        step_ms in 1u64..100_000,
    ) {
        let mut det = Detector::new(small_params(n_features)).expect("valid params");
        let values: Vec<f64> = (0..n_features).map(|j| level + j as f64).collect();
        for i in 0..len {
            let v = det.observe_and_retrain(i as u64 * step_ms, &values);
            prop_assert!(!v.anomalous, "row {i}: score {}", v.score);
            prop_assert!(v.score < 0.05, "row {i}: score {}", v.score);
        }
    }

    #[test]
    fn same_input_gives_same_verdicts(
        rows in proptest::collection::vec(-50.0f64..50.0, 100..400),
    ) {
        let run = || {
            let mut det = Detector::new(small_params(2)).expect("valid params");
            rows.iter()
                .enumerate()
                .map(|(i, &x)| det.observe_and_retrain(i as u64 * 60_000, &[x, (i % 10) as f64 * x]))
                .collect::<Vec<_>>()
        };
        prop_assert_eq!(run(), run());
    }
}

#[test]
fn bad_samples_are_skipped_with_a_counted_reason() {
    let mut det = Detector::new(small_params(2)).expect("valid params");
    det.observe(1_000, &[1.0, 2.0]);
    let cases = [
        (2_000, vec![1.0]),
        (2_000, vec![f64::NAN, 1.0]),
        (2_000, vec![1.0, f64::NEG_INFINITY]),
        (2_000, vec![1e101, 1.0]),
        (500, vec![1.0, 1.0]),
    ];
    for (t, values) in &cases {
        let v = det.observe(*t, values);
        assert!(matches!(v.status, Status::Skipped(_)), "{values:?}");
    }
    let s = det.skipped();
    assert_eq!(
        (s.wrong_length, s.non_finite, s.out_of_range, s.out_of_order),
        (1, 2, 1, 1)
    );
    assert_eq!(det.samples_seen(), 1);
    // Repeated timestamps are accepted.
    assert_eq!(det.observe(1_000, &[1.0, 2.0]).status, Status::Learning);
}

#[test]
fn learning_ends_after_the_warm_up() {
    let mut det = Detector::new(small_params(1)).expect("valid params");
    for i in 0..20 {
        assert!(det.is_learning());
        assert_eq!(
            det.observe(i * 1000, &[i as f64 % 3.0]).status,
            Status::Learning
        );
    }
    assert!(!det.is_learning());
    assert_eq!(det.observe(20_000, &[1.0]).status, Status::Armed);
}
