"""The broker nodes a process may connect to, and the order it tries them in.

``BURROW_AMQP_URL`` lists one URL per RabbitMQ node of a cluster, comma-separated. Every
process holds one connection, to one node; when that node dies it reconnects to another
and its robust channels re-declare their queues and bindings and restart their consumers
there (burrow/runtime/broker.py). This module holds the decisions, free of I/O: what a
valid list is, which node to try next, and how to name a node in logs and metrics
without its credentials.

Why one user, password, vhost, scheme and option set for every entry: the nodes of a
cluster share their users, vhosts and definitions, so a list whose entries differ in
those is a mistake (a copy-paste of another process's URL, a plain ``amqp://`` among
TLS ones) that would only show when a node fails and the process lands on the odd
entry. It is refused at start instead. Only the host and port differ.
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, urlsplit

SCHEMES = ("amqp", "amqps")
DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671}
MAX_NODES = 32  # a cluster has 3, 5 or 7 nodes; more is a pasted mistake

# A comma starts a new entry only where an amqp:// or amqps:// URL follows: an existing
# single URL whose password holds a raw comma still reads as one URL.
_SEPARATOR = re.compile(r",\s*(?=amqps?://)", re.IGNORECASE)


def split_urls(raw: str) -> tuple[str, ...]:
    """The URLs of *raw*, a comma-separated list of ``amqp://`` / ``amqps://`` URLs.

    Raises ``ValueError`` with a reason that quotes no part of any URL (they carry the
    password): which entry is wrong (counted from 1) and why.
    """
    entries = tuple(part.strip() for part in _SEPARATOR.split(raw.strip()))
    if len(entries) > MAX_NODES:
        raise ValueError(f"{len(entries)} URLs; at most {MAX_NODES} nodes")
    parsed = [_entry(n, entry) for n, entry in enumerate(entries, 1)]
    first = parsed[0]
    seen: set[tuple[str, int]] = set()
    for n, parts in enumerate(parsed, 1):
        if len(parsed) > 1 and _shared(parts) != _shared(first):
            raise ValueError(f"entry {n} differs from entry 1 in its scheme, user, "
                             "password, vhost or options; every node of a cluster is "
                             "reached with the same ones, only host:port differ")
        node = (parts.hostname or "", _port(parts))
        if node in seen:
            raise ValueError(f"entry {n} repeats the host:port of an earlier entry")
        seen.add(node)
    return entries


def _entry(n: int, entry: str) -> SplitResult:
    try:
        parts = urlsplit(entry)
        parts.port  # noqa: B018 - raises ValueError on a port out of range or not a number
    except ValueError:
        raise ValueError(f"entry {n} is not a URL with a valid host:port") from None
    if "," in (parts.hostname or "") or "," in parts.path or not entry:
        raise ValueError(f"entry {n} holds a comma that starts no amqp:// URL: each node "
                         "is a whole URL, separated by commas (a comma in a vhost is "
                         "written %2C)")
    if parts.scheme.lower() not in SCHEMES or not parts.hostname:
        what = "the URL" if n == 1 and "," not in entry else f"entry {n}"
        raise ValueError(f"{what} is not an amqp or amqps:// URL with a host"
                         + (" (URLs are separated by commas)" if "," in entry else ""))
    return parts


def _port(parts: SplitResult) -> int:
    return parts.port or DEFAULT_PORTS[parts.scheme.lower()]


def _shared(parts: SplitResult) -> tuple[str, str | None, str | None, str, str]:
    """What every entry of a list must have in common."""
    return (parts.scheme.lower(), parts.username, parts.password, parts.path or "/",
            parts.query)


def node_name(url: str) -> str:
    """``host:port`` of *url*: how logs and the ``burrow_broker_node`` metric name a node
    (never the user or password)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    return f"{host}:{_port(parts)}"


def connect_order(count: int, current: int | None) -> list[int]:
    """Indexes of *count* nodes in the order one connection attempt tries them.

    Before any connection (*current* None) that is the list's own order, so the first
    URL that answers wins. Once connected to node *current*, the next attempt (that node
    was lost) starts with the node after it and tries the lost one last: a node that
    just died is the least likely to answer, and a process does not wait on it while
    another is up. A round that finds nobody is followed by the back-off
    (``BURROW_RECONNECT_INTERVAL``) and the same round again.
    """
    if count < 1:
        raise ValueError("no broker node to connect to")
    start = 0 if current is None else (current + 1) % count
    return [(start + k) % count for k in range(count)]

