//! Committed offsets: OffsetCommit, OffsetFetch, OffsetDelete and offset retention.
//!
//! Offsets change only through records: each handler builds the records and applies
//! them with the same code [`GroupCoordinatorShard::replay`] uses, so the live state and a
//! replayed one cannot drift apart.
//!
//! Retention (every `offsets_retention_check_interval_ms`, on tick), as in Kafka (KIP-211):
//! an offset with an explicit expiry (OffsetCommit v2–v4 `retention_time_ms`) expires at
//! it; otherwise, an Empty classic group's offsets expire `offsets_retention_ms` after the
//! group became empty; a simple group's (no protocol type) and a KIP-848 group's offsets
//! `offsets_retention_ms` after their commit, for topics no member subscribes to. Expired
//! offsets become tombstones; an empty group left without offsets is deleted.

use std::collections::{BTreeMap, BTreeSet};

use strata_protocol::kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use strata_protocol::kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use strata_protocol::kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use strata_protocol::kafka_protocol::messages::{
    OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse, OffsetFetchRequest,
    OffsetFetchResponse,
};
use strata_protocol::ResponseError;
use tracing::info;

use crate::classic::{sb, topic_name, ClassicGroup, ClassicState};
use crate::error::{codes, GroupError};
use crate::record::{GroupRecord, OffsetCommitValue};
use crate::shard::{Group, GroupCoordinatorShard, Out, RequestContext, TopicMetadata};

type Offsets = BTreeMap<(String, i32), OffsetCommitValue>;

/// (group, topic, partition).
type OffsetKey = (String, String, i32);

/// All committed offsets of a shard, by group, then (topic, partition), and the offsets
/// committed in transactions that are not yet decided.
/// Invariant: no group maps to an empty map.
///
/// Transactional offsets (TxnOffsetCommit, Kafka's `OffsetMetadataManager`): a commit record
/// written in a producer's transaction is pending until the transaction's marker: a COMMIT
/// marker moves each of that producer's pending offsets to the committed store unless a
/// later record of the log (a plain commit written after it) already committed that partition;
/// an ABORT marker drops them. Records are ordered by `seq`, the order in which they were
/// applied, which is the log's order both live and on a load.
#[derive(Debug, Default)]
pub(crate) struct OffsetStore {
    groups: BTreeMap<String, Offsets>,
    /// When each committed offset was applied.
    seqs: BTreeMap<OffsetKey, u64>,
    /// Pending transactional offsets by producer id, with when each was applied.
    pending: BTreeMap<i64, BTreeMap<OffsetKey, (OffsetCommitValue, u64)>>,
    next_seq: u64,
}

impl OffsetStore {
    pub(crate) fn replay(&mut self, record: &GroupRecord) {
        if let GroupRecord::OffsetCommit { group, topic, partition, value } = record {
            let seq = self.next_seq;
            self.next_seq += 1;
            let key = (group.clone(), topic.clone(), *partition);
            match value {
                Some(v) => {
                    self.groups.entry(group.clone()).or_default().insert((topic.clone(), *partition), v.clone());
                    self.seqs.insert(key, seq);
                }
                None => {
                    if let Some(g) = self.groups.get_mut(group) {
                        g.remove(&(topic.clone(), *partition));
                        if g.is_empty() {
                            self.groups.remove(group);
                        }
                    }
                    self.seqs.remove(&key);
                    // A deleted offset is deleted from every open transaction too.
                    for offsets in self.pending.values_mut() {
                        offsets.remove(&key);
                    }
                }
            }
        }
    }

    /// Applies a commit record written in a transaction of `producer_id`: pending until the
    /// transaction's marker ([`Self::replay_end_txn`]).
    pub(crate) fn replay_transactional(&mut self, record: &GroupRecord, producer_id: i64) {
        match record {
            GroupRecord::OffsetCommit { group, topic, partition, value: Some(v) } => {
                let seq = self.next_seq;
                self.next_seq += 1;
                self.pending
                    .entry(producer_id)
                    .or_default()
                    .insert((group.clone(), topic.clone(), *partition), (v.clone(), seq));
            }
            other => self.replay(other),
        }
    }

