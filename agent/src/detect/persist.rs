//! The engine's learned state on disk: `detect.json` in the state directory, written atomically
//! (temporary file, fsync, rename, directory fsync), read back at start. A file that does not
//! parse is logged and learning starts again; it never stops the agent.

use std::path::Path;

use tracing::warn;

use super::EngineState;

/// File in the state directory holding the detector's learned state.
pub const STATE_FILE: &str = "detect.json";

/// The state saved in `dir`, if there is a readable one.
pub fn load(dir: &Path) -> Option<EngineState> {
    let path = dir.join(STATE_FILE);
    let bytes = std::fs::read(&path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(file = %path.display(), error = %e, "Learned detector state unreadable; learning again.");
            None
        }
    }
}

/// Saves `state` in `dir`; a failure is logged (the previous file stays whole).
pub fn save(dir: &Path, state: &EngineState) {
    let path = dir.join(STATE_FILE);
    // Streamed to the file: the state can be hundreds of KiB and is never held twice.
    let res = crate::durable::write_atomic(&path, |w| {
        serde_json::to_writer(w, state).map_err(std::io::Error::other)
    });
    if let Err(e) = res {
        warn!(file = %path.display(), error = %e, "Cannot save the learned detector state.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::detect::{default_profile, Engine};

    #[test]
    fn state_round_trips_and_a_damaged_file_means_relearning() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).is_none());
        let cfg = Config::embedded_default();
        let engine = Engine::new(default_profile(), &cfg.detect, "t", None);
        let state = engine.state();
        save(dir.path(), &state);
        let back = load(dir.path()).expect("saved state reads back");
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&state).unwrap()
        );
        std::fs::write(dir.path().join(STATE_FILE), b"{not json").unwrap();
        assert!(load(dir.path()).is_none());
    }
}
