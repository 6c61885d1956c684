"""JWT edge cases thrown at every authenticated transport of a live gateway: the
WebSocket handshake (token in the header and in the query), SSE, long-polling, an HTTP
route (``POST /v1/rooms``) and the ticket route. Three key set-ups: an HS256 secret (the
stack's), a static RSA public key with audience and issuer required, and a JWKS URL.

Each token is sent as raw bytes over a socket, so that nothing in a client library
cleans it up first. Each must get the refusal docs/protocol.md gives (401, with the
``reason`` named here; a head over 8 KiB gets Sanic's 413), or be accepted where the
rules accept it (a header the gateway ignores, a clock skew within the leeway); never a
5xx, never a traceback in the gateway's log; and afterwards a normal client still
works. Then hypothesis signs random headers and payloads with the right key and checks
each answer against what the rules say (``BURROW_FUZZ_EXAMPLES`` sets the budget).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jwt.algorithms import RSAAlgorithm

from burrow.core import ids
from gateway.auth import REASONS
from tests.conftest import JWT_SECRET
from tests.fakes.json_http import serving
from tests.integration.conftest import Running, Stack, raw_ws

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(shared_stack: Stack) -> Stack:
    """One stack for the module (tests/integration/conftest.py ``shared_stack``): the
    gateways a test adds stop after it; every test uses the room lobby (:func:`lobby`)."""
    return shared_stack


def lobby(stack: Stack) -> None:
    """The room every surface uses, with alice and LONGEST: made by the module's first
    test, there already for the others."""
    status, body = stack.http("POST", "/v1/rooms", "alice", {"id": "lobby",
                                                             "members": [LONGEST]})
    assert status in (201, 409), body
T = 30
EXAMPLES = max(20, int(os.environ.get("BURROW_FUZZ_EXAMPLES", "12")) * 10)
LEEWAY = 5  # BURROW_JWT_LEEWAY's default
LONGEST = "a" * ids.MAX_USER_ID  # a member of lobby too
AUDIENCE, ISSUER = "burrow", "https://idp.test"
Signer = Callable[[bytes], bytes]
Case = tuple[str, bytes, str | dict[str, str]]  # name, token, what judge() expects

# -- tokens, built by hand: PyJWT refuses to make most of these -----------------------


def b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def raw_json(value: Any) -> bytes:
    return value if isinstance(value, bytes) else json.dumps(value).encode()


def token(header: Any, payload: Any, sign: Signer | None) -> bytes:
    """header.payload.signature; a dict is JSON-encoded, bytes are taken as they are."""
    signing_input = b64(raw_json(header)) + b"." + b64(raw_json(payload))
    return signing_input + b"." + (b64(sign(signing_input)) if sign else b"")


def hs256(secret: bytes) -> Signer:
    return lambda data: hmac.new(secret, data, hashlib.sha256).digest()


def hs512(secret: bytes) -> Signer:
    return lambda data: hmac.new(secret, data, hashlib.sha512).digest()


def rs256(key: rsa.RSAPrivateKey) -> Signer:
    return lambda data: key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


# -- the surfaces: a raw request for a token ---------------------------------------------

HOST = b"Host: 127.0.0.1\r\n"
UPGRADE = (b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")


def bearer(tok: bytes) -> bytes:
    return b"Authorization: Bearer " + tok + b"\r\n"


def room_body(n: int) -> bytes:
    # an id no other case or test of the module's stack used: each creation is a 201
    body = json.dumps({"id": f"edge-{n}-{uuid.uuid4().hex[:8]}"}).encode()
    return b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


SURFACES: dict[str, tuple[Callable[[bytes, int], bytes], int]] = {
    # name: (token, serial -> request, the status of an accepted token)
    "ws": (lambda t, n: b"GET /v1/ws HTTP/1.1\r\n" + HOST + UPGRADE + bearer(t) + b"\r\n", 101),
    "ws ?access_token": (lambda t, n: b"GET /v1/ws?access_token="
                         + urllib.parse.quote_from_bytes(t, safe="").encode()
                         + b" HTTP/1.1\r\n" + HOST + UPGRADE + b"\r\n", 101),
    "sse": (lambda t, n: b"GET /v1/sse?rooms=lobby HTTP/1.1\r\n" + HOST + bearer(t) + b"\r\n",
            200),
    "poll": (lambda t, n: b"GET /v1/poll?rooms=lobby&timeout=0 HTTP/1.1\r\n" + HOST
             + bearer(t) + b"\r\n", 200),
    "POST /v1/rooms": (lambda t, n: b"POST /v1/rooms HTTP/1.1\r\n" + HOST + bearer(t)
                       + room_body(n), 201),
    "POST /v1/ws-ticket": (lambda t, n: b"POST /v1/ws-ticket HTTP/1.1\r\n" + HOST + bearer(t)
                           + b"Content-Length: 0\r\n\r\n", 200),
}


@dataclass(frozen=True)
class Answer:
    status: int
    reason: str | None  # the 401's reason


async def ask(port: int, request: bytes) -> Answer:
    """Send *request*; the status, and the reason of a JSON error with one."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(T):
            status_line = await reader.readline()
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            body = b""
            if status_line.split()[1:2] != [b"101"] and "content-length" in headers:
                body = await reader.readexactly(int(headers["content-length"]))
    finally:
        writer.close()
    assert status_line.startswith(b"HTTP/1.1 "), (status_line, request[:200])
    status = int(status_line.split()[1])
    reason = None
    if status == 401:
        assert headers.get("www-authenticate") == 'Bearer error="invalid_token"'
        error = json.loads(body)["error"]
        assert error["code"] == "unauthorized"
        reason = error["reason"]
    return Answer(status, reason)


