use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::io::Write;

use proptest::prelude::*;

use super::segment::{data_file_name, encode_record};
use super::*;

fn cfg(max_bytes: u64, max_records: usize) -> SpoolConfig {
    SpoolConfig {
        max_bytes,
        max_records,
    }
}

fn big() -> SpoolConfig {
    cfg(16 * 1024 * 1024, 100_000)
}

fn drain(s: &mut Spool) -> Vec<Record> {
    let mut out = Vec::new();
    let mut after = None;
    while let Some(r) = s.next_after(after).unwrap() {
        after = Some(r.id);
        out.push(r);
    }
    out
}

fn active_segment_path(s: &Spool) -> PathBuf {
    s.dir().join(data_file_name(s.active_id()))
}

#[test]
fn spool_replays_unacked_records_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Spool::open(dir.path(), &big()).unwrap();
    let a = s.append("t/a", b"one").unwrap();
    let b = s.append("t/b", b"two").unwrap();
    let c = s.append("t/a", b"three").unwrap();
    assert!(a < b && b < c);
    s.ack(b).unwrap();
    drop(s); // no shutdown: as after kill -9
    let mut s = Spool::open(dir.path(), &big()).unwrap();
    let got = drain(&mut s);
    assert_eq!(
        got.iter()
            .map(|r| (r.id, r.topic.as_str(), r.payload.as_slice()))
            .collect::<Vec<_>>(),
        [(a, "t/a", &b"one"[..]), (c, "t/a", &b"three"[..])]
    );
    let d = s.append("t/a", b"four").unwrap();
    assert!(d > c, "ids keep increasing across restarts");
}

#[test]
fn acked_records_never_come_back_and_segments_are_reclaimed() {
    let dir = tempfile::tempdir().unwrap();
    // Small segments (16 KiB) so that many are created and deleted.
    let mut s = Spool::open(dir.path(), &cfg(256 * 1024, 10_000)).unwrap();
    let payload = vec![7u8; 5000];
    let mut ids = Vec::new();
    for _ in 0..40 {
        ids.push(s.append("t", &payload).unwrap());
    }
    assert!(s.segments.len() > 5);
    s.ack_many(&ids[..39]).unwrap();
    assert_eq!(s.segments.len(), 1, "only the active segment is left");
    drop(s);
    let mut s = Spool::open(dir.path(), &cfg(256 * 1024, 10_000)).unwrap();
    assert_eq!(s.pending_ids(), [ids[39]]);
    s.ack(ids[39]).unwrap();
    drop(s);
    let s = Spool::open(dir.path(), &cfg(256 * 1024, 10_000)).unwrap();
    assert!(s.is_empty());
    let files = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(
        files, 3,
        "one data file, one acknowledgement file, the lock"
    );
}

#[test]
fn torn_tail_is_skipped_with_a_count_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Spool::open(dir.path(), &big()).unwrap();
    let a = s.append("t", b"kept").unwrap();
    let path = active_segment_path(&s);
    drop(s);
    // A write of record 2 that was interrupted half way.
    let rec = encode_record(a.0 + 1, "t", b"torn record payload");
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(&rec[..rec.len() / 2]).unwrap();
    drop(f);
    let mut s = Spool::open(dir.path(), &big()).unwrap();
    assert_eq!(s.stats().corrupt_skipped, 1);
    assert_eq!(s.pending_ids(), [a]);
    let b = s.append("t", b"after").unwrap();
    drop(s);
    let mut s = Spool::open(dir.path(), &big()).unwrap();
    assert_eq!(s.stats().corrupt_skipped, 0, "the tail was truncated once");
    let got = drain(&mut s);
    assert_eq!(got.iter().map(|r| r.id).collect::<Vec<_>>(), [a, b]);
    assert_eq!(got[1].payload, b"after");
}

#[test]
fn corrupt_record_in_the_middle_skips_only_that_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Spool::open(dir.path(), &big()).unwrap();
    let a = s.append("t", b"first").unwrap();
    let _b = s.append("t", b"second").unwrap();
    let c = s.append("t", b"third").unwrap();
    let second_offset = s.live[&(a.0 + 1)].offset;
    let path = active_segment_path(&s);
    drop(s);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[second_offset as usize + 26] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();
    let mut s = Spool::open(dir.path(), &big()).unwrap();
    assert_eq!(s.stats().corrupt_skipped, 1);
    assert_eq!(
        drain(&mut s).iter().map(|r| r.id).collect::<Vec<_>>(),
        [a, c]
    );
}

