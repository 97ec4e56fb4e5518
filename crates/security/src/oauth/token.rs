//! One JWT access token checked as Kafka's `ValidatorAccessTokenValidator` (over jose4j)
//! does: signature by a JWKS key, then the claims. A function of `(token, keys, rules, now)`:
//! no I/O, no clock of its own.

use std::collections::BTreeSet;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::jwks::KeySet;

/// The claim checks of `sasl.oauthbearer.*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClaimRules {
    /// `sasl.oauthbearer.expected.audience`: empty means none configured.
    pub expected_audience: Vec<String>,
    /// `sasl.oauthbearer.expected.issuer`.
    pub expected_issuer: Option<String>,
    /// `sasl.oauthbearer.sub.claim.name`.
    pub sub_claim: String,
    /// `sasl.oauthbearer.scope.claim.name`.
    pub scope_claim: String,
    /// `sasl.oauthbearer.clock.skew.seconds`.
    pub clock_skew: u64,
}

/// A token that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ValidToken {
    /// The sub claim's value, trimmed: the principal's name.
    pub principal: String,
    /// The scope claim's values (possibly none).
    pub scopes: BTreeSet<String>,
    /// The `exp` claim: when the token, and so the session, ends.
    pub expires: SystemTime,
}

/// Checks `token` (the `auth=Bearer` value) at `now`. `Err` says why, for the broker's log
/// only: the client learns no more than `invalid_token`.
pub(crate) fn validate(token: &str, keys: &KeySet, rules: &ClaimRules, now: SystemTime) -> Result<ValidToken, String> {
    let (alg, kid) = header(token)?;
    let key = keys.select(kid.as_deref(), alg)?;
    // jsonwebtoken checks the signature (ring) and that `alg` is the one allowed here; every
    // claim is checked below, against `now`.
    let mut validation = Validation::new(alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let claims = jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation)
        .map_err(|e| format!("the token does not verify: {e}"))?
        .claims;
    check_claims(&claims, rules, now)
}

/// The JOSE header's `alg` and `kid`. Only asymmetric signature algorithms pass: `none` and
/// the HMAC ones (whose "key" would be a public JWKS value) are refused, as are headers with
/// `crit` extensions (none are understood, RFC 7515 4.1.11) and JWE (five sections).
pub(crate) fn header(token: &str) -> Result<(Algorithm, Option<String>), String> {
    let mut sections = token.split('.');
    let (Some(head), Some(_), Some(_), None) = (sections.next(), sections.next(), sections.next(), sections.next())
    else {
        return Err("malformed JWT: expected three sections (header, payload and signature)".into());
    };
    let bytes = URL_SAFE_NO_PAD.decode(head).map_err(|e| format!("malformed JWT header: {e}"))?;
    let header: Map<String, Value> =
        serde_json::from_slice(&bytes).map_err(|e| format!("malformed JWT header: {e}"))?;
    if header.contains_key("crit") {
        return Err("the JWT header names critical extensions (crit), which are not supported".into());
    }
    let name = header.get("alg").and_then(Value::as_str).ok_or("the JWT header has no alg")?;
    let alg = match Algorithm::from_str(name) {
        Ok(Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) | Err(_) => {
            return Err(format!("alg {name:?} is not allowed (only RSA, ECDSA and EdDSA signatures are)"))
        }
        Ok(alg) => alg,
    };
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err("the JWT header's kid is not a string".into()),
    };
    Ok((alg, kid))
}

/// A NumericDate claim (RFC 7519 2): seconds since the epoch, fractions dropped as jose4j
/// does. Negative values are refused (Kafka's `ClaimValidationUtils`).
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, String> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            let secs = n.as_i64().or_else(|| n.as_f64().filter(|f| f.is_finite() && f.abs() < 1e15).map(|f| f as i64));
            match secs {
                Some(s) if s >= 0 => Ok(Some(s)),
                _ => Err(format!("the {name} claim {n} is not a non-negative NumericDate")),
            }
        }
        Some(_) => Err(format!("the {name} claim is not a number")),
    }
}

