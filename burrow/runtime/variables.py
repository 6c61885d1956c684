"""The table of every ``BURROW_*`` variable anything in Burrow reads: name, default,
meaning, who reads it, whether it is a secret.

One table, apart from the code that parses it (:mod:`burrow.runtime.settings`), because
three readers depend on it staying whole: the processes (which refuse a ``BURROW_*`` name
not in it), docs/configuration.md (generated from it by :mod:`burrow.runtime.configdoc`),
and the tests that hold both to the names the project really reads.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Group:
    """A section of docs/configuration.md: who reads its variables, in Markdown."""

    key: str
    title: str
    intro: str
    after: str = ""


SERVER, LAUNCHER, COMPOSE, CLIENT, TESTS = "server", "launcher", "compose", "client", "tests"

GROUPS: tuple[Group, ...] = (
    Group(SERVER, "Burrow's processes",
          "The gateway (`python -m gateway`) and the workers (`python -m consumers`) read "
          "these variables (`burrow/runtime/settings.py`); a malformed value stops the "
          "process with a message that names the variable. The message never shows the "
          "value of a *secret* variable (a credential, or a URL that may carry one), nor a "
          "value that looks like key material.\n\n"
          "Any other `BURROW_*` variable stops the process too, unless it is one of the "
          "launcher's, docker compose's, the clients' or the tests' below, which the "
          "processes ignore. So a misspelt name is refused rather than quietly left out, "
          "with the name it is probably a misspelling of (`did you mean BURROW_PORT?`).",
          "The gateway needs exactly one of `BURROW_JWT_SECRET`, `BURROW_JWT_PUBLIC_KEY`, "
          "`BURROW_JWKS_URL`; `./dev up` gives it a dev secret when none is set and prints "
          "it.\n\n"
          "Clients reach a production gateway over TLS only: its own (`BURROW_TLS_CERT`, "
          "`BURROW_TLS_KEY`) or a reverse proxy's ([docs/deploy.md](deploy.md#reverse-proxy-"
          "and-tls): nginx and Caddy recipes); the broker and the database links can be TLS too "
          "([docs/security.md](security.md#tls))."),
    Group(LAUNCHER, "The launcher (`./dev up`)",
          "The launcher (`./dev up`, `burrow/devstack`) reads these as well. It passes its "
          "environment on to the processes it starts, which ignore these names.",
          "If a port is taken, the launcher says which one, for what, and which variable "
          "moves it, before it starts anything. If the node or the database does not come "
          "up, it prints the first error lines of its log."),
    Group(COMPOSE, "docker compose",
          "`docker-compose.yml` reads these from `.env`, which `./dev secrets` writes with "
          "random values, together with the broker passwords above, `BURROW_JWT_SECRET` "
          "and `BURROW_UNSUBSCRIBE_SECRET`; compose refuses to start without them. Burrow's "
          "processes ignore them."),
    Group(CLIENT, "Clients and tools",
          "The command-line client ([docs/cli.md](cli.md)), the examples in `examples/` and "
          "backend services read these. Burrow's processes ignore them, so a shell that "
          "exports them still runs `./dev up`, the gateway and the workers. (The client "
          "reads `BURROW_JWT_SECRET` too, to mint dev tokens: that one is the processes'.)"),
    Group(TESTS, "Tests",
          "The test suite reads these ([docs/database.md](database.md), "
          "[docs/security.md](security.md)). Burrow's processes ignore them; the tests start "
          "each process without the `BURROW_*` variables of their own environment."),
)


@dataclass(frozen=True)
class Variable:
    """One ``BURROW_*`` variable. *help* is Markdown (docs/configuration.md; error messages
    show it without the markup). *default* is what an unset or empty variable means, None
    for a required one; for the groups other than ``server`` it only documents what their
    reader does. *shown* replaces the default in the documentation where the default is
    empty or computed. A *secret* is never shown in an error message, and its default is
    documented only when it holds no credential (a URL without ``user:password@``)."""

    name: str
    default: str | None
    help: str
    group: str = SERVER
    secret: bool = False
    shown: str | None = None


_DEV_ONLY = "a dev password (`./dev up` only)"

VARIABLES: tuple[Variable, ...] = (
    Variable("BURROW_AMQP_URL", None,
             "RabbitMQ URL with the process's own broker user and the vhost, e.g. "
             "`amqp://burrow-gateway:PASSWORD@127.0.0.1:5672/burrow`; over TLS "
             "`amqps://...:5671/burrow?cafile=/path/ca.pem` (the broker's certificate is "
             "always verified). For a RabbitMQ cluster, one URL per node separated by "
             "commas, differing only in host:port (same user, password, vhost, scheme and "
             "options); the process connects to the first node that answers and moves to "
             "the next live one when its node goes away (docs/deploy.md)", secret=True),
    Variable("BURROW_MONGO_URL", "mongodb://127.0.0.1:27017/burrow?directConnection=true",
             "MongoDB URL; the path names the database; over TLS add "
             "`tls=true&tlsCAFile=/path/ca.pem` (options that skip certificate checks are "
             "refused). Given to `./dev up`, no embedded database is started", secret=True),
    Variable("BURROW_HOST", "127.0.0.1", "gateway listen address"),
    Variable("BURROW_PORT", "8000", "gateway listen port"),
    Variable("BURROW_GATEWAY_WORKERS", "1", "gateway processes (Sanic workers)"),
    Variable("BURROW_TLS_CERT", "",
             "PEM certificate chain (leaf first) of the gateway; with `BURROW_TLS_KEY` it "
             "serves HTTPS and WSS only, and every answer carries HSTS "
             "([docs/security.md](security.md#tls))"),
    Variable("BURROW_TLS_KEY", "",
             "PEM private key file of `BURROW_TLS_CERT`: both or neither, else the gateway "
             "does not start"),
    Variable("BURROW_METRICS_HOST", "127.0.0.1",
             "listen address of a worker's probes and `/metrics`"),
    Variable("BURROW_METRICS_PORT", "9100", "listen port of a worker's probes and `/metrics`"),
    Variable("BURROW_METRICS_FROM", "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,"
             "192.168.0.0/16,fc00::/7",
             "client networks (CIDR, comma-separated, or `*`) that may read the gateway's "
             "`/metrics`, which it serves on the clients' port; others get 403. Behind a "
             "reverse proxy, configure Sanic to trust its forwarded address "
             "([docs/security.md](security.md)) or do not forward `/metrics`",
             shown="loopback and private networks"),
    Variable("BURROW_METRICS_DIR", "", "prometheus-client multiprocess directory",
             shown="a fresh temp dir"),
    Variable("BURROW_SHARDS", "4",
             "sequencer shard queues `chat.seq.0..N-1`; fixed configuration, changing it is "
             "a drained migration"),
    Variable("BURROW_RECONNECT_INTERVAL", "1.0",
             "seconds between attempts to reach the broker after a loss"),
    Variable("BURROW_HEALTH_INTERVAL", "1.0",
             "seconds between readiness checks of broker and database"),
    Variable("BURROW_DB_TIMEOUT", "2.0",
             "seconds a database check may take before the database counts as down"),
    Variable("BURROW_INSTANCE_ID", "",
             "the process's name in queue names, connection names and logs",
             shown="`host-pid`"),
    Variable("BURROW_LOG_LEVEL", "INFO", "`DEBUG`, `INFO`, `WARNING` or `ERROR`"),
    Variable("BURROW_LOG_FORMAT", "auto",
             "`json` (one object per line: `ts`, `level`, `process`, `event`, and `room`, "
             "`user`, `conn`, `msg_id`... where known), `text`, or `auto`: text on a "
             "terminal, JSON otherwise"),
    Variable("BURROW_JWT_SECRET", "",
             "HS256 secret (at least 32 bytes) that verifies client tokens", secret=True),
    Variable("BURROW_JWT_PUBLIC_KEY", "",
             "PEM public key or certificate (RS256 / ES256), as text or a file path"),
    Variable("BURROW_JWKS_URL", "",
             "JWKS URL, https (plain http only on loopback): keys by `kid`, fetched again "
             "after 5 minutes, kept when the key server is down "
             "([docs/security.md](security.md))"),
    Variable("BURROW_JWT_ALGORITHMS", "",
             "accepted algorithms, comma-separated; `none` never",
             shown="HS256 with a secret, RS256,ES256 with a key or JWKS"),
    Variable("BURROW_JWT_AUDIENCE", "",
             "required `aud` (unchecked when empty; a token with `aud` is then refused)"),
    Variable("BURROW_JWT_ISSUER", "", "required `iss` (unchecked when empty)"),
    Variable("BURROW_JWT_LEEWAY", "5", "seconds of clock skew allowed on `exp` / `nbf` / `iat`"),
    Variable("BURROW_WS_TICKET_TTL", "30",
             "seconds (1 to 300) a one-time ticket from `POST /v1/ws-ticket` stays valid "
             "for `/v1/ws` or `/v1/sse` (never beyond its token's `exp`; "
             "[docs/security.md](security.md))"),
    Variable("BURROW_MAX_BODY_BYTES", "16384",
             "largest message body (UTF-8 bytes); larger sends get `too_large`"),
    Variable("BURROW_EDIT_WINDOW", "0",
             "seconds after a message is stored during which its sender may edit it; "
             "0 = always (docs/protocol.md, changes)"),
    Variable("BURROW_MAX_REACTIONS", "20",
             "distinct emoji one message may carry; a reaction with a new emoji beyond "
             "that gets `too_many_reactions`"),
    Variable("BURROW_ROOM_MENTION_MAX", "100",
             "most members a room may have for a message to mention `@room`; beyond, "
             "such a send gets `room_too_large` (docs/protocol.md, mentions)"),
    Variable("BURROW_FILTER_WORDS", "",
             "a global blocklist the sequencer checks every message and edit against: "
             "comma-separated words or phrases, matched as whole words, ignoring case "
             "([docs/moderation.md](moderation.md#pre-publish-hook))"),
    Variable("BURROW_FILTER_FILE", "",
             "a file of more blocklist entries, one a line: a word or phrase, or `re:` and a "
             "regular expression (bounded: no `*` or `+`; docs/moderation.md); `#` comments"),
    Variable("BURROW_FILTER_ACTION", "reject",
             "what the global blocklist does with a match: `reject` (the sender gets "
             "`rejected`, nothing is stored) or `replace` (stored with each match masked "
             "by `*`)"),
    Variable("BURROW_FILTER_REFRESH", "5",
             "seconds between the sequencer's reads of the rooms' own filters "
             "(`PUT /v1/rooms/{room}/filter`): a new filter applies within that time"),
    Variable("BURROW_MODERATION_HOOK", "off",
             "ask the backend moderation service (queue `moderation.hook`) before storing a "
             "message or edit: `off`, `on` (every room) or `rooms` (the rooms whose filter "
             "asks for it) ([docs/moderation.md](moderation.md#pre-publish-hook))"),
    Variable("BURROW_MODERATION_HOOK_TIMEOUT_MS", "500",
             "milliseconds (1 to 60000) the sequencer waits for the service's answer to a "
             "batch; later answers are ignored"),
    Variable("BURROW_MODERATION_HOOK_FAILURE", "open",
             "what a timeout or a service error means: `open` (store the messages) or "
             "`closed` (refuse them with the retryable `moderation_unavailable`)"),
    Variable("BURROW_MAX_FRAME_BYTES", "65536",
             "largest WebSocket frame a client may send; larger closes with 1009"),
    Variable("BURROW_SEND_TIMEOUT", "5.0",
             "seconds a send waits for its ack before the client gets a retryable `timeout`"),
    Variable("BURROW_CLIENT_BUFFER", "2048",
             "frames queued for one slow client before it is closed with 4008"),
    Variable("BURROW_SEQUENCER_BATCH", "256",
             "messages a sequencer takes per shard at once (prefetch and batch size)"),
    Variable("BURROW_SEQUENCER_HEARTBEAT", "1.0",
             "seconds between a sequencer's heartbeats on `chat.sequencers`, by which the "
             "sequencer processes spread the shards among themselves: a member not heard "
             "for 3 of them is gone, a shard moves only on a view settled for 2 and after "
             "1 on its holder ([docs/scaling.md](scaling.md#sequencer-scale-out))"),
    Variable("BURROW_NOTIFY_BATCH", "256",
             "stored messages the notifier takes from `notify.messages` at once and "
             "schedules pushes and digests for with one read of their rooms' members"),
    Variable("BURROW_WORKER_PREFETCH", "32",
             "job messages a notifier or digester takes from each queue before acking"),
    Variable("BURROW_WORKER_CONCURRENCY", "16", "jobs a worker runs at once per queue"),
    Variable("BURROW_IDLE_AFTER", "120",
             "seconds without a client frame (send, read, subscribe; not ping) after which a "
             "connected user is idle and gets pushes"),
    Variable("BURROW_PRESENCE_TTL", "60",
             "seconds after the last heartbeat that the connections of a vanished gateway "
             "stop counting as online"),
    Variable("BURROW_PUSH_DELAY", "30",
             "seconds a push waits in `push.delay.<tier>` before it is re-checked and sent"),
    Variable("BURROW_PUSH_RETRIES", "5,30,300",
             "back-off tiers of a failed push (seconds, comma-separated); after the last, "
             "`push.dead`"),
    Variable("BURROW_DIGEST_HOURLY", "3600",
             "seconds between two digests of an `hourly` user (the `digest.delay.<tier>` "
             "queue)"),
    Variable("BURROW_DIGEST_DAILY", "86400", "seconds between two digests of a `daily` user"),
    Variable("BURROW_EMAIL_RETRIES", "60,600,3600",
             "back-off tiers of a failed digest or email (seconds, comma-separated); after "
             "the last, `digest.dead` / `email.dead`"),
    Variable("BURROW_FCM_PROJECT", "",
             "Firebase project id; empty: FCM pushes go to `push.dead` as \"not configured\""),
    Variable("BURROW_FCM_CREDENTIALS", "",
             "path of the service-account JSON file (required with `BURROW_FCM_PROJECT`, "
             "unless `BURROW_FCM_ENDPOINT` is a local test server: then anonymous)"),
    Variable("BURROW_FCM_ENDPOINT", "",
             "base URL of the FCM v1 API (the tests point it at a local server)",
             shown="Google's"),
    Variable("BURROW_APNS_KEY_FILE", "",
             "path of the APNs `.p8` token-signing key; empty: APNs pushes go to `push.dead` "
             "as \"not configured\""),
    Variable("BURROW_APNS_KEY_ID", "", "APNs key id (10 characters, from Apple)"),
    Variable("BURROW_APNS_TEAM_ID", "", "Apple developer team id"),
    Variable("BURROW_APNS_TOPIC", "",
             "default topic (the app's bundle id); a device's own `app` overrides it"),
    Variable("BURROW_APNS_SANDBOX", "false", "`true`: Apple's development server"),
    Variable("BURROW_APNS_ENDPOINT", "",
             "`host:port` of the APNs server (the tests point it at a local one)",
             shown="Apple's"),
    Variable("BURROW_APNS_CA_FILE", "", "PEM bundle that verifies the APNs server",
             shown="system CAs"),
    Variable("BURROW_SMTP_URL", "smtp://127.0.0.1:1025",
             "SMTP relay of every email: `smtps://[user:pass@]host:port` (TLS) or "
             "`smtp://[user:pass@]host:port`, which requires STARTTLS unless the host is "
             "loopback or the URL ends `?starttls=0` (then no `user:pass@`); anything else "
             "stops every process at startup ([docs/security.md](security.md))",
             secret=True),
    Variable("BURROW_EMAIL_FROM", "Burrow <no-reply@burrow.invalid>", "From of every email"),
    Variable("BURROW_PUBLIC_URL", "http://127.0.0.1:8000",
             "the gateway as users reach it (unsubscribe and email-verification links)"),
    Variable("BURROW_UNSUBSCRIBE_SECRET", "",
             "secret (at least 32 bytes) signing unsubscribe and email-verification links",
             secret=True, shown="derived from `BURROW_JWT_SECRET`"),
    Variable("BURROW_TYPING_INTERVAL", "3",
             "seconds: at most one `typing` event per connection and room in this time; "
             "more are dropped"),
    Variable("BURROW_RATE_STORAGE", "memory://",
             "where rate-limit counters live: `memory://` counts per process; "
             "`redis://[:PASSWORD@]HOST:PORT` is one limit for every gateway and worker "
             "([docs/rate-limits.md](rate-limits.md))", secret=True),
    Variable("BURROW_RATE_CONNECTION", "20/5",
             "sends per connection, `BURST/PER_SECOND`: 20 at once, then 5 per second"),
    Variable("BURROW_RATE_USER", "40/10",
             "sends per user, all their connections together, `BURST/PER_SECOND`"),
    Variable("BURROW_RATE_IP", "60/20",
             "WebSocket handshakes and HTTP requests per client IP, `BURST/PER_SECOND`"),
    Variable("BURROW_MAX_CONNECTIONS_USER", "32",
             "open WebSocket, SSE and long-poll connections one user may hold on one gateway "
             "worker process; more get 429 `too_many_connections` before the handshake "
             "(else close 1008)"),
    Variable("BURROW_MAX_CONNECTIONS_IP", "1000",
             "the same per client address (clients behind one NAT share one: raise it for "
             "them)"),
    Variable("BURROW_INVITES", "off",
             "who must accept being added to a room: `off` (nobody: an add makes a member), "
             "`strangers` (a user added by someone they share no room with gets an "
             "invitation to accept or decline) or `all` (every add by someone else is an "
             "invitation); admins always add directly ([docs/moderation.md](moderation.md"
             "#users-protect-themselves))"),
    Variable("BURROW_RATE_MEMBERS", "1000/1",
             "members one user may add to rooms, `BURST/PER_SECOND` (a room created with N "
             "members counts N+1; admins are not limited); more get 429"),
    Variable("BURROW_RATE_FRAMES", "100/20",
             "frames other than sends (subscribe, unsubscribe, read, typing, ping) per "
             "connection, `BURST/PER_SECOND`; refused ones count towards `BURROW_RATE_FLOOD`"),
    Variable("BURROW_RATE_FLOOD", "50/10",
             "`REJECTIONS/SECONDS`: 50 refused frames (sends or others) within 10 s close "
             "the connection with 4429"),
    Variable("BURROW_SSE_HEARTBEAT", "15",
             "seconds between keep-alive comments on an idle SSE stream (proxies cut idle "
             "streams)"),
    Variable("BURROW_CORS_ORIGINS", "",
             "web-app origins (`https://app.example`, comma-separated, or `*`) whose pages "
             "may call the HTTP API and SSE from the browser (CORS); empty: same origin only "
             "([docs/clients.md](clients.md))", shown="(none)"),
    Variable("BURROW_DEV_MODE", "false",
             "`true`: the gateway serves the web demo at `/demo/` and **mints a token for any "
             "user name** at `POST /v1/dev/token`. Development only: never in production. "
             "Needs `BURROW_JWT_SECRET`", shown="`false` (`./dev up`: `true`)"),
    Variable("BURROW_DEV_MODE_ANY_HOST", "false",
             "`true`: allow dev mode on a gateway listening beyond loopback (`BURROW_HOST`); "
             "refused otherwise, since dev mode gives anyone an admin token. `./dev up` turns "
             "dev mode on only on loopback"),
    Variable("BURROW_DEV_TOKEN_TTL", "900",
             "seconds a dev-mode token lives at most (a request may ask for less)"),
    Variable("BURROW_ATTACHMENT_MAX_BYTES", "10485760",
             "largest uploaded file (bytes); a larger upload is refused with 413 while it "
             "is still coming ([docs/attachments.md](attachments.md))"),
    Variable("BURROW_ATTACHMENT_TYPES",
             "image/png,image/jpeg,image/gif,image/webp,application/pdf,text/plain",
             "content types a file may be uploaded as, comma-separated; images and PDFs "
             "must have the bytes of their type, text must be UTF-8; others get 415"),
    Variable("BURROW_ATTACHMENT_PENDING_MAX", "20",
             "uploads of one user not yet attached to a message; more get 429"),
    Variable("BURROW_ATTACHMENT_PENDING_TTL", "3600",
             "seconds an upload may wait for a message to attach it; then it is deleted "
             "(each gateway worker collects them once a minute)"),
    Variable("BURROW_ATTACHMENT_URL_TTL", "300",
             "seconds (1 to 86400) a signed download URL of a file stays valid"),
    Variable("BURROW_ATTACHMENT_SECRET", "",
             "secret (at least 32 bytes) signing download URLs of files; the same on every "
             "gateway", secret=True, shown="derived from `BURROW_JWT_SECRET`"),
    Variable("BURROW_ATTACHMENT_STORE", "gridfs",
             "where files' bytes are: `gridfs` (MongoDB) or `s3` (an S3-compatible bucket; "
             "clients upload to and download from it through presigned URLs, the bytes never "
             "pass through a gateway; needs `pip install 'burrow[s3]'` and `BURROW_S3_BUCKET`, "
             "on the gateways and the sequencer) "
             "([docs/attachments.md](attachments.md#s3-compatible-storage))"),
    Variable("BURROW_S3_ENDPOINT_URL", "",
             "URL of the S3 API (MinIO, Ceph, R2...), e.g. `https://s3.example.com`; "
             "presigned URLs name it, so clients must reach it by this very URL. No "
             "`user:password@`: the key has its own variables",
             shown="AWS S3 of `BURROW_S3_REGION`"),
    Variable("BURROW_S3_BUCKET", "",
             "the bucket of the files (private, Burrow's own); required with "
             "`BURROW_ATTACHMENT_STORE=s3`"),
    Variable("BURROW_S3_REGION", "us-east-1", "the bucket's region (signatures name it)"),
    Variable("BURROW_S3_ACCESS_KEY_ID", "",
             "access key id; with `BURROW_S3_SECRET_ACCESS_KEY`, or neither: then the standard "
             "AWS credential chain (`AWS_*` variables, `~/.aws`, an instance or container "
             "role)", shown="the AWS credential chain"),
    Variable("BURROW_S3_SECRET_ACCESS_KEY", "", "secret access key of `BURROW_S3_ACCESS_KEY_ID`",
             secret=True),
    Variable("BURROW_S3_URL_TTL", "60",
             "seconds (1 to 3600) a presigned S3 download URL lives: a signed gateway URL "
             "(`BURROW_ATTACHMENT_URL_TTL`) answers each visit with a fresh one. An upload "
             "policy must be used within `BURROW_ATTACHMENT_URL_TTL`"),
    Variable("BURROW_EVENTS", "user.*,member.*,report.*,push.*",
             "backend events a process publishes to the `burrow.events` exchange: "
             "routing-key patterns, comma-separated, `#` for all, or `none`. The default "
             "leaves out `message.*`, which costs the sequencer about as much CPU per "
             "message as its fan-out: `#` turns them on ([docs/events.md](events.md))"),
    Variable("BURROW_WEBHOOK_URL", "",
             "where the webhooks worker (`python -m consumers webhooks`) POSTs every event; "
             "empty: `./dev up` does not start it ([docs/events.md](events.md#webhooks))",
             secret=True),
    Variable("BURROW_WEBHOOK_SECRET", "",
             "secret (at least 32 bytes) the webhooks worker signs each request with "
             "(`Burrow-Signature`); required with `BURROW_WEBHOOK_URL`", secret=True),
    Variable("BURROW_WEBHOOK_EVENTS", "#",
             "events the webhooks worker delivers: routing-key patterns, comma-separated; "
             "its queue `webhook.due` is bound to `burrow.events` with each"),
    Variable("BURROW_WEBHOOK_RETRIES", "10,60,600,3600",
             "back-off tiers of a failed webhook request (seconds, comma-separated); "
             "after the last, `webhook.dead`"),
    # --- read by others; the processes ignore them (IGNORED) ---
    Variable("BURROW_DEV_DIR", ".burrow",
             "where the node, the database, logs and metrics files live", LAUNCHER),
    Variable("BURROW_DEV_AMQP_PORT", "5672", "RabbitMQ AMQP port", LAUNCHER),
    Variable("BURROW_DEV_MANAGEMENT_PORT", "15672", "management UI and HTTP API", LAUNCHER),
    Variable("BURROW_DEV_PROMETHEUS_PORT", "15692", "RabbitMQ's Prometheus endpoint", LAUNCHER),
    Variable("BURROW_DEV_DIST_PORT", "", "Erlang distribution port of the node", LAUNCHER,
             shown="AMQP port + 20000"),
    Variable("BURROW_DEV_MONGO_PORT", "27017", "embedded database port", LAUNCHER),
    Variable("BURROW_DEV_MAILBOX_PORT", "8025",
             "web page of the development mailbox, which shows every mail the stack sends "
             "(none when `BURROW_SMTP_URL` is set, or with `--no-mailbox`)", LAUNCHER),
    Variable("BURROW_DEV_SMTP_PORT", "1025", "SMTP port of the development mailbox",
             LAUNCHER),
    *(Variable(f"BURROW_RABBITMQ_{role.upper()}_PASSWORD", "",
               f"password of broker user `burrow-{role}`{what}; docker compose requires it",
               LAUNCHER, secret=True, shown=_DEV_ONLY)
      for role, what in (("gateway", ""), ("sequencer", ""), ("notifier", ""),
                         ("digester", ""), ("backend", " (backend services)"),
                         ("webhooks", " (the webhooks worker)"),
                         ("admin", " (management UI)"))),
    Variable("BURROW_MONGO_ROOT_PASSWORD", None,
             "password of MongoDB's root user, which creates Burrow's", COMPOSE, secret=True),
    Variable("BURROW_MONGO_PASSWORD", None,
             "password of MongoDB user `burrow` (`readWrite` on database `burrow`), in the "
             "processes' `BURROW_MONGO_URL`", COMPOSE, secret=True),
    Variable("BURROW_GRAFANA_ADMIN_PASSWORD", None, "password of Grafana's `admin`", COMPOSE,
             secret=True),
    Variable("BURROW_RABBITMQ_COOKIE_SECRET", None,
             "the Erlang cookie the three RabbitMQ nodes of docker-compose.cluster.yml share "
             "(`./dev secrets` writes it)", COMPOSE, secret=True),
    Variable("BURROW_MONGO_KEYFILE_SECRET", None,
             "the key file the MongoDB replica set members of docker-compose.cluster.yml "
             "authenticate to each other with (`./dev secrets` writes it)",
             COMPOSE, secret=True),
    Variable("BURROW_URL", "http://127.0.0.1:8000",
             "the gateway the command-line client and `examples/chat.py` talk to (`--url`)",
             CLIENT),
    Variable("BURROW_TOKEN", "", "the command-line client's JWT (`--token`)", CLIENT,
             secret=True),
    Variable("BURROW_CA_FILE", "",
             "PEM CA bundle the command-line client trusts for an `https://` gateway "
             "(`--ca-file`)", CLIENT, shown="system CAs (or `SSL_CERT_FILE`)"),
    Variable("BURROW_BACKEND_URL", None,
             "AMQP URL of a backend service, as broker user `burrow-backend`, in "
             "`examples/backend_jobs.py` and [docs/queues.md](queues.md)", CLIENT,
             secret=True),
    Variable("BURROW_TEST_MONGO_URL", "",
             "a MongoDB the contract tests run against (they create and drop databases on it)",
             TESTS, secret=True, shown="the embedded database"),
    Variable("BURROW_FUZZ_EXAMPLES", "12",
             "budget of the fuzz tests (HTTP, WebSocket, jobs, tokens); the long runs "
             "[docs/security.md](security.md) reports used 250 or 500", TESTS),
    Variable("BURROW_TEST_ARTIFACTS", "",
             "where the browser tests write their screenshots (in `browser/`)", TESTS,
             shown="`test-artifacts/`"),
)
NAMES = frozenset(v.name for v in VARIABLES if v.group == SERVER)
# The variables of the launcher, compose, clients, tools and tests: the processes ignore
# these (and only these) BURROW_* names that are not theirs.
IGNORED = frozenset(v.name for v in VARIABLES if v.group != SERVER)
