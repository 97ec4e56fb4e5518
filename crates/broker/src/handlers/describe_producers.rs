//! DescribeProducers (61, KIP-664): the producers a partition's replica on this broker
//! remembers, with their epoch, last sequence and timestamp, the coordinator epoch of their
//! last marker and the start of their open transaction (what `kafka-transactions.sh
//! describe-producers` and `find-hanging` show). Any replica answers, as in Kafka.

use std::sync::Arc;

use strata_protocol::kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use strata_protocol::kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};
use strata_protocol::ResponseError;

use crate::Broker;

/// READ on each topic (TOPIC_AUTHORIZATION_FAILED), as Kafka's `handleDescribeProducersRequest`.
pub fn handle(
    broker: &Arc<Broker>,
    request: DescribeProducersRequest,
    session: &crate::net::Session,
) -> DescribeProducersResponse {
    use strata_security::acl::{Operation, ResourceType};
    let image = broker.replicas.image();
    let topics = request
        .topics
        .iter()
        .map(|t| {
            let name = t.name.0.as_str();
            let denied = !broker.authz.allowed(session, Operation::Read, ResourceType::Topic, name);
            let partitions = t
                .partition_indexes
                .iter()
                .map(|&index| {
                    let out = PartitionResponse::default().with_partition_index(index);
                    if denied {
                        return out.with_error_code(ResponseError::TopicAuthorizationFailed.code());
                    }
                    let Some(_) = image.partition(name, index) else {
                        return out.with_error_code(ResponseError::UnknownTopicOrPartition.code());
                    };
                    match broker.replicas.get(name, index) {
                        Ok(partition) => out.with_active_producers(
                            partition
                                .active_producers()
                                .into_iter()
                                .map(|p| {
                                    ProducerState::default()
                                        .with_producer_id(ProducerId(p.producer_id))
                                        .with_producer_epoch(i32::from(p.epoch))
                                        .with_last_sequence(p.last_sequence)
                                        .with_last_timestamp(p.last_timestamp)
                                        .with_coordinator_epoch(p.coordinator_epoch)
                                        .with_current_txn_start_offset(p.txn_start_offset)
                                })
                                .collect(),
                        ),
                        // In the metadata but not hosted here.
                        Err(_) => out.with_error_code(ResponseError::NotLeaderOrFollower.code()),
                    }
                })
                .collect();
            TopicResponse::default().with_name(t.name.clone()).with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}
