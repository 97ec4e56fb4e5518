//! The log cleaner against a model, and against power cuts at every step of its swap.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use strata_log::cleaner::OffsetMap;
use strata_log::storage::MemStorage;
use strata_log::{Log, LogConfig};
use strata_protocol::batch::{BatchHeader, BatchIter};
use strata_protocol::kafka_protocol::records::Compression;
use strata_protocol::records::encode_key_values;
use strata_protocol::records::filter::{delete_horizon, parse_records, records_section};

const RETENTION: i64 = 1_000;

fn config(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes: 100,
        segment_index_bytes: 4096,
        cleanup_compact: true,
        cleanup_delete: false,
        delete_retention_ms: RETENTION,
        ..LogConfig::default()
    }
}

/// (offset, key, value) of every record of the log, in order; checks batch ordering on the way.
fn records(log: &Log) -> Vec<(i64, String, Option<String>)> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    let mut last_end = -1;
    while offset < log.log_end_offset() {
        let read = log.read(offset, 1 << 20, i64::MAX).unwrap();
        if read.records.is_empty() {
            break;
        }
        for b in BatchIter::new(&read.records) {
            let (h, bytes) = b.unwrap();
            assert!(h.base_offset > last_end, "batches out of order");
            last_end = h.last_offset();
            let section = records_section(bytes).unwrap();
            for r in parse_records(&section, h.records_count).unwrap() {
                let key = String::from_utf8(r.key.unwrap().to_vec()).unwrap();
                let value = r.value.map(|v| String::from_utf8(v.to_vec()).unwrap());
                out.push((r.offset(h.base_offset), key, value));
            }
            offset = h.last_offset() + 1;
        }
    }
    out
}

fn append(log: &mut Log, entries: &[(String, Option<String>)], codec: Compression, now: i64) -> i64 {
    let e = entries.iter().map(|(k, v)| (Some(Bytes::from(k.clone())), v.clone().map(Bytes::from)));
    let mut b = encode_key_values(e, now, codec).unwrap().to_vec();
    log.append(&mut b, now).unwrap().first_offset
}

#[derive(Debug, Clone)]
enum Op {
    /// Keys (from a small set) and whether each is a tombstone; the codec.
    Produce(Vec<(u8, bool)>, u8),
    Clean,
    Advance(i64),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (prop::collection::vec((0u8..12, prop::bool::weighted(0.15)), 1..6), 0u8..3).prop_map(|(r, c)| Op::Produce(r, c)),
        2 => Just(Op::Clean),
        1 => (1i64..800).prop_map(Op::Advance),
        1 => Just(Op::Reopen),
    ]
}

/// The model: what was produced at each offset, and when.
struct Model {
    produced: BTreeMap<i64, (String, Option<String>, i64)>,
}

impl Model {
    /// After a cleaning that covered `[.., end)`: everything read is what was produced at that
    /// offset; below `end` each key appears once, as its latest record below `end`; every
    /// key's latest value is there; a missing latest tombstone had its delete.retention.ms pass.
    fn check(&self, got: &[(i64, String, Option<String>)], end: i64, now: i64, what: &str) {
        let mut seen_below_end = HashMap::new();
        for (offset, key, value) in got {
            let (k, v, _) = &self.produced[offset];
            assert_eq!((k, v), (key, value), "{what}: offset {offset} changed");
            if *offset < end {
                assert!(seen_below_end.insert(key.clone(), *offset).is_none(), "{what}: key {key} twice below {end}");
            }
        }
        let mut latest_below_end: HashMap<&String, i64> = HashMap::new();
        let mut latest: HashMap<&String, i64> = HashMap::new();
        for (offset, (key, _, _)) in &self.produced {
            latest.insert(key, *offset);
            if *offset < end {
                latest_below_end.insert(key, *offset);
            }
        }
        for (key, offset) in &seen_below_end {
            assert_eq!(
                latest_below_end.get(key),
                Some(offset),
                "{what}: {key} kept at {offset}, not its latest (map end {end})"
            );
        }
        let present: HashMap<i64, ()> = got.iter().map(|(o, _, _)| (*o, ())).collect();
        for (key, offset) in latest {
            let (_, value, at) = &self.produced[&offset];
            if value.is_some() {
                assert!(present.contains_key(&offset), "{what}: latest value of {key} (offset {offset}) lost");
            } else if !present.contains_key(&offset) {
                assert!(
                    now >= at + RETENTION,
                    "{what}: tombstone of {key} at {offset} dropped before delete.retention.ms"
                );
            }
        }
    }
}

