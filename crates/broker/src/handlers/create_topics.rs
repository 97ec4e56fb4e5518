//! CreateTopics, through the controller.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use strata_metadata::channel::CreateTopicSpec;
use strata_metadata::config::resolve_topic_configs;
use strata_protocol::kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use strata_protocol::kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use strata_protocol::ResponseError;

use super::{duplicates, str_bytes};
use crate::Broker;

/// CREATE on the cluster, or on each topic (TOPIC_AUTHORIZATION_FAILED), as in Kafka.
pub async fn handle(
    broker: &Arc<Broker>,
    request: CreateTopicsRequest,
    version: i16,
    session: &crate::net::Session,
) -> CreateTopicsResponse {
    use strata_security::acl::{Operation, ResourceType};
    let may_create_all = broker.authz.cluster(session, Operation::Create);
    let twice: HashSet<String> = duplicates(request.topics.iter().map(|t| t.name.to_string()));
    let mut answered = HashSet::new();
    let mut results = Vec::new();
    let mut specs = Vec::new();
    for t in &request.topics {
        let name = t.name.to_string();
        if twice.contains(&name) {
            if answered.insert(name.clone()) {
                results.push(failed(&name, ResponseError::InvalidRequest, "Duplicate topic name in the request."));
            }
            continue;
        }
        if !may_create_all && !broker.authz.allowed(session, Operation::Create, ResourceType::Topic, &name) {
            results.push(failed(&name, ResponseError::TopicAuthorizationFailed, "Authorization failed."));
            continue;
        }
        let mut configs = BTreeMap::new();
        let mut null_config = None;
        for c in &t.configs {
            match &c.value {
                Some(v) => {
                    configs.insert(c.name.to_string(), v.to_string());
                }
                None => null_config = Some(c.name.to_string()),
            }
        }
        if let Some(key) = null_config {
            results.push(failed(
                &name,
                ResponseError::InvalidConfig,
                &format!("Null value not supported for topic configs: {key}"),
            ));
            continue;
        }
        specs.push(CreateTopicSpec {
            name,
            num_partitions: t.num_partitions,
            replication_factor: t.replication_factor,
            assignments: t
                .assignments
                .iter()
                .map(|a| (a.partition_index, a.broker_ids.iter().map(|b| b.0).collect()))
                .collect(),
            configs,
        });
    }
    for r in broker.controller.create_topics(specs, request.validate_only).await {
        match r.result {
            Ok(created) => {
                if !request.validate_only {
                    tracing::info!(topic = %r.name, partitions = created.num_partitions, "created topic");
                }
                let configs = (version >= 5).then(|| {
                    resolve_topic_configs(Some(&created.configs), broker.replicas.broker_defaults())
                        .into_iter()
                        .map(|c| {
                            CreatableTopicConfigs::default()
                                .with_name(str_bytes(c.def.name))
                                .with_value(Some(str_bytes(c.value)))
                                .with_config_source(c.source as i8)
                        })
                        .collect()
                });
                let result = CreatableTopicResult::default()
                    .with_name(super::topic_name(&r.name))
                    .with_topic_id(if request.validate_only { Default::default() } else { created.topic_id });
                // The topic's details need DESCRIBE_CONFIGS on it (Kafka's `handleCreateTopicsRequest`).
                results.push(
                    if version >= 5
                        && !broker.authz.allowed(session, Operation::DescribeConfigs, ResourceType::Topic, &r.name)
                    {
                        result
                            .with_topic_config_error_code(ResponseError::TopicAuthorizationFailed.code())
                            .with_num_partitions(-1)
                            .with_replication_factor(-1)
                            .with_configs(Some(Vec::new()))
                    } else {
                        result
                            .with_num_partitions(created.num_partitions)
                            .with_replication_factor(created.replication_factor)
                            .with_configs(configs)
                    },
                );
            }
            Err(e) => results.push(failed(&r.name, e.error, &e.message)),
        }
    }
    CreateTopicsResponse::default().with_topics(results)
}

fn failed(name: &str, error: ResponseError, message: &str) -> CreatableTopicResult {
    CreatableTopicResult::default()
        .with_name(super::topic_name(name))
        .with_error_code(error.code())
        .with_error_message(Some(str_bytes(message)))
        .with_num_partitions(-1)
        .with_replication_factor(-1)
        .with_configs(None)
}
