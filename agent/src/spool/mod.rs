//! The durable spool between report building and the transport.
//!
//! Every report is written here, and fsynced, before it is published; it leaves only when the
//! broker's PUBACK for it arrives ([`Spool::ack`]), or when the spool is full and it is the
//! oldest record ([`SpoolStats::dropped`]). After a crash or restart, unacknowledged records are
//! replayed oldest first ([`Spool::next_after`]).
//!
//! # Why a segment log and not an embedded database
//!
//! The access pattern is a FIFO queue: append at the tail, acknowledge (almost always) at the
//! head, replay in order. A log of append-only segment files with one CRC32 per record does
//! exactly that with one `write` + one `fdatasync` per append, keeps only a small index in RAM,
//! reclaims space by deleting whole files (no compaction, no write amplification on SD cards),
//! and its recovery is a sequential scan we fully control and test (including torn writes and
//! bit rot). A B-tree store such as `redb` would give transactions we do not need, copy-on-write
//! pages that rewrite several KiB per small commit, and a file that only shrinks by compaction.
//!
//! # On-disk format (version 1)
//!
//! The spool directory holds pairs of files named after the id of the first record the segment
//! may hold, zero-padded to 20 digits:
//!
//! * `NNNNNNNNNNNNNNNNNNNN.seg`, the data file:
//!   - header, 16 bytes: magic `EWSPOOL\0`, format version `u32` LE (= 1), 4 reserved bytes;
//!   - records, back to back, each:
//!     ```text
//!     magic   4  "EWr1"
//!     crc     4  u32 LE, CRC32 (IEEE) of every byte after this field up to the record's end
//!     id      8  u64 LE, strictly increasing across the whole spool
//!     tlen    2  u16 LE, topic length
//!     flags   2  reserved, 0
//!     plen    4  u32 LE, payload length
//!     topic   tlen bytes of UTF-8
//!     payload plen bytes
//!     ```
//! * `NNNNNNNNNNNNNNNNNNNN.ack`, the acknowledgement file of the same segment: 12-byte entries,
//!   an acknowledged (or dropped) record id `u64` LE followed by the CRC32 of those 8 bytes.
//!
//! The newest segment is the *active* one: records are appended to it until it would exceed
//! the segment target size (`max_bytes / 8`, between 16 KiB and 8 MiB), then a new segment is
//! started. An acknowledgement is written to the acknowledgement file of the segment that holds
//! the record, so any fully acknowledged segment can be deleted on its own.
//!
//! # Invariants
//!
//! 1. An append returns only after its record is on stable storage (`fdatasync`); an
//!    acknowledgement returns only after its entry is. A new file is made durable with an fsync
//!    of the directory before any record goes into it.
//! 2. Record ids increase strictly, also across restarts: the active segment is never deleted,
//!    and the next id is one more than the largest id on disk.
//! 3. A record is pending iff its data record is valid and no valid acknowledgement entry names
//!    it. The RAM index holds, per pending record, its segment, offset, length and topic; never
//!    its payload.
//! 4. A segment whose records are all acknowledged is deleted (data file first, directory
//!    fsync, then the acknowledgement file), unless it is the active one.
//! 5. Bounds: before an append, the oldest pending records are dropped, one by one (each one
//!    recorded in an acknowledgement file and counted), until the new record fits: at most
//!    `max_records` pending records, their encoded bytes at most `max_bytes`. Files on disk
//!    may exceed `max_bytes` by acknowledged records that share a segment with a pending one,
//!    at most one segment target: beyond that, the oldest pending records are dropped until
//!    their segments can be deleted. Records larger than `max_bytes / 4` are refused.
//! 6. Budgeted records ([`Spool::append_many_budgeted`], used for violations) never drop
//!    anything: they are refused when their topic already holds its share (1/8 for violations)
//!    of `max_bytes` or `max_records`, or when the spool has no free room. So however many
//!    violations are raised, queued reports stay; reports may still drop old violations.
//!
//! # Recovery
//!
//! [`Spool::open`] scans every data file sequentially (one segment in memory at a time):
//!
//! * A record whose checksum, magic, lengths or id are wrong starts a corrupt region. The scan
//!   looks for the next valid record (by magic and checksum). If one is found, the region is
//!   skipped with a warning; if none is found the region is a *torn tail*, the remains of a write
//!   that never returned. A torn tail of the active segment is truncated so appends continue on a
//!   clean boundary. Each region counts once in [`SpoolStats::corrupt_skipped`].
//! * A data file without a valid header is removed with an error log; an empty or partially
//!   written header of the active segment (a crash during creation) is rewritten.
//! * An acknowledgement file with a torn last entry is truncated; entries with a wrong checksum
//!   are ignored (the record is then replayed once more: at-least-once, never lost).
//! * Acknowledgement files without a data file are removed.
//!
//! One process at a time: [`Spool::open`] takes an exclusive `flock` on `LOCK` and refuses a
//! directory another process holds; the kernel drops the lock when its holder exits, so a
//! killed holder or a reused pid never blocks a start.
//!
//! A record read back for replay is checked again; if it no longer matches its checksum, it is
//! skipped with a warning and counted as corrupt.

