"""Render the topology, broker users and their permissions as RabbitMQ definitions.

``rabbitmq/definitions.json`` is this module's output for the default topology, checked
in so an admin sees every exchange and queue with its readable name in the management UI
before any Burrow process connects. The checked-in file carries no passwords (users with
an empty hash cannot log in); the dev launcher and docker-compose render a copy with
password hashes from the environment. Regenerate the checked-in file with
``python -m queues.definitions > rabbitmq/definitions.json``; docker-compose renders its
copy with ``python -m queues.definitions --with-passwords --out FILE``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from burrow.core import ids
from queues import topology
from queues.topology import Topology

VHOST = "burrow"
RABBIT_VERSION = "3.10.8"


@dataclass(frozen=True)
class Topic:
    """Topic permissions of a user on one topic exchange: regular expressions over the
    routing keys it may publish with (*write*) and bind a queue with (*read*).

    RabbitMQ checks them on top of the write and read permissions, and only on topic
    exchanges; a user with no entry for an exchange may use any key there.
    """

    exchange: str
    write: str
    read: str


@dataclass(frozen=True)
class Role:
    """A broker user and its permissions: regular expressions over resource names.

    RabbitMQ checks *configure* to declare or delete, *write* to publish to an exchange or
    bind into a queue, and *read* to consume from a queue or bind from an exchange.
    Declaring a queue that dead-letters also needs *read* on the queue and *write* on
    its dead-letter exchange.
    """

    user: str
    configure: str
    write: str
    read: str
    tags: tuple[str, ...] = ()
    password_env: str = ""
    topics: tuple[Topic, ...] = ()


ROOM = ids.ROOM_ID.pattern  # room ids: safe inside routing keys
TIER = r"[0-9]+[smhd]"  # a delay or retry tier's length (topology.tier_name)
NOTHING = "(?!)"  # a key pattern nothing matches, not even the empty key
ANY = ".*"
# What a gateway may publish on burrow.events: presence, membership and report events.
GATEWAY_EVENTS = r"^(user\.(online|offline)|member\.[a-z]+|report\.[a-z]+)$"


# Least privilege per role (G6). Gateways own only their instance queues; each worker
# kind owns its names (queues.topology.OWNERS) and the shared burrow.jobs, and publishes
# only the routing keys its jobs go to; backend services publish sends and the jobs
# docs/queues.md documents, and read the stored stream through queues of their own; the
# admin runs the management UI. Worker queues that dead-letter need read on themselves.
ROLES = (
    # A gateway publishes sends to chat.ingress, and presence, typing and member events
    # to chat.fanout, but never a stored message there: only the sequencer fans those
    # out, so a compromised gateway cannot forge one in any room. It asks for address
    # verification mails on email.verify, which reaches email.due alone, and files
    # message reports on moderation.report, which reaches moderation.reports alone.
    Role("burrow-gateway",
         configure=r"^gateway\.",
         write=(r"^(gateway\..*|chat\.ingress|chat\.fanout|email\.verify|moderation\.report"
                r"|burrow\.events)$"),
         read=r"^(gateway\..*|chat\.fanout|chat\.reply)$",
         password_env="BURROW_RABBITMQ_GATEWAY_PASSWORD",
         topics=(Topic("chat.ingress", rf"^room\.{ROOM}\.msg$", ANY),
                 Topic("chat.fanout", rf"^room\.{ROOM}\.(presence|typing|member)$", ANY),
                 Topic("burrow.events", GATEWAY_EVENTS, NOTHING))),
    # The sequencer consumes the shards, fans stored messages out and answers senders;
    # it declares the chat exchanges, shards and their dead queue, and never publishes a
    # job nor a send (its shards dead-letter through burrow.jobs, inside the broker).
    # It also declares moderation.* (no worker consumes it; backend services do), and
    # publishes there only the pre-publish hook's requests (moderation.ask), whose
    # answers it takes from a queue of its own (moderation.answers.<32 hex>), and
    # burrow.events, where it publishes message.* events. Sequencer processes announce
    # to each other on the fanout chat.sequencers, each through a queue of its own
    # (chat.sequencers.<32 hex>), to share the shards out (docs/scaling.md).
    Role("burrow-sequencer",
         configure=(r"^(chat\.(ingress|shard|fanout|reply|seq\.([0-9]+|dead)"
                    r"|sequencers(\.[0-9a-f]{32})?)|burrow\.jobs"
                    r"|moderation\.(report|reports|dead|ask|answer|hook|answers\.[0-9a-f]{32})"
                    r"|burrow\.events)$"),
         write=(r"^(chat\.(shard|fanout|reply|seq\.([0-9]+|dead)|sequencers(\.[0-9a-f]{32})?)"
                r"|burrow\.(jobs|events)"
                r"|moderation\.(reports|dead|ask|hook|answers\.[0-9a-f]{32}))$"),
         read=(r"^(chat\.(ingress|shard|seq\.[0-9]+|sequencers(\.[0-9a-f]{32})?)|burrow\.jobs"
               r"|moderation\.(report|reports|ask|answer|answers\.[0-9a-f]{32}))$"),
         password_env="BURROW_RABBITMQ_SEQUENCER_PASSWORD",
         topics=(Topic("chat.fanout", rf"^room\.{ROOM}\.msg$", NOTHING),
                 Topic("chat.ingress", NOTHING, r"^room\.\*\.msg$"),
                 Topic("burrow.jobs", NOTHING, r"^(chat\.seq\.dead|moderation\.(reports|dead))$"),
                 Topic("burrow.events", r"^message\.[a-z]+$", NOTHING))),
    # The notifier reads stored messages (notify.messages, bound to chat.fanout) and due
    # pushes; it publishes pushes into its own tiers (a mention straight into push.due)
    # and digests into the digester's delay tiers, never an email, a send or a fan-out.
    Role("burrow-notifier",
         configure=r"^((notify|push)\..+|burrow\.jobs)$",
         write=r"^((notify|push)\..+|burrow\.(jobs|events))$",
         read=r"^(notify\.messages|push\.(due|(delay|retry)\..+)|chat\.fanout|burrow\.jobs)$",
         password_env="BURROW_RABBITMQ_NOTIFIER_PASSWORD",
         topics=(Topic("chat.fanout", NOTHING, r"^room\.\*\.msg$"),
                 Topic("burrow.jobs", rf"^(notify\.dead|push\.(due|dead|(delay|retry)\.{TIER})"
                       rf"|digest\.delay\.{TIER})$", r"^(notify|push)\..+$"),
                 Topic("burrow.events", r"^push\.[a-z]+$", NOTHING))),
    # The digester reads due digests and emails and publishes only into its own tiers.
    Role("burrow-digester",
         configure=r"^((digest|email)\..+|burrow\.jobs)$",
         write=r"^((digest|email)\..+|burrow\.jobs)$",
         read=r"^(digest\.(due|(delay|retry)\..+)|email\.(due|retry\..+|verify)|burrow\.jobs)$",
         password_env="BURROW_RABBITMQ_DIGESTER_PASSWORD",
         topics=(Topic("burrow.jobs",
                       rf"^(digest\.(dead|(delay|retry)\.{TIER})|email\.(dead|retry\.{TIER}))$",
                       r"^(digest|email)\..+$"),)),
    # Backend services post sends and the push and email jobs of docs/queues.md, bind
    # queues of their own to the stored stream (one room's or every room's), and consume
    # the message reports (moderation.reports) and the pre-publish hook's requests
    # (moderation.hook), which they answer on moderation.answer only.
    Role("burrow-backend",
         configure=r"^backend\.",
         write=r"^(backend\..*|chat\.ingress|burrow\.jobs|moderation\.answer)$",
         read=r"^(backend\..*|chat\.fanout|moderation\.(reports|hook)|burrow\.events)$",
         password_env="BURROW_RABBITMQ_BACKEND_PASSWORD",
         topics=(Topic("chat.ingress", rf"^room\.{ROOM}\.msg$", NOTHING),
                 Topic("chat.fanout", NOTHING, rf"^room\.({ROOM}|\*)\.msg$"),
                 Topic("burrow.jobs", rf"^(push\.(due|delay\.{TIER})|email\.due)$", NOTHING),
                 Topic("burrow.events", NOTHING, ANY))),
    # The webhooks worker (docs/events.md) binds webhook.due to burrow.events and runs
    # it as a job family: it publishes only into its own retry tiers and dead queue.
    Role("burrow-webhooks",
         configure=r"^(webhook\..+|burrow\.jobs)$",
         write=r"^(webhook\..+|burrow\.jobs)$",
         read=r"^(webhook\.(due|retry\..+)|burrow\.(jobs|events))$",
         password_env="BURROW_RABBITMQ_WEBHOOKS_PASSWORD",
         topics=(Topic("burrow.jobs", rf"^webhook\.(dead|retry\.{TIER})$", r"^webhook\..+$"),
                 Topic("burrow.events", NOTHING, ANY))),
    Role("burrow-admin", configure=".*", write=".*", read=".*",
         tags=("administrator",), password_env="BURROW_RABBITMQ_ADMIN_PASSWORD"),
)


def role(user: str) -> Role:
    """Return the role of broker user *user*; raises :exc:`KeyError` if unknown."""
    for candidate in ROLES:
        if candidate.user == user:
            return candidate
    raise KeyError(user)


def dev_password(role_: Role) -> str:
    """The development password of a role: its user name with a ``-dev`` suffix."""
    return f"{role_.user}-dev"


def passwords_from_env(env: Mapping[str, str]) -> dict[str, str]:
    """Each role's password from its ``BURROW_RABBITMQ_*_PASSWORD`` variable or the dev one."""
    return {r.user: env.get(r.password_env) or dev_password(r) for r in ROLES}


