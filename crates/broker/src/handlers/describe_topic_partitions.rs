//! DescribeTopicPartitions (key 75, KIP-966): topics and their partitions as Metadata gives
//! them, plus each partition's eligible leader replicas and the replicas on brokers that are
//! not live (offline), paged. Kafka's Admin `describeTopics` (kafka-clients 3.8+) and
//! `kafka-topics.sh --describe` use it.
//!
//! As Kafka's `DescribeTopicPartitionsRequestHandler`: the topics asked for (all, with an
//! empty list) in name order, an unknown one named with UNKNOWN_TOPIC_OR_PARTITION; at most
//! `response_partition_limit` partitions (capped at [`MAX_PARTITIONS`]), the rest after
//! `next_cursor`; a `cursor` starts at that topic and partition.

use std::sync::Arc;

use strata_metadata::MetadataImage;
use strata_protocol::kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use strata_protocol::kafka_protocol::messages::{
    BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse,
};
use strata_protocol::ResponseError;
use uuid::Uuid;

use strata_security::acl::{Operation, ResourceType};

use super::{topic_name, TOPIC_OPERATIONS};
use crate::Broker;

/// Kafka's `max.request.partition.size.limit` default: the most partitions one response holds.
pub const MAX_PARTITIONS: usize = 2000;

/// Topics the principal may not DESCRIBE are left out of a listing, and answered
/// TOPIC_AUTHORIZATION_FAILED when named (Kafka's `DescribeTopicPartitionsRequestHandler`).
pub fn handle(
    broker: &Arc<Broker>,
    request: DescribeTopicPartitionsRequest,
    session: &crate::net::Session,
) -> DescribeTopicPartitionsResponse {
    let image = broker.replicas.image();
    let may_describe = |name: &str| broker.authz.allowed(session, Operation::Describe, ResourceType::Topic, name);
    let mut names: Vec<String> = if request.topics.is_empty() {
        image.topics().map(|t| t.name.clone()).filter(|n| may_describe(n)).collect()
    } else {
        request.topics.iter().map(|t| t.name.to_string()).collect()
    };
    names.sort();
    names.dedup();
    let (start_topic, start_partition) = match &request.cursor {
        Some(c) => (Some(c.topic_name.to_string()), c.partition_index.max(0)),
        None => (None, 0),
    };
    let limit = usize::try_from(request.response_partition_limit).unwrap_or(0).clamp(1, MAX_PARTITIONS);
    let mut left = limit;
    let mut topics = Vec::new();
    let mut next_cursor = None;
    for name in names.iter().filter(|n| start_topic.as_ref().is_none_or(|s| *n >= s)) {
        let first = if start_topic.as_deref() == Some(name.as_str()) { start_partition } else { 0 };
        if !may_describe(name) {
            topics.push(
                DescribeTopicPartitionsResponseTopic::default()
                    .with_error_code(ResponseError::TopicAuthorizationFailed.code())
                    .with_name(Some(topic_name(name)))
                    .with_topic_id(Uuid::nil()),
            );
            continue;
        }
        let Some(topic) = image.topic(name) else {
            topics.push(
                DescribeTopicPartitionsResponseTopic::default()
                    .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                    .with_name(Some(topic_name(name)))
                    .with_topic_id(Uuid::nil()),
            );
            continue;
        };
        if left == 0 {
            next_cursor = Some(Cursor::default().with_topic_name(topic_name(name)).with_partition_index(first));
            break;
        }
        let wanted: Vec<_> = topic.partitions.iter().skip(usize::try_from(first).unwrap_or(0)).collect();
        let taken: Vec<_> = wanted.iter().take(left).map(|p| describe(&image, p)).collect();
        left -= taken.len();
        if taken.len() < wanted.len() {
            next_cursor = Some(
                Cursor::default().with_topic_name(topic_name(name)).with_partition_index(first + taken.len() as i32),
            );
        }
        topics.push(
            DescribeTopicPartitionsResponseTopic::default()
                .with_name(Some(topic_name(name)))
                .with_topic_id(topic.id)
                .with_is_internal(name == crate::groups::OFFSETS_TOPIC)
                .with_partitions(taken)
                .with_topic_authorized_operations(broker.authz.operations(
                    session,
                    ResourceType::Topic,
                    name,
                    &TOPIC_OPERATIONS,
                )),
        );
        if next_cursor.is_some() {
            break;
        }
    }
    DescribeTopicPartitionsResponse::default().with_topics(topics).with_next_cursor(next_cursor)
}

fn describe(image: &MetadataImage, p: &strata_metadata::PartitionImage) -> DescribeTopicPartitionsResponsePartition {
    let live = |id: &i32| image.brokers.get(id).is_some_and(|b| !b.fenced);
    // As Metadata: a leader that is none or not live is LEADER_NOT_AVAILABLE with leader -1.
    let (error, leader) = if live(&p.leader) { (0, p.leader) } else { (ResponseError::LeaderNotAvailable.code(), -1) };
    let ids = |v: &[i32]| v.iter().copied().map(BrokerId).collect::<Vec<_>>();
    let offline: Vec<i32> = p.replicas.iter().copied().filter(|r| !live(r)).collect();
    DescribeTopicPartitionsResponsePartition::default()
        .with_error_code(error)
        .with_partition_index(p.partition)
        .with_leader_id(BrokerId(leader))
        .with_leader_epoch(p.leader_epoch)
        .with_replica_nodes(ids(&p.replicas))
        .with_isr_nodes(ids(&p.isr))
        .with_eligible_leader_replicas(Some(ids(&p.elr)))
        .with_last_known_elr(Some(ids(&p.last_known_elr)))
        .with_offline_replicas(ids(&offline))
}
