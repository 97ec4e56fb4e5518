//! Classic groups: JoinGroup, SyncGroup, Heartbeat, LeaveGroup and DescribeGroups.
//!
//! # States
//! ```text
//! Empty --join--> PreparingRebalance --all joined / timeout--> CompletingRebalance
//!   ^                 ^        |                                  |  leader syncs
//!   |                 |        +--no members left--> Empty        v
//!   +-- last member --+---- join / leave / expiry / sync timeout - Stable
//! ```
//! Invariants: `leader` is a member whenever `members` is non-empty; `static_members`
//! maps each instance id to the one member that holds it; a member has a parked join
//! only in PreparingRebalance, a parked sync only in CompletingRebalance; the selected
//! protocol is supported by every member; `generation` only grows.
//!
//! Durable changes (records): a completed SyncGroup by the leader (Stable, with all
//! assignments), a static member replaced without a rebalance, and a rebalance that ends
//! with no members (Empty). Anything between two records is lost on failover, which is
//! safe: clients then see ILLEGAL_GENERATION or UNKNOWN_MEMBER_ID and rejoin.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use strata_protocol::kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use strata_protocol::kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use strata_protocol::kafka_protocol::messages::leave_group_response::MemberResponse;
use strata_protocol::kafka_protocol::messages::{
    DescribeGroupsRequest, DescribeGroupsResponse, GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest,
    JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, SyncGroupRequest, SyncGroupResponse, TopicName,
};
use strata_protocol::kafka_protocol::protocol::StrBytes;
use tracing::{debug, info};

use crate::error::{codes, GroupError};
use crate::record::{GroupMetadataValue, GroupRecord, MemberMetadataValue};
use crate::shard::{
    Group, GroupConfig, GroupCoordinatorShard, IdSource, Out, RequestContext, RequestToken, ResponseKind,
};

pub(crate) fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}
pub(crate) fn group_id(s: &str) -> GroupId {
    GroupId(sb(s))
}
pub(crate) fn topic_name(s: &str) -> TopicName {
    TopicName(sb(s))
}

/// Classic group states, named as Kafka names them on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassicState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl ClassicState {
    /// The state's name in DescribeGroups / ListGroups.
    pub fn name(self) -> &'static str {
        match self {
            ClassicState::Empty => "Empty",
            ClassicState::PreparingRebalance => "PreparingRebalance",
            ClassicState::CompletingRebalance => "CompletingRebalance",
            ClassicState::Stable => "Stable",
            ClassicState::Dead => "Dead",
        }
    }
}

/// A parked request: who to answer, and at which version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Waiter {
    pub token: RequestToken,
    pub version: i16,
}

#[derive(Debug, Clone)]
pub(crate) struct ClassicMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// Supported protocols in preference order.
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    // ---- transient ----
    pub join: Option<Waiter>,
    pub sync: Option<Waiter>,
    /// `None` after load: armed by the next tick.
    pub heartbeat_deadline_ms: Option<i64>,
    /// Joined but never received a JoinGroup response; expires on the new-member timeout.
    pub is_new: bool,
}

