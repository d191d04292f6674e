//! The process walk: one read of `/proc/<pid>/stat` per process per tick, and the owner lookup
//! of listening sockets through `/proc/<pid>/fd`.
//!
//! `stat` alone gives everything a tick needs: the name (`comm`), CPU time (`utime + stime`),
//! start time (to tell a new process from a reused PID) and resident set size. The walk reuses
//! its path and read buffers and two PID maps that swap each tick, so a steady process set
//! allocates nothing; a process name is allocated once, when the process is first seen.
//!
//! Walking every `/proc/<pid>/fd` costs milliseconds, so [`socket_owners`] runs only when the
//! set of listening sockets changed, and stops as soon as every wanted inode is found.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};

use super::text::{dec_u64, read_whole_into};

/// `ESRCH`: reading the files of a process that is being reaped.
const ESRCH: i32 = 3;

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
#[derive(Debug, Clone)]
struct Proc {
    start: u64,
    cpu_ticks: u64,
    cpu_delta: u64,
    /// `cpu_delta` of the walk before.
    cpu_delta_prev: u64,
    rss_pages: u64,
    name: String,
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
    buf: Vec<u8>,
    rank: Vec<(u64, u32)>,
}

impl ProcessTable {
    /// Name of a live process as of the last walk.
    pub fn name_of(&self, pid: u32) -> Option<&str> {
        self.prev.get(&pid).map(|p| p.name.as_str())
    }

    /// Walks `<proc_root>/<pid>/stat`. `top` is how many top consumers to name. Fails only when
    /// `proc_root` itself cannot be listed.
    pub fn walk(&mut self, proc_root: &Path, top: usize) -> io::Result<ProcessSample> {
        let mut out = ProcessSample::default();
        self.cur.clear();
        for entry in std::fs::read_dir(proc_root)? {
            let Ok(entry) = entry else {
                out.vanished += 1;
                continue;
            };
            let name = entry.file_name();
            let Some(pid) = pid_of(&name) else { continue };
            self.path.as_mut_os_string().clear();
            self.path.push(proc_root);
            self.path.push(&name);
            self.path.push("stat");
            let data = match read_whole_into(&self.path, &mut self.buf) {
                Ok(d) => d,
                // Exited since the listing (ENOENT), or a zombie being reaped (ESRCH).
                Err(e)
                    if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(ESRCH) =>
                {
                    out.vanished += 1;
                    continue;
                }
                Err(e) => {
                    match &mut out.unreadable {
                        Some((n, _, _)) => *n += 1,
                        None => out.unreadable = Some((1, self.path.clone(), e)),
                    }
                    continue;
                }
            };
            let Some(st) = parse_stat(data) else {
                out.malformed += 1;
                continue;
            };
            let p = match self.prev.remove(&pid) {
                Some(mut old) if old.start == st.start => {
                    old.cpu_delta_prev = old.cpu_delta;
                    old.cpu_delta = st.cpu_ticks.saturating_sub(old.cpu_ticks);
                    old.cpu_ticks = st.cpu_ticks;
                    old.rss_pages = st.rss_pages;
                    if old.name.as_bytes() != st.name {
                        old.name = String::from_utf8_lossy(st.name).into_owned();
                    }
                    old
                }
                _ => {
                    let name = String::from_utf8_lossy(st.name).into_owned();
                    if self.walked {
                        out.new_names.push(name.clone());
                    }
                    Proc {
                        start: st.start,
                        cpu_ticks: st.cpu_ticks,
                        // A new process's CPU time was all spent within the interval.
                        cpu_delta: if self.walked { st.cpu_ticks } else { 0 },
                        cpu_delta_prev: 0,
                        rss_pages: st.rss_pages,
                        name,
                    }
                }
            };
            self.cur.insert(pid, p);
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
