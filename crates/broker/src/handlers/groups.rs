//! The consumer-group APIs. Each is a thin driver call into the group
//! coordinator shard that owns the group (`strata-group` holds the rules);
//! APIs naming several groups are split by shard and their answers merged in
//! request order.

use std::sync::Arc;

use strata_group::ResponseKind;
use strata_protocol::kafka_protocol::messages::find_coordinator_response::Coordinator;
use strata_protocol::kafka_protocol::messages::*;
use strata_protocol::kafka_protocol::protocol::StrBytes;
use strata_protocol::ResponseError;

use super::str_bytes;
use crate::groups::{GroupCoordinator, ImageTopics, Outcome};
use crate::net::Session;
use crate::replica::Verification;
use crate::Broker;
use strata_security::acl::{Operation, ResourceType};

/// GROUP_AUTHORIZATION_FAILED.
const GROUP_DENIED: i16 = 30;
/// TOPIC_AUTHORIZATION_FAILED.
const TOPIC_DENIED: i16 = 29;

fn group_ok(broker: &Broker, session: &Session, op: Operation, group: &str) -> bool {
    broker.authz.allowed(session, op, ResourceType::Group, group)
}

fn topic_ok(broker: &Broker, session: &Session, op: Operation, topic: &str) -> bool {
    broker.authz.allowed(session, op, ResourceType::Topic, topic)
}

/// The image's topics as a KIP-848 heartbeat sees them: regexes match only topics the
/// member's principal may DESCRIBE (lookups by name or id are unfiltered: explicit names are
/// checked before, and other members' assignments must not change with who heartbeats).
struct DescribableTopics<'a> {
    image: ImageTopics,
    broker: &'a Broker,
    session: &'a Session,
}

impl strata_group::shard::TopicMetadata for DescribableTopics<'_> {
    fn partitions(&self, topic: &str) -> Option<(uuid::Uuid, i32)> {
        self.image.partitions(topic)
    }
    fn by_id(&self, id: uuid::Uuid) -> Option<(String, i32)> {
        self.image.by_id(id)
    }
    fn for_each_topic(&self, f: &mut dyn FnMut(&str)) {
        self.image.for_each_topic(f);
    }
    fn visible(&self, topic: &str) -> bool {
        topic_ok(self.broker, self.session, Operation::Describe, topic)
    }
    fn version(&self) -> u64 {
        self.image.version()
    }
}

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

/// FindCoordinator: a group's coordinator is the leader of its `__consumer_offsets`
/// partition (`partition_for`, Kafka's hash), if that broker is live; otherwise
/// COORDINATOR_NOT_AVAILABLE, which clients retry. A transactional id's coordinator is the
/// leader of its `__transaction_state` partition the same way; the first lookup creates that
/// topic (COORDINATOR_NOT_AVAILABLE until it exists).
pub fn find_coordinator(
    broker: &Arc<Broker>,
    request: FindCoordinatorRequest,
    version: i16,
    session: &crate::net::Session,
) -> FindCoordinatorResponse {
    let image = broker.replicas.image();
    // (error, message, node id, host, port) for one key.
    let answer = |key: &StrBytes| -> (Option<ResponseError>, Option<String>, i32, String, i32) {
        let refuse = |e: ResponseError, m: String| (Some(e), Some(m), -1, String::new(), -1);
        // DESCRIBE on the group or transactional id (Kafka's `handleFindCoordinatorRequest`).
        let (denied_kind, denied_error) = match request.key_type {
            KEY_TYPE_GROUP => (ResourceType::Group, ResponseError::GroupAuthorizationFailed),
            _ => (ResourceType::TransactionalId, ResponseError::TransactionalIdAuthorizationFailed),
        };
        if matches!(request.key_type, KEY_TYPE_GROUP | KEY_TYPE_TRANSACTION)
            && !broker.authz.allowed(session, Operation::Describe, denied_kind, key.as_str())
        {
            return refuse(denied_error, String::new());
        }
        let (topic_name, started) = match request.key_type {
            KEY_TYPE_GROUP => (crate::groups::OFFSETS_TOPIC, true),
            KEY_TYPE_TRANSACTION => {
                // Kafka creates the transaction state topic at the first lookup of a
                // transactional id.
                broker.txn.ensure_topic();
                (crate::txn::TRANSACTION_STATE_TOPIC, false)
            }
            other => return refuse(ResponseError::InvalidRequest, format!("unsupported coordinator key type {other}")),
        };
        let Some(topic) = image.topic(topic_name) else {
            let what = if started { "does not exist yet" } else { "is being created" };
            return refuse(ResponseError::CoordinatorNotAvailable, format!("{topic_name} {what}"));
        };
        if key.is_empty() && request.key_type == KEY_TYPE_TRANSACTION {
            return refuse(ResponseError::InvalidRequest, "the transactional id is empty".into());
        }
        let count = i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX);
        let index = strata_group::partition_for(key.as_str(), count.max(1));
        let leader = usize::try_from(index).ok().and_then(|i| topic.partitions.get(i)).map_or(-1, |p| p.leader);
        match image.brokers.get(&leader).filter(|b| !b.fenced).and_then(|b| Some((b, b.endpoint(&session.listener)?))) {
            Some((b, (host, port))) => (None, None, b.broker_id, host.to_string(), i32::from(port)),
            None => refuse(
                ResponseError::CoordinatorNotAvailable,
                format!("the leader of {topic_name}-{index} is not available"),
            ),
        }
    };
    if version < 4 {
        let (error, message, node, host, port) = answer(&request.key);
        return FindCoordinatorResponse::default()
            .with_error_code(error.map_or(0, |e| e.code()))
            .with_error_message(message.map(str_bytes))
            .with_node_id(BrokerId(node))
            .with_host(str_bytes(host))
            .with_port(port);
    }
    let coordinators = request
        .coordinator_keys
        .iter()
        .map(|k| {
            let (error, message, node, host, port) = answer(k);
            Coordinator::default()
                .with_key(k.clone())
                .with_node_id(BrokerId(node))
                .with_host(str_bytes(host))
                .with_port(port)
                .with_error_code(error.map_or(0, |e| e.code()))
                .with_error_message(message.map(str_bytes))
        })
        .collect();
    FindCoordinatorResponse::default().with_coordinators(coordinators)
}

