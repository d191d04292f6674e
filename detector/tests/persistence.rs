//! Persistence: a detector restored from JSON or CBOR continues exactly like the
//! original, and a state that does not fit its parameters is refused.

use edgewarden_detector::{Detector, DetectorParams};

fn signal(i: u64, j: usize) -> f64 {
    let day = (i as f64 / 288.0 * std::f64::consts::TAU).sin();
    let noise = ((i * 7919 + j as u64 * 104_729) % 1000) as f64 / 1000.0;
    10.0 * (j + 1) as f64 + 5.0 * day + noise
}

fn trained_detector(n_features: usize, rows: u64) -> Detector {
    let params = DetectorParams {
        // Cheaper training than the defaults; the state layout is the same.
        max_train_vectors: 300,
        max_iterations: 10,
        ..DetectorParams::with_features((0..n_features).map(|j| format!("m{j}")))
    };
    let mut det = Detector::new(params).expect("valid params");
    for i in 0..rows {
        let values: Vec<f64> = (0..n_features).map(|j| signal(i, j)).collect();
        det.observe_and_retrain(i * 300_000, &values);
    }
    assert!(det.n_models() > 0, "the stream is long enough to train");
    det
}

fn continue_stream(det: &mut Detector, from: u64, n_features: usize) -> Vec<String> {
    (from..from + 800)
        .map(|i| {
            let mut values: Vec<f64> = (0..n_features).map(|j| signal(i, j)).collect();
            if i % 211 == 0 {
                values[0] += 40.0;
            }
            // Debug formatting keeps every bit of the floats.
            format!("{:?}", det.observe_and_retrain(i * 300_000, &values))
        })
        .collect()
}

#[test]
fn json_round_trip_restores_identical_behaviour() {
    let mut original = trained_detector(3, 1500);
    let json = serde_json::to_string(&original).expect("serialize");
    let mut restored: Detector = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(restored, original);
    assert_eq!(
        continue_stream(&mut restored, 1500, 3),
        continue_stream(&mut original, 1500, 3)
    );
    assert_eq!(restored, original);
}

#[test]
fn cbor_round_trip_restores_identical_behaviour() {
    let mut original = trained_detector(2, 1200);
    let mut bytes = Vec::new();
    ciborium::into_writer(&original, &mut bytes).expect("serialize");
    let mut restored: Detector = ciborium::from_reader(bytes.as_slice()).expect("deserialize");
    assert_eq!(
        continue_stream(&mut restored, 1200, 2),
        continue_stream(&mut original, 1200, 2)
    );
}

#[test]
fn state_of_thirty_features_stays_under_one_mebibyte() {
    let det = trained_detector(30, 2600);
    assert!(det.state_bytes() < 1 << 20, "{} bytes", det.state_bytes());
    let mut bytes = Vec::new();
    ciborium::into_writer(&det, &mut bytes).expect("serialize");
    assert!(
        bytes.len() < 1 << 20,
        "CBOR snapshot is {} bytes",
        bytes.len()
    );
    eprintln!(
        "30 features: state_bytes {} B, CBOR snapshot {} B",
        det.state_bytes(),
        bytes.len()
    );
}

#[test]
fn state_that_does_not_fit_its_parameters_is_refused() {
    let det = trained_detector(2, 600);
    let mut value: serde_json::Value = serde_json::to_value(&det).expect("serialize");
    value["params"]["features"] = serde_json::json!(["only_one"]);
    let err = serde_json::from_value::<Detector>(value).expect_err("shape mismatch");
    assert!(err.to_string().contains("features"), "{err}");

    let mut value: serde_json::Value = serde_json::to_value(&det).expect("serialize");
    value["params"]["threshold"] = serde_json::json!(7.0);
    let err = serde_json::from_value::<Detector>(value).expect_err("invalid params");
    assert!(err.to_string().contains("threshold"), "{err}");
}