@dataclass
class Tally:
    """Inputs per surface, for docs/security.md's figures."""

    counts: Counter[str] = field(default_factory=Counter)
    serial: int = 0

    async def judge(self, gateway: Running, name: str, tok: bytes,
                    expect: str | dict[str, str]) -> None:
        """*expect*: a 401 reason, ``ok``, or an HTTP status (``413``), or some of
        them (``a|b``); or those by surface (``*``: the others)."""
        for surface, (build, accepted) in SURFACES.items():
            want = expect if isinstance(expect, str) else expect.get(surface, expect["*"])
            self.serial += 1
            answer = await ask(gateway.port, build(tok, self.serial))
            self.counts[surface] += 1
            got = ("ok" if answer.status == accepted else answer.reason
                   or str(answer.status))
            assert got in want.split("|"), f"{name} on {surface}: {answer}, expected {want}"


def clean(gateway: Running) -> None:
    log = gateway.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
    assert '"level":"ERROR"' not in log, log[-3000:]  # Sanic's "body not consumed", say


async def still_works(gateway: Running, tok: str) -> None:
    async with raw_ws(gateway.ws_url, tok) as ws:
        await ws.send({"type": "send", "room": "lobby", "client_id": f"after-{time.time()}",
                       "body": "still here"})
        assert (await ws.recv_until_any(("ack", "error"), T))["type"] == "ack"


# -- the cases ------------------------------------------------------------------------------


