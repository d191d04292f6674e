//! Log sources: text files followed by position, and the systemd journal through `journalctl`.
//!
//! # Positions (`<state_dir>/logs/`)
//!
//! - `files.json`: for each followed path, the file identity (device, inode), the offset just
//!   after the last complete line counted, and a hash of the file's first line (or its first
//!   128 bytes), which detects a file replaced in place.
//! - `journal.cursor`: the `__CURSOR` of the last journal entry counted.
//!
//! Positions are written when the monitor is drained, together with the counts they cover: the
//! counts of a drain and the positions saved by it describe the same lines. Lines read after the
//! last drain are read again after a restart, so an event is neither counted twice nor lost
//! (the in-memory counts of undrained lines die with the process).
//!
//! # Files
//!
//! Each file has a thread of its own (never the runtime's blocking pool, so a file that blocks
//! cannot stall other work or shutdown) and is polled every second. A followed path is opened
//! with `O_NOFOLLOW | O_NONBLOCK` and must be a regular file: a symbolic link (say, to
//! `/dev/zero`), a FIFO, a device or a directory is refused with a warning and looked at again
//! on the next polls. Lines beyond a per-source budget ([`LINE_RATE`] per second, bursts up to
//! [`LINE_BURST`]) are read but not analysed, and counted (`log_lines_dropped`); each further
//! occurrence of an rsyslog `message repeated N times` line costs one line of the budget.
//!
//! - at the first start (no saved position) an existing file is followed from its end: history is
//!   not counted; a file that appears later is read from its start;
//! - rotation (the path now names another inode): the old file is read to its end, including a
//!   last line without newline, then the new one from its start. After a restart, a saved
//!   position whose inode is no longer at the path is looked up at `<path>.1` and its remainder read;
//! - truncation (`copytruncate`: same inode, shorter than the position) or a changed first line:
//!   read again from the start;
//! - a missing file is reported once and looked for on every poll.
//!
//! # Journal
//!
//! `/usr/bin/journalctl` (or `/bin/journalctl`, by absolute path, never looked up in `PATH`)
//! `--follow --output=json --after-cursor=<saved>` (or `--lines=0` at the first
//! start). The cursor is kept by the agent rather than through journalctl's `--cursor-file`,
//! which journalctl writes only when it exits and with the last entry it *printed*, not the last
//! one counted. Reading the system journal needs membership of the `systemd-journal` group (or
//! `adm`); without it journalctl shows only the agent user's own entries and says so on stderr,
//! which is logged once. A missing `journalctl` is reported once; an exited journalctl is
//! restarted after 30 s.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::analyze::{Analyzer, Stream};
use super::lines::{LineSplitter, Piece};

/// Bytes read from one file per poll at most (the rest is read on the next polls).
const MAX_READ_PER_POLL: u64 = 16 * 1024 * 1024;
/// Bytes hashed to recognise a file (first line, at most this much).
const HEAD_BYTES: usize = 128;
/// Poll period of files.
pub const FILE_POLL: Duration = Duration::from_secs(1);
/// Delay before restarting an exited journalctl.
pub const JOURNAL_RESTART: Duration = Duration::from_secs(30);
/// Lines per second one source may have analysed, sustained.
pub const LINE_RATE: u32 = 20_000;
/// Lines one source may have analysed in a burst.
pub const LINE_BURST: u32 = 200_000;
/// Where `journalctl` is looked for, in order.
pub const JOURNALCTL_PATHS: [&str; 2] = ["/usr/bin/journalctl", "/bin/journalctl"];

/// A token bucket of lines: what one source may have analysed.
#[derive(Debug, Clone)]
pub struct LineBudget {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: std::time::Instant,
}

impl Default for LineBudget {
    fn default() -> LineBudget {
        LineBudget::new(LINE_RATE, LINE_BURST)
    }
}

impl LineBudget {
    /// `rate` lines per second, bursts up to `burst` lines; starts full.
    pub fn new(rate: u32, burst: u32) -> LineBudget {
        LineBudget {
            tokens: f64::from(burst),
            rate: f64::from(rate),
            burst: f64::from(burst),
            last: std::time::Instant::now(),
        }
    }

