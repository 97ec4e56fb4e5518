"""TLS and SASL helpers for tests/e2e/test_security.py.

`make_pki(dir)` builds a throwaway PKI with the `openssl` CLI (the test venv has no
`cryptography`):

- `ca.pem`: the test CA (O=Strata, CN=Strata Test CA), which the broker trusts;
- the server's certificate for 127.0.0.1 / localhost (subjectAltName IP + DNS) signed by
  the CA, as a Kafka PEM keystore (PKCS#8 key, then the chain: server cert, CA cert) both
  unencrypted (`server-keystore.pem`) and encrypted (`server-keystore-enc.pem`, PKCS#8
  PBES2 aes-256-cbc with `KEY_PASSWORD`);
- a client certificate `CN=alice,OU=eng,O=Strata` signed by the CA (`alice.pem`,
  `alice.key`, and `alice-keystore.pem` = key + cert for Java's PEM keystore);
- a second CA the broker does not trust (`rogue-ca.pem`) and a client certificate
  `CN=mallory,OU=eng,O=Strata` from it (`mallory.*`). The rogue CA impersonates the trusted
  one: same subject DN, its own key. That matters: OpenSSL and Java clients only send a client
  certificate whose issuer is among the CA names of the server's CertificateRequest, so
  mallory's certificate from a differently named CA would never reach the broker (the client
  would connect without one); with the same name it is sent and the broker's verifier must
  reject it on the signature.

The `*_conf` / `*_kwargs` / `*_props` helpers return each client's settings for one
security protocol (SSL, SASL_SSL, SASL_PLAINTEXT), optional mTLS client certificate and
optional SASL/PLAIN user.
"""
from __future__ import annotations

import re
import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

OPENSSL = "/usr/bin/openssl"
KEY_PASSWORD = "keystore-secret"  # the encrypted server keystore's ssl.key.password

# SASL/PLAIN users the broker's JAAS config knows
USERS = {"alice": "alice-secret", "bob": "bob-secret"}
PLAIN_MODULE = "org.apache.kafka.common.security.plain.PlainLoginModule"

ALICE_SUBJECT = "/O=Strata/OU=eng/CN=alice"      # RFC 2253: CN=alice,OU=eng,O=Strata
MALLORY_SUBJECT = "/O=Strata/OU=eng/CN=mallory"
CA_SUBJECT = "/O=Strata/CN=Strata Test CA"

_OPENSSL_CNF = """\
[ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = unused
[ ca_ext ]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[ server_ext ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer
[ client_ext ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid,issuer
"""


def openssl(*args, cwd: Path, input: bytes | None = None) -> str:
    r = subprocess.run([OPENSSL, *args], cwd=cwd, input=input, capture_output=True, timeout=60)
    if r.returncode != 0:
        raise AssertionError(f"openssl {' '.join(args)} failed ({r.returncode}):\n"
                             f"{r.stdout.decode(errors='replace')}\n{r.stderr.decode(errors='replace')}")
    return r.stdout.decode(errors="replace")


@dataclass(frozen=True)
class Pki:
    dir: Path

    def p(self, name: str) -> str:
        return str(self.dir / name)

    # the trusted CA and the server
    ca = property(lambda s: s.p("ca.pem"))
    server_keystore = property(lambda s: s.p("server-keystore.pem"))          # key + chain
    server_keystore_enc = property(lambda s: s.p("server-keystore-enc.pem"))  # encrypted key + chain
    server_key = property(lambda s: s.p("server.key"))
    server_chain = property(lambda s: s.p("server-chain.pem"))                # server cert + CA cert
    # a client the broker trusts
    alice_cert = property(lambda s: s.p("alice.pem"))
    alice_key = property(lambda s: s.p("alice.key"))
    alice_keystore = property(lambda s: s.p("alice-keystore.pem"))
    # an untrusted CA and a client certificate it signed
    rogue_ca = property(lambda s: s.p("rogue-ca.pem"))
    mallory_cert = property(lambda s: s.p("mallory.pem"))
    mallory_key = property(lambda s: s.p("mallory.key"))
    mallory_keystore = property(lambda s: s.p("mallory-keystore.pem"))

    def text(self, name_or_path: str) -> str:
        return Path(name_or_path if "/" in name_or_path else self.p(name_or_path)).read_text()

    def client_cert(self, who: str | None):
        """(cert, key, keystore) paths of client `who` ("alice", "mallory") or Nones."""
        if who is None:
            return None, None, None
        return self.p(f"{who}.pem"), self.p(f"{who}.key"), self.p(f"{who}-keystore.pem")


