//! The transaction coordinator's APIs (Kafka's `KafkaApis` and `TransactionCoordinator`
//! handlers): InitProducerId with a transactional id, AddPartitionsToTxn (v0–5, with the
//! KIP-890 verification of v4+), AddOffsetsToTxn, EndTxn (v0–5), DescribeTransactions and
//! ListTransactions. The state machine is `strata_txn`; the driver `crate::txn`.

use std::collections::BTreeMap;
use std::sync::Arc;

use strata_protocol::kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use strata_protocol::kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use strata_protocol::kafka_protocol::messages::{
    describe_transactions_response, list_transactions_response, AddOffsetsToTxnRequest, AddOffsetsToTxnResponse,
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, DescribeTransactionsRequest, DescribeTransactionsResponse,
    EndTxnRequest, EndTxnResponse, InitProducerIdRequest, InitProducerIdResponse, ListTransactionsRequest,
    ListTransactionsResponse, ProducerId, TransactionalId,
};
use strata_protocol::ResponseError;
use strata_txn::{ListFilter, TxnState};

use super::{str_bytes, topic_name};
use crate::net::Session;
use crate::replica::now_ms;
use crate::Broker;
use strata_security::acl::{Operation, ResourceType};

/// PRODUCER_FENCED (KIP-588) is new in InitProducerId v4, AddPartitionsToTxn v2,
/// AddOffsetsToTxn v2 and EndTxn v2; older clients get INVALID_PRODUCER_EPOCH instead.
fn downgrade(e: ResponseError, knows_fenced: bool) -> ResponseError {
    if e == ResponseError::ProducerFenced && !knows_fenced {
        ResponseError::InvalidProducerEpoch
    } else {
        e
    }
}

fn code(r: &Result<(), ResponseError>) -> i16 {
    r.as_ref().err().map_or(0, |e| e.code())
}

