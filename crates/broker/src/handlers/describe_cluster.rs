//! DescribeCluster: cluster id, controller and brokers.

use std::sync::Arc;

use strata_protocol::kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use strata_protocol::kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use strata_protocol::ResponseError;

use strata_security::acl::{Operation, ResourceType, CLUSTER_NAME};

use super::{str_bytes, AUTHORIZED_OPERATIONS_OMITTED, CLUSTER_OPERATIONS};
use crate::Broker;

/// EndpointType 1 = brokers; 2 = controllers (KIP-919), not served separately.
const ENDPOINT_BROKERS: i8 = 1;

/// Answered to everyone, as in Kafka; the authorized operations (when asked for) are 0
/// without DESCRIBE on the cluster.
pub fn handle(
    broker: &Arc<Broker>,
    request: DescribeClusterRequest,
    session: &crate::net::Session,
) -> DescribeClusterResponse {
    if request.endpoint_type != ENDPOINT_BROKERS {
        return DescribeClusterResponse::default()
            .with_error_code(ResponseError::UnsupportedEndpointType.code())
            .with_error_message(Some(str_bytes("Strata serves only the broker endpoint type")))
            .with_endpoint_type(request.endpoint_type);
    }
    let image = broker.replicas.image();
    DescribeClusterResponse::default()
        .with_endpoint_type(ENDPOINT_BROKERS)
        .with_cluster_id(str_bytes(image.cluster_id.clone().unwrap_or_default()))
        .with_controller_id(BrokerId(broker.node_id))
        .with_brokers(
            // Fenced brokers only when asked (v2, KIP-1073), flagged as such.
            image
                .brokers
                .values()
                .filter(|b| !b.fenced || request.include_fenced_brokers)
                .filter_map(|b| {
                    let (host, port) = b.endpoint(&session.listener)?;
                    Some(
                        DescribeClusterBroker::default()
                            .with_broker_id(BrokerId(b.broker_id))
                            .with_host(str_bytes(host.to_string()))
                            .with_port(i32::from(port))
                            .with_rack(b.rack.clone().map(str_bytes))
                            .with_is_fenced(b.fenced),
                    )
                })
                .collect(),
        )
        .with_cluster_authorized_operations(if request.include_cluster_authorized_operations {
            if broker.authz.cluster(session, Operation::Describe) {
                broker.authz.operations(session, ResourceType::Cluster, CLUSTER_NAME, &CLUSTER_OPERATIONS)
            } else {
                0
            }
        } else {
            AUTHORIZED_OPERATIONS_OMITTED
        })
}