def claims_cases(now: int, sign: Signer, alg: str, base: dict[str, Any]) -> list[Case]:
    """Edge cases of the payload, signed right: what every key set-up must refuse alike."""
    head = {"alg": alg, "typ": "JWT"}

    def with_(**over: Any) -> bytes:
        payload = {**base, "exp": now + 600, **over}
        return token(head, {k: v for k, v in payload.items() if v is not None}, sign)

    def raw_payload(text: str) -> bytes:
        return token(head, text.encode(), sign)

    aud_iss = ",".join(f'"{k}":"{v}"' for k, v in base.items() if k in ("aud", "iss"))
    aud_iss = "," + aud_iss if aud_iss else ""
    return [
        ("valid", with_(), "ok"),
        ("expired", with_(exp=now - 60), "expired"),
        # taken within the clock-skew leeway, but it buys no ticket: that would be born dead
        ("expired within the leeway", with_(exp=now - LEEWAY + 3),
         {"*": "ok", "POST /v1/ws-ticket": "expired"}),
        ("nbf in the future", with_(nbf=now + 60), "not_yet_valid"),
        ("nbf within the leeway", with_(nbf=now + LEEWAY - 3), "ok"),
        ("iat in the future", with_(iat=now + 60), "not_yet_valid"),
        ("iat within the leeway", with_(iat=now + LEEWAY - 3), "ok"),
        ("iat as a string", with_(iat="yesterday"), "claims"),
        ("no exp", token(head, {k: v for k, v in base.items()}, sign), "claims"),
        ("exp null", raw_payload(f'{{"sub":"alice","exp":null{aud_iss}}}'), "claims"),
        ("exp as a numeric string", with_(exp=str(now + 600)), "claims"),
        ("exp as a word", with_(exp="tomorrow"), "claims"),
        ("exp as a float", with_(exp=now + 600.5), "ok"),
        ("exp true", with_(exp=True), "expired"),
        ("exp as a list", with_(exp=[now + 600]), "claims"),
        ("exp negative", with_(exp=-1), "expired"),
        ("exp of 400 digits", raw_payload(f'{{"sub":"alice","exp":1{"0" * 400}{aud_iss}}}'),
         "claims"),
        ("exp 1e308", raw_payload(f'{{"sub":"alice","exp":1e308{aud_iss}}}'), "claims"),
        ("exp 1e999 (infinite)", raw_payload(f'{{"sub":"alice","exp":1e999{aud_iss}}}'),
         "claims"),
        ("exp NaN", raw_payload(f'{{"sub":"alice","exp":NaN{aud_iss}}}'), "claims"),
        ("nbf NaN", raw_payload(f'{{"sub":"alice","exp":{now + 600},"nbf":NaN{aud_iss}}}'),
         "claims"),
        ("no sub", with_(sub=None), "claims"),
        ("sub a number", with_(sub=42), "claims"),
        ("sub a list", with_(sub=["alice"]), "claims"),
        ("sub empty", with_(sub=""), "claims"),
        ("sub too long", with_(sub="a" * (ids.MAX_USER_ID + 1)), "claims"),
        ("sub longest", with_(sub=LONGEST), "ok"),
        ("sub with a newline", with_(sub="alice\nadmin"), "claims"),
        ("sub with a zero-width space", with_(sub="ali\u200bce"), "claims"),
        ("sub with a NUL", with_(sub="alice\u0000"), "claims"),
        ("sub with a bidi override", with_(sub="alice\u202e"), "claims"),
        ("roles not a list", with_(roles="admin"), "claims"),
        ("jti a number", with_(jti=7), "claims"),
        ("sub twice", raw_payload(
            f'{{"sub":"mallory","exp":{now + 600},"sub":"alice"{aud_iss}}}'), "malformed"),
        ("payload not JSON", token(head, b"alice until tomorrow", sign), "malformed"),
        ("payload a JSON list", token(head, b'["alice"]', sign), "malformed"),
        ("payload invalid UTF-8", token(head, b'{"sub":"\xff\xfe","exp":99999999999}', sign),
         "malformed"),
    ]


