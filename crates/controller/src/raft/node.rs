//! One controller's Raft node and metadata state machine, without I/O of its own: the owner
//! feeds it ticks, messages from peers and proposals, and calls [`QuorumNode::handle_ready`]
//! after each; that runs raft-rs's Ready loop (persisting through [`RaftStore`]) and returns
//! the messages to send and the committed changes to publish. The real driver (a thread and a
//! tokio transport) and the deterministic simulation both drive this type.
//!
//! # The state machine
//! Each normal entry is a batch of metadata records ([`encode_batch`]); applying it advances
//! the committed [`MetadataImage`]. An empty entry is a new leader's first entry. Conf-change
//! entries change the voters. Every `snapshot_bytes` of applied entries the image is written as
//! a snapshot and the log behind it is dropped; a peer that lags past it gets the snapshot.
//!
//! # Decisions (KRaft's active controller)
//! Only the leader decides, against its *latest* image: the committed one plus every batch it
//! proposed that is not committed yet, so decisions pipeline. A new leader first applies the
//! entries of earlier terms (until its own first entry is committed) and refuses decisions
//! until then. When it loses leadership, its uncommitted batches may be lost: the latest image
//! falls back to the committed one, and its owner fails what waits on them (NOT_CONTROLLER).
//!
//! # What is durable when
//! Entries and hard state are fsynced before the messages that depend on them leave
//! (raft-rs's `persisted_messages`), so a vote or an acknowledgement is never forgotten by a
//! crash. A leader sends appends before its own fsync (raft-rs allows it: an entry counts as
//! committed only with a quorum of persisted copies, its own counted after its fsync).

use std::sync::Arc;

use protobuf::Message as _;
use raft::prelude::{ConfChange, ConfChangeType, ConfChangeV2, Entry, EntryType, Message};
use raft::{Config, RawNode, StateRole};
use strata_metadata::{MetadataDelta, MetadataImage, MetadataRecord};

use crate::metadata_log::{encode_batch, records as decode_batch};
use crate::raft::store::RaftStore;
use crate::ControllerError;

/// Timing and sizes of a quorum node.
#[derive(Debug, Clone)]
pub struct QuorumConfig {
    /// This node's id (`node.id`).
    pub node_id: u64,
    /// Ticks without a leader before a follower campaigns: a random value in
    /// `[min_election_tick, max_election_tick)` (raft-rs), re-drawn at each election.
    pub min_election_tick: usize,
    pub max_election_tick: usize,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_tick: usize,
    /// Bytes of applied entries between snapshots (`metadata.log.max.record.bytes.between.snapshots`).
    pub snapshot_bytes: u64,
}

impl QuorumConfig {
    /// Kafka-like timing for a node ticked every 100 ms: a leader heartbeats every 200 ms and a
    /// follower campaigns 1–2 s after it last heard one (KRaft's `controller.quorum.election.timeout.ms`
    /// is 1 s, plus up to 1 s of backoff). Snapshots every 20 MiB, Kafka's default.
    pub fn new(node_id: u64) -> Self {
        Self { node_id, min_election_tick: 10, max_election_tick: 20, heartbeat_tick: 2, snapshot_bytes: 20 << 20 }
    }
}

/// A proposal was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// This node is not the leader; the leader it knows of, if any.
    NotLeader(Option<u64>),
    /// This node just became leader and is still applying earlier terms' entries.
    Loading,
    /// The records contradict the latest image (a decision bug): nothing was proposed.
    Inconsistent(String),
}

/// A change of one node's place in the quorum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    Learner,
    Voter,
    Remove,
}

/// Where a proposal went in the log: it is committed when the entry at `index` is applied
/// with this `term`, and lost if that index is applied with another term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proposed {
    pub index: u64,
    pub term: u64,
}

/// One applied entry.
#[derive(Debug, Clone)]
pub struct Applied {
    pub index: u64,
    pub term: u64,
    /// The image after it, and what it changed (empty for entries that carry no records).
    pub image: Arc<MetadataImage>,
    pub delta: MetadataDelta,
}

/// What one [`QuorumNode::handle_ready`] produced.
#[derive(Debug, Default)]
pub struct ReadyOutput {
    /// To send to peers (everything they depend on is durable).
    pub messages: Vec<Message>,
    /// Entries applied, in log order.
    pub applied: Vec<Applied>,
    /// Whether this node stopped being the leader (its unapplied proposals may be lost).
    pub lost_leadership: bool,
}

/// A controller's Raft node and metadata state machine (see the module docs).
pub struct QuorumNode {
    raw: RawNode<RaftStore>,
    committed: Arc<MetadataImage>,
    latest: Arc<MetadataImage>,
    applied: u64,
    /// While leader: the index of this term's first entry; decisions wait until it is applied.
    leader_from: Option<u64>,
    was_leader: bool,
    snapshot_bytes: u64,
    since_snapshot: u64,
}