fn codec(c: u8) -> Compression {
    [Compression::None, Compression::Lz4, Compression::Zstd][usize::from(c % 3)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random produce, cleanings, clock moves and reopens against the model.
    #[test]
    fn cleaning_keeps_the_latest_value_of_every_key_and_never_moves_an_offset(
        ops in prop::collection::vec(op(), 1..60),
        segment_bytes in 150u64..700,
        map_slots in prop_oneof![Just(8usize), Just(16), Just(32), Just(4096)],
    ) {
        let storage = MemStorage::new();
        let dir = Path::new("/data/t-0");
        let open = |now| Log::open_with_storage(Arc::new(storage.clone()), dir, config(segment_bytes), now).unwrap();
        let mut now = 1_000_000;
        let mut log = open(now);
        let mut model = Model { produced: BTreeMap::new() };
        // A map smaller than the key set makes cleanings cover the dirty section in passes.
        let mut map = OffsetMap::with_buffer(map_slots * strata_log::cleaner::offset_map::BYTES_PER_ENTRY);
        prop_assert!(map.capacity() >= 5, "a batch of 5 records fits");
        let mut checkpoint = None;
        let mut n = 0;
        for (i, op) in ops.iter().enumerate() {
            match op {
                Op::Produce(records, c) => {
                    let entries: Vec<_> = records.iter().map(|(k, tomb)| {
                        n += 1;
                        (format!("k{k}"), (!tomb).then(|| format!("v{n}")))
                    }).collect();
                    let first = append(&mut log, &entries, codec(*c), now);
                    for (j, (k, v)) in entries.into_iter().enumerate() {
                        model.produced.insert(first + j as i64, (k, v, now));
                    }
                }
                Op::Clean => {
                    let leo = log.log_end_offset();
                    if let Some(end) = log.clean_now(checkpoint, now, HashMap::new(), i64::MAX, &mut map).unwrap() {
                        checkpoint = Some(end);
                        prop_assert_eq!(log.log_end_offset(), leo);
                        model.check(&records(&log), end, now, &format!("op {i}"));
                    }
                }
                Op::Advance(ms) => now += ms,
                Op::Reopen => {
                    let before = records(&log);
                    log.close().unwrap();
                    log = open(now);
                    prop_assert_eq!(records(&log), before);
                }
            }
        }
        // Settle: once delete.retention.ms has passed since a cleaning set their horizon, the
        // next cleaning drops every tombstone below the active segment.
        append(&mut log, &[("roll".into(), Some("x".into()))], Compression::None, now);
        log.roll(now).unwrap();
        append(&mut log, &[("roll".into(), Some("y".into()))], Compression::None, now);
        let active = log.log_end_offset() - 1;
        let mut end = checkpoint.unwrap_or(0);
        while end < active {
            end = log.clean_now(Some(end), now, HashMap::new(), i64::MAX, &mut map).unwrap().unwrap();
        }
        now += RETENTION;
        log.roll(now).unwrap();
        append(&mut log, &[("roll".into(), Some("z".into()))], Compression::None, now);
        let active = log.log_end_offset() - 1;
        let mut end2 = end;
        while end2 < active {
            end2 = log.clean_now(Some(end2), now, HashMap::new(), i64::MAX, &mut map).unwrap().unwrap();
        }
        let got = records(&log);
        for (offset, key, value) in &got {
            prop_assert!(value.is_some() || *offset >= end2, "tombstone of {} at {} outlived its horizon", key, offset);
        }
        model.produced.insert(log.log_end_offset() - 3, ("roll".into(), Some("x".into()), now));
        model.produced.insert(log.log_end_offset() - 2, ("roll".into(), Some("y".into()), now));
        model.produced.insert(log.log_end_offset() - 1, ("roll".into(), Some("z".into()), now));
    }
}

/// Builds a compacted log with several segments of overwritten keys and a tombstone, closed.
fn build(storage: &MemStorage, now: i64) -> Log {
    let dir = Path::new("/data/t-0");
    let mut log = Log::open_with_storage(Arc::new(storage.clone()), dir, config(400), now).unwrap();
    for round in 0..6 {
        let entries: Vec<_> = (0..4).map(|k| (format!("k{k}"), Some(format!("r{round}")))).collect();
        append(&mut log, &entries, if round % 2 == 0 { Compression::None } else { Compression::Lz4 }, now);
    }
    append(&mut log, &[("k1".into(), None)], Compression::None, now);
    for txn in aborted() {
        log.append_aborted_txn(txn).unwrap();
    }
    log.roll(now).unwrap();
    append(&mut log, &[("tail".into(), Some("t".into()))], Compression::None, now);
    log.flush().unwrap();
    log
}

/// Aborted-transaction index entries [`build`] gives its log, spread over its segments; the
/// cleaner carries them into the segments it writes.
fn aborted() -> Vec<strata_log::txn_index::AbortedTxn> {
    [(0, 3), (8, 11), (16, 19)]
        .into_iter()
        .map(|(first, last)| strata_log::txn_index::AbortedTxn {
            producer_id: first,
            first_offset: first,
            last_offset: last,
            last_stable_offset: last + 1,
        })
        .collect()
}

/// A power cut at every storage operation of a cleaning: the log reopens to what it held
/// before the cleaning, or after one of its segment swaps (each group of segments is swapped
/// on its own, as in Kafka) — never a mix within a swap — and stays writable.
#[test]
fn a_power_cut_anywhere_in_a_cleaning_leaves_the_old_or_the_new_segments() {
    let now = 5_000_000;
    let (states, ops) = {
        let storage = MemStorage::new();
        let mut log = build(&storage, now);
        let mut states = vec![records(&log)];
        let start = storage.ops();
        let mut map = OffsetMap::with_buffer(1 << 16);
        let plan = log.clean_plan(None, now, HashMap::new(), i64::MAX).unwrap().unwrap();
        let end = plan.build_offset_map(&mut map, &mut |_| true).unwrap();
        for group in plan.groups(end) {
            let cleaned = plan.clean_group(group, &map, now, &mut |_| true).unwrap();
            assert!(log.replace_segments(cleaned).unwrap());
            states.push(records(&log));
            assert_eq!(log.collect_aborted_txns(0, i64::MAX), aborted());
        }
        (states, (start, storage.ops() - start))
    };
    assert!(states.len() >= 3, "the cleaning swaps several groups: {}", states.len());
    assert!(states.last().unwrap().len() < states[0].len(), "the cleaning removed records");
    let mut outcomes = vec![0; states.len()];
    for cut in ops.0 + 1..=ops.0 + ops.1 + 1 {
        for seed in 0..3 {
            let storage = MemStorage::new();
            let mut log = build(&storage, now);
            storage.set_crash_point(cut, seed);
            log.clean_now(None, now, HashMap::new(), i64::MAX, &mut OffsetMap::with_buffer(1 << 16)).unwrap();
            let Some(image) = storage.take_crash_image() else { continue };
            drop(log);
            let mut log = Log::open_with_storage(Arc::new(image), Path::new("/data/t-0"), config(400), now).unwrap();
            let got = records(&log);
            let Some(i) = states.iter().position(|s| *s == got) else {
                panic!("cut at operation {cut} (seed {seed}) left a state no swap makes: {got:?}")
            };
            assert_eq!(log.collect_aborted_txns(0, i64::MAX), aborted(), "cut at {cut} (seed {seed})");
            outcomes[i] += 1;
            let leo = log.log_end_offset();
            assert_eq!(append(&mut log, &[("k9".into(), Some("after".into()))], Compression::None, now), leo);
            // And it can be cleaned again.
            log.clean_now(None, now, HashMap::new(), i64::MAX, &mut OffsetMap::with_buffer(1 << 16)).unwrap();
            assert_eq!(records(&log).last().unwrap().1, "k9");
        }
    }
    // The last state is what the cleaning leaves once its last fsync returned (no cut after it).
    let before_last = outcomes.len() - 1;
    assert!(outcomes[..before_last].iter().all(|n| *n > 0), "cuts fell before and after every swap: {outcomes:?}");
}

/// The first cleaning that keeps a tombstone marks its batch with a delete horizon of
/// now + delete.retention.ms (KIP-534); a cleaning after the horizon drops it.
#[test]
fn tombstones_get_a_delete_horizon_and_go_after_it() {
    let storage = MemStorage::new();
    let now = 7_000_000;
    let mut log = build(&storage, now);
    let mut map = OffsetMap::with_buffer(1 << 16);
    let end = log.clean_now(None, now, HashMap::new(), i64::MAX, &mut map).unwrap().unwrap();
    let read = log.read(0, 1 << 20, i64::MAX).unwrap();
    let mut horizons = Vec::new();
    let mut offset = 0;
    while offset < end {
        let r = log.read(offset, 1 << 20, i64::MAX).unwrap();
        for b in BatchIter::new(&r.records) {
            let (h, _) = b.unwrap();
            horizons.push((h.records_count, delete_horizon(&h)));
            offset = h.last_offset() + 1;
        }
    }
    drop(read);
    assert!(horizons.contains(&(1, Some(now + RETENTION))), "{horizons:?}");
    assert!(records(&log).iter().any(|(_, k, v)| k == "k1" && v.is_none()));
    // Not yet: the horizon has not passed.
    log.roll(now + RETENTION - 1).unwrap();
    append(&mut log, &[("x".into(), Some("1".into()))], Compression::None, now);
    let end = log.clean_now(Some(end), now + RETENTION - 1, HashMap::new(), i64::MAX, &mut map).unwrap().unwrap();
    assert!(records(&log).iter().any(|(_, k, v)| k == "k1" && v.is_none()));
    log.roll(now + RETENTION).unwrap();
    append(&mut log, &[("x".into(), Some("2".into()))], Compression::None, now);
    log.clean_now(Some(end), now + RETENTION, HashMap::new(), i64::MAX, &mut map).unwrap().unwrap();
    assert!(!records(&log).iter().any(|(_, k, _)| k == "k1"), "the tombstone went");
}

/// An idempotent producer's last batch stays (empty) when cleaning removes all its records, so
/// its sequence survives a restart; its earlier emptied batches go.
#[test]
fn the_last_batch_of_a_producer_is_kept_empty() {
    let storage = MemStorage::new();
    let now = 9_000_000;
    let dir = Path::new("/data/t-0");
    let mut log = Log::open_with_storage(Arc::new(storage.clone()), dir, config(1 << 20), now).unwrap();
    let idempotent = |log: &mut Log, seq: i32, key: &str| {
        let mut b =
            encode_key_values([(Some(Bytes::from(key.to_string())), Some(Bytes::from("v")))], now, Compression::None)
                .unwrap()
                .to_vec();
        let mut h = BatchHeader::parse(&b).unwrap();
        h.producer_id = 77;
        h.producer_epoch = 0;
        h.base_sequence = seq;
        b[..61].copy_from_slice(&h.to_bytes());
        let crc = strata_protocol::batch::compute_crc(&b);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        log.append(&mut b, now).unwrap().first_offset
    };
    idempotent(&mut log, 0, "a");
    let last = idempotent(&mut log, 1, "a");
    log.roll(now).unwrap();
    append(&mut log, &[("a".into(), Some("newer".into()))], Compression::None, now);
    log.roll(now).unwrap();
    append(&mut log, &[("tail".into(), Some("t".into()))], Compression::None, now);
    let producers = HashMap::from([(77, last)]);
    log.clean_now(None, now, producers, i64::MAX, &mut OffsetMap::with_buffer(1 << 16)).unwrap().unwrap();
    let r = log.read(0, 1 << 20, i64::MAX).unwrap();
    let batches: Vec<_> = BatchIter::new(&r.records).map(|b| b.unwrap().0).collect();
    assert_eq!(batches[0].base_offset, last, "the first emptied batch went");
    assert_eq!((batches[0].records_count, batches[0].producer_id, batches[0].base_sequence), (0, 77, 1));
    // Once the producer has a later batch, its emptied one goes at the next cleaning.
    let newer = idempotent(&mut log, 2, "b");
    log.roll(now).unwrap();
    append(&mut log, &[("tail".into(), Some("u".into()))], Compression::None, now);
    let producers = HashMap::from([(77, newer)]);
    log.clean_now(None, now, producers, i64::MAX, &mut OffsetMap::with_buffer(1 << 16)).unwrap().unwrap();
    let r = log.read(0, 1 << 20, i64::MAX).unwrap();
    let first = BatchIter::new(&r.records).next().unwrap().unwrap().0;
    assert!(first.records_count > 0, "no emptied batch is left at the start: {first:?}");
}

/// `max.compaction.lag.ms` makes a log due for cleaning whatever its dirty ratio, once its
/// oldest dirty record is older; `min.compaction.lag.ms` keeps young segments out of it.
#[test]
fn compaction_lags_bound_what_is_cleaned_and_when() {
    let storage = MemStorage::new();
    let now = 20_000_000;
    let mut cfg = config(1 << 20);
    cfg.max_compaction_lag_ms = 60_000;
    let mut log = Log::open_with_storage(Arc::new(storage.clone()), Path::new("/data/t-0"), cfg.clone(), now).unwrap();
    append(&mut log, &[("a".into(), Some("1".into()))], Compression::None, now);
    log.roll(now).unwrap();
    append(&mut log, &[("a".into(), Some("2".into()))], Compression::None, now + 1_000);
    let stats = log.cleanable_stats(None, now + 30_000).unwrap().unwrap();
    assert!(!stats.max_lag_exceeded);
    assert!(log.cleanable_stats(None, now + 61_000).unwrap().unwrap().max_lag_exceeded);
    // With min.compaction.lag.ms, the first segment (records at `now`) is too young until then.
    cfg.min_compaction_lag_ms = 10_000;
    log.update_config(cfg);
    assert!(log.cleanable_stats(None, now + 5_000).unwrap().is_none());
    let stats = log.cleanable_stats(None, now + 10_001).unwrap().unwrap();
    assert_eq!((stats.first_dirty, stats.first_uncleanable), (0, 1));
}

/// `cleanup.policy=compact,delete`: the cleaner compacts, and retention deletes old segments
/// as well.
#[test]
fn compact_and_delete_both_apply() {
    let storage = MemStorage::new();
    let now = 30_000_000;
    // Segments too big to merge: a merged segment would be judged by its newest record.
    let cfg = LogConfig { cleanup_delete: true, retention_ms: 60_000, ..config(120) };
    let mut log = Log::open_with_storage(Arc::new(storage.clone()), Path::new("/data/t-0"), cfg, now).unwrap();
    append(&mut log, &[("a".into(), Some("1".into())), ("b".into(), Some("1".into()))], Compression::None, now);
    log.roll(now).unwrap();
    append(&mut log, &[("a".into(), Some("2".into()))], Compression::None, now + 100_000);
    log.roll(now + 100_000).unwrap();
    append(&mut log, &[("c".into(), Some("1".into()))], Compression::None, now + 100_000);
    let end =
        log.clean_now(None, now + 100_000, HashMap::new(), i64::MAX, &mut OffsetMap::with_buffer(1 << 16)).unwrap();
    assert_eq!(end, Some(3));
    let keys: Vec<_> = records(&log).into_iter().map(|(o, k, _)| (o, k)).collect();
    assert_eq!(keys, vec![(1, "b".into()), (2, "a".into()), (3, "c".into())]);
    // The first segment (records at `now`) is past retention.ms; retention deletes it.
    assert_eq!(log.enforce_retention(now + 100_000).unwrap(), 1);
    assert_eq!(log.log_start_offset(), 2);
    let keys: Vec<_> = records(&log).into_iter().map(|(o, k, _)| (o, k)).collect();
    assert_eq!(keys, vec![(2, "a".into()), (3, "c".into())]);
}

/// After a cleaning, one read returns every batch of a segment across the gaps the cleaner
/// left (a read that stopped at each gap would make fetches of compacted topics crawl), and
/// every cleaned segment still ends at the next one's base (the group's last batch is kept).
#[test]
fn reads_cross_the_gaps_in_one_go() {
    let storage = MemStorage::new();
    let now = 40_000_000;
    let mut log =
        Log::open_with_storage(Arc::new(storage.clone()), Path::new("/data/t-0"), config(1 << 20), now).unwrap();
    for round in 0..20 {
        let entries: Vec<_> = (0..5).map(|k| (format!("k{k}"), Some(format!("r{round}")))).collect();
        append(&mut log, &entries, Compression::None, now);
        append(&mut log, &[(format!("once{round}"), Some("x".into()))], Compression::None, now);
    }
    log.roll(now).unwrap();
    let active = log.log_end_offset();
    append(&mut log, &[("tail".into(), Some("t".into()))], Compression::None, now);
    log.clean_now(None, now, HashMap::new(), i64::MAX, &mut OffsetMap::with_buffer(1 << 16)).unwrap().unwrap();
    let r = log.read(0, 1 << 20, i64::MAX).unwrap();
    let batches: Vec<_> = BatchIter::new(&r.records).map(|b| b.unwrap().0).collect();
    assert!(batches.len() > 20, "one read returned {} batches", batches.len());
    assert_eq!(batches.last().unwrap().last_offset() + 1, active, "the cleaned segment ends at the next base");
    // Reopened after a crash, the cleaned segment is taken as whole (not as a torn roll).
    drop(log);
    storage.crash(7);
    let log = Log::open_with_storage(Arc::new(storage.clone()), Path::new("/data/t-0"), config(1 << 20), now).unwrap();
    // The unsynced tail may be lost; the cleaned segment and its offsets may not.
    assert!(log.log_end_offset() >= active, "log end {} below {active}", log.log_end_offset());
    assert_eq!(records(&log).iter().filter(|(o, _, _)| *o < active).count(), 25);
}

mod manager {
    use super::*;
    use crate::common::OwnedLog;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};
    use strata_log::cleaner::{CleanableLog, CleanerConfig, LogCleaner, LogSource};
    use strata_log::storage::Storage;

    #[derive(Default)]
    struct Source(Mutex<Vec<Arc<OwnedLog>>>);

    impl LogSource for Source {
        fn logs(&self) -> Vec<Arc<dyn CleanableLog>> {
            self.0.lock().unwrap().iter().map(|l| l.clone() as Arc<dyn CleanableLog>).collect()
        }
    }

    /// Rounds of 4 keys named `{prefix}0..3` per (prefix, rounds), then a rolled tail.
    fn filled(storage: &MemStorage, parts: &[(&str, usize)]) -> Log {
        let now = 50_000_000;
        let cfg = LogConfig { min_cleanable_dirty_ratio: 0.01, ..config(1 << 20) };
        let mut log = Log::open_with_storage(Arc::new(storage.clone()), Path::new("/data/t-0"), cfg, now).unwrap();
        for (prefix, rounds) in parts {
            for round in 0..*rounds {
                let entries: Vec<_> = (0..4).map(|k| (format!("{prefix}{k}"), Some(format!("r{round}")))).collect();
                append(&mut log, &entries, Compression::None, now);
            }
        }
        log.roll(now).unwrap();
        append(&mut log, &[("tail".into(), Some("t".into()))], Compression::None, now);
        log
    }

    fn wait(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn checkpoint_text(storage: &MemStorage) -> String {
        let path = Path::new("/data/cleaner-offset-checkpoint");
        if !storage.exists(path).unwrap() {
            return String::new();
        }
        let f = storage.open(path, false).unwrap();
        let mut buf = vec![0; f.len().unwrap() as usize];
        f.read_at(0, &mut buf).unwrap();
        String::from_utf8(buf).unwrap()
    }

    /// The threads clean a dirty log and record it in the checkpoint file (Kafka's format); a
    /// log deleted and created again in the same directory does not inherit that checkpoint;
    /// shutdown returns promptly.
    #[test]
    fn the_cleaner_threads_clean_checkpoint_and_forget_a_recreated_log() {
        let storage = MemStorage::new();
        storage.create_dir_all(Path::new("/data")).unwrap();
        let source = Arc::new(Source::default());
        let first = OwnedLog::new(filled(&storage, &[("k", 10)]));
        source.0.lock().unwrap().push(first.clone());
        let config =
            CleanerConfig { backoff_ms: 5, dedupe_buffer_size: 1 << 16, threads: 2, ..CleanerConfig::default() };
        let cleaner = LogCleaner::start(config, source.clone()).unwrap();
        wait("the first cleaning", || cleaner.metrics().cleanings >= 1);
        wait("the checkpoint", || checkpoint_text(&storage) == "0\n1\nt 0 40\n");
        let kept = |l: &OwnedLog| {
            let mut n = 0;
            l.with_log(&mut |log| n = records(log).len());
            n
        };
        assert_eq!(kept(&first), 5, "4 keys and the tail");

        // Delete the topic and create it again at once, longer than the old checkpoint, with
        // keys below the old checkpoint (40) that only repeat there: taking the old checkpoint
        // for the new log would leave them uncleaned.
        first.log.lock().unwrap().take().unwrap().delete().unwrap();
        let second = OwnedLog::new(filled(&storage, &[("a", 10), ("k", 15)]));
        source.0.lock().unwrap()[0] = second.clone();
        wait("the recreated log cleaned", || kept(&second) == 9);
        wait("its checkpoint", || checkpoint_text(&storage) == "0\n1\nt 0 100\n");

        let started = Instant::now();
        cleaner.shutdown();
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}

/// Transactions (Kafka's `CleanedTransactionMetadata`): records of aborted transactions go and
/// never shadow older committed values; committed transactional records are compacted like any
/// other; a marker whose transaction has no record left goes after its delete horizon; nothing
/// at or above the last stable offset is cleaned.
#[test]
fn aborted_records_and_old_markers_go_committed_ones_compact() {
    use strata_log::txn_index::AbortedTxn;
    use strata_protocol::records::control::{encode_marker, EndTxnMarker};
    let now = 1_000_000;
    let storage = MemStorage::new();
    let mut log = Log::open_with_storage(Arc::new(storage), Path::new("/t-0"), config(1 << 20), now).unwrap();
    let txn_batch = |log: &mut Log, pid: i64, seq: i32, key: &str, value: &str| {
        let mut b = encode_key_values(
            [(Some(Bytes::from(key.to_string())), Some(Bytes::from(value.to_string())))],
            now,
            Compression::None,
        )
        .unwrap()
        .to_vec();
        let mut h = BatchHeader::parse(&b).unwrap();
        h.producer_id = pid;
        h.producer_epoch = 0;
        h.base_sequence = seq;
        h.attributes |= 1 << 4; // transactional
        b[..61].copy_from_slice(&h.to_bytes());
        let crc = strata_protocol::batch::compute_crc(&b);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        log.append(&mut b, now).unwrap().first_offset
    };
    let marker = |log: &mut Log, pid: i64, commit: bool| {
        let b = encode_marker(pid, 0, EndTxnMarker { commit, coordinator_epoch: 0 }, now);
        log.append_batch(&b, now).unwrap().first_offset
    };
    append(&mut log, &[("k".into(), Some("committed-1".into()))], Compression::None, now); // 0
    let aborted_at = txn_batch(&mut log, 7, 0, "k", "aborted"); // 1
    let abort_at = marker(&mut log, 7, false); // 2
    log.append_aborted_txn(AbortedTxn {
        producer_id: 7,
        first_offset: aborted_at,
        last_offset: abort_at,
        last_stable_offset: 3,
    })
    .unwrap();
    txn_batch(&mut log, 8, 0, "j", "committed-txn-old"); // 3
    marker(&mut log, 8, true); // 4
    txn_batch(&mut log, 8, 1, "j", "committed-txn-new"); // 5
    marker(&mut log, 8, true); // 6
    log.roll(now).unwrap();
    append(&mut log, &[("tail".into(), Some("t".into()))], Compression::None, now); // 7, active
    let markers = |log: &Log| {
        let r = log.read(0, 1 << 20, i64::MAX).unwrap();
        BatchIter::new(&r.records)
            .map(|b| b.unwrap().0)
            .filter(|h| h.is_control())
            .map(|h| (h.base_offset, delete_horizon(&h)))
            .collect::<Vec<_>>()
    };
    let values = |log: &Log| {
        let control: Vec<i64> = markers(log).into_iter().map(|(o, _)| o).collect();
        records(log)
            .into_iter()
            .filter(|(o, _, _)| !control.contains(o))
            .map(|(o, k, v)| (o, k, v.unwrap_or_default()))
            .collect::<Vec<_>>()
    };

    // Below the last stable offset's segment nothing is cleaned.
    assert_eq!(log.clean_now(None, now, HashMap::new(), 3, &mut OffsetMap::with_buffer(1 << 16)).unwrap(), None);

    log.clean_now(None, now, HashMap::new(), i64::MAX, &mut OffsetMap::with_buffer(1 << 16)).unwrap().unwrap();
    assert_eq!(
        values(&log),
        vec![
            (0, "k".into(), "committed-1".into()),
            (5, "j".into(), "committed-txn-new".into()),
            (7, "tail".into(), "t".into()),
        ],
        "the aborted value neither stays nor removes the committed one it would shadow"
    );
    // A marker stays as it is while the cleaning that removes its transaction's records runs
    // (Kafka keeps it until no record of the transaction is left)...
    assert_eq!(markers(&log), vec![(2, None), (4, None), (6, None)]);
    assert_eq!(log.collect_aborted_txns(0, 8).len(), 1, "the aborted transaction's entry is kept");
    // ...then, alone, it gets a delete horizon; the one whose transaction kept a record does not.
    log.clean_now(None, now, HashMap::new(), i64::MAX, &mut OffsetMap::with_buffer(1 << 16)).unwrap();
    assert_eq!(markers(&log), vec![(2, Some(now + RETENTION)), (4, Some(now + RETENTION)), (6, None)]);
    // Past the horizon, the lone markers go.
    log.clean_now(None, now + RETENTION, HashMap::new(), i64::MAX, &mut OffsetMap::with_buffer(1 << 16)).unwrap();
    assert_eq!(markers(&log), vec![(6, None)]);
    assert_eq!(values(&log).len(), 3);
    assert!(log.collect_aborted_txns(0, 8).is_empty(), "the removed abort marker took its entry along");

    // The producer that aborted then commits: its committed record is not taken for aborted by
    // any later cleaning.
    let committed_at = txn_batch(&mut log, 7, 1, "m", "committed-after-abort"); // 8
    marker(&mut log, 7, true); // 9
    log.roll(now).unwrap();
    append(&mut log, &[("tail2".into(), Some("t".into()))], Compression::None, now); // 10, active
    for later in [2, 3, 4] {
        let at = now + later * RETENTION;
        log.clean_now(None, at, HashMap::new(), i64::MAX, &mut OffsetMap::with_buffer(1 << 16)).unwrap();
        assert!(
            values(&log).contains(&(committed_at, "m".into(), "committed-after-abort".into())),
            "cleaning at +{later} horizons dropped a committed record"
        );
    }
}

/// A transaction's records in one group of segments and its marker in the next: the marker
/// stays while the records do (one walk over every group of a cleaning, as Kafka's).
#[test]
fn a_marker_stays_while_its_records_stay_in_an_earlier_group() {
    use strata_protocol::records::control::{encode_marker, EndTxnMarker};
    let now = 1_000_000;
    let storage = MemStorage::new();
    // Segments of about one batch each, so that each is a group of its own.
    let mut log = Log::open_with_storage(Arc::new(storage), Path::new("/t-0"), config(120), now).unwrap();
    let mut b =
        encode_key_values([(Some(Bytes::from("k")), Some(Bytes::from("v")))], now, Compression::None).unwrap().to_vec();
    let mut h = BatchHeader::parse(&b).unwrap();
    (h.producer_id, h.producer_epoch, h.base_sequence) = (9, 0, 0);
    h.attributes |= 1 << 4;
    b[..61].copy_from_slice(&h.to_bytes());
    let crc = strata_protocol::batch::compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    log.append(&mut b, now).unwrap(); // 0: the transaction's record
    log.roll(now).unwrap();
    log.append_batch(&encode_marker(9, 0, EndTxnMarker { commit: true, coordinator_epoch: 0 }, now), now).unwrap(); // 1
    log.roll(now).unwrap();
    append(&mut log, &[("tail".into(), Some("t".into()))], Compression::None, now); // 2, active
    for later in [0, 2, 4] {
        let at = now + later * RETENTION;
        log.clean_now(None, at, HashMap::new(), i64::MAX, &mut OffsetMap::with_buffer(1 << 16)).unwrap();
    }
    // Reads go one segment at a time.
    let mut kinds: Vec<(i64, bool)> = Vec::new();
    let mut offset = 0;
    while offset < log.log_end_offset() {
        let r = log.read(offset, 1 << 20, i64::MAX).unwrap();
        let batches: Vec<BatchHeader> = BatchIter::new(&r.records).map(|b| b.unwrap().0).collect();
        let Some(last) = batches.last() else { break };
        offset = last.last_offset() + 1;
        kinds.extend(batches.iter().map(|h| (h.base_offset, h.is_control())));
    }
    assert_eq!(kinds, vec![(0, false), (1, true), (2, false)], "the commit marker must stay with its record");
}