fn coordinator(broker: &Arc<Broker>) -> &Arc<GroupCoordinator> {
    &broker.groups
}

/// Waits for a parked classic request. One whose shard was reloaded after a
/// failed write (or was dropped) is answered by `lost` with
/// NOT_COORDINATOR, which makes the client find the coordinator and rejoin.
async fn settle<T>(outcome: Outcome<T>, pick: impl FnOnce(ResponseKind) -> Option<T>, lost: impl FnOnce() -> T) -> T {
    match outcome {
        Outcome::Now(r) => r,
        Outcome::Parked(rx) => match rx.await {
            Ok(kind) => pick(kind).unwrap_or_else(lost),
            Err(_) => lost(),
        },
        Outcome::NotDurable => lost(),
    }
}

const NOT_COORDINATOR: i16 = 16;

pub async fn join_group(
    broker: &Arc<Broker>,
    r: JoinGroupRequest,
    version: i16,
    client: (&str, &str),
    session: &crate::net::Session,
) -> JoinGroupResponse {
    if !group_ok(broker, session, Operation::Read, &r.group_id) {
        return JoinGroupResponse::default().with_error_code(GROUP_DENIED).with_generation_id(-1);
    }
    let g = coordinator(broker);
    let ctx = g.context(version, client.0, client.1);
    let outcome = g.call(g.shard_for(&r.group_id), &ctx, |s, now| s.join_group(now, &ctx, &r)).await;
    settle(
        outcome,
        |k| match k {
            ResponseKind::JoinGroup(r) => Some(r),
            _ => None,
        },
        || JoinGroupResponse::default().with_error_code(NOT_COORDINATOR),
    )
    .await
}

pub async fn sync_group(
    broker: &Arc<Broker>,
    r: SyncGroupRequest,
    version: i16,
    client: (&str, &str),
    session: &crate::net::Session,
) -> SyncGroupResponse {
    if !group_ok(broker, session, Operation::Read, &r.group_id) {
        return SyncGroupResponse::default().with_error_code(GROUP_DENIED);
    }
    let g = coordinator(broker);
    let ctx = g.context(version, client.0, client.1);
    let outcome = g.call(g.shard_for(&r.group_id), &ctx, |s, now| s.sync_group(now, &ctx, &r)).await;
    settle(
        outcome,
        |k| match k {
            ResponseKind::SyncGroup(r) => Some(r),
            _ => None,
        },
        || SyncGroupResponse::default().with_error_code(NOT_COORDINATOR),
    )
    .await
}

