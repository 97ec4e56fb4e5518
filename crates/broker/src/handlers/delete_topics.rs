//! DeleteTopics, through the controller; topics by name (all versions) or id (v6+).
//!
//! The request is checked as Kafka's `ControllerApis.deleteTopics` checks it, and a topic it
//! names ambiguously is refused with INVALID_REQUEST and not deleted: an entry with neither a
//! name nor an id, or with both; a name or an id given twice; a name that maps to an id the
//! request also gives.

use std::collections::HashSet;
use std::sync::Arc;

use strata_metadata::channel::TopicRef;
use strata_protocol::kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use strata_protocol::kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};
use strata_protocol::ResponseError;
use uuid::Uuid;

use super::{str_bytes, topic_name};
use crate::groups::OFFSETS_TOPIC;
use crate::Broker;

fn result(name: Option<&str>, id: Uuid, error: ResponseError, message: &str) -> DeletableTopicResult {
    DeletableTopicResult::default()
        .with_name(name.map(topic_name))
        .with_topic_id(id)
        .with_error_code(error.code())
        .with_error_message(Some(str_bytes(message)))
}

/// Names or ids in request order; those given more than once are told apart.
struct Provided<T> {
    order: Vec<T>,
    seen: HashSet<T>,
    twice: HashSet<T>,
}

impl<T: Eq + std::hash::Hash + Clone> Provided<T> {
    fn new() -> Self {
        Self { order: Vec::new(), seen: HashSet::new(), twice: HashSet::new() }
    }

    fn add(&mut self, item: T) {
        if self.seen.insert(item.clone()) {
            self.order.push(item);
        } else {
            self.twice.insert(item);
        }
    }

    /// (given once, given more than once), each in request order.
    fn split(self) -> (Vec<T>, Vec<T>) {
        let twice = self.twice;
        self.order.into_iter().partition(|x| !twice.contains(x))
    }
}

/// DELETE on each topic (TOPIC_AUTHORIZATION_FAILED), as in Kafka.
pub async fn handle(
    broker: &Arc<Broker>,
    request: DeleteTopicsRequest,
    version: i16,
    session: &crate::net::Session,
) -> DeleteTopicsResponse {
    use strata_security::acl::{Operation, ResourceType};
    let mut refused = Vec::new();
    let mut names = Provided::new();
    let mut ids = Provided::new();
    if version >= 6 {
        for t in &request.topics {
            match (&t.name, t.topic_id.is_nil()) {
                (None, true) => refused.push(result(
                    None,
                    Uuid::nil(),
                    ResponseError::InvalidRequest,
                    "Neither topic name nor id were specified.",
                )),
                (None, false) => ids.add(t.topic_id),
                (Some(n), true) => names.add(n.to_string()),
                (Some(n), false) => refused.push(result(
                    Some(n.as_str()),
                    t.topic_id,
                    ResponseError::InvalidRequest,
                    "You may not specify both topic name and topic id.",
                )),
            }
        }
    } else {
        for n in &request.topic_names {
            names.add(n.to_string());
        }
    }
    let (mut names, names_twice) = names.split();
    let (mut ids, ids_twice) = ids.split();
    for n in &names_twice {
        refused.push(result(Some(n), Uuid::nil(), ResponseError::InvalidRequest, "Duplicate topic name."));
    }
    for id in &ids_twice {
        refused.push(result(None, *id, ResponseError::InvalidRequest, "Duplicate topic id."));
    }
    // A name that maps to an id the request also gives: neither is deleted.
    let image = broker.replicas.image();
    let given_ids: HashSet<Uuid> = ids.iter().copied().collect();
    let mut clashing_ids = HashSet::new();
    names.retain(|n| match image.topic(n).map(|t| t.id).filter(|id| given_ids.contains(id)) {
        Some(id) => {
            refused.push(result(
                Some(n),
                id,
                ResponseError::InvalidRequest,
                "The provided topic name maps to an ID that was already supplied.",
            ));
            clashing_ids.insert(id);
            false
        }
        None => true,
    });
    ids.retain(|id| !clashing_ids.contains(id));

    let may_delete = |name: &str| broker.authz.allowed(session, Operation::Delete, ResourceType::Topic, name);
    names.retain(|n| {
        let ok = may_delete(n);
        if !ok {
            refused.push(result(
                Some(n),
                Uuid::nil(),
                ResponseError::TopicAuthorizationFailed,
                "Authorization failed.",
            ));
        }
        ok
    });
    ids.retain(|id| {
        let ok = image.topic_by_id(id).is_none_or(|t| may_delete(&t.name));
        if !ok {
            refused.push(result(None, *id, ResponseError::TopicAuthorizationFailed, "Authorization failed."));
        }
        ok
    });
    let internal_id = image.topic(OFFSETS_TOPIC).map(|t| t.id);
    let refs = names.into_iter().map(TopicRef::Name).chain(ids.into_iter().map(TopicRef::Id));
    let (internal, refs): (Vec<TopicRef>, Vec<TopicRef>) = refs.partition(|r| match r {
        TopicRef::Name(n) => n == OFFSETS_TOPIC,
        TopicRef::Id(id) => Some(*id) == internal_id,
    });
    refused.extend(internal.into_iter().map(|_| {
        result(
            Some(OFFSETS_TOPIC),
            internal_id.unwrap_or_default(),
            ResponseError::InvalidTopicException,
            "Cannot delete internal topic __consumer_offsets",
        )
    }));
    let responses = broker
        .controller
        .delete_topics(refs)
        .await
        .into_iter()
        .map(|r| {
            if r.result.is_ok() {
                tracing::info!(topic = r.name.as_deref().unwrap_or(""), id = %r.topic_id, "deleted topic");
            }
            match r.result {
                Ok(()) => DeletableTopicResult::default()
                    .with_name(r.name.as_deref().map(topic_name))
                    .with_topic_id(r.topic_id),
                Err(e) => result(r.name.as_deref(), r.topic_id, e.error, &e.message),
            }
        })
        .chain(refused)
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}
