//! Where the replicas of new partitions go (Kafka's `AdminUtils.assignReplicasToBrokers`):
//! pure, so the controller's decisions stay functions of the image.
//!
//! Brokers are listed rack by rack in turn (Kafka's `getRackAlternatedBrokerList`: the first
//! broker of each rack, then the second of each, ...), so consecutive brokers sit in different
//! racks when there are racks. Partition `p`'s leader is the broker at `start + p` in that
//! list, which spreads leadership evenly; its followers come after the leader at a distance
//! that grows by one each time the partitions have gone once round the list, so that
//! followers spread too. Only unfenced brokers take new replicas.

use std::collections::BTreeMap;

/// A broker eligible for new replicas: id and rack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: i32,
    pub rack: Option<String>,
}

/// The brokers in rack-alternated order: by rack (sorted), each rack's brokers by id, taken
/// one from each rack in turn. Brokers without a rack form one group.
pub fn rack_alternated(brokers: &[Candidate]) -> Vec<i32> {
    let mut by_rack: BTreeMap<Option<&str>, Vec<i32>> = BTreeMap::new();
    for b in brokers {
        by_rack.entry(b.rack.as_deref()).or_default().push(b.id);
    }
    for ids in by_rack.values_mut() {
        ids.sort_unstable();
    }
    let mut out = Vec::with_capacity(brokers.len());
    let mut round = 0;
    while out.len() < brokers.len() {
        for ids in by_rack.values() {
            if let Some(id) = ids.get(round) {
                out.push(*id);
            }
        }
        round += 1;
    }
    out
}

/// Replicas (leader first) of partitions `first..first + count`, `rf` each, over `brokers`,
/// starting at index `start` of the rack-alternated list. Empty lists when there are fewer
/// brokers than `rf` (the caller refuses that first).
pub fn place(brokers: &[Candidate], first: i32, count: i32, rf: usize, start: usize) -> Vec<Vec<i32>> {
    let list = rack_alternated(brokers);
    let n = list.len();
    if n == 0 || rf > n {
        return vec![Vec::new(); usize::try_from(count).unwrap_or(0)];
    }
    (first..first + count)
        .map(|p| {
            let p = usize::try_from(p).unwrap_or(0);
            let leader = (start + p) % n;
            // The follower shift grows by one each time the partitions go round the list.
            let shift = (start / n.max(1) + p / n) % n.max(1);
            let mut replicas = vec![list[leader]];
            for j in 0..rf.saturating_sub(1) {
                let step = 1 + (shift + j) % (n - 1).max(1);
                replicas.push(list[(leader + step) % n]);
            }
            replicas
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brokers(racks: &[(i32, Option<&str>)]) -> Vec<Candidate> {
        racks.iter().map(|(id, r)| Candidate { id: *id, rack: r.map(str::to_owned) }).collect()
    }

    #[test]
    fn racks_alternate() {
        let b = brokers(&[(1, Some("a")), (2, Some("a")), (3, Some("b")), (4, Some("b")), (5, Some("c"))]);
        assert_eq!(rack_alternated(&b), vec![1, 3, 5, 2, 4]);
        let plain = brokers(&[(3, None), (1, None), (2, None)]);
        assert_eq!(rack_alternated(&plain), vec![1, 2, 3]);
    }

    #[test]
    fn leaders_balance_replicas_differ_and_racks_spread() {
        let b =
            brokers(&[(1, Some("a")), (2, Some("a")), (3, Some("b")), (4, Some("b")), (5, Some("c")), (6, Some("c"))]);
        let racks: BTreeMap<i32, &str> =
            [(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c"), (6, "c")].into_iter().collect();
        let placed = place(&b, 0, 60, 3, 4);
        let mut leaders: BTreeMap<i32, usize> = BTreeMap::new();
        for replicas in &placed {
            assert_eq!(replicas.len(), 3);
            let mut distinct = replicas.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct.len(), 3, "{replicas:?}");
            *leaders.entry(replicas[0]).or_default() += 1;
            let used: std::collections::BTreeSet<&str> = replicas.iter().map(|r| racks[r]).collect();
            assert!(used.len() >= 2, "replicas {replicas:?} sit in one rack");
        }
        assert_eq!(leaders.values().copied().collect::<Vec<_>>(), vec![10; 6], "{leaders:?}");
    }

    #[test]
    fn one_broker_or_too_few() {
        let one = brokers(&[(7, None)]);
        assert_eq!(place(&one, 0, 3, 1, 5), vec![vec![7], vec![7], vec![7]]);
        assert_eq!(place(&one, 0, 2, 2, 0), vec![Vec::<i32>::new(), Vec::new()]);
        assert_eq!(place(&[], 0, 1, 1, 0), vec![Vec::<i32>::new()]);
    }
}
