"""SASL/OAUTHBEARER end to end (KIP-255 exchange, KIP-768 JWT validation against a JWKS, KIP-368
session lifetime), as Kafka's broker with `OAuthBearerValidatorCallbackHandler` behaves.

Tokens are RS256 JWTs made by oauth_util.py (standard library + `openssl dgst -sign`), signed
with the committed test key (kid `strata-test-rsa`) or with keys generated per test.

Brokers:
- `oauth` (module-scoped): PLAINTEXT (readiness probe) and a listener named OAUTH mapped to
  SASL_PLAINTEXT, configured in Kafka's per-listener, per-mechanism form
  (`listener.name.oauth.oauthbearer.sasl.oauthbearer.*`, the validator callback handler class, the
  OAuthBearerLoginModule JAAS entry) with the issuer as a bare global key;
- the rotation test's broker uses only bare global keys (`sasl.enabled.mechanisms`,
  `sasl.oauthbearer.jwks.endpoint.url=file:/path`) and `connections.max.reauth.ms`;
- the ACL test's broker adds `StandardAuthorizer` (`super.users=User:admin;User:ANONYMOUS`).

What is checked:
1. every client logs in with a valid token and round-trips records: confluent-kafka (`oauth_cb`),
   kafka-python 3 and aiokafka (`sasl_oauth_token_provider`), kafkajs (`oauthBearerProvider`,
   node/kafkajs_oauth.js, group consumer), kafka-clients 3.9.1 and 4.1.1 in one JVM
   (java/StrataOAuth.java, a login callback handler reading the token file; see there why not
   Kafka's `OAuthBearerLoginCallbackHandler` + `sasl.oauthbearer.token.endpoint.url=file:`);
2. refusals (expired, another key with the same kid, an unknown kid, wrong audience, wrong
   issuer, no audience, `nbf` in the future, `alg: none`, garbage, no sub): raw, the server
   answers `{"status":"invalid_token"}` with error NONE, then SASL_AUTHENTICATION_FAILED with
   that message after the client's `\\x01`, and closes; librdkafka reports that authentication
   error; the broker logs the reason and keeps serving. Java reports SaslAuthenticationException;
   kafkajs ignores the server's invalid_token challenge (its OAUTHBEARER response parser accepts
   anything), so its next request hits the unfinished exchange and the connection is closed;
3. KIP-368: session_lifetime_ms = exp - now (capped by connections.max.reauth.ms); a connection
   that does not re-authenticate is closed at its first request after exp; one that
   re-authenticates with a fresh token keeps serving; another principal on re-authentication is
   refused with Kafka's message; librdkafka with 6 s tokens produces for 8 s without an error;
4. JWKS rotation without a restart (the file is checked every 5 s): a new key accepted, a broken
   file logged and the previous keys kept, a removed key refused;
5. configurations the broker cannot serve stop its start with a message naming the problem;
6. ACLs apply to the token's principal `User:<sub>`.
"""
from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from kafka.protocol.metadata import ApiVersionsRequest, MetadataRequest
from kafka.protocol.sasl import SaslAuthenticateRequest, SaslHandshakeRequest

from conftest import Broker
from e2e_util import E2E_DIR, JAVA_CLIENTS, VERSIONS, ck_create_topic, java_program, wait_until
from oauth_util import (
    AUDIENCE,
    INVALID_TOKEN,
    ISSUER,
    TEST_KEY,
    TEST_KID,
    client_first,
    file_url,
    jwks as jwks_of,
    new_key,
    token,
    token_exp,
    unsigned_token,
    write_jwks,
)
from security_util import LogMark
from test_security import (  # noqa: F401 - _shared_broker_checks is an autouse fixture used here
    _SHARED,
    N,
    NONE,
    PARTS,
    SASL_AUTHENTICATION_FAILED,
    UNSUPPORTED_SASL_MECHANISM,
    Raw,
    _aiokafka_scenario,
    _kafka_python_roundtrip,
    _shared_broker_checks,
    addr,
    ck,
    ck_roundtrip,
    configure,
    names,
    new_topic,
    pki,
    read_to_eof,
)

LOGIN_MODULE = "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule"
VALIDATOR = "org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler"
REFUSED = r"OAUTHBEARER: token refused \(invalid_token\)"
NODE = shutil.which("node")
NODE_DIR = E2E_DIR / "node"


# ================================================================== brokers

def listener_oauth_sets(jwks_url: str, name: str = "oauth") -> list[str]:
    """OAUTHBEARER on listener `name` in Kafka's per-listener, per-mechanism form."""
    p = f"listener.name.{name}."
    return [f"{p}sasl.enabled.mechanisms=OAUTHBEARER",
            f"{p}oauthbearer.sasl.jaas.config={LOGIN_MODULE} required;",
            f"{p}oauthbearer.sasl.server.callback.handler.class={VALIDATOR}",
            f"{p}oauthbearer.sasl.oauthbearer.jwks.endpoint.url={jwks_url}",
            f"{p}oauthbearer.sasl.oauthbearer.expected.audience={AUDIENCE}",
            f"sasl.oauthbearer.expected.issuer={ISSUER}"]


