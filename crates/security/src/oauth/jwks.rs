//! The JWKS (RFC 7517) whose public keys verify OAUTHBEARER tokens: read from a file or
//! fetched over HTTP(S), kept in memory behind an [`ArcSwap`], re-read off the async workers.
//!
//! Invariant: the key set in use always came from a document that parsed and held at least
//! one usable key; a broken or unreachable new one leaves the previous set in place.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

use crate::tls::{stamp, Stamp};
use crate::SecurityError;

/// What kind of key a JWK holds, which decides the algorithms it can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyKind {
    fn fits(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            Self::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            Self::P256 => alg == ES256,
            Self::P384 => alg == ES384,
            Self::Ed25519 => alg == EdDSA,
        }
    }
}

/// One usable verification key of the set.
struct VerificationKey {
    kid: Option<String>,
    /// The JWK's own `alg`, when it names one: the key verifies only that algorithm.
    alg: Option<Algorithm>,
    kind: KeyKind,
    key: DecodingKey,
}

/// The usable keys of one JWKS document.
pub(crate) struct KeySet {
    keys: Vec<VerificationKey>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<_> = self.keys.iter().map(|k| k.kid.as_deref().unwrap_or("-")).collect();
        f.debug_struct("KeySet").field("kids", &kids).finish()
    }
}

impl KeySet {
    /// Parses a JWKS document. Keys Strata cannot verify with (symmetric `oct` keys,
    /// encryption keys, unknown types or curves, HMAC `alg`s) are skipped with a log line; a
    /// set left without a usable key is an error.
    pub(crate) fn parse(json: &str) -> Result<Self, String> {
        let doc: Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
        let entries = doc.get("keys").and_then(Value::as_array).ok_or("no \"keys\" array (not a JWKS)")?;
        let mut keys = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            match parse_key(entry) {
                Ok(key) => keys.push(key),
                Err(why) => tracing::info!(key = i, kid = ?entry.get("kid"), "JWKS key skipped: {why}"),
            }
        }
        if keys.is_empty() {
            return Err("no usable signature key (RSA, EC P-256/P-384 or Ed25519 with use \"sig\")".into());
        }
        Ok(Self { keys })
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether a key of this `kid` is in the set.
    pub(crate) fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// The key that verifies a token signed with `alg` under `kid`. With a `kid`, the one key
    /// of that `kid` (it must suit `alg`); without, the set's only key. jose4j, which Kafka
    /// uses, would take the first key that suits `alg`; Strata refuses to guess.
    pub(crate) fn select(&self, kid: Option<&str>, alg: Algorithm) -> Result<&DecodingKey, String> {
        let suits = |k: &&VerificationKey| k.kind.fits(alg) && k.alg.is_none_or(|a| a == alg);
        let key = match kid {
            Some(kid) => {
                let mut same_kid = self.keys.iter().filter(|k| k.kid.as_deref() == Some(kid));
                match (same_kid.next(), same_kid.next()) {
                    (Some(k), None) => k,
                    (None, _) => return Err(format!("no key with kid {kid:?} in the JWKS")),
                    (Some(_), Some(_)) => return Err(format!("the JWKS holds several keys with kid {kid:?}")),
                }
            }
            None if self.keys.len() == 1 => &self.keys[0],
            None => {
                return Err(format!(
                    "the token has no kid and the JWKS holds {} keys: cannot tell which one signed it",
                    self.keys.len()
                ))
            }
        };
        if !suits(&key) {
            return Err(format!("the JWKS key {:?} does not verify {alg:?}", key.kid.as_deref().unwrap_or("-")));
        }
        Ok(&key.key)
    }
}

fn parse_key(entry: &Value) -> Result<VerificationKey, String> {
    let text = |name: &str| -> Result<Option<&str>, String> {
        match entry.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(format!("\"{name}\" is not a string")),
        }
    };
    let need = |name: &str| text(name)?.ok_or_else(|| format!("no \"{name}\""));
    if let Some(usage) = text("use")? {
        if usage != "sig" {
            return Err(format!("use {usage:?} (only \"sig\" keys verify tokens)"));
        }
    }
    let alg = match text("alg")? {
        None => None,
        Some(name) => match Algorithm::from_str(name) {
            Ok(a) if !matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) => Some(a),
            _ => return Err(format!("alg {name:?} is not an asymmetric signature algorithm Strata verifies")),
        },
    };
    let bad = |e: jsonwebtoken::errors::Error| format!("bad key material: {e}");
    let (kind, key) = match need("kty")? {
        "RSA" => (KeyKind::Rsa, DecodingKey::from_rsa_components(need("n")?, need("e")?).map_err(bad)?),
        "EC" => {
            let kind = match need("crv")? {
                "P-256" => KeyKind::P256,
                "P-384" => KeyKind::P384,
                other => return Err(format!("curve {other} is not supported (P-256 and P-384 are)")),
            };
            (kind, DecodingKey::from_ec_components(need("x")?, need("y")?).map_err(bad)?)
        }
        "OKP" => match need("crv")? {
            "Ed25519" => (KeyKind::Ed25519, DecodingKey::from_ed_components(need("x")?).map_err(bad)?),
            other => return Err(format!("curve {other} is not supported (Ed25519 is)")),
        },
        "oct" => return Err("a symmetric (HMAC) key: Strata verifies only public-key signatures".into()),
        other => return Err(format!("key type {other:?} is not supported")),
    };
    if alg.is_some_and(|a| !kind.fits(a)) {
        return Err(format!("alg {alg:?} does not fit the key type"));
    }
    Ok(VerificationKey { kid: text("kid")?.map(str::to_string), alg, kind, key })
}

