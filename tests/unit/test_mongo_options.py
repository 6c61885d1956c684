"""The MongoDB client options: replica-set defaults unless the URL sets them (the URL
wins), and a client built with them still works against the embedded server."""

from __future__ import annotations

import pytest
from pymongo import AsyncMongoClient
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from burrow.devstack.mongo import EmbeddedMongo
from burrow.storage import database
from burrow.storage.mongo_options import PRODUCTION_DEFAULTS, client_options

REPLICA_SET = "mongodb://burrow:pw@m1:27017,m2:27017,m3:27017/burrow?replicaSet=rs0"


def test_a_production_url_gets_every_replica_set_default() -> None:
    assert client_options(REPLICA_SET) == {"w": "majority", "retryWrites": True,
                                           "retryReads": True,
                                           "readConcernLevel": "majority"}
    assert client_options("mongodb+srv://burrow:pw@db.example.com/burrow") == PRODUCTION_DEFAULTS


@pytest.mark.parametrize(("query", "left_out"), [
    ("w=2", "w"),
    ("W=1", "w"),  # option names are case-insensitive in a MongoDB URL
    ("retryWrites=false", "retryWrites"),
    ("retrywrites=false", "retryWrites"),
    ("retryReads=false", "retryReads"),
    ("readConcernLevel=local", "readConcernLevel"),
])
def test_the_url_wins_over_a_default(query: str, left_out: str) -> None:
    options = client_options(f"{REPLICA_SET}&{query}")
    assert left_out not in options
    assert set(options) == set(PRODUCTION_DEFAULTS) - {left_out}


def test_the_embedded_url_states_its_own_options() -> None:
    """The devstack/test URL keeps single-server behaviour: only retryable reads are
    added, which are PyMongo's default anyway."""
    server = EmbeddedMongo.__new__(EmbeddedMongo)
    server.port, server.tls = 27017, None
    assert client_options(server.database_url("burrow")) == {"retryReads": True}


def test_the_client_is_built_with_the_options() -> None:
    """Connecting is lazy: the client is inspected without any server."""
    client: AsyncMongoClient[dict[str, object]] = database.open_client(REPLICA_SET, 1.0)
    assert client.write_concern == WriteConcern(w="majority")
    assert client.read_concern == ReadConcern("majority")
    assert client.options.retry_writes is True
    assert client.options.retry_reads is True


def test_the_url_wins_in_the_built_client() -> None:
    client = database.open_client(f"{REPLICA_SET}&w=1&retryWrites=false", 1.0)
    assert client.write_concern == WriteConcern(w=1)
    assert client.options.retry_writes is False
    assert client.read_concern == ReadConcern("majority")


async def test_the_embedded_server_takes_majority_writes_and_reads(mongo_url: str) -> None:
    """Against the embedded server (it answers ``hello`` as a one-member replica set),
    a client with the production options writes with w=majority and reads with read
    concern majority: what the URL overrode is put back to the defaults here."""
    base = mongo_url.split("?")[0] + "?directConnection=true&retryWrites=false"
    client = database.open_client(base, 10.0)
    try:
        assert client.write_concern == WriteConcern(w="majority")
        messages = database.database(client)["messages"]
        await messages.insert_many([{"seq": 1}, {"seq": 2}])
        found = await messages.with_options(read_concern=ReadConcern("majority")).find(
            {}, {"_id": 0}).sort("seq").to_list()
        assert found == [{"seq": 1}, {"seq": 2}]
    finally:
        await client.close()
