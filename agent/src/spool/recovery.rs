//! Recovery: scanning segment and acknowledgement files found at open.
//!
//! Pure functions over bytes, so they can be tested and fuzzed without a file system. The
//! caller ([`super::Spool::open`]) decides what to do with what they find: truncate a torn tail
//! of the active segment, skip corrupt regions, forget acknowledged records.

use super::segment::{
    decode_ack, RecordHeader, ACK_ENTRY_LEN, RECORD_HEADER_LEN, RECORD_MAGIC, SEGMENT_HEADER_LEN,
    SEGMENT_MAGIC, SEGMENT_VERSION,
};

/// A valid record found in a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedRecord {
    /// Record id.
    pub id: u64,
    /// Offset of the record in the data file.
    pub offset: u64,
    /// Encoded length (header + topic + payload).
    pub len: u32,
    /// Topic.
    pub topic: String,
}

/// A byte range that holds no valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CorruptRegion {
    /// Offset in the data file.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

/// What a segment data file holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SegmentScan {
    /// False when the file does not start with a known segment header.
    pub header_ok: bool,
    /// Valid records, in file order (ids strictly increasing).
    pub records: Vec<ScannedRecord>,
    /// Corrupt regions followed by at least one valid record.
    pub corrupt: Vec<CorruptRegion>,
    /// Trailing bytes that hold no valid record: a torn write.
    pub torn_tail: Option<CorruptRegion>,
}

impl SegmentScan {
    /// Length of the file up to the end of its last valid byte (where appends may continue).
    pub fn valid_len(&self, file_len: u64) -> u64 {
        self.torn_tail.map_or(file_len, |t| t.offset)
    }
}

/// True when `buf` starts with a segment header this version understands.
pub fn header_ok(buf: &[u8]) -> bool {
    buf.len() >= SEGMENT_HEADER_LEN as usize
        && buf[..8] == SEGMENT_MAGIC
        && buf[8..12] == SEGMENT_VERSION.to_le_bytes()
}

/// Scans a whole data file. `min_id` is the smallest id a record may have (ids increase
/// strictly across segments); a checksummed record with a smaller id is stale and skipped.
pub fn scan_segment(buf: &[u8], min_id: u64) -> SegmentScan {
    let mut scan = SegmentScan {
        header_ok: header_ok(buf),
        ..SegmentScan::default()
    };
    if !scan.header_ok {
        return scan;
    }
    let mut next_min = min_id;
    let mut pos = SEGMENT_HEADER_LEN as usize;
    while pos < buf.len() {
        if let Some(rec) = record_at(buf, pos, next_min) {
            pos += rec.len as usize;
            next_min = rec.id + 1;
            scan.records.push(rec);
            continue;
        }
        // Corrupt bytes at `pos`: look for the next valid record by its magic.
        let resume = (pos + 1..buf.len().saturating_sub(RECORD_HEADER_LEN - 1))
            .filter(|&q| buf[q..q + 4] == RECORD_MAGIC)
            .find(|&q| record_at(buf, q, next_min).is_some());
        match resume {
            Some(q) => {
                scan.corrupt.push(CorruptRegion {
                    offset: pos as u64,
                    len: (q - pos) as u64,
                });
                pos = q;
            }
            None => {
                scan.torn_tail = Some(CorruptRegion {
                    offset: pos as u64,
                    len: (buf.len() - pos) as u64,
                });
                break;
            }
        }
    }
    scan
}

/// The valid record at `pos`, if any.
fn record_at(buf: &[u8], pos: usize, min_id: u64) -> Option<ScannedRecord> {
    let head: &[u8; RECORD_HEADER_LEN] = buf.get(pos..pos + RECORD_HEADER_LEN)?.try_into().ok()?;
    let h = RecordHeader::parse(head)?;
    if h.id < min_id {
        return None;
    }
    let total = usize::try_from(h.total_len()).ok()?;
    let body = buf.get(pos + 8..pos + total)?;
    if crc32fast::hash(body) != h.crc {
        return None;
    }
    let topic_end = pos + RECORD_HEADER_LEN + usize::from(h.topic_len);
    let topic = std::str::from_utf8(&buf[pos + RECORD_HEADER_LEN..topic_end]).ok()?;
    Some(ScannedRecord {
        id: h.id,
        offset: pos as u64,
        len: u32::try_from(total).ok()?,
        topic: topic.to_owned(),
    })
}

