//! A broker's listeners for clients and brokers: names, security protocols, addresses, and
//! the TLS and SASL each one runs, from Kafka's keys (`listeners`, `advertised.listeners`,
//! `listener.security.protocol.map`, `inter.broker.listener.name`, `listener.name.NAME.*`).
//!
//! The CONTROLLER listeners (`controller.listener.names`) are the quorum's and are not
//! listed here.

use std::collections::BTreeMap;
use std::sync::Arc;

use strata_security::sasl::{CredentialStore, Mechanism, SaslSettings, ScramCredential};
use strata_security::tls::{TlsListener, TlsSettings};
use strata_security::SecurityProtocol;

use crate::config::{host_name, parse_listeners, BrokerConfig};

/// Kafka's default `listener.security.protocol.map`.
pub const DEFAULT_PROTOCOL_MAP: &str = "PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL";

/// Keys a listener may override as `listener.name.NAME.KEY` (besides
/// `listener.name.NAME.MECHANISM.sasl.jaas.config`).
pub const LISTENER_KEYS: &[&str] = &[
    "ssl.keystore.type",
    "ssl.keystore.location",
    "ssl.keystore.key",
    "ssl.keystore.certificate.chain",
    "ssl.key.password",
    "ssl.truststore.type",
    "ssl.truststore.location",
    "ssl.truststore.certificates",
    "ssl.client.auth",
    "ssl.enabled.protocols",
    "ssl.principal.mapping.rules",
    "sasl.enabled.mechanisms",
    "ssl.endpoint.identification.algorithm",
    "connections.max.reauth.ms",
    "connection.failed.authentication.delay.ms",
    "sasl.server.max.receive.size",
];

/// The keys a SASL listener reads only as `listener.name.NAME.KEY`, as Kafka: the JAAS
/// entries of each mechanism and OAUTHBEARER's validator class.
pub const PREFIXED_ONLY_KEYS: &[&str] = &[
    "plain.sasl.jaas.config",
    "scram-sha-256.sasl.jaas.config",
    "scram-sha-512.sasl.jaas.config",
    "oauthbearer.sasl.jaas.config",
    "oauthbearer.sasl.server.callback.handler.class",
];

/// Whether `key` is an acceptable `listener.name.NAME.REST` key; returns `REST`'s base key
/// (whose value rules apply), if it is. OAUTHBEARER's keys may also carry the mechanism
/// prefix (`listener.name.NAME.oauthbearer.sasl.oauthbearer.*`), as in Kafka.
pub fn listener_key_base(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("listener.name.")?;
    let (name, base) = rest.split_once('.')?;
    if name.is_empty() {
        return None;
    }
    let oauth = |k: &str| strata_security::oauth::CONFIG_KEYS.contains(&k);
    match base.strip_prefix("oauthbearer.") {
        Some(k) if oauth(k) => Some(k),
        _ => (LISTENER_KEYS.contains(&base) || PREFIXED_ONLY_KEYS.contains(&base) || oauth(base)).then_some(base),
    }
}

/// One listener for clients or brokers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    /// Upper-case name, as in `listeners`.
    pub name: String,
    pub protocol: SecurityProtocol,
    /// Where to bind: an empty host in `listeners` binds every interface (0.0.0.0).
    pub bind: (String, u16),
    /// What clients are told: the `advertised.listeners` entry of this name, else the bind
    /// address (an empty host is this machine's name).
    pub advertised: (String, u16),
}

/// `listener.security.protocol.map`, name to protocol. A controller listener missing from the
/// map is PLAINTEXT, as in KRaft Kafka.
pub fn protocol_map(config: &BrokerConfig) -> Result<BTreeMap<String, SecurityProtocol>, String> {
    let mut map = BTreeMap::new();
    for entry in config.get("listener.security.protocol.map").unwrap_or(DEFAULT_PROTOCOL_MAP).split(',') {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let (name, protocol) = entry.split_once(':').ok_or_else(|| format!("'{entry}' is not NAME:PROTOCOL"))?;
        let protocol = SecurityProtocol::parse(protocol).ok_or_else(|| {
            format!("'{protocol}' is not a security protocol (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL)")
        })?;
        if map.insert(name.trim().to_ascii_uppercase(), protocol).is_some() {
            return Err(format!("maps {name} twice"));
        }
    }
    Ok(map)
}

/// The names of `controller.listener.names`, upper-cased.
pub fn controller_listener_names(config: &BrokerConfig) -> Vec<String> {
    config
        .get("controller.listener.names")
        .unwrap_or("CONTROLLER")
        .split(',')
        .map(|n| n.trim().to_ascii_uppercase())
        .filter(|n| !n.is_empty())
        .collect()
}

fn is_wildcard(host: &str) -> bool {
    matches!(host, "0.0.0.0" | "::")
}

