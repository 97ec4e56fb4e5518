//! KIP-848 ConsumerGroupHeartbeat: join, reconciliation with revocation first, leave,
//! static members, fencing, session expiry, describe, replay.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use common::*;
use strata_group::GroupConfig;
use strata_protocol::kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
use strata_protocol::kafka_protocol::messages::*;
use uuid::Uuid;

const T: u128 = 1;

fn hb(
    h: &mut Harness,
    topics: &Topics,
    member: &str,
    epoch: i32,
    instance: Option<&str>,
    owned: Option<Vec<i32>>,
) -> ConsumerGroupHeartbeatResponse {
    let ctx = h.ctx(0);
    let mut req = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(gid("cg"))
        .with_member_id(s(member))
        .with_member_epoch(epoch)
        .with_instance_id(instance.map(s))
        .with_topic_partitions(
            owned.map(|ps| vec![TopicPartitions::default().with_topic_id(Uuid::from_u128(T)).with_partitions(ps)]),
        );
    if epoch == 0 {
        req = req
            .with_rebalance_timeout_ms(30_000)
            .with_subscribed_topic_names(Some(vec![TopicName(s("t"))]))
            .with_topic_partitions(Some(vec![]));
    }
    let r = h.shard.consumer_group_heartbeat(h.now, &ctx, &req, topics);
    h.absorb(r).unwrap()
}

fn parts(r: &ConsumerGroupHeartbeatResponse) -> Option<Vec<i32>> {
    r.assignment.as_ref().map(|a| a.topic_partitions.iter().flat_map(|t| t.partitions.clone()).collect())
}

#[test]
fn revocation_happens_before_reassignment() {
    let topics = Topics::default().with("t", T, 4);
    let mut h = Harness::new(GroupConfig::default());
    let a = hb(&mut h, &topics, "", 0, None, None);
    assert_eq!(a.error_code, 0);
    let a_id = a.member_id.clone().unwrap().to_string();
    assert_eq!(a.member_epoch, 1);
    assert_eq!(a.heartbeat_interval_ms, 5_000);
    assert_eq!(parts(&a), Some(vec![0, 1, 2, 3]));

    let b = hb(&mut h, &topics, "", 0, None, None);
    let b_id = b.member_id.clone().unwrap().to_string();
    assert_eq!(b.member_epoch, 2);
    assert_eq!(parts(&b), Some(vec![]), "b must wait until a revokes");
    // a is told to revoke two partitions, keeping its epoch.
    let a2 = hb(&mut h, &topics, &a_id, 1, None, Some(vec![0, 1, 2, 3]));
    assert_eq!(a2.member_epoch, 1);
    let kept = parts(&a2).unwrap();
    assert_eq!(kept.len(), 2);
    // b still gets nothing while a holds them.
    let b2 = hb(&mut h, &topics, &b_id, 2, None, Some(vec![]));
    assert_eq!(parts(&b2).unwrap_or_default(), Vec::<i32>::new());
    // a confirms the revocation and moves to epoch 2; then b receives the freed partitions.
    let a3 = hb(&mut h, &topics, &a_id, 1, None, Some(kept.clone()));
    assert_eq!(a3.member_epoch, 2);
    let b3 = hb(&mut h, &topics, &b_id, 2, None, Some(vec![]));
    let mut got = parts(&b3).unwrap();
    got.extend(kept);
    got.sort();
    assert_eq!(got, vec![0, 1, 2, 3]);
    let g = h.shard.consumer_group("cg").unwrap();
    assert_eq!(g.group_epoch(), 2);
    assert_eq!(g.assignment_epoch(), 2);
    h.assert_replay_matches();

    // Fencing.
    assert_eq!(hb(&mut h, &topics, &a_id, 7, None, None).error_code, 110, "FENCED_MEMBER_EPOCH");
    assert_eq!(hb(&mut h, &topics, "ghost", 2, None, None).error_code, 25);
    // Leave with -1: b's partitions go back to a after a rebalance.
    let l = hb(&mut h, &topics, &b_id, -1, None, None);
    assert_eq!((l.error_code, l.member_epoch), (0, -1));
    let a4 = hb(&mut h, &topics, &a_id, 2, None, Some(parts(&a3).unwrap()));
    assert_eq!(a4.member_epoch, 3);
    assert_eq!(parts(&a4), Some(vec![0, 1, 2, 3]));
    h.assert_replay_matches();
}

