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
//!   * per-feature tests ([`baseline`]), cheap enough for every sample: a robust overall
//!     baseline (exponentially weighted centre and deviation), the same by time of day,
//!     and the short-term volatility (mean absolute change) judged in log scale against
//!     its own long-term baseline, which reveals a frozen series, a change of variance and
//!     a burst of moderate changes none of which is extreme alone;
//!   * several k-means models (linfa) over windows of differenced, lagged, standardized
//!     features ([`kmeans`]), trained on a rolling history and retrained off the scoring
//!     path ([`Detector::train_snapshot`] → [`TrainingSet::fit`] → [`Detector::install`]);
//!   * calibrators ([`calibrate`]) that turn each raw value into a tail probability, and
//!     a combiner that turns those into one score;
//!   * an alarm stage that judges the evidence over time: the evidence of every sample is
//!     kept with the history, and a candidate alarm whose evidence the series already
//!     produced at this time of day on earlier days is a daily repeat and fades; a value
//!     beyond the whole range its feature has taken, by a margin, alarms at once
//!     ([`baseline::Range`]); one event raises one alarm (refractory period).
//! * [`SetNovelty`] — flags discrete items (ports, addresses, process names) never seen
//!   during a baseline period, with bounded memory.
//!
//! # How it is judged
//! The defaults are fixed on the NAB development split by a cross-category protocol
//! (`detector/nab_cv.py`: thresholds chosen on two category groups, scored on the third,
//! with the threshold moved by ±20 % to check that the score is flat around it) and on
//! randomised synthetic corpora of other kinds of series (`detector/nab_lab.py`: server
//! metrics, hourly prices, bursty counts, irregular gauges), scored at the development
//! thresholds. Scores on unseen data are lower than in-sample; see the README.
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
//! 30 features the learned state is about 835 KiB ([`Detector::state_bytes`]; a CBOR
//! snapshot is at most about that size, smaller for compressible data): the rolling
//! history of 2168 samples (values, timestamps, evidence) is 555 KiB, the per-feature
//! baselines and their calibrators (overall, time of day, volatility) about 230 KiB,
//! three k-means models about 45 KiB. It grows linearly with the number of features and
//! with `train_window`.
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
// `unwrap` only in tests: elsewhere a failure is handled, or `expect` says why it cannot happen.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

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
