//! Produce: parse, hand the partitions' batches to `ReplicaManager::append_records`, render.
//!
//! acks=1 is answered once the leader has appended. acks=all (-1) first checks the ISR
//! against `min.insync.replicas` (NOT_ENOUGH_REPLICAS, nothing appended), appends, then waits
//! (parked on the partition as Kafka's `DelayedProduce` waits in its purgatory) until the high
//! watermark passes the records: every in-sync replica has them. It fails with
//! NOT_ENOUGH_REPLICAS_AFTER_APPEND if the ISR shrank below the minimum meanwhile,
//! NOT_LEADER_OR_FOLLOWER if leadership moved, REQUEST_TIMED_OUT after the request's
//! `timeout_ms`. With one replica the high watermark moves with the append, so acks=all is
//! answered at once. acks=0 gets no response at all, and if any partition failed the
//! connection is closed instead (as Kafka does: it is the only way an acks=0 producer learns
//! of an error, and librdkafka and the Java client then refresh metadata).

use std::sync::Arc;

use super::str_bytes;
use crate::error::BrokerError;
use crate::metrics::TopicLabels;
use crate::replica::{AppendEntry, AppendOrigin, AppendResult, Verification};
use crate::Broker;
use strata_protocol::batch::BatchHeader;
use strata_protocol::kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse, TopicProduceResponse,
};
use strata_protocol::kafka_protocol::messages::{BrokerId, ProduceRequest, ProduceResponse};
use strata_protocol::ResponseError;

/// What to do after a produce: answer, stay silent (acks=0), or close the connection.
pub enum Outcome {
    Respond(ProduceResponse),
    Silent,
    /// An acks=0 produce failed for these partitions (`topic-partition: error`, comma separated).
    Close(String),
}

