//! The process walk: one read of `/proc/<pid>/stat` per process per tick, and the owner lookup
//! of listening sockets through `/proc/<pid>/fd`.
//!
//! `stat` alone gives everything a tick needs: the name (`comm`), CPU time (`utime + stime`),
//! start time (to tell a new process from a reused PID) and resident set size. The walk reuses
//! its path and read buffers and two PID maps that swap each tick, so a steady process set
//! allocates nothing; a process name is allocated once, when the process is first seen.
//!
//! Each process's `stat` file is opened once and kept open (up to [`MAX_OPEN_STAT`] files):
//! a tick reads it with one `pread` instead of `open`, `read`, `close`. An open `stat` file is
//! bound to the process, not to its PID number: once the process has exited it answers `ESRCH`,
//! even when the PID was reused, so a new process never inherits an old one's record.
//!
//! Listing `/proc` (`getdents64`) is needed only to find *new* processes, and a new process
//! needs a fork: when the kernel's fork counter (`processes` in `/proc/stat`, every `fork` and
//! `clone` of the machine) has not moved since the last listing, the tick reads the processes it
//! already knows (those that exited answer `ESRCH` and are dropped) and skips the listing. The
//! result is the same as a listing's: an `exec` keeps the PID and start time and shows its new
//! name in `stat`, and a process whose `stat` could not be read at the last listing is tried
//! again. A fork counter that cannot be read lists every tick.
//!
//! Walking every `/proc/<pid>/fd` costs milliseconds, so [`socket_owners`] runs only when the
//! set of listening sockets changed, and stops as soon as every wanted inode is found.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use super::text::dec_u64;

/// `ESRCH`: reading the files of a process that is being reaped.
const ESRCH: i32 = 3;
/// `stat` files kept open at most. Beyond it (a machine with more processes) the rest are read
/// by path each tick; the budget leaves most of a service's usual 1024 descriptors free.
pub const MAX_OPEN_STAT: usize = 512;

/// What `/proc/<pid>/stat` says about one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFields<'a> {
    /// `comm`: the executable name, at most 15 bytes, may contain spaces and parentheses.
    pub name: &'a [u8],
    /// `utime + stime` in clock ticks.
    pub cpu_ticks: u64,
    /// Start time after boot, in clock ticks.
    pub start: u64,
    /// Resident set size in pages.
    pub rss_pages: u64,
}

/// Parses `/proc/<pid>/stat`: `pid (comm) state ppid … utime(14) stime(15) … starttime(22)
/// vsize(23) rss(24) …`. `comm` is delimited by the first `(` and the *last* `)`, since the name
/// itself may contain `)`.
pub fn parse_stat(data: &[u8]) -> Option<StatFields<'_>> {
    let open = data.iter().position(|&b| b == b'(')?;
    let close = data.iter().rposition(|&b| b == b')')?;
    if close < open {
        return None;
    }
    let name = &data[open + 1..close];
    // Fields after ')' start at field 3 (state); stop at rss (24), the last one needed.
    let rest = &data[close + 1..];
    let (mut utime, mut stime, mut start, mut rss) = (None, None, None, None);
    let mut field_no = 2;
    let mut i = 0;
    while i < rest.len() {
        while i < rest.len() && rest[i].is_ascii_whitespace() {
            i += 1;
        }
        let from = i;
        while i < rest.len() && !rest[i].is_ascii_whitespace() {
            i += 1;
        }
        if from == i {
            break;
        }
        field_no += 1;
        let f = &rest[from..i];
        match field_no {
            14 => utime = Some(dec_u64(f)?),
            15 => stime = Some(dec_u64(f)?),
            22 => start = Some(dec_u64(f)?),
            24 => {
                rss = Some(dec_u64(f)?);
                break;
            }
            _ => {}
        }
    }
    let v = [utime?, stime?, start?, rss?];
    Some(StatFields {
        name,
        cpu_ticks: v[0].saturating_add(v[1]),
        start: v[2],
        rss_pages: v[3],
    })
}

