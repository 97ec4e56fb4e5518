//! Classic group protocol: JoinGroup / SyncGroup / Heartbeat / LeaveGroup / Describe.
#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

use common::*;
use strata_group::classic::ClassicState;
use strata_group::GroupConfig;
use strata_protocol::kafka_protocol::messages::leave_group_request::MemberIdentity;
use strata_protocol::kafka_protocol::messages::*;

const RANGE: &[(&str, &[u8])] = &[("range", b"m-range"), ("roundrobin", b"m-rr")];

/// Three dynamic members join during the initial delay; returns (harness, member ids in
/// join order, generation, leader).
fn three_member_group() -> (Harness, Vec<String>, i32, String) {
    let mut h = Harness::new(GroupConfig::default());
    let mut ids = Vec::new();
    let mut tokens = Vec::new();
    for _ in 0..3 {
        let (id, t) = h.join_dynamic("g", RANGE);
        ids.push(id);
        tokens.push(t);
        h.now += 100;
    }
    // Initial delay (3 s) is extended once because members joined during it.
    let first = h.shard.next_deadline().unwrap();
    assert_eq!(first, 3_000);
    h.tick(first);
    assert!(h.completed.is_empty(), "delay must be extended while members keep joining");
    assert_eq!(h.shard.classic_group("g").unwrap().state(), ClassicState::PreparingRebalance);
    let second = h.shard.next_deadline().unwrap();
    assert_eq!(second, 6_000);
    h.tick(second);
    let responses: Vec<JoinGroupResponse> = tokens.iter().map(|t| h.join_done(*t)).collect();
    let leader = responses[0].leader.to_string();
    for r in &responses {
        assert_eq!(r.error_code, 0);
        assert_eq!(r.generation_id, 1);
        assert_eq!(r.protocol_name.as_deref(), Some("range"));
        assert_eq!(r.protocol_type.as_deref(), Some("consumer"));
        assert_eq!(r.leader.as_str(), leader);
        if r.member_id.as_str() == leader {
            assert_eq!(r.members.len(), 3);
            assert!(r.members.iter().all(|m| &m.metadata[..] == b"m-range"));
        } else {
            assert!(r.members.is_empty());
        }
    }
    assert!(h.log.is_empty(), "join phase writes nothing");
    // Followers sync first and park; the leader's sync completes everyone.
    let followers: Vec<&String> = ids.iter().filter(|i| **i != leader).collect();
    let mut parked = Vec::new();
    for f in &followers {
        let (t, r) = h.sync("g", f, 1, &[]);
        assert!(r.is_none());
        parked.push((t, (*f).clone()));
    }
    let assignments: Vec<(String, Vec<u8>)> =
        ids.iter().enumerate().map(|(i, id)| (id.clone(), vec![i as u8; i + 1])).collect();
    let a: Vec<(&str, &[u8])> = assignments.iter().map(|(m, b)| (m.as_str(), b.as_slice())).collect();
    let (_, r) = h.sync("g", &leader, 1, &a);
    let leader_resp = r.expect("leader answered directly");
    assert_eq!(leader_resp.error_code, 0);
    let li = ids.iter().position(|i| *i == leader).unwrap();
    assert_eq!(&leader_resp.assignment[..], &assignments[li].1[..]);
    assert_eq!(leader_resp.protocol_name.as_deref(), Some("range"));
    for (t, id) in parked {
        let r = h.sync_done(t);
        let i = ids.iter().position(|x| *x == id).unwrap();
        assert_eq!(r.error_code, 0);
        assert_eq!(&r.assignment[..], &assignments[i].1[..], "assignment bytes exactly as the leader sent them");
    }
    assert_eq!(h.log.len(), 1, "one GroupMetadata record on completion");
    assert_eq!(h.shard.classic_group("g").unwrap().state(), ClassicState::Stable);
    (h, ids, 1, leader)
}

#[test]
fn three_members_join_and_sync() {
    let (h, ..) = three_member_group();
    h.assert_replay_matches();
}

