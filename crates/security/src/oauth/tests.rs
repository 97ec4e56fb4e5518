//! OAUTHBEARER end to end through [`SaslSettings`]: tokens signed here (keys made with ring,
//! plus the fixed RSA key of `tests/data`), a JWKS written to a temporary directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::{Rng, RngCore, SeedableRng};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use serde_json::{json, Value};

use super::exchange::{FAILED, INVALID_TOKEN};
use crate::principal::KafkaPrincipal;
use crate::sasl::{NoCredentials, SaslSettings, Step};

/// A signing key and its public JWK.
struct TestKey {
    alg: Algorithm,
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn ec_key(kid: &str, p384: bool) -> TestKey {
    let rng = SystemRandom::new();
    let (alg, signing, crv) = if p384 {
        (Algorithm::ES384, &signature::ECDSA_P384_SHA384_FIXED_SIGNING, "P-384")
    } else {
        (Algorithm::ES256, &signature::ECDSA_P256_SHA256_FIXED_SIGNING, "P-256")
    };
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(signing, &rng).unwrap_or_else(|e| panic!("{e}"));
    let pair = EcdsaKeyPair::from_pkcs8(signing, pkcs8.as_ref(), &rng).unwrap_or_else(|e| panic!("{e}"));
    let point = pair.public_key().as_ref();
    let half = (point.len() - 1) / 2;
    TestKey {
        alg,
        kid: kid.into(),
        encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
        jwk: json!({"kty": "EC", "crv": crv, "kid": kid, "use": "sig",
                    "x": b64(&point[1..1 + half]), "y": b64(&point[1 + half..])}),
    }
}

fn ed_key(kid: &str) -> TestKey {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap_or_else(|e| panic!("{e}"));
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap_or_else(|e| panic!("{e}"));
    TestKey {
        alg: Algorithm::EdDSA,
        kid: kid.into(),
        encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
        jwk: json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(pair.public_key().as_ref())}),
    }
}

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

/// The fixed RSA key of tests/data (PKCS#1 PEM) and its JWK.
fn rsa_key(alg: Algorithm) -> TestKey {
    let pem = std::fs::read_to_string(data("oauth-test-rsa.pem")).unwrap_or_else(|e| panic!("{e}"));
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = STANDARD.decode(body).unwrap_or_else(|e| panic!("{e}"));
    let jwks: Value =
        serde_json::from_str(&std::fs::read_to_string(data("oauth-test-jwks.json")).unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"));
    TestKey {
        alg,
        kid: "strata-test-rsa".into(),
        encoding: EncodingKey::from_rsa_der(&der),
        jwk: jwks["keys"][0].clone(),
    }
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or_default()
}

/// Claims valid for an hour, for `sub`.
fn claims(sub: &str) -> Value {
    let now = now_secs();
    json!({"sub": sub, "iat": now, "exp": now + 3600, "scope": "read write"})
}

fn sign_with(key: &TestKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(key.alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, &key.encoding).unwrap_or_else(|e| panic!("{e}"))
}

fn sign(key: &TestKey, claims: &Value) -> String {
    sign_with(key, Some(&key.kid), claims)
}

fn write_jwks(path: &Path, keys: &[&TestKey]) {
    let set = json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()});
    std::fs::write(path, set.to_string()).unwrap_or_else(|e| panic!("{e}"));
}

/// A JWKS file in a temporary directory.
struct Fixture {
    _dir: tempfile::TempDir,
    jwks: PathBuf,
}

fn fixture(keys: &[&TestKey]) -> Fixture {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let jwks = dir.path().join("jwks.json");
    write_jwks(&jwks, keys);
    Fixture { _dir: dir, jwks }
}

fn try_settings(jwks: &Path, extra: &[(&str, &str)]) -> Result<SaslSettings, String> {
    let url = format!("file://{}", jwks.display());
    let extra: Vec<(String, String)> = extra.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let get = move |k: &str| -> Option<String> {
        if let Some((_, v)) = extra.iter().find(|(key, _)| key == k) {
            return Some(v.clone());
        }
        match k {
            "sasl.enabled.mechanisms" => Some("OAUTHBEARER".into()),
            "oauthbearer.sasl.oauthbearer.jwks.endpoint.url" => Some(url.clone()),
            _ => None,
        }
    };
    SaslSettings::from_config(&get, Arc::new(NoCredentials)).map_err(|e| e.to_string())
}

fn settings(jwks: &Path, extra: &[(&str, &str)]) -> SaslSettings {
    try_settings(jwks, extra).unwrap_or_else(|e| panic!("{e}"))
}

