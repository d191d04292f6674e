//! Byte-level helpers shared by the `/proc` parsers: whitespace splitting, checked number
//! parsing, and a file reader that reuses its buffer.
//!
//! The parsers work on `&[u8]` slices of one reused buffer, so a tick allocates nothing for
//! parsing. Every number is parsed with overflow checks; a field that does not parse makes the
//! line malformed, never a panic.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// Largest file the collectors read (a `/proc/net/tcp` of ~100k sockets). Beyond it the read
/// fails instead of growing memory without bound.
pub(crate) const MAX_FILE_BYTES: usize = 64 << 20;

/// Reads all of `path` into `buf` (grown as needed, never shrunk) and returns the content.
///
/// Unlike `std::fs::read`, this neither allocates per call nor issues `statx`/`lseek` for a
/// size hint that procfs files do not have: one `open`, the `read`s, one `close`.
pub(crate) fn read_into<'b>(path: &Path, buf: &'b mut Vec<u8>) -> io::Result<&'b [u8]> {
    read_impl(path, buf, false)
}

fn read_impl<'b>(path: &Path, buf: &'b mut Vec<u8>, single: bool) -> io::Result<&'b [u8]> {
    let mut f = File::open(path)?;
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
        match f.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => {
                len += n;
                if single && len < buf.len() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(&buf[..len])
}

/// Like [`read_into`], for files the kernel renders in one piece (`single_open` seq files such
/// as `/proc/<pid>/stat`, `/proc/meminfo`, `/proc/loadavg`): a read that does not fill the
/// buffer has returned everything, so the end-of-file `read` is skipped. That is one syscall
/// less per process per tick. Multi-record files (`/proc/net/*` tables) must use [`read_into`].
pub(crate) fn read_whole_into<'b>(path: &Path, buf: &'b mut Vec<u8>) -> io::Result<&'b [u8]> {
    read_impl(path, buf, true)
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
        assert_eq!(read_whole_into(&p, &mut buf).unwrap(), b"short");
        std::fs::write(&p, &content).unwrap();
        let mut small = Vec::new();
        assert_eq!(read_whole_into(&p, &mut small).unwrap(), &content[..]);
    }
}
