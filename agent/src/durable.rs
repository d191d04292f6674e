//! Crash-safe replacement of small state files (report id, learned detector state, log
//! positions, journal cursor).
//!
//! [`write_atomic`] writes `<name>.tmp` beside the target, fsyncs it, renames it over the target
//! and fsyncs the directory, so that after a power cut the file holds either its old or its new
//! contents, never nothing and never a mix. Each step's failure names the step and the path.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Suffix of the temporary file written before the rename.
pub const TMP_SUFFIX: &str = ".tmp";

/// The step of [`write_atomic_with`] that a crash-injection test stops before.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// After the temporary file is written and synced, before the rename.
    Rename,
    /// After the rename, before the directory is synced.
    SyncDir,
}

/// Replaces `path` with the bytes `write` produces, atomically and durably.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    write_atomic_with(path, write, None)
}

/// Replaces `path` with `bytes`, atomically and durably.
pub fn write_atomic_bytes(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic(path, |w| w.write_all(bytes))
}

/// [`write_atomic`], stopping (as a crash would) before `crash_before` when it is set.
#[doc(hidden)]
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    crash_before: Option<Step>,
) -> io::Result<()> {
    let tmp = tmp_path(path);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| annotate(e, "create", &tmp))?;
    let mut w = BufWriter::new(file);
    write(&mut w)
        .and_then(|()| w.flush())
        .map_err(|e| annotate(e, "write", &tmp))?;
    w.into_inner()
        .map_err(|e| annotate(e.into_error(), "write", &tmp))?
        .sync_all()
        .map_err(|e| annotate(e, "sync", &tmp))?;
    if crash_before == Some(Step::Rename) {
        return Ok(());
    }
    fs::rename(&tmp, path).map_err(|e| annotate(e, "rename into place", path))?;
    if crash_before == Some(Step::SyncDir) {
        return Ok(());
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| annotate(e, "sync directory", dir))
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(TMP_SUFFIX);
    PathBuf::from(name)
}

fn annotate(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("cannot {what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_contents_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        write_atomic_bytes(&p, b"old").unwrap();
        write_atomic(&p, |w| w.write_all(b"new contents")).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new contents");
        assert!(!tmp_path(&p).exists());
    }

    #[test]
    fn a_crash_at_any_step_leaves_old_or_new_contents_never_empty() {
        for step in [Step::Rename, Step::SyncDir] {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("journal.cursor");
            write_atomic_bytes(&p, b"old").unwrap();
            write_atomic_with(&p, |w| w.write_all(b"new"), Some(step)).unwrap();
            let got = fs::read(&p).unwrap();
            assert!(got == b"old" || got == b"new", "{step:?}: {got:?}");
            // The next write after the "restart" completes over any leftover temporary.
            write_atomic_bytes(&p, b"next").unwrap();
            assert_eq!(fs::read(&p).unwrap(), b"next");
        }
    }

    #[test]
    fn a_failing_writer_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("detect.json");
        write_atomic_bytes(&p, b"old").unwrap();
        let err = write_atomic(&p, |w| {
            w.write_all(b"half")?;
            Err(io::Error::other("encoder failed"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("cannot write"), "{err}");
        assert_eq!(fs::read(&p).unwrap(), b"old");
    }

    #[test]
    fn errors_name_the_step_and_path() {
        let err = write_atomic_bytes(Path::new("/nonexistent-dir/x/state"), b"x").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("cannot create") && msg.contains("/nonexistent-dir/x/state.tmp"),
            "{msg}"
        );
    }
}
