"""Client token verification: a JWT in, :class:`Claims` or an :class:`AuthError` out.

Why it is built this way:

* The accepted algorithms are pinned from configuration and never read from the token,
  and one verifier holds one kind of key. Mixing HMAC (HS*) with public-key algorithms is
  refused at startup: that mix is what makes the classic alg-confusion attack work (an
  HS256 token "signed" with the RSA public key as HMAC secret). ``none`` never passes.
* Keys are parsed and checked when the process starts (:meth:`Verifier.from_settings`), so
  a bad key stops the process with a message naming the variable instead of refusing every
  client later. A static public key only admits the algorithms that fit it (an RSA key
  with the default ``RS256,ES256`` admits RS256), so a token whose ``alg`` does not fit
  the key is an "algorithm" refusal, not a ``TypeError`` from inside PyJWT.
* ``exp`` and ``sub`` are required: PyJWT checks ``exp`` only when it is present. ``exp``
  must be a number (PyJWT takes ``"1700000000"`` and ``true``) before the year 10000:
  an integer of 400 digits passed PyJWT and then broke ``float()`` (a 500), and every
  expiry Burrow keeps (a connection's timer, a ticket's date) fits a datetime.
* A header or payload with a member name twice is refused: RFC 7515 allows taking the
  last one, but then what the issuer meant and what Burrow read may differ
  (``{"alg":"none","alg":"HS256"}``). ``jku``, ``x5u``, ``x5c`` and ``jwk`` headers are
  never followed: keys come from configuration only; an unknown ``crit`` is refused
  (PyJWT).
* JWKS keys are looked up by ``kid`` through PyJWT's synchronous client in a worker thread
  (``asyncio.to_thread``) so the event loop never waits on the network. The JWK set is
  cached for five minutes; the per-kid cache (``cache_keys``) stays off because it never
  expires, which would keep a key removed from the JWKS (rotated out, revoked) valid until
  the process restarts. The PyJWK object itself is handed to ``jwt.decode``, which binds
  the token's ``alg`` to the key's algorithm.
* Refusals carry a short ``reason`` code and a message meant for clients; neither contains
  the token or any key material.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.exceptions import InvalidJTIError, InvalidSubjectError
from jwt.types import Options
from jwt.utils import base64url_decode

from burrow.core import ids
from burrow.runtime.settings import ConfigError, Settings, is_loopback, shown
from gateway.jwks import LIFESPAN, TIMEOUT, KeySet, KeysUnavailable

__all__ = ["AuthError", "Claims", "ConfigError", "Verifier"]

log = logging.getLogger(__name__)

PublicKey = RSAPublicKey | EllipticCurvePublicKey | Ed25519PublicKey | Ed448PublicKey

REASONS: Final = frozenset({"missing", "malformed", "bad_signature", "expired",
                            "not_yet_valid", "audience", "issuer", "algorithm", "claims",
                            "unknown_key", "ticket"})
MAX_SUB_CHARS: Final = ids.MAX_USER_ID
MAX_TOKEN_CHARS: Final = 8192
MAX_EXP: Final = 253402300799  # 9999-12-31T23:59:59Z
JWKS_LIFESPAN: Final = LIFESPAN
JWKS_TIMEOUT: Final = TIMEOUT

_SECRET = "BURROW_JWT_SECRET"
_PUBLIC_KEY = "BURROW_JWT_PUBLIC_KEY"
_JWKS = "BURROW_JWKS_URL"
_ALGORITHMS = "BURROW_JWT_ALGORITHMS"
_HMAC_MIN_BYTES: Final = {"HS256": 32, "HS384": 48, "HS512": 64}
_OPTIONS: Final[Options] = {"require": ["exp", "sub"], "enforce_minimum_key_length": True}


_NO_ROLES: Final[frozenset[str]] = frozenset()


@dataclass(frozen=True, slots=True)  # slots: a WebSocket keeps its claims while open
class Claims:
    """What Burrow takes from a verified token."""

    user: str
    """The ``sub`` claim: 1 to 128 printable characters (:func:`burrow.core.ids.is_user_id`)."""
    roles: frozenset[str]
    """The optional ``roles`` claim (a list of strings); empty when absent."""
    expires_at: float
    """The ``exp`` claim, epoch seconds."""

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


class AuthError(Exception):
    """Why a token was refused.

    ``reason`` is one of ``"missing"``, ``"malformed"``, ``"bad_signature"``,
    ``"expired"``, ``"not_yet_valid"``, ``"audience"``, ``"issuer"``, ``"algorithm"``,
    ``"claims"``, ``"unknown_key"``, ``"ticket"`` (a ticket unknown, used or expired:
    :mod:`burrow.storage.tickets`); ``message`` is short and safe to show the client.
    """

    def __init__(self, reason: str, message: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown AuthError reason {reason!r}")
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"AuthError({self.reason!r}, {self.message!r})"


class Verifier:
    """Verifies client tokens against one configured key source; build it with
    :meth:`from_settings`. Safe to share between the tasks of one event loop."""

    def __init__(self, *, algorithms: tuple[str, ...], key: PublicKey | bytes | None = None,
                 jwks: KeySet | None = None, audience: str | None = None,
                 issuer: str | None = None, leeway: float = 0.0) -> None:
        if (key is None) == (jwks is None):
            raise ValueError("give exactly one of key and jwks")
        if not algorithms:
            raise ValueError("algorithms must not be empty")
        self.algorithms = algorithms
        self._key = key
        self._jwks = jwks
        self._audience = audience
        self._issuer = issuer
        self._leeway = leeway

    @classmethod
    def from_settings(cls, settings: Settings) -> Verifier:
        """The verifier for *settings*' key source.

        Raises :exc:`~burrow.runtime.settings.ConfigError`, naming the variable, unless exactly one
        of ``BURROW_JWT_SECRET``, ``BURROW_JWT_PUBLIC_KEY`` and ``BURROW_JWKS_URL`` is set
        and it fits ``BURROW_JWT_ALGORITHMS``.
        """
        sources = [name for name, value in ((_SECRET, settings.jwt_secret),
                                            (_PUBLIC_KEY, settings.jwt_public_key),
                                            (_JWKS, settings.jwks_url)) if value]
        if len(sources) != 1:
            found = "none is set" if not sources else f"{' and '.join(sources)} are set"
            raise ConfigError(f"set exactly one of {_SECRET}, {_PUBLIC_KEY} or {_JWKS} "
                              f"to verify client tokens; {found}")
        key: PublicKey | bytes | None = None
        jwks = None
        if settings.jwt_secret:
            algorithms = settings.jwt_algorithms or ("HS256",)
            key = _secret(settings.jwt_secret, algorithms)
        else:
            algorithms = settings.jwt_algorithms or ("RS256", "ES256")
            hmac = [a for a in algorithms if a.startswith("HS")]
            if hmac:
                raise ConfigError(f"{_ALGORITHMS} has {', '.join(hmac)}: HMAC algorithms "
                                  f"verify with a shared secret ({_SECRET}), never with "
                                  f"{sources[0]}")
            if settings.jwt_public_key:
                key = _public_key(settings.jwt_public_key)
                algorithms = _fitting(key, algorithms)
            else:
                jwks = _jwks_client(settings.jwks_url)
        return cls(algorithms=algorithms, key=key, jwks=jwks,
                   audience=settings.jwt_audience or None, issuer=settings.jwt_issuer or None,
                   leeway=settings.jwt_leeway)

    async def verify(self, token: str | None) -> Claims:
        """The claims of *token*, or :exc:`AuthError` saying why it is refused."""
        if not token:
            raise AuthError("missing", "token missing")
        if len(token) > MAX_TOKEN_CHARS:
            raise AuthError("malformed", "token too long")
        if not token.isascii():
            # A JWT is base64url and dots. Sanic hands over a header's undecodable bytes
            # as surrogates, which PyJWT's encode("utf-8") raised on: a 500, not a 401.
            raise AuthError("malformed", "token malformed")
        try:
            key = self._key if self._jwks is None else await self._jwk(self._jwks, token)
            assert key is not None  # one of the two is set (__init__)
            payload = jwt.decode(token, key, algorithms=list(self.algorithms),
                                 audience=self._audience, issuer=self._issuer,
                                 leeway=self._leeway, options=_OPTIONS)
        except jwt.PyJWTError as exc:
            raise _refusal(exc) from exc
        _no_repeated_names(token)
        return _claims(payload)

    async def _jwk(self, jwks: KeySet, token: str) -> jwt.PyJWK:
        # Refuse what no key can fix before going to the network: a foreign algorithm
        # (none, HS256) or a token without a kid.
        header = jwt.get_unverified_header(token)
        if header.get("alg") not in self.algorithms:
            raise jwt.InvalidAlgorithmError("The specified alg value is not allowed")
        kid = header.get("kid")
        if not kid or not isinstance(kid, str):
            raise AuthError("unknown_key", "token has no key id (kid)")
        try:
            return await jwks.key(kid)
        except KeysUnavailable as exc:
            raise AuthError("unknown_key", "token signing keys unavailable") from exc
        except KeyError:
            raise AuthError("unknown_key", "token key id not known") from None


def _refusal(exc: jwt.PyJWTError) -> AuthError:
    """The client-facing refusal for one of PyJWT's exceptions (subclasses first)."""
    if isinstance(exc, jwt.ExpiredSignatureError):
        return AuthError("expired", "token expired")
    if isinstance(exc, jwt.ImmatureSignatureError):
        return AuthError("not_yet_valid", "token not yet valid")
    if isinstance(exc, jwt.InvalidAudienceError):
        return AuthError("audience", "token audience not accepted")
    if isinstance(exc, jwt.InvalidIssuerError):
        return AuthError("issuer", "token issuer not accepted")
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return AuthError("algorithm", "token algorithm not accepted")
    if isinstance(exc, jwt.InvalidSignatureError):
        return AuthError("bad_signature", "token signature does not verify")
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return AuthError("claims", f"token has no {exc.claim} claim")
    if isinstance(exc, InvalidSubjectError):
        return AuthError("claims", "token sub must be a string")
    if isinstance(exc, (jwt.InvalidIssuedAtError, InvalidJTIError)):
        return AuthError("claims", "token has a malformed iat or jti claim")
    if isinstance(exc, jwt.DecodeError) and " claim (" in str(exc):
        # PyJWT reports a non-integer exp or nbf as a DecodeError.
        return AuthError("claims", "token has a malformed exp or nbf claim")
    if isinstance(exc, jwt.PyJWKClientError):
        return AuthError("unknown_key", "token key id not known")
    if isinstance(exc, jwt.InvalidKeyError):
        return AuthError("unknown_key", "token signing key not usable")
    return AuthError("malformed", "token malformed")


