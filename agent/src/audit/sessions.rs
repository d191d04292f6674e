//! `CONFLICTING_CLIENT_IDS`: our MQTT session keeps being taken over.
//!
//! AWS IoT (like any MQTT broker) closes a session when another client connects with the same
//! client id. Seen from this agent, that is a session closed by the broker shortly after CONNACK,
//! before anything was acknowledged, again and again. The live transport counts such short
//! sessions; this check fires when [`TAKEOVER_THRESHOLD`] or more happened since the previous
//! audit. Outside `run` there is no session to look at and the check does nothing.

use super::{Draft, Findings, Severity, CONFLICTING_CLIENT_IDS};

/// Short sessions between two audits that count as "repeated".
pub const TAKEOVER_THRESHOLD: u64 = 3;

/// Runs the check.
pub fn check(out: &mut Findings<'_>) {
    let inputs = out.inputs();
    let (Some(s), Some(client_id)) = (inputs.sessions, inputs.client_id.clone()) else {
        out.skip(
            CONFLICTING_CLIENT_IDS,
            "no live MQTT session to look at (only inside `run` with [mqtt])",
        );
        return;
    };
    if s.short_sessions < TAKEOVER_THRESHOLD {
        return;
    }
    out.add(Draft {
        check: CONFLICTING_CLIENT_IDS,
        severity: Severity::High,
        resource_type: "MQTT_SESSION",
        id: vec![("clientId", client_id.clone())],
        info: vec![
            ("shortSessions", s.short_sessions.to_string()),
            ("connects", s.connects.to_string()),
        ],
        reason: format!(
            "{} of {} MQTT sessions with client id {client_id:?} were closed by the broker right after connecting since the previous audit: another client is using the same client id.",
            s.short_sessions, s.connects
        ),
        fix: "Find the other device or process connecting with this client id (AWS IoT: Device Defender audit CONFLICTING_CLIENT_IDS, or the broker's log) and give each client its own id.".into(),
    });
}
