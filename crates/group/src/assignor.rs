//! Server-side assignors for KIP-848 consumer groups: `uniform` and `range`.
//!
//! Both are pure functions of the members' subscriptions, the subscribed topics' partition
//! counts, and (for `uniform`) the previous target assignment. Every partition of a topic
//! at least one member subscribes to is assigned to exactly one member subscribed to it.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use crate::record::Assignment;

/// What an assignor knows about one member.
#[derive(Debug, Clone, Default)]
pub struct MemberSpec {
    /// Ids of the subscribed topics that exist.
    pub subscribed: BTreeSet<Uuid>,
    /// The member's previous target assignment (for stickiness).
    pub previous: Assignment,
}

/// Names of the assignors this crate implements.
pub const ASSIGNORS: &[&str] = &["uniform", "range"];

/// Runs the assignor `name` (`None` if unknown). `topics` maps topic id to partition count.
pub fn assign(
    name: &str,
    members: &BTreeMap<String, MemberSpec>,
    topics: &BTreeMap<Uuid, i32>,
) -> Option<BTreeMap<String, Assignment>> {
    match name {
        "uniform" => Some(uniform(members, topics)),
        "range" => Some(range(members, topics)),
        _ => None,
    }
}

/// Sticky and balanced. With identical subscriptions every member ends with ⌊P/N⌋ or
/// ⌈P/N⌉ partitions and keeps as many of its previous partitions as that allows; with
/// differing subscriptions each unassigned partition goes to the least-loaded subscriber.
pub fn uniform(members: &BTreeMap<String, MemberSpec>, topics: &BTreeMap<Uuid, i32>) -> BTreeMap<String, Assignment> {
    let mut result: BTreeMap<String, Assignment> = members.keys().map(|m| (m.clone(), Assignment::new())).collect();
    if members.is_empty() {
        return result;
    }
    let mut unassigned: BTreeSet<(Uuid, i32)> = BTreeSet::new();
    for (tid, n) in topics {
        if members.values().any(|m| m.subscribed.contains(tid)) {
            unassigned.extend((0..*n).map(|p| (*tid, p)));
        }
    }
    let total = unassigned.len();
    let min_quota = total / members.len();
    let mut extras = total % members.len();
    let mut counts: BTreeMap<&str, usize> = members.keys().map(|m| (m.as_str(), 0)).collect();
    // Sticky pass: keep previous partitions that are still valid, up to the quota.
    for (id, spec) in members {
        let valid: Vec<(Uuid, i32)> = spec
            .previous
            .iter()
            .filter(|(t, _)| spec.subscribed.contains(*t))
            .flat_map(|(t, ps)| ps.iter().map(move |p| (*t, *p)))
            .filter(|tp| unassigned.contains(tp))
            .collect();
        let mut quota = min_quota;
        if valid.len() > min_quota && extras > 0 {
            quota += 1;
            extras -= 1;
        }
        for tp in valid.into_iter().take(quota) {
            unassigned.remove(&tp);
            add(&mut result, id, tp);
            if let Some(c) = counts.get_mut(id.as_str()) {
                *c += 1;
            }
        }
    }
    // Fill: each remaining partition to the least-loaded subscribed member.
    for (tid, p) in unassigned {
        let best = members
            .iter()
            .filter(|(_, s)| s.subscribed.contains(&tid))
            .min_by_key(|(id, _)| (counts.get(id.as_str()).copied().unwrap_or(0), id.as_str()))
            .map(|(id, _)| id.clone());
        if let Some(id) = best {
            add(&mut result, &id, (tid, p));
            if let Some(c) = counts.get_mut(id.as_str()) {
                *c += 1;
            }
        }
    }
    result
}