#[test]
fn record_changed_on_disk_after_open_is_skipped_on_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Spool::open(dir.path(), &big()).unwrap();
    let a = s.append("t", b"first").unwrap();
    let b = s.append("t", b"second").unwrap();
    let off = s.live[&a.0].offset;
    let path = active_segment_path(&s);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[off as usize + 26] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let r = s.next_after(None).unwrap().unwrap();
    assert_eq!(r.id, b);
    assert_eq!(s.stats().corrupt_skipped, 1);
    assert_eq!(s.pending_ids(), [b]);
}

#[test]
fn full_spool_drops_oldest_by_count_and_counts_drops() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Spool::open(dir.path(), &cfg(1024 * 1024, 3)).unwrap();
    let ids: Vec<_> = (0..5u8).map(|i| s.append("t", &[i]).unwrap()).collect();
    assert_eq!(s.pending_ids(), ids[2..]);
    assert_eq!(s.stats().dropped, 2);
    drop(s);
    let s = Spool::open(dir.path(), &cfg(1024 * 1024, 3)).unwrap();
    assert_eq!(s.pending_ids(), ids[2..], "drops are durable");
}

#[test]
fn full_spool_drops_oldest_by_bytes_and_stays_within_max_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let max = 256 * 1024;
    let mut s = Spool::open(dir.path(), &cfg(max, 100_000)).unwrap();
    let payload = vec![1u8; 5000];
    let mut last = None;
    for i in 0..200 {
        let before = s.stats();
        last = Some(s.append("t", &payload).unwrap());
        let st = s.stats();
        assert!(st.bytes <= max, "{} > {max}", st.bytes);
        assert!(
            st.disk_bytes <= max + s.segment_target,
            "{} on disk",
            st.disk_bytes
        );
        assert!(
            st.dropped - before.dropped <= 1,
            "append {i} dropped more than one record"
        );
    }
    let st = s.stats();
    assert!(st.dropped > 100);
    assert_eq!(st.dropped + st.depth as u64, 200);
    assert_eq!(s.pending_ids().last().copied(), last, "newest records kept");
    let on_disk: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != LOCK_FILE)
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert_eq!(on_disk, st.disk_bytes);
}

#[test]
fn records_left_behind_cannot_keep_unbounded_acknowledged_bytes_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let max = 256 * 1024;
    let mut s = Spool::open(dir.path(), &cfg(max, 100_000)).unwrap();
    let payload = vec![3u8; 5000];
    let stuck = s.append("t", &payload).unwrap();
    // One record in seven is never acknowledged: every segment keeps some pending bytes and
    // a lot of acknowledged ones.
    for i in 1..600 {
        let id = s.append("t", &payload).unwrap();
        if i % 7 != 0 {
            s.ack(id).unwrap();
        }
        let st = s.stats();
        assert!(
            st.disk_bytes <= max + s.segment_target,
            "{} on disk",
            st.disk_bytes
        );
        assert!(st.bytes < max / 4, "few pending bytes");
    }
    assert!(!s.pending_ids().contains(&stuck), "the oldest was given up");
    assert!(s.stats().dropped > 0);
}

#[test]
fn oversized_record_is_refused_without_touching_the_spool() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Spool::open(dir.path(), &cfg(64 * 1024, 10)).unwrap();
    s.append("t", b"x").unwrap();
    let err = s.append("t", &vec![0u8; 20_000]).unwrap_err();
    assert!(matches!(err, SpoolError::RecordTooLarge { .. }), "{err}");
    assert_eq!(s.len(), 1);
}

#[test]
fn segment_without_header_is_removed_and_others_survive() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(128 * 1024, 10_000);
    let mut s = Spool::open(dir.path(), &c).unwrap();
    let payload = vec![2u8; 5000];
    let ids: Vec<_> = (0..10).map(|_| s.append("t", &payload).unwrap()).collect();
    let first = *s.segments.keys().next().unwrap();
    let n_first = s.live.values().filter(|e| e.segment == first).count();
    drop(s);
    let p = dir.path().join(data_file_name(first));
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[0] = b'X';
    std::fs::write(&p, bytes).unwrap();
    let s = Spool::open(dir.path(), &c).unwrap();
    assert_eq!(s.pending_ids(), ids[n_first..]);
    assert_eq!(s.stats().corrupt_skipped, 1);
}

#[test]
fn half_created_active_segment_is_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let s = Spool::open(dir.path(), &big()).unwrap();
    let p = active_segment_path(&s);
    drop(s);
    std::fs::write(&p, b"EWSP").unwrap();
    let mut s = Spool::open(dir.path(), &big()).unwrap();
    let a = s.append("t", b"x").unwrap();
    drop(s);
    let s = Spool::open(dir.path(), &big()).unwrap();
    assert_eq!(s.pending_ids(), [a]);
}

