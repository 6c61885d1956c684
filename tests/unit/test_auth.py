"""Client tokens: what passes, why the rest is refused, and which configurations stop the start.

Keys are generated here with ``cryptography``; the JWKS tests serve a key set from a local
HTTP server on 127.0.0.1. Expired tokens carry an ``exp`` in the past; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import socket
import threading
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import jwt.jwk_set_cache
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.x509.oid import NameOID
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from burrow.runtime.settings import ConfigError, Settings
from gateway import jwks as jwks_module
from gateway.auth import JWKS_LIFESPAN, AuthError, Claims, Verifier
from tests.fakes.json_http import serving

AMQP = {"BURROW_AMQP_URL": "amqp://u:p@127.0.0.1:5672/burrow"}
SECRET = "k3y-0f-at-least-32-bytes-for-hs256!"
OTHER_SECRET = "an0ther-key-0f-at-least-32-bytes!!"


def settings(**env: str) -> Settings:
    return Settings.from_env({**AMQP, **env})


def verifier(**env: str) -> Verifier:
    return Verifier.from_settings(settings(**env))


def claims(**over: Any) -> dict[str, Any]:
    """A valid payload for user alice, valid for a minute; ``None`` values are dropped."""
    payload: dict[str, Any] = {"sub": "alice", "exp": int(time.time()) + 60, **over}
    return {k: v for k, v in payload.items() if v is not None}


def hs256(payload: dict[str, Any], secret: str = SECRET, **headers: Any) -> str:
    return jwt.encode(payload, secret, algorithm="HS256", headers=headers or None)


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def handmade(header: dict[str, Any], payload: dict[str, Any], secret: bytes | None) -> str:
    """A token built without PyJWT, which refuses to make the attack tokens below."""
    signing_input = _b64(json.dumps(header).encode()) + b"." + _b64(json.dumps(payload).encode())
    signature = b"" if secret is None else hmac.new(secret, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + _b64(signature)).decode()


def pem(key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey | dsa.DSAPublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo).decode()


async def refusal(v: Verifier, token: str | None) -> AuthError:
    with pytest.raises(AuthError) as caught:
        await v.verify(token)
    if token:
        assert token not in str(caught.value)
    return caught.value


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


# --- HS256 -----------------------------------------------------------------------------


async def test_hs256_token_gives_its_claims() -> None:
    payload = claims()
    got = await verifier(BURROW_JWT_SECRET=SECRET).verify(hs256(payload))
    assert got == Claims(user="alice", roles=frozenset(), expires_at=float(payload["exp"]))
    assert not got.is_admin


async def test_admin_role() -> None:
    v = verifier(BURROW_JWT_SECRET=SECRET)
    admin = await v.verify(hs256(claims(roles=["admin", "mod"])))
    assert admin.is_admin and admin.roles == frozenset({"admin", "mod"})
    assert not (await v.verify(hs256(claims(roles=["mod"])))).is_admin


@pytest.mark.parametrize("token", [None, ""])
async def test_missing_token(token: str | None) -> None:
    err = await refusal(verifier(BURROW_JWT_SECRET=SECRET), token)
    assert (err.reason, err.message, str(err)) == ("missing", "token missing", "token missing")


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "a.b", "x" * 9000])
async def test_garbage_is_malformed(token: str) -> None:
    err = await refusal(verifier(BURROW_JWT_SECRET=SECRET), token)
    assert (err.reason, err.message) == ("malformed", "token too long" if len(token) > 8192
                                         else "token malformed")


async def test_header_without_alg_is_an_algorithm_refusal() -> None:
    assert (await refusal(verifier(BURROW_JWT_SECRET=SECRET), "e30.e30.")).reason == "algorithm"


async def test_other_secret_is_a_bad_signature() -> None:
    err = await refusal(verifier(BURROW_JWT_SECRET=SECRET), hs256(claims(), OTHER_SECRET))
    assert (err.reason, err.message) == ("bad_signature", "token signature does not verify")


async def test_altered_payload_is_a_bad_signature() -> None:
    header, _, signature = hs256(claims()).split(".")
    forged = _b64(json.dumps(claims(sub="mallory")).encode()).decode()
    err = await refusal(verifier(BURROW_JWT_SECRET=SECRET), f"{header}.{forged}.{signature}")
    assert err.reason == "bad_signature"


async def test_expired_beyond_leeway() -> None:
    v = verifier(BURROW_JWT_SECRET=SECRET, BURROW_JWT_LEEWAY="10")
    err = await refusal(v, hs256(claims(exp=int(time.time()) - 30)))
    assert (err.reason, err.message) == ("expired", "token expired")


async def test_expired_within_leeway_is_accepted() -> None:
    v = verifier(BURROW_JWT_SECRET=SECRET, BURROW_JWT_LEEWAY="10")
    assert (await v.verify(hs256(claims(exp=int(time.time()) - 3)))).user == "alice"


@pytest.mark.parametrize("claim", ["nbf", "iat"])
async def test_not_yet_valid(claim: str) -> None:
    v = verifier(BURROW_JWT_SECRET=SECRET, BURROW_JWT_LEEWAY="5")
    err = await refusal(v, hs256(claims(**{claim: int(time.time()) + 60})))
    assert err.reason == "not_yet_valid"


@pytest.mark.parametrize(("aud", "reason"), [
    ("other", "audience"), (["other", "third"], "audience"), (None, "claims")])
async def test_wrong_or_missing_audience(aud: Any, reason: str) -> None:
    v = verifier(BURROW_JWT_SECRET=SECRET, BURROW_JWT_AUDIENCE="burrow")
    assert (await refusal(v, hs256(claims(aud=aud)))).reason == reason


@pytest.mark.parametrize("aud", ["burrow", ["other", "burrow"]])
async def test_matching_audience_is_accepted(aud: Any) -> None:
    v = verifier(BURROW_JWT_SECRET=SECRET, BURROW_JWT_AUDIENCE="burrow")
    assert (await v.verify(hs256(claims(aud=aud)))).user == "alice"


async def test_audience_in_token_but_none_configured_is_refused() -> None:
    # PyJWT's behaviour, kept: a token meant for some audience is not for everyone.
    err = await refusal(verifier(BURROW_JWT_SECRET=SECRET), hs256(claims(aud="burrow")))
    assert err.reason == "audience"


@pytest.mark.parametrize(("iss", "reason"), [
    ("https://evil.example", "issuer"), (7, "issuer"), (None, "claims")])
async def test_wrong_or_missing_issuer(iss: Any, reason: str) -> None:
    v = verifier(BURROW_JWT_SECRET=SECRET, BURROW_JWT_ISSUER="https://auth.example")
    # handmade: PyJWT will not encode a non-string iss.
    token = handmade({"alg": "HS256", "typ": "JWT"}, claims(iss=iss), SECRET.encode())
    assert (await refusal(v, token)).reason == reason


async def test_matching_issuer_and_audience_are_accepted() -> None:
    v = verifier(BURROW_JWT_SECRET=SECRET, BURROW_JWT_ISSUER="https://auth.example",
                 BURROW_JWT_AUDIENCE="burrow")
    token = hs256(claims(iss="https://auth.example", aud="burrow"))
    assert (await v.verify(token)).user == "alice"


async def test_alg_none_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    token = handmade({"alg": "none", "typ": "JWT"}, claims(), None)
    for v in (verifier(BURROW_JWT_SECRET=SECRET),
              verifier(BURROW_JWT_PUBLIC_KEY=pem(rsa_key.public_key()))):
        err = await refusal(v, token)
        assert (err.reason, err.message) == ("algorithm", "token algorithm not accepted")


async def test_rs256_token_refused_when_only_hs256_is_allowed(
        rsa_key: rsa.RSAPrivateKey) -> None:
    token = jwt.encode(claims(), rsa_key, algorithm="RS256")
    assert (await refusal(verifier(BURROW_JWT_SECRET=SECRET), token)).reason == "algorithm"


async def test_key_confusion_hs256_signed_with_the_public_key_is_refused(
        rsa_key: rsa.RSAPrivateKey) -> None:
    public_pem = pem(rsa_key.public_key())
    header = {"alg": "HS256", "typ": "JWT"}
    # The handmade signer is right: the same recipe with the real secret verifies.
    good = handmade(header, claims(), SECRET.encode())
    assert (await verifier(BURROW_JWT_SECRET=SECRET).verify(good)).user == "alice"
    # PyJWT will not even sign with a PEM as HMAC secret.
    with pytest.raises(jwt.InvalidKeyError):
        jwt.encode(claims(), public_pem, algorithm="HS256")
    forged = handmade(header, claims(sub="mallory", roles=["admin"]), public_pem.encode())
    err = await refusal(verifier(BURROW_JWT_PUBLIC_KEY=public_pem), forged)
    assert err.reason == "algorithm"


@pytest.mark.parametrize(("over", "message"), [
    ({"exp": None}, "token has no exp claim"),
    ({"sub": None}, "token has no sub claim"),
    ({"sub": 42}, "token sub must be a string"),
    ({"sub": ""}, "token sub must be 1 to 128 printable characters"),
    ({"sub": "u" * 129}, "token sub must be 1 to 128 printable characters"),
    ({"sub": "alice\nadmin"}, "token sub must be 1 to 128 printable characters"),
    ({"sub": "ali\u200bce"}, "token sub must be 1 to 128 printable characters"),
    ({"sub": "alice\u202e"}, "token sub must be 1 to 128 printable characters"),
    ({"sub": "al\x00ice"}, "token sub must be 1 to 128 printable characters"),
    ({"roles": "admin"}, "token roles must be a list of strings"),
    ({"roles": ["admin", 1]}, "token roles must be a list of strings"),
    ({"roles": {"admin": True}}, "token roles must be a list of strings"),
    ({"exp": "soon"}, "token has a malformed exp or nbf claim"),
    ({"exp": "in a minute"}, "token has a malformed exp or nbf claim"),
    ({"nbf": "now"}, "token has a malformed exp or nbf claim"),
    ({"iat": "now"}, "token has a malformed iat or jti claim"),
    ({"jti": 5}, "token has a malformed iat or jti claim"),
])
async def test_bad_claims(over: dict[str, Any], message: str) -> None:
    # Payloads are built here, not at collection: their exp must still be ahead.
    err = await refusal(verifier(BURROW_JWT_SECRET=SECRET), hs256(claims(**over)))
    assert (err.reason, err.message) == ("claims", message)


async def test_roles_null_and_exp_as_numeric_string_are_refused() -> None:
    # PyJWT itself takes a numeric string for exp (it calls int() on it).
    v = verifier(BURROW_JWT_SECRET=SECRET)
    err = await refusal(v, hs256(claims(exp=str(int(time.time()) + 60))))
    assert (err.reason, err.message) == ("claims", "token exp must be a number")
    err = await refusal(v, hs256({**claims(), "roles": None}))
    assert (err.reason, err.message) == ("claims", "token roles must be a list of strings")


def signed(header: bytes, payload: bytes, secret: bytes = SECRET.encode()) -> str:
    """A token whose JSON is given as bytes: what json.dumps cannot write."""
    signing_input = _b64(header) + b"." + _b64(payload)
    return (signing_input + b"." + _b64(hmac.new(secret, signing_input,
                                                  hashlib.sha256).digest())).decode()


@pytest.mark.parametrize(("payload", "reason", "message"), [
    # a 400-digit exp passed PyJWT and then raised OverflowError here: a 500
    (b'{"sub":"alice","exp":1' + b"0" * 400 + b"}", "claims",
     "token exp must be a date before the year 10000"),
    (b'{"sub":"alice","exp":1e308}', "claims", "token exp must be a date before the year 10000"),
    (b'{"sub":"alice","exp":NaN}', "claims", "token has a malformed exp or nbf claim"),
    # RFC 7515 lets a reader take the last of two names; Burrow refuses the token
    (b'{"sub":"mallory","exp":99999999999,"sub":"alice"}', "malformed",
     "token names a member twice"),
    (b'{"sub":"alice","exp":99999999999,"x":{"a":1,"a":2}}', "malformed",
     "token names a member twice"),
])
async def test_payloads_json_dumps_cannot_write(payload: bytes, reason: str,
                                                message: str) -> None:
    err = await refusal(verifier(BURROW_JWT_SECRET=SECRET), signed(b'{"alg":"HS256"}', payload))
    assert (err.reason, err.message) == (reason, message)


async def test_a_header_naming_alg_twice_is_refused() -> None:
    token = signed(b'{"alg":"none","alg":"HS256"}', b'{"sub":"alice","exp":99999999999}')
    err = await refusal(verifier(BURROW_JWT_SECRET=SECRET), token)
    assert (err.reason, err.message) == ("malformed", "token names a member twice")


@pytest.mark.parametrize("token", ["\udcff\udcfe.a.b", "é.é.é",
                                   "eyJhbGciOiJIUzI1NiJ9.\udcff.c2ln"])
async def test_a_token_that_is_not_ascii_is_malformed(token: str) -> None:
    """Sanic passes a header's bytes that are not UTF-8 on as surrogates; PyJWT's
    ``encode("utf-8")`` raised UnicodeEncodeError on them (a 500 and a traceback)."""
    err = await refusal(verifier(BURROW_JWT_SECRET=SECRET), token)
    assert (err.reason, err.message) == ("malformed", "token malformed")


async def test_longest_sub_and_float_exp_are_accepted() -> None:
    exp = time.time() + 60.5
    got = await verifier(BURROW_JWT_SECRET=SECRET).verify(hs256(claims(sub="u" * 128, exp=exp)))
    assert got.user == "u" * 128 and got.expires_at == exp


@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
async def test_other_hmac_algorithms(algorithm: str) -> None:
    secret = "s" * 64
    v = verifier(BURROW_JWT_SECRET=secret, BURROW_JWT_ALGORITHMS=f"HS256,{algorithm}")
    assert (await v.verify(jwt.encode(claims(), secret, algorithm=algorithm))).user == "alice"


def test_auth_error() -> None:
    err = AuthError("expired", "token expired")
    assert (err.reason, err.message, str(err)) == ("expired", "token expired", "token expired")
    assert repr(err) == "AuthError('expired', 'token expired')"
    with pytest.raises(ValueError, match="unknown AuthError reason"):
        AuthError("nope", "x")


# --- public keys -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["RS256", "ES256"])
@pytest.mark.parametrize("given_as", ["text", "path"])
async def test_public_key(kind: str, given_as: str, tmp_path: Path, rsa_key: rsa.RSAPrivateKey,
                          ec_key: ec.EllipticCurvePrivateKey) -> None:
    private = rsa_key if kind == "RS256" else ec_key
    text = pem(private.public_key())
    if given_as == "path":
        (tmp_path / "key.pem").write_text(text)
        text = str(tmp_path / "key.pem")
    v = verifier(BURROW_JWT_PUBLIC_KEY=text)
    assert v.algorithms == (kind,)  # the default RS256,ES256, narrowed to what fits the key
    token = jwt.encode(claims(roles=["admin"]), private, algorithm=kind)
    assert (await v.verify(token)).is_admin
    other = rsa.generate_private_key(65537, 2048) if kind == "RS256" else ec.generate_private_key(
        ec.SECP256R1())
    forged = jwt.encode(claims(), other, algorithm=kind)
    assert (await refusal(v, forged)).reason == "bad_signature"


async def test_token_whose_alg_does_not_fit_the_key_is_refused(
        rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey) -> None:
    # Given the RSA key itself, PyJWT's ES256 would raise a bare TypeError.
    v = verifier(BURROW_JWT_PUBLIC_KEY=pem(rsa_key.public_key()))
    err = await refusal(v, jwt.encode(claims(), ec_key, algorithm="ES256"))
    assert err.reason == "algorithm"


async def test_ps256_and_certificate(rsa_key: rsa.RSAPrivateKey) -> None:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "auth.example")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(rsa_key.public_key()).serial_number(1)
            .not_valid_before(now).not_valid_after(now + timedelta(days=1))
            .sign(rsa_key, hashes.SHA256()))
    v = verifier(BURROW_JWT_PUBLIC_KEY=cert.public_bytes(serialization.Encoding.PEM).decode(),
                 BURROW_JWT_ALGORITHMS="PS256")
    assert (await v.verify(jwt.encode(claims(), rsa_key, algorithm="PS256"))).user == "alice"


# --- JWKS --------------------------------------------------------------------------------


@dataclass
class JwksServer:
    url: str
    document: dict[str, Any]
    body: bytes | None = None  # served instead of the document when set
    status: int = 200
    requests: int = 0
    requested: threading.Event = field(default_factory=threading.Event)
    gate: threading.Event | None = None  # when set, answers wait for it (at most 2 s)

    def answer(self, path: str) -> tuple[int, bytes | None]:
        self.requests += 1
        self.requested.set()
        if self.gate is not None and not self.gate.wait(2):
            self.status = 503
        if self.status != 200:
            return self.status, None
        return 200, self.body if self.body is not None else json.dumps(self.document).encode()


@pytest.fixture
def jwks(rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey) -> Iterator[JwksServer]:
    document = {"keys": [
        {**RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True), "kid": "rsa-1", "use": "sig"},
        {**ECAlgorithm.to_jwk(ec_key.public_key(), as_dict=True), "kid": "ec-1"},
    ]}
    state = JwksServer(url="", document=document)
    with serving(state.answer) as base:
        state.url = f"{base}/.well-known/jwks.json"
        yield state


async def test_jwks_keys_by_kid(jwks: JwksServer, rsa_key: rsa.RSAPrivateKey,
                                ec_key: ec.EllipticCurvePrivateKey) -> None:
    v = verifier(BURROW_JWKS_URL=jwks.url)
    rs = jwt.encode(claims(sub="rita"), rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})
    es = jwt.encode(claims(sub="eve"), ec_key, algorithm="ES256", headers={"kid": "ec-1"})
    assert (await v.verify(rs)).user == "rita"
    assert (await v.verify(es)).user == "eve"
    assert (await v.verify(rs)).user == "rita"
    assert jwks.requests == 1  # the key set is cached


async def test_jwks_unknown_or_absent_kid(jwks: JwksServer, rsa_key: rsa.RSAPrivateKey) -> None:
    v = verifier(BURROW_JWKS_URL=jwks.url)
    unknown = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "rsa-9"})
    err = await refusal(v, unknown)
    assert (err.reason, err.message) == ("unknown_key", "token key id not known")
    err = await refusal(v, jwt.encode(claims(), rsa_key, algorithm="RS256"))
    assert (err.reason, err.message) == ("unknown_key", "token has no key id (kid)")


async def test_jwks_alg_must_match_the_kid(jwks: JwksServer,
                                           ec_key: ec.EllipticCurvePrivateKey) -> None:
    # An ES256 token naming the RSA key: PyJWT with the bare key object raises TypeError.
    token = jwt.encode(claims(), ec_key, algorithm="ES256", headers={"kid": "rsa-1"})
    assert (await refusal(verifier(BURROW_JWKS_URL=jwks.url), token)).reason == "algorithm"


async def test_jwks_foreign_algorithms_are_refused_without_a_fetch(jwks: JwksServer) -> None:
    v = verifier(BURROW_JWKS_URL=jwks.url)
    assert (await refusal(v, hs256(claims(), kid="rsa-1"))).reason == "algorithm"
    none = handmade({"alg": "none", "kid": "rsa-1"}, claims(), None)
    assert (await refusal(v, none)).reason == "algorithm"
    assert (await refusal(v, "garbage")).reason == "malformed"
    assert jwks.requests == 0


async def test_jwks_key_removed_from_the_set_stops_verifying(
        jwks: JwksServer, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey,
        monkeypatch: pytest.MonkeyPatch) -> None:
    v = verifier(BURROW_JWKS_URL=jwks.url)
    token = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})
    assert (await v.verify(token)).user == "alice"
    jwks.document = {"keys": jwks.document["keys"][1:]}  # rsa-1 revoked
    later = time.monotonic() + JWKS_LIFESPAN + 1  # the cached set has expired
    monkeypatch.setattr(jwks_module, "time", types.SimpleNamespace(monotonic=lambda: later))
    assert (await refusal(v, token)).reason == "unknown_key"
    es = jwt.encode(claims(), ec_key, algorithm="ES256", headers={"kid": "ec-1"})
    assert (await v.verify(es)).user == "alice"  # the set fetched just now is fresh
    assert jwks.requests == 2


@pytest.mark.parametrize("body", [b"<html>not json</html>", b"[]", b'{"keys": []}',
                                  b'{"keys": [{"kty": "nope", "kid": "rsa-1"}]}'])
async def test_jwks_unusable_document(jwks: JwksServer, rsa_key: rsa.RSAPrivateKey,
                                      body: bytes) -> None:
    jwks.body = body
    token = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})
    err = await refusal(verifier(BURROW_JWKS_URL=jwks.url), token)
    assert err.reason == "unknown_key"


@pytest.mark.parametrize("failure", ["503", "refused"])
async def test_jwks_unreachable(jwks: JwksServer, rsa_key: rsa.RSAPrivateKey,
                                failure: str) -> None:
    url = jwks.url
    if failure == "503":
        jwks.status = 503
    else:
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{closed.getsockname()[1]}/jwks.json"
    token = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})
    err = await refusal(verifier(BURROW_JWKS_URL=url), token)
    assert (err.reason, err.message) == ("unknown_key", "token signing keys unavailable")


async def test_jwks_fetch_does_not_block_the_event_loop(jwks: JwksServer,
                                                        rsa_key: rsa.RSAPrivateKey) -> None:
    # The server holds its answer until this coroutine opens the gate; a fetch on the
    # event loop's thread would starve it, and the server would answer 503 after 2 s.
    jwks.gate = threading.Event()
    token = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})
    task = asyncio.create_task(verifier(BURROW_JWKS_URL=jwks.url).verify(token))
    assert await asyncio.to_thread(jwks.requested.wait, 5)
    jwks.gate.set()
    assert (await task).user == "alice"


class Clock:
    """Stands in for ``time`` in gateway.jwks: moved by the test, never slept on."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(jwks_module, "time", clock)
    return clock


