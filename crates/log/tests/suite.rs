//! The shared behaviour suite of `strata-log`, run against the file system and the in-memory
//! storage.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use strata_log::{LogConfig, LogError};
use strata_protocol::batch::{BatchHeader, BatchIter};

fn small(segment_bytes: u64) -> LogConfig {
    LogConfig { segment_bytes, index_interval_bytes: 100, segment_index_bytes: 4096, ..LogConfig::default() }
}

fn append_n(log: &mut strata_log::Log, n: usize, records: i32, payload: usize, ts: i64) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut b = batch(records, ts + i as i64, payload, i as u8);
            log.append(&mut b, ts).unwrap();
            b
        })
        .collect()
}

fn append_and_read(h: &dyn Harness) {
    let mut log = h.open(LogConfig::default(), 0);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));
    let mut b1 = batch(3, 100, 10, 1);
    let info = log.append(&mut b1, 5).unwrap();
    assert_eq!((info.first_offset, info.last_offset, info.num_records), (0, 2, 3));
    assert_eq!(info.max_timestamp, 102);
    // Two batches in one append.
    let mut two = batch(2, 200, 5, 2);
    two.extend_from_slice(&batch(1, 150, 5, 3));
    let info = log.append(&mut two, 6).unwrap();
    assert_eq!((info.first_offset, info.last_offset, info.num_batches), (3, 5, 2));
    assert_eq!((info.max_timestamp, info.offset_of_max_timestamp), (201, 4));
    assert_eq!(log.log_end_offset(), 6);
    let hs: Vec<i64> = BatchIter::new(&two).map(|r| r.unwrap().0.base_offset).collect();
    assert_eq!(hs, vec![3, 5], "offsets patched in place");

    for offset in 0..6 {
        let r = log.read(offset, usize::MAX, i64::MAX).unwrap();
        let hs = headers(&r.records);
        assert!(hs[0].base_offset <= offset && offset <= hs[0].last_offset());
    }
    let all = log.read(0, usize::MAX, i64::MAX).unwrap().records;
    assert_eq!(&all[..b1.len()], &b1[..]);
    assert_eq!(&all[b1.len()..], &two[..]);
    check_invariants(&log);
}

fn read_bounds(h: &dyn Harness) {
    let mut log = h.open(LogConfig::default(), 0);
    let bs = append_n(&mut log, 4, 2, 50, 0); // offsets 0-1, 2-3, 4-5, 6-7
    let size = bs[0].len();
    assert!(matches!(log.read(9, 100, i64::MAX), Err(LogError::OffsetOutOfRange { offset: 9, .. })));
    assert!(log.read(8, 100, i64::MAX).unwrap().records.is_empty());
    // KIP-74: at least one batch even if larger than max_bytes.
    assert_eq!(log.read(0, 1, i64::MAX).unwrap().records.len(), size);
    assert_eq!(log.read(0, 2 * size, i64::MAX).unwrap().records.len(), 2 * size);
    assert_eq!(log.read(0, 2 * size - 1, i64::MAX).unwrap().records.len(), size);
    // max_offset is exclusive on base offsets.
    assert_eq!(log.read(0, usize::MAX, 4).unwrap().records.len(), 2 * size);
    assert_eq!(log.read(0, usize::MAX, 5).unwrap().records.len(), 3 * size);
    assert!(log.read(4, usize::MAX, 4).unwrap().records.is_empty());
    // Reading mid-batch returns the whole batch holding the offset.
    let r = log.read(3, usize::MAX, i64::MAX).unwrap();
    assert_eq!(headers(&r.records)[0].base_offset, 2);
    log.advance_log_start(3).unwrap();
    assert!(matches!(log.read(2, 100, i64::MAX), Err(LogError::OffsetOutOfRange { log_start: 3, .. })));
    assert_eq!(headers(&log.read(3, 1, i64::MAX).unwrap().records)[0].base_offset, 2);
}