    /// Adds the tokens earned since the previous refill.
    pub fn refill(&mut self, now: std::time::Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
    }

    /// Takes up to `n` tokens (the further occurrences of a repeated message); returns how
    /// many it took.
    pub fn take_up_to(&mut self, n: u32) -> u32 {
        let got = self.tokens.floor().clamp(0.0, f64::from(n));
        self.tokens -= got;
        // `got` is a whole number between 0 and `n`.
        got as u32
    }

    /// Takes one line's token; false when the budget is spent.
    #[inline]
    pub fn take(&mut self) -> bool {
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Opens a followed file without following a final symbolic link and without blocking (a FIFO
/// opens at once), and refuses anything but a regular file.
pub fn open_regular(path: &Path) -> io::Result<(File, fs::Metadata)> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "is a symbolic link; log paths are not followed through links",
                )
            } else {
                e
            }
        })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        let what = if meta.is_dir() {
            "a directory"
        } else {
            use std::os::unix::fs::FileTypeExt;
            let t = meta.file_type();
            if t.is_fifo() {
                "a FIFO"
            } else if t.is_char_device() || t.is_block_device() {
                "a device"
            } else if t.is_socket() {
                "a socket"
            } else {
                "not a regular file"
            }
        };
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("is {what}; only regular files are followed"),
        ));
    }
    Ok((file, meta))
}

/// Saved position of one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePosition {
    /// Device of the file.
    pub dev: u64,
    /// Inode of the file.
    pub ino: u64,
    /// Offset just after the last complete line counted.
    pub offset: u64,
    /// Hash of the first line (at most 128 bytes); `None` while the file has no complete line.
    pub head: Option<u64>,
}

/// Everything saved in `<state_dir>/logs/`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Positions {
    /// Per followed path.
    pub files: BTreeMap<PathBuf, FilePosition>,
    /// Journal cursor (stored in its own file).
    #[serde(skip)]
    pub journal_cursor: Option<String>,
}

impl Positions {
    /// Loads the saved positions; missing or unreadable files give empty positions (logged).
    pub fn load(dir: &Path) -> Positions {
        let mut p = Positions::default();
        match fs::read(dir.join("files.json")) {
            Ok(b) => match serde_json::from_slice::<Positions>(&b) {
                Ok(f) => p.files = f.files,
                Err(e) => {
                    warn!(path = %dir.join("files.json").display(), error = %e, "Saved log positions unreadable; following files from their end.")
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                warn!(path = %dir.join("files.json").display(), error = %e, "Saved log positions unreadable; following files from their end.")
            }
        }
        if let Ok(c) = fs::read_to_string(dir.join("journal.cursor")) {
            let c = c.trim();
            if !c.is_empty() {
                p.journal_cursor = Some(c.to_owned());
            }
        }
        p
    }

    /// Writes the positions atomically (temporary file + rename).
    pub fn save(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)?;
        let json = serde_json::to_vec_pretty(&self).map_err(io::Error::other)?;
        crate::durable::write_atomic_bytes(&dir.join("files.json"), &json)?;
        if let Some(c) = &self.journal_cursor {
            crate::durable::write_atomic_bytes(&dir.join("journal.cursor"), c.as_bytes())?;
        }
        Ok(())
    }
}

/// State shared by the followers and the drain.
#[derive(Debug)]
pub struct Shared {
    /// The analyzer every source feeds.
    pub analyzer: Analyzer,
    /// Positions of the lines counted so far (saved at drain).
    pub positions: Positions,
}