def _key(d: Path, name: str):
    # OpenSSL 3 writes PKCS#8 ("BEGIN PRIVATE KEY")
    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", name, cwd=d)


def _ca(d: Path, name: str, subject: str):
    _key(d, f"{name}.key")
    openssl("req", "-config", "openssl.cnf", "-x509", "-new", "-key", f"{name}.key", "-sha256",
            "-days", "3650", "-subj", subject, "-extensions", "ca_ext", "-set_serial",
            str(secrets.randbits(63) | 1), "-out", f"{name}.pem", cwd=d)


def _leaf(d: Path, name: str, subject: str, ca: str, ext: str):
    _key(d, f"{name}.key")
    openssl("req", "-config", "openssl.cnf", "-new", "-key", f"{name}.key", "-subj", subject,
            "-out", f"{name}.csr", cwd=d)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-sha256",
            "-days", "825", "-set_serial", str(secrets.randbits(63) | 1), "-extfile", "openssl.cnf",
            "-extensions", ext, "-out", f"{name}.pem", cwd=d)


def make_pki(d: Path) -> Pki:
    """Writes the PKI described in the module docstring into `d` (about 1 s)."""
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    (d / "openssl.cnf").write_text(_OPENSSL_CNF)
    _ca(d, "ca", CA_SUBJECT)
    _leaf(d, "server", "/O=Strata/CN=localhost", "ca", "server_ext")
    _leaf(d, "alice", ALICE_SUBJECT, "ca", "client_ext")
    _ca(d, "rogue-ca", CA_SUBJECT)  # an impostor: same name, its own key
    _leaf(d, "mallory", MALLORY_SUBJECT, "rogue-ca", "client_ext")
    openssl("pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", "server.key", "-passout", f"pass:{KEY_PASSWORD}",
            "-out", "server-enc.key", cwd=d)
    t = lambda n: (d / n).read_text()  # noqa: E731
    (d / "server-chain.pem").write_text(t("server.pem") + t("ca.pem"))
    (d / "server-keystore.pem").write_text(t("server.key") + t("server.pem") + t("ca.pem"))
    (d / "server-keystore-enc.pem").write_text(t("server-enc.key") + t("server.pem") + t("ca.pem"))
    (d / "alice-keystore.pem").write_text(t("alice.key") + t("alice.pem"))
    (d / "mallory-keystore.pem").write_text(t("mallory.key") + t("mallory.pem"))
    pki = Pki(d)
    check_pki(pki)
    return pki


def check_pki(pki: Pki):
    """openssl verify: what must verify does, what must not doesn't."""
    d = pki.dir
    for cert, purpose in (("server.pem", "sslserver"), ("alice.pem", "sslclient")):
        out = openssl("verify", "-CAfile", "ca.pem", "-purpose", purpose, cert, cwd=d)
        assert out.strip() == f"{cert}: OK", out
    openssl("verify", "-CAfile", "rogue-ca.pem", "-purpose", "sslclient", "mallory.pem", cwd=d)
    r = subprocess.run([OPENSSL, "verify", "-CAfile", "ca.pem", "mallory.pem"], cwd=d, capture_output=True)
    assert r.returncode != 0, "mallory's certificate must not verify against the trusted CA"
    subj = openssl("x509", "-in", "alice.pem", "-noout", "-subject", "-nameopt", "RFC2253", cwd=d)
    assert subj.strip() == "subject=CN=alice,OU=eng,O=Strata", subj
    san = openssl("x509", "-in", "server.pem", "-noout", "-ext", "subjectAltName", cwd=d)
    assert "IP Address:127.0.0.1" in san and "DNS:localhost" in san, san
    assert "BEGIN ENCRYPTED PRIVATE KEY" in (d / "server-keystore-enc.pem").read_text()
    assert "BEGIN PRIVATE KEY" in (d / "server-keystore.pem").read_text()


