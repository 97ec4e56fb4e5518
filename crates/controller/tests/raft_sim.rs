//! Seeded deterministic simulation of the metadata quorum: 1, 3 and 5 controllers in one process
//! (deciding for three brokers that register, are fenced and come back, and topics placed on
//! them, with the controller's own decision functions), voters that join and leave, and
//! broker-only nodes that follow the log as learners,
//! an in-memory network that drops, delays, duplicates, reorders and partitions messages, nodes
//! that crash (losing whatever was not fsynced, through `MemStorage::crash`) and restart, and a
//! clock that only the test advances.
//!
//! After every step: at most one leader per term; an entry once applied anywhere is never
//! applied differently anywhere (same term, same image after it); a proposal a leader saw
//! committed stays committed. At the end the network heals, every node restarts, and every
//! node's committed image must converge to the same one.
//!
//! `STRATA_SIM_SEEDS` (default 300; run thousands by hand before a Raft change lands) sets how many seeds each size runs; `STRATA_SIM_SEED=N`
//! replays one. A failing seed prints itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use raft::prelude::{Message, MessageType};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use strata_controller::decisions;
use strata_controller::raft::{Membership, QuorumConfig, QuorumNode, RaftStore, Refused};
use strata_log::storage::MemStorage;
use strata_metadata::channel::CreateTopicSpec;
use strata_metadata::{ConfigResource, MetadataImage, MetadataRecord};

const DIR: &str = "/controller/__cluster_metadata-0";

struct SimNode {
    id: u64,
    storage: MemStorage,
    /// `None` while crashed.
    node: Option<QuorumNode>,
    /// Step at which a crashed node comes back.
    restart_at: u64,
}

/// Membership changes during a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reconfigure {
    Never,
    /// The leader adds learners, promotes them and removes voters (never below three).
    JoinAndLeave,
    /// The nodes outside the initial voters are added as learners and stay learners (the
    /// broker-only nodes, which observe the metadata log).
    Observers,
}

struct Sim {
    rng: SmallRng,
    now: u64,
    /// Every node's id.
    voters: Vec<u64>,
    /// The voters every node starts from (`controller.quorum.voters`); the others join later.
    initial: Vec<u64>,
    /// How the leader changes the membership while the faults go on.
    reconfigure: Reconfigure,
    membership_changes: u64,
    nodes: Vec<SimNode>,
    /// (deliver at step, sequence for a stable order, from, to, message)
    in_flight: Vec<(u64, u64, u64, u64, Message)>,
    seq: u64,
    /// Links cut in both directions, until the step given.
    cut: HashMap<(u64, u64), u64>,
    /// term -> the one node that was leader in it.
    leaders: HashMap<u64, u64>,
    /// index -> (term, records applied after it, next producer id after it): what every node
    /// must apply at that index.
    applied: BTreeMap<u64, (u64, u64, i64)>,
    /// Proposals seen committed: (index, term).
    acknowledged: Vec<(u64, u64)>,
    /// Proposals in flight, by the proposing node: (index, term).
    proposals: HashMap<u64, Vec<(u64, u64)>>,
    next_value: u64,
    /// At the end: topics in the final image, and brokers fenced in it.
    topics_made: u64,
    brokers_fenced: u64,
}

fn config(id: u64, rng: &mut SmallRng) -> QuorumConfig {
    // raft-rs draws each election timeout from [min, max) with a thread-local RNG; a range of
    // one value keeps runs deterministic, and the seeded RNG spreads the nodes' timeouts.
    let min = rng.gen_range(8..20);
    QuorumConfig {
        node_id: id,
        min_election_tick: min,
        max_election_tick: min + 1,
        heartbeat_tick: 2,
        snapshot_bytes: 1500,
    }
}