fn rolls_by_size_and_reads_one_segment(h: &dyn Harness) {
    let b = batch(1, 0, 100, 0);
    let mut log = h.open(small(3 * b.len() as u64), 0);
    append_n(&mut log, 10, 1, 100, 0);
    assert_eq!(log.num_segments(), 4); // 3 + 3 + 3 + 1
    let r = log.read(0, usize::MAX, i64::MAX).unwrap();
    assert_eq!(headers(&r.records).len(), 3, "a read stays within one segment");
    let r = log.read(3, usize::MAX, i64::MAX).unwrap();
    assert_eq!(headers(&r.records)[0].base_offset, 3);
    let mut names = h.storage().list(&h.dir()).unwrap();
    names.sort();
    assert!(names.contains(&"00000000000000000003.log".to_owned()));
    assert!(names.contains(&"00000000000000000009.timeindex".to_owned()));
    check_invariants(&log);
    // A roll of an empty active segment is a no-op.
    log.roll(0).unwrap();
    log.roll(0).unwrap();
    assert_eq!(log.num_segments(), 5);
    check_invariants(&log);
}

fn rolls_by_time(h: &dyn Harness) {
    let config = LogConfig { segment_ms: 1000, ..LogConfig::default() };
    let mut log = h.open(config, 0);
    log.append(&mut batch(1, 0, 10, 0), 0).unwrap();
    log.append(&mut batch(1, 0, 10, 0), 1000).unwrap();
    assert_eq!(log.num_segments(), 1);
    log.append(&mut batch(1, 0, 10, 0), 1001).unwrap();
    assert_eq!(log.num_segments(), 2);
    check_invariants(&log);
}

fn clean_reopen(h: &dyn Harness) {
    let b = batch(2, 0, 300, 0);
    let mut log = h.open(small(4 * b.len() as u64), 0);
    append_n(&mut log, 10, 2, 300, 1_000);
    let before = read_all(&log);
    let (start, end) = (log.log_start_offset(), log.log_end_offset());
    log.close().unwrap();
    assert!(h.storage().exists(&h.dir().join(".clean_shutdown")).unwrap());
    let mut log = h.open(small(4 * b.len() as u64), 0);
    assert!(!h.storage().exists(&h.dir().join(".clean_shutdown")).unwrap());
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (start, end));
    assert_eq!(read_all(&log), before);
    // Indexes work after reopening (sparse entries every 100 bytes).
    for o in 0..end {
        let r = log.read(o, 1, i64::MAX).unwrap();
        let h0 = headers(&r.records)[0];
        assert!(h0.base_offset <= o && o <= h0.last_offset());
    }
    let info = log.append(&mut batch(1, 5_000, 10, 9), 0).unwrap();
    assert_eq!(info.first_offset, end);
    assert_eq!(log.max_timestamp_offset().unwrap(), Some((end, 5_000)));
    check_invariants(&log);
}

fn crash_recovery_keeps_flushed_data(h: &dyn Harness) {
    let mut log = h.open(LogConfig::default(), 0);
    append_n(&mut log, 5, 2, 100, 0);
    log.flush().unwrap();
    append_n(&mut log, 5, 2, 100, 0);
    drop(log);
    h.crash(7);
    let log = h.open(LogConfig::default(), 0);
    assert!(log.log_end_offset() >= 10 && log.log_end_offset() <= 20);
    if !h.loses_unsynced() {
        assert_eq!(log.log_end_offset(), 20);
    }
    check_invariants(&log);
}

fn recovery_cuts_torn_and_corrupt_tail(h: &dyn Harness) {
    let mut log = h.open(small(1 << 20), 0);
    let bs = append_n(&mut log, 6, 1, 200, 0);
    drop(log);
    let seg = h.dir().join("00000000000000000000.log");
    let f = h.storage().open(&seg, false).unwrap();
    let len = f.len().unwrap();
    // A torn write: half a batch at the end.
    f.write_all_at(len, &bs[0][..100]).unwrap();
    // Corrupt one byte inside batch 4 (offset 4).
    let pos = bs[0].len() as u64 * 4 + 120;
    f.write_all_at(pos, &[0xFF]).unwrap();
    f.sync().unwrap();
    drop(f);
    let mut log = h.open(small(1 << 20), 0);
    assert_eq!(log.log_end_offset(), 4);
    check_invariants(&log);
    assert_eq!(log.append(&mut batch(1, 0, 10, 0), 0).unwrap().first_offset, 4);
    check_invariants(&log);
}