/// Where the JWKS comes from.
pub(crate) enum Source {
    /// A local file (`file:` URL), re-read when its modification time or length changes.
    File(PathBuf),
    /// An `http:` or `https:` URL, fetched by `agent` (its TLS trust and time-outs set).
    Http { url: String, agent: ureq::Agent },
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Http { url, .. } => f.write_str(url),
        }
    }
}

/// The longest JWKS document read (a provider's key set is a few KiB).
pub(crate) const MAX_JWKS_BYTES: u64 = 1 << 20;

/// Kafka's `RefreshingHttpsJwks`: a token whose `kid` is not in the set asks for an early
/// refresh, at most once a minute per `kid`, for at most this many `kid`s remembered, and
/// never for a `kid` longer than [`MISSING_KID_MAX_LEN`] (a malformed token).
const MISSING_KID_CACHE_ENTRIES: usize = 16;
const MISSING_KID_RETRY: Duration = Duration::from_secs(60);
const MISSING_KID_MAX_LEN: usize = 1000;

/// How a failed HTTP fetch is retried (Kafka's `sasl.oauthbearer.jwks.endpoint.retry.backoff.ms`
/// and `.max.ms`): after `initial`, doubling, until the waits add up past `max`; then the next
/// try is the next scheduled refresh.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    pub(crate) initial: Duration,
    pub(crate) max: Duration,
}

/// The JWKS of `sasl.oauthbearer.jwks.endpoint.url` and the key set read from it.
pub(crate) struct Jwks {
    source: Source,
    refresh: Duration,
    backoff: Backoff,
    current: ArcSwap<KeySet>,
    read: Mutex<ReadState>,
    /// Set (from an async worker) when a token named a `kid` the set lacks; the next
    /// [`Jwks::reload_if_changed`] of an HTTP source then fetches at once.
    expedite: AtomicBool,
    /// `kid` -> when it may next ask for an early refresh.
    missing_kids: Mutex<HashMap<String, Instant>>,
}

/// What the last read saw, and the retry schedule after failures.
struct ReadState {
    /// The file's stamp (files only).
    stamp: Option<Stamp>,
    /// When the document in use was read, or when retries were given up (the next scheduled
    /// refresh counts from here).
    at: Instant,
    text: String,
    /// Failed fetches in a row and the time they waited in all (HTTP only).
    failures: u32,
    waited: Duration,
    /// When to try again after a failed fetch; `None` when not retrying.
    retry_at: Option<Instant>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("source", &self.source.to_string())
            .field("refresh", &self.refresh)
            .finish_non_exhaustive()
    }
}

fn fetch(source: &Source) -> Result<(String, KeySet), SecurityError> {
    let key = "sasl.oauthbearer.jwks.endpoint.url";
    let text = match source {
        Source::File(path) => std::fs::read_to_string(path)
            .map_err(|e| SecurityError::Config(format!("{key}: cannot read {}: {e}", path.display())))?,
        Source::Http { url, agent } => {
            let mut response =
                agent.get(url).call().map_err(|e| SecurityError::Config(format!("{key}: cannot fetch {url}: {e}")))?;
            let mut text = String::new();
            response
                .body_mut()
                .as_reader()
                .take(MAX_JWKS_BYTES + 1)
                .read_to_string(&mut text)
                .map_err(|e| SecurityError::Config(format!("{key}: cannot read the answer of {url}: {e}")))?;
            if text.len() as u64 > MAX_JWKS_BYTES {
                return Err(SecurityError::Config(format!(
                    "{key}: {url} answered more than {MAX_JWKS_BYTES} bytes: not a JWKS"
                )));
            }
            text
        }
    };
    let keys = KeySet::parse(&text)
        .map_err(|e| SecurityError::Config(format!("{key}: {source} is not a usable JWKS: {e}")))?;
    Ok((text, keys))
}

