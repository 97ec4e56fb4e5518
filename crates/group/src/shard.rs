//! The coordinator shard: one per `__consumer_offsets` partition.
//!
//! # Contract with the driver
//! - Every handler returns a [`CoordinatorResult`]. The driver appends `records` to the
//!   partition (in order, as one batch) and, **only after they are durable**, sends
//!   `response` to the caller and each of `completions` to the request its token names.
//!   A result without records may be answered at once.
//! - `response: None` means the request is parked under `ctx.token`; its answer comes back
//!   later in the `completions` of some call. Parked requests are classic JoinGroup
//!   (completes when every known member has rejoined, on the rebalance timeout, or at the
//!   end of the initial rebalance delay) and SyncGroup of a follower (completes when the
//!   leader syncs, or with REBALANCE_IN_PROGRESS / UNKNOWN_MEMBER_ID when the rebalance
//!   restarts or the member is removed).
//! - If an append fails, the in-memory state is ahead of the log: the driver must answer
//!   every response of the failed result with NOT_COORDINATOR, drop the shard, answer
//!   [`GroupCoordinatorShard::parked_tokens`] likewise, and rebuild it by replay.
//! - Call [`GroupCoordinatorShard::tick`] at or after [`GroupCoordinatorShard::next_deadline`].

use std::collections::BTreeMap;

use strata_protocol::kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use strata_protocol::kafka_protocol::messages::list_groups_response::ListedGroup;
use strata_protocol::kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, JoinGroupResponse, ListGroupsRequest, ListGroupsResponse,
    SyncGroupResponse,
};
use uuid::Uuid;

use crate::classic::ClassicGroup;
use crate::consumer::ConsumerGroup;
use crate::error::{codes, GroupError};
use crate::offsets::OffsetStore;
use crate::record::GroupRecord;

