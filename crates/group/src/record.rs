//! Records the coordinator writes to `__consumer_offsets`, and their byte encoding.
//!
//! Every durable change the coordinator makes is one [`GroupRecord`]. Each record is a
//! *key* and an optional *value*; a missing value is a tombstone that deletes the key, so
//! the topic can be compacted by key and replaying what is left rebuilds the same state.
//!
//! # Encoding
//! All integers are big-endian. Key: `i16 record type`, then the key fields. Value:
//! `i16 value version` (0 for every type; a type-5 value is version 1 when it carries a
//! subscribed topic regex, appended after the version-0 fields), then the value fields. Strings are
//! `i32 length` + UTF-8 (`-1` = null), byte blobs are `i32 length` + bytes, UUIDs are 16
//! bytes, an assignment is `i32 topics` × (`uuid`, `i32 count`, `count` × `i32`). A
//! decoder rejects unknown types, unknown versions and trailing bytes.
//!
//! | type | key                       | record                                   |
//! |------|---------------------------|------------------------------------------|
//! | 1    | group, topic, partition   | [`GroupRecord::OffsetCommit`]            |
//! | 2    | group                     | [`GroupRecord::GroupMetadata`] (classic) |
//! | 3    | group                     | [`GroupRecord::ConsumerGroupMetadata`]   |
//! | 5    | group, member id          | [`GroupRecord::ConsumerGroupMemberMetadata`] |
//! | 6    | group                     | [`GroupRecord::ConsumerGroupTargetAssignmentMetadata`] |
//! | 7    | group, member id          | [`GroupRecord::ConsumerGroupTargetAssignmentMember`] |
//! | 8    | group, member id          | [`GroupRecord::ConsumerGroupCurrentMemberAssignment`] |

use std::collections::{BTreeMap, BTreeSet};

use bytes::{BufMut, Bytes, BytesMut};
use uuid::Uuid;

use crate::error::GroupError;

/// Partitions by topic id. Invariant: no topic maps to an empty set.
pub type Assignment = BTreeMap<Uuid, BTreeSet<i32>>;

/// One committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitValue {
    pub offset: i64,
    /// The leader epoch the client committed with, `-1` when unknown.
    pub leader_epoch: i32,
    /// The client's metadata string, returned as-is by OffsetFetch (null is stored as "").
    pub metadata: String,
    pub commit_timestamp_ms: i64,
    /// Explicit expiry from OffsetCommit v2–v4 `retention_time_ms`, else retention applies.
    pub expire_timestamp_ms: Option<i64>,
}

/// A classic group as of its last completed rebalance (or when it became empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMetadataValue {
    /// Empty for groups that only ever had simple (generation -1) offset commits.
    pub protocol_type: String,
    pub generation: i32,
    /// The selected protocol; `None` when the group is empty.
    pub protocol: Option<String>,
    pub leader: Option<String>,
    /// When the group entered its current state (offset retention counts from here).
    pub current_state_timestamp_ms: i64,
    pub members: Vec<MemberMetadataValue>,
}

/// A classic member as persisted: only its metadata for the selected protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberMetadataValue {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// The member's metadata for the selected protocol.
    pub subscription: Bytes,
    /// The assignment bytes exactly as the leader sent them.
    pub assignment: Bytes,
}

/// A KIP-848 consumer group's epoch and the topic metadata its target was computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupMetadataValue {
    pub epoch: i32,
    /// Subscribed topic name -> (topic id, partition count) at the time of `epoch`.
    pub subscription_metadata: BTreeMap<String, (Uuid, i32)>,
}

/// A KIP-848 member's subscription and identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerMemberMetadataValue {
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_topic_names: Vec<String>,
    pub server_assignor: Option<String>,
    pub rebalance_timeout_ms: i32,
    /// `SubscribedTopicRegex` (RE2 syntax, KIP-848), if the member subscribes by pattern.
    pub subscribed_topic_regex: Option<String>,
}

