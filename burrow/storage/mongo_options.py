"""The MongoDB client options Burrow adds to a URL: pure, so the decision is testable.

Production MongoDB is a replica set, and Burrow's guarantees assume what a replica set
needs to keep them across a primary step-down:

- ``w="majority"``: a write is acknowledged (and so a send is acked to its client) only
  once a majority of members has it, so whichever member is elected next has it too.
- ``retryWrites=True``: a write cut by a step-down is retried once by the driver on the
  new primary. A retried ``insert_many`` of the sequencer is safe: the dedup index
  (room, sender, client id) and the unique (room, seq) index refuse a second copy, and
  ``store_batch`` reads the stored one back (docs/database.md, "Replica sets").
- ``retryReads=True``: a read cut the same way is retried once.
- ``readConcernLevel="majority"``: a read sees only majority-committed writes, so a
  dedup lookup never answers "already stored" for a write that a failover rolls back.

The URL wins: an option the URL sets itself is left as the URL says (option names in a
MongoDB URL are case-insensitive). The embedded development server's URL
(burrow/devstack/mongo.py) states ``retryWrites=false``, ``w=1`` and
``readConcernLevel=local`` itself, so it keeps its single-server behaviour.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

# option name as PyMongo takes it as a keyword -> Burrow's default
PRODUCTION_DEFAULTS: dict[str, Any] = {
    "w": "majority",
    "retryWrites": True,
    "retryReads": True,
    "readConcernLevel": "majority",
}


def url_options(url: str) -> set[str]:
    """The lower-cased names of the options *url* sets in its query string."""
    query = urllib.parse.urlsplit(url).query
    return {name.lower() for name, _ in urllib.parse.parse_qsl(query, keep_blank_values=True)}


def client_options(url: str) -> dict[str, Any]:
    """The keyword options for ``AsyncMongoClient(url, ...)``: Burrow's production
    defaults, less those *url* sets itself (a keyword would override the URL)."""
    given = url_options(url)
    return {name: value for name, value in PRODUCTION_DEFAULTS.items()
            if name.lower() not in given}
