//! TLS for SSL and SASL_SSL listeners: Kafka's `ssl.*` settings turned into a rustls server
//! configuration, reloaded when its files change.
//!
//! Only PEM stores are read (`ssl.keystore.type=PEM`, `ssl.truststore.type=PEM`, Kafka's
//! KIP-651 forms): a file named by `ssl.keystore.location` holding the private key and the
//! certificate chain, or the inline `ssl.keystore.key` and `ssl.keystore.certificate.chain`;
//! `ssl.truststore.location` or the inline `ssl.truststore.certificates`. The key may be
//! encrypted PKCS#8 (`BEGIN ENCRYPTED PRIVATE KEY`) with `ssl.key.password`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};
use tokio_rustls::TlsAcceptor;

use crate::principal::PrincipalMappingRules;
use crate::{Lookup, SecurityError};

/// `ssl.client.auth`: whether a client must present a certificate the truststore trusts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// No certificate is asked for (Kafka's default).
    None,
    /// A certificate is asked for; a client without one connects as `User:ANONYMOUS`, one
    /// with an untrusted certificate is refused.
    Requested,
    /// A client without a trusted certificate is refused.
    Required,
}

impl ClientAuth {
    fn parse(v: &str) -> Result<Self, SecurityError> {
        match v.trim().to_ascii_lowercase().as_str() {
            "none" | "" => Ok(Self::None),
            "requested" => Ok(Self::Requested),
            "required" => Ok(Self::Required),
            other => {
                Err(SecurityError::Config(format!("ssl.client.auth '{other}' is not none, requested or required")))
            }
        }
    }
}

/// Where PEM text comes from.
#[derive(Debug, Clone)]
enum Pem {
    File(PathBuf),
    Inline(String),
}

impl Pem {
    fn read(&self) -> Result<String, SecurityError> {
        match self {
            Pem::File(path) => std::fs::read_to_string(path)
                .map_err(|e| SecurityError::Config(format!("cannot read {}: {e}", path.display()))),
            Pem::Inline(text) => Ok(text.clone()),
        }
    }
}

/// A listener's TLS settings, read from Kafka's keys (already resolved for the listener: a
/// `listener.name.NAME.` key wins over the plain one).
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// The key and chain: one file holding both, or the two inline values.
    key: Pem,
    chain: Pem,
    key_password: Option<String>,
    truststore: Option<Pem>,
    pub client_auth: ClientAuth,
    versions: Vec<&'static SupportedProtocolVersion>,
    pub principal_rules: PrincipalMappingRules,
}

impl TlsSettings {
    /// Reads the settings. Errors name the key at fault.
    pub fn from_config(get: Lookup<'_>) -> Result<Self, SecurityError> {
        let bad = |m: String| SecurityError::Config(m);
        for key in ["ssl.keystore.type", "ssl.truststore.type"] {
            if let Some(t) = get(key) {
                if !t.trim().eq_ignore_ascii_case("PEM") {
                    return Err(bad(format!("{key}={t} is not supported: Strata reads PEM stores (set {key}=PEM)")));
                }
            }
        }
        let (key, chain) = match (get("ssl.keystore.location"), get("ssl.keystore.key"), get("ssl.keystore.certificate.chain")) {
            (Some(path), None, None) => {
                let p = Pem::File(PathBuf::from(path.trim()));
                (p.clone(), p)
            }
            (None, Some(key), Some(chain)) => (Pem::Inline(key), Pem::Inline(chain)),
            (None, None, None) => {
                return Err(bad(
                    "a TLS listener needs ssl.keystore.location (a PEM file with the key and certificate chain) or ssl.keystore.key with ssl.keystore.certificate.chain".into(),
                ))
            }
            _ => {
                return Err(bad(
                    "set either ssl.keystore.location or both ssl.keystore.key and ssl.keystore.certificate.chain".into(),
                ))
            }
        };
        let truststore = match (get("ssl.truststore.location"), get("ssl.truststore.certificates")) {
            (Some(path), None) => Some(Pem::File(PathBuf::from(path.trim()))),
            (None, Some(text)) => Some(Pem::Inline(text)),
            (None, None) => None,
            _ => return Err(bad("set either ssl.truststore.location or ssl.truststore.certificates".into())),
        };
        let client_auth = ClientAuth::parse(&get("ssl.client.auth").unwrap_or_default())?;
        if client_auth != ClientAuth::None && truststore.is_none() {
            return Err(bad("ssl.client.auth requested or required needs a truststore (ssl.truststore.location or ssl.truststore.certificates) to verify client certificates".into()));
        }
        let mut versions = Vec::new();
        for p in get("ssl.enabled.protocols").unwrap_or_else(|| "TLSv1.2,TLSv1.3".into()).split(',').map(str::trim) {
            match p {
                "TLSv1.3" => versions.push(&rustls::version::TLS13),
                "TLSv1.2" => versions.push(&rustls::version::TLS12),
                "" => {}
                other => {
                    return Err(bad(format!(
                        "ssl.enabled.protocols: {other} is not supported (TLSv1.2 and TLSv1.3 are)"
                    )))
                }
            }
        }
        if versions.is_empty() {
            return Err(bad("ssl.enabled.protocols names no protocol".into()));
        }
        let principal_rules = match get("ssl.principal.mapping.rules") {
            Some(v) => PrincipalMappingRules::parse(&v)?,
            None => PrincipalMappingRules::default(),
        };
        Ok(Self {
            key,
            chain,
            key_password: get("ssl.key.password"),
            truststore,
            client_auth,
            versions,
            principal_rules,
        })
    }