/// A process as tracked between ticks.
#[derive(Debug)]
struct Proc {
    start: u64,
    cpu_ticks: u64,
    cpu_delta: u64,
    /// `cpu_delta` of the walk before.
    cpu_delta_prev: u64,
    rss_pages: u64,
    name: String,
    /// Its `stat` file, kept open (`None` beyond [`MAX_OPEN_STAT`]).
    file: Option<File>,
}

/// One tick of the process walk.
#[derive(Debug, Default)]
pub struct ProcessSample {
    /// Processes seen.
    pub count: usize,
    /// Names of processes started since the previous walk, sorted and deduplicated (empty on
    /// the first walk).
    pub new_names: Vec<String>,
    /// Names of the top CPU users over the interval (`None` on the first walk: no interval).
    pub top_cpu: Option<Vec<String>>,
    /// Names of the top resident-memory users.
    pub top_memory: Vec<String>,
    /// Per process name, the largest CPU time (clock ticks) one process of that name used over
    /// the last two intervals, sorted by name; names that used none are left out (`None` on the
    /// first walk).
    pub cpu_by_name: Option<Vec<(String, u64)>>,
    /// `/proc/<pid>/stat` files that did not parse.
    pub malformed: u64,
    /// Processes that exited between listing `/proc` and reading their `stat`.
    pub vanished: u64,
    /// `stat` files that exist but could not be read (e.g. permission), with the first error.
    pub unreadable: Option<(u64, PathBuf, io::Error)>,
}

/// Process state carried between ticks.
#[derive(Debug, Default)]
pub struct ProcessTable {
    prev: HashMap<u32, Proc>,
    cur: HashMap<u32, Proc>,
    walked: bool,
    path: PathBuf,
    num: String,
    buf: Vec<u8>,
    rank: Vec<(u64, u32)>,
    /// `stat` files open now.
    open_files: usize,
    /// Fork counter read before the last listing of `/proc`.
    listed_at: Option<u64>,
    /// Keep `stat` files open (the real `/proc` only: see [`ProcessTable::for_root`]).
    keep_open: bool,
    /// PIDs whose `stat` could not be read at the last listing.
    unreadable: Vec<u32>,
    /// Ticks that listed `/proc`, and ticks that did not need to.
    listings: u64,
    listings_skipped: u64,
}

/// How one `stat` read ended.
enum Read {
    /// Read into the buffer's first bytes (not parsed yet).
    Ok(usize),
    /// The process is gone.
    Gone,
    /// Exists but could not be read.
    Failed(io::Error),
}

impl ProcessTable {
    /// A table for `proc_root`. Files are kept open only under the real `/proc`, where an open
    /// `stat` file answers `ESRCH` once its process has gone; a fixture tree's files do not.
    pub fn for_root(proc_root: &Path) -> ProcessTable {
        ProcessTable {
            keep_open: proc_root == Path::new(super::PROC_ROOT),
            ..ProcessTable::default()
        }
    }

    /// Name of a live process as of the last walk.
    pub fn name_of(&self, pid: u32) -> Option<&str> {
        self.prev.get(&pid).map(|p| p.name.as_str())
    }

    /// Ticks that listed `/proc` and ticks that skipped the listing, so far.
    pub fn listings(&self) -> (u64, u64) {
        (self.listings, self.listings_skipped)
    }

    /// `stat` files held open now.
    pub fn open_files(&self) -> usize {
        self.open_files
    }

