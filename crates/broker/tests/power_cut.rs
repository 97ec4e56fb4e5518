//! Power cuts at the storage seam (issue #11, point 14): partitions with their producer state
//! and the group coordinator's `__consumer_offsets` partition run a seeded workload on the
//! in-memory storage twin, which takes an image of what a power cut would leave at a random
//! changing operation (every byte not yet fsynced dropped, torn appends cut at a random
//! point). Reopened from that image, everything the broker acknowledged as durable before the
//! cut must be there:
//!
//! - a `flush.messages=1` partition: every acknowledged batch at its offset, byte for byte,
//!   and its idempotent producer's retry of it still answered as a duplicate (producer state:
//!   snapshots plus replay);
//! - a default-policy partition: dense offsets, a prefix of what was appended, at least up to
//!   the last acknowledged explicit flush;
//! - group offsets written with `flush.messages=1`: the last acknowledged commit of every key
//!   (or a later one that was written but not yet acknowledged).
//!
//! Seeds: `STRATA_SEEDS=N` runs more, `STRATA_SEED=S` replays one (see `for_each_seed`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failure is the point

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use strata_broker::config::TopicSettings;
use strata_broker::groups::{load_shard, write_records};
use strata_broker::replica::Partition;
use strata_group::record::OffsetCommitValue;
use strata_group::{GroupConfig, GroupCoordinatorShard, GroupRecord};
use strata_log::storage::{for_each_seed, MemStorage, SimRng};
use strata_log::Log;
use strata_protocol::batch::{BatchHeader, BatchIter};
use strata_protocol::kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use uuid::Uuid;

const STEPS: usize = 80;
const PRODUCERS: i64 = 3;

/// One batch of `n` records, `payload` in every value; an idempotent one when `pid >= 0`.
fn batch(pid: i64, seq: i32, n: usize, ts: i64, payload: &str) -> Bytes {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: pid,
            producer_epoch: if pid >= 0 { 0 } else { -1 },
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: if pid >= 0 { seq + i as i32 } else { i as i32 },
            timestamp: ts,
            key: None,
            value: Some(Bytes::from(format!("{payload}/{i}"))),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression: Compression::None })
        .unwrap();
    buf.freeze()
}

fn durable_settings() -> TopicSettings {
    let mut s = TopicSettings::resolve(None, &Default::default());
    s.log.flush_interval_messages = 1;
    s.log.segment_bytes = 1500; // rolls, and producer snapshots with them, every few batches
    s
}

fn lazy_settings() -> TopicSettings {
    let mut s = TopicSettings::resolve(None, &Default::default());
    s.log.segment_bytes = 2000;
    s
}

fn open_partition(storage: &MemStorage, name: &str, settings: TopicSettings, now: i64) -> Partition {
    let dir = Path::new("/data").join(format!("{name}-0"));
    let log = Log::open_with_storage(Arc::new(storage.clone()), &dir, settings.log.clone(), now)
        .unwrap_or_else(|e| panic!("reopening {name}: {e}"));
    Partition::new(name.to_owned(), Uuid::nil(), 0, log, settings).unwrap_or_else(|e| panic!("{name}: {e}"))
}

struct World {
    durable: Partition,
    lazy: Partition,
    offsets: Partition,
}

impl World {
    fn open(storage: &MemStorage, now: i64) -> World {
        World {
            durable: open_partition(storage, "durable", durable_settings(), now),
            lazy: open_partition(storage, "lazy", lazy_settings(), now),
            offsets: open_partition(storage, "__consumer_offsets", durable_settings(), now),
        }
    }
}

/// One offset key's commits: every offset written, in order, and (ops, index) of the acks.
type Commits = (Vec<i64>, Vec<(u64, usize)>);

/// What the workload was told, with the storage clock when it was told.
#[derive(Default)]
struct Acks {
    /// (ops, producer, sequence, offset, batch bytes)
    produced: Vec<(u64, i64, i32, i64, Bytes)>,
    /// Lazy partition: batch bytes by offset (appended, not necessarily durable).
    lazy: BTreeMap<i64, Bytes>,
    /// (ops, offset below which the lazy partition was flushed)
    lazy_flushed: Vec<(u64, i64)>,
    /// Per (group, partition): every committed offset in order, and (ops, index) of acks.
    commits: BTreeMap<(String, i32), Commits>,
    /// (ops, log start) of acknowledged DeleteRecords on the durable partition.
    log_starts: Vec<(u64, i64)>,
}

