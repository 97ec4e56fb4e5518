//! Partition reassignment (KIP-455), as Kafka's `ReplicationControlManager` and
//! `PartitionChangeBuilder` do it: pure functions from the image to the records.
//!
//! A reassignment goes through three stages:
//! 1. AlterPartitionReassignments writes the partition's replicas as the target replicas
//!    followed by those leaving, with `adding` (targets that were not replicas) and
//!    `removing` (replicas that are not targets). New replicas start fetching as followers.
//! 2. The leader adds each new replica to the ISR once it has caught up (AlterPartition).
//! 3. When every target replica is in the ISR, the same change that says so also drops the
//!    leaving replicas from the replicas and the ISR and ends the reassignment; a leader that
//!    is leaving hands over to the first target replica in the ISR.
//!
//! A reassignment that only reorders or removes in-sync replicas completes at once. A new
//! target during a reassignment replaces it (computed from the replicas as they stand); a
//! `None` target cancels it: the added replicas go, the removed ones stay.

use strata_metadata::channel::{ApiError, OngoingReassignment, ReassignmentResult, ReassignmentTarget};

use crate::partition_change::{change_record, settle, Election, ElectionDefaults, Proposed};
use strata_metadata::image::PartitionImage;
use strata_metadata::record::Reassignment;
use strata_metadata::{MetadataImage, MetadataRecord};
use strata_protocol::ResponseError;

/// AlterPartitionReassignments (key 45) as Kafka's controller decides it, partition by
/// partition:
/// - UNKNOWN_TOPIC_OR_PARTITION for a partition that does not exist;
/// - INVALID_REPLICA_ASSIGNMENT for an empty target, a repeated broker, a broker that is not
///   registered, or a cancel that would need an unclean election the topic does not allow;
/// - INVALID_REPLICATION_FACTOR when `allow_rf_change` is false (v1, KIP-860) and the target
///   has another size than the partition's replicas;
/// - NO_REASSIGNMENT_IN_PROGRESS for a cancel of a partition not being reassigned.
pub fn alter_reassignments(
    image: &MetadataImage,
    targets: &[ReassignmentTarget],
    allow_rf_change: bool,
    defaults: &ElectionDefaults,
) -> (Vec<MetadataRecord>, Vec<ReassignmentResult>) {
    let mut records = Vec::new();
    let mut results = Vec::with_capacity(targets.len());
    // Later targets for one partition see the records of earlier ones.
    let mut current = image.clone();
    for (topic, index, target) in targets {
        let result =
            reassign_one(&current, topic, *index, target.as_deref(), allow_rf_change, defaults).and_then(|record| {
                if let Some(record) = record {
                    let (next, _) = current.apply(std::slice::from_ref(&record)).map_err(|e| {
                        ApiError::new(ResponseError::UnknownServerError, format!("reassignment inconsistent: {e}"))
                    })?;
                    current = next;
                    records.push(record);
                }
                Ok(())
            });
        results.push((topic.clone(), *index, result));
    }
    (records, results)
}

