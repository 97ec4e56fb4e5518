//! SASL/OAUTHBEARER with JWT access tokens checked against a JWKS: the broker side of Kafka's
//! KIP-768 (`OAuthBearerValidatorCallbackHandler` with `ValidatorAccessTokenValidator`).
//!
//! # Layout
//! - `jwks`: the JWKS (a file or an HTTP(S) URL), its usable keys in memory, re-read when due.
//! - `token`: one token's signature and claims checked (no I/O, `now` given).
//! - `exchange`: the client's first message parsed, and the exchange's states.
//!
//! # Configuration
//! Each key is read first with the mechanism prefix, then without (`oauthbearer.KEY`, then
//! `KEY`); the broker's lookup already prefers `listener.name.NAME.` over the bare key.
//!
//! | key | default | |
//! |---|---|---|
//! | `sasl.oauthbearer.jwks.endpoint.url` | required | `https://...` or `http://...`, the provider's JWKS endpoint (fetched with `ureq`); or `file:/abs/path` or `file:///abs/path`, a JWKS JSON file (the path is used undecoded, as Kafka's `getRawPath`) |
//! | `sasl.oauthbearer.jwks.endpoint.refresh.ms` | 3600000 | the JWKS is re-read at least this often; a file also whenever its modification time or length changes. Must be positive for an HTTP URL, as Kafka's `RefreshingHttpsJwks` |
//! | `sasl.oauthbearer.jwks.endpoint.retry.backoff.ms` | 100 | HTTP: the first wait after a failed fetch, doubled at each failure |
//! | `sasl.oauthbearer.jwks.endpoint.retry.backoff.max.ms` | 10000 | HTTP: retries stop once their waits add up past this; the next try is the next refresh |
//! | `sasl.oauthbearer.expected.audience` | none | comma-separated; `aud` (a string or an array) must name one of them |
//! | `sasl.oauthbearer.expected.issuer` | none | `iss` must equal it |
//! | `sasl.oauthbearer.sub.claim.name` | `sub` | the claim naming the principal (`User:NAME`): a non-blank string, trimmed |
//! | `sasl.oauthbearer.scope.claim.name` | `scope` | the claim of scopes |
//! | `sasl.oauthbearer.clock.skew.seconds` | 30 | tolerance applied to `exp`, `nbf` and `iat` |
//! | `sasl.jaas.config` | optional | if given, `org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;` |
//! | `sasl.server.callback.handler.class` | optional | if given, Kafka's validator: `org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler` (or the older `...oauthbearer.secured.` name) |
//!
//! # Fetching over HTTP(S) (Kafka's `RefreshingHttpsJwks`)
//! - At start the JWKS is fetched once; a failure stops the broker, as Kafka's `init()` does.
//! - Then it is fetched every refresh interval, off the async workers (the listener's
//!   file watcher, every 5 s). A failed fetch keeps the keys in use and is retried with the
//!   back-off above, at the watcher's next tick after each wait (so waits under 5 s round up
//!   to it); a zero back-off means no retry before the next refresh, as Kafka.
//! - A token whose `kid` the set lacks is refused, and asks for a fetch at the watcher's next
//!   tick (the provider may have rotated keys): at most once a minute per `kid`, for 16 `kid`s,
//!   and never for a `kid` over 1000 characters, as Kafka.
//! - Answers over 1 MiB, non-2xx statuses and a fetch over 10 s are failures. Redirects are
//!   followed; from an `https` URL only to `https`.
//! - TLS: as Kafka's `JaasOptionsUtils`, the trust comes from the OAUTHBEARER `sasl.jaas.config`
//!   options `ssl.truststore.location` or `ssl.truststore.certificates` (`ssl.truststore.type=PEM`);
//!   without them, Mozilla's root certificates (`webpki-roots`; Kafka uses the JVM's). The host
//!   name is always checked: `ssl.endpoint.identification.algorithm` may only be `https`, and
//!   client certificates (`ssl.keystore.*`) towards the provider are refused at start.
//!
//! Kafka's broker falls back to its *unsecured* validator (unsigned tokens) when no callback
//! handler is configured; Strata has no such validator: without a JWKS URL, OAUTHBEARER does
//! not start.
//!
//! # What a token must pass
//! As jose4j under Kafka's `ValidatorAccessTokenValidator` and `ClaimValidationUtils`:
//! - a JWS in compact form (three sections) whose header has no `crit`; `alg` one of RS256/384/512,
//!   PS256/384/512, ES256, ES384 or EdDSA. `none` and HMAC algorithms are refused.
//! - the key: the JWKS key of the header's `kid` (which must suit `alg`, and the JWK's own `alg`
//!   if it names one); a token without `kid` only when the JWKS holds a single usable key
//!   (jose4j would take the first key that suits; Strata does not guess). Keys with a `use`
//!   other than `sig`, symmetric keys and unknown types are skipped when the JWKS is read.
//! - the signature, verified by the `jsonwebtoken` crate (ring).
//! - `exp` required and not past (`now < exp + skew`); `iat` required (jose4j's
//!   `setRequireIssuedAt` in Kafka) and not in the future beyond the skew, and not after `exp`;
//!   `nbf`, when present, not in the future beyond the skew. Negative times are refused.
//! - `iss` and `aud` as configured. As jose4j does for Kafka, a token that carries `aud` is
//!   refused when no expected audience is configured.
//! - the sub claim: a non-blank string.
//! - the scope claim: absent, a space-separated string, or an array of strings; each scope
//!   non-blank and named once. Anything else (a number, an object) refuses the token. Kafka
//!   keeps a string as one scope and ignores other types; Strata splits the string
//!   (RFC 6749 3.3) and refuses the rest as malformed.
//!
//! Scopes grant nothing: Kafka's secured validator has no required-scope setting (only its
//! unsecured validator has the JAAS option `unsecuredValidatorRequiredScope`, for unsigned
//! test tokens), so Strata offers none either; authorization is by ACLs on the principal.
//!
//! # The exchange
//! See the `exchange` module. A refused token is answered `{"status":"invalid_token"}`;
//! the client's `\x01` then fails the exchange with that same text as the error message, as
//! Kafka does. The reason is logged (info), never sent. After success the session ends at the
//! token's `exp` ([`crate::sasl::SaslExchange::session_expiry`], KIP-368).

