//! One segment: a data file of checksummed records and its acknowledgement file.
//!
//! This module knows the byte layout described in the parent module and nothing about bounds or
//! replay order. Every write goes through [`write_all_at_end`] followed by an explicit
//! `sync_data`, so a returned `Ok` means the bytes are on stable storage.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::SpoolError;

/// Magic at the start of every data file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"EWSPOOL\0";
/// On-disk format version written after the magic.
pub const SEGMENT_VERSION: u32 = 1;
/// Length of the data file header: magic, version, reserved.
pub const SEGMENT_HEADER_LEN: u64 = 16;
/// Magic at the start of every record, used to find the next record after a corrupt one.
pub const RECORD_MAGIC: [u8; 4] = *b"EWr1";
/// Fixed part of a record: magic, crc, id, topic length, flags, payload length.
pub const RECORD_HEADER_LEN: usize = 24;
/// One acknowledgement entry: id and its CRC32.
pub const ACK_ENTRY_LEN: usize = 12;

/// Data file name of the segment whose first record id is `first_id`.
pub fn data_file_name(first_id: u64) -> String {
    format!("{first_id:020}.seg")
}

/// Acknowledgement file name of the segment whose first record id is `first_id`.
pub fn ack_file_name(first_id: u64) -> String {
    format!("{first_id:020}.ack")
}

/// Parses `NNNNNNNNNNNNNNNNNNNN.seg` / `.ack` into the first id and whether it is a data file.
pub fn parse_file_name(name: &str) -> Option<(u64, bool)> {
    let (stem, is_data) = if let Some(s) = name.strip_suffix(".seg") {
        (s, true)
    } else if let Some(s) = name.strip_suffix(".ack") {
        (s, false)
    } else {
        return None;
    };
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok().map(|id| (id, is_data))
}

/// The segment file header.
pub fn segment_header() -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    h[..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    h
}

/// The encoded size of a record with this topic and payload.
pub fn record_len(topic_len: usize, payload_len: usize) -> u64 {
    (RECORD_HEADER_LEN + topic_len + payload_len) as u64
}

/// Encodes one record. The CRC covers everything after the CRC field.
pub fn encode_record(id: u64, topic: &str, payload: &[u8]) -> Vec<u8> {
    let topic_len =
        u16::try_from(topic.len()).expect("topic length was checked by the caller (<= u16::MAX)");
    let payload_len = u32::try_from(payload.len())
        .expect("payload length was checked by the caller (<= u32::MAX)");
    let mut buf = Vec::with_capacity(RECORD_HEADER_LEN + topic.len() + payload.len());
    buf.extend_from_slice(&RECORD_MAGIC);
    buf.extend_from_slice(&[0; 4]); // CRC, filled below
    buf.extend_from_slice(&id.to_le_bytes());
    buf.extend_from_slice(&topic_len.to_le_bytes());
    buf.extend_from_slice(&0u16.to_le_bytes()); // flags, reserved
    buf.extend_from_slice(&payload_len.to_le_bytes());
    buf.extend_from_slice(topic.as_bytes());
    buf.extend_from_slice(payload);
    let crc = crc32fast::hash(&buf[8..]);
    buf[4..8].copy_from_slice(&crc.to_le_bytes());
    buf
}

/// The fixed header of a record, as read from disk (not yet verified).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Stored CRC32.
    pub crc: u32,
    /// Record id.
    pub id: u64,
    /// Topic length in bytes.
    pub topic_len: u16,
    /// Payload length in bytes.
    pub payload_len: u32,
}

impl RecordHeader {
    /// Parses a header; `None` when the magic is wrong or the reserved flags are set.
    pub fn parse(b: &[u8; RECORD_HEADER_LEN]) -> Option<RecordHeader> {
        if b[..4] != RECORD_MAGIC {
            return None;
        }
        let flags = u16::from_le_bytes([b[18], b[19]]);
        if flags != 0 {
            return None;
        }
        Some(RecordHeader {
            crc: u32::from_le_bytes(b[4..8].try_into().expect("4 bytes")),
            id: u64::from_le_bytes(b[8..16].try_into().expect("8 bytes")),
            topic_len: u16::from_le_bytes([b[16], b[17]]),
            payload_len: u32::from_le_bytes(b[20..24].try_into().expect("4 bytes")),
        })
    }

