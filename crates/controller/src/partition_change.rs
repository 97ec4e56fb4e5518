//! How a partition's registration changes, as Kafka's `PartitionChangeBuilder` decides it:
//! given the replicas and ISR a change asks for, complete a reassignment the new ISR allows,
//! track the eligible leader replicas (KIP-966) and elect a leader if the current one cannot
//! stay. Every controller decision that touches a partition's ISR or leader goes through
//! [`settle`], so the rules hold the same way for fencing, AlterPartition, elections and
//! reassignments.
//!
//! The rules:
//! - **Reassignment** (KIP-455): once every target replica (the replicas not being removed) is
//!   in the ISR, the removed ones leave the replicas and the ISR and the reassignment ends.
//! - **Eligible leader replicas** (KIP-966): while the ISR has fewer than
//!   `min.insync.replicas` members, the replicas that leave it join the ELR; they hold every
//!   record acknowledged with acks=all (an acks=all write needs `min.insync.replicas` in-sync
//!   copies, and the ISR only lost them after that). The ELR empties once the ISR has
//!   `min.insync.replicas` members again. The ISR may become empty: the partition then waits
//!   for an ELR member. A replica whose broker shut down uncleanly (it may have lost records
//!   it had not fsynced) leaves the ELR (Kafka's `uncleanShutdownReplicas`).
//! - **Last known leader** (KIP-966's `lastKnownElr` in Kafka's default "balanced" recovery):
//!   when the ISR becomes empty the leader it had is remembered; should the ISR and the ELR
//!   both be empty (every eligible replica shut down uncleanly), that replica leads again
//!   when it is live, with itself as the ISR: no replica is known to hold more. The memory
//!   is cleared once the partition has a leader.
//! - **Election**: a leader must be live and in the ISR, or, with an empty ISR, in the ELR
//!   (its ISR then becomes itself). The current leader stays if it may; else the first such
//!   replica in replica order. With unclean election allowed and no such replica, the first
//!   live replica leads with itself as the ISR (records only the others had are lost) and the
//!   ELR is cleared.

use strata_metadata::image::PartitionImage;
use strata_metadata::record::Reassignment;
use strata_metadata::{ConfigResource, MetadataImage, MetadataRecord};
use uuid::Uuid;

/// The cluster-wide defaults behind a topic's election settings (a topic's own config wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElectionDefaults {
    /// `unclean.leader.election.enable`.
    pub unclean_leader_election: bool,
    /// `min.insync.replicas`.
    pub min_insync_replicas: usize,
}

impl Default for ElectionDefaults {
    /// Kafka's: no unclean elections, one in-sync replica.
    fn default() -> Self {
        Self { unclean_leader_election: false, min_insync_replicas: 1 }
    }
}

impl ElectionDefaults {
    /// Whether a partition of `topic` may elect a leader outside its ISR and ELR (Kafka's
    /// `unclean.leader.election.enable`: the topic's setting, else the default). Doing so may
    /// lose committed records; it trades them for availability.
    pub fn unclean_allowed(&self, image: &MetadataImage, topic: &str) -> bool {
        image
            .configs(&ConfigResource::Topic(topic.to_string()))
            .and_then(|c| c.get("unclean.leader.election.enable"))
            .map_or(self.unclean_leader_election, |v| v.trim().eq_ignore_ascii_case("true"))
    }

    /// `topic`'s `min.insync.replicas` (its own, else the default).
    pub fn min_insync_replicas(&self, image: &MetadataImage, topic: &str) -> usize {
        image
            .configs(&ConfigResource::Topic(topic.to_string()))
            .and_then(|c| c.get("min.insync.replicas"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(self.min_insync_replicas)
            .max(1)
    }
}

/// A partition's registration after a change: what [`settle`] decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub elr: Vec<i32>,
    pub last_known_elr: Vec<i32>,
    pub leader: i32,
    pub reassignment: Reassignment,
}

impl From<&PartitionImage> for Settled {
    /// The registration as it stands (to change one field of).
    fn from(p: &PartitionImage) -> Self {
        Self {
            replicas: p.replicas.clone(),
            isr: p.isr.clone(),
            elr: p.elr.clone(),
            last_known_elr: p.last_known_elr.clone(),
            leader: p.leader,
            reassignment: p.reassignment.clone(),
        }
    }
}

/// How a leader may be chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Election {
    /// From the ISR, or the ELR when the ISR is empty.
    Clean,
    /// As `Clean`, then, if the topic allows unclean elections
    /// (`unclean.leader.election.enable`), any live replica.
    AsConfigured,
    /// As `Clean`, then any live replica whatever the topic's setting (ElectLeaders UNCLEAN).
    Unclean,
}