/// A KIP-848 member's reconciled (current) assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentMemberAssignmentValue {
    pub member_epoch: i32,
    pub previous_member_epoch: i32,
    /// [`crate::consumer::MemberState`] as a byte.
    pub state: i8,
    pub assigned: Assignment,
    pub pending_revocation: Assignment,
}

/// One record of `__consumer_offsets`. `value: None` is a tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupRecord {
    OffsetCommit {
        group: String,
        topic: String,
        partition: i32,
        value: Option<OffsetCommitValue>,
    },
    GroupMetadata {
        group: String,
        value: Option<GroupMetadataValue>,
    },
    ConsumerGroupMetadata {
        group: String,
        value: Option<ConsumerGroupMetadataValue>,
    },
    ConsumerGroupMemberMetadata {
        group: String,
        member_id: String,
        value: Option<ConsumerMemberMetadataValue>,
    },
    /// Value: the assignment epoch of the target assignment.
    ConsumerGroupTargetAssignmentMetadata {
        group: String,
        value: Option<i32>,
    },
    ConsumerGroupTargetAssignmentMember {
        group: String,
        member_id: String,
        value: Option<Assignment>,
    },
    ConsumerGroupCurrentMemberAssignment {
        group: String,
        member_id: String,
        value: Option<CurrentMemberAssignmentValue>,
    },
}

const T_OFFSET: i16 = 1;
const T_GROUP: i16 = 2;
const T_CG_META: i16 = 3;
const T_CG_MEMBER: i16 = 5;
const T_CG_TARGET_META: i16 = 6;
const T_CG_TARGET_MEMBER: i16 = 7;
const T_CG_CURRENT: i16 = 8;
const VALUE_VERSION: i16 = 0;
/// Type-5 values (member metadata) holding a subscribed topic regex.
const MEMBER_REGEX_VERSION: i16 = 1;

impl GroupRecord {
    /// The group this record belongs to.
    pub fn group_id(&self) -> &str {
        match self {
            GroupRecord::OffsetCommit { group, .. }
            | GroupRecord::GroupMetadata { group, .. }
            | GroupRecord::ConsumerGroupMetadata { group, .. }
            | GroupRecord::ConsumerGroupMemberMetadata { group, .. }
            | GroupRecord::ConsumerGroupTargetAssignmentMetadata { group, .. }
            | GroupRecord::ConsumerGroupTargetAssignmentMember { group, .. }
            | GroupRecord::ConsumerGroupCurrentMemberAssignment { group, .. } => group,
        }
    }

    /// True when the record deletes its key.
    pub fn is_tombstone(&self) -> bool {
        match self {
            GroupRecord::OffsetCommit { value, .. } => value.is_none(),
            GroupRecord::GroupMetadata { value, .. } => value.is_none(),
            GroupRecord::ConsumerGroupMetadata { value, .. } => value.is_none(),
            GroupRecord::ConsumerGroupMemberMetadata { value, .. } => value.is_none(),
            GroupRecord::ConsumerGroupTargetAssignmentMetadata { value, .. } => value.is_none(),
            GroupRecord::ConsumerGroupTargetAssignmentMember { value, .. } => value.is_none(),
            GroupRecord::ConsumerGroupCurrentMemberAssignment { value, .. } => value.is_none(),
        }
    }

