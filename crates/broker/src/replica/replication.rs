//! One partition's replication bookkeeping, as Kafka's `Partition` keeps it: whether this
//! broker leads or follows, the registration the metadata gave it (leader, epochs, replicas,
//! ISR), and on a leader each follower's position and when it last caught up, the ISR change
//! in flight to the controller and the high watermark they allow. Pure: times and offsets are
//! passed in, so the rules are tested here without a log or a network.
//!
//! The rules (KIP-101, KIP-497, Kafka's `Partition.maybeIncrementLeaderHW`,
//! `maybeExpandIsr`, `maybeShrinkIsr`):
//! - The leader's high watermark is the smallest log end among the *maximal* ISR: the
//!   committed ISR plus any member an expansion in flight adds. Counting a member from the
//!   moment its addition is proposed means no record is committed that a replica the
//!   controller may already have put in the ISR lacks; a member a shrink in flight removes
//!   still counts until the controller has committed the shrink.
//! - A follower joins the ISR when its log end has reached both the high watermark and the
//!   offset where the leader's epoch began; it leaves when it has not caught up with the
//!   leader's log end for `replica.lag.time.max.ms`.
//! - One ISR change at a time; it counts only once the metadata log has it (the partition
//!   epoch moves past the one the change was based on).

use std::collections::HashMap;

use strata_metadata::channel::IsrOutcome;
use strata_protocol::ResponseError;

/// A partition's registration in the metadata image, as far as a replica needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

/// Whom a follower's fetcher works for: the leader and the leader epoch it fetched in. Work
/// done for an older pairing (a response that arrives after the metadata moved the partition
/// to another leader, or made this broker its leader) is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Following {
    pub leader: i32,
    pub leader_epoch: i32,
}

/// What this broker is for the partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// No registration applied yet: a partition opened on its own (tests, tools) is its only
    /// replica, and its high watermark is its log end.
    Unassigned,
    Leader,
    Follower,
}

/// What the leader knows of one follower.
#[derive(Debug, Clone, Copy)]
struct Progress {
    /// The follower's log end (its last fetch offset); -1 until it fetches in this epoch.
    log_end: i64,
    /// When the follower last had everything the leader had (ms).
    last_caught_up_ms: i64,
    last_fetch_ms: i64,
    /// The leader's log end at the follower's last fetch.
    leader_end_at_last_fetch: i64,
    /// The follower's log start as its last fetch gave it; -1 until then.
    log_start: i64,
}

/// An ISR change this leader proposed to the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingIsr {
    pub isr: Vec<i32>,
    /// The leader and partition epochs the change is based on.
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// Sent and not to be sent again: answered and waiting for the metadata to show the
    /// outcome, or on its way.
    pub sent: bool,
    /// An expansion's new member and the broker epoch of the incarnation whose fetch showed it
    /// caught up, as this leader's metadata knew it then (KIP-903): the controller refuses
    /// the change (INELIGIBLE_REPLICA) if that broker has registered again since, even when
    /// the change is sent later.
    pub joining: Option<(i32, i64)>,
}

/// See the module docs.
#[derive(Debug)]
pub struct Replication {
    role: Role,
    assignment: Option<Assignment>,
    followers: HashMap<i32, Progress>,
    pending: Option<PendingIsr>,
    /// The leader's log end when its epoch began (Kafka's `leaderEpochStartOffsetOpt`).
    epoch_start: i64,
}

impl Default for Replication {
    fn default() -> Self {
        Self { role: Role::Unassigned, assignment: None, followers: HashMap::new(), pending: None, epoch_start: 0 }
    }
}

impl Replication {
    pub fn role(&self) -> Role {
        self.role
    }

    /// The registration last applied.
    pub fn assignment(&self) -> Option<&Assignment> {
        self.assignment.as_ref()
    }

    /// The leader epoch this broker leads in, if it leads.
    pub fn leading_epoch(&self) -> Option<i32> {
        match (self.role, &self.assignment) {
            (Role::Leader, Some(a)) => Some(a.leader_epoch),
            _ => None,
        }
    }

