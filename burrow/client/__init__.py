"""Burrow's Python client and the ``burrow`` command, installable without the server
(``pip install burrow``; the servers need ``burrow[server]``).

:class:`ChatClient` (:mod:`~burrow.client.chat`) keeps a WebSocket session alive across
disconnects; :mod:`burrow.client.cli` is the command line built on it and on the HTTP API.

May import: the standard library, websockets, httpx, and :mod:`burrow.core`'s TLS policy
and token minting (no server library).
"""

from burrow.client.chat import Ack, ChatClient, Message
from burrow.client.errors import ChatError

__all__ = ["Ack", "ChatClient", "ChatError", "Message"]
