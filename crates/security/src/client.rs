//! The client side of listener security, for the connections a broker opens to other brokers
//! on the inter-broker listener (replication, transaction markers and verifications), as
//! Kafka's inter-broker client: the listener's security protocol, its `ssl.*` keys (the
//! truststore to verify the other broker, the keystore as the client certificate), and for SASL
//! `sasl.mechanism.inter.broker.protocol` with the `username` and `password` options of the
//! listener's JAAS entry for that mechanism
//! (`listener.name.NAME.MECHANISM.sasl.jaas.config`).
//!
//! No I/O here: the connection runs the TLS handshake with [`ClientSecurity::tls`] and feeds the
//! server's SASL challenges to a [`ClientLogin`].

use std::io::Cursor;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;

use rsasl::prelude::{Mechname, SASLClient, SASLConfig, Session, State};

use crate::sasl::Mechanism;
use crate::tls::{stamp, Stamp, TlsSettings};
use crate::{jaas, Lookup, SecurityError, SecurityProtocol};

/// How a broker authenticates to the other brokers.
#[derive(Clone)]
pub struct ClientSecurity {
    /// TLS, when the listener dialled is SSL or SASL_SSL.
    tls: Option<Arc<ClientTls>>,
    sasl: Option<(Mechanism, Arc<SASLConfig>)>,
}

/// The client side's TLS configuration, rebuilt when its keystore or truststore files change
/// (certificate rotation without a restart, as the listeners do).
struct ClientTls {
    settings: TlsSettings,
    verify_hostname: bool,
    current: ArcSwap<rustls::ClientConfig>,
    stamps: Mutex<Vec<(PathBuf, Option<Stamp>)>>,
}

impl ClientTls {
    fn new(settings: TlsSettings, verify_hostname: bool) -> Result<Self, SecurityError> {
        let stamps = settings.files().into_iter().map(|p| (p.clone(), stamp(&p))).collect();
        let current = ArcSwap::new(settings.build_client(verify_hostname)?);
        Ok(Self { settings, verify_hostname, current, stamps: Mutex::new(stamps) })
    }
}

impl std::fmt::Debug for ClientSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSecurity")
            .field("tls", &self.tls.is_some())
            .field("sasl", &self.sasl.as_ref().map(|(m, _)| m.name()))
            .finish()
    }
}

impl ClientSecurity {
    /// Reads the client settings of a listener speaking `protocol`; `None` for PLAINTEXT.
    /// `get` resolves the listener's keys (`listener.name.NAME.KEY` first); `mechanism` is
    /// `sasl.mechanism.inter.broker.protocol`; `listener` the listener's name, for the
    /// messages. Errors name the key at fault.
    pub fn from_config(
        listener: &str,
        protocol: SecurityProtocol,
        get: Lookup<'_>,
        mechanism: &str,
    ) -> Result<Option<Self>, SecurityError> {
        let prefix = format!("listener.name.{}.", listener.to_ascii_lowercase());
        let tls = if protocol.uses_tls() {
            let verify = get("ssl.endpoint.identification.algorithm").is_none_or(|v| !v.trim().is_empty());
            Some(Arc::new(ClientTls::new(TlsSettings::from_config(get)?, verify)?))
        } else {
            None
        };
        let sasl = if protocol.uses_sasl() {
            let m = Mechanism::parse(&mechanism.trim().to_ascii_uppercase())
                .filter(|m| matches!(m, Mechanism::Plain | Mechanism::ScramSha256 | Mechanism::ScramSha512))
                .ok_or_else(|| {
                    SecurityError::Config(format!(
                        "sasl.mechanism.inter.broker.protocol={mechanism}: brokers authenticate to each other with PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (Kafka's default GSSAPI is not served)"
                    ))
                })?;
            let key = format!("{}.sasl.jaas.config", m.name().to_ascii_lowercase());
            let entry = get(&key).ok_or_else(|| {
                SecurityError::Config(format!(
                    "the inter-broker listener uses SASL {}: its JAAS entry ({prefix}{key}) needs username=\"...\" password=\"...\" for the brokers' own logins",
                    m.name()
                ))
            })?;
            let entry = jaas::parse(&entry)?;
            let (Some(user), Some(password)) = (entry.options.get("username"), entry.options.get("password")) else {
                return Err(SecurityError::Config(format!(
                    "{prefix}{key}: the brokers' own login needs the username and password options"
                )));
            };
            let config = SASLConfig::with_credentials(None, user.clone(), password.clone())
                .map_err(|e| SecurityError::Config(format!("SASL client: {e}")))?;
            Some((m, config))
        } else {
            None
        };
        Ok(Some(Self { tls, sasl }).filter(|s| s.tls.is_some() || s.sasl.is_some()))
    }

