"""The MongoDB link: one ``AsyncMongoClient`` per process and a bounded health check.

PyMongo's native asyncio client (motor's successor) reconnects by itself: a database
restart only fails the operations issued while it is down, so the only state Burrow keeps
is whether the last check answered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from burrow.storage.mongo_options import client_options

DEFAULT_DATABASE = "burrow"
log = logging.getLogger(__name__)


class Indexed(Protocol):
    async def ensure_indexes(self) -> None: ...


async def ensure_indexes(stores: Iterable[Indexed], retry: float, who: str) -> None:
    """Create the stores' indexes, waiting for a database that may still be coming up.

    Processes start in any order, so a process that needs its indexes before it works
    waits here instead of failing; index creation is idempotent.
    """
    stores = list(stores)
    while True:
        try:
            for store in stores:
                await store.ensure_indexes()
            return
        except PyMongoError as exc:
            log.warning("%s waits for the database: %s", who, exc)
            await asyncio.sleep(retry)


def open_client(url: str, timeout: float) -> AsyncMongoClient[dict[str, object]]:
    """A client that gives up on an unreachable server after *timeout* seconds.

    Connecting is lazy: this never blocks and never raises for a server that is down.
    Replica-set options (majority writes and reads, retryable writes and reads) are added
    unless the URL sets them itself (:func:`burrow.storage.mongo_options.client_options`).
    """
    ms = int(timeout * 1000)
    return AsyncMongoClient(url, tz_aware=True, serverSelectionTimeoutMS=ms,
                            connectTimeoutMS=ms, appname="burrow", **client_options(url))


def database(client: AsyncMongoClient[dict[str, object]]) -> AsyncDatabase[dict[str, object]]:
    """The database named in the URL's path, ``burrow`` when the URL names none."""
    return client.get_default_database(default=DEFAULT_DATABASE)


async def ping(client: AsyncMongoClient[dict[str, object]], timeout: float) -> bool:
    """True when the server answered ``ping`` within *timeout* seconds."""
    try:
        async with asyncio.timeout(timeout):
            await client.admin.command("ping")
    except (PyMongoError, TimeoutError, OSError):
        return False
    return True


def utc(moment: datetime) -> datetime:
    """A stored time as an aware UTC datetime. Burrow's clients are ``tz_aware``; a naive
    time (written or read by another client) is UTC by MongoDB's convention."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


ID_PAGE = 50  # values per $in query (see pages)
V = TypeVar("V")


def pages(values: Iterable[V]) -> list[list[V]]:
    """*values* (sorted, deduplicated) in lists of at most ``ID_PAGE``, for ``$in`` queries.

    The embedded database matches each document against the whole ``$in`` list: 1,000
    ids in one update took 1.6 s there, 20 pages of 50 took 0.15 s. mongod does not care.
    """
    listed = sorted(set(values))  # type: ignore[type-var]
    return [listed[i:i + ID_PAGE] for i in range(0, len(listed), ID_PAGE)]