impl ClassicMember {
    fn metadata(&self, protocol: Option<&str>) -> Bytes {
        protocol.and_then(|p| self.protocols.iter().find(|(n, _)| n == p)).map(|(_, m)| m.clone()).unwrap_or_default()
    }
    fn matches(&self, protocols: &[(String, Bytes)]) -> bool {
        self.protocols == protocols
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct InitialDelay {
    /// Rebalance-timeout budget left for further extensions.
    pub remaining_ms: i64,
}

/// One classic group. See the module docs for its invariants.
#[derive(Debug)]
pub struct ClassicGroup {
    pub(crate) id: String,
    pub(crate) state: ClassicState,
    pub(crate) state_timestamp_ms: i64,
    pub(crate) protocol_type: Option<String>,
    pub(crate) protocol_name: Option<String>,
    pub(crate) generation: i32,
    pub(crate) leader: Option<String>,
    pub(crate) members: BTreeMap<String, ClassicMember>,
    pub(crate) static_members: BTreeMap<String, String>,
    /// KIP-394 members told MEMBER_ID_REQUIRED, with the deadline to rejoin by.
    pub(crate) pending_members: BTreeMap<String, i64>,
    /// Members of the current generation that have not synced yet.
    pub(crate) pending_sync: BTreeSet<String>,
    pub(crate) join_deadline_ms: Option<i64>,
    pub(crate) initial_delay: Option<InitialDelay>,
    pub(crate) new_member_added: bool,
    pub(crate) sync_deadline_ms: Option<i64>,
    /// The value of the last GroupMetadata record written or replayed.
    pub(crate) last_persisted: Option<GroupMetadataValue>,
}

struct JoinParams {
    member_id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    protocol_type: String,
    protocols: Vec<(String, Bytes)>,
    waiter: Waiter,
}

fn join_error(version: i16, member_id: &str, code: i16) -> JoinGroupResponse {
    JoinGroupResponse::default()
        .with_error_code(code)
        .with_generation_id(-1)
        .with_member_id(sb(member_id))
        .with_protocol_name(if version >= 7 { None } else { Some(StrBytes::default()) })
}

fn sync_response(version: i16, code: i16, g: Option<&ClassicGroup>, assignment: Bytes) -> SyncGroupResponse {
    let mut r = SyncGroupResponse::default().with_error_code(code).with_assignment(assignment);
    if version >= 5 && code == codes::NONE {
        if let Some(g) = g {
            r = r
                .with_protocol_type(g.protocol_type.as_deref().map(sb))
                .with_protocol_name(g.protocol_name.as_deref().map(sb));
        }
    }
    r
}

/// Moves the completion addressed to `token` (the caller's own parked request, completed
/// within the same call) into the direct response.
fn take_own<T>(out: &mut Out, token: RequestToken, pick: impl Fn(ResponseKind) -> Option<T>) -> Option<T> {
    let pos = out.completions.iter().position(|(t, _)| *t == token)?;
    let (_, kind) = out.completions.remove(pos);
    pick(kind)
}

impl ClassicGroup {
    pub(crate) fn new(id: &str, now_ms: i64) -> Self {
        ClassicGroup {
            id: id.to_owned(),
            state: ClassicState::Empty,
            state_timestamp_ms: now_ms,
            protocol_type: None,
            protocol_name: None,
            generation: 0,
            leader: None,
            members: BTreeMap::new(),
            static_members: BTreeMap::new(),
            pending_members: BTreeMap::new(),
            pending_sync: BTreeSet::new(),
            join_deadline_ms: None,
            initial_delay: None,
            new_member_added: false,
            sync_deadline_ms: None,
            last_persisted: None,
        }
    }

    /// Rebuilds a group from its last GroupMetadata record: Stable if it has members,
    /// else Empty. Member sessions are armed by the next tick.
    pub(crate) fn from_record(id: &str, v: &GroupMetadataValue) -> Self {
        let mut g = ClassicGroup::new(id, v.current_state_timestamp_ms);
        g.protocol_type = Some(v.protocol_type.clone()).filter(|p| !p.is_empty());
        g.protocol_name = v.protocol.clone();
        g.generation = v.generation;
        g.leader = v.leader.clone();
        for m in &v.members {
            if let Some(i) = &m.group_instance_id {
                g.static_members.insert(i.clone(), m.member_id.clone());
            }
            g.members.insert(
                m.member_id.clone(),
                ClassicMember {
                    member_id: m.member_id.clone(),
                    instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    protocols: vec![(v.protocol.clone().unwrap_or_default(), m.subscription.clone())],
                    assignment: m.assignment.clone(),
                    join: None,
                    sync: None,
                    heartbeat_deadline_ms: None,
                    is_new: false,
                },
            );
        }
        g.state = if g.members.is_empty() { ClassicState::Empty } else { ClassicState::Stable };
        g.last_persisted = Some(v.clone());
        g
    }

    pub(crate) fn to_record_value(&self) -> GroupMetadataValue {
        GroupMetadataValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol_name.clone(),
            leader: self.leader.clone(),
            current_state_timestamp_ms: self.state_timestamp_ms,
            members: self
                .members
                .values()
                .map(|m| MemberMetadataValue {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata(self.protocol_name.as_deref()),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    fn persist(&mut self, out: &mut Out) {
        let v = self.to_record_value();
        out.records.push(GroupRecord::GroupMetadata { group: self.id.clone(), value: Some(v.clone()) });
        self.last_persisted = Some(v);
    }

    /// The group's state.
    pub fn state(&self) -> ClassicState {
        self.state
    }
    /// The current generation.
    pub fn generation(&self) -> i32 {
        self.generation
    }
    /// The current leader's member id.
    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }
    /// Member ids, sorted.
    pub fn member_ids(&self) -> Vec<String> {
        self.members.keys().cloned().collect()
    }

    fn transition(&mut self, to: ClassicState, now_ms: i64) {
        debug!(group = %self.id, from = self.state.name(), to = to.name(), "classic group transition");
        self.state = to;
        self.state_timestamp_ms = now_ms;
    }

    fn max_rebalance_timeout(&self) -> i64 {
        self.members.values().map(|m| i64::from(m.rebalance_timeout_ms)).max().unwrap_or(0)
    }

    /// Protocols every member supports.
    fn candidate_protocols(&self) -> BTreeSet<String> {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            let names: BTreeSet<&str> = m.protocols.iter().map(|(n, _)| n.as_str()).collect();
            for n in names {
                *counts.entry(n).or_default() += 1;
            }
        }
        counts.into_iter().filter(|(_, c)| *c == self.members.len()).map(|(n, _)| n.to_owned()).collect()
    }

    fn supports_protocols(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            !protocol_type.is_empty() && !protocols.is_empty()
        } else {
            let candidates = self.candidate_protocols();
            self.protocol_type.as_deref() == Some(protocol_type)
                && protocols.iter().any(|(n, _)| candidates.contains(n))
        }
    }

    /// Kafka's vote: each member votes for its most preferred protocol that every member
    /// supports; the most votes wins (ties: the smallest name, for determinism).
    fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidate_protocols();
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some((n, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(n)) {
                *votes.entry(n.as_str()).or_default() += 1;
            }
        }
        let best = votes.values().copied().max()?;
        votes.into_iter().find(|(_, v)| *v == best).map(|(n, _)| n.to_owned())
    }

    pub(crate) fn validate_member(&self, member_id: &str, instance_id: Option<&str>) -> Result<(), GroupError> {
        if let Some(i) = instance_id {
            match self.static_members.get(i) {
                Some(holder) if holder != member_id => return Err(GroupError::FencedInstanceId),
                None if self.members.contains_key(member_id) => return Err(GroupError::FencedInstanceId),
                _ => {}
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(GroupError::UnknownMemberId);
        }
        Ok(())
    }

    fn all_members_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.values().all(|m| m.join.is_some())
    }

    fn member_list(&self) -> Vec<JoinGroupResponseMember> {
        self.members
            .values()
            .map(|m| {
                JoinGroupResponseMember::default()
                    .with_member_id(sb(&m.member_id))
                    .with_group_instance_id(m.instance_id.as_deref().map(sb))
                    .with_metadata(m.metadata(self.protocol_name.as_deref()))
            })
            .collect()
    }

    /// The JoinGroup response of the current generation for `member_id`.
    fn join_response(&self, member_id: &str, version: i16, skip_assignment: bool) -> JoinGroupResponse {
        let is_leader = self.leader.as_deref() == Some(member_id);
        JoinGroupResponse::default()
            .with_generation_id(self.generation)
            .with_protocol_type(self.protocol_type.as_deref().map(sb))
            .with_protocol_name(self.protocol_name.as_deref().map(sb))
            .with_leader(sb(self.leader.as_deref().unwrap_or_default()))
            .with_skip_assignment(skip_assignment && is_leader && version >= 9)
            .with_member_id(sb(member_id))
            .with_members(if is_leader { self.member_list() } else { Vec::new() })
    }

    fn join(
        &mut self,
        now: i64,
        cfg: &GroupConfig,
        ids: &mut IdSource,
        p: JoinParams,
        out: &mut Out,
    ) -> Result<Option<JoinGroupResponse>, GroupError> {
        if p.member_id.is_empty() {
            self.join_new(now, cfg, ids, p, out)
        } else {
            self.join_existing(now, cfg, p, out)
        }
    }

    fn join_new(
        &mut self,
        now: i64,
        cfg: &GroupConfig,
        ids: &mut IdSource,
        p: JoinParams,
        out: &mut Out,
    ) -> Result<Option<JoinGroupResponse>, GroupError> {
        if !self.supports_protocols(&p.protocol_type, &p.protocols) {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        if let Some(instance) = p.instance_id.clone() {
            let new_id = format!("{instance}-{}", ids.next_uuid());
            if let Some(old) = self.static_members.get(&instance).cloned() {
                return Ok(self.replace_static_member(now, cfg, &old, new_id, p, out));
            }
            if self.members.len() >= cfg.max_group_size {
                return Err(GroupError::GroupMaxSizeReached);
            }
            self.add_member_and_rebalance(now, cfg, new_id, p, out);
            return Ok(None);
        }
        if self.members.len() + self.pending_members.len() >= cfg.max_group_size {
            return Err(GroupError::GroupMaxSizeReached);
        }
        let new_id = format!("{}-{}", p.client_id, ids.next_uuid());
        if p.waiter.version >= 4 {
            // KIP-394: the member must come back with this id; until then it holds up the
            // rebalance, for at most its session timeout.
            self.pending_members.insert(new_id.clone(), now + i64::from(p.session_timeout_ms));
            return Ok(Some(join_error(p.waiter.version, &new_id, GroupError::MemberIdRequired.code())));
        }
        self.add_member_and_rebalance(now, cfg, new_id, p, out);
        Ok(None)
    }

    fn join_existing(
        &mut self,
        now: i64,
        cfg: &GroupConfig,
        p: JoinParams,
        out: &mut Out,
    ) -> Result<Option<JoinGroupResponse>, GroupError> {
        if self.pending_members.contains_key(&p.member_id) {
            if !self.supports_protocols(&p.protocol_type, &p.protocols) {
                return Err(GroupError::InconsistentGroupProtocol);
            }
            self.pending_members.remove(&p.member_id);
            let id = p.member_id.clone();
            self.add_member_and_rebalance(now, cfg, id, p, out);
            return Ok(None);
        }
        self.validate_member(&p.member_id, p.instance_id.as_deref())?;
        if !self.supports_protocols(&p.protocol_type, &p.protocols) {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        let (is_leader, matches) = match self.members.get(&p.member_id) {
            Some(m) => (self.leader.as_deref() == Some(m.member_id.as_str()), m.matches(&p.protocols)),
            None => return Err(GroupError::UnknownMemberId),
        };
        match self.state {
            ClassicState::Empty | ClassicState::Dead => Err(GroupError::UnknownMemberId),
            ClassicState::PreparingRebalance => {
                self.update_member_and_rebalance(now, cfg, p, out);
                Ok(None)
            }
            ClassicState::CompletingRebalance if matches => {
                // The member missed the JoinGroup response of this generation: resend it.
                Ok(Some(self.join_response(&p.member_id, p.waiter.version, false)))
            }
            ClassicState::Stable if matches && !is_leader => {
                // Nothing changed for a follower: let it sync the current generation.
                Ok(Some(self.join_response(&p.member_id, p.waiter.version, false)))
            }
            ClassicState::CompletingRebalance | ClassicState::Stable => {
                self.update_member_and_rebalance(now, cfg, p, out);
                Ok(None)
            }
        }
    }

    fn add_member_and_rebalance(
        &mut self,
        now: i64,
        cfg: &GroupConfig,
        member_id: String,
        p: JoinParams,
        out: &mut Out,
    ) {
        if self.members.is_empty() {
            self.protocol_type = Some(p.protocol_type.clone());
        }
        if self.leader.is_none() {
            self.leader = Some(member_id.clone());
        }
        if let Some(i) = &p.instance_id {
            self.static_members.insert(i.clone(), member_id.clone());
        }
        info!(group = %self.id, member = %member_id, "member joined");
        self.members.insert(
            member_id.clone(),
            ClassicMember {
                member_id,
                instance_id: p.instance_id,
                client_id: p.client_id,
                client_host: p.client_host,
                rebalance_timeout_ms: p.rebalance_timeout_ms,
                session_timeout_ms: p.session_timeout_ms,
                protocols: p.protocols,
                assignment: Bytes::new(),
                join: Some(p.waiter),
                sync: None,
                // A new member cannot heartbeat before its first JoinGroup response; a
                // client that gave up retries with a new join, so bound how long it waits.
                heartbeat_deadline_ms: Some(now + cfg.new_member_join_timeout_ms),
                is_new: true,
            },
        );
        if self.state == ClassicState::PreparingRebalance {
            self.new_member_added = true;
            self.maybe_complete_join(now, cfg, out);
        } else {
            self.prepare_rebalance(now, cfg, out);
        }
    }

    fn update_member_and_rebalance(&mut self, now: i64, cfg: &GroupConfig, p: JoinParams, out: &mut Out) {
        if let Some(m) = self.members.get_mut(&p.member_id) {
            if let Some(old) = m.join.take() {
                // A second join from the same member supersedes the first.
                let r = join_error(old.version, &m.member_id, codes::REBALANCE_IN_PROGRESS);
                out.completions.push((old.token, ResponseKind::JoinGroup(r)));
            }
            m.protocols = p.protocols;
            m.rebalance_timeout_ms = p.rebalance_timeout_ms;
            m.session_timeout_ms = p.session_timeout_ms;
            m.client_id = p.client_id;
            m.client_host = p.client_host;
            m.join = Some(p.waiter);
        }
        if self.state == ClassicState::PreparingRebalance {
            self.maybe_complete_join(now, cfg, out);
        } else {
            self.prepare_rebalance(now, cfg, out);
        }
    }

    /// Static member restarted with an unknown member id: it takes over the old member's
    /// place under a new id. The old id is fenced (its parked requests fail with
    /// FENCED_INSTANCE_ID). In Stable, if the selected protocol stays the same, no
    /// rebalance happens: the replacement is persisted and the member is answered with the
    /// current generation (the leader gets `skip_assignment`, v9+).
    fn replace_static_member(
        &mut self,
        now: i64,
        cfg: &GroupConfig,
        old_id: &str,
        new_id: String,
        p: JoinParams,
        out: &mut Out,
    ) -> Option<JoinGroupResponse> {
        let mut m = self.members.remove(old_id)?;
        if let Some(w) = m.join.take() {
            out.completions
                .push((w.token, ResponseKind::JoinGroup(join_error(w.version, old_id, codes::FENCED_INSTANCE_ID))));
        }
        if let Some(w) = m.sync.take() {
            out.completions.push((
                w.token,
                ResponseKind::SyncGroup(sync_response(w.version, codes::FENCED_INSTANCE_ID, None, Bytes::new())),
            ));
        }
        if self.pending_sync.remove(old_id) {
            self.pending_sync.insert(new_id.clone());
        }
        let leader_before = self.leader.clone();
        if self.leader.as_deref() == Some(old_id) {
            self.leader = Some(new_id.clone());
        }
        if let Some(i) = &p.instance_id {
            self.static_members.insert(i.clone(), new_id.clone());
        }
        info!(group = %self.id, old = %old_id, new = %new_id, "static member replaced");
        m.member_id = new_id.clone();
        m.client_id = p.client_id;
        m.client_host = p.client_host;
        m.protocols = p.protocols;
        m.rebalance_timeout_ms = p.rebalance_timeout_ms;
        m.session_timeout_ms = p.session_timeout_ms;
        m.heartbeat_deadline_ms = Some(now + i64::from(p.session_timeout_ms));
        m.is_new = false;
        m.join = Some(p.waiter);
        self.members.insert(new_id.clone(), m);
        match self.state {
            ClassicState::Stable if self.select_protocol() == self.protocol_name => {
                if let Some(m) = self.members.get_mut(&new_id) {
                    m.join = None;
                }
                self.persist(out);
                if p.waiter.version >= 9 {
                    // KIP-814: the leader is told it leads, with the members, and to skip
                    // the assignment.
                    Some(self.join_response(&new_id, p.waiter.version, true))
                } else {
                    // Before v9 a client told it leads runs the assignor, and a Stable group
                    // would ignore the assignment it then syncs. So, as Kafka does, every
                    // replaced member is answered with the leader id from before the
                    // replacement and no members: the old leader's new incarnation acts as
                    // a follower and keeps its stored assignment.
                    Some(
                        self.join_response(&new_id, p.waiter.version, false)
                            .with_leader(sb(leader_before.as_deref().unwrap_or_default()))
                            .with_members(Vec::new()),
                    )
                }
            }
            ClassicState::PreparingRebalance => {
                self.maybe_complete_join(now, cfg, out);
                None
            }
            _ => {
                self.prepare_rebalance(now, cfg, out);
                None
            }
        }
    }

    fn prepare_rebalance(&mut self, now: i64, cfg: &GroupConfig, out: &mut Out) {
        if self.state == ClassicState::CompletingRebalance {
            for m in self.members.values_mut() {
                m.assignment = Bytes::new();
                if let Some(w) = m.sync.take() {
                    let r = sync_response(w.version, codes::REBALANCE_IN_PROGRESS, None, Bytes::new());
                    out.completions.push((w.token, ResponseKind::SyncGroup(r)));
                }
            }
        }
        self.pending_sync.clear();
        self.sync_deadline_ms = None;
        let rebalance_timeout = self.max_rebalance_timeout();
        if self.state == ClassicState::Empty && cfg.initial_rebalance_delay_ms > 0 {
            let delay = cfg.initial_rebalance_delay_ms;
            self.initial_delay = Some(InitialDelay { remaining_ms: (rebalance_timeout - delay).max(0) });
            self.new_member_added = false;
            self.join_deadline_ms = Some(now + delay);
        } else {
            self.initial_delay = None;
            self.join_deadline_ms = Some(now + rebalance_timeout);
        }
        self.transition(ClassicState::PreparingRebalance, now);
        self.maybe_complete_join(now, cfg, out);
    }

    /// Completes the join phase early when every known member (and no pending KIP-394
    /// member) has rejoined — but never during the initial rebalance delay.
    fn maybe_complete_join(&mut self, now: i64, cfg: &GroupConfig, out: &mut Out) {
        if self.state == ClassicState::PreparingRebalance && self.initial_delay.is_none() && self.all_members_joined() {
            self.complete_join(now, cfg, out);
        }
    }

    fn complete_join(&mut self, now: i64, _cfg: &GroupConfig, out: &mut Out) {
        // Dynamic members that did not rejoin in time are dropped; static members stay
        // (with their last metadata) so that a restart does not cost them their place.
        let laggards: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join.is_none() && m.instance_id.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for id in laggards {
            self.remove_member_silently(&id, out);
        }
        self.join_deadline_ms = None;
        self.initial_delay = None;
        self.new_member_added = false;
        self.generation = self.generation.saturating_add(1);
        if self.members.is_empty() {
            self.protocol_name = None;
            self.leader = None;
            self.transition(ClassicState::Empty, now);
            info!(group = %self.id, generation = self.generation, "group is now empty");
            self.persist(out);
            return;
        }
        let leader_joined = self.leader.as_ref().and_then(|l| self.members.get(l)).is_some_and(|m| m.join.is_some());
        if !leader_joined {
            self.leader = self
                .members
                .values()
                .find(|m| m.join.is_some())
                .or_else(|| self.members.values().next())
                .map(|m| m.member_id.clone());
        }
        self.protocol_name = self.select_protocol();
        self.transition(ClassicState::CompletingRebalance, now);
        self.pending_sync = self.members.keys().cloned().collect();
        self.sync_deadline_ms = Some(now + self.max_rebalance_timeout());
        info!(group = %self.id, generation = self.generation, protocol = ?self.protocol_name, "join phase complete");
        let waiting: Vec<(String, Waiter)> =
            self.members.values().filter_map(|m| m.join.map(|w| (m.member_id.clone(), w))).collect();
        for (id, w) in waiting {
            let r = self.join_response(&id, w.version, false);
            if let Some(m) = self.members.get_mut(&id) {
                m.join = None;
                m.is_new = false;
                m.heartbeat_deadline_ms = Some(now + i64::from(m.session_timeout_ms));
            }
            out.completions.push((w.token, ResponseKind::JoinGroup(r)));
        }
    }

    /// Removes a member and fails its parked requests with UNKNOWN_MEMBER_ID, without
    /// reacting to the removal.
    fn remove_member_silently(&mut self, id: &str, out: &mut Out) {
        let Some(m) = self.members.remove(id) else { return };
        if let Some(w) = m.join {
            out.completions
                .push((w.token, ResponseKind::JoinGroup(join_error(w.version, id, codes::UNKNOWN_MEMBER_ID))));
        }
        if let Some(w) = m.sync {
            out.completions.push((
                w.token,
                ResponseKind::SyncGroup(sync_response(w.version, codes::UNKNOWN_MEMBER_ID, None, Bytes::new())),
            ));
        }
        if let Some(i) = &m.instance_id {
            if self.static_members.get(i).map(String::as_str) == Some(id) {
                self.static_members.remove(i);
            }
        }
        self.pending_sync.remove(id);
        if self.leader.as_deref() == Some(id) {
            self.leader = self
                .members
                .values()
                .find(|m| m.join.is_some())
                .or_else(|| self.members.values().next())
                .map(|m| m.member_id.clone());
        }
    }

    /// Removes a member (leave, session expiry) and rebalances what is left.
    fn remove_member(&mut self, id: &str, now: i64, cfg: &GroupConfig, out: &mut Out) {
        self.remove_member_silently(id, out);
        match self.state {
            ClassicState::Stable | ClassicState::CompletingRebalance => self.prepare_rebalance(now, cfg, out),
            ClassicState::PreparingRebalance => self.maybe_complete_join(now, cfg, out),
            ClassicState::Empty | ClassicState::Dead => {}
        }
    }

    pub(crate) fn next_deadline(&self) -> Option<i64> {
        let members = self.members.values().map(|m| m.heartbeat_deadline_ms.unwrap_or(i64::MIN));
        members
            .chain(self.pending_members.values().copied())
            .chain(self.join_deadline_ms)
            .chain(self.sync_deadline_ms)
            .min()
    }

    pub(crate) fn tick(&mut self, now: i64, cfg: &GroupConfig, out: &mut Out) {
        let expired: Vec<String> =
            self.pending_members.iter().filter(|(_, d)| **d <= now).map(|(id, _)| id.clone()).collect();
        for id in expired {
            debug!(group = %self.id, member = %id, "pending member expired");
            self.pending_members.remove(&id);
            self.maybe_complete_join(now, cfg, out);
        }
        let due: Vec<String> = self
            .members
            .values()
            .filter(|m| m.heartbeat_deadline_ms.is_none_or(|d| d <= now))
            .map(|m| m.member_id.clone())
            .collect();
        for id in due {
            let Some(m) = self.members.get_mut(&id) else { continue };
            let session = now + i64::from(m.session_timeout_ms);
            match m.heartbeat_deadline_ms {
                None => m.heartbeat_deadline_ms = Some(session),
                // A member waiting in a rebalance counts as alive, unless it never got
                // a JoinGroup response at all.
                Some(_) if !m.is_new && (m.join.is_some() || m.sync.is_some()) => {
                    m.heartbeat_deadline_ms = Some(session)
                }
                Some(_) => {
                    info!(group = %self.id, member = %id, "member session expired");
                    self.remove_member(&id, now, cfg, out);
                }
            }
        }
        if self.state == ClassicState::PreparingRebalance && self.join_deadline_ms.is_some_and(|d| d <= now) {
            match self.initial_delay {
                Some(d) if self.new_member_added && d.remaining_ms > 0 => {
                    let delay = cfg.initial_rebalance_delay_ms.min(d.remaining_ms);
                    self.initial_delay = Some(InitialDelay { remaining_ms: d.remaining_ms - delay });
                    self.new_member_added = false;
                    self.join_deadline_ms = Some(now + delay);
                }
                _ => self.complete_join(now, cfg, out),
            }
        }
        if matches!(self.state, ClassicState::CompletingRebalance | ClassicState::Stable)
            && self.sync_deadline_ms.is_some_and(|d| d <= now)
        {
            self.sync_deadline_ms = None;
            let laggards: Vec<String> = std::mem::take(&mut self.pending_sync).into_iter().collect();
            if !laggards.is_empty() {
                for id in &laggards {
                    info!(group = %self.id, member = %id, "member did not sync in time");
                    self.remove_member_silently(id, out);
                }
                self.prepare_rebalance(now, cfg, out);
            }
        }
    }

    pub(crate) fn parked_tokens(&self, v: &mut Vec<RequestToken>) {
        for m in self.members.values() {
            v.extend(m.join.map(|w| w.token));
            v.extend(m.sync.map(|w| w.token));
        }
    }

    /// Topics the members subscribe to, parsed from their `consumer` protocol metadata.
    /// `None` when unknown (another protocol type, or metadata that does not parse):
    /// callers must then assume every topic is in use.
    pub(crate) fn subscribed_topics(&self) -> Option<BTreeSet<String>> {
        if self.protocol_type.as_deref() != Some("consumer") {
            return None;
        }
        let mut topics = BTreeSet::new();
        for m in self.members.values() {
            topics.extend(parse_consumer_subscription(&m.metadata(self.protocol_name.as_deref()))?);
        }
        Some(topics)
    }
}

/// Topics of a ConsumerProtocolSubscription (any version): `i16 version`, then an array
/// (`i32` count) of `i16`-length strings. Later fields are ignored.
pub(crate) fn parse_consumer_subscription(b: &[u8]) -> Option<Vec<String>> {
    let rd = |b: &[u8], at: usize, n: usize| b.get(at..at.checked_add(n)?).map(<[u8]>::to_vec);
    let count = i32::from_be_bytes(rd(b, 2, 4)?.try_into().ok()?);
    let mut at = 6;
    let mut topics = Vec::new();
    for _ in 0..usize::try_from(count).ok()? {
        let len = usize::try_from(i16::from_be_bytes(rd(b, at, 2)?.try_into().ok()?)).ok()?;
        topics.push(String::from_utf8(rd(b, at + 2, len)?).ok()?);
        at += 2 + len;
    }
    Some(topics)
}

impl GroupCoordinatorShard {
    fn classic_mut(&mut self, id: &str) -> Result<&mut ClassicGroup, GroupError> {
        match self.groups.get_mut(id) {
            Some(Group::Classic(g)) => Ok(g),
            _ => Err(GroupError::UnknownMemberId),
        }
    }

    /// Drops a classic group that exists only in memory (never persisted, no members,
    /// nothing pending, no offsets), e.g. after a rejected first join.
    pub(crate) fn gc_transient(&mut self, id: &str) {
        if let Some(Group::Classic(g)) = self.groups.get(id) {
            if g.last_persisted.is_none()
                && g.members.is_empty()
                && g.pending_members.is_empty()
                && !self.offsets.has_offsets(id)
            {
                self.groups.remove(id);
            }
        }
    }

    /// JoinGroup (v0–v9).
    ///
    /// Completes immediately with an error, with MEMBER_ID_REQUIRED (v4+ member without
    /// id), or with the current generation (a follower rejoining unchanged, a static
    /// member replaced in Stable). Otherwise parks under `ctx.token` until the join phase
    /// completes: all known members rejoined (and no KIP-394 member pending), the rebalance
    /// timeout, or the end of the initial rebalance delay of a group that was empty.
    pub fn join_group(
        &mut self,
        now_ms: i64,
        ctx: &RequestContext,
        req: &JoinGroupRequest,
    ) -> crate::CoordinatorResult<JoinGroupResponse> {
        let mut out = Out::default();
        let gid = req.group_id.as_str().to_owned();
        let resp = match self.join_inner(now_ms, ctx, req, &mut out) {
            Ok(Some(r)) => Some(r),
            Ok(None) => take_own(&mut out, ctx.token, |k| match k {
                ResponseKind::JoinGroup(r) => Some(r),
                ResponseKind::SyncGroup(_) => None,
            }),
            Err(e) => Some(join_error(ctx.api_version, req.member_id.as_str(), e.code())),
        };
        self.gc_transient(&gid);
        out.finish(resp)
    }

    fn join_inner(
        &mut self,
        now: i64,
        ctx: &RequestContext,
        req: &JoinGroupRequest,
        out: &mut Out,
    ) -> Result<Option<JoinGroupResponse>, GroupError> {
        let gid = req.group_id.as_str();
        if gid.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        let session = req.session_timeout_ms;
        if session < self.config.min_session_timeout_ms || session > self.config.max_session_timeout_ms {
            return Err(GroupError::InvalidSessionTimeout(session));
        }
        let protocols: Vec<(String, Bytes)> =
            req.protocols.iter().map(|p| (p.name.as_str().to_owned(), p.metadata.clone())).collect();
        if req.protocol_type.is_empty() || protocols.is_empty() {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        let member_id = req.member_id.as_str();
        match self.groups.get(gid) {
            None if !member_id.is_empty() => return Err(GroupError::UnknownMemberId),
            None => {
                self.groups.insert(gid.to_owned(), Group::Classic(ClassicGroup::new(gid, now)));
            }
            Some(Group::Consumer(cg)) => {
                if !cg.members.is_empty() {
                    return Err(GroupError::InconsistentGroupProtocol);
                }
                // An empty KIP-848 group may turn classic; its offsets stay.
                cg.tombstones(out);
                self.groups.insert(gid.to_owned(), Group::Classic(ClassicGroup::new(gid, now)));
            }
            Some(Group::Classic(_)) => {}
        }
        let p = JoinParams {
            member_id: member_id.to_owned(),
            instance_id: req.group_instance_id.as_deref().map(str::to_owned),
            client_id: ctx.client_id.clone(),
            client_host: ctx.client_host.clone(),
            session_timeout_ms: session,
            // v0 has no rebalance timeout: it is the session timeout.
            rebalance_timeout_ms: if req.rebalance_timeout_ms > 0 { req.rebalance_timeout_ms } else { session },
            protocol_type: req.protocol_type.as_str().to_owned(),
            protocols,
            waiter: Waiter { token: ctx.token, version: ctx.api_version },
        };
        let cfg = self.config.clone();
        let Some(Group::Classic(g)) = self.groups.get_mut(gid) else {
            return Err(GroupError::CoordinatorNotAvailable);
        };
        g.join(now, &cfg, &mut self.ids, p, out)
    }

    /// SyncGroup (v0–v5).
    ///
    /// The leader's sync (CompletingRebalance) stores every member's assignment exactly as
    /// sent (members it left out get empty bytes), writes the group record, moves the group
    /// to Stable and completes all parked syncs. A follower's sync parks until then, and
    /// fails with REBALANCE_IN_PROGRESS if a new rebalance starts first. In Stable, a sync
    /// returns the member's current assignment at once.
    pub fn sync_group(
        &mut self,
        now_ms: i64,
        ctx: &RequestContext,
        req: &SyncGroupRequest,
    ) -> crate::CoordinatorResult<SyncGroupResponse> {
        let mut out = Out::default();
        let resp = match self.sync_inner(now_ms, ctx, req, &mut out) {
            Ok(Some(r)) => Some(r),
            Ok(None) => take_own(&mut out, ctx.token, |k| match k {
                ResponseKind::SyncGroup(r) => Some(r),
                ResponseKind::JoinGroup(_) => None,
            }),
            Err(e) => Some(sync_response(ctx.api_version, e.code(), None, Bytes::new())),
        };
        out.finish(resp)
    }

    fn sync_inner(
        &mut self,
        now: i64,
        ctx: &RequestContext,
        req: &SyncGroupRequest,
        out: &mut Out,
    ) -> Result<Option<SyncGroupResponse>, GroupError> {
        let g = self.classic_mut(req.group_id.as_str())?;
        let member_id = req.member_id.as_str();
        g.validate_member(member_id, req.group_instance_id.as_deref())?;
        if req.generation_id != g.generation {
            return Err(GroupError::IllegalGeneration);
        }
        if req.protocol_type.as_ref().is_some_and(|t| Some(t.as_str()) != g.protocol_type.as_deref())
            || req.protocol_name.as_ref().is_some_and(|n| Some(n.as_str()) != g.protocol_name.as_deref())
        {
            return Err(GroupError::InconsistentGroupProtocol);
        }
        let waiter = Waiter { token: ctx.token, version: ctx.api_version };
        match g.state {
            ClassicState::Empty | ClassicState::Dead => Err(GroupError::UnknownMemberId),
            ClassicState::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            ClassicState::Stable => {
                g.pending_sync.remove(member_id);
                if g.pending_sync.is_empty() {
                    g.sync_deadline_ms = None;
                }
                let m = g.members.get_mut(member_id).ok_or(GroupError::UnknownMemberId)?;
                m.heartbeat_deadline_ms = Some(now + i64::from(m.session_timeout_ms));
                let a = m.assignment.clone();
                Ok(Some(sync_response(ctx.api_version, codes::NONE, Some(g), a)))
            }
            ClassicState::CompletingRebalance => {
                let m = g.members.get_mut(member_id).ok_or(GroupError::UnknownMemberId)?;
                if let Some(old) = m.sync.replace(waiter) {
                    let r = sync_response(old.version, codes::REBALANCE_IN_PROGRESS, None, Bytes::new());
                    out.completions.push((old.token, ResponseKind::SyncGroup(r)));
                }
                m.heartbeat_deadline_ms = Some(now + i64::from(m.session_timeout_ms));
                g.pending_sync.remove(member_id);
                if g.leader.as_deref() == Some(member_id) {
                    let mut given: BTreeMap<&str, &Bytes> = BTreeMap::new();
                    for a in &req.assignments {
                        given.insert(a.member_id.as_str(), &a.assignment);
                    }
                    for m in g.members.values_mut() {
                        m.assignment = given.get(m.member_id.as_str()).map(|b| (*b).clone()).unwrap_or_default();
                    }
                    if g.pending_sync.is_empty() {
                        g.sync_deadline_ms = None;
                    }
                    g.transition(ClassicState::Stable, now);
                    g.persist(out);
                    info!(group = %g.id, generation = g.generation, "group is stable");
                    let parked: Vec<(Waiter, Bytes)> = g
                        .members
                        .values_mut()
                        .filter_map(|m| m.sync.take().map(|w| (w, m.assignment.clone())))
                        .collect();
                    for (w, a) in parked {
                        let r = sync_response(w.version, codes::NONE, Some(g), a);
                        out.completions.push((w.token, ResponseKind::SyncGroup(r)));
                    }
                }
                Ok(None)
            }
        }
    }

    /// Heartbeat (v0–v4): keeps a classic member's session alive. REBALANCE_IN_PROGRESS
    /// tells a member of the current generation to rejoin.
    pub fn heartbeat(
        &mut self,
        now_ms: i64,
        _ctx: &RequestContext,
        req: &HeartbeatRequest,
    ) -> crate::CoordinatorResult<HeartbeatResponse> {
        let code = match self.heartbeat_inner(now_ms, req) {
            Ok(()) => codes::NONE,
            Err(e) => e.code(),
        };
        Out::default().finish(Some(HeartbeatResponse::default().with_error_code(code)))
    }

    fn heartbeat_inner(&mut self, now: i64, req: &HeartbeatRequest) -> Result<(), GroupError> {
        let g = self.classic_mut(req.group_id.as_str())?;
        let member_id = req.member_id.as_str();
        g.validate_member(member_id, req.group_instance_id.as_deref())?;
        if req.generation_id != g.generation {
            return Err(GroupError::IllegalGeneration);
        }
        let state = g.state;
        let m = g.members.get_mut(member_id).ok_or(GroupError::UnknownMemberId)?;
        match state {
            ClassicState::Empty | ClassicState::Dead => Err(GroupError::UnknownMemberId),
            ClassicState::PreparingRebalance => {
                m.heartbeat_deadline_ms = Some(now + i64::from(m.session_timeout_ms));
                Err(GroupError::RebalanceInProgress)
            }
            ClassicState::CompletingRebalance | ClassicState::Stable => {
                m.heartbeat_deadline_ms = Some(now + i64::from(m.session_timeout_ms));
                Ok(())
            }
        }
    }

    /// LeaveGroup (v0–v5). v3+ removes a batch of members, each with its own error; a
    /// member given only by `group.instance.id` is found by it. Leaving triggers a
    /// rebalance of the others (or, for the last member, an Empty group record).
    pub fn leave_group(
        &mut self,
        now_ms: i64,
        ctx: &RequestContext,
        req: &LeaveGroupRequest,
    ) -> crate::CoordinatorResult<LeaveGroupResponse> {
        let mut out = Out::default();
        let v = ctx.api_version;
        let identities: Vec<(String, Option<String>)> = if v >= 3 {
            req.members
                .iter()
                .map(|m| (m.member_id.as_str().to_owned(), m.group_instance_id.as_deref().map(str::to_owned)))
                .collect()
        } else {
            vec![(req.member_id.as_str().to_owned(), None)]
        };
        let cfg = self.config.clone();
        let g = match self.classic_mut(req.group_id.as_str()) {
            Ok(g) => g,
            Err(e) => return out.finish(Some(LeaveGroupResponse::default().with_error_code(e.code()))),
        };
        let mut results = Vec::new();
        for (member_id, instance) in identities {
            let res = (|| {
                let id = match (&instance, member_id.is_empty()) {
                    (Some(i), true) => g.static_members.get(i).cloned().ok_or(GroupError::UnknownMemberId)?,
                    _ => member_id.clone(),
                };
                if instance.is_none() && g.pending_members.remove(&id).is_some() {
                    g.maybe_complete_join(now_ms, &cfg, &mut out);
                    return Ok(());
                }
                g.validate_member(&id, instance.as_deref())?;
                info!(group = %g.id, member = %id, "member left");
                g.remove_member(&id, now_ms, &cfg, &mut out);
                Ok::<(), GroupError>(())
            })();
            results.push((member_id, instance, res.err().map_or(codes::NONE, |e| e.code())));
        }
        let resp = if v >= 3 {
            LeaveGroupResponse::default().with_members(
                results
                    .into_iter()
                    .map(|(m, i, c)| {
                        MemberResponse::default()
                            .with_member_id(sb(&m))
                            .with_group_instance_id(i.as_deref().map(sb))
                            .with_error_code(c)
                    })
                    .collect(),
            )
        } else {
            LeaveGroupResponse::default().with_error_code(results.first().map_or(codes::NONE, |r| r.2))
        };
        out.finish(Some(resp))
    }

    /// DescribeGroups (v0–v6). Members carry metadata and assignment only when Stable, as
    /// in Kafka. An unknown group is reported as `Dead` (v6+: GROUP_ID_NOT_FOUND).
    pub fn describe_groups(
        &self,
        _now_ms: i64,
        ctx: &RequestContext,
        req: &DescribeGroupsRequest,
    ) -> crate::CoordinatorResult<DescribeGroupsResponse> {
        let v = ctx.api_version;
        let mut groups = Vec::new();
        for gid in &req.groups {
            let d = DescribedGroup::default().with_group_id(gid.clone());
            let d = match self.groups.get(gid.as_str()) {
                Some(Group::Classic(g)) => {
                    let stable = g.state == ClassicState::Stable;
                    d.with_group_state(sb(g.state.name()))
                        .with_protocol_type(sb(g.protocol_type.as_deref().unwrap_or_default()))
                        .with_protocol_data(sb(if stable {
                            g.protocol_name.as_deref().unwrap_or_default()
                        } else {
                            ""
                        }))
                        .with_members(
                            g.members
                                .values()
                                .map(|m| {
                                    let dm = DescribedGroupMember::default()
                                        .with_member_id(sb(&m.member_id))
                                        .with_group_instance_id(m.instance_id.as_deref().map(sb))
                                        .with_client_id(sb(&m.client_id))
                                        .with_client_host(sb(&m.client_host));
                                    if stable {
                                        dm.with_member_metadata(m.metadata(g.protocol_name.as_deref()))
                                            .with_member_assignment(m.assignment.clone())
                                    } else {
                                        dm
                                    }
                                })
                                .collect(),
                        )
                }
                other => {
                    let d = d.with_group_state(sb(ClassicState::Dead.name()));
                    if v >= 6 {
                        let msg = if other.is_some() { "group is not a classic group" } else { "group does not exist" };
                        d.with_error_code(codes::GROUP_ID_NOT_FOUND).with_error_message(Some(sb(msg)))
                    } else {
                        d
                    }
                }
            };
            groups.push(d);
        }
        Out::default().finish(Some(DescribeGroupsResponse::default().with_groups(groups)))
    }

    /// The classic group `id`, for inspection.
    pub fn classic_group(&self, id: &str) -> Option<&ClassicGroup> {
        match self.groups.get(id) {
            Some(Group::Classic(g)) => Some(g),
            _ => None,
        }
    }
}
