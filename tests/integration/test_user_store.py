"""The settings store against the real database: what a change answers under a race."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from burrow.storage import database
from burrow.storage.users import UserStore

pytestmark = pytest.mark.integration


async def test_racing_first_updates_each_answer_the_stored_settings(
        mongo_url: str, db: AsyncDatabase[dict[str, Any]]) -> None:
    """Eight first changes of a user with no document, from eight connections (as from
    eight gateways): each caller is answered with its change applied, never the defaults.
    (The embedded server gives the losers of the upsert race no post-image.)"""
    clients = [database.open_client(mongo_url, 10.0) for _ in range(8)]
    try:
        stores = [UserStore(client.get_default_database()) for client in clients]
        for round_ in range(10):
            user = f"u{round_}"
            answers = await asyncio.gather(*(store.update(user, {"digest": "hourly"})
                                             for store in stores))
            assert [a.digest for a in answers] == ["hourly"] * 8, f"round {round_}"
    finally:
        for client in clients:
            await client.close()
