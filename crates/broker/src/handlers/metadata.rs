//! Metadata: brokers, cluster id, controller, topics and partitions, with
//! auto-creation of unknown topics when allowed.

use std::sync::Arc;

use strata_metadata::channel::CreateTopicSpec;
use strata_metadata::MetadataImage;
use strata_protocol::kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use strata_protocol::kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};
use strata_protocol::ResponseError;
use uuid::Uuid;

use strata_security::acl::{Operation, ResourceType};

use super::{str_bytes, topic_name, AUTHORIZED_OPERATIONS_OMITTED, CLUSTER_OPERATIONS, TOPIC_OPERATIONS};
use crate::Broker;

enum Wanted {
    Name(String),
    Id(Uuid),
}

/// Authorization (Kafka's `handleTopicMetadataRequest`): only topics the principal may
/// DESCRIBE are listed; one named without that right is TOPIC_AUTHORIZATION_FAILED; a missing
/// topic is auto-created only with CREATE on the cluster or the topic.
pub async fn handle(
    broker: &Arc<Broker>,
    request: MetadataRequest,
    version: i16,
    session: &crate::net::Session,
) -> MetadataResponse {
    let describe = |name: &str| broker.authz.allowed(session, Operation::Describe, ResourceType::Topic, name);
    let create = |name: &str| {
        broker.authz.cluster(session, Operation::Create)
            || broker.authz.allowed(session, Operation::Create, ResourceType::Topic, name)
    };
    let mut image = broker.replicas.image();
    // In v0 an empty list (null is not expressible) means every topic.
    let topics =
        if version == 0 && request.topics.as_ref().is_some_and(Vec::is_empty) { None } else { request.topics.as_ref() };
    // As Kafka's `handleTopicMetadataRequest`: a request naming any non-zero topic id is a
    // request by id (names are then ignored; clients send "" or null beside the id, the Java
    // client ""), otherwise by name.
    // A topic asked for twice is answered once (Kafka collects the request into a set).
    let wanted: Option<Vec<Wanted>> = topics.map(|topics| {
        let mut seen = std::collections::HashSet::new();
        if topics.iter().any(|t| !t.topic_id.is_nil()) {
            topics
                .iter()
                .filter(|t| !t.topic_id.is_nil() && seen.insert(t.topic_id.to_string()))
                .map(|t| Wanted::Id(t.topic_id))
                .collect()
        } else {
            topics
                .iter()
                .filter_map(|t| t.name.as_ref().filter(|n| seen.insert(n.to_string())))
                .map(|n| Wanted::Name(n.to_string()))
                .collect()
        }
    });
    let allow_auto = broker.config.auto_create_topics() && (version < 4 || request.allow_auto_topic_creation);
    let mut creation_errors = Vec::new();
    if let (Some(wanted), true) = (&wanted, allow_auto) {
        let missing: Vec<CreateTopicSpec> = wanted
            .iter()
            .filter_map(|w| match w {
                Wanted::Name(n)
                    if image.topic(n).is_none()
                        && strata_metadata::check_topic_name(n).is_ok()
                        && describe(n)
                        && create(n) =>
                {
                    Some(CreateTopicSpec {
                        name: n.clone(),
                        num_partitions: -1,
                        replication_factor: -1,
                        ..Default::default()
                    })
                }
                _ => None,
            })
            .collect();
        if !missing.is_empty() {
            for result in broker.controller.create_topics(missing, false).await {
                match result.result {
                    Ok(_) => tracing::info!(topic = %result.name, "auto-created topic"),
                    Err(e) if e.error == ResponseError::TopicAlreadyExists => {}
                    Err(e) => creation_errors.push((result.name, e.error)),
                }
            }
            image = broker.replicas.image();
        }
    }
    let include_ops = version >= 8 && request.include_topic_authorized_operations;
    let ops = |name: &str| {
        include_ops.then(|| broker.authz.operations(session, ResourceType::Topic, name, &TOPIC_OPERATIONS))
    };
    let topics = match wanted {
        None => image
            .topics()
            .filter(|t| describe(&t.name))
            .map(|t| describe_topic(&image, &t.name, ops(&t.name)))
            .collect(),
        Some(wanted) => wanted
            .into_iter()
            .map(|w| match w {
                Wanted::Name(name) if !describe(&name) => {
                    missing_topic(Some(&name), Uuid::nil(), ResponseError::TopicAuthorizationFailed)
                }
                Wanted::Name(name) => {
                    if let Some((_, e)) = creation_errors.iter().find(|(n, _)| *n == name) {
                        missing_topic(Some(&name), Uuid::nil(), *e)
                    } else if image.topic(&name).is_some() {
                        describe_topic(&image, &name, ops(&name))
                    } else if strata_metadata::check_topic_name(&name).is_err() {
                        missing_topic(Some(&name), Uuid::nil(), ResponseError::InvalidTopicException)
                    } else if allow_auto && !create(&name) {
                        // Would have been created, but the principal may not (Kafka's
                        // `unauthorizedForCreateTopics`).
                        missing_topic(Some(&name), Uuid::nil(), ResponseError::TopicAuthorizationFailed)
                    } else {
                        missing_topic(Some(&name), Uuid::nil(), ResponseError::UnknownTopicOrPartition)
                    }
                }
                Wanted::Id(id) => match image.topic_by_id(&id) {
                    Some(t) if !describe(&t.name) => missing_topic(None, id, ResponseError::TopicAuthorizationFailed),
                    Some(t) => describe_topic(&image, &t.name.clone(), ops(&t.name)),
                    None => missing_topic(None, id, ResponseError::UnknownTopicId),
                },
            })
            .collect(),
    };
    // Only live brokers: a fenced one leads nothing and clients must not be sent to it. Each
    // with its endpoint of the listener this client came in on (none: left out, as Kafka).
    let brokers = image
        .brokers
        .values()
        .filter(|b| !b.fenced)
        .filter_map(|b| {
            let (host, port) = b.endpoint(&session.listener)?;
            Some(
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(b.broker_id))
                    .with_host(str_bytes(host.to_string()))
                    .with_port(i32::from(port))
                    .with_rack(b.rack.clone().map(str_bytes)),
            )
        })
        .collect();
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(image.cluster_id.clone().map(str_bytes))
        .with_controller_id(BrokerId(broker.node_id))
        .with_topics(topics)
        .with_cluster_authorized_operations(
            if (8..=10).contains(&version) && request.include_cluster_authorized_operations {
                broker.authz.operations(
                    session,
                    ResourceType::Cluster,
                    strata_security::acl::CLUSTER_NAME,
                    &CLUSTER_OPERATIONS,
                )
            } else {
                AUTHORIZED_OPERATIONS_OMITTED
            },
        )
}