fn reassign_one(
    image: &MetadataImage,
    topic: &str,
    index: i32,
    target: Option<&[i32]>,
    allow_rf_change: bool,
    defaults: &ElectionDefaults,
) -> Result<Option<MetadataRecord>, ApiError> {
    let invalid = |m: String| ApiError::new(ResponseError::InvalidReplicaAssignment, m);
    let t = image.topic(topic).ok_or_else(|| {
        ApiError::new(ResponseError::UnknownTopicOrPartition, format!("topic {topic} does not exist"))
    })?;
    let p = usize::try_from(index).ok().and_then(|i| t.partitions.get(i)).ok_or_else(|| {
        ApiError::new(ResponseError::UnknownTopicOrPartition, format!("partition {topic}-{index} does not exist"))
    })?;
    let unclean = defaults.unclean_allowed(image, topic);
    let settled = match target {
        None => {
            if !p.reassignment.is_ongoing() {
                return Err(ApiError::new(
                    ResponseError::NoReassignmentInProgress,
                    format!("no reassignment of {topic}-{index} is in progress"),
                ));
            }
            // Revert (Kafka's `PartitionReassignmentRevert`): the adding replicas go.
            let adding = &p.reassignment.adding;
            let replicas: Vec<i32> = p.replicas.iter().copied().filter(|r| !adding.contains(r)).collect();
            let mut isr: Vec<i32> = p.isr.iter().copied().filter(|r| !adding.contains(r)).collect();
            if isr.is_empty() {
                if !unclean {
                    return Err(invalid(format!(
                        "cancelling the reassignment of {topic}-{index} would need an unclean leader election"
                    )));
                }
                isr = replicas.first().copied().into_iter().collect();
            }
            settle(
                image,
                topic,
                p,
                Proposed { replicas, isr, reassignment: Reassignment::default(), unclean_shutdown: Vec::new() },
                Election::AsConfigured,
                defaults,
            )
        }
        Some(target) => {
            if target.is_empty() {
                return Err(invalid("the target replica list is empty".into()));
            }
            let mut seen = target.to_vec();
            seen.sort_unstable();
            seen.dedup();
            if seen.len() != target.len() {
                return Err(invalid(format!("the target replicas {target:?} repeat a broker")));
            }
            if let Some(b) = target.iter().find(|b| !image.brokers.contains_key(b)) {
                return Err(invalid(format!("the target replicas include broker {b}, which is not registered")));
            }
            let original = p.replicas.len() - p.reassignment.adding.len();
            if !allow_rf_change && target.len() != original {
                return Err(ApiError::new(
                    ResponseError::InvalidReplicationFactor,
                    format!(
                        "the target changes the replication factor of {topic}-{index} from {original} to {}",
                        target.len()
                    ),
                ));
            }
            let removing: Vec<i32> = p.replicas.iter().copied().filter(|r| !target.contains(r)).collect();
            let adding: Vec<i32> = target.iter().copied().filter(|r| !p.replicas.contains(r)).collect();
            let mut replicas = target.to_vec();
            replicas.extend(&removing);
            settle(
                image,
                topic,
                p,
                Proposed {
                    replicas,
                    isr: p.isr.clone(),
                    reassignment: Reassignment { adding, removing },
                    unclean_shutdown: Vec::new(),
                },
                Election::AsConfigured,
                defaults,
            )
        }
    };
    Ok(change_record(t.id, p, &settled))
}