def _claims(payload: Mapping[str, Any]) -> Claims:
    sub = payload["sub"]
    # The same rule as every other user id (members, devices, the queues' senders): a
    # newline or a zero-width character in a sub would be a second spelling of a user.
    if not ids.is_user_id(sub):
        raise AuthError("claims", f"token sub must be 1 to {MAX_SUB_CHARS} printable "
                        "characters")
    exp = payload["exp"]
    # PyJWT accepts anything int() takes, numeric strings included; a NumericDate is a
    # number. (Compared, never converted: a 400-digit int overflows float(); NaN and the
    # infinities fail the comparison.)
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        raise AuthError("claims", "token exp must be a number")
    if not 0 <= exp <= MAX_EXP:
        raise AuthError("claims", "token exp must be a date before the year 10000")
    roles = payload.get("roles", [])
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise AuthError("claims", "token roles must be a list of strings")
    # The shared empty frozenset when there are none: each new one is 216 bytes, held
    # for as long as the WebSocket is open.
    return Claims(user=sub, roles=frozenset(roles) if roles else _NO_ROLES,
                  expires_at=float(exp))


def _no_repeated_names(token: str) -> None:
    """Refuse a verified token whose header or payload names a member twice."""
    for segment in token.split(".")[:2]:
        json.loads(base64url_decode(segment), object_pairs_hook=_unique_object)


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    names = {name for name, _ in pairs}
    if len(names) != len(pairs):
        raise AuthError("malformed", "token names a member twice")
    return dict(pairs)


