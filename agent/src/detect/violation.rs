//! Violation events, in Device Defender's event shape plus our `score` and `explanation`.
//!
//! ```json
//! { "violationId": "8c0e1d…", "thingName": "gw-0042", "securityProfileName": "edgewarden-default",
//!   "behavior": { "name": "new-listening-tcp-port", "metric": "aws:listening-tcp-ports",
//!                 "criteria": { "mlDetectionConfig": { "confidenceLevel": "LOW" } } },
//!   "metricValue": { "ports": [22, 4444] }, "violationEventType": "in-alarm",
//!   "violationEventTime": 1767225600123, "score": 0.5,
//!   "explanation": "aws:listening-tcp-ports: never seen in the baseline: 4444" }
//! ```

use serde::{Deserialize, Serialize};

use super::ml::ConfidenceLevel;
use super::profile::{Behavior, DefenderValue};

/// `violationEventType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ViolationEventType {
    /// The behaviour went into alarm.
    InAlarm,
    /// The alarm cleared: the metric is back to normal.
    AlarmCleared,
    /// The alarm ended without the metric clearing it: the behaviour was removed or changed, or
    /// its metric stopped producing datapoints for longer than [`super::INVALIDATE_AFTER`].
    AlarmInvalidated,
}

impl ViolationEventType {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            ViolationEventType::InAlarm => "in-alarm",
            ViolationEventType::AlarmCleared => "alarm-cleared",
            ViolationEventType::AlarmInvalidated => "alarm-invalidated",
        }
    }
}

/// `violationEventAdditionalInfo` of ML behaviours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdditionalInfo {
    /// The behaviour's confidence level.
    pub confidence_level: ConfidenceLevel,
}

/// One violation event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ViolationEvent {
    /// Shared by the `in-alarm` event and the event that ends it.
    pub violation_id: String,
    /// The thing.
    pub thing_name: String,
    /// The profile.
    pub security_profile_name: String,
    /// The behaviour, as written in the profile.
    pub behavior: Behavior,
    /// The datapoint that caused the event (absent on invalidation without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_value: Option<DefenderValue>,
    /// ML behaviours: their confidence level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub violation_event_additional_info: Option<AdditionalInfo>,
    /// `in-alarm`, `alarm-cleared` or `alarm-invalidated`.
    pub violation_event_type: ViolationEventType,
    /// When, in ms since the UNIX epoch (the snapshot's time).
    pub violation_event_time: u64,
    /// 0–1: the anomaly score for ML and novelty behaviours; 1 for a violated rule, 0 for a
    /// conforming one.
    pub score: f64,
    /// One line for operators: what was seen against what is normal.
    pub explanation: String,
}

impl ViolationEvent {
    /// True when the behaviour has `suppressAlerts`: record the event (outbox, status) but do
    /// not alert on it.
    pub fn alerts_suppressed(&self) -> bool {
        self.behavior.suppress_alerts == Some(true)
    }

    /// One JSON line, as appended to the outbox.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self)
            .expect("a violation event always serializes: no maps with non-string keys")
    }
}
