"""RFC 6455 where Sanic 25.12 falls short: a text frame with invalid UTF-8 fails the
connection with 1007.

Sanic decodes text frames in its frame assembler, inside a task nobody awaits: the
``UnicodeDecodeError`` went to the event loop's "exception never retrieved" log, the
frame was dropped, and the connection went on as if nothing had come (found with a
WebSocket protocol fuzzer, issue 15). RFC 6455 section 8.1 says to fail the connection,
and 1007 is the code for data inconsistent with the message type.

Sanic builds one assembler per connection from the name in its ``impl`` module; this
replaces that name with a subclass once, at import. A Sanic that changes the assembler
fails ``tests/integration/test_ws_conformance.py``, not silently.
"""

from __future__ import annotations

from sanic.server.websockets import impl
from sanic.server.websockets.frame import WebsocketFrameAssembler
from websockets.frames import CloseCode, Frame

INVALID_UTF8 = "invalid UTF-8 in a text frame"


class CheckedAssembler(WebsocketFrameAssembler):
    async def put(self, frame: Frame) -> None:
        try:
            await super().put(frame)
        except UnicodeDecodeError:
            self.protocol.fail_connection(CloseCode.INVALID_DATA, INVALID_UTF8)


def install() -> None:
    setattr(impl, "WebsocketFrameAssembler", CheckedAssembler)  # noqa: B010 (not exported)
