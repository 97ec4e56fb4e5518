//! SCRAM credentials (RFC 5802) as Kafka stores them: salt, StoredKey, ServerKey and the
//! iteration count, never the password. Derived here for AlterUserScramCredentials (whose
//! client sends the salted password) and for `strata format --add-scram` (a password).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Mac, SimpleHmac};
use rand::RngCore;
use rsasl::mechanisms::scram::tools::{derive_keys, hash_password};
use sha2::{Digest, Sha256, Sha512};

use crate::sasl::{Mechanism, ScramCredential};
use crate::SecurityError;

/// Kafka's bounds on a SCRAM credential's iterations (`ScramMechanism.minIterations` and
/// `maxIterations`).
pub const MIN_ITERATIONS: u32 = 4096;
pub const MAX_ITERATIONS: u32 = 16384;

/// The credential for a client-computed salted password (`Hi(password, salt, i)`).
pub fn from_salted_password(
    mechanism: Mechanism,
    salted_password: &[u8],
    salt: &[u8],
    iterations: u32,
) -> Result<ScramCredential, SecurityError> {
    let (stored_key, server_key) = match mechanism {
        Mechanism::ScramSha256 => {
            let (client_key, server_key) = derive_keys::<Sha256>(salted_password);
            (Sha256::digest(client_key).to_vec(), server_key.to_vec())
        }
        Mechanism::ScramSha512 => {
            let (client_key, server_key) = derive_keys::<Sha512>(salted_password);
            (Sha512::digest(client_key).to_vec(), server_key.to_vec())
        }
        Mechanism::Plain | Mechanism::OAuthBearer => {
            return Err(SecurityError::Config(format!("{} has no SCRAM credential", mechanism.name())))
        }
    };
    Ok(ScramCredential { salt: salt.to_vec(), stored_key, server_key, iterations })
}

/// The credential for `password` with a fresh random salt.
pub fn from_password(mechanism: Mechanism, password: &str, iterations: u32) -> Result<ScramCredential, SecurityError> {
    let (salt, salted) = salt_password(mechanism, password, iterations)?;
    from_salted_password(mechanism, &salted, &salt, iterations)
}