fn damaged_indexes_are_rebuilt(h: &dyn Harness) {
    let b = batch(1, 0, 150, 0);
    let config = small(5 * b.len() as u64);
    let mut log = h.open(config.clone(), 0);
    append_n(&mut log, 12, 1, 150, 0);
    let before = read_all(&log);
    log.close().unwrap();
    let st = h.storage();
    st.remove(&h.dir().join("00000000000000000000.index")).unwrap();
    // A length that is not a whole number of entries.
    let ti = st.open(&h.dir().join("00000000000000000005.timeindex"), false).unwrap();
    ti.set_len(13).unwrap();
    // Out-of-order entries.
    let oi = st.open(&h.dir().join("00000000000000000005.index"), false).unwrap();
    let n = oi.len().unwrap();
    assert!(n >= 16);
    oi.write_all_at(0, &[0xFF; 8]).unwrap();
    drop((ti, oi));
    let log = h.open(config, 0);
    assert_eq!(read_all(&log), before);
    for o in 0..12 {
        assert_eq!(headers(&log.read(o, 1, i64::MAX).unwrap().records)[0].base_offset, o);
    }
    assert_eq!(log.offset_for_timestamp(7).unwrap(), Some((7, 7)));
}

fn truncation(h: &dyn Harness) {
    let b = batch(2, 0, 100, 0);
    let config = small(3 * b.len() as u64);
    let mut log = h.open(config.clone(), 0);
    append_n(&mut log, 9, 2, 100, 0); // 18 offsets, segments at 0, 6, 12
                                      // Hold a zero-copy read of the tail across the truncation.
    let held = log.read(14, usize::MAX, i64::MAX).unwrap().records;
    let held_copy = held.to_vec();
    log.truncate_to(15).unwrap(); // mid-batch: removes the batch 14-15
    assert_eq!(log.log_end_offset(), 14);
    assert_eq!(&held[..], &held_copy[..], "mapped bytes survive truncation");
    check_invariants(&log);
    log.truncate_to(8).unwrap();
    assert_eq!((log.log_end_offset(), log.num_segments()), (8, 2));
    check_invariants(&log);
    assert_eq!(log.append(&mut batch(1, 0, 10, 0), 0).unwrap().first_offset, 8);
    log.truncate_to(100).unwrap();
    assert_eq!(log.log_end_offset(), 9);
    log.truncate_to(6).unwrap(); // exactly a segment base
    assert_eq!(log.log_end_offset(), 6);
    check_invariants(&log);
    log.close().unwrap();
    let mut log = h.open(config.clone(), 0);
    assert_eq!(log.log_end_offset(), 6);
    check_invariants(&log);
    // Below the log start: the log restarts empty at the offset.
    log.advance_log_start(4).unwrap();
    log.truncate_to(2).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (2, 2));
    assert!(matches!(log.truncate_to(-1), Err(LogError::InvalidArgument(_))));
    log.append(&mut batch(1, 0, 10, 0), 0).unwrap();
    check_invariants(&log);
}

fn truncation_is_durable(h: &dyn Harness) {
    let mut log = h.open(LogConfig::default(), 0);
    append_n(&mut log, 6, 1, 100, 0);
    log.flush().unwrap();
    log.truncate_to(3).unwrap();
    drop(log);
    h.crash(3);
    let log = h.open(LogConfig::default(), 0);
    assert_eq!(log.log_end_offset(), 3);
    check_invariants(&log);
}

