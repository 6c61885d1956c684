"""One settings object for every Burrow process, read from the environment once.

The composition roots (``python -m gateway``, ``python -m consumers``) call
:meth:`Settings.from_env` and pass the result down; no other module reads ``os.environ``.
Every variable is listed in :data:`VARIABLES` with its default and meaning; the README's
configuration table and the docker-compose test are checked against it.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import socket
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from burrow.core import tls
from burrow.mail.smtp_url import parse_smtp_url
from burrow.runtime.logs import redact
from burrow.runtime.ratelimit import FloodRule, Rule, async_storage_uri


class ConfigError(ValueError):
    """A variable is missing or malformed; the message names it and says what is expected."""


@dataclass(frozen=True)
class Variable:
    name: str
    default: str | None
    help: str


VARIABLES: tuple[Variable, ...] = (
    Variable("BURROW_AMQP_URL", None,
             "RabbitMQ URL with this process's broker user and the vhost, e.g. "
             "amqp://burrow-gateway:PASSWORD@127.0.0.1:5672/burrow (required)"),
    Variable("BURROW_MONGO_URL", "mongodb://127.0.0.1:27017/burrow?directConnection=true",
             "MongoDB URL; its path names the database"),
    Variable("BURROW_HOST", "127.0.0.1", "gateway listen address"),
    Variable("BURROW_PORT", "8000", "gateway listen port"),
    Variable("BURROW_GATEWAY_WORKERS", "1", "gateway processes (Sanic workers)"),
    Variable("BURROW_TLS_CERT", "",
             "PEM certificate chain (leaf first) of the gateway; with BURROW_TLS_KEY it "
             "serves HTTPS and WSS only, and sends HSTS"),
    Variable("BURROW_TLS_KEY", "", "PEM private key of BURROW_TLS_CERT (both or neither)"),
    Variable("BURROW_METRICS_HOST", "127.0.0.1", "listen address of a worker's /metrics"),
    Variable("BURROW_METRICS_PORT", "9100", "listen port of a worker's /metrics"),
    Variable("BURROW_METRICS_FROM", "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,"
             "192.168.0.0/16,fc00::/7",
             "client networks (CIDR, comma-separated, or *) that may read the gateway's "
             "/metrics, which it serves on the clients' port; others get 403"),
    Variable("BURROW_METRICS_DIR", "",
             "directory for prometheus-client's multiprocess files "
             "(default: a fresh one under the system temp dir)"),
    Variable("BURROW_SHARDS", "4",
             "sequencer shard queues chat.seq.0..N-1; fixed: changing it is a migration"),
    Variable("BURROW_RECONNECT_INTERVAL", "1.0",
             "seconds between attempts to reach the broker after a loss"),
    Variable("BURROW_HEALTH_INTERVAL", "1.0",
             "seconds between readiness checks of broker and database"),
    Variable("BURROW_DB_TIMEOUT", "2.0",
             "seconds a database check may take before the database counts as down"),
    Variable("BURROW_INSTANCE_ID", "",
             "name of this process in queue names and logs (default: host-pid)"),
    Variable("BURROW_LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING or ERROR"),
    Variable("BURROW_LOG_FORMAT", "auto",
             "json (one object per line), text, or auto: text on a terminal, else json"),
    Variable("BURROW_JWT_SECRET", "", "HS256 secret (at least 32 bytes) that signs client tokens"),
    Variable("BURROW_JWT_PUBLIC_KEY", "",
             "PEM public key (RS256 / ES256), or the path of a PEM file, that verifies tokens"),
    Variable("BURROW_JWKS_URL", "", "JWKS URL whose keys (by kid) verify tokens"),
    Variable("BURROW_JWT_ALGORITHMS", "",
             "accepted algorithms, comma-separated (default: HS256 with a secret, "
             "RS256,ES256 with a public key or JWKS)"),
    Variable("BURROW_JWT_AUDIENCE", "", "required aud claim (unchecked when empty)"),
    Variable("BURROW_JWT_ISSUER", "", "required iss claim (unchecked when empty)"),
    Variable("BURROW_JWT_LEEWAY", "5", "seconds of clock skew allowed on exp / nbf / iat"),
    Variable("BURROW_WS_TICKET_TTL", "30",
             "seconds (1 to 300) a one-time ticket from POST /v1/ws-ticket stays valid "
             "for /v1/ws or /v1/sse; never beyond its token's exp"),
    Variable("BURROW_MAX_BODY_BYTES", "16384", "largest message body, in UTF-8 bytes"),
    Variable("BURROW_MAX_FRAME_BYTES", "65536",
             "largest WebSocket frame a client may send; bigger closes with 1009"),
    Variable("BURROW_SEND_TIMEOUT", "5.0",
             "seconds a send may wait for its ack before the client gets a retryable error"),
    Variable("BURROW_CLIENT_BUFFER", "2048",
             "frames queued for one slow client before it is disconnected (4008)"),
    Variable("BURROW_SEQUENCER_BATCH", "256",
             "messages a sequencer takes per shard at once (prefetch and batch size)"),
    Variable("BURROW_NOTIFY_BATCH", "256",
             "stored messages the notifier takes from notify.messages at once and schedules "
             "pushes and digests for with one read of their rooms' members"),
    Variable("BURROW_WORKER_PREFETCH", "32",
             "job messages a notifier or digester takes from each queue before acking"),
    Variable("BURROW_WORKER_CONCURRENCY", "16", "jobs a worker runs at once per queue"),
    Variable("BURROW_IDLE_AFTER", "120",
             "seconds without a client frame after which a connected user counts as idle "
             "(gets pushes)"),
    Variable("BURROW_PRESENCE_TTL", "60",
             "seconds after its last heartbeat that a connection of a vanished gateway "
             "stops counting as online"),
    Variable("BURROW_PUSH_DELAY", "30",
             "seconds a push waits (delay tier) before it is re-checked and sent"),
    Variable("BURROW_PUSH_RETRIES", "5,30,300",
             "back-off tiers of a failed push, seconds, comma-separated; then push.dead"),
    Variable("BURROW_DIGEST_HOURLY", "3600", "seconds between digests of an 'hourly' user"),
    Variable("BURROW_DIGEST_DAILY", "86400", "seconds between digests of a 'daily' user"),
    Variable("BURROW_EMAIL_RETRIES", "60,600,3600",
             "back-off tiers of a failed digest or email, seconds; then digest.dead / email.dead"),
    Variable("BURROW_FCM_PROJECT", "", "Firebase project id (empty: FCM pushes are not sent)"),
    Variable("BURROW_FCM_CREDENTIALS", "",
             "path of the Firebase service-account JSON (needed unless BURROW_FCM_ENDPOINT is a local server)"),
    Variable("BURROW_FCM_ENDPOINT", "",
             "base URL of the FCM API (empty: Google; tests point it at a local server)"),
    Variable("BURROW_APNS_KEY_FILE", "",
             "path of the APNs .p8 signing key (empty: APNs pushes are not sent)"),
    Variable("BURROW_APNS_KEY_ID", "", "APNs key id (10 characters, from Apple)"),
    Variable("BURROW_APNS_TEAM_ID", "", "Apple developer team id"),
    Variable("BURROW_APNS_TOPIC", "", "default APNs topic: the app's bundle id"),
    Variable("BURROW_APNS_SANDBOX", "false", "true: Apple's development APNs server"),
    Variable("BURROW_APNS_ENDPOINT", "",
             "host:port of the APNs server (empty: Apple's); tests point it at a local one"),
    Variable("BURROW_APNS_CA_FILE", "",
             "PEM CA bundle that verifies the APNs server (empty: the system's)"),
    Variable("BURROW_SMTP_URL", "smtp://127.0.0.1:1025",
             "SMTP relay of every email: smtps://[user:pass@]host:port (TLS), or "
             "smtp://[user:pass@]host:port, which requires STARTTLS unless the host is "
             "loopback or the URL ends ?starttls=0 (then without user:pass@)"),
    Variable("BURROW_EMAIL_FROM", "Burrow <no-reply@burrow.invalid>", "From of every email"),
    Variable("BURROW_PUBLIC_URL", "http://127.0.0.1:8000",
             "the gateway's URL as users reach it (unsubscribe and verification links in emails)"),
    Variable("BURROW_UNSUBSCRIBE_SECRET", "",
             "secret (at least 32 bytes) signing unsubscribe and email-verification links "
             "(default: derived from BURROW_JWT_SECRET)"),
    Variable("BURROW_TYPING_INTERVAL", "3",
             "seconds: at most one typing event per connection and room in this time"),
    Variable("BURROW_RATE_STORAGE", "memory://",
             "where rate-limit counters live: memory:// (per process) or redis://HOST:PORT "
             "(shared by every gateway and worker)"),
    Variable("BURROW_RATE_CONNECTION", "20/5",
             "sends per connection, BURST/PER_SECOND: a burst of 20, then 5 per second"),
    Variable("BURROW_RATE_USER", "40/10",
             "sends per user over all their connections, BURST/PER_SECOND"),
    Variable("BURROW_RATE_IP", "60/20",
             "handshakes and HTTP requests per client IP, BURST/PER_SECOND"),
    Variable("BURROW_MAX_CONNECTIONS_USER", "32",
             "open WebSocket, SSE and long-poll connections one user may hold on one gateway "
             "worker process; more are refused (429 before the handshake, else close 1008)"),
    Variable("BURROW_MAX_CONNECTIONS_IP", "1000",
             "open connections one client address may hold on one gateway worker process "
             "(an office behind one NAT is one address: raise it for such clients)"),
    Variable("BURROW_RATE_MEMBERS", "1000/1",
             "members one user may add to rooms (a room created with N members counts N+1), "
             "BURST/PER_SECOND; admins are not limited"),
    Variable("BURROW_RATE_FRAMES", "100/20",
             "frames other than sends (subscribe, unsubscribe, read, typing, ping) per "
             "connection, BURST/PER_SECOND"),
    Variable("BURROW_RATE_FLOOD", "50/10",
             "REJECTIONS/SECONDS: that many refused frames within that many seconds close the "
             "connection (4429)"),
    Variable("BURROW_SSE_HEARTBEAT", "15",
             "seconds between keep-alive comments on an idle SSE stream"),
    Variable("BURROW_CORS_ORIGINS", "",
             "browser origins (scheme://host[:port], comma-separated, or *) whose pages may "
             "call the HTTP API and SSE; empty: none (same-origin only)"),
    Variable("BURROW_DEV_MODE", "false",
             "true: the gateway serves the web demo at /demo/ and mints tokens for any user "
             "name at POST /v1/dev/token (needs BURROW_JWT_SECRET); never in production"),
    Variable("BURROW_DEV_MODE_ANY_HOST", "false",
             "true: allow dev mode on a gateway that listens beyond loopback (BURROW_HOST); "
             "refused otherwise, since dev mode gives anyone an admin token"),
    Variable("BURROW_DEV_TOKEN_TTL", "900",
             "seconds a dev-mode token lives at most (a request may ask for less)"),
)
NAMES = frozenset(v.name for v in VARIABLES)
_DEFAULTS = {v.name: v.default for v in VARIABLES}


@dataclass(frozen=True)
class Settings:
    amqp_url: str
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
    max_frame_bytes: int
    send_timeout: float
    client_buffer: int
    sequencer_batch: int
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
    max_connections_user: int
    max_connections_ip: int
    rate_flood: FloodRule
    sse_heartbeat: float
    cors_origins: frozenset[str]
    dev_mode: bool
    dev_mode_any_host: bool
    dev_token_ttl: int

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every ``BURROW_*`` variable of *env* (default: ``os.environ``).

        Raises :exc:`ConfigError` naming the first variable that is missing or malformed.
        """
        env = os.environ if env is None else env
        unknown = sorted(k for k in env if k.startswith("BURROW_") and k not in NAMES
                         and not k.startswith(("BURROW_DEV_", "BURROW_RABBITMQ_")))
        if unknown:
            raise ConfigError(f"unknown setting {unknown[0]}; known: {', '.join(sorted(NAMES))}")

        def get(name: str, parse: Callable[[str], Any] = str) -> Any:
            raw = env.get(name) or _DEFAULTS[name]
            if raw is None:
                raise ConfigError(f"{name} is not set: {_help(name)}")
            try:
                return parse(raw)
            except ValueError as exc:
                # redacted: the message reaches the terminal, the logs and CI's output
                raise ConfigError(f"{name}={redact(raw)!r} is invalid ({redact(str(exc))}): "
                                  f"{_help(name)}") from None

        return cls(
            amqp_url=get("BURROW_AMQP_URL",
                         _then(_url(("amqp", "amqps")), tls.verified_amqp_url)),
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
            max_frame_bytes=get("BURROW_MAX_FRAME_BYTES", _positive(int)),
            send_timeout=get("BURROW_SEND_TIMEOUT", _positive(float)),
            client_buffer=get("BURROW_CLIENT_BUFFER", _positive(int)),
            sequencer_batch=get("BURROW_SEQUENCER_BATCH", _positive(int)),
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
            smtp_url=_smtp_url(get("BURROW_SMTP_URL")),
            email_from=get("BURROW_EMAIL_FROM"),
            public_url=get("BURROW_PUBLIC_URL", _url(("http", "https"))).rstrip("/"),
            unsubscribe_secret=get("BURROW_UNSUBSCRIBE_SECRET"),
            typing_interval=get("BURROW_TYPING_INTERVAL", _positive(float)),
            rate_storage=get("BURROW_RATE_STORAGE", async_storage_uri),
            rate_connection=get("BURROW_RATE_CONNECTION", Rule.parse),
            rate_user=get("BURROW_RATE_USER", Rule.parse),
            rate_ip=get("BURROW_RATE_IP", Rule.parse),
            rate_frames=get("BURROW_RATE_FRAMES", Rule.parse),
            rate_members=get("BURROW_RATE_MEMBERS", Rule.parse),
            max_connections_user=get("BURROW_MAX_CONNECTIONS_USER", _positive(int)),
            max_connections_ip=get("BURROW_MAX_CONNECTIONS_IP", _positive(int)),
            rate_flood=get("BURROW_RATE_FLOOD", FloodRule.parse),
            sse_heartbeat=get("BURROW_SSE_HEARTBEAT", _positive(float)),
            cors_origins=get("BURROW_CORS_ORIGINS", _origins),
            dev_mode=get("BURROW_DEV_MODE", _bool),
            dev_mode_any_host=get("BURROW_DEV_MODE_ANY_HOST", _bool),
            dev_token_ttl=get("BURROW_DEV_TOKEN_TTL", _positive(int)),
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

    def fresh_metrics_dir(self) -> str:
        """The multiprocess metrics directory, created and emptied of a previous run's files."""
        path = self.metrics_dir or tempfile.mkdtemp(prefix="burrow-metrics-")
        os.makedirs(path, exist_ok=True)
        for name in os.listdir(path):
            if name.endswith(".db"):
                os.remove(os.path.join(path, name))
        return path


def _help(name: str) -> str:
    return next(v.help for v in VARIABLES if v.name == name)


def _url(schemes: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        parts = urlsplit(raw)
        if parts.scheme not in schemes or not parts.hostname:
            raise ValueError(f"expected a {' or '.join(schemes)}:// URL with a host")
        return raw
    return parse


def _smtp_url(raw: str) -> str:
    """*raw* once it is a relay URL that sends no mail and no password in clear beyond
    loopback unless asked to (:mod:`burrow.mail.smtp_url`). Raised here rather than
    through ``get``, whose message would echo the URL and the password in it."""
    try:
        parse_smtp_url(raw)
    except ValueError as exc:
        raise ConfigError(f"BURROW_SMTP_URL is invalid ({exc}): "
                          f"{_help('BURROW_SMTP_URL')}") from None
    return raw


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