/// Broker settings the coordinator obeys. Defaults are Kafka's.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an empty group
    /// waits for more members (extended per new member, up to the rebalance timeout).
    pub initial_rebalance_delay_ms: i64,
    /// `group.min.session.timeout.ms`.
    pub min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`.
    pub max_session_timeout_ms: i32,
    /// `group.max.size`.
    pub max_group_size: usize,
    /// How long a new classic member's JoinGroup may wait before the member is dropped
    /// (Kafka's 5-minute `classicGroupNewMemberJoinTimeoutMs`).
    pub new_member_join_timeout_ms: i64,
    /// `offsets.retention.minutes` in milliseconds.
    pub offsets_retention_ms: i64,
    /// `offsets.retention.check.interval.ms`.
    pub offsets_retention_check_interval_ms: i64,
    /// `offset.metadata.max.bytes`.
    pub offset_metadata_max_bytes: usize,
    /// `group.consumer.session.timeout.ms` (KIP-848).
    pub consumer_session_timeout_ms: i32,
    /// `group.consumer.heartbeat.interval.ms` (KIP-848).
    pub consumer_heartbeat_interval_ms: i32,
    /// `group.consumer.max.size` (KIP-848).
    pub consumer_max_size: usize,
    /// `group.consumer.assignors`; the first is the default.
    pub consumer_assignors: Vec<String>,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            initial_rebalance_delay_ms: 3_000,
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            max_group_size: i32::MAX as usize,
            new_member_join_timeout_ms: 300_000,
            offsets_retention_ms: 7 * 24 * 60 * 60 * 1000,
            offsets_retention_check_interval_ms: 600_000,
            offset_metadata_max_bytes: 4096,
            consumer_session_timeout_ms: 45_000,
            consumer_heartbeat_interval_ms: 5_000,
            consumer_max_size: i32::MAX as usize,
            consumer_assignors: vec!["uniform".to_owned(), "range".to_owned()],
        }
    }
}

/// The driver's opaque handle for one in-flight request (typically connection id and
/// correlation id packed together). The shard only stores and returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestToken(pub u64);

/// What the shard needs to know about the request besides its body.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub token: RequestToken,
    /// The request's API version; responses are shaped for it.
    pub api_version: i16,
    /// The client id from the request header (member ids are derived from it).
    pub client_id: String,
    /// The client's address, shown by DescribeGroups.
    pub client_host: String,
}

impl RequestContext {
    /// A context with empty client id and host.
    pub fn new(token: RequestToken, api_version: i16) -> Self {
        RequestContext { token, api_version, client_id: String::new(), client_host: String::new() }
    }
}

/// The answer to a parked request.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseKind {
    JoinGroup(JoinGroupResponse),
    SyncGroup(SyncGroupResponse),
}

/// What a call produced.
#[derive(Debug, Clone, PartialEq)]
#[must_use = "records must be appended and responses sent"]
pub struct CoordinatorResult<T> {
    /// Records to append to the partition, in order. Empty when nothing durable changed.
    pub records: Vec<GroupRecord>,
    /// The response to this request; `None` when it was parked under its token.
    pub response: Option<T>,
    /// Parked requests this call completed. Sent, like `response`, once `records` are durable.
    pub completions: Vec<(RequestToken, ResponseKind)>,
}

/// Topic metadata the KIP-848 assignors need, from the driver's metadata image.
pub trait TopicMetadata {
    /// Topic id and partition count of the topic named `topic`, if it exists.
    fn partitions(&self, topic: &str) -> Option<(Uuid, i32)>;
    /// Name and partition count of the topic with id `id`, if it exists.
    fn by_id(&self, id: Uuid) -> Option<(String, i32)>;
    /// Calls `f` with the name of every topic.
    fn for_each_topic(&self, f: &mut dyn FnMut(&str));
    /// Whether a regex subscription may resolve to `topic` (KAFKA-18813: only topics the
    /// member whose heartbeat resolves it may describe). Asked only for topics that match.
    fn visible(&self, _topic: &str) -> bool {
        true
    }
    /// A number that changes whenever the set of topics may have changed (the metadata
    /// image's position); regex subscriptions are resolved again when it moves.
    fn version(&self) -> u64;
}

/// Effects accumulated while handling one call.
#[derive(Debug, Default)]
pub(crate) struct Out {
    pub records: Vec<GroupRecord>,
    pub completions: Vec<(RequestToken, ResponseKind)>,
}

impl Out {
    pub(crate) fn finish<T>(self, response: Option<T>) -> CoordinatorResult<T> {
        CoordinatorResult { records: self.records, response, completions: self.completions }
    }
}

/// A group of either protocol. Group ids are unique across both.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per group, held in a map: boxing buys nothing
pub(crate) enum Group {
    Classic(ClassicGroup),
    Consumer(ConsumerGroup),
}

/// Source of member ids: random in production, seeded for deterministic simulation.
#[derive(Debug)]
pub(crate) enum IdSource {
    Random,
    Seeded(u64),
}

impl IdSource {
    pub(crate) fn next_uuid(&mut self) -> Uuid {
        match self {
            IdSource::Random => Uuid::new_v4(),
            IdSource::Seeded(state) => {
                let mut next = || {
                    // splitmix64
                    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                    let mut z = *state;
                    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                    z ^ (z >> 31)
                };
                let (hi, lo) = (next(), next());
                uuid::Builder::from_random_bytes(((u128::from(hi) << 64) | u128::from(lo)).to_be_bytes()).into_uuid()
            }
        }
    }
}

/// The group coordinator for one `__consumer_offsets` partition.
///
/// Invariants: a group id names at most one group (classic or consumer); every durable
/// change made by a handler is in the records it returned; replaying all records returned
/// so far into a fresh shard yields the same [`GroupCoordinatorShard::snapshot_records`].
#[derive(Debug)]
pub struct GroupCoordinatorShard {
    pub(crate) config: GroupConfig,
    pub(crate) groups: BTreeMap<String, Group>,
    pub(crate) offsets: OffsetStore,
    pub(crate) ids: IdSource,
    /// When retention next runs; `None` until the first tick.
    pub(crate) next_retention_check_ms: Option<i64>,
}

impl GroupCoordinatorShard {
    /// An empty shard generating random member ids.
    pub fn new(config: GroupConfig) -> Self {
        GroupCoordinatorShard {
            config,
            groups: BTreeMap::new(),
            offsets: OffsetStore::default(),
            ids: IdSource::Random,
            next_retention_check_ms: None,
        }
    }

    /// An empty shard whose member ids are a function of `seed` (for simulation tests).
    pub fn with_seed(config: GroupConfig, seed: u64) -> Self {
        GroupCoordinatorShard { ids: IdSource::Seeded(seed), ..Self::new(config) }
    }

    /// The shard's configuration.
    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// Applies one record read back from the partition (load path). Records must be
    /// replayed in log order; tombstones delete. Replay never produces records or responses.
    pub fn replay(&mut self, record: &GroupRecord) {
        match record {
            GroupRecord::OffsetCommit { .. } => {
                self.offsets.replay(record);
                // A commit for an unknown group creates an empty (simple) classic group,
                // as the live path does.
                let group = record.group_id();
                if !record.is_tombstone() && !self.groups.contains_key(group) {
                    self.groups.insert(group.to_owned(), Group::Classic(ClassicGroup::new(group, 0)));
                } else if record.is_tombstone() {
                    self.gc_transient(group);
                }
            }
            GroupRecord::GroupMetadata { group, value } => match value {
                None => {
                    if matches!(self.groups.get(group), Some(Group::Classic(_))) {
                        self.groups.remove(group);
                    }
                }
                Some(v) => {
                    self.groups.insert(group.clone(), Group::Classic(ClassicGroup::from_record(group, v)));
                }
            },
            _ => crate::consumer::replay(self, record),
        }
    }

    /// Requests parked in this shard. When the shard is unloaded (leadership moved) or
    /// dropped after a failed append, the driver answers each with NOT_COORDINATOR.
    pub fn parked_tokens(&self) -> Vec<RequestToken> {
        let mut v = Vec::new();
        for g in self.groups.values() {
            if let Group::Classic(g) = g {
                g.parked_tokens(&mut v);
            }
        }
        v
    }

    /// The earliest time at which [`GroupCoordinatorShard::tick`] has work to do, if any.
    /// `i64::MIN` means "now" (the first tick schedules offset retention).
    pub fn next_deadline(&self) -> Option<i64> {
        let mut best = Some(self.next_retention_check_ms.unwrap_or(i64::MIN));
        for g in self.groups.values() {
            let d = match g {
                Group::Classic(g) => g.next_deadline(),
                Group::Consumer(g) => g.next_deadline(),
            };
            best = match (best, d) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        best
    }

    /// Runs every timer due at `now_ms`: pending-member and session expiry, rebalance,
    /// initial-delay and sync timeouts, KIP-848 session and revocation timeouts, and offset
    /// retention (which also deletes empty groups left without offsets).
    pub fn tick(&mut self, now_ms: i64) -> CoordinatorResult<()> {
        let mut out = Out::default();
        let ids: Vec<String> = self.groups.keys().cloned().collect();
        for id in ids {
            match self.groups.get_mut(&id) {
                Some(Group::Classic(g)) => g.tick(now_ms, &self.config, &mut out),
                Some(Group::Consumer(g)) => g.tick(now_ms, &self.config, &mut out),
                None => {}
            }
        }
        match self.next_retention_check_ms {
            None => {
                self.next_retention_check_ms =
                    Some(now_ms.saturating_add(self.config.offsets_retention_check_interval_ms))
            }
            Some(t) if t <= now_ms => {
                self.expire_offsets(now_ms, &mut out);
                self.next_retention_check_ms =
                    Some(now_ms.saturating_add(self.config.offsets_retention_check_interval_ms));
            }
            Some(_) => {}
        }
        out.finish(Some(()))
    }

    /// Records that, replayed into an empty shard, rebuild this shard's durable state:
    /// each group's metadata and each committed offset. Used to compare states in tests
    /// and usable as a compacted image of the partition.
    pub fn snapshot_records(&self) -> Vec<GroupRecord> {
        let mut v = Vec::new();
        for (id, g) in &self.groups {
            match g {
                Group::Classic(g) => {
                    if g.last_persisted.is_some() {
                        v.push(GroupRecord::GroupMetadata { group: id.clone(), value: Some(g.to_record_value()) });
                    }
                }
                Group::Consumer(g) => g.snapshot_records(&mut v),
            }
        }
        self.offsets.snapshot_records(&mut v);
        v
    }

    /// ListGroups (v0–v5): every group of this shard, filtered by state (v4+, case
    /// insensitive) and by type (v5+: `classic` / `consumer`).
    pub fn list_groups(
        &self,
        _now_ms: i64,
        ctx: &RequestContext,
        req: &ListGroupsRequest,
    ) -> CoordinatorResult<ListGroupsResponse> {
        let v = ctx.api_version;
        let states: Vec<String> =
            if v >= 4 { req.states_filter.iter().map(|s| s.to_lowercase()).collect() } else { Vec::new() };
        let types: Vec<String> =
            if v >= 5 { req.types_filter.iter().map(|s| s.to_lowercase()).collect() } else { Vec::new() };
        let mut groups = Vec::new();
        for (id, g) in &self.groups {
            let (state, ty, protocol_type) = match g {
                Group::Classic(g) => (g.state.name(), "classic", g.protocol_type.clone().unwrap_or_default()),
                Group::Consumer(g) => (g.state_name(), "consumer", "consumer".to_owned()),
            };
            if !states.is_empty() && !states.contains(&state.to_lowercase()) {
                continue;
            }
            if !types.is_empty() && !types.iter().any(|t| t == ty) {
                continue;
            }
            groups.push(
                ListedGroup::default()
                    .with_group_id(crate::classic::group_id(id))
                    .with_protocol_type(crate::classic::sb(&protocol_type))
                    .with_group_state(crate::classic::sb(state))
                    .with_group_type(crate::classic::sb(ty)),
            );
        }
        Out::default().finish(Some(ListGroupsResponse::default().with_groups(groups)))
    }

    /// DeleteGroups (v0–v2): deletes each empty group with its offsets (tombstones);
    /// NON_EMPTY_GROUP while it has members, GROUP_ID_NOT_FOUND if unknown.
    pub fn delete_groups(
        &mut self,
        _now_ms: i64,
        _ctx: &RequestContext,
        req: &DeleteGroupsRequest,
    ) -> CoordinatorResult<DeleteGroupsResponse> {
        let mut out = Out::default();
        let mut results = Vec::new();
        for gid in &req.groups_names {
            let id = gid.as_str();
            let code = match self.delete_group(id, &mut out) {
                Ok(()) => codes::NONE,
                Err(e) => e.code(),
            };
            results.push(DeletableGroupResult::default().with_group_id(gid.clone()).with_error_code(code));
        }
        out.finish(Some(DeleteGroupsResponse::default().with_results(results)))
    }

    fn delete_group(&mut self, id: &str, out: &mut Out) -> Result<(), GroupError> {
        match self.groups.get(id) {
            None => return Err(GroupError::GroupIdNotFound),
            Some(Group::Classic(g)) => {
                if !g.members.is_empty() || !g.pending_members.is_empty() {
                    return Err(GroupError::NonEmptyGroup);
                }
                self.offsets.delete_group(id, out);
                out.records.push(GroupRecord::GroupMetadata { group: id.to_owned(), value: None });
            }
            Some(Group::Consumer(g)) => {
                if !g.members.is_empty() {
                    return Err(GroupError::NonEmptyGroup);
                }
                self.offsets.delete_group(id, out);
                g.tombstones(out);
            }
        }
        self.groups.remove(id);
        Ok(())
    }

    /// Removes an empty classic group that has no offsets left (retention cleanup).
    pub(crate) fn maybe_delete_empty_classic(&mut self, id: &str, out: &mut Out) {
        if let Some(Group::Classic(g)) = self.groups.get(id) {
            if g.members.is_empty() && g.pending_members.is_empty() && !self.offsets.has_offsets(id) {
                if g.last_persisted.is_some() {
                    out.records.push(GroupRecord::GroupMetadata { group: id.to_owned(), value: None });
                }
                self.groups.remove(id);
            }
        }
    }
}