def header_cases(now: int, sign: Signer, alg: str, base: dict[str, Any],
                 evil: str) -> list[Case]:
    """Edge cases of the header and of the token's shape, signed right."""
    payload = {**base, "exp": now + 600}
    body = raw_json(payload)
    good = token({"alg": alg}, payload, sign)
    return [
        # a static key has no use for a key id or a key URL: ignored, never followed
        ("kid path traversal", token({"alg": alg, "kid": "../../../../etc/passwd"}, payload,
                                     sign), "ok"),
        ("kid a number", token({"alg": alg, "kid": 1}, payload, sign), "malformed"),
        ("jku and x5u to a key server of the attacker's", token(
            {"alg": alg, "jku": f"{evil}/evil.json", "x5u": f"{evil}/evil.pem"}, payload,
            sign), "ok"),
        ("crit exp", token({"alg": alg, "crit": ["exp"]}, payload, sign), "malformed"),
        ("crit b64", token({"alg": alg, "crit": ["b64"], "b64": False}, payload, sign),
         "malformed"),
        ("crit not a list", token({"alg": alg, "crit": "exp"}, payload, sign), "malformed"),
        ("alg twice, none then right", token(
            f'{{"alg":"none","alg":"{alg}"}}'.encode(), body, sign), "malformed"),
        ("alg missing", token({"typ": "JWT"}, payload, sign), "algorithm"),
        ("alg a number", token({"alg": 256}, payload, sign), "algorithm"),
        ("header not JSON", token(b"HS256", payload, sign), "malformed"),
        ("header a JSON list", token(b'["HS256"]', payload, sign), "malformed"),
        ("header invalid UTF-8", token(b'{"alg":"' + alg.encode() + b'","k":"\xff"}',
                                       payload, sign), "malformed"),
        ("two segments", good.rsplit(b".", 1)[0], "malformed"),
        ("four segments", good + b".AAAA", "malformed"),
        ("one segment", good.split(b".")[0], "malformed"),
        ("empty segments", b"..", "malformed"),
        # the signature's own padding decodes to the same bytes: tolerated (PyJWT's reading)
        ("signature with its base64 padding", good + b"=" * (-len(good.rsplit(b".", 1)[1]) % 4),
         "ok"),
        ("signature with wrong base64 padding", good + b"===", "malformed"),
        # (padding that fits decodes, but the signature covers the segment as sent)
        ("payload with base64 padding", good.replace(b".", b"=.", 2).replace(b"=.", b".", 1),
         "malformed|bad_signature"),
        ("base64 with foreign characters", good.replace(b".", b".!$", 1), "malformed"),
        ("signature altered", good[:-4] + (b"AAAA" if not good.endswith(b"AAAA") else b"BBBB"),
         "bad_signature"),
        ("no signature", good.rsplit(b".", 1)[0] + b".", "bad_signature"),
        ("raw bytes not UTF-8", b"\xff\xfe." + good, "malformed"),
        ("non-ASCII characters", "é.é.é".encode(), "malformed"),
        ("7,000 characters", b"A" * 3500 + b"." + b"B" * 3499, "malformed"),
        ("100 KB (over the 8 KiB head)", b"A" * 50_000 + b"." + b"B" * 50_000, "413"),
    ]


def foreign_alg_cases(now: int, base: dict[str, Any], secret: bytes,
                      attacker: rsa.RSAPrivateKey) -> list[Case]:
    payload = {**base, "exp": now + 600}
    return [
        ("alg none", token({"alg": "none"}, payload, None), "algorithm"),
        ("alg None", token({"alg": "None"}, payload, None), "algorithm"),
        ("alg none with a signature", token({"alg": "none"}, payload, hs256(secret)),
         "algorithm"),
        ("alg HS512", token({"alg": "HS512"}, payload, hs512(secret)), "algorithm"),
    ]


# -- key servers -----------------------------------------------------------------------------


@dataclass
class KeyServer:
    """Serves JSON documents by path and counts what is asked for."""

    url: str = ""
    documents: dict[str, bytes] = field(default_factory=dict)
    asked: Counter[str] = field(default_factory=Counter)

    def answer(self, path: str) -> tuple[int, bytes | None]:
        self.asked[path] += 1
        body = self.documents.get(path)
        return (404, None) if body is None else (200, body)


@pytest.fixture
def keys_server() -> Iterator[KeyServer]:
    state = KeyServer()
    with serving(state.answer) as state.url:
        yield state