/// What an acknowledgement file holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AckScan {
    /// Acknowledged (or dropped) ids.
    pub ids: Vec<u64>,
    /// Entries whose checksum was wrong.
    pub corrupt_entries: usize,
    /// Length up to the last complete entry; a torn trailing entry lies beyond it.
    pub valid_len: u64,
}

/// Scans an acknowledgement file.
pub fn scan_acks(buf: &[u8]) -> AckScan {
    let mut scan = AckScan::default();
    let chunks = buf.chunks_exact(ACK_ENTRY_LEN);
    scan.valid_len = (buf.len() - chunks.remainder().len()) as u64;
    for c in chunks {
        let e: &[u8; ACK_ENTRY_LEN] = c.try_into().expect("chunks_exact yields full entries");
        match decode_ack(e) {
            Some(id) => scan.ids.push(id),
            None => scan.corrupt_entries += 1,
        }
    }
    scan
}

#[cfg(test)]
mod tests {
    use super::super::segment::{encode_ack, encode_record, segment_header};
    use super::*;
    use proptest::prelude::*;

    fn segment(records: &[(u64, &str, &[u8])]) -> Vec<u8> {
        let mut buf = segment_header().to_vec();
        for (id, t, p) in records {
            buf.extend_from_slice(&encode_record(*id, t, p));
        }
        buf
    }

    #[test]
    fn torn_tail_is_reported_and_earlier_records_kept() {
        let mut buf = segment(&[(1, "t", b"one"), (2, "t", b"two")]);
        let full = buf.len();
        let third = encode_record(3, "t", b"three");
        buf.extend_from_slice(&third[..third.len() - 2]);
        let scan = scan_segment(&buf, 1);
        assert_eq!(
            scan.records.iter().map(|r| r.id).collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(scan.torn_tail.map(|t| t.offset), Some(full as u64));
        assert_eq!(scan.valid_len(buf.len() as u64), full as u64);
        assert!(scan.corrupt.is_empty());
    }

    #[test]
    fn corrupt_middle_record_is_skipped_and_later_ones_found() {
        let mut buf = segment(&[(1, "t", b"one"), (2, "t", b"two"), (3, "t", b"three")]);
        let second = SEGMENT_HEADER_LEN as usize + encode_record(1, "t", b"one").len();
        buf[second + 25] ^= 0xff; // inside record 2's payload area
        let scan = scan_segment(&buf, 1);
        assert_eq!(
            scan.records.iter().map(|r| r.id).collect::<Vec<_>>(),
            [1, 3]
        );
        assert_eq!(scan.corrupt.len(), 1);
        assert_eq!(scan.corrupt[0].offset, second as u64);
        assert_eq!(scan.torn_tail, None);
    }

    #[test]
    fn stale_ids_are_not_accepted() {
        let buf = segment(&[(5, "t", b"x")]);
        assert!(scan_segment(&buf, 6).records.is_empty());
    }

    #[test]
    fn bad_header_is_reported() {
        let mut buf = segment(&[(1, "t", b"x")]);
        buf[0] = b'X';
        assert!(!scan_segment(&buf, 1).header_ok);
        assert!(!scan_segment(&buf[..5], 1).header_ok);
    }

    #[test]
    fn ack_scan_ignores_torn_entry_and_counts_corrupt_ones() {
        let mut buf = Vec::new();
        buf.extend_from_slice(&encode_ack(1));
        let mut bad = encode_ack(2);
        bad[0] ^= 4;
        buf.extend_from_slice(&bad);
        buf.extend_from_slice(&encode_ack(3));
        buf.extend_from_slice(&encode_ack(4)[..5]);
        let scan = scan_acks(&buf);
        assert_eq!(scan.ids, [1, 3]);
        assert_eq!(scan.corrupt_entries, 1);
        assert_eq!(scan.valid_len, 36);
    }

    proptest! {
        #[test]
        fn scanning_arbitrary_bytes_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut buf = segment(&[(1, "t", b"one")]);
            buf.extend_from_slice(&tail);
            let scan = scan_segment(&buf, 1);
            prop_assert!(scan.records.first().map(|r| r.id) == Some(1));
            prop_assert!(scan.valid_len(buf.len() as u64) <= buf.len() as u64);
            let _ = scan_segment(&tail, 0);
            let _ = scan_acks(&tail);
        }
    }
}