/// Calls one shard for a request that never parks.
macro_rules! immediate {
    ($broker:expr, $version:expr, $client:expr, $group:expr, $method:ident, $req:expr, $default:expr) => {{
        let g = coordinator($broker);
        let ctx = g.context($version, $client.0, $client.1);
        let req = $req;
        match g.call(g.shard_for($group), &ctx, |s, now| s.$method(now, &ctx, &req)).await {
            Outcome::Now(r) => r,
            Outcome::Parked(_) | Outcome::NotDurable => $default,
        }
    }};
}

pub async fn heartbeat(
    broker: &Arc<Broker>,
    r: HeartbeatRequest,
    version: i16,
    client: (&str, &str),
    session: &crate::net::Session,
) -> HeartbeatResponse {
    let group = r.group_id.to_string();
    if !group_ok(broker, session, Operation::Read, &group) {
        return HeartbeatResponse::default().with_error_code(GROUP_DENIED);
    }
    immediate!(
        broker,
        version,
        client,
        &group,
        heartbeat,
        r,
        HeartbeatResponse::default().with_error_code(NOT_COORDINATOR)
    )
}

pub async fn leave_group(
    broker: &Arc<Broker>,
    r: LeaveGroupRequest,
    version: i16,
    client: (&str, &str),
    session: &crate::net::Session,
) -> LeaveGroupResponse {
    let group = r.group_id.to_string();
    if !group_ok(broker, session, Operation::Read, &group) {
        return LeaveGroupResponse::default().with_error_code(GROUP_DENIED);
    }
    immediate!(
        broker,
        version,
        client,
        &group,
        leave_group,
        r,
        LeaveGroupResponse::default().with_error_code(NOT_COORDINATOR)
    )
}

pub async fn offset_commit(
    broker: &Arc<Broker>,
    r: OffsetCommitRequest,
    version: i16,
    client: (&str, &str),
    session: &crate::net::Session,
) -> OffsetCommitResponse {
    let group = r.group_id.to_string();
    // READ on the group (every partition refused), then READ on each topic.
    if !group_ok(broker, session, Operation::Read, &group) {
        return commit_refused(&r, GROUP_DENIED);
    }
    let image = broker.replicas.image();
    let topic_name = |t: &offset_commit_request::OffsetCommitRequestTopic| {
        if t.name.is_empty() {
            image.topic_by_id(&t.topic_id).map(|x| x.name.clone()).unwrap_or_default()
        } else {
            t.name.to_string()
        }
    };
    let (allowed, denied): (Vec<_>, Vec<_>) =
        r.topics.iter().cloned().partition(|t| topic_ok(broker, session, Operation::Read, &topic_name(t)));
    if !denied.is_empty() {
        let mut resp = Box::pin(offset_commit(broker, r.clone().with_topics(allowed), version, client, session)).await;
        resp.topics.extend(commit_refused(&r.clone().with_topics(denied), TOPIC_DENIED).topics);
        return resp;
    }
    let g = coordinator(broker);
    let topics = ImageTopics(broker.replicas.image());
    let ctx = g.context(version, client.0, client.1);
    // A commit from outside the group's generations is how offsets are reset
    // (kafka-consumer-groups --reset-offsets, AdminClient alterConsumerGroupOffsets); consumers
    // that assign their own partitions commit so too. What it changes is logged.
    let outside = r.generation_id_or_member_epoch < 0 && r.member_id.is_empty();
    let mut before = Vec::new();
    let outcome = g
        .call(g.shard_for(&group), &ctx, |s, now| {
            if outside {
                before = committed_before(s, &group, &r, &topics.0);
            }
            s.offset_commit(now, &ctx, &r, &topics)
        })
        .await;
    match outcome {
        Outcome::Now(resp) => {
            log_offsets_set(&group, client.0, &before, &resp);
            resp
        }
        Outcome::Parked(_) | Outcome::NotDurable => commit_failed(&r),
    }
}

/// Each partition an OffsetCommit names (topic, partition, new offset) with the offset committed
/// before it.
type OffsetChange = (String, i32, i64, Option<i64>);

