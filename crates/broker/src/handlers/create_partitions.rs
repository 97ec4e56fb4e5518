//! CreatePartitions, through the controller. Explicit assignments are
//! accepted when they name registered brokers; placement is the controller's.

use std::sync::Arc;

use strata_protocol::kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use strata_protocol::kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use strata_protocol::ResponseError;

use super::str_bytes;
use crate::Broker;

pub async fn handle(broker: &Arc<Broker>, request: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(request.topics.len());
    for t in request.topics {
        let base = CreatePartitionsTopicResult::default().with_name(t.name.clone());
        let image = broker.replicas.image();
        let bad_assignment = t.assignments.as_ref().is_some_and(|a| {
            let current = image.topic(&t.name).map_or(0, |x| x.partitions.len() as i32);
            a.len() as i32 != t.count - current
                || a.iter().any(|x| x.broker_ids.iter().any(|b| !image.brokers.contains_key(&b.0)))
        });
        let result = if bad_assignment {
            Err((
                ResponseError::InvalidReplicaAssignment,
                "Assignments must name registered brokers, one entry per new partition.".to_string(),
            ))
        } else {
            broker
                .controller
                .create_partitions(t.name.to_string(), t.count, request.validate_only)
                .await
                .map_err(|e| (e.error, e.message))
        };
        results.push(match result {
            Ok(()) => base,
            Err((code, message)) => base.with_error_code(code.code()).with_error_message(Some(str_bytes(message))),
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}
