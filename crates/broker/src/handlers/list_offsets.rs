//! ListOffsets: earliest, latest, max timestamp, or the first offset at or
//! after a timestamp.

use std::sync::Arc;

use strata_protocol::kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use strata_protocol::kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::duplicates;
use crate::error::BrokerError;
use crate::replica::Partition;
use crate::Broker;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const EARLIEST_PENDING_UPLOAD: i64 = -5;

/// Lookups by time and MAX_TIMESTAMP read (and may decompress) stored records under the
/// partition lock: a request with any runs on the blocking pool, off the async workers.
/// Topics the principal may not DESCRIBE are answered TOPIC_AUTHORIZATION_FAILED (Kafka's
/// `handleListOffsetRequest`).
pub async fn handle(
    broker: &Arc<Broker>,
    mut request: ListOffsetsRequest,
    version: i16,
    session: &crate::net::Session,
) -> ListOffsetsResponse {
    use strata_security::acl::{Operation, ResourceType};
    let (allowed, denied): (Vec<_>, Vec<_>) = std::mem::take(&mut request.topics)
        .into_iter()
        .partition(|t| broker.authz.allowed(session, Operation::Describe, ResourceType::Topic, t.name.as_str()));
    request.topics = allowed;
    let mut response = answer_all(broker, request, version).await;
    if !denied.is_empty() {
        let denied = ListOffsetsRequest::default().with_topics(denied);
        response.topics.extend(failed(denied, BrokerError::TopicAuthorizationFailed).topics);
    }
    response
}

async fn answer_all(broker: &Arc<Broker>, request: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let reads_records =
        request.topics.iter().flat_map(|t| &t.partitions).any(|p| p.timestamp >= 0 || p.timestamp == MAX_TIMESTAMP);
    if !reads_records {
        return answer(broker, request, version);
    }
    let (b, fallback) = (broker.clone(), request.clone());
    match tokio::task::spawn_blocking(move || answer(&b, request, version)).await {
        Ok(response) => response,
        Err(e) => {
            tracing::error!(error = %e, "ListOffsets lookup task failed");
            failed(fallback, BrokerError::Internal(e.to_string()))
        }
    }
}

/// Every partition of `request` answered with `error`.
fn failed(request: ListOffsetsRequest, error: BrokerError) -> ListOffsetsResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t.partitions.iter().map(|p| refused(p.partition_index, &error)).collect();
            ListOffsetsTopicResponse::default().with_name(t.name).with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

fn refused(partition: i32, e: &BrokerError) -> ListOffsetsPartitionResponse {
    ListOffsetsPartitionResponse::default()
        .with_partition_index(partition)
        .with_error_code(e.code_i16())
        .with_offset(-1)
        .with_timestamp(-1)
        .with_leader_epoch(-1)
}

fn answer(broker: &Arc<Broker>, request: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    // read_committed (v2+): nothing at or past the last stable offset is visible.
    let read_committed = version >= 2 && request.isolation_level == 1;
    // A partition asked for twice is answered INVALID_REQUEST each time (Kafka's
    // `ListOffsetsRequest.duplicatePartitions`).
    let twice = duplicates(
        request.topics.iter().flat_map(|t| t.partitions.iter().map(move |p| (t.name.clone(), p.partition_index))),
    );
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let base = ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index);
                    let answer = if twice.contains(&(t.name.clone(), p.partition_index)) {
                        Err(BrokerError::InvalidRequest("Duplicate partition in the request.".into()))
                    } else {
                        // KIP-320: the client's view of the leader epoch, from v4.
                        let epoch = if version >= 4 { p.current_leader_epoch } else { -1 };
                        broker.replicas.leader_partition(&t.name, p.partition_index, epoch).and_then(|part| {
                            let (offset, timestamp) = lookup(&part, p.timestamp, read_committed)?;
                            // The epoch of the record found (for the latest offset, the newest
                            // epoch), as Kafka reports it from v4; -1 when none is known.
                            let epoch = match (offset, p.timestamp) {
                                (-1, _) => -1,
                                (_, LATEST) => part.epoch_at(None),
                                _ => part.epoch_at(Some(offset)),
                            };
                            Ok((offset, timestamp, epoch))
                        })
                    };
                    match answer {
                        Ok((offset, timestamp, epoch)) => base
                            .with_offset(offset)
                            .with_timestamp(timestamp)
                            .with_leader_epoch(if version >= 4 { epoch } else { -1 }),
                        Err(e) => refused(p.partition_index, &e),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default().with_name(t.name).with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

/// (offset, timestamp) for one partition; (-1, -1) when no record matches. Every answer is at
/// or above the log start (a lookup by time never lands on a record DeleteRecords removed,
/// even one still inside a kept batch), and below the high watermark, or with
/// `read_committed` the last stable offset (Kafka's `lastFetchableOffset`).
fn lookup(p: &Partition, timestamp: i64, read_committed: bool) -> Result<(i64, i64), BrokerError> {
    let fetchable = || if read_committed { p.last_stable_offset() } else { p.high_watermark() };
    let found = match timestamp {
        // An offline log answers KAFKA_STORAGE_ERROR here too, not offsets it cannot serve.
        LATEST => return p.with_log(|log| Ok(log.check_online()?)).map(|()| (fetchable(), -1)),
        EARLIEST | EARLIEST_LOCAL => {
            return p.with_log(|log| Ok(log.check_online()?)).map(|()| (p.log_start_offset(), -1))
        }
        // No tiered storage: nothing is pending upload.
        EARLIEST_PENDING_UPLOAD => return Ok((-1, -1)),
        MAX_TIMESTAMP => p.max_timestamp_offset()?,
        ts if ts < 0 => return Err(BrokerError::InvalidRequest(format!("unknown special timestamp {ts}"))),
        ts => p.offset_for_timestamp(ts)?,
    };
    // Nothing past the high watermark (the LSO) is visible to consumers.
    let end = fetchable();
    Ok(found.filter(|(offset, _)| *offset < end).unwrap_or((-1, -1)))
}