    /// Applies the marker of `producer_id`'s transaction; returns the groups whose committed
    /// offsets it changed.
    pub(crate) fn replay_end_txn(&mut self, producer_id: i64, commit: bool) -> BTreeSet<String> {
        let mut changed = BTreeSet::new();
        let Some(offsets) = self.pending.remove(&producer_id) else { return changed };
        if !commit {
            return changed;
        }
        for ((group, topic, partition), (value, seq)) in offsets {
            let key = (group.clone(), topic.clone(), partition);
            if self.seqs.get(&key).is_some_and(|&committed| committed > seq) {
                continue;
            }
            self.groups.entry(group.clone()).or_default().insert((topic, partition), value);
            self.seqs.insert(key, seq);
            changed.insert(group);
        }
        changed
    }

    /// Whether a transaction not yet decided committed an offset for the partition.
    pub(crate) fn is_pending(&self, group: &str, topic: &str, partition: i32) -> bool {
        let key = (group.to_owned(), topic.to_owned(), partition);
        self.pending.values().any(|offsets| offsets.contains_key(&key))
    }

    /// Whether a transaction not yet decided committed offsets of `group`.
    pub(crate) fn has_pending(&self, group: &str) -> bool {
        self.pending.values().any(|offsets| offsets.keys().any(|(g, _, _)| g == group))
    }

    /// Pushes `record` to `out` and applies it.
    fn emit(&mut self, record: GroupRecord, out: &mut Out) {
        self.replay(&record);
        out.records.push(record);
    }

    fn tombstone(&mut self, group: &str, topic: &str, partition: i32, out: &mut Out) {
        self.emit(
            GroupRecord::OffsetCommit { group: group.to_owned(), topic: topic.to_owned(), partition, value: None },
            out,
        );
    }

    /// Whether `group` has committed offsets, or offsets pending in a transaction (a group
    /// with open transactions is never deleted).
    pub(crate) fn has_offsets(&self, group: &str) -> bool {
        self.groups.contains_key(group) || self.has_pending(group)
    }

    pub(crate) fn get(&self, group: &str, topic: &str, partition: i32) -> Option<&OffsetCommitValue> {
        self.groups.get(group)?.get(&(topic.to_owned(), partition))
    }

    pub(crate) fn delete_group(&mut self, group: &str, out: &mut Out) {
        let keys: Vec<(String, i32)> = self.groups.get(group).map(|g| g.keys().cloned().collect()).unwrap_or_default();
        for (t, p) in keys {
            self.tombstone(group, &t, p, out);
        }
    }

    pub(crate) fn snapshot_records(&self, v: &mut Vec<GroupRecord>) {
        for (g, offsets) in &self.groups {
            for ((t, p), o) in offsets {
                v.push(GroupRecord::OffsetCommit {
                    group: g.clone(),
                    topic: t.clone(),
                    partition: *p,
                    value: Some(o.clone()),
                });
            }
        }
    }
}

/// One group's fetched offsets: by topic, each partition with its offset if committed and its
/// error code (UNSTABLE_OFFSET_COMMIT while a transaction's offset is pending and the request
/// asked for stable offsets).
type Fetched = Vec<(String, Vec<(i32, Option<OffsetCommitValue>, i16)>)>;

impl GroupCoordinatorShard {
    /// Every committed offset of this shard's groups, as `(group, topic, partition, offset)`
    /// (for the consumer lag metrics). Pending transactional offsets are not included.
    pub fn committed_offsets(&self) -> Vec<(String, String, i32, i64)> {
        self.offsets
            .groups
            .iter()
            .flat_map(|(g, offsets)| offsets.iter().map(move |((t, p), o)| (g.clone(), t.clone(), *p, o.offset)))
            .collect()
    }