    /// Encodes the record as `(key, value)`; `value` is `None` for a tombstone.
    pub fn encode(&self) -> (Bytes, Option<Bytes>) {
        let mut k = BytesMut::with_capacity(64);
        let mut v = BytesMut::new();
        let has_value = match self {
            GroupRecord::OffsetCommit { group, topic, partition, value } => {
                k.put_i16(T_OFFSET);
                put_str(&mut k, group);
                put_str(&mut k, topic);
                k.put_i32(*partition);
                value.as_ref().map(|x| {
                    v.put_i16(VALUE_VERSION);
                    v.put_i64(x.offset);
                    v.put_i32(x.leader_epoch);
                    put_str(&mut v, &x.metadata);
                    v.put_i64(x.commit_timestamp_ms);
                    v.put_i64(x.expire_timestamp_ms.unwrap_or(-1));
                })
            }
            GroupRecord::GroupMetadata { group, value } => {
                k.put_i16(T_GROUP);
                put_str(&mut k, group);
                value.as_ref().map(|x| {
                    v.put_i16(VALUE_VERSION);
                    put_str(&mut v, &x.protocol_type);
                    v.put_i32(x.generation);
                    put_opt_str(&mut v, x.protocol.as_deref());
                    put_opt_str(&mut v, x.leader.as_deref());
                    v.put_i64(x.current_state_timestamp_ms);
                    put_len(&mut v, x.members.len());
                    for m in &x.members {
                        put_str(&mut v, &m.member_id);
                        put_opt_str(&mut v, m.group_instance_id.as_deref());
                        put_str(&mut v, &m.client_id);
                        put_str(&mut v, &m.client_host);
                        v.put_i32(m.rebalance_timeout_ms);
                        v.put_i32(m.session_timeout_ms);
                        put_bytes(&mut v, &m.subscription);
                        put_bytes(&mut v, &m.assignment);
                    }
                })
            }
            GroupRecord::ConsumerGroupMetadata { group, value } => {
                k.put_i16(T_CG_META);
                put_str(&mut k, group);
                value.as_ref().map(|x| {
                    v.put_i16(VALUE_VERSION);
                    v.put_i32(x.epoch);
                    put_len(&mut v, x.subscription_metadata.len());
                    for (name, (id, n)) in &x.subscription_metadata {
                        put_str(&mut v, name);
                        v.put_slice(id.as_bytes());
                        v.put_i32(*n);
                    }
                })
            }
            GroupRecord::ConsumerGroupMemberMetadata { group, member_id, value } => {
                k.put_i16(T_CG_MEMBER);
                put_str(&mut k, group);
                put_str(&mut k, member_id);
                value.as_ref().map(|x| {
                    v.put_i16(if x.subscribed_topic_regex.is_some() { MEMBER_REGEX_VERSION } else { VALUE_VERSION });
                    put_opt_str(&mut v, x.instance_id.as_deref());
                    put_opt_str(&mut v, x.rack_id.as_deref());
                    put_str(&mut v, &x.client_id);
                    put_str(&mut v, &x.client_host);
                    put_len(&mut v, x.subscribed_topic_names.len());
                    for t in &x.subscribed_topic_names {
                        put_str(&mut v, t);
                    }
                    put_opt_str(&mut v, x.server_assignor.as_deref());
                    v.put_i32(x.rebalance_timeout_ms);
                    if let Some(regex) = &x.subscribed_topic_regex {
                        put_str(&mut v, regex);
                    }
                })
            }
            GroupRecord::ConsumerGroupTargetAssignmentMetadata { group, value } => {
                k.put_i16(T_CG_TARGET_META);
                put_str(&mut k, group);
                value.map(|epoch| {
                    v.put_i16(VALUE_VERSION);
                    v.put_i32(epoch);
                })
            }
            GroupRecord::ConsumerGroupTargetAssignmentMember { group, member_id, value } => {
                k.put_i16(T_CG_TARGET_MEMBER);
                put_str(&mut k, group);
                put_str(&mut k, member_id);
                value.as_ref().map(|x| {
                    v.put_i16(VALUE_VERSION);
                    put_assignment(&mut v, x);
                })
            }
            GroupRecord::ConsumerGroupCurrentMemberAssignment { group, member_id, value } => {
                k.put_i16(T_CG_CURRENT);
                put_str(&mut k, group);
                put_str(&mut k, member_id);
                value.as_ref().map(|x| {
                    v.put_i16(VALUE_VERSION);
                    v.put_i32(x.member_epoch);
                    v.put_i32(x.previous_member_epoch);
                    v.put_i8(x.state);
                    put_assignment(&mut v, &x.assigned);
                    put_assignment(&mut v, &x.pending_revocation);
                })
            }
        };
        (k.freeze(), has_value.map(|()| v.freeze()))
    }