fn log_start_advances_and_persists(h: &dyn Harness) {
    let b = batch(1, 0, 100, 0);
    let config = small(2 * b.len() as u64);
    let mut log = h.open(config.clone(), 0);
    append_n(&mut log, 7, 1, 100, 0); // segments 0,2,4,6
    assert_eq!(log.advance_log_start(3).unwrap(), 3);
    assert_eq!(log.num_segments(), 3, "segment 0-1 deleted, 2-3 kept");
    assert_eq!(log.advance_log_start(1).unwrap(), 3, "never backwards");
    assert_eq!(log.advance_log_start(100).unwrap(), 7, "clamped to LEO");
    assert_eq!(log.num_segments(), 1);
    assert!(log.read(7, 10, i64::MAX).unwrap().records.is_empty());
    drop(log);
    h.crash(1);
    let mut log = h.open(config, 0);
    assert_eq!(log.log_start_offset(), 7);
    assert!(log.log_end_offset() >= 7);
    assert_eq!(log.append(&mut batch(1, 0, 10, 0), 0).unwrap().first_offset, log.log_end_offset() - 1);
    check_invariants(&log);
}

fn retention(h: &dyn Harness) {
    let b = batch(1, 0, 100, 0);
    let config = LogConfig { retention_ms: 1000, ..small(2 * b.len() as u64) };
    let mut log = h.open(config.clone(), 0);
    for i in 0..8 {
        log.append(&mut batch(1, i * 1000, 100, 0), 0).unwrap(); // segments hold ts pairs
    }
    assert_eq!(log.num_segments(), 4);
    // Segment max timestamps: 1000, 3000, 5000, 7000 (active).
    // Not past the high watermark: the first segment ends at offset 2.
    assert_eq!(log.enforce_retention_below(2500, 1).unwrap(), 0);
    assert_eq!(log.enforce_retention_below(2500, 2).unwrap(), 1);
    assert_eq!(log.log_start_offset(), 2);
    assert_eq!(log.enforce_retention(2500).unwrap(), 0);
    assert_eq!(log.enforce_retention(100_000).unwrap(), 2, "never the active segment");
    assert_eq!((log.num_segments(), log.log_start_offset()), (1, 6));
    check_invariants(&log);

    let mut log2 = {
        log.delete().unwrap();
        h.open(LogConfig { retention_bytes: 3 * b.len() as i64, ..config }, 0)
    };
    append_n(&mut log2, 8, 1, 100, 0);
    assert_eq!(log2.enforce_retention(0).unwrap(), 2);
    assert_eq!(log2.size_bytes(), 4 * b.len() as u64);
    assert_eq!(log2.log_start_offset(), 4);
    check_invariants(&log2);
}

/// Producers may write -1 as every record's timestamp: such a segment is judged by when it
/// was last written (Kafka's `largestTimestamp` falls back on the file's mtime), not kept for
/// ever; after a reopen the clock is the file's modification time, or the open itself.
/// `cleanup.policy=compact` alone: neither `retention.ms` nor `retention.bytes` deletes data
/// (`__consumer_offsets` kept offsets committed a week ago only until the next retention run).
fn compacted_logs_are_not_trimmed_by_retention(h: &dyn Harness) {
    let b = batch(1, 0, 100, 0);
    let config =
        LogConfig { cleanup_delete: false, retention_ms: 1000, retention_bytes: 0, ..small(2 * b.len() as u64) };
    let mut log = h.open(config, 0);
    append_n(&mut log, 6, 1, 100, 0);
    assert_eq!(log.enforce_retention(1_000_000_000).unwrap(), 0);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 6));
    // Segments below a DeleteRecords log start still go.
    log.advance_log_start(4).unwrap();
    assert_eq!(log.num_segments(), 1);
    check_invariants(&log);
}

fn retention_of_segments_without_timestamps(h: &dyn Harness) {
    let b = batch(1, -1, 100, 0);
    let config = LogConfig { retention_ms: 1000, ..small(2 * b.len() as u64) };
    let mut log = h.open(config.clone(), 0);
    for i in 0..6 {
        // Written at 10_000, 11_000, ...: two batches per segment.
        log.append(&mut batch(1, -1, 100, i as u8), 10_000 + i * 1000).unwrap();
    }
    assert_eq!(log.num_segments(), 3);
    assert_eq!(log.enforce_retention(11_900).unwrap(), 0, "the first segment was written at 11_000");
    assert_eq!(log.enforce_retention(12_100).unwrap(), 1);
    assert_eq!(log.log_start_offset(), 2);
    check_invariants(&log);
    log.close().unwrap();
    // Reopened: dated by the file's mtime where the storage has one, else by the open.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let mut log = h.open(config, now);
    assert_eq!(log.enforce_retention(now + 60_000).unwrap(), 1, "not kept for ever after a restart");
    assert_eq!(log.log_start_offset(), 4);
    check_invariants(&log);
}