mod recovery;
mod segment;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tracing::{debug, error, info, warn};

use crate::config::SpoolConfig;
use segment::{Segment, SEGMENT_HEADER_LEN};

#[doc(hidden)]
pub use recovery::{scan_acks, scan_segment};

/// Identifies one spooled record; increases with every append, also across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpoolId(pub u64);

impl fmt::Display for SpoolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One pending record, read back from disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its id.
    pub id: SpoolId,
    /// MQTT topic it is to be published on.
    pub topic: String,
    /// The payload, exactly as appended.
    pub payload: Vec<u8>,
}

/// Counters and gauges of a spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpoolStats {
    /// Pending records.
    pub depth: usize,
    /// Encoded bytes of the pending records (what `max_bytes` bounds).
    pub bytes: u64,
    /// Bytes of all spool files on disk (at most `max_bytes` plus one segment).
    pub disk_bytes: u64,
    /// Records dropped unpublished because the spool was full, since open.
    pub dropped: u64,
    /// Corrupt regions or records skipped, since open.
    pub corrupt_skipped: u64,
    /// Records appended since open.
    pub appended: u64,
    /// Records acknowledged since open.
    pub acked: u64,
}

/// Spool failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    /// A file system operation failed.
    #[error("spool: cannot {op} {}: {source}", path.display())]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The record can never fit within the configured bounds.
    #[error("spool: record of {size} bytes exceeds the per-record limit of {max} bytes (a quarter of [spool] max_bytes)")]
    RecordTooLarge {
        /// Encoded size of the record.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The topic is longer than an MQTT topic may be.
    #[error("spool: topic of {0} bytes is longer than 65535 bytes")]
    TopicTooLong(usize),
    /// A background task running a spool operation panicked or was cancelled.
    #[error("spool: background operation failed: {0}")]
    Background(String),
    /// Another running process holds the spool directory.
    #[error("spool {} is in use by process {pid} (is another edgewarden running with the same state directory?)", dir.display())]
    Locked {
        /// The spool directory.
        dir: PathBuf,
        /// The process holding it.
        pid: u32,
    },
}

impl SpoolError {
    fn io(op: &'static str, path: &Path, source: std::io::Error) -> SpoolError {
        SpoolError::Io {
            op,
            path: path.to_owned(),
            source,
        }
    }
}

/// Where a pending record lives.
#[derive(Debug, Clone)]
struct Entry {
    segment: u64,
    offset: u64,
    len: u32,
    topic: Arc<str>,
}

/// Why records leave the spool; written the same way, counted differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Removal {
    Acked,
    Dropped,
    Corrupt,
}

/// Most topics repeat (one metrics topic, one violations topic): share their strings.
const MAX_INTERNED_TOPICS: usize = 64;

/// The segment-file spool. See the module documentation for the format and its guarantees.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    /// Held for the spool's lifetime; declared first so it is released last.
    _lock: DirLock,
    max_bytes: u64,
    max_records: usize,
    segment_target: u64,
    /// Open segments by first id; the last one is the active segment.
    segments: BTreeMap<u64, Segment>,
    /// Pending records by id.
    live: BTreeMap<u64, Entry>,
    live_bytes: u64,
    next_id: u64,
    topics: BTreeSet<Arc<str>>,
    dropped: u64,
    corrupt_skipped: u64,
    appended: u64,
    acked: u64,
    /// Appends still to fail with `ENOSPC` (fault injection in tests).
    #[cfg(test)]
    fail_appends: u32,
}

