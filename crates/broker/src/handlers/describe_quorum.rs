//! DescribeQuorum (key 55, KIP-595 / KIP-836): the metadata quorum's leader, epoch, high
//! watermark and voters with their log ends, as `kafka-metadata-quorum.sh describe --status`
//! and `--replication` show them. Answered by the active controller (a broker that is not it
//! forwards the request there); elsewhere NOT_LEADER_OR_FOLLOWER.

use std::sync::Arc;

use strata_protocol::kafka_protocol::messages::describe_quorum_response::{
    Listener, Node, PartitionData, ReplicaState, TopicData,
};
use strata_protocol::kafka_protocol::messages::{BrokerId, DescribeQuorumRequest, DescribeQuorumResponse};
use strata_protocol::ResponseError;

use super::{str_bytes, topic_name};
use crate::Broker;

/// The metadata log's topic, as Kafka names it.
const METADATA_TOPIC: &str = "__cluster_metadata";

pub fn handle(broker: &Arc<Broker>, request: DescribeQuorumRequest, version: i16) -> DescribeQuorumResponse {
    let quorum = broker.controller.describe_quorum();
    let topics = request
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let data = PartitionData::default().with_partition_index(p.partition_index);
                    match &quorum {
                        _ if t.topic_name.as_str() != METADATA_TOPIC || p.partition_index != 0 => {
                            data.with_error_code(ResponseError::UnknownTopicOrPartition.code())
                        }
                        None => data
                            .with_error_code(ResponseError::NotLeaderOrFollower.code())
                            .with_error_message(Some(str_bytes("no active controller is known yet"))),
                        Some(q) => data
                            .with_leader_id(BrokerId(q.leader_id))
                            .with_leader_epoch(q.leader_epoch)
                            .with_high_watermark(q.high_watermark)
                            .with_current_voters(q.voters.iter().map(replica_state).collect())
                            .with_observers(q.observers.iter().map(replica_state).collect()),
                    }
                })
                .collect();
            TopicData::default().with_topic_name(topic_name(t.topic_name.as_str())).with_partitions(partitions)
        })
        .collect();
    // The controllers' endpoints are in the response from v2 on.
    let nodes = quorum
        .as_ref()
        .filter(|_| version >= 2)
        .map(|q| {
            q.endpoints
                .iter()
                .map(|(id, host, port)| {
                    Node::default().with_node_id(BrokerId(*id)).with_listeners(vec![Listener::default()
                        .with_name(str_bytes("CONTROLLER"))
                        .with_host(str_bytes(host.clone()))
                        .with_port(*port)])
                })
                .collect()
        })
        .unwrap_or_default();
    DescribeQuorumResponse::default().with_topics(topics).with_nodes(nodes)
}

fn replica_state(r: &strata_metadata::channel::QuorumReplica) -> ReplicaState {
    ReplicaState::default()
        .with_replica_id(BrokerId(r.id))
        .with_log_end_offset(r.log_end_offset)
        .with_last_fetch_timestamp(r.last_caught_up_ms)
        .with_last_caught_up_timestamp(r.last_caught_up_ms)
}
