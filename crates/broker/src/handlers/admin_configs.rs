//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs.
//!
//! Topic configs are metadata (changed through the controller, applied by
//! every broker). Broker configs are static, read from the config file and
//! flags, except the dynamic ones (`DYNAMIC_BROKER_CONFIGS`: the replication
//! throttle rates), which are metadata too, per broker or cluster-wide.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use strata_metadata::channel::{ApiError, ConfigOp};
use strata_metadata::config::{resolve_topic_configs, topic_config, ConfigSource, ConfigType};
use strata_metadata::ConfigResource;
use strata_protocol::kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use strata_protocol::kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest, AlterConfigsResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use strata_protocol::kafka_protocol::protocol::StrBytes;
use strata_protocol::ResponseError;

use super::{duplicates, str_bytes};
use crate::config::Kind;
use crate::Broker;

const TOPIC: i8 = 2;
const BROKER: i8 = 4;

/// The resource a request names. Describing a broker's configs is answered by that broker (an
/// empty name: this one); altering them (forwarded to the controller) may name any broker, or
/// the cluster-wide default with an empty name (`ConfigResource::Broker(-1)`).
/// Kafka's rights on configs: DESCRIBE_CONFIGS / ALTER_CONFIGS on the topic
/// (TOPIC_AUTHORIZATION_FAILED), or on the cluster for broker configs
/// (CLUSTER_AUTHORIZATION_FAILED).
fn config_allowed(
    broker: &Broker,
    session: &crate::net::Session,
    res: ConfigResource,
    altering: bool,
) -> Result<ConfigResource, ApiError> {
    use strata_security::acl::{Operation, ResourceType};
    let op = if altering { Operation::AlterConfigs } else { Operation::DescribeConfigs };
    let (ok, error) = match &res {
        ConfigResource::Topic(name) => {
            (broker.authz.allowed(session, op, ResourceType::Topic, name), ResponseError::TopicAuthorizationFailed)
        }
        ConfigResource::Broker(_) => (broker.authz.cluster(session, op), ResponseError::ClusterAuthorizationFailed),
    };
    if ok {
        Ok(res)
    } else {
        Err(ApiError::new(error, format!("Principal {} is not authorized to {op:?} this resource", session.principal)))
    }
}

fn resource(broker: &Broker, resource_type: i8, name: &str, altering: bool) -> Result<ConfigResource, ApiError> {
    match resource_type {
        TOPIC => Ok(ConfigResource::Topic(name.to_string())),
        BROKER if altering => match name.parse::<i32>() {
            _ if name.is_empty() => Ok(ConfigResource::Broker(-1)),
            Ok(id) if id >= 0 => Ok(ConfigResource::Broker(id)),
            _ => Err(ApiError::new(ResponseError::InvalidRequest, format!("Invalid broker id {name}"))),
        },
        BROKER => match name.parse::<i32>() {
            Ok(id) if id == broker.node_id => Ok(ConfigResource::Broker(id)),
            _ if name.is_empty() => Ok(ConfigResource::Broker(broker.node_id)),
            _ => Err(ApiError::new(
                ResponseError::InvalidRequest,
                format!("Broker {name} is not this broker ({})", broker.node_id),
            )),
        },
        other => Err(ApiError::new(ResponseError::InvalidRequest, format!("Unsupported config resource type {other}"))),
    }
}

