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

from burrow import ids
from queues import topology
from queues.topology import Topology

VHOST = "burrow"
RABBIT_VERSION = "3.10.8"


@dataclass(frozen=True)
class Role:
    """A broker user and its permissions: regular expressions over resource names.

    RabbitMQ checks *configure* to declare or delete, *write* to publish to an exchange or
    bind into a queue, and *read* to consume from a queue or bind from an exchange.
    """

    user: str
    configure: str
    write: str
    read: str
    tags: tuple[str, ...] = ()
    password_env: str = ""
    # Topic permissions: exchange -> the routing keys this user may publish with there.
    # RabbitMQ checks them on topic exchanges, on top of the write permission above.
    topics: tuple[tuple[str, str], ...] = ()


ROOM = ids.ROOM_ID.pattern  # room ids: safe inside routing keys


# Least privilege per role (G6). Gateways own only their instance queues; workers own the
# shared topology; backend services publish sends and jobs and read the message stream
# through queues of their own; the admin runs the management UI.
ROLES = (
    # A gateway publishes sends to chat.ingress, and presence, typing and member events
    # to chat.fanout, but never a stored message there: only the sequencer fans those
    # out, so a compromised gateway cannot forge one in any room.
    Role("burrow-gateway",
         configure=r"^gateway\.",
         write=r"^(gateway\..*|chat\.ingress|chat\.fanout)$",
         read=r"^(gateway\..*|chat\.fanout|chat\.reply)$",
         password_env="BURROW_RABBITMQ_GATEWAY_PASSWORD",
         topics=(("chat.ingress", rf"^room\.{ROOM}\.msg$"),
                 ("chat.fanout", rf"^room\.{ROOM}\.(presence|typing|member)$"))),
    Role("burrow-worker",
         configure=r"^(chat|notify|push|digest|email|burrow)\.",
         write=r"^(chat|notify|push|digest|email|burrow)\.",
         read=r"^(chat|notify|push|digest|email|burrow)\.",
         password_env="BURROW_RABBITMQ_WORKER_PASSWORD"),
    Role("burrow-backend",
         configure=r"^backend\.",
         write=r"^(backend\..*|chat\.ingress|burrow\.jobs)$",
         read=r"^(backend\..*|chat\.fanout)$",
         password_env="BURROW_RABBITMQ_BACKEND_PASSWORD",
         topics=(("chat.ingress", rf"^room\.{ROOM}\.msg$"),)),
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


def password_hash(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's ``rabbit_password_hashing_sha256``: base64(salt + sha256(salt + password))."""
    salt = os.urandom(4) if salt is None else salt
    digest = hashlib.sha256(salt + password.encode("utf-8")).digest()
    return base64.b64encode(salt + digest).decode("ascii")


def permissions(vhost: str) -> list[dict[str, str]]:
    return [{"user": r.user, "vhost": vhost, "configure": r.configure,
             "write": r.write, "read": r.read} for r in ROLES]


def topic_permissions(vhost: str) -> list[dict[str, str]]:
    """Each role's topic permissions; ``read`` (binding keys) is left open: a gateway
    binds per room and to every room's member events."""
    return [{"user": r.user, "vhost": vhost, "exchange": exchange, "write": write,
             "read": ".*"} for r in ROLES for exchange, write in r.topics]


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
                        help="hash each role's password from BURROW_RABBITMQ_*_PASSWORD "
                             "(dev passwords where unset)")
    parser.add_argument("--out", help="write to this file (mode 600) instead of stdout")
    args = parser.parse_args(argv)
    passwords = passwords_from_env(os.environ) if args.with_passwords else None
    text = dumps(render(topology.build(), passwords))
    if args.out is None:
        sys.stdout.write(text)
        return
    with open(os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
        out.write(text)


if __name__ == "__main__":
    main()