fn missing_topic(name: Option<&str>, id: Uuid, error: ResponseError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(error.code())
        .with_name(name.map(topic_name))
        .with_topic_id(id)
        .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
}

/// `ops`: the authorized operations when asked for.
fn describe_topic(image: &MetadataImage, name: &str, ops: Option<i32>) -> MetadataResponseTopic {
    let Some(topic) = image.topic(name) else {
        return missing_topic(Some(name), Uuid::nil(), ResponseError::UnknownTopicOrPartition);
    };
    let partitions = topic
        .partitions
        .iter()
        .map(|p| {
            // A partition whose leader is none (-1) or a broker that is not live has no leader
            // to send clients to: LEADER_NOT_AVAILABLE with leader -1, as Kafka's MetadataCache.
            let live = image.brokers.get(&p.leader).is_some_and(|b| !b.fenced);
            let (error, leader) = if live { (0, p.leader) } else { (ResponseError::LeaderNotAvailable.code(), -1) };
            MetadataResponsePartition::default()
                .with_error_code(error)
                .with_partition_index(p.partition)
                .with_leader_id(BrokerId(leader))
                .with_leader_epoch(p.leader_epoch)
                .with_replica_nodes(p.replicas.iter().copied().map(BrokerId).collect())
                .with_isr_nodes(p.isr.iter().copied().map(BrokerId).collect())
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(name)))
        .with_topic_id(topic.id)
        .with_is_internal(name == crate::groups::OFFSETS_TOPIC)
        .with_partitions(partitions)
        .with_topic_authorized_operations(ops.unwrap_or(AUTHORIZED_OPERATIONS_OMITTED))
}
