//! DeleteRecords: move a partition's log start offset forward (Kafka's
//! `ReplicaManager.deleteRecords`). The leader moves its own log start at once (off the async
//! workers: it may delete segment files); followers learn the new start from their next fetch
//! and report theirs in the one after. The answer waits, as Kafka's `DelayedDeleteRecords`,
//! until the low watermark (the smallest log start among the leader and its followers on live
//! brokers) has reached the requested offset, and gives it; REQUEST_TIMED_OUT after
//! `timeout_ms`.

use std::sync::Arc;

use strata_protocol::kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use strata_protocol::kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use tokio::time::Instant;

use crate::error::BrokerError;
use crate::Broker;

/// An offset of -1 means "up to the high watermark".
const HIGH_WATERMARK: i64 = -1;

/// DELETE on each topic (TOPIC_AUTHORIZATION_FAILED), as in Kafka.
pub async fn handle(
    broker: &Arc<Broker>,
    request: DeleteRecordsRequest,
    session: &crate::net::Session,
) -> DeleteRecordsResponse {
    use strata_security::acl::{Operation, ResourceType};
    let deadline = Instant::now() + std::time::Duration::from_millis(request.timeout_ms.max(0) as u64);
    // First every leader moves its own log start; then the answers wait for the followers.
    let mut moved = Vec::with_capacity(request.topics.len());
    for t in request.topics {
        let partitions: Vec<_> = t
            .partitions
            .iter()
            .map(|p| {
                if !broker.authz.allowed(session, Operation::Delete, ResourceType::Topic, t.name.as_str()) {
                    return (p.partition_index, Err(BrokerError::TopicAuthorizationFailed));
                }
                let result = broker.replicas.leader_partition(&t.name, p.partition_index, -1).and_then(|part| {
                    let hw = part.high_watermark();
                    let target = if p.offset == HIGH_WATERMARK { hw } else { p.offset };
                    if target < 0 || target > hw {
                        return Err(BrokerError::OffsetOutOfRange {
                            offset: p.offset,
                            log_start: part.log_start_offset(),
                            log_end: hw,
                        });
                    }
                    let start = crate::blocking::off_worker(|| part.advance_log_start(target))?;
                    tracing::info!(topic = %t.name.as_str(), partition = p.partition_index, offset = p.offset,
                        log_start = start, "records deleted");
                    Ok((part, target))
                });
                (p.partition_index, result)
            })
            .collect();
        moved.push((t.name, partitions));
    }
    let mut topics = Vec::with_capacity(moved.len());
    for (name, partitions) in moved {
        let mut results = Vec::with_capacity(partitions.len());
        for (index, result) in partitions {
            let base = DeleteRecordsPartitionResult::default().with_partition_index(index);
            let low = match result {
                Ok((part, target)) => {
                    let live = |id: i32| broker.replicas.image().brokers.get(&id).is_some_and(|b| !b.fenced);
                    part.await_low_watermark(target, live, deadline, request.timeout_ms).await
                }
                Err(e) => Err(e),
            };
            results.push(match low {
                Ok(low) => base.with_low_watermark(low),
                Err(e) => base.with_error_code(e.code_i16()).with_low_watermark(-1),
            });
        }
        topics.push(DeleteRecordsTopicResult::default().with_name(name).with_partitions(results));
    }
    DeleteRecordsResponse::default().with_topics(topics)
}
