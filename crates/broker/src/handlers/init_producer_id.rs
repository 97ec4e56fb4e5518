//! InitProducerId for idempotent producers. Transactions are not supported
//! yet: a transactional id is refused with a non-retriable error so that the
//! client fails fast instead of retrying forever.

use std::sync::Arc;

use strata_protocol::kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use strata_protocol::ResponseError;

use crate::Broker;

pub async fn handle(broker: &Arc<Broker>, request: InitProducerIdRequest) -> InitProducerIdResponse {
    let failed = |e: ResponseError| {
        InitProducerIdResponse::default()
            .with_error_code(e.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    if request.transactional_id.is_some() {
        return failed(ResponseError::TransactionalIdAuthorizationFailed);
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