mod exchange;
mod jwks;
#[cfg(test)]
mod tests;
mod token;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

pub(crate) use exchange::OAuthServer;
use jwks::{Backoff, Jwks, Source};
use token::{ClaimRules, ValidToken};

use crate::{jaas, Lookup, SecurityError};

/// The `sasl.oauthbearer.*` keys this module reads (each also as `oauthbearer.KEY`).
pub const CONFIG_KEYS: &[&str] = &[
    "sasl.oauthbearer.jwks.endpoint.url",
    "sasl.oauthbearer.jwks.endpoint.refresh.ms",
    "sasl.oauthbearer.jwks.endpoint.retry.backoff.ms",
    "sasl.oauthbearer.jwks.endpoint.retry.backoff.max.ms",
    "sasl.oauthbearer.expected.audience",
    "sasl.oauthbearer.expected.issuer",
    "sasl.oauthbearer.sub.claim.name",
    "sasl.oauthbearer.scope.claim.name",
    "sasl.oauthbearer.clock.skew.seconds",
];

/// The login module a broker's OAUTHBEARER `sasl.jaas.config` names.
const LOGIN_MODULE: &str = "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule";

/// Kafka's JWT validating callback handlers (KIP-768, and its name before Kafka 3.4).
const VALIDATOR_HANDLERS: [&str; 2] = [
    "org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler",
    "org.apache.kafka.common.security.oauthbearer.secured.OAuthBearerValidatorCallbackHandler",
];

/// A listener's OAUTHBEARER token validation: the claim rules and the JWKS in memory.
#[derive(Debug)]
pub(crate) struct OAuthValidator {
    rules: ClaimRules,
    jwks: Jwks,
}

