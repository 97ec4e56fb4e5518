//! ElectLeaders (key 43, KIP-460): preferred or unclean leader elections, decided by the active
//! controller ([`strata_metadata::channel::ControllerChannel::elect_leaders`]; a broker that is
//! not it forwards the request there). v0 has no election type: preferred. A whole-request
//! failure (no active controller) is the top-level error (v1+) or, in v0, every partition's.

use std::sync::Arc;

use strata_metadata::channel::ElectionType;
use strata_protocol::kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use strata_protocol::kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use strata_protocol::ResponseError;

use super::{by_topic, str_bytes};
use crate::Broker;

pub async fn handle(broker: &Arc<Broker>, request: ElectLeadersRequest, version: i16) -> ElectLeadersResponse {
    let election = match (version, request.election_type) {
        (0, _) | (_, 0) => ElectionType::Preferred,
        (_, 1) => ElectionType::Unclean,
        (_, other) => {
            return ElectLeadersResponse::default()
                .with_error_code(ResponseError::InvalidRequest.code())
                .with_replica_election_results(failed_all(
                    &request,
                    ResponseError::InvalidRequest,
                    &format!("unknown election type {other}"),
                ))
        }
    };
    let partitions = request.topic_partitions.as_ref().map(|topics| {
        topics.iter().flat_map(|t| t.partitions.iter().map(move |p| (t.topic.to_string(), *p))).collect::<Vec<_>>()
    });
    match broker.controller.elect_leaders(election, partitions).await {
        Ok(results) => {
            let answers = results.into_iter().map(|(topic, partition, result)| {
                let r = match result {
                    Ok(()) => {
                        tracing::info!(%topic, partition, ?election, "leader elected on request");
                        PartitionResult::default().with_partition_id(partition)
                    }
                    Err(e) => PartitionResult::default()
                        .with_partition_id(partition)
                        .with_error_code(e.error.code())
                        .with_error_message(Some(str_bytes(e.message))),
                };
                (topic, r)
            });
            let out: Vec<ReplicaElectionResult> = by_topic(answers)
                .into_iter()
                .map(|(topic, rs)| {
                    ReplicaElectionResult::default().with_topic(TopicName(str_bytes(topic))).with_partition_result(rs)
                })
                .collect();
            ElectLeadersResponse::default().with_replica_election_results(out)
        }
        Err(e) => ElectLeadersResponse::default()
            .with_error_code(if version >= 1 { e.error.code() } else { 0 })
            .with_replica_election_results(failed_all(&request, e.error, &e.message)),
    }
}

fn failed_all(request: &ElectLeadersRequest, error: ResponseError, message: &str) -> Vec<ReplicaElectionResult> {
    request
        .topic_partitions
        .iter()
        .flatten()
        .map(|t| {
            ReplicaElectionResult::default().with_topic(t.topic.clone()).with_partition_result(
                t.partitions
                    .iter()
                    .map(|p| {
                        PartitionResult::default()
                            .with_partition_id(*p)
                            .with_error_code(error.code())
                            .with_error_message(Some(str_bytes(message.to_string())))
                    })
                    .collect(),
            )
        })
        .collect()
}