    /// Walks `<proc_root>/<pid>/stat`. `top` is how many top consumers to name; `forks` is the
    /// fork counter read before this call (`None` when unknown: then `/proc` is listed). Fails
    /// only when `proc_root` itself cannot be listed.
    pub fn walk(
        &mut self,
        proc_root: &Path,
        top: usize,
        forks: Option<u64>,
    ) -> io::Result<ProcessSample> {
        let mut out = ProcessSample::default();
        self.cur.clear();
        let quiet = self.walked && forks.is_some() && forks == self.listed_at;
        if quiet {
            self.listings_skipped += 1;
            let mut known = std::mem::take(&mut self.prev);
            for (pid, old) in known.drain() {
                self.sample_one(proc_root, pid, Some(old), &mut out);
            }
            // Processes unreadable at the last listing are tried again, as a listing would.
            for pid in std::mem::take(&mut self.unreadable) {
                self.sample_one(proc_root, pid, None, &mut out);
            }
            self.prev = known;
        } else {
            self.listings += 1;
            self.unreadable.clear();
            let mut gone_before = 0;
            for entry in std::fs::read_dir(proc_root)? {
                let Ok(entry) = entry else {
                    out.vanished += 1;
                    continue;
                };
                let Some(pid) = pid_of(&entry.file_name()) else {
                    continue;
                };
                let old = self.prev.remove(&pid);
                if !self.sample_one(proc_root, pid, old, &mut out) {
                    gone_before += 1;
                }
            }
            out.vanished += gone_before;
            // What the listing did not show has exited: close its file.
            for (_, p) in self.prev.drain() {
                if p.file.is_some() {
                    self.open_files -= 1;
                }
            }
            self.listed_at = forks;
        }
        std::mem::swap(&mut self.prev, &mut self.cur);
        out.count = self.prev.len();
        out.new_names.sort_unstable();
        out.new_names.dedup();
        if self.walked {
            out.top_cpu = Some(self.top_by(top, |p| p.cpu_delta));
            let mut by_name: Vec<(String, u64)> = Vec::new();
            for p in self.prev.values() {
                let used = p.cpu_delta.saturating_add(p.cpu_delta_prev);
                if used > 0 {
                    by_name.push((p.name.clone(), used));
                }
            }
            by_name.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
            by_name.dedup_by(|later, earlier| later.0 == earlier.0);
            out.cpu_by_name = Some(by_name);
        }
        out.top_memory = self.top_by(top, |p| p.rss_pages);
        self.walked = true;
        Ok(out)
    }

    /// Reads one process (through its open `stat` file when `old` has one) and files it into
    /// `cur`. False when it has exited.
    fn sample_one(
        &mut self,
        proc_root: &Path,
        pid: u32,
        old: Option<Proc>,
        out: &mut ProcessSample,
    ) -> bool {
        let mut old = old;
        let mut read = match old.as_ref().and_then(|p| p.file.as_ref()) {
            Some(f) => read_file(f, &mut self.buf),
            None => Read::Gone,
        };
        let mut file = None;
        // The process the open file belongs to has exited: whatever the PID holds now is new.
        let held_gone =
            matches!(read, Read::Gone) && old.as_ref().is_some_and(|p| p.file.is_some());
        if matches!(read, Read::Gone) {
            // No open file, or the one held belongs to a process that has exited (its PID may
            // have been reused): open by path.
            if let Some(p) = old.as_mut() {
                if p.file.take().is_some() {
                    self.open_files -= 1;
                }
            }
            stat_path(&mut self.path, &mut self.num, proc_root, pid);
            match File::open(&self.path) {
                Ok(f) => {
                    read = read_file(&f, &mut self.buf);
                    file = Some(f);
                }
                Err(e)
                    if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(ESRCH) =>
                {
                    read = Read::Gone;
                }
                Err(e) => read = Read::Failed(e),
            }
        }
        let st = match read {
            Read::Ok(len) => parse_stat(&self.buf[..len]),
            Read::Gone => {
                drop_file(&mut self.open_files, old);
                return false;
            }
            Read::Failed(e) => {
                drop_file(&mut self.open_files, old);
                self.unreadable.push(pid);
                match &mut out.unreadable {
                    Some((n, _, _)) => *n += 1,
                    None => {
                        stat_path(&mut self.path, &mut self.num, proc_root, pid);
                        out.unreadable = Some((1, self.path.clone(), e));
                    }
                }
                return true;
            }
        };
        let Some(StatFields {
            name,
            cpu_ticks,
            start,
            rss_pages,
        }) = st
        else {
            drop_file(&mut self.open_files, old);
            out.malformed += 1;
            return true;
        };
        let mut p = match old {
            Some(mut old) if old.start == start && !held_gone => {
                old.cpu_delta_prev = old.cpu_delta;
                old.cpu_delta = cpu_ticks.saturating_sub(old.cpu_ticks);
                old.cpu_ticks = cpu_ticks;
                old.rss_pages = rss_pages;
                if old.name.as_bytes() != name {
                    old.name = String::from_utf8_lossy(name).into_owned();
                }
                old
            }
            other => {
                drop_file(&mut self.open_files, other);
                let name = String::from_utf8_lossy(name).into_owned();
                if self.walked {
                    out.new_names.push(name.clone());
                }
                Proc {
                    start,
                    cpu_ticks,
                    // A new process's CPU time was all spent within the interval.
                    cpu_delta: if self.walked { cpu_ticks } else { 0 },
                    cpu_delta_prev: 0,
                    rss_pages,
                    name,
                    file: None,
                }
            }
        };
        if let Some(f) = file {
            if p.file.is_none() && self.keep_open && self.open_files < MAX_OPEN_STAT {
                p.file = Some(f);
                self.open_files += 1;
            }
        }
        self.cur.insert(pid, p);
        true
    }