impl OAuthValidator {
    /// Reads the settings and the JWKS file; any error stops the broker at start.
    pub(crate) fn from_config(get: Lookup<'_>) -> Result<Self, SecurityError> {
        let lookup = |key: &str| get(&format!("oauthbearer.{key}")).or_else(|| get(key));
        let bad = |m: String| SecurityError::Config(m);
        if let Some(class) = lookup("sasl.server.callback.handler.class") {
            let class = class.trim();
            if !VALIDATOR_HANDLERS.contains(&class) {
                return Err(bad(format!(
                    "sasl.server.callback.handler.class {class} is not supported for OAUTHBEARER: Strata validates JWTs against a JWKS as {} does (set it, or leave it unset)",
                    VALIDATOR_HANDLERS[0]
                )));
            }
        }
        let mut jaas_options = BTreeMap::new();
        if let Some(value) = lookup("sasl.jaas.config") {
            let entry = jaas::parse(&value)?;
            if entry.login_module != LOGIN_MODULE {
                return Err(bad(format!(
                    "oauthbearer.sasl.jaas.config names {}; OAUTHBEARER needs {LOGIN_MODULE}",
                    entry.login_module
                )));
            }
            if entry.options.keys().any(|k| k.starts_with("unsecuredValidator")) {
                tracing::warn!("oauthbearer.sasl.jaas.config: unsecuredValidator* options are for Kafka's unsecured validator; Strata ignores them");
            }
            jaas_options = entry.options;
        }
        let url = lookup("sasl.oauthbearer.jwks.endpoint.url").ok_or_else(|| {
            bad("OAUTHBEARER is enabled but sasl.oauthbearer.jwks.endpoint.url is not set: Strata validates tokens only against a JWKS (it has no validator for unsigned tokens, Kafka's default); set listener.name.NAME.oauthbearer.sasl.oauthbearer.jwks.endpoint.url=file:/path/to/jwks.json".into())
        })?;
        let source = jwks_source(url.trim(), &jaas_options)?;
        let refresh_ms = number(&lookup, "sasl.oauthbearer.jwks.endpoint.refresh.ms", 3_600_000)?;
        if refresh_ms == 0 && matches!(source, Source::Http { .. }) {
            return Err(bad("sasl.oauthbearer.jwks.endpoint.refresh.ms must be positive for an HTTP JWKS".into()));
        }
        let backoff = Backoff {
            initial: Duration::from_millis(number(&lookup, "sasl.oauthbearer.jwks.endpoint.retry.backoff.ms", 100)?),
            max: Duration::from_millis(number(&lookup, "sasl.oauthbearer.jwks.endpoint.retry.backoff.max.ms", 10_000)?),
        };
        if backoff.max < backoff.initial {
            return Err(bad(
                "sasl.oauthbearer.jwks.endpoint.retry.backoff.max.ms is below sasl.oauthbearer.jwks.endpoint.retry.backoff.ms".into(),
            ));
        }
        let clock_skew = number(&lookup, "sasl.oauthbearer.clock.skew.seconds", 30)?;
        let claim_name = |key: &str, default: &str| -> Result<String, SecurityError> {
            let name = lookup(key).unwrap_or_else(|| default.into()).trim().to_string();
            if name.is_empty() {
                return Err(bad(format!("{key} is empty")));
            }
            Ok(name)
        };
        let rules = ClaimRules {
            expected_audience: lookup("sasl.oauthbearer.expected.audience")
                .map(|v| v.split(',').map(str::trim).filter(|a| !a.is_empty()).map(str::to_string).collect())
                .unwrap_or_default(),
            expected_issuer: lookup("sasl.oauthbearer.expected.issuer")
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty()),
            sub_claim: claim_name("sasl.oauthbearer.sub.claim.name", "sub")?,
            scope_claim: claim_name("sasl.oauthbearer.scope.claim.name", "scope")?,
            clock_skew,
        };
        let jwks = Jwks::load(source, Duration::from_millis(refresh_ms), backoff)?;
        Ok(Self { rules, jwks })
    }

    /// Checks a bearer token at `now` against the keys in memory (no I/O: safe on an async
    /// worker).
    /// A token whose `kid` the key set lacks asks for an early fetch of an HTTP JWKS.
    pub(crate) fn validate(&self, token: &str, now: SystemTime) -> Result<ValidToken, String> {
        let keys = self.jwks.keys();
        let checked = token::validate(token, &keys, &self.rules, now);
        if checked.is_err() {
            if let Ok((_, Some(kid))) = token::header(token) {
                if !keys.has_kid(&kid) && self.jwks.missing_kid(&kid, Instant::now()) {
                    tracing::info!(kid = %kid, "OAUTHBEARER: a token names a key the JWKS lacks; fetching the JWKS again");
                }
            }
        }
        checked
    }

    /// Re-reads the JWKS if it is due (see
    /// [`crate::sasl::SaslSettings::reload_if_changed`]).
    pub(crate) fn reload_if_changed(&self) -> Result<bool, SecurityError> {
        self.jwks.reload_if_changed(Instant::now())
    }

    #[cfg(test)]
    pub(crate) fn reload_at(&self, now: Instant) -> Result<bool, SecurityError> {
        self.jwks.reload_if_changed(now)
    }
}