fn committed_before(
    s: &strata_group::GroupCoordinatorShard,
    group: &str,
    r: &OffsetCommitRequest,
    image: &strata_metadata::MetadataImage,
) -> Vec<OffsetChange> {
    r.topics
        .iter()
        .flat_map(|t| {
            let name = if t.name.is_empty() {
                image.topic_by_id(&t.topic_id).map_or_else(|| t.topic_id.to_string(), |x| x.name.clone())
            } else {
                t.name.to_string()
            };
            t.partitions.iter().map(move |p| {
                let old = s.committed_offset(group, &name, p.partition_index).map(|v| v.offset);
                (name.clone(), p.partition_index, p.committed_offset, old)
            })
        })
        .collect()
}

/// One INFO line for the offsets an OffsetCommit from outside a generation changed (none when it
/// changed nothing, as a consumer re-committing the same positions does).
fn log_offsets_set(group: &str, client_id: &str, before: &[OffsetChange], resp: &OffsetCommitResponse) {
    let committed = |topic: &str, partition: i32| {
        resp.topics
            .iter()
            .filter(|t| t.name.as_str() == topic || t.name.is_empty())
            .any(|t| t.partitions.iter().any(|p| p.partition_index == partition && p.error_code == 0))
    };
    let changes: Vec<String> = before
        .iter()
        .filter(|(t, p, new, old)| *old != Some(*new) && committed(t, *p))
        .map(|(t, p, new, old)| match old {
            Some(old) => format!("{t}-{p}: {old} -> {new}"),
            None => format!("{t}-{p}: {new}"),
        })
        .collect();
    if !changes.is_empty() {
        tracing::info!(%group, %client_id, offsets = %changes.join(", "),
            "committed offsets set outside a group generation (an offset reset, or a consumer assigning its own partitions)");
    }
}

pub async fn offset_delete(
    broker: &Arc<Broker>,
    r: OffsetDeleteRequest,
    version: i16,
    client: (&str, &str),
    session: &crate::net::Session,
) -> OffsetDeleteResponse {
    let group = r.group_id.to_string();
    // DELETE on the group, READ on each topic (Kafka's `handleDeleteConsumerGroupOffsetsRequest`).
    if !group_ok(broker, session, Operation::Delete, &group) {
        return OffsetDeleteResponse::default().with_error_code(GROUP_DENIED);
    }
    let (allowed, denied): (Vec<_>, Vec<_>) =
        r.topics.iter().cloned().partition(|t| topic_ok(broker, session, Operation::Read, t.name.as_str()));
    let denied: Vec<offset_delete_response::OffsetDeleteResponseTopic> = denied
        .into_iter()
        .map(|t| {
            offset_delete_response::OffsetDeleteResponseTopic::default().with_name(t.name.clone()).with_partitions(
                t.partitions
                    .iter()
                    .map(|p| {
                        offset_delete_response::OffsetDeleteResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(TOPIC_DENIED)
                    })
                    .collect(),
            )
        })
        .collect();
    let r = r.with_topics(allowed);
    let resp = immediate!(
        broker,
        version,
        client,
        &group,
        offset_delete,
        r,
        OffsetDeleteResponse::default().with_error_code(NOT_COORDINATOR)
    );
    if resp.error_code == 0 {
        let deleted: Vec<String> = resp
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .filter(|p| p.error_code == 0)
                    .map(move |p| format!("{}-{}", t.name.as_str(), p.partition_index))
            })
            .collect();
        if !deleted.is_empty() {
            tracing::info!(%group, client_id = %client.0, partitions = %deleted.join(", "), "committed offsets deleted");
        }
    }
    let mut resp = resp;
    if resp.error_code == 0 {
        resp.topics.extend(denied);
    }
    resp
}