def deployment_passwords(env: Mapping[str, str]) -> dict[str, str]:
    """Each role's password from its variable, for a real deployment: every variable must
    be set, and none to its development password (public: it is in this file).

    ``--with-passwords`` once fell back to the dev passwords for unset variables, so a
    typo in one name rendered a broker whose user anyone could log in as.
    """
    missing = [r.password_env for r in ROLES if not env.get(r.password_env)]
    public = [r.password_env for r in ROLES if env.get(r.password_env) == dev_password(r)]
    if missing or public:
        raise ValueError("; ".join(
            ([f"not set: {', '.join(missing)}"] if missing else [])
            + ([f"set to the public development password: {', '.join(public)}"]
               if public else [])))
    return {r.user: env[r.password_env] for r in ROLES}


def password_hash(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's ``rabbit_password_hashing_sha256``: base64(salt + sha256(salt + password))."""
    salt = os.urandom(4) if salt is None else salt
    digest = hashlib.sha256(salt + password.encode("utf-8")).digest()
    return base64.b64encode(salt + digest).decode("ascii")


def permissions(vhost: str) -> list[dict[str, str]]:
    return [{"user": r.user, "vhost": vhost, "configure": r.configure,
             "write": r.write, "read": r.read} for r in ROLES]


def topic_permissions(vhost: str) -> list[dict[str, str]]:
    return [{"user": r.user, "vhost": vhost, "exchange": t.exchange, "write": t.write,
             "read": t.read} for r in ROLES for t in r.topics]


def topology_definitions(topo: Topology, vhost: str = VHOST) -> dict[str, list[dict[str, Any]]]:
    """The exchanges, queues and bindings of *topo* in the definitions format."""
    return {
        "queues": [{"name": q.name, "vhost": vhost, "durable": True, "auto_delete": False,
                    "arguments": dict(q.arguments)} for q in topo.queues],
        "exchanges": [{"name": e.name, "vhost": vhost, "type": e.type, "durable": True,
                       "auto_delete": False, "internal": e.internal,
                       "arguments": dict(e.arguments)} for e in topo.exchanges],
        "bindings": [{"source": b.source, "vhost": vhost, "destination": b.destination,
                      "destination_type": b.destination_type, "routing_key": b.routing_key,
                      "arguments": {}} for b in topo.bindings],
    }


def render(topo: Topology, passwords: Mapping[str, str] | None = None,
           vhost: str = VHOST) -> dict[str, Any]:
    """Full definitions: vhost, users (hashed *passwords*, or none), permissions, topology."""
    passwords = passwords or {}
    users = [{"name": r.user,
              "password_hash": password_hash(passwords[r.user]) if r.user in passwords else "",
              "hashing_algorithm": "rabbit_password_hashing_sha256",
              "tags": list(r.tags), "limits": {}} for r in ROLES]
    return {
        "rabbit_version": RABBIT_VERSION,
        "users": users,
        "vhosts": [{"name": vhost}],
        "permissions": permissions(vhost),
        "topic_permissions": topic_permissions(vhost),
        "parameters": [],
        "global_parameters": [],
        "policies": [],
        **topology_definitions(topo, vhost),
    }


def dumps(definitions: Mapping[str, Any]) -> str:
    return json.dumps(definitions, indent=2, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m queues.definitions",
        description="Print Burrow's RabbitMQ definitions (the checked-in file by default).")
    parser.add_argument("--with-passwords", action="store_true",
                        help="hash each role's password from its BURROW_RABBITMQ_*_PASSWORD "
                             "(all must be set, none to a development password)")
    parser.add_argument("--out", help="write to this file (mode 600) instead of stdout")
    args = parser.parse_args(argv)
    try:
        passwords = deployment_passwords(os.environ) if args.with_passwords else None
    except ValueError as exc:
        parser.exit(2, f"{parser.prog}: {exc}\n")
    text = dumps(render(topology.build(), passwords))
    if args.out is None:
        sys.stdout.write(text)
        return
    with open(os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
        out.write(text)


if __name__ == "__main__":
    main()