/// Locks `shared`, recovering from a poisoned lock (the state stays usable: counts are plain data).
pub fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn head_hash(file: &mut File) -> io::Result<Option<u64>> {
    let mut buf = [0u8; HEAD_BYTES];
    file.seek(SeekFrom::Start(0))?;
    let mut n = 0;
    while n < buf.len() {
        let got = file.read(&mut buf[n..])?;
        if got == 0 {
            break;
        }
        n += got;
    }
    let head = &buf[..n];
    let end = match head.iter().position(|&b| b == b'\n') {
        Some(nl) => nl + 1,
        None if n == HEAD_BYTES => n,
        None => return Ok(None),
    };
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in &head[..end] {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    Ok(Some(h))
}

/// One followed text file.
#[derive(Debug)]
pub struct FileFollower {
    path: PathBuf,
    open: Option<OpenFile>,
    stream: Stream,
    /// The path did not exist at some poll: when it appears it is read from its start.
    seen_missing: bool,
    reported_missing: bool,
    reported_error: bool,
    /// Saved position from the previous run, consumed at the first open.
    saved: Option<FilePosition>,
    first_poll: bool,
    budget: LineBudget,
}

#[derive(Debug)]
struct OpenFile {
    file: File,
    dev: u64,
    ino: u64,
    /// Offset of the next byte to read.
    read_at: u64,
    head: Option<u64>,
    splitter: LineSplitter,
}

impl OpenFile {
    fn new(mut file: File, dev: u64, ino: u64, offset: u64) -> io::Result<OpenFile> {
        let head = head_hash(&mut file)?;
        Ok(OpenFile {
            file,
            dev,
            ino,
            read_at: offset,
            head,
            splitter: LineSplitter::new(),
        })
    }

    fn committed(&self) -> u64 {
        self.read_at - self.splitter.pending() as u64
    }

    fn position(&self) -> FilePosition {
        FilePosition {
            dev: self.dev,
            ino: self.ino,
            offset: self.committed(),
            head: self.head,
        }
    }
}

impl FileFollower {
    /// A follower of `path`, resuming from `saved` when it still describes the file.
    pub fn new(path: PathBuf, saved: Option<FilePosition>) -> FileFollower {
        FileFollower {
            path,
            open: None,
            stream: Stream::text_file(),
            seen_missing: false,
            reported_missing: false,
            reported_error: false,
            saved,
            first_poll: true,
            budget: LineBudget::default(),
        }
    }

    /// The followed path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads what is new; feeds `shared`.
    pub fn poll(&mut self, shared: &Mutex<Shared>) {
        if let Err(e) = self.poll_inner(shared) {
            if !self.reported_error {
                warn!(path = %self.path.display(), error = %e, "Log file unreadable; retrying every second.");
                self.reported_error = true;
            }
            self.open = None;
        } else {
            self.reported_error = false;
        }
        self.first_poll = false;
    }

    fn poll_inner(&mut self, shared: &Mutex<Shared>) -> io::Result<()> {
        let opened = match open_regular(&self.path) {
            Ok(fm) => Some(fm),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                // Refused or unreadable now: finish what the open handle (if any) still holds.
                if let Some(mut of) = self.open.take() {
                    let _ = self.read_to_end(&mut of, shared, true);
                }
                return Err(e);
            }
        };
        let Some((fresh, meta)) = opened else {
            if !self.reported_missing {
                info!(path = %self.path.display(), "Log file not present; it will be followed when it appears.");
                self.reported_missing = true;
            }
            self.seen_missing = true;
            // A rotated-away file may still get its last lines: drain the open handle.
            if let Some(mut of) = self.open.take() {
                self.read_to_end(&mut of, shared, false)?;
                self.open = Some(of);
            }
            return Ok(());
        };
        if self.reported_missing {
            info!(path = %self.path.display(), "Log file appeared; following it.");
            self.reported_missing = false;
        }
        let (dev, ino) = (meta.dev(), meta.ino());
        if let Some(mut of) = self.open.take() {
            if of.dev != dev || of.ino != ino {
                // Rotated: finish the old file (its last line is complete even without newline).
                self.read_to_end(&mut of, shared, true)?;
                self.open = Some(OpenFile::new(fresh, dev, ino, 0)?);
            } else {
                self.open = Some(of);
            }
        } else {
            let start = self.start_offset(dev, ino, meta.len(), shared)?;
            self.open = Some(OpenFile::new(fresh, dev, ino, start)?);
        }
        let mut of = self.open.take().expect("opened above");
        // Truncated (copytruncate) or replaced in place: start again.
        let len = of.file.metadata()?.len();
        let head_now = head_hash(&mut of.file)?;
        let replaced = of.head.is_some() && head_now.is_some() && of.head != head_now;
        if len < of.committed() || replaced {
            info!(path = %self.path.display(), "Log file truncated or replaced; reading it from the start.");
            of.read_at = 0;
            of.splitter = LineSplitter::new();
        }
        of.head = head_now.or(of.head);
        let res = self.read_to_end(&mut of, shared, false);
        self.open = Some(of);
        res
    }

    /// Where to start reading a file opened for the first time in this run.
    fn start_offset(
        &mut self,
        dev: u64,
        ino: u64,
        len: u64,
        shared: &Mutex<Shared>,
    ) -> io::Result<u64> {
        if let Some(saved) = self.saved.take() {
            if saved.dev == dev && saved.ino == ino && saved.offset <= len {
                let (mut f, _) = open_regular(&self.path)?;
                if saved.head.is_none() || head_hash(&mut f)? == saved.head {
                    return Ok(saved.offset);
                }
                return Ok(0);
            }
            // Rotated while the agent was down: finish the old file if it is at `<path>.1`.
            self.finish_rotated(saved, shared);
            return Ok(0);
        }
        if self.first_poll && !self.seen_missing {
            // First start: history is not counted.
            Ok(len)
        } else {
            Ok(0)
        }
    }

    fn finish_rotated(&mut self, saved: FilePosition, shared: &Mutex<Shared>) {
        let mut rotated = self.path.clone().into_os_string();
        rotated.push(".1");
        let rotated = PathBuf::from(rotated);
        let Ok((file, meta)) = open_regular(&rotated) else {
            return;
        };
        if meta.dev() != saved.dev || meta.ino() != saved.ino || meta.len() < saved.offset {
            return;
        }
        let mut of = OpenFile {
            file,
            dev: saved.dev,
            ino: saved.ino,
            read_at: saved.offset,
            head: saved.head,
            splitter: LineSplitter::new(),
        };
        info!(path = %rotated.display(), "Reading the rest of a log rotated while the agent was stopped.");
        if let Err(e) = self.read_to_end(&mut of, shared, true) {
            warn!(path = %rotated.display(), error = %e, "Rotated log unreadable; its last lines are not counted.");
        }
    }

    /// Reads from `of.read_at` to the end (at most [`MAX_READ_PER_POLL`]); `finish` also
    /// delivers a last line without newline (the file will not grow any more).
    fn read_to_end(
        &mut self,
        of: &mut OpenFile,
        shared: &Mutex<Shared>,
        finish: bool,
    ) -> io::Result<()> {
        of.file.seek(SeekFrom::Start(of.read_at))?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut budget = MAX_READ_PER_POLL;
        let now = now_ms();
        let track = !finish;
        loop {
            if budget == 0 {
                break;
            }
            let want = buf.len().min(usize::try_from(budget).unwrap_or(usize::MAX));
            let got = match of.file.read(&mut buf[..want]) {
                Ok(0) => break,
                Ok(g) => g,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            budget -= got as u64;
            of.read_at += got as u64;
            self.budget.refill(std::time::Instant::now());
            let mut sh = lock(shared);
            let Shared {
                analyzer,
                positions,
            } = &mut *sh;
            let stream = &mut self.stream;
            let lines = &mut self.budget;
            of.splitter.feed(&buf[..got], |p| match p {
                Piece::Line(l) if lines.take() => {
                    analyzer.line_within(stream, l, now, |n| lines.take_up_to(n));
                }
                Piece::Line(_) => analyzer.dropped_line(),
                Piece::Oversized => analyzer.skipped_line(),
            });
            if track {
                positions.files.insert(self.path.clone(), of.position());
            }
        }
        if finish {
            let mut sh = lock(shared);
            let analyzer = &mut sh.analyzer;
            let stream = &mut self.stream;
            of.splitter.finish(|p| match p {
                Piece::Line(l) => {
                    analyzer.line(stream, l, now);
                }
                Piece::Oversized => analyzer.skipped_line(),
            });
        }
        Ok(())
    }
}

/// Follows `path` on a thread of its own until `stop`; the thread ends at the next poll after
/// `stop` (it is detached: a read that blocks cannot hold up shutdown).
pub fn spawn_file_follower(
    mut follower: FileFollower,
    shared: Arc<Mutex<Shared>>,
    stop: CancellationToken,
) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("log-file".into())
        .spawn(move || {
            let slice = Duration::from_millis(100);
            while !stop.is_cancelled() {
                let started = std::time::Instant::now();
                follower.poll(&shared);
                while started.elapsed() < FILE_POLL && !stop.is_cancelled() {
                    std::thread::sleep(slice.min(FILE_POLL.saturating_sub(started.elapsed())));
                }
            }
        })
}

