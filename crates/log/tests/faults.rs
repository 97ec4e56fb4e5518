//! Disk faults, run against the file system and the in-memory storage: corrupt bytes in a closed
//! segment (found on read and on recovery), damaged headers, a full disk (ENOSPC) during appends
//! and rolls, failed fsyncs.
#![allow(clippy::unwrap_used)]

mod common;

use std::io;
use std::sync::Arc;

use common::*;
use strata_log::storage::MemStorage;
use strata_log::{Log, LogConfig, LogError};

fn small(segment_bytes: u64) -> LogConfig {
    LogConfig { segment_bytes, index_interval_bytes: 100, segment_index_bytes: 4096, ..LogConfig::default() }
}

const PAYLOAD: usize = 150;

/// 12 one-record batches, 5 per segment: segments at 0, 5 and 10 (active). Returns the batches.
fn three_segments(h: &dyn Harness) -> (LogConfig, Vec<Vec<u8>>) {
    let size = batch(1, 0, PAYLOAD, 0).len();
    let config = small(5 * size as u64);
    let mut log = h.open(config.clone(), 0);
    let bs: Vec<Vec<u8>> = (0..12)
        .map(|i| {
            let mut b = batch(1, 1000 + i, PAYLOAD, i as u8);
            log.append(&mut b, 0).unwrap();
            b
        })
        .collect();
    assert_eq!(log.num_segments(), 3);
    log.close().unwrap();
    (config, bs)
}

/// Overwrites `bytes` at `pos` of the segment file with base offset `base`.
fn scribble(h: &dyn Harness, base: i64, pos: u64, bytes: &[u8]) {
    let f = h.storage().open(&h.dir().join(format!("{base:020}.log")), false).unwrap();
    f.write_all_at(pos, bytes).unwrap();
    f.sync().unwrap();
}

fn first_base(records: &[u8]) -> i64 {
    headers(records)[0].base_offset
}