def _secret(secret: str, algorithms: tuple[str, ...]) -> bytes:
    foreign = [a for a in algorithms if not a.startswith("HS")]
    if foreign:
        raise ConfigError(f"{_ALGORITHMS} has {', '.join(foreign)}: public-key algorithms "
                          f"need {_PUBLIC_KEY} or {_JWKS}, not {_SECRET}")
    key = secret.encode("utf-8")
    need = max(_HMAC_MIN_BYTES[a] for a in algorithms)
    if len(key) < need:
        strongest = max(algorithms, key=_HMAC_MIN_BYTES.__getitem__)
        raise ConfigError(f"{_SECRET} is {len(key)} bytes; {strongest} needs at least "
                          f"{need} random bytes")
    try:
        jwt.get_algorithm_by_name(algorithms[0]).prepare_key(key)
    except jwt.InvalidKeyError:
        raise ConfigError(f"{_SECRET} holds a public key, private key or certificate; "
                          f"a public key belongs in {_PUBLIC_KEY}") from None
    return key


def _public_key(value: str) -> PublicKey:
    if value.lstrip().startswith("-----BEGIN"):
        pem, where = value.strip().encode("ascii", "replace"), _PUBLIC_KEY
    else:
        path = Path(value).expanduser()
        try:
            pem = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{_PUBLIC_KEY}: cannot read the PEM file "
                              f"{shown(_PUBLIC_KEY, str(path))} "
                              f"({exc.strerror or exc})") from None
        where = f"{_PUBLIC_KEY} file {shown(_PUBLIC_KEY, str(path))}"
    if b"PRIVATE KEY-----" in pem:
        raise ConfigError(f"{where} holds a private key; give the public key only")
    try:
        if b"-----BEGIN CERTIFICATE-----" in pem:
            key: object = x509.load_pem_x509_certificate(pem).public_key()
        else:
            key = load_pem_public_key(pem)
    except ValueError:
        raise ConfigError(f"{where} is not a PEM public key or certificate") from None
    if not isinstance(key, (RSAPublicKey, EllipticCurvePublicKey, Ed25519PublicKey,
                            Ed448PublicKey)):
        raise ConfigError(f"{where} is a {type(key).__name__}; tokens are verified with "
                          "RSA, EC (P-256/384/521) or Ed25519/Ed448 keys")
    return key


