//! Log recovery: a log directory whose files hold arbitrary bytes is opened, read, appended
//! to, closed or crashed, and reopened. Everything runs on `MemStorage` (no disk I/O).
//!
//! Input layout (all reads past the end give zeros, so every input is valid):
//!
//! | bytes | meaning |
//! |-------|---------|
//! | 1 | flags: bit 0 `.index` from input, bit 1 `.timeindex` from input, bit 2 clean-shutdown marker, bit 3 `log-start-offset` checkpoint, bit 4 split the log bytes into two segments, bit 5 crash instead of close, bit 6 index files belong to the last segment (else the first) |
//! | 1 | config: bits 0-1 `segment.index.bytes` (64 KiB, 4096, 120, 24; the 10 MiB default if bits 3-7 are all set), bit 2 `index.interval.bytes` = 0 |
//! | 2 + n | if bit 0: u16 length n, then the `.index` bytes |
//! | 2 + n | if bit 1: u16 length n, then the `.timeindex` bytes |
//! | 4 | if bit 3: checkpoint value (decimal text of the value mod 4096; raw bytes if its top bit is set) |
//! | 8 | if bit 4: u32 split point in the log bytes (mod their length + 1), u32 base offset of the second segment |
//! | rest | the `.log` bytes (of the first segment, `00000000000000000000.log`) |
//!
//! A seed made from a real segment file is `[0, 0]` followed by the file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_log::storage::{MemStorage, Storage};
use strata_log::{Log, LogConfig, LogError};
use strata_protocol::batch::{compute_crc, offsets, verify_crc, BatchHeader, BatchIter};

use crate::Input;

const NOW: i64 = 1_700_000_000_000;
const DIR: &str = "/fuzz/topic-0";

/// What the input asked for.
#[derive(Debug)]
struct Setup<'a> {
    index: Option<&'a [u8]>,
    timeindex: Option<&'a [u8]>,
    clean: bool,
    checkpoint: Option<Vec<u8>>,
    /// `(split, base)` of a second segment.
    second: Option<(usize, i64)>,
    crash: bool,
    index_on_last: bool,
    config: LogConfig,
    log: &'a [u8],
}

fn parse(data: &[u8]) -> Setup<'_> {
    let mut input = Input::new(data);
    let flags = input.u8();
    let cfg = input.u8();
    let index = (flags & 1 != 0).then(|| {
        let n = usize::from(input.u16());
        input.take(n)
    });
    let timeindex = (flags & 2 != 0).then(|| {
        let n = usize::from(input.u16());
        input.take(n)
    });
    let checkpoint = (flags & 8 != 0).then(|| {
        let v = input.u32();
        if v & 0x8000_0000 != 0 {
            v.to_be_bytes().to_vec()
        } else {
            format!("{}\n", v % 4096).into_bytes()
        }
    });
    let second = (flags & 16 != 0).then(|| (input.u32() as usize, i64::from(input.u32())));
    let log = input.rest();
    let second = second.map(|(split, base)| (split % (log.len() + 1), base)).filter(|(_, base)| *base != 0);
    let defaults = LogConfig::default();
    let config = LogConfig {
        // The default (10 MiB) only when bits 3-7 are all set: `MemStorage` zero-fills a mapped
        // index, which at 10 MiB makes an execution ~50x slower. Sizes do not change the code
        // paths except "index full", which the tiny sizes reach.
        segment_index_bytes: if cfg & 0xf8 == 0xf8 {
            defaults.segment_index_bytes
        } else {
            [64 * 1024, 4096, 120, 24][usize::from(cfg & 3)]
        },
        index_interval_bytes: if cfg & 4 != 0 { 0 } else { defaults.index_interval_bytes },
        ..defaults
    };
    Setup {
        index,
        timeindex,
        clean: flags & 4 != 0,
        checkpoint,
        second,
        crash: flags & 32 != 0,
        index_on_last: flags & 64 != 0,
        config,
        log,
    }
}

fn seg_path(base: i64, ext: &str) -> PathBuf {
    Path::new(DIR).join(format!("{base:020}.{ext}"))
}

/// Writes `bytes` to `path`, durably (so a simulated crash keeps them).
fn put(storage: &MemStorage, path: &Path, bytes: &[u8]) {
    let f = storage.open(path, true).expect("in-memory create");
    f.write_all_at(0, bytes).expect("in-memory write");
    f.sync().expect("in-memory sync");
}

/// A valid one-record batch (uncompressed, CRC set), as a producer would send it.
pub fn small_batch(ts: i64) -> Vec<u8> {
    // One record: attributes 0, timestamp delta 0, offset delta 0, null key, value "v", no headers.
    let record: [u8; 7] = [0x0e, 0x00, 0x00, 0x00, 0x01, 0x02, b'v'];
    let record = [&record[..], &[0x00]].concat();
    let h = BatchHeader {
        base_offset: 0,
        batch_length: (49 + record.len()) as i32,
        partition_leader_epoch: 0,
        magic: 2,
        crc: 0,
        attributes: 0,
        last_offset_delta: 0,
        base_timestamp: ts,
        max_timestamp: ts,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        records_count: 1,
    };
    let mut b = h.to_bytes().to_vec();
    b.extend_from_slice(&record);
    let crc = compute_crc(&b);
    b[offsets::CRC..offsets::CRC + 4].copy_from_slice(&crc.to_be_bytes());
    b
}