impl Spool {
    /// Opens (creating if needed) the spool in `dir` and recovers its pending records.
    pub fn open(dir: &Path, cfg: &SpoolConfig) -> Result<Spool, SpoolError> {
        std::fs::create_dir_all(dir).map_err(|e| SpoolError::io("create directory", dir, e))?;
        let segment_target = (cfg.max_bytes / 8).clamp(16 * 1024, 8 * 1024 * 1024);
        let lock = DirLock::acquire(dir)?;
        let mut spool = Spool {
            _lock: lock,
            dir: dir.to_owned(),
            max_bytes: cfg.max_bytes,
            max_records: cfg.max_records.max(1),
            segment_target,
            segments: BTreeMap::new(),
            live: BTreeMap::new(),
            live_bytes: 0,
            next_id: 1,
            topics: BTreeSet::new(),
            dropped: 0,
            corrupt_skipped: 0,
            appended: 0,
            acked: 0,
            #[cfg(test)]
            fail_appends: 0,
        };
        spool.recover()?;
        // A smaller configuration than the one the files were written with applies at once.
        let dropped = spool.make_room(0)?;
        if dropped > 0 {
            warn!(
                dropped,
                "Spool holds more than [spool] allows; dropped the oldest records."
            );
        }
        let s = spool.stats();
        info!(
            dir = %dir.display(),
            pending = s.depth,
            bytes = s.disk_bytes,
            corrupt_skipped = s.corrupt_skipped,
            "Spool opened."
        );
        Ok(spool)
    }

