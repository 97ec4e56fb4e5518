//! SASL on SASL_PLAINTEXT and SASL_SSL listeners: the mechanisms run by `rsasl`, the
//! credentials from Kafka's settings (PLAIN) and from the cluster's metadata (SCRAM), and
//! OAUTHBEARER's JWTs checked against a JWKS ([`crate::oauth`]).
//!
//! A connection's exchange follows Kafka's `SaslServerAuthenticator`: SaslHandshake names a
//! mechanism of `sasl.enabled.mechanisms`, then each SaslAuthenticate (or, after a v0
//! handshake, each raw frame) carries one token to [`SaslExchange::step`] until it finishes
//! with the principal `User:NAME`, or fails. A failure is answered with
//! SASL_AUTHENTICATION_FAILED and the connection closed.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::Arc;
use std::time::SystemTime;

use rsasl::callback::{Context, SessionCallback, SessionData};
use rsasl::mechname::Mechname;
use rsasl::prelude::{SASLConfig, SASLServer, Session, State};
use rsasl::property::{AuthId, AuthzId, Password};
use rsasl::validate::{Validate, Validation, ValidationError};

use crate::oauth::{OAuthServer, OAuthValidator};
use crate::principal::KafkaPrincipal;
use crate::scram::{ScramServer, ScramStep};
use crate::{jaas, Lookup, SecurityError};

/// The SASL mechanisms Strata serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mechanism {
    Plain,
    ScramSha256,
    ScramSha512,
    /// RFC 7628 bearer tokens: JWTs checked against a JWKS (KIP-768).
    OAuthBearer,
}

impl Mechanism {
    pub const ALL: [Mechanism; 4] =
        [Mechanism::Plain, Mechanism::ScramSha256, Mechanism::ScramSha512, Mechanism::OAuthBearer];

    /// The IANA name clients send in SaslHandshake.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
            Self::OAuthBearer => "OAUTHBEARER",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Kafka's `ScramMechanism` type id (AlterUserScramCredentials): 1 SHA-256, 2 SHA-512.
    pub fn scram_type(self) -> Option<i8> {
        match self {
            Self::Plain | Self::OAuthBearer => None,
            Self::ScramSha256 => Some(1),
            Self::ScramSha512 => Some(2),
        }
    }
}

/// A SCRAM credential as Kafka stores it (RFC 5802): never the password itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramCredential {
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
    pub iterations: u32,
}

/// Where SCRAM credentials live (the metadata image, in the broker).
pub trait CredentialStore: Send + Sync {
    fn scram(&self, mechanism: Mechanism, user: &str) -> Option<ScramCredential>;
}

/// A store without credentials.
pub struct NoCredentials;

impl CredentialStore for NoCredentials {
    fn scram(&self, _: Mechanism, _: &str) -> Option<ScramCredential> {
        None
    }
}

/// What a finished validation yields: the authenticated user, or why not.
struct Outcome;

impl Validation for Outcome {
    type Value = Result<String, String>;
}

/// The rsasl callback: decides PLAIN logins against the listener's users.
struct Callback {
    plain_users: BTreeMap<String, String>,
}

impl SessionCallback for Callback {
    fn validate(
        &self,
        session: &SessionData,
        context: &Context<'_>,
        validate: &mut Validate<'_>,
    ) -> Result<(), ValidationError> {
        let user = context.get_ref::<AuthId>().unwrap_or_default().to_string();
        let authzid = context.get_ref::<AuthzId>().filter(|a| !a.is_empty());
        let verdict = if authzid.is_some_and(|a| a != user) {
            Err("Authentication failed: Client requested an authorization id that is different from username"
                .to_string())
        } else if session.mechanism().mechanism.as_str() == "PLAIN" {
            let password = context.get_ref::<Password>().unwrap_or_default();
            match self.plain_users.get(&user) {
                Some(expected) if constant_time_eq(expected.as_bytes(), password) => Ok(user),
                _ => Err("Authentication failed: Invalid username or password".to_string()),
            }
        } else {
            Err(format!("mechanism {} is not served by this callback", session.mechanism().mechanism.as_str()))
        };
        validate.with::<Outcome, _>(|| Ok(verdict))?;
        Ok(())
    }
}

/// Compares secrets without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A SASL listener's settings: its enabled mechanisms and their credentials.
pub struct SaslSettings {
    enabled: Vec<Mechanism>,
    config: Arc<SASLConfig>,
    store: Arc<dyn CredentialStore>,
    /// OAUTHBEARER's token validation, when it is enabled.
    oauth: Option<Arc<OAuthValidator>>,
}

impl std::fmt::Debug for SaslSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslSettings").field("enabled", &self.enabled).finish_non_exhaustive()
    }
}