#[test]
fn protocol_is_chosen_by_vote_among_common_protocols() {
    let mut h = Harness::new(GroupConfig { initial_rebalance_delay_ms: 0, ..GroupConfig::default() });
    // With no initial delay the first member completes the join alone.
    let r = h.join_dynamic_now("g", &[("range", b""), ("rr", b""), ("sticky", b"")]);
    assert_eq!(r.protocol_name.as_deref(), Some("range"));
    // A member supporting none of the group's protocols is rejected.
    let (_, r) = h.join(&Harness::join_req("g", "", None, &[("other", b"")]), 9);
    assert_eq!(r.unwrap().error_code, 23);
    // Votes: a prefers range, b and c prefer rr; sticky is not supported by c.
    let mut h = Harness::new(GroupConfig::default());
    let (_, ta) = h.join_dynamic("g", &[("range", b""), ("rr", b""), ("sticky", b"")]);
    let (_, tb) = h.join_dynamic("g", &[("rr", b""), ("range", b""), ("sticky", b"")]);
    let (_, tc) = h.join_dynamic("g", &[("rr", b""), ("range", b"")]);
    h.tick(3_000);
    h.tick(6_000);
    for t in [ta, tb, tc] {
        assert_eq!(h.join_done(t).protocol_name.as_deref(), Some("rr"));
    }
}

#[test]
fn member_without_heartbeat_expires_and_the_rest_rebalance() {
    let (mut h, ids, gen, _leader) = three_member_group();
    let (alive, dead) = (&ids[..2], &ids[2]);
    for step in 1..=3 {
        h.tick(6_000 + step * 3_000);
        for m in alive {
            assert_eq!(h.heartbeat("g", m, gen, None), 0);
        }
    }
    assert_eq!(h.shard.next_deadline(), Some(16_000));
    // 10 s session since the sync at 6 s: `dead` expires at 16 s.
    h.tick(16_000);
    let g = h.shard.classic_group("g").unwrap();
    assert!(!g.member_ids().contains(dead));
    assert_eq!(g.state(), ClassicState::PreparingRebalance);
    assert_eq!(h.heartbeat("g", &ids[0], gen, None), 27, "REBALANCE_IN_PROGRESS");
    assert_eq!(h.heartbeat("g", dead, gen, None), 25, "UNKNOWN_MEMBER_ID");
    // Both survivors rejoin; the join completes as soon as the last one arrives.
    let (t0, r) = h.join(&Harness::join_req("g", &alive[0], None, RANGE), 9);
    assert!(r.is_none());
    let (t1, r) = h.join(&Harness::join_req("g", &alive[1], None, RANGE), 9);
    let r1 = r.expect("the last joiner's own response comes back directly");
    let r0 = h.join_done(t0);
    let _ = t1;
    assert_eq!(r0.generation_id, gen + 1);
    assert_eq!(r1.generation_id, gen + 1);
    assert_eq!(h.shard.classic_group("g").unwrap().state(), ClassicState::CompletingRebalance);
}

#[test]
fn clean_leave_batched_and_last_member_leaves_empty() {
    let (mut h, ids, gen, _) = three_member_group();
    let ctx = h.ctx(5);
    let req = LeaveGroupRequest::default().with_group_id(gid("g")).with_members(vec![
        MemberIdentity::default().with_member_id(s(&ids[2])),
        MemberIdentity::default().with_member_id(s("nobody")),
    ]);
    let r = h.shard.leave_group(h.now, &ctx, &req);
    let r = h.absorb(r).unwrap();
    assert_eq!(r.error_code, 0);
    assert_eq!(r.members[0].error_code, 0);
    assert_eq!(r.members[1].error_code, 25);
    assert_eq!(h.shard.classic_group("g").unwrap().state(), ClassicState::PreparingRebalance);
    assert_eq!(h.heartbeat("g", &ids[0], gen, None), 27);
    // Old-style (v1) leaves of the other two: the last one empties the group.
    for id in &ids[..2] {
        let ctx = h.ctx(1);
        let r = h.shard.leave_group(
            h.now,
            &ctx,
            &LeaveGroupRequest::default().with_group_id(gid("g")).with_member_id(s(id)),
        );
        assert_eq!(h.absorb(r).unwrap().error_code, 0);
    }
    let g = h.shard.classic_group("g").unwrap();
    assert_eq!(g.state(), ClassicState::Empty);
    assert_eq!(g.generation(), gen + 1);
    assert!(h.log.len() >= 2, "empty group is persisted");
    h.assert_replay_matches();
}