impl Jwks {
    /// Reads or fetches the JWKS once (at start-up: an error stops the broker, as Kafka's
    /// `RefreshingHttpsJwks.init` does).
    pub(crate) fn load(source: Source, refresh: Duration, backoff: Backoff) -> Result<Self, SecurityError> {
        let before = match &source {
            Source::File(path) => stamp(path),
            Source::Http { .. } => None,
        };
        let (text, keys) = fetch(&source)?;
        tracing::info!(source = %source, keys = keys.len(), "OAUTHBEARER JWKS loaded");
        Ok(Self {
            source,
            refresh,
            backoff,
            current: ArcSwap::from_pointee(keys),
            read: Mutex::new(ReadState {
                stamp: before,
                at: Instant::now(),
                text,
                failures: 0,
                waited: Duration::ZERO,
                retry_at: None,
            }),
            expedite: AtomicBool::new(false),
            missing_kids: Mutex::new(HashMap::new()),
        })
    }

    /// The key set in use: an in-memory read, safe on an async worker.
    pub(crate) fn keys(&self) -> Arc<KeySet> {
        self.current.load_full()
    }

    /// A token named `kid`, which the set lacks: asks for an early refresh of an HTTP JWKS
    /// (the provider may have rotated its keys), at most once a minute per `kid`. Returns
    /// whether one was asked for. Cheap, safe on an async worker.
    pub(crate) fn missing_kid(&self, kid: &str, now: Instant) -> bool {
        if !matches!(self.source, Source::Http { .. }) || kid.len() > MISSING_KID_MAX_LEN {
            return false;
        }
        let mut kids = self.missing_kids.lock().unwrap_or_else(PoisonError::into_inner);
        if kids.get(kid).is_some_and(|next| *next > now) {
            return false;
        }
        if kids.len() >= MISSING_KID_CACHE_ENTRIES && !kids.contains_key(kid) {
            kids.retain(|_, next| *next > now);
            if kids.len() >= MISSING_KID_CACHE_ENTRIES {
                if let Some(oldest) = kids.iter().min_by_key(|(_, next)| **next).map(|(k, _)| k.clone()) {
                    kids.remove(&oldest);
                }
            }
        }
        kids.insert(kid.to_string(), now + MISSING_KID_RETRY);
        self.expedite.store(true, Ordering::Relaxed);
        true
    }

    /// Re-reads the JWKS when it is due: a file when its modification time or length changed
    /// or `refresh` passed since the last read; an HTTP JWKS when `refresh` passed, when a
    /// token named an unknown `kid` ([`Jwks::missing_kid`]), or when a failed fetch's retry
    /// is due. Returns whether a new key set is in use. A document that does not load keeps
    /// the previous keys (logged, and returned as the error). Blocks on a file or the network:
    /// call it off the async workers.
    pub(crate) fn reload_if_changed(&self, now: Instant) -> Result<bool, SecurityError> {
        let mut state = self.read.lock().unwrap_or_else(PoisonError::into_inner);
        let scheduled = now.saturating_duration_since(state.at) >= self.refresh;
        let seen = match &self.source {
            Source::File(path) => {
                let seen = stamp(path);
                if seen == state.stamp && !scheduled {
                    return Ok(false);
                }
                seen
            }
            Source::Http { .. } => {
                // While retrying a failed fetch, the back-off decides (the refresh is overdue).
                let due = match state.retry_at {
                    Some(at) => now >= at,
                    None => scheduled,
                };
                let expedite = self.expedite.swap(false, Ordering::Relaxed);
                if !(due || expedite) {
                    return Ok(false);
                }
                None
            }
        };
        let (text, keys) = match fetch(&self.source) {
            Ok(read) => read,
            Err(e) => {
                self.failed(&mut state, now);
                tracing::warn!(source = %self.source, error = %e, "OAUTHBEARER JWKS does not load; keeping the previous keys");
                return Err(e);
            }
        };
        state.stamp = seen;
        state.at = now;
        state.failures = 0;
        state.waited = Duration::ZERO;
        state.retry_at = None;
        if text == state.text {
            return Ok(false);
        }
        tracing::info!(source = %self.source, keys = keys.len(), "OAUTHBEARER JWKS changed: new keys in use");
        state.text = text;
        self.current.store(Arc::new(keys));
        self.missing_kids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|kid, _| !self.current.load().has_kid(kid));
        Ok(true)
    }

    /// Schedules the retry after a failed read: a file is tried again at the next call; an
    /// HTTP fetch after Kafka's back-off, until the waits pass `backoff.max`, then at the next
    /// scheduled refresh.
    fn failed(&self, state: &mut ReadState, now: Instant) {
        if let Source::File(_) = self.source {
            return;
        }
        let wait = self.backoff.initial.saturating_mul(1u32 << state.failures.min(20));
        state.failures = state.failures.saturating_add(1);
        // No back-off (retry.backoff.ms=0) means no retry, as Kafka's `Retry`.
        if wait.is_zero() || state.waited + wait > self.backoff.max {
            state.at = now;
            state.failures = 0;
            state.waited = Duration::ZERO;
            state.retry_at = None;
        } else {
            state.waited += wait;
            state.retry_at = Some(now + wait);
        }
    }
}