impl std::fmt::Debug for QuorumNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuorumNode")
            .field("id", &self.raw.raft.id)
            .field("term", &self.raw.raft.term)
            .field("role", &self.raw.raft.state)
            .field("applied", &self.applied)
            .finish()
    }
}

impl QuorumNode {
    /// Starts the node on `store`: the committed image is the snapshot's (empty before the
    /// first), and the entries committed after it are applied by the first Ready.
    pub fn new(config: &QuorumConfig, store: RaftStore) -> Result<Self, ControllerError> {
        let snap = store.snapshot_ref();
        let applied = snap.get_metadata().index;
        let image =
            if snap.data.is_empty() { MetadataImage::empty() } else { MetadataImage::from_snapshot(&snap.data)? };
        let raft_config = Config {
            id: config.node_id,
            election_tick: config.min_election_tick,
            min_election_tick: config.min_election_tick,
            max_election_tick: config.max_election_tick,
            heartbeat_tick: config.heartbeat_tick,
            applied,
            check_quorum: true,
            pre_vote: true,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            max_uncommitted_size: 64 << 20,
            ..Config::default()
        };
        raft_config.validate().map_err(|e| ControllerError::Raft(e.to_string()))?;
        let raw = RawNode::new(&raft_config, store, &super::logger::logger(config.node_id))
            .map_err(|e| ControllerError::Raft(e.to_string()))?;
        let image = Arc::new(image);
        Ok(Self {
            raw,
            committed: image.clone(),
            latest: image,
            applied,
            leader_from: None,
            was_leader: false,
            snapshot_bytes: config.snapshot_bytes.max(1),
            since_snapshot: 0,
        })
    }

    /// This node's id.
    pub fn id(&self) -> u64 {
        self.raw.raft.id
    }

    /// The current term.
    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    /// The leader this node knows of (0 for none).
    pub fn leader_id(&self) -> u64 {
        self.raw.raft.leader_id
    }

    /// Whether this node is the leader.
    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// Whether this node is the leader and has applied every earlier term's entry: it may decide.
    pub fn is_active(&self) -> bool {
        self.is_leader() && self.leader_from.is_some_and(|from| self.applied >= from)
    }

    /// Index of the last applied entry.
    pub fn applied_index(&self) -> u64 {
        self.applied
    }

