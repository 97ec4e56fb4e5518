//! DescribeClientQuotas (key 48) and AlterClientQuotas (key 49), as Kafka's KRaft broker:
//! the first is answered from the broker's metadata image (`ClientQuotasImage.describe`),
//! the second is decided by the active controller (forwarded to it by other brokers).
//!
//! Authorization: DESCRIBE_CONFIGS on the cluster to describe, ALTER_CONFIGS to alter;
//! without it every entry gets CLUSTER_AUTHORIZATION_FAILED.

use std::collections::BTreeMap;
use std::sync::Arc;

use strata_metadata::channel::QuotaAlteration;
use strata_metadata::image::QuotaValue;
use strata_protocol::kafka_protocol::messages::{
    alter_client_quotas_response, describe_client_quotas_response, AlterClientQuotasRequest, AlterClientQuotasResponse,
    DescribeClientQuotasRequest, DescribeClientQuotasResponse,
};
use strata_protocol::ResponseError;
use strata_security::acl::Operation;

use super::str_bytes;
use crate::Broker;

/// DescribeClientQuotas match types.
const MATCH_EXACT: i8 = 0;
const MATCH_DEFAULT: i8 = 1;
const MATCH_SPECIFIED: i8 = 2;

/// How a filter matches one entity type: a name (`Some(None)` the default) or any name.
type Filter = BTreeMap<String, Option<Option<String>>>;

/// Reads the filter components as Kafka's `ClientQuotasImage.describe`; an error is
/// (code, message) for the whole response.
fn parse_filter(request: &DescribeClientQuotasRequest) -> Result<Filter, (ResponseError, String)> {
    let invalid = |m: String| (ResponseError::InvalidRequest, m);
    let mut filter = Filter::new();
    for c in &request.components {
        let kind = c.entity_type.to_string();
        if kind.is_empty() {
            return Err(invalid("Invalid empty entity type.".into()));
        }
        if filter.contains_key(&kind) {
            return Err(invalid(format!("Entity type {kind} cannot appear more than once in the filter.")));
        }
        if !["ip", "user", "client-id"].contains(&kind.as_str()) {
            return Err((ResponseError::UnsupportedVersion, format!("Unsupported entity type {kind}")));
        }
        let name = c._match.as_ref().map(|m| m.to_string());
        let wanted = match c.match_type {
            MATCH_EXACT => match name {
                Some(n) => Some(Some(n)),
                None => {
                    return Err(invalid("Request specified MATCH_TYPE_EXACT, but set match string to null.".into()))
                }
            },
            MATCH_DEFAULT if name.is_some() => {
                return Err(invalid("Request specified MATCH_TYPE_DEFAULT, but also specified a match string.".into()))
            }
            MATCH_DEFAULT => Some(None),
            MATCH_SPECIFIED if name.is_some() => {
                return Err(invalid(
                    "Request specified MATCH_TYPE_SPECIFIED, but also specified a match string.".into(),
                ))
            }
            MATCH_SPECIFIED => None,
            other => return Err(invalid(format!("Unknown match type {other}"))),
        };
        filter.insert(kind, wanted);
    }
    if filter.contains_key("ip") && (filter.contains_key("user") || filter.contains_key("client-id")) {
        return Err(invalid(
            "Invalid entity filter component combination. IP filter component should not be used with user or clientId filter component.".into(),
        ));
    }
    Ok(filter)
}

/// DescribeClientQuotas: the entities that match the filter, with their quotas.
pub fn describe(
    broker: &Arc<Broker>,
    request: DescribeClientQuotasRequest,
    session: &crate::net::Session,
) -> DescribeClientQuotasResponse {
    let fail = |e: ResponseError, m: String| {
        DescribeClientQuotasResponse::default().with_error_code(e.code()).with_error_message(Some(str_bytes(m)))
    };
    if !broker.authz.cluster(session, Operation::DescribeConfigs) {
        return DescribeClientQuotasResponse::default()
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code());
    }
    let filter = match parse_filter(&request) {
        Ok(f) => f,
        Err((e, m)) => return fail(e, m),
    };
    let image = broker.replicas.image();
    let entries = image
        .client_quotas
        .iter()
        .filter(|(entity, _)| {
            (!request.strict || entity.len() == filter.len())
                && filter.iter().all(|(kind, wanted)| match entity.iter().find(|(k, _)| k == kind) {
                    None => false,
                    Some((_, name)) => wanted.as_ref().is_none_or(|w| w == name),
                })
        })
        .map(|(entity, quotas)| {
            describe_client_quotas_response::EntryData::default()
                .with_entity(
                    entity
                        .iter()
                        .map(|(kind, name)| {
                            describe_client_quotas_response::EntityData::default()
                                .with_entity_type(str_bytes(kind.clone()))
                                .with_entity_name(name.clone().map(str_bytes))
                        })
                        .collect(),
                )
                .with_values(
                    quotas
                        .iter()
                        .map(|(key, QuotaValue(v))| {
                            describe_client_quotas_response::ValueData::default()
                                .with_key(str_bytes(key.clone()))
                                .with_value(*v)
                        })
                        .collect(),
                )
        })
        .collect();
    DescribeClientQuotasResponse::default().with_error_message(None).with_entries(Some(entries))
}

/// AlterClientQuotas: one entry per entry of the request, in order.
pub async fn alter(
    broker: &Arc<Broker>,
    request: AlterClientQuotasRequest,
    session: &crate::net::Session,
) -> AlterClientQuotasResponse {
    let echo = |entry: &strata_protocol::kafka_protocol::messages::alter_client_quotas_request::EntryData| {
        entry
            .entity
            .iter()
            .map(|e| {
                alter_client_quotas_response::EntityData::default()
                    .with_entity_type(e.entity_type.clone())
                    .with_entity_name(e.entity_name.clone())
            })
            .collect::<Vec<_>>()
    };
    let answer = |outcomes: Vec<Result<(), (i16, Option<String>)>>| {
        let entries = request
            .entries
            .iter()
            .zip(outcomes)
            .map(|(entry, outcome)| {
                let e = alter_client_quotas_response::EntryData::default().with_entity(echo(entry));
                match outcome {
                    // Kafka sends a null message with success.
                    Ok(()) => e.with_error_message(None),
                    Err((code, message)) => e.with_error_code(code).with_error_message(message.map(str_bytes)),
                }
            })
            .collect();
        AlterClientQuotasResponse::default().with_entries(entries)
    };
    let all = |code: i16, message: Option<String>| {
        request.entries.iter().map(|_| Err((code, message.clone()))).collect::<Vec<_>>()
    };
    if !broker.authz.cluster(session, Operation::AlterConfigs) {
        return answer(all(ResponseError::ClusterAuthorizationFailed.code(), None));
    }
    let alterations: Vec<QuotaAlteration> = request
        .entries
        .iter()
        .map(|entry| QuotaAlteration {
            entity: entry
                .entity
                .iter()
                .map(|e| (e.entity_type.to_string(), e.entity_name.as_ref().map(|n| n.to_string())))
                .collect(),
            ops: entry.ops.iter().map(|op| (op.key.to_string(), (!op.remove).then_some(op.value))).collect(),
        })
        .collect();
    match broker.controller.alter_client_quotas(alterations, request.validate_only).await {
        Ok(outcomes) => {
            answer(outcomes.into_iter().map(|o| o.map_err(|e| (e.error.code(), Some(e.message)))).collect())
        }
        Err(e) => answer(all(e.error.code(), Some(e.message))),
    }
}