# ------------------------------------------------------------------ broker settings

def jaas_plain(users=None) -> str:
    users = USERS if users is None else users
    return f"{PLAIN_MODULE} required " + " ".join(f'user_{u}="{p}"' for u, p in users.items()) + ";"


def listeners_value(ports: dict[str, int]) -> str:
    """{"PLAINTEXT": 9092, "SSL": 9093} -> PLAINTEXT://127.0.0.1:9092,SSL://127.0.0.1:9093"""
    return ",".join(f"{name}://127.0.0.1:{port}" for name, port in ports.items())


def listener_sets(ports: dict[str, int]) -> list[str]:
    v = listeners_value(ports)
    return [f"listeners={v}", f"advertised.listeners={v}"]


def tls_sets(pki: Pki, keystore: str = "file") -> list[str]:
    """The broker's keystore (file | encrypted | inline) and PEM truststore."""
    sets = ["ssl.truststore.type=PEM", f"ssl.truststore.location={pki.ca}"]
    if keystore == "file":
        sets += ["ssl.keystore.type=PEM", f"ssl.keystore.location={pki.server_keystore}"]
    elif keystore == "encrypted":
        sets += ["ssl.keystore.type=PEM", f"ssl.keystore.location={pki.server_keystore_enc}",
                 f"ssl.key.password={KEY_PASSWORD}"]
    elif keystore == "inline":
        sets += ["ssl.keystore.type=PEM", f"ssl.keystore.key={pki.text('server.key')}",
                 f"ssl.keystore.certificate.chain={pki.text('server-chain.pem')}"]
    else:
        raise ValueError(keystore)
    return sets


def sasl_plain_sets(*listener_names: str) -> list[str]:
    sets = ["sasl.enabled.mechanisms=PLAIN"]
    for name in listener_names:
        sets.append(f"listener.name.{name.lower()}.plain.sasl.jaas.config={jaas_plain()}")
    return sets


# ------------------------------------------------------------------ client settings

def _check(protocol: str):
    assert protocol in ("PLAINTEXT", "SSL", "SASL_SSL", "SASL_PLAINTEXT"), protocol


def _tls(protocol: str) -> bool:
    return protocol in ("SSL", "SASL_SSL")


def _sasl(protocol: str) -> bool:
    return protocol.startswith("SASL_")


def _creds(user, password):
    return user, (USERS[user] if password is None else password)


def ck_security(pki: Pki, protocol: str, user: str | None = "alice", password: str | None = None,
                cert: str | None = None, ca: str | None = None) -> dict:
    """librdkafka (confluent-kafka, kcat) properties. `cert`: "alice"/"mallory" for mTLS;
    `ca`: the CA file the client trusts (default: the test CA)."""
    _check(protocol)
    conf = {"security.protocol": protocol}
    if _tls(protocol):
        conf["ssl.ca.location"] = ca or pki.ca
        conf["ssl.endpoint.identification.algorithm"] = "https"
        c, k, _ = pki.client_cert(cert)
        if c:
            conf["ssl.certificate.location"] = c
            conf["ssl.key.location"] = k
    if _sasl(protocol):
        u, p = _creds(user, password)
        conf.update({"sasl.mechanisms": "PLAIN", "sasl.username": u, "sasl.password": p})
    return conf


def kcat_args(pki: Pki, protocol: str, **kw) -> list[str]:
    out = []
    for k, v in ck_security(pki, protocol, **kw).items():
        out += ["-X", f"{k}={v}"]
    return out


