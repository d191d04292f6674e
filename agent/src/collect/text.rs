//! Byte-level helpers shared by the `/proc` parsers: whitespace splitting, checked number
//! parsing, and a file reader that reuses its buffer.
//!
//! The parsers work on `&[u8]` slices of one reused buffer, so a tick allocates nothing for
//! parsing. Every number is parsed with overflow checks; a field that does not parse makes the
//! line malformed, never a panic.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

/// Largest file the collectors read (a `/proc/net/tcp` of ~100k sockets). Beyond it the read
/// fails instead of growing memory without bound.
pub(crate) const MAX_FILE_BYTES: usize = 64 << 20;

/// Reads all of `path` into `buf` (grown as needed, never shrunk) and returns the content.
///
/// Unlike `std::fs::read`, this neither allocates per call nor issues `statx`/`lseek` for a
/// size hint that procfs files do not have: one `open`, the `read`s, one `close`.
pub(crate) fn read_into<'b>(path: &Path, buf: &'b mut Vec<u8>) -> io::Result<&'b [u8]> {
    let mut f = File::open(path)?;
    let n = fill(buf, false, |dst, _| f.read(dst))?;
    Ok(&buf[..n])
}

/// The read loop of [`read_into`] and [`pread_all`]: `read(dst, offset)` into `buf` (grown as
/// needed up to [`MAX_FILE_BYTES`], never shrunk) until end of file, or, with `single`, until
/// a read that does not fill the buffer. Returns the length read.
fn fill(
    buf: &mut Vec<u8>,
    single: bool,
    mut read: impl FnMut(&mut [u8], u64) -> io::Result<usize>,
) -> io::Result<usize> {
    let mut len = 0;
    loop {
        if len == buf.len() {
            if buf.len() >= MAX_FILE_BYTES {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("file larger than {MAX_FILE_BYTES} bytes"),
                ));
            }
            let grown = (buf.len() * 2).clamp(4096, MAX_FILE_BYTES);
            buf.resize(grown, 0);
        }
        match read(&mut buf[len..], len as u64) {
            Ok(0) => return Ok(len),
            Ok(n) => {
                len += n;
                if single && len < buf.len() {
                    return Ok(len);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// A `/proc` file opened once and re-read each tick with `pread` from offset 0: the kernel
/// renders it afresh for every read at offset 0, and the tick saves the `open` (with its path
/// lookup) and the `close`. A read error closes it; the next read opens it again.
#[derive(Debug)]
pub(crate) struct ProcFile {
    path: PathBuf,
    file: Option<File>,
    /// Keep the file open between reads: only under the real `/proc`, whose files are never
    /// replaced (a fixture tree may rename a new file over an old one).
    keep_open: bool,
    /// Rendered in one piece (`single_open`): a short read is the whole file.
    single: bool,
}

impl ProcFile {
    /// A multi-record file (`/proc/net/dev`, `/proc/net/snmp`): read until end of file.
    pub(crate) fn new(path: PathBuf) -> ProcFile {
        let keep_open = path.starts_with(super::PROC_ROOT);
        ProcFile {
            path,
            file: None,
            keep_open,
            single: false,
        }
    }

    /// A file rendered in one piece (`/proc/stat`, `/proc/meminfo`, `/proc/loadavg`,
    /// `/proc/uptime`, `/proc/net/sockstat`): one `pread` when it fits the buffer.
    pub(crate) fn single(path: PathBuf) -> ProcFile {
        ProcFile {
            single: true,
            ..ProcFile::new(path)
        }
    }

    /// Its path, for messages.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The whole file, in `buf` (grown as needed, never shrunk).
    pub(crate) fn read<'b>(&mut self, buf: &'b mut Vec<u8>) -> io::Result<&'b [u8]> {
        let file = match &self.file {
            Some(f) => f,
            None => self.file.insert(File::open(&self.path)?),
        };
        let r = pread_all(file, buf, self.single);
        if r.is_err() || !self.keep_open {
            self.file = None;
        }
        r.map(|n| &buf[..n])
    }
}

/// Reads all of `f` with `pread` from offset 0 into `buf` (grown as needed, never shrunk);
/// returns the length. `single`: a read that does not fill the buffer was the whole file.
pub(crate) fn pread_all(f: &File, buf: &mut Vec<u8>, single: bool) -> io::Result<usize> {
    fill(buf, single, |dst, offset| f.read_at(dst, offset))
}

/// Fields of a line separated by runs of ASCII whitespace (spaces, tabs), empty fields skipped.
pub(crate) fn fields(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty())
}

