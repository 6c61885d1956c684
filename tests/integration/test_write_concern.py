"""A write the database took but could not acknowledge at the asked write concern
(a majority that did not answer in time, a primary stepping down while it waited) is a
failed store, never a clash to plan around and never an ack. The embedded server
answers an unsatisfiable ``w`` (here 7, against its one member) with a write concern
error beside the applied write, as a replica set does when ``w=majority`` times out."""

from __future__ import annotations

import pytest
from pymongo.errors import BulkWriteError

from burrow.core.envelopes import Stored
from burrow.core.sequencing import Clash
from burrow.storage import database
from burrow.storage.messages import MessageStore


def message(id: str, seq: int, client_id: str) -> Stored:
    return Stored(id, "r", seq, "ann", client_id, "hi", 1000 * seq)


async def test_a_write_concern_error_fails_the_insert(mongo_url: str) -> None:
    plain_client = database.open_client(mongo_url, 10.0)
    # the URL wins: w=7 cannot be satisfied by one member, wtimeout bounds the wait
    unsatisfied_client = database.open_client(
        mongo_url.replace("w=1", "w=7") + "&wTimeoutMS=500", 10.0)
    try:
        plain = MessageStore(database.database(plain_client))
        unsatisfied = MessageStore(database.database(unsatisfied_client))
        await plain.ensure_indexes()
        await plain.insert([message("a", 1, "c1")])
        with pytest.raises(BulkWriteError) as failed:  # not ValueError, not Clash
            await unsatisfied.insert([message("b", 2, "c2")])
        assert failed.value.details["writeConcernErrors"]
        # a clash together with a write concern error is a failure too: planning again
        # on a "clash" could ack what a failover may still take back
        with pytest.raises(BulkWriteError) as failed:
            await unsatisfied.insert([message("b2", 2, "c3"), message("c", 3, "c4")])
        assert failed.value.details["writeConcernErrors"]
        # and a plain clash is still a Clash
        with pytest.raises(Clash):
            await plain.insert([message("b3", 2, "c5")])
    finally:
        await unsatisfied_client.close()
        await plain_client.close()
