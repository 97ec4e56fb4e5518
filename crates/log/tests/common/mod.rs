//! Shared helpers for the strata-log test suites: batch builders and a harness that runs the
//! same test against the file system and the in-memory storage.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;

use strata_log::storage::{FsStorage, MemStorage, Storage};
use strata_log::{Log, LogConfig};
use strata_protocol::batch::{compute_crc, verify_crc, BatchHeader, BatchIter};

fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// A valid uncompressed v2 batch of `records` real records (keyless; the first one's value
/// is `payload` bytes tagged with `tag` so batches differ, the others are empty), record
/// timestamps `ts..ts+records-1`.
pub fn batch(records: i32, ts: i64, payload: usize, tag: u8) -> Vec<u8> {
    let records = records.max(1);
    let mut body = Vec::new();
    for i in 0..records {
        let mut r = vec![0u8]; // attributes
        put_varint(&mut r, i64::from(i)); // timestamp delta
        put_varint(&mut r, i64::from(i)); // offset delta
        put_varint(&mut r, -1); // null key
        let len = if i == 0 { payload } else { 0 };
        put_varint(&mut r, len as i64);
        r.extend((0..len).map(|j| tag.wrapping_add(j as u8)));
        put_varint(&mut r, 0); // no headers
        put_varint(&mut body, r.len() as i64);
        body.extend_from_slice(&r);
    }
    let h = BatchHeader {
        base_offset: 0,
        batch_length: (49 + body.len()) as i32,
        partition_leader_epoch: 0,
        magic: 2,
        crc: 0,
        attributes: 0,
        last_offset_delta: records - 1,
        base_timestamp: ts,
        max_timestamp: ts + i64::from(records - 1),
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        records_count: records,
    };
    let mut b = h.to_bytes().to_vec();
    b.extend_from_slice(&body);
    let crc = compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// Headers of all batches in `bytes`, asserting they are whole and pass CRC.
pub fn headers(bytes: &[u8]) -> Vec<BatchHeader> {
    BatchIter::new(bytes)
        .map(|r| {
            let (h, b) = r.unwrap();
            assert!(verify_crc(b), "batch at offset {} fails CRC", h.base_offset);
            h
        })
        .collect()
}

/// Reads the whole log from the log start, segment by segment, returning the concatenation.
pub fn read_all(log: &Log) -> Vec<u8> {
    let mut out = Vec::new();
    let mut next = log.log_start_offset();
    while next < log.log_end_offset() {
        let r = log.read(next, usize::MAX, i64::MAX).unwrap();
        assert!(!r.records.is_empty(), "empty read at {next} below LEO");
        let hs = headers(&r.records);
        next = hs.last().unwrap().last_offset() + 1;
        out.extend_from_slice(&r.records);
    }
    out
}

/// Checks the documented invariants: log start <= LEO, dense increasing offsets, CRCs.
pub fn check_invariants(log: &Log) {
    assert!(log.log_start_offset() <= log.log_end_offset());
    let all = read_all(log);
    let hs = headers(&all);
    for w in hs.windows(2) {
        assert_eq!(w[0].last_offset() + 1, w[1].base_offset, "offsets not dense");
    }
    if let Some(last) = hs.last() {
        assert_eq!(last.last_offset() + 1, log.log_end_offset());
        assert!(hs[0].base_offset <= log.log_start_offset());
        assert!(hs[0].last_offset() >= log.log_start_offset());
    }
}

/// Where a test's log lives, and how to reopen or crash it.
pub trait Harness {
    fn storage(&self) -> Arc<dyn Storage>;
    fn dir(&self) -> PathBuf;
    fn open(&self, config: LogConfig, now: i64) -> Log {
        Log::open_with_storage(self.storage(), &self.dir(), config, now).unwrap()
    }
    /// Simulates a power failure after the log was dropped without `close`.
    fn crash(&self, seed: u64);
    /// Whether a crash really loses unsynced bytes.
    fn loses_unsynced(&self) -> bool;
    fn name(&self) -> &'static str;
}

pub struct MemHarness {
    pub storage: MemStorage,
}

impl MemHarness {
    pub fn new() -> Self {
        MemHarness { storage: MemStorage::new() }
    }
}

impl Harness for MemHarness {
    fn storage(&self) -> Arc<dyn Storage> {
        Arc::new(self.storage.clone())
    }
    fn dir(&self) -> PathBuf {
        PathBuf::from("/data/topic-0")
    }
    fn crash(&self, seed: u64) {
        self.storage.crash(seed);
    }
    fn loses_unsynced(&self) -> bool {
        true
    }
    fn name(&self) -> &'static str {
        "mem"
    }
}

pub struct FsHarness {
    pub tmp: tempfile::TempDir,
}

impl FsHarness {
    pub fn new() -> Self {
        FsHarness { tmp: tempfile::tempdir().unwrap() }
    }
}

impl Harness for FsHarness {
    fn storage(&self) -> Arc<dyn Storage> {
        Arc::new(FsStorage)
    }
    fn dir(&self) -> PathBuf {
        self.tmp.path().join("topic-0")
    }
    fn crash(&self, _seed: u64) {
        // The page cache survives a process crash: nothing is lost, but recovery still runs.
    }
    fn loses_unsynced(&self) -> bool {
        false
    }
    fn name(&self) -> &'static str {
        "fs"
    }
}

/// Defines `mod mem { #[test] fn name() }` and `mod fs { ... }` for each suite function.
#[macro_export]
macro_rules! both_storages {
    ($($name:ident),* $(,)?) => {
        mod mem {
            $( #[test] fn $name() { super::$name(&$crate::common::MemHarness::new()); } )*
        }
        mod fs {
            $( #[test] fn $name() { super::$name(&$crate::common::FsHarness::new()); } )*
        }
    };
}

/// A log owned the way the broker's partition owns one: behind a lock (`None` once closed),
/// with a high watermark retention stays below (none by default), and an owner that may not
/// be ready to move the log start.
pub struct OwnedLog {
    pub log: std::sync::Mutex<Option<Log>>,
    pub high_watermark: std::sync::atomic::AtomicI64,
    pub ready: std::sync::atomic::AtomicBool,
}

impl OwnedLog {
    pub fn new(log: Log) -> Arc<Self> {
        Arc::new(OwnedLog {
            log: std::sync::Mutex::new(Some(log)),
            high_watermark: std::sync::atomic::AtomicI64::new(i64::MAX),
            ready: std::sync::atomic::AtomicBool::new(true),
        })
    }
}

impl strata_log::cleaner::CleanableLog for OwnedLog {
    fn with_log(&self, f: &mut dyn FnMut(&mut Log)) -> bool {
        match self.log.lock().unwrap().as_mut() {
            Some(log) => {
                f(log);
                true
            }
            None => false,
        }
    }
    fn producer_last_offsets(&self) -> std::collections::HashMap<i64, i64> {
        std::collections::HashMap::new()
    }
    fn last_stable_offset(&self) -> i64 {
        self.high_watermark.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl strata_log::maintenance::ManagedLog for OwnedLog {
    fn name(&self) -> String {
        "t-0".into()
    }
    fn retention_bound(&self) -> i64 {
        self.high_watermark.load(std::sync::atomic::Ordering::SeqCst)
    }
    fn before_log_start_moves(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::SeqCst)
    }
}