/// Lines of a file, without their `\n` (a final line without newline is kept).
pub(crate) fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let data = data.strip_suffix(b"\n").unwrap_or(data);
    data.split(|&b| b == b'\n')
        .filter(move |_| !data.is_empty())
}

/// Trims ASCII whitespace at both ends.
pub(crate) fn trim(s: &[u8]) -> &[u8] {
    s.trim_ascii()
}

/// Parses an unsigned decimal number (`u64`), rejecting signs, empty input and overflow.
pub(crate) fn dec_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d))?;
    }
    Some(v)
}

/// Parses a signed decimal number (`i64`), e.g. `-1` for `MaxConn` in `/proc/net/snmp`.
pub(crate) fn dec_i64(s: &[u8]) -> Option<i64> {
    match s.split_first() {
        Some((b'-', rest)) => {
            let v = dec_u64(rest)?;
            if v == 1 << 63 {
                Some(i64::MIN)
            } else {
                i64::try_from(v).ok().map(|v| -v)
            }
        }
        _ => dec_u64(s).and_then(|v| i64::try_from(v).ok()),
    }
}

/// Parses a decimal number with an optional fractional part (`"0.52"`, `"12345.67"`).
pub(crate) fn dec_f64(s: &[u8]) -> Option<f64> {
    let t = std::str::from_utf8(s).ok()?;
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    t.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Parses exactly `s.len()` (1–16) hexadecimal digits into a `u64`.
pub(crate) fn hex_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return None,
        };
        v = (v << 4) | u64::from(d);
    }
    Some(v)
}

/// Parses exactly eight hex digits into a `u32`.
pub(crate) fn hex_u32_exact(s: &[u8]) -> Option<u32> {
    if s.len() != 8 {
        return None;
    }
    hex_u64(s).and_then(|v| u32::try_from(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_parsing_rejects_signs_garbage_and_overflow() {
        assert_eq!(dec_u64(b"0"), Some(0));
        assert_eq!(dec_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(dec_u64(b"18446744073709551616"), None);
        assert_eq!(dec_u64(b""), None);
        assert_eq!(dec_u64(b"+1"), None);
        assert_eq!(dec_u64(b"1a"), None);
        assert_eq!(dec_i64(b"-1"), Some(-1));
        assert_eq!(dec_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(dec_i64(b"9223372036854775808"), None);
        assert_eq!(dec_i64(b"-"), None);
    }

    #[test]
    fn hex_parsing_accepts_both_cases_and_checks_width() {
        assert_eq!(hex_u64(b"0A"), Some(10));
        assert_eq!(hex_u64(b"ffFF"), Some(0xffff));
        assert_eq!(hex_u64(b"g"), None);
        assert_eq!(hex_u64(b"11112222333344445"), None);
        assert_eq!(hex_u32_exact(b"0100007F"), Some(0x0100_007f));
        assert_eq!(hex_u32_exact(b"100007F"), None);
    }

    #[test]
    fn fields_skip_runs_of_spaces_and_tabs() {
        let v: Vec<&[u8]> = fields(b"  a\t\tb   c ").collect();
        assert_eq!(v, vec![&b"a"[..], b"b", b"c"]);
    }

    #[test]
    fn lines_drop_the_final_newline_only() {
        let v: Vec<&[u8]> = lines(b"a\n\nb\n").collect();
        assert_eq!(v, vec![&b"a"[..], b"", b"b"]);
        assert_eq!(lines(b"").count(), 0);
        assert_eq!(lines(b"x").count(), 1);
    }

    #[test]
    fn read_into_reuses_the_buffer_and_reads_whole_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let content = vec![b'x'; 10_000];
        std::fs::write(&p, &content).unwrap();
        let mut buf = Vec::new();
        assert_eq!(read_into(&p, &mut buf).unwrap(), &content[..]);
        let cap = buf.capacity();
        std::fs::write(&p, b"short").unwrap();
        assert_eq!(read_into(&p, &mut buf).unwrap(), b"short");
        assert_eq!(buf.capacity(), cap);
        let mut f = ProcFile::single(p.clone());
        assert_eq!(f.read(&mut buf).unwrap(), b"short");
        std::fs::write(&p, &content).unwrap();
        let mut small = Vec::new();
        assert_eq!(f.read(&mut small).unwrap(), &content[..]);
        let mut multi = ProcFile::new(p.clone());
        assert_eq!(multi.read(&mut small).unwrap(), &content[..]);
        // Outside /proc the file is opened afresh: a file renamed over it is seen.
        let q = dir.path().join("g");
        std::fs::write(&q, b"new").unwrap();
        std::fs::rename(&q, &p).unwrap();
        assert_eq!(multi.read(&mut small).unwrap(), b"new");
    }
}