def oauth_broker(b: Broker, jwks_path, *extra: str) -> Broker:
    """Adds the OAUTH listener (SASL_PLAINTEXT) to a not yet started broker."""
    return configure(b, {"OAUTH": "SASL_PLAINTEXT"}, *listener_oauth_sets(file_url(jwks_path)), *extra)


@pytest.fixture(scope="module")
def oauth(tmp_path_factory):
    d = tmp_path_factory.mktemp("oauth")
    jwks_path = write_jwks(d / "jwks.json", TEST_KEY)
    b = oauth_broker(Broker(d, name="oauth"), jwks_path, "group.initial.rebalance.delay.ms=0")
    _SHARED.append(b)
    try:
        b.start()
    except BaseException:
        _SHARED.remove(b)
        b.cleanup()
        raise
    yield b
    b.cleanup()
    _SHARED.remove(b)


@pytest.fixture(scope="module")
def other_key(tmp_path_factory):
    """An RSA key the broker's JWKS does not hold."""
    return new_key(tmp_path_factory.mktemp("keys"), "other", kid="other")


# ================================================================== client settings

def ck_oauth(tok_or_fn, calls: list | None = None, claim_exp: float | None = None) -> dict:
    """librdkafka settings: oauth_cb hands out `tok_or_fn` (a token or a function making one)
    with its exp as the expiry (or `claim_exp`: librdkafka refuses to send a token whose expiry
    it knows to be past, so refused-token tests claim a future one and let the broker judge)."""
    def cb(_config):
        tok = tok_or_fn() if callable(tok_or_fn) else tok_or_fn
        if calls is not None:
            calls.append(time.time())
        try:
            exp = float(token_exp(tok))
        except Exception:  # noqa: BLE001 - a garbage token has no exp
            exp = time.time() + 3600
        return tok, claim_exp if claim_exp is not None else exp
    return {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "OAUTHBEARER", "oauth_cb": cb}


def ck_metadata(bootstrap, conf) -> list:
    """[(id, host, port)] of the brokers Metadata names to a client of `conf`."""
    from confluent_kafka.admin import AdminClient
    md = AdminClient(ck(bootstrap, conf)).list_topics(timeout=15)
    return sorted((x.id, x.host, x.port) for x in md.brokers.values())


def ck_refused(bootstrap, conf, timeout=10.0):
    """A librdkafka producer that must fail authentication: its error_cb errors."""
    from confluent_kafka import KafkaError, KafkaException, Producer
    errors = []
    p = Producer(ck(bootstrap, conf, error_cb=errors.append, **{"reconnect.backoff.ms": 1000}))
    t0 = time.monotonic()
    while not errors and time.monotonic() - t0 < timeout:
        p.poll(0.05)
    elapsed = time.monotonic() - t0
    assert errors, f"no client error within {timeout}s"
    assert KafkaError._AUTHENTICATION in {e.code() for e in errors}, names(errors)
    assert elapsed < 5, f"authentication error after {elapsed:.1f}s"
    with pytest.raises(KafkaException):
        p.list_topics(timeout=0.5)
    return errors


class Login:
    """Raw SaslHandshake v1 + SaslAuthenticate v1 exchanges on one connection (kafka-python's
    protocol classes)."""

    def __init__(self, port):
        self.conn = Raw(port)
        self.sock = self.conn.sock

    def handshake(self, mechanism="OAUTHBEARER"):
        return self.conn.call(SaslHandshakeRequest, 1, mechanism=mechanism)

    def authenticate(self, auth_bytes: bytes):
        return self.conn.call(SaslAuthenticateRequest, 1, auth_bytes=auth_bytes)

    def login(self, tok: str, authzid: str = ""):
        """Handshake + the client-first message; the SaslAuthenticate response."""
        hs = self.handshake()
        assert (hs.error_code, list(hs.mechanisms)) == (NONE, ["OAUTHBEARER"]), hs
        return self.authenticate(client_first(tok, authzid))

    def metadata(self):
        return self.conn.call(MetadataRequest, 1, topics=None)

    def close(self):
        self.conn.close()


def expect_invalid_token(c: Login, au):
    """The rest of a refused exchange: the invalid_token challenge (error NONE), the client's
    \\x01, SASL_AUTHENTICATION_FAILED with that message, the connection closed."""
    assert (au.error_code, au.auth_bytes) == (NONE, INVALID_TOKEN.encode()), au
    fin = c.authenticate(b"\x01")
    assert (fin.error_code, fin.error_message) == (SASL_AUTHENTICATION_FAILED, INVALID_TOKEN), fin
    assert read_to_eof(c.sock) == b"", "more bytes after the failed SaslAuthenticate answer"


def accepted(port, tok) -> bool:
    """True if a raw login with `tok` succeeds and Metadata is then served; False if the token is
    refused with Kafka's invalid_token exchange (asserted); anything else fails."""
    c = Login(port)
    try:
        au = c.login(tok)
        if au.error_code == NONE and au.auth_bytes == b"":
            assert c.metadata().brokers, "no Metadata after a successful login"
            return True
        expect_invalid_token(c, au)
        return False
    finally:
        c.close()


def assert_serves_valid_client(b: Broker):
    assert accepted(b.ports["OAUTH"], token(sub="alice")), "a valid token was refused"


