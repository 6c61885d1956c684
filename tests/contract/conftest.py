"""The contract suite's database: the embedded server by default, or the MongoDB named by
``BURROW_TEST_MONGO_URL`` (docs/database.md). Each test gets a fresh database, dropped
after it; racing tests get several clients (their own connections) on it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from burrow.storage import database
from tests.contract.server import GIVEN_URL, Database

RACERS = 8  # concurrent clients in the racing tests


@pytest.fixture(scope="session")
def contract_url(request: pytest.FixtureRequest) -> str:
    """The server's URL: the one given, else the session's embedded server (started only
    when no URL is given)."""
    if GIVEN_URL is not None:
        return GIVEN_URL
    return str(request.getfixturevalue("mongo_server").url)


@pytest.fixture
async def db(contract_url: str) -> AsyncIterator[Database]:
    """A database of its own for the test, through Burrow's client settings
    (:func:`burrow.storage.database.open_client`: tz-aware, bounded timeouts)."""
    client = database.open_client(contract_url, 10.0)
    name = f"contract_{uuid.uuid4().hex[:12]}"
    try:
        yield client[name]
    finally:
        await client.drop_database(name)
        await client.close()


@pytest.fixture
async def racers(contract_url: str, db: Database) -> AsyncIterator[list[Database]]:
    """:data:`RACERS` handles on the test's database, each through its own client, so
    that racing operations run on separate connections as they do from separate
    gateways and workers."""
    clients = [database.open_client(contract_url, 10.0) for _ in range(RACERS)]
    try:
        yield [client[db.name] for client in clients]
    finally:
        for client in clients:
            await client.close()