/// Authorization (Kafka's `KafkaApis.handleProduceRequest`): WRITE on the transactional id
/// of a transactional request (TRANSACTIONAL_ID_AUTHORIZATION_FAILED for every partition),
/// WRITE on each topic (TOPIC_AUTHORIZATION_FAILED).
pub async fn handle(
    broker: &Arc<Broker>,
    request: ProduceRequest,
    version: i16,
    session: &crate::net::Session,
) -> Outcome {
    use strata_security::acl::{Operation, ResourceType};
    let listener: &str = &session.listener;
    let txn_denied = request
        .transactional_id
        .as_ref()
        .is_some_and(|id| !broker.authz.allowed(session, Operation::Write, ResourceType::TransactionalId, id.as_str()));
    let acks = request.acks;
    let acks_valid = matches!(acks, -1..=1);
    let image = broker.replicas.image();
    // What the request itself rules out, per partition; the rest goes to the replica manager
    // in one append_records (which waits for acks=all against the one timeout).
    let mut checked: Vec<Result<AppendEntry, BrokerError>> = Vec::new();
    let mut topics = Vec::with_capacity(request.topic_data.len());
    for topic in request.topic_data {
        // v13 names topics by id.
        let name = if version >= 13 {
            image.topic_by_id(&topic.topic_id).map(|t| t.name.clone())
        } else {
            Some(topic.name.to_string())
        };
        let topic_denied =
            name.as_deref().is_some_and(|n| !broker.authz.allowed(session, Operation::Write, ResourceType::Topic, n));
        let mut indexes = Vec::with_capacity(topic.partition_data.len());
        for p in topic.partition_data {
            let check = if !acks_valid {
                Err(BrokerError::InvalidRequest(format!("acks must be -1, 0 or 1, not {acks}")))
            } else if txn_denied {
                Err(BrokerError::TransactionalIdAuthorizationFailed)
            } else if topic_denied {
                Err(BrokerError::TopicAuthorizationFailed)
            } else if request.transactional_id.is_none() && is_transactional(p.records.as_deref()) {
                // Kafka's `KafkaApis.handleProduceRequest`: transactional records need a
                // transactional id the client may write as.
                Err(BrokerError::TransactionalIdAuthorizationFailed)
            } else {
                match &name {
                    None => Err(BrokerError::UnknownTopicId),
                    Some(_) if version < 7 && is_zstd(p.records.as_deref()) => {
                        Err(BrokerError::UnsupportedCompressionType(
                            "Produce requests with ZStandard compression must be version 7 or higher",
                        ))
                    }
                    Some(name) => Ok(name.clone()),
                }
            };
            checked.push(check.map(|name| AppendEntry {
                topic: name,
                index: p.index,
                records: p.records.unwrap_or_default(),
                verification: Verification::Off,
            }));
            indexes.push(p.index);
        }
        topics.push((topic.name, topic.topic_id, name, indexes));
    }
    if let Some(id) = request.transactional_id.as_ref() {
        // From v12 (transactions V2) this is how the partition joins the transaction: never
        // skipped. Below, the config may turn the check off.
        let enabled = broker.config.get("transaction.partition.verification.enable").is_none_or(|v| v.trim() == "true");
        if enabled || version >= 12 {
            verify(broker, &id.0, version, &mut checked).await;
        }
    }
    let mut refused: Vec<Option<BrokerError>> = Vec::with_capacity(checked.len());
    let mut entries = Vec::with_capacity(checked.len());
    for c in checked {
        match c {
            Ok(entry) => {
                entries.push(entry);
                refused.push(None);
            }
            Err(e) => refused.push(Some(e)),
        }
    }
    // BytesIn and MessagesIn count what was appended, as Kafka's ReplicaManager marks them.
    let sizes: Vec<(TopicLabels, u64, u64)> = entries
        .iter()
        .map(|e| (TopicLabels { topic: e.topic.clone() }, e.records.len() as u64, records_in(&e.records)))
        .collect();
    let appended = broker.replicas.append_records(acks, request.timeout_ms, AppendOrigin::Client, entries).await;
    for (result, (topic, bytes, messages)) in appended.iter().zip(&sizes) {
        // Kafka counts at the local append: a batch written here whose acks=all wait then
        // failed counts too.
        let written = matches!(
            result,
            Ok(_) | Err(BrokerError::RequestTimedOut(_) | BrokerError::NotEnoughReplicasAfterAppend { .. })
        );
        if written {
            broker.metrics.bytes_in(topic, *bytes, *messages);
        }
    }
    let mut appended = appended.into_iter();
    let mut results = refused.into_iter().map(|r| match r {
        Some(e) => Err(e),
        None => appended.next().unwrap_or(Err(BrokerError::ShuttingDown)),
    });
    if acks == 0 {
        let mut failed = Vec::new();
        for (_, _, name, indexes) in &topics {
            for index in indexes {
                if let Some(Err(e)) = results.next() {
                    failed.push(format!("{}-{index}: {e}", name.as_deref().unwrap_or("?")));
                }
            }
        }
        return if failed.is_empty() { Outcome::Silent } else { Outcome::Close(failed.join(", ")) };
    }
    // The hints name the leaders as they are now, after any acks=all wait.
    let image = broker.replicas.image();
    let mut responses = Vec::with_capacity(topics.len());
    let mut hinted = Vec::new();
    for (topic_name, topic_id, name, indexes) in topics {
        let mut out = Vec::with_capacity(indexes.len());
        for index in indexes {
            let result = results.next().unwrap_or(Err(BrokerError::ShuttingDown));
            let hint = match (&result, &name) {
                (Err(BrokerError::NotLeaderOrFollower(_) | BrokerError::FencedLeaderEpoch { .. }), Some(n))
                    if version >= 10 =>
                {
                    super::leader_hint(&image, n, index)
                }
                _ => None,
            };
            let mut response = partition_response(index, result, acks_valid, name.as_deref(), acks, version);
            if let Some((leader, epoch)) = hint {
                hinted.push(leader);
                response = response.with_current_leader(
                    LeaderIdAndEpoch::default().with_leader_id(BrokerId(leader)).with_leader_epoch(epoch),
                );
            }
            out.push(response);
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(if version >= 13 { Default::default() } else { topic_name })
                .with_topic_id(if version >= 13 { topic_id } else { Default::default() })
                .with_partition_responses(out),
        );
    }
    let endpoints = super::hinted_endpoints(&image, hinted, listener)
        .into_iter()
        .map(|(id, host, port, rack)| {
            NodeEndpoint::default()
                .with_node_id(BrokerId(id))
                .with_host(str_bytes(host))
                .with_port(port)
                .with_rack(rack.map(str_bytes))
        })
        .collect();
    Outcome::Respond(ProduceResponse::default().with_responses(responses).with_node_endpoints(endpoints))
}

