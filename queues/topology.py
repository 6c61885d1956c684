"""Burrow's RabbitMQ topology as data.

Everything the broker must hold before a message can flow is listed here once: the chat
exchanges and shard queues, and the job families (work, delay, retry and dead queues).
:func:`build` returns it as plain values; :mod:`queues.declare` declares it through
aio-pika and :mod:`queues.definitions` renders it as ``rabbitmq/definitions.json`` for the
management UI. A test checks that the two agree on a real broker.

Naming: ``chat.*`` carries chat messages, ``<family>.*`` carries one kind of job, and
``burrow.jobs`` is the exchange every job queue is bound to by its own name, so that
delay and retry tiers can dead-letter into the queue they wait for. It is a topic
exchange only so that the broker can check, per user, the routing keys (queue names) it
publishes with: the bindings are exact names, so it routes like a direct exchange.

Each worker kind declares only its share (:func:`part`): the names under its prefixes
(:data:`OWNERS`), which its broker user alone may configure (``queues/definitions.py``),
and ``burrow.jobs``; what it needs from another kind it only checks for, passively.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from burrow.runtime.settings import Settings

INGRESS = "chat.ingress"
"""Topic exchange the gateways publish sends to, key ``room.<room>.msg``."""
SHARD = "chat.shard"
"""Consistent-hash exchange spreading rooms over the shard queues (internal)."""
FANOUT = "chat.fanout"
"""Topic exchange of stored messages and ephemeral events, key ``room.<room>.<kind>``."""
REPLY = "chat.reply"
"""Direct exchange the sequencer answers a gateway on, key = the gateway's queue name."""
JOBS = "burrow.jobs"
"""Topic exchange routing jobs, delays, retries and dead letters by exact queue name."""
VERIFY = "email.verify"
"""Direct exchange the gateways ask for verification mails on, bound to ``email.due`` only:
gateways may publish here but not to ``burrow.jobs`` (which reaches every job queue), and
the digester takes nothing but ``verify`` jobs that came this way."""
REPORT = "moderation.report"
"""Direct exchange the gateways publish message reports on, bound to ``moderation.reports``
only (key ``moderation.reports``): gateways may write here and nowhere else in
``moderation.*``; backend services consume the queue (docs/moderation.md)."""
EVENTS = "burrow.events"
"""Topic exchange of backend events (docs/events.md), key = the event's type
(``user.offline``, ``message.stored``...): gateways, the sequencer and the notifier
publish, backend services bind queues of their own, the webhooks worker binds
``webhook.due``. Declared by the sequencer (every deployment runs one)."""
HOOK_ASK = "moderation.ask"
"""Direct exchange the sequencer asks the moderation service on (pre-publish hook), bound
to ``moderation.hook`` only (key ``moderation.hook``); docs/moderation.md."""
HOOK_ANSWER = "moderation.answer"
"""Direct exchange the moderation service answers on, key = the request's ``reply_to``:
a sequencer's own answer queue (``moderation.answers.<hex>``, exclusive, bound at run
time). Not direct reply-to: answering that needs write on ``amq.default``, which reaches
every queue of the vhost (docs/moderation.md)."""
HOOK_ANSWERS_PREFIX = "moderation.answers."
HOOK_QUEUE = "moderation.hook"
HOOK_QUEUE_TTL_MS = 60_000  # requests nobody took in a minute are dropped (asked no more)
HOOK_QUEUE_MAX = 100_000
MODERATION_REPORTS = "moderation.reports"
MODERATION_DEAD = "moderation.dead"

SEQUENCERS = "chat.sequencers"
"""Fanout exchange of the sequencers' heartbeats (``{id, shards}`` every
``BURROW_SEQUENCER_HEARTBEAT``), by which they spread the shards among themselves; each
process binds an exclusive queue ``chat.sequencers.<32 hex>`` (consumers/shard_balance.py)."""
SEQUENCERS_PREFIX = "chat.sequencers."

SHARD_QUEUE_PREFIX = "chat.seq."
SHARD_DEAD = "chat.seq.dead"
NOTIFY_MESSAGES = "notify.messages"
NOTIFY_DEAD = "notify.dead"