@pytest.fixture(scope="module")
def idp_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def attacker_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwks(key: rsa.RSAPrivateKey, kid: str) -> bytes:
    jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return json.dumps({"keys": [{**jwk, "kid": kid, "use": "sig", "alg": "RS256"}]}).encode()


# -- the tests ---------------------------------------------------------------------------------


async def test_jwt_edge_cases_with_an_hs256_secret(stack: Stack,
                                                   keys_server: KeyServer,
                                                   attacker_key: rsa.RSAPrivateKey) -> None:
    lobby(stack)
    gateway = stack.gateways[0]
    secret = JWT_SECRET.encode()
    now = int(time.time())
    base = {"sub": "alice"}
    keys_server.documents["/evil.json"] = jwks(attacker_key, "evil")
    tally = Tally()
    cases = (claims_cases(now, hs256(secret), "HS256", base)
             + header_cases(now, hs256(secret), "HS256", base, keys_server.url)
             + foreign_alg_cases(now, base, secret, attacker_key)
             + [("another secret", token({"alg": "HS256"}, {**base, "exp": now + 600},
                                         hs256(b"another-secret-of-32-bytes-or-more!!")),
                 "bad_signature"),
                ("alg RS256 (an attacker's key)", token(
                    {"alg": "RS256"}, {**base, "exp": now + 600}, rs256(attacker_key)),
                 "algorithm"),
                ("jku to the attacker's keys, signed with them", token(
                    {"alg": "HS256", "jku": f"{keys_server.url}/evil.json", "kid": "evil"},
                    {**base, "exp": now + 600}, hs256(b"evil" * 8)), "bad_signature"),
                ("no token", b"", "missing")])
    for name, tok, expect in cases:
        await tally.judge(gateway, name, tok, expect)
    assert not keys_server.asked, keys_server.asked  # jku and x5u never followed
    await still_works(gateway, stack.token("alice"))
    clean(gateway)
    print(f"jwt edges, HS256: {len(cases)} cases, {dict(tally.counts)}")


