//! DeleteTopics, through the controller; topics by name (all versions) or id (v6+).

use std::sync::Arc;

use strata_metadata::channel::TopicRef;
use strata_protocol::kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use strata_protocol::kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};

use strata_protocol::ResponseError;

use super::{duplicates, str_bytes, topic_name};
use crate::groups::OFFSETS_TOPIC;
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
    // A topic named twice (by name, or by id) is refused and not deleted, as Kafka's controller does.
    let twice = duplicates(refs.iter().cloned());
    let (twice_refs, refs): (Vec<TopicRef>, Vec<TopicRef>) = refs.into_iter().partition(|r| twice.contains(r));
    let mut refused_twice: Vec<DeletableTopicResult> = Vec::new();
    for r in twice_refs {
        let (name, id, message) = match r {
            TopicRef::Name(n) => (Some(n), uuid::Uuid::nil(), "Duplicate topic name."),
            TopicRef::Id(id) => (None, id, "Duplicate topic id."),
        };
        if refused_twice.iter().any(|x| x.name.as_ref().map(|n| n.as_str()) == name.as_deref() && x.topic_id == id) {
            continue;
        }
        refused_twice.push(
            DeletableTopicResult::default()
                .with_name(name.as_deref().map(topic_name))
                .with_topic_id(id)
                .with_error_code(ResponseError::InvalidRequest.code())
                .with_error_message(Some(str_bytes(message))),
        );
    }
    let image = broker.replicas.image();
    let internal_id = image.topic(OFFSETS_TOPIC).map(|t| t.id);
    let is_internal = |r: &TopicRef| match r {
        TopicRef::Name(n) => n == OFFSETS_TOPIC,
        TopicRef::Id(id) => Some(*id) == internal_id,
    };
    let (refused, refs): (Vec<TopicRef>, Vec<TopicRef>) = refs.into_iter().partition(is_internal);
    let refused = refused.into_iter().map(|_| {
        DeletableTopicResult::default()
            .with_name(Some(topic_name(OFFSETS_TOPIC)))
            .with_topic_id(internal_id.unwrap_or_default())
            .with_error_code(ResponseError::InvalidTopicException.code())
            .with_error_message(Some(str_bytes("Cannot delete internal topic __consumer_offsets")))
    });
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
        .chain(refused)
        .chain(refused_twice)
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}