pub async fn offset_fetch(
    broker: &Arc<Broker>,
    r: OffsetFetchRequest,
    version: i16,
    client: (&str, &str),
    session: &crate::net::Session,
) -> OffsetFetchResponse {
    // DESCRIBE on the group, then on each topic: a topic named without it is answered
    // TOPIC_AUTHORIZATION_FAILED, one the principal may not see is left out of "all topics"
    // (Kafka's `handleOffsetFetchRequest`).
    let may_see = |t: &str| topic_ok(broker, session, Operation::Describe, t);
    let g = coordinator(broker);
    if version < 8 {
        let group = r.group_id.to_string();
        if !group_ok(broker, session, Operation::Describe, &group) {
            return OffsetFetchResponse::default().with_error_code(GROUP_DENIED);
        }
        let named = r.topics.is_some();
        let mut resp = immediate!(broker, version, client, &group, offset_fetch, r, OffsetFetchResponse::default());
        resp.topics.retain(|t| named || may_see(t.name.as_str()));
        for t in resp.topics.iter_mut().filter(|t| !may_see(t.name.as_str())) {
            for p in &mut t.partitions {
                *p = offset_fetch_response::OffsetFetchResponsePartition::default()
                    .with_partition_index(p.partition_index)
                    .with_committed_offset(-1)
                    .with_error_code(TOPIC_DENIED);
            }
        }
        return resp;
    }
    // v8+: several groups, possibly on several shards.
    let answers = per_group(
        g,
        version,
        client,
        r.groups.iter().map(|x| x.group_id.as_str()),
        |i| r.clone().with_groups(vec![r.groups[i].clone()]),
        |s, now, ctx, q| s.offset_fetch(now, ctx, q),
    )
    .await;
    let mut groups = merge(
        answers,
        &r.groups,
        |resp| resp.groups,
        |asked| {
            offset_fetch_response::OffsetFetchResponseGroup::default()
                .with_group_id(asked.group_id.clone())
                .with_error_code(NOT_COORDINATOR)
        },
    );
    // `merge` answers each asked entry in order (several entries per entry never): the i-th
    // answer is the i-th asked group's.
    for (i, group) in groups.iter_mut().enumerate() {
        if !group_ok(broker, session, Operation::Describe, group.group_id.as_str()) {
            *group = offset_fetch_response::OffsetFetchResponseGroup::default()
                .with_group_id(group.group_id.clone())
                .with_error_code(GROUP_DENIED);
            continue;
        }
        let named = r.groups.get(i).is_some_and(|a| a.topics.is_some());
        group.topics.retain(|t| named || may_see(t.name.as_str()));
        for t in group.topics.iter_mut().filter(|t| !may_see(t.name.as_str())) {
            for p in &mut t.partitions {
                *p = offset_fetch_response::OffsetFetchResponsePartitions::default()
                    .with_partition_index(p.partition_index)
                    .with_committed_offset(-1)
                    .with_error_code(TOPIC_DENIED);
            }
        }
    }
    OffsetFetchResponse::default().with_groups(groups)
}

pub async fn describe_groups(
    broker: &Arc<Broker>,
    r: DescribeGroupsRequest,
    version: i16,
    client: (&str, &str),
    session: &crate::net::Session,
) -> DescribeGroupsResponse {
    // DESCRIBE on each group (GROUP_AUTHORIZATION_FAILED), as Kafka.
    let (allowed, denied): (Vec<_>, Vec<_>) =
        r.groups.iter().cloned().partition(|g| group_ok(broker, session, Operation::Describe, g.as_str()));
    let asked = r.groups.clone();
    let r = r.with_groups(allowed);
    let answers = per_group(
        coordinator(broker),
        version,
        client,
        r.groups.iter().map(|x| x.as_str()),
        |i| r.clone().with_groups(vec![r.groups[i].clone()]),
        |s, now, ctx, q| s.describe_groups(now, ctx, q),
    )
    .await;
    let groups = merge(
        answers,
        &r.groups,
        |resp| resp.groups,
        |asked| {
            describe_groups_response::DescribedGroup::default()
                .with_group_id(asked.clone())
                .with_error_code(NOT_COORDINATOR)
        },
    );
    let mut groups: Vec<_> = groups
        .into_iter()
        .map(|g| {
            if r.include_authorized_operations && g.error_code == 0 {
                let ops = broker.authz.operations(
                    session,
                    ResourceType::Group,
                    g.group_id.as_str(),
                    &super::GROUP_OPERATIONS,
                );
                g.with_authorized_operations(ops)
            } else {
                g
            }
        })
        .collect();
    groups.extend(
        denied.into_iter().map(|g| {
            describe_groups_response::DescribedGroup::default().with_group_id(g).with_error_code(GROUP_DENIED)
        }),
    );
    // In the order asked.
    groups.sort_by_key(|g| asked.iter().position(|a| *a == g.group_id).unwrap_or(usize::MAX));
    DescribeGroupsResponse::default().with_groups(groups)
}

