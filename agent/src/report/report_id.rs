//! Report ids: `report_id = max(now_ms, last + 1)`, persisted so that neither a restart nor a
//! clock stepping back ever reuses or lowers an id (spec §2.7).
//!
//! The last id lives in `<state_dir>/report_id` as one decimal line. It is replaced atomically:
//! written to `report_id.tmp`, fsynced, renamed over the old file, and the directory fsynced, so
//! a crash leaves either the old or the new id, never a torn file.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use tracing::warn;

use super::defender::MAX_REPORT_ID;

/// File name of the persisted id inside the state directory.
pub const REPORT_ID_FILE: &str = "report_id";

/// Hands out strictly increasing report ids and remembers the last one on disk.
#[derive(Debug)]
pub struct ReportIds {
    path: PathBuf,
    last: u64,
}

impl ReportIds {
    /// Opens (creating `state_dir` if needed) and reads the last id.
    ///
    /// A missing file means no report was ever made here. A file whose content is not a
    /// number (edited by hand: the atomic replace never tears it) is logged and treated as
    /// missing, since refusing to start would stop all reporting; ids then restart at the
    /// wall clock.
    pub fn open(state_dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(state_dir).map_err(|e| annotate(e, "create", state_dir))?;
        let path = state_dir.join(REPORT_ID_FILE);
        let last = match fs::read_to_string(&path) {
            Ok(s) => match s.trim().parse::<u64>() {
                Ok(v) => v.min(MAX_REPORT_ID),
                Err(_) => {
                    warn!(
                        path = %path.display(),
                        "Report id file does not hold a number; restarting ids at the clock."
                    );
                    0
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(annotate(e, "read", &path)),
        };
        Ok(ReportIds { path, last })
    }

    /// The last id handed out (0 when none ever was).
    pub fn last(&self) -> u64 {
        self.last
    }

    /// The next id, `max(now_ms, last + 1)`, persisted before it is returned. On error nothing
    /// changes and the id must not be used.
    pub fn next(&mut self, now_ms: u64) -> io::Result<u64> {
        if self.last >= MAX_REPORT_ID {
            return Err(io::Error::other(format!(
                "{}: report ids exhausted (last {} is the largest the service accepts)",
                self.path.display(),
                self.last
            )));
        }
        let id = now_ms.clamp(self.last + 1, MAX_REPORT_ID);
        self.persist(id)?;
        self.last = id;
        Ok(id)
    }

    fn persist(&self, id: u64) -> io::Result<()> {
        crate::durable::write_atomic_bytes(&self.path, format!("{id}\n").as_bytes())
    }
}

fn annotate(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("cannot {what} {}: {e}", path.display()))
}