DEFAULT_SHARDS = 4
# Quorum queues hand a message out at most this many times before dead-lettering it:
# a poison message must not block a shard or a work queue forever.
DELIVERY_LIMIT = 10

ExchangeType = Literal["topic", "direct", "fanout", "headers", "x-consistent-hash"]


@dataclass(frozen=True)
class Exchange:
    name: str
    type: ExchangeType
    internal: bool = False
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Queue:
    """A durable queue; every queue in the shared topology is a quorum queue."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Binding:
    source: str
    destination: str
    routing_key: str
    destination_type: Literal["queue", "exchange"] = "queue"


@dataclass(frozen=True)
class JobFamily:
    """One kind of job: a due queue, optional delay tiers, retry tiers, a dead queue.

    Delays and retries are queues with ``x-message-ttl`` and no consumer that dead-letter
    into the due queue (RabbitMQ bundles no delayed-message plugin). After the last retry
    tier a job is parked in ``<name>.dead``, where an admin can inspect it and shovel it
    back from the management UI.
    """

    name: str
    delays: tuple[int, ...] = ()
    retries: tuple[int, ...] = ()

    @property
    def due(self) -> str:
        return f"{self.name}.due"

    @property
    def dead(self) -> str:
        return f"{self.name}.dead"

    def delay(self, seconds: int) -> str:
        return f"{self.name}.delay.{tier_name(seconds)}"

    def retry(self, seconds: int) -> str:
        return f"{self.name}.retry.{tier_name(seconds)}"


def job_families(push_delay: int = 30, push_retries: tuple[int, ...] = (5, 30, 300),
                 digest_periods: tuple[int, ...] = (3600, 86400),
                 email_retries: tuple[int, ...] = (60, 600, 3600)) -> tuple[JobFamily, ...]:
    """The push, digest and email families; the defaults are the settings' defaults.

    A tier's TTL is part of its queue's arguments, which RabbitMQ cannot change on a
    declared queue: the tier's name carries its duration, so a new value is a new queue
    and never a declaration conflict (the old tier drains into the due queue by itself).
    """
    return (JobFamily("push", delays=(push_delay,), retries=push_retries),
            JobFamily("digest", delays=digest_periods, retries=email_retries),
            JobFamily("email", retries=email_retries))


JOB_FAMILIES = job_families()
PUSH, DIGEST, EMAIL = JOB_FAMILIES
WEBHOOK_RETRIES = (10, 60, 600, 3600)


def webhook_family(retries: tuple[int, ...] = WEBHOOK_RETRIES) -> JobFamily:
    """The webhooks worker's jobs (docs/events.md): ``webhook.due`` takes events from
    ``burrow.events``, failed requests wait in ``webhook.retry.<tier>``, then
    ``webhook.dead``."""
    return JobFamily("webhook", retries=retries)


@dataclass(frozen=True)
class Topology:
    """Exchanges, queues and bindings to declare; a worker's :func:`part` also names what
    it expects another worker (or ``rabbitmq/definitions.json``) to have declared."""

    exchanges: tuple[Exchange, ...]
    queues: tuple[Queue, ...]
    bindings: tuple[Binding, ...]
    expected_exchanges: tuple[str, ...] = ()
    expected_queues: tuple[str, ...] = ()

    def queue(self, name: str) -> Queue:
        """Return the queue called *name*; raises :exc:`KeyError` if there is none."""
        for queue in self.queues:
            if queue.name == name:
                return queue
        raise KeyError(name)


def tier_name(seconds: int) -> str:
    """Readable tier suffix: 30 -> ``30s``, 300 -> ``5m``, 3600 -> ``1h``, 86400 -> ``1d``."""
    if seconds <= 0:
        raise ValueError(f"a tier lasts a positive number of seconds, got {seconds}")
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def shard_queue(index: int) -> str:
    return f"{SHARD_QUEUE_PREFIX}{index}"


def _work_queue(name: str, dead: str) -> Queue:
    return Queue(name, {
        "x-queue-type": "quorum",
        "x-delivery-limit": DELIVERY_LIMIT,
        "x-dead-letter-exchange": JOBS,
        "x-dead-letter-routing-key": dead,
    })


def _wait_queue(name: str, seconds: int, due: str) -> Queue:
    # at-least-once dead-lettering: a job leaving a delay tier is kept until the due queue
    # has confirmed it (RabbitMQ requires reject-publish overflow for that strategy).
    return Queue(name, {
        "x-queue-type": "quorum",
        "x-message-ttl": seconds * 1000,
        "x-dead-letter-exchange": JOBS,
        "x-dead-letter-routing-key": due,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    })


def _dead_queue(name: str) -> Queue:
    return Queue(name, {"x-queue-type": "quorum"})


def _job_family(family: JobFamily) -> tuple[list[Queue], list[Binding]]:
    queues = [_work_queue(family.due, family.dead), _dead_queue(family.dead)]
    queues += [_wait_queue(family.delay(s), s, family.due) for s in family.delays]
    queues += [_wait_queue(family.retry(s), s, family.due) for s in family.retries]
    return queues, [Binding(JOBS, q.name, q.name) for q in queues]


def build(shards: int = DEFAULT_SHARDS,
          families: tuple[JobFamily, ...] = JOB_FAMILIES,
          webhooks: tuple[JobFamily, tuple[str, ...]] | None = None) -> Topology:
    """Return the whole shared topology for *shards* sequencer shards.

    *webhooks*: the webhook family and the event patterns ``webhook.due`` is bound to
    ``burrow.events`` with, only where the webhooks worker runs (``BURROW_WEBHOOK_URL``):
    the default topology (rabbitmq/definitions.json) has no webhook queue, which would
    otherwise collect every event with nobody to take them.

    The shard count is fixed configuration: the consistent-hash exchange keeps a room on
    its shard only while the shard bindings stay as they are, so changing it is a drained
    migration, never a runtime change (see docs/architecture.md).
    """
    if shards < 1:
        raise ValueError(f"need at least one shard, got {shards}")
    exchanges = [
        Exchange(INGRESS, "topic"),
        Exchange(SHARD, "x-consistent-hash", internal=True),
        Exchange(FANOUT, "topic"),
        Exchange(REPLY, "direct"),
        Exchange(JOBS, "topic"),
        Exchange(VERIFY, "direct"),
        Exchange(REPORT, "direct"),
        Exchange(HOOK_ASK, "direct"),
        Exchange(HOOK_ANSWER, "direct"),
        Exchange(EVENTS, "topic"),
        Exchange(SEQUENCERS, "fanout"),
    ]
    queues: list[Queue] = []
    bindings = [Binding(INGRESS, SHARD, "room.*.msg", "exchange")]
    for index in range(shards):
        name = shard_queue(index)
        queue = _work_queue(name, SHARD_DEAD)
        # One active sequencer per shard gives each room a single writer: total order
        # and batched writes (docs/architecture.md, "Why this shape").
        queues.append(Queue(name, {**queue.arguments, "x-single-active-consumer": True}))
        bindings.append(Binding(SHARD, name, "1"))  # the key is the weight of the shard
    queues.append(_dead_queue(SHARD_DEAD))
    bindings.append(Binding(JOBS, SHARD_DEAD, SHARD_DEAD))

    queues += [_work_queue(NOTIFY_MESSAGES, NOTIFY_DEAD), _dead_queue(NOTIFY_DEAD)]
    bindings += [
        Binding(FANOUT, NOTIFY_MESSAGES, "room.*.msg"),
        Binding(JOBS, NOTIFY_MESSAGES, NOTIFY_MESSAGES),
        Binding(JOBS, NOTIFY_DEAD, NOTIFY_DEAD),
    ]
    for family in families:
        family_queues, family_bindings = _job_family(family)
        queues += family_queues
        bindings += family_bindings
        if family.name == "email":
            bindings.append(Binding(VERIFY, family.due, family.due))
    queues += [_work_queue(MODERATION_REPORTS, MODERATION_DEAD), _dead_queue(MODERATION_DEAD)]
    bindings += [Binding(REPORT, MODERATION_REPORTS, MODERATION_REPORTS),
                 Binding(JOBS, MODERATION_REPORTS, MODERATION_REPORTS),
                 Binding(JOBS, MODERATION_DEAD, MODERATION_DEAD)]
    # The hook's requests: quorum, no dead-lettering (a request nobody answered in time
    # is worthless), bounded in time and size; a full queue refuses the publish, which
    # the sequencer treats as the service failing (BURROW_MODERATION_HOOK_FAILURE).
    queues.append(Queue(HOOK_QUEUE, {"x-queue-type": "quorum",
                                     "x-message-ttl": HOOK_QUEUE_TTL_MS,
                                     "x-max-length": HOOK_QUEUE_MAX,
                                     "x-overflow": "reject-publish"}))
    bindings.append(Binding(HOOK_ASK, HOOK_QUEUE, HOOK_QUEUE))
    if webhooks is not None:
        family, patterns = webhooks
        family_queues, family_bindings = _job_family(family)
        queues += family_queues
        bindings += family_bindings
        bindings += [Binding(EVENTS, family.due, pattern) for pattern in patterns]
    return Topology(tuple(exchanges), tuple(queues), tuple(bindings))


def configured_families(settings: Settings) -> tuple[JobFamily, ...]:
    """The push, digest and email families with the tiers *settings* ask for."""
    return job_families(settings.push_delay, settings.push_retries,
                        (settings.digest_hourly, settings.digest_daily),
                        settings.email_retries)


def for_settings(settings: Settings) -> Topology:
    """The whole topology with the shard count and job tiers *settings* ask for (and the
    webhook queues when a webhook URL is configured)."""
    webhooks = ((webhook_family(settings.webhook_retries), settings.webhook_events.patterns)
                if settings.webhook_url else None)
    return build(settings.shards, configured_families(settings), webhooks)


# Worker kind (``python -m consumers NAME``) -> the name prefixes it owns: it declares
# the exchanges and queues named so and the bindings into them, and no other kind may.
OWNERS: dict[str, tuple[str, ...]] = {
    # moderation.* has no worker of its own (backend services consume it), and
    # burrow.events has several publishers: the sequencer, which every deployment
    # runs, declares them.
    "sequencer": ("chat.", "moderation.", EVENTS),
    "notifier": ("notify.", "push."),
    "digester": ("digest.", "email."),
    "webhooks": ("webhook.",),
}
# Queues of another kind that a worker publishes jobs into: it waits until they exist,
# since a job published before then would be dropped unroutable.
PUBLISHES_INTO: dict[str, tuple[str, ...]] = {"notifier": ("digest.delay.",)}


def part(topo: Topology, *kinds: str) -> Topology:
    """The share of *topo* that a process running the worker *kinds* declares.

    Each kind owns the names under its :data:`OWNERS` prefixes, and every kind declares
    ``burrow.jobs``: each binds its queues to it and dead-letters into it, so none has to
    wait for another to start. An exchange another kind owns that a binding comes from,
    and the queues of :data:`PUBLISHES_INTO`, are expected: checked passively, so a
    worker that starts first waits for them (rabbitmq/definitions.json pre-declares the
    default topology, so normally nothing waits).
    """
    owned = tuple(prefix for kind in kinds for prefix in OWNERS[kind])
    into = tuple(prefix for kind in kinds for prefix in PUBLISHES_INTO.get(kind, ()))
    exchanges = tuple(e for e in topo.exchanges
                      if e.name.startswith(owned) or (bool(kinds) and e.name == JOBS))
    bindings = tuple(b for b in topo.bindings if b.destination.startswith(owned))
    declared = {e.name for e in exchanges}
    return Topology(
        exchanges, tuple(q for q in topo.queues if q.name.startswith(owned)), bindings,
        expected_exchanges=tuple(dict.fromkeys(
            b.source for b in bindings if b.source not in declared)),
        expected_queues=tuple(q.name for q in topo.queues
                              if q.name.startswith(into) and not q.name.startswith(owned)))


def for_workers(settings: Settings, kinds: tuple[str, ...]) -> Topology:
    """What a process running the worker *kinds* declares, as *settings* configure them."""
    return part(for_settings(settings), *kinds)
