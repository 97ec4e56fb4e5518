//! Random operation sequences (append, read, roll, truncate, advance the log start, retention,
//! flush, close + reopen, crash + reopen) checked against a simple model: the list of batches
//! the log must hold. Runs against the in-memory storage (with real loss of unsynced bytes on a
//! crash) and against the file system.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use proptest::prelude::*;
use strata_log::{Log, LogConfig};
use strata_protocol::batch::BatchHeader;

#[derive(Clone, Debug)]
enum Op {
    Append { batches: Vec<(i32, usize)>, ts: i64 },
    Read { at: prop::sample::Index, max_bytes: usize, bound: Option<prop::sample::Index> },
    Roll,
    Truncate { at: prop::sample::Index },
    AdvanceStart { at: prop::sample::Index },
    Retention { now: i64 },
    Flush,
    CloseReopen,
    CrashReopen { seed: u64 },
    Hold { at: prop::sample::Index },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (prop::collection::vec((1i32..4, 0usize..300), 1..4), 0i64..10_000)
            .prop_map(|(batches, ts)| Op::Append { batches, ts }),
        4 => (any::<prop::sample::Index>(), 0usize..2000, prop::option::of(any::<prop::sample::Index>()))
            .prop_map(|(at, max_bytes, bound)| Op::Read { at, max_bytes, bound }),
        1 => Just(Op::Roll),
        1 => any::<prop::sample::Index>().prop_map(|at| Op::Truncate { at }),
        1 => any::<prop::sample::Index>().prop_map(|at| Op::AdvanceStart { at }),
        1 => (0i64..20_000).prop_map(|now| Op::Retention { now }),
        1 => Just(Op::Flush),
        1 => Just(Op::CloseReopen),
        1 => any::<u64>().prop_map(|seed| Op::CrashReopen { seed }),
        1 => any::<prop::sample::Index>().prop_map(|at| Op::Hold { at }),
    ]
}

fn config() -> impl Strategy<Value = LogConfig> {
    (
        300u64..3000,
        prop_oneof![Just(u64::MAX), 1u64..10],
        prop_oneof![Just(-1i64), 2000i64..20_000],
        prop_oneof![Just(-1i64), 5_000i64..20_000],
        0u32..500,
        prop_oneof![Just(10 * 1024 * 1024u32), 24u32..128],
    )
        .prop_map(|(segment_bytes, flush_msgs, retention_bytes, retention_ms, interval, index_bytes)| LogConfig {
            segment_bytes,
            flush_interval_messages: flush_msgs,
            retention_bytes,
            retention_ms,
            index_interval_bytes: interval,
            segment_index_bytes: index_bytes,
            ..LogConfig::default()
        })
}

/// What the log must hold: batches (patched bytes) with `last_offset >= log_start`.
#[derive(Default)]
struct Model {
    batches: Vec<(BatchHeader, Vec<u8>)>,
    log_start: i64,
    leo: i64,
    /// LEO as of the last operation known to make everything durable.
    durable_leo: i64,
}

impl Model {
    fn drop_below_start(&mut self) {
        let start = self.log_start;
        self.batches.retain(|(h, _)| h.last_offset() >= start);
    }

    fn bytes(&self) -> Vec<u8> {
        self.batches.iter().flat_map(|(_, b)| b.iter().copied()).collect()
    }

    fn check(&self, log: &Log) {
        assert_eq!(log.log_start_offset(), self.log_start, "log start");
        assert_eq!(log.log_end_offset(), self.leo, "log end");
        check_invariants(log);
        assert_eq!(read_all(log), self.bytes(), "log content differs from the model");
    }
}

