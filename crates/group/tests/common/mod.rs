//! Test driver: feeds requests to a shard, keeps the "log" of produced records (after a
//! byte round trip), and collects parked completions.
#![allow(dead_code)]

use std::collections::BTreeMap;

use bytes::Bytes;
use strata_group::{
    CoordinatorResult, GroupConfig, GroupCoordinatorShard, GroupRecord, RequestContext, RequestToken, ResponseKind,
    TopicMetadata,
};
use strata_protocol::kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use strata_protocol::kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use strata_protocol::kafka_protocol::messages::*;
use strata_protocol::kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

pub fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_owned())
}
pub fn gid(x: &str) -> GroupId {
    GroupId(s(x))
}

pub struct Harness {
    pub shard: GroupCoordinatorShard,
    pub log: Vec<GroupRecord>,
    pub completed: BTreeMap<RequestToken, ResponseKind>,
    next: u64,
    pub now: i64,
}

impl Harness {
    pub fn new(cfg: GroupConfig) -> Self {
        let mut h = Harness {
            shard: GroupCoordinatorShard::with_seed(cfg, 42),
            log: Vec::new(),
            completed: BTreeMap::new(),
            next: 0,
            now: 0,
        };
        // As the driver does after loading: the first tick arms the retention timer.
        h.tick(0);
        h
    }

    pub fn ctx(&mut self, version: i16) -> RequestContext {
        self.next += 1;
        RequestContext {
            token: RequestToken(self.next),
            api_version: version,
            client_id: "client".into(),
            client_host: "/127.0.0.1".into(),
        }
    }

    /// Appends records (through encode/decode) and stores completions.
    pub fn absorb<T>(&mut self, r: CoordinatorResult<T>) -> Option<T> {
        for rec in r.records {
            let (k, v) = rec.encode();
            let back = GroupRecord::decode(&k, v.as_deref()).expect("decode");
            assert_eq!(back, rec);
            self.log.push(back);
        }
        for (t, k) in r.completions {
            assert!(self.completed.insert(t, k).is_none(), "token completed twice");
        }
        r.response
    }

    pub fn tick(&mut self, now: i64) {
        self.now = now;
        let r = self.shard.tick(now);
        self.absorb(r);
    }

    pub fn join_req(
        group: &str,
        member: &str,
        instance: Option<&str>,
        protocols: &[(&str, &[u8])],
    ) -> JoinGroupRequest {
        JoinGroupRequest::default()
            .with_group_id(gid(group))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(20_000)
            .with_member_id(s(member))
            .with_group_instance_id(instance.map(s))
            .with_protocol_type(s("consumer"))
            .with_protocols(
                protocols
                    .iter()
                    .map(|(n, m)| {
                        JoinGroupRequestProtocol::default().with_name(s(n)).with_metadata(Bytes::copy_from_slice(m))
                    })
                    .collect(),
            )
    }

    /// Sends a JoinGroup; returns its token and immediate response.
    pub fn join(&mut self, req: &JoinGroupRequest, version: i16) -> (RequestToken, Option<JoinGroupResponse>) {
        let ctx = self.ctx(version);
        let r = self.shard.join_group(self.now, &ctx, req);
        (ctx.token, self.absorb(r))
    }

    /// KIP-394 dance: join without id, get MEMBER_ID_REQUIRED, rejoin with it (parks).
    pub fn join_dynamic(&mut self, group: &str, protocols: &[(&str, &[u8])]) -> (String, RequestToken) {
        let (_, r) = self.join(&Self::join_req(group, "", None, protocols), 9);
        let r = r.expect("immediate");
        assert_eq!(r.error_code, 79);
        let id = r.member_id.to_string();
        let (t, r) = self.join(&Self::join_req(group, &id, None, protocols), 9);
        assert!(r.is_none(), "rejoin should park: {r:?}");
        (id, t)
    }

    /// KIP-394 dance where the rejoin completes at once (no initial delay, lone member).
    pub fn join_dynamic_now(&mut self, group: &str, protocols: &[(&str, &[u8])]) -> JoinGroupResponse {
        let (_, r) = self.join(&Self::join_req(group, "", None, protocols), 9);
        let id = r.expect("immediate").member_id.to_string();
        let (_, r) = self.join(&Self::join_req(group, &id, None, protocols), 9);
        r.expect("completes at once")
    }

