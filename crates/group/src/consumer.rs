//! KIP-848 consumer groups: ConsumerGroupHeartbeat and ConsumerGroupDescribe.
//!
//! The coordinator owns the assignment. A group has a *group epoch* (bumped whenever
//! membership, a subscription, or the subscribed topics' partition counts change), a
//! *target assignment* computed by a server-side assignor for the group epoch (its
//! *assignment epoch*), and for each member a *current assignment* that converges to the
//! target through heartbeats:
//!
//! 1. A member first gives up (revokes) what the target takes away; it keeps its epoch and
//!    is `UnrevokedPartitions` until a heartbeat's owned partitions no longer hold them.
//! 2. It then moves to the assignment epoch and receives the target partitions that no
//!    other member still owns; partitions another member has yet to revoke are withheld
//!    (`UnreleasedPartitions`) and handed out on a later heartbeat once released.
//!
//! Invariant: a partition is owned (assigned or pending revocation) by at most one member;
//! `owners` indexes exactly the members' assigned and pending partitions.
//!
//! Every change is a record applied with the same code as replay ([`ConsumerGroup::apply`]),
//! so a replayed group equals the live one. Session deadlines (and the revocation deadline
//! of a member that holds on to partitions past its rebalance timeout) are transient: on
//! expiry the member is fenced (removed) and the group epoch bumped.

use std::collections::{BTreeMap, BTreeSet};

use strata_protocol::kafka_protocol::messages::consumer_group_describe_response::{
    Assignment as DescribeAssignment, DescribedGroup, Member, TopicPartitions as DescribeTopicPartitions,
};
use strata_protocol::kafka_protocol::messages::consumer_group_heartbeat_response::{
    Assignment as HbAssignment, TopicPartitions as HbTopicPartitions,
};
use strata_protocol::kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, ConsumerGroupHeartbeatRequest,
    ConsumerGroupHeartbeatResponse,
};
use tracing::info;
use uuid::Uuid;

use crate::assignor::{self, MemberSpec};
use crate::classic::{sb, topic_name};
use crate::error::{codes, GroupError};
use crate::record::{
    Assignment, ConsumerGroupMetadataValue, ConsumerMemberMetadataValue, CurrentMemberAssignmentValue, GroupRecord,
};
use crate::shard::{Group, GroupConfig, GroupCoordinatorShard, Out, RequestContext, TopicMetadata};

/// Member epoch of a member leaving for good.
pub const LEAVE_GROUP_MEMBER_EPOCH: i32 = -1;
/// Member epoch of a static member leaving temporarily (it keeps its assignment).
pub const LEAVE_GROUP_STATIC_MEMBER_EPOCH: i32 = -2;

/// Where a member is in reconciling towards its target assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// At the assignment epoch with all of its target.
    Stable,
    /// Must revoke `pending_revocation` before it moves on.
    UnrevokedPartitions,
    /// At the assignment epoch, but some target partitions are still owned by others.
    UnreleasedPartitions,
}