fn check_claims(claims: &Map<String, Value>, rules: &ClaimRules, now: SystemTime) -> Result<ValidToken, String> {
    let now_secs = match now.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(_) => 0,
    };
    let skew = i64::try_from(rules.clock_skew).unwrap_or(i64::MAX);
    // Times: exp and iat are required (jose4j's setRequireExpirationTime and
    // setRequireIssuedAt in Kafka's validator), nbf is checked when present.
    let exp = numeric_date(claims, "exp")?.ok_or("the token has no exp claim")?;
    if now_secs >= exp.saturating_add(skew) {
        return Err(format!("the token expired (exp {exp}, now {now_secs}, clock skew {skew} s)"));
    }
    if let Some(nbf) = numeric_date(claims, "nbf")? {
        if now_secs < nbf.saturating_sub(skew) {
            return Err(format!("the token is not valid yet (nbf {nbf}, now {now_secs}, clock skew {skew} s)"));
        }
    }
    let iat = numeric_date(claims, "iat")?.ok_or("the token has no iat claim")?;
    if iat > now_secs.saturating_add(skew) {
        return Err(format!("the token was issued in the future (iat {iat}, now {now_secs}, clock skew {skew} s)"));
    }
    if exp < iat {
        return Err(format!("the token expires (exp {exp}) before it was issued (iat {iat})"));
    }
    if let Some(expected) = &rules.expected_issuer {
        match claims.get("iss") {
            Some(Value::String(iss)) if iss == expected => {}
            Some(iss) => {
                return Err(format!("the iss claim {iss} is not {expected:?} (sasl.oauthbearer.expected.issuer)"))
            }
            None => return Err(format!("the token has no iss claim; {expected:?} is expected")),
        }
    }
    check_audience(claims.get("aud"), &rules.expected_audience)?;
    let principal = match claims.get(&rules.sub_claim) {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        Some(Value::String(_)) => return Err(format!("the {} claim is empty", rules.sub_claim)),
        Some(_) => return Err(format!("the {} claim is not a string", rules.sub_claim)),
        None => return Err(format!("the token has no {} claim (sasl.oauthbearer.sub.claim.name)", rules.sub_claim)),
    };
    let scopes = scopes(claims.get(&rules.scope_claim), &rules.scope_claim)?;
    let expires = UNIX_EPOCH
        .checked_add(Duration::from_secs(exp.unsigned_abs()))
        .ok_or_else(|| format!("the exp claim {exp} is out of range"))?;
    Ok(ValidToken { principal, scopes, expires })
}

/// jose4j's audience rule, which Kafka inherits: with expected audiences, `aud` must be there
/// and name one of them; without, a token that carries `aud` at all is refused.
fn check_audience(aud: Option<&Value>, expected: &[String]) -> Result<(), String> {
    let auds: Vec<&str> = match aud {
        None | Some(Value::Null) => {
            return if expected.is_empty() {
                Ok(())
            } else {
                Err(format!("the token has no aud claim; one of {expected:?} is expected"))
            }
        }
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().ok_or("the aud claim holds a value that is not a string"))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("the aud claim is neither a string nor an array of strings".into()),
    };
    if expected.is_empty() {
        return Err(format!(
            "the token has an aud claim {auds:?} but sasl.oauthbearer.expected.audience is not set (Kafka refuses such tokens too)"
        ));
    }
    if !auds.iter().any(|a| expected.iter().any(|e| e == a)) {
        return Err(format!("the aud claim {auds:?} names none of {expected:?} (sasl.oauthbearer.expected.audience)"));
    }
    Ok(())
}

/// The scope claim: absent (no scopes), a space-separated string (RFC 6749 3.3) or an array
/// of strings; each scope non-blank and named once (Kafka's `ClaimValidationUtils`).
/// Anything else is a malformed token.
fn scopes(raw: Option<&Value>, name: &str) -> Result<BTreeSet<String>, String> {
    let items: Vec<&str> = match raw {
        None | Some(Value::Null) => return Ok(BTreeSet::new()),
        Some(Value::String(s)) => s.split(' ').filter(|s| !s.is_empty()).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().ok_or_else(|| format!("the {name} claim holds a value that is not a string")))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(format!("the {name} claim is neither a string nor an array of strings")),
    };
    let mut out = BTreeSet::new();
    for scope in items {
        let scope = scope.trim();
        if scope.is_empty() {
            return Err(format!("the {name} claim holds a blank scope"));
        }
        if !out.insert(scope.to_string()) {
            return Err(format!("the {name} claim names {scope:?} twice"));
        }
    }
    Ok(out)
}