    pub fn join_done(&mut self, t: RequestToken) -> JoinGroupResponse {
        match self.completed.remove(&t) {
            Some(ResponseKind::JoinGroup(r)) => r,
            other => panic!("no join completion for {t:?}: {other:?}"),
        }
    }

    pub fn sync_done(&mut self, t: RequestToken) -> SyncGroupResponse {
        match self.completed.remove(&t) {
            Some(ResponseKind::SyncGroup(r)) => r,
            other => panic!("no sync completion for {t:?}: {other:?}"),
        }
    }

    pub fn sync(
        &mut self,
        group: &str,
        member: &str,
        generation: i32,
        assignments: &[(&str, &[u8])],
    ) -> (RequestToken, Option<SyncGroupResponse>) {
        let ctx = self.ctx(5);
        let req = SyncGroupRequest::default()
            .with_group_id(gid(group))
            .with_member_id(s(member))
            .with_generation_id(generation)
            .with_protocol_type(Some(s("consumer")))
            .with_assignments(
                assignments
                    .iter()
                    .map(|(m, a)| {
                        SyncGroupRequestAssignment::default()
                            .with_member_id(s(m))
                            .with_assignment(Bytes::copy_from_slice(a))
                    })
                    .collect(),
            );
        let r = self.shard.sync_group(self.now, &ctx, &req);
        (ctx.token, self.absorb(r))
    }

    pub fn heartbeat(&mut self, group: &str, member: &str, generation: i32, instance: Option<&str>) -> i16 {
        let ctx = self.ctx(4);
        let req = HeartbeatRequest::default()
            .with_group_id(gid(group))
            .with_member_id(s(member))
            .with_generation_id(generation)
            .with_group_instance_id(instance.map(s));
        let r = self.shard.heartbeat(self.now, &ctx, &req);
        self.absorb(r).expect("heartbeat answers at once").error_code
    }

    /// A fresh shard rebuilt from the log must have the same durable state.
    pub fn assert_replay_matches(&self) {
        let mut fresh = GroupCoordinatorShard::new(self.shard.config().clone());
        for r in &self.log {
            fresh.replay(r);
        }
        assert_eq!(fresh.snapshot_records(), self.shard.snapshot_records());
    }
}

/// ConsumerProtocolSubscription v0 bytes for `topics`.
pub fn consumer_subscription(topics: &[&str]) -> Vec<u8> {
    let mut v = vec![0u8, 0];
    v.extend_from_slice(&(topics.len() as i32).to_be_bytes());
    for t in topics {
        v.extend_from_slice(&(t.len() as i16).to_be_bytes());
        v.extend_from_slice(t.as_bytes());
    }
    v.extend_from_slice(&(-1i32).to_be_bytes()); // null user data
    v
}

#[derive(Default)]
pub struct Topics(pub BTreeMap<String, (Uuid, i32)>);

impl Topics {
    pub fn with(mut self, name: &str, id: u128, partitions: i32) -> Self {
        self.0.insert(name.to_owned(), (Uuid::from_u128(id), partitions));
        self
    }
}

impl TopicMetadata for Topics {
    fn partitions(&self, topic: &str) -> Option<(Uuid, i32)> {
        self.0.get(topic).copied()
    }
    fn by_id(&self, id: Uuid) -> Option<(String, i32)> {
        self.0.iter().find(|(_, (i, _))| *i == id).map(|(n, (_, p))| (n.clone(), *p))
    }
    fn for_each_topic(&self, f: &mut dyn FnMut(&str)) {
        self.0.keys().for_each(|n| f(n));
    }
    fn version(&self) -> u64 {
        // Any change of the topics changes this.
        self.0.iter().fold(self.0.len() as u64, |h, (n, (id, p))| {
            h.wrapping_mul(31).wrapping_add(n.len() as u64 ^ id.as_u128() as u64 ^ *p as u64)
        })
    }
}