impl Sim {
    fn new(seed: u64, size: u64, initial_voters: u64, reconfigure: Reconfigure) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let voters: Vec<u64> = (1..=size).collect();
        let initial: Vec<u64> = (1..=initial_voters).collect();
        let nodes = voters
            .iter()
            .map(|&id| {
                let storage = MemStorage::new();
                let start = if initial.contains(&id) { initial.clone() } else { Vec::new() };
                let store = RaftStore::open(Arc::new(storage.clone()), Path::new(DIR), &start).unwrap();
                let node = QuorumNode::new(&config(id, &mut rng), store).unwrap();
                SimNode { id, storage, node: Some(node), restart_at: 0 }
            })
            .collect();
        Self {
            rng,
            now: 0,
            voters,
            initial,
            reconfigure,
            membership_changes: 0,
            nodes,
            in_flight: Vec::new(),
            seq: 0,
            cut: HashMap::new(),
            leaders: HashMap::new(),
            applied: BTreeMap::new(),
            acknowledged: Vec::new(),
            proposals: HashMap::new(),
            next_value: 0,
            topics_made: 0,
            brokers_fenced: 0,
        }
    }

    fn is_cut(&self, a: u64, b: u64) -> bool {
        self.cut.get(&(a.min(b), a.max(b))).is_some_and(|&until| until > self.now)
    }

    /// Runs `handle_ready` on node `i` until it has nothing more, routing its messages and
    /// checking what it applied.
    fn drain(&mut self, i: usize, faults: bool) {
        loop {
            let out = {
                let Some(node) = self.nodes[i].node.as_mut() else { return };
                node.handle_ready().expect("storage never fails in this simulation")
            };
            let id = self.nodes[i].id;
            if out.lost_leadership {
                self.proposals.remove(&id);
            }
            for a in &out.applied {
                let seen = (a.term, a.image.records_applied, a.image.next_producer_id);
                if let Some(prev) = self.applied.get(&a.index) {
                    assert_eq!(*prev, seen, "node {id} applied index {} differently", a.index);
                } else {
                    self.applied.insert(a.index, seen);
                }
                if let Some(mine) = self.proposals.get_mut(&id) {
                    // Applied with its term: committed. With another term: lost with a
                    // leadership change (never acknowledged).
                    if mine.contains(&(a.index, a.term)) {
                        self.acknowledged.push((a.index, a.term));
                    }
                    mine.retain(|&(index, _)| index > a.index);
                }
            }
            let done = out.messages.is_empty() && out.applied.is_empty();
            for m in out.messages {
                self.send(m, faults);
            }
            if done {
                return;
            }
        }
    }

    fn send(&mut self, m: Message, faults: bool) {
        let (from, to) = (m.from, m.to);
        if faults {
            if self.is_cut(from, to) || self.rng.gen_bool(0.05) {
                // Dropped; a transport knows when a snapshot did not go through.
                if m.get_msg_type() == MessageType::MsgSnapshot {
                    self.report_snapshot(from, to, false);
                }
                return;
            }
            let copies = if self.rng.gen_bool(0.03) { 2 } else { 1 };
            for _ in 0..copies {
                let at = self.now + self.rng.gen_range(0..4);
                self.seq += 1;
                self.in_flight.push((at, self.seq, from, to, m.clone()));
            }
        } else {
            self.seq += 1;
            self.in_flight.push((self.now, self.seq, from, to, m));
        }
    }

    fn report_snapshot(&mut self, from: u64, to: u64, delivered: bool) {
        if let Some(i) = self.nodes.iter().position(|n| n.id == from) {
            if let Some(node) = self.nodes[i].node.as_mut() {
                node.report_snapshot(to, delivered);
            }
        }
    }

    fn check_leaders(&mut self) {
        for n in &self.nodes {
            if let Some(node) = &n.node {
                if node.is_leader() {
                    let term = node.term();
                    let leader = *self.leaders.entry(term).or_insert(n.id);
                    assert_eq!(leader, n.id, "two leaders in term {term}: {leader} and {}", n.id);
                }
            }
        }
    }

    fn step(&mut self, faults: bool) {
        self.now += 1;
        // Restarts, then crashes and partitions.
        for i in 0..self.nodes.len() {
            if self.nodes[i].node.is_none() && self.nodes[i].restart_at <= self.now {
                self.restart(i);
            }
        }
        if faults {
            if self.rng.gen_bool(0.01) {
                let i = self.rng.gen_range(0..self.nodes.len());
                if self.nodes[i].node.is_some() {
                    self.crash(i);
                }
            }
            if self.rng.gen_bool(0.02) {
                let a = self.voters[self.rng.gen_range(0..self.voters.len())];
                let b = self.voters[self.rng.gen_range(0..self.voters.len())];
                if a != b {
                    let until = self.now + self.rng.gen_range(10..80);
                    self.cut.insert((a.min(b), a.max(b)), until);
                }
            }
        }
        // Deliver what is due, in a shuffled order.
        let mut due: Vec<(u64, u64, u64, u64, Message)> = Vec::new();
        let mut later = Vec::new();
        for m in self.in_flight.drain(..) {
            if m.0 <= self.now {
                due.push(m);
            } else {
                later.push(m);
            }
        }
        self.in_flight = later;
        due.sort_by_key(|m| m.1);
        if faults {
            for i in (1..due.len()).rev() {
                let j = self.rng.gen_range(0..=i);
                due.swap(i, j);
            }
        }
        for (_, _, from, to, m) in due {
            if faults && self.is_cut(from, to) {
                if m.get_msg_type() == MessageType::MsgSnapshot {
                    self.report_snapshot(from, to, false);
                }
                continue;
            }
            let Some(i) = self.nodes.iter().position(|n| n.id == to) else { continue };
            let snapshot = m.get_msg_type() == MessageType::MsgSnapshot;
            let delivered = if let Some(node) = self.nodes[i].node.as_mut() {
                node.step(m);
                true
            } else {
                false
            };
            if snapshot {
                self.report_snapshot(from, to, delivered);
            }
            self.drain(i, faults);
        }
        for i in 0..self.nodes.len() {
            if let Some(node) = self.nodes[i].node.as_mut() {
                node.tick();
            }
            self.drain(i, faults);
        }
        // A proposal to whichever node claims leadership.
        if self.rng.gen_bool(0.3) {
            self.propose();
        }
        if self.reconfigure != Reconfigure::Never && faults && self.rng.gen_bool(0.03) {
            self.change_membership();
        }
        self.check_leaders();
    }

    fn propose(&mut self) {
        let Some(i) = self.nodes.iter().position(|n| n.node.as_ref().is_some_and(QuorumNode::is_leader)) else {
            return;
        };
        let node = self.nodes[i].node.as_mut().unwrap();
        let latest: Arc<MetadataImage> = node.latest().clone();
        // A decision against the latest image, as the controller makes them.
        let mut records = Vec::new();
        if latest.cluster_id.is_none() {
            records.push(MetadataRecord::ClusterCreated { cluster_id: "sim".into() });
        }
        self.next_value += 1;
        let n = self.next_value;
        // The brokers' side, through the controller's own decisions: registrations, fencing
        // and unfencing (a session expiring, a broker coming back), topics placed over the
        // live brokers, configs, producer-id blocks.
        let broker = 100 + ((n / 6) % 3) as i32;
        match n % 6 {
            0 => records.extend(
                decisions::register_broker(
                    &latest,
                    decisions::BrokerRegistration {
                        host: "127.0.0.1".into(),
                        incarnation_id: uuid::Uuid::from_u128(u128::from(n)),
                        ..decisions::BrokerRegistration::test(broker, 9000 + broker as u16)
                    },
                    &Default::default(),
                )
                .0,
            ),
            1 => records.extend(decisions::fence_broker(&latest, broker, &Default::default())),
            2 => records.extend(decisions::unfence_broker(&latest, broker, &Default::default())),
            3 if latest.cluster_id.is_some() => {
                let spec = CreateTopicSpec {
                    name: format!("t{n}"),
                    num_partitions: 1 + (n % 4) as i32,
                    replication_factor: 1,
                    ..Default::default()
                };
                let defaults = decisions::Defaults {
                    num_partitions: 1,
                    default_replication_factor: 1,
                    election: Default::default(),
                };
                records.extend(decisions::create_topics(&latest, &defaults, vec![spec], false).0);
            }
            4 => records.extend(decisions::allocate_producer_ids(&latest, broker, 1000).0),
            _ => {}
        }
        records.push(MetadataRecord::ConfigSet {
            resource: ConfigResource::Broker(1),
            name: format!("k{}", n % 7),
            value: Some(format!("v{n}")),
        });
        match node.propose(&records) {
            Ok(p) => self.proposals.entry(node.id()).or_default().push((p.index, p.term)),
            Err(Refused::NotLeader(_) | Refused::Loading) => {}
            Err(Refused::Inconsistent(e)) => panic!("a decision against the latest image did not apply: {e}"),
        }
        self.drain(i, true);
    }

    /// The leader adds a learner, promotes one, or removes a voter (keeping at least three).
    fn change_membership(&mut self) {
        let Some(i) = self.nodes.iter().position(|n| n.node.as_ref().is_some_and(QuorumNode::is_active)) else {
            return;
        };
        let node = self.nodes[i].node.as_ref().unwrap();
        let (voters, learners) = (node.voters(), node.learners());
        let outside: Vec<u64> =
            self.voters.iter().copied().filter(|id| !voters.contains(id) && !learners.contains(id)).collect();
        let (target, change) =
            if !outside.is_empty() && (self.reconfigure == Reconfigure::Observers || self.rng.gen_bool(0.5)) {
                (outside[self.rng.gen_range(0..outside.len())], Membership::Learner)
            } else if self.reconfigure == Reconfigure::Observers {
                // Broker-only nodes: added as learners when they register, never voters.
                return;
            } else if !learners.is_empty() && self.rng.gen_bool(0.7) {
                (learners[self.rng.gen_range(0..learners.len())], Membership::Voter)
            } else if voters.len() > 3 {
                (voters[self.rng.gen_range(0..voters.len())], Membership::Remove)
            } else {
                return;
            };
        let node = self.nodes[i].node.as_mut().unwrap();
        if change == Membership::Remove && target == node.id() {
            // A leader leaves by handing over first.
            if let Some(&to) = voters.iter().find(|v| **v != target) {
                node.transfer_leadership(to);
            }
        } else if node.propose_membership(target, change).is_ok() {
            self.membership_changes += 1;
        }
        self.drain(i, true);
    }

    fn crash(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.node = None;
        self.proposals.remove(&n.id);
        n.storage.crash(self.rng.gen());
        n.restart_at = self.now + self.rng.gen_range(5..60);
    }

    fn restart(&mut self, i: usize) {
        let cfg = config(self.nodes[i].id, &mut self.rng);
        let n = &mut self.nodes[i];
        let start = if self.initial.contains(&n.id) { self.initial.clone() } else { Vec::new() };
        let store = RaftStore::open(Arc::new(n.storage.clone()), Path::new(DIR), &start)
            .expect("a crash never leaves the Raft store unreadable");
        n.node = Some(QuorumNode::new(&cfg, store).unwrap());
        // As the controller's driver does: replay what was committed, then a sole voter
        // elects itself at once.
        self.drain(i, false);
        if self.nodes[i].node.as_mut().is_some_and(QuorumNode::campaign_if_sole_voter) {
            self.drain(i, false);
        }
    }

    /// Heals the network, restarts every node and runs until all agree.
    fn converge(&mut self) {
        self.cut.clear();
        for i in 0..self.nodes.len() {
            if self.nodes[i].node.is_none() {
                self.restart(i);
            }
        }
        // One last proposal after healing, so every node must learn the final commit index.
        let mut proposed = false;
        for _ in 0..2000 {
            self.step(false);
            if !proposed && self.nodes.iter().any(|n| n.node.as_ref().is_some_and(QuorumNode::is_active)) {
                self.propose();
                proposed = true;
            }
            // The members the leader knows (voters and learners) must agree; a node removed
            // from the quorum stops hearing from it.
            let members: Vec<u64> = self
                .nodes
                .iter()
                .filter_map(|n| n.node.as_ref())
                .find(|n| n.is_leader())
                .map(|l| l.voters().into_iter().chain(l.learners()).collect())
                .unwrap_or_default();
            let nodes: Vec<&QuorumNode> =
                self.nodes.iter().filter_map(|n| n.node.as_ref()).filter(|n| members.contains(&n.id())).collect();
            let Some(&first) = nodes.first() else { continue };
            if proposed
                && nodes
                    .iter()
                    .all(|n| n.applied_index() == first.applied_index() && n.committed() == first.committed())
                && nodes.iter().any(|n| n.is_leader())
                && self.proposals.values().all(Vec::is_empty)
            {
                return;
            }
        }
        let state: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("{:?} commit {}", n.node.as_ref().unwrap(), n.node.as_ref().unwrap().commit_index()))
            .collect();
        panic!("the quorum did not converge after healing: {state:?}");
    }

    fn run(seed: u64, size: u64, initial_voters: u64, reconfigure: Reconfigure, steps: u64) -> Self {
        let mut sim = Sim::new(seed, size, initial_voters, reconfigure);
        for _ in 0..steps {
            sim.step(true);
        }
        sim.converge();
        // What the brokers' decisions left: topics, and brokers registered (some fenced).
        if let Some(n) = sim.nodes.iter().filter_map(|n| n.node.as_ref()).find(|n| n.is_leader()) {
            let img = n.committed();
            sim.topics_made += img.topics().count() as u64;
            sim.brokers_fenced += img.brokers.values().filter(|b| b.fenced).count() as u64;
        }
        // Everything seen committed is in the final log, with its term.
        for (index, term) in &sim.acknowledged {
            assert_eq!(sim.applied.get(index).map(|a| a.0), Some(*term), "acknowledged entry {index} lost");
        }
        sim
    }
}

