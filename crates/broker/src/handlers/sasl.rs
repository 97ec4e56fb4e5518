//! SaslHandshake (17) and SaslAuthenticate (36) on a listener without SASL.
//!
//! Kafka answers both on a PLAINTEXT listener with ILLEGAL_SASL_STATE and keeps the
//! connection (`KafkaApis.handleSaslHandshakeRequest`): a client configured for SASL against
//! it then fails at once with an authentication error (the Java client throws
//! `IllegalSaslStateException`), instead of seeing its connection closed and retrying until
//! its timeout.

use strata_protocol::kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use strata_protocol::ResponseError;

use super::str_bytes;

pub fn handshake(request: &SaslHandshakeRequest) -> SaslHandshakeResponse {
    tracing::debug!(mechanism = %request.mechanism.as_str(), "SaslHandshake on a listener without SASL");
    SaslHandshakeResponse::default().with_error_code(ResponseError::IllegalSaslState.code()).with_mechanisms(Vec::new())
}

pub fn authenticate(_request: &SaslAuthenticateRequest) -> SaslAuthenticateResponse {
    SaslAuthenticateResponse::default()
        .with_error_code(ResponseError::IllegalSaslState.code())
        .with_error_message(Some(str_bytes("SASL is not enabled on this listener (security protocol PLAINTEXT)")))
}