pub fn describe(
    broker: &Arc<Broker>,
    request: DescribeConfigsRequest,
    version: i16,
    session: &crate::net::Session,
) -> DescribeConfigsResponse {
    let image = broker.replicas.image();
    let results = request
        .resources
        .iter()
        .map(|r| {
            let base = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            let wanted =
                |name: &str| r.configuration_keys.as_ref().is_none_or(|keys| keys.iter().any(|k| k.as_str() == name));
            let entries = match resource(broker, r.resource_type, &r.resource_name, false)
                .and_then(|res| config_allowed(broker, session, res, false))
            {
                Err(e) => return base.with_error_code(e.error.code()).with_error_message(Some(str_bytes(e.message))),
                Ok(ConfigResource::Topic(name)) => {
                    if image.topic(&name).is_none() {
                        return base
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                            .with_error_message(Some(str_bytes(format!("Topic {name} does not exist"))));
                    }
                    let overrides = image.configs(&ConfigResource::Topic(name));
                    let defaults = broker.replicas.broker_defaults();
                    resolve_topic_configs(overrides, defaults)
                        .into_iter()
                        .filter(|c| wanted(c.def.name))
                        .map(|c| {
                            let mut synonyms = Vec::new();
                            if request.include_synonyms {
                                if let Some(v) = overrides.and_then(|o| o.get(c.def.name)) {
                                    synonyms.push(synonym(c.def.name, Some(v.clone()), ConfigSource::TopicConfig));
                                }
                                if let Some(s) = c.def.broker_synonym {
                                    if let Some(v) = defaults.get(s) {
                                        synonyms.push(synonym(s, Some(v.clone()), ConfigSource::StaticBrokerConfig));
                                    }
                                    synonyms.push(synonym(
                                        s,
                                        Some(c.def.default.to_string()),
                                        ConfigSource::DefaultConfig,
                                    ));
                                }
                            }
                            entry(c.def.name, Some(c.value), c.source, c.def.ty, c.def.doc, synonyms, &request, version)
                        })
                        .collect()
                }
                Ok(ConfigResource::Broker(_)) => broker
                    .config
                    .describe()
                    .into_iter()
                    .filter(|(d, _, _)| wanted(d.name))
                    .map(|(d, value, is_default)| {
                        let source =
                            if is_default { ConfigSource::DefaultConfig } else { ConfigSource::StaticBrokerConfig };
                        // A dynamic value (this broker's, else the cluster default) wins.
                        let dynamic = [
                            (ConfigResource::Broker(broker.node_id), ConfigSource::DynamicBrokerConfig),
                            (ConfigResource::Broker(-1), ConfigSource::DynamicDefaultBrokerConfig),
                        ]
                        .into_iter()
                        .find_map(|(res, src)| {
                            image.configs(&res).and_then(|c| c.get(d.name)).map(|v| (v.clone(), src))
                        });
                        let (value, source) = match dynamic {
                            Some((v, src)) => (Some(v), src),
                            None => (value, source),
                        };
                        let ty = match d.kind {
                            Kind::Int => ConfigType::Int,
                            Kind::Long => ConfigType::Long,
                            Kind::Bool => ConfigType::Boolean,
                            Kind::Str => ConfigType::String,
                        };
                        let synonyms = if request.include_synonyms {
                            vec![synonym(d.name, value.clone(), source)]
                        } else {
                            Vec::new()
                        };
                        let read_only = !strata_metadata::config::DYNAMIC_BROKER_CONFIGS.contains(&d.name);
                        if crate::config::is_sensitive(d.name) {
                            // Kafka never returns a password's value, and says it is one.
                            let synonyms = synonyms.into_iter().map(|s| s.with_value(None)).collect();
                            return entry(
                                d.name,
                                None,
                                source,
                                ConfigType::Password,
                                d.doc,
                                synonyms,
                                &request,
                                version,
                            )
                            .with_read_only(read_only)
                            .with_is_sensitive(true);
                        }
                        entry(d.name, value, source, ty, d.doc, synonyms, &request, version).with_read_only(read_only)
                    })
                    .collect(),
            };
            base.with_configs(entries)
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn synonym(name: &str, value: Option<String>, source: ConfigSource) -> DescribeConfigsSynonym {
    DescribeConfigsSynonym::default()
        .with_name(str_bytes(name))
        .with_value(value.map(str_bytes))
        .with_source(source as i8)
}

#[allow(clippy::too_many_arguments)]
fn entry(
    name: &str,
    value: Option<String>,
    source: ConfigSource,
    ty: ConfigType,
    doc: &str,
    synonyms: Vec<DescribeConfigsSynonym>,
    request: &DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResourceResult {
    DescribeConfigsResourceResult::default()
        .with_name(str_bytes(name))
        .with_value(value.map(str_bytes))
        .with_config_source(source as i8)
        .with_synonyms(synonyms)
        .with_config_type(if version >= 3 { ty as i8 } else { 0 })
        .with_documentation(if version >= 3 && request.include_documentation { Some(str_bytes(doc)) } else { None })
}

/// Kafka's duplicate checks of an alter request (`ConfigAdminManager.preprocess`, what a
/// broker answers): every occurrence of a resource named more than once is INVALID_REQUEST
/// "Each resource must appear at most once.", and a resource setting a key twice INVALID_REQUEST
/// "Error due to duplicate config keys"; nothing changes for either.
struct DuplicateCheck {
    twice: HashSet<(i8, StrBytes)>,
}

impl DuplicateCheck {
    fn new<'a>(resources: impl Iterator<Item = (i8, &'a StrBytes)>) -> Self {
        Self { twice: duplicates(resources.map(|(t, n)| (t, n.clone()))) }
    }

    /// The refusal of this resource, if any.
    fn check<'a>(&self, ty: i8, name: &StrBytes, keys: impl IntoIterator<Item = &'a StrBytes>) -> Option<ApiError> {
        if self.twice.contains(&(ty, name.clone())) {
            return Some(ApiError::new(ResponseError::InvalidRequest, "Each resource must appear at most once."));
        }
        (!duplicates(keys).is_empty())
            .then(|| ApiError::new(ResponseError::InvalidRequest, "Error due to duplicate config keys"))
    }
}

pub async fn alter(
    broker: &Arc<Broker>,
    request: AlterConfigsRequest,
    session: &crate::net::Session,
) -> AlterConfigsResponse {
    let duplicate = DuplicateCheck::new(request.resources.iter().map(|r| (r.resource_type, &r.resource_name)));
    let mut responses = Vec::new();
    for r in request.resources {
        let refused = duplicate.check(r.resource_type, &r.resource_name, r.configs.iter().map(|c| &c.name));
        let result = match (
            refused,
            resource(broker, r.resource_type, &r.resource_name, true)
                .and_then(|res| config_allowed(broker, session, res, true)),
        ) {
            (Some(e), _) | (None, Err(e)) => Err(e),
            (None, Ok(res)) => {
                let mut ops = Vec::new();
                let mut null = None;
                for c in &r.configs {
                    match &c.value {
                        Some(v) => ops.push(ConfigOp::Set(c.name.to_string(), v.to_string())),
                        None => null = Some(c.name.to_string()),
                    }
                }
                match null {
                    Some(k) => {
                        Err(ApiError::new(ResponseError::InvalidRequest, format!("Null value not supported for: {k}")))
                    }
                    None => {
                        let change = describe_change(&res, &ops);
                        let result = broker.controller.alter_configs(res, ops, true, request.validate_only).await;
                        if result.is_ok() && !request.validate_only {
                            // AlterConfigs replaces: keys it does not name go back to their defaults.
                            tracing::info!(resource = %change.0, configs = %change.1, "configs replaced");
                        }
                        result
                    }
                }
            }
        };
        let (code, message) = error_parts(result);
        responses.push(
            alter_configs_response::AlterConfigsResourceResponse::default()
                .with_error_code(code)
                .with_error_message(message)
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name),
        );
    }
    AlterConfigsResponse::default().with_responses(responses)
}

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

