//! DeleteTopics, through the controller; topics by name (all versions) or id (v6+).

use std::sync::Arc;

use strata_metadata::channel::TopicRef;
use strata_protocol::kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use strata_protocol::kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};

use super::{str_bytes, topic_name};
use crate::Broker;

pub async fn handle(broker: &Arc<Broker>, request: DeleteTopicsRequest, version: i16) -> DeleteTopicsResponse {
    let refs: Vec<TopicRef> = if version >= 6 {
        request
            .topics
            .iter()
            .map(|t| match &t.name {
                Some(n) => TopicRef::Name(n.to_string()),
                None => TopicRef::Id(t.topic_id),
            })
            .collect()
    } else {
        request.topic_names.iter().map(|n| TopicRef::Name(n.to_string())).collect()
    };
    let responses = broker
        .controller
        .delete_topics(refs)
        .await
        .into_iter()
        .map(|r| {
            if r.result.is_ok() {
                tracing::info!(topic = r.name.as_deref().unwrap_or(""), id = %r.topic_id, "deleted topic");
            }
            let base =
                DeletableTopicResult::default().with_name(r.name.as_deref().map(topic_name)).with_topic_id(r.topic_id);
            match r.result {
                Ok(()) => base,
                Err(e) => base.with_error_code(e.error.code()).with_error_message(Some(str_bytes(e.message))),
            }
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}