# ================================================================== 1. every client

def test_ck_oauth_produce_consume(oauth):
    """librdkafka's oauth_cb: Metadata names the OAUTH listener, an acks=all round trip."""
    calls = []
    conf = ck_oauth(lambda: token(sub="alice"), calls)
    bs = addr(oauth, "OAUTH")
    assert ck_metadata(bs, conf) == [(1, "127.0.0.1", oauth.ports["OAUTH"])]
    ck_roundtrip(bs, conf)
    assert calls, "oauth_cb never called"


def _kafka_python_provider(sub="alice"):
    try:  # kafka-python 3.x
        from kafka.net.sasl.oauth import AbstractTokenProvider
    except ImportError:  # 2.x
        from kafka.sasl.oauth import AbstractTokenProvider

    class Provider(AbstractTokenProvider):
        def token(self):
            return token(sub=sub)
    return Provider()


def test_kafka_python_oauth(oauth, closer):
    """kafka-python 3 (`sasl_oauth_token_provider`, kafka.net.sasl.oauth.AbstractTokenProvider):
    admin create, acks=all producer, assign() consumer."""
    kw = dict(security_protocol="SASL_PLAINTEXT", sasl_mechanism="OAUTHBEARER",
              sasl_oauth_token_provider=_kafka_python_provider())
    _kafka_python_roundtrip(addr(oauth, "OAUTH"), kw, new_topic("kpy-oauth"), closer)


