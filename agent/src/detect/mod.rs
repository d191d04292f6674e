//! Local Detect: Device Defender security profiles evaluated on the gateway, every collection
//! tick, with violations emitted at once.
//!
//! - [`profile`] parses and validates profiles in Device Defender's behaviour format
//!   ([`load_profile`], [`default_profile`]).
//! - [`metric`] maps behaviour metric names (`aws:all-bytes-out`, `aws:listening-tcp-ports`, every
//!   custom metric of [`crate::metrics`]) to [`crate::snapshot::Snapshot`] fields.
//! - [`eval`] holds the rules: operators, `durationSeconds` windows, consecutive datapoints,
//!   percentiles.
//! - [`ml`] holds the learned behaviours: a per-behaviour anomaly scorer and set novelty.
//! - [`engine`] runs a profile over snapshots ([`Engine`]); [`violation`] is the event shape.
//!
//! A *datapoint* is one tick's value of a behaviour's metric. Rule behaviours alarm from the
//! first tick; ML, novelty and statistical behaviours learn for `[detect] learning_period`
//! (default 1 h) of observed time first and stay silent meanwhile. The learned state is saved by
//! the caller ([`Engine::state`]) and restored at start, so a restart does not relearn.
//!
//! Per tick, the caller runs [`Engine::evaluate`] and forwards its events, then takes
//! [`Engine::training_jobs`], runs them on a worker thread ([`TrainingJob::run`]) and hands the
//! results back with [`Engine::install`]. To reload a profile, call [`load_profile`]. On error,
//! keep the running engine. On success, build `Engine::new(new, cfg, thing, Some(old.state()))`:
//! unchanged behaviours keep their baselines and alarms, and the next evaluation invalidates the
//! alarms of removed or changed ones.
//!
//! The default profile and its documentation, the profile format and the cloud-side setup are
//! described in `agent/src/detect/README.md`.

pub mod engine;
pub mod eval;
pub mod metric;
pub mod ml;
pub mod persist;
pub mod profile;
pub mod violation;

pub use engine::{
    ActiveAlarm, ActiveViolation, BehaviorKind, BehaviorState, BehaviorStatus, Engine, EngineState,
    EngineStatus, Phase, TrainedModel, TrainingJob, INVALIDATE_AFTER_MS,
};
pub use ml::ConfidenceLevel;
pub use profile::{
    load_profile, parse_profile, Behavior, Criteria, DefenderValue, Profile, ProfileError,
    ProfileIssue,
};
pub use violation::{ViolationEvent, ViolationEventType};

/// Alias kept for the event documentation.
pub const INVALIDATE_AFTER: std::time::Duration =
    std::time::Duration::from_millis(INVALIDATE_AFTER_MS);

/// Name of the file, in the state directory, holding [`EngineState`].
pub const STATE_FILE: &str = "detect.json";

/// The built-in profile's JSON.
pub const DEFAULT_PROFILE_JSON: &str = include_str!("default_profile.json");

/// The built-in profile, used when `[detect] profile` is not set.
pub fn default_profile() -> Profile {
    parse_profile(DEFAULT_PROFILE_JSON, "edgewarden-default")
        .expect("the embedded default profile is valid (checked by a unit test)")
}

#[cfg(test)]
mod tests;