/// The seeded workload; returns what was acknowledged.
fn run(storage: &MemStorage, seed: u64, now: i64) -> Acks {
    let mut rng = SimRng::new(seed);
    let w = World::open(storage, now);
    let mut acks = Acks::default();
    let mut next_seq = [0i32; PRODUCERS as usize];
    for step in 0..STEPS {
        let ts = now + step as i64;
        match rng.below(10) {
            0..=3 => {
                let pid = rng.below(PRODUCERS as u64) as i64;
                let n = 1 + rng.below(3) as usize;
                let seq = next_seq[pid as usize];
                let b = batch(pid, seq, n, ts, &format!("s{seed}-{step}"));
                let r = w.durable.append(&b, ts).expect("append to the durable partition");
                acks.produced.push((storage.ops(), pid, seq, r.base_offset, b));
                next_seq[pid as usize] += n as i32;
            }
            4 | 5 => {
                let b = batch(-1, 0, 1 + rng.below(2) as usize, ts, &format!("l{seed}-{step}"));
                let r = w.lazy.append(&b, ts).expect("append to the lazy partition");
                acks.lazy.insert(r.base_offset, b);
            }
            6 => {
                w.lazy.with_log(|log| Ok(log.flush()?)).unwrap();
                acks.lazy_flushed.push((storage.ops(), w.lazy.log_end_offset()));
            }
            9 if rng.below(3) == 0 => {
                // DeleteRecords: the new log start is checkpointed (fsynced) before the answer.
                let leo = w.durable.log_end_offset();
                let target =
                    w.durable.log_start_offset() + rng.below((leo - w.durable.log_start_offset()) as u64 + 1) as i64;
                let start = w.durable.advance_log_start(target).unwrap();
                acks.log_starts.push((storage.ops(), start));
            }
            _ => {
                let group = format!("g{}", rng.below(2));
                let partition = rng.below(3) as i32;
                let offset = step as i64 * 10;
                let record = GroupRecord::OffsetCommit {
                    group: group.clone(),
                    topic: "t".to_owned(),
                    partition,
                    value: Some(OffsetCommitValue {
                        offset,
                        leader_epoch: -1,
                        metadata: String::new(),
                        commit_timestamp_ms: ts,
                        expire_timestamp_ms: None,
                    }),
                };
                let entry = acks.commits.entry((group, partition)).or_default();
                entry.0.push(offset);
                write_records(&w.offsets, &[record], ts).expect("group records written");
                let index = entry.0.len() - 1;
                entry.1.push((storage.ops(), index));
            }
        }
    }
    acks
}

