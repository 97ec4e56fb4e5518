//! Offsets: commit / fetch / delete, retention, group deletion, replay.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use common::*;
use strata_group::GroupConfig;
use strata_protocol::kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use strata_protocol::kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use strata_protocol::kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use strata_protocol::kafka_protocol::messages::*;

fn commit(
    h: &mut Harness,
    group: &str,
    member: &str,
    generation: i32,
    topic: &str,
    parts: &[(i32, i64, i32, Option<&str>)],
) -> Vec<i16> {
    let ctx = h.ctx(8);
    let req = OffsetCommitRequest::default()
        .with_group_id(gid(group))
        .with_member_id(s(member))
        .with_generation_id_or_member_epoch(generation)
        .with_topics(vec![OffsetCommitRequestTopic::default().with_name(TopicName(s(topic))).with_partitions(
            parts
                .iter()
                .map(|(p, o, e, m)| {
                    OffsetCommitRequestPartition::default()
                        .with_partition_index(*p)
                        .with_committed_offset(*o)
                        .with_committed_leader_epoch(*e)
                        .with_committed_metadata(m.map(s))
                })
                .collect(),
        )]);
    let topics = Topics::default().with("t", 1, 8).with("u", 2, 8);
    let r = h.shard.offset_commit(h.now, &ctx, &req, &topics);
    h.absorb(r).unwrap().topics[0].partitions.iter().map(|p| p.error_code).collect()
}

#[test]
fn commit_fetch_round_trip_with_metadata_and_leader_epoch() {
    let mut h = Harness::new(GroupConfig::default());
    h.now = 1_000;
    assert_eq!(commit(&mut h, "g", "", -1, "t", &[(0, 42, 7, Some("meta")), (1, 10, -1, None)]), vec![0, 0]);
    assert_eq!(h.log.len(), 2);
    // v7 single-group form.
    let ctx = h.ctx(7);
    let req = OffsetFetchRequest::default().with_group_id(gid("g")).with_topics(Some(vec![
        OffsetFetchRequestTopic::default().with_name(TopicName(s("t"))).with_partition_indexes(vec![0, 1, 2]),
    ]));
    let r = h.absorb(h.shard.offset_fetch(h.now, &ctx, &req)).unwrap();
    let p = &r.topics[0].partitions;
    assert_eq!((p[0].committed_offset, p[0].committed_leader_epoch, p[0].metadata.as_deref()), (42, 7, Some("meta")));
    assert_eq!((p[1].committed_offset, p[1].metadata.as_deref()), (10, Some("")));
    assert_eq!(p[2].committed_offset, -1, "uncommitted partition");
    // v8 multi-group form, null topics = everything.
    let ctx = h.ctx(8);
    let req = OffsetFetchRequest::default().with_groups(vec![
        OffsetFetchRequestGroup::default().with_group_id(gid("g")).with_topics(None),
        OffsetFetchRequestGroup::default().with_group_id(gid("other")).with_topics(Some(vec![
            OffsetFetchRequestTopics::default().with_name(TopicName(s("t"))).with_partition_indexes(vec![0]),
        ])),
    ]);
    let r = h.absorb(h.shard.offset_fetch(h.now, &ctx, &req)).unwrap();
    let g = &r.groups[0];
    assert_eq!(g.topics.len(), 1);
    assert_eq!(g.topics[0].partitions.len(), 2);
    assert_eq!(g.topics[0].partitions[0].committed_leader_epoch, 7);
    assert_eq!(r.groups[1].topics[0].partitions[0].committed_offset, -1);
    let stored = h.shard.committed_offset("g", "t", 0).unwrap();
    assert_eq!(stored.commit_timestamp_ms, 1_000);
    h.assert_replay_matches();
}

#[test]
fn commit_checks_member_and_generation_of_live_groups() {
    let mut h = Harness::new(GroupConfig { initial_rebalance_delay_ms: 0, ..GroupConfig::default() });
    let sub = consumer_subscription(&["t"]);
    let r = h.join_dynamic_now("g", &[("range", &sub)]);
    let me = r.member_id.to_string();
    // CompletingRebalance: member knows the generation but has no assignment yet.
    assert_eq!(commit(&mut h, "g", &me, 1, "t", &[(0, 1, -1, None)]), vec![27]);
    let (_, r) = h.sync("g", &me, 1, &[(me.as_str(), b"a")]);
    assert_eq!(r.unwrap().error_code, 0);
    assert_eq!(commit(&mut h, "g", &me, 1, "t", &[(0, 5, -1, None)]), vec![0]);
    assert_eq!(commit(&mut h, "g", &me, 2, "t", &[(0, 5, -1, None)]), vec![22]);
    assert_eq!(commit(&mut h, "g", "ghost", 1, "t", &[(0, 5, -1, None)]), vec![25]);
    assert_eq!(commit(&mut h, "g", "", -1, "t", &[(0, 5, -1, None)]), vec![25], "no simple commits to a live group");
    assert_eq!(commit(&mut h, "nogroup", "m", 3, "t", &[(0, 5, -1, None)]), vec![22]);
    let long = "x".repeat(5000);
    assert_eq!(commit(&mut h, "g", &me, 1, "t", &[(1, 5, -1, Some(&long))]), vec![12], "OFFSET_METADATA_TOO_LARGE");

    // OffsetDelete: subscribed topic is protected, others are not.
    let ctx = h.ctx(0);
    let del = |topic: &str| {
        OffsetDeleteRequest::default().with_group_id(gid("g")).with_topics(vec![OffsetDeleteRequestTopic::default()
            .with_name(TopicName(s(topic)))
            .with_partitions(vec![OffsetDeleteRequestPartition::default().with_partition_index(0)])])
    };
    let r = h.shard.offset_delete(h.now, &ctx, &del("t"));
    let r = h.absorb(r).unwrap();
    assert_eq!(r.topics[0].partitions[0].error_code, 86, "GROUP_SUBSCRIBED_TO_TOPIC");
    let r = h.shard.offset_delete(h.now, &ctx, &del("unused"));
    let r = h.absorb(r).unwrap();
    assert_eq!(r.topics[0].partitions[0].error_code, 0);

    // DeleteGroups refuses a non-empty group, then succeeds once it is empty.
    let ctx = h.ctx(2);
    let req = DeleteGroupsRequest::default().with_groups_names(vec![gid("g"), gid("missing")]);
    let r = h.shard.delete_groups(h.now, &ctx, &req);
    let r = h.absorb(r).unwrap();
    assert_eq!(r.results[0].error_code, 68);
    assert_eq!(r.results[1].error_code, 69);
    let ctx = h.ctx(1);
    let r =
        h.shard.leave_group(h.now, &ctx, &LeaveGroupRequest::default().with_group_id(gid("g")).with_member_id(s(&me)));
    h.absorb(r);
    h.assert_replay_matches();
    let ctx = h.ctx(2);
    let r = h.shard.delete_groups(h.now, &ctx, &req);
    let r = h.absorb(r).unwrap();
    assert_eq!(r.results[0].error_code, 0);
    assert!(h.shard.committed_offset("g", "t", 0).is_none());
    assert!(h.shard.classic_group("g").is_none());
    h.assert_replay_matches();
}