fn timestamps(h: &dyn Harness) {
    let b = batch(1, 0, 100, 0);
    let mut log = h.open(small(3 * b.len() as u64), 0);
    for ts in [10, 30, 20, 50, 40, 45, 70, 60] {
        log.append(&mut batch(1, ts, 100, 0), 0).unwrap();
    }
    let found = |ts| log.offset_for_timestamp(ts).unwrap().map(|(offset, _)| offset);
    assert_eq!(found(0), Some(0));
    assert_eq!(found(10), Some(0));
    assert_eq!(found(11), Some(1));
    assert_eq!(found(31), Some(3));
    assert_eq!(found(51), Some(6));
    assert_eq!(found(70), Some(6));
    assert_eq!(found(71), None);
    assert_eq!(log.max_timestamp_offset().unwrap(), Some((6, 70)));
    // A search resumed after the segment it was in was deleted starts over at the start of
    // the first segment left, not at the old position in it.
    let strata_log::TimestampCandidate::Batch(first) = log.timestamp_candidate(15, None).unwrap() else {
        panic!("no candidate for 15")
    };
    assert_eq!(first.find().unwrap(), Some((1, 30)));
    log.advance_log_start(3).unwrap();
    let strata_log::TimestampCandidate::Batch(next) = log.timestamp_candidate(15, Some(first.resume)).unwrap() else {
        panic!("no candidate after the resume")
    };
    assert_eq!(next.find().unwrap(), Some((3, 50)));
    log.advance_log_start(4).unwrap();
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((4, 40)));
    let empty = h.open_fresh_sibling();
    assert!(empty.max_timestamp_offset().unwrap().is_none());
    assert!(empty.offset_for_timestamp(0).unwrap().is_none());
}

fn batch_headers_from(h: &dyn Harness) {
    let b = batch(2, 0, 100, 0);
    let mut log = h.open(small(2 * b.len() as u64), 0);
    append_n(&mut log, 5, 2, 100, 0);
    let hs = log.batch_headers(0).unwrap();
    assert_eq!(hs.iter().map(|h| h.base_offset).collect::<Vec<_>>(), vec![0, 2, 4, 6, 8]);
    let hs = log.batch_headers(5).unwrap();
    assert_eq!(hs.iter().map(|h| h.base_offset).collect::<Vec<_>>(), vec![4, 6, 8]);
    assert!(log.batch_headers(10).unwrap().is_empty());
    let _: Vec<BatchHeader> = hs;
}

fn flush_by_messages(h: &dyn Harness) {
    let config = LogConfig { flush_interval_messages: 4, ..LogConfig::default() };
    let mut log = h.open(config.clone(), 0);
    append_n(&mut log, 5, 1, 50, 0); // flushed after the 4th
    drop(log);
    h.crash(0);
    let log = h.open(config, 0);
    assert!(log.log_end_offset() >= 4);
    check_invariants(&log);
}

fn flush_by_time(h: &dyn Harness) {
    let config = LogConfig { flush_interval_ms: 100, ..LogConfig::default() };
    let mut log = h.open(config.clone(), 0);
    append_n(&mut log, 3, 1, 50, 0);
    assert!(!log.maybe_flush(50).unwrap());
    assert!(log.maybe_flush(100).unwrap());
    assert!(!log.maybe_flush(1000).unwrap(), "nothing new to flush");
    drop(log);
    h.crash(0);
    assert_eq!(h.open(config, 0).log_end_offset(), 3);
}

