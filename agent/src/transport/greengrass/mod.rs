//! Delivery through the AWS IoT Greengrass v2 nucleus: the agent as a Greengrass component.
//!
//! * [`frame`]: the event-stream frame codec (CRCs, header types, size limits).
//!
//! The nucleus owns the MQTT connection and the device certificate; the component talks to it
//! over a Unix socket with the event-stream RPC protocol.

pub mod frame;

#[cfg(test)]
mod golden;
