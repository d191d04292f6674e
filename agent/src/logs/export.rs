//! `journalctl -o export` input: the journal export format, turned into the one-line JSON entries
//! the analyzer reads (`journalctl -o json` form), trusted fields included.
//!
//! The format: records separated by an empty line; each field either `NAME=value` on one line,
//! or, for values that are binary or contain a newline, `NAME` on its own line followed by the
//! value's length (64-bit little endian), the value, and a newline. Field names are upper-case
//! letters, digits and `_`.
//!
//! Bounds: a record's fields are kept up to [`MAX_RECORD`] bytes and one value up to
//! [`MAX_VALUE`] bytes; a longer value is skipped without being buffered and its record counted
//! as oversized instead of emitted.

use serde_json::{Map, Value};

/// Largest value kept (bytes); the analyzer's line cap.
pub const MAX_VALUE: usize = super::lines::MAX_LINE;
/// Largest record kept (bytes of its fields).
pub const MAX_RECORD: usize = 4 * MAX_VALUE;

/// What the parser hands out.
#[derive(Debug, PartialEq, Eq)]
pub enum ExportItem<'a> {
    /// One record as a `journalctl -o json` line.
    Entry(&'a [u8]),
    /// A record skipped for exceeding the bounds or being malformed.
    Oversized,
}

/// Incremental parser of the export format.
#[derive(Debug, Default)]
pub struct ExportParser {
    buf: Vec<u8>,
    fields: Map<String, Value>,
    record_bytes: usize,
    /// Bytes of an oversized binary value still to skip (plus its newline).
    skip: u64,
    /// The current record exceeded the bounds: drop it at its end.
    spoiled: bool,
    json: Vec<u8>,
}