    /// The files the configuration is read from (watched for changes).
    pub(crate) fn files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for pem in [Some(&self.key), Some(&self.chain), self.truststore.as_ref()].into_iter().flatten() {
            if let Pem::File(p) = pem {
                if !files.contains(p) {
                    files.push(p.clone());
                }
            }
        }
        files
    }

    /// Reads the stores and builds the rustls server configuration.
    pub fn build(&self) -> Result<Arc<ServerConfig>, SecurityError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = load_key(&self.key.read()?, self.key_password.as_deref())?;
        let chain = load_certs(&self.chain.read()?, "ssl keystore certificate chain")?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&self.versions)
            .map_err(|e| SecurityError::Tls(e.to_string()))?;
        let builder = match (&self.truststore, self.client_auth) {
            (_, ClientAuth::None) | (None, _) => builder.with_no_client_auth(),
            (Some(trust), auth) => {
                let mut roots = RootCertStore::empty();
                for cert in load_certs(&trust.read()?, "ssl truststore")? {
                    roots.add(cert).map_err(|e| SecurityError::Config(format!("truststore certificate: {e}")))?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = if auth == ClientAuth::Requested { verifier.allow_unauthenticated() } else { verifier };
                builder.with_client_cert_verifier(verifier.build().map_err(|e| SecurityError::Tls(e.to_string()))?)
            }
        };
        let config = builder.with_single_cert(chain, key).map_err(|e| {
            SecurityError::Config(format!("the keystore's key and certificate do not make a TLS identity: {e}"))
        })?;
        Ok(Arc::new(config))
    }
}

impl TlsSettings {
    /// The principal of a TLS peer: `User:ANONYMOUS` without a client certificate, else the
    /// first certificate's RFC 2253 subject put through `ssl.principal.mapping.rules`. `Err`
    /// (the reason, for the log) when no rule matches or the certificate cannot be read.
    pub fn principal_of(&self, certs: Option<&[CertificateDer<'_>]>) -> Result<crate::KafkaPrincipal, String> {
        let Some(cert) = certs.and_then(|c| c.first()) else {
            return Ok(crate::KafkaPrincipal::anonymous());
        };
        let dn = crate::principal::subject_rfc2253(cert).map_err(|e| format!("unreadable certificate: {e}"))?;
        match self.principal_rules.apply(&dn) {
            Some(name) => Ok(crate::KafkaPrincipal::user(name)),
            None => Err(format!("no ssl.principal.mapping.rules rule matches its certificate subject {dn}")),
        }
    }

    /// The rustls client configuration a broker connects to other brokers with (Kafka's
    /// inter-broker client): it trusts the listener's truststore (required: Strata has no
    /// default trust store), presents the listener's own keystore certificate when the server
    /// asks for one (mTLS), and checks the server's name unless `verify_hostname` is false
    /// (`ssl.endpoint.identification.algorithm` set empty, as Kafka allows).
    pub fn build_client(&self, verify_hostname: bool) -> Result<Arc<rustls::ClientConfig>, SecurityError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let trust = self.truststore.as_ref().ok_or_else(|| {
            SecurityError::Config(
                "brokers connecting over TLS need a truststore to verify each other: set ssl.truststore.location (PEM) for the inter-broker listener".into(),
            )
        })?;
        let mut roots = RootCertStore::empty();
        for cert in load_certs(&trust.read()?, "ssl truststore")? {
            roots.add(cert).map_err(|e| SecurityError::Config(format!("truststore certificate: {e}")))?;
        }
        let key = load_key(&self.key.read()?, self.key_password.as_deref())?;
        let chain = load_certs(&self.chain.read()?, "ssl keystore certificate chain")?;
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&self.versions)
            .map_err(|e| SecurityError::Tls(e.to_string()))?;
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| SecurityError::Tls(e.to_string()))?;
        let builder = if verify_hostname {
            builder.with_webpki_verifier(webpki)
        } else {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyName(webpki)))
        };
        let config = builder.with_client_auth_cert(chain, key).map_err(|e| {
            SecurityError::Config(format!("the keystore's key and certificate do not make a TLS identity: {e}"))
        })?;
        Ok(Arc::new(config))
    }
}