fn seeds() -> Vec<u64> {
    if let Ok(one) = std::env::var("STRATA_SIM_SEED") {
        // Replaying one seed: show what raft-rs and the node say (RUST_LOG to filter).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "debug".into()))
            .with_test_writer()
            .try_init();
        return vec![one.parse().expect("STRATA_SIM_SEED is a number")];
    }
    let n: u64 = std::env::var("STRATA_SIM_SEEDS").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    (0..n).collect()
}

fn run_seeds(size: u64, initial_voters: u64, reconfigure: Reconfigure) -> u64 {
    let mut committed = 0usize;
    let mut leaders = HashSet::new();
    let mut changes = 0;
    let (mut topics, mut fenced) = (0, 0);
    for seed in seeds() {
        let result = std::panic::catch_unwind(|| Sim::run(seed, size, initial_voters, reconfigure, 400));
        match result {
            Ok(sim) => {
                committed += sim.acknowledged.len();
                leaders.extend(sim.leaders.values().copied());
                changes += sim.membership_changes;
                topics += sim.topics_made;
                fenced += sim.brokers_fenced;
            }
            Err(e) => {
                eprintln!("seed {seed} ({size} controllers) failed; replay with STRATA_SIM_SEED={seed}");
                std::panic::resume_unwind(e);
            }
        }
    }
    // The runs did something: proposals committed and leadership moved around.
    assert!(committed > 0, "no proposal was ever committed");
    assert!(leaders.len() > 1 || size == 1 || seeds().len() == 1, "leadership never moved");
    assert!(topics > 0 && (fenced > 0 || seeds().len() == 1), "the brokers' decisions never took effect");
    changes
}