/// True when `data` starts like export input (`NAME=` at the start of the first line).
pub fn looks_like_export(data: &[u8]) -> bool {
    let name_len = data
        .iter()
        .take_while(|&&b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        .count();
    name_len > 0
        && data.get(name_len) == Some(&b'=')
        && data.first().is_some_and(|b| !b.is_ascii_digit())
}

fn valid_name(n: &[u8]) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.iter()
            .all(|&b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

impl ExportParser {
    /// A parser at the start of a stream.
    pub fn new() -> ExportParser {
        ExportParser::default()
    }

    /// Feeds bytes; calls `out` for every record completed.
    pub fn feed(&mut self, mut data: &[u8], mut out: impl FnMut(ExportItem<'_>)) {
        if self.skip > 0 {
            let n = usize::try_from(self.skip)
                .unwrap_or(usize::MAX)
                .min(data.len());
            self.skip -= n as u64;
            data = &data[n..];
        }
        self.buf.extend_from_slice(data);
        let mut pos = 0;
        loop {
            if self.skip > 0 {
                let n = usize::try_from(self.skip)
                    .unwrap_or(usize::MAX)
                    .min(self.buf.len() - pos);
                self.skip -= n as u64;
                pos += n;
                if self.skip > 0 {
                    break;
                }
            }
            let rest = &self.buf[pos..];
            let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                if rest.len() > MAX_VALUE + 64 {
                    // A line that never ends within the bounds: drop it and its record.
                    self.spoiled = true;
                    pos = self.buf.len();
                }
                break;
            };
            let line = &rest[..nl];
            if line.is_empty() {
                pos += 1;
                self.end_record(&mut out);
                continue;
            }
            if let Some(eq) = line.iter().position(|&b| b == b'=') {
                let (name, value) = (&line[..eq], &line[eq + 1..]);
                if valid_name(name) {
                    let (name, value) = (name.to_vec(), value.to_vec());
                    self.add(&name, &value);
                } else {
                    self.spoiled = true;
                }
                pos += nl + 1;
                continue;
            }
            // A binary field: NAME \n, u64 LE length, value, \n.
            if !valid_name(line) {
                self.spoiled = true;
                pos += nl + 1;
                continue;
            }
            let after = &rest[nl + 1..];
            if after.len() < 8 {
                break;
            }
            let len = u64::from_le_bytes(after[..8].try_into().expect("8 bytes"));
            if len > MAX_VALUE as u64 {
                self.spoiled = true;
                let available = (after.len() - 8) as u64;
                let total = len.saturating_add(1);
                if available >= total {
                    pos += nl + 1 + 8 + usize::try_from(total).expect("fits in the buffer");
                } else {
                    self.skip = total - available;
                    pos = self.buf.len();
                }
                continue;
            }
            let len = usize::try_from(len).expect("at most MAX_VALUE");
            if after.len() < 8 + len + 1 {
                break;
            }
            let name = line.to_vec();
            let value = after[8..8 + len].to_vec();
            self.add(&name, &value);
            pos += nl + 1 + 8 + len + 1;
        }
        self.buf.drain(..pos);
    }

    /// Ends the stream: a last record without its empty line is delivered.
    pub fn finish(&mut self, mut out: impl FnMut(ExportItem<'_>)) {
        if !self.buf.is_empty() {
            let mut tail = std::mem::take(&mut self.buf);
            if tail.last() != Some(&b'\n') {
                tail.push(b'\n');
            }
            self.feed(&tail, &mut out);
        }
        self.buf.clear();
        self.skip = 0;
        self.end_record(&mut out);
    }

    fn add(&mut self, name: &[u8], value: &[u8]) {
        self.record_bytes += name.len() + value.len();
        if self.record_bytes > MAX_RECORD || value.len() > MAX_VALUE {
            self.spoiled = true;
            return;
        }
        let name = String::from_utf8_lossy(name).into_owned();
        if self.fields.contains_key(&name) {
            // Several values for one field: the first is used, as with `-o json`.
            return;
        }
        let v = match std::str::from_utf8(value) {
            Ok(s) => Value::String(s.to_owned()),
            Err(_) => Value::Array(value.iter().map(|&b| Value::from(b)).collect()),
        };
        self.fields.insert(name, v);
    }

    fn end_record(&mut self, out: &mut impl FnMut(ExportItem<'_>)) {
        let had = !self.fields.is_empty() || self.spoiled;
        if self.spoiled {
            out(ExportItem::Oversized);
        } else if had {
            self.json.clear();
            let fields = std::mem::take(&mut self.fields);
            serde_json::to_writer(&mut self.json, &Value::Object(fields))
                .expect("a JSON value always serializes");
            out(ExportItem::Entry(&self.json));
        }
        self.fields.clear();
        self.record_bytes = 0;
        self.spoiled = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn binary(name: &str, value: &[u8]) -> Vec<u8> {
        let mut v = name.as_bytes().to_vec();
        v.push(b'\n');
        v.extend_from_slice(&(value.len() as u64).to_le_bytes());
        v.extend_from_slice(value);
        v.push(b'\n');
        v
    }

    fn sample() -> Vec<u8> {
        let mut d = b"__CURSOR=s=1\n__REALTIME_TIMESTAMP=1795801411249695\n_PID=41\n_UID=0\n_COMM=sshd\n_EXE=/usr/sbin/sshd\n_TRANSPORT=syslog\nSYSLOG_IDENTIFIER=sshd\nMESSAGE=Failed password for root from 192.0.2.9 port 22 ssh2\n\n".to_vec();
        d.extend_from_slice(b"__CURSOR=s=2\nSYSLOG_IDENTIFIER=sshd\n_UID=1000\n_COMM=logger\n");
        d.extend(binary(
            "MESSAGE",
            b"Failed password for root\nfrom 10.9.9.9 port 1 ssh2\xff",
        ));
        d.push(b'\n');
        d
    }

    fn parse_all(data: &[u8], cuts: &[usize]) -> Vec<Option<Value>> {
        let mut p = ExportParser::new();
        let mut got = Vec::new();
        let mut on = |i: ExportItem<'_>| {
            got.push(match i {
                ExportItem::Entry(j) => Some(serde_json::from_slice(j).unwrap()),
                ExportItem::Oversized => None,
            })
        };
        let mut at = 0;
        for &c in cuts {
            let c = c.min(data.len()).max(at);
            p.feed(&data[at..c], &mut on);
            at = c;
        }
        p.feed(&data[at..], &mut on);
        p.finish(&mut on);
        got
    }

    #[test]
    fn records_become_journal_json_with_their_trusted_fields() {
        let got = parse_all(&sample(), &[]);
        assert_eq!(got.len(), 2);
        let a = got[0].as_ref().unwrap();
        assert_eq!(a["_COMM"], "sshd");
        assert_eq!(
            a["MESSAGE"],
            "Failed password for root from 192.0.2.9 port 22 ssh2"
        );
        let b = got[1].as_ref().unwrap();
        assert!(b["MESSAGE"].is_array(), "binary value as bytes: {b}");
        assert!(looks_like_export(&sample()));
        assert!(!looks_like_export(b"Jan  1 00:00:00 h sshd[1]: x"));
        assert!(!looks_like_export(b"1795801273: Client x"));
    }

    #[test]
    fn oversized_values_are_skipped_without_buffering_them() {
        let mut d = b"MESSAGE=ok\n\n".to_vec();
        d.extend_from_slice(b"SYSLOG_IDENTIFIER=x\n");
        d.extend(binary("MESSAGE", &vec![b'a'; MAX_VALUE + 10]));
        d.extend_from_slice(b"\nMESSAGE=after\n\n");
        let got = parse_all(&d, &[20, 100, 5000, 70_000]);
        assert_eq!(got.len(), 3);
        assert!(got[1].is_none());
        assert_eq!(got[2].as_ref().unwrap()["MESSAGE"], "after");
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_records(cuts in prop::collection::vec(0usize..400, 0..6)) {
            let d = sample();
            let mut cuts = cuts;
            cuts.sort_unstable();
            prop_assert_eq!(parse_all(&d, &cuts), parse_all(&d, &[]));
        }

        #[test]
        fn any_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_all(&data, &[7, 100]);
        }
    }
}
