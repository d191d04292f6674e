//! Shared helpers of the integration tests.

pub mod emulator;
pub mod plain_broker;
pub mod validator;