/// Every listener of `listeners` that is not a controller's, in the order given. Errors say
/// what is wrong, in terms of the keys.
pub fn client_listeners(config: &BrokerConfig) -> Result<Vec<ListenerSpec>, (&'static str, String)> {
    let map = protocol_map(config).map_err(|e| ("listener.security.protocol.map", e))?;
    let controllers = controller_listener_names(config);
    let bound = parse_listeners(config.get("listeners").unwrap_or("127.0.0.1:9092")).map_err(|e| ("listeners", e))?;
    let advertised = match config.get("advertised.listeners") {
        Some(v) => parse_listeners(v).map_err(|e| ("advertised.listeners", e))?,
        None => Vec::new(),
    };
    let mut specs = Vec::new();
    for (name, host, port) in bound.into_iter().filter(|l| !controllers.contains(&l.0)) {
        let protocol = *map.get(&name).ok_or_else(|| {
            (
                "listeners",
                format!(
                    "no security protocol is defined for listener {name} (add it to listener.security.protocol.map)"
                ),
            )
        })?;
        let adv = advertised.iter().find(|a| a.0 == name);
        let (adv_key, adv_host, adv_port) = match adv {
            Some((_, h, p)) => ("advertised.listeners", h.clone(), *p),
            None => ("listeners", host.clone(), port),
        };
        if is_wildcard(&adv_host) {
            return Err((
                adv_key,
                if adv_key == "listeners" {
                    format!("binding {adv_host} needs advertised.listeners (--advertise): clients cannot connect to the nonroutable meta-address {adv_host}; advertise an address they can reach")
                } else {
                    format!("advertised.listeners cannot use the nonroutable meta-address {adv_host}; advertise an address clients can reach")
                },
            ));
        }
        let adv_host = if adv_host.is_empty() { host_name() } else { adv_host };
        let bind_host = if host.is_empty() { "0.0.0.0".to_string() } else { host };
        specs.push(ListenerSpec { name, protocol, bind: (bind_host, port), advertised: (adv_host, adv_port) });
    }
    if let Some(extra) = advertised.iter().find(|a| !controllers.contains(&a.0) && !specs.iter().any(|s| s.name == a.0))
    {
        return Err((
            "advertised.listeners",
            format!("advertises listener {} which listeners does not define", extra.0),
        ));
    }
    Ok(specs)
}

/// The listener brokers reach each other on: `inter.broker.listener.name` (or, Kafka's older
/// form, `security.inter.broker.protocol` naming a listener after its protocol) when set (it
/// must be one of the listeners), else PLAINTEXT if there is one, else the first listener.
pub fn inter_broker_listener(
    config: &BrokerConfig,
    specs: &[ListenerSpec],
) -> Result<ListenerSpec, (&'static str, String)> {
    let key = "inter.broker.listener.name";
    let by_protocol = "security.inter.broker.protocol";
    if config.is_explicit(key) && config.is_explicit(by_protocol) {
        return Err((by_protocol, format!("set {key} or {by_protocol}, not both (as Kafka)")));
    }
    // Kafka's older form: the listener named after the protocol.
    let key = if config.is_explicit(by_protocol) { by_protocol } else { key };
    if config.is_explicit(key) {
        let name = config.get(key).unwrap_or_default().trim().to_ascii_uppercase();
        return specs
            .iter()
            .find(|s| s.name == name)
            .cloned()
            .ok_or_else(|| (key, format!("{name} is not one of the listeners")));
    }
    specs
        .iter()
        .find(|s| s.name == "PLAINTEXT")
        .or_else(|| specs.first())
        .cloned()
        .ok_or_else(|| ("listeners", "no listener for clients (e.g. PLAINTEXT://HOST:PORT)".to_string()))
}

/// The JAAS file Kafka brokers read their SASL entries from: `java.security.auth.login.config`
/// (as a config key, or as the `-Djava.security.auth.login.config=PATH` of `KAFKA_OPTS`, as
/// Kafka's scripts and images pass it), parsed at start. `None` without one.
pub fn jaas_file(config: &BrokerConfig) -> Result<Option<BTreeMap<String, Vec<String>>>, String> {
    let path = config.get("java.security.auth.login.config").map(str::to_string).or_else(|| {
        let opts = std::env::var("KAFKA_OPTS").ok()?;
        opts.split_whitespace().find_map(|o| o.strip_prefix("-Djava.security.auth.login.config=")).map(str::to_string)
    });
    let Some(path) = path else { return Ok(None) };
    let path = path.trim().trim_start_matches("file:");
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("java.security.auth.login.config: cannot read {path}: {e}"))?;
    strata_security::jaas::parse_file(&text).map(Some).map_err(|e| format!("{path}: {e}"))
}

