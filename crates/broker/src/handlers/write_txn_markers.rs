//! WriteTxnMarkers (v1), on a partition leader: the transaction coordinator's COMMIT or ABORT
//! markers are appended to each partition and acknowledged once the ISR has them (Kafka's
//! `KafkaApis.handleWriteTxnMarkersRequest`). NOT_LEADER_OR_FOLLOWER or
//! UNKNOWN_TOPIC_OR_PARTITION where this broker does not lead the partition (the coordinator
//! retries at the new leader), INVALID_PRODUCER_EPOCH for a marker older than the producer,
//! TRANSACTION_COORDINATOR_FENCED for one from a deposed coordinator.

use std::sync::Arc;

use strata_protocol::kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use strata_protocol::kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};
use strata_protocol::records::control::EndTxnMarker;

use crate::txn::markers::write_marker;
use crate::Broker;

pub async fn handle(broker: &Arc<Broker>, request: WriteTxnMarkersRequest) -> WriteTxnMarkersResponse {
    let mut results = Vec::with_capacity(request.markers.len());
    for m in request.markers {
        let marker = EndTxnMarker { commit: m.transaction_result, coordinator_epoch: m.coordinator_epoch };
        let partitions: Vec<(String, i32)> =
            m.topics.iter().flat_map(|t| t.partition_indexes.iter().map(|p| (t.name.0.to_string(), *p))).collect();
        let outcome =
            write_marker(&broker.replicas, &broker.groups, m.producer_id.0, m.producer_epoch, marker, &partitions)
                .await;
        let mut topics: Vec<WritableTxnMarkerTopicResult> = Vec::new();
        for ((topic, p), r) in partitions.into_iter().zip(outcome) {
            let result = WritableTxnMarkerPartitionResult::default()
                .with_partition_index(p)
                .with_error_code(r.err().map_or(0, |e| e.code()));
            match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
                Some(t) => t.partitions.push(result),
                None => topics.push(
                    WritableTxnMarkerTopicResult::default()
                        .with_name(super::topic_name(&topic))
                        .with_partitions(vec![result]),
                ),
            }
        }
        results.push(WritableTxnMarkerResult::default().with_producer_id(m.producer_id).with_topics(topics));
    }
    WriteTxnMarkersResponse::default().with_markers(results)
}

/// `code` for every partition of every marker (CLUSTER_AUTHORIZATION_FAILED: only brokers,
/// with CLUSTER_ACTION, write markers).
pub fn refuse(request: &WriteTxnMarkersRequest, code: i16) -> WriteTxnMarkersResponse {
    let markers = request
        .markers
        .iter()
        .map(|m| {
            let topics = m
                .topics
                .iter()
                .map(|t| {
                    WritableTxnMarkerTopicResult::default().with_name(t.name.clone()).with_partitions(
                        t.partition_indexes
                            .iter()
                            .map(|p| {
                                WritableTxnMarkerPartitionResult::default()
                                    .with_partition_index(*p)
                                    .with_error_code(code)
                            })
                            .collect(),
                    )
                })
                .collect();
            WritableTxnMarkerResult::default().with_producer_id(m.producer_id).with_topics(topics)
        })
        .collect();
    WriteTxnMarkersResponse::default().with_markers(markers)
}