fn rejects_bad_appends(h: &dyn Harness) {
    let mut log = h.open(LogConfig::default(), 0);
    let good = batch(1, 0, 10, 0);
    let mut buf = good.clone();
    buf.extend_from_slice(&good[..good.len() - 1]);
    assert!(matches!(log.append(&mut buf, 0), Err(LogError::InvalidBatch { position, .. }) if position == good.len()));
    let mut bad = good.clone();
    bad[16] = 1;
    assert!(matches!(log.append(&mut bad, 0), Err(LogError::InvalidBatch { position: 0, .. })));
    assert!(log.append(&mut [], 0).is_err());
    let mut neg = good.clone();
    neg[23..27].copy_from_slice(&(-1i32).to_be_bytes());
    assert!(matches!(log.append(&mut neg, 0), Err(LogError::BadBatchHeader { .. })));
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(log.size_bytes(), 0);
    assert!(!LogError::InvalidArgument(String::new()).is_storage_error());
}

fn delete_removes_directory(h: &dyn Harness) {
    let mut log = h.open(LogConfig::default(), 0);
    append_n(&mut log, 2, 1, 50, 0);
    let held = log.read(0, usize::MAX, i64::MAX).unwrap().records;
    log.delete().unwrap();
    assert!(!h.storage().exists(&h.dir()).unwrap());
    assert_eq!(headers(&held).len(), 2, "reads outlive the log");
}

/// `append_batch` (the produce path: no copy, vectored write) stores exactly what `append` does,
/// across rolls and a reopen (its input is borrowed immutably, so it cannot change).
fn append_batch_matches_append(h: &dyn Harness) {
    let config = small(2_000);
    let mut copied = h.open_fresh_sibling_with(config.clone());
    let mut direct = h.open(config.clone(), 0);
    for i in 0..40 {
        let original = batch(1 + i % 3, 1000 + i as i64, 90 + i as usize, i as u8);
        let mut b = original.clone();
        let a = copied.append(&mut b, i as i64).unwrap();
        let d = direct.append_batch(&original, i as i64).unwrap();
        assert_eq!(a, d);
    }
    assert!(direct.num_segments() > 1, "the appends rolled");
    assert_eq!(direct.num_segments(), copied.num_segments());
    let every = |log: &strata_log::Log| -> Vec<Vec<u8>> {
        (0..log.log_end_offset()).map(|o| log.read(o, 1, i64::MAX).unwrap().records.to_vec()).collect()
    };
    assert_eq!(every(&direct), every(&copied));
    assert_eq!(direct.offset_for_timestamp(1020).unwrap(), copied.offset_for_timestamp(1020).unwrap());
    check_invariants(&direct);
    let mut two = batch(1, 0, 10, 0);
    two.extend_from_slice(&batch(1, 0, 10, 0));
    assert!(matches!(direct.append_batch(&two, 0), Err(LogError::InvalidArgument(_))));
    let expected = every(&direct);
    direct.close().unwrap();
    let reopened = h.open(config, 0);
    assert_eq!(every(&reopened), expected);
    check_invariants(&reopened);
}

fn reads_name_their_place_in_the_segment_file(h: &dyn Harness) {
    let b = batch(2, 0, 200, 0);
    let mut log = h.open(small(3 * b.len() as u64), 0);
    append_n(&mut log, 8, 2, 200, 0);
    assert!(log.num_segments() > 2);
    let mut bases: Vec<i64> =
        h.storage().list(&h.dir()).unwrap().iter().filter_map(|n| n.strip_suffix(".log")?.parse().ok()).collect();
    bases.sort();
    for offset in 0..log.log_end_offset() {
        let r = log.read(offset, 2 * b.len(), i64::MAX).unwrap();
        let range = r.file_range.as_ref().expect("a non-empty read names its file range");
        let first = headers(&r.records)[0].base_offset;
        let base = *bases.iter().rfind(|&&x| x <= first).unwrap();
        let file = h.storage().open(&h.dir().join(format!("{base:020}.log")), false).unwrap();
        let mut on_disk = vec![0u8; r.records.len()];
        file.read_at(range.position(), &mut on_disk).unwrap();
        assert_eq!(on_disk, r.records.to_vec(), "offset {offset}");
        assert_eq!(range.fd().is_some(), h.name() == "fs");
        if let Some(fd) = range.fd() {
            let own = std::fs::File::from(fd.try_clone_to_owned().unwrap());
            let mut through_fd = vec![0u8; r.records.len()];
            std::os::unix::fs::FileExt::read_exact_at(&own, &mut through_fd, range.position()).unwrap();
            assert_eq!(through_fd, on_disk);
        }
    }
    let end = log.read(log.log_end_offset(), 100, i64::MAX).unwrap();
    assert!(end.records.is_empty() && end.file_range.is_none());
}