async def test_jwks_keys_held_keep_verifying_through_a_key_server_outage(
        jwks: JwksServer, rsa_key: rsa.RSAPrivateKey, clock: Clock) -> None:
    v = verifier(BURROW_JWKS_URL=jwks.url)
    token = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})
    assert (await v.verify(token)).user == "alice"
    jwks.status = 503
    clock.now += JWKS_LIFESPAN + 1  # expired, and the key server is down
    for _ in range(20):  # every new connection still gets in: the keys held verify
        assert (await v.verify(token)).user == "alice"
    assert jwks.requests == 2  # one failed fetch, then back-off: not one per connection
    clock.now += 1.5  # the first back-off (1 s) is over: one more try
    assert (await v.verify(token)).user == "alice"
    assert jwks.requests == 3
    clock.now += 1.5  # the next back-off is 2 s: no try yet
    assert (await v.verify(token)).user == "alice"
    assert jwks.requests == 3
    jwks.status = 200
    clock.now += 1
    assert (await v.verify(token)).user == "alice"
    assert jwks.requests == 4  # back: fetched again, fresh for a lifespan
    for _ in range(5):
        await v.verify(token)
    assert jwks.requests == 4


async def test_jwks_made_up_key_ids_do_not_make_the_gateway_fetch(
        jwks: JwksServer, rsa_key: rsa.RSAPrivateKey, clock: Clock) -> None:
    v = verifier(BURROW_JWKS_URL=jwks.url)
    good = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})
    assert (await v.verify(good)).user == "alice"
    forged = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "x-now"})
    assert (await refusal(v, forged)).reason == "unknown_key"
    assert jwks.requests == 1  # the set was fetched just now: it has no such key
    clock.now += jwks_module.UNKNOWN_KID_INTERVAL + 1
    for n in range(50):
        forged = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": f"x-{n}"})
        assert (await refusal(v, forged)).reason == "unknown_key"
    assert jwks.requests == 2  # the first unknown kid may be a rotation: one fetch
    clock.now += jwks_module.UNKNOWN_KID_INTERVAL + 1
    forged = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "x-late"})
    assert (await refusal(v, forged)).reason == "unknown_key"
    assert jwks.requests == 3