/// InitProducerId with a transactional id: the coordinator gives the producer its id and a new
/// epoch, fencing older instances. See `TxnCoordinatorShard::init_producer_id`.
/// InitProducerId with a transactional id: WRITE on it (TRANSACTIONAL_ID_AUTHORIZATION_FAILED).
pub async fn init_producer_id(
    session: &Session,
    broker: &Arc<Broker>,
    request: &InitProducerIdRequest,
    transactional_id: &str,
    version: i16,
) -> InitProducerIdResponse {
    let failed = |e: ResponseError| {
        InitProducerIdResponse::default()
            .with_error_code(downgrade(e, version >= 4).code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    if !broker.authz.allowed(session, Operation::Write, ResourceType::TransactionalId, transactional_id) {
        return failed(ResponseError::TransactionalIdAuthorizationFailed);
    }
    let expected = match (request.producer_id.0, request.producer_epoch) {
        (-1, -1) => None,
        (-1, _) | (_, -1) => return failed(ResponseError::InvalidRequest),
        (pid, epoch) => Some((pid, epoch)),
    };
    let timeout = request.transaction_timeout_ms;
    let id = transactional_id.to_string();
    match broker.txn.run(&id, |shard, ids, now| shard.init_producer_id(&id, timeout, expected, ids, now)).await {
        Ok((pid, epoch)) => {
            InitProducerIdResponse::default().with_producer_id(ProducerId(pid)).with_producer_epoch(epoch)
        }
        Err(e) => failed(e),
    }
}

/// The internal topics a client may not add to a transaction itself (offsets go through
/// AddOffsetsToTxn).
fn is_internal(topic: &str) -> bool {
    topic == crate::groups::OFFSETS_TOPIC || topic == crate::txn::TRANSACTION_STATE_TOPIC
}

/// AddPartitionsToTxn: v0–3 from a producer (one transaction), v4+ from partition leaders (a
/// batch, each transaction either verified only or, under transactions V2, added).
/// Authorization (Kafka's `handleAddPartitionsToTxnRequest`): a producer's request (v0–3)
/// needs WRITE on the transactional id (TRANSACTIONAL_ID_AUTHORIZATION_FAILED everywhere) and
/// on each topic (TOPIC_AUTHORIZATION_FAILED, the others OPERATION_NOT_ATTEMPTED); a broker's
/// (v4+) CLUSTER_ACTION on the cluster.
pub async fn add_partitions_to_txn(
    broker: &Arc<Broker>,
    request: AddPartitionsToTxnRequest,
    version: i16,
    session: &Session,
) -> AddPartitionsToTxnResponse {
    if version <= 3 {
        let id = request.v3_and_below_transactional_id.0.as_str();
        let id_denied = !broker.authz.allowed(session, Operation::Write, ResourceType::TransactionalId, id);
        let topic_denied = |t: &str| !broker.authz.allowed(session, Operation::Write, ResourceType::Topic, t);
        if id_denied {
            let results = request
                .v3_and_below_topics
                .iter()
                .map(|t| {
                    AddPartitionsToTxnTopicResult::default().with_name(t.name.clone()).with_results_by_partition(
                        t.partitions
                            .iter()
                            .map(|p| {
                                AddPartitionsToTxnPartitionResult::default()
                                    .with_partition_index(*p)
                                    .with_partition_error_code(ResponseError::TransactionalIdAuthorizationFailed.code())
                            })
                            .collect(),
                    )
                })
                .collect();
            return AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results);
        }
        let results = add_one(
            &topic_denied,
            broker,
            &request.v3_and_below_transactional_id.0,
            request.v3_and_below_producer_id.0,
            request.v3_and_below_producer_epoch,
            &request.v3_and_below_topics,
            Sender::Client { knows_fenced: version >= 2 },
        )
        .await;
        return AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results);
    }
    if !broker.authz.cluster(session, Operation::ClusterAction) {
        return AddPartitionsToTxnResponse::default().with_error_code(ResponseError::ClusterAuthorizationFailed.code());
    }
    if request.transactions.iter().any(|t| t.transactional_id.0.is_empty()) {
        return AddPartitionsToTxnResponse::default().with_error_code(ResponseError::InvalidRequest.code());
    }
    let mut results = Vec::with_capacity(request.transactions.len());
    for t in &request.transactions {
        let sender = Sender::Broker { verify_only: t.verify_only };
        let topics =
            add_one(&|_| false, broker, &t.transactional_id.0, t.producer_id.0, t.producer_epoch, &t.topics, sender)
                .await;
        results.push(
            AddPartitionsToTxnResult::default()
                .with_transactional_id(t.transactional_id.clone())
                .with_topic_results(topics),
        );
    }
    AddPartitionsToTxnResponse::default().with_results_by_transaction(results)
}

/// One transaction of an AddPartitionsToTxn: per-partition results by topic.
async fn add_one(
    topic_denied: &(dyn Fn(&str) -> bool + Sync),
    broker: &Arc<Broker>,
    transactional_id: &str,
    producer_id: i64,
    producer_epoch: i16,
    topics: &[AddPartitionsToTxnTopic],
    sender: Sender,
) -> Vec<AddPartitionsToTxnTopicResult> {
    let (verify_only, from_client, knows_fenced) = match sender {
        Sender::Client { knows_fenced } => (false, true, knows_fenced),
        Sender::Broker { verify_only } => (verify_only, false, true),
    };
    let image = broker.replicas.image();
    let mut list: Vec<(String, i32)> = Vec::new();
    let mut early: BTreeMap<(String, i32), ResponseError> = BTreeMap::new();
    for t in topics {
        let name = t.name.0.to_string();
        for &p in &t.partitions {
            let known = image.topic(&name).is_some_and(|topic| p >= 0 && (p as usize) < topic.partitions.len());
            if topic_denied(&name) {
                early.insert((name.clone(), p), ResponseError::TopicAuthorizationFailed);
            } else if !known {
                early.insert((name.clone(), p), ResponseError::UnknownTopicOrPartition);
            } else if from_client && is_internal(&name) {
                early.insert((name.clone(), p), ResponseError::TopicAuthorizationFailed);
            }
            list.push((name.clone(), p));
        }
    }
    let results: Vec<Result<(), ResponseError>> = if !early.is_empty() {
        list.iter().map(|k| Err(early.get(k).copied().unwrap_or(ResponseError::OperationNotAttempted))).collect()
    } else if verify_only {
        let id = transactional_id.to_string();
        match broker.txn.read(&id, |shard| shard.verify_partitions(&id, producer_id, producer_epoch, &list)) {
            Ok(flags) => {
                flags.into_iter().map(|ok| if ok { Ok(()) } else { Err(ResponseError::TransactionAbortable) }).collect()
            }
            Err(e) => list.iter().map(|_| Err(e)).collect(),
        }
    } else {
        let id = transactional_id.to_string();
        // v4+ (sent by a partition leader) adds under transactions V2.
        let tv = if from_client { 0 } else { 2 };
        let r = broker
            .txn
            .run(&id, |shard, _, now| shard.add_partitions(&id, producer_id, producer_epoch, &list, tv, now))
            .await
            .map(|_| ())
            .map_err(|e| downgrade(e, knows_fenced));
        list.iter().map(|_| r).collect()
    };
    let mut by_topic: Vec<(String, Vec<AddPartitionsToTxnPartitionResult>)> = Vec::new();
    for ((topic, p), r) in list.into_iter().zip(results) {
        let result =
            AddPartitionsToTxnPartitionResult::default().with_partition_index(p).with_partition_error_code(code(&r));
        match by_topic.iter_mut().find(|(t, _)| *t == topic) {
            Some((_, v)) => v.push(result),
            None => by_topic.push((topic, vec![result])),
        }
    }
    by_topic
        .into_iter()
        .map(|(t, rs)| AddPartitionsToTxnTopicResult::default().with_name(topic_name(&t)).with_results_by_partition(rs))
        .collect()
}