/// Opens an empty log next to the harness's one.
trait Sibling {
    fn open_fresh_sibling(&self) -> strata_log::Log;
    fn open_fresh_sibling_with(&self, config: LogConfig) -> strata_log::Log;
}
impl Sibling for dyn Harness + '_ {
    fn open_fresh_sibling(&self) -> strata_log::Log {
        self.open_fresh_sibling_with(LogConfig::default())
    }
    fn open_fresh_sibling_with(&self, config: LogConfig) -> strata_log::Log {
        strata_log::Log::open_with_storage(self.storage(), &self.dir().with_extension("other"), config, 0).unwrap()
    }
}

#[test]
fn in_memory_constructor() {
    let mut log = strata_log::Log::open_in_memory(LogConfig::default(), 0);
    log.append(&mut batch(1, 0, 10, 0), 0).unwrap();
    check_invariants(&log);
}

/// KIP-101: a leader stamps its epoch on every batch it appends (through both append paths),
/// the epoch cache says where each epoch starts and ends, survives a crash, and follows
/// truncations and log start moves.
fn leader_epochs(h: &dyn Harness) {
    let mut log = h.open(small(2000), 0);
    append_n(&mut log, 2, 1, 20, 0); // offsets 0, 1: before any leader epoch
    log.become_leader(3).unwrap();
    append_n(&mut log, 3, 2, 20, 0); // offsets 2-7 in epoch 3
    log.become_leader(5).unwrap();
    let b = batch(1, 10, 20, 9);
    log.append_batch(&b, 0).unwrap(); // offset 8 in epoch 5, through the no-copy path
    let epochs: Vec<i32> = headers(&read_all(&log)).iter().map(|h| h.partition_leader_epoch).collect();
    assert_eq!(epochs, vec![0, 0, 3, 3, 3, 5], "the batches as stored");
    assert_eq!(log.epoch_entries(), vec![(3, 2), (5, 8)]);
    assert_eq!(log.end_offset_for_epoch(3), (3, 8));
    assert_eq!(log.end_offset_for_epoch(4), (3, 8));
    assert_eq!(log.end_offset_for_epoch(5), (5, 9));
    assert_eq!(log.end_offset_for_epoch(1), (1, 2));
    assert_eq!((log.latest_epoch(), log.epoch_for_offset(5), log.epoch_for_offset(1)), (Some(5), Some(3), None));
    check_invariants(&log);

    // A crash keeps the epochs of what it keeps of the log: all of it once flushed; the
    // assignments themselves were durable before anything was appended in their epochs.
    log.flush().unwrap();
    drop(log);
    h.crash(7);
    let mut log = h.open(small(2000), 0);
    assert_eq!(log.epoch_entries(), vec![(3, 2), (5, 8)]);
    assert_eq!(log.leader_epoch(), None, "leadership is not a property of the files");

    // Truncation removes the epochs it cuts; the log start moving keeps the epoch it lands in.
    log.truncate_to(8).unwrap();
    assert_eq!(log.epoch_entries(), vec![(3, 2)]);
    log.advance_log_start(4).unwrap();
    assert_eq!(log.epoch_entries(), vec![(3, 4)]);
    log.flush().unwrap();
    drop(log);
    h.crash(8);
    let log = h.open(small(2000), 0);
    assert_eq!(log.epoch_entries(), vec![(3, 4)]);
}