async def test_jwt_edge_cases_with_an_rsa_public_key_audience_and_issuer(
        stack: Stack, keys_server: KeyServer, idp_key: rsa.RSAPrivateKey,
        attacker_key: rsa.RSAPrivateKey) -> None:
    gateway = stack.add_gateway(BURROW_JWT_SECRET="", BURROW_JWT_PUBLIC_KEY=pem(idp_key).decode(),
                                BURROW_JWT_AUDIENCE=AUDIENCE, BURROW_JWT_ISSUER=ISSUER)
    lobby(stack)  # (through the HS256 gateway: same database)
    keys_server.documents["/evil.json"] = jwks(attacker_key, "evil")
    now = int(time.time())
    base = {"sub": "alice", "aud": AUDIENCE, "iss": ISSUER}
    sign = rs256(idp_key)
    payload = {**base, "exp": now + 600}
    public_pem = pem(idp_key)
    tally = Tally()
    cases = (claims_cases(now, sign, "RS256", base)
             + header_cases(now, sign, "RS256", base, keys_server.url)
             + foreign_alg_cases(now, base, JWT_SECRET.encode(), attacker_key)
             + [
                 # the classic: HS256 "signed" with the public key as the HMAC secret
                 ("alg confusion: HS256 with the public key PEM",
                  token({"alg": "HS256"}, payload, hs256(public_pem)), "algorithm"),
                 ("alg confusion: HS256 with the PEM without its newline",
                  token({"alg": "HS256"}, payload, hs256(public_pem.strip())), "algorithm"),
                 ("alg confusion: HS256 with the key's DER", token(
                     {"alg": "HS256"}, payload, hs256(idp_key.public_key().public_bytes(
                         serialization.Encoding.DER,
                         serialization.PublicFormat.SubjectPublicKeyInfo))), "algorithm"),
                 ("RS256 by the attacker's key", token({"alg": "RS256"}, payload,
                                                        rs256(attacker_key)), "bad_signature"),
                 ("RS256 by the attacker's key, its jwk embedded", token(
                     {"alg": "RS256", "jwk": json.loads(jwks(attacker_key, "e"))["keys"][0]},
                     payload, rs256(attacker_key)), "bad_signature"),
                 ("RS512 (not configured)", token({"alg": "RS512"}, payload,
                                                  lambda d: idp_key.sign(d, padding.PKCS1v15(),
                                                                         hashes.SHA512())),
                  "algorithm"),
                 ("another audience", token({"alg": "RS256"}, {**payload, "aud": "other"},
                                            sign), "audience"),
                 ("audience list without ours", token(
                     {"alg": "RS256"}, {**payload, "aud": ["a", "b"]}, sign), "audience"),
                 ("audience list with ours", token(
                     {"alg": "RS256"}, {**payload, "aud": ["a", AUDIENCE]}, sign), "ok"),
                 ("no audience", token({"alg": "RS256"}, {k: v for k, v in payload.items()
                                                          if k != "aud"}, sign), "claims"),
                 ("another issuer", token({"alg": "RS256"}, {**payload, "iss": "https://x"},
                                          sign), "issuer"),
                 ("issuer a number", token({"alg": "RS256"}, {**payload, "iss": 1}, sign),
                  "issuer"),
                 ("no issuer", token({"alg": "RS256"}, {k: v for k, v in payload.items()
                                                        if k != "iss"}, sign), "claims"),
             ])
    for name, tok, expect in cases:
        await tally.judge(gateway, name, tok, expect)
    assert not keys_server.asked, keys_server.asked
    await still_works(gateway, token({"alg": "RS256"}, payload, sign).decode())
    clean(gateway)
    print(f"jwt edges, RS256 public key: {len(cases)} cases, {dict(tally.counts)}")


async def test_jwt_edge_cases_with_a_jwks_url(stack: Stack, keys_server: KeyServer,
                                              idp_key: rsa.RSAPrivateKey,
                                              attacker_key: rsa.RSAPrivateKey) -> None:
    keys_server.documents["/jwks.json"] = jwks(idp_key, "idp-1")
    keys_server.documents["/evil.json"] = jwks(attacker_key, "idp-1")  # the same kid
    gateway = stack.add_gateway(BURROW_JWT_SECRET="",
                                BURROW_JWKS_URL=f"{keys_server.url}/jwks.json")
    lobby(stack)
    now = int(time.time())
    base = {"sub": "alice"}
    payload = {**base, "exp": now + 600}
    head = {"alg": "RS256", "kid": "idp-1"}

    def signed(**header: Any) -> bytes:
        return token({**head, **header}, payload, rs256(idp_key))

    tally = Tally()
    cases = [
        ("valid", signed(), "ok"),
        ("kid path traversal", signed(kid="../../../../etc/passwd"), "unknown_key"),
        ("kid a URL", signed(kid=f"{keys_server.url}/evil.json"), "unknown_key"),
        ("kid a number", signed(kid=1), "malformed"),
        ("kid of 3,000 characters", signed(kid="k" * 3000), "unknown_key"),
        ("no kid", token({"alg": "RS256"}, payload, rs256(idp_key)), "unknown_key"),
        ("jku to the attacker's set (same kid), signed by the attacker", token(
            {**head, "jku": f"{keys_server.url}/evil.json"}, payload, rs256(attacker_key)),
         "bad_signature"),
        ("x5u to the attacker, signed by the attacker", token(
            {**head, "x5u": f"{keys_server.url}/evil.json"}, payload, rs256(attacker_key)),
         "bad_signature"),
        ("alg confusion: HS256 with the public key PEM, kid idp-1", token(
            {"alg": "HS256", "kid": "idp-1"}, payload, hs256(pem(idp_key))), "algorithm"),
        ("alg none, kid idp-1", token({"alg": "none", "kid": "idp-1"}, payload, None),
         "algorithm"),
        ("alg twice", token(b'{"alg":"none","kid":"idp-1","alg":"RS256"}', payload,
                            rs256(idp_key)), "malformed"),
        ("expired", token(head, {**payload, "exp": now - 60}, rs256(idp_key)), "expired"),
        ("exp of 400 digits", token(head, f'{{"sub":"alice","exp":1{"0" * 400}}}'.encode(),
                                    rs256(idp_key)), "claims"),
        ("sub with a newline", token(head, {**payload, "sub": "a\nb"}, rs256(idp_key)),
         "claims"),
        ("header not JSON", token(b"RS256", payload, rs256(idp_key)), "malformed"),
        ("raw bytes not UTF-8", b"\xff\xfe." + signed(), "malformed"),
        ("100 KB (over the 8 KiB head)", b"A" * 50_000 + b"." + b"B" * 50_000, "413"),
    ]
    for name, tok, expect in cases:
        await tally.judge(gateway, name, tok, expect)
    assert keys_server.asked["/evil.json"] == 0, keys_server.asked
    # made-up key ids made the gateway fetch again at most once (every 10 s at most)
    assert keys_server.asked["/jwks.json"] <= 2, keys_server.asked
    await still_works(gateway, signed().decode())
    clean(gateway)
    print(f"jwt edges, JWKS: {len(cases)} cases, {dict(tally.counts)}")


