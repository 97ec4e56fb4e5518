"""JWT and JWKS helpers for tests/e2e/test_oauth.py (SASL/OAUTHBEARER, KIP-768).

The test venv has neither PyJWT nor `cryptography`: tokens are built with the standard library
and signed RS256 with the `openssl` CLI (`openssl dgst -sha256 -sign KEY`, PKCS#1 v1.5).

- `TEST_KEY` is the committed test key crates/security/tests/data/oauth-test-rsa.pem (kid
  `strata-test-rsa`); `new_key(dir, name)` makes more (`openssl genrsa -traditional`).
- `RsaKey.jwk()` is the key's public half as a JWK (n from `openssl rsa -noout -modulus`,
  e = AQAB); `write_jwks(path, *keys)` writes a JWKS file the broker reads through
  `sasl.oauthbearer.jwks.endpoint.url=file://...`, atomically (temp file + rename), so the
  broker's watcher never sees half a file.
- `token(key, sub=..., lifetime=..., **claims)` is an RS256 JWT with `iss`/`aud` of this test
  setup, `iat`, `exp` and `scope`; a claim given as None is left out. `unsigned_token` is an
  `alg: none` token, `client_first(token)` the RFC 7628 client-first message
  (`n,,\\x01auth=Bearer <jwt>\\x01\\x01`) a client sends in SaslAuthenticate.
"""
from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from e2e_util import REPO_ROOT

OPENSSL = "/usr/bin/openssl"
DATA = REPO_ROOT / "crates" / "security" / "tests" / "data"
TEST_KEY_PATH = DATA / "oauth-test-rsa.pem"
TEST_KID = "strata-test-rsa"

ISSUER = "https://idp.example/"
AUDIENCE = "strata"
INVALID_TOKEN = '{"status":"invalid_token"}'  # the server's answer to a refused token


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _openssl(*args, input: bytes | None = None) -> bytes:
    r = subprocess.run([OPENSSL, *args], input=input, capture_output=True, timeout=30)
    if r.returncode != 0:
        raise AssertionError(f"openssl {' '.join(args)} failed ({r.returncode}): {r.stderr.decode(errors='replace')}")
    return r.stdout


@dataclass(frozen=True)
class RsaKey:
    path: Path
    kid: str

    def jwk(self) -> dict:
        out = _openssl("rsa", "-in", str(self.path), "-noout", "-modulus").decode()
        n = bytes.fromhex(out.strip().split("=", 1)[1])
        return {"kty": "RSA", "kid": self.kid, "use": "sig", "alg": "RS256",
                "n": b64url(n), "e": b64url((65537).to_bytes(3, "big"))}

    def with_kid(self, kid: str) -> "RsaKey":
        return RsaKey(self.path, kid)


TEST_KEY = RsaKey(TEST_KEY_PATH, TEST_KID)


def new_key(directory: Path, name: str, kid: str | None = None) -> RsaKey:
    """A fresh 2048-bit RSA key (PKCS#1 PEM) in `directory`."""
    path = Path(directory) / f"{name}.pem"
    _openssl("genrsa", "-traditional", "-out", str(path), "2048")
    return RsaKey(path, kid or name)


def jwks(*keys: RsaKey) -> dict:
    return {"keys": [k.jwk() for k in keys]}


def write_jwks(path: Path, *keys: RsaKey, raw: str | None = None) -> Path:
    """Writes the JWKS of `keys` (or the text `raw`) to `path` atomically; returns path."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(raw if raw is not None else json.dumps(jwks(*keys), indent=2))
    os.replace(tmp, path)
    return path


def file_url(path: Path) -> str:
    return f"file://{Path(path).resolve()}"


def _jws(header: dict, payload: dict, key: RsaKey | None) -> str:
    signing_input = b64url(json.dumps(header, separators=(",", ":")).encode()) + "." + \
        b64url(json.dumps(payload, separators=(",", ":")).encode())
    if key is None:
        return signing_input + "."
    sig = _openssl("dgst", "-sha256", "-sign", str(key.path), input=signing_input.encode())
    return signing_input + "." + b64url(sig)


_DEFAULT = object()


def claims(sub="alice", lifetime: float = 3600, now: float | None = None, iss=_DEFAULT, aud=_DEFAULT,
           **extra) -> dict:
    """The payload: sub, iat, exp (now + lifetime), scope, iss and aud of the test setup.
    A claim passed as None is left out (e.g. sub=None)."""
    now = int(time.time() if now is None else now)
    payload = {"sub": sub, "iat": now, "exp": int(now + lifetime), "scope": "kafka",
               "iss": ISSUER if iss is _DEFAULT else iss, "aud": AUDIENCE if aud is _DEFAULT else aud}
    payload.update(extra)
    return {k: v for k, v in payload.items() if v is not None}


def token(key: RsaKey = TEST_KEY, kid=_DEFAULT, **kw) -> str:
    """An RS256 JWT signed with `key` (header kid: the key's, or `kid`; None: no kid)."""
    header = {"alg": "RS256", "typ": "JWT"}
    k = key.kid if kid is _DEFAULT else kid
    if k is not None:
        header["kid"] = k
    return _jws(header, claims(**kw), key)


def token_exp(tok: str) -> int:
    body = tok.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))["exp"]


def unsigned_token(**kw) -> str:
    """An `alg: none` JWT (empty signature) naming the test key's kid."""
    return _jws({"alg": "none", "typ": "JWT", "kid": TEST_KID}, claims(**kw), None)


def client_first(tok: str, authzid: str = "") -> bytes:
    """RFC 7628 initial client response: gs2 header, then auth=Bearer <token>."""
    return f"n,{'a=' + authzid if authzid else ''},\x01auth=Bearer {tok}\x01\x01".encode()
