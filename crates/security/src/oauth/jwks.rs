//! The JWKS (RFC 7517) whose public keys verify OAUTHBEARER tokens: read from a file, kept
//! in memory behind an [`ArcSwap`], re-read off the async workers when the file changes.
//!
//! Invariant: the key set in use always came from a file that parsed and held at least one
//! usable key; a broken new file leaves the previous set in place.

use std::path::{Path, PathBuf};
use std::str::FromStr;
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

/// The JWKS file of `sasl.oauthbearer.jwks.endpoint.url` and the key set read from it.
pub(crate) struct JwksFile {
    path: PathBuf,
    refresh: Duration,
    current: ArcSwap<KeySet>,
    read: Mutex<ReadState>,
}

/// What the last successful read saw.
struct ReadState {
    stamp: Option<Stamp>,
    at: Instant,
    text: String,
}

impl std::fmt::Debug for JwksFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksFile").field("path", &self.path).field("refresh", &self.refresh).finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<(String, KeySet), SecurityError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        SecurityError::Config(format!("sasl.oauthbearer.jwks.endpoint.url: cannot read {}: {e}", path.display()))
    })?;
    let keys = KeySet::parse(&text).map_err(|e| {
        SecurityError::Config(format!(
            "sasl.oauthbearer.jwks.endpoint.url: {} is not a usable JWKS: {e}",
            path.display()
        ))
    })?;
    Ok((text, keys))
}

impl JwksFile {
    /// Reads the file once (at start-up: an error stops the broker).
    pub(crate) fn load(path: PathBuf, refresh: Duration) -> Result<Self, SecurityError> {
        let before = stamp(&path);
        let (text, keys) = read(&path)?;
        tracing::info!(path = %path.display(), keys = keys.len(), "OAUTHBEARER JWKS loaded");
        Ok(Self {
            path,
            refresh,
            current: ArcSwap::from_pointee(keys),
            read: Mutex::new(ReadState { stamp: before, at: Instant::now(), text }),
        })
    }

    /// The key set in use: an in-memory read, safe on an async worker.
    pub(crate) fn keys(&self) -> Arc<KeySet> {
        self.current.load_full()
    }

    /// Re-reads the file if its modification time or length changed, or `refresh` passed
    /// since the last read. Returns whether a new key set is in use. A file that does not
    /// load keeps the previous keys (logged, and returned as the error) and is tried again at
    /// the next call. Reads a file: call it off the async workers.
    pub(crate) fn reload_if_changed(&self, now: Instant) -> Result<bool, SecurityError> {
        let mut state = self.read.lock().unwrap_or_else(PoisonError::into_inner);
        let seen = stamp(&self.path);
        if seen == state.stamp && now.saturating_duration_since(state.at) < self.refresh {
            return Ok(false);
        }
        let (text, keys) = match read(&self.path) {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "OAUTHBEARER JWKS does not load; keeping the previous keys");
                return Err(e);
            }
        };
        state.stamp = seen;
        state.at = now;
        if text == state.text {
            return Ok(false);
        }
        tracing::info!(path = %self.path.display(), keys = keys.len(), "OAUTHBEARER JWKS changed: new keys in use");
        state.text = text;
        self.current.store(Arc::new(keys));
        Ok(true)
    }
}