    /// Whether this replica follows `f.leader` in `f.leader_epoch` now.
    pub fn follows(&self, f: Following) -> bool {
        self.role == Role::Follower
            && self.assignment.as_ref().is_some_and(|a| a.leader == f.leader && a.leader_epoch == f.leader_epoch)
    }

    /// Whether an ISR change is pending and not sent (it waits to be sent again).
    pub fn has_unsent(&self) -> bool {
        self.pending.as_ref().is_some_and(|p| !p.sent)
    }

    /// How many replicas the committed ISR holds (1 for an unassigned partition).
    pub fn in_sync_count(&self) -> usize {
        self.assignment.as_ref().map_or(1, |a| a.isr.len())
    }

    /// Applies the registration the metadata now gives the partition, on broker `local_id`
    /// whose log ends at `local_end`. A leader in a new epoch starts every follower afresh
    /// (unknown position, caught up as of `now_ms`, so the ISR is not shrunk before followers
    /// had time to fetch). An ISR change in flight is dropped once the registration has moved
    /// past the partition epoch it was based on, or when leadership changes.
    pub fn apply(&mut self, local_id: i32, a: Assignment, local_end: i64, now_ms: i64) {
        let was_leading = self.leading_epoch();
        if a.leader == local_id {
            if was_leading != Some(a.leader_epoch) {
                self.followers.clear();
                self.pending = None;
                self.epoch_start = local_end;
            }
            self.role = Role::Leader;
            self.followers.retain(|id, _| a.replicas.contains(id));
            for id in a.replicas.iter().filter(|id| **id != local_id) {
                self.followers.entry(*id).or_insert(Progress {
                    log_end: -1,
                    last_caught_up_ms: now_ms,
                    last_fetch_ms: now_ms,
                    leader_end_at_last_fetch: -1,
                    log_start: -1,
                });
            }
        } else {
            self.role = Role::Follower;
            self.followers.clear();
            self.pending = None;
        }
        if self.pending.as_ref().is_some_and(|p| a.partition_epoch > p.partition_epoch) {
            self.pending = None;
        }
        self.assignment = Some(a);
    }

    /// The ISR the high watermark waits for: the committed one plus any member an expansion
    /// in flight adds.
    fn maximal_isr(&self) -> Vec<i32> {
        let mut isr = self.assignment.as_ref().map_or_else(Vec::new, |a| a.isr.clone());
        if let Some(p) = &self.pending {
            for id in &p.isr {
                if !isr.contains(id) {
                    isr.push(*id);
                }
            }
        }
        isr
    }

    /// Whether this leader's committed ISR is smaller than `min_isr` (capped at the replication
    /// factor, Kafka's `effectiveMinIsr`): its high watermark then stays where it is (Kafka's
    /// `Partition.isUnderMinIsr` in `maybeIncrementLeaderHW`), so that no record is committed
    /// with fewer copies than `min.insync.replicas` — the replicas that leave such an ISR stay
    /// eligible leaders (KIP-966) because they hold everything committed.
    pub fn under_min_isr(&self, min_isr: usize) -> bool {
        match (&self.assignment, self.role) {
            (Some(a), Role::Leader) => a.isr.len() < min_isr.min(a.replicas.len()).max(1),
            _ => false,
        }
    }

    /// The high watermark a leader (or an unassigned partition) may have with its own log
    /// ending at `local_end`: the smallest log end of the maximal ISR. `None` on a follower,
    /// whose high watermark is the leader's.
    pub fn leader_high_watermark(&self, local_id: i32, local_end: i64) -> Option<i64> {
        match self.role {
            Role::Unassigned => Some(local_end),
            Role::Follower => None,
            Role::Leader => Some(
                self.maximal_isr()
                    .iter()
                    .filter(|id| **id != local_id)
                    .map(|id| self.followers.get(id).map_or(-1, |p| p.log_end))
                    .fold(local_end, i64::min),
            ),
        }
    }

