//! OffsetForLeaderEpoch (key 23, KIP-101/279/320): where a leader epoch's records end on this
//! partition's leader, so a consumer that saw an older epoch (or, with replication, a replica
//! coming back) can tell whether the leader ever had its position and truncate exactly what
//! it never had.
//!
//! Each partition is answered on its own, as Kafka's `Partition.lastOffsetForLeaderEpoch`
//! does: UNKNOWN_TOPIC_OR_PARTITION, NOT_LEADER_OR_FOLLOWER (only the leader answers),
//! FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH for a `current_leader_epoch` (v2+) older / newer
//! than the partition's, KAFKA_STORAGE_ERROR for an offline log; otherwise the largest epoch
//! at or below the one asked and its end offset (-1 and -1 when the log knows no such epoch).

use std::sync::Arc;

use strata_protocol::kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use strata_protocol::kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use strata_protocol::ResponseError;

use crate::Broker;

/// Authorization as Kafka's `handleOffsetForLeaderEpochRequest`: a replica's request (v3+
/// replica id) needs CLUSTER_ACTION on the cluster (CLUSTER_AUTHORIZATION_FAILED), a client's
/// DESCRIBE on each topic (TOPIC_AUTHORIZATION_FAILED).
pub fn handle(
    broker: &Arc<Broker>,
    request: OffsetForLeaderEpochRequest,
    version: i16,
    session: &crate::net::Session,
) -> OffsetForLeaderEpochResponse {
    use strata_security::acl::{Operation, ResourceType};
    let from_replica = version >= 3 && request.replica_id.0 >= 0;
    let cluster_action = broker.authz.cluster(session, Operation::ClusterAction);
    let replica_denied = from_replica && !cluster_action;
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let denied = if replica_denied {
                Some(ResponseError::ClusterAuthorizationFailed)
            } else if !cluster_action
                && !broker.authz.allowed(session, Operation::Describe, ResourceType::Topic, t.topic.as_str())
            {
                Some(ResponseError::TopicAuthorizationFailed)
            } else {
                None
            };
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let base = EpochEndOffset::default().with_partition(p.partition);
                    if let Some(e) = denied {
                        return base.with_error_code(e.code()).with_leader_epoch(-1).with_end_offset(-1);
                    }
                    let current = if version >= 2 { p.current_leader_epoch } else { -1 };
                    let found = broker
                        .replicas
                        .leader_partition(&t.topic, p.partition, current)
                        .and_then(|part| part.end_offset_for_epoch(p.leader_epoch));
                    match found {
                        Ok((epoch, end)) => base.with_leader_epoch(epoch).with_end_offset(end),
                        Err(e) => base.with_error_code(e.code_i16()).with_leader_epoch(-1).with_end_offset(-1),
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default().with_topic(t.topic).with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