    /// Total encoded length of the record.
    pub fn total_len(&self) -> u64 {
        record_len(self.topic_len.into(), self.payload_len as usize)
    }
}

/// Decodes and verifies a complete record from `buf` (exactly one record long).
///
/// Returns the id, topic and payload, or `None` when the bytes are not a valid record.
pub fn decode_record(buf: &[u8]) -> Option<(u64, String, Vec<u8>)> {
    let head: &[u8; RECORD_HEADER_LEN] = buf.get(..RECORD_HEADER_LEN)?.try_into().ok()?;
    let h = RecordHeader::parse(head)?;
    if h.total_len() != buf.len() as u64 || crc32fast::hash(&buf[8..]) != h.crc {
        return None;
    }
    let topic_end = RECORD_HEADER_LEN + usize::from(h.topic_len);
    let topic = std::str::from_utf8(&buf[RECORD_HEADER_LEN..topic_end]).ok()?;
    Some((h.id, topic.to_owned(), buf[topic_end..].to_vec()))
}

/// Encodes one acknowledgement entry.
pub fn encode_ack(id: u64) -> [u8; ACK_ENTRY_LEN] {
    let mut e = [0u8; ACK_ENTRY_LEN];
    e[..8].copy_from_slice(&id.to_le_bytes());
    let crc = crc32fast::hash(&e[..8]);
    e[8..].copy_from_slice(&crc.to_le_bytes());
    e
}

/// Decodes one acknowledgement entry; `None` when its checksum is wrong.
pub fn decode_ack(e: &[u8; ACK_ENTRY_LEN]) -> Option<u64> {
    let crc = u32::from_le_bytes(e[8..].try_into().expect("4 bytes"));
    (crc32fast::hash(&e[..8]) == crc).then(|| u64::from_le_bytes(e[..8].try_into().expect("8")))
}

/// Writes `buf` at the current end of `file` (opened in append mode) and syncs the data.
pub fn write_all_at_end(file: &mut File, buf: &[u8], path: &Path) -> Result<(), SpoolError> {
    file.write_all(buf)
        .map_err(|e| SpoolError::io("write", path, e))?;
    file.sync_data()
        .map_err(|e| SpoolError::io("fsync", path, e))
}

/// Syncs a directory so that created, renamed or removed entries are durable.
pub fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| SpoolError::io("fsync directory", dir, e))
}

/// An open segment: its data file (records), its acknowledgement file, and bookkeeping.
#[derive(Debug)]
pub struct Segment {
    /// Id of the first record this segment may hold; also its file name.
    pub first_id: u64,
    /// Data file path.
    pub data_path: PathBuf,
    /// Acknowledgement file path.
    pub ack_path: PathBuf,
    /// Data file, opened for appending and positional reads.
    pub data: File,
    /// Acknowledgement file, opened for appending.
    pub ack: File,
    /// Bytes in the data file.
    pub data_len: u64,
    /// Bytes in the acknowledgement file.
    pub ack_len: u64,
    /// Records of this segment that are still pending.
    pub live: usize,
}

impl Segment {
    /// Creates a new, empty segment and makes its two files durable.
    pub fn create(dir: &Path, first_id: u64) -> Result<Segment, SpoolError> {
        let data_path = dir.join(data_file_name(first_id));
        let ack_path = dir.join(ack_file_name(first_id));
        let mut data = open_append(&data_path, true)?;
        write_all_at_end(&mut data, &segment_header(), &data_path)?;
        let ack = open_append(&ack_path, true)?;
        ack.sync_all()
            .map_err(|e| SpoolError::io("fsync", &ack_path, e))?;
        sync_dir(dir)?;
        Ok(Segment {
            first_id,
            data_path,
            ack_path,
            data,
            ack,
            data_len: SEGMENT_HEADER_LEN,
            ack_len: 0,
            live: 0,
        })
    }

