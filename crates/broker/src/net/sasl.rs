//! A SASL listener's per-connection authentication, as Kafka's `SaslServerAuthenticator`.
//!
//! Before authentication a connection may send ApiVersions, SaslHandshake and then the
//! mechanism's tokens: in SaslAuthenticate requests after a v1 handshake, or as bare
//! size-prefixed frames after a v0 handshake (the pre-KIP-152 form). Any other request closes
//! the connection, as does a failed authentication (after its SASL_AUTHENTICATION_FAILED
//! answer). Once authenticated, a SaslHandshake starts a re-authentication (KIP-368); when
//! `connections.max.reauth.ms` is set, a request after the session's end closes the
//! connection.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{BufMut, Bytes, BytesMut};
use strata_protocol::kafka_protocol::messages::RequestKind;
use strata_protocol::kafka_protocol::messages::{SaslAuthenticateResponse, SaslHandshakeResponse};
use strata_protocol::kafka_protocol::protocol::StrBytes;
use strata_protocol::request::{decode_request, peek_prefix, Decoded};
use strata_protocol::response::{encode_response, Chunk};
use strata_protocol::{ApiKey, ResponseError};
use strata_security::sasl::{SaslExchange, SaslSettings, Step};
use strata_security::KafkaPrincipal;

use crate::handlers::OutChunk;

/// Where a connection's authentication stands.
enum Phase {
    /// Waiting for SaslHandshake.
    Handshake,
    /// Exchanging tokens; `raw` after a v0 handshake (frames are bare tokens).
    Exchange { exchange: Box<SaslExchange>, raw: bool },
    /// Authenticated, serving requests.
    Done,
}

/// What the connection does with a frame.
pub(super) enum Verdict {
    /// Not an authentication frame: handle it as a request.
    Serve,
    /// Answered here (the answer is in `out`).
    Answered,
    /// Answer with `out` (possibly empty), then close: the reason is logged.
    Close(String),
    /// A failed authentication: as `Close`, after `connection.failed.authentication.delay.ms`
    /// (KIP-306), which slows down password guessing.
    Refused(String),
}

/// One connection's SASL state.
pub(super) struct SaslState {
    settings: Arc<SaslSettings>,
    phase: Phase,
    /// The authenticated principal (kept through a re-authentication).
    pub principal: Option<KafkaPrincipal>,
    max_reauth: Option<Duration>,
    expires: Option<Instant>,
    /// The mechanism of the first authentication (a re-authentication must use it).
    mechanism: Option<String>,
}

impl SaslState {
    pub fn new(settings: Arc<SaslSettings>, max_reauth_ms: i64) -> Self {
        let max_reauth = (max_reauth_ms > 0).then(|| Duration::from_millis(max_reauth_ms as u64));
        Self { settings, phase: Phase::Handshake, principal: None, max_reauth, expires: None, mechanism: None }
    }

    /// Looks at a frame before it is handled as a request.
    pub fn filter(&mut self, frame: &Bytes, out: &mut Vec<OutChunk>) -> Verdict {
        if let Phase::Exchange { raw: true, .. } = self.phase {
            return self.raw_token(frame, out);
        }
        let prefix = match peek_prefix(frame) {
            Ok(p) => p,
            Err(e) => return Verdict::Close(format!("unreadable request during SASL authentication: {e}")),
        };
        match prefix.api_key {
            k if k == ApiKey::ApiVersions as i16 => Verdict::Serve,
            k if k == ApiKey::SaslHandshake as i16 || k == ApiKey::SaslAuthenticate as i16 => {
                self.sasl_request(frame, out)
            }
            key => match self.phase {
                Phase::Done => match self.expires {
                    Some(at) if Instant::now() >= at => Verdict::Close(
                        "the SASL session expired (connections.max.reauth.ms, or the OAUTHBEARER token's exp) without re-authentication".into(),
                    ),
                    _ => Verdict::Serve,
                },
                // Kafka's SaslServerAuthenticator: during a (re-)authentication no other request
                // is served; one closes the connection.
                _ if self.principal.is_some() => Verdict::Close(format!(
                    "unexpected request (api key {key}) during SASL re-authentication; closing the connection"
                )),
                _ => Verdict::Close(format!(
                    "unexpected request (api key {key}) before SASL authentication; closing the connection"
                )),
            },
        }
    }