    /// TLS only, no SASL login (the CONTROLLER listener's client side), from the listener's
    /// settings; `verify_hostname` as `ssl.endpoint.identification.algorithm`.
    pub fn tls_only(settings: TlsSettings, verify_hostname: bool) -> Result<Self, SecurityError> {
        Ok(Self { tls: Some(Arc::new(ClientTls::new(settings, verify_hostname)?)), sasl: None })
    }

    /// The TLS configuration the next connection uses, if the listener dialled is TLS.
    pub fn tls_config(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.tls.as_ref().map(|t| t.current.load_full())
    }

    /// Rebuilds the TLS configuration if its keystore or truststore file changed since it was
    /// read; a store that does not load keeps the previous one (the error says why). Reads
    /// files: call it off the async workers. Returns whether a new configuration is in use.
    pub fn reload_if_changed(&self) -> Result<bool, SecurityError> {
        let Some(tls) = &self.tls else { return Ok(false) };
        let mut stamps = tls.stamps.lock().unwrap_or_else(PoisonError::into_inner);
        let now: Vec<_> = stamps.iter().map(|(p, _)| (p.clone(), stamp(p))).collect();
        if now == *stamps {
            return Ok(false);
        }
        tls.current.store(tls.settings.build_client(tls.verify_hostname)?);
        *stamps = now;
        Ok(true)
    }

    /// The SASL mechanism to log in with, if any.
    pub fn mechanism(&self) -> Option<Mechanism> {
        self.sasl.as_ref().map(|(m, _)| *m)
    }

    /// Starts a login (after SaslHandshake accepted [`mechanism`](Self::mechanism)).
    pub fn login(&self) -> Option<Result<ClientLogin, String>> {
        let (m, config) = self.sasl.as_ref()?;
        let start = || {
            let name = Mechname::parse(m.name().as_bytes()).map_err(|e| e.to_string())?;
            SASLClient::new(config.clone()).start_suggested(&[name]).map_err(|e| e.to_string())
        };
        Some(start().map(|session| ClientLogin { session, finished: false }))
    }
}

/// One login in progress (rsasl's PLAIN and SCRAM clients).
pub struct ClientLogin {
    session: Session,
    finished: bool,
}

/// A client step's result.
#[derive(Debug, PartialEq, Eq)]
pub enum LoginStep {
    /// Send this token and pass the server's answer to the next step.
    Send(Vec<u8>),
    /// Send this last token; the login is over once the server accepts it.
    SendLast(Vec<u8>),
    /// Nothing more to send: the server's last answer was verified.
    Done,
}