# -- random headers and payloads, signed with the right key -------------------------------

NOW = int(time.time())
FAR = 3600
RESERVED_HEADER = {"alg", "crit", "b64"}
RESERVED_CLAIMS = {"sub", "exp", "nbf", "iat", "aud", "iss", "jti", "roles"}
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=8)
MISSING = object()


def sometimes(values: st.SearchStrategy[Any], odds: int = 1) -> st.SearchStrategy[Any]:
    """*values* once in 1 + *odds* draws, else no such member: most tokens get past most
    checks, so that the ones behind them are reached too."""
    # (sampled_from draws evenly; a one_of of equal branches does not)
    return st.sampled_from([False] * odds + [True]).flatmap(
        lambda there: values if there else st.just(MISSING))


def mostly(good: st.SearchStrategy[Any], other: st.SearchStrategy[Any],
           odds: int = 3) -> st.SearchStrategy[Any]:
    return st.sampled_from([True] * odds + [False]).flatmap(
        lambda fine: good if fine else other)


headers = st.fixed_dictionaries({
    "alg": mostly(st.just("HS256"), sometimes(
        st.sampled_from(["none", "None", "HS512", "RS256", "hs256", ""]) | json_values)),
    "crit": sometimes(st.sampled_from([["exp"], [], "x", ["b64"]]) | json_values, 6),
    "b64": sometimes(st.booleans(), 6),
    "extra": st.dictionaries(st.text(min_size=1, max_size=8).filter(
        lambda k: k not in RESERVED_HEADER), json_values, max_size=4),
})
numbers_of_time = st.sampled_from([NOW - FAR, NOW + FAR, NOW - FAR + 0.5, NOW + FAR + 0.5])
claims = st.fixed_dictionaries({
    "sub": mostly(st.sampled_from(["alice", LONGEST]), sometimes(
        st.sampled_from(["a" * 129, "", "a\nb", "a\u200bb", "al ice", "alice\u202e"])
        | st.text(max_size=10) | json_values)),
    "exp": mostly(st.just(NOW + FAR), sometimes(
        numbers_of_time | st.sampled_from(["soon", str(NOW + FAR), True, None, 10 ** 20])
        | json_values)),
    "nbf": sometimes(numbers_of_time | st.sampled_from(["x", None, [1]]), 2),
    "iat": sometimes(numbers_of_time | st.sampled_from(["x", None, [1]]), 2),
    "aud": sometimes(st.text(max_size=5) | json_values, 4),
    "iss": sometimes(json_values),
    "jti": sometimes(st.text(max_size=8) | json_values),
    "roles": sometimes(st.lists(st.text(max_size=6), max_size=3) | json_values),
    "extra": st.dictionaries(st.text(min_size=1, max_size=8).filter(
        lambda k: k not in RESERVED_CLAIMS), json_values, max_size=4),
})