#[test]
fn a_held_spool_is_refused_and_a_leftover_lock_file_is_no_obstacle() {
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join(LOCK_FILE);
    // A lock file left by a killed process, or naming a pid that now belongs to another process
    // (pid 1 always runs): nobody holds the flock, so the spool opens.
    std::fs::write(&lock, "1\n").unwrap();
    let s = Spool::open(dir.path(), &big()).unwrap();
    let mine = std::fs::read_to_string(&lock).unwrap();
    assert_eq!(mine.trim(), std::process::id().to_string());
    // A second opener (another open file description, as another process would have) is refused.
    let err = Spool::open(dir.path(), &big()).unwrap_err();
    assert!(
        matches!(err, SpoolError::Locked { pid, .. } if pid == std::process::id()),
        "{err}"
    );
    assert!(err
        .to_string()
        .contains(&format!("in use by process {}", std::process::id())));
    drop(s);
    // Released on drop.
    Spool::open(dir.path(), &big()).unwrap();
}

#[tokio::test]
async fn shared_spool_wakes_the_reader_on_append() {
    let dir = tempfile::tempdir().unwrap();
    let shared = SharedSpool::new(Spool::open(dir.path(), &big()).unwrap());
    let reader = shared.clone();
    let waiter = tokio::spawn(async move {
        reader.appended().await;
        reader.next_after(None).await.unwrap().unwrap()
    });
    let id = shared.append("t".into(), b"p".to_vec()).await.unwrap();
    let rec = waiter.await.unwrap();
    assert_eq!(rec.id, id);
    shared.ack_many(vec![id]).await.unwrap();
    assert_eq!(shared.stats().depth, 0);
}

