//! CreatePartitions, through the controller, which validates explicit assignments (registered
//! brokers, each once, the topic's replication factor) as Kafka's controller does. A topic
//! named twice in one request is refused (INVALID_REQUEST) and changes nothing.

use std::collections::HashSet;
use std::sync::Arc;

use strata_protocol::kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use strata_protocol::kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use strata_protocol::ResponseError;

use super::{duplicates, str_bytes};
use crate::Broker;

/// ALTER on each topic (TOPIC_AUTHORIZATION_FAILED), as in Kafka.
pub async fn handle(
    broker: &Arc<Broker>,
    request: CreatePartitionsRequest,
    session: &crate::net::Session,
) -> CreatePartitionsResponse {
    use strata_security::acl::{Operation, ResourceType};
    let twice: HashSet<String> = duplicates(request.topics.iter().map(|t| t.name.to_string()));
    let mut answered = HashSet::new();
    let mut results = Vec::with_capacity(request.topics.len());
    for t in request.topics {
        let base = CreatePartitionsTopicResult::default().with_name(t.name.clone());
        let result = if twice.contains(t.name.as_str()) {
            if !answered.insert(t.name.to_string()) {
                continue;
            }
            Err((ResponseError::InvalidRequest, "Duplicate topic name.".to_string()))
        } else if !broker.authz.allowed(session, Operation::Alter, ResourceType::Topic, t.name.as_str()) {
            Err((ResponseError::TopicAuthorizationFailed, "Authorization failed.".to_string()))
        } else {
            let assignments =
                t.assignments.map(|a| a.into_iter().map(|x| x.broker_ids.into_iter().map(|b| b.0).collect()).collect());
            let result = broker
                .controller
                .create_partitions(t.name.to_string(), t.count, assignments, request.validate_only)
                .await
                .map_err(|e| (e.error, e.message));
            if result.is_ok() && !request.validate_only {
                tracing::info!(topic = %t.name.as_str(), partitions = t.count, "partitions added");
            }
            result
        };
        results.push(match result {
            Ok(()) => base,
            Err((code, message)) => base.with_error_code(code.code()).with_error_message(Some(str_bytes(message))),
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}
