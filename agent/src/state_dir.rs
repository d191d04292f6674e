//! Can this process write its state directory?
//!
//! The agent keeps report ids, the outbox, the spool, the learned detector state and log
//! positions under `state_dir`. A directory the service user cannot write (typically because the
//! agent was first run by hand as root, leaving root-owned `outbox/` or `spool/` behind) would
//! lose every report at run time; `validate` finds it before the start instead, naming the first
//! path that cannot be written and how to fix it.
//!
//! The check is non-destructive: it creates the directory if missing, writes and removes a probe
//! file in it and in each existing subdirectory, and opens each existing file for appending
//! without writing to it. It looks two levels deep, which covers everything the agent creates.

use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// Name of the probe file (removed at once).
const PROBE: &str = ".edgewarden-write-probe";
/// Entries looked at per directory, at most: the agent's own layout has a handful.
const MAX_ENTRIES: usize = 256;

/// A state directory (or something in it) this process cannot write.
#[derive(Debug, thiserror::Error)]
#[error("state directory {}: cannot {what} {}: {source}{hint}", dir.display(), path.display())]
pub struct StateDirError {
    /// The state directory.
    pub dir: PathBuf,
    /// The path that failed.
    pub path: PathBuf,
    /// What was tried (`create`, `write in`, `write`, `list`).
    pub what: &'static str,
    /// The OS error.
    #[source]
    pub source: io::Error,
    /// How to fix it, when the cause is known.
    hint: String,
}

/// Checks that `dir` exists (creating it if needed) and that this process can write it and what
/// the agent keeps in it.
pub fn check_writable(dir: &Path) -> Result<(), StateDirError> {
    let fail = |path: &Path, what: &'static str, source: io::Error| StateDirError {
        dir: dir.to_owned(),
        path: path.to_owned(),
        what,
        hint: hint(dir, &source),
        source,
    };
    fs::create_dir_all(dir).map_err(|e| fail(dir, "create", e))?;
    check_dir(dir, 1, &fail)
}

fn check_dir(
    d: &Path,
    depth: u32,
    fail: &dyn Fn(&Path, &'static str, io::Error) -> StateDirError,
) -> Result<(), StateDirError> {
    let probe = d.join(PROBE);
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&probe)
        .map_err(|e| fail(d, "write in", e))?;
    let _ = fs::remove_file(&probe);
    let entries = fs::read_dir(d).map_err(|e| fail(d, "list", e))?;
    for entry in entries.take(MAX_ENTRIES) {
        let entry = entry.map_err(|e| fail(d, "list", e))?;
        let path = entry.path();
        // Not followed: the agent creates no links, and a link may point anywhere.
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() && depth > 0 {
            check_dir(&path, depth - 1, fail)?;
        } else if kind.is_file() {
            OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(|e| fail(&path, "write", e))?;
        }
    }
    Ok(())
}

fn hint(dir: &Path, e: &io::Error) -> String {
    if e.kind() != io::ErrorKind::PermissionDenied {
        return String::new();
    }
    // The usual cause: the agent ran as root before the service user owned the directory.
    format!(
        " (if the agent once ran as another user, give the directory back to the service user: \
         chown -R edgewarden:edgewarden {})",
        dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn running_as_root() -> bool {
        // Root bypasses file modes, so permission tests say nothing there.
        fs::metadata("/proc/self")
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
            .unwrap_or(false)
    }

    #[test]
    fn a_missing_directory_is_created_and_accepted() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/b");
        check_writable(&d).unwrap();
        assert!(d.is_dir());
        assert!(!d.join(PROBE).exists());
    }

    #[test]
    fn existing_files_are_left_unchanged() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir(t.path().join("outbox")).unwrap();
        fs::write(t.path().join("outbox/reports.jsonl"), b"{}\n").unwrap();
        check_writable(t.path()).unwrap();
        assert_eq!(
            fs::read(t.path().join("outbox/reports.jsonl")).unwrap(),
            b"{}\n"
        );
        assert!(!t.path().join("outbox").join(PROBE).exists());
    }

    #[test]
    fn a_read_only_subdirectory_is_named_with_the_fix() {
        if running_as_root() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let outbox = t.path().join("outbox");
        fs::create_dir(&outbox).unwrap();
        fs::set_permissions(&outbox, fs::Permissions::from_mode(0o500)).unwrap();
        let err = check_writable(t.path()).unwrap_err();
        fs::set_permissions(&outbox, fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(err.path, outbox);
        let msg = err.to_string();
        assert!(msg.contains("cannot write in"), "{msg}");
        assert!(msg.contains("chown -R edgewarden:edgewarden"), "{msg}");
    }

    #[test]
    fn a_read_only_file_is_named() {
        if running_as_root() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("report-ids");
        fs::write(&f, b"1").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o400)).unwrap();
        let err = check_writable(t.path()).unwrap_err();
        assert_eq!(err.path, f);
        assert_eq!(err.what, "write");
    }

    #[test]
    fn a_path_under_a_file_cannot_be_created() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("file");
        fs::write(&f, b"").unwrap();
        let err = check_writable(&f.join("state")).unwrap_err();
        assert_eq!(err.what, "create");
        assert!(err.to_string().contains("cannot create"), "{err}");
    }
}