impl ClientLogin {
    /// The next token, from the server's last answer (`None` at first).
    pub fn step(&mut self, challenge: Option<&[u8]>) -> Result<LoginStep, String> {
        if self.finished {
            return Ok(LoginStep::Done);
        }
        let mut out = Cursor::new(Vec::new());
        let state = self.session.step(challenge, &mut out).map_err(|e| e.to_string())?;
        let token = out.into_inner();
        Ok(match state {
            State::Running => LoginStep::Send(token),
            State::Finished(_) => {
                self.finished = true;
                if token.is_empty() && challenge.is_some() {
                    LoginStep::Done
                } else {
                    LoginStep::SendLast(token)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sasl::{CredentialStore, SaslSettings, ScramCredential, Step};

    struct One(ScramCredential);

    impl CredentialStore for One {
        fn scram(&self, _: Mechanism, user: &str) -> Option<ScramCredential> {
            (user == "broker").then(|| self.0.clone())
        }
    }

    /// The client against the server side of this crate, as two brokers would run them.
    fn login(mechanism: &str, password: &str) -> Result<(), String> {
        let jaas = format!(
            r#"org.apache.kafka.common.security.scram.ScramLoginModule required username="broker" password="{password}" user_broker="broker-secret";"#
        );
        let client_get = |k: &str| k.ends_with("sasl.jaas.config").then(|| jaas.clone());
        let security = ClientSecurity::from_config("internal", SecurityProtocol::SaslPlaintext, &client_get, mechanism)
            .map_err(|e| e.to_string())?
            .ok_or("no security")?;
        let m = security.mechanism().ok_or("no mechanism")?;
        let stored =
            crate::scram::from_password(Mechanism::ScramSha512, "broker-secret", 4096).map_err(|e| e.to_string())?;
        let server_jaas =
            r#"org.apache.kafka.common.security.plain.PlainLoginModule required user_broker="broker-secret";"#;
        let server_get = |k: &str| match k {
            "sasl.enabled.mechanisms" => Some("PLAIN,SCRAM-SHA-512".to_string()),
            "plain.sasl.jaas.config" => Some(server_jaas.to_string()),
            _ => None,
        };
        let settings = SaslSettings::from_config(&server_get, Arc::new(One(stored))).map_err(|e| e.to_string())?;
        let mut server = settings.start(m.name()).ok_or("not enabled")?;
        let mut client = security.login().ok_or("no login")??;
        let mut challenge: Option<Vec<u8>> = None;
        loop {
            match client.step(challenge.as_deref())? {
                LoginStep::Done => return Ok(()),
                LoginStep::Send(token) | LoginStep::SendLast(token) => match server.step(&token)? {
                    Step::Continue(c) => challenge = Some(c),
                    Step::Done { response, principal } => {
                        assert_eq!(principal.name, "broker");
                        // The client checks the server's last message (SCRAM's signature).
                        match client.step(Some(&response))? {
                            LoginStep::Done => return Ok(()),
                            other => return Err(format!("client wants more after the server finished: {other:?}")),
                        }
                    }
                },
            }
        }
    }

    #[test]
    fn plain_and_scram_logins_against_the_server() {
        assert_eq!(login("PLAIN", "broker-secret"), Ok(()));
        assert_eq!(login("SCRAM-SHA-512", "broker-secret"), Ok(()));
        assert!(login("PLAIN", "wrong").is_err());
        assert!(login("SCRAM-SHA-512", "wrong").is_err());
    }

    /// A client's TLS follows its files: a change is picked up, a broken file keeps the
    /// configuration in use.
    #[test]
    fn tls_files_are_reloaded_when_they_change() {
        let pem = include_str!("../../../fuzz/fuzz-server.pem");
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (keystore, truststore) = (dir.path().join("keystore.pem"), dir.path().join("ca.pem"));
        let cert = &pem[pem.find("-----BEGIN CERTIFICATE-----").unwrap_or(0)..];
        std::fs::write(&keystore, pem).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&truststore, cert).unwrap_or_else(|e| panic!("{e}"));
        let (k, t) = (keystore.display().to_string(), truststore.display().to_string());
        let get = |key: &str| match key {
            "ssl.keystore.location" => Some(k.clone()),
            "ssl.truststore.location" => Some(t.clone()),
            _ => None,
        };
        let settings = TlsSettings::from_config(&get).unwrap_or_else(|e| panic!("{e}"));
        let security = ClientSecurity::tls_only(settings, true).unwrap_or_else(|e| panic!("{e}"));
        let first = security.tls_config().unwrap_or_else(|| panic!("no TLS"));
        assert_eq!(security.reload_if_changed().ok(), Some(false), "nothing changed");
        std::fs::write(&truststore, format!("{cert}\n")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(security.reload_if_changed().ok(), Some(true), "a changed truststore is read");
        let second = security.tls_config().unwrap_or_else(|| panic!("no TLS"));
        assert!(!Arc::ptr_eq(&first, &second), "new connections use the new configuration");
        std::fs::write(&truststore, "not a certificate").unwrap_or_else(|e| panic!("{e}"));
        assert!(security.reload_if_changed().is_err(), "a broken file is reported");
        let kept = security.tls_config().unwrap_or_else(|| panic!("no TLS"));
        assert!(Arc::ptr_eq(&second, &kept), "a broken file keeps the configuration in use");
    }

    #[test]
    fn settings_say_what_is_missing() {
        let none = |_: &str| None;
        let err = |p, m| {
            ClientSecurity::from_config("internal", p, &none, m).err().map(|e| e.to_string()).unwrap_or_default()
        };
        assert!(err(SecurityProtocol::SaslPlaintext, "GSSAPI").contains("sasl.mechanism.inter.broker.protocol"));
        assert!(err(SecurityProtocol::SaslPlaintext, "PLAIN").contains("listener.name.internal.plain.sasl.jaas.config"));
        assert!(err(SecurityProtocol::Ssl, "PLAIN").contains("ssl.keystore.location"));
        assert!(matches!(
            ClientSecurity::from_config("internal", SecurityProtocol::Plaintext, &none, "GSSAPI"),
            Ok(None)
        ));
    }
}