/// A static leader restarting with a new member id in a Stable group: before JoinGroup v9
/// (librdkafka sends v5) it is answered with the old leader id and no members, so it acts as
/// a follower and keeps the stored assignment; from v9 it is told it leads, with the members,
/// and to skip the assignment (KIP-814).
#[test]
fn static_leader_restart_is_answered_as_kafka_does() {
    for version in [5, 9] {
        let mut h = Harness::new(GroupConfig::default());
        let (ta, _) = h.join(&Harness::join_req("g", "", Some("inst-a"), RANGE), version);
        let (tb, _) = h.join(&Harness::join_req("g", "", Some("inst-b"), RANGE), version);
        h.tick(3_000);
        h.tick(6_000);
        let (ra, rb) = (h.join_done(ta), h.join_done(tb));
        let leader = ra.leader.to_string();
        let (a, b) = (ra.member_id.to_string(), rb.member_id.to_string());
        let (follower, leader_inst) = if leader == a { (b.clone(), "inst-a") } else { (a.clone(), "inst-b") };
        let (tf, _) = h.sync("g", &follower, 1, &[]);
        let (_, r) = h.sync("g", &leader, 1, &[(a.as_str(), b"A"), (b.as_str(), b"B")]);
        assert_eq!(r.unwrap().error_code, 0);
        h.sync_done(tf);

        let (_, r) = h.join(&Harness::join_req("g", "", Some(leader_inst), RANGE), version);
        let r = r.expect("answered without a rebalance");
        assert_eq!(r.error_code, 0);
        let new_id = r.member_id.to_string();
        assert_ne!(new_id, leader);
        if version < 9 {
            assert_eq!(r.leader.as_str(), leader, "v{version}: the old leader id");
            assert!(r.members.is_empty(), "v{version}: no member list, so no assignor runs");
            assert!(!r.skip_assignment);
        } else {
            assert_eq!(r.leader.as_str(), new_id, "v{version}: the new id leads");
            assert_eq!(r.members.len(), 2);
            assert!(r.skip_assignment);
        }
        // Either way the stored assignment stands.
        let (_, r) = h.sync("g", &new_id, 1, &[]);
        let expected: &[u8] = if leader == a { b"A" } else { b"B" };
        assert_eq!(&r.unwrap().assignment[..], expected, "v{version}");
        assert_eq!(h.shard.classic_group("g").unwrap().state(), ClassicState::Stable);
        h.assert_replay_matches();
    }
}