fn first_message(authzid: &str, token: &str) -> Vec<u8> {
    let a = if authzid.is_empty() { String::new() } else { format!("a={authzid}") };
    format!("n,{a},\x01auth=Bearer {token}\x01\x01").into_bytes()
}

/// How an exchange ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    In(KafkaPrincipal, Option<SystemTime>),
    /// `invalid_token`, then the error after the client's \x01, as Kafka.
    InvalidToken,
    Failed(String),
}

fn authenticate(s: &SaslSettings, authzid: &str, token: &str) -> Outcome {
    let mut x = s.start("OAUTHBEARER").unwrap_or_else(|| panic!("OAUTHBEARER enabled"));
    match x.step(&first_message(authzid, token)) {
        Ok(Step::Done { response, principal }) => {
            assert!(response.is_empty());
            Outcome::In(principal, x.session_expiry())
        }
        Ok(Step::Continue(challenge)) => {
            assert_eq!(challenge, INVALID_TOKEN.as_bytes());
            assert_eq!(x.session_expiry(), None);
            assert_eq!(x.step(b"\x01"), Err(INVALID_TOKEN.to_string()));
            Outcome::InvalidToken
        }
        Err(message) => Outcome::Failed(message),
    }
}

fn user(name: &str) -> KafkaPrincipal {
    KafkaPrincipal::user(name)
}

