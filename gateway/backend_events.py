"""The gateway's backend events (docs/events.md) of membership and moderation changes.

One call per change from the HTTP routes that make it (rooms_api, moderation_api),
published in the background by the node's :class:`~queues.events.EventPublisher`:
never failing or delaying the request, lost if the broker is away (at most once, as
docs/events.md says for the gateways' events).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from burrow.core import events
from gateway.node import Node

# moderation action -> the member event it is, for the actions backend services follow
MODERATION_TYPES = {"ban": events.MEMBER_BANNED, "mute": events.MEMBER_MUTED,
                    "remove": events.MEMBER_REMOVED}


def member(node: Node, type_: str, room: str, users: str | Iterable[str], by: str,
           key: str | None = None) -> None:
    """*users* joined or left *room* through a call by *by*. *key* names the change where
    something does (an accepted invitation's id), else the time in ms."""
    at = int(time.time() * 1000)
    node.backend_events.publish_soon([
        events.member(type_, room, user, at, key or str(at), by=by)
        for user in ([users] if isinstance(users, str) else users)])


def moderation(node: Node, record: dict[str, Any]) -> None:
    """A moderation action's event, from its audit *record* (its ``_id`` makes the id:
    a retried request publishes the same one). Other actions have none."""
    type_ = MODERATION_TYPES.get(str(record.get("action")))
    if type_ is None or not record.get("user"):
        return
    at = record.get("at")
    until = record.get("until")
    node.backend_events.publish_soon([events.member(
        type_, record["room"], str(record["user"]),
        _ms(at) if isinstance(at, datetime) else int(time.time() * 1000), str(record["_id"]),
        by=record.get("by"), reason=record.get("reason") or None,
        until=_ms(until) if isinstance(until, datetime) else None)])


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)
