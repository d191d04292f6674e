//! Delivery through the AWS IoT Greengrass v2 nucleus: the agent as a Greengrass component.
//!
//! The nucleus owns the MQTT connection and the device certificate; the component talks to it
//! over a Unix socket with the event-stream RPC protocol, authenticated by its `SVCUID` token.
//!
//! * [`frame`]: the event-stream frame codec (CRCs, the ten header types, size limits).
//! * [`rpc`]: one connection: handshake, operation streams, frames in and out.
//! * [`run()`]: the connection loop: `PublishToIoTCore` at QoS 1 from the spool, Device
//!   Defender answers through `SubscribeToIoTCore`, the component configuration through
//!   `GetConfiguration` and `SubscribeToConfigurationUpdate`, reconnect with backoff.
//! * [`config`]: the nucleus's environment and the component configuration keys.

pub mod config;
pub mod frame;
pub mod rpc;
pub mod run;

#[cfg(test)]
mod golden;

pub use config::{apply_settings, ComponentSettings, NucleusEnv, Token};
pub use run::{run, GreengrassParams};