#[test]
fn a_valid_token_authenticates_as_its_sub_until_its_exp() {
    let key = ec_key("k1", false);
    let f = fixture(&[&key]);
    let s = settings(&f.jwks, &[]);
    assert!(s.enabled().contains(&"OAUTHBEARER"));
    let c = claims("alice");
    let exp = UNIX_EPOCH + Duration::from_secs(c["exp"].as_u64().unwrap_or_default());
    assert_eq!(authenticate(&s, "", &sign(&key, &c)), Outcome::In(user("alice"), Some(exp)));
    // An authzid equal to the principal is fine; another one is refused, in Kafka's words.
    assert_eq!(authenticate(&s, "alice", &sign(&key, &c)), Outcome::In(user("alice"), Some(exp)));
    match authenticate(&s, "bob", &sign(&key, &c)) {
        Outcome::Failed(m) => assert!(m.contains("authorization id (bob)") && m.contains("(alice)"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Extensions are accepted (Kafka's validator accepts them all) and the scheme's case is free.
    let mut x = s.start("OAUTHBEARER").unwrap_or_else(|| panic!("enabled"));
    let msg = format!("n,,\x01traceId=abc 123\x01auth=bearer {}\x01\x01", sign(&key, &c));
    assert!(matches!(x.step(msg.as_bytes()), Ok(Step::Done { .. })));
    // Other mechanisms have no session expiry of their own.
    let get = |k: &str| match k {
        "sasl.enabled.mechanisms" => Some("SCRAM-SHA-256".to_string()),
        _ => None,
    };
    let scram = SaslSettings::from_config(&get, Arc::new(NoCredentials)).unwrap_or_else(|e| panic!("{e}"));
    let x = scram.start("SCRAM-SHA-256").unwrap_or_else(|| panic!("enabled"));
    assert_eq!(x.session_expiry(), None);
    assert!(scram.start("OAUTHBEARER").is_none(), "not enabled there");
    assert_eq!(scram.reload_if_changed().ok(), Some(false));
}

#[test]
fn every_signature_algorithm_of_the_jwks_key_types() {
    for alg in
        [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512, Algorithm::PS256, Algorithm::PS384, Algorithm::PS512]
    {
        let key = rsa_key(alg);
        let s = settings(&data("oauth-test-jwks.json"), &[]);
        assert_eq!(authenticate(&s, "", &sign(&key, &claims("rsa"))).principal(), Some(user("rsa")), "{alg:?}");
    }
    for key in [ec_key("p384", true), ed_key("ed")] {
        let f = fixture(&[&key]);
        let s = settings(&f.jwks, &[]);
        assert_eq!(authenticate(&s, "", &sign(&key, &claims("x"))).principal(), Some(user("x")), "{:?}", key.alg);
    }
}

impl Outcome {
    fn principal(self) -> Option<KafkaPrincipal> {
        match self {
            Outcome::In(p, _) => Some(p),
            _ => None,
        }
    }
}

#[test]
fn the_sub_claim_name_can_be_overridden() {
    let key = ec_key("k1", false);
    let f = fixture(&[&key]);
    let s = settings(&f.jwks, &[("oauthbearer.sasl.oauthbearer.sub.claim.name", "client_id")]);
    let mut c = claims("alice");
    c["client_id"] = json!("  svc-1 ");
    assert_eq!(authenticate(&s, "", &sign(&key, &c)).principal(), Some(user("svc-1")));
    c["client_id"] = json!(7);
    assert_eq!(authenticate(&s, "", &sign(&key, &c)), Outcome::InvalidToken);
    c["client_id"] = json!(" ");
    assert_eq!(authenticate(&s, "", &sign(&key, &c)), Outcome::InvalidToken);
    let c = claims("alice");
    assert_eq!(authenticate(&s, "", &sign(&key, &c)), Outcome::InvalidToken, "no client_id claim");
    // The bare key works too, and the mechanism-prefixed one wins over it.
    let s = settings(&f.jwks, &[("sasl.oauthbearer.sub.claim.name", "client_id")]);
    assert_eq!(authenticate(&s, "", &sign(&key, &c)), Outcome::InvalidToken);
    let s = settings(
        &f.jwks,
        &[("sasl.oauthbearer.sub.claim.name", "client_id"), ("oauthbearer.sasl.oauthbearer.sub.claim.name", "sub")],
    );
    assert_eq!(authenticate(&s, "", &sign(&key, &c)).principal(), Some(user("alice")));
}

#[test]
fn times_are_checked_with_the_clock_skew() {
    let key = ec_key("k1", false);
    let f = fixture(&[&key]);
    let s = settings(&f.jwks, &[]);
    let now = now_secs();
    let with = |changes: &[(&str, Value)]| {
        let mut c = claims("alice");
        for (k, v) in changes {
            if v.is_null() {
                if let Some(o) = c.as_object_mut() {
                    o.remove(*k);
                }
            } else {
                c[*k] = v.clone();
            }
        }
        authenticate(&s, "", &sign(&key, &c))
    };
    assert_eq!(with(&[("exp", json!(now - 120))]), Outcome::InvalidToken, "expired");
    assert!(
        matches!(with(&[("exp", json!(now - 5)), ("iat", json!(now - 60))]), Outcome::In(..)),
        "expired within the 30 s skew"
    );
    assert_eq!(with(&[("exp", json!(now + 5)), ("iat", json!(now + 10))]), Outcome::InvalidToken, "exp before iat");
    assert_eq!(with(&[("exp", Value::Null)]), Outcome::InvalidToken, "no exp");
    assert_eq!(with(&[("exp", json!("soon"))]), Outcome::InvalidToken, "exp not a number");
    assert_eq!(with(&[("iat", Value::Null)]), Outcome::InvalidToken, "no iat (Kafka requires it)");
    assert_eq!(with(&[("iat", json!(now + 600))]), Outcome::InvalidToken, "issued in the future");
    assert_eq!(with(&[("iat", json!(-1))]), Outcome::InvalidToken, "negative iat");
    assert_eq!(with(&[("nbf", json!(now + 600))]), Outcome::InvalidToken, "not valid yet");
    assert!(matches!(with(&[("nbf", json!(now + 10))]), Outcome::In(..)), "nbf within the skew");
    assert!(matches!(with(&[("exp", json!(now as f64 + 60.5))]), Outcome::In(..)), "fractional exp");
    // A skew of 0: the token 5 s past its exp is refused now.
    let strict = settings(&f.jwks, &[("sasl.oauthbearer.clock.skew.seconds", "0")]);
    let mut c = claims("alice");
    c["exp"] = json!(now - 5);
    c["iat"] = json!(now - 60);
    assert_eq!(authenticate(&strict, "", &sign(&key, &c)), Outcome::InvalidToken);
}

#[test]
fn issuer_and_audience_as_configured() {
    let key = ec_key("k1", false);
    let f = fixture(&[&key]);
    let with = |s: &SaslSettings, changes: &[(&str, Value)]| {
        let mut c = claims("alice");
        for (k, v) in changes {
            c[*k] = v.clone();
        }
        authenticate(s, "", &sign(&key, &c))
    };
    let s = settings(
        &f.jwks,
        &[
            ("sasl.oauthbearer.expected.issuer", "https://idp.example/"),
            ("sasl.oauthbearer.expected.audience", "kafka, strata"),
        ],
    );
    let iss = ("iss", json!("https://idp.example/"));
    assert!(matches!(with(&s, &[iss.clone(), ("aud", json!("strata"))]), Outcome::In(..)));
    assert!(matches!(with(&s, &[iss.clone(), ("aud", json!(["other", "kafka"]))]), Outcome::In(..)));
    assert_eq!(with(&s, &[iss.clone(), ("aud", json!("other"))]), Outcome::InvalidToken, "wrong audience");
    assert_eq!(with(&s, &[iss.clone(), ("aud", json!([1]))]), Outcome::InvalidToken, "aud not strings");
    assert_eq!(with(&s, std::slice::from_ref(&iss)), Outcome::InvalidToken, "no aud");
    assert_eq!(
        with(&s, &[("iss", json!("https://evil.example/")), ("aud", json!("kafka"))]),
        Outcome::InvalidToken,
        "wrong issuer"
    );
    assert_eq!(with(&s, &[("aud", json!("kafka"))]), Outcome::InvalidToken, "no iss");
    // Without an expected audience, a token that names one is refused (jose4j, so Kafka).
    let s = settings(&f.jwks, &[]);
    assert_eq!(with(&s, &[("aud", json!("kafka"))]), Outcome::InvalidToken);
    assert!(matches!(with(&s, &[("iss", json!("anyone"))]), Outcome::In(..)), "no expected issuer");
}

#[test]
fn only_the_right_key_verifies() {
    let key = ec_key("k1", false);
    let other = ec_key("k1", false);
    let f = fixture(&[&key]);
    let s = settings(&f.jwks, &[]);
    assert_eq!(authenticate(&s, "", &sign(&other, &claims("alice"))), Outcome::InvalidToken, "another key, same kid");
    assert_eq!(
        authenticate(&s, "", &sign_with(&key, Some("k2"), &claims("alice"))),
        Outcome::InvalidToken,
        "unknown kid"
    );
    // Without kid: fine while the JWKS holds one key, refused with two.
    assert!(matches!(authenticate(&s, "", &sign_with(&key, None, &claims("alice"))), Outcome::In(..)));
    let second = ec_key("k2", false);
    let f2 = fixture(&[&key, &second]);
    let s2 = settings(&f2.jwks, &[]);
    assert_eq!(authenticate(&s2, "", &sign_with(&key, None, &claims("alice"))), Outcome::InvalidToken);
    assert!(matches!(authenticate(&s2, "", &sign(&second, &claims("alice"))), Outcome::In(..)));
    // A P-256 key does not verify ES384, nor an RSA kid an ES256 token.
    let p384 = ec_key("k1", true);
    assert_eq!(authenticate(&s, "", &sign(&p384, &claims("alice"))), Outcome::InvalidToken);
    // A JWK whose alg is RS256 verifies RS256 only.
    let mut rs = rsa_key(Algorithm::PS256);
    rs.jwk["alg"] = json!("RS256");
    let f3 = fixture(&[&rs]);
    let s3 = settings(&f3.jwks, &[]);
    assert_eq!(authenticate(&s3, "", &sign(&rs, &claims("alice"))), Outcome::InvalidToken);
    rs.alg = Algorithm::RS256;
    assert!(matches!(authenticate(&s3, "", &sign(&rs, &claims("alice"))), Outcome::In(..)));
}

#[test]
fn unsigned_and_hmac_tokens_are_refused() {
    let key = ec_key("k1", false);
    let f = fixture(&[&key]);
    let s = settings(&f.jwks, &[]);
    let payload = b64(claims("alice").to_string().as_bytes());
    for header in [json!({"alg": "none"}), json!({"alg": "none", "kid": "k1"}), json!({"alg": "None", "kid": "k1"})] {
        let token = format!("{}.{payload}.", b64(header.to_string().as_bytes()));
        assert_eq!(authenticate(&s, "", &token), Outcome::InvalidToken, "{header}");
    }
    // HS256 keyed with the public JWK's x coordinate (the classic confusion attack).
    let secret = key.jwk["x"].as_str().unwrap_or_default().to_string();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k1".into());
    let token = jsonwebtoken::encode(&header, &claims("alice"), &EncodingKey::from_secret(secret.as_bytes()))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(authenticate(&s, "", &token), Outcome::InvalidToken);
    // crit extensions, five sections (JWE) and a signature cut off are refused too.
    let crit =
        format!("{}.{payload}.c2ln", b64(json!({"alg": "ES256", "kid": "k1", "crit": ["b64"]}).to_string().as_bytes()));
    assert_eq!(authenticate(&s, "", &crit), Outcome::InvalidToken);
    let good = sign(&key, &claims("alice"));
    assert_eq!(authenticate(&s, "", &format!("{good}.a.b")), Outcome::InvalidToken);
    let cut = &good[..good.len() - 4];
    assert_eq!(authenticate(&s, "", cut), Outcome::InvalidToken);
    // A JWKS of symmetric keys only has nothing to verify with: refused at start.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let oct = dir.path().join("oct.json");
    std::fs::write(&oct, r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"h"}]}"#).unwrap_or_else(|e| panic!("{e}"));
    assert!(try_settings(&oct, &[]).err().unwrap_or_default().contains("no usable"));
}

#[test]
fn scope_claims() {
    let key = ec_key("k1", false);
    let f = fixture(&[&key]);
    let s = settings(&f.jwks, &[]);
    let with = |scope: Value| {
        let mut c = claims("alice");
        c["scope"] = scope;
        authenticate(&s, "", &sign(&key, &c))
    };
    assert!(matches!(with(json!("read  write")), Outcome::In(..)));
    assert!(matches!(with(json!(["read", "write"])), Outcome::In(..)));
    assert!(matches!(with(json!([])), Outcome::In(..)));
    assert!(matches!(with(Value::Null), Outcome::In(..)));
    assert_eq!(with(json!(42)), Outcome::InvalidToken);
    assert_eq!(with(json!({"read": true})), Outcome::InvalidToken);
    assert_eq!(with(json!(["read", 1])), Outcome::InvalidToken);
    assert_eq!(with(json!(["read", "read"])), Outcome::InvalidToken, "duplicate (Kafka)");
    assert_eq!(with(json!(["read", " "])), Outcome::InvalidToken, "blank");
    // Another claim name: the "scope" claim is no longer looked at.
    let s = settings(&f.jwks, &[("sasl.oauthbearer.scope.claim.name", "scp")]);
    let mut c = claims("alice");
    c["scope"] = json!(42);
    c["scp"] = json!(["a"]);
    assert!(matches!(authenticate(&s, "", &sign(&key, &c)), Outcome::In(..)));
    c["scp"] = json!(false);
    assert_eq!(authenticate(&s, "", &sign(&key, &c)), Outcome::InvalidToken);
}

#[test]
fn malformed_messages_fail_without_a_challenge() {
    let key = ec_key("k1", false);
    let f = fixture(&[&key]);
    let s = settings(&f.jwks, &[]);
    let token = sign(&key, &claims("alice"));
    let bad: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"\x01".to_vec(),
        b"garbage".to_vec(),
        b"n,,".to_vec(),
        b"n,,\x01\x01".to_vec(),
        format!("y,,\x01auth=Bearer {token}\x01\x01").into_bytes(),
        format!("p=tls-unique,,\x01auth=Bearer {token}\x01\x01").into_bytes(),
        format!("n,a=,\x01auth=Bearer {token}\x01\x01").into_bytes(),
        format!("n,a=al=ice,\x01auth=Bearer {token}\x01\x01").into_bytes(),
        format!("n,,\x01auth=Bearer {token}\x01").into_bytes(),
        format!("n,,auth=Bearer {token}\x01\x01").into_bytes(),
        format!("n,,\x01auth=Basic {token}\x01\x01").into_bytes(),
        b"n,,\x01auth=Bearer\x01\x01".to_vec(),
        format!("n,,\x01auth=Bearer {token}!\x01\x01").into_bytes(),
        format!("n,,\x01auth=Bearer {token}\x01auth=Bearer {token}\x01\x01").into_bytes(),
        format!("n,,\x01auth=Bearer {token}\x01x1=y\x01\x01").into_bytes(),
        format!("n,,\x01auth=Bearer {token}\x01x=\x01\x01").into_bytes(),
        format!("n,,\x01auth=Bearer {token}\x01\x01\x01").into_bytes(),
        format!("n,,\x01auth=Bearer {token}\x01x=\u{e9}\x01\x01").into_bytes(),
        vec![0xff, 0xfe, 0x00],
    ];
    for msg in bad {
        let mut x = s.start("OAUTHBEARER").unwrap_or_else(|| panic!("enabled"));
        assert_eq!(x.step(&msg), Err(FAILED.to_string()), "{:?}", String::from_utf8_lossy(&msg));
        assert!(x.step(&first_message("", &token)).is_err(), "no second try after a failure");
    }
    // After invalid_token, anything but \x01 fails too (and is not a second try).
    let mut x = s.start("OAUTHBEARER").unwrap_or_else(|| panic!("enabled"));
    let expired = {
        let mut c = claims("alice");
        c["exp"] = json!(now_secs() - 3600);
        sign(&key, &c)
    };
    assert_eq!(x.step(&first_message("", &expired)), Ok(Step::Continue(INVALID_TOKEN.as_bytes().to_vec())));
    assert_eq!(x.step(&first_message("", &token)), Err(FAILED.to_string()));
    assert_eq!(x.session_expiry(), None);
    // An escaped authzid is compared as sent, as Kafka does.
    assert!(matches!(authenticate(&s, "al=2Cice", &token), Outcome::Failed(_)));
}

#[test]
fn random_and_mutated_messages_never_panic() {
    let key = ec_key("k1", false);
    let f = fixture(&[&key]);
    let s = settings(&f.jwks, &[]);
    let valid = first_message("alice", &sign(&key, &claims("alice")));
    let mut rng = rand::rngs::SmallRng::seed_from_u64(0x5eed_0a07);
    let mut accepted = 0;
    for round in 0..4000 {
        let msg = if round % 2 == 0 {
            let mut m = vec![0u8; rng.gen_range(0..300)];
            rng.fill_bytes(&mut m);
            if round % 4 == 0 && m.len() > 4 {
                m[..4].copy_from_slice(b"n,,\x01");
            }
            m
        } else {
            let mut m = valid.clone();
            for _ in 0..rng.gen_range(1..4) {
                let i = rng.gen_range(0..m.len());
                match rng.gen_range(0..3) {
                    0 => m[i] = rng.gen(),
                    1 => {
                        m.remove(i);
                    }
                    _ => m.insert(i, *[b'\x01', b'=', b',', b'.', b' '].get(rng.gen_range(0..5)).unwrap_or(&b'x')),
                }
            }
            m
        };
        let mut x = s.start("OAUTHBEARER").unwrap_or_else(|| panic!("enabled"));
        match x.step(&msg) {
            Ok(Step::Done { principal, .. }) => {
                assert_eq!(principal, user("alice"));
                accepted += 1;
            }
            Ok(Step::Continue(c)) => {
                assert_eq!(c, INVALID_TOKEN.as_bytes());
                let _ = x.step(&msg);
            }
            Err(_) => {}
        }
    }
    // Mutations may land in harmless places (the extension-free tail, the scheme's case);
    // a forged token never passes, which the principal check above guards.
    assert!(accepted < 2000, "{accepted}");
}

#[test]
fn jwks_rotation_and_broken_files() {
    let old = ec_key("k1", false);
    let new = ec_key("rotated-key-2", false);
    let f = fixture(&[&old]);
    let s = settings(&f.jwks, &[]);
    let by_new = sign(&new, &claims("alice"));
    assert_eq!(authenticate(&s, "", &by_new), Outcome::InvalidToken);
    assert_eq!(s.reload_if_changed().ok(), Some(false), "unchanged");
    write_jwks(&f.jwks, &[&new]);
    assert_eq!(s.reload_if_changed().ok(), Some(true));
    assert!(matches!(authenticate(&s, "", &by_new), Outcome::In(..)));
    assert_eq!(authenticate(&s, "", &sign(&old, &claims("alice"))), Outcome::InvalidToken, "old key retired");
    // A broken file keeps the keys in use, and is tried again until it loads.
    for broken in ["{\"keys\": [", "{\"keys\": []}", "not json at all", ""] {
        std::fs::write(&f.jwks, broken).unwrap_or_else(|e| panic!("{e}"));
        assert!(s.reload_if_changed().is_err(), "{broken:?}");
        assert!(matches!(authenticate(&s, "", &by_new), Outcome::In(..)), "{broken:?}");
    }
    std::fs::remove_file(&f.jwks).unwrap_or_else(|e| panic!("{e}"));
    assert!(s.reload_if_changed().is_err(), "missing file");
    assert!(matches!(authenticate(&s, "", &by_new), Outcome::In(..)));
    write_jwks(&f.jwks, &[&old, &new]);
    assert_eq!(s.reload_if_changed().ok(), Some(true));
    assert!(matches!(authenticate(&s, "", &sign(&old, &claims("alice"))), Outcome::In(..)));
}

#[test]
fn the_refresh_interval_rereads_an_unchanged_looking_file() {
    let key = ec_key("k1", false);
    let f = fixture(&[&key]);
    let v = super::OAuthValidator::from_config(&|k: &str| match k {
        "sasl.oauthbearer.jwks.endpoint.url" => Some(format!("file:{}", f.jwks.display())),
        "sasl.oauthbearer.jwks.endpoint.refresh.ms" => Some("60000".into()),
        _ => None,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let start = Instant::now();
    assert_eq!(v.reload_at(start).ok(), Some(false));
    // Same content after the interval: read again, nothing new.
    assert_eq!(v.reload_at(start + Duration::from_secs(61)).ok(), Some(false));
    // A broken file looks unchanged to the stamp only if its length and time match; the
    // interval forces the read anyway, and the keys stay.
    std::fs::write(&f.jwks, "x").unwrap_or_else(|e| panic!("{e}"));
    assert!(v.reload_at(start + Duration::from_secs(200)).is_err());
    assert!(v.validate(&sign(&key, &claims("a")), SystemTime::now()).is_ok());
}

#[test]
fn configuration_errors_say_what_to_do() {
    let key = ec_key("k1", false);
    let f = fixture(&[&key]);
    let err = |extra: &[(&str, &str)]| try_settings(&f.jwks, extra).err().unwrap_or_default();
    // Port 1 on loopback: nothing listens (an unreachable provider stops the start-up).
    let e = err(&[("oauthbearer.sasl.oauthbearer.jwks.endpoint.url", "https://127.0.0.1:1/jwks")]);
    assert!(e.contains("cannot fetch https://127.0.0.1:1/jwks"), "{e}");
    let e = err(&[
        ("oauthbearer.sasl.oauthbearer.jwks.endpoint.url", "http://127.0.0.1:1/jwks"),
        ("oauthbearer.sasl.oauthbearer.jwks.endpoint.refresh.ms", "0"),
    ]);
    assert!(e.contains("must be positive"), "{e}");
    let jaas = |options: &str| {
        format!("org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required {options};")
    };
    for (options, expect) in [
        ("ssl.truststore.type=\"JKS\"", "ssl.truststore.type=JKS"),
        ("ssl.endpoint.identification.algorithm=\"\"", "host name"),
        ("ssl.keystore.location=\"/k.pem\"", "client certificate"),
        ("ssl.truststore.location=\"/no/such/ca.pem\"", "cannot read /no/such/ca.pem"),
    ] {
        let e = err(&[
            ("oauthbearer.sasl.oauthbearer.jwks.endpoint.url", "https://127.0.0.1:1/jwks"),
            ("oauthbearer.sasl.jaas.config", &jaas(options)),
        ]);
        assert!(e.contains(expect), "{options}: {e}");
    }
    let e = err(&[("oauthbearer.sasl.oauthbearer.jwks.endpoint.url", "file:relative/jwks.json")]);
    assert!(e.contains("absolute"), "{e}");
    let e = err(&[("oauthbearer.sasl.oauthbearer.jwks.endpoint.url", "file:///no/such/jwks.json")]);
    assert!(e.contains("cannot read"), "{e}");
    let e = err(&[("oauthbearer.sasl.oauthbearer.jwks.endpoint.url", "ldap://x")]);
    assert!(e.contains("neither an https:, http: nor file: URL"), "{e}");
    let e = err(&[(
        "oauthbearer.sasl.server.callback.handler.class",
        "org.apache.kafka.common.security.oauthbearer.internals.unsecured.OAuthBearerUnsecuredValidatorCallbackHandler",
    )]);
    assert!(e.contains("not supported"), "{e}");
    let e =
        err(&[("oauthbearer.sasl.jaas.config", "org.apache.kafka.common.security.plain.PlainLoginModule required;")]);
    assert!(e.contains("OAuthBearerLoginModule"), "{e}");
    let e = err(&[("sasl.oauthbearer.clock.skew.seconds", "-1")]);
    assert!(e.contains("clock.skew"), "{e}");
    let e = err(&[("sasl.oauthbearer.sub.claim.name", " ")]);
    assert!(e.contains("sub.claim.name"), "{e}");
    // No URL at all: no unsecured fallback.
    let get = |k: &str| (k == "sasl.enabled.mechanisms").then(|| "OAUTHBEARER".to_string());
    let e = SaslSettings::from_config(&get, Arc::new(NoCredentials)).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("jwks.endpoint.url") && e.contains("unsigned"), "{e}");
    // Kafka's own settings are accepted, in every URL form.
    for (class, url) in [
        (
            "org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler",
            format!("file:{}", f.jwks.display()),
        ),
        (
            "org.apache.kafka.common.security.oauthbearer.secured.OAuthBearerValidatorCallbackHandler",
            format!("file://localhost{}", f.jwks.display()),
        ),
    ] {
        try_settings(
            &f.jwks,
            &[
                ("oauthbearer.sasl.server.callback.handler.class", class),
                ("oauthbearer.sasl.oauthbearer.jwks.endpoint.url", &url),
                (
                    "oauthbearer.sasl.jaas.config",
                    "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;",
                ),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn the_mechanism_is_named_as_kafka_names_it() {
    use crate::sasl::Mechanism;
    assert_eq!(Mechanism::parse("OAUTHBEARER"), Some(Mechanism::OAuthBearer));
    assert_eq!(Mechanism::OAuthBearer.name(), "OAUTHBEARER");
    assert_eq!(Mechanism::OAuthBearer.scram_type(), None);
    assert!(crate::scram::parse_add_scram("OAUTHBEARER=[name=a,password=b]").is_err());
}

/// A JWKS endpoint on loopback: answers every GET with `body` (or `status`), counts requests.
struct JwksServer {
    url: String,
    state: Arc<std::sync::Mutex<(u16, String, usize)>>,
}

impl JwksServer {
    fn start(keys: &[&TestKey]) -> Self {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let url = format!("http://{}/jwks", listener.local_addr().unwrap_or_else(|e| panic!("{e}")));
        let state = Arc::new(std::sync::Mutex::new((200, String::new(), 0)));
        let served = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let (status, body) = {
                    let mut s = served.lock().unwrap_or_else(|e| e.into_inner());
                    s.2 += 1;
                    (s.0, s.1.clone())
                };
                let head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes()).and_then(|()| conn.write_all(body.as_bytes()));
            }
        });
        let server = Self { url, state };
        server.serve(200, keys);
        server
    }

    fn serve(&self, status: u16, keys: &[&TestKey]) {
        let set = json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()});
        self.serve_text(status, set.to_string());
    }

    fn serve_text(&self, status: u16, body: String) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        (s.0, s.1) = (status, body);
    }

    fn requests(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).2
    }
}

