"""A database with a history: N stored messages and what goes with them, for ``--history``.

The benchmark starts from an empty database, but a deployment keeps its data, and a
query that scans instead of using an index gets slower with every stored message
(issue 14: the same load gave p99 4.6 s on a fresh ``./dev up`` and 14.2 s a few runs
later). ``--history N`` runs the load on top of N messages so that such a query shows.

What is seeded, in rooms the load does not use (``hist-<k>``, 1,000 messages each):
10 members per room with read pointers spread over the room's history (so most of
them have unread messages), one user document (email, hourly digest) and one phone per
member for half of them, a push record per 10 messages. The documents are the ones the
stores write (:meth:`burrow.core.envelopes.Stored.to_document`, the memberships of
:meth:`burrow.storage.rooms.RoomStore.add`) and the indexes are the stores' own.

Seeding goes at ~5,000 messages/s on the embedded database (1 M in ~4 minutes), so a
seeded data directory is built once per size and kept under ``.burrow/bench-seed/``;
each run starts from a copy of it (seconds). The cache key includes this file's hash:
a change to what is seeded builds anew.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from burrow.core.envelopes import Stored
from burrow.devstack import mongo, ports
from burrow.storage import database
from burrow.storage.devices import DeviceStore
from burrow.storage.messages import MessageStore
from burrow.storage.notify import NotifyStore
from burrow.storage.presence import PresenceStore
from burrow.storage.rooms import MEMBER, OWNER, RoomStore

PER_ROOM = 1000
MEMBERS = 10
CHUNK = 5000
CACHE = Path(__file__).resolve().parents[1] / ".burrow" / "bench-seed"


def room_of(k: int) -> str:
    return f"hist-{k}"


def member_of(k: int, j: int) -> str:
    return f"hist-u{k}-{j}"


def rooms_for(messages: int) -> int:
    return -(-messages // PER_ROOM)


def message_documents(messages: int, start: datetime) -> Iterator[dict[str, Any]]:
    """The rooms' messages in seq order, 1..PER_ROOM per room, senders taking turns."""
    base_ms = int(start.timestamp() * 1000)
    for n in range(messages):
        k, i = divmod(n, PER_ROOM)
        sender = member_of(k, i % MEMBERS)
        yield Stored(id=f"hist-{n}", room=room_of(k), seq=i + 1, sender=sender,
                     client_id=f"h{n}", body=f"message {i + 1} of a stored history " * 3,
                     ts=base_ms + n).to_document()


def room_documents(rooms: int, start: datetime) -> tuple[list[dict[str, Any]], ...]:
    """(rooms, memberships, users, devices) of the seeded rooms."""
    room_docs, memberships, users, devices = [], [], [], []
    for k in range(rooms):
        room_docs.append({"_id": room_of(k), "name": f"History {k}",
                          "created_by": member_of(k, 0), "created_at": start})
        for j in range(MEMBERS):
            user = member_of(k, j)
            memberships.append({"room": room_of(k), "user": user,
                                "role": OWNER if j == 0 else MEMBER,
                                # spread: member j has read (j / MEMBERS) of the room
                                "read_seq": PER_ROOM * j // MEMBERS, "joined_at": start})
            if j % 2 == 0:
                # verified, as a user who followed the link: digests go out
                users.append({"_id": user, "email": f"{user}@example.test",
                              "email_verified": True, "digest": "hourly",
                              "updated_at": start})
                devices.append({"_id": f"hist-d{k}-{j}", "platform": "fcm",
                                "token": f"hist-token-{k}-{j}",
                                "token_kind": "registration_token", "app": "",
                                "user": user, "updated_at": start, "created_at": start})
    return room_docs, memberships, users, devices


async def _insert(collection: Any, documents: Iterator[dict[str, Any]] | list[dict[str, Any]]
                  ) -> int:
    count, chunk = 0, []
    for doc in documents:
        chunk.append(doc)
        if len(chunk) == CHUNK:
            await collection.insert_many(chunk, ordered=False)
            count, chunk = count + len(chunk), []
    if chunk:
        await collection.insert_many(chunk, ordered=False)
        count += len(chunk)
    return count


async def seed(url: str, messages: int) -> dict[str, int]:
    """Write a history of *messages* into the database at *url* (empty; its database
    name, else Burrow's default); returns the counts written."""
    client = database.open_client(url, 30.0)
    try:
        db = client.get_default_database(database.DEFAULT_DATABASE)
        stores: list[database.Indexed] = [MessageStore(db), RoomStore(db), DeviceStore(db),
                                          NotifyStore(db), PresenceStore(db, 60.0)]
        await database.ensure_indexes(stores, 1.0, "bench seed")
        start = datetime.now(UTC) - timedelta(days=30)
        rooms, memberships, users, devices = room_documents(rooms_for(messages), start)
        counts = {
            "messages": await _insert(db.messages, message_documents(messages, start)),
            "rooms": await _insert(db.rooms, rooms),
            "memberships": await _insert(db.memberships, memberships),
            "users": await _insert(db.users, users),
            "devices": await _insert(db.devices, devices),
        }
        now = datetime.now(UTC)
        counts["push_log"] = await _insert(db.push_log, (
            {"_id": f"hist-n{n}|hist-d{n // PER_ROOM}-0", "device": f"hist-d{n // PER_ROOM}-0",
             "at": now} for n in range(0, messages, 10)))
        return counts
    finally:
        await client.close()


def _key(messages: int) -> str:
    digest = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
    return f"{messages}-{digest}"


def seeded_directory(messages: int, cache: Path = CACHE) -> Path:
    """A database directory holding a history of *messages*, built on first use."""
    target = cache / _key(messages)
    if (target / "SEEDED").exists():
        return target / "mongo"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    db = mongo.EmbeddedMongo(target / "mongo", ports.free_port())
    began = time.monotonic()
    print(f"bench: seeding {messages:,} messages into {target} (once for this size)",
          file=sys.stderr, flush=True)
    db.start()
    try:
        db.wait_ready()
        counts = asyncio.run(seed(db.url, messages))
    finally:
        db.stop()
    (target / "SEEDED").write_text(f"{counts}\n")
    print(f"bench: seeded {counts} in {time.monotonic() - began:.0f} s", file=sys.stderr,
          flush=True)
    return target / "mongo"


def copy_into(messages: int, storage: Path, cache: Path = CACHE) -> None:
    """Start *storage* (a database directory not yet used) from the seeded copy."""
    if messages > 0:
        shutil.copytree(seeded_directory(messages, cache), storage, dirs_exist_ok=True)