    fn recover(&mut self) -> Result<(), SpoolError> {
        let dir = self.dir.clone();
        let mut data_ids = BTreeSet::new();
        let mut ack_ids = BTreeSet::new();
        let entries =
            std::fs::read_dir(&dir).map_err(|e| SpoolError::io("list directory", &dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| SpoolError::io("list directory", &dir, e))?;
            let name = entry.file_name();
            match name.to_str().and_then(segment::parse_file_name) {
                Some((id, true)) => {
                    data_ids.insert(id);
                }
                Some((id, false)) => {
                    ack_ids.insert(id);
                }
                None => {}
            }
        }
        for orphan in ack_ids.difference(&data_ids) {
            let p = dir.join(segment::ack_file_name(*orphan));
            debug!(file = %p.display(), "Removing acknowledgement file without data file.");
            segment::remove_if_exists(&p)?;
        }
        let last = data_ids.last().copied();
        let mut min_id = 1u64;
        for first_id in data_ids {
            let is_last = Some(first_id) == last;
            let data_path = dir.join(segment::data_file_name(first_id));
            let ack_path = dir.join(segment::ack_file_name(first_id));
            let buf = segment::read_all(&data_path)?;
            let scan = recovery::scan_segment(&buf, min_id.max(first_id));
            let mut data_len = buf.len() as u64;
            if !scan.header_ok {
                let header = segment::segment_header();
                if is_last && buf.len() < header.len() && header.starts_with(&buf) {
                    // Crash while the segment was being created: start it again.
                    let mut f = segment::open_append(&data_path, false)?;
                    f.set_len(0)
                        .map_err(|e| SpoolError::io("truncate", &data_path, e))?;
                    segment::write_all_at_end(&mut f, &header, &data_path)?;
                    data_len = SEGMENT_HEADER_LEN;
                } else {
                    error!(
                        file = %data_path.display(),
                        bytes = buf.len(),
                        "Spool segment has no valid header; removing it. Its records are lost."
                    );
                    self.corrupt_skipped += 1;
                    segment::remove_if_exists(&data_path)?;
                    segment::remove_if_exists(&ack_path)?;
                    continue;
                }
            }
            for region in &scan.corrupt {
                warn!(
                    file = %data_path.display(),
                    offset = region.offset,
                    bytes = region.len,
                    "Corrupt bytes in spool segment; skipping them."
                );
                self.corrupt_skipped += 1;
            }
            if let Some(tail) = scan.torn_tail {
                warn!(
                    file = %data_path.display(),
                    offset = tail.offset,
                    bytes = tail.len,
                    "Torn record at the end of a spool segment (interrupted write); skipping it."
                );
                self.corrupt_skipped += 1;
                if is_last {
                    let f = segment::open_append(&data_path, false)?;
                    f.set_len(tail.offset)
                        .and_then(|()| f.sync_all())
                        .map_err(|e| SpoolError::io("truncate", &data_path, e))?;
                    data_len = tail.offset;
                }
            }
            drop(buf);

            let (acked, ack_len) = if ack_path.exists() {
                let abuf = segment::read_all(&ack_path)?;
                let ascan = recovery::scan_acks(&abuf);
                if ascan.corrupt_entries > 0 {
                    warn!(
                        file = %ack_path.display(),
                        entries = ascan.corrupt_entries,
                        "Corrupt acknowledgement entries; those records will be published again."
                    );
                    self.corrupt_skipped += ascan.corrupt_entries as u64;
                }
                if ascan.valid_len < abuf.len() as u64 {
                    let f = segment::open_append(&ack_path, false)?;
                    f.set_len(ascan.valid_len)
                        .and_then(|()| f.sync_all())
                        .map_err(|e| SpoolError::io("truncate", &ack_path, e))?;
                }
                (
                    ascan.ids.into_iter().collect::<HashSet<u64>>(),
                    ascan.valid_len,
                )
            } else {
                (HashSet::new(), 0)
            };

            let mut live = 0usize;
            for rec in scan.records {
                min_id = rec.id + 1;
                if acked.contains(&rec.id) {
                    continue;
                }
                let topic = self.intern(&rec.topic);
                self.live_bytes += u64::from(rec.len);
                self.live.insert(
                    rec.id,
                    Entry {
                        segment: first_id,
                        offset: rec.offset,
                        len: rec.len,
                        topic,
                    },
                );
                live += 1;
            }
            min_id = min_id.max(first_id);
            let seg = Segment {
                first_id,
                data: segment::open_append(&data_path, false)?,
                ack: segment::open_append(&ack_path, true)?,
                data_path,
                ack_path,
                data_len,
                ack_len,
                live,
            };
            self.segments.insert(first_id, seg);
        }
        self.next_id = min_id;
        let active = self.segments.keys().next_back().copied();
        let dead: Vec<u64> = self
            .segments
            .iter()
            .filter(|(id, s)| s.live == 0 && Some(**id) != active)
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            self.reclaim(id);
        }
        if self.segments.is_empty() {
            let seg = Segment::create(&self.dir, self.next_id)?;
            self.segments.insert(seg.first_id, seg);
        }
        Ok(())
    }

    fn intern(&mut self, topic: &str) -> Arc<str> {
        if let Some(t) = self.topics.get(topic) {
            return Arc::clone(t);
        }
        let t: Arc<str> = Arc::from(topic);
        if self.topics.len() < MAX_INTERNED_TOPICS {
            self.topics.insert(Arc::clone(&t));
        }
        t
    }

    fn active_id(&self) -> u64 {
        *self
            .segments
            .keys()
            .next_back()
            .expect("the spool always has an active segment")
    }

    /// Largest record (encoded) an append accepts.
    pub fn max_record_len(&self) -> u64 {
        self.max_bytes / 4
    }

    /// Makes the next `n` appends fail as on a full disk (`ENOSPC`), before anything is written.
    #[cfg(test)]
    pub(crate) fn fail_next_appends(&mut self, n: u32) {
        self.fail_appends = n;
    }

    /// Appends a record; it is on stable storage when this returns. Drops the oldest pending
    /// records first when the spool would otherwise exceed its bounds.
    pub fn append(&mut self, topic: &str, payload: &[u8]) -> Result<SpoolId, SpoolError> {
        if topic.len() > usize::from(u16::MAX) {
            return Err(SpoolError::TopicTooLong(topic.len()));
        }
        let len = segment::record_len(topic.len(), payload.len());
        if len > self.max_record_len() {
            return Err(SpoolError::RecordTooLarge {
                size: len,
                max: self.max_record_len(),
            });
        }
        #[cfg(test)]
        if self.fail_appends > 0 {
            self.fail_appends -= 1;
            return Err(SpoolError::io(
                "write",
                &self.dir,
                std::io::Error::from_raw_os_error(libc::ENOSPC),
            ));
        }
        let dropped = self.make_room(len)?;
        if dropped > 0 {
            warn!(
                dropped,
                total_dropped = self.dropped,
                "Spool full; dropped the oldest unpublished records."
            );
        }
        let active = self.active_id();
        let active_len = self.segments[&active].data_len;
        if active_len > SEGMENT_HEADER_LEN && active_len + len > self.segment_target {
            self.roll()?;
        }
        let id = self.next_id;
        let rec = segment::encode_record(id, topic, payload);
        let active = self.active_id();
        let seg = self
            .segments
            .get_mut(&active)
            .expect("the active segment is open");
        let offset = seg.append_record(&rec)?;
        seg.live += 1;
        self.next_id += 1;
        let topic = self.intern(topic);
        self.live.insert(
            id,
            Entry {
                segment: active,
                offset,
                len: u32::try_from(len).expect("records are smaller than 4 GiB"),
                topic,
            },
        );
        self.live_bytes += len;
        self.appended += 1;
        Ok(SpoolId(id))
    }

    /// Appends `payloads` on `topic` as records of a *budgeted* kind (violations): records on
    /// `topic` may hold at most `1/share` of `max_bytes` and of `max_records`, and a budgeted
    /// append never drops another record. Payloads are taken in order while they fit, both in
    /// the budget and in the spool's free room; the rest are refused and their number returned
    /// with the ids. All accepted records are written with one write and one `fdatasync`.
    pub fn append_many_budgeted(
        &mut self,
        topic: &str,
        payloads: &[Vec<u8>],
        share: u64,
    ) -> Result<(Vec<SpoolId>, u64), SpoolError> {
        if topic.len() > usize::from(u16::MAX) {
            return Err(SpoolError::TopicTooLong(topic.len()));
        }
        let share = share.max(1);
        let (mut used_records, mut used_bytes) = (0usize, 0u64);
        for e in self.live.values().filter(|e| &*e.topic == topic) {
            used_records += 1;
            used_bytes += u64::from(e.len);
        }
        let budget_bytes = (self.max_bytes / share).min(self.segment_target);
        let budget_records = (self.max_records / share as usize).max(1);
        let disk_cap = self.max_bytes + self.segment_target;
        let disk = self.disk_bytes();
        let mut live_bytes = self.live_bytes;
        let mut batch: Vec<u8> = Vec::new();
        let mut lens: Vec<u64> = Vec::new();
        for p in payloads {
            let len = segment::record_len(topic.len(), p.len());
            let fits = used_records < budget_records
                && used_bytes + len <= budget_bytes
                && self.live.len() + lens.len() < self.max_records
                && live_bytes + len <= self.max_bytes
                && disk + batch.len() as u64 + len <= disk_cap;
            if !fits {
                break;
            }
            let id = self.next_id + lens.len() as u64;
            batch.extend_from_slice(&segment::encode_record(id, topic, p));
            lens.push(len);
            used_records += 1;
            used_bytes += len;
            live_bytes += len;
        }
        let refused = (payloads.len() - lens.len()) as u64;
        if lens.is_empty() {
            return Ok((Vec::new(), refused));
        }
        let active = self.active_id();
        let active_len = self.segments[&active].data_len;
        if active_len > SEGMENT_HEADER_LEN && active_len + batch.len() as u64 > self.segment_target
        {
            self.roll()?;
        }
        let active = self.active_id();
        let seg = self
            .segments
            .get_mut(&active)
            .expect("the active segment is open");
        let mut offset = seg.append_record(&batch)?;
        seg.live += lens.len();
        let topic = self.intern(topic);
        let mut ids = Vec::with_capacity(lens.len());
        for len in lens {
            let id = self.next_id;
            self.next_id += 1;
            self.live.insert(
                id,
                Entry {
                    segment: active,
                    offset,
                    len: u32::try_from(len).expect("records are smaller than 4 GiB"),
                    topic: Arc::clone(&topic),
                },
            );
            offset += len;
            self.live_bytes += len;
            self.appended += 1;
            ids.push(SpoolId(id));
        }
        Ok((ids, refused))
    }

    /// Drops oldest records until one more record of `len` bytes fits (`len == 0`: until the
    /// spool is within its bounds). Returns how many.
    fn make_room(&mut self, len: u64) -> Result<usize, SpoolError> {
        let active = self.active_id();
        let disk_cap = self.max_bytes + self.segment_target;
        let disk = self.disk_bytes();
        let mut victims = Vec::new();
        let mut live = self.live.len();
        let mut live_bytes = self.live_bytes;
        let mut freed_disk = 0u64;
        // A segment's files are freed once all its pending records are gone.
        let mut per_segment: BTreeMap<u64, usize> = BTreeMap::new();
        for (&id, e) in &self.live {
            let over_count = live > self.max_records || (len > 0 && live >= self.max_records);
            let over_bytes = live_bytes + len > self.max_bytes;
            // Acknowledged records kept on disk by an old pending one: only dropping from an
            // older segment than the active one frees their space.
            let over_disk = e.segment != active && disk - freed_disk + len > disk_cap;
            if !(over_count || over_bytes || over_disk) {
                break;
            }
            victims.push(id);
            live -= 1;
            live_bytes -= u64::from(e.len);
            let n = per_segment.entry(e.segment).or_insert(0);
            *n += 1;
            let seg = &self.segments[&e.segment];
            if *n == seg.live && e.segment != active {
                freed_disk += seg.disk_len();
            }
        }
        if victims.is_empty() {
            return Ok(0);
        }
        self.remove_ids(&victims, Removal::Dropped)?;
        Ok(victims.len())
    }

    /// Starts a new active segment.
    fn roll(&mut self) -> Result<(), SpoolError> {
        let previous = self.active_id();
        let seg = Segment::create(&self.dir, self.next_id)?;
        self.segments.insert(seg.first_id, seg);
        if self.segments[&previous].live == 0 {
            self.reclaim(previous);
        }
        Ok(())
    }

    /// Deletes a fully acknowledged segment that is not the active one.
    fn reclaim(&mut self, first_id: u64) {
        if first_id == self.active_id() {
            return;
        }
        if let Some(seg) = self.segments.remove(&first_id) {
            debug_assert_eq!(seg.live, 0);
            let path = seg.data_path.clone();
            if let Err(e) = seg.remove(&self.dir) {
                warn!(file = %path.display(), error = %e, "Cannot remove an acknowledged spool segment; it will be removed at the next start.");
            }
        }
    }

    /// Records that `ids` left the spool, one fsync per segment touched.
    fn remove_ids(&mut self, ids: &[u64], why: Removal) -> Result<(), SpoolError> {
        let mut by_segment: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for id in ids {
            if let Some(e) = self.live.get(id) {
                by_segment.entry(e.segment).or_default().push(*id);
            }
        }
        for (seg_id, ids) in by_segment {
            let seg = self
                .segments
                .get_mut(&seg_id)
                .expect("every pending record's segment is open");
            seg.append_acks(&ids)?;
            for id in &ids {
                if let Some(e) = self.live.remove(id) {
                    self.live_bytes -= u64::from(e.len);
                    seg.live -= 1;
                }
            }
            let n = ids.len() as u64;
            match why {
                Removal::Acked => self.acked += n,
                Removal::Dropped => self.dropped += n,
                Removal::Corrupt => self.corrupt_skipped += n,
            }
            if seg.live == 0 {
                self.reclaim(seg_id);
            }
        }
        Ok(())
    }

    /// Acknowledges a record: it never comes back, also after a restart. Acknowledging an id
    /// that is not pending (already acknowledged or dropped) does nothing.
    pub fn ack(&mut self, id: SpoolId) -> Result<(), SpoolError> {
        self.ack_many(&[id])
    }

    /// Acknowledges several records with one fsync per segment touched.
    pub fn ack_many(&mut self, ids: &[SpoolId]) -> Result<(), SpoolError> {
        let ids: Vec<u64> = ids
            .iter()
            .map(|i| i.0)
            .filter(|i| {
                let pending = self.live.contains_key(i);
                if !pending {
                    debug!(id = i, "Acknowledged record is not pending.");
                }
                pending
            })
            .collect();
        self.remove_ids(&ids, Removal::Acked)
    }

    /// The oldest pending record with an id greater than `after` (or the oldest of all).
    ///
    /// This is the replay cursor: start with `None`, then pass the id of the record last
    /// returned. A record that fails its checksum when read back is skipped and counted.
    pub fn next_after(&mut self, after: Option<SpoolId>) -> Result<Option<Record>, SpoolError> {
        let start = after.map_or(0, |a| a.0.saturating_add(1));
        loop {
            let Some((&id, e)) = self.live.range(start..).next() else {
                return Ok(None);
            };
            let seg = &self.segments[&e.segment];
            let buf = seg.read_at(e.offset, e.len as usize)?;
            match segment::decode_record(&buf) {
                Some((rid, topic, payload)) if rid == id => {
                    return Ok(Some(Record {
                        id: SpoolId(id),
                        topic,
                        payload,
                    }))
                }
                _ => {
                    warn!(
                        id,
                        file = %seg.data_path.display(),
                        offset = e.offset,
                        "Spooled record changed on disk since it was written; skipping it."
                    );
                    self.remove_ids(&[id], Removal::Corrupt)?;
                }
            }
        }
    }

    /// Ids of the pending records, oldest first.
    pub fn pending_ids(&self) -> Vec<SpoolId> {
        self.live.keys().map(|&i| SpoolId(i)).collect()
    }

    /// Topic of a pending record.
    pub fn topic_of(&self, id: SpoolId) -> Option<&str> {
        self.live.get(&id.0).map(|e| &*e.topic)
    }

    /// Number of pending records.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn disk_bytes(&self) -> u64 {
        self.segments.values().map(Segment::disk_len).sum()
    }

    /// Current counters.
    pub fn stats(&self) -> SpoolStats {
        SpoolStats {
            depth: self.live.len(),
            bytes: self.live_bytes,
            disk_bytes: self.disk_bytes(),
            dropped: self.dropped,
            corrupt_skipped: self.corrupt_skipped,
            appended: self.appended,
            acked: self.acked,
        }
    }
}