    /// A follower fetched at `offset` while the leader's log ended at `local_end` (Kafka's
    /// `updateFollowerFetchState`): its log end is `offset`; it caught up if it asked for the
    /// leader's end, or for at least the end the leader had at its previous fetch (then it
    /// was caught up as of that fetch). False when this broker does not lead or `replica` is
    /// not a replica of the partition.
    pub fn follower_fetched(&mut self, replica: i32, offset: i64, local_end: i64, now_ms: i64) -> bool {
        if self.role != Role::Leader {
            return false;
        }
        let Some(p) = self.followers.get_mut(&replica) else { return false };
        if offset > local_end {
            return true; // ahead of the leader: answered OFFSET_OUT_OF_RANGE, it truncates
        }
        if offset >= local_end {
            p.last_caught_up_ms = now_ms;
        } else if p.leader_end_at_last_fetch >= 0 && offset >= p.leader_end_at_last_fetch {
            p.last_caught_up_ms = p.last_caught_up_ms.max(p.last_fetch_ms);
        }
        p.log_end = offset;
        p.last_fetch_ms = now_ms;
        p.leader_end_at_last_fetch = local_end;
        true
    }

    /// Records the log start `replica`'s fetch gave (Fetch's `log_start_offset`). Returns
    /// whether it moved (which may move the low watermark).
    pub fn follower_log_start(&mut self, replica: i32, log_start: i64) -> bool {
        match self.followers.get_mut(&replica).filter(|_| self.role == Role::Leader) {
            Some(p) if p.log_start != log_start => {
                p.log_start = log_start;
                true
            }
            _ => false,
        }
    }

    /// The low watermark (Kafka's `Partition.lowWatermarkIfLeader`): the smallest log start
    /// among this leader (`local_start`) and its followers on live brokers (`live`), -1 for a
    /// live follower that has not fetched in this epoch. `None` unless this broker leads.
    pub fn low_watermark(&self, local_start: i64, live: impl Fn(i32) -> bool) -> Option<i64> {
        if self.role == Role::Leader {
            Some(
                self.followers
                    .iter()
                    .filter(|(id, _)| live(**id))
                    .map(|(_, p)| p.log_start)
                    .fold(local_start, i64::min),
            )
        } else if self.role == Role::Unassigned {
            Some(local_start)
        } else {
            None
        }
    }

    /// Proposes adding `replica` to the ISR if it qualifies (Kafka's `maybeExpandIsr`): this
    /// broker leads, no change is in flight, `replica` is a replica outside the ISR and its log
    /// end has reached `high_watermark` and the start of the leader's epoch. `eligible` says
    /// whether the metadata lets it join (registered, not fenced). Returns whether a change is
    /// now pending.
    pub fn propose_expand(&mut self, replica: i32, high_watermark: i64, broker_epoch: Option<i64>) -> bool {
        let Some(a) = self.assignment.as_ref().filter(|_| self.role == Role::Leader) else { return false };
        let Some(broker_epoch) = broker_epoch else { return false };
        if self.pending.is_some() || a.isr.contains(&replica) {
            return false;
        }
        let Some(p) = self.followers.get(&replica) else { return false };
        if p.log_end < high_watermark || p.log_end < self.epoch_start {
            return false;
        }
        let mut isr = a.isr.clone();
        isr.push(replica);
        self.pending = Some(PendingIsr {
            isr,
            leader_epoch: a.leader_epoch,
            partition_epoch: a.partition_epoch,
            sent: false,
            joining: Some((replica, broker_epoch)),
        });
        true
    }

    /// Proposes removing the ISR members (other than this leader) that have not caught up for
    /// more than `lag_ms` (Kafka's `maybeShrinkIsr`). Returns whether a change is now pending.
    pub fn propose_shrink(&mut self, local_id: i32, now_ms: i64, lag_ms: i64) -> bool {
        let Some(a) = self.assignment.as_ref().filter(|_| self.role == Role::Leader) else { return false };
        if self.pending.is_some() {
            return false;
        }
        let lagging =
            |id: &i32| *id != local_id && self.followers.get(id).is_none_or(|p| now_ms - p.last_caught_up_ms > lag_ms);
        if !a.isr.iter().any(lagging) {
            return false;
        }
        let isr: Vec<i32> = a.isr.iter().copied().filter(|id| !lagging(id)).collect();
        self.pending = Some(PendingIsr {
            isr,
            leader_epoch: a.leader_epoch,
            partition_epoch: a.partition_epoch,
            sent: false,
            joining: None,
        });
        true
    }