async def test_jwks_concurrent_first_requests_share_one_fetch(
        jwks: JwksServer, rsa_key: rsa.RSAPrivateKey) -> None:
    v = verifier(BURROW_JWKS_URL=jwks.url)
    token = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})
    answers = await asyncio.gather(*(v.verify(token) for _ in range(20)))
    assert {a.user for a in answers} == {"alice"}
    assert jwks.requests == 1


@pytest.mark.parametrize(("url", "ok"), [
    ("https://idp.example/.well-known/jwks.json", True),
    ("http://127.0.0.1:8080/jwks.json", True), ("http://localhost/jwks.json", True),
    ("http://idp.example/.well-known/jwks.json", False), ("http://10.0.0.5/jwks", False),
])
def test_jwks_over_plain_http_only_on_loopback(url: str, ok: bool) -> None:
    if ok:
        verifier(BURROW_JWKS_URL=url)
    else:
        with pytest.raises(ConfigError, match="plain http"):
            verifier(BURROW_JWKS_URL=url)


# --- configuration -----------------------------------------------------------------------


@pytest.mark.parametrize(("env", "message"), [
    ({}, ("set exactly one of BURROW_JWT_SECRET, BURROW_JWT_PUBLIC_KEY or BURROW_JWKS_URL"
         " to verify client tokens; none is set")),
    ({"BURROW_JWT_SECRET": SECRET, "BURROW_JWKS_URL": "https://auth.example/jwks"},
     "BURROW_JWT_SECRET and BURROW_JWKS_URL are set"),
    ({"BURROW_JWT_PUBLIC_KEY": "/k.pem", "BURROW_JWKS_URL": "https://auth.example/jwks"},
     "BURROW_JWT_PUBLIC_KEY and BURROW_JWKS_URL are set"),
    ({"BURROW_JWT_SECRET": SECRET, "BURROW_JWT_PUBLIC_KEY": "/k.pem",
      "BURROW_JWKS_URL": "https://auth.example/jwks"},
     "BURROW_JWT_SECRET and BURROW_JWT_PUBLIC_KEY and BURROW_JWKS_URL are set"),
    ({"BURROW_JWT_SECRET": SECRET, "BURROW_JWT_ALGORITHMS": "HS256,RS256"},
     "BURROW_JWT_ALGORITHMS has RS256: public-key algorithms need BURROW_JWT_PUBLIC_KEY"),
    ({"BURROW_JWT_SECRET": SECRET, "BURROW_JWT_ALGORITHMS": "ES256,PS256,EdDSA"},
     "BURROW_JWT_ALGORITHMS has ES256, PS256, EdDSA: public-key algorithms"),
    ({"BURROW_JWT_PUBLIC_KEY": "/k.pem", "BURROW_JWT_ALGORITHMS": "RS256,HS256"},
     ("BURROW_JWT_ALGORITHMS has HS256: HMAC algorithms verify with a shared secret "
      "(BURROW_JWT_SECRET), never with BURROW_JWT_PUBLIC_KEY")),
    ({"BURROW_JWKS_URL": "https://auth.example/jwks", "BURROW_JWT_ALGORITHMS": "HS512"},
     ("BURROW_JWT_ALGORITHMS has HS512: HMAC algorithms verify with a shared secret "
      "(BURROW_JWT_SECRET), never with BURROW_JWKS_URL")),
    ({"BURROW_JWT_SECRET": "s" * 31},
     "BURROW_JWT_SECRET is 31 bytes; HS256 needs at least 32 random bytes"),
    ({"BURROW_JWT_SECRET": "s" * 48, "BURROW_JWT_ALGORITHMS": "HS256,HS512"},
     "BURROW_JWT_SECRET is 48 bytes; HS512 needs at least 64 random bytes"),
    ({"BURROW_JWKS_URL": "file:///etc/jwks.json"},
     "BURROW_JWKS_URL='file:///etc/jwks.json' is invalid: expected an https:// URL"),
    ({"BURROW_JWKS_URL": "https:///jwks"}, "BURROW_JWKS_URL='https:///jwks' is invalid"),
])
def test_config_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        verifier(**env)


