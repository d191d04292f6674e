//! The event classes a log line is sorted into.

use std::fmt;

/// What one log line (one journal entry) says, in our taxonomy. Each line gets exactly one class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum EventClass {
    /// Context, informational, or a detail line whose event is counted on another line.
    Other = 0,
    /// Kernel firewall log line (iptables/nftables `LOG`) with a source and destination port.
    FwDrop,
    /// The MQTT broker refused a CONNECT (bad password, unknown user, no credentials).
    MqttNotAuthorised,
    /// An authenticated MQTT client tried a topic its ACL forbids.
    MqttAclDenied,
    /// A second MQTT connection took over an existing client id.
    MqttClientIdConflict,
    /// An MQTT client went silent past 1.5 × its keepalive.
    MqttKeepaliveTimeout,
    /// A TLS handshake failed (no or untrusted client certificate, plain TCP on a TLS port).
    TlsFailure,
    /// The broker dropped a client for a malformed or non-MQTT stream.
    MqttProtocolError,
    /// A connection refused before any protocol exchange (tcp wrappers, connection limits).
    ConnRefused,
    /// An accepted login.
    AuthSuccess,
    /// One line summarising several failures on one connection.
    AuthLimit,
    /// A PAM module reports a failed check (usually corroborates an `AuthFailure` line).
    PamFailure,
    /// One rejected credential attempt.
    AuthFailure,
    /// User name unknown or not permitted, with no credential verdict on the line.
    InvalidUser,
    /// Client and server had no common algorithm.
    NegotiationFailure,
    /// A connection ended before authentication finished.
    PreauthDisconnect,
}

/// Number of classes.
pub const CLASS_COUNT: usize = 16;

impl EventClass {
    /// Every class, in declaration order (the index is `class as usize`).
    pub const ALL: [EventClass; CLASS_COUNT] = [
        EventClass::Other,
        EventClass::FwDrop,
        EventClass::MqttNotAuthorised,
        EventClass::MqttAclDenied,
        EventClass::MqttClientIdConflict,
        EventClass::MqttKeepaliveTimeout,
        EventClass::TlsFailure,
        EventClass::MqttProtocolError,
        EventClass::ConnRefused,
        EventClass::AuthSuccess,
        EventClass::AuthLimit,
        EventClass::PamFailure,
        EventClass::AuthFailure,
        EventClass::InvalidUser,
        EventClass::NegotiationFailure,
        EventClass::PreauthDisconnect,
    ];

    /// The label used in output and in the fixtures (`auth_failure`, `mqtt_not_authorised`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            EventClass::Other => "other",
            EventClass::FwDrop => "fw_drop",
            EventClass::MqttNotAuthorised => "mqtt_not_authorised",
            EventClass::MqttAclDenied => "mqtt_acl_denied",
            EventClass::MqttClientIdConflict => "mqtt_client_id_conflict",
            EventClass::MqttKeepaliveTimeout => "mqtt_keepalive_timeout",
            EventClass::TlsFailure => "tls_failure",
            EventClass::MqttProtocolError => "mqtt_protocol_error",
            EventClass::ConnRefused => "conn_refused",
            EventClass::AuthSuccess => "auth_success",
            EventClass::AuthLimit => "auth_limit",
            EventClass::PamFailure => "pam_failure",
            EventClass::AuthFailure => "auth_failure",
            EventClass::InvalidUser => "invalid_user",
            EventClass::NegotiationFailure => "negotiation_failure",
            EventClass::PreauthDisconnect => "preauth_disconnect",
        }
    }

    /// Parses a label produced by [`EventClass::as_str`].
    pub fn from_name(name: &str) -> Option<EventClass> {
        EventClass::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

impl fmt::Display for EventClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counts per class (lines, or occurrences when a line stands for several).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassCounts(pub [u64; CLASS_COUNT]);

impl ClassCounts {
    /// Adds one line of `class`.
    #[inline]
    pub fn add(&mut self, class: EventClass) {
        self.0[class as usize] += 1;
    }

    /// Adds `n` occurrences of `class`.
    #[inline]
    pub fn add_n(&mut self, class: EventClass, n: u64) {
        self.0[class as usize] += n;
    }

    /// The count of `class`.
    pub fn get(&self, class: EventClass) -> u64 {
        self.0[class as usize]
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &ClassCounts) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a += *b;
        }
    }

    /// Sum over every class.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// `(class, count)` for every class, in declaration order.
    pub fn iter(&self) -> impl Iterator<Item = (EventClass, u64)> + '_ {
        EventClass::ALL.into_iter().map(|c| (c, self.0[c as usize]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_round_trip_and_index_matches_position() {
        for (i, c) in EventClass::ALL.into_iter().enumerate() {
            assert_eq!(c as usize, i);
            assert_eq!(EventClass::from_name(c.as_str()), Some(c));
        }
        assert_eq!(EventClass::from_name("nope"), None);
    }
}
