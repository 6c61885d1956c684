"""One settings object for every Burrow process, read from the environment once.

The composition roots (``python -m gateway``, ``python -m consumers``) call
:meth:`Settings.from_env` and pass the result down; no other module reads ``os.environ``.

:data:`~burrow.runtime.variables.VARIABLES` lists every ``BURROW_*`` variable anything in the project reads, with
its default and meaning: the processes' settings (group ``server``, :data:`NAMES`), and
the launcher's, docker compose's, the clients' and tools', and the tests' (:data:`IGNORED`),
which the processes ignore, so one shell can export both. Any other ``BURROW_*`` variable
stops a process, with a suggestion when it looks like a misspelling. ``docs/configuration.md``
is generated from the table (``python -m burrow.runtime.configdoc``), and a test holds the
two equal.

A variable marked ``secret`` (a credential, or a URL that may carry one) is never shown
in an error message, nor is any part of it a parser's reason quotes (:func:`refusal`),
nor a value that looks like key material (a PEM or service-account JSON pasted where a
path belongs).
"""

from __future__ import annotations

import difflib
import hashlib
import hmac
import importlib.util
import ipaddress
import os
import re
import socket
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from burrow.core import endpoints, tls
from burrow.core.admission import parse_mode
from burrow.core.events import Selection
from burrow.mail.smtp_url import parse_smtp_url
from burrow.runtime.logs import redact
from burrow.runtime.ratelimit import FloodRule, Rule, async_storage_uri
from burrow.runtime.variables import IGNORED, NAMES, VARIABLES
from burrow.storage.s3blobs import S3Config


class ConfigError(ValueError):
    """A variable is missing or malformed; the message names it and says what is expected."""


_DEFAULTS = {v.name: v.default for v in VARIABLES}
_BY_NAME = {v.name: v for v in VARIABLES}