#[test]
fn session_expiry_fences_a_silent_member() {
    let topics = Topics::default().with("t", T, 2);
    let mut h = Harness::new(GroupConfig::default());
    let a = hb(&mut h, &topics, "", 0, None, None);
    let a_id = a.member_id.unwrap().to_string();
    h.tick(45_000);
    assert!(h.shard.consumer_group("cg").unwrap().member(&a_id).is_none());
    assert_eq!(hb(&mut h, &topics, &a_id, 1, None, None).error_code, 25);
    h.assert_replay_matches();
}

#[test]
fn static_member_restart_takes_over_without_new_epoch() {
    let topics = Topics::default().with("t", T, 2);
    let mut h = Harness::new(GroupConfig::default());
    let a = hb(&mut h, &topics, "", 0, Some("i1"), None);
    let a_id = a.member_id.unwrap().to_string();
    // Another member id may not take the instance id while it is held.
    assert_eq!(hb(&mut h, &topics, "", 0, Some("i1"), None).error_code, 111, "UNRELEASED_INSTANCE_ID");
    let l = hb(&mut h, &topics, &a_id, -2, Some("i1"), None);
    assert_eq!(l.member_epoch, -2);
    let epoch_before = h.shard.consumer_group("cg").unwrap().group_epoch();
    let n = hb(&mut h, &topics, "", 0, Some("i1"), None);
    assert_eq!(n.error_code, 0);
    assert_ne!(n.member_id.as_deref(), Some(a_id.as_str()));
    assert_eq!(parts(&n), Some(vec![0, 1]));
    assert_eq!(h.shard.consumer_group("cg").unwrap().group_epoch(), epoch_before);
    h.assert_replay_matches();
}

#[test]
fn describe_and_validation() {
    let topics = Topics::default().with("t", T, 3);
    let mut h = Harness::new(GroupConfig::default());
    let a = hb(&mut h, &topics, "", 0, None, None);
    let ctx = h.ctx(0);
    let r = h.shard.consumer_group_describe(
        h.now,
        &ctx,
        &ConsumerGroupDescribeRequest::default().with_group_ids(vec![gid("cg"), gid("nope")]),
        &topics,
    );
    let r = h.absorb(r).unwrap();
    let g = &r.groups[0];
    assert_eq!(g.group_state.as_str(), "Stable");
    assert_eq!(g.assignor_name.as_str(), "uniform");
    assert_eq!(g.members[0].member_id, a.member_id.unwrap());
    assert_eq!(g.members[0].assignment.topic_partitions[0].topic_name.as_str(), "t");
    assert_eq!(r.groups[1].error_code, 69);
    // Unsupported assignor and a classic join to a live consumer group.
    let ctx = h.ctx(0);
    let req = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(gid("cg"))
        .with_member_epoch(0)
        .with_rebalance_timeout_ms(1)
        .with_subscribed_topic_names(Some(vec![TopicName(s("t"))]))
        .with_topic_partitions(Some(vec![]))
        .with_server_assignor(Some(s("sticky")));
    let r = h.shard.consumer_group_heartbeat(h.now, &ctx, &req, &topics);
    assert_eq!(h.absorb(r).unwrap().error_code, 112);
    let (_, r) = h.join(&Harness::join_req("cg", "", None, &[("range", b"")]), 9);
    assert_eq!(r.unwrap().error_code, 23);
}

fn regex_join(h: &mut Harness, topics: &Topics, regex: &str) -> ConsumerGroupHeartbeatResponse {
    let ctx = h.ctx(0);
    let req = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(gid("cg"))
        .with_member_epoch(0)
        .with_rebalance_timeout_ms(30_000)
        .with_subscribed_topic_regex(Some(s(regex)))
        .with_topic_partitions(Some(vec![]));
    let r = h.shard.consumer_group_heartbeat(h.now, &ctx, &req, topics);
    h.absorb(r).unwrap()
}