/// A fresh random 32-byte salt and `Hi(password, salt, iterations)` (RFC 5802), as a client
/// sends them in AlterUserScramCredentials: (salt, salted password).
pub fn salt_password(
    mechanism: Mechanism,
    password: &str,
    iterations: u32,
) -> Result<(Vec<u8>, Vec<u8>), SecurityError> {
    let mut salt = vec![0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let salted = match mechanism {
        Mechanism::ScramSha256 => {
            let mut out = Default::default();
            hash_password::<Sha256>(password.as_bytes(), iterations, &salt, &mut out);
            out.to_vec()
        }
        Mechanism::ScramSha512 => {
            let mut out = Default::default();
            hash_password::<Sha512>(password.as_bytes(), iterations, &salt, &mut out);
            out.to_vec()
        }
        Mechanism::Plain | Mechanism::OAuthBearer => {
            return Err(SecurityError::Config(format!("{} has no SCRAM credential", mechanism.name())))
        }
    };
    Ok((salt, salted))
}

/// Whether `iterations` is within Kafka's bounds.
pub fn valid_iterations(iterations: i32) -> bool {
    (MIN_ITERATIONS as i64..=MAX_ITERATIONS as i64).contains(&i64::from(iterations))
}

/// The server side of one SCRAM exchange (RFC 5802, as Kafka's `ScramSaslServer`): the
/// client-first message names the user, the server answers with its nonce, the salt and the
/// iterations, and the client-final message proves the password. Channel binding is not
/// offered (`n,,` or `y,,`), extensions are refused (no delegation tokens), and, as Kafka since
/// 3.8.1 (KAFKA-17495's fix for librdkafka before 2.6.1), the client's final nonce must end
/// with the server's.
pub struct ScramServer {
    mechanism: Mechanism,
    state: ScramState,
}

enum ScramState {
    First,
    Final {
        user: String,
        client_first_bare: String,
        server_first: String,
        nonce: String,
        gs2: String,
        credential: ScramCredential,
    },
    Done,
}

/// Why an exchange failed: the message for the client (Kafka's wording).
fn invalid(mechanism: Mechanism) -> String {
    format!(
        "Authentication failed during authentication due to invalid credentials with SASL mechanism {}",
        mechanism.name()
    )
}

/// RFC 5802's `saslname`: `=2C` is ',' and `=3D` is '='; any other '=' is invalid.
fn unescape_saslname(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i + 1..i + 3) {
            Some("2C") => out.push(','),
            Some("3D") => out.push('='),
            _ => return None,
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

fn hmac(mechanism: Mechanism, key: &[u8], data: &[u8]) -> Vec<u8> {
    match mechanism {
        Mechanism::ScramSha512 => {
            let mut m = <SimpleHmac<Sha512> as Mac>::new_from_slice(key)
                .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        _ => {
            let mut m = <SimpleHmac<Sha256> as Mac>::new_from_slice(key)
                .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
    }
}

fn hash(mechanism: Mechanism, data: &[u8]) -> Vec<u8> {
    match mechanism {
        Mechanism::ScramSha512 => Sha512::digest(data).to_vec(),
        _ => Sha256::digest(data).to_vec(),
    }
}

/// Compares secrets without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Alphanumeric, as Kafka's `ScramFormatter.secureRandomString`.
fn random_nonce() -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| CHARS[usize::from(*b) % CHARS.len()] as char).collect()
}

/// One step's outcome: a challenge to send, or the user authenticated with the final answer.
#[derive(Debug, PartialEq, Eq)]
pub enum ScramStep {
    Challenge(Vec<u8>),
    Done { user: String, server_final: Vec<u8> },
}

impl ScramServer {
    pub fn new(mechanism: Mechanism) -> Self {
        Self { mechanism, state: ScramState::First }
    }

    /// Feeds one client message; `lookup` finds a user's credential. `Err` is the message
    /// for the client; the exchange is then over.
    pub fn step(
        &mut self,
        message: &[u8],
        lookup: &dyn Fn(&str) -> Option<ScramCredential>,
    ) -> Result<ScramStep, String> {
        let m = self.mechanism;
        let fail = |why: &str| {
            tracing::debug!(mechanism = m.name(), why, "SCRAM exchange refused");
            invalid(m)
        };
        let text = std::str::from_utf8(message).map_err(|_| fail("not UTF-8"))?;
        match std::mem::replace(&mut self.state, ScramState::Done) {
            ScramState::First => {
                // gs2-header: ("n" | "y") "," [ "a=" authzid ] "," ; then client-first-message-bare.
                let (cb, rest) = text.split_once(',').ok_or_else(|| fail("no GS2 header"))?;
                if cb != "n" && cb != "y" {
                    return Err(fail("channel binding is not supported"));
                }
                let (authzid, bare) = rest.split_once(',').ok_or_else(|| fail("no GS2 header"))?;
                let gs2 = format!("{cb},{authzid},");
                let mut parts = bare.split(',');
                let user = parts
                    .next()
                    .and_then(|p| p.strip_prefix("n="))
                    .and_then(unescape_saslname)
                    .filter(|u| !u.is_empty())
                    .ok_or_else(|| fail("no user name"))?;
                let client_nonce = parts
                    .next()
                    .and_then(|p| p.strip_prefix("r="))
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| fail("no nonce"))?;
                if parts.next().is_some() {
                    return Err(fail("extensions (delegation tokens) are not supported"));
                }
                if let Some(a) = authzid.strip_prefix("a=") {
                    if unescape_saslname(a).as_deref() != Some(user.as_str()) {
                        return Err("Authentication failed: Client requested an authorization id that is different from username".into());
                    }
                } else if !authzid.is_empty() {
                    return Err(fail("bad GS2 header"));
                }
                let credential = lookup(&user).ok_or_else(|| fail("no credential for the user"))?;
                let nonce = format!("{client_nonce}{}", random_nonce());
                let server_first = format!("r={nonce},s={},i={}", B64.encode(&credential.salt), credential.iterations);
                let challenge = server_first.clone().into_bytes();
                self.state = ScramState::Final {
                    user,
                    client_first_bare: bare.to_string(),
                    server_first,
                    nonce,
                    gs2,
                    credential,
                };
                Ok(ScramStep::Challenge(challenge))
            }
            ScramState::Final { user, client_first_bare, server_first, nonce, gs2, credential } => {
                let (without_proof, proof) = text.rsplit_once(",p=").ok_or_else(|| fail("no proof"))?;
                let mut attrs = without_proof.split(',');
                let binding =
                    attrs.next().and_then(|a| a.strip_prefix("c=")).ok_or_else(|| fail("no channel binding"))?;
                if B64.decode(binding).ok().as_deref() != Some(gs2.as_bytes()) {
                    return Err(fail("channel binding does not match the GS2 header"));
                }
                let their_nonce = attrs.next().and_then(|a| a.strip_prefix("r=")).ok_or_else(|| fail("no nonce"))?;
                if !their_nonce.ends_with(&nonce) {
                    return Err(fail("the nonce is not the server's"));
                }
                let proof = B64.decode(proof).map_err(|_| fail("bad proof"))?;
                let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
                let client_signature = hmac(m, &credential.stored_key, auth_message.as_bytes());
                if proof.len() != client_signature.len() {
                    return Err(fail("bad proof length"));
                }
                let client_key: Vec<u8> = proof.iter().zip(&client_signature).map(|(a, b)| a ^ b).collect();
                if !constant_time_eq(&hash(m, &client_key), &credential.stored_key) {
                    return Err(invalid(m));
                }
                let server_signature = hmac(m, &credential.server_key, auth_message.as_bytes());
                let server_final = format!("v={}", B64.encode(server_signature)).into_bytes();
                Ok(ScramStep::Done { user, server_final })
            }
            ScramState::Done => Err(fail("the exchange is over")),
        }
    }
}

/// Parses a `--add-scram` argument as Kafka's `kafka-storage format --add-scram`:
/// `SCRAM-SHA-256=[name=alice,password=alice-secret]` (an optional `iterations=N`; the
/// password may be quoted).
pub fn parse_add_scram(arg: &str) -> Result<(Mechanism, String, ScramCredential), SecurityError> {
    let bad = |why: &str| SecurityError::Config(format!("--add-scram '{arg}': {why}"));
    let (mechanism, rest) = arg.split_once('=').ok_or_else(|| bad("expected MECHANISM=[name=...,password=...]"))?;
    let mechanism = Mechanism::parse(mechanism.trim())
        .filter(|m| m.scram_type().is_some())
        .ok_or_else(|| bad("the mechanism is SCRAM-SHA-256 or SCRAM-SHA-512"))?;
    let inner = rest.trim().strip_prefix('[').and_then(|r| r.strip_suffix(']')).ok_or_else(|| bad("expected [...]"))?;
    let (mut name, mut password, mut iterations) = (None, None, MIN_ITERATIONS);
    for part in inner.split(',') {
        let (k, v) = part.split_once('=').ok_or_else(|| bad("expected key=value pairs"))?;
        let v = v.trim().trim_matches('"').to_string();
        match k.trim() {
            "name" => name = Some(v),
            "password" => password = Some(v),
            "iterations" => {
                iterations = v
                    .parse::<i32>()
                    .ok()
                    .filter(|i| valid_iterations(*i))
                    .map(|i| i as u32)
                    .ok_or_else(|| bad(&format!("iterations must be {MIN_ITERATIONS} to {MAX_ITERATIONS}")))?
            }
            other => return Err(bad(&format!("unknown key {other} (name, password, iterations)"))),
        }
    }
    let name = name.filter(|n| !n.is_empty()).ok_or_else(|| bad("no name"))?;
    let password = password.ok_or_else(|| bad("no password"))?;
    Ok((mechanism, name, from_password(mechanism, &password, iterations)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::sasl::{CredentialStore, SaslSettings, Step};
    use crate::KafkaPrincipal;

    struct One(Mechanism, String, ScramCredential);

    impl CredentialStore for One {
        fn scram(&self, m: Mechanism, user: &str) -> Option<ScramCredential> {
            (m == self.0 && user == self.1).then(|| self.2.clone())
        }
    }

    /// A full exchange between rsasl's SCRAM client and the server settings.
    fn exchange(mechanism: Mechanism, stored: ScramCredential, user: &str, password: &str) -> Result<Step, String> {
        use rsasl::prelude::{Mechname, SASLClient, SASLConfig};
        let get = |k: &str| (k == "sasl.enabled.mechanisms").then(|| mechanism.name().to_string());
        let settings = SaslSettings::from_config(&get, Arc::new(One(mechanism, "alice".into(), stored)))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut server = settings.start(mechanism.name()).unwrap_or_else(|| panic!("enabled"));
        let config = SASLConfig::with_credentials(None, user.to_string(), password.to_string())
            .unwrap_or_else(|e| panic!("{e}"));
        let name = Mechname::parse(mechanism.name().as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        let mut client = SASLClient::new(config).start_suggested(&[name]).unwrap_or_else(|e| panic!("{e}"));
        let mut out = std::io::Cursor::new(Vec::new());
        client.step(None, &mut out).unwrap_or_else(|e| panic!("{e}"));
        loop {
            match server.step(out.get_ref())? {
                Step::Continue(challenge) => {
                    out = std::io::Cursor::new(Vec::new());
                    client.step(Some(&challenge), &mut out).map_err(|e| e.to_string())?;
                }
                done => return Ok(done),
            }
        }
    }

    #[test]
    fn scram_logs_in_with_the_password_only() {
        for m in [Mechanism::ScramSha256, Mechanism::ScramSha512] {
            let stored = from_password(m, "alice-secret", MIN_ITERATIONS).unwrap_or_else(|e| panic!("{e}"));
            match exchange(m, stored.clone(), "alice", "alice-secret") {
                Ok(Step::Done { principal, .. }) => assert_eq!(principal, KafkaPrincipal::user("alice")),
                other => panic!("{m:?}: {other:?}"),
            }
            assert!(exchange(m, stored.clone(), "alice", "wrong").is_err(), "{m:?} wrong password");
            assert!(exchange(m, stored, "bob", "alice-secret").is_err(), "{m:?} unknown user");
        }
    }

    /// librdkafka before 2.6.1 sends its own nonce again in front of the server's; Kafka (and
    /// Strata) accept a final nonce that ends with the server's, and the proof over what the
    /// client really sent.
    #[test]
    fn a_final_nonce_ending_with_the_servers_is_accepted() {
        let m = Mechanism::ScramSha256;
        let password = "pw";
        let stored = from_password(m, password, MIN_ITERATIONS).unwrap_or_else(|e| panic!("{e}"));
        for doubled in [false, true] {
            let mut server = ScramServer::new(m);
            let lookup = |u: &str| (u == "a=b,c").then(|| stored.clone());
            let first = server.step(b"n,,n=a=3Db=2Cc,r=cnonce", &lookup).unwrap_or_else(|e| panic!("{e}"));
            let ScramStep::Challenge(server_first) = first else { panic!("{first:?}") };
            let server_first = String::from_utf8(server_first).unwrap_or_default();
            let nonce = server_first.split(',').find_map(|p| p.strip_prefix("r=")).unwrap_or_default();
            assert!(nonce.starts_with("cnonce") && nonce.len() > 6, "{server_first}");
            let sent_nonce = if doubled { format!("cnonce{nonce}") } else { nonce.to_string() };
            let without_proof = format!("c=biws,r={sent_nonce}");
            let auth = format!("n=a=3Db=2Cc,r=cnonce,{server_first},{without_proof}");
            let mut salted = Default::default();
            hash_password::<Sha256>(password.as_bytes(), stored.iterations, &stored.salt, &mut salted);
            let (client_key, _) = derive_keys::<Sha256>(&salted);
            let signature = hmac(m, &Sha256::digest(client_key), auth.as_bytes());
            let proof: Vec<u8> = client_key.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
            let last = format!("{without_proof},p={}", B64.encode(&proof));
            match server.step(last.as_bytes(), &lookup) {
                Ok(ScramStep::Done { user, server_final }) => {
                    assert_eq!(user, "a=b,c");
                    assert!(server_final.starts_with(b"v="));
                }
                other => panic!("doubled={doubled}: {other:?}"),
            }
        }
        // A nonce that does not end with the server's is refused.
        let mut server = ScramServer::new(m);
        let lookup = |_: &str| Some(stored.clone());
        assert!(matches!(server.step(b"n,,n=u,r=x", &lookup), Ok(ScramStep::Challenge(_))));
        assert!(server.step(b"c=biws,r=xother,p=AAAA", &lookup).is_err());
        // Channel binding, a foreign authzid, extensions and bad names are refused.
        for bad in
            [&b"p=tls-unique,,n=u,r=x"[..], b"n,a=other,n=u,r=x", b"n,,n=u,r=x,ext=1", b"n,,n=a=4x,r=x", b"n,,r=x"]
        {
            assert!(ScramServer::new(m).step(bad, &lookup).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn add_scram_arguments_parse_as_kafka_storage_takes_them() {
        let (m, name, c) = parse_add_scram("SCRAM-SHA-512=[name=alice,password=\"a-secret\",iterations=8192]")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((m, name.as_str(), c.iterations), (Mechanism::ScramSha512, "alice", 8192));
        assert_eq!(c.stored_key.len(), 64);
        for bad in [
            "PLAIN=[name=a,password=b]",
            "SCRAM-SHA-256=name=a",
            "SCRAM-SHA-256=[password=b]",
            "SCRAM-SHA-256=[name=a,password=b,iterations=10]",
        ] {
            assert!(parse_add_scram(bad).is_err(), "{bad}");
        }
    }
}
