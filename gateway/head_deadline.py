"""A deadline for the head of a request, however slowly it comes (slowloris).

Sanic's ``REQUEST_TIMEOUT`` counts from the last byte received: a client that sends its
request line and headers one byte every few seconds holds a connection (and, at the
8 KiB header limit, for hours) without ever tripping it. Here the clock of a request's
head starts with its first byte and does not restart with the next ones, so
``REQUEST_TIMEOUT`` (10 s, gateway/app.py) bounds the whole head; Sanic then answers
408 and closes, as for a silent client. Bodies and WebSockets are untouched: bodies are
read by handlers through their own limits, and Sanic exempts upgraded connections.
"""

from __future__ import annotations

from sanic.http.constants import Stage
from sanic.server.protocols.websocket_protocol import WebSocketProtocol


class HeadDeadlineProtocol(WebSocketProtocol):
    def data_received(self, data: bytes) -> None:
        http = getattr(self, "_http", None)
        receiving_head = http is not None and http.stage is Stage.REQUEST
        started = self._time
        super().data_received(data)  # type: ignore[no-untyped-call]
        if receiving_head:
            self._time = started  # the head's clock does not restart with each byte