/// Follows the systemd journal until `stop`.
pub async fn follow_journal(shared: Arc<Mutex<Shared>>, stop: CancellationToken) {
    let Some(program) = JOURNALCTL_PATHS.iter().map(Path::new).find(|p| p.is_file()) else {
        warn!(
            looked_in = ?JOURNALCTL_PATHS,
            "journalctl not found; the systemd journal is not followed."
        );
        return;
    };
    follow_journal_with(program.into(), shared, stop).await;
}

/// [`follow_journal`] with another `journalctl` program (tests).
pub async fn follow_journal_with(
    program: std::ffi::OsString,
    shared: Arc<Mutex<Shared>>,
    stop: CancellationToken,
) {
    use tokio::io::AsyncReadExt;

    let mut reported = false;
    let mut reported_exit = false;
    let stderr_reported = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut stream = Stream::new();
    loop {
        let cursor = lock(&shared).positions.journal_cursor.clone();
        let mut cmd = tokio::process::Command::new(&program);
        cmd.args(["--follow", "--output=json", "--quiet"]);
        match &cursor {
            Some(c) => {
                cmd.arg(format!("--after-cursor={c}"));
            }
            None => {
                cmd.arg("--lines=0");
            }
        }
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                if !reported {
                    warn!(error = %e, "journalctl not available; the systemd journal is not followed.");
                    reported = true;
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(JOURNAL_RESTART) => continue,
                }
            }
        };
        if !reported_exit {
            info!("Following the systemd journal.");
        }
        if let Some(mut err) = child.stderr.take() {
            let once = stderr_reported.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while let Ok(n) = err.read(&mut chunk).await {
                    if n == 0 || buf.len() > 4096 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if buf.contains(&b'\n') {
                        break;
                    }
                }
                let text = String::from_utf8_lossy(&buf);
                let text = text.trim();
                if !text.is_empty() && !once.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    warn!(message = %text, "journalctl reported a problem (the agent's user needs the systemd-journal group to read the system journal).");
                }
            });
        }
        let Some(mut out) = child.stdout.take() else {
            return;
        };
        let mut splitter = LineSplitter::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut budget = LineBudget::default();
        loop {
            let got = tokio::select! {
                _ = stop.cancelled() => {
                    let _ = child.kill().await;
                    return;
                }
                r = out.read(&mut buf) => r,
            };
            let n = match got {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let now = now_ms();
            budget.refill(std::time::Instant::now());
            let mut sh = lock(&shared);
            let Shared {
                analyzer,
                positions,
            } = &mut *sh;
            splitter.feed(&buf[..n], |p| match p {
                Piece::Line(l) if budget.take() => {
                    let o = analyzer.line_within(&mut stream, l, now, |n| budget.take_up_to(n));
                    if let Some(c) = o.cursor {
                        positions.journal_cursor = Some(c);
                    }
                }
                Piece::Line(_) => analyzer.dropped_line(),
                Piece::Oversized => analyzer.skipped_line(),
            });
        }
        let status = child.wait().await;
        if !reported_exit {
            warn!(status = ?status.ok(), "journalctl exited; restarting it every 30 s.");
            reported_exit = true;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(JOURNAL_RESTART) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::tracker::Rules;
    use std::io::Write;

    const FAIL: &str =
        "Jan  1 00:00:00 h sshd[1]: Failed password for root from 192.0.2.9 port 22 ssh2\n";

    fn shared() -> Mutex<Shared> {
        Mutex::new(Shared {
            analyzer: Analyzer::new(Rules::default()),
            positions: Positions::default(),
        })
    }

    fn failures(sh: &Mutex<Shared>) -> u64 {
        lock(sh).analyzer.take().auth_attempts
    }

    fn append(path: &Path, text: &str) {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn existing_file_is_followed_from_its_end_and_a_late_file_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old.log");
        append(&old, FAIL);
        let late = dir.path().join("late.log");
        let sh = shared();
        let mut a = FileFollower::new(old.clone(), None);
        let mut b = FileFollower::new(late.clone(), None);
        a.poll(&sh);
        b.poll(&sh);
        assert_eq!(failures(&sh), 0);
        append(&old, FAIL);
        let other = FAIL.replace("sshd[1]", "sshd[2]");
        append(&late, &other);
        append(&late, &other);
        a.poll(&sh);
        b.poll(&sh);
        assert_eq!(failures(&sh), 3);
    }

    #[test]
    fn rotation_and_truncation_lose_nothing_and_count_nothing_twice() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("auth.log");
        append(&p, "");
        let sh = shared();
        let mut f = FileFollower::new(p.clone(), None);
        f.poll(&sh);
        append(&p, FAIL);
        f.poll(&sh);
        assert_eq!(failures(&sh), 1);
        // Rename rotation: a last line without newline in the old file, then a new file.
        append(&p, FAIL);
        append(&p, FAIL.trim_end());
        fs::rename(&p, dir.path().join("auth.log.1")).unwrap();
        append(&p, FAIL);
        f.poll(&sh);
        assert_eq!(failures(&sh), 3);
        // copytruncate.
        fs::write(&p, "").unwrap();
        f.poll(&sh);
        append(&p, FAIL);
        f.poll(&sh);
        assert_eq!(failures(&sh), 1);
    }

    #[test]
    fn restart_resumes_from_the_saved_position_even_after_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let p = dir.path().join("auth.log");
        append(&p, "");
        let sh = shared();
        let mut f = FileFollower::new(p.clone(), None);
        f.poll(&sh);
        append(&p, FAIL);
        f.poll(&sh);
        assert_eq!(failures(&sh), 1);
        lock(&sh).positions.save(&state).unwrap();
        drop(f);
        // While stopped: one more line, then rotation, then a line in the new file.
        append(&p, FAIL);
        fs::rename(&p, dir.path().join("auth.log.1")).unwrap();
        append(&p, FAIL);
        let saved = Positions::load(&state);
        let sh2 = shared();
        let mut f = FileFollower::new(p.clone(), saved.files.get(&p).copied());
        f.poll(&sh2);
        assert_eq!(failures(&sh2), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn journal_entries_are_counted_and_their_cursor_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let args = dir.path().join("args");
        let script = dir.path().join("journalctl");
        let entry = |c: &str, port: u32| {
            format!(
                r#"{{"__CURSOR":"{c}","MESSAGE":"Failed password for root from 192.0.2.9 port {port} ssh2","SYSLOG_IDENTIFIER":"sshd","_PID":"{port}","__REALTIME_TIMESTAMP":"1795801411249695"}}"#
            )
        };
        fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"$@\" > '{}'\necho '{}'\necho '{}'\nexec sleep 30\n",
                args.display(),
                entry("s=1", 1),
                entry("s=2", 2)
            ),
        )
        .unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        let sh = Arc::new(shared());
        let stop = CancellationToken::new();
        let task = tokio::spawn(follow_journal_with(
            script.clone().into_os_string(),
            sh.clone(),
            stop.clone(),
        ));
        let mut n = 0;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            n += failures(&sh);
            if n >= 2 {
                break;
            }
        }
        stop.cancel();
        task.await.unwrap();
        assert_eq!(n, 2);
        assert_eq!(lock(&sh).positions.journal_cursor.as_deref(), Some("s=2"));
        let args = fs::read_to_string(&args).unwrap();
        assert!(
            args.contains("--follow")
                && args.contains("--output=json")
                && args.contains("--lines=0"),
            "{args}"
        );
    }

    #[test]
    fn fifos_devices_links_and_directories_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.log");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let zero = dir.path().join("zero.log");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let sub = dir.path().join("dir.log");
        fs::create_dir(&sub).unwrap();
        let real = dir.path().join("real.log");
        append(&real, "");
        let link = dir.path().join("link.log");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        for (p, why) in [
            (&fifo, "FIFO"),
            (&zero, "symbolic link"),
            (&sub, "directory"),
            (&link, "symbolic link"),
        ] {
            let e = open_regular(p).unwrap_err();
            assert!(e.to_string().contains(why), "{}: {e}", p.display());
            let sh = shared();
            let mut f = FileFollower::new(p.clone(), None);
            f.poll(&sh);
            f.poll(&sh);
            assert_eq!(lock(&sh).analyzer.take().lines, 0);
        }
        assert!(open_regular(&real).is_ok());
    }

    #[test]
    fn lines_beyond_the_budget_are_counted_not_analysed() {
        let mut b = LineBudget::new(10, 100);
        let t0 = std::time::Instant::now();
        b.refill(t0);
        assert_eq!((0..1000).filter(|_| b.take()).count(), 100);
        b.refill(t0 + Duration::from_secs(2));
        assert_eq!((0..1000).filter(|_| b.take()).count(), 20);
        b.refill(t0 + Duration::from_secs(3600));
        assert_eq!((0..1000).filter(|_| b.take()).count(), 100);

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("flood.log");
        append(&p, "");
        let sh = shared();
        let mut f = FileFollower::new(p.clone(), None);
        f.budget = LineBudget::new(0, 5);
        f.poll(&sh);
        for _ in 0..8 {
            append(&p, FAIL);
        }
        f.poll(&sh);
        let acc = lock(&sh).analyzer.take();
        assert_eq!((acc.lines, acc.dropped), (5, 3));
    }

    #[test]
    fn a_followed_repeated_message_counts_each_occurrence_within_the_budget() {
        let mut b = LineBudget::new(0, 10);
        assert_eq!(
            (b.take_up_to(4), b.take_up_to(9), b.take_up_to(3)),
            (4, 6, 0)
        );

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("auth.log");
        append(&p, "");
        let sh = shared();
        let mut f = FileFollower::new(p.clone(), None);
        f.budget = LineBudget::new(0, 10);
        f.poll(&sh);
        append(&p, FAIL);
        append(&p, "Jan  1 00:00:00 h sshd[1]: message repeated 4 times: [ Failed password for root from 192.0.2.9 port 22 ssh2]\n");
        f.poll(&sh);
        let acc = lock(&sh).analyzer.take();
        assert_eq!((acc.lines, acc.repeated, acc.auth_attempts), (2, 3, 5));
        // Five tokens are left: the line takes one, four of its nine further occurrences fit.
        append(&p, "Jan  1 00:00:00 h sshd[1]: message repeated 10 times: [ Failed password for root from 192.0.2.9 port 22 ssh2]\n");
        f.poll(&sh);
        let acc = lock(&sh).analyzer.take();
        assert_eq!((acc.lines, acc.repeated, acc.dropped), (1, 4, 5));
        assert_eq!(acc.auth_attempts, 5);
    }

    #[test]
    fn a_follower_thread_stops_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fifo.log");
        assert!(std::process::Command::new("mkfifo")
            .arg(&p)
            .status()
            .unwrap()
            .success());
        let stop = CancellationToken::new();
        let t = spawn_file_follower(FileFollower::new(p, None), Arc::new(shared()), stop.clone())
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        stop.cancel();
        let t0 = std::time::Instant::now();
        t.join().unwrap();
        assert!(t0.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn a_vanished_file_is_reported_and_followed_again_when_it_returns() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.log");
        append(&p, "");
        let sh = shared();
        let mut f = FileFollower::new(p.clone(), None);
        f.poll(&sh);
        fs::remove_file(&p).unwrap();
        f.poll(&sh);
        append(&p, FAIL);
        f.poll(&sh);
        assert_eq!(failures(&sh), 1);
    }
}