@dataclass(frozen=True)
class Settings:
    amqp_url: str  # the first of amqp_urls
    amqp_urls: tuple[str, ...]  # one per broker node (burrow.core.endpoints)
    mongo_url: str
    host: str
    port: int
    gateway_workers: int
    tls_cert: str
    tls_key: str
    metrics_host: str
    metrics_port: int
    metrics_from: Networks
    metrics_dir: str
    shards: int
    reconnect_interval: float
    health_interval: float
    db_timeout: float
    instance_id: str
    log_level: str
    log_format: str
    jwt_secret: str
    jwt_public_key: str
    jwks_url: str
    jwt_algorithms: tuple[str, ...]
    jwt_audience: str
    jwt_issuer: str
    jwt_leeway: float
    ws_ticket_ttl: int
    max_body_bytes: int
    edit_window: int
    max_reactions: int
    room_mention_max: int
    filter_words: str
    filter_file: str
    filter_action: str
    filter_refresh: float
    moderation_hook: str
    moderation_hook_timeout_ms: int
    moderation_hook_failure: str
    max_frame_bytes: int
    send_timeout: float
    client_buffer: int
    sequencer_batch: int
    sequencer_heartbeat: float
    notify_batch: int
    worker_prefetch: int
    worker_concurrency: int
    idle_after: float
    presence_ttl: float
    push_delay: int
    push_retries: tuple[int, ...]
    digest_hourly: int
    digest_daily: int
    email_retries: tuple[int, ...]
    fcm_project: str
    fcm_credentials: str
    fcm_endpoint: str
    apns_key_file: str
    apns_key_id: str
    apns_team_id: str
    apns_topic: str
    apns_sandbox: bool
    apns_endpoint: str
    apns_ca_file: str
    smtp_url: str
    email_from: str
    public_url: str
    unsubscribe_secret: str
    typing_interval: float
    rate_storage: str
    rate_connection: Rule
    rate_user: Rule
    rate_ip: Rule
    rate_frames: Rule
    rate_members: Rule
    invites: str
    max_connections_user: int
    max_connections_ip: int
    rate_flood: FloodRule
    sse_heartbeat: float
    cors_origins: frozenset[str]
    dev_mode: bool
    dev_mode_any_host: bool
    dev_token_ttl: int
    attachment_max_bytes: int
    attachment_types: frozenset[str]
    attachment_pending_max: int
    attachment_pending_ttl: float
    attachment_url_ttl: int
    attachment_secret: str
    attachment_store: str
    s3_endpoint_url: str
    s3_bucket: str
    s3_region: str
    s3_access_key_id: str
    s3_secret_access_key: str
    s3_url_ttl: int
    events: Selection
    webhook_url: str
    webhook_secret: str
    webhook_events: Selection
    webhook_retries: tuple[int, ...]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every ``BURROW_*`` variable of *env* (default: ``os.environ``).

        Raises :exc:`ConfigError` naming the first variable that is missing or malformed,
        or every ``BURROW_*`` variable that is neither a setting nor in :data:`IGNORED`.
        """
        env = os.environ if env is None else env
        unknown = sorted(k for k in env if k.startswith("BURROW_") and k not in NAMES
                         and k not in IGNORED)
        if unknown:
            raise ConfigError(_unknown(unknown))

        def get(name: str, parse: Callable[[str], Any] = str) -> Any:
            raw = env.get(name) or _DEFAULTS[name]
            if raw is None:
                raise ConfigError(f"{name} is not set: {_help(name)}")
            try:
                return parse(raw)
            except ValueError as exc:
                # the message reaches the terminal, the logs and CI's output
                raise ConfigError(refusal(name, raw, str(exc))) from None

        return cls(
            amqp_url=(amqp_urls := get("BURROW_AMQP_URL", _amqp_urls))[0],
            amqp_urls=amqp_urls,
            mongo_url=get("BURROW_MONGO_URL",
                          _then(_url(("mongodb", "mongodb+srv")), tls.verified_mongo_url)),
            host=get("BURROW_HOST"),
            port=get("BURROW_PORT", _port),
            gateway_workers=get("BURROW_GATEWAY_WORKERS", _positive(int)),
            tls_cert=_paired(get("BURROW_TLS_CERT", tls.readable_file),
                             get("BURROW_TLS_KEY", tls.readable_file)),
            tls_key=get("BURROW_TLS_KEY"),
            metrics_host=get("BURROW_METRICS_HOST"),
            metrics_port=get("BURROW_METRICS_PORT", _port),
            metrics_from=get("BURROW_METRICS_FROM", networks),
            metrics_dir=get("BURROW_METRICS_DIR") or "",
            shards=get("BURROW_SHARDS", _positive(int)),
            reconnect_interval=get("BURROW_RECONNECT_INTERVAL", _positive(float)),
            health_interval=get("BURROW_HEALTH_INTERVAL", _positive(float)),
            db_timeout=get("BURROW_DB_TIMEOUT", _positive(float)),
            instance_id=(get("BURROW_INSTANCE_ID")
                         or f"{socket.gethostname()}-{os.getpid()}"),
            log_level=get("BURROW_LOG_LEVEL", _level),
            log_format=get("BURROW_LOG_FORMAT", _log_format),
            jwt_secret=get("BURROW_JWT_SECRET"),
            jwt_public_key=get("BURROW_JWT_PUBLIC_KEY"),
            jwks_url=get("BURROW_JWKS_URL"),
            jwt_algorithms=get("BURROW_JWT_ALGORITHMS", _algorithms),
            jwt_audience=get("BURROW_JWT_AUDIENCE"),
            jwt_issuer=get("BURROW_JWT_ISSUER"),
            jwt_leeway=get("BURROW_JWT_LEEWAY", _non_negative(float)),
            ws_ticket_ttl=get("BURROW_WS_TICKET_TTL", _ticket_ttl),
            max_body_bytes=get("BURROW_MAX_BODY_BYTES", _positive(int)),
            edit_window=get("BURROW_EDIT_WINDOW", _non_negative(int)),
            max_reactions=get("BURROW_MAX_REACTIONS", _positive(int)),
            room_mention_max=get("BURROW_ROOM_MENTION_MAX", _non_negative(int)),
            filter_words=get("BURROW_FILTER_WORDS", _filter_words),
            filter_file=get("BURROW_FILTER_FILE"),
            filter_action=get("BURROW_FILTER_ACTION", _one_of("reject", "replace")),
            filter_refresh=get("BURROW_FILTER_REFRESH", _positive(float)),
            moderation_hook=get("BURROW_MODERATION_HOOK", _one_of("off", "on", "rooms")),
            moderation_hook_timeout_ms=get("BURROW_MODERATION_HOOK_TIMEOUT_MS", _hook_timeout),
            moderation_hook_failure=get("BURROW_MODERATION_HOOK_FAILURE",
                                        _one_of("open", "closed")),
            max_frame_bytes=get("BURROW_MAX_FRAME_BYTES", _positive(int)),
            send_timeout=get("BURROW_SEND_TIMEOUT", _positive(float)),
            client_buffer=get("BURROW_CLIENT_BUFFER", _positive(int)),
            sequencer_batch=get("BURROW_SEQUENCER_BATCH", _positive(int)),
            sequencer_heartbeat=get("BURROW_SEQUENCER_HEARTBEAT", _positive(float)),
            notify_batch=get("BURROW_NOTIFY_BATCH", _positive(int)),
            worker_prefetch=get("BURROW_WORKER_PREFETCH", _positive(int)),
            worker_concurrency=get("BURROW_WORKER_CONCURRENCY", _positive(int)),
            idle_after=get("BURROW_IDLE_AFTER", _positive(float)),
            presence_ttl=get("BURROW_PRESENCE_TTL", _positive(float)),
            push_delay=get("BURROW_PUSH_DELAY", _positive(int)),
            push_retries=get("BURROW_PUSH_RETRIES", _tiers),
            digest_hourly=get("BURROW_DIGEST_HOURLY", _positive(int)),
            digest_daily=get("BURROW_DIGEST_DAILY", _positive(int)),
            email_retries=get("BURROW_EMAIL_RETRIES", _tiers),
            fcm_project=get("BURROW_FCM_PROJECT"),
            fcm_credentials=get("BURROW_FCM_CREDENTIALS"),
            fcm_endpoint=get("BURROW_FCM_ENDPOINT"),
            apns_key_file=get("BURROW_APNS_KEY_FILE"),
            apns_key_id=get("BURROW_APNS_KEY_ID"),
            apns_team_id=get("BURROW_APNS_TEAM_ID"),
            apns_topic=get("BURROW_APNS_TOPIC"),
            apns_sandbox=get("BURROW_APNS_SANDBOX", _bool),
            apns_endpoint=get("BURROW_APNS_ENDPOINT"),
            apns_ca_file=get("BURROW_APNS_CA_FILE"),
            smtp_url=get("BURROW_SMTP_URL", _smtp_url),
            email_from=get("BURROW_EMAIL_FROM"),
            public_url=get("BURROW_PUBLIC_URL", _url(("http", "https"))).rstrip("/"),
            unsubscribe_secret=get("BURROW_UNSUBSCRIBE_SECRET", _secret_bytes),
            typing_interval=get("BURROW_TYPING_INTERVAL", _positive(float)),
            rate_storage=get("BURROW_RATE_STORAGE", async_storage_uri),
            rate_connection=get("BURROW_RATE_CONNECTION", Rule.parse),
            rate_user=get("BURROW_RATE_USER", Rule.parse),
            rate_ip=get("BURROW_RATE_IP", Rule.parse),
            rate_frames=get("BURROW_RATE_FRAMES", Rule.parse),
            rate_members=get("BURROW_RATE_MEMBERS", Rule.parse),
            invites=get("BURROW_INVITES", parse_mode),
            max_connections_user=get("BURROW_MAX_CONNECTIONS_USER", _positive(int)),
            max_connections_ip=get("BURROW_MAX_CONNECTIONS_IP", _positive(int)),
            rate_flood=get("BURROW_RATE_FLOOD", FloodRule.parse),
            sse_heartbeat=get("BURROW_SSE_HEARTBEAT", _positive(float)),
            cors_origins=get("BURROW_CORS_ORIGINS", _origins),
            dev_mode=get("BURROW_DEV_MODE", _bool),
            dev_mode_any_host=get("BURROW_DEV_MODE_ANY_HOST", _bool),
            dev_token_ttl=get("BURROW_DEV_TOKEN_TTL", _positive(int)),
            attachment_max_bytes=get("BURROW_ATTACHMENT_MAX_BYTES", _positive(int)),
            attachment_types=get("BURROW_ATTACHMENT_TYPES", _media_types),
            attachment_pending_max=get("BURROW_ATTACHMENT_PENDING_MAX", _positive(int)),
            attachment_pending_ttl=get("BURROW_ATTACHMENT_PENDING_TTL", _positive(float)),
            attachment_url_ttl=get("BURROW_ATTACHMENT_URL_TTL", _url_ttl),
            attachment_secret=get("BURROW_ATTACHMENT_SECRET", _secret_bytes),
            attachment_store=_s3_complete(get("BURROW_ATTACHMENT_STORE", _store_kind), {
                name: get(name) for name in _S3_PAIRED}),
            s3_endpoint_url=get("BURROW_S3_ENDPOINT_URL", _s3_endpoint),
            s3_bucket=get("BURROW_S3_BUCKET", _s3_bucket),
            s3_region=get("BURROW_S3_REGION", _s3_region),
            s3_access_key_id=get("BURROW_S3_ACCESS_KEY_ID", _s3_key("an access key id")),
            s3_secret_access_key=get("BURROW_S3_SECRET_ACCESS_KEY", _s3_key("a secret key")),
            s3_url_ttl=get("BURROW_S3_URL_TTL", _s3_url_ttl),
            events=get("BURROW_EVENTS", Selection.parse),
            webhook_url=get("BURROW_WEBHOOK_URL", _optional(_url(("http", "https")))),
            webhook_secret=get("BURROW_WEBHOOK_SECRET", _secret_bytes),
            webhook_events=get("BURROW_WEBHOOK_EVENTS", Selection.parse),
            webhook_retries=get("BURROW_WEBHOOK_RETRIES", _tiers),
        )

    def unsubscribe_key(self) -> str:
        """The unsubscribe-link secret: its own, or one derived from the JWT secret.

        Derived, not the JWT secret itself, so a leaked unsubscribe link can never help
        forge an access token.
        """
        if self.unsubscribe_secret:
            return self.unsubscribe_secret
        if not self.jwt_secret:
            raise ConfigError("BURROW_UNSUBSCRIBE_SECRET is needed (no BURROW_JWT_SECRET "
                              f"to derive it from): {_help('BURROW_UNSUBSCRIBE_SECRET')}")
        return hmac.new(self.jwt_secret.encode(), b"burrow unsubscribe links",
                        hashlib.sha256).hexdigest()

    def attachment_key(self) -> bytes:
        """The key of signed download URLs: its own, or one derived from the JWT secret
        (never the JWT secret itself). :exc:`ConfigError` when there is neither."""
        if self.attachment_secret:
            return self.attachment_secret.encode()
        if not self.jwt_secret:
            raise ConfigError("BURROW_ATTACHMENT_SECRET is needed (no BURROW_JWT_SECRET "
                              f"to derive it from): {_help('BURROW_ATTACHMENT_SECRET')}")
        return hmac.new(self.jwt_secret.encode(), b"burrow attachment urls",
                        hashlib.sha256).digest()

    def s3_config(self) -> S3Config | None:
        """The bucket of the files with ``BURROW_ATTACHMENT_STORE=s3``, else None (GridFS)."""
        if self.attachment_store != "s3":
            return None
        return S3Config(self.s3_bucket, self.s3_region, self.s3_endpoint_url or None,
                        self.s3_access_key_id or None, self.s3_secret_access_key or None,
                        url_ttl=self.s3_url_ttl, grant_ttl=self.attachment_url_ttl)

    def fresh_metrics_dir(self) -> str:
        """The multiprocess metrics directory, created and emptied of a previous run's files."""
        path = self.metrics_dir or tempfile.mkdtemp(prefix="burrow-metrics-")
        os.makedirs(path, exist_ok=True)
        for name in os.listdir(path):
            if name.endswith(".db"):
                os.remove(os.path.join(path, name))
        return path