    /// The committed offset of `group` for `topic`/`partition`, for inspection.
    pub fn committed_offset(&self, group: &str, topic: &str, partition: i32) -> Option<&OffsetCommitValue> {
        self.offsets.get(group, topic, partition)
    }

    /// Checks who may commit to `gid`; creates an empty simple group for a first
    /// generation -1 commit, as Kafka does.
    fn validate_offset_commit(&mut self, now: i64, version: i16, req: &OffsetCommitRequest) -> Result<(), GroupError> {
        let gid = req.group_id.as_str();
        if gid.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        let generation = req.generation_id_or_member_epoch;
        let member_id = req.member_id.as_str();
        let instance = req.group_instance_id.as_deref();
        match self.groups.get_mut(gid) {
            None if generation < 0 => {
                self.groups.insert(gid.to_owned(), Group::Classic(ClassicGroup::new(gid, now)));
                Ok(())
            }
            // v9+ clients understand GROUP_ID_NOT_FOUND; older ones expect ILLEGAL_GENERATION.
            None if version >= 9 => Err(GroupError::GroupIdNotFound),
            None => Err(GroupError::IllegalGeneration),
            Some(Group::Classic(g)) => {
                if generation < 0 && g.state == ClassicState::Empty {
                    // Simple consumer or admin commit to a group nobody is in.
                    return Ok(());
                }
                if generation < 0 && member_id.is_empty() && instance.is_none() {
                    return Err(GroupError::UnknownMemberId);
                }
                g.validate_member(member_id, instance)?;
                if generation != g.generation {
                    return Err(GroupError::IllegalGeneration);
                }
                if g.state == ClassicState::CompletingRebalance {
                    // The member knows the new generation but has no assignment yet.
                    return Err(GroupError::RebalanceInProgress);
                }
                Ok(())
            }
            Some(Group::Consumer(g)) => g.validate_offset_commit(member_id, generation),
        }
    }

