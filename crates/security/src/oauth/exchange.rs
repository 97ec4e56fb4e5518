//! The server side of the OAUTHBEARER exchange (RFC 7628) as Kafka's `OAuthBearerSaslServer`
//! runs it, and the client's first message as `OAuthBearerClientInitialResponse` reads it.
//!
//! ```text
//! client: n,[a=AUTHZID],\x01auth=Bearer TOKEN\x01[KEY=VALUE\x01]...\x01
//! server: (empty)                        -- token valid: done, principal = the sub claim
//!     or: {"status":"invalid_token"}     -- token refused; the client answers \x01
//! client: \x01
//! server: error {"status":"invalid_token"} (SASL_AUTHENTICATION_FAILED)
//! ```

use std::collections::HashSet;
use std::sync::Arc;
use std::time::SystemTime;

use super::OAuthValidator;
use crate::principal::KafkaPrincipal;
use crate::sasl::Step;

/// Kafka's answer to a refused token (`OAuthBearerSaslServer.jsonErrorResponse` with the
/// validator's `invalid_token` status; Kafka's validator sets neither scope nor
/// openid-configuration). Kafka also sends it as the final error message.
pub(crate) const INVALID_TOKEN: &str = "{\"status\":\"invalid_token\"}";

/// What Kafka's `SaslServerAuthenticator` tells a client whose exchange failed without a
/// message of the mechanism's own (a malformed message, a message out of turn).
pub(crate) const FAILED: &str =
    "Authentication failed during authentication due to invalid credentials with SASL mechanism OAUTHBEARER";

/// The client's first message, checked.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ClientFirst<'a> {
    /// The GS2 authzid as sent (Kafka compares it undecoded), empty when absent.
    pub authzid: &'a str,
    /// The bearer token (RFC 6750 `b64token`).
    pub token: &'a str,
}

/// Parses the client's first message strictly, in time linear in its length (the result
/// borrows from `msg`; only the duplicate-key check allocates, one entry a pair). `Err` says
/// why, for the log.
pub(crate) fn parse_client_first(msg: &[u8]) -> Result<ClientFirst<'_>, String> {
    // Every character the grammar allows is ASCII: anything else is refused up front.
    if !msg.is_ascii() {
        return Err("non-ASCII bytes".into());
    }
    let text = std::str::from_utf8(msg).map_err(|_| "not UTF-8".to_string())?;
    let rest = text.strip_prefix("n,").ok_or("the GS2 header must start with \"n,\" (no channel binding)")?;
    let (authzid, rest) = match rest.strip_prefix("a=") {
        Some(after) => {
            let end = after.find(',').ok_or("the GS2 header's authzid is not followed by ','")?;
            let name = &after[..end];
            if !is_saslname(name) {
                return Err("the GS2 header's authzid is not a saslname (RFC 5801)".into());
            }
            (name, &after[end + 1..])
        }
        None => ("", rest.strip_prefix(',').ok_or("the GS2 header must be \"n,,\" or \"n,a=AUTHZID,\"")?),
    };
    let pairs = rest
        .strip_prefix('\x01')
        .and_then(|r| r.strip_suffix('\x01'))
        .ok_or("the key=value pairs must sit between \\x01 separators and end with \\x01\\x01")?;
    // `pairs` is `(KEY=VALUE\x01)*`: empty, or each pair followed by \x01.
    let mut token = None;
    if !pairs.is_empty() {
        let pairs = pairs.strip_suffix('\x01').ok_or("a key=value pair is not terminated by \\x01")?;
        let mut seen = HashSet::new();
        for pair in pairs.split('\x01') {
            let (key, value) = pair.split_once('=').ok_or("a key=value pair has no '='")?;
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphabetic()) {
                return Err(format!("the key {key:?} is not letters only"));
            }
            if value.is_empty() || !value.bytes().all(|b| matches!(b, 0x21..=0x7e | b' ' | b'\t' | b'\r' | b'\n')) {
                return Err(format!("the value of {key} has characters RFC 7628 does not allow"));
            }
            if !seen.insert(key) {
                return Err(format!("the key {key} appears twice"));
            }
            if key == "auth" {
                token = Some(bearer_token(value)?);
            }
            // Other keys are SASL extensions: Kafka's validator accepts them all and
            // Strata has no use for them.
        }
    }
    let token = token.ok_or("no auth=Bearer TOKEN")?;
    Ok(ClientFirst { authzid, token })
}