/// Name of the lock file in the spool directory. The holder keeps an exclusive `flock` on it
/// for as long as the spool is open and writes its pid into it (for the error message only).
pub const LOCK_FILE: &str = "LOCK";
/// How long [`Spool::open`] waits for a lock held by another open file description.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// Exclusive use of a spool directory by one process: an advisory `flock` on [`LOCK_FILE`].
///
/// The kernel releases the lock when its holder exits, however it exits, so a lock can never be
/// stale: neither a killed holder nor a pid reused after a reboot blocks the next start.
#[derive(Debug)]
struct DirLock {
    _file: std::fs::File,
}

impl DirLock {
    fn acquire(dir: &Path) -> Result<DirLock, SpoolError> {
        use std::io::{Read, Seek, Write};
        let path = dir.join(LOCK_FILE);
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| SpoolError::io("open", &path, e))?;
        // A child process forked by this one (a hook, journalctl) shares the lock until its
        // exec closes the descriptor: a holder that goes away within LOCK_WAIT is waited for.
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        let mut res = f.try_lock();
        while matches!(res, Err(std::fs::TryLockError::WouldBlock))
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(10));
            res = f.try_lock();
        }
        match res {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = f.read_to_string(&mut holder);
                return Err(SpoolError::Locked {
                    dir: dir.to_owned(),
                    pid: holder.trim().parse().unwrap_or(0),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(SpoolError::io("lock", &path, e));
            }
        }
        f.set_len(0)
            .and_then(|()| f.rewind())
            .and_then(|()| writeln!(f, "{}", std::process::id()))
            .map_err(|e| SpoolError::io("write", &path, e))?;
        Ok(DirLock { _file: f })
    }
}