    /// OffsetCommit (v2–v9). Member and generation (or KIP-848 member epoch) are checked
    /// first and an error fails every partition; then each partition is committed with its
    /// offset, leader epoch, metadata (too long: OFFSET_METADATA_TOO_LARGE) and `now_ms` as
    /// commit timestamp. The response must wait for the records.
    ///
    /// A partition of a topic `topics` does not know, or a partition number the topic lacks,
    /// is answered UNKNOWN_TOPIC_OR_PARTITION and nothing is stored for it (Kafka checks its
    /// metadata cache before the coordinator); the request's other partitions commit.
    pub fn offset_commit(
        &mut self,
        now_ms: i64,
        ctx: &RequestContext,
        req: &OffsetCommitRequest,
        topics: &dyn TopicMetadata,
    ) -> crate::CoordinatorResult<OffsetCommitResponse> {
        let mut out = Out::default();
        let gid = req.group_id.as_str();
        let known = |topic: &str, partition: i32| {
            topics.partitions(topic).is_some_and(|(_, count)| (0..count).contains(&partition))
        };
        let any_known = req.topics.iter().any(|t| t.partitions.iter().any(|p| known(&t.name, p.partition_index)));
        // Nothing to store: the group is neither created nor checked (Kafka answers from its
        // metadata alone).
        let group_err = if any_known { self.validate_offset_commit(now_ms, ctx.api_version, req).err() } else { None };
        // v2–v4: an explicit retention overrides the broker's.
        let expire =
            (ctx.api_version <= 4 && req.retention_time_ms > 0).then(|| now_ms.saturating_add(req.retention_time_ms));
        let mut answers = Vec::new();
        for t in &req.topics {
            let mut parts = Vec::new();
            for p in &t.partitions {
                let metadata = p.committed_metadata.as_deref().unwrap_or_default();
                let code = if !known(&t.name, p.partition_index) {
                    codes::UNKNOWN_TOPIC_OR_PARTITION
                } else if let Some(e) = &group_err {
                    e.code()
                } else if metadata.len() > self.config.offset_metadata_max_bytes {
                    GroupError::OffsetMetadataTooLarge.code()
                } else {
                    let value = OffsetCommitValue {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: metadata.to_owned(),
                        commit_timestamp_ms: now_ms,
                        expire_timestamp_ms: expire,
                    };
                    let rec = GroupRecord::OffsetCommit {
                        group: gid.to_owned(),
                        topic: t.name.as_str().to_owned(),
                        partition: p.partition_index,
                        value: Some(value),
                    };
                    self.offsets.emit(rec, &mut out);
                    codes::NONE
                };
                parts.push(
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code),
                );
            }
            answers.push(
                OffsetCommitResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_topic_id(t.topic_id)
                    .with_partitions(parts),
            );
        }
        self.gc_transient(gid);
        out.finish(Some(OffsetCommitResponse::default().with_topics(answers)))
    }

    /// Deletes every group's committed offsets of the topics for which `deleted` holds
    /// (Kafka's `GroupCoordinator.onPartitionsDeleted`): a topic deleted and created again
    /// starts with no committed offsets, so a consumer group reads it from its reset policy
    /// instead of resuming at offsets of the old topic. Empty classic groups left without
    /// offsets are deleted, as retention does.
    pub fn delete_offsets_of_topics(&mut self, deleted: &dyn Fn(&str) -> bool) -> crate::CoordinatorResult<()> {
        let mut out = Out::default();
        let doomed: Vec<(String, String, i32)> = self
            .offsets
            .groups
            .iter()
            .flat_map(|(g, offsets)| {
                offsets.keys().filter(|(t, _)| deleted(t)).map(move |(t, p)| (g.clone(), t.clone(), *p))
            })
            .collect();
        let mut groups = BTreeSet::new();
        for (g, t, p) in doomed {
            self.offsets.tombstone(&g, &t, p, &mut out);
            groups.insert(g);
        }
        for g in groups {
            info!(group = %g, "deleted the committed offsets of deleted topics");
            self.maybe_delete_empty_classic(&g, &mut out);
        }
        out.finish(Some(()))
    }

    fn fetch_group(
        &self,
        gid: &str,
        member: Option<(&str, i32)>,
        topics: Option<Vec<(String, Vec<i32>)>>,
        require_stable: bool,
    ) -> Result<Fetched, GroupError> {
        if let (Some((member_id, epoch)), Some(Group::Consumer(g))) = (member, self.groups.get(gid)) {
            if !member_id.is_empty() {
                g.validate_offset_fetch(member_id, epoch)?;
            }
        }
        let empty = Offsets::new();
        let offsets = self.offsets.groups.get(gid).unwrap_or(&empty);
        // KIP-447: a consumer asking for stable offsets waits while a transaction's offset is
        // pending (it retries UNSTABLE_OFFSET_COMMIT), so it never starts from one that the
        // transaction then replaces.
        let answer = |t: &str, p: i32, o: Option<OffsetCommitValue>| {
            if require_stable && self.offsets.is_pending(gid, t, p) {
                (p, None, ResponseError::UnstableOffsetCommit.code())
            } else {
                (p, o, codes::NONE)
            }
        };
        Ok(match topics {
            Some(ts) => ts
                .into_iter()
                .map(|(t, ps)| {
                    let parts = ps.into_iter().map(|p| answer(&t, p, offsets.get(&(t.clone(), p)).cloned())).collect();
                    (t, parts)
                })
                .collect(),
            None => {
                let mut by_topic: BTreeMap<String, Vec<(i32, Option<OffsetCommitValue>, i16)>> = BTreeMap::new();
                for ((t, p), o) in offsets {
                    by_topic.entry(t.clone()).or_default().push(answer(t, *p, Some(o.clone())));
                }
                by_topic.into_iter().collect()
            }
        })
    }

    /// OffsetFetch (v1–v9), single-group (v1–v7) and multi-group (v8+) forms. Null topics
    /// (v2+) means every committed partition of the group. Uncommitted partitions answer
    /// offset -1. With `require_stable` (v7+, KIP-447) a partition whose offset a transaction
    /// has committed but not yet decided answers UNSTABLE_OFFSET_COMMIT. KIP-848 members (v9+) are checked by member id and epoch.
    pub fn offset_fetch(
        &self,
        _now_ms: i64,
        ctx: &RequestContext,
        req: &OffsetFetchRequest,
    ) -> crate::CoordinatorResult<OffsetFetchResponse> {
        let v = ctx.api_version;
        let resp = if v >= 8 {
            let groups = req
                .groups
                .iter()
                .map(|g| {
                    let topics = g.topics.as_ref().map(|ts| {
                        ts.iter().map(|t| (t.name.as_str().to_owned(), t.partition_indexes.clone())).collect()
                    });
                    let member = g.member_id.as_deref().map(|m| (m, g.member_epoch));
                    match self.fetch_group(g.group_id.as_str(), member, topics, req.require_stable) {
                        Ok(f) => OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone()).with_topics(
                            f.into_iter()
                                .map(|(t, ps)| {
                                    OffsetFetchResponseTopics::default().with_name(topic_name(&t)).with_partitions(
                                        ps.into_iter()
                                            .map(|(p, o, code)| {
                                                let (off, epoch, meta) = split(o);
                                                OffsetFetchResponsePartitions::default()
                                                    .with_partition_index(p)
                                                    .with_error_code(code)
                                                    .with_committed_offset(off)
                                                    .with_committed_leader_epoch(epoch)
                                                    .with_metadata(Some(sb(&meta)))
                                            })
                                            .collect(),
                                    )
                                })
                                .collect(),
                        ),
                        Err(e) => OffsetFetchResponseGroup::default()
                            .with_group_id(g.group_id.clone())
                            .with_error_code(e.code()),
                    }
                })
                .collect();
            OffsetFetchResponse::default().with_groups(groups)
        } else {
            let topics = req
                .topics
                .as_ref()
                .map(|ts| ts.iter().map(|t| (t.name.as_str().to_owned(), t.partition_indexes.clone())).collect());
            let stable = v >= 7 && req.require_stable;
            let fetched = self.fetch_group(req.group_id.as_str(), None, topics, stable).unwrap_or_default();
            OffsetFetchResponse::default().with_topics(
                fetched
                    .into_iter()
                    .map(|(t, ps)| {
                        OffsetFetchResponseTopic::default().with_name(topic_name(&t)).with_partitions(
                            ps.into_iter()
                                .map(|(p, o, code)| {
                                    let (off, epoch, meta) = split(o);
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_error_code(code)
                                        .with_committed_offset(off)
                                        .with_committed_leader_epoch(if v >= 5 { epoch } else { -1 })
                                        .with_metadata(Some(sb(&meta)))
                                })
                                .collect(),
                        )
                    })
                    .collect(),
            )
        };
        Out::default().finish(Some(resp))
    }

    /// OffsetDelete (v0). GROUP_ID_NOT_FOUND for an unknown group; NON_EMPTY_GROUP for a
    /// non-empty group that is not a consumer group; GROUP_SUBSCRIBED_TO_TOPIC for a topic
    /// its members subscribe to (or might: unparsable subscriptions count as all topics).
    pub fn offset_delete(
        &mut self,
        _now_ms: i64,
        _ctx: &RequestContext,
        req: &OffsetDeleteRequest,
    ) -> crate::CoordinatorResult<OffsetDeleteResponse> {
        let mut out = Out::default();
        let gid = req.group_id.as_str();
        // Some(set): topics in use; None: any topic may be in use.
        let in_use: Result<Option<BTreeSet<String>>, GroupError> = match self.groups.get(gid) {
            None => Err(GroupError::GroupIdNotFound),
            Some(Group::Classic(g)) if g.members.is_empty() => Ok(Some(BTreeSet::new())),
            Some(Group::Classic(g)) if g.protocol_type.as_deref() == Some("consumer") => Ok(g.subscribed_topics()),
            Some(Group::Classic(_)) => Err(GroupError::NonEmptyGroup),
            Some(Group::Consumer(g)) => Ok(Some(g.subscribed_topic_names())),
        };
        let in_use = match in_use {
            Ok(s) => s,
            Err(e) => return out.finish(Some(OffsetDeleteResponse::default().with_error_code(e.code()))),
        };
        let mut topics = Vec::new();
        for t in &req.topics {
            let name = t.name.as_str();
            let subscribed = in_use.as_ref().is_none_or(|s| s.contains(name));
            let parts = t
                .partitions
                .iter()
                .map(|p| {
                    let code = if subscribed {
                        GroupError::GroupSubscribedToTopic.code()
                    } else {
                        if self.offsets.get(gid, name, p.partition_index).is_some() {
                            self.offsets.tombstone(gid, name, p.partition_index, &mut out);
                        }
                        codes::NONE
                    };
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            topics.push(OffsetDeleteResponseTopic::default().with_name(t.name.clone()).with_partitions(parts));
        }
        self.gc_transient(gid);
        out.finish(Some(OffsetDeleteResponse::default().with_topics(topics)))
    }

    /// Offset retention; see the module docs.
    pub(crate) fn expire_offsets(&mut self, now: i64, out: &mut Out) {
        let retention = self.config.offsets_retention_ms;
        let ids: Vec<String> = self.groups.keys().cloned().collect();
        for gid in ids {
            // base(offset) -> timestamp retention counts from; `None`: offset not eligible.
            let (state_base, skip): (Option<i64>, BTreeSet<String>) = match self.groups.get(&gid) {
                Some(Group::Classic(g)) if g.protocol_type.is_none() => (None, BTreeSet::new()),
                Some(Group::Classic(g)) if g.state == ClassicState::Empty => {
                    (Some(g.state_timestamp_ms), BTreeSet::new())
                }
                Some(Group::Classic(g)) if g.state == ClassicState::Stable => match g.subscribed_topics() {
                    Some(s) => (None, s),
                    None => continue,
                },
                Some(Group::Classic(_)) => continue,
                Some(Group::Consumer(g)) => (None, g.subscribed_topic_names()),
                None => (None, BTreeSet::new()),
            };
            let expired: Vec<(String, i32)> = self
                .offsets
                .groups
                .get(&gid)
                .map(|offsets| {
                    offsets
                        .iter()
                        .filter(|((t, p), o)| {
                            !skip.contains(t)
                                && !self.offsets.is_pending(&gid, t, *p)
                                && match o.expire_timestamp_ms {
                                    Some(at) => now >= at,
                                    None => {
                                        now.saturating_sub(state_base.unwrap_or(o.commit_timestamp_ms)) >= retention
                                    }
                                }
                        })
                        .map(|(k, _)| k.clone())
                        .collect()
                })
                .unwrap_or_default();
            if !expired.is_empty() {
                info!(group = %gid, count = expired.len(), "expiring committed offsets");
            }
            for (t, p) in expired {
                self.offsets.tombstone(&gid, &t, p, out);
            }
            match self.groups.get(&gid) {
                Some(Group::Classic(_)) => self.maybe_delete_empty_classic(&gid, out),
                Some(Group::Consumer(g)) if g.members.is_empty() && !self.offsets.has_offsets(&gid) => {
                    g.tombstones(out);
                    self.groups.remove(&gid);
                }
                _ => {}
            }
        }
    }
}

fn split(o: Option<OffsetCommitValue>) -> (i64, i32, String) {
    match o {
        Some(o) => (o.offset, o.leader_epoch, o.metadata),
        None => (-1, -1, String::new()),
    }
}
