"""Which MongoDB the contract suite runs against (docs/database.md).

The embedded server (SecantusDB, started by tests/conftest.py) unless
``BURROW_TEST_MONGO_URL`` names another one: mongod 7 or 8, standalone or a replica set.
"""

from __future__ import annotations

import os
from typing import Any

from pymongo import MongoClient
from pymongo.asynchronous.database import AsyncDatabase

URL_VARIABLE = "BURROW_TEST_MONGO_URL"
GIVEN_URL = os.environ.get(URL_VARIABLE) or None
Database = AsyncDatabase[dict[str, Any]]


def _embedded(url: str | None) -> bool:
    """True for the embedded server: by default, or when the given URL reaches one (it
    says so in ``buildInfo``; mongod has no ``secantusVersion``)."""
    if url is None:
        return True
    client: MongoClient[dict[str, object]]
    with MongoClient(url, serverSelectionTimeoutMS=10_000) as client:
        return "secantusVersion" in client.admin.command("buildInfo")


ON_EMBEDDED = _embedded(GIVEN_URL)
"""For the marks of the tests where the embedded server differs from MongoDB."""