def test_config_error_secret_that_is_a_key(rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(ConfigError, match="BURROW_JWT_SECRET holds a public key, private key or "
                                          "certificate; a public key belongs in "
                                          "BURROW_JWT_PUBLIC_KEY"):
        verifier(BURROW_JWT_SECRET=pem(rsa_key.public_key()))


def test_config_error_secret_never_in_the_message() -> None:
    with pytest.raises(ConfigError) as caught:
        verifier(BURROW_JWT_SECRET="short-secret-value")
    assert "short-secret-value" not in str(caught.value)


def test_config_error_missing_key_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.pem"
    with pytest.raises(ConfigError, match=re.escape(
            f"BURROW_JWT_PUBLIC_KEY: cannot read the PEM file '{path}' (No such file")):
        verifier(BURROW_JWT_PUBLIC_KEY=str(path))


@pytest.mark.parametrize("given_as", ["text", "path"])
def test_config_error_not_a_pem_key(given_as: str, tmp_path: Path) -> None:
    text = "-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n"
    where = "BURROW_JWT_PUBLIC_KEY"
    if given_as == "path":
        (tmp_path / "key.pem").write_text(text)
        text = str(tmp_path / "key.pem")
        where = f"BURROW_JWT_PUBLIC_KEY file '{text}'"
    with pytest.raises(ConfigError, match=re.escape(
            f"{where} is not a PEM public key or certificate")):
        verifier(BURROW_JWT_PUBLIC_KEY=text)


def test_config_error_private_key(rsa_key: rsa.RSAPrivateKey) -> None:
    text = rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()).decode()
    with pytest.raises(ConfigError, match="BURROW_JWT_PUBLIC_KEY holds a private key"):
        verifier(BURROW_JWT_PUBLIC_KEY=text)


def test_config_error_key_fits_no_algorithm(rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(ConfigError, match=re.escape(
            "BURROW_JWT_PUBLIC_KEY is an RSA key, which none of "
            "BURROW_JWT_ALGORITHMS=ES256,ES384 can verify with")):
        verifier(BURROW_JWT_PUBLIC_KEY=pem(rsa_key.public_key()),
                 BURROW_JWT_ALGORITHMS="ES256,ES384")
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    with pytest.raises(ConfigError, match="is an EC secp384r1 key, which none of"):
        verifier(BURROW_JWT_PUBLIC_KEY=pem(p384))


def test_config_error_weak_rsa_key() -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    with pytest.raises(ConfigError, match="BURROW_JWT_PUBLIC_KEY is too weak: The RSA key is "
                                          "1024 bits long"):
        verifier(BURROW_JWT_PUBLIC_KEY=pem(weak))


def test_config_error_unsupported_key_type() -> None:
    key = dsa.generate_private_key(key_size=1024).public_key()
    with pytest.raises(ConfigError, match="BURROW_JWT_PUBLIC_KEY is a .*DSAPublicKey"):
        verifier(BURROW_JWT_PUBLIC_KEY=pem(key))