pub async fn delete_groups(
    broker: &Arc<Broker>,
    r: DeleteGroupsRequest,
    version: i16,
    client: (&str, &str),
    session: &crate::net::Session,
) -> DeleteGroupsResponse {
    let (allowed, denied): (Vec<_>, Vec<_>) =
        r.groups_names.iter().cloned().partition(|g| group_ok(broker, session, Operation::Delete, g.as_str()));
    let r = r.with_groups_names(allowed);
    let answers = per_group(
        coordinator(broker),
        version,
        client,
        r.groups_names.iter().map(|x| x.as_str()),
        |i| r.clone().with_groups_names(vec![r.groups_names[i].clone()]),
        |s, now, ctx, q| s.delete_groups(now, ctx, q),
    )
    .await;
    let results = merge(
        answers,
        &r.groups_names,
        |resp| resp.results,
        |asked| {
            delete_groups_response::DeletableGroupResult::default()
                .with_group_id(asked.clone())
                .with_error_code(NOT_COORDINATOR)
        },
    );
    for deleted in results.iter().filter(|g| g.error_code == 0) {
        tracing::info!(group = %deleted.group_id.as_str(), client_id = %client.0, "group deleted");
    }
    let mut results = results;
    results.extend(denied.into_iter().map(|g| {
        delete_groups_response::DeletableGroupResult::default().with_group_id(g).with_error_code(GROUP_DENIED)
    }));
    DeleteGroupsResponse::default().with_results(results)
}

/// Answers of [`per_group`] in request order: each group's entries, or
/// `failed(asked)` for a group whose records were not made durable.
fn merge<A, T, E>(
    answers: Vec<Option<A>>,
    asked: &[T],
    entries: impl Fn(A) -> Vec<E>,
    failed: impl Fn(&T) -> E,
) -> Vec<E> {
    answers
        .into_iter()
        .zip(asked)
        .flat_map(|(answer, asked)| match answer {
            Some(resp) => entries(resp),
            None => vec![failed(asked)],
        })
        .collect()
}

/// For an API naming several groups: calls each group's shard with the
/// request narrowed to that group (`narrow(i)` for the i-th id). `None` for a
/// group whose records could not be made durable.
async fn per_group<'a, Q, A>(
    g: &GroupCoordinator,
    version: i16,
    client: (&str, &str),
    ids: impl Iterator<Item = &'a str>,
    narrow: impl Fn(usize) -> Q,
    call: impl Fn(
        &mut strata_group::GroupCoordinatorShard,
        i64,
        &strata_group::RequestContext,
        &Q,
    ) -> strata_group::CoordinatorResult<A>,
) -> Vec<Option<A>> {
    let mut answers = Vec::new();
    for (i, id) in ids.enumerate() {
        let q = narrow(i);
        let ctx = g.context(version, client.0, client.1);
        answers.push(match g.call(g.shard_for(id), &ctx, |s, now| call(s, now, &ctx, &q)).await {
            Outcome::Now(resp) => Some(resp),
            Outcome::Parked(_) | Outcome::NotDurable => None,
        });
    }
    answers
}

pub fn list_groups(
    broker: &Arc<Broker>,
    r: ListGroupsRequest,
    version: i16,
    client: (&str, &str),
    session: &crate::net::Session,
) -> ListGroupsResponse {
    let g = coordinator(broker);
    let ctx = g.context(version, client.0, client.1);
    let mut groups = Vec::new();
    let mut error = 0;
    // DESCRIBE on the cluster lists every group; else those the principal may DESCRIBE.
    let all = broker.authz.cluster(session, Operation::Describe);
    for resp in g.each_shard(|s, now| s.list_groups(now, &ctx, &r)) {
        if let Some(resp) = resp.response {
            groups.extend(
                resp.groups
                    .into_iter()
                    .filter(|x| all || group_ok(broker, session, Operation::Describe, x.group_id.as_str())),
            );
            if resp.error_code != 0 {
                error = resp.error_code;
            }
        }
    }
    ListGroupsResponse::default().with_groups(groups).with_error_code(error)
}