/// A listener's key, with the JAAS file (`jaas`) as Kafka's fallback for a
/// `MECHANISM.sasl.jaas.config` entry the config does not set.
fn listener_key(
    config: &BrokerConfig,
    jaas: Option<&BTreeMap<String, Vec<String>>>,
    listener: &str,
    key: &str,
) -> Option<String> {
    config.listener_get(listener, key).or_else(|| {
        let mechanism = key.strip_suffix(".sasl.jaas.config")?;
        let module = match mechanism {
            "plain" => "PlainLoginModule",
            "scram-sha-256" | "scram-sha-512" => "ScramLoginModule",
            "oauthbearer" => "OAuthBearerLoginModule",
            _ => return None,
        };
        strata_security::jaas::file_entry(jaas?, listener, module).map(str::to_string)
    })
}

/// A listener ready to accept: its spec and, by protocol, its TLS and SASL.
#[derive(Clone)]
pub struct Listener {
    pub spec: ListenerSpec,
    pub tls: Option<Arc<TlsListener>>,
    pub sasl: Option<Arc<SaslSettings>>,
    /// `connections.max.reauth.ms` of this listener (KIP-368); 0: sessions never expire.
    pub max_reauth_ms: i64,
    /// `connection.failed.authentication.delay.ms` (KIP-306): how long a failed login waits
    /// before its answer and the close.
    pub failed_auth_delay: std::time::Duration,
    /// `sasl.server.max.receive.size`: the largest frame a SASL listener reads before the
    /// client has authenticated.
    pub sasl_max_receive: usize,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener").field("spec", &self.spec).field("sasl", &self.sasl).finish_non_exhaustive()
    }
}

impl Listener {
    /// Reads the listener's stores and credentials; an error stops the broker at start.
    pub fn build(config: &BrokerConfig, spec: ListenerSpec, store: Arc<dyn CredentialStore>) -> Result<Self, String> {
        let jaas = jaas_file(config)?;
        let get = |key: &str| listener_key(config, jaas.as_ref(), &spec.name, key);
        let fail = |e: strata_security::SecurityError| format!("listener {}: {e}", spec.name);
        let tls = if spec.protocol.uses_tls() {
            Some(TlsListener::new(TlsSettings::from_config(&get).map_err(fail)?).map_err(fail)?)
        } else {
            None
        };
        let sasl = if spec.protocol.uses_sasl() {
            Some(Arc::new(SaslSettings::from_config(&get, store).map_err(fail)?))
        } else {
            None
        };
        let max_reauth_ms = get("connections.max.reauth.ms").and_then(|v| v.trim().parse().ok()).unwrap_or(0);
        let delay = get("connection.failed.authentication.delay.ms").and_then(|v| v.trim().parse().ok()).unwrap_or(100);
        let sasl_max_receive =
            get("sasl.server.max.receive.size").and_then(|v| v.trim().parse().ok()).unwrap_or(524_288);
        Ok(Self {
            spec,
            tls,
            sasl,
            max_reauth_ms,
            failed_auth_delay: std::time::Duration::from_millis(delay),
            sasl_max_receive,
        })
    }

    /// A PLAINTEXT listener (tests, and the single-node default).
    pub fn plaintext(name: &str, addr: (String, u16)) -> Self {
        let spec = ListenerSpec {
            name: name.to_string(),
            protocol: SecurityProtocol::Plaintext,
            bind: addr.clone(),
            advertised: addr,
        };
        Self {
            spec,
            tls: None,
            sasl: None,
            max_reauth_ms: 0,
            failed_auth_delay: std::time::Duration::ZERO,
            sasl_max_receive: 524_288,
        }
    }
}

/// How this broker connects to the others (replication, transaction markers): the
/// inter-broker listener's TLS and, for SASL, `sasl.mechanism.inter.broker.protocol` with the
/// username and password of that listener's JAAS entry. `None` for a PLAINTEXT listener.
pub fn inter_broker_client_security(
    config: &BrokerConfig,
    spec: &ListenerSpec,
) -> Result<Option<Arc<strata_security::client::ClientSecurity>>, String> {
    let jaas = jaas_file(config)?;
    let get = |key: &str| listener_key(config, jaas.as_ref(), &spec.name, key);
    let mechanism = config.get("sasl.mechanism.inter.broker.protocol").unwrap_or("GSSAPI");
    strata_security::client::ClientSecurity::from_config(&spec.name, spec.protocol, &get, mechanism)
        .map(|s| s.map(Arc::new))
        .map_err(|e| format!("inter-broker listener {}: {e}", spec.name))
}

/// SCRAM credentials from the metadata image (what AlterUserScramCredentials and `strata
/// format --add-scram` wrote), read at each authentication: a new or changed user logs in at
/// once. Empty until [`attach`](Self::attach)ed to the replica manager.
#[derive(Default)]
pub struct ImageCredentials {
    replicas: std::sync::OnceLock<Arc<crate::ReplicaManager>>,
}