def _help(name: str) -> str:
    """The variable's meaning as plain text: its Markdown without the markup."""
    text = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", _BY_NAME[name].help)  # [text](link)
    return text.replace("`", "").replace("**", "")


def _unknown(names: list[str]) -> str:
    """The refusal of *names*, each with the known variable it looks like a misspelling of."""
    known = {n.removeprefix("BURROW_"): n for n in sorted(NAMES | IGNORED)}

    def one(name: str) -> str:
        close = difflib.get_close_matches(name.removeprefix("BURROW_"), known, n=1, cutoff=0.7)
        return f"{name} (did you mean {known[close[0]]}?)" if close else name

    return (f"unknown setting{'s' if len(names) > 1 else ''} {', '.join(map(one, names))}: "
            "every BURROW_* variable Burrow reads is in docs/configuration.md")


# A query parameter's name as a URL's own vocabulary spells it (starttls, tlsCAFile).
_PARAMETER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# What a value looks like when key material was given where a path belongs: a PEM, or a
# service-account JSON pasted whole.
_KEY_MATERIAL = re.compile(r"-----BEGIN|PRIVATE KEY|\"private_key\"|\n")


def _secret(name: str) -> bool:
    variable = _BY_NAME.get(name)
    return variable is not None and variable.secret


def _hidden(name: str, value: str) -> bool:
    return _secret(name) or bool(_KEY_MATERIAL.search(value))