/// A [`Spool`] shared between the writer (report stage) and the transport.
///
/// File I/O runs in `spawn_blocking` from the async methods, so fsyncs never stall an async
/// worker; the `_blocking` variants are for synchronous callers. Appends wake the transport
/// through [`SharedSpool::appended`]. [`SharedSpool::stats`] never takes the mutex: an append
/// holds it through its `fdatasync`, which can take seconds on a slow SD card, and the stats
/// are read on async workers (self-metrics of every report).
#[derive(Debug, Clone)]
pub struct SharedSpool {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    spool: Mutex<Spool>,
    appended: tokio::sync::Notify,
    /// The counters as of the end of the latest operation, published by [`SpoolGuard`].
    stats: AtomicStats,
}

/// [`SpoolStats`] in atomics. Each field is stored after every operation on the spool, under
/// its mutex; a reader without the mutex sees every field as of the latest operation that
/// finished, or (while one finishes) some fields of that one and some of the one before.
#[derive(Debug, Default)]
struct AtomicStats {
    depth: AtomicUsize,
    bytes: AtomicU64,
    disk_bytes: AtomicU64,
    dropped: AtomicU64,
    corrupt_skipped: AtomicU64,
    appended: AtomicU64,
    acked: AtomicU64,
}

impl AtomicStats {
    fn publish(&self, s: SpoolStats) {
        self.depth.store(s.depth, Ordering::Relaxed);
        self.bytes.store(s.bytes, Ordering::Relaxed);
        self.disk_bytes.store(s.disk_bytes, Ordering::Relaxed);
        self.dropped.store(s.dropped, Ordering::Relaxed);
        self.corrupt_skipped
            .store(s.corrupt_skipped, Ordering::Relaxed);
        self.appended.store(s.appended, Ordering::Relaxed);
        self.acked.store(s.acked, Ordering::Relaxed);
    }