    /// Names of the `n` processes with the largest non-zero `key`, largest first, deduplicated.
    fn top_by(&mut self, n: usize, key: impl Fn(&Proc) -> u64) -> Vec<String> {
        self.rank.clear();
        self.rank.extend(
            self.prev
                .iter()
                .map(|(&pid, p)| (key(p), pid))
                .filter(|(k, _)| *k > 0),
        );
        // Largest first; PID breaks ties so the order is deterministic.
        self.rank
            .sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut names: Vec<String> = Vec::with_capacity(n);
        for &(_, pid) in &self.rank {
            if names.len() == n {
                break;
            }
            if let Some(p) = self.prev.get(&pid) {
                if !names.contains(&p.name) {
                    names.push(p.name.clone());
                }
            }
        }
        names
    }
}

/// `<proc_root>/<pid>/stat` into `path`, reusing its and `num`'s allocations.
fn stat_path(path: &mut PathBuf, num: &mut String, proc_root: &Path, pid: u32) {
    use std::fmt::Write as _;
    num.clear();
    let _ = write!(num, "{pid}");
    path.as_mut_os_string().clear();
    path.push(proc_root);
    path.push(&*num);
    path.push("stat");
}

/// Closes the file a dropped record held.
fn drop_file(open_files: &mut usize, p: Option<Proc>) {
    if p.is_some_and(|p| p.file.is_some()) {
        *open_files -= 1;
    }
}

/// Reads a whole `stat` file with `pread` at offset 0 into `buf` (the shared reader of the
/// kept-open `/proc` files).
fn read_file(f: &File, buf: &mut Vec<u8>) -> Read {
    match super::text::pread_all(f, buf, true) {
        Ok(len) => Read::Ok(len),
        Err(e) if e.raw_os_error() == Some(ESRCH) || e.kind() == io::ErrorKind::NotFound => {
            Read::Gone
        }
        Err(e) => Read::Failed(e),
    }
}

fn pid_of(name: &OsStr) -> Option<u32> {
    let b = name.as_encoded_bytes();
    if b.first().is_none_or(|c| !c.is_ascii_digit()) {
        return None;
    }
    dec_u64(b).and_then(|v| u32::try_from(v).ok())
}

/// Parses an fd link target `socket:[12345]` into the socket inode.
pub fn socket_inode(target: &[u8]) -> Option<u64> {
    target
        .strip_prefix(b"socket:[")?
        .strip_suffix(b"]")
        .and_then(dec_u64)
}

/// Result of [`socket_owners`].
#[derive(Debug, Default)]
pub struct Owners {
    /// Owning process name per inode (first process found holding it).
    pub names: HashMap<u64, String>,
    /// Processes whose `fd` directory could not be read (other users' processes when not root).
    pub denied: u64,
}