#[test]
fn static_member_restart_keeps_its_place_without_rebalance() {
    let mut h = Harness::new(GroupConfig::default());
    // Static members skip KIP-394 and park at once.
    let (ta, r) = h.join(&Harness::join_req("g", "", Some("inst-a"), RANGE), 9);
    assert!(r.is_none());
    let (tb, r) = h.join(&Harness::join_req("g", "", Some("inst-b"), RANGE), 9);
    assert!(r.is_none());
    h.tick(3_000);
    h.tick(6_000);
    let (ra, rb) = (h.join_done(ta), h.join_done(tb));
    let leader = ra.leader.to_string();
    let (a, b) = (ra.member_id.to_string(), rb.member_id.to_string());
    let follower = if leader == a { b.clone() } else { a.clone() };
    let follower_inst = if leader == a { "inst-b" } else { "inst-a" };
    let (tf, _) = h.sync("g", &follower, 1, &[]);
    let (_, r) = h.sync("g", &leader, 1, &[(a.as_str(), b"A"), (b.as_str(), b"B")]);
    assert_eq!(r.unwrap().error_code, 0);
    h.sync_done(tf);
    let records_before = h.log.len();

    // The follower restarts: unknown member id, same instance id and protocols.
    let (_, r) = h.join(&Harness::join_req("g", "", Some(follower_inst), RANGE), 9);
    let r = r.expect("answered without a rebalance");
    assert_eq!(r.error_code, 0);
    assert_eq!(r.generation_id, 1);
    assert_ne!(r.member_id.as_str(), follower);
    assert!(r.members.is_empty());
    let new_id = r.member_id.to_string();
    let g = h.shard.classic_group("g").unwrap();
    assert_eq!(g.state(), ClassicState::Stable);
    assert_eq!(g.generation(), 1);
    assert_eq!(h.log.len(), records_before + 1, "the replacement is persisted");
    // The new id syncs and gets the old member's assignment; the old id is fenced.
    let (_, r) = h.sync("g", &new_id, 1, &[]);
    let expected: &[u8] = if follower == a { b"A" } else { b"B" };
    assert_eq!(&r.unwrap().assignment[..], expected);
    assert_eq!(h.heartbeat("g", &follower, 1, Some(follower_inst)), 82, "FENCED_INSTANCE_ID");
    assert_eq!(h.heartbeat("g", &new_id, 1, Some(follower_inst)), 0);
    h.assert_replay_matches();

    // A restart with different protocols does rebalance.
    let (_, r) = h.join(&Harness::join_req("g", "", Some(follower_inst), &[("roundrobin", b"x")]), 9);
    assert!(r.is_none());
    assert_eq!(h.shard.classic_group("g").unwrap().state(), ClassicState::PreparingRebalance);
}

#[test]
fn generation_and_membership_fencing() {
    let (mut h, ids, gen, leader) = three_member_group();
    assert_eq!(h.heartbeat("g", &ids[0], gen + 1, None), 22, "ILLEGAL_GENERATION");
    assert_eq!(h.heartbeat("g", "ghost", gen, None), 25);
    assert_eq!(h.heartbeat("nogroup", "ghost", gen, None), 25);
    let (_, r) = h.sync("g", &ids[0], gen - 1, &[]);
    assert_eq!(r.unwrap().error_code, 22);
    // A rejoin by the leader starts a rebalance: syncs now fail with REBALANCE_IN_PROGRESS.
    let (t, r) = h.join(&Harness::join_req("g", &leader, None, RANGE), 9);
    assert!(r.is_none());
    let (_, r) = h.sync("g", &ids[1], gen, &[]);
    assert_eq!(r.unwrap().error_code, 27);
    // Joining with a known-but-wrong member id for a new group.
    let (_, r) = h.join(&Harness::join_req("other", "made-up", None, RANGE), 9);
    assert_eq!(r.unwrap().error_code, 25);
    // Wrong protocol type.
    let mut bad = Harness::join_req("g", "", None, RANGE);
    bad.protocol_type = s("connect");
    let (_, r) = h.join(&bad, 9);
    assert_eq!(r.unwrap().error_code, 23);
    // Session timeout outside the broker's bounds.
    let mut bad = Harness::join_req("g", "", None, RANGE);
    bad.session_timeout_ms = 10;
    let (_, r) = h.join(&bad, 9);
    assert_eq!(r.unwrap().error_code, 26);
    let _ = t;
}

#[test]
fn sync_timeout_drops_members_that_never_sync() {
    let mut h = Harness::new(GroupConfig { initial_rebalance_delay_ms: 0, ..GroupConfig::default() });
    let r = h.join_dynamic_now("g", RANGE);
    assert_eq!(r.leader, r.member_id);
    // The leader never syncs: after the rebalance timeout it is removed.
    h.tick(20_000);
    let g = h.shard.classic_group("g").unwrap();
    assert_eq!(g.state(), ClassicState::Empty);
    assert!(g.member_ids().is_empty());
    h.assert_replay_matches();
}