/// The reassignments in progress: of every partition (`None`), or of the given (topic,
/// partitions) (unknown ones are left out, as in Kafka).
pub fn list_reassignments(image: &MetadataImage, wanted: Option<&[(String, Vec<i32>)]>) -> Vec<OngoingReassignment> {
    let ongoing = |topic: &str, p: &PartitionImage| {
        p.reassignment.is_ongoing().then(|| OngoingReassignment {
            topic: topic.to_string(),
            partition: p.partition,
            replicas: p.replicas.clone(),
            adding: p.reassignment.adding.clone(),
            removing: p.reassignment.removing.clone(),
        })
    };
    match wanted {
        None => image.topics().flat_map(|t| t.partitions.iter().filter_map(|p| ongoing(&t.name, p))).collect(),
        Some(wanted) => wanted
            .iter()
            .filter_map(|(name, parts)| image.topic(name).map(|t| (t, parts)))
            .flat_map(|(t, parts)| {
                parts
                    .iter()
                    .filter_map(|i| usize::try_from(*i).ok().and_then(|i| t.partitions.get(i)))
                    .filter_map(|p| ongoing(&t.name, p))
                    .collect::<Vec<_>>()
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    /// Brokers 1..=4 registered and live; topic "t" with one partition on replicas 1, 2, 3,
    /// all in sync, 1 leading.
    fn image() -> MetadataImage {
        let records = crate::partition_change::one_partition_records(4, Uuid::from_u128(7));
        MetadataImage::empty().apply(&records).unwrap().0
    }

    fn reassign(img: &MetadataImage, target: Option<Vec<i32>>) -> (MetadataImage, Result<(), ApiError>) {
        let (records, mut results) =
            alter_reassignments(img, &[("t".into(), 0, target)], true, &ElectionDefaults::default());
        (img.apply(&records).unwrap().0, results.remove(0).2)
    }

    #[test]
    fn moving_a_replica_adds_it_then_removes_the_old_one_once_it_is_in_sync() {
        let (img, r) = reassign(&image(), Some(vec![4, 2, 3]));
        r.unwrap();
        let p = img.partition("t", 0).unwrap();
        assert_eq!(p.replicas, vec![4, 2, 3, 1]);
        assert_eq!(p.reassignment, Reassignment { adding: vec![4], removing: vec![1] });
        assert_eq!(p.leader, 1, "the leader stays until the new replica is in sync");
        assert_eq!(list_reassignments(&img, None).len(), 1);

        // The new replica caught up: the leader's ISR expansion completes the reassignment.
        let s = settle(&img, "t", p, Proposed::isr(p, vec![1, 2, 3, 4]), Election::Clean, &ElectionDefaults::default());
        assert_eq!(s.replicas, vec![4, 2, 3]);
        assert_eq!(s.isr, vec![2, 3, 4]);
        assert_eq!(s.leader, 4, "the leaving leader hands over to the first target in the ISR");
        assert!(!s.reassignment.is_ongoing());
    }

    #[test]
    fn reordering_or_shrinking_in_sync_replicas_completes_at_once() {
        let (img, r) = reassign(&image(), Some(vec![3, 2, 1]));
        r.unwrap();
        let p = img.partition("t", 0).unwrap();
        assert_eq!((p.replicas.clone(), p.leader), (vec![3, 2, 1], 1), "a reorder moves no leader");
        assert!(!p.reassignment.is_ongoing());

        let (img, r) = reassign(&img, Some(vec![2]));
        r.unwrap();
        let p = img.partition("t", 0).unwrap();
        assert_eq!((p.replicas.clone(), p.isr.clone(), p.leader), (vec![2], vec![2], 2));
        assert!(list_reassignments(&img, None).is_empty());
    }

    #[test]
    fn cancelling_drops_the_added_replicas_and_keeps_the_removed_ones() {
        let (img, _) = reassign(&image(), Some(vec![4, 2, 3]));
        let (img, r) = reassign(&img, None);
        r.unwrap();
        let p = img.partition("t", 0).unwrap();
        assert_eq!((p.replicas.clone(), p.isr.clone(), p.leader), (vec![2, 3, 1], vec![1, 2, 3], 1));
        assert!(!p.reassignment.is_ongoing());
        let (_, r) = reassign(&img, None);
        assert_eq!(r.unwrap_err().error, ResponseError::NoReassignmentInProgress);
    }

    #[test]
    fn invalid_targets_are_refused() {
        let img = image();
        for (target, error) in [
            (vec![], ResponseError::InvalidReplicaAssignment),
            (vec![1, 1, 2], ResponseError::InvalidReplicaAssignment),
            (vec![1, 2, 9], ResponseError::InvalidReplicaAssignment),
        ] {
            assert_eq!(reassign(&img, Some(target)).1.unwrap_err().error, error);
        }
        let (records, results) =
            alter_reassignments(&img, &[("t".into(), 0, Some(vec![1, 2]))], false, &ElectionDefaults::default());
        assert!(records.is_empty());
        assert_eq!(results[0].2.as_ref().unwrap_err().error, ResponseError::InvalidReplicationFactor);
        let (_, results) =
            alter_reassignments(&img, &[("t".into(), 5, Some(vec![1]))], true, &ElectionDefaults::default());
        assert_eq!(results[0].2.as_ref().unwrap_err().error, ResponseError::UnknownTopicOrPartition);
    }

    #[test]
    fn a_new_target_replaces_the_reassignment_in_progress() {
        let (img, _) = reassign(&image(), Some(vec![4, 2, 3]));
        let (img, r) = reassign(&img, Some(vec![1, 2, 3]));
        r.unwrap();
        let p = img.partition("t", 0).unwrap();
        assert_eq!(p.replicas, vec![1, 2, 3], "4 was never in sync, so going back completes at once");
        assert!(!p.reassignment.is_ongoing());
    }
}