/// Operations of the model test.
#[derive(Debug, Clone)]
enum Op {
    Append {
        topic: u8,
        len: usize,
    },
    /// Acknowledge the n-th pending record (modulo the depth).
    Ack(usize),
    Reopen,
    /// Crash in the middle of an append: part of a record (or garbage) at the end of the
    /// active segment, and optionally a torn acknowledgement entry.
    CorruptTail {
        keep: usize,
        garbage: bool,
        torn_ack: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..3, 0usize..3000).prop_map(|(topic, len)| Op::Append { topic, len }),
        3 => (0usize..64).prop_map(Op::Ack),
        1 => Just(Op::Reopen),
        1 => (1usize..200, any::<bool>(), any::<bool>())
            .prop_map(|(keep, garbage, torn_ack)| Op::CorruptTail { keep, garbage, torn_ack }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The spool behaves like a bounded FIFO with removal by id, across reopen and torn writes.
    #[test]
    fn spool_matches_a_vecdeque_model(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        // Large byte bound (only the count bound drops here), small segments.
        let c = cfg(4 * 1024 * 1024, 12);
        let mut s = Spool::open(dir.path(), &c).unwrap();
        let mut model: VecDeque<(SpoolId, String, Vec<u8>)> = VecDeque::new();
        let mut seq = 0u8;
        for op in ops {
            match op {
                Op::Append { topic, len } => {
                    seq = seq.wrapping_add(1);
                    let t = format!("topic/{topic}");
                    let p = vec![seq; len];
                    let id = s.append(&t, &p).unwrap();
                    if let Some(last) = model.back() {
                        prop_assert!(id > last.0);
                    }
                    if model.len() == 12 {
                        model.pop_front();
                    }
                    model.push_back((id, t, p));
                }
                Op::Ack(n) => {
                    if !model.is_empty() {
                        let (id, _, _) = model.remove(n % model.len()).unwrap();
                        s.ack(id).unwrap();
                    }
                }
                Op::Reopen => {
                    drop(s);
                    s = Spool::open(dir.path(), &c).unwrap();
                }
                Op::CorruptTail { keep, garbage, torn_ack } => {
                    let path = active_segment_path(&s);
                    let ack_path = s.dir().join(super::segment::ack_file_name(s.active_id()));
                    drop(s);
                    let mut bytes = if garbage {
                        vec![0xA5; keep]
                    } else {
                        encode_record(u64::MAX / 2, "topic/x", &[9; 300])
                    };
                    bytes.truncate(keep.min(bytes.len() - 1));
                    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
                    f.write_all(&bytes).unwrap();
                    if torn_ack {
                        let mut f = OpenOptions::new().append(true).open(&ack_path).unwrap();
                        f.write_all(&[1, 2, 3]).unwrap();
                    }
                    s = Spool::open(dir.path(), &c).unwrap();
                }
            }
            prop_assert_eq!(s.pending_ids(), model.iter().map(|m| m.0).collect::<Vec<_>>());
        }
        drop(s);
        let mut s = Spool::open(dir.path(), &c).unwrap();
        let got = drain(&mut s);
        prop_assert_eq!(got.len(), model.len());
        for (r, (id, t, p)) in got.iter().zip(&model) {
            prop_assert_eq!(r.id, *id);
            prop_assert_eq!(&r.topic, t);
            prop_assert_eq!(&r.payload, p);
        }
    }
}

#[test]
fn ten_thousand_violations_never_evict_a_queued_report() {
    let dir = tempfile::tempdir().unwrap();
    let conf = cfg(256 * 1024, 1000);
    let mut s = Spool::open(dir.path(), &conf).unwrap();
    // Offline: reports fill the spool.
    let report = vec![b'r'; 1500];
    let mut reports = Vec::new();
    while s.stats().bytes + segment::record_len(9, report.len()) <= conf.max_bytes {
        reports.push(s.append("t/reports", &report).unwrap());
    }
    assert!(reports.len() > 100);
    assert_eq!(s.stats().dropped, 0);
    // 10,000 distinct client-id takeovers, in batches as ticks would write them.
    let mut refused = 0;
    for batch in 0..100 {
        let lines: Vec<Vec<u8>> = (0..100)
            .map(|i| format!("{{\"takeover\":\"client-{batch}-{i}\"}}").into_bytes())
            .collect();
        refused += s.append_many_budgeted("t/violations", &lines, 8).unwrap().1;
    }
    assert_eq!(refused, 10_000, "a full spool has no room for violations");
    assert_eq!(s.stats().dropped, 0);
    drop(s);
    let mut s = Spool::open(dir.path(), &conf).unwrap();
    assert_eq!(s.pending_ids(), reports);
    assert_eq!(drain(&mut s).len(), reports.len());
}

#[test]
fn violations_hold_at_most_an_eighth_of_the_spool_and_reports_still_fit() {
    let dir = tempfile::tempdir().unwrap();
    let conf = cfg(256 * 1024, 1000);
    let mut s = Spool::open(dir.path(), &conf).unwrap();
    let lines: Vec<Vec<u8>> = (0..10_000)
        .map(|i| format!("{{\"violation\":{i},\"pad\":\"{}\"}}", "x".repeat(100)).into_bytes())
        .collect();
    let before = s.stats().disk_bytes;
    let (ids, refused) = s.append_many_budgeted("t/violations", &lines, 8).unwrap();
    assert_eq!(ids.len() as u64 + refused, 10_000);
    let st = s.stats();
    assert!(st.bytes <= conf.max_bytes / 8, "{st:?}");
    assert!(ids.len() <= conf.max_records / 8);
    assert!(st.disk_bytes > before);
    // The accepted violations replay in order, byte for byte.
    let replayed = drain(&mut s);
    assert_eq!(replayed.len(), ids.len());
    for (r, l) in replayed.iter().zip(&lines) {
        assert_eq!(&r.payload, l);
    }
    // A later batch gets nothing while the budget is used up; reports still fit.
    assert_eq!(
        s.append_many_budgeted("t/violations", &lines[..5], 8)
            .unwrap(),
        (Vec::new(), 5)
    );
    for _ in 0..50 {
        s.append("t/reports", &[b'r'; 1500]).unwrap();
    }
    assert_eq!(s.stats().dropped, 0);
    // Acknowledged violations free their budget.
    s.ack_many(&ids).unwrap();
    assert_eq!(
        s.append_many_budgeted("t/violations", &lines[..5], 8)
            .unwrap()
            .0
            .len(),
        5
    );
}

#[test]
fn shared_spool_stats_do_not_wait_for_an_operation_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let shared = SharedSpool::new(Spool::open(dir.path(), &big()).unwrap());
    shared.append_blocking("t", b"first").unwrap();
    // Hold the spool as an append does through its fsync.
    let mut guard = shared.lock();
    let reader = shared.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(reader.stats()).unwrap());
    let seen = rx
        .recv_timeout(std::time::Duration::from_secs(5))
        .expect("stats() returned while the spool was locked");
    assert_eq!((seen.depth, seen.appended), (1, 1));
    // What the holder does shows once it lets go.
    guard.append("t", b"second").unwrap();
    assert_eq!(shared.stats().depth, 1);
    drop(guard);
    let after = shared.stats();
    assert_eq!((after.depth, after.appended), (2, 2));
    assert!(after.bytes > seen.bytes && after.disk_bytes >= after.bytes);
}