/// Reads the log from its start to its end.
///
/// Always asserts `log_start <= LEO` and that reads terminate. When `strict_from` is set, the
/// part of the log at or above it (the active segment, which recovery verified) must read
/// without error, make progress on every read, yield only batches that pass `verify_crc` with
/// increasing offsets, and end exactly at the LEO.
fn check_log(log: &Log, strict_from: Option<i64>) {
    let start = log.log_start_offset();
    let leo = log.log_end_offset();
    assert!(start <= leo, "log start {start} above log end {leo}");
    let strict = |o: i64| strict_from.is_some_and(|s| o >= s);

    let mut offset = start;
    let mut next_min = i64::MIN;
    // Each read returns at least one batch of >= 61 bytes, so this bounds a correct walk.
    for _ in 0..(log.size_bytes() / 61 + 2) {
        if offset >= leo {
            break;
        }
        let read = match log.read(offset, 1 << 20, leo) {
            Ok(r) => r,
            Err(e) => {
                assert!(!strict(offset), "read at {offset} of a recovered log failed: {e}");
                return;
            }
        };
        assert_eq!((read.log_start_offset, read.log_end_offset), (start, leo));
        if read.records.is_empty() {
            assert!(!strict(offset), "empty read at {offset} below the LEO {leo}");
            return;
        }
        let mut last = offset;
        for item in BatchIter::new(&read.records) {
            let (h, batch) = item.expect("reads return whole batches");
            if strict(offset) {
                assert!(verify_crc(batch), "batch at {} fails its CRC", h.base_offset);
                assert!(h.base_offset >= next_min, "offsets go backwards at {}", h.base_offset);
                assert!(h.base_offset < leo, "batch at {} at or above the LEO {leo}", h.base_offset);
            }
            next_min = h.last_offset().saturating_add(1);
            last = last.max(next_min);
        }
        if last <= offset {
            assert!(!strict(offset), "read at {offset} made no progress");
            return;
        }
        offset = last;
    }
    if strict(start) {
        assert_eq!(offset, leo, "the walk from the log start must end at the LEO");
    }

    let _ = log.batch_headers(start);
    let _ = log.max_timestamp_offset();
    let _ = log.offset_for_timestamp(NOW);
    let _ = log.offset_for_timestamp(i64::MIN);
}

fn open(storage: &MemStorage, config: &LogConfig) -> Result<Log, LogError> {
    Log::open_with_storage(Arc::new(storage.clone()), Path::new(DIR), config.clone(), NOW)
}

/// The target body. Asserts: opening never panics; after an open, [`check_log`] holds (strict
/// unless the clean-shutdown marker made the log trust its files); a valid batch appends at the
/// LEO and reads back; a close and reopen (or a crash and reopen) succeeds and gives the same
/// log start and LEO (after a crash: the LEO before or after the unflushed append).
pub fn log_recovery(data: &[u8]) {
    let s = parse(data);
    let storage = MemStorage::new();
    storage.create_dir_all(Path::new(DIR)).expect("in-memory mkdir");
    let (first_log, second) = match s.second {
        Some((split, base)) => (&s.log[..split], Some((base, &s.log[split..]))),
        None => (s.log, None),
    };
    put(&storage, &seg_path(0, "log"), first_log);
    if let Some((base, bytes)) = second {
        put(&storage, &seg_path(base, "log"), bytes);
    }
    let index_base = match second {
        Some((base, _)) if s.index_on_last => base,
        _ => 0,
    };
    if let Some(b) = s.index {
        put(&storage, &seg_path(index_base, "index"), b);
    }
    if let Some(b) = s.timeindex {
        put(&storage, &seg_path(index_base, "timeindex"), b);
    }
    if s.clean {
        put(&storage, &Path::new(DIR).join(".clean_shutdown"), &[]);
    }
    if let Some(c) = &s.checkpoint {
        put(&storage, &Path::new(DIR).join("log-start-offset"), c);
    }

    let Ok(mut log) = open(&storage, &s.config) else {
        return;
    };
    // Recovery verified the active segment unless the clean-shutdown marker said not to. Its
    // base is the second segment's if that survived (a damaged first segment deletes it).
    let active_base = match second {
        Some((base, _)) if log.num_segments() >= 2 => base,
        _ => 0,
    };
    let strict_from = (!s.clean).then_some(active_base.max(log.log_start_offset()));
    check_log(&log, strict_from);

    let leo = log.log_end_offset();
    if leo > i64::MAX / 2 {
        return; // offsets this high cannot take appends; nothing more to check
    }
    let mut batch = small_batch(NOW);
    let info =
        log.append(&mut batch, NOW).unwrap_or_else(|e| panic!("append of a valid batch at LEO {leo} failed: {e}"));
    assert_eq!((info.first_offset, info.last_offset), (leo, leo));
    assert_eq!(log.log_end_offset(), leo + 1);
    let read = log.read(leo, 1 << 20, leo + 1).expect("read what was appended");
    let (h, b) = BatchIter::new(&read.records).next().expect("the appended batch is there").expect("and whole");
    assert_eq!(h.base_offset, leo);
    assert!(verify_crc(b));
    let start = log.log_start_offset();

    if s.crash {
        drop(log);
        storage.crash(data.len() as u64);
        let log = open(&storage, &s.config).expect("reopen after a crash");
        let new_leo = log.log_end_offset();
        if !s.clean {
            assert!(new_leo == leo || new_leo == leo + 1, "LEO {new_leo} after a crash, expected {leo} or {}", leo + 1);
        }
        check_log(&log, strict_from);
    } else {
        log.close().expect("close");
        let log = open(&storage, &s.config).expect("reopen after a clean close");
        assert_eq!(
            (log.log_start_offset(), log.log_end_offset()),
            (start, leo + 1),
            "a clean close and reopen keeps the log's bounds"
        );
        check_log(&log, strict_from);
    }
}
