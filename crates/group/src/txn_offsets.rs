//! Offsets committed in transactions: TxnOffsetCommit (Kafka's
//! `GroupCoordinator.handleTxnCommitOffsets`) and the transaction markers that decide them.
//!
//! The records of a TxnOffsetCommit are ordinary OffsetCommit records, written by the driver
//! in one transactional batch of the producer, so the partition's producer state fences an
//! older epoch and the batch holds the partition's last stable offset back until its marker.
//! Until the marker they are pending: OffsetFetch does not return them, and with
//! `require_stable` answers UNSTABLE_OFFSET_COMMIT for their partitions; a COMMIT marker makes
//! them committed, an ABORT marker drops them (see [`crate::offsets`]).

use strata_protocol::kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use strata_protocol::kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};

use crate::classic::{ClassicGroup, ClassicState};
use crate::error::{codes, GroupError};
use crate::record::{GroupRecord, OffsetCommitValue};
use crate::shard::{Group, GroupCoordinatorShard, Out, TopicMetadata};

impl GroupCoordinatorShard {
    /// TxnOffsetCommit (v0–5) of producer `req.producer_id`: the returned records must be
    /// written as one transactional batch of that producer (and epoch). They are applied as
    /// pending at once, as every record of this shard is applied when it is made.
    ///
    /// Group checks (Kafka's, for transactional commits): an unknown group with a generation
    /// below 0 is created empty (a producer committing for consumers that assign their own
    /// partitions), with a generation of 0 or more ILLEGAL_GENERATION; a classic group accepts
    /// generation -1 while Empty, otherwise the member must be known (UNKNOWN_MEMBER_ID,
    /// FENCED_INSTANCE_ID) and the generation current (ILLEGAL_GENERATION) — a rebalance in
    /// progress does not refuse it; a KIP-848 group accepts epoch -1 while it has no members,
    /// otherwise the member must be known with its current epoch (ILLEGAL_GENERATION).
    /// Per partition: UNKNOWN_TOPIC_OR_PARTITION for one `topics` does not know,
    /// OFFSET_METADATA_TOO_LARGE over `offset.metadata.max.bytes`.
    pub fn txn_offset_commit(
        &mut self,
        now_ms: i64,
        req: &TxnOffsetCommitRequest,
        topics: &dyn TopicMetadata,
    ) -> crate::CoordinatorResult<TxnOffsetCommitResponse> {
        let mut out = Out::default();
        let gid = req.group_id.as_str();
        let group_err = self.validate_txn_offset_commit(now_ms, req).err();
        let producer_id = req.producer_id.0;
        let known = |topic: &str, partition: i32| {
            topics.partitions(topic).is_some_and(|(_, count)| (0..count).contains(&partition))
        };
        let mut answers = Vec::with_capacity(req.topics.len());
        for t in &req.topics {
            let mut parts = Vec::with_capacity(t.partitions.len());
            for p in &t.partitions {
                let metadata = p.committed_metadata.as_deref().unwrap_or_default();
                let code = if let Some(e) = &group_err {
                    e.code()
                } else if !known(&t.name, p.partition_index) {
                    codes::UNKNOWN_TOPIC_OR_PARTITION
                } else if metadata.len() > self.config.offset_metadata_max_bytes {
                    GroupError::OffsetMetadataTooLarge.code()
                } else {
                    let record = GroupRecord::OffsetCommit {
                        group: gid.to_owned(),
                        topic: t.name.as_str().to_owned(),
                        partition: p.partition_index,
                        value: Some(OffsetCommitValue {
                            offset: p.committed_offset,
                            leader_epoch: p.committed_leader_epoch,
                            metadata: metadata.to_owned(),
                            commit_timestamp_ms: now_ms,
                            expire_timestamp_ms: None,
                        }),
                    };
                    self.offsets.replay_transactional(&record, producer_id);
                    out.records.push(record);
                    codes::NONE
                };
                parts.push(
                    TxnOffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code),
                );
            }
            answers.push(TxnOffsetCommitResponseTopic::default().with_name(t.name.clone()).with_partitions(parts));
        }
        out.finish(Some(TxnOffsetCommitResponse::default().with_topics(answers)))
    }

    fn validate_txn_offset_commit(&mut self, now: i64, req: &TxnOffsetCommitRequest) -> Result<(), GroupError> {
        let gid = req.group_id.as_str();
        if gid.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        let generation = req.generation_id;
        let member_id = req.member_id.as_str();
        let instance = req.group_instance_id.as_deref();
        match self.groups.get(gid) {
            None if generation < 0 => {
                self.groups.insert(gid.to_owned(), Group::Classic(ClassicGroup::new(gid, now)));
                Ok(())
            }
            None => Err(GroupError::IllegalGeneration),
            Some(Group::Classic(g)) => {
                if g.state == ClassicState::Dead {
                    return Err(GroupError::CoordinatorNotAvailable);
                }
                if generation < 0 && g.state == ClassicState::Empty {
                    return Ok(());
                }
                if generation >= 0 || !member_id.is_empty() || instance.is_some() {
                    g.validate_member(member_id, instance)?;
                }
                if generation != g.generation {
                    return Err(GroupError::IllegalGeneration);
                }
                Ok(())
            }
            Some(Group::Consumer(g)) => {
                if generation < 0 && g.members.is_empty() {
                    return Ok(());
                }
                let m = g.members.get(member_id).ok_or(GroupError::UnknownMemberId)?;
                if generation != m.member_epoch {
                    return Err(GroupError::IllegalGeneration);
                }
                Ok(())
            }
        }
    }

    /// Applies a record of the partition that was written in a transactional batch of
    /// `producer_id` (as a load finds it): an offset commit becomes pending.
    pub fn replay_transactional(&mut self, record: &GroupRecord, producer_id: i64) {
        match record {
            GroupRecord::OffsetCommit { group, .. } if !record.is_tombstone() => {
                self.offsets.replay_transactional(record, producer_id);
                if !self.groups.contains_key(group) {
                    self.groups.insert(group.to_owned(), Group::Classic(ClassicGroup::new(group, 0)));
                }
            }
            other => self.replay(other),
        }
    }

    /// Applies the marker of `producer_id`'s transaction written to this shard's partition:
    /// its pending offsets become committed (`commit`) or are dropped.
    pub fn replay_end_txn_marker(&mut self, producer_id: i64, commit: bool) {
        self.offsets.replay_end_txn(producer_id, commit);
    }

    /// Whether an offset of `group` for the partition waits for its transaction's marker.
    pub fn is_offset_pending(&self, group: &str, topic: &str, partition: i32) -> bool {
        self.offsets.is_pending(group, topic, partition)
    }
}