/// An HTTP JWKS as Kafka's `RefreshingHttpsJwks`: fetched at start, again at each refresh
/// interval, early (once a minute per kid) for a token naming a kid the set lacks, retried
/// with doubling back-off after failures until the waits pass the maximum, keys kept
/// meanwhile.
#[test]
fn an_http_jwks_is_fetched_at_start_refreshed_and_fetched_early_for_an_unknown_kid() {
    let (k1, k2) = (ec_key("k1", false), ec_key("k2", false));
    let server = JwksServer::start(&[&k1]);
    let url = server.url.clone();
    let v = super::OAuthValidator::from_config(&|k: &str| match k {
        "sasl.oauthbearer.jwks.endpoint.url" => Some(url.clone()),
        "sasl.oauthbearer.jwks.endpoint.refresh.ms" => Some("60000".into()),
        "sasl.oauthbearer.jwks.endpoint.retry.backoff.ms" => Some("100".into()),
        "sasl.oauthbearer.jwks.endpoint.retry.backoff.max.ms" => Some("1000".into()),
        _ => None,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(server.requests(), 1, "fetched once at start");
    let ok = |key: &TestKey| v.validate(&sign(key, &claims("alice")), SystemTime::now()).is_ok();
    assert!(ok(&k1));
    let start = Instant::now();
    assert_eq!(v.reload_at(start).ok(), Some(false));
    assert_eq!(server.requests(), 1, "not due: no fetch");

    // The provider rotates: a token of k2 is refused, and asks for an early fetch.
    server.serve(200, &[&k1, &k2]);
    assert!(!ok(&k2));
    assert_eq!(v.reload_at(start + Duration::from_secs(1)).ok(), Some(true));
    assert_eq!(server.requests(), 2);
    assert!(ok(&k2) && ok(&k1));

    // An unknown kid asks once a minute, however many tokens name it.
    let k3 = ec_key("k3", false);
    assert!(!ok(&k3) && !ok(&k3));
    assert_eq!(v.reload_at(start + Duration::from_secs(2)).ok(), Some(false));
    assert!(!ok(&k3));
    assert_eq!(v.reload_at(start + Duration::from_secs(3)).ok(), Some(false));
    assert_eq!(server.requests(), 3, "one early fetch for k3");

    // The provider fails: keys kept; retries after 100, 200, 400 ms (waits 700 ms in all;
    // the next, 800 ms, would pass the 1000 ms maximum), then not before the next refresh.
    server.serve_text(500, "down".into());
    let t = start + Duration::from_secs(63); // a minute after the last fetch (at +2 s)
    assert!(v.reload_at(t).is_err());
    assert_eq!(server.requests(), 4);
    assert!(ok(&k1) && ok(&k2), "keys kept while the provider fails");
    let mut at = t;
    for wait in [100, 200, 400] {
        assert_eq!(v.reload_at(at + Duration::from_millis(wait - 1)).ok(), Some(false), "retry before its time");
        at += Duration::from_millis(wait);
        assert!(v.reload_at(at).is_err());
    }
    assert_eq!(server.requests(), 7);
    assert_eq!(v.reload_at(at + Duration::from_secs(30)).ok(), Some(false), "retries given up until the next refresh");
    assert_eq!(server.requests(), 7);
    // An answer over 1 MiB is a failure too, and the keys stay.
    server.serve_text(200, format!("{{\"keys\": [], \"pad\": \"{}\"}}", "x".repeat(1 << 20)));
    assert!(v.reload_at(at + Duration::from_secs(61)).is_err());
    assert!(ok(&k1));
    server.serve(200, &[&k2]);
    assert_eq!(v.reload_at(at + Duration::from_secs(61) + Duration::from_millis(100)).ok(), Some(true));
    assert!(ok(&k2) && !ok(&k1));
}