/// Who sent an AddPartitionsToTxn.
#[derive(Clone, Copy)]
enum Sender {
    /// A producer (v0–3); `knows_fenced`: v2+ (PRODUCER_FENCED, KIP-588).
    Client { knows_fenced: bool },
    /// A partition leader or group coordinator (v4+, KIP-890): it verifies, or (under
    /// transactions V2) adds the partition itself.
    Broker { verify_only: bool },
}

/// AddOffsetsToTxn: the group's `__consumer_offsets` partition joins the transaction, so that
/// the offsets committed in it (TxnOffsetCommit) get its marker.
/// WRITE on the transactional id, READ on the group (Kafka's `handleAddOffsetsToTxnRequest`).
pub async fn add_offsets_to_txn(
    broker: &Arc<Broker>,
    request: AddOffsetsToTxnRequest,
    version: i16,
    session: &Session,
) -> AddOffsetsToTxnResponse {
    if !broker.authz.allowed(
        session,
        Operation::Write,
        ResourceType::TransactionalId,
        request.transactional_id.0.as_str(),
    ) {
        return AddOffsetsToTxnResponse::default()
            .with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code());
    }
    if !broker.authz.allowed(session, Operation::Read, ResourceType::Group, request.group_id.0.as_str()) {
        return AddOffsetsToTxnResponse::default().with_error_code(ResponseError::GroupAuthorizationFailed.code());
    }
    let partition = (crate::groups::OFFSETS_TOPIC.to_string(), broker.groups.shard_for(&request.group_id.0) as i32);
    let id = request.transactional_id.0.to_string();
    let (pid, epoch) = (request.producer_id.0, request.producer_epoch);
    let r = broker
        .txn
        .run(&id, |shard, _, now| shard.add_partitions(&id, pid, epoch, std::slice::from_ref(&partition), 0, now))
        .await
        .map(|_| ())
        .map_err(|e| downgrade(e, version >= 2));
    AddOffsetsToTxnResponse::default().with_error_code(code(&r))
}