/// RFC 5801's saslname: ASCII without ',' or '=' except as `=2C` and `=3D`, non-empty.
/// The control byte \x01 is left out too: it separates the message's fields.
fn is_saslname(name: &str) -> bool {
    let bytes = name.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'=' => {
                if !matches!(bytes.get(i + 1..i + 3), Some(b"2C") | Some(b"3D")) {
                    return false;
                }
                i += 3;
            }
            b',' | 0x00 | 0x01 => return false,
            _ => i += 1,
        }
    }
    !bytes.is_empty()
}

/// `auth`'s value: the scheme `Bearer` (any case), spaces, then an RFC 6750 `b64token`.
fn bearer_token(value: &str) -> Result<&str, String> {
    let (scheme, token) = value.split_once(' ').ok_or("auth is not \"Bearer TOKEN\"")?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err("the auth scheme is not Bearer".into());
    }
    let token = token.trim_start_matches(' ');
    let body = token.trim_end_matches('=');
    if body.is_empty() || !body.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b)) {
        return Err("the bearer token is not an RFC 6750 b64token".into());
    }
    Ok(token)
}

/// Where one OAUTHBEARER exchange stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the client's first message.
    Start,
    /// The token was refused with `invalid_token`; the client must answer \x01.
    Refused,
    /// Authenticated, or failed for good.
    Over,
}

/// One connection's OAUTHBEARER exchange.
pub(crate) struct OAuthServer {
    validator: Arc<OAuthValidator>,
    state: State,
    expiry: Option<SystemTime>,
}

impl OAuthServer {
    pub(crate) fn new(validator: Arc<OAuthValidator>) -> Self {
        Self { validator, state: State::Start, expiry: None }
    }

    /// When the session ends (the token's `exp`), once authenticated.
    pub(crate) fn expiry(&self) -> Option<SystemTime> {
        self.expiry
    }

    /// Feeds the client's next message at `now`. `Err` carries the message for the client.
    pub(crate) fn step(&mut self, msg: &[u8], now: SystemTime) -> Result<Step, String> {
        let state = std::mem::replace(&mut self.state, State::Over);
        match state {
            State::Refused if msg == b"\x01" => {
                tracing::debug!("OAUTHBEARER: the client acknowledged invalid_token");
                Err(INVALID_TOKEN.into())
            }
            State::Refused => {
                tracing::debug!("OAUTHBEARER: expected \\x01 after invalid_token");
                Err(FAILED.into())
            }
            State::Over => Err(FAILED.into()),
            State::Start => {
                let first = parse_client_first(msg).map_err(|why| {
                    tracing::debug!(reason = %why, "OAUTHBEARER: invalid client first message");
                    FAILED.to_string()
                })?;
                let token = match self.validator.validate(first.token, now) {
                    Ok(token) => token,
                    Err(why) => {
                        tracing::info!(reason = %why, "OAUTHBEARER: token refused (invalid_token)");
                        self.state = State::Refused;
                        return Ok(Step::Continue(INVALID_TOKEN.as_bytes().to_vec()));
                    }
                };
                if !first.authzid.is_empty() && first.authzid != token.principal {
                    return Err(format!(
                        "Authentication failed: Client requested an authorization id ({}) that is different from the token's principal name ({})",
                        first.authzid, token.principal
                    ));
                }
                tracing::debug!(principal = %token.principal, scopes = ?token.scopes, "OAUTHBEARER: token accepted");
                self.expiry = Some(token.expires);
                Ok(Step::Done { response: Vec::new(), principal: KafkaPrincipal::user(token.principal) })
            }
        }
    }
}