    fn load(&self) -> SpoolStats {
        SpoolStats {
            depth: self.depth.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            disk_bytes: self.disk_bytes.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            corrupt_skipped: self.corrupt_skipped.load(Ordering::Relaxed),
            appended: self.appended.load(Ordering::Relaxed),
            acked: self.acked.load(Ordering::Relaxed),
        }
    }
}

/// Exclusive access to a shared [`Spool`]; publishes the spool's counters when dropped, so
/// [`SharedSpool::stats`] follows every operation, whoever made it.
#[derive(Debug)]
pub struct SpoolGuard<'a> {
    spool: MutexGuard<'a, Spool>,
    stats: &'a AtomicStats,
}

impl std::ops::Deref for SpoolGuard<'_> {
    type Target = Spool;
    fn deref(&self) -> &Spool {
        &self.spool
    }
}

impl std::ops::DerefMut for SpoolGuard<'_> {
    fn deref_mut(&mut self) -> &mut Spool {
        &mut self.spool
    }
}

impl Drop for SpoolGuard<'_> {
    fn drop(&mut self) {
        self.stats.publish(self.spool.stats());
    }
}

impl SharedSpool {
    /// Wraps an open spool.
    pub fn new(spool: Spool) -> SharedSpool {
        let stats = AtomicStats::default();
        stats.publish(spool.stats());
        SharedSpool {
            inner: Arc::new(Shared {
                spool: Mutex::new(spool),
                appended: tokio::sync::Notify::new(),
                stats,
            }),
        }
    }

