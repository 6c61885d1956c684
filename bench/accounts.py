"""The load's users before the first send: rooms, phones, digest e-mails (HTTP API).

Everything here is done once, before the clients connect, through the same HTTP API a
client app uses; it is not measured. Split out of :mod:`bench.load` so that the load
generator holds the clients and their frames only.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from pymongo import MongoClient
from pymongo.collection import Collection

from burrow.core import tokens
from burrow.storage import database


class Config(Protocol):
    """What the setup reads of a load's configuration (:class:`bench.load.LoadConfig`)."""

    @property
    def connections(self) -> int: ...
    @property
    def rooms(self) -> int: ...
    @property
    def offline(self) -> int: ...
    @property
    def devices(self) -> float: ...
    def members(self, room: int) -> range: ...


def room_id(run: str, index: int) -> str:
    return f"bench{run}-{index}"


def offline_user(room: int, k: int) -> str:
    return f"off{room}-{k}"


def http(url: str, token: str, body: object = None, method: str = "POST") -> tuple[int, str]:
    """One JSON request with a bearer token (blocking: run it in a thread); status, text."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def create_rooms(config: Config, run: str, gateway_http: Sequence[str],
                       token: Mapping[int, str], limit: asyncio.Semaphore) -> None:
    """Each room created by its first member with the others (offline ones too) in it."""
    async def create(index: int) -> None:
        members = list(config.members(index))
        offline = [offline_user(index, k) for k in range(config.offline)]
        async with limit:
            status, text = await asyncio.to_thread(
                http, gateway_http[index % len(gateway_http)] + "/v1/rooms",
                token[members[0]], {"id": room_id(run, index),
                                    "members": [f"u{m}" for m in members[1:]] + offline})
        if status != 201:
            raise RuntimeError(f"POST /v1/rooms {room_id(run, index)}: {status} {text}")

    await asyncio.gather(*(create(r) for r in range(config.rooms)))


async def phones_and_emails(config: Config, run: str, gateway_http: Sequence[str],
                            jwt_secret: str, limit: asyncio.Semaphore,
                            mongo_url: str | None) -> None:
    """Give every n-th user (online and offline) a phone (FCM and APNs in turn) and an
    hourly digest, through the HTTP API as a client app would; then, with *mongo_url*,
    their addresses verified (what following each verification mail's link does)."""
    users = [f"u{i}" for i in range(config.connections)] + [
        offline_user(r, k) for r in range(config.rooms) for k in range(config.offline)]
    every = round(1 / config.devices) if config.devices > 0 else 0
    chosen = users[::every] if every else []

    async def setup(n: int, user: str) -> None:
        token = tokens.mint(jwt_secret, user, 3600)
        base = gateway_http[n % len(gateway_http)]
        device: dict[str, str] = ({"platform": "apns", "token": f"{n:064x}"} if n % 2 else
                                  {"platform": "fcm", "token": f"bench-{run}-{user}"})
        async with limit:
            status, text = await asyncio.to_thread(http, base + "/v1/devices", token, device)
            if status not in (200, 201):
                raise RuntimeError(f"POST /v1/devices as {user}: {status} {text}")
            status, text = await asyncio.to_thread(
                http, base + "/v1/me/settings", token,
                {"email": f"{user}@bench.invalid", "digest": "hourly"}, "PUT")
            if status != 200:
                raise RuntimeError(f"PUT /v1/me/settings as {user}: {status} {text}")

    await asyncio.gather(*(setup(n, user) for n, user in enumerate(chosen)))
    if mongo_url is not None:
        await asyncio.to_thread(_verified, mongo_url, chosen)


def _verified(mongo_url: str, users: list[str]) -> None:
    client: MongoClient[dict[str, Any]]
    with MongoClient(mongo_url, serverSelectionTimeoutMS=10_000) as client:
        collection: Collection[dict[str, Any]] = client.get_default_database().users
        for page in database.pages(users):
            collection.update_many({"_id": {"$in": page}}, {"$set": {"email_verified": True}})