/// The aborted-transaction index (`.txnindex` per segment): entries go to the segment holding
/// their marker, survive a clean reopen and a crash once flushed, are collected across
/// segments for a fetch range, and leave with truncation and retention.
fn aborted_transaction_index(h: &dyn Harness) {
    use strata_log::txn_index::AbortedTxn;
    let txn = |pid: i64, first: i64, last: i64, lso: i64| AbortedTxn {
        producer_id: pid,
        first_offset: first,
        last_offset: last,
        last_stable_offset: lso,
    };
    let b = batch(1, 0, 100, 0);
    let config = LogConfig { retention_ms: 1000, ..small(2 * b.len() as u64) };
    let mut log = h.open(config.clone(), 0);
    append_n(&mut log, 4, 1, 100, 0); // segments [0, 2) and [2, 4) (active)
    log.append_aborted_txn(txn(7, 0, 1, 2)).unwrap();
    append_n(&mut log, 4, 1, 100, 5_000); // [4, 6), [6, 8) active
    log.append_aborted_txn(txn(8, 2, 5, 3)).unwrap();
    log.append_aborted_txn(txn(9, 3, 7, 8)).unwrap();
    assert!(log.append_aborted_txn(txn(9, 3, 8, 9)).is_err(), "the marker must be in the log");
    assert!(log.append_aborted_txn(txn(9, 3, 7, 8)).is_err(), "markers of a segment increase");
    assert_eq!(log.collect_aborted_txns(0, 8), vec![txn(7, 0, 1, 2), txn(8, 2, 5, 3), txn(9, 3, 7, 8)]);
    assert_eq!(log.collect_aborted_txns(2, 4), vec![txn(8, 2, 5, 3), txn(9, 3, 7, 8)]);
    assert_eq!(log.collect_aborted_txns(6, 8), vec![txn(9, 3, 7, 8)]);
    assert_eq!(log.collect_aborted_txns(0, 1), vec![txn(7, 0, 1, 2)], "stops once a last stable offset passes 1");

    log.flush().unwrap();
    drop(log);
    h.crash(3);
    let mut log = h.open(config.clone(), 0);
    assert_eq!(log.collect_aborted_txns(0, 8).len(), 3, "flushed entries survive a crash");
    log.ensure_aborted_txn(txn(9, 3, 7, 8)).unwrap();
    assert_eq!(log.collect_aborted_txns(0, 8).len(), 3, "ensure does not add twice");

    log.truncate_to(7).unwrap();
    assert_eq!(log.collect_aborted_txns(0, 8), vec![txn(7, 0, 1, 2), txn(8, 2, 5, 3)]);
    log.ensure_aborted_txn(txn(9, 3, 6, 7)).unwrap();
    assert_eq!(log.collect_aborted_txns(6, 7), vec![txn(9, 3, 6, 7)]);
    log.close().unwrap();
    let mut log = h.open(config, 0);
    assert_eq!(log.collect_aborted_txns(0, 8).len(), 3, "a clean reopen keeps them");
    // Retention: segments [0, 2) and [2, 4) are past retention.ms (timestamps 0..3).
    assert_eq!(log.enforce_retention_below(4_000, 4).unwrap(), 2);
    assert_eq!(log.collect_aborted_txns(0, 8), vec![txn(8, 2, 5, 3), txn(9, 3, 6, 7)]);
    let names = h.storage().list(&h.dir()).unwrap();
    assert!(!names.iter().any(|n| n.starts_with("00000000000000000000.")), "{names:?}");
    assert!(names.iter().any(|n| n.ends_with(".txnindex")), "{names:?}");
}

both_storages!(
    aborted_transaction_index,
    leader_epochs,
    append_and_read,
    read_bounds,
    rolls_by_size_and_reads_one_segment,
    rolls_by_time,
    clean_reopen,
    crash_recovery_keeps_flushed_data,
    recovery_cuts_torn_and_corrupt_tail,
    damaged_indexes_are_rebuilt,
    truncation,
    truncation_is_durable,
    log_start_advances_and_persists,
    retention,
    retention_of_segments_without_timestamps,
    compacted_logs_are_not_trimmed_by_retention,
    timestamps,
    batch_headers_from,
    flush_by_messages,
    flush_by_time,
    rejects_bad_appends,
    delete_removes_directory,
    append_batch_matches_append,
    reads_name_their_place_in_the_segment_file,
);