pub async fn consumer_group_heartbeat(
    broker: &Arc<Broker>,
    r: ConsumerGroupHeartbeatRequest,
    version: i16,
    client: (&str, &str),
    session: &crate::net::Session,
) -> ConsumerGroupHeartbeatResponse {
    // READ on the group, DESCRIBE on every subscribed topic name (KIP-848).
    if !group_ok(broker, session, Operation::Read, &r.group_id) {
        return ConsumerGroupHeartbeatResponse::default().with_error_code(GROUP_DENIED);
    }
    if let Some(names) = &r.subscribed_topic_names {
        let hidden: Vec<&str> =
            names.iter().map(|n| n.as_str()).filter(|n| !topic_ok(broker, session, Operation::Describe, n)).collect();
        if !hidden.is_empty() {
            return ConsumerGroupHeartbeatResponse::default()
                .with_error_code(TOPIC_DENIED)
                .with_error_message(Some(str_bytes(format!("Unauthorized topics: {}", hidden.join(", ")))));
        }
    }
    let g = coordinator(broker);
    // A regex the heartbeat resolves matches only the topics this member may describe
    // (KAFKA-18813: the ACLs of the member whose heartbeat refreshes the regex).
    let topics = DescribableTopics { image: ImageTopics(broker.replicas.image()), broker, session };
    let ctx = g.context(version, client.0, client.1);
    match g.call(g.shard_for(&r.group_id), &ctx, |s, now| s.consumer_group_heartbeat(now, &ctx, &r, &topics)).await {
        Outcome::Now(resp) => {
            tracing::debug!(
                group = %r.group_id.as_str(), member = %r.member_id.as_str(), request_epoch = r.member_epoch,
                error = resp.error_code, epoch = resp.member_epoch,
                assignment = ?resp.assignment.as_ref().map(|a| a.topic_partitions.len()),
                "ConsumerGroupHeartbeat answered"
            );
            resp
        }
        Outcome::Parked(_) | Outcome::NotDurable => {
            ConsumerGroupHeartbeatResponse::default().with_error_code(NOT_COORDINATOR)
        }
    }
}

pub async fn consumer_group_describe(
    broker: &Arc<Broker>,
    r: ConsumerGroupDescribeRequest,
    version: i16,
    client: (&str, &str),
    session: &crate::net::Session,
) -> ConsumerGroupDescribeResponse {
    let (allowed, denied): (Vec<_>, Vec<_>) =
        r.group_ids.iter().cloned().partition(|g| group_ok(broker, session, Operation::Describe, g.as_str()));
    let r = r.with_group_ids(allowed);
    let g = coordinator(broker);
    let topics = ImageTopics(broker.replicas.image());
    let answers = per_group(
        g,
        version,
        client,
        r.group_ids.iter().map(|x| x.as_str()),
        |i| r.clone().with_group_ids(vec![r.group_ids[i].clone()]),
        |s, now, ctx, q| s.consumer_group_describe(now, ctx, q, &topics),
    )
    .await;
    let mut groups: Vec<_> = answers
        .into_iter()
        .flatten()
        .flat_map(|resp| resp.groups)
        .map(|group| {
            // KAFKA-18813: a group with a topic assigned (or to be) that the client may not
            // describe is not shown; each topic checked once.
            let topics: std::collections::BTreeSet<&str> = group
                .members
                .iter()
                .flat_map(|m| {
                    m.assignment
                        .topic_partitions
                        .iter()
                        .chain(m.target_assignment.topic_partitions.iter())
                        .map(|t| t.topic_name.as_str())
                })
                .collect();
            if topics.iter().any(|t| !topic_ok(broker, session, Operation::Describe, t)) {
                consumer_group_describe_response::DescribedGroup::default()
                    .with_group_id(group.group_id)
                    .with_error_code(TOPIC_DENIED)
                    .with_error_message(Some(str_bytes(
                        "The group has described topic(s) that the client is not authorized to describe.",
                    )))
            } else {
                group
            }
        })
        .collect();
    groups.extend(denied.into_iter().map(|g| {
        consumer_group_describe_response::DescribedGroup::default().with_group_id(g).with_error_code(GROUP_DENIED)
    }));
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}

/// NOT_COORDINATOR for every partition of an OffsetCommit.
fn commit_failed(r: &OffsetCommitRequest) -> OffsetCommitResponse {
    commit_refused(r, NOT_COORDINATOR)
}

/// `code` for every partition of an OffsetCommit.
fn commit_refused(r: &OffsetCommitRequest, code: i16) -> OffsetCommitResponse {
    use offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
    OffsetCommitResponse::default().with_topics(
        r.topics
            .iter()
            .map(|t| {
                OffsetCommitResponseTopic::default().with_name(t.name.clone()).with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code)
                        })
                        .collect(),
                )
            })
            .collect(),
    )
}

