//! The embedded default sink: JSON lines on disk, bounded, with the older file rotated out.
//!
//! With no transport configured, every Device Defender report is appended as one JSON line to
//! `<state_dir>/outbox/reports.jsonl` and every local violation to `violations.jsonl`. When a file
//! would grow past `max_bytes` it is renamed to `<name>.1` (replacing the previous `.1`, whose
//! lines are counted as rotated out) and a new file is started, so the outbox never holds more
//! than about twice `max_bytes` per stream.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

/// Stream of Device Defender reports.
pub const REPORTS: &str = "reports";
/// Stream of local violations.
pub const VIOLATIONS: &str = "violations";

/// Errors of the outbox.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// The outbox directory or a file in it could not be written.
    #[error("outbox {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// A bounded JSON-lines outbox.
#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    max_bytes: u64,
    rotated_lines: u64,
}

impl Outbox {
    /// Opens (creating) `<state_dir>/outbox`.
    pub fn open(state_dir: &Path, max_bytes: u64) -> Result<Outbox, OutboxError> {
        let dir = state_dir.join("outbox");
        fs::create_dir_all(&dir).map_err(|source| OutboxError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(Outbox {
            dir,
            max_bytes,
            rotated_lines: 0,
        })
    }

    /// The directory holding the streams.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of a stream's current file.
    pub fn path(&self, stream: &str) -> PathBuf {
        self.dir.join(format!("{stream}.jsonl"))
    }

    /// Lines dropped by rotation since the outbox was opened.
    pub fn rotated_lines(&self) -> u64 {
        self.rotated_lines
    }

    /// Appends one line (a newline is added) and flushes it to disk.
    pub fn append(&mut self, stream: &str, line: &[u8]) -> Result<(), OutboxError> {
        let path = self.path(stream);
        let io_err = |source| OutboxError::Io {
            path: path.clone(),
            source,
        };
        let len = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if len > 0 && len + line.len() as u64 + 1 > self.max_bytes {
            let old = self.dir.join(format!("{stream}.jsonl.1"));
            if let Ok(prev) = fs::read(&old) {
                self.rotated_lines += prev.iter().filter(|&&b| b == b'\n').count() as u64;
                tracing::warn!(file = %old.display(), "Outbox full; oldest lines rotated out.");
            }
            fs::rename(&path, &old).map_err(io_err)?;
        }
        let mut f: File = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err)?;
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line);
        buf.push(b'\n');
        f.write_all(&buf).map_err(io_err)?;
        f.sync_data().map_err(io_err)?;
        Ok(())
    }
}

/// Prints one line on stdout (`[outbox] stdout = true`). A closed stdout is ignored: the outbox
/// file is the record.
#[allow(clippy::print_stdout)]
pub fn write_stdout_line(line: &[u8]) {
    use std::io::Write as _;
    let mut out = io::stdout().lock();
    let _ = out
        .write_all(line)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_appends_lines_and_rotates_when_full() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(dir.path(), 100).unwrap();
        for i in 0..30 {
            o.append(REPORTS, format!("{{\"n\":{i}}}").as_bytes())
                .unwrap();
        }
        let cur = fs::read_to_string(o.path(REPORTS)).unwrap();
        assert!(cur.len() <= 100);
        assert!(cur.ends_with("{\"n\":29}\n"));
        let old = fs::read_to_string(dir.path().join("outbox/reports.jsonl.1")).unwrap();
        let kept = cur.lines().count() + old.lines().count();
        assert_eq!(kept as u64 + o.rotated_lines(), 30);
    }
}