/// KIP-890 part 1: the transactional batches that would open a transaction in their partition
/// are verified with the transaction coordinator first (under transactions V2, Produce v12+,
/// the coordinator adds the partition instead). A partition the coordinator does not confirm
/// is refused with what Kafka answers the producer: INVALID_TXN_STATE ("not added to the
/// transaction"; TRANSACTION_ABORTABLE from v11), INVALID_PRODUCER_EPOCH for a fenced
/// producer, NOT_ENOUGH_REPLICAS (retriable) while the coordinator is busy or unreachable.
async fn verify(
    broker: &Arc<Broker>,
    transactional_id: &str,
    version: i16,
    checked: &mut [Result<AppendEntry, BrokerError>],
) {
    let mut producer: Option<(i64, i16)> = None;
    let mut targets = Vec::new();
    let mut positions = Vec::new();
    for (i, c) in checked.iter_mut().enumerate() {
        let Ok(entry) = c else { continue };
        let Ok(header) = BatchHeader::parse(&entry.records) else { continue };
        if !header.is_transactional() || !header.has_producer_id() {
            continue;
        }
        let this = (header.producer_id, header.producer_epoch);
        if producer.is_some_and(|p| p.0 != this.0) {
            *c = Err(BrokerError::Coordinator(
                ResponseError::InvalidProducerIdMapping,
                "the transactional batches of one request must share one producer id".into(),
            ));
            continue;
        }
        producer = Some(this);
        // Not the leader: the append answers that.
        entry.verification = Verification::Unverified;
        if let Ok(partition) = broker.replicas.get(&entry.topic, entry.index) {
            targets.push((partition, entry.topic.clone(), entry.index));
            positions.push(i);
        }
    }
    let Some((pid, epoch)) = producer else { return };
    if targets.is_empty() {
        return;
    }
    let results = broker.txn.verify(transactional_id, pid, epoch, &targets, version >= 12).await;
    for (i, result) in positions.into_iter().zip(results) {
        match result {
            Ok(verification) => {
                if let Ok(entry) = &mut checked[i] {
                    entry.verification = verification;
                }
            }
            Err(e) => checked[i] = Err(verification_error(e, version)),
        }
    }
}

/// What a producer is told when its transaction coordinator did not confirm a partition
/// (Kafka's `ReplicaManager` and `AddPartitionsToTxnManager` mappings).
fn verification_error(e: ResponseError, version: i16) -> BrokerError {
    use ResponseError::*;
    let (code, message) = match e {
        TransactionAbortable if version <= 10 => (InvalidTxnState, "Partition was not added to the transaction"),
        TransactionAbortable => (TransactionAbortable, "Partition was not added to the transaction"),
        ProducerFenced => (InvalidProducerEpoch, "the producer was fenced by a newer instance"),
        ConcurrentTransactions
        | NetworkException
        | CoordinatorLoadInProgress
        | CoordinatorNotAvailable
        | NotCoordinator => (NotEnoughReplicas, "the transaction coordinator could not verify the partition yet"),
        other => (other, "the transaction coordinator refused the partition"),
    };
    BrokerError::Coordinator(code, message.to_string())
}

/// Whether the record set starts with a zstd batch (Kafka refuses those below Produce v7).
fn is_zstd(records: Option<&[u8]>) -> bool {
    records
        .and_then(|r| BatchHeader::parse(r).ok())
        .is_some_and(|h| h.compression().ok() == Some(strata_protocol::batch::Compression::Zstd))
}

fn partition_response(
    index: i32,
    result: Result<AppendResult, BrokerError>,
    acks_valid: bool,
    topic: Option<&str>,
    acks: i16,
    version: i16,
) -> PartitionProduceResponse {
    let base = PartitionProduceResponse::default().with_index(index);
    match result {
        Ok(r) => base
            .with_base_offset(r.base_offset)
            .with_log_append_time_ms(r.log_append_time)
            .with_log_start_offset(r.log_start_offset),
        Err(e) => {
            let code = if acks_valid { e.code() } else { ResponseError::InvalidRequiredAcks };
            if !matches!(e, BrokerError::UnknownTopicOrPartition | BrokerError::UnknownTopicId) {
                tracing::debug!(topic = topic.unwrap_or("?"), partition = index, acks, error = %e, "produce rejected");
            }
            // KIP-467 (v8+): name each refused record, so the client fails exactly those.
            let record_errors = match &e {
                BrokerError::RecordErrors { errors, .. } if version >= 8 => errors
                    .iter()
                    .map(|r| {
                        BatchIndexAndErrorMessage::default()
                            .with_batch_index(r.index)
                            .with_batch_index_error_message(Some(str_bytes(r.message.clone())))
                    })
                    .collect(),
                _ => Vec::new(),
            };
            base.with_error_code(code.code())
                .with_record_errors(record_errors)
                .with_base_offset(-1)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(-1)
                .with_error_message(Some(str_bytes(e.to_string())))
        }
    }
}

/// The records the batches of `records` hold (for MessagesIn).
fn records_in(records: &[u8]) -> u64 {
    strata_protocol::batch::BatchIter::new(records)
        .map_while(Result::ok)
        .map(|(h, _)| u64::try_from(h.records_count).unwrap_or(0))
        .sum()
}

/// Whether `records` start with a transactional batch.
fn is_transactional(records: Option<&[u8]>) -> bool {
    records.and_then(|r| strata_protocol::batch::BatchHeader::parse(r).ok()).is_some_and(|h| h.is_transactional())
}