    /// The ISR change to send now, if one is pending and not yet sent; it is marked sent.
    pub fn take_proposal(&mut self) -> Option<PendingIsr> {
        let p = self.pending.as_mut().filter(|p| !p.sent)?;
        p.sent = true;
        Some(p.clone())
    }

    /// The controller's answer to `proposal` (or, with `None`, no answer: it is sent again).
    /// A change the controller committed stays pending until the metadata shows it; one it
    /// accepted without a change, or refused for good (the ISR named an ineligible or unknown
    /// replica), is dropped; one refused because its epochs are stale waits for the newer
    /// metadata, which drops it.
    pub fn proposal_answered(&mut self, proposal: &PendingIsr, outcome: Option<&IsrOutcome>) {
        let Some(p) = self.pending.as_mut().filter(|p| **p == PendingIsr { sent: true, ..proposal.clone() }) else {
            return;
        };
        match outcome {
            None
            | Some(IsrOutcome::Refused(
                ResponseError::NotController | ResponseError::RequestTimedOut | ResponseError::UnknownServerError,
            )) => p.sent = false,
            Some(IsrOutcome::Altered { partition_epoch, .. }) if *partition_epoch == proposal.partition_epoch => {
                self.pending = None
            }
            Some(IsrOutcome::Altered { .. })
            | Some(IsrOutcome::Refused(ResponseError::FencedLeaderEpoch | ResponseError::InvalidUpdateVersion)) => {}
            Some(IsrOutcome::Refused(_)) => self.pending = None,
        }
    }

    /// This replica is going away (deleted, or moved off this broker): it leads nothing.
    pub fn resign(&mut self) {
        self.role = Role::Follower;
        self.followers.clear();
        self.pending = None;
    }