/// TxnOffsetCommit (v0–5): offsets committed in a producer's transaction, pending until its
/// marker (see `strata_group::txn_offsets`). Written as a transactional batch of the producer
/// to the group's `__consumer_offsets` partition; a producer whose epoch is older than the one
/// the partition knows gets INVALID_PRODUCER_EPOCH (it was fenced). As for Produce (KIP-890),
/// the partition must be in the transaction: v0–4 verify it with the transaction coordinator
/// (AddOffsetsToTxn added it), v5 (transactions V2) has the coordinator add it.
pub async fn txn_offset_commit(
    broker: &Arc<Broker>,
    r: TxnOffsetCommitRequest,
    version: i16,
    client: (&str, &str),
    session: &crate::net::Session,
) -> TxnOffsetCommitResponse {
    use txn_offset_commit_response::{TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic};
    let failed = |code: ResponseError| {
        TxnOffsetCommitResponse::default().with_topics(
            r.topics
                .iter()
                .map(|t| {
                    TxnOffsetCommitResponseTopic::default().with_name(t.name.clone()).with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                TxnOffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(code.code())
                            })
                            .collect(),
                    )
                })
                .collect(),
        )
    };
    if r.group_id.is_empty() {
        return failed(ResponseError::InvalidGroupId);
    }
    // WRITE on the transactional id, READ on the group and on every topic (Kafka's
    // `handleTxnOffsetCommitRequest`).
    if !broker.authz.allowed(session, Operation::Write, ResourceType::TransactionalId, r.transactional_id.as_str()) {
        return failed(ResponseError::TransactionalIdAuthorizationFailed);
    }
    if !group_ok(broker, session, Operation::Read, &r.group_id) {
        return failed(ResponseError::GroupAuthorizationFailed);
    }
    if r.topics.iter().any(|t| !topic_ok(broker, session, Operation::Read, t.name.as_str())) {
        return failed(ResponseError::TopicAuthorizationFailed);
    }
    let g = coordinator(broker);
    let index = g.shard_for(&r.group_id);
    // A broker that does not coordinate the group says so before anything else: its replica
    // of the offsets partition may be behind on the producer's epoch (Kafka's
    // GroupCoordinator checks the group's ownership first).
    if !g.coordinates(index) {
        return failed(ResponseError::NotCoordinator);
    }
    let producer = (r.producer_id.0, r.producer_epoch);
    let mut verification = Verification::Off;
    if let Ok(partition) = broker.replicas.get(crate::groups::OFFSETS_TOPIC, index as i32) {
        // A fenced producer learns it here rather than from a write that fails.
        if let Err(e) = partition.check_producer_epoch(producer.0, producer.1) {
            return failed(e.code());
        }
        let enabled = broker.config.get("transaction.partition.verification.enable").is_none_or(|v| v.trim() == "true");
        // v5 (transactions V2) adds the partition this way: never skipped.
        if enabled || version >= 5 {
            let target = [(partition, crate::groups::OFFSETS_TOPIC.to_string(), index as i32)];
            let add = version >= 5;
            let result = broker.txn.verify(&r.transactional_id, producer.0, producer.1, &target, add).await;
            match result.into_iter().next().unwrap_or(Err(ResponseError::NetworkException)) {
                Ok(v) => verification = v,
                Err(e) => return failed(txn_offset_verification_error(e, version)),
            }
        }
    }
    let topics = ImageTopics(broker.replicas.image());
    let ctx = g.context(version, client.0, client.1);
    let outcome =
        g.call_txn(index, &ctx, producer, verification, |s: &mut strata_group::GroupCoordinatorShard, now| {
            s.txn_offset_commit(now, &r, &topics)
        });
    match outcome.await {
        Outcome::Now(resp) => resp,
        Outcome::Parked(_) | Outcome::NotDurable => failed(ResponseError::NotCoordinator),
    }
}

/// What a TxnOffsetCommit is told when the transaction coordinator did not confirm the offsets
/// partition (Kafka's group coordinator mapping of append and verification errors).
fn txn_offset_verification_error(e: ResponseError, version: i16) -> ResponseError {
    use ResponseError::*;
    match e {
        TransactionAbortable if version <= 3 => InvalidTxnState,
        ProducerFenced => InvalidProducerEpoch,
        NetworkException | ConcurrentTransactions => CoordinatorLoadInProgress,
        UnknownTopicOrPartition | NotEnoughReplicas | RequestTimedOut => CoordinatorNotAvailable,
        NotLeaderOrFollower | KafkaStorageError => NotCoordinator,
        // TxnOffsetCommit below v2 knows no COORDINATOR_LOAD_IN_PROGRESS.
        CoordinatorLoadInProgress if version < 2 => CoordinatorNotAvailable,
        other => other,
    }
}
