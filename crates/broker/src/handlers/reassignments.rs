//! AlterPartitionReassignments (key 45) and ListPartitionReassignments (key 46), KIP-455:
//! decided by the active controller
//! ([`strata_metadata::channel::ControllerChannel::alter_reassignments`] and
//! [`list_reassignments`](strata_metadata::channel::ControllerChannel::list_reassignments);
//! a broker that is not it forwards both there). The answer comes once the change is
//! committed; the data moves afterwards, as the new replicas fetch and join the ISR, and the
//! old replicas leave when every target replica is in sync (`crate::replica` deletes their
//! logs). A whole-request failure (no active controller) is the top-level error.

use std::sync::Arc;

use strata_protocol::kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use strata_protocol::kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use strata_protocol::kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};

use super::{by_topic, str_bytes};
use crate::Broker;

pub async fn alter(
    broker: &Arc<Broker>,
    request: AlterPartitionReassignmentsRequest,
    version: i16,
) -> AlterPartitionReassignmentsResponse {
    let targets: Vec<_> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| {
                (t.name.to_string(), p.partition_index, p.replicas.as_ref().map(|r| r.iter().map(|b| b.0).collect()))
            })
        })
        .collect();
    let allow_rf_change = version < 1 || request.allow_replication_factor_change;
    let results = match broker.controller.alter_reassignments(targets.clone(), allow_rf_change).await {
        Ok(results) => results,
        Err(e) => {
            return AlterPartitionReassignmentsResponse::default()
                .with_allow_replication_factor_change(allow_rf_change)
                .with_error_code(e.error.code())
                .with_error_message(Some(str_bytes(e.message)))
        }
    };
    let answers = results.into_iter().map(|(topic, partition, result)| {
        let r = match result {
            Ok(()) => {
                let target = targets.iter().find(|(t, p, _)| *t == topic && *p == partition).and_then(|x| x.2.clone());
                tracing::info!(%topic, partition, ?target, "partition reassignment accepted");
                ReassignablePartitionResponse::default().with_partition_index(partition)
            }
            Err(e) => ReassignablePartitionResponse::default()
                .with_partition_index(partition)
                .with_error_code(e.error.code())
                .with_error_message(Some(str_bytes(e.message))),
        };
        (topic, r)
    });
    let out: Vec<ReassignableTopicResponse> = by_topic(answers)
        .into_iter()
        .map(|(topic, rs)| {
            ReassignableTopicResponse::default().with_name(TopicName(str_bytes(topic))).with_partitions(rs)
        })
        .collect();
    AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(allow_rf_change)
        .with_responses(out)
}

pub async fn list(
    broker: &Arc<Broker>,
    request: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let wanted = request
        .topics
        .as_ref()
        .map(|topics| topics.iter().map(|t| (t.name.to_string(), t.partition_indexes.clone())).collect());
    match broker.controller.list_reassignments(wanted).await {
        Ok(ongoing) => {
            let ids = |v: &[i32]| v.iter().map(|b| BrokerId(*b)).collect::<Vec<_>>();
            let answers = ongoing.into_iter().map(|r| {
                let p = OngoingPartitionReassignment::default()
                    .with_partition_index(r.partition)
                    .with_replicas(ids(&r.replicas))
                    .with_adding_replicas(ids(&r.adding))
                    .with_removing_replicas(ids(&r.removing));
                (r.topic, p)
            });
            let out: Vec<OngoingTopicReassignment> = by_topic(answers)
                .into_iter()
                .map(|(topic, ps)| {
                    OngoingTopicReassignment::default().with_name(TopicName(str_bytes(topic))).with_partitions(ps)
                })
                .collect();
            ListPartitionReassignmentsResponse::default().with_topics(out)
        }
        Err(e) => ListPartitionReassignmentsResponse::default()
            .with_error_code(e.error.code())
            .with_error_message(Some(str_bytes(e.message))),
    }
}