def _fitting(key: PublicKey, algorithms: tuple[str, ...]) -> tuple[str, ...]:
    """The configured algorithms that can verify with *key*, which must be some."""
    fit = []
    for name in algorithms:
        algorithm = jwt.get_algorithm_by_name(name)
        try:
            prepared = algorithm.prepare_key(key)
        except (TypeError, ValueError, jwt.PyJWTError):
            continue
        weak = algorithm.check_key_length(prepared)
        if weak:
            raise ConfigError(f"{_PUBLIC_KEY} is too weak: {weak}")
        fit.append(name)
    if not fit:
        raise ConfigError(f"{_PUBLIC_KEY} is an {_describe(key)} key, which none of "
                          f"{_ALGORITHMS}={','.join(algorithms)} can verify with")
    return tuple(fit)


def _describe(key: PublicKey) -> str:
    if isinstance(key, RSAPublicKey):
        return "RSA"
    if isinstance(key, EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    return "Ed25519" if isinstance(key, Ed25519PublicKey) else "Ed448"


def _jwks_client(url: str) -> KeySet:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{_JWKS}={shown(_JWKS, url)} is invalid: expected an https:// URL "
                          "with a host")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        # whoever sits on the path would hand the gateway their own signing keys
        raise ConfigError(f"{_JWKS}={shown(_JWKS, url)} is plain http: the keys that decide "
                          "who is who "
                          "must come over https (http is taken for loopback only)")
    return KeySet(url, lifespan=JWKS_LIFESPAN, timeout=JWKS_TIMEOUT)
