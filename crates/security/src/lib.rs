//! Listener security for Strata: TLS ([`tls`]), SASL ([`sasl`], [`jaas`], OAUTHBEARER in
//! [`oauth`]) and the principal a connection authenticates as ([`principal`]), read from
//! Kafka's config keys.
//!
//! Nothing here does I/O on a socket: the broker's network layer runs the TLS handshake with
//! the [`tls::TlsListener`]'s acceptor and feeds SASL tokens to a [`sasl::SaslExchange`].

pub mod acl;
pub mod client;
pub mod jaas;
pub mod oauth;
pub mod principal;
pub mod sasl;
pub mod scram;
pub mod tls;

pub use principal::KafkaPrincipal;

/// Looks a config key up for one listener (a `listener.name.NAME.KEY` override already
/// preferred over `KEY`).
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Kafka's security protocols (`listener.security.protocol.map`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    /// Parses Kafka's name of a protocol (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Some(Self::Plaintext),
            "SSL" => Some(Self::Ssl),
            "SASL_PLAINTEXT" => Some(Self::SaslPlaintext),
            "SASL_SSL" => Some(Self::SaslSsl),
            _ => None,
        }
    }

    /// Kafka's name, as in `listener.security.protocol.map`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plaintext => "PLAINTEXT",
            Self::Ssl => "SSL",
            Self::SaslPlaintext => "SASL_PLAINTEXT",
            Self::SaslSsl => "SASL_SSL",
        }
    }

    /// Kafka's id of the protocol (BrokerRegistration's `SecurityProtocol` field).
    pub fn id(self) -> i16 {
        match self {
            Self::Plaintext => 0,
            Self::Ssl => 1,
            Self::SaslPlaintext => 2,
            Self::SaslSsl => 3,
        }
    }

    pub fn uses_tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    pub fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

/// The errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// A setting is missing or wrong: the broker does not start (or keeps its old TLS
    /// configuration on a reload).
    #[error("{0}")]
    Config(String),
    /// A TLS failure outside the configuration.
    #[error("TLS: {0}")]
    Tls(String),
}
pub use tokio_rustls;
pub use tokio_rustls::rustls;