    fn sasl_request(&mut self, frame: &Bytes, out: &mut Vec<OutChunk>) -> Verdict {
        let request = match decode_request(frame.clone()) {
            Ok(Decoded::Request(r)) => r,
            Ok(Decoded::UnsupportedApiVersions { .. }) => return Verdict::Close("bad SASL request".into()),
            Err(e) => return Verdict::Close(format!("undecodable SASL request: {e}")),
        };
        let (key, version, cid) = (request.api_key, request.version, request.correlation_id());
        let mut respond = |body: &dyn Encode| {
            let mut buf = BytesMut::new();
            let ok = body.encode_into(&mut buf, key, version, cid);
            out.push(Chunk::Encoded(buf.freeze()));
            ok
        };
        match request.body {
            RequestKind::SaslHandshake(r) => {
                if matches!(self.phase, Phase::Exchange { .. }) {
                    return Verdict::Close("SaslHandshake in the middle of a SASL exchange".into());
                }
                // KIP-368: re-authentication only where sessions expire (connections.max.reauth.ms,
                // or an OAUTHBEARER token's exp), with the same mechanism.
                if self.principal.is_some() {
                    if self.expires.is_none() {
                        return Verdict::Close(
                            "SaslHandshake on an authenticated connection whose session does not expire (connections.max.reauth.ms is 0)".into(),
                        );
                    }
                    if self.mechanism.as_deref().is_some_and(|m| m != r.mechanism.as_str()) {
                        return Verdict::Refused(format!(
                            "SASL authentication failed: re-authentication must use the same mechanism ({})",
                            self.mechanism.as_deref().unwrap_or_default()
                        ));
                    }
                }
                let mechanisms: Vec<StrBytes> =
                    self.settings.enabled().into_iter().map(StrBytes::from_static_str).collect();
                let mechanism = r.mechanism.to_string();
                match self.settings.start(&mechanism) {
                    Some(exchange) => {
                        let body = SaslHandshakeResponse::default().with_mechanisms(mechanisms);
                        if !respond(&body) {
                            return Verdict::Close("cannot encode SaslHandshake response".into());
                        }
                        self.phase = Phase::Exchange { exchange: Box::new(exchange), raw: version == 0 };
                        Verdict::Answered
                    }
                    None => {
                        let body = SaslHandshakeResponse::default()
                            .with_error_code(ResponseError::UnsupportedSaslMechanism.code())
                            .with_mechanisms(mechanisms);
                        respond(&body);
                        Verdict::Close(format!(
                            "SASL authentication failed: mechanism {mechanism} is not enabled (sasl.enabled.mechanisms: {})",
                            self.settings.enabled().join(",")
                        ))
                    }
                }
            }
            RequestKind::SaslAuthenticate(r) => {
                let Phase::Exchange { exchange, raw: false } = &mut self.phase else {
                    let body = SaslAuthenticateResponse::default()
                        .with_error_code(ResponseError::IllegalSaslState.code())
                        .with_error_message(Some(StrBytes::from_static_str("SaslAuthenticate before SaslHandshake")));
                    respond(&body);
                    return Verdict::Close("SaslAuthenticate before SaslHandshake".into());
                };
                match exchange.step(&r.auth_bytes) {
                    Ok(Step::Continue(challenge)) => {
                        let body = SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(challenge));
                        if respond(&body) {
                            Verdict::Answered
                        } else {
                            Verdict::Close("cannot encode SaslAuthenticate response".into())
                        }
                    }
                    Ok(Step::Done { response, principal }) => {
                        let mechanism = exchange.mechanism().name();
                        let expiry = exchange.session_expiry();
                        let lifetime = match self.authenticated(principal, mechanism, expiry) {
                            Ok(lifetime) => lifetime,
                            Err(reason) => {
                                let body = SaslAuthenticateResponse::default()
                                    .with_error_code(ResponseError::SaslAuthenticationFailed.code())
                                    .with_error_message(Some(StrBytes::from_string(reason.clone())));
                                respond(&body);
                                return Verdict::Refused(format!("SASL authentication failed: {reason}"));
                            }
                        };
                        let body = SaslAuthenticateResponse::default()
                            .with_auth_bytes(Bytes::from(response))
                            .with_session_lifetime_ms(lifetime);
                        if respond(&body) {
                            Verdict::Answered
                        } else {
                            Verdict::Close("cannot encode SaslAuthenticate response".into())
                        }
                    }
                    Err(message) => {
                        let mechanism = exchange.mechanism().name();
                        let body = SaslAuthenticateResponse::default()
                            .with_error_code(ResponseError::SaslAuthenticationFailed.code())
                            .with_error_message(Some(StrBytes::from_string(message.clone())));
                        respond(&body);
                        Verdict::Refused(format!("SASL authentication failed ({mechanism}): {message}"))
                    }
                }
            }
            _ => Verdict::Close("not a SASL request".into()),
        }
    }

    /// A bare token after a v0 handshake; the answer is a bare size-prefixed token.
    fn raw_token(&mut self, frame: &Bytes, out: &mut Vec<OutChunk>) -> Verdict {
        let Phase::Exchange { exchange, .. } = &mut self.phase else { return Verdict::Serve };
        let mechanism = exchange.mechanism().name();
        let reply = match exchange.step(frame) {
            Ok(Step::Continue(challenge)) => challenge,
            Ok(Step::Done { response, principal }) => {
                let expiry = exchange.session_expiry();
                if let Err(reason) = self.authenticated(principal, mechanism, expiry) {
                    return Verdict::Refused(format!("SASL authentication failed: {reason}"));
                }
                response
            }
            // The v0 form has no error answer: the connection just closes.
            Err(message) => return Verdict::Refused(format!("SASL authentication failed ({mechanism}): {message}")),
        };
        // Kafka sends an empty final token too (the client waits for it).
        let mut buf = BytesMut::with_capacity(4 + reply.len());
        buf.put_u32(reply.len() as u32);
        buf.put_slice(&reply);
        out.push(Chunk::Encoded(buf.freeze()));
        Verdict::Answered
    }

    /// The exchange succeeded as `principal`: a re-authentication must keep the principal
    /// (Kafka: "Cannot change principals during re-authentication"). Returns the session's
    /// lifetime in ms for SaslAuthenticate (0: it does not expire), as Kafka's
    /// `SaslServerAuthenticator`: the credential's remaining life (an OAUTHBEARER token's
    /// `exp`), capped by `connections.max.reauth.ms`; a credential already expired leaves a
    /// session that ends at once.
    fn authenticated(
        &mut self,
        principal: KafkaPrincipal,
        mechanism: &str,
        credential_expiry: Option<SystemTime>,
    ) -> Result<i64, String> {
        if let Some(before) = &self.principal {
            if *before != principal {
                // Kafka's wording (SaslServerAuthenticator.ReauthInfo), TYPE.NAME on each side.
                return Err(format!(
                    "Cannot change principals during re-authentication from {}.{}: {}.{}",
                    before.principal_type, before.name, principal.principal_type, principal.name
                ));
            }
        }
        tracing::debug!(%principal, mechanism, "SASL authentication succeeded");
        self.principal = Some(principal);
        self.phase = Phase::Done;
        let credential_left =
            credential_expiry.map(|exp| exp.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO));
        let lifetime = match (credential_left, self.max_reauth) {
            (Some(left), Some(max)) => Some(left.min(max)),
            (left, max) => left.or(max),
        };
        let now = Instant::now();
        // (Capped at a century: a huge connections.max.reauth.ms must not overflow an Instant.)
        let century = Duration::from_secs(100 * 365 * 86_400);
        self.expires = lifetime.and_then(|l| now.checked_add(l.min(century)));
        self.mechanism.get_or_insert_with(|| mechanism.to_string());
        Ok(lifetime.map_or(0, |l| i64::try_from(l.as_millis()).unwrap_or(i64::MAX).max(1)))
    }
}

/// A response body, encoded with its header (object-safe over the message types).
trait Encode {
    fn encode_into(&self, buf: &mut BytesMut, key: ApiKey, version: i16, cid: i32) -> bool;
}

impl Encode for SaslHandshakeResponse {
    fn encode_into(&self, buf: &mut BytesMut, key: ApiKey, version: i16, cid: i32) -> bool {
        encode_response(buf, key, version, cid, self).is_ok()
    }
}

impl Encode for SaslAuthenticateResponse {
    fn encode_into(&self, buf: &mut BytesMut, key: ApiKey, version: i16, cid: i32) -> bool {
        encode_response(buf, key, version, cid, self).is_ok()
    }
}