pub async fn incremental_alter(
    broker: &Arc<Broker>,
    request: IncrementalAlterConfigsRequest,
    session: &crate::net::Session,
) -> IncrementalAlterConfigsResponse {
    let image = broker.replicas.image();
    let duplicate = DuplicateCheck::new(request.resources.iter().map(|r| (r.resource_type, &r.resource_name)));
    let mut responses = Vec::new();
    for r in request.resources {
        let refused = duplicate.check(r.resource_type, &r.resource_name, r.configs.iter().map(|c| &c.name));
        let result = match (
            refused,
            resource(broker, r.resource_type, &r.resource_name, true)
                .and_then(|res| config_allowed(broker, session, res, true)),
        ) {
            (Some(e), _) | (None, Err(e)) => Err(e),
            (None, Ok(res)) => {
                let current: BTreeMap<String, String> = match &res {
                    ConfigResource::Topic(name) => {
                        resolve_topic_configs(image.configs(&res), broker.replicas.broker_defaults())
                            .into_iter()
                            .filter(|_| image.topic(name).is_some())
                            .map(|c| (c.def.name.to_string(), c.value))
                            .collect()
                    }
                    ConfigResource::Broker(_) => BTreeMap::new(),
                };
                match r
                    .configs
                    .iter()
                    .map(|c| to_op(c.config_operation, &c.name, c.value.as_ref(), &current))
                    .collect::<Result<Vec<_>, _>>()
                {
                    Ok(ops) => {
                        let change = describe_change(&res, &ops);
                        let result = broker.controller.alter_configs(res, ops, false, request.validate_only).await;
                        if result.is_ok() && !request.validate_only {
                            tracing::info!(resource = %change.0, configs = %change.1, "configs altered");
                        }
                        result
                    }
                    Err(e) => Err(e),
                }
            }
        };
        let (code, message) = error_parts(result);
        responses.push(
            incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_error_code(code)
                .with_error_message(message)
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name),
        );
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

fn to_op(
    op: i8,
    name: &StrBytes,
    value: Option<&StrBytes>,
    current: &BTreeMap<String, String>,
) -> Result<ConfigOp, ApiError> {
    let name = name.to_string();
    let is_list = topic_config(&name).is_some_and(|d| d.ty == ConfigType::List);
    let list = |v: Option<&String>| -> Vec<String> {
        v.map(|s| s.split(',').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect()).unwrap_or_default()
    };
    match op {
        OP_SET => match value {
            Some(v) => Ok(ConfigOp::Set(name, v.to_string())),
            None => Err(ApiError::new(ResponseError::InvalidRequest, format!("Null value not supported for: {name}"))),
        },
        OP_DELETE => Ok(ConfigOp::Delete(name)),
        OP_APPEND | OP_SUBTRACT if is_list => {
            let mut items = list(current.get(&name));
            for v in list(value.map(|v| v.to_string()).as_ref()) {
                if op == OP_APPEND && !items.contains(&v) {
                    items.push(v);
                } else if op == OP_SUBTRACT {
                    items.retain(|x| *x != v);
                }
            }
            Ok(ConfigOp::Set(name, items.join(",")))
        }
        OP_APPEND | OP_SUBTRACT => Err(ApiError::new(
            ResponseError::InvalidConfig,
            format!("Config value append/subtract is not allowed for config {name}, which is not a list"),
        )),
        other => Err(ApiError::new(ResponseError::InvalidRequest, format!("Unknown config operation {other}"))),
    }
}

/// The resource and the changes of a config alteration, for its log line: `topic t` and
/// `retention.ms=1000, cleanup.policy deleted`.
fn describe_change(resource: &ConfigResource, ops: &[ConfigOp]) -> (String, String) {
    let resource = match resource {
        ConfigResource::Topic(name) => format!("topic {name}"),
        ConfigResource::Broker(-1) => "the brokers' cluster-wide default".to_string(),
        ConfigResource::Broker(id) => format!("broker {id}"),
    };
    let ops: Vec<String> = ops
        .iter()
        .map(|op| match op {
            ConfigOp::Set(k, v) => format!("{k}={v}"),
            ConfigOp::Delete(k) => format!("{k} deleted"),
        })
        .collect();
    (resource, ops.join(", "))
}

fn error_parts(result: Result<(), ApiError>) -> (i16, Option<StrBytes>) {
    match result {
        Ok(()) => (0, None),
        Err(e) => (e.error.code(), Some(str_bytes(e.message))),
    }
}