def shown(name: str, value: str) -> str:
    """*value* of variable *name* as a message may quote it: ``'value'`` with any URL
    password redacted, or a note that it is not shown (a secret, or key material)."""
    if not _hidden(name, value):
        return repr(redact(value))
    return "(a secret, not shown)" if _secret(name) else "(key material, not shown)"


def _pieces(value: str) -> list[str]:
    """What of a secret *value* a message must not contain: all of it, the user
    information of a URL (even a malformed one: up to the last ``@``) and its password, the
    query's values, and its names unless they are plain parameter names (``starttls``);
    each also as ``repr`` writes it. Longest first."""
    pieces = [value]
    head, at, _ = value.rpartition("@")
    if at:
        userinfo = head.split("//", 1)[1] if "//" in head else head.partition(":")[2]
        pieces += [userinfo, userinfo.partition(":")[2]]
    for pair in re.split(r"[&;]", value.partition("?")[2]):
        key, equals, item = pair.partition("=")
        pieces += [item] if equals and _PARAMETER.fullmatch(key) else [key, item]
    pieces += [repr(p)[1:-1] for p in pieces]
    return sorted({p for p in pieces if len(p) >= 4}, key=len, reverse=True)


def conceal(text: str, values: Mapping[str, str]) -> str:
    """*text* (a reason that may quote the given variables' values) fit for a message:
    URL passwords redacted, and every piece of a secret or key-material value replaced."""
    for name, value in values.items():
        if value and _hidden(name, value):
            for piece in _pieces(value):
                text = text.replace(piece, "[redacted]")
    return redact(text)