impl ImageCredentials {
    pub fn attach(&self, replicas: Arc<crate::ReplicaManager>) {
        let _ = self.replicas.set(replicas);
    }
}

impl CredentialStore for ImageCredentials {
    fn scram(&self, mechanism: Mechanism, user: &str) -> Option<ScramCredential> {
        let wanted = mechanism.scram_type()?;
        let image = self.replicas.get()?.image();
        let c = image.scram_credentials.get(user)?.iter().find(|c| c.mechanism == wanted)?.clone();
        Some(ScramCredential {
            salt: c.salt,
            stored_key: c.stored_key,
            server_key: c.server_key,
            iterations: u32::try_from(c.iterations).ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> Result<BrokerConfig, crate::config::ConfigError> {
        BrokerConfig::from_map(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn named_listeners_get_their_protocols_and_addresses() {
        let c = cfg(&[
            ("listeners", "PLAINTEXT://127.0.0.1:1,SSL://:2,INTERNAL://127.0.0.2:3,CONTROLLER://127.0.0.1:4"),
            ("advertised.listeners", "SSL://broker.example:2,INTERNAL://127.0.0.2:3"),
            ("listener.security.protocol.map", "PLAINTEXT:PLAINTEXT,SSL:SSL,INTERNAL:SASL_PLAINTEXT"),
            ("inter.broker.listener.name", "internal"),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let specs = client_listeners(&c).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(specs.len(), 3, "the controller listener is not a client listener");
        assert_eq!(specs[1].protocol, SecurityProtocol::Ssl);
        assert_eq!(specs[1].bind, ("0.0.0.0".to_string(), 2));
        assert_eq!(specs[1].advertised, ("broker.example".to_string(), 2));
        assert_eq!(specs[0].advertised, ("127.0.0.1".to_string(), 1), "not in advertised.listeners: its bind address");
        assert_eq!(inter_broker_listener(&c, &specs).map(|s| s.name), Ok("INTERNAL".to_string()));
    }

    #[test]
    fn listener_mistakes_are_refused_naming_the_key() {
        for (pairs, key, says) in [
            (
                vec![("listeners", "INTERNAL://h:1")],
                "listeners",
                "no security protocol is defined for listener INTERNAL",
            ),
            (
                vec![("listeners", "PLAINTEXT://h:1"), ("inter.broker.listener.name", "SSL")],
                "inter.broker.listener.name",
                "not one of the listeners",
            ),
            (
                vec![("listeners", "PLAINTEXT://h:1"), ("advertised.listeners", "SSL://h:2")],
                "advertised.listeners",
                "does not define",
            ),
            (
                vec![("listener.security.protocol.map", "A:TLS")],
                "listener.security.protocol.map",
                "not a security protocol",
            ),
        ] {
            let e = cfg(&pairs).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains(&format!("'{key}'")) && e.contains(says), "{pairs:?}: {e}");
        }
    }

    #[test]
    fn listener_prefixed_keys() {
        assert_eq!(listener_key_base("listener.name.sasl_ssl.plain.sasl.jaas.config"), Some("plain.sasl.jaas.config"));
        assert_eq!(listener_key_base("listener.name.ssl.ssl.client.auth"), Some("ssl.client.auth"));
        assert_eq!(listener_key_base("listener.name.ssl.log.retention.ms"), None);
        let c = cfg(&[("ssl.client.auth", "none"), ("listener.name.ssl.ssl.client.auth", "required")])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.listener_get("SSL", "ssl.client.auth").as_deref(), Some("required"));
        assert_eq!(c.listener_get("OTHER", "ssl.client.auth").as_deref(), Some("none"));
        let e =
            cfg(&[("listener.name.ssl.ssl.client.auth", "always")]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("listener.name.ssl.ssl.client.auth"), "{e}");
        assert!(cfg(&[("listener.name.ssl.num.partitions", "3")]).is_err());
        // OAUTHBEARER's keys: bare, per listener, and per listener and mechanism (Kafka's form);
        // its validator class only per listener and mechanism.
        assert_eq!(
            listener_key_base("listener.name.oauth.oauthbearer.sasl.oauthbearer.expected.issuer"),
            Some("sasl.oauthbearer.expected.issuer")
        );
        assert!(cfg(&[("listener.name.oauth.oauthbearer.sasl.oauthbearer.clock.skew.seconds", "x")]).is_err());
        assert!(cfg(&[
            ("sasl.oauthbearer.expected.audience", "a,b"),
            ("listener.name.oauth.sasl.oauthbearer.clock.skew.seconds", "5"),
            (
                "listener.name.oauth.oauthbearer.sasl.server.callback.handler.class",
                "org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler"
            ),
        ])
        .is_ok());
        assert!(cfg(&[("oauthbearer.sasl.server.callback.handler.class", "x")]).is_err());
    }
}