/// Verifies a server's chain and signatures but not its name
/// (`ssl.endpoint.identification.algorithm=`, empty).
#[derive(Debug)]
struct AnyName(Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Re-wraps every PEM block of `text`: inline values in properties files often lose their
/// line breaks (Kafka accepts them so), which strict PEM parsers refuse.
fn normalize_pem(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after_begin = &rest[start + 11..];
        let Some(label_end) = after_begin.find("-----") else { break };
        let label = &after_begin[..label_end];
        let body_start = &after_begin[label_end + 5..];
        let end_marker = format!("-----END {label}-----");
        let Some(body_end) = body_start.find(&end_marker) else { break };
        let body: String = body_start[..body_end].chars().filter(|c| !c.is_whitespace()).collect();
        out.push_str(&format!("-----BEGIN {label}-----\n"));
        for line in body.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
        out.push_str(&end_marker);
        out.push('\n');
        rest = &body_start[body_end + end_marker.len()..];
    }
    out
}

pub(crate) fn load_certs(text: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, SecurityError> {
    let text = normalize_pem(text);
    let certs = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SecurityError::Config(format!("{what}: bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(SecurityError::Config(format!("{what}: no certificate (-----BEGIN CERTIFICATE-----) found")));
    }
    Ok(certs)
}

fn load_key(text: &str, password: Option<&str>) -> Result<PrivateKeyDer<'static>, SecurityError> {
    let text = normalize_pem(text);
    if let Some(start) = text.find("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        let end_marker = "-----END ENCRYPTED PRIVATE KEY-----";
        let end = text[start..]
            .find(end_marker)
            .map(|e| start + e + end_marker.len())
            .ok_or_else(|| SecurityError::Config("keystore: unterminated encrypted key".into()))?;
        let password = password.ok_or_else(|| {
            SecurityError::Config("the keystore's private key is encrypted: set ssl.key.password".into())
        })?;
        let bad = |e: String| SecurityError::Config(format!("keystore: bad encrypted key: {e}"));
        let (_, der) = pkcs8::der::SecretDocument::from_pem(&text[start..end]).map_err(|e| bad(e.to_string()))?;
        let info = pkcs8::EncryptedPrivateKeyInfo::try_from(der.as_bytes()).map_err(|e| bad(e.to_string()))?;
        let doc = info.decrypt(password.as_bytes()).map_err(|e| {
            SecurityError::Config(format!("cannot decrypt the keystore's private key with ssl.key.password: {e}"))
        })?;
        return Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(doc.as_bytes().to_vec())));
    }
    PrivateKeyDer::from_pem_slice(text.as_bytes()).map_err(|e| {
        SecurityError::Config(format!("keystore: no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}"))
    })
}

/// A listener's TLS: the current server configuration, rebuilt when one of its files changes
/// (certificate rotation without a restart). Connections already open keep the configuration
/// they started with.
pub struct TlsListener {
    settings: TlsSettings,
    current: ArcSwap<ServerConfig>,
    /// Each watched file's modification time and length when last read.
    stamps: Mutex<Vec<(PathBuf, Option<Stamp>)>>,
}

/// A file's modification time and length: a change of either means a new file.
pub(crate) type Stamp = (SystemTime, u64);

pub(crate) fn stamp(path: &std::path::Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl TlsListener {
    /// Reads the stores once; an error here stops the broker at start.
    pub fn new(settings: TlsSettings) -> Result<Arc<Self>, SecurityError> {
        let stamps = settings.files().into_iter().map(|p| (p.clone(), stamp(&p))).collect();
        let config = settings.build()?;
        Ok(Arc::new(Self { settings, current: ArcSwap::new(config), stamps: Mutex::new(stamps) }))
    }

    /// What accepts the next connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.load_full())
    }

    pub fn settings(&self) -> &TlsSettings {
        &self.settings
    }

    /// Rebuilds the configuration if a watched file changed since it was read. A store that
    /// does not load (a half-written file, a key that does not match) keeps the previous
    /// configuration and is tried again at the next call. Reads files: call it off the
    /// async workers. Returns whether a new configuration is in use.
    pub fn reload_if_changed(&self) -> Result<bool, SecurityError> {
        let mut stamps = self.stamps.lock().unwrap_or_else(PoisonError::into_inner);
        let now: Vec<_> = stamps.iter().map(|(p, _)| (p.clone(), stamp(p))).collect();
        if now == *stamps {
            return Ok(false);
        }
        let config = self.settings.build()?;
        self.current.store(config);
        *stamps = now;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_without_line_breaks_is_rewrapped() {
        let text = "-----BEGIN CERTIFICATE----- QUJD REVG -----END CERTIFICATE-----";
        assert_eq!(normalize_pem(text), "-----BEGIN CERTIFICATE-----\nQUJDREVG\n-----END CERTIFICATE-----\n");
    }

    #[test]
    fn settings_name_what_is_missing() {
        let none = |_: &str| None;
        let err = TlsSettings::from_config(&none).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("ssl.keystore.location"), "{err}");
        let jks = |k: &str| match k {
            "ssl.keystore.type" => Some("JKS".to_string()),
            "ssl.keystore.location" => Some("/x.jks".to_string()),
            _ => None,
        };
        let err = TlsSettings::from_config(&jks).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("PEM"), "{err}");
        let no_trust = |k: &str| match k {
            "ssl.keystore.location" => Some("/x.pem".to_string()),
            "ssl.client.auth" => Some("required".to_string()),
            _ => None,
        };
        let err = TlsSettings::from_config(&no_trust).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("truststore"), "{err}");
    }
}