def test_aiokafka_oauth(oauth):
    """aiokafka (`sasl_oauth_token_provider`, an async aiokafka.abc.AbstractTokenProvider):
    admin create, acks=all producer, group-free consumer."""
    from aiokafka.abc import AbstractTokenProvider

    class Provider(AbstractTokenProvider):
        calls = 0

        async def token(self):
            Provider.calls += 1
            return token(sub="alice")

    kw = dict(security_protocol="SASL_PLAINTEXT", sasl_mechanism="OAUTHBEARER",
              sasl_oauth_token_provider=Provider())
    acked, got = asyncio.run(_aiokafka_scenario(addr(oauth, "OAUTH"), kw, new_topic("aio-oauth")))
    assert acked == [(i % PARTS, i // PARTS) for i in range(N)]
    assert sorted(got) == sorted((i % PARTS, i // PARTS, f"k{i}".encode(), f"aio-{i}".encode())
                                 for i in range(N))
    assert Provider.calls >= 1


def run_kafkajs_oauth(bootstrap, topic, token_file, mode, n=N, timeout=60):
    if NODE is None:
        pytest.fail("node not found: run scripts/install-test-deps.sh")
    if not (NODE_DIR / "node_modules" / "kafkajs").is_dir():
        pytest.fail("tests/e2e/node/node_modules missing: run scripts/install-test-deps.sh")
    cmd = [NODE, str(NODE_DIR / "kafkajs_oauth.js"), bootstrap, topic, str(n), str(token_file), mode]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=NODE_DIR)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"kafkajs hung; stderr:\n{(e.stderr or '')[-4000:]}")
    lines = [l[7:] for l in r.stdout.splitlines() if l.startswith("RESULT ")]
    assert lines, f"no RESULT from kafkajs (exit {r.returncode}); stderr:\n{r.stderr[-4000:]}"
    return json.loads(lines[-1]), r.stderr


@pytest.mark.node
def test_kafkajs_oauth(oauth, tmp_path):
    """kafkajs `mechanism: 'oauthbearer'` with an oauthBearerProvider reading a token file: admin
    create + describeCluster, acks=-1 produce, a group consumer reads every record. With an
    expired token kafkajs fails: it takes the server's invalid_token challenge for success, so its
    next request arrives in the unfinished exchange and the broker closes the connection (as
    Kafka's SaslServerAuthenticator does); the broker logs the token's refusal."""
    bs, topic = addr(oauth, "OAUTH"), new_topic("kjs-oauth")
    tf = tmp_path / "token.jwt"
    tf.write_text(token(sub="alice"))
    res, err = run_kafkajs_oauth(bs, topic, tf, "ok")
    assert "error" not in res, f"kafkajs failed: {res}\nstderr:\n{err[-4000:]}"
    assert res["brokers"] == [f"1@127.0.0.1:{oauth.ports['OAUTH']}"], res["brokers"]
    assert all(s["errorCode"] == 0 for s in res["sent"]), res["sent"]
    assert {o["partition"]: (int(o["low"]), int(o["high"])) for o in res["offsets"]} == {
        q: (0, len(range(q, N, PARTS))) for q in range(PARTS)}, res["offsets"]
    got = sorted((r["partition"], r["offset"], r["key"], r["value"]) for r in res["records"])
    assert got == sorted((i % PARTS, i // PARTS, f"k{i}", f"kafkajs-oauth-{i}") for i in range(N)), got[:5]
    assert res["providerCalls"] >= 1

    mark = LogMark(oauth)
    tf.write_text(token(sub="alice", lifetime=-120))
    t0 = time.monotonic()
    res, err = run_kafkajs_oauth(bs, new_topic("kjs-oauth"), tf, "refused")
    assert res.get("name") == "KafkaJSConnectionClosedError", f"kafkajs with an expired token: {res}"
    assert time.monotonic() - t0 < 20
    mark.wait_for(REFUSED + r".*the token expired")
    mark.wait_for(r"closing connection.*unexpected request \(api key 3\) before SASL authentication")
    assert_serves_valid_client(oauth)


@pytest.fixture(scope="session")
def java_oauth(tmp_path_factory):
    """StrataOAuth compiled (against 3.9.1); the command prefix running it, and the classpaths
    of kafka-clients 3.9.1 and 4.1.1 (each with the compiled classes)."""
    out = tmp_path_factory.mktemp("java-oauth")
    cmd = java_program("3", E2E_DIR / "java" / "StrataOAuth.java", out)
    cps = []
    for client in ("3", "4"):
        jar_dir, key = JAVA_CLIENTS[client]
        jars = [jar_dir / f"{j}.jar" for j in VERSIONS[key].split()]
        missing = [str(j) for j in jars if not j.exists()]
        if missing:
            pytest.fail(f"missing jars {missing}: run scripts/install-test-deps.sh")
        cps.append(":".join([str(out)] + [str(j) for j in jars]))
    # the launcher itself runs without kafka-clients on its classpath
    return cmd[:cmd.index("-cp")] + ["-cp", str(out), "StrataOAuth"], cps


@pytest.mark.java
def test_java_oauth(oauth, java_oauth, tmp_path):
    """kafka-clients 3.9.1 and 4.1.1 (one JVM, a class loader each) with OAuthBearerLoginModule:
    Admin describeCluster + createTopics, acks=all producer, assign() consumer; an Admin with an
    expired token fails with SaslAuthenticationException `{"status":"invalid_token"}` at once."""
    prefix, cps = java_oauth
    good, bad = tmp_path / "good.jwt", tmp_path / "bad.jwt"
    good.write_text(token(sub="alice"))
    bad.write_text(token(sub="alice", lifetime=-120))
    mark = LogMark(oauth)
    cmd = prefix + [addr(oauth, "OAUTH"), str(good), str(bad), new_topic("java-oauth"), "10"] + cps
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"java client hung; stderr:\n{(e.stderr or '')[-4000:]}")
    results = [json.loads(l[7:]) for l in r.stdout.splitlines() if l.startswith("RESULT ")]
    assert r.returncode == 0 and len(results) == 2, \
        f"java exited {r.returncode}\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-4000:]}"
    assert [x["version"] for x in results] == [VERSIONS["JAVA_KAFKA_CLIENTS_VERSION"],
                                               VERSIONS["JAVA4_KAFKA_CLIENTS_VERSION"]], results
    for res in results:
        assert res["ok"] is True, f"kafka-clients {res['version']} failed: {res}\nstderr:\n{r.stderr[-4000:]}"
        assert res["nodes"] == [f"1@127.0.0.1:{oauth.ports['OAUTH']}"], res
        assert (res["produced"], res["consumed"], res["mismatches"]) == (10, 10, []), res
        refused = res["refused"]
        assert refused and "org.apache.kafka.common.errors.SaslAuthenticationException" in refused["errors"], res
        assert refused["message"] == INVALID_TOKEN, res
        assert refused["ms"] < 10000, res
    mark.wait_for(REFUSED + r".*the token expired")


# ================================================================== 2. refusals

REFUSALS = {
    # case: (token(other_key), reason the broker logs)
    "expired": (lambda k: token(sub="alice", lifetime=-120), r"the token expired"),
    "other-key-same-kid": (lambda k: token(k.with_kid(TEST_KID), sub="alice"), r"does not verify"),
    "unknown-kid": (lambda k: token(k.with_kid("unknown-kid"), sub="alice"), r'no key with kid "unknown-kid"'),
    "wrong-audience": (lambda k: token(sub="alice", aud="someone-else"), r"aud claim .*names none of"),
    "no-audience": (lambda k: token(sub="alice", aud=None), r"no aud claim"),
    "wrong-issuer": (lambda k: token(sub="alice", iss="https://evil.example/"), r"iss claim .* is not"),
    "not-yet-valid": (lambda k: token(sub="alice", nbf=int(time.time()) + 600), r"not valid yet"),
    "alg-none": (lambda k: unsigned_token(sub="alice"), r'alg "none" is not allowed'),
    "garbage": (lambda k: "this-is-not-a-jwt", r"malformed JWT"),
    "no-sub": (lambda k: token(sub=None), r"no sub claim"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_token_refused(oauth, other_key, case, closer):
    """Raw: SaslAuthenticate with the token answers error NONE with auth bytes
    `{"status":"invalid_token"}`; the client's \\x01 then gets SASL_AUTHENTICATION_FAILED with that
    message and the connection closes. The broker logs the reason and keeps serving a valid token."""
    make, reason = REFUSALS[case]
    mark = LogMark(oauth)
    c = closer(Login(oauth.ports["OAUTH"]))
    expect_invalid_token(c, c.login(make(other_key)))
    line = mark.wait_for(REFUSED)
    assert re.search(reason, line), f"the broker's refusal does not name /{reason}/: {line}"
    assert_serves_valid_client(oauth)


def test_ck_tokens_refused(oauth, other_key):
    """librdkafka (oauth_cb) with each refused token, all at once (a client with an oauth_cb
    takes 1 s to construct): an authentication error carrying `{"status":"invalid_token"}` within
    seconds and no metadata; the broker logs every reason and keeps serving a valid token."""
    bs = addr(oauth, "OAUTH")
    mark = LogMark(oauth)
    tokens = {case: make(other_key) for case, (make, _) in REFUSALS.items()}
    with ThreadPoolExecutor(len(tokens)) as pool:
        futures = {case: pool.submit(ck_refused, bs, ck_oauth(tok, claim_exp=time.time() + 3600))
                   for case, tok in tokens.items()}
        results = {case: f.result() for case, f in futures.items()}
    for case, errors in results.items():
        assert any(INVALID_TOKEN in e.str() for e in errors), (case, names(errors))
    for case, (_, reason) in REFUSALS.items():
        mark.wait_for(REFUSED + ".*" + reason)
    assert_serves_valid_client(oauth)


def test_raw_valid_token(oauth, closer):
    """SaslHandshake v1 lists only OAUTHBEARER (PLAIN: UNSUPPORTED_SASL_MECHANISM); a valid token
    answers error NONE, empty auth bytes and session_lifetime_ms = (exp - now) * 1000; Metadata
    then names the OAUTH listener. An authzid equal to the sub is accepted; another one fails with
    Kafka's message."""
    port = oauth.ports["OAUTH"]
    c = closer(Login(port))
    hs = c.handshake("PLAIN")
    assert (hs.error_code, list(hs.mechanisms)) == (UNSUPPORTED_SASL_MECHANISM, ["OAUTHBEARER"]), hs

    c = closer(Login(port))
    assert c.conn.call(ApiVersionsRequest, 0).error_code == NONE
    tok = token(sub="alice", lifetime=600)
    au = c.login(tok)
    left_ms = (token_exp(tok) - time.time()) * 1000
    assert (au.error_code, au.auth_bytes) == (NONE, b""), au
    assert abs(au.session_lifetime_ms - left_ms) < 3000, (au.session_lifetime_ms, left_ms)
    md = c.metadata()
    assert [(x.node_id, x.host, x.port) for x in md.brokers] == [(1, "127.0.0.1", port)], md.brokers

    c = closer(Login(port))
    au = c.login(token(sub="alice"), authzid="alice")
    assert (au.error_code, au.auth_bytes) == (NONE, b""), au
    assert c.metadata().brokers

    c = closer(Login(port))
    au = c.login(token(sub="alice"), authzid="bob")
    assert (au.error_code, au.error_message) == (
        SASL_AUTHENTICATION_FAILED, "Authentication failed: Client requested an authorization id (bob) that is "
                                    "different from the token's principal name (alice)"), au
    assert read_to_eof(c.sock) == b""


def test_request_instead_of_invalid_token_ack_closes(oauth, closer):
    """After the invalid_token challenge the exchange is not over: a Metadata request instead of
    the client's \\x01 is not answered and closes the connection (Kafka's SaslServerAuthenticator
    accepts only SaslAuthenticate there). This is what kafkajs runs into."""
    mark = LogMark(oauth)
    c = closer(Login(oauth.ports["OAUTH"]))
    au = c.login(token(sub="alice", lifetime=-120))
    assert (au.error_code, au.auth_bytes) == (NONE, INVALID_TOKEN.encode()), au
    c.conn.send(MetadataRequest, 1, topics=None)
    assert read_to_eof(c.sock) == b"", "Metadata was answered in the middle of the SASL exchange"
    mark.wait_for(r"closing connection.*before SASL authentication")


# ================================================================== 3. session lifetime, re-authentication

def test_session_ends_at_token_exp(oauth, closer):
    """KIP-368: two connections log in with a token valid for ~3 s (session_lifetime_ms says so).
    One re-authenticates before exp (SaslHandshake + SaslAuthenticate on the same connection, a
    fresh token: a new lifetime) and keeps serving past the first token's exp; the other does not
    and is closed, unanswered, at its first request after exp. The broker logs why."""
    port = oauth.ports["OAUTH"]
    mark = LogMark(oauth)
    short = token(sub="alice", lifetime=3)
    exp = token_exp(short)
    expires, renews = closer(Login(port)), closer(Login(port))
    for c in (expires, renews):
        au = c.login(short)
        left_ms = (exp - time.time()) * 1000
        assert (au.error_code, au.auth_bytes) == (NONE, b""), au
        assert 0 < au.session_lifetime_ms <= 3000 and abs(au.session_lifetime_ms - left_ms) < 1000, (
            au.session_lifetime_ms, left_ms)
        assert c.metadata().brokers
    fresh = token(sub="alice", lifetime=600)
    au = renews.login(fresh)
    assert (au.error_code, au.auth_bytes) == (NONE, b""), au
    assert abs(au.session_lifetime_ms - (token_exp(fresh) - time.time()) * 1000) < 3000, au
    assert renews.metadata().brokers
    assert expires.metadata().brokers, "the session ended before the token's exp"
    wait_until(lambda: time.time() > exp + 0.3, 10, 0.05)
    assert renews.metadata().brokers, "the re-authenticated connection stopped serving at the old exp"
    expires.conn.send(MetadataRequest, 1, topics=None)
    assert read_to_eof(expires.sock) == b"", "a request after the token's exp was answered"
    mark.wait_for(r"closing connection.*session expired")
    assert renews.metadata().brokers


def test_reauthentication_cannot_change_principal(oauth, closer):
    """Re-authenticating with a valid token of another sub is refused with Kafka's message
    (SaslServerAuthenticator.ReauthInfo.ensurePrincipalUnchanged) and the connection closes."""
    c = closer(Login(oauth.ports["OAUTH"]))
    au = c.login(token(sub="alice"))
    assert (au.error_code, au.auth_bytes) == (NONE, b""), au
    au = c.login(token(sub="bob"))
    assert (au.error_code, au.error_message) == (
        SASL_AUTHENTICATION_FAILED, "Cannot change principals during re-authentication from User.alice: User.bob"), au
    assert read_to_eof(c.sock) == b""


def test_reauthentication_with_refused_token(oauth, closer):
    """A re-authentication whose token is refused (expired) fails as a first login does
    (invalid_token, then SASL_AUTHENTICATION_FAILED) and closes the connection."""
    c = closer(Login(oauth.ports["OAUTH"]))
    au = c.login(token(sub="alice"))
    assert (au.error_code, au.auth_bytes) == (NONE, b""), au
    expect_invalid_token(c, c.login(token(sub="alice", lifetime=-120)))


def test_ck_short_lived_tokens_reauthenticate(oauth):
    """librdkafka with 6 s tokens produces continuously for 8 s: it fetches a new token from
    oauth_cb and re-authenticates (KIP-368) before the session ends at the token's exp, so no
    connection is closed, no client error is reported and every record is delivered, also well
    after the first token's exp.

    (librdkafka refreshes a token at 80 % of the lifetime it is told, checked once a second, and
    re-authenticates at 90 % of the session lifetime, independently of each other: told a 6 s
    token's true exp it may re-authenticate with the old token, get a session of a few hundred ms
    and race its own next request past exp, which the broker then closes, as Kafka does. Told
    that the token expires 3 s early, it always has the new token by then.)"""
    from confluent_kafka import Producer
    bs, topic = addr(oauth, "OAUTH"), new_topic("ck-reauth")
    ck_create_topic(oauth.bootstrap, topic, partitions=1)
    calls, first_exp = [], []

    def cb(_config):
        tok = token(sub="alice", lifetime=6)
        calls.append(time.time())
        first_exp.append(token_exp(tok))
        return tok, float(token_exp(tok) - 3)

    mark = LogMark(oauth)
    errors, delivered = [], []
    conf = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "OAUTHBEARER", "oauth_cb": cb}
    p = Producer(ck(bs, conf, error_cb=errors.append, **{"linger.ms": 5}))
    t0 = time.time()
    sent = 0
    while time.time() - t0 < 8:
        p.produce(topic, value=f"reauth-{sent}".encode(), partition=0,
                  on_delivery=lambda err, msg: delivered.append((err, time.time())))
        sent += 1
        p.poll(0.1)
    assert p.flush(20) == 0
    assert errors == [], names(errors)
    assert [e for e, _ in delivered if e] == [], [str(e) for e, _ in delivered if e][:5]
    assert len(delivered) == sent
    assert len(calls) >= 2, f"oauth_cb called {len(calls)} times in {time.time() - t0:.0f}s"
    assert max(t for _, t in delivered) > first_exp[0] + 1, "nothing delivered after the first token's exp"
    closed = [l for l in mark.text().splitlines() if re.search(r"closing connection.*listener=OAUTH", l)]
    assert closed == [], f"the broker closed librdkafka's connections: {closed[:3]}"


# ================================================================== 4. JWKS rotation

def test_jwks_rotation_without_restart(broker_factory, tmp_path):
    """The JWKS file (bare global keys, a `file:/path` URL) is re-read when it changes: key B is
    refused while the JWKS holds only A, accepted within seconds of B being added; a broken file
    is logged and the previous keys stay in use; a key removed from the file is refused. Also:
    connections.max.reauth.ms caps session_lifetime_ms below the token's own lifetime."""
    key_b = new_key(tmp_path, "key-b", kid="rot-b")
    jwks_path = write_jwks(tmp_path / "jwks.json", TEST_KEY)
    b = configure(broker_factory(start=False), {"OAUTH": "SASL_PLAINTEXT"},
                  "sasl.enabled.mechanisms=OAUTHBEARER",
                  f"sasl.oauthbearer.jwks.endpoint.url=file:{jwks_path.resolve()}",
                  f"sasl.oauthbearer.expected.audience={AUDIENCE}",
                  f"sasl.oauthbearer.expected.issuer={ISSUER}",
                  "listener.name.oauth.connections.max.reauth.ms=2000")
    b.start()
    port = b.ports["OAUTH"]
    tok_a = lambda: token(TEST_KEY, sub="alice")  # noqa: E731
    tok_b = lambda: token(key_b, sub="alice")  # noqa: E731

    mark = LogMark(b)
    assert not accepted(port, tok_b()), "a token of a key outside the JWKS was accepted"
    mark.wait_for(REFUSED + r'.*no key with kid "rot-b"')
    c = Login(port)
    try:
        au = c.login(tok_a())
        assert (au.error_code, au.session_lifetime_ms) == (NONE, 2000), au
    finally:
        c.close()

    mark = LogMark(b)
    write_jwks(jwks_path, TEST_KEY, key_b)
    wait_until(lambda: accepted(port, tok_b()), 12, 0.5, "key B still refused 12 s after it was added")
    mark.wait_for(r"OAUTHBEARER JWKS (changed|re-read)")
    assert accepted(port, tok_a())

    mark = LogMark(b)
    write_jwks(jwks_path, raw='{"keys": [ this is not a JWKS')
    line = mark.wait_for(r"OAUTHBEARER JWKS does not load; keeping the previous keys", 12)
    assert "not JSON" in line, line
    assert accepted(port, tok_b()) and accepted(port, tok_a()), "the previous keys were dropped"

    write_jwks(jwks_path, key_b)
    wait_until(lambda: not accepted(port, tok_a()), 12, 0.5, "key A still accepted 12 s after its removal")
    assert accepted(port, tok_b())


class JwksEndpoint:
    """An HTTPS JWKS endpoint on 127.0.0.1 (the test PKI's server certificate), as an identity
    provider serves one: `serve(*keys)` or `fail(status)` changes the answer; `requests` counts
    GETs."""

    def __init__(self, pki, *keys):
        import http.server
        import ssl
        import threading

        endpoint = self
        self.status, self.body, self.requests = 200, b"", 0
        self.serve(*keys)

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the stdlib's name
                endpoint.requests += 1
                status, body = endpoint.status, endpoint.body
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pki.server_chain, pki.server_key)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}/jwks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def serve(self, *keys):
        self.status, self.body = 200, json.dumps(jwks_of(*keys)).encode()

    def fail(self, status=503):
        self.status, self.body = status, b"unavailable"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_https_jwks_endpoint(broker_factory, tmp_path, pki):
    """sasl.oauthbearer.jwks.endpoint.url=https://... as with a real identity provider (Kafka's
    RefreshingHttpsJwks): the JWKS is fetched at start over TLS trusting the CA named in the
    OAUTHBEARER JAAS options; a token of a key the provider added later is accepted within
    seconds (an unknown kid asks for an early fetch, not the hourly refresh); while the provider
    fails, the keys in use stay; a provider whose certificate is not trusted stops the start."""
    key_b = new_key(tmp_path, "key-b", kid="idp-b")
    idp = JwksEndpoint(pki, TEST_KEY)
    try:
        jaas = (f'{LOGIN_MODULE} required ssl.truststore.type="PEM" '
                f'ssl.truststore.location="{pki.ca}";')
        sets = listener_oauth_sets(idp.url) + [f"listener.name.oauth.oauthbearer.sasl.jaas.config={jaas}"]
        b = configure(broker_factory(start=False), {"OAUTH": "SASL_PLAINTEXT"}, *sets)
        b.start()
        port = b.ports["OAUTH"]
        assert idp.requests == 1, f"{idp.requests} fetches at start, expected 1"
        assert accepted(port, token(TEST_KEY, sub="alice"))

        # The provider adds key B: the first token of B is refused and asks for a fetch.
        idp.serve(TEST_KEY, key_b)
        mark = LogMark(b)
        assert not accepted(port, token(key_b, sub="bob"))
        mark.wait_for(r"names a key the JWKS lacks")
        wait_until(lambda: accepted(port, token(key_b, sub="bob")), 15, 0.5,
                   "key B still refused 15 s after the provider served it")
        assert idp.requests == 2, f"{idp.requests} fetches, expected 2 (start, then one for kid idp-b)"

        # The provider fails: tokens of the keys in use still work, the failure is logged.
        idp.fail(503)
        mark = LogMark(b)
        assert not accepted(port, token(new_key(tmp_path, "key-c", kid="idp-c"), sub="carol"))
        mark.wait_for(r"OAUTHBEARER JWKS does not load; keeping the previous keys", 15)
        assert accepted(port, token(TEST_KEY, sub="alice")) and accepted(port, token(key_b, sub="bob"))

        # Without the CA in the JAAS options the provider's certificate is not trusted (Mozilla's
        # roots only): the broker does not start.
        idp.serve(TEST_KEY)
        bad = configure(broker_factory(start=False), {"OAUTH": "SASL_PLAINTEXT"}, *listener_oauth_sets(idp.url))
        bad.data_dir.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(bad.argv(), capture_output=True, text=True, timeout=30, cwd=bad.workdir)
        out = r.stdout + r.stderr
        assert r.returncode != 0, out[-3000:]
        assert re.search(r"cannot fetch https://127\.0\.0\.1:\d+/jwks.*(certificate|UnknownIssuer)", out), out[-3000:]
        assert "panicked" not in out
    finally:
        idp.close()


# ================================================================== 5. configurations refused at start

BAD_CONFIGS = {
    # case: (sets(jwks file, tmp dir), regex the broker's output must match)
    "no-jwks-url": (lambda j, d: ["listener.name.oauth.sasl.enabled.mechanisms=OAUTHBEARER"],
                    r"OAUTHBEARER is enabled but sasl\.oauthbearer\.jwks\.endpoint\.url is not set"),
    "unreachable-https-jwks": (lambda j, d: listener_oauth_sets("https://127.0.0.1:1/jwks"),
                              r"cannot fetch https://127\.0\.0\.1:1/jwks"),
    "ldap-jwks-url": (lambda j, d: listener_oauth_sets("ldap://127.0.0.1/jwks"),
                      r"neither an https:, http: nor file: URL"),
    "missing-jwks-file": (lambda j, d: listener_oauth_sets(f"file://{d}/missing/jwks.json"),
                          r"cannot read .*/missing/jwks\.json"),
    "broken-jwks-file": (lambda j, d: listener_oauth_sets(file_url(write_jwks(d / "broken.json", raw="{nope"))),
                         r"broken\.json is not a usable JWKS"),
    "hmac-only-jwks": (lambda j, d: listener_oauth_sets(file_url(write_jwks(
        d / "oct.json", raw=json.dumps({"keys": [{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}]})))),
        r"no usable signature key"),
    "unknown-callback-handler": (lambda j, d: listener_oauth_sets(file_url(j)) + [
        "listener.name.oauth.oauthbearer.sasl.server.callback.handler.class=com.example.MyValidator"],
        r"com\.example\.MyValidator"),
    "plain-login-module": (lambda j, d: listener_oauth_sets(file_url(j)) + [
        "listener.name.oauth.oauthbearer.sasl.jaas.config="
        "org.apache.kafka.common.security.plain.PlainLoginModule required;"],
        r"OAuthBearerLoginModule"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_oauth_config_refused(broker_factory, tmp_path, case):
    """An OAUTHBEARER listener the broker cannot serve is a startup error naming the problem,
    never a broker that starts and refuses every token."""
    sets_for, pattern = BAD_CONFIGS[case]
    jwks_path = write_jwks(tmp_path / "jwks.json", TEST_KEY)
    b = configure(broker_factory(start=False), {"OAUTH": "SASL_PLAINTEXT"}, *sets_for(jwks_path, tmp_path))
    b.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        r = subprocess.run(b.argv(), capture_output=True, text=True, timeout=20, cwd=b.workdir)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{case}: the broker did not exit within 20 s (it should refuse the config)")
    out = r.stdout + r.stderr
    assert r.returncode != 0, f"{case}: exit 0\n{out[-3000:]}"
    assert re.search(pattern, out), f"{case}: exit {r.returncode}, no /{pattern}/ in:\n{out[-3000:]}"
    assert "panicked" not in out, out[-3000:]


# ================================================================== 6. ACLs on the token's principal

def test_acls_apply_to_token_principal(broker_factory, tmp_path):
    """StandardAuthorizer, super users admin and ANONYMOUS (the PLAINTEXT listener). An ACL created
    over PLAINTEXT lets User:alice WRITE topic X: alice's token produces to X and gets
    TOPIC_AUTHORIZATION_FAILED on Y; bob's token gets it on X. The principal is User:<sub>."""
    from confluent_kafka import KafkaError, Producer, TopicPartition
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )
    jwks_path = write_jwks(tmp_path / "jwks.json", TEST_KEY)
    b = oauth_broker(broker_factory(start=False), jwks_path,
                     "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                     "super.users=User:admin;User:ANONYMOUS")
    b.start()
    plain, bs = b.bootstrap, addr(b, "OAUTH")
    x, y = new_topic("acl-x"), new_topic("acl-y")
    admin = ck_create_topic(plain, x, partitions=1)
    ck_create_topic(plain, y, partitions=1)
    binding = AclBinding(ResourceType.TOPIC, x, ResourcePatternType.LITERAL, "User:alice", "*",
                         AclOperation.WRITE, AclPermissionType.ALLOW)
    for f in admin.create_acls([binding], request_timeout=20).values():
        f.result(20)

    def produce(sub, topic, n=5):
        out = []
        p = Producer(ck(bs, ck_oauth(lambda: token(sub=sub)), **{"message.timeout.ms": 10000}))
        for i in range(n):
            p.produce(topic, value=f"{sub}-{i}".encode(), partition=0,
                      on_delivery=lambda err, msg: out.append(err.code() if err else None))
        assert p.flush(20) == 0
        return out

    with ThreadPoolExecutor(3) as pool:  # (a client with an oauth_cb takes 1 s to construct)
        alice_x, alice_y, bob_x = pool.map(produce, ("alice", "alice", "bob"), (x, y, x))
    assert alice_x == [None] * 5
    assert alice_y == [KafkaError.TOPIC_AUTHORIZATION_FAILED] * 5
    assert bob_x == [KafkaError.TOPIC_AUTHORIZATION_FAILED] * 5
    from confluent_kafka import Consumer
    c = Consumer(ck(plain, {}, **{"group.id": "strata-e2e-unused"}))
    try:
        assert c.get_watermark_offsets(TopicPartition(x, 0), timeout=15) == (0, 5)
        assert c.get_watermark_offsets(TopicPartition(y, 0), timeout=15) == (0, 0)
    finally:
        c.close()