/// What a change asks of a partition's registration, before [`settle`] decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposed {
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub reassignment: Reassignment,
    /// Replicas whose broker shut down uncleanly: they leave the ELR.
    pub unclean_shutdown: Vec<i32>,
}

impl Proposed {
    /// `p`'s replicas and reassignment with the ISR `isr`.
    pub fn isr(p: &PartitionImage, isr: Vec<i32>) -> Self {
        Self { replicas: p.replicas.clone(), isr, reassignment: p.reassignment.clone(), unclean_shutdown: Vec::new() }
    }

    /// `p` as it stands (an election only).
    pub fn as_is(p: &PartitionImage) -> Self {
        Self::isr(p, p.isr.clone())
    }
}

/// Settles `p` (of `topic`) after a change that asks for `proposed`: completes the reassignment if the ISR allows it, updates the ELR and elects
/// a leader if the current one cannot stay (see the module docs). Liveness is read from
/// `image` (apply a fencing first to settle its partitions).
pub fn settle(
    image: &MetadataImage,
    topic: &str,
    p: &PartitionImage,
    proposed: Proposed,
    election: Election,
    defaults: &ElectionDefaults,
) -> Settled {
    let Proposed { mut replicas, mut isr, mut reassignment, unclean_shutdown } = proposed;
    if reassignment.is_ongoing() {
        let target_isr: Vec<i32> = isr.iter().copied().filter(|r| !reassignment.removing.contains(r)).collect();
        let target: Vec<i32> = replicas.iter().copied().filter(|r| !reassignment.removing.contains(r)).collect();
        if !target_isr.is_empty() && !target.is_empty() && target.iter().all(|r| target_isr.contains(r)) {
            replicas = target;
            isr = target_isr;
            reassignment = Reassignment::default();
        }
    }
    let mut elr = Vec::new();
    if isr.len() < defaults.min_insync_replicas(image, topic) {
        for r in p.elr.iter().chain(&p.isr) {
            if !isr.contains(r) && !elr.contains(r) && replicas.contains(r) && !unclean_shutdown.contains(r) {
                elr.push(*r);
            }
        }
    }
    let live = |id: &i32| image.brokers.get(id).is_some_and(|b| !b.fenced);
    let eligible =
        |r: &i32, isr: &[i32], elr: &[i32]| live(r) && (isr.contains(r) || (isr.is_empty() && elr.contains(r)));
    let mut leader = p.leader;
    if !(leader >= 0 && replicas.contains(&leader) && eligible(&leader, &isr, &elr)) {
        leader = replicas.iter().copied().find(|r| eligible(r, &isr, &elr)).unwrap_or(-1);
        if leader >= 0 && !isr.contains(&leader) {
            tracing::info!(topic, partition = p.partition, leader, elr = ?elr,
                "an eligible leader replica leads (KIP-966): the ISR was empty");
            isr = vec![leader];
            elr.retain(|r| *r != leader);
        }
        let unclean = match election {
            Election::Clean => false,
            Election::AsConfigured => defaults.unclean_allowed(image, topic),
            Election::Unclean => true,
        };
        let last_known = match p.last_known_elr.as_slice() {
            [r] if isr.is_empty() && elr.is_empty() && live(r) && replicas.contains(r) => Some(*r),
            _ => None,
        };
        if let (-1, Some(r)) = (leader, last_known) {
            // With one replica this is every restart after a crash: nothing to warn about.
            if replicas.len() > 1 {
                tracing::warn!(topic, partition = p.partition, leader = r,
                    "the last known leader leads again (KIP-966): every eligible replica shut down uncleanly, and no replica is known to hold more");
            }
            leader = r;
            isr = vec![r];
        }
        if leader == -1 && unclean {
            if let Some(r) = replicas.iter().copied().find(|r| live(r)) {
                tracing::warn!(topic, partition = p.partition, leader = r, lost_isr = ?isr, lost_elr = ?elr,
                    "unclean leader election: a replica outside the ISR leads; records only the ISR had are lost");
                leader = r;
                isr = vec![r];
                elr.clear();
            }
        }
    }
    let last_known_elr = if leader >= 0 {
        Vec::new()
    } else if isr.is_empty() && !p.isr.is_empty() && p.leader >= 0 {
        vec![p.leader]
    } else if let (true, true, [], Some(r)) = (
        isr.is_empty(),
        elr.is_empty(),
        p.last_known_elr.as_slice(),
        p.elr.iter().rev().find(|r| unclean_shutdown.contains(r)),
    ) {
        // The last eligible replica shut down uncleanly with no last known leader recorded
        // (a registration written before last known leaders were): it is the one that may
        // lead again, rather than none.
        vec![*r]
    } else {
        p.last_known_elr.clone()
    };
    Settled { replicas, isr, elr, last_known_elr, leader, reassignment }
}