def refusal(name: str, value: str, reason: str) -> str:
    """The message refusing *value* of variable *name* for *reason* (a parser's, which may
    quote the value): a secret's value, or key material, is not shown, in either."""
    why = conceal(reason, {name: value})
    if _hidden(name, value):
        return (f"{name} is invalid ({why}; the value is {shown(name, value)[1:-1]}): "
                f"{_help(name)}")
    return f"{name}={shown(name, value)} is invalid ({why}): {_help(name)}"


def _url(schemes: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        parts = urlsplit(raw)
        if parts.scheme not in schemes or not parts.hostname:
            raise ValueError(f"expected a {' or '.join(schemes)}:// URL with a host")
        return raw
    return parse


def _amqp_urls(raw: str) -> tuple[str, ...]:
    """One URL per broker node, each with verified TLS when it asks for TLS."""
    urls = endpoints.split_urls(raw)
    for n, url in enumerate(urls, 1):
        try:
            tls.verified_amqp_url(url)
        except ValueError as exc:
            raise ValueError(f"entry {n}: {exc}" if len(urls) > 1 else str(exc)) from None
    return urls


def _smtp_url(raw: str) -> str:
    """*raw* once it is a relay URL that sends no mail and no password in clear beyond
    loopback unless asked to (:mod:`burrow.mail.smtp_url`)."""
    parse_smtp_url(raw)
    return raw


def _secret_bytes(raw: str) -> str:
    """A secret of its own, when given, is at least 32 bytes (as HS256 wants)."""
    if raw and len(raw.encode()) < MIN_SECRET_BYTES:
        raise ValueError(f"{len(raw.encode())} bytes; at least {MIN_SECRET_BYTES} random "
                         "bytes are needed")
    return raw


MIN_SECRET_BYTES = 32


def _optional(parse: Callable[[str], str]) -> Callable[[str], str]:
    """*parse*, for a variable whose empty value means "not used"."""
    return lambda raw: parse(raw) if raw else raw


def _then(first: Callable[[str], str], second: Callable[[str], str]) -> Callable[[str], str]:
    return lambda raw: second(first(raw))


def _paired(cert: str, key: str) -> str:
    """The certificate, once it is known to come with its key: half a TLS setup would
    otherwise start a plain-HTTP gateway the operator believes is HTTPS."""
    if bool(cert) != bool(key):
        given, missing = ("BURROW_TLS_CERT", "BURROW_TLS_KEY") if cert else (
            "BURROW_TLS_KEY", "BURROW_TLS_CERT")
        raise ConfigError(f"{given} is set but {missing} is not: set both (HTTPS and WSS) "
                          "or neither (plain HTTP)")
    return cert


def _port(raw: str) -> int:
    port = int(raw)
    if not 0 < port < 65536:
        raise ValueError("a port is 1..65535")
    return port


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(raw: str) -> Any:
        value = kind(raw)
        if value <= 0:
            raise ValueError("must be positive")
        return value
    return parse


def _non_negative(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(raw: str) -> Any:
        value = kind(raw)
        if value < 0:
            raise ValueError("must not be negative")
        return value
    return parse


_ALGORITHMS = frozenset({"HS256", "HS384", "HS512", "RS256", "RS384", "RS512",
                         "ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "EdDSA"})


def _algorithms(raw: str) -> tuple[str, ...]:
    names = tuple(a.strip() for a in raw.split(",") if a.strip())
    bad = [a for a in names if a not in _ALGORITHMS]
    if bad:
        raise ValueError(f"unknown algorithm {bad[0]!r}; 'none' is never accepted")
    return names


Networks = tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] | None


def networks(raw: str) -> Networks:
    """Comma-separated CIDR networks; ``*`` (or nothing) is None: every address."""
    parts = [p.strip() for p in raw.split(",") if p.strip()]
    if not parts or parts == ["*"]:
        return None
    return tuple(ipaddress.ip_network(p, strict=False) for p in parts)


def allowed(address: str, nets: Networks) -> bool:
    """Whether *address* lies in one of *nets* (None: every address does)."""
    if nets is None:
        return True
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return False
    return any(ip in net for net in nets)


_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}")


def _media_types(raw: str) -> frozenset[str]:
    types = frozenset(t.strip().lower() for t in raw.split(",") if t.strip())
    if bad := sorted(t for t in types if not _MEDIA_TYPE.fullmatch(t)):
        raise ValueError(f"{bad[0]!r} is not a type/subtype media type")
    return types


def _url_ttl(raw: str) -> int:
    value = int(raw)
    if not 1 <= value <= 86400:
        raise ValueError("must be from 1 to 86400 seconds")
    return value


def _one_of(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in allowed:
            raise ValueError(f"expected {' or '.join(allowed)}")
        return raw
    return parse


def _filter_words(raw: str) -> str:
    """Comma-separated blocklist words, checked now (burrow.core.prepublish)."""
    from burrow.core.prepublish import Blocklist  # (only when the variable is read)
    Blocklist.parse(raw)
    return raw


def _hook_timeout(raw: str) -> int:
    value = int(raw)
    if not 1 <= value <= 60_000:
        raise ValueError("expected milliseconds from 1 to 60000")
    return value


def _store_kind(raw: str) -> str:
    if raw not in ("gridfs", "s3"):
        raise ValueError("expected gridfs or s3")
    return raw


# Checked together: what S3 needs, and what says S3 was meant when the store is GridFS.
_S3_PAIRED = ("BURROW_S3_BUCKET", "BURROW_S3_ENDPOINT_URL", "BURROW_S3_ACCESS_KEY_ID",
              "BURROW_S3_SECRET_ACCESS_KEY")


def _s3_complete(kind: str, given: Mapping[str, str]) -> str:
    """*kind*, once the S3 variables fit it: a bucket and the s3 extra for ``s3``, both
    halves of a key or neither; no bucket or key given to GridFS, which would ignore
    them (an operator who set them meant S3). Names the variables, never their values."""
    if kind == "gridfs":
        if stray := [name for name, value in given.items() if value]:
            raise ConfigError(f"{stray[0]} is set but BURROW_ATTACHMENT_STORE is gridfs: "
                              "set BURROW_ATTACHMENT_STORE=s3 to keep files in S3, or unset "
                              "the BURROW_S3_* variables")
        return kind
    if not given["BURROW_S3_BUCKET"]:
        raise ConfigError("BURROW_ATTACHMENT_STORE=s3 needs BURROW_S3_BUCKET: "
                          f"{_help('BURROW_S3_BUCKET')}")
    if bool(given["BURROW_S3_ACCESS_KEY_ID"]) != bool(given["BURROW_S3_SECRET_ACCESS_KEY"]):
        half, other = (("BURROW_S3_ACCESS_KEY_ID", "BURROW_S3_SECRET_ACCESS_KEY")
                       if given["BURROW_S3_ACCESS_KEY_ID"] else
                       ("BURROW_S3_SECRET_ACCESS_KEY", "BURROW_S3_ACCESS_KEY_ID"))
        raise ConfigError(f"{half} is set but {other} is not: set both, or neither for the "
                          "AWS credential chain")
    if importlib.util.find_spec("aiobotocore") is None:
        raise ConfigError("BURROW_ATTACHMENT_STORE=s3 needs aiobotocore, which is not "
                          "installed: pip install 'burrow[s3]'")
    return kind


def _s3_endpoint(raw: str) -> str:
    if not raw:
        return raw
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("no user or password in the URL: the key has its own variables")
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise ValueError("expected scheme://host[:port] only: the bucket is BURROW_S3_BUCKET")
    parts.port  # noqa: B018  (a malformed port raises ValueError here)
    return raw.rstrip("/")


_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def _s3_bucket(raw: str) -> str:
    if raw and not _BUCKET.fullmatch(raw):
        raise ValueError("a bucket name is 3 to 63 lowercase letters, digits, dots and "
                         "hyphens")
    return raw


def _s3_region(raw: str) -> str:
    if not re.fullmatch(r"[a-z0-9-]{1,32}", raw):
        raise ValueError("expected a region name such as us-east-1")
    return raw


def _s3_key(what: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw and not re.fullmatch(r"[\x21-\x7e]{1,128}", raw):
            raise ValueError(f"not {what}: 1 to 128 printable ASCII characters, no space")
        return raw
    return parse


def _s3_url_ttl(raw: str) -> int:
    value = int(raw)
    if not 1 <= value <= 3600:
        raise ValueError("must be from 1 to 3600 seconds")
    return value


def _origins(raw: str) -> frozenset[str]:
    origins = frozenset(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    for origin in origins - {"*"}:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path \
                or parts.query or parts.fragment or parts.username:
            raise ValueError(f"{origin!r} is not an origin: scheme://host[:port], no path")
    return origins


MAX_TICKET_TTL = 300


def _ticket_ttl(raw: str) -> int:
    # a ticket is for the connection about to open, not a second long-lived credential
    ttl = int(raw)
    if not 1 <= ttl <= MAX_TICKET_TTL:
        raise ValueError(f"expected whole seconds from 1 to {MAX_TICKET_TTL}")
    return ttl


def _tiers(raw: str) -> tuple[int, ...]:
    tiers = tuple(int(t) for t in raw.split(",") if t.strip())
    if not tiers or any(t <= 0 for t in tiers):
        raise ValueError("expected positive whole seconds, comma-separated, e.g. 5,30,300")
    return tiers


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost; a name or an unspecified address (0.0.0.0) is not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value not in {"true", "false", "1", "0", "yes", "no"}:
        raise ValueError("expected true or false")
    return value in {"true", "1", "yes"}


def _log_format(raw: str) -> str:
    fmt = raw.lower()
    if fmt not in {"auto", "json", "text"}:
        raise ValueError("expected auto, json or text")
    return fmt


def _level(raw: str) -> str:
    level = raw.upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ValueError("expected DEBUG, INFO, WARNING or ERROR")
    return level