#[test]
fn retention_expires_offsets_of_empty_groups_with_tombstones() {
    let cfg = GroupConfig {
        offsets_retention_ms: 100_000,
        offsets_retention_check_interval_ms: 10_000,
        ..GroupConfig::default()
    };
    let mut h = Harness::new(cfg);
    h.now = 5_000;
    commit(&mut h, "simple", "", -1, "t", &[(0, 1, -1, None)]);
    h.now = 50_000;
    commit(&mut h, "simple", "", -1, "t", &[(1, 1, -1, None)]);
    let before = h.log.len();
    let mut t = 0;
    while t < 105_000 {
        t = h.shard.next_deadline().unwrap();
        h.tick(t);
    }
    // Partition 0 (committed at 5 s) expired, partition 1 (50 s) not yet.
    assert!(h.shard.committed_offset("simple", "t", 0).is_none());
    assert!(h.shard.committed_offset("simple", "t", 1).is_some());
    assert!(h.log[before..].iter().all(|r| r.is_tombstone()));
    while t < 160_000 {
        t = h.shard.next_deadline().unwrap();
        h.tick(t);
    }
    assert!(h.shard.committed_offset("simple", "t", 1).is_none());
    assert!(h.shard.classic_group("simple").is_none(), "empty group without offsets is deleted");
    h.assert_replay_matches();
}

#[test]
fn the_longest_retention_check_interval_never_overflows() {
    // Kafka accepts Long.MAX_VALUE for offsets.retention.check.interval.ms ("never"); adding it
    // to the clock used to overflow and panic on the first tick.
    let cfg = GroupConfig { offsets_retention_check_interval_ms: i64::MAX, ..GroupConfig::default() };
    // The driver's first tick comes at the wall clock's time, not at 0.
    let now = 1_700_000_000_000;
    let mut shard = strata_group::GroupCoordinatorShard::new(cfg);
    let _ = shard.tick(now);
    let _ = shard.tick(now + 1_000);
    assert_eq!(shard.next_deadline(), Some(i64::MAX));
}

#[test]
fn unknown_topics_and_partitions_are_refused_and_the_rest_commits() {
    let mut h = Harness::new(GroupConfig::default());
    // Partition 8 of "t" (8 partitions) and topic "nope" are unknown.
    assert_eq!(commit(&mut h, "g", "", -1, "t", &[(0, 5, -1, None), (8, 5, -1, None)]), vec![0, 3]);
    assert_eq!(commit(&mut h, "g", "", -1, "nope", &[(0, 5, -1, None)]), vec![3]);
    assert!(h.shard.committed_offset("g", "t", 0).is_some());
    assert!(h.shard.committed_offset("g", "t", 8).is_none());
    assert!(h.shard.committed_offset("g", "nope", 0).is_none());
    // A request with nothing known creates no group.
    assert_eq!(commit(&mut h, "fresh", "", -1, "nope", &[(0, 5, -1, None)]), vec![3]);
    assert!(h.shard.snapshot_records().iter().all(|r| r.group_id() != "fresh"));
}

#[test]
fn deleting_a_topic_deletes_its_offsets_in_every_group() {
    let mut h = Harness::new(GroupConfig::default());
    commit(&mut h, "a", "", -1, "t", &[(0, 3, -1, None), (1, 4, -1, None)]);
    commit(&mut h, "a", "", -1, "u", &[(0, 7, -1, None)]);
    commit(&mut h, "b", "", -1, "t", &[(0, 9, -1, None)]);
    let r = h.shard.delete_offsets_of_topics(&|t| t == "t");
    h.absorb(r).unwrap();
    for (g, p) in [("a", 0), ("a", 1), ("b", 0)] {
        assert!(h.shard.committed_offset(g, "t", p).is_none(), "{g}/{p}");
    }
    assert_eq!(h.shard.committed_offset("a", "u", 0).map(|o| o.offset), Some(7));
    // Group "b" had nothing else: it is gone, durably (a replay agrees).
    assert!(h.shard.snapshot_records().iter().all(|r| r.group_id() != "b"));
    h.assert_replay_matches();
}