/// The record that takes `p` to `s` (only the fields that change), or `None` when nothing does.
pub fn change_record(topic_id: Uuid, p: &PartitionImage, s: &Settled) -> Option<MetadataRecord> {
    let leader = (s.leader != p.leader).then_some(s.leader);
    let isr = (s.isr != p.isr).then(|| s.isr.clone());
    let elr = (s.elr != p.elr).then(|| s.elr.clone());
    let last_known_elr = (s.last_known_elr != p.last_known_elr).then(|| s.last_known_elr.clone());
    let replicas = (s.replicas != p.replicas).then(|| s.replicas.clone());
    let reassignment = (s.reassignment != p.reassignment).then(|| s.reassignment.clone());
    if leader.is_none()
        && isr.is_none()
        && elr.is_none()
        && last_known_elr.is_none()
        && replicas.is_none()
        && reassignment.is_none()
    {
        return None;
    }
    Some(MetadataRecord::PartitionChange {
        topic_id,
        partition: p.partition,
        leader,
        isr,
        replicas,
        reassignment,
        elr,
        last_known_elr,
    })
}

/// Test records: brokers 1..=`brokers` registered and live, topic "t" (`id`) with one
/// partition on replicas 1, 2, 3, all in sync, 1 leading.
#[cfg(test)]
pub(crate) fn one_partition_records(brokers: i32, id: Uuid) -> Vec<MetadataRecord> {
    let mut records: Vec<MetadataRecord> = (1..=brokers)
        .map(|broker_id| MetadataRecord::BrokerRegistered {
            broker_id,
            host: "h".into(),
            port: broker_id as u16,
            rack: None,
            epoch: 0,
            fenced: false,
            incarnation_id: None,
            listeners: Vec::new(),
        })
        .collect();
    records.push(MetadataRecord::TopicCreated { name: "t".into(), topic_id: id });
    records.push(MetadataRecord::PartitionCreated {
        topic_id: id,
        partition: 0,
        replicas: vec![1, 2, 3],
        leader: 1,
        leader_epoch: 0,
    });
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brokers 1..=3, topic "t" with one partition on 1, 2, 3 (all in sync, 1 leading) and
    /// `min.insync.replicas` = `min_isr`.
    fn image(min_isr: &str) -> MetadataImage {
        let mut records = one_partition_records(3, Uuid::from_u128(9));
        records.push(MetadataRecord::ConfigSet {
            resource: ConfigResource::Topic("t".into()),
            name: "min.insync.replicas".into(),
            value: Some(min_isr.into()),
        });
        MetadataImage::empty().apply(&records).unwrap().0
    }

    /// Applies `f`'s settlement of partition 0 to the image.
    fn step(img: &MetadataImage, f: impl FnOnce(&PartitionImage) -> Settled) -> MetadataImage {
        let p = img.partition("t", 0).unwrap().clone();
        let s = f(&p);
        match change_record(Uuid::from_u128(9), &p, &s) {
            Some(r) => img.apply(&[r]).unwrap().0,
            None => img.clone(),
        }
    }

    fn fence(img: &MetadataImage, id: i32) -> MetadataImage {
        let img = img.apply(&[MetadataRecord::BrokerFenced { broker_id: id }]).unwrap().0;
        step(&img, |p| {
            let isr = p.isr.iter().copied().filter(|r| *r != id).collect();
            settle(&img, "t", p, Proposed::isr(p, isr), Election::Clean, &ElectionDefaults::default())
        })
    }

    fn unfence(img: &MetadataImage, id: i32) -> MetadataImage {
        let img = img.apply(&[MetadataRecord::BrokerUnfenced { broker_id: id }]).unwrap().0;
        step(&img, |p| settle(&img, "t", p, Proposed::as_is(p), Election::Clean, &ElectionDefaults::default()))
    }

    #[test]
    fn replicas_leaving_an_isr_below_min_insync_replicas_stay_eligible() {
        let img = fence(&image("2"), 3);
        let p = img.partition("t", 0).unwrap();
        assert_eq!((p.isr.clone(), p.elr.clone(), p.leader), (vec![1, 2], vec![], 1), "at min.insync.replicas: no ELR");
        let img = fence(&img, 1);
        let p = img.partition("t", 0).unwrap();
        assert_eq!((p.isr.clone(), p.elr.clone(), p.leader), (vec![2], vec![1], 2));
        let img = fence(&img, 2);
        let p = img.partition("t", 0).unwrap();
        assert_eq!((p.isr.clone(), p.elr.clone(), p.leader), (vec![], vec![1, 2], -1), "the ISR may be empty");
        // Broker 3 left the ISR while it still had two members: not eligible.
        let img = unfence(&img, 3);
        assert_eq!(img.partition("t", 0).unwrap().leader, -1);
        // Broker 1 is eligible: it leads, with itself as the ISR.
        let img = unfence(&img, 1);
        let p = img.partition("t", 0).unwrap();
        assert_eq!((p.isr.clone(), p.elr.clone(), p.leader), (vec![1], vec![2], 1));
        // Back to min.insync.replicas in-sync replicas: the ELR empties.
        let img = step(&img, |p| {
            settle(&img, "t", p, Proposed::isr(p, vec![1, 3]), Election::Clean, &ElectionDefaults::default())
        });
        let p = img.partition("t", 0).unwrap();
        assert_eq!((p.isr.clone(), p.elr.clone()), (vec![1, 3], vec![]));
    }

    #[test]
    fn with_one_insync_replica_required_the_last_member_is_eligible() {
        let img = fence(&fence(&fence(&image("1"), 3), 2), 1);
        let p = img.partition("t", 0).unwrap();
        assert_eq!((p.isr.clone(), p.elr.clone(), p.leader), (vec![], vec![1], -1));
        let img = unfence(&unfence(&img, 2), 1);
        let p = img.partition("t", 0).unwrap();
        assert_eq!((p.isr.clone(), p.elr.clone(), p.leader), (vec![1], vec![], 1));
    }

    #[test]
    fn an_unclean_election_clears_the_elr() {
        let img = fence(&fence(&fence(&image("2"), 3), 2), 1);
        let img = img.apply(&[MetadataRecord::BrokerUnfenced { broker_id: 3 }]).unwrap().0;
        let unclean = ElectionDefaults { unclean_leader_election: true, ..Default::default() };
        let p = img.partition("t", 0).unwrap().clone();
        let s = settle(&img, "t", &p, Proposed::as_is(&p), Election::AsConfigured, &unclean);
        assert_eq!((s.leader, s.isr, s.elr), (3, vec![3], vec![]));
    }
}