/// Finds which processes hold the sockets `wanted` (sorted), by reading the `socket:[inode]`
/// links of every `<proc_root>/<pid>/fd/*`. Names come from `name_of(pid)` when known, else from
/// `<pid>/comm`. Stops as soon as every inode is found.
pub fn socket_owners(
    proc_root: &Path,
    wanted: &[u64],
    name_of: impl Fn(u32) -> Option<String>,
) -> io::Result<Owners> {
    let mut out = Owners::default();
    if wanted.is_empty() {
        return Ok(out);
    }
    let mut path = PathBuf::new();
    for entry in std::fs::read_dir(proc_root)? {
        let Ok(entry) = entry else { continue };
        let pid_name = entry.file_name();
        let Some(pid) = pid_of(&pid_name) else {
            continue;
        };
        path.as_mut_os_string().clear();
        path.push(proc_root);
        path.push(&pid_name);
        path.push("fd");
        let fds = match std::fs::read_dir(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                out.denied += 1;
                continue;
            }
            Err(_) => continue,
        };
        let mut found_here = false;
        for fd in fds {
            let Ok(fd) = fd else { continue };
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let Some(inode) = socket_inode(target.as_os_str().as_encoded_bytes()) else {
                continue;
            };
            if wanted.binary_search(&inode).is_ok() && !out.names.contains_key(&inode) {
                let name = name_of(pid).or_else(|| {
                    let comm = proc_root.join(pid_name.as_os_str()).join("comm");
                    std::fs::read(comm)
                        .ok()
                        .map(|b| String::from_utf8_lossy(b.trim_ascii()).into_owned())
                });
                if let Some(name) = name {
                    out.names.insert(inode, name);
                    found_here = true;
                }
            }
        }
        if found_here && out.names.len() == wanted.len() {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parses_names_with_spaces_and_parentheses() {
        let line = b"1234 (tmux: server) S 1 1234 1234 0 -1 4194560 300 0 0 0 25 17 0 0 20 0 1 0 4242 12345678 987 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.name, b"tmux: server");
        assert_eq!(s.cpu_ticks, 42);
        assert_eq!(s.start, 4242);
        assert_eq!(s.rss_pages, 987);
        let tricky = b"9 (a) b) c) R 1 1 1 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0 77 0 5\n";
        let s = parse_stat(tricky).unwrap();
        assert_eq!(s.name, b"a) b) c");
        assert_eq!((s.cpu_ticks, s.start, s.rss_pages), (7, 77, 5));
    }

    #[test]
    fn truncated_or_garbled_stat_is_rejected() {
        assert!(parse_stat(b"1234 (x) S 1 2 3").is_none());
        assert!(parse_stat(b"1234 x) S (").is_none());
        assert!(parse_stat(b"").is_none());
        assert!(parse_stat(b"1 (x) S 1 1 1 0 -1 0 0 0 0 0 x 4 0 0 20 0 1 0 77 0 5").is_none());
    }

    fn sleeper() -> std::process::Child {
        std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("sleep runs")
    }

    /// Waits (at most 5 s) until `pid` runs `name`: under qemu-user a spawned child may still
    /// carry the parent's name for a moment after `spawn` returns.
    fn wait_for_exec(pid: u32, name: &str) {
        for _ in 0..500 {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim_end() == name {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    fn has(t: &ProcessTable, pid: u32) -> bool {
        t.prev.contains_key(&pid)
    }

    #[test]
    fn quiet_ticks_read_open_files_and_drop_what_exited() {
        let root = Path::new("/proc");
        let mut t = ProcessTable::for_root(Path::new("/proc"));
        let mut a = sleeper();
        t.walk(root, 5, Some(1)).unwrap();
        assert!(has(&t, a.id()));
        assert!(t.open_files() > 0);
        // No fork since: the known processes are read through their open files, no listing.
        t.walk(root, 5, Some(1)).unwrap();
        assert_eq!(t.listings(), (1, 1));
        assert!(has(&t, a.id()));
        a.kill().unwrap();
        a.wait().unwrap();
        let open = t.open_files();
        let s = t.walk(root, 5, Some(1)).unwrap();
        assert!(
            !has(&t, a.id()),
            "an exited process is dropped without a listing"
        );
        // Its file is closed (other processes of the machine may have exited too).
        assert!(t.open_files() < open);
        assert_eq!(
            t.open_files(),
            t.prev.values().filter(|p| p.file.is_some()).count()
        );
        assert_eq!(
            s.vanished, 0,
            "exited between ticks is not vanished mid-read"
        );
        // A fork: the next tick lists /proc and finds the newcomer.
        let mut b = sleeper();
        wait_for_exec(b.id(), "sleep");
        let s = t.walk(root, 5, Some(2)).unwrap();
        assert!(has(&t, b.id()));
        assert!(s.new_names.contains(&"sleep".to_owned()));
        assert_eq!(t.listings(), (2, 2));
        b.kill().unwrap();
        b.wait().unwrap();
        // Unknown fork counter: always a listing.
        t.walk(root, 5, None).unwrap();
        t.walk(root, 5, None).unwrap();
        assert_eq!(t.listings(), (4, 2));
        assert!(!has(&t, b.id()));
    }

    #[test]
    fn the_open_file_budget_is_kept() {
        let mut t = ProcessTable::for_root(Path::new("/proc"));
        t.walk(Path::new("/proc"), 5, Some(1)).unwrap();
        let listed = t.prev.len();
        assert_eq!(t.open_files(), listed.min(MAX_OPEN_STAT));
        assert_eq!(
            t.open_files(),
            t.prev.values().filter(|p| p.file.is_some()).count()
        );
    }

    /// A PID taken over by a new process (steered with `ns_last_pid`, root only) is a new
    /// process: new name, own CPU time, never the old record.
    #[test]
    fn a_reused_pid_is_a_new_process() {
        const LAST_PID: &str = "/proc/sys/kernel/ns_last_pid";
        if std::fs::OpenOptions::new()
            .write(true)
            .open(LAST_PID)
            .is_err()
        {
            eprintln!("SKIPPED: {LAST_PID} is not writable (needs root in this PID namespace)");
            return;
        }
        let root = Path::new("/proc");
        for _attempt in 0..20 {
            let mut t = ProcessTable::for_root(Path::new("/proc"));
            let mut old = sleeper();
            let pid = old.id();
            t.walk(root, 5, Some(1)).unwrap();
            assert_eq!(t.name_of(pid), Some("sleep"));
            t.prev.get_mut(&pid).unwrap().cpu_ticks = 1_000_000;
            old.kill().unwrap();
            old.wait().unwrap();
            std::fs::write(LAST_PID, (pid - 1).to_string()).unwrap();
            let mut new = std::process::Command::new("cat")
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let reused = new.id() == pid;
            if reused {
                wait_for_exec(pid, "cat");
                let s = t.walk(root, 5, Some(2)).unwrap();
                assert_eq!(t.name_of(pid), Some("cat"));
                assert!(s.new_names.contains(&"cat".to_owned()));
                // Its CPU time is its own, not a delta against the old record.
                assert!(t.prev[&pid].cpu_ticks < 1_000_000);
                assert_eq!(t.prev[&pid].cpu_delta, t.prev[&pid].cpu_ticks);
            }
            new.kill().unwrap();
            new.wait().unwrap();
            if reused {
                return;
            }
            // Another process forked in between and took the PID: try again.
        }
        panic!("no PID could be reused in 20 attempts");
    }

    #[test]
    fn socket_links_parse() {
        assert_eq!(socket_inode(b"socket:[12345]"), Some(12345));
        assert_eq!(socket_inode(b"pipe:[12345]"), None);
        assert_eq!(socket_inode(b"socket:[]"), None);
        assert_eq!(socket_inode(b"socket:[12"), None);
    }

    #[test]
    fn pid_names_are_numeric_only() {
        assert_eq!(pid_of(OsStr::new("123")), Some(123));
        assert_eq!(pid_of(OsStr::new("self")), None);
        assert_eq!(pid_of(OsStr::new("99999999999")), None);
    }
}