fn corrupt_payload_in_closed_segment_is_found_on_read(h: &dyn Harness) {
    let (config, bs) = three_segments(h);
    let size = bs[0].len() as u64;
    // Offset 7 is the third batch of the segment at 5; damage its payload (the header parses).
    let at = 2 * size + 80;
    scribble(h, 5, at, &[0xde, 0xad, 0xbe, 0xef]);
    let log = h.open(config, 0);
    assert_eq!(log.log_end_offset(), 12, "a clean open does not scan closed segments");

    // Everything before the damage reads, and a read running into it stops just before it.
    assert_eq!(headers(&log.read(0, usize::MAX, i64::MAX).unwrap().records).len(), 5);
    let r = log.read(5, usize::MAX, i64::MAX).unwrap();
    assert_eq!(headers(&r.records).iter().map(|h| h.base_offset).collect::<Vec<_>>(), vec![5, 6]);
    // A read at the damaged batch is an error naming the file and the batch's position.
    match log.read(7, usize::MAX, i64::MAX) {
        Err(LogError::Corrupt { path, position, reason }) => {
            assert!(path.ends_with("00000000000000000005.log"), "{}", path.display());
            assert_eq!(position, 2 * size);
            assert!(reason.contains("CRC"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // Again (the bad batch is never remembered as good), and via the timestamp lookup.
    assert!(matches!(log.read(7, 1, i64::MAX), Err(LogError::Corrupt { .. })));
    assert!(matches!(log.offset_for_timestamp(1007), Err(LogError::Corrupt { .. })));
    // Batches after it (found through the index) and other segments are fine.
    assert_eq!(first_base(&log.read(8, 1, i64::MAX).unwrap().records), 8);
    assert_eq!(first_base(&log.read(10, usize::MAX, i64::MAX).unwrap().records), 10);
    assert_eq!(log.offset_for_timestamp(1009).unwrap(), Some((9, 1009)));
    // Producer state can still be rebuilt.
    assert_eq!(log.batch_headers(0).unwrap().len(), 12);
}

fn damaged_header_in_closed_segment_is_found_on_read(h: &dyn Harness) {
    let (config, bs) = three_segments(h);
    let size = bs[0].len() as u64;
    // The batch length of offset 2 (bytes 8..12 of its header) becomes nonsense.
    scribble(h, 0, 2 * size + 8, &[0x7f, 0xff, 0xff, 0x00]);
    let mut log = h.open(config, 0);
    let r = log.read(0, usize::MAX, i64::MAX).unwrap();
    assert_eq!(headers(&r.records).len(), 2, "the two batches before the damage");
    assert!(
        matches!(log.read(2, usize::MAX, i64::MAX), Err(LogError::Corrupt { position, .. }) if position == 2 * size)
    );
    assert_eq!(first_base(&log.read(5, 1, i64::MAX).unwrap().records), 5);
    // The log stays writable, and headers of undamaged segments are still found.
    assert_eq!(log.append(&mut batch(1, 0, 10, 0), 0).unwrap().first_offset, 12);
    assert_eq!(log.batch_headers(5).unwrap().len(), 8);
}

fn corrupt_closed_segment_is_found_when_recovery_scans_it(h: &dyn Harness) {
    let (config, bs) = three_segments(h);
    let size = bs[0].len() as u64;
    scribble(h, 5, 2 * size + 80, &[0xde, 0xad]);
    // A missing index makes the open scan the segment.
    h.storage().remove(&h.dir().join(format!("{:020}.index", 5))).unwrap();
    let log = h.open(config, 0);
    // As Apache Kafka's recovery: the segment is cut at its last valid batch (offset 6) and the
    // segments after it go, so offsets stay dense.
    assert_eq!(log.log_end_offset(), 7);
    check_invariants(&log);
}

fn torn_active_tail_is_cut_after_a_crash(h: &dyn Harness) {
    let (config, bs) = three_segments(h);
    let mut log = h.open(config.clone(), 0);
    for i in 0..3 {
        log.append(&mut batch(1, 2000 + i, PAYLOAD, 0), 0).unwrap();
    }
    log.flush().unwrap();
    drop(log); // no clean-shutdown marker
               // Half of a batch at the end of the active segment, then garbage.
    let active = h.dir().join(format!("{:020}.log", 10));
    let f = h.storage().open(&active, false).unwrap();
    let len = f.len().unwrap();
    f.write_all_at(len, &bs[0][..70]).unwrap();
    f.write_all_at(len + 70, &[0xAB; 33]).unwrap();
    f.sync().unwrap();
    drop(f);
    let mut log = h.open(config, 0);
    assert_eq!(log.log_end_offset(), 15);
    check_invariants(&log);
    assert_eq!(log.append(&mut batch(1, 0, 10, 0), 0).unwrap().first_offset, 15);
    check_invariants(&log);
}

both_storages!(
    corrupt_payload_in_closed_segment_is_found_on_read,
    damaged_header_in_closed_segment_is_found_on_read,
    corrupt_closed_segment_is_found_when_recovery_scans_it,
    torn_active_tail_is_cut_after_a_crash,
);

/// The directory of the in-memory logs below.
const DIR: &str = "/data/t-0";

fn open_mem(storage: &MemStorage, config: LogConfig) -> Log {
    Log::open_with_storage(Arc::new(storage.clone()), std::path::Path::new(DIR), config, 0).unwrap()
}

/// A log whose active segment is full after three batches: the next append rolls.
fn one_full_segment() -> (MemStorage, LogConfig, Log) {
    let storage = MemStorage::new();
    let size = batch(1, 0, 100, 0).len() as u64;
    let config = small(3 * size);
    let mut log = open_mem(&storage, config.clone());
    for i in 0..3 {
        log.append(&mut batch(1, i, 100, 0), 0).unwrap();
    }
    (storage, config, log)
}

fn is_storage_full(e: &LogError) -> bool {
    matches!(e, LogError::Io { source, .. } if source.kind() == io::ErrorKind::StorageFull)
}

#[test]
fn full_disk_fails_the_append_and_rolls_it_back() {
    let storage = MemStorage::new();
    let dir = std::path::Path::new(DIR);
    let config = LogConfig { flush_interval_messages: 1, ..small(1 << 20) };
    let mut log = open_mem(&storage, config.clone());
    for i in 0..5 {
        log.append(&mut batch(1, i, 100, i as u8), 0).unwrap();
    }
    let before = read_all(&log);
    // Room for half a batch: the write is short, then fails.
    storage.set_space_limit(Some(storage.total_bytes() + 60));
    let err = log.append(&mut batch(3, 9, 100, 9), 0).unwrap_err();
    assert!(is_storage_full(&err), "{err:?}");
    assert!(err.is_storage_error());
    assert_eq!(log.log_end_offset(), 5, "the LEO is where it was");
    assert_eq!(read_all(&log), before, "what was written is intact");
    let seg = storage.open(&dir.join(format!("{:020}.log", 0)), false).unwrap();
    assert_eq!(seg.len().unwrap(), before.len() as u64, "the partial write was cut off the file");
    // Still full: still an error, still nothing changes.
    assert!(is_storage_full(&log.append(&mut batch(1, 9, 100, 9), 0).unwrap_err()));
    assert_eq!(log.log_end_offset(), 5);

    // Space returns: appends continue at the right offset.
    storage.set_space_limit(None);
    assert_eq!(log.append(&mut batch(2, 10, 100, 10), 0).unwrap().first_offset, 5);
    check_invariants(&log);
    let acknowledged = read_all(&log);
    // And it all survives a crash.
    drop(log);
    storage.crash(7);
    let log = open_mem(&storage, config);
    assert_eq!(read_all(&log), acknowledged);
    assert_eq!(log.log_end_offset(), 7);
}

#[test]
fn full_disk_during_a_roll_keeps_the_old_segment_active() {
    let (storage, config, mut log) = one_full_segment();
    let dir = std::path::Path::new(DIR);
    // The next append rolls; the new segment's preallocated indexes do not fit.
    let size = batch(1, 0, 100, 0).len() as u64;
    storage.set_space_limit(Some(storage.total_bytes() + size + 100));
    let err = log.append(&mut batch(1, 3, 100, 0), 0).unwrap_err();
    assert!(is_storage_full(&err), "{err:?}");
    assert_eq!((log.num_segments(), log.log_end_offset()), (1, 3));
    let names = storage.list(dir).unwrap();
    assert!(!names.iter().any(|n| n.starts_with(&format!("{:020}", 3))), "no leftovers of the new segment: {names:?}");
    storage.set_space_limit(None);
    assert_eq!(log.append(&mut batch(1, 3, 100, 0), 0).unwrap().first_offset, 3);
    assert_eq!(log.num_segments(), 2);
    check_invariants(&log);
    log.close().unwrap();
    let log = open_mem(&storage, config);
    assert_eq!(log.log_end_offset(), 4);
    check_invariants(&log);
}

use strata_log::storage::Storage as _;

fn is_offline(e: &LogError) -> bool {
    matches!(e, LogError::Offline { .. })
}

/// After a failed fsync the kernel may have dropped the pages it could not write, and a later
/// fsync would succeed without them: the log must stop serving until it is reopened, and the
/// reopened log must hold every acknowledged append.
#[test]
fn failed_fsync_takes_the_log_offline_until_reopened() {
    for seed in 0..8 {
        failed_fsync_then_crash(seed);
    }
}

fn failed_fsync_then_crash(seed: u64) {
    let storage = MemStorage::new();
    let config = LogConfig { flush_interval_messages: 1, ..small(1 << 20) };
    let mut log = open_mem(&storage, config.clone());
    for i in 0..5 {
        log.append(&mut batch(1, i, 100, i as u8), 0).unwrap();
    }
    let acknowledged = read_all(&log);

    storage.set_sync_failures(true);
    let err = log.append(&mut batch(2, 9, 100, 9), 0).unwrap_err();
    assert!(err.is_storage_error(), "{err:?}");
    assert!(log.is_offline());
    // Even with working syncs again, nothing is served or written until a reopen.
    storage.set_sync_failures(false);
    assert!(is_offline(&log.append(&mut batch(1, 10, 100, 10), 0).unwrap_err()));
    assert!(is_offline(&log.read(0, 1 << 20, i64::MAX).unwrap_err()));
    assert!(is_offline(&log.flush().unwrap_err()));
    assert!(is_offline(&log.truncate_to(1).unwrap_err()));
    assert!(is_offline(&log.offset_for_timestamp(0).unwrap_err()));
    assert!(!log.maybe_flush(i64::MAX).unwrap(), "the periodic flush leaves an offline log alone");
    assert_eq!(log.enforce_retention(i64::MAX).unwrap(), 0);
    assert!(is_offline(&log.close().unwrap_err()), "no clean-shutdown marker for an offline log");

    // The process dies; the reopened log recovers what the disk kept.
    // The failed append was not acknowledged; a torn write may keep all of it or none.
    storage.crash(seed);
    let mut log = open_mem(&storage, config);
    assert!(!log.is_offline());
    let leo = log.log_end_offset();
    assert!(leo == 5 || leo == 7, "seed {seed}: LEO {leo}");
    let recovered = read_all(&log);
    assert_eq!(&recovered[..acknowledged.len()], &acknowledged[..], "seed {seed}: acknowledged appends survive");
    assert_eq!(log.append(&mut batch(1, 10, 100, 10), 0).unwrap().first_offset, leo);
    check_invariants(&log);
}

#[test]
fn failed_fsync_of_a_roll_takes_the_log_offline() {
    let (storage, config, mut log) = one_full_segment();
    let dir = std::path::Path::new(DIR);
    // The next append rolls, which fsyncs the full segment.
    storage.set_sync_failures(true);
    assert!(log.append(&mut batch(1, 3, 100, 0), 0).unwrap_err().is_storage_error());
    assert!(log.is_offline());
    assert_eq!((log.num_segments(), log.log_end_offset()), (1, 3));
    storage.set_sync_failures(false);
    let names = storage.list(dir).unwrap();
    assert!(!names.iter().any(|n| n.starts_with(&format!("{:020}", 3))), "no leftovers of the new segment: {names:?}");
    drop(log);
    let log = open_mem(&storage, config);
    assert_eq!(log.log_end_offset(), 3);
    check_invariants(&log);
}

/// A clean shutdown trusts the index files after cheap checks (length, first and last entry).
/// An entry in between that points into the middle of a batch (found by the `log_recovery`
/// fuzz target, `fuzz/regressions/log_recovery-2`) must not make reads fail or go wrong.
#[test]
fn index_entry_pointing_into_a_batch_does_not_break_reads() {
    let storage = MemStorage::new();
    let dir = std::path::Path::new(DIR);
    let config = small(1 << 20);
    let mut log = open_mem(&storage, config.clone());
    let batches: Vec<Vec<u8>> = (0..12)
        .map(|i| {
            let mut b = batch(1, 1000 + i, PAYLOAD, i as u8);
            log.append(&mut b, 0).unwrap();
            b
        })
        .collect();
    log.close().unwrap();

    // Entries are 8 bytes: relative offset, then position (both big-endian u32).
    let index = storage.open(&dir.join(format!("{:020}.index", 0)), false).unwrap();
    let entries = index.len().unwrap() / 8;
    assert!(entries >= 3, "the test needs a middle entry ({entries})");
    let middle = (entries / 2) * 8;
    let mut entry = [0u8; 8];
    index.read_at(middle, &mut entry).unwrap();
    let position = u32::from_be_bytes([entry[4], entry[5], entry[6], entry[7]]);
    index.write_all_at(middle + 4, &(position + 7).to_be_bytes()).unwrap();
    index.sync().unwrap();

    let log = open_mem(&storage, config);
    for (offset, expected) in batches.iter().enumerate() {
        let read = log.read(offset as i64, 1, i64::MAX).unwrap();
        assert_eq!(&read.records[..expected.len()], &expected[..], "offset {offset}");
    }
}

/// A process crash keeps unflushed appends in the page cache; the next open finds them and
/// serves them. They must be fsynced first: a power cut after that open must not take back a
/// record the reopened log already counted as durable (its recovery point, which is the high
/// watermark with flush.messages=1).
#[test]
fn what_recovery_finds_is_fsynced_before_it_is_served() {
    for seed in 0..20 {
        let storage = MemStorage::new();
        let config = small(1 << 20);
        let mut log = open_mem(&storage, config.clone());
        for i in 0..5 {
            log.append(&mut batch(1, 1000 + i, 100, i as u8), 0).unwrap();
        }
        // The process dies: no close, no fsync; the page cache (MemStorage's data) survives.
        drop(log);
        let reopened = open_mem(&storage, config.clone());
        let served = reopened.recovery_point();
        assert_eq!((served, reopened.log_end_offset()), (5, 5));
        drop(reopened);
        // Then the machine loses power.
        storage.crash(seed);
        let after = open_mem(&storage, config.clone());
        assert_eq!(after.log_end_offset(), served, "seed {seed}: records served after recovery were lost");
    }
}

/// A bad sector is an I/O error wherever the log verifies stored bytes (recovery scans, the
/// first CRC check of a read), read with `pread`: on a real disk a memory-mapped read of it
/// raises SIGBUS and kills the broker. The in-memory twin fails `read_at` on the range, so a
/// code path that verified through the mapping would not see it and this test would fail.
#[test]
fn a_bad_sector_is_an_io_error_not_a_crash() {
    let storage = MemStorage::new();
    let config = small(1 << 20);
    let mut log = open_mem(&storage, config.clone());
    for i in 0..4 {
        log.append(&mut batch(1, 1000 + i, 100, i as u8), 0).unwrap();
    }
    log.close().unwrap();
    let seg = std::path::Path::new("/data/t-0/00000000000000000000.log");
    let size = batch(1, 1000, 100, 0).len();
    storage.set_bad_range(seg, 2 * size + 70..2 * size + 71);
    // A clean start trusts the files; the first read of the batch checks its CRC and fails.
    let log = open_mem(&storage, config.clone());
    assert_eq!(log.read(0, 1, i64::MAX).unwrap().records.len(), size, "the batches before it read");
    match log.read(2, 1, i64::MAX) {
        Err(LogError::Io { path, .. }) => assert!(path.ends_with("00000000000000000000.log")),
        other => panic!("expected an I/O error, got {other:?}"),
    }
    // After a crash, recovery scans the segment and meets the bad sector: the open fails.
    drop(log);
    storage.remove(&std::path::Path::new("/data/t-0").join(strata_log::log::CLEAN_SHUTDOWN_FILE)).ok();
    let err = Log::open_with_storage(Arc::new(storage.clone()), std::path::Path::new("/data/t-0"), config, 0)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("00000000000000000000.log") && err.contains("bad sector"), "{err}");
}

/// The async fetch path reads with `read_cached`: batches already CRC-checked come from the
/// mapping, and the first batch needing a check from the file makes it hand over to a read
/// that may wait on the disk (after a clean restart nothing is checked yet).
#[test]
fn cached_reads_never_touch_the_file_for_unchecked_batches() {
    let storage = MemStorage::new();
    let config = small(1 << 20);
    let mut log = open_mem(&storage, config.clone());
    for i in 0..4 {
        log.append(&mut batch(1, 1000 + i, 100, i as u8), 0).unwrap();
    }
    let size = batch(1, 1000, 100, 0).len();
    // Appended batches count as checked.
    assert_eq!(log.read_cached(0, 1 << 20, i64::MAX).unwrap().unwrap().records.len(), 4 * size);
    log.close().unwrap();
    let log = open_mem(&storage, config);
    assert!(log.read_cached(0, 1 << 20, i64::MAX).unwrap().is_none(), "a clean start trusts but has not checked");
    // A full read of the first two checks them; a cached read then returns those and stops
    // before the unchecked third.
    assert_eq!(log.read(0, 2 * size, i64::MAX).unwrap().records.len(), 2 * size);
    assert_eq!(log.read_cached(0, 1 << 20, i64::MAX).unwrap().unwrap().records.len(), 2 * size);
    assert!(log.read_cached(2, 1 << 20, i64::MAX).unwrap().is_none());
    // At the log end: empty, no disk needed.
    assert!(log.read_cached(4, 1 << 20, i64::MAX).unwrap().unwrap().records.is_empty());
}

/// A power cut at every point of a roll (issue #11 review): whatever the cut leaves — the new
/// empty segment created but the old one's tail or indexes not yet sealed, or anything between
/// — reopening yields a log whose every batch fsynced before the roll is readable, whose
/// offsets run on without a gap, and whose time lookups and retention judge the old segment by
/// its real timestamps. Before the roll the old segment's data is fsynced the way group commit
/// does it (the data file only, its indexes never), or not at all.
#[test]
fn a_power_cut_anywhere_in_a_roll_loses_nothing_fsynced_and_misleads_nothing() {
    let now = 1_700_000_000_000i64;
    let size = batch(1, now, 100, 0).len() as u64;
    let config = LogConfig { retention_ms: 86_400_000, index_interval_bytes: 0, ..small(3 * size) };
    let fill = |log: &mut Log, synced: bool| {
        for i in 0..3 {
            log.append(&mut batch(1, now + i, 100, i as u8), now).unwrap();
        }
        if synced {
            let pending = log.begin_flush().unwrap();
            let result = pending.sync();
            log.end_flush(pending, result).unwrap();
        }
    };
    for synced in [true, false] {
        // Count the changing operations of the append that rolls.
        let (before, during) = {
            let storage = MemStorage::new();
            let mut log = open_mem(&storage, config.clone());
            fill(&mut log, synced);
            let before = storage.ops();
            log.append(&mut batch(1, now + 3, 100, 3), now).unwrap();
            (before, storage.ops() - before)
        };
        assert!(during > 3, "a roll is several operations");
        for cut in before + 1..=before + during {
            let storage = MemStorage::new();
            storage.set_crash_point(cut, cut);
            let mut log = open_mem(&storage, config.clone());
            fill(&mut log, synced);
            log.append(&mut batch(1, now + 3, 100, 3), now).unwrap();
            let image = storage.take_crash_image().expect("the cut was reached");
            drop(log);
            let what = format!("synced {synced}, cut {cut}");
            let mut log = open_mem(&image, config.clone());
            if synced {
                assert!(log.log_end_offset() >= 3, "{what}: fsynced batches lost (LEO {})", log.log_end_offset());
            }
            for offset in 0..log.log_end_offset() {
                let r = log.read(offset, 1, i64::MAX).unwrap_or_else(|e| panic!("{what}: offset {offset}: {e}"));
                assert_eq!(first_base(&r.records), offset, "{what}: offsets run on without a gap");
            }
            if log.log_end_offset() > 0 {
                assert_eq!(log.offset_for_timestamp(now).unwrap(), Some((0, now)), "{what}: time lookup");
            }
            assert_eq!(log.enforce_retention(now).unwrap(), 0, "{what}: retention deleted a fresh segment");
            let next = log.log_end_offset();
            assert_eq!(log.append(&mut batch(1, now + 9, 100, 9), now).unwrap().first_offset, next);
        }
    }
}

/// The state a power cut in the middle of a roll can leave on a journaling file system: the
/// new segment's (empty) files made durable by some other fsync's journal commit, the old
/// segment's indexes still at their allocated size and all zeros (never flushed), and,
/// unless its data was fsynced first, its tail torn. Reopening must neither trust the zero
/// indexes (a max timestamp of 0 would let retention delete the segment at once) nor miss the
/// torn tail behind the empty active segment (a gap in the offsets).
#[test]
fn a_roll_torn_by_a_power_cut_is_recovered() {
    let now = 1_700_000_000_000i64;
    let size = batch(1, now, 100, 0).len();
    let config = LogConfig { retention_ms: 86_400_000, index_interval_bytes: 0, ..small(3 * size as u64) };
    // `torn_new`: the first write to the new segment reached the disk only in part (a torn
    // batch), which recovery cuts to nothing: the same interrupted roll (fuzzing found that
    // the first open kept the new segment's base as the log end while the next open, finding
    // it empty, went back to the old segment's end).
    // `tail`: the old segment's unsynced tail is kept, torn mid-batch, or cut at a batch boundary.
    for (tail, torn_new) in
        [("kept", false), ("torn", false), ("cut", false), ("kept", true), ("torn", true), ("cut", true)]
    {
        let torn_tail = tail != "kept";
        let storage = MemStorage::new();
        let mut log = open_mem(&storage, config.clone());
        for i in 0..4 {
            log.append(&mut batch(1, now + i, 100, i as u8), now).unwrap();
        }
        log.flush().unwrap();
        assert_eq!(log.num_segments(), 2);
        drop(log); // no clean shutdown marker
        let dir = std::path::Path::new(DIR);
        use strata_log::storage::Storage;
        // Whole numbers of entries (8-byte offset, 12-byte time entries), as allocated.
        for (name, len) in [("00000000000000000000.index", 8192), ("00000000000000000000.timeindex", 8184)] {
            let f = storage.open(&dir.join(name), false).unwrap();
            f.set_len(0).unwrap();
            f.set_len(len).unwrap();
            f.sync().unwrap();
        }
        let new = storage.open(&dir.join("00000000000000000003.log"), false).unwrap();
        new.set_len(0).unwrap();
        if torn_new {
            new.write_all_at(0, &batch(1, now + 3, 100, 3)[..30]).unwrap();
        }
        new.sync().unwrap();
        if torn_tail {
            let old = storage.open(&dir.join("00000000000000000000.log"), false).unwrap();
            old.set_len(2 * size as u64 + if tail == "torn" { 10 } else { 0 }).unwrap();
            old.sync().unwrap();
        }
        let log = open_mem(&storage, config.clone());
        let leo = if torn_tail { 2 } else { 3 };
        assert_eq!(log.log_end_offset(), leo, "tail {tail}, torn new {torn_new}");
        // What the first open settled is durable: a crash now and another open agree.
        drop(log);
        storage.crash(7);
        let mut log = open_mem(&storage, config.clone());
        assert_eq!(log.log_end_offset(), leo, "reopened: tail {tail}, torn new {torn_new}");
        for offset in 0..leo {
            assert_eq!(first_base(&log.read(offset, 1, i64::MAX).unwrap().records), offset);
        }
        assert_eq!(log.offset_for_timestamp(now + 1).unwrap(), Some((1, now + 1)));
        assert_eq!(log.enforce_retention(now).unwrap(), 0, "retention must not take the fresh segment");
        assert_eq!(log.append(&mut batch(1, now + 5, 100, 5), now).unwrap().first_offset, leo);
    }
}

/// Found by fuzzing: after a clean shutdown the active segment's index is trusted, but one
/// with an entry out of order (damaged on disk) made the binary search pick an early entry,
/// and the read of a batch appended after the restart scanned from there into a damaged batch.
/// An index out of order now sends the segment through recovery instead.
#[test]
fn an_index_out_of_order_is_not_trusted_after_a_clean_shutdown() {
    let storage = MemStorage::new();
    let dir = std::path::Path::new(DIR);
    let config = LogConfig { index_interval_bytes: 0, ..small(1 << 20) };
    let mut log = open_mem(&storage, config.clone());
    let mut positions = Vec::new();
    for i in 0..12 {
        positions.push(log.size_bytes());
        log.append(&mut batch(1, 1000 + i, PAYLOAD, i as u8), 0).unwrap();
    }
    log.close().unwrap();
    use strata_log::storage::Storage;
    // The middle entry gets a key far above the others; batch 8's magic byte is damaged.
    let index = storage.open(&dir.join(format!("{:020}.index", 0)), false).unwrap();
    assert!(index.len().unwrap() >= 6 * 8);
    index.write_all_at(6 * 8, &0x10000u32.to_be_bytes()).unwrap();
    index.sync().unwrap();
    let data = storage.open(&dir.join(format!("{:020}.log", 0)), false).unwrap();
    data.write_all_at(positions[8] + 16, &[0x92]).unwrap();
    data.sync().unwrap();

    let mut log = open_mem(&storage, config);
    let leo = log.log_end_offset();
    let appended = log.append(&mut batch(1, 2000, PAYLOAD, 99), 0).unwrap();
    assert_eq!(appended.first_offset, leo);
    let read = log.read(leo, 1, i64::MAX).unwrap();
    assert_eq!(first_base(&read.records), leo);
}