/// The single-node default: one voter that crashes (losing what it did not fsync) and restarts.
#[test]
fn one_controller() {
    run_seeds(1, 1, Reconfigure::Never);
}

#[test]
fn three_controllers() {
    run_seeds(3, 3, Reconfigure::Never);
}

#[test]
fn five_controllers() {
    run_seeds(5, 5, Reconfigure::Never);
}

/// Three voters to start with and two more nodes; the leader adds learners, promotes them and
/// removes voters (never below three) while the faults go on.
#[test]
fn voters_join_and_leave() {
    let changes = run_seeds(5, 3, Reconfigure::JoinAndLeave);
    assert!(changes > 0 || seeds().len() == 1, "no membership change was ever proposed");
}

/// Three controllers and two broker-only nodes that the leader adds as learners (observers):
/// they must end with the same metadata as the voters, through crashes and partitions.
#[test]
fn observers_follow_the_log() {
    let changes = run_seeds(5, 3, Reconfigure::Observers);
    assert!(changes > 0 || seeds().len() == 1, "no observer was ever added");
}

/// A seed replays exactly: the same run twice gives the same acknowledged entries and the same
/// final image, topic ids included (decisions are pure functions of the image).
#[test]
fn a_seed_replays_exactly() {
    let final_image = |sim: &Sim| {
        sim.nodes.iter().filter_map(|n| n.node.as_ref()).find(|n| n.is_leader()).map(|n| n.committed().clone())
    };
    for seed in [3, 11] {
        let (a, b) = (Sim::run(seed, 3, 3, Reconfigure::Never, 300), Sim::run(seed, 3, 3, Reconfigure::Never, 300));
        assert_eq!(a.acknowledged, b.acknowledged, "seed {seed}");
        let (ia, ib) = (final_image(&a).unwrap(), final_image(&b).unwrap());
        assert!(ia.topics().count() > 0, "seed {seed} made no topic");
        assert_eq!(ia, ib, "seed {seed} replayed to another image");
    }
}
