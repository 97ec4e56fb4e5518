//! InitProducerId: an idempotent producer gets a fresh producer id with epoch 0; a
//! transactional one goes to its transaction coordinator (`transactions::init_producer_id`).

use std::sync::Arc;

use strata_protocol::kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use strata_protocol::ResponseError;

use crate::Broker;

/// Without a transactional id: IDEMPOTENT_WRITE on the cluster or WRITE on some topic (KIP-679),
/// else CLUSTER_AUTHORIZATION_FAILED, as in Kafka.
pub async fn handle(
    broker: &Arc<Broker>,
    request: InitProducerIdRequest,
    version: i16,
    session: &crate::net::Session,
) -> InitProducerIdResponse {
    use strata_security::acl::{Operation, ResourceType};
    let failed = |e: ResponseError| {
        InitProducerIdResponse::default()
            .with_error_code(e.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    if let Some(id) = request.transactional_id.as_ref() {
        return super::transactions::init_producer_id(session, broker, &request, &id.0, version).await;
    }
    if !broker.authz.cluster(session, Operation::IdempotentWrite)
        && !broker.authz.any_of_type(session, Operation::Write, ResourceType::Topic)
    {
        return failed(ResponseError::ClusterAuthorizationFailed);
    }
    // An idempotent producer always gets a fresh id with epoch 0, as in Kafka.
    match broker.producer_ids.next(broker.controller.as_ref()).await {
        Ok(id) => InitProducerIdResponse::default().with_producer_id(ProducerId(id)).with_producer_epoch(0),
        Err(e) => {
            tracing::error!(error = %e.message, "cannot allocate producer ids");
            failed(ResponseError::CoordinatorNotAvailable)
        }
    }
}
