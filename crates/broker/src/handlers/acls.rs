//! DescribeAcls (29), CreateAcls (30) and DeleteAcls (31): ACL bindings kept in the metadata
//! log (Kafka's `AclControlManager`). Describing needs DESCRIBE on the cluster, changing ALTER
//! (CLUSTER_AUTHORIZATION_FAILED); without an authorizer every ACL request is answered
//! SECURITY_DISABLED, as in Kafka.

use std::collections::BTreeMap;
use std::sync::Arc;

use strata_metadata::channel::AclFilterSpec;
use strata_metadata::image::AclImage;
use strata_protocol::kafka_protocol::messages::create_acls_response::AclCreationResult;
use strata_protocol::kafka_protocol::messages::delete_acls_response::{DeleteAclsFilterResult, DeleteAclsMatchingAcl};
use strata_protocol::kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use strata_protocol::kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse, DescribeAclsRequest,
    DescribeAclsResponse,
};
use strata_protocol::ResponseError;
use strata_security::acl::{AclBinding, AclFilter, Operation};

use super::str_bytes;
use crate::net::Session;
use crate::Broker;

/// Why an ACL request is refused as a whole, if it is.
fn refused(broker: &Broker, session: &Session, operation: Operation) -> Option<(ResponseError, String)> {
    if !broker.authz.enabled() {
        return Some((ResponseError::SecurityDisabled, "No Authorizer is configured.".into()));
    }
    if !broker.authz.cluster(session, operation) {
        return Some((
            ResponseError::ClusterAuthorizationFailed,
            format!("Principal {} is not authorized to {operation:?} the cluster", session.principal),
        ));
    }
    None
}

/// A stored binding as the authorizer reads it (`None` for ids it does not know).
pub(crate) fn binding(a: &AclImage) -> Option<AclBinding> {
    AclBinding::from_ids(a.resource_type, &a.name, a.pattern_type, &a.principal, &a.host, a.operation, a.permission)
        .ok()
}

pub fn describe(broker: &Arc<Broker>, r: DescribeAclsRequest, session: &Session) -> DescribeAclsResponse {
    if let Some((e, m)) = refused(broker, session, Operation::Describe) {
        return DescribeAclsResponse::default().with_error_code(e.code()).with_error_message(Some(str_bytes(m)));
    }
    let filter = match AclFilter::from_ids(
        r.resource_type_filter,
        r.resource_name_filter.as_deref(),
        r.pattern_type_filter,
        r.principal_filter.as_deref(),
        r.host_filter.as_deref(),
        r.operation,
        r.permission_type,
    ) {
        Ok(f) => f,
        Err(m) => {
            return DescribeAclsResponse::default()
                .with_error_code(ResponseError::InvalidRequest.code())
                .with_error_message(Some(str_bytes(m)))
        }
    };
    let image = broker.replicas.image();
    // Grouped by resource pattern, as Kafka answers.
    let mut by_resource: BTreeMap<(i8, String, i8), Vec<AclDescription>> = BTreeMap::new();
    for a in image.acls.values() {
        if binding(a).is_some_and(|b| filter.matches(&b)) {
            by_resource.entry((a.resource_type, a.name.clone(), a.pattern_type)).or_default().push(
                AclDescription::default()
                    .with_principal(str_bytes(a.principal.clone()))
                    .with_host(str_bytes(a.host.clone()))
                    .with_operation(a.operation)
                    .with_permission_type(a.permission),
            );
        }
    }
    let resources = by_resource
        .into_iter()
        .map(|((t, name, p), acls)| {
            DescribeAclsResource::default()
                .with_resource_type(t)
                .with_resource_name(str_bytes(name))
                .with_pattern_type(p)
                .with_acls(acls)
        })
        .collect();
    DescribeAclsResponse::default().with_resources(resources)
}

/// Decided by the active controller (brokers forward the request there).
pub async fn create(broker: &Arc<Broker>, r: CreateAclsRequest, session: &Session) -> CreateAclsResponse {
    let fail_all = |e: ResponseError, m: String| {
        CreateAclsResponse::default().with_results(
            r.creations
                .iter()
                .map(|_| {
                    AclCreationResult::default()
                        .with_error_code(e.code())
                        .with_error_message(Some(str_bytes(m.clone())))
                })
                .collect(),
        )
    };
    if let Some((e, m)) = refused(broker, session, Operation::Alter) {
        return fail_all(e, m);
    }
    let acls: Vec<AclImage> = r
        .creations
        .iter()
        .map(|c| AclImage {
            resource_type: c.resource_type,
            name: c.resource_name.to_string(),
            pattern_type: c.resource_pattern_type,
            principal: c.principal.to_string(),
            host: c.host.to_string(),
            operation: c.operation,
            permission: c.permission_type,
        })
        .collect();
    match broker.controller.create_acls(acls).await {
        Ok(results) => CreateAclsResponse::default().with_results(
            results
                .into_iter()
                .map(|res| match res {
                    Ok(()) => AclCreationResult::default(),
                    Err(e) => AclCreationResult::default()
                        .with_error_code(e.error.code())
                        .with_error_message(Some(str_bytes(e.message))),
                })
                .collect(),
        ),
        Err(e) => fail_all(e.error, e.message),
    }
}

/// Decided by the active controller (brokers forward the request there).
pub async fn delete(broker: &Arc<Broker>, r: DeleteAclsRequest, session: &Session) -> DeleteAclsResponse {
    let fail_all = |e: ResponseError, m: String| {
        DeleteAclsResponse::default().with_filter_results(
            r.filters
                .iter()
                .map(|_| {
                    DeleteAclsFilterResult::default()
                        .with_error_code(e.code())
                        .with_error_message(Some(str_bytes(m.clone())))
                })
                .collect(),
        )
    };
    if let Some((e, m)) = refused(broker, session, Operation::Alter) {
        return fail_all(e, m);
    }
    let filters: Vec<AclFilterSpec> = r
        .filters
        .iter()
        .map(|f| AclFilterSpec {
            resource_type: f.resource_type_filter,
            name: f.resource_name_filter.as_ref().map(|s| s.to_string()),
            pattern_type: f.pattern_type_filter,
            principal: f.principal_filter.as_ref().map(|s| s.to_string()),
            host: f.host_filter.as_ref().map(|s| s.to_string()),
            operation: f.operation,
            permission: f.permission_type,
        })
        .collect();
    match broker.controller.delete_acls(filters).await {
        Ok(results) => DeleteAclsResponse::default().with_filter_results(
            results
                .into_iter()
                .map(|res| match res {
                    Ok(matched) => DeleteAclsFilterResult::default().with_matching_acls(
                        matched
                            .into_iter()
                            .map(|a| {
                                DeleteAclsMatchingAcl::default()
                                    .with_resource_type(a.resource_type)
                                    .with_resource_name(str_bytes(a.name))
                                    .with_pattern_type(a.pattern_type)
                                    .with_principal(str_bytes(a.principal))
                                    .with_host(str_bytes(a.host))
                                    .with_operation(a.operation)
                                    .with_permission_type(a.permission)
                            })
                            .collect(),
                    ),
                    Err(e) => DeleteAclsFilterResult::default()
                        .with_error_code(e.error.code())
                        .with_error_message(Some(str_bytes(e.message))),
                })
                .collect(),
        ),
        Err(e) => fail_all(e.error, e.message),
    }
}