#[test]
fn pending_kip394_member_expires_and_unblocks_the_rebalance() {
    let (mut h, ids, gen, _) = three_member_group();
    // A newcomer gets a member id but never comes back.
    let (_, r) = h.join(&Harness::join_req("g", "", None, RANGE), 9);
    assert_eq!(r.unwrap().error_code, 79);
    let tokens: Vec<_> = ids.iter().map(|id| h.join(&Harness::join_req("g", id, None, RANGE), 9).0).collect();
    assert!(tokens.iter().all(|t| !h.completed.contains_key(t)), "pending member holds the join");
    h.tick(h.now + 10_000);
    for t in tokens {
        assert_eq!(h.join_done(t).generation_id, gen + 1);
    }
}

#[test]
fn old_clients_join_without_member_id_round_trip() {
    let mut h = Harness::new(GroupConfig { initial_rebalance_delay_ms: 0, ..GroupConfig::default() });
    let (_, r) = h.join(&Harness::join_req("g", "", None, RANGE), 3);
    let r = r.expect("a lone v3 member completes at once");
    assert_eq!(r.error_code, 0);
    assert!(r.member_id.starts_with("client-"));
    assert_eq!(r.protocol_name.as_deref(), Some("range"));
}

#[test]
fn describe_and_list_groups() {
    let (mut h, ids, ..) = three_member_group();
    let ctx = h.ctx(5);
    let r = h.shard.describe_groups(
        h.now,
        &ctx,
        &DescribeGroupsRequest::default().with_groups(vec![gid("g"), gid("missing")]),
    );
    let r = h.absorb(r).unwrap();
    let g = &r.groups[0];
    assert_eq!(g.group_state.as_str(), "Stable");
    assert_eq!(g.protocol_type.as_str(), "consumer");
    assert_eq!(g.protocol_data.as_str(), "range");
    assert_eq!(g.members.len(), 3);
    assert!(g.members.iter().all(|m| &m.member_metadata[..] == b"m-range" && m.client_host.as_str() == "/127.0.0.1"));
    assert!(ids.iter().all(|id| g.members.iter().any(|m| m.member_id.as_str() == id)));
    assert_eq!(r.groups[1].group_state.as_str(), "Dead");
    assert_eq!(r.groups[1].error_code, 0);

    let ctx = h.ctx(5);
    let all = h.absorb(h.shard.list_groups(h.now, &ctx, &ListGroupsRequest::default())).unwrap();
    assert_eq!(all.groups.len(), 1);
    assert_eq!(all.groups[0].group_type.as_str(), "classic");
    let ctx = h.ctx(5);
    let none = h
        .absorb(h.shard.list_groups(h.now, &ctx, &ListGroupsRequest::default().with_states_filter(vec![s("empty")])))
        .unwrap();
    assert!(none.groups.is_empty());
    let ctx = h.ctx(5);
    let stable = h
        .absorb(h.shard.list_groups(
            h.now,
            &ctx,
            &ListGroupsRequest::default().with_states_filter(vec![s("STABLE")]).with_types_filter(vec![s("Classic")]),
        ))
        .unwrap();
    assert_eq!(stable.groups.len(), 1);
    let ctx = h.ctx(5);
    let consumer = h
        .absorb(h.shard.list_groups(h.now, &ctx, &ListGroupsRequest::default().with_types_filter(vec![s("consumer")])))
        .unwrap();
    assert!(consumer.groups.is_empty());
}

#[test]
fn unload_reports_parked_requests() {
    let mut h = Harness::new(GroupConfig::default());
    let (_, t) = h.join_dynamic("g", RANGE);
    assert_eq!(h.shard.parked_tokens(), vec![t]);
}