    /// Whether an ISR change is pending (sent or not).
    pub fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// The replica a consumer in `client_rack` fetching at `fetch_offset` should read from,
    /// when it is not this leader (KIP-392, Kafka's `ReplicaManager.findPreferredReadReplica`
    /// with `RackAwareReplicaSelector`). Candidates are the ISR members whose log end has
    /// reached `fetch_offset` and whose log start is at or below it, and the leader; the leader wins when
    /// it is in the client's rack or no candidate is, else the candidate in the rack with the
    /// greatest log end, then the most recently caught up. `rack_of` gives a broker's
    /// `broker.rack`. `None` on a follower, for an empty rack, or when the leader is chosen.
    pub fn preferred_read_replica(
        &self,
        local_id: i32,
        client_rack: &str,
        fetch_offset: i64,
        rack_of: impl Fn(i32) -> Option<String>,
    ) -> Option<i32> {
        if client_rack.is_empty() || self.role != Role::Leader {
            return None;
        }
        let a = self.assignment.as_ref()?;
        if rack_of(local_id).as_deref() == Some(client_rack) {
            return None;
        }
        a.isr
            .iter()
            .filter(|id| **id != local_id)
            .filter_map(|id| self.followers.get(id).map(|f| (*id, f)))
            .filter(|(id, f)| {
                (0..=fetch_offset).contains(&f.log_start)
                    && f.log_end >= fetch_offset
                    && rack_of(*id).as_deref() == Some(client_rack)
            })
            .max_by_key(|(_, f)| (f.log_end, f.last_caught_up_ms))
            .map(|(id, _)| id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_under_min_insync_replicas_is_flagged() {
        let mut r = Replication::default();
        assert!(!r.under_min_isr(2), "unassigned");
        let a = |isr: &[i32]| Assignment {
            leader: 1,
            leader_epoch: 0,
            partition_epoch: 0,
            replicas: vec![1, 2, 3],
            isr: isr.to_vec(),
        };
        r.apply(1, a(&[1, 2]), 0, 0);
        assert!(!r.under_min_isr(2));
        r.apply(1, a(&[1]), 0, 0);
        assert!(r.under_min_isr(2));
        assert!(!r.under_min_isr(1));
        r.apply(1, Assignment { replicas: vec![1], ..a(&[1]) }, 0, 0);
        assert!(!r.under_min_isr(2), "capped at the replication factor");
    }

    #[test]
    fn consumers_are_sent_to_the_most_caught_up_in_sync_replica_of_their_rack() {
        let mut r = Replication::default();
        r.apply(
            1,
            Assignment {
                leader: 1,
                leader_epoch: 0,
                partition_epoch: 0,
                replicas: vec![1, 2, 3, 4],
                isr: vec![1, 2, 3],
            },
            100,
            0,
        );
        for (id, end) in [(2, 90), (3, 100), (4, 100)] {
            r.follower_fetched(id, end, 100, 10);
            r.follower_log_start(id, 0);
        }
        let racks = |id: i32| Some(if id == 1 { "a" } else { "b" }.to_string());
        assert_eq!(r.preferred_read_replica(1, "b", 50, racks), Some(3), "3 has more than 2");
        assert_eq!(r.preferred_read_replica(1, "b", 95, racks), Some(3));
        assert_eq!(r.preferred_read_replica(1, "a", 50, racks), None, "the leader is in the rack");
        assert_eq!(r.preferred_read_replica(1, "c", 50, racks), None, "nobody is in the rack");
        assert_eq!(r.preferred_read_replica(1, "", 50, racks), None);
        // 4 is not in the ISR, however caught up it is; none reaches offset 101.
        let only4 = |id: i32| Some(if id == 4 { "d" } else { "a" }.to_string());
        assert_eq!(r.preferred_read_replica(1, "d", 50, only4), None);
        assert_eq!(r.preferred_read_replica(1, "b", 101, racks), None);
        // A follower whose log starts past the fetch offset cannot serve it.
        r.follower_log_start(3, 60);
        assert_eq!(r.preferred_read_replica(1, "b", 50, racks), Some(2));
    }

    fn assignment(leader: i32, leader_epoch: i32, partition_epoch: i32, isr: &[i32]) -> Assignment {
        Assignment { leader, leader_epoch, partition_epoch, replicas: vec![1, 2, 3], isr: isr.to_vec() }
    }

    #[test]
    fn the_high_watermark_is_the_smallest_log_end_of_the_isr() {
        let mut r = Replication::default();
        assert_eq!(r.leader_high_watermark(1, 10), Some(10), "unassigned: its own end");
        r.apply(1, assignment(1, 0, 0, &[1, 2, 3]), 10, 0);
        assert_eq!(r.leader_high_watermark(1, 10), Some(-1), "followers have not fetched yet");
        assert!(r.follower_fetched(2, 10, 10, 1));
        assert!(r.follower_fetched(3, 7, 10, 1));
        assert_eq!(r.leader_high_watermark(1, 10), Some(7));
        assert!(r.follower_fetched(3, 10, 10, 2));
        assert_eq!(r.leader_high_watermark(1, 12), Some(10));
        // A follower outside the ISR does not hold it back.
        r.apply(1, assignment(1, 0, 1, &[1, 2]), 12, 3);
        assert!(r.follower_fetched(3, 0, 12, 3));
        assert!(r.follower_fetched(2, 12, 12, 3));
        assert_eq!(r.leader_high_watermark(1, 12), Some(12));
        assert!(!r.follower_fetched(4, 0, 12, 3), "not a replica");
        r.apply(1, assignment(2, 1, 2, &[1, 2]), 12, 4);
        assert_eq!(r.leader_high_watermark(1, 12), None, "a follower's is the leader's");
        assert!(!r.follower_fetched(2, 12, 12, 4));
    }

    #[test]
    fn a_follower_joins_once_caught_up_and_counts_from_the_proposal() {
        let mut r = Replication::default();
        r.apply(1, assignment(1, 3, 5, &[1, 2]), 100, 0);
        assert!(r.follower_fetched(2, 100, 100, 1));
        assert!(r.follower_fetched(3, 50, 100, 1));
        assert!(!r.propose_expand(3, 100, Some(7)), "behind the high watermark");
        assert!(r.follower_fetched(3, 100, 100, 2));
        assert!(!r.propose_expand(3, 100, None), "fenced");
        assert!(r.propose_expand(3, 100, Some(7)));
        // From now on it counts: the controller may commit it any moment.
        assert!(r.follower_fetched(2, 120, 120, 3));
        assert_eq!(r.leader_high_watermark(1, 120), Some(100));
        let sent = r.take_proposal().unwrap();
        assert_eq!((sent.isr.clone(), sent.leader_epoch, sent.partition_epoch), (vec![1, 2, 3], 3, 5));
        assert!(r.take_proposal().is_none(), "sent once");
        // Committed: pending until the metadata shows partition epoch 6.
        r.proposal_answered(
            &sent,
            Some(&IsrOutcome::Altered { leader: 1, leader_epoch: 3, isr: vec![1, 2, 3], partition_epoch: 6 }),
        );
        assert!(r.has_pending());
        r.apply(1, assignment(1, 3, 6, &[1, 2, 3]), 120, 4);
        assert!(!r.has_pending());
    }

    #[test]
    fn a_follower_that_stops_catching_up_is_proposed_out_after_the_lag_time() {
        let mut r = Replication::default();
        r.apply(1, assignment(1, 0, 0, &[1, 2, 3]), 0, 1_000);
        assert!(!r.propose_shrink(1, 20_000, 30_000), "followers get the lag time from the election");
        assert!(r.follower_fetched(2, 0, 0, 25_000));
        // Follower 3 fetches, but never reaches the leader's end, nor the end of the fetch before.
        assert!(r.follower_fetched(3, 0, 5, 25_000));
        assert!(r.follower_fetched(3, 1, 9, 26_000));
        assert!(r.propose_shrink(1, 32_000, 30_000));
        let sent = r.take_proposal().unwrap();
        assert_eq!(sent.isr, vec![1, 2]);
        // Until committed, 3 still counts for the high watermark.
        assert!(r.follower_fetched(2, 9, 9, 32_000));
        assert_eq!(r.leader_high_watermark(1, 9), Some(1));
        // No answer: sent again.
        r.proposal_answered(&sent, None);
        assert_eq!(r.take_proposal().unwrap().isr, vec![1, 2]);
    }

    #[test]
    fn reaching_the_previous_fetch_end_counts_as_caught_up_then() {
        let mut r = Replication::default();
        r.apply(1, assignment(1, 0, 0, &[1, 2]), 0, 0);
        assert!(r.follower_fetched(2, 0, 10, 10_000)); // leader at 10
        assert!(r.follower_fetched(2, 10, 20, 40_000)); // reached 10: caught up as of 10 000
        assert!(!r.propose_shrink(1, 40_000, 30_000));
        assert!(r.propose_shrink(1, 40_001, 30_000));
    }

    #[test]
    fn refusals_for_good_drop_the_change_and_a_new_epoch_forgets_it() {
        let mut r = Replication::default();
        r.apply(1, assignment(1, 0, 0, &[1, 2]), 0, 0);
        assert!(r.follower_fetched(3, 0, 0, 1));
        assert!(r.propose_expand(3, 0, Some(7)));
        let sent = r.take_proposal().unwrap();
        r.proposal_answered(&sent, Some(&IsrOutcome::Refused(ResponseError::IneligibleReplica)));
        assert!(!r.has_pending());
        assert!(r.propose_expand(3, 0, Some(7)));
        let sent = r.take_proposal().unwrap();
        r.proposal_answered(&sent, Some(&IsrOutcome::Refused(ResponseError::FencedLeaderEpoch)));
        assert!(r.has_pending(), "stale: waits for the newer metadata");
        r.apply(1, assignment(1, 1, 1, &[1, 2]), 0, 2);
        assert!(!r.has_pending());
        assert_eq!(r.leader_high_watermark(1, 0), Some(-1), "new epoch: positions unknown again");
    }
}
