//! Shared helpers of the integration tests: the agent binary, and (in submodules) the Device
//! Defender report validator, the Device Defender emulator, the Greengrass nucleus IPC emulator
//! and the mosquitto harness.

pub mod broker;
pub mod emulator;
pub mod greengrass;
pub mod lab;
pub mod plain_broker;
pub mod validator;

use std::path::PathBuf;

/// Path of the `edgewarden` binary built in this target directory.
///
/// `cargo test` does not build another package's binaries, so the test command builds it first
/// (`cargo build -p edgewarden --bin edgewarden`, done by `.ci/test`).
pub fn edgewarden_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("EDGEWARDEN_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("the test executable has a path");
    // target/<profile>/deps/<test> → target/<profile>/edgewarden
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("test executables live in target/<profile>/deps");
    let bin = dir.join("edgewarden");
    assert!(
        bin.exists(),
        "{} not found: build it first with `cargo build -p edgewarden --bin edgewarden` (or run `bash .ci/test`)",
        bin.display()
    );
    bin
}