/// A non-negative integer setting.
fn number(lookup: &dyn Fn(&str) -> Option<String>, key: &str, default: u64) -> Result<u64, SecurityError> {
    match lookup(key) {
        None => Ok(default),
        Some(v) => {
            v.trim().parse().map_err(|_| SecurityError::Config(format!("{key}={v} is not a non-negative integer")))
        }
    }
}

/// Where `sasl.oauthbearer.jwks.endpoint.url` points: a file, or an HTTP(S) endpoint with the
/// TLS trust of the OAUTHBEARER JAAS options (`options`).
fn jwks_source(url: &str, options: &BTreeMap<String, String>) -> Result<Source, SecurityError> {
    let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase()).unwrap_or_default();
    match scheme.as_str() {
        "file" => Ok(Source::File(jwks_path(url)?)),
        "http" | "https" => Ok(Source::Http { url: url.to_string(), agent: http_agent(scheme == "https", options)? }),
        _ => Err(SecurityError::Config(format!(
            "sasl.oauthbearer.jwks.endpoint.url={url} is neither an https:, http: nor file: URL"
        ))),
    }
}

/// The HTTP client of a JWKS endpoint: Kafka takes its TLS client settings from the
/// OAUTHBEARER JAAS options (`JaasOptionsUtils.createSSLSocketFactory`).
fn http_agent(https: bool, options: &BTreeMap<String, String>) -> Result<ureq::Agent, SecurityError> {
    use ureq::tls::{Certificate, RootCerts, TlsConfig};
    let bad = |m: String| SecurityError::Config(format!("oauthbearer.sasl.jaas.config: {m}"));
    let opt = |k: &str| options.get(k).map(|v| v.trim().to_string());
    if let Some(t) = opt("ssl.truststore.type") {
        if !t.eq_ignore_ascii_case("PEM") {
            return Err(bad(format!(
                "ssl.truststore.type={t} is not supported: Strata reads PEM (set ssl.truststore.type=PEM)"
            )));
        }
    }
    if let Some(alg) = opt("ssl.endpoint.identification.algorithm") {
        if !alg.eq_ignore_ascii_case("https") {
            return Err(bad(format!("ssl.endpoint.identification.algorithm={alg:?}: Strata always checks the JWKS endpoint's host name (https)")));
        }
    }
    if let Some(k) = options.keys().find(|k| k.starts_with("ssl.keystore.") || k.starts_with("ssl.key.")) {
        return Err(bad(format!("{k}: a client certificate towards the JWKS endpoint is not supported")));
    }
    let pem = match (opt("ssl.truststore.location"), opt("ssl.truststore.certificates")) {
        (Some(path), None) => Some(
            std::fs::read_to_string(&path)
                .map_err(|e| bad(format!("ssl.truststore.location: cannot read {path}: {e}")))?,
        ),
        (None, Some(text)) => Some(text),
        (None, None) => None,
        _ => return Err(bad("set either ssl.truststore.location or ssl.truststore.certificates".into())),
    };
    let roots = match pem {
        Some(text) => {
            let certs = crate::tls::load_certs(&text, "oauthbearer.sasl.jaas.config ssl.truststore")?;
            RootCerts::from(certs.iter().map(|c| Certificate::from_der(c.as_ref()).to_owned()))
        }
        None => RootCerts::WebPki,
    };
    let config = ureq::Agent::config_builder()
        .tls_config(TlsConfig::builder().root_certs(roots).build())
        .https_only(https)
        .timeout_global(Some(Duration::from_secs(10)))
        .user_agent(concat!("strata/", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(config.new_agent())
}

/// The file a `file:` URL names.
fn jwks_path(url: &str) -> Result<PathBuf, SecurityError> {
    let key = "sasl.oauthbearer.jwks.endpoint.url";
    let rest = &url[5..];
    // file:/p, file:///p and file://localhost/p name the local /p.
    let path = match rest.strip_prefix("//") {
        Some(after) if after.starts_with('/') => after,
        Some(after) => after.strip_prefix("localhost").filter(|p| p.starts_with('/')).ok_or_else(|| {
            SecurityError::Config(format!("{key}={url}: a file: URL must name a local absolute path (file:///path)"))
        })?,
        None => rest,
    };
    if !path.starts_with('/') {
        return Err(SecurityError::Config(format!("{key}={url}: the path must be absolute (file:/path/to/jwks.json)")));
    }
    Ok(PathBuf::from(path))
}