impl SaslSettings {
    /// Reads `sasl.enabled.mechanisms` and, for PLAIN, the users of
    /// `listener.name.LISTENER.plain.sasl.jaas.config` (`get` resolves the listener prefix of
    /// the first; the JAAS key is looked up with its mechanism prefix as Kafka does); for
    /// OAUTHBEARER, the `sasl.oauthbearer.*` settings ([`crate::oauth`]) and the JWKS file.
    pub fn from_config(get: Lookup<'_>, store: Arc<dyn CredentialStore>) -> Result<Self, SecurityError> {
        let mut enabled = Vec::new();
        let names = get("sasl.enabled.mechanisms").unwrap_or_else(|| "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512".into());
        for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let m = Mechanism::parse(&name.to_ascii_uppercase()).ok_or_else(|| {
                SecurityError::Config(format!(
                    "sasl.enabled.mechanisms: {name} is not supported (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 and OAUTHBEARER are)"
                ))
            })?;
            if !enabled.contains(&m) {
                enabled.push(m);
            }
        }
        if enabled.is_empty() {
            return Err(SecurityError::Config("sasl.enabled.mechanisms names no mechanism".into()));
        }
        let mut plain_users = BTreeMap::new();
        if enabled.contains(&Mechanism::Plain) {
            match get("plain.sasl.jaas.config") {
                Some(v) => {
                    let entry = jaas::parse(&v)?;
                    plain_users = entry.plain_users();
                }
                None => {
                    return Err(SecurityError::Config(
                        "PLAIN is enabled but the listener has no users: set listener.name.NAME.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_NAME=\"PASSWORD\"; (or give them in a JAAS file, java.security.auth.login.config)".into(),
                    ))
                }
            }
        }
        let oauth = if enabled.contains(&Mechanism::OAuthBearer) {
            Some(Arc::new(OAuthValidator::from_config(get)?))
        } else {
            None
        };
        let config = SASLConfig::builder()
            .with_defaults()
            .with_callback(Callback { plain_users })
            .map_err(|e| SecurityError::Config(format!("SASL: {e}")))?;
        Ok(Self { enabled, config, store, oauth })
    }

    /// The enabled mechanisms' names, as SaslHandshake lists them.
    pub fn enabled(&self) -> Vec<&'static str> {
        self.enabled.iter().map(|m| m.name()).collect()
    }

    /// Starts an exchange for `mechanism`, or `None` when it is not enabled here.
    pub fn start(&self, mechanism: &str) -> Option<SaslExchange> {
        let m = Mechanism::parse(mechanism).filter(|m| self.enabled.contains(m))?;
        let inner = match m {
            Mechanism::Plain => {
                let name = Mechname::parse(m.name().as_bytes()).ok()?;
                Inner::Plain(SASLServer::<Outcome>::new(self.config.clone()).start_suggested(name).ok()?)
            }
            Mechanism::ScramSha256 | Mechanism::ScramSha512 => Inner::Scram(ScramServer::new(m), self.store.clone()),
            Mechanism::OAuthBearer => Inner::OAuth(OAuthServer::new(self.oauth.clone()?)),
        };
        Some(SaslExchange { mechanism: m, inner })
    }

    /// Re-reads OAUTHBEARER's JWKS file if its modification time or length changed, or
    /// `sasl.oauthbearer.jwks.endpoint.refresh.ms` passed since it was last read (key
    /// rotation without a restart). A file that does not load keeps the previous keys and is
    /// tried again at the next call. Reads a file: call it off the async workers, every few
    /// seconds. Returns whether new keys are in use (always `false` without OAUTHBEARER).
    pub fn reload_if_changed(&self) -> Result<bool, SecurityError> {
        match &self.oauth {
            Some(oauth) => oauth.reload_if_changed(),
            None => Ok(false),
        }
    }
}

/// One step's result.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send `challenge` and wait for the client's next token.
    Continue(Vec<u8>),
    /// Authenticated: send `response` (possibly empty); the connection is `principal`.
    Done { response: Vec<u8>, principal: KafkaPrincipal },
}

/// One connection's authentication in progress.
pub struct SaslExchange {
    mechanism: Mechanism,
    inner: Inner,
}

enum Inner {
    /// PLAIN, run by rsasl.
    Plain(Session<Outcome>),
    /// SCRAM-SHA-256/512 with the credentials of the store.
    Scram(ScramServer, Arc<dyn CredentialStore>),
    /// OAUTHBEARER with the listener's JWKS.
    OAuth(OAuthServer),
}

impl SaslExchange {
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// When the authenticated session must end (KIP-368): after a successful OAUTHBEARER
    /// exchange, the token's `exp`; `None` otherwise (other mechanisms' credentials do not
    /// expire). The broker ends the session at the earlier of this and
    /// `connections.max.reauth.ms`, as Kafka's `SaslServerAuthenticator` does.
    pub fn session_expiry(&self) -> Option<SystemTime> {
        match &self.inner {
            Inner::OAuth(server) => server.expiry(),
            _ => None,
        }
    }