    /// The committed index.
    pub fn commit_index(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    /// The last index in this node's log.
    pub fn last_index(&self) -> u64 {
        self.raw.raft.raft_log.last_index()
    }

    /// The committed image.
    pub fn committed(&self) -> &Arc<MetadataImage> {
        &self.committed
    }

    /// The image decisions see: committed plus this leader's proposals in flight.
    pub fn latest(&self) -> &Arc<MetadataImage> {
        &self.latest
    }

    /// The current voters.
    pub fn voters(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.raw.raft.prs().conf().voters().ids().iter().collect();
        v.sort_unstable();
        v
    }

    /// Match index of each voter as the leader tracks it (`None` on a follower): for
    /// DescribeQuorum's lag.
    pub fn progress(&self) -> Option<Vec<(u64, u64)>> {
        self.is_leader().then(|| {
            let mut v: Vec<(u64, u64)> = self.raw.raft.prs().iter().map(|(id, pr)| (*id, pr.matched)).collect();
            v.sort_unstable();
            v
        })
    }

    /// One tick of the logical clock.
    pub fn tick(&mut self) {
        self.raw.tick();
        self.hand_over_if_removed();
    }

    /// A message from a peer. Messages for another term or from unknown peers are ignored by
    /// raft-rs; an error here is logged, not fatal.
    pub fn step(&mut self, msg: Message) {
        if let Err(e) = self.raw.step(msg) {
            tracing::debug!(error = %e, "raft message not stepped");
        }
    }

    /// Tells raft-rs a peer could not be reached (so it stops pipelining to it).
    pub fn report_unreachable(&mut self, peer: u64) {
        self.raw.report_unreachable(peer);
    }

    /// Tells raft-rs whether a snapshot sent to `peer` arrived (its transport knows): after a
    /// failure the leader sends it again, instead of waiting on it forever.
    pub fn report_snapshot(&mut self, peer: u64, delivered: bool) {
        let status = if delivered { raft::SnapshotStatus::Finish } else { raft::SnapshotStatus::Failure };
        self.raw.report_snapshot(peer, status);
    }

    /// Proposes `records` (decided against [`latest`](Self::latest)) as one entry.
    pub fn propose(&mut self, records: &[MetadataRecord]) -> Result<Proposed, Refused> {
        self.check_active()?;
        let (latest, _) = self.latest.apply(records).map_err(|e| Refused::Inconsistent(e.to_string()))?;
        self.raw.propose(Vec::new(), encode_batch(records)).map_err(|_| Refused::NotLeader(None))?;
        self.latest = Arc::new(latest);
        Ok(Proposed { index: self.raw.raft.raft_log.last_index(), term: self.raw.raft.term })
    }

    /// Proposes one membership change (raft-rs simple conf change): `node` becomes a learner
    /// (it receives the log but does not vote), a voter (a learner promoted, or a new node),
    /// or leaves the quorum. One change at a time: refused while another is not applied yet,
    /// and when it would leave no voter.
    pub fn propose_membership(&mut self, node: u64, change: Membership) -> Result<Proposed, Refused> {
        self.check_active()?;
        if self.raw.raft.has_pending_conf() {
            return Err(Refused::Inconsistent("another membership change is in progress".into()));
        }
        if change == Membership::Remove && node == self.id() {
            // raft-rs would keep a removed leader leading a quorum it is not part of.
            return Err(Refused::Inconsistent(
                "the active controller cannot remove itself: transfer the leadership first".into(),
            ));
        }
        let ty = match change {
            Membership::Learner => ConfChangeType::AddLearnerNode,
            Membership::Voter => ConfChangeType::AddNode,
            Membership::Remove => ConfChangeType::RemoveNode,
        };
        let cc = ConfChange { change_type: ty, node_id: node, ..Default::default() };
        self.raw.propose_conf_change(Vec::new(), cc).map_err(|e| Refused::Inconsistent(e.to_string()))?;
        Ok(Proposed { index: self.raw.raft.raft_log.last_index(), term: self.raw.raft.term })
    }

    /// Campaigns now instead of after an election timeout, if this node is the only voter
    /// (a single node elects itself at once, as KRaft's sole voter does). Only once every
    /// committed entry is applied: a conf change after the snapshot may have added voters.
    /// Returns whether it campaigned; the election completes in the next Ready.
    pub fn campaign_if_sole_voter(&mut self) -> bool {
        let voters = self.voters();
        if voters != [self.id()] || self.is_leader() || self.applied < self.raw.raft.raft_log.committed {
            return false;
        }
        self.raw.campaign().is_ok()
    }

    /// Asks raft-rs to hand the leadership to voter `to` (it campaigns at once once caught up).
    pub fn transfer_leadership(&mut self, to: u64) {
        self.raw.transfer_leader(to);
    }

    /// The current learners (they replicate the log without voting).
    pub fn learners(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.raw.raft.prs().conf().learners().iter().copied().collect();
        v.sort_unstable();
        v
    }

    fn check_active(&mut self) -> Result<(), Refused> {
        self.note_role();
        if !self.is_leader() {
            let leader = self.raw.raft.leader_id;
            return Err(Refused::NotLeader((leader != 0).then_some(leader)));
        }
        if !self.is_active() {
            return Err(Refused::Loading);
        }
        Ok(())
    }

    /// Notices a change of role since the last call; true if leadership was lost.
    fn note_role(&mut self) -> bool {
        let leader = self.is_leader();
        let lost = self.was_leader && !leader;
        if leader && !self.was_leader {
            // raft-rs appended this term's empty entry on becoming leader.
            self.leader_from = Some(self.raw.raft.raft_log.last_index());
            self.latest = self.committed.clone();
        }
        if lost {
            self.leader_from = None;
            self.latest = self.committed.clone();
        }
        self.was_leader = leader;
        lost
    }

    /// Runs raft-rs's Ready loop once, in its documented order: send the messages that need
    /// no persistence, install a snapshot, apply committed entries, append entries and the hard
    /// state and fsync them, then send the messages that needed that, advance, and apply what
    /// the advance committed. Errors are storage failures: the node must stop (its owner exits;
    /// a restart replays what is durable).
    pub fn handle_ready(&mut self) -> Result<ReadyOutput, ControllerError> {
        let mut out = ReadyOutput { lost_leadership: self.note_role(), ..ReadyOutput::default() };
        if !self.raw.has_ready() {
            return Ok(out);
        }
        let mut rd = self.raw.ready();
        out.messages.extend(rd.take_messages());
        if !rd.snapshot().is_empty() {
            let snap = rd.snapshot().clone();
            // The bootstrap snapshot holds the voters and no metadata.
            let image = Arc::new(if snap.data.is_empty() {
                MetadataImage::empty()
            } else {
                MetadataImage::from_snapshot(&snap.data)?
            });
            let index = snap.get_metadata().index;
            let term = snap.get_metadata().term;
            self.raw.mut_store().apply_snapshot(snap)?;
            let delta = MetadataDelta::between(&self.committed, &image);
            tracing::info!(index, term, "installed a metadata snapshot from the leader");
            self.committed = image.clone();
            self.latest = image.clone();
            self.applied = index;
            self.since_snapshot = 0;
            out.applied.push(Applied { index, term, image, delta });
        }
        let committed = rd.take_committed_entries();
        self.apply_entries(committed, &mut out)?;
        let store = self.raw.mut_store();
        store.append(rd.entries())?;
        if let Some(hs) = rd.hs() {
            store.set_hard_state(hs)?;
        }
        if !rd.entries().is_empty() || rd.hs().is_some() || rd.must_sync() {
            store.sync()?;
        }
        out.messages.extend(rd.take_persisted_messages());
        let mut light = self.raw.advance(rd);
        if let Some(commit) = light.commit_index() {
            // Not synced by itself: a commit index can always be learned again from the leader.
            self.raw.mut_store().set_commit(commit)?;
        }
        out.messages.extend(light.take_messages());
        let committed = light.take_committed_entries();
        self.apply_entries(committed, &mut out)?;
        self.raw.advance_apply_to(self.applied);
        let wanted = self.raw.store().take_snapshot_wanted()
            && self.applied > self.raw.store().snapshot_ref().get_metadata().index;
        if self.since_snapshot >= self.snapshot_bytes || wanted {
            let data = self.committed.to_snapshot();
            let index = self.applied;
            self.raw.mut_store().compact(index, data)?;
            tracing::info!(index, "took a metadata snapshot and compacted the Raft log behind it");
            self.since_snapshot = 0;
        }
        if self.note_role() {
            out.lost_leadership = true;
        }
        Ok(out)
    }

    fn apply_entries(&mut self, entries: Vec<Entry>, out: &mut ReadyOutput) -> Result<(), ControllerError> {
        for entry in entries {
            if entry.index <= self.applied {
                continue;
            }
            let mut delta = MetadataDelta::default();
            match entry.get_entry_type() {
                EntryType::EntryNormal if entry.data.is_empty() => {}
                EntryType::EntryNormal => {
                    let records = decode_batch(&entry.data).map_err(ControllerError::Raft)?;
                    let (image, d) = self.committed.apply(&records)?;
                    self.committed = Arc::new(image);
                    delta = d;
                }
                EntryType::EntryConfChange => {
                    let cc = ConfChange::parse_from_bytes(&entry.data)
                        .map_err(|e| ControllerError::Raft(format!("conf change at {}: {e}", entry.index)))?;
                    let cs = self.raw.apply_conf_change(&cc).map_err(|e| ControllerError::Raft(e.to_string()))?;
                    self.conf_changed(cs);
                }
                EntryType::EntryConfChangeV2 => {
                    let cc = ConfChangeV2::parse_from_bytes(&entry.data)
                        .map_err(|e| ControllerError::Raft(format!("conf change at {}: {e}", entry.index)))?;
                    let cs = self.raw.apply_conf_change(&cc).map_err(|e| ControllerError::Raft(e.to_string()))?;
                    self.conf_changed(cs);
                }
            }
            self.applied = entry.index;
            self.since_snapshot += entry.data.len() as u64;
            if !self.is_leader() {
                self.latest = self.committed.clone();
            }
            out.applied.push(Applied { index: entry.index, term: entry.term, image: self.committed.clone(), delta });
        }
        if self.is_leader() && self.raw.raft.raft_log.last_index() == self.applied {
            // Nothing in flight: the latest image is the committed one (this also drops the
            // copies a long-lived leader would otherwise keep side by side).
            self.latest = self.committed.clone();
        }
        Ok(())
    }

    fn conf_changed(&mut self, cs: raft::prelude::ConfState) {
        tracing::info!(voters = ?cs.voters, learners = ?cs.learners, "the quorum's membership changed");
        self.raw.mut_store().set_conf_state(cs);
        self.hand_over_if_removed();
    }

    /// A leader removed by a change proposed before it was elected: raft-rs (like etcd's raft)
    /// would keep it leading a quorum it is not part of. It hands over to the voter with the
    /// most of the log, again after each transfer that timed out.
    fn hand_over_if_removed(&mut self) {
        let me = self.id();
        let voters = self.voters();
        if !self.is_leader() || voters.contains(&me) || self.raw.raft.lead_transferee.is_some() {
            return;
        }
        let best = self
            .raw
            .raft
            .prs()
            .iter()
            .filter(|(id, _)| voters.contains(id))
            .max_by_key(|(_, pr)| pr.matched)
            .map(|(id, _)| *id);
        if let Some(to) = best {
            tracing::info!(to, "no longer a voter: handing the leadership over");
            self.raw.transfer_leader(to);
        }
    }
}
