//! Streaming anomaly detection for gateway metrics.
//!
//! The crate learns what normal looks like for a set of numeric features on the device
//! itself and scores every new sample in microseconds, with an explanation. It is a pure
//! library: no I/O, no threads, no logging.
//!
//! # Pieces
//! * [`Detector`] — the multivariate streaming detector. `observe(timestamp_ms, &values)`
//!   returns a [`Verdict`]: a calibrated score in [0, 1], an alarm flag and the top
//!   contributing features. Internally:
//!   * robust per-feature baselines ([`baseline`]), cheap enough for every sample: an
//!     exponentially weighted centre and deviation, the same by time of day, and a
//!     short-term mean judged against its own long-term distribution (level shifts and
//!     drifts smaller than the sample noise);
//!   * several k-means models (linfa) over windows of differenced, lagged, standardized
//!     features ([`kmeans`]), trained on a rolling history and retrained off the scoring
//!     path ([`Detector::train_snapshot`] → [`TrainingSet::fit`] → [`Detector::install`]);
//!   * calibrators ([`calibrate`]) that turn each raw value into a tail probability, and
//!     a combiner that turns those into one score.
//! * [`SetNovelty`] — flags discrete items (ports, addresses, process names) never seen
//!   during a baseline period, with bounded memory.
//!
//! # Example
//! ```
//! use edgewarden_detector::{Detector, DetectorParams};
//!
//! let mut det = Detector::new(DetectorParams::with_features(["cpu", "rx_bytes"]))?;
//! for t in 0..600u64 {
//!     let v = det.observe(t * 10_000, &[0.5 + 0.01 * (t % 7) as f64, 1e4]);
//!     assert!((0.0..=1.0).contains(&v.score));
//!     if det.needs_retrain() {
//!         // On a device, run `fit` on a worker thread.
//!         let set = det.train_snapshot();
//!         det.install(set.fit()?)?;
//!     }
//! }
//! assert!(!det.is_learning());
//! let spike = det.observe(600 * 10_000, &[0.5, 9e6]);
//! assert!(spike.anomalous);
//! assert_eq!(det.feature_names()[spike.top()[0].feature], "rx_bytes");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Persistence and memory
//! [`Detector`] and [`SetNovelty`] derive serde `Serialize`/`Deserialize` (store them with
//! `serde_json` or `ciborium`); a restored detector behaves exactly like the original.
//! (With `serde_json`, enable its `float_roundtrip` feature so floats parse back bit for
//! bit; CBOR is exact and about half the size.)
//!
//! Memory is allocated at construction and stays fixed. With the default parameters and
//! 30 features the learned state is about 870 KiB ([`Detector::state_bytes`]; a CBOR
//! snapshot is at most about that size, smaller for compressible data): the rolling
//! history of 2160 samples is 525 KiB, the per-feature baselines and their calibrators
//! (overall, time of day, short-term level) about 290 KiB, three k-means models about
//! 45 KiB. It grows
//! linearly with the number of features and with `train_window`.
//!
//! # Cost
//! Scoring one sample of 30 features takes a few microseconds and allocates nothing;
//! fitting a model on 2160 samples of 30 features takes about 20 ms (see the criterion
//! benches in `benches/benches/detector.rs`).
//!
//! # Retraining off the scoring path
//! ```
//! # use edgewarden_detector::{Detector, DetectorParams};
//! # let mut det = Detector::new(DetectorParams::default())?;
//! # for t in 0..400u64 { det.observe(t * 1000, &[(t % 10) as f64]); }
//! if det.needs_retrain() {
//!     let set = det.train_snapshot();                  // cheap copy, under the lock
//!     let handle = std::thread::spawn(move || set.fit()); // CPU-bound, elsewhere
//!     let model = handle.join().expect("fit thread")?;
//!     det.install(model)?;                             // the next sample uses it
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod baseline;
pub mod calibrate;
mod detector;
mod history;
pub mod kmeans;
pub mod novelty;
pub mod params;

pub use detector::{
    Contribution, Detector, SkipCounts, SkipReason, Status, Verdict, MAX_ABS_VALUE,
};
pub use kmeans::{LagModel, TrainError, TrainingSet};
pub use novelty::{Novelty, SetNovelty, SetNoveltyParams, SetNoveltyParamsError};
pub use params::{DetectorParams, DetectorValidParams, ParamsError, MAX_FEATURES, MAX_TOP};