    /// Decodes a record from its key and optional value (`None` = tombstone).
    ///
    /// Never panics: truncated, oversized or trailing input is a [`GroupError`].
    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<GroupRecord, GroupError> {
        let mut k = Reader(key);
        let ty = k.i16()?;
        let mut version = VALUE_VERSION;
        let mut val = match value {
            None => None,
            Some(bytes) => {
                let mut r = Reader(bytes);
                version = r.i16()?;
                if version != VALUE_VERSION && !(ty == T_CG_MEMBER && version == MEMBER_REGEX_VERSION) {
                    return Err(GroupError::UnsupportedRecordVersion { record_type: ty, version });
                }
                Some(r)
            }
        };
        let rec = match ty {
            T_OFFSET => {
                let group = k.string()?;
                let topic = k.string()?;
                let partition = k.i32()?;
                let value = match val.as_mut() {
                    None => None,
                    Some(r) => Some(OffsetCommitValue {
                        offset: r.i64()?,
                        leader_epoch: r.i32()?,
                        metadata: r.string()?,
                        commit_timestamp_ms: r.i64()?,
                        expire_timestamp_ms: Some(r.i64()?).filter(|t| *t >= 0),
                    }),
                };
                GroupRecord::OffsetCommit { group, topic, partition, value }
            }
            T_GROUP => {
                let group = k.string()?;
                let value = match val.as_mut() {
                    None => None,
                    Some(r) => {
                        let protocol_type = r.string()?;
                        let generation = r.i32()?;
                        let protocol = r.opt_string()?;
                        let leader = r.opt_string()?;
                        let current_state_timestamp_ms = r.i64()?;
                        let n = r.len()?;
                        let mut members = Vec::with_capacity(n.min(1024));
                        for _ in 0..n {
                            members.push(MemberMetadataValue {
                                member_id: r.string()?,
                                group_instance_id: r.opt_string()?,
                                client_id: r.string()?,
                                client_host: r.string()?,
                                rebalance_timeout_ms: r.i32()?,
                                session_timeout_ms: r.i32()?,
                                subscription: r.bytes()?,
                                assignment: r.bytes()?,
                            });
                        }
                        Some(GroupMetadataValue {
                            protocol_type,
                            generation,
                            protocol,
                            leader,
                            current_state_timestamp_ms,
                            members,
                        })
                    }
                };
                GroupRecord::GroupMetadata { group, value }
            }
            T_CG_META => {
                let group = k.string()?;
                let value = match val.as_mut() {
                    None => None,
                    Some(r) => {
                        let epoch = r.i32()?;
                        let n = r.len()?;
                        let mut subscription_metadata = BTreeMap::new();
                        for _ in 0..n {
                            let name = r.string()?;
                            let id = r.uuid()?;
                            let count = r.i32()?;
                            subscription_metadata.insert(name, (id, count));
                        }
                        Some(ConsumerGroupMetadataValue { epoch, subscription_metadata })
                    }
                };
                GroupRecord::ConsumerGroupMetadata { group, value }
            }
            T_CG_MEMBER => {
                let group = k.string()?;
                let member_id = k.string()?;
                let value = match val.as_mut() {
                    None => None,
                    Some(r) => {
                        let instance_id = r.opt_string()?;
                        let rack_id = r.opt_string()?;
                        let client_id = r.string()?;
                        let client_host = r.string()?;
                        let n = r.len()?;
                        let mut subscribed_topic_names = Vec::with_capacity(n.min(1024));
                        for _ in 0..n {
                            subscribed_topic_names.push(r.string()?);
                        }
                        Some(ConsumerMemberMetadataValue {
                            instance_id,
                            rack_id,
                            client_id,
                            client_host,
                            subscribed_topic_names,
                            server_assignor: r.opt_string()?,
                            rebalance_timeout_ms: r.i32()?,
                            subscribed_topic_regex: if version == MEMBER_REGEX_VERSION {
                                Some(r.string()?)
                            } else {
                                None
                            },
                        })
                    }
                };
                GroupRecord::ConsumerGroupMemberMetadata { group, member_id, value }
            }
            T_CG_TARGET_META => {
                let group = k.string()?;
                let value = match val.as_mut() {
                    None => None,
                    Some(r) => Some(r.i32()?),
                };
                GroupRecord::ConsumerGroupTargetAssignmentMetadata { group, value }
            }
            T_CG_TARGET_MEMBER => {
                let group = k.string()?;
                let member_id = k.string()?;
                let value = match val.as_mut() {
                    None => None,
                    Some(r) => Some(r.assignment()?),
                };
                GroupRecord::ConsumerGroupTargetAssignmentMember { group, member_id, value }
            }
            T_CG_CURRENT => {
                let group = k.string()?;
                let member_id = k.string()?;
                let value = match val.as_mut() {
                    None => None,
                    Some(r) => Some(CurrentMemberAssignmentValue {
                        member_epoch: r.i32()?,
                        previous_member_epoch: r.i32()?,
                        state: r.i8()?,
                        assigned: r.assignment()?,
                        pending_revocation: r.assignment()?,
                    }),
                };
                GroupRecord::ConsumerGroupCurrentMemberAssignment { group, member_id, value }
            }
            other => return Err(GroupError::UnknownRecordType(other)),
        };
        k.finish()?;
        if let Some(r) = val {
            r.finish()?;
        }
        Ok(rec)
    }
}