fn run(h: &dyn Harness, config: LogConfig, ops: Vec<Op>) {
    let mut log = h.open(config.clone(), 0);
    let mut m = Model::default();
    let mut held: Vec<(Bytes, Vec<u8>)> = Vec::new();
    let mut now = 0i64;
    for op in ops {
        now += 10;
        match op {
            Op::Append { batches, ts } => {
                let mut buf = Vec::new();
                for (i, (records, payload)) in batches.iter().enumerate() {
                    buf.extend_from_slice(&batch(*records, ts + i as i64, *payload, i as u8));
                }
                let info = log.append(&mut buf, now).unwrap();
                assert_eq!(info.first_offset, m.leo);
                for (h, b) in headers(&buf).into_iter().zip(common_split(&buf)) {
                    assert_eq!(h.base_offset, m.leo);
                    m.leo = h.last_offset() + 1;
                    m.batches.push((h, b));
                }
                assert_eq!(info.last_offset + 1, m.leo);
            }
            Op::Read { at, max_bytes, bound } => {
                let offset = m.log_start + at.index((m.leo - m.log_start + 1) as usize) as i64;
                let bound = bound.map_or(i64::MAX, |b| b.index(m.leo as usize + 2) as i64);
                let r = log.read(offset, max_bytes, bound).unwrap();
                let expected: Vec<&(BatchHeader, Vec<u8>)> =
                    m.batches.iter().filter(|(h, _)| h.last_offset() >= offset && h.base_offset < bound).collect();
                let got = headers(&r.records);
                if offset >= bound || offset == m.leo {
                    assert!(got.is_empty());
                    continue;
                }
                assert!(!got.is_empty(), "read at {offset} returned nothing");
                assert!(got.len() == 1 || r.records.len() <= max_bytes, "max_bytes exceeded");
                let mut pos = 0;
                for (i, h) in got.iter().enumerate() {
                    let (eh, eb) = expected[i];
                    assert_eq!(h, eh);
                    assert_eq!(&r.records[pos..pos + eb.len()], &eb[..]);
                    pos += eb.len();
                }
            }
            Op::Roll => {
                log.roll(now).unwrap();
                m.durable_leo = m.leo;
            }
            Op::Truncate { at } => {
                let target = at.index(m.leo as usize + 3) as i64;
                log.truncate_to(target).unwrap();
                if target < m.leo {
                    if target < m.log_start {
                        m.batches.clear();
                        m.log_start = target;
                        m.leo = target;
                    } else {
                        let first_removed = m.batches.iter().position(|(h, _)| h.last_offset() >= target).unwrap();
                        m.leo = m.batches[first_removed].0.base_offset;
                        m.batches.truncate(first_removed);
                        if m.leo < m.log_start {
                            m.batches.clear();
                            m.leo = m.log_start;
                        }
                    }
                    m.durable_leo = m.durable_leo.min(m.leo);
                }
            }
            Op::AdvanceStart { at } => {
                let target = at.index(m.leo as usize + 3) as i64;
                let got = log.advance_log_start(target).unwrap();
                m.log_start = m.log_start.max(target.min(m.leo));
                assert_eq!(got, m.log_start);
                m.drop_below_start();
            }
            Op::Retention { now: t } => {
                let before = log.num_segments();
                let deleted = log.enforce_retention(t).unwrap();
                assert_eq!(log.num_segments(), before - deleted);
                assert!(log.num_segments() >= 1);
                let start = log.log_start_offset();
                assert!(start >= m.log_start && start <= m.leo);
                m.log_start = start;
                m.drop_below_start();
            }
            Op::Flush => {
                log.flush().unwrap();
                m.durable_leo = m.leo;
            }
            Op::CloseReopen => {
                log.close().unwrap();
                log = h.open(config.clone(), now);
                m.durable_leo = m.leo;
            }
            Op::CrashReopen { seed } => {
                drop(log);
                h.crash(seed);
                log = h.open(config.clone(), now);
                let leo = log.log_end_offset();
                assert_eq!(log.log_start_offset(), m.log_start);
                assert!(leo <= m.leo, "recovery invented data");
                assert!(leo >= m.durable_leo.min(m.leo) || leo == m.log_start, "lost durable data");
                if !h.loses_unsynced() {
                    assert_eq!(leo, m.leo);
                }
                m.batches.retain(|(h, _)| h.last_offset() < leo);
                m.leo = leo;
                m.durable_leo = leo;
            }
            Op::Hold { at } => {
                let offset = m.log_start + at.index((m.leo - m.log_start + 1) as usize) as i64;
                let r = log.read(offset, usize::MAX, i64::MAX).unwrap();
                let copy = r.records.to_vec();
                held.push((r.records, copy));
            }
        }
        m.check(&log);
    }
    for (bytes, copy) in &held {
        assert_eq!(&bytes[..], &copy[..], "a handed-out read changed");
    }
    log.close().unwrap();
    let log = h.open(config, now);
    m.check(&log);
}

fn common_split(buf: &[u8]) -> Vec<Vec<u8>> {
    strata_protocol::batch::BatchIter::new(buf).map(|r| r.unwrap().1.to_vec()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
    #[test]
    fn model_mem(config in config(), ops in prop::collection::vec(op(), 1..60)) {
        run(&MemHarness::new(), config, ops);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn model_fs(config in config(), ops in prop::collection::vec(op(), 1..40)) {
        run(&FsHarness::new(), config, ops);
    }
}
