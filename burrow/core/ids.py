"""Identifiers that travel in routing keys, URLs and documents, and their checks.

Room ids are ``[A-Za-z0-9_-]{1,64}`` so they are safe inside AMQP routing keys (no dots,
no wildcards) and URL paths (docs/architecture.md). User ids come from the token's ``sub``.
"""

from __future__ import annotations

import re
from typing import TypeGuard

ROOM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
CLIENT_ID = re.compile(r"[\x21-\x7e]{1,64}")  # printable ASCII, no spaces
MAX_USER_ID = 128


def is_room_id(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and ROOM_ID.fullmatch(value) is not None


def is_client_id(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and CLIENT_ID.fullmatch(value) is not None


def is_user_id(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and 0 < len(value) <= MAX_USER_ID and value.isprintable()


def message_key(room: str) -> str:
    """Routing key of a chat message of *room* on ``chat.ingress`` and ``chat.fanout``."""
    return f"room.{room}.msg"


def event_key(room: str, kind: str) -> str:
    """Routing key of an ephemeral event (``member``, ``presence``, ``typing``) of *room*."""
    return f"room.{room}.{kind}"


def room_of_key(routing_key: str) -> str | None:
    """The room of a ``room.<room>.<kind>`` routing key, None for any other key."""
    parts = routing_key.split(".")
    if len(parts) == 3 and parts[0] == "room" and is_room_id(parts[1]):
        return parts[1]
    return None
