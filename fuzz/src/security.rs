//! Listener security's inputs from the network and the config: the SCRAM, PLAIN and
//! OAUTHBEARER exchanges (every token a client sends; OAUTHBEARER's JWTs against a JWKS), the TLS handshake (a client's first flights into the broker's
//! rustls configuration), the certificate subject turned into a principal, and the JAAS and
//! mapping-rule parsers. Nothing may panic or allocate without bound.

use std::sync::{Arc, OnceLock};

use strata_security::rustls::{ServerConfig, ServerConnection};
use strata_security::sasl::{Mechanism, NoCredentials, SaslSettings};
use strata_security::scram::{self, ScramServer};
use strata_security::tls::TlsSettings;
use strata_security::{jaas, principal};

/// A test-only key and self-signed certificate (no secret: generated for fuzzing).
const SERVER_PEM: &str = include_str!("../fuzz-server.pem");

fn tls_config() -> Arc<ServerConfig> {
    static CONFIG: OnceLock<Arc<ServerConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            // The inline forms exercise the PEM normalizer as well.
            let get = |k: &str| match k {
                "ssl.keystore.key" | "ssl.keystore.certificate.chain" => Some(SERVER_PEM.replace('\n', " ")),
                _ => None,
            };
            TlsSettings::from_config(&get).and_then(|s| s.build()).unwrap_or_else(|e| panic!("fuzz keystore: {e}"))
        })
        .clone()
}

fn plain_settings() -> &'static SaslSettings {
    static SETTINGS: OnceLock<SaslSettings> = OnceLock::new();
    SETTINGS.get_or_init(|| {
        let get = |k: &str| match k {
            "sasl.enabled.mechanisms" => Some("PLAIN,SCRAM-SHA-256,SCRAM-SHA-512".to_string()),
            "plain.sasl.jaas.config" => Some(
                r#"org.apache.kafka.common.security.plain.PlainLoginModule required user_alice="alice-secret";"#.into(),
            ),
            _ => None,
        };
        SaslSettings::from_config(&get, Arc::new(NoCredentials)).unwrap_or_else(|e| panic!("{e}"))
    })
}

/// OAUTHBEARER against the test JWKS of strata-security (an RSA key; no secret).
fn oauth_settings() -> &'static SaslSettings {
    static SETTINGS: OnceLock<SaslSettings> = OnceLock::new();
    SETTINGS.get_or_init(|| {
        let jwks = concat!(env!("CARGO_MANIFEST_DIR"), "/../crates/security/tests/data/oauth-test-jwks.json");
        let get = move |k: &str| match k {
            "sasl.enabled.mechanisms" => Some("OAUTHBEARER".to_string()),
            "sasl.oauthbearer.jwks.endpoint.url" => Some(format!("file:{jwks}")),
            _ => None,
        };
        SaslSettings::from_config(&get, Arc::new(NoCredentials)).unwrap_or_else(|e| panic!("{e}"))
    })
}

/// Dispatches on the first byte.
pub fn security_input(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else { return };
    match selector % 10 {
        0 | 1 => scram_exchange(if selector % 10 == 0 { Mechanism::ScramSha256 } else { Mechanism::ScramSha512 }, rest),
        2 => {
            // PLAIN through rsasl, and the settings' own dispatch.
            if let Some(mut x) = plain_settings().start("PLAIN") {
                let _ = x.step(rest);
            }
        }
        3 => {
            if let Ok(s) = std::str::from_utf8(rest) {
                let _ = jaas::parse(s);
            }
        }
        4 => {
            let text = String::from_utf8_lossy(rest);
            let (rules, dn) = text.split_once('\n').unwrap_or((&text, "CN=a,O=b"));
            if let Ok(r) = principal::PrincipalMappingRules::parse(rules) {
                let _ = r.apply(dn);
            }
        }
        5 => {
            let _ = principal::subject_rfc2253(rest);
        }
        7..=9 => {
            // OAUTHBEARER: the client's first message (GS2 header, auth=Bearer JWT), then
            // whatever follows a refusal (split at the first 0xFF byte).
            if let Some(mut x) = oauth_settings().start("OAUTHBEARER") {
                let (first, second) = match rest.iter().position(|b| *b == 0xFF) {
                    Some(i) => (&rest[..i], Some(&rest[i + 1..])),
                    None => (rest, None),
                };
                if x.step(first).is_ok() {
                    if let Some(second) = second {
                        let _ = x.step(second);
                    }
                }
            }
        }
        _ => tls_handshake(rest),
    }
}

/// Two client messages (split at the first 0xFF byte) against a known user's credential.
fn scram_exchange(mechanism: Mechanism, data: &[u8]) {
    static CREDS: OnceLock<[strata_security::sasl::ScramCredential; 2]> = OnceLock::new();
    let creds = CREDS.get_or_init(|| {
        let make = |m| scram::from_salted_password(m, &[7; 64], b"salt", 4096).unwrap_or_else(|e| panic!("{e}"));
        [make(Mechanism::ScramSha256), make(Mechanism::ScramSha512)]
    });
    let credential = if mechanism == Mechanism::ScramSha256 { &creds[0] } else { &creds[1] };
    let lookup = |_: &str| Some(credential.clone());
    let (first, second) = match data.iter().position(|b| *b == 0xFF) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let mut server = ScramServer::new(mechanism);
    if server.step(first, &lookup).is_ok() {
        let _ = server.step(second, &lookup);
    }
}

/// Client bytes into a fresh server connection, as much as it takes.
fn tls_handshake(data: &[u8]) {
    let Ok(mut conn) = ServerConnection::new(tls_config()) else { return };
    let mut input = data;
    let mut sink = Vec::new();
    while !input.is_empty() {
        match conn.read_tls(&mut input) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if conn.process_new_packets().is_err() {
            let _ = conn.write_tls(&mut sink);
            break;
        }
        while conn.wants_write() {
            sink.clear();
            if conn.write_tls(&mut sink).is_err() {
                break;
            }
        }
    }
}
