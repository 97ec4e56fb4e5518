//! Produce: validate each partition's batch, append it, answer with offsets.
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

use bytes::Bytes;
use strata_protocol::batch::BatchHeader;
use strata_protocol::kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse, TopicProduceResponse,
};
use strata_protocol::kafka_protocol::messages::{BrokerId, ProduceRequest, ProduceResponse};
use strata_protocol::ResponseError;
use tokio::time::Instant;

use super::str_bytes;
use crate::error::BrokerError;
use crate::groups::OFFSETS_TOPIC;
use crate::replica::{now_ms, AppendResult, Partition};
use crate::Broker;

/// What to do after a produce: answer, stay silent (acks=0), or close the connection.
pub enum Outcome {
    Respond(ProduceResponse),
    Silent,
    /// An acks=0 produce failed for these partitions (`topic-partition: error`, comma separated).
    Close(String),
}

pub async fn handle(broker: &Arc<Broker>, request: ProduceRequest, version: i16) -> Outcome {
    let acks = request.acks;
    let acks_valid = matches!(acks, -1..=1);
    let image = broker.replicas.image();
    let deadline = Instant::now() + std::time::Duration::from_millis(request.timeout_ms.max(0) as u64);
    // Each topic with the outcome of each of its partitions' appends; acks=all ones wait for
    // their replicas below, all against the one deadline.
    let mut appended = Vec::with_capacity(request.topic_data.len());
    let mut failed_silently = Vec::new();
    for topic in request.topic_data {
        // v13 names topics by id.
        let name = if version >= 13 {
            image.topic_by_id(&topic.topic_id).map(|t| t.name.clone())
        } else {
            Some(topic.name.to_string())
        };
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for p in topic.partition_data {
            let result = if !acks_valid {
                Err(BrokerError::InvalidRequest(format!("acks must be -1, 0 or 1, not {acks}")))
            } else if request.transactional_id.is_some() {
                Err(BrokerError::TransactionsUnsupported)
            } else {
                match &name {
                    None => Err(BrokerError::UnknownTopicId),
                    Some(name) if name == OFFSETS_TOPIC => {
                        Err(BrokerError::InvalidTopic(format!("Cannot append to internal topic {name}")))
                    }
                    Some(_) if version < 7 && is_zstd(p.records.as_deref()) => {
                        Err(BrokerError::UnsupportedCompressionType(
                            "Produce requests with ZStandard compression must be version 7 or higher",
                        ))
                    }
                    Some(name) => match broker.replicas.leader_partition(name, p.index, -1) {
                        Ok(partition) => {
                            let in_sync = image.partition(name, p.index).map_or(0, |x| x.isr.len());
                            match partition.check_min_isr(acks, in_sync) {
                                Ok(()) => append(partition.clone(), p.records.unwrap_or_default())
                                    .await
                                    .map(|r| (r, Some(partition))),
                                Err(e) => Err(e),
                            }
                        }
                        Err(e) => Err(e),
                    },
                }
            };
            if acks == 0 {
                if let Err(e) = &result {
                    failed_silently.push(format!("{}-{}: {e}", name.as_deref().unwrap_or("?"), p.index));
                }
            }
            partitions.push((p.index, result));
        }
        appended.push((topic.name, topic.topic_id, name, partitions));
    }
    if acks == 0 {
        return if failed_silently.is_empty() { Outcome::Silent } else { Outcome::Close(failed_silently.join(", ")) };
    }
    let mut responses = Vec::with_capacity(appended.len());
    let mut hinted = Vec::new();
    for (topic_name, topic_id, name, partitions) in appended {
        let mut out = Vec::with_capacity(partitions.len());
        for (index, result) in partitions {
            let result = match result {
                Ok((r, Some(partition))) if acks == -1 => {
                    partition.await_committed(&r, deadline, request.timeout_ms).await.map(|()| r)
                }
                Ok((r, _)) => Ok(r),
                Err(e) => Err(e),
            };
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
    let endpoints = super::hinted_endpoints(&image, hinted)
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

/// Whether the record set starts with a zstd batch (Kafka refuses those below Produce v7).
fn is_zstd(records: Option<&[u8]>) -> bool {
    records
        .and_then(|r| BatchHeader::parse(r).ok())
        .is_some_and(|h| h.compression().ok() == Some(strata_protocol::batch::Compression::Zstd))
}

async fn append(partition: Arc<Partition>, records: Bytes) -> Result<AppendResult, BrokerError> {
    let now = now_ms();
    if !partition.append_may_block(&records, now) {
        partition.append(&records, now)
    } else {
        // This append may fsync (a flush policy or a roll), decompress or recompress: keep it
        // off the async workers.
        tokio::task::spawn_blocking(move || partition.append(&records, now))
            .await
            .unwrap_or_else(|e| Err(BrokerError::Storage(format!("append task failed: {e}"))))
    }
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
