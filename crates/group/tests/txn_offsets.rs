//! Offsets committed in transactions: pending until the marker, UNSTABLE_OFFSET_COMMIT for
//! stable fetches, commit and abort markers, a later plain commit winning, and a load that
//! rebuilds the same state from the log (transactional batches and markers included).
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use common::*;
use strata_group::{GroupConfig, GroupCoordinatorShard, GroupRecord};
use strata_protocol::kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use strata_protocol::kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use strata_protocol::kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use strata_protocol::kafka_protocol::messages::*;

const UNSTABLE_OFFSET_COMMIT: i16 = 88;

/// What the partition log holds, as the driver writes it: records of transactional batches
/// carry their producer id, markers are (producer id, commit).
#[derive(Clone)]
enum Entry {
    Plain(GroupRecord),
    Txn(GroupRecord, i64),
    Marker(i64, bool),
}

struct Log {
    h: Harness,
    entries: Vec<Entry>,
}

impl Log {
    fn new() -> Self {
        let config = GroupConfig { initial_rebalance_delay_ms: 0, ..GroupConfig::default() };
        Log { h: Harness::new(config), entries: Vec::new() }
    }

    fn txn_commit(&mut self, pid: i64, generation: i32, member: &str, offset: i64) -> i16 {
        let req = TxnOffsetCommitRequest::default()
            .with_transactional_id(TransactionalId(s("txn")))
            .with_group_id(gid("g"))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(0)
            .with_generation_id(generation)
            .with_member_id(s(member))
            .with_topics(vec![TxnOffsetCommitRequestTopic::default().with_name(TopicName(s("t"))).with_partitions(
                vec![TxnOffsetCommitRequestPartition::default().with_partition_index(0).with_committed_offset(offset)],
            )]);
        let topics = Topics::default().with("t", 1, 4);
        let r = self.h.shard.txn_offset_commit(self.h.now, &req, &topics);
        for rec in &r.records {
            self.entries.push(Entry::Txn(rec.clone(), pid));
        }
        r.response.unwrap().topics[0].partitions[0].error_code
    }

    fn plain_commit(&mut self, offset: i64) {
        let ctx = self.h.ctx(8);
        let req = OffsetCommitRequest::default()
            .with_group_id(gid("g"))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default().with_name(TopicName(s("t"))).with_partitions(vec![
                OffsetCommitRequestPartition::default().with_partition_index(0).with_committed_offset(offset),
            ])]);
        let topics = Topics::default().with("t", 1, 4);
        let r = self.h.shard.offset_commit(self.h.now, &ctx, &req, &topics);
        for rec in &r.records {
            self.entries.push(Entry::Plain(rec.clone()));
        }
        assert_eq!(r.response.unwrap().topics[0].partitions[0].error_code, 0);
    }

    fn marker(&mut self, pid: i64, commit: bool) {
        self.h.shard.replay_end_txn_marker(pid, commit);
        self.entries.push(Entry::Marker(pid, commit));
    }

    /// (offset, error code) of partition t-0, as OffsetFetch v7 answers.
    fn fetch(&mut self, require_stable: bool) -> (i64, i16) {
        let ctx = self.h.ctx(7);
        let req = OffsetFetchRequest::default()
            .with_group_id(gid("g"))
            .with_require_stable(require_stable)
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(TopicName(s("t")))
                .with_partition_indexes(vec![0])]));
        let r = self.h.shard.offset_fetch(self.h.now, &ctx, &req).response.unwrap();
        let p = &r.topics[0].partitions[0];
        (p.committed_offset, p.error_code)
    }

    /// A shard loaded from the log has the same offsets and the same pending ones.
    fn assert_reload_matches(&self) {
        let mut fresh = GroupCoordinatorShard::new(GroupConfig::default());
        for e in &self.entries {
            match e {
                Entry::Plain(r) => fresh.replay(r),
                Entry::Txn(r, pid) => fresh.replay_transactional(r, *pid),
                Entry::Marker(pid, commit) => fresh.replay_end_txn_marker(*pid, *commit),
            }
        }
        assert_eq!(fresh.snapshot_records(), self.h.shard.snapshot_records());
        assert_eq!(fresh.is_offset_pending("g", "t", 0), self.h.shard.is_offset_pending("g", "t", 0));
    }
}

#[test]
fn transactional_offsets_wait_for_the_marker() {
    let mut log = Log::new();
    assert_eq!(log.txn_commit(7, -1, "", 10), 0);
    // Pending: not returned, and a stable fetch is told to retry.
    assert_eq!(log.fetch(false), (-1, 0));
    assert_eq!(log.fetch(true), (-1, UNSTABLE_OFFSET_COMMIT));
    log.assert_reload_matches();
    log.marker(7, true);
    assert_eq!(log.fetch(true), (10, 0));
    log.assert_reload_matches();

    // An aborted transaction leaves the committed offset as it was.
    assert_eq!(log.txn_commit(7, -1, "", 20), 0);
    log.marker(7, false);
    assert_eq!(log.fetch(true), (10, 0));
    // A marker of another producer decides nothing of this one.
    assert_eq!(log.txn_commit(8, -1, "", 30), 0);
    log.marker(7, true);
    assert_eq!(log.fetch(true), (-1, UNSTABLE_OFFSET_COMMIT));
    log.marker(8, true);
    assert_eq!(log.fetch(true), (30, 0));
    log.assert_reload_matches();
}

#[test]
fn a_plain_commit_written_after_a_transactional_one_wins() {
    let mut log = Log::new();
    log.txn_commit(7, -1, "", 10);
    log.plain_commit(50);
    log.marker(7, true);
    assert_eq!(log.fetch(true), (50, 0), "the older transactional offset must not replace the newer one");
    log.assert_reload_matches();
    // A transactional commit written after the plain one does replace it at its marker.
    log.txn_commit(7, -1, "", 60);
    log.marker(7, true);
    assert_eq!(log.fetch(true), (60, 0));
    log.assert_reload_matches();
}

#[test]
fn transactional_commits_check_the_group_generation() {
    let mut log = Log::new();
    // An unknown group with a real generation cannot be committed to.
    assert_eq!(log.txn_commit(7, 3, "m", 10), 22, "ILLEGAL_GENERATION");
    let member = log.h.join_dynamic_now("g", &[("range", b"")]);
    // Generation -1 is only for groups nobody is in.
    assert_eq!(log.txn_commit(7, -1, "", 10), 22, "ILLEGAL_GENERATION, as Kafka answers");
    assert_eq!(log.txn_commit(7, member.generation_id, "stranger", 10), 25, "UNKNOWN_MEMBER_ID");
    assert_eq!(log.txn_commit(7, member.generation_id + 1, member.member_id.as_str(), 10), 22);
    assert_eq!(log.txn_commit(7, member.generation_id, member.member_id.as_str(), 10), 0);
}