    /// Bytes this segment occupies on disk.
    pub fn disk_len(&self) -> u64 {
        self.data_len + self.ack_len
    }

    /// Appends an encoded record; returns its offset. Durable when it returns.
    pub fn append_record(&mut self, rec: &[u8]) -> Result<u64, SpoolError> {
        let offset = self.data_len;
        if let Err(e) = write_all_at_end(&mut self.data, rec, &self.data_path) {
            // A partial write may be on disk; cut it off so the next record starts cleanly.
            // If even that fails, recovery will detect the torn record by its checksum.
            if self.data.set_len(offset).is_ok() {
                self.data_len = offset;
            }
            return Err(e);
        }
        self.data_len += rec.len() as u64;
        Ok(offset)
    }

    /// Appends acknowledgement entries for `ids`. Durable when it returns.
    pub fn append_acks(&mut self, ids: &[u64]) -> Result<(), SpoolError> {
        let mut buf = Vec::with_capacity(ids.len() * ACK_ENTRY_LEN);
        for &id in ids {
            buf.extend_from_slice(&encode_ack(id));
        }
        let before = self.ack_len;
        if let Err(e) = write_all_at_end(&mut self.ack, &buf, &self.ack_path) {
            if self.ack.set_len(before).is_ok() {
                self.ack_len = before;
            }
            return Err(e);
        }
        self.ack_len += buf.len() as u64;
        Ok(())
    }

    /// Reads `len` bytes at `offset` of the data file.
    pub fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, SpoolError> {
        let mut buf = vec![0u8; len];
        self.data
            .read_exact_at(&mut buf, offset)
            .map_err(|e| SpoolError::io("read", &self.data_path, e))?;
        Ok(buf)
    }

    /// Removes both files: the data file first, so that a crash in between can only leave an
    /// orphan acknowledgement file (harmless, cleaned at the next open), never records whose
    /// acknowledgements are gone.
    pub fn remove(self, dir: &Path) -> Result<(), SpoolError> {
        let Segment {
            data_path,
            ack_path,
            data,
            ack,
            ..
        } = self;
        drop(data);
        drop(ack);
        remove_if_exists(&data_path)?;
        sync_dir(dir)?;
        remove_if_exists(&ack_path)
    }
}

/// Opens a file for appending and positional reads.
pub fn open_append(path: &Path, create: bool) -> Result<File, SpoolError> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(create)
        .open(path)
        .map_err(|e| SpoolError::io("open", path, e))
}

/// Removes a file, treating "already gone" as success.
pub fn remove_if_exists(path: &Path) -> Result<(), SpoolError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(SpoolError::io("remove", path, e)),
    }
}

/// Reads a whole small file (acknowledgement files are 12 bytes per record).
pub fn read_all(path: &Path) -> Result<Vec<u8>, SpoolError> {
    let mut buf = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut buf))
        .map_err(|e| SpoolError::io("read", path, e))?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_detects_any_flipped_bit() {
        let rec = encode_record(42, "a/b", b"hello");
        assert_eq!(
            decode_record(&rec),
            Some((42, "a/b".to_owned(), b"hello".to_vec()))
        );
        for i in 0..rec.len() {
            let mut bad = rec.clone();
            bad[i] ^= 0x10;
            assert_eq!(decode_record(&bad), None, "flip at byte {i} not detected");
        }
    }

    #[test]
    fn ack_entry_round_trips_and_detects_corruption() {
        let e = encode_ack(7);
        assert_eq!(decode_ack(&e), Some(7));
        let mut bad = e;
        bad[3] ^= 1;
        assert_eq!(decode_ack(&bad), None);
    }

    #[test]
    fn file_names_parse_back() {
        assert_eq!(parse_file_name(&data_file_name(12)), Some((12, true)));
        assert_eq!(parse_file_name(&ack_file_name(12)), Some((12, false)));
        assert_eq!(parse_file_name("12.seg"), None);
        assert_eq!(parse_file_name("0000000000000000001x.seg"), None);
        assert_eq!(parse_file_name("notes.txt"), None);
    }
}