/// Checks the world reopened from `image` against what was acknowledged before operation
/// `cut` (so by the end of operation `cut - 1`).
fn check(image: &MemStorage, acks: &Acks, cut: u64, now: i64) {
    let w = World::open(image, now);
    let before = |ops: u64| ops < cut;

    // The durable partition: dense, and every acknowledged batch there byte for byte.
    let all = read_all(&w.durable);
    // DeleteRecords may put the log start inside a batch: the first batch holds it.
    let mut expected_next = all.first().map_or(w.durable.log_start_offset(), |(h, _)| h.base_offset);
    assert!(expected_next <= w.durable.log_start_offset());
    for (h, _) in &all {
        assert_eq!(h.base_offset, expected_next, "durable partition offsets are dense");
        expected_next = h.last_offset() + 1;
    }
    assert_eq!(expected_next, w.durable.log_end_offset());
    let by_offset: BTreeMap<i64, &Bytes> = all.iter().map(|(h, b)| (h.base_offset, b)).collect();
    let mut last_acked: BTreeMap<i64, (i64, &Bytes)> = BTreeMap::new();
    let log_start = w.durable.log_start_offset();
    if let Some((_, start)) = acks.log_starts.iter().rfind(|a| before(a.0)) {
        assert!(log_start >= *start, "DeleteRecords to {start} was acknowledged, the log starts at {log_start}");
    }
    for (ops, pid, seq, offset, sent) in acks.produced.iter().filter(|a| before(a.0)) {
        last_acked.insert(*pid, (*offset, sent));
        if *offset < log_start {
            continue; // deleted by an acknowledged DeleteRecords
        }
        let stored = by_offset.get(offset).unwrap_or_else(|| {
            panic!("acknowledged batch of producer {pid} seq {seq} at offset {offset} (ops {ops}) lost")
        });
        assert_eq!(
            &stored[8..],
            &sent[8..],
            "batch at {offset} differs from what was acknowledged (base offset aside)"
        );
    }
    // Producer state: the retry of each producer's last acknowledged batch is a duplicate.
    for (pid, (offset, sent)) in &last_acked {
        let r = w.durable.append(sent, now).expect("retry");
        assert_eq!(r.base_offset, *offset, "producer {pid}: retry of its last acknowledged batch was appended again");
    }

    // The lazy partition: dense, a prefix of what was appended, at least what was flushed.
    let all = read_all(&w.lazy);
    let mut expected_next = 0;
    for (h, b) in &all {
        assert_eq!(h.base_offset, expected_next, "lazy partition offsets are dense");
        let sent = acks.lazy.get(&h.base_offset).expect("a lazy batch that was never appended");
        assert_eq!(&b[8..], &sent[8..], "lazy batch at {} differs", h.base_offset);
        expected_next = h.last_offset() + 1;
    }
    if let Some((_, flushed)) = acks.lazy_flushed.iter().rfind(|f| before(f.0)) {
        assert!(
            w.lazy.log_end_offset() >= *flushed,
            "lazy partition lost flushed records: {} < {flushed}",
            w.lazy.log_end_offset()
        );
    }

    // Group offsets: the last acknowledged commit, or a later attempted one.
    let mut shard = GroupCoordinatorShard::new(GroupConfig::default());
    load_shard(&w.offsets, &mut shard).expect("group records load");
    for ((group, partition), (attempts, acked)) in &acks.commits {
        let Some((_, index)) = acked.iter().rfind(|a| before(a.0)) else { continue };
        let got = shard.committed_offset(group, "t", *partition).map(|v| v.offset);
        let pos = got.and_then(|o| attempts.iter().position(|a| *a == o));
        assert!(
            pos.is_some_and(|p| p >= *index),
            "{group}/t-{partition}: committed {got:?}, but {} was acknowledged",
            attempts[*index]
        );
    }
}

fn read_all(p: &Partition) -> Vec<(BatchHeader, Bytes)> {
    let mut out = Vec::new();
    let mut offset = p.log_start_offset();
    while offset < p.log_end_offset() {
        let r = p.read(offset, 1 << 20).expect("read");
        if r.records.is_empty() {
            break;
        }
        let mut pos = 0;
        for item in BatchIter::new(&r.records) {
            let (h, b) = item.expect("a whole batch");
            out.push((h, r.records.slice(pos..pos + b.len())));
            pos += b.len();
            offset = h.last_offset() + 1;
        }
    }
    out
}

#[test]
fn acknowledged_writes_survive_a_power_cut_at_any_point() {
    let now = strata_broker::replica::now_ms();
    for_each_seed("acknowledged_writes_survive_a_power_cut_at_any_point", 400, |seed| {
        // A dry run counts the workload's changing operations, then the cut lands at one of
        // them (the workload is deterministic for a seed).
        let dry = MemStorage::new();
        run(&dry, seed, now);
        let total = dry.ops();
        let cut = 1 + SimRng::new(seed ^ 0x5EED).below(total);
        let storage = MemStorage::new();
        storage.set_crash_point(cut, seed);
        let acks = run(&storage, seed, now);
        assert_eq!(storage.ops(), total, "the workload is not deterministic");
        let image = storage.take_crash_image().expect("the cut was reached");
        check(&image, &acks, cut, now);
    });
}