    /// Feeds the client's next token. `Err` carries the message for the client (Kafka's
    /// wording); the connection must then close.
    pub fn step(&mut self, token: &[u8]) -> Result<Step, String> {
        let mechanism = self.mechanism;
        let session = match &mut self.inner {
            Inner::Scram(server, store) => {
                return match server.step(token, &|user| store.scram(mechanism, user))? {
                    ScramStep::Challenge(c) => Ok(Step::Continue(c)),
                    ScramStep::Done { user, server_final } => {
                        Ok(Step::Done { response: server_final, principal: KafkaPrincipal::user(user) })
                    }
                };
            }
            Inner::OAuth(server) => return server.step(token, SystemTime::now()),
            Inner::Plain(session) => session,
        };
        let mut out = Cursor::new(Vec::new());
        let failed = || {
            format!(
                "Authentication failed during authentication due to invalid credentials with SASL mechanism {}",
                self.mechanism.name()
            )
        };
        match session.step(Some(token), &mut out) {
            Ok(State::Running) => Ok(Step::Continue(out.into_inner())),
            Ok(State::Finished(_)) => match session.validation() {
                Some(Ok(user)) => Ok(Step::Done { response: out.into_inner(), principal: KafkaPrincipal::user(user) }),
                Some(Err(message)) => Err(message),
                None => {
                    // The mechanism answered with an error (SCRAM's `e=...`): say which.
                    let answer = out.into_inner();
                    tracing::debug!(mechanism = self.mechanism.name(), answer = %String::from_utf8_lossy(&answer), "SASL exchange refused");
                    Err(failed())
                }
            },
            Err(e) => {
                tracing::debug!(mechanism = self.mechanism.name(), error = %e, "SASL exchange failed");
                Err(if self.mechanism == Mechanism::Plain {
                    "Authentication failed: Invalid username or password".to_string()
                } else {
                    failed()
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(mechanisms: &str) -> SaslSettings {
        let get = |k: &str| match k {
            "sasl.enabled.mechanisms" => Some(mechanisms.to_string()),
            "plain.sasl.jaas.config" => Some(
                r#"org.apache.kafka.common.security.plain.PlainLoginModule required user_alice="alice-secret";"#.into(),
            ),
            _ => None,
        };
        SaslSettings::from_config(&get, Arc::new(NoCredentials)).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn plain_accepts_the_configured_user_only() {
        let s = settings("PLAIN");
        let mut x = s.start("PLAIN").unwrap_or_else(|| panic!("PLAIN enabled"));
        assert_eq!(
            x.step(b"\0alice\0alice-secret"),
            Ok(Step::Done { response: Vec::new(), principal: KafkaPrincipal::user("alice") })
        );
        for bad in [&b"\0alice\0wrong"[..], b"\0bob\0alice-secret", b"garbage", b"bob\0alice\0alice-secret"] {
            let mut x = s.start("PLAIN").unwrap_or_else(|| panic!("PLAIN enabled"));
            assert!(x.step(bad).is_err(), "{bad:?}");
        }
        assert!(s.start("SCRAM-SHA-256").is_none(), "not enabled");
        assert!(s.start("GSSAPI").is_none());
    }

    #[test]
    fn plain_needs_users_and_unknown_mechanisms_are_refused() {
        let get = |k: &str| (k == "sasl.enabled.mechanisms").then(|| "PLAIN".to_string());
        assert!(SaslSettings::from_config(&get, Arc::new(NoCredentials)).is_err());
        let get = |k: &str| (k == "sasl.enabled.mechanisms").then(|| "GSSAPI".to_string());
        assert!(SaslSettings::from_config(&get, Arc::new(NoCredentials)).is_err());
    }

    #[test]
    fn scram_without_a_credential_fails() {
        let s = settings("SCRAM-SHA-256");
        let mut x = s.start("SCRAM-SHA-256").unwrap_or_else(|| panic!("enabled"));
        // An unknown user may get a made-up challenge (no user enumeration), but never in.
        match x.step(b"n,,n=alice,r=abcdefghijklmnop") {
            Err(_) => {}
            Ok(Step::Continue(challenge)) => {
                let text = String::from_utf8_lossy(&challenge).to_string();
                let nonce = text.split(',').find_map(|p| p.strip_prefix("r=")).unwrap_or_default().to_string();
                let last = format!("c=biws,r={nonce},p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
                assert!(x.step(last.as_bytes()).is_err(), "a made-up proof must fail");
            }
            Ok(done) => panic!("authenticated without a credential: {done:?}"),
        }
    }
}