fn assigned_topics(r: &ConsumerGroupHeartbeatResponse) -> Vec<(Uuid, usize)> {
    r.assignment.as_ref().map_or_else(Vec::new, |a| {
        let mut v: Vec<(Uuid, usize)> = a.topic_partitions.iter().map(|t| (t.topic_id, t.partitions.len())).collect();
        v.sort();
        v
    })
}

/// KIP-848 `SubscribedTopicRegex`: resolved on the coordinator against every topic name
/// (whole-name match, RE2 syntax), and again when topics are created or deleted.
#[test]
fn an_invalid_regex_leaves_no_group_behind() {
    let topics = Topics::default().with("t", T, 1);
    let mut h = Harness::new(GroupConfig::default());
    let records = h.log.len();
    assert_eq!(regex_join(&mut h, &topics, "(").error_code, 128);
    assert!(h.shard.consumer_group("cg").is_none());
    assert_eq!(h.log.len(), records);
}

#[test]
fn regex_subscriptions_follow_the_topics() {
    let topics = Topics::default().with("orders-eu", 1, 2).with("orders-us", 2, 1).with("payments", 3, 1);
    let mut h = Harness::new(GroupConfig::default());
    let a = regex_join(&mut h, &topics, "orders-.*");
    assert_eq!(a.error_code, 0, "{:?}", a.error_message);
    assert_eq!(assigned_topics(&a), vec![(Uuid::from_u128(1), 2), (Uuid::from_u128(2), 1)]);
    let id = a.member_id.clone().unwrap().to_string();
    // "orders" alone does not match: the whole name must.
    let topics = topics.with("orders", 4, 1).with("orders-ap", 5, 3);
    let r = hb(&mut h, &topics, &id, a.member_epoch, None, Some(vec![]));
    assert!(r.member_epoch > a.member_epoch, "a new matching topic bumps the group epoch");
    assert_eq!(assigned_topics(&r), vec![(Uuid::from_u128(1), 2), (Uuid::from_u128(2), 1), (Uuid::from_u128(5), 3)]);
    h.assert_replay_matches();
    // Deleting a matching topic takes it out again.
    let mut fewer = Topics::default().with("orders-eu", 1, 2).with("payments", 3, 1);
    fewer = fewer.with("orders", 4, 1);
    let epoch_before = h.shard.consumer_group("cg").unwrap().group_epoch();
    let r2 = hb(&mut h, &fewer, &id, r.member_epoch, None, Some(vec![]));
    assert!(h.shard.consumer_group("cg").unwrap().group_epoch() > epoch_before);
    // Once it confirms the revocation, it holds the one topic left.
    let r3 = hb(&mut h, &fewer, &id, r2.member_epoch, None, Some(vec![]));
    let last = if r3.assignment.is_some() { r3 } else { r2 };
    assert_eq!(assigned_topics(&last), vec![(Uuid::from_u128(1), 2)]);
    // RE2's \Q...\E quoting (Java's Pattern.quote) works.
    let quoted = regex_join(&mut h, &fewer, "\\Qorders-eu\\E|pay.*");
    assert_eq!(quoted.error_code, 0, "{:?}", quoted.error_message);
    // A pattern that does not compile is INVALID_REGULAR_EXPRESSION.
    let bad = regex_join(&mut h, &topics, "orders-(");
    assert_eq!(bad.error_code, 128);
    let message = bad.error_message.as_deref().unwrap_or_default().to_owned();
    assert!(message.starts_with("Invalid regular expression 'orders-('"), "{message}");
    let described = {
        let ctx = h.ctx(0);
        let req = ConsumerGroupDescribeRequest::default().with_group_ids(vec![gid("cg")]);
        let r = h.shard.consumer_group_describe(h.now, &ctx, &req, &fewer);
        h.absorb(r).unwrap()
    };
    let mut regexes: Vec<Option<String>> =
        described.groups[0].members.iter().map(|m| m.subscribed_topic_regex.as_ref().map(|r| r.to_string())).collect();
    regexes.sort();
    assert_eq!(regexes, vec![Some("\\Qorders-eu\\E|pay.*".to_owned()), Some("orders-.*".to_owned())]);
}
