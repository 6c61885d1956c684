"""The moderation room event's shape (docs/moderation.md), apart from the envelopes
that carry it (burrow.core.envelopes) and the rules that decide it
(burrow.core.moderation), which both use it.
"""

from __future__ import annotations

from typing import Any

from burrow.core import ids

#: The kind of a moderation event (docs/moderation.md): a room event of no target,
#: sequenced like a change, that only a trusted publisher (``admin``) may send.
MODERATION = "moderation"
#: What a moderation event carries (the keys of its ``moderation`` object).
MODERATION_FIELDS = ("action", "user", "seconds", "until", "reason")
MAX_MODERATION_REASON = 500


def moderation_details(value: Any) -> dict[str, Any]:
    """The ``moderation`` object of a moderation send checked: ``action`` (a word),
    ``user`` (a user id, for actions on a user), ``seconds`` and ``until`` (integers),
    ``reason`` (text of at most :data:`MAX_MODERATION_REASON` characters), nothing else.
    Which actions exist and who may take them is burrow.core.moderation's; this is
    only the envelope's shape. Raises :exc:`ValueError`."""
    if not isinstance(value, dict) or set(value) - set(MODERATION_FIELDS):
        raise ValueError(f"moderation must be an object of {', '.join(MODERATION_FIELDS)}")
    action = value.get("action")
    if not isinstance(action, str) or not action.isascii() or not action.isidentifier() \
            or len(action) > 32:
        raise ValueError("moderation.action must be a word")
    if "user" in value and not ids.is_user_id(value["user"]):
        raise ValueError("moderation.user must be a user id")
    for name in ("seconds", "until"):
        number = value.get(name)
        if name in value and (not isinstance(number, int) or isinstance(number, bool)
                              or not 0 <= number < 2**53):
            raise ValueError(f"moderation.{name} must be a non-negative integer")
    reason = value.get("reason")
    if "reason" in value and (not isinstance(reason, str)
                              or len(reason) > MAX_MODERATION_REASON):
        raise ValueError(f"moderation.reason must be text of at most "
                         f"{MAX_MODERATION_REASON} characters")
    return {k: value[k] for k in MODERATION_FIELDS if k in value}


def moderation_text(data: dict[str, Any]) -> str:
    """A moderation event in words, for v1 receivers (who get it as a message):
    ``olga muted bob for 600 s: spam``."""
    action, user = str(data.get("action", "")), data.get("user")
    text = f"{data.get('sender', '')} {action}"
    if user is not None:
        text += f" {user}"
    if "seconds" in data:
        text += f" ({data['seconds']} s)"
    if data.get("reason"):
        text += f": {data['reason']}"
    return text
