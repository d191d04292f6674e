//! edgewarden: an on-device security agent for Linux IoT gateways.
//!
//! Data flow, one tick every `[collect] interval`:
//!
//! 1. `collect` samples the kernel (/proc, netlink sock_diag) into a [`snapshot::Snapshot`];
//!    `logs` adds the interval's security events from the journal and log files.
//! 2. `detect` evaluates the security profile (rule, statistical and ML behaviours) on the
//!    snapshot and emits violations at once.
//! 3. `report` folds a report interval's snapshots into one Device Defender metrics report.
//! 4. Reports and violations go through the durable `spool` to the `transport` (MQTT with mutual
//!    TLS), or, with no transport configured, to the local outbox.
#![forbid(unsafe_code)]
// `unwrap` only in tests: elsewhere a failure is handled, or `expect` says why it cannot happen.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod audit;
pub mod cli;
pub mod collect;
pub mod config;
pub mod detect;
pub mod durable;
#[doc(hidden)]
pub mod fuzzing;
pub mod hash;
pub mod logs;
pub mod metrics;
pub mod notify;
pub mod outbox;
pub mod pipeline;
pub mod remediate;
pub mod report;
pub mod shutdown;
pub mod snapshot;
pub mod spool;
pub mod state_dir;
pub mod telemetry;
pub mod transport;
pub mod units;