def built(spec: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in spec.items() if k != "extra" and v is not MISSING}
    return {**spec["extra"], **out}


def timely(value: Any, future_is_bad: bool) -> bool:
    """PyJWT's reading of a time claim: whatever int() takes; a past exp or a future
    nbf / iat (beyond the leeway) is refused."""
    try:
        moment = int(value)
    except (TypeError, ValueError, OverflowError):
        return False
    return moment <= NOW + LEEWAY if future_is_bad else moment > NOW - LEEWAY


def accepted_by_the_rules(header: dict[str, Any], payload: dict[str, Any]) -> bool:
    """What docs/protocol.md and docs/security.md say of a token signed with the key."""
    if header.get("alg") != "HS256" or header.get("b64", True) is False:
        return False
    if "kid" in header and not isinstance(header["kid"], str):
        return False
    if "crit" in header:  # RFC 7515: understood extensions only (b64, and it is there)
        crit = header["crit"]
        if not isinstance(crit, list) or not crit or any(
                ext != "b64" or ext not in header for ext in crit):
            return False
    if not ids.is_user_id(payload.get("sub")):
        return False
    exp = payload.get("exp", MISSING)
    if exp is MISSING or isinstance(exp, bool) or not isinstance(exp, int | float) \
            or not timely(exp, False) or exp > 253402300799:
        return False
    for name in ("nbf", "iat"):
        if name in payload and not timely(payload[name], True):
            return False
    # no audience configured: a token that names one is for someone else (an empty one
    # names none, PyJWT's reading)
    if payload.get("aud") or ("jti" in payload and not isinstance(payload["jti"], str)):
        return False
    roles = payload.get("roles", [])
    return isinstance(roles, list) and all(isinstance(r, str) for r in roles)


def test_random_headers_and_payloads_signed_with_the_right_key(stack: Stack) -> None:
    # accepted streams are left by this client at once, but the gateway may notice an
    # SSE one only at its next heartbeat: no connection cap to hide an answer
    gateway = stack.add_gateway(BURROW_MAX_CONNECTIONS_USER="100000")
    lobby(stack)
    sign = hs256(JWT_SECRET.encode())
    counts: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()

    @given(headers, claims)
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def fuzz(header_spec: dict[str, Any], claims_spec: dict[str, Any]) -> None:
        header, payload = built(header_spec), built(claims_spec)
        if payload.get("sub") not in ("alice", LONGEST) and ids.is_user_id(
                payload.get("sub")):
            payload["sub"] = "alice"  # a member of lobby: SSE and polling answer 200
        surface = list(SURFACES)[counts.total() % len(SURFACES)]  # each in turn
        build, ok_status = SURFACES[surface]
        counts[surface] += 1
        answer = asyncio.run(ask(gateway.port, build(token(header, payload, sign),
                                                     counts.total())))
        expected = accepted_by_the_rules(header, payload)
        outcomes["accepted" if answer.status == ok_status else str(answer.reason)] += 1
        assert answer.status < 500, answer
        if expected:
            assert answer.status == ok_status, (header, payload, surface, answer)
        else:
            assert answer.status == 401 and answer.reason in REASONS, (
                header, payload, surface, answer)

    fuzz()
    print(f"jwt property: {counts.total()} tokens, per surface {dict(counts)}, "
          f"outcomes {dict(outcomes)}")  # docs/security.md quotes the long run
    assert counts.total() >= EXAMPLES
    clean(gateway)
    status, _ = stack.http("GET", "/v1/rooms", "alice")
    assert status == 200