    /// Locks the spool for a synchronous operation. Do not hold the guard across an `.await`.
    pub fn lock(&self) -> SpoolGuard<'_> {
        // A panic while holding the lock leaves the spool consistent: every operation updates
        // memory only after its disk write succeeded.
        SpoolGuard {
            spool: self
                .inner
                .spool
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
            stats: &self.inner.stats,
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Spool) -> Result<T, SpoolError> + Send + 'static,
    ) -> Result<T, SpoolError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(&mut this.lock()))
            .await
            .map_err(|e| SpoolError::Background(e.to_string()))?
    }

    /// Appends durably (see [`Spool::append`]) and wakes the transport.
    pub async fn append(&self, topic: String, payload: Vec<u8>) -> Result<SpoolId, SpoolError> {
        let id = self.blocking(move |s| s.append(&topic, &payload)).await?;
        self.inner.appended.notify_one();
        Ok(id)
    }

    /// [`SharedSpool::append`] for synchronous callers.
    pub fn append_blocking(&self, topic: &str, payload: &[u8]) -> Result<SpoolId, SpoolError> {
        let id = self.lock().append(topic, payload)?;
        self.inner.appended.notify_one();
        Ok(id)
    }

    /// Appends budgeted records durably (see [`Spool::append_many_budgeted`]) and wakes the
    /// transport. Returns how many were refused.
    pub async fn append_many_budgeted(
        &self,
        topic: String,
        payloads: Vec<Vec<u8>>,
        share: u64,
    ) -> Result<u64, SpoolError> {
        let (ids, refused) = self
            .blocking(move |s| s.append_many_budgeted(&topic, &payloads, share))
            .await?;
        if !ids.is_empty() {
            self.inner.appended.notify_one();
        }
        Ok(refused)
    }

    /// Acknowledges records (see [`Spool::ack_many`]).
    pub async fn ack_many(&self, ids: Vec<SpoolId>) -> Result<(), SpoolError> {
        self.blocking(move |s| s.ack_many(&ids)).await
    }

    /// Reads the next record to replay (see [`Spool::next_after`]).
    pub async fn next_after(&self, after: Option<SpoolId>) -> Result<Option<Record>, SpoolError> {
        self.blocking(move |s| s.next_after(after)).await
    }

    /// The counters as of the latest operation that finished; never waits for one in
    /// progress. Read while an operation finishes, some fields may still be those of the
    /// operation before.
    pub fn stats(&self) -> SpoolStats {
        self.inner.stats.load()
    }

    /// Completes when a record was appended since the last completed call (a wake-up is never
    /// lost, but several appends may be reported as one).
    pub async fn appended(&self) {
        self.inner.appended.notified().await;
    }
}

#[cfg(test)]
mod tests;