/// EndTxn: commit or abort. v5+ runs under transactions V2 (the epoch is bumped and returned).
/// WRITE on the transactional id (TRANSACTIONAL_ID_AUTHORIZATION_FAILED).
pub async fn end_txn(broker: &Arc<Broker>, request: EndTxnRequest, version: i16, session: &Session) -> EndTxnResponse {
    let id = request.transactional_id.0.to_string();
    if !broker.authz.allowed(session, Operation::Write, ResourceType::TransactionalId, &id) {
        return EndTxnResponse::default()
            .with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
    }
    let (pid, epoch, commit) = (request.producer_id.0, request.producer_epoch, request.committed);
    let tv2 = version >= 5;
    match broker.txn.run(&id, |shard, ids, now| shard.end_txn(&id, pid, epoch, commit, tv2, ids, now)).await {
        Ok((pid, epoch)) => EndTxnResponse::default().with_producer_id(ProducerId(pid)).with_producer_epoch(epoch),
        Err(e) => EndTxnResponse::default()
            .with_error_code(downgrade(e, version >= 2).code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    }
}

/// DescribeTransactions: each id's last durable state, from its coordinator.
/// DESCRIBE on each transactional id (TRANSACTIONAL_ID_AUTHORIZATION_FAILED); partitions of
/// topics the principal may not DESCRIBE are left out (Kafka's `handleDescribeTransactionsRequest`).
pub fn describe_transactions(
    broker: &Arc<Broker>,
    request: DescribeTransactionsRequest,
    session: &Session,
) -> DescribeTransactionsResponse {
    let states = request
        .transactional_ids
        .iter()
        .map(|id| {
            let out = describe_transactions_response::TransactionState::default().with_transactional_id(id.clone());
            if !broker.authz.allowed(session, Operation::Describe, ResourceType::TransactionalId, id.0.as_str()) {
                return out
                    .with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code())
                    .with_transaction_state(str_bytes(""));
            }
            let described = broker.txn.read(&id.0, |shard| {
                shard.describe(&id.0).map(|m| {
                    out.clone()
                        .with_transaction_state(str_bytes(m.value.state.name()))
                        .with_transaction_timeout_ms(m.value.txn_timeout_ms)
                        .with_transaction_start_time_ms(m.value.start_ms)
                        .with_producer_id(ProducerId(m.value.producer_id))
                        .with_producer_epoch(m.value.producer_epoch)
                        .with_topics(
                            m.value
                                .partitions
                                .iter()
                                .filter(|(t, _)| {
                                    broker.authz.allowed(session, Operation::Describe, ResourceType::Topic, t)
                                })
                                .map(|(t, ps)| {
                                    describe_transactions_response::TopicData::default()
                                        .with_topic(topic_name(t))
                                        .with_partitions(ps.iter().copied().collect())
                                })
                                .collect(),
                        )
                })
            });
            match described {
                Ok(s) => s,
                Err(e) => out.with_error_code(e.code()).with_transaction_state(str_bytes("")),
            }
        })
        .collect();
    DescribeTransactionsResponse::default().with_transaction_states(states)
}

/// ListTransactions: the transactions this broker coordinates that pass the filters.
/// Only the transactional ids the principal may DESCRIBE are listed.
pub fn list_transactions(
    broker: &Arc<Broker>,
    request: ListTransactionsRequest,
    session: &Session,
) -> ListTransactionsResponse {
    let mut unknown = Vec::new();
    let mut states = Vec::new();
    for name in &request.state_filters {
        match (0..8).filter_map(TxnState::from_id).find(|s| s.name() == name.as_str()) {
            Some(s) => states.push(s),
            None => unknown.push(name.clone()),
        }
    }
    let filter = ListFilter {
        states,
        producer_ids: request.producer_id_filters.iter().map(|p| p.0).collect(),
        min_duration_ms: request.duration_filter,
    };
    let now = now_ms();
    let listed = broker.txn.each_shard(|shard| {
        shard
            .list(&filter, now)
            .into_iter()
            .filter(|(_, m)| m.value.state.is_durable())
            .filter(|(id, _)| broker.authz.allowed(session, Operation::Describe, ResourceType::TransactionalId, id))
            .map(|(id, m)| {
                list_transactions_response::TransactionState::default()
                    .with_transactional_id(TransactionalId(str_bytes(id.clone())))
                    .with_producer_id(ProducerId(m.value.producer_id))
                    .with_transaction_state(str_bytes(m.value.state.name()))
            })
            .collect::<Vec<_>>()
    });
    match listed {
        Ok(all) => ListTransactionsResponse::default()
            .with_unknown_state_filters(unknown)
            .with_transaction_states(all.into_iter().flatten().collect()),
        Err(e) => ListTransactionsResponse::default().with_error_code(e.code()).with_unknown_state_filters(unknown),
    }
}