impl MemberState {
    fn to_i8(self) -> i8 {
        match self {
            MemberState::Stable => 0,
            MemberState::UnrevokedPartitions => 1,
            MemberState::UnreleasedPartitions => 2,
        }
    }
    fn from_i8(v: i8) -> Self {
        match v {
            1 => MemberState::UnrevokedPartitions,
            2 => MemberState::UnreleasedPartitions,
            _ => MemberState::Stable,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct ConsumerMember {
    pub member_id: String,
    pub meta: ConsumerMemberMetadataValue,
    pub member_epoch: i32,
    pub previous_member_epoch: i32,
    pub state: MemberState,
    pub assigned: Assignment,
    pub pending_revocation: Assignment,
    // ---- transient ----
    /// `None` after load: armed by the next tick.
    pub session_deadline_ms: Option<i64>,
    pub revocation_deadline_ms: Option<i64>,
}

impl ConsumerMember {
    fn new(member_id: &str) -> Self {
        ConsumerMember {
            member_id: member_id.to_owned(),
            meta: ConsumerMemberMetadataValue {
                instance_id: None,
                rack_id: None,
                client_id: String::new(),
                client_host: String::new(),
                subscribed_topic_names: Vec::new(),
                server_assignor: None,
                rebalance_timeout_ms: 0,
                subscribed_topic_regex: None,
            },
            member_epoch: 0,
            previous_member_epoch: -1,
            state: MemberState::Stable,
            assigned: Assignment::new(),
            pending_revocation: Assignment::new(),
            session_deadline_ms: None,
            revocation_deadline_ms: None,
        }
    }

    fn current_value(&self) -> CurrentMemberAssignmentValue {
        CurrentMemberAssignmentValue {
            member_epoch: self.member_epoch,
            previous_member_epoch: self.previous_member_epoch,
            state: self.state.to_i8(),
            assigned: self.assigned.clone(),
            pending_revocation: self.pending_revocation.clone(),
        }
    }
}

/// One KIP-848 consumer group. See the module docs.
#[derive(Debug)]
pub struct ConsumerGroup {
    pub(crate) id: String,
    pub(crate) group_epoch: i32,
    pub(crate) subscription_metadata: BTreeMap<String, (Uuid, i32)>,
    pub(crate) assignment_epoch: i32,
    pub(crate) members: BTreeMap<String, ConsumerMember>,
    pub(crate) target: BTreeMap<String, Assignment>,
    pub(crate) static_members: BTreeMap<String, String>,
    pub(crate) owners: BTreeMap<(Uuid, i32), String>,
    /// The members' subscribed regexes resolved against the topics (transient: resolved
    /// again after a load, and whenever the topics change).
    pub(crate) regexes: BTreeMap<String, ResolvedRegex>,
}

/// A subscribed topic regex and the topics it matched at a metadata version.
#[derive(Debug)]
pub(crate) struct ResolvedRegex {
    /// `None` if the pattern does not compile (refused when a member sends it, so only
    /// possible for records written by another implementation).
    pattern: Option<regex::Regex>,
    version: Option<u64>,
    topics: BTreeSet<String>,
}

/// Compiles a KIP-848 `SubscribedTopicRegex` as Kafka matches it (RE2/J's `matches()`: the
/// whole topic name must match). The `regex` crate runs in linear time, like RE2.
pub(crate) fn compile_regex(regex: &str) -> Result<regex::Regex, GroupError> {
    let pattern = expand_quotes(regex);
    let build = |p: &str| regex::RegexBuilder::new(p).size_limit(REGEX_SIZE_LIMIT).build();
    build(&format!("^(?:{pattern})$")).map_err(|_| {
        // Compiled again alone, so that the error is reported against the client's pattern.
        let reason = match build(&pattern) {
            Err(regex::Error::Syntax(s)) => s.lines().last().unwrap_or_default().trim().to_owned(),
            Err(other) => other.to_string(),
            Ok(_) => "it cannot be anchored".to_owned(),
        };
        GroupError::InvalidRegularExpression(format!("Invalid regular expression '{regex}': {reason}"))
    })
}

/// RE2 (and so Kafka's RE2/J) quotes literal text between `\Q` and `\E` (or the end); the
/// `regex` crate has no such syntax, so the quoted text is escaped instead.
fn expand_quotes(regex: &str) -> std::borrow::Cow<'_, str> {
    if !regex.contains("\\Q") {
        return std::borrow::Cow::Borrowed(regex);
    }
    let mut out = String::with_capacity(regex.len() + 16);
    let mut chars = regex.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Q') => {
                let mut literal = String::new();
                while let Some(x) = chars.next() {
                    if x == '\\' && chars.peek() == Some(&'E') {
                        chars.next();
                        break;
                    }
                    literal.push(x);
                }
                out.push_str(&regex::escape(&literal));
            }
            Some(next) => {
                out.push('\\');
                out.push(next);
            }
            None => out.push('\\'),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Most memory one compiled subscription regex may take (the `regex` crate's size limit).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

fn flatten(a: &Assignment) -> impl Iterator<Item = (Uuid, i32)> + '_ {
    a.iter().flat_map(|(t, ps)| ps.iter().map(move |p| (*t, *p)))
}

fn minus(a: &Assignment, b: &Assignment) -> Assignment {
    collect(flatten(a).filter(|(t, p)| !b.get(t).is_some_and(|s| s.contains(p))))
}

fn intersect(a: &Assignment, b: &Assignment) -> Assignment {
    collect(flatten(a).filter(|(t, p)| b.get(t).is_some_and(|s| s.contains(p))))
}

fn collect(it: impl Iterator<Item = (Uuid, i32)>) -> Assignment {
    let mut a = Assignment::new();
    for (t, p) in it {
        a.entry(t).or_default().insert(p);
    }
    a
}

impl ConsumerGroup {
    pub(crate) fn new(id: &str) -> Self {
        ConsumerGroup {
            id: id.to_owned(),
            group_epoch: 0,
            subscription_metadata: BTreeMap::new(),
            assignment_epoch: 0,
            members: BTreeMap::new(),
            target: BTreeMap::new(),
            static_members: BTreeMap::new(),
            owners: BTreeMap::new(),
            regexes: BTreeMap::new(),
        }
    }

    /// The group epoch.
    pub fn group_epoch(&self) -> i32 {
        self.group_epoch
    }
    /// The epoch of the current target assignment.
    pub fn assignment_epoch(&self) -> i32 {
        self.assignment_epoch
    }
    /// `(member epoch, assigned partitions)` of `member_id`.
    pub fn member(&self, member_id: &str) -> Option<(i32, &Assignment)> {
        self.members.get(member_id).map(|m| (m.member_epoch, &m.assigned))
    }

    /// Kafka's consumer group state name.
    pub fn state_name(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.group_epoch > self.assignment_epoch {
            "Assigning"
        } else if self
            .members
            .values()
            .any(|m| m.member_epoch != self.assignment_epoch || m.state != MemberState::Stable)
        {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// Every topic some member subscribes to: by name, or through its regex as last
    /// resolved ([`ConsumerGroup::resolve_regexes`]).
    pub(crate) fn subscribed_topic_names(&self) -> BTreeSet<String> {
        self.members.values().flat_map(|m| self.member_topics(m)).collect()
    }

    /// The topics `m` subscribes to, by name or by regex.
    fn member_topics<'a>(&'a self, m: &'a ConsumerMember) -> impl Iterator<Item = String> + 'a {
        let by_regex = m.meta.subscribed_topic_regex.as_ref().and_then(|r| self.regexes.get(r));
        m.meta.subscribed_topic_names.iter().chain(by_regex.into_iter().flat_map(|r| r.topics.iter())).cloned()
    }

    /// Resolves the members' regexes against the current topics, as Kafka's coordinator does
    /// (every topic whose whole name matches), again whenever the topics may have changed.
    /// A topic created or deleted thus moves the subscription at the next heartbeat.
    pub(crate) fn resolve_regexes(&mut self, topics: &dyn TopicMetadata) {
        let wanted: BTreeSet<&String> =
            self.members.values().filter_map(|m| m.meta.subscribed_topic_regex.as_ref()).collect();
        self.regexes.retain(|r, _| wanted.contains(r));
        let version = topics.version();
        for regex in wanted {
            let resolved = self.regexes.entry(regex.clone()).or_insert_with(|| ResolvedRegex {
                pattern: compile_regex(regex).ok(),
                version: None,
                topics: BTreeSet::new(),
            });
            if resolved.version == Some(version) {
                continue;
            }
            let mut matched = BTreeSet::new();
            if let Some(pattern) = &resolved.pattern {
                topics.for_each_topic(&mut |name| {
                    if pattern.is_match(name) && topics.visible(name) {
                        matched.insert(name.to_owned());
                    }
                });
            }
            if matched != resolved.topics {
                info!(group = %self.id, %regex, topics = matched.len(), "subscribed regex resolved");
            }
            resolved.topics = matched;
            resolved.version = Some(version);
        }
    }

    /// Applies one of this group's records (live and replay path alike).
    pub(crate) fn apply(&mut self, record: &GroupRecord) {
        match record {
            GroupRecord::ConsumerGroupMetadata { value: Some(v), .. } => {
                self.group_epoch = v.epoch;
                self.subscription_metadata = v.subscription_metadata.clone();
            }
            GroupRecord::ConsumerGroupMemberMetadata { member_id, value, .. } => match value {
                Some(v) => {
                    let m = self.members.entry(member_id.clone()).or_insert_with(|| ConsumerMember::new(member_id));
                    if let Some(old) = m.meta.instance_id.take() {
                        if self.static_members.get(&old) == Some(member_id) {
                            self.static_members.remove(&old);
                        }
                    }
                    m.meta = v.clone();
                    if let Some(i) = &v.instance_id {
                        self.static_members.insert(i.clone(), member_id.clone());
                    }
                }
                None => {
                    if let Some(m) = self.members.remove(member_id) {
                        self.release(&m);
                        if let Some(i) = &m.meta.instance_id {
                            if self.static_members.get(i) == Some(member_id) {
                                self.static_members.remove(i);
                            }
                        }
                    }
                }
            },
            GroupRecord::ConsumerGroupTargetAssignmentMetadata { value, .. } => {
                self.assignment_epoch = value.unwrap_or(0)
            }
            GroupRecord::ConsumerGroupTargetAssignmentMember { member_id, value, .. } => match value {
                Some(a) => {
                    self.target.insert(member_id.clone(), a.clone());
                }
                None => {
                    self.target.remove(member_id);
                }
            },
            GroupRecord::ConsumerGroupCurrentMemberAssignment { member_id, value, .. } => {
                let m = self.members.entry(member_id.clone()).or_insert_with(|| ConsumerMember::new(member_id)).clone();
                self.release(&m);
                let mut m = m;
                match value {
                    Some(v) => {
                        m.member_epoch = v.member_epoch;
                        m.previous_member_epoch = v.previous_member_epoch;
                        m.state = MemberState::from_i8(v.state);
                        m.assigned = v.assigned.clone();
                        m.pending_revocation = v.pending_revocation.clone();
                    }
                    None => {
                        m.member_epoch = 0;
                        m.previous_member_epoch = -1;
                        m.state = MemberState::Stable;
                        m.assigned.clear();
                        m.pending_revocation.clear();
                    }
                }
                for tp in flatten(&m.assigned).chain(flatten(&m.pending_revocation)) {
                    self.owners.insert(tp, member_id.clone());
                }
                self.members.insert(member_id.clone(), m);
            }
            _ => {}
        }
    }

    fn release(&mut self, m: &ConsumerMember) {
        for tp in flatten(&m.assigned).chain(flatten(&m.pending_revocation)) {
            if self.owners.get(&tp) == Some(&m.member_id) {
                self.owners.remove(&tp);
            }
        }
    }

    fn emit(&mut self, record: GroupRecord, out: &mut Out) {
        self.apply(&record);
        out.records.push(record);
    }

    fn emit_epoch(&mut self, epoch: i32, subscription_metadata: BTreeMap<String, (Uuid, i32)>, out: &mut Out) {
        let value = ConsumerGroupMetadataValue { epoch, subscription_metadata };
        self.emit(GroupRecord::ConsumerGroupMetadata { group: self.id.clone(), value: Some(value) }, out);
    }

    fn emit_current(&mut self, m: &ConsumerMember, out: &mut Out) {
        let rec = GroupRecord::ConsumerGroupCurrentMemberAssignment {
            group: self.id.clone(),
            member_id: m.member_id.clone(),
            value: Some(m.current_value()),
        };
        self.emit(rec, out);
    }

    /// Removes a member: current assignment, target and metadata tombstones, then a new
    /// group epoch.
    fn remove_member(&mut self, member_id: &str, out: &mut Out) {
        let g = self.id.clone();
        let m = member_id.to_owned();
        self.emit(
            GroupRecord::ConsumerGroupCurrentMemberAssignment { group: g.clone(), member_id: m.clone(), value: None },
            out,
        );
        self.emit(
            GroupRecord::ConsumerGroupTargetAssignmentMember { group: g.clone(), member_id: m.clone(), value: None },
            out,
        );
        self.emit(GroupRecord::ConsumerGroupMemberMetadata { group: g, member_id: m, value: None }, out);
        let meta = self.subscription_metadata.clone();
        self.emit_epoch(self.group_epoch.saturating_add(1), meta, out);
    }

    /// Records deleting the whole group (its offsets are the caller's business).
    pub(crate) fn tombstones(&self, out: &mut Out) {
        for m in self.members.keys() {
            let (g, m) = (self.id.clone(), m.clone());
            out.records.push(GroupRecord::ConsumerGroupCurrentMemberAssignment {
                group: g.clone(),
                member_id: m.clone(),
                value: None,
            });
            out.records.push(GroupRecord::ConsumerGroupTargetAssignmentMember {
                group: g.clone(),
                member_id: m.clone(),
                value: None,
            });
            out.records.push(GroupRecord::ConsumerGroupMemberMetadata { group: g, member_id: m, value: None });
        }
        out.records.push(GroupRecord::ConsumerGroupTargetAssignmentMetadata { group: self.id.clone(), value: None });
        out.records.push(GroupRecord::ConsumerGroupMetadata { group: self.id.clone(), value: None });
    }

    pub(crate) fn snapshot_records(&self, v: &mut Vec<GroupRecord>) {
        let g = self.id.clone();
        v.push(GroupRecord::ConsumerGroupMetadata {
            group: g.clone(),
            value: Some(ConsumerGroupMetadataValue {
                epoch: self.group_epoch,
                subscription_metadata: self.subscription_metadata.clone(),
            }),
        });
        v.push(GroupRecord::ConsumerGroupTargetAssignmentMetadata {
            group: g.clone(),
            value: Some(self.assignment_epoch),
        });
        for (id, m) in &self.members {
            v.push(GroupRecord::ConsumerGroupMemberMetadata {
                group: g.clone(),
                member_id: id.clone(),
                value: Some(m.meta.clone()),
            });
            v.push(GroupRecord::ConsumerGroupCurrentMemberAssignment {
                group: g.clone(),
                member_id: id.clone(),
                value: Some(m.current_value()),
            });
        }
        for (id, a) in &self.target {
            v.push(GroupRecord::ConsumerGroupTargetAssignmentMember {
                group: g.clone(),
                member_id: id.clone(),
                value: Some(a.clone()),
            });
        }
    }

    pub(crate) fn next_deadline(&self) -> Option<i64> {
        self.members
            .values()
            .flat_map(|m| [Some(m.session_deadline_ms.unwrap_or(i64::MIN)), m.revocation_deadline_ms])
            .flatten()
            .min()
    }

    /// Fences members whose session expired, or who did not revoke within their
    /// rebalance timeout.
    pub(crate) fn tick(&mut self, now: i64, cfg: &GroupConfig, out: &mut Out) {
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let Some(m) = self.members.get_mut(&id) else { continue };
            let Some(session) = m.session_deadline_ms else {
                m.session_deadline_ms = Some(now + i64::from(cfg.consumer_session_timeout_ms));
                continue;
            };
            let revocation_expired =
                m.state == MemberState::UnrevokedPartitions && m.revocation_deadline_ms.is_some_and(|d| d <= now);
            if session <= now || revocation_expired {
                info!(group = %self.id, member = %id, revocation_expired, "fencing consumer group member");
                self.remove_member(&id, out);
            }
        }
    }

    pub(crate) fn validate_offset_commit(&self, member_id: &str, epoch: i32) -> Result<(), GroupError> {
        if member_id.is_empty() && epoch < 0 {
            // Admin or non-member commit: only while nobody is in the group.
            return if self.members.is_empty() { Ok(()) } else { Err(GroupError::UnknownMemberId) };
        }
        let m = self.members.get(member_id).ok_or(GroupError::UnknownMemberId)?;
        if epoch > m.member_epoch {
            return Err(GroupError::FencedMemberEpoch);
        }
        if epoch < m.member_epoch {
            return Err(GroupError::StaleMemberEpoch);
        }
        Ok(())
    }

    pub(crate) fn validate_offset_fetch(&self, member_id: &str, epoch: i32) -> Result<(), GroupError> {
        let m = self.members.get(member_id).ok_or(GroupError::UnknownMemberId)?;
        if epoch != m.member_epoch {
            return Err(GroupError::StaleMemberEpoch);
        }
        Ok(())
    }

    /// Recomputes the target assignment for the group epoch.
    fn compute_target(&mut self, cfg: &GroupConfig, out: &mut Out) {
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(a) = &m.meta.server_assignor {
                *votes.entry(a.as_str()).or_default() += 1;
            }
        }
        let default = cfg.consumer_assignors.first().map(String::as_str).unwrap_or("uniform");
        let best = votes.values().copied().max();
        let name = votes.iter().find(|(_, v)| Some(**v) == best).map(|(n, _)| *n).unwrap_or(default).to_owned();
        let topics: BTreeMap<Uuid, i32> = self.subscription_metadata.values().copied().collect();
        let specs: BTreeMap<String, MemberSpec> = self
            .members
            .values()
            .map(|m| {
                let subscribed = self
                    .member_topics(m)
                    .filter_map(|t| self.subscription_metadata.get(&t).map(|(id, _)| *id))
                    .collect();
                (
                    m.member_id.clone(),
                    MemberSpec { subscribed, previous: self.target.get(&m.member_id).cloned().unwrap_or_default() },
                )
            })
            .collect();
        let target = assignor::assign(&name, &specs, &topics).unwrap_or_else(|| assignor::uniform(&specs, &topics));
        for (id, a) in target {
            if self.target.get(&id) != Some(&a) {
                self.emit(
                    GroupRecord::ConsumerGroupTargetAssignmentMember {
                        group: self.id.clone(),
                        member_id: id,
                        value: Some(a),
                    },
                    out,
                );
            }
        }
        self.emit(
            GroupRecord::ConsumerGroupTargetAssignmentMetadata {
                group: self.id.clone(),
                value: Some(self.group_epoch),
            },
            out,
        );
        info!(group = %self.id, epoch = self.group_epoch, assignor = %name, "target assignment computed");
    }

    /// Moves `m` towards its target; see the module docs. `owned` is what the member's
    /// heartbeat says it owns (`None`: not sent).
    fn reconcile(&self, m: &ConsumerMember, owned: Option<&Assignment>) -> ConsumerMember {
        let mut next = m.clone();
        match m.state {
            MemberState::UnrevokedPartitions => {
                let revoked = owned.is_some_and(|o| intersect(o, &m.pending_revocation).is_empty());
                if !revoked {
                    return next;
                }
                next.pending_revocation.clear();
                next.state = MemberState::Stable;
            }
            MemberState::Stable if m.member_epoch == self.assignment_epoch => return next,
            MemberState::Stable | MemberState::UnreleasedPartitions => {}
        }
        let empty = Assignment::new();
        let target = self.target.get(&m.member_id).unwrap_or(&empty);
        let keep = intersect(&next.assigned, target);
        let revoke = minus(&next.assigned, target);
        if !revoke.is_empty() {
            next.assigned = keep;
            next.pending_revocation = revoke;
            next.state = MemberState::UnrevokedPartitions;
            return next;
        }
        let wanted = minus(target, &keep);
        let free = |tp: &(Uuid, i32)| self.owners.get(tp).is_none_or(|o| *o == m.member_id);
        let unreleased = flatten(&wanted).any(|tp| !free(&tp));
        next.assigned = collect(flatten(&keep).chain(flatten(&wanted).filter(free)));
        next.pending_revocation.clear();
        if next.member_epoch != self.assignment_epoch {
            next.previous_member_epoch = next.member_epoch;
            next.member_epoch = self.assignment_epoch;
        }
        next.state = if unreleased { MemberState::UnreleasedPartitions } else { MemberState::Stable };
        next
    }
}

/// Shard-level replay of KIP-848 records.
pub(crate) fn replay(shard: &mut GroupCoordinatorShard, record: &GroupRecord) {
    let id = record.group_id().to_owned();
    if let GroupRecord::ConsumerGroupMetadata { value: None, .. } = record {
        if matches!(shard.groups.get(&id), Some(Group::Consumer(_))) {
            shard.groups.remove(&id);
        }
        return;
    }
    if record.is_tombstone() && !matches!(shard.groups.get(&id), Some(Group::Consumer(_))) {
        return;
    }
    if !matches!(shard.groups.get(&id), Some(Group::Consumer(_))) {
        shard.groups.insert(id.clone(), Group::Consumer(ConsumerGroup::new(&id)));
    }
    if let Some(Group::Consumer(g)) = shard.groups.get_mut(&id) {
        g.apply(record);
    }
}

fn to_assignment(
    tps: &[strata_protocol::kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions],
) -> Assignment {
    collect(tps.iter().flat_map(|t| t.partitions.iter().map(move |p| (t.topic_id, *p))))
}

fn hb_error(e: &GroupError) -> ConsumerGroupHeartbeatResponse {
    ConsumerGroupHeartbeatResponse::default().with_error_code(e.code()).with_error_message(Some(sb(&e.to_string())))
}

impl GroupCoordinatorShard {
    /// ConsumerGroupHeartbeat (v0–v1), the KIP-848 protocol: join (epoch 0), heartbeat
    /// (current epoch), leave (-1) or static temporary leave (-2). Always answers at once.
    /// `topics` resolves subscribed topic names to ids and partition counts.
    pub fn consumer_group_heartbeat(
        &mut self,
        now_ms: i64,
        ctx: &RequestContext,
        req: &ConsumerGroupHeartbeatRequest,
        topics: &dyn TopicMetadata,
    ) -> crate::CoordinatorResult<ConsumerGroupHeartbeatResponse> {
        let mut out = Out::default();
        let resp = match self.cg_heartbeat(now_ms, ctx, req, topics, &mut out) {
            Ok(r) => r,
            Err(e) => hb_error(&e),
        };
        out.finish(Some(resp))
    }

    fn cg_validate(&self, ctx: &RequestContext, req: &ConsumerGroupHeartbeatRequest) -> Result<(), GroupError> {
        let bad = |m: &str| Err(GroupError::InvalidRequest(m.to_owned()));
        if req.group_id.is_empty() {
            return bad("GroupId can't be empty.");
        }
        if req.member_epoch < LEAVE_GROUP_STATIC_MEMBER_EPOCH {
            return bad("MemberEpoch is invalid.");
        }
        if req.member_epoch != 0 && req.member_id.is_empty() || ctx.api_version >= 1 && req.member_id.is_empty() {
            return bad("MemberId can't be empty.");
        }
        // Checked before anything changes, so a bad pattern leaves no trace (Kafka rolls the
        // whole heartbeat back).
        if let Some(regex) = req.subscribed_topic_regex.as_deref().filter(|r| !r.is_empty()) {
            compile_regex(regex)?;
        }
        if req.member_epoch == 0 {
            if req.rebalance_timeout_ms <= 0 {
                return bad("RebalanceTimeoutMs must be provided in first request.");
            }
            // Kafka accepts an empty list of names in the first request.
            if req.subscribed_topic_names.is_none() && req.subscribed_topic_regex.is_none() {
                return bad("SubscribedTopicNames or SubscribedTopicRegex must be set in first request.");
            }
            if req.topic_partitions.as_ref().is_none_or(|t| !t.is_empty()) {
                return bad("TopicPartitions must be empty when (re-)joining.");
            }
        }
        if req.member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH && req.instance_id.is_none() {
            return bad("InstanceId can't be null with MemberEpoch -2.");
        }
        if let Some(a) = &req.server_assignor {
            if !self.config.consumer_assignors.iter().any(|c| c == a.as_str()) {
                return Err(GroupError::UnsupportedAssignor(a.as_str().to_owned()));
            }
        }
        Ok(())
    }

    fn cg_heartbeat(
        &mut self,
        now: i64,
        ctx: &RequestContext,
        req: &ConsumerGroupHeartbeatRequest,
        topics: &dyn TopicMetadata,
        out: &mut Out,
    ) -> Result<ConsumerGroupHeartbeatResponse, GroupError> {
        self.cg_validate(ctx, req)?;
        let gid = req.group_id.as_str().to_owned();
        let epoch = req.member_epoch;
        let cfg = self.config.clone();
        // Find or create the group.
        match self.groups.get(&gid) {
            Some(Group::Consumer(_)) => {}
            Some(Group::Classic(c)) if epoch == 0 && c.members.is_empty() && c.pending_members.is_empty() => {
                // An empty classic group becomes a consumer group; its offsets stay.
                if c.last_persisted.is_some() {
                    out.records.push(GroupRecord::GroupMetadata { group: gid.clone(), value: None });
                }
                self.groups.insert(gid.clone(), Group::Consumer(ConsumerGroup::new(&gid)));
            }
            Some(Group::Classic(_)) => return Err(GroupError::GroupIdNotFound),
            None if epoch == 0 => {
                self.groups.insert(gid.clone(), Group::Consumer(ConsumerGroup::new(&gid)));
            }
            None => return Err(GroupError::UnknownMemberId),
        }
        let Some(Group::Consumer(g)) = self.groups.get_mut(&gid) else {
            return Err(GroupError::CoordinatorNotAvailable);
        };
        let interval = cfg.consumer_heartbeat_interval_ms;
        let session = i64::from(cfg.consumer_session_timeout_ms);

        // ---- leaving ----
        if epoch < 0 {
            let member_id = match (req.member_id.is_empty(), req.instance_id.as_deref()) {
                (true, Some(i)) => g.static_members.get(i).cloned().ok_or(GroupError::UnknownMemberId)?,
                _ => req.member_id.as_str().to_owned(),
            };
            let m = g.members.get(&member_id).cloned().ok_or(GroupError::UnknownMemberId)?;
            if let Some(i) = req.instance_id.as_deref() {
                if m.meta.instance_id.as_deref() != Some(i) {
                    return Err(GroupError::FencedInstanceId);
                }
            }
            if epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH {
                // Temporary leave: keep the assignment for a restart with the same instance id.
                let mut next = m.clone();
                next.previous_member_epoch = m.member_epoch;
                next.member_epoch = LEAVE_GROUP_STATIC_MEMBER_EPOCH;
                g.emit_current(&next, out);
                if let Some(mm) = g.members.get_mut(&member_id) {
                    mm.session_deadline_ms = Some(now + session);
                }
            } else {
                info!(group = %gid, member = %member_id, "consumer group member left");
                g.remove_member(&member_id, out);
            }
            return Ok(ConsumerGroupHeartbeatResponse::default()
                .with_member_id(Some(sb(&member_id)))
                .with_member_epoch(epoch)
                .with_heartbeat_interval_ms(0));
        }

        // ---- joining / heartbeating ----
        let owned = req.topic_partitions.as_deref().map(to_assignment);
        let instance = req.instance_id.as_deref().map(str::to_owned);
        let mut member_id = req.member_id.as_str().to_owned();
        if member_id.is_empty() {
            member_id = self_ids_uuid(&mut self.ids);
        }
        let Some(Group::Consumer(g)) = self.groups.get_mut(&gid) else {
            return Err(GroupError::CoordinatorNotAvailable);
        };
        let mut bump = false;
        let mut joined = false;
        if epoch == 0 {
            let replaced = match instance.as_deref().and_then(|i| g.static_members.get(i)).cloned() {
                Some(old_id) if old_id != member_id => {
                    let old = g.members.get(&old_id).cloned().ok_or(GroupError::UnknownMemberId)?;
                    if old.member_epoch != LEAVE_GROUP_STATIC_MEMBER_EPOCH {
                        return Err(GroupError::UnreleasedInstanceId);
                    }
                    Some(old)
                }
                _ => None,
            };
            if let Some(old) = replaced {
                // A restarted static member takes over the old member's assignment,
                // without a new group epoch if its subscription is unchanged.
                let target = g.target.get(&old.member_id).cloned();
                let (gg, oid) = (gid.clone(), old.member_id.clone());
                g.emit(
                    GroupRecord::ConsumerGroupCurrentMemberAssignment {
                        group: gg.clone(),
                        member_id: oid.clone(),
                        value: None,
                    },
                    out,
                );
                g.emit(
                    GroupRecord::ConsumerGroupTargetAssignmentMember {
                        group: gg.clone(),
                        member_id: oid.clone(),
                        value: None,
                    },
                    out,
                );
                g.emit(
                    GroupRecord::ConsumerGroupMemberMetadata { group: gg.clone(), member_id: oid, value: None },
                    out,
                );
                let mut meta = old.meta.clone();
                meta.client_id = ctx.client_id.clone();
                meta.client_host = ctx.client_host.clone();
                g.emit(
                    GroupRecord::ConsumerGroupMemberMetadata {
                        group: gg.clone(),
                        member_id: member_id.clone(),
                        value: Some(meta),
                    },
                    out,
                );
                if let Some(t) = target {
                    g.emit(
                        GroupRecord::ConsumerGroupTargetAssignmentMember {
                            group: gg,
                            member_id: member_id.clone(),
                            value: Some(t),
                        },
                        out,
                    );
                }
                let mut next = old.clone();
                next.member_id = member_id.clone();
                next.member_epoch = old.previous_member_epoch.max(0);
                g.emit_current(&next, out);
                info!(group = %gid, old = %old.member_id, new = %member_id, "static member replaced");
            } else if let Some(m) = g.members.get(&member_id).cloned() {
                // A known member rejoining from scratch has lost its partitions.
                if !m.assigned.is_empty() || !m.pending_revocation.is_empty() || m.member_epoch != 0 {
                    let mut next = m.clone();
                    next.assigned.clear();
                    next.pending_revocation.clear();
                    next.state = MemberState::Stable;
                    next.previous_member_epoch = m.member_epoch;
                    next.member_epoch = 0;
                    g.emit_current(&next, out);
                }
            } else {
                if g.members.len() >= cfg.consumer_max_size {
                    return Err(GroupError::GroupMaxSizeReached);
                }
                joined = true;
                bump = true;
            }
        } else {
            let m = g.members.get(&member_id).ok_or(GroupError::UnknownMemberId)?;
            if epoch > m.member_epoch {
                return Err(GroupError::FencedMemberEpoch);
            }
            if epoch < m.member_epoch {
                // Tolerated only if the member just missed our last response.
                let ok = epoch == m.previous_member_epoch
                    && owned.as_ref().is_some_and(|o| minus(o, &m.assigned).is_empty());
                if !ok {
                    return Err(GroupError::FencedMemberEpoch);
                }
            }
        }

        // Subscription and identity.
        let old_meta = g.members.get(&member_id).map(|m| m.meta.clone());
        let mut meta = old_meta.clone().unwrap_or_else(|| ConsumerMember::new(&member_id).meta);
        meta.instance_id = instance.clone().or(meta.instance_id);
        if let Some(r) = &req.rack_id {
            meta.rack_id = Some(r.as_str().to_owned());
        }
        meta.client_id = ctx.client_id.clone();
        meta.client_host = ctx.client_host.clone();
        if let Some(names) = &req.subscribed_topic_names {
            let mut names: Vec<String> = names.iter().map(|n| n.as_str().to_owned()).collect();
            names.sort();
            names.dedup();
            meta.subscribed_topic_names = names;
        }
        if let Some(regex) = &req.subscribed_topic_regex {
            // An empty regex means "no regex" (librdkafka sends one beside its topic names);
            // a pattern was checked to compile by `cg_validate`.
            meta.subscribed_topic_regex = Some(regex.as_str().to_owned()).filter(|r| !r.is_empty());
        }
        if let Some(a) = &req.server_assignor {
            meta.server_assignor = Some(a.as_str().to_owned());
        }
        if req.rebalance_timeout_ms > 0 {
            meta.rebalance_timeout_ms = req.rebalance_timeout_ms;
        }
        if old_meta.as_ref() != Some(&meta) {
            if old_meta.as_ref().is_some_and(|o| {
                o.subscribed_topic_names != meta.subscribed_topic_names
                    || o.subscribed_topic_regex != meta.subscribed_topic_regex
                    || o.server_assignor != meta.server_assignor
            }) {
                bump = true;
            }
            g.emit(
                GroupRecord::ConsumerGroupMemberMetadata {
                    group: gid.clone(),
                    member_id: member_id.clone(),
                    value: Some(meta),
                },
                out,
            );
        }
        if joined {
            info!(group = %gid, member = %member_id, "consumer group member joined");
        }

        // Subscribed topics' metadata.
        g.resolve_regexes(topics);
        let mut sub_meta = BTreeMap::new();
        for name in g.subscribed_topic_names() {
            if let Some(p) = topics.partitions(&name) {
                sub_meta.insert(name, p);
            }
        }
        if bump || sub_meta != g.subscription_metadata {
            g.emit_epoch(g.group_epoch.saturating_add(1), sub_meta, out);
        }
        if g.group_epoch > g.assignment_epoch {
            g.compute_target(&cfg, out);
        }

        // Reconcile.
        let before = g.members.get(&member_id).cloned().ok_or(GroupError::UnknownMemberId)?;
        let next = g.reconcile(&before, owned.as_ref());
        let changed = next.member_epoch != before.member_epoch
            || next.previous_member_epoch != before.previous_member_epoch
            || next.state != before.state
            || next.assigned != before.assigned
            || next.pending_revocation != before.pending_revocation;
        if changed {
            g.emit_current(&next, out);
        }
        let m = g.members.get_mut(&member_id).ok_or(GroupError::UnknownMemberId)?;
        m.session_deadline_ms = Some(now + session);
        m.revocation_deadline_ms = if m.state == MemberState::UnrevokedPartitions {
            m.revocation_deadline_ms.or(Some(now + i64::from(m.meta.rebalance_timeout_ms)))
        } else {
            None
        };
        let send_assignment = epoch == 0 || changed || owned.as_ref().is_some_and(|o| *o != m.assigned);
        let mut resp = ConsumerGroupHeartbeatResponse::default()
            .with_error_code(codes::NONE)
            .with_member_id(Some(sb(&member_id)))
            .with_member_epoch(m.member_epoch)
            .with_heartbeat_interval_ms(interval);
        if send_assignment {
            let tps = m
                .assigned
                .iter()
                .map(|(t, ps)| {
                    HbTopicPartitions::default().with_topic_id(*t).with_partitions(ps.iter().copied().collect())
                })
                .collect();
            resp = resp.with_assignment(Some(HbAssignment::default().with_topic_partitions(tps)));
        }
        Ok(resp)
    }

    /// ConsumerGroupDescribe (v0–v1): epochs, assignor, and each member's subscription,
    /// current and target assignment. GROUP_ID_NOT_FOUND for unknown or classic groups.
    pub fn consumer_group_describe(
        &self,
        _now_ms: i64,
        _ctx: &RequestContext,
        req: &ConsumerGroupDescribeRequest,
        topics: &dyn TopicMetadata,
    ) -> crate::CoordinatorResult<ConsumerGroupDescribeResponse> {
        let describe = |a: &Assignment| {
            DescribeAssignment::default().with_topic_partitions(
                a.iter()
                    .map(|(t, ps)| {
                        let name = topics.by_id(*t).map(|(n, _)| n).unwrap_or_default();
                        DescribeTopicPartitions::default()
                            .with_topic_id(*t)
                            .with_topic_name(topic_name(&name))
                            .with_partitions(ps.iter().copied().collect())
                    })
                    .collect(),
            )
        };
        let mut groups = Vec::new();
        for gid in &req.group_ids {
            let d = DescribedGroup::default().with_group_id(gid.clone());
            groups.push(match self.groups.get(gid.as_str()) {
                Some(Group::Consumer(g)) => {
                    let assignor = g
                        .members
                        .values()
                        .find_map(|m| m.meta.server_assignor.clone())
                        .or_else(|| self.config.consumer_assignors.first().cloned())
                        .unwrap_or_default();
                    let empty = Assignment::new();
                    d.with_group_state(sb(g.state_name()))
                        .with_group_epoch(g.group_epoch)
                        .with_assignment_epoch(g.assignment_epoch)
                        .with_assignor_name(sb(&assignor))
                        .with_members(
                            g.members
                                .values()
                                .map(|m| {
                                    Member::default()
                                        .with_member_id(sb(&m.member_id))
                                        .with_instance_id(m.meta.instance_id.as_deref().map(sb))
                                        .with_rack_id(m.meta.rack_id.as_deref().map(sb))
                                        .with_member_epoch(m.member_epoch)
                                        .with_client_id(sb(&m.meta.client_id))
                                        .with_client_host(sb(&m.meta.client_host))
                                        .with_subscribed_topic_names(
                                            m.meta.subscribed_topic_names.iter().map(|t| topic_name(t)).collect(),
                                        )
                                        .with_subscribed_topic_regex(m.meta.subscribed_topic_regex.as_deref().map(sb))
                                        .with_assignment(describe(&m.assigned))
                                        .with_target_assignment(describe(g.target.get(&m.member_id).unwrap_or(&empty)))
                                })
                                .collect(),
                        )
                }
                Some(Group::Classic(_)) => d
                    .with_error_code(codes::GROUP_ID_NOT_FOUND)
                    .with_error_message(Some(sb("group is not a consumer group"))),
                None => {
                    d.with_error_code(codes::GROUP_ID_NOT_FOUND).with_error_message(Some(sb("group does not exist")))
                }
            });
        }
        Out::default().finish(Some(ConsumerGroupDescribeResponse::default().with_groups(groups)))
    }

    /// The KIP-848 group `id`, for inspection.
    pub fn consumer_group(&self, id: &str) -> Option<&ConsumerGroup> {
        match self.groups.get(id) {
            Some(Group::Consumer(g)) => Some(g),
            _ => None,
        }
    }
}

fn self_ids_uuid(ids: &mut crate::shard::IdSource) -> String {
    ids.next_uuid().to_string()
}