/// Kafka's range assignment, per topic: the subscribers in member-id order each take a
/// contiguous range; the first `P mod N` take one extra. Co-partitioned topics line up.
pub fn range(members: &BTreeMap<String, MemberSpec>, topics: &BTreeMap<Uuid, i32>) -> BTreeMap<String, Assignment> {
    let mut result: BTreeMap<String, Assignment> = members.keys().map(|m| (m.clone(), Assignment::new())).collect();
    for (tid, n) in topics {
        let subs: Vec<&String> = members.iter().filter(|(_, s)| s.subscribed.contains(tid)).map(|(id, _)| id).collect();
        if subs.is_empty() || *n <= 0 {
            continue;
        }
        let k = subs.len() as i64;
        let n = i64::from(*n);
        let (per, extra) = (n / k, n % k);
        for (i, id) in subs.into_iter().enumerate() {
            let i = i as i64;
            let start = i * per + i.min(extra);
            let len = per + i64::from(i < extra);
            for p in start..start + len {
                if let Ok(p) = i32::try_from(p) {
                    add(&mut result, id, (*tid, p));
                }
            }
        }
    }
    result
}

fn add(result: &mut BTreeMap<String, Assignment>, member: &str, (t, p): (Uuid, i32)) {
    if let Some(a) = result.get_mut(member) {
        a.entry(t).or_default().insert(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn count(a: &Assignment) -> usize {
        a.values().map(BTreeSet::len).sum()
    }

    fn members(n: usize, topics: &[Uuid]) -> BTreeMap<String, MemberSpec> {
        (0..n)
            .map(|i| {
                (
                    format!("m{i}"),
                    MemberSpec { subscribed: topics.iter().copied().collect(), previous: Assignment::new() },
                )
            })
            .collect()
    }

    #[test]
    fn range_matches_kafka() {
        let t = Uuid::from_u128(1);
        let r = range(&members(3, &[t]), &BTreeMap::from([(t, 7)]));
        assert_eq!(r["m0"][&t], BTreeSet::from([0, 1, 2]));
        assert_eq!(r["m1"][&t], BTreeSet::from([3, 4]));
        assert_eq!(r["m2"][&t], BTreeSet::from([5, 6]));
    }

    #[test]
    fn uniform_is_sticky_when_a_member_joins() {
        let t = Uuid::from_u128(1);
        let topics = BTreeMap::from([(t, 6)]);
        let mut m = members(2, &[t]);
        let first = uniform(&m, &topics);
        for (id, spec) in m.iter_mut() {
            spec.previous = first[id].clone();
        }
        m.insert("m2".into(), MemberSpec { subscribed: BTreeSet::from([t]), previous: Assignment::new() });
        let second = uniform(&m, &topics);
        for id in ["m0", "m1"] {
            assert_eq!(count(&second[id]), 2);
            assert!(second[id][&t].is_subset(&first[id][&t]), "{id} lost partitions it could keep");
        }
        assert_eq!(count(&second["m2"]), 2);
    }

    proptest! {
        #[test]
        fn every_partition_assigned_once_and_balanced(n in 1usize..6, parts in proptest::collection::vec(0i32..9, 1..4), use_range in any::<bool>()) {
            let ids: Vec<Uuid> = (0..parts.len()).map(|i| Uuid::from_u128(i as u128 + 1)).collect();
            let topics: BTreeMap<Uuid, i32> = ids.iter().copied().zip(parts.iter().copied()).collect();
            let m = members(n, &ids);
            let r = if use_range { range(&m, &topics) } else { uniform(&m, &topics) };
            let mut seen = BTreeSet::new();
            for a in r.values() {
                for (t, ps) in a {
                    for p in ps {
                        prop_assert!(seen.insert((*t, *p)), "assigned twice");
                    }
                }
            }
            let total: usize = parts.iter().map(|p| *p as usize).sum();
            prop_assert_eq!(seen.len(), total);
            if !use_range {
                let counts: Vec<usize> = r.values().map(count).collect();
                let (lo, hi) = (counts.iter().min().copied().unwrap_or(0), counts.iter().max().copied().unwrap_or(0));
                prop_assert!(hi - lo <= 1, "unbalanced {:?}", counts);
            }
        }
    }
}