def kafka_python_kwargs(pki: Pki, protocol: str, user: str | None = "alice", password: str | None = None,
                        cert: str | None = None, ca: str | None = None) -> dict:
    _check(protocol)
    kw = {"security_protocol": protocol}
    if _tls(protocol):
        kw.update(ssl_cafile=ca or pki.ca, ssl_check_hostname=True)
        c, k, _ = pki.client_cert(cert)
        if c:
            kw.update(ssl_certfile=c, ssl_keyfile=k)
    if _sasl(protocol):
        u, p = _creds(user, password)
        kw.update(sasl_mechanism="PLAIN", sasl_plain_username=u, sasl_plain_password=p)
    return kw


def aiokafka_kwargs(pki: Pki, protocol: str, user: str | None = "alice", password: str | None = None,
                    cert: str | None = None, ca: str | None = None) -> dict:
    _check(protocol)
    kw = {"security_protocol": protocol}
    if _tls(protocol):
        from aiokafka.helpers import create_ssl_context
        c, k, _ = pki.client_cert(cert)
        kw["ssl_context"] = create_ssl_context(cafile=ca or pki.ca, certfile=c, keyfile=k)
    if _sasl(protocol):
        u, p = _creds(user, password)
        kw.update(sasl_mechanism="PLAIN", sasl_plain_username=u, sasl_plain_password=p)
    return kw


def java_props(pki: Pki, protocol: str, user: str | None = "alice", password: str | None = None,
               cert: str | None = None, ca: str | None = None) -> dict:
    """kafka-clients properties: PEM truststore, PEM keystore (key + cert) for mTLS."""
    _check(protocol)
    props = {"security.protocol": protocol}
    if _tls(protocol):
        props.update({"ssl.truststore.type": "PEM", "ssl.truststore.location": ca or pki.ca,
                      "ssl.endpoint.identification.algorithm": "https"})
        _, _, ks = pki.client_cert(cert)
        if ks:
            props.update({"ssl.keystore.type": "PEM", "ssl.keystore.location": ks})
    if _sasl(protocol):
        u, p = _creds(user, password)
        props.update({"sasl.mechanism": "PLAIN",
                      "sasl.jaas.config": f'{PLAIN_MODULE} required username="{u}" password="{p}";'})
    return props


def kafkajs_conf(pki: Pki, protocol: str, user: str | None = "alice", password: str | None = None,
                 cert: str | None = None, ca: str | None = None) -> dict:
    """JSON for node/kafkajs_security.js: file paths, the script reads them."""
    _check(protocol)
    conf = {}
    if _tls(protocol):
        c, k, _ = pki.client_cert(cert)
        conf["ssl"] = {"ca": ca or pki.ca, **({"cert": c, "key": k} if c else {})}
    if _sasl(protocol):
        u, p = _creds(user, password)
        conf["sasl"] = {"mechanism": "plain", "username": u, "password": p}
    return conf


def write_properties(path: Path, props: dict) -> Path:
    """A java.util.Properties file (values escaped: '\\', newlines, ':' and '=' are fine)."""
    def esc(s: str) -> str:
        return str(s).replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    path.write_text("".join(f"{k}={esc(v)}\n" for k, v in props.items()))
    return path


# ------------------------------------------------------------------ broker log

class LogMark:
    """The broker log from the moment of construction on (one test's share of a shared broker)."""

    def __init__(self, broker):
        self.broker = broker
        self.offset = len(broker.log_text())

    def text(self) -> str:
        return self.broker.log_text()[self.offset:]

    def wait_for(self, pattern: str, timeout: float = 10.0) -> str:
        """The first new log line matching `pattern` (case-insensitive regex), waiting for it."""
        rx = re.compile(pattern, re.I)
        deadline = time.monotonic() + timeout
        while True:
            for line in self.text().splitlines():
                if rx.search(line):
                    return line
            if time.monotonic() > deadline:
                tail = "\n".join(self.text().splitlines()[-40:])
                raise AssertionError(f"no broker log line matching /{pattern}/i within {timeout}s; "
                                     f"the log since the test started ends with:\n{tail}")
            time.sleep(0.1)