fn put_len(b: &mut BytesMut, n: usize) {
    // Lengths come from in-memory collections; anything beyond i32 cannot be framed by
    // Kafka anyway, so saturate rather than wrap.
    b.put_i32(i32::try_from(n).unwrap_or(i32::MAX));
}

fn put_str(b: &mut BytesMut, s: &str) {
    put_len(b, s.len());
    b.put_slice(s.as_bytes());
}

fn put_opt_str(b: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_str(b, s),
        None => b.put_i32(-1),
    }
}

fn put_bytes(b: &mut BytesMut, s: &[u8]) {
    put_len(b, s.len());
    b.put_slice(s);
}

fn put_assignment(b: &mut BytesMut, a: &Assignment) {
    put_len(b, a.len());
    for (id, parts) in a {
        b.put_slice(id.as_bytes());
        put_len(b, parts.len());
        for p in parts {
            b.put_i32(*p);
        }
    }
}

/// A bounds-checked cursor over record bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], GroupError> {
        if self.0.len() < n {
            return Err(GroupError::MalformedRecord("truncated"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], GroupError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn i8(&mut self) -> Result<i8, GroupError> {
        Ok(i8::from_be_bytes(self.array()?))
    }
    fn i16(&mut self) -> Result<i16, GroupError> {
        Ok(i16::from_be_bytes(self.array()?))
    }
    fn i32(&mut self) -> Result<i32, GroupError> {
        Ok(i32::from_be_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, GroupError> {
        Ok(i64::from_be_bytes(self.array()?))
    }
    fn uuid(&mut self) -> Result<Uuid, GroupError> {
        Ok(Uuid::from_bytes(self.array()?))
    }
    /// A non-negative length, no larger than the bytes left (each element takes >= 1 byte).
    fn len(&mut self) -> Result<usize, GroupError> {
        let n = usize::try_from(self.i32()?).map_err(|_| GroupError::MalformedRecord("negative length"))?;
        if n > self.0.len() {
            return Err(GroupError::MalformedRecord("length exceeds record"));
        }
        Ok(n)
    }
    fn string(&mut self) -> Result<String, GroupError> {
        let n = self.len()?;
        let s = self.take(n)?;
        String::from_utf8(s.to_vec()).map_err(|_| GroupError::MalformedRecord("invalid utf-8"))
    }
    fn opt_string(&mut self) -> Result<Option<String>, GroupError> {
        let peek = Reader(self.0).i32()?;
        if peek == -1 {
            self.i32()?;
            return Ok(None);
        }
        self.string().map(Some)
    }
    fn bytes(&mut self) -> Result<Bytes, GroupError> {
        let n = self.len()?;
        Ok(Bytes::copy_from_slice(self.take(n)?))
    }
    fn assignment(&mut self) -> Result<Assignment, GroupError> {
        let n = self.len()?;
        let mut a = Assignment::new();
        for _ in 0..n {
            let id = self.uuid()?;
            let count = self.len()?;
            let mut set = BTreeSet::new();
            for _ in 0..count {
                set.insert(self.i32()?);
            }
            a.insert(id, set);
        }
        Ok(a)
    }
    fn finish(self) -> Result<(), GroupError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(GroupError::MalformedRecord("trailing bytes"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9._\\-é]{0,12}"
    }
    fn os() -> impl Strategy<Value = Option<String>> {
        proptest::option::of(s())
    }
    fn blob() -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..24).prop_map(Bytes::from)
    }
    fn uuid() -> impl Strategy<Value = Uuid> {
        any::<u128>().prop_map(Uuid::from_u128)
    }
    fn assignment() -> impl Strategy<Value = Assignment> {
        proptest::collection::btree_map(uuid(), proptest::collection::btree_set(0..64i32, 1..5), 0..4)
    }
    fn member() -> impl Strategy<Value = MemberMetadataValue> {
        (s(), os(), s(), s(), any::<i32>(), any::<i32>(), blob(), blob()).prop_map(
            |(member_id, group_instance_id, client_id, client_host, r, t, subscription, assignment)| {
                MemberMetadataValue {
                    member_id,
                    group_instance_id,
                    client_id,
                    client_host,
                    rebalance_timeout_ms: r,
                    session_timeout_ms: t,
                    subscription,
                    assignment,
                }
            },
        )
    }

    fn record() -> impl Strategy<Value = GroupRecord> {
        prop_oneof![
            (
                s(),
                s(),
                any::<i32>(),
                proptest::option::of((
                    any::<i64>(),
                    any::<i32>(),
                    s(),
                    any::<i64>(),
                    proptest::option::of(0..i64::MAX)
                ))
            )
                .prop_map(|(group, topic, partition, v)| GroupRecord::OffsetCommit {
                    group,
                    topic,
                    partition,
                    value: v.map(|(offset, leader_epoch, metadata, commit_timestamp_ms, expire_timestamp_ms)| {
                        OffsetCommitValue { offset, leader_epoch, metadata, commit_timestamp_ms, expire_timestamp_ms }
                    }),
                }),
            (
                s(),
                proptest::option::of((
                    s(),
                    any::<i32>(),
                    os(),
                    os(),
                    any::<i64>(),
                    proptest::collection::vec(member(), 0..4)
                ))
            )
                .prop_map(|(group, v)| GroupRecord::GroupMetadata {
                    group,
                    value: v.map(|(protocol_type, generation, protocol, leader, ts, members)| GroupMetadataValue {
                        protocol_type,
                        generation,
                        protocol,
                        leader,
                        current_state_timestamp_ms: ts,
                        members,
                    }),
                }),
            (
                s(),
                proptest::option::of((
                    any::<i32>(),
                    proptest::collection::btree_map(s(), (uuid(), any::<i32>()), 0..4)
                ))
            )
                .prop_map(|(group, v)| GroupRecord::ConsumerGroupMetadata {
                    group,
                    value: v.map(|(epoch, subscription_metadata)| ConsumerGroupMetadataValue {
                        epoch,
                        subscription_metadata
                    }),
                }),
            (
                s(),
                s(),
                proptest::option::of((
                    os(),
                    os(),
                    s(),
                    s(),
                    proptest::collection::vec(s(), 0..4),
                    os(),
                    any::<i32>(),
                    os()
                ))
            )
                .prop_map(|(group, member_id, v)| GroupRecord::ConsumerGroupMemberMetadata {
                    group,
                    member_id,
                    value: v.map(
                        |(
                            instance_id,
                            rack_id,
                            client_id,
                            client_host,
                            subscribed_topic_names,
                            server_assignor,
                            rebalance_timeout_ms,
                            subscribed_topic_regex,
                        )| {
                            ConsumerMemberMetadataValue {
                                instance_id,
                                rack_id,
                                client_id,
                                client_host,
                                subscribed_topic_names,
                                server_assignor,
                                rebalance_timeout_ms,
                                subscribed_topic_regex,
                            }
                        }
                    ),
                }),
            (s(), proptest::option::of(any::<i32>()))
                .prop_map(|(group, value)| GroupRecord::ConsumerGroupTargetAssignmentMetadata { group, value }),
            (s(), s(), proptest::option::of(assignment())).prop_map(|(group, member_id, value)| {
                GroupRecord::ConsumerGroupTargetAssignmentMember { group, member_id, value }
            }),
            (s(), s(), proptest::option::of((any::<i32>(), any::<i32>(), any::<i8>(), assignment(), assignment())))
                .prop_map(|(group, member_id, v)| GroupRecord::ConsumerGroupCurrentMemberAssignment {
                    group,
                    member_id,
                    value: v.map(|(member_epoch, previous_member_epoch, state, assigned, pending_revocation)| {
                        CurrentMemberAssignmentValue {
                            member_epoch,
                            previous_member_epoch,
                            state,
                            assigned,
                            pending_revocation,
                        }
                    }),
                }),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(rec in record()) {
            let (k, v) = rec.encode();
            prop_assert_eq!(v.is_none(), rec.is_tombstone());
            let back = GroupRecord::decode(&k, v.as_deref()).unwrap();
            prop_assert_eq!(back, rec);
        }

        #[test]
        fn truncation_is_an_error_not_a_panic(rec in record(), cut in any::<prop::sample::Index>()) {
            let (k, v) = rec.encode();
            if let Some(v) = v {
                let at = cut.index(v.len());
                prop_assert!(GroupRecord::decode(&k, Some(&v[..at])).is_err());
            }
            let at = cut.index(k.len());
            prop_assert!(GroupRecord::decode(&k[..at], None).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(k in proptest::collection::vec(any::<u8>(), 0..64),
                                       v in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64))) {
            let _ = GroupRecord::decode(&k, v.as_deref());
        }
    }

    #[test]
    fn golden_offset_commit_bytes() {
        let rec = GroupRecord::OffsetCommit {
            group: "g".into(),
            topic: "t".into(),
            partition: 3,
            value: Some(OffsetCommitValue {
                offset: 42,
                leader_epoch: 7,
                metadata: "m".into(),
                commit_timestamp_ms: 1,
                expire_timestamp_ms: None,
            }),
        };
        let (k, v) = rec.encode();
        assert_eq!(&k[..], &[0, 1, 0, 0, 0, 1, b'g', 0, 0, 0, 1, b't', 0, 0, 0, 3]);
        let v = v.unwrap();
        assert_eq!(
            &v[..],
            &[
                0, 0, 0, 0, 0, 0, 0, 0, 0, 42, 0, 0, 0, 7, 0, 0, 0, 1, b'm', 0, 0, 0, 0, 0, 0, 0, 1, 255, 255, 255,
                255, 255, 255, 255, 255
            ]
        );
    }

    #[test]
    fn unknown_type_and_version_are_rejected() {
        assert_eq!(GroupRecord::decode(&[0, 99], None), Err(GroupError::UnknownRecordType(99)));
        let (k, _) = GroupRecord::GroupMetadata { group: "g".into(), value: None }.encode();
        assert_eq!(
            GroupRecord::decode(&k, Some(&[0, 9])),
            Err(GroupError::UnsupportedRecordVersion { record_type: 2, version: 9 })
        );
    }
}
