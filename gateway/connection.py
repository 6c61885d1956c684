"""One client connection: a bounded outbox drained by its own writer, and its rooms.

Nothing that serves many clients ever awaits one of them: fan-out puts frames into the
outbox without waiting (:meth:`Connection.push`), and only the connection's writer task
awaits the socket, whose ``send`` blocks while the client does not read. A client that
stays too slow fills its outbox and is closed with 4008; it reconnects and resumes from
its last seq, losing nothing (G4). The transport is behind a two-method protocol so
SSE and long-polling (issue 5) can reuse the rest.

Memory: a gateway holds tens of thousands of mostly idle connections, so an idle one
holds no outbox, no writer task and no event. The outbox (a deque) and the writer exist
while frames are on their way and are dropped once the last one is with the transport;
an ``asyncio.Queue`` + ``Event`` + parked task cost ~5 KiB per connection for nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Protocol

from burrow.core.seam import Cursor
from burrow.core.send_rules import Member
from burrow.runtime import metrics
from gateway import protocol

log = logging.getLogger(__name__)


class Transport(Protocol):
    async def send(self, frame: str) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


class Subscription:
    """A connection's place in one room; one replay runs at a time, and a replay asked
    for while one runs (:attr:`replay_again`) runs after it.

    Compared by identity: subscriptions live in sets.
    """

    __slots__ = ("connection", "cursor", "replay", "replay_again", "room", "v")

    def __init__(self, connection: Connection, room: str, cursor: Cursor,
                 v: int = 1) -> None:
        self.connection = connection
        self.room = room
        self.cursor = cursor
        self.v = v  # protocol version: 2 takes change events as their own frames
        self.replay: asyncio.Task[None] | None = None
        self.replay_again = False


class Connection:
    """One client of this gateway, whatever the transport.

    Compared by identity (connections live in sets); weakly referable for the flood
    counters of :class:`~gateway.limiting.Limits`. ``__slots__``: one per client.
    """

    __slots__ = ("__weakref__", "_closed", "_closing", "_outbox", "_stopped", "_writer",
                 "active_written", "buffer", "close_code", "id", "is_admin", "member_of",
                 "subscriptions", "transport", "user")

    def __init__(self, id: str, user: str, is_admin: bool, transport: Transport,
                 buffer: int) -> None:
        self.id = id
        self.user = user
        self.is_admin = is_admin
        self.transport = transport
        self.buffer = buffer  # frames queued at most; one more may be in the transport
        self.subscriptions: dict[str, Subscription] = {}
        # Rooms whose membership was checked, with what a send is enforced with (the
        # role, a mute: gateway/members.py); forgotten when a member event revokes it.
        self.member_of: dict[str, Member] = {}
        self.close_code: int | None = None
        self.active_written = 0.0  # monotonic time presence last recorded activity
        # Frames not yet handed to the transport, and the task handing them over: both
        # None while there is nothing to write. A writer that failed stays (done), so
        # no other starts and the outbox fills up to the 4008 close, as with a slow client.
        self._outbox: deque[str] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._stopped = False  # the transport is gone: start no writer any more
        self._closing: asyncio.Task[None] | None = None
        self._closed: asyncio.Event | None = None  # made by the first who waits

    def push(self, frames: list[str]) -> None:
        """Queue *frames* for the client without waiting; close it (4008) if it lags."""
        if self.close_code is not None or not frames:
            return
        outbox = self._outbox
        if outbox is None:
            outbox = self._outbox = deque()
        for frame in frames:
            if len(outbox) >= self.buffer:
                log.warning("connection %s (%s) is too slow: %d frames queued", self.id,
                            self.user, len(outbox))
                metrics.GATEWAY_SLOW_CLIENT_CLOSES.inc()
                self.close(protocol.SLOW_CLIENT, "too slow: reconnect and resume")
                return
            outbox.append(frame)
        if self._writer is None and not self._stopped:
            self._writer = asyncio.create_task(self._write(outbox), name=f"writer-{self.id}")

    def stop_writing(self) -> None:
        """The transport is going away: cancel the writer and start no other."""
        self._stopped = True
        if self._writer is not None:
            self._writer.cancel()

    def close(self, code: int, reason: str) -> None:
        """Close once: queued frames are dropped, the client resumes from its last seq."""
        if self.close_code is not None:
            return
        self.close_code = code
        if self._writer is not None:
            self._writer.cancel()
        self._outbox = None
        self._closing = asyncio.create_task(self._close(code, reason), name=f"close-{self.id}")

    @property
    def closed(self) -> asyncio.Event:
        """Set once :meth:`close` has handed the close to the transport (or failed to).

        Made on first use: most connections are never waited for.
        """
        if self._closed is None:
            self._closed = asyncio.Event()
            if self._closing is not None and self._closing.done():
                self._closed.set()
        return self._closed

    async def _close(self, code: int, reason: str) -> None:
        try:
            await self.transport.close(code, reason)
        except Exception as exc:  # noqa: BLE001 - any transport: the peer may be gone already
            log.debug("closing %s: %s", self.id, exc)
        finally:
            if self._closed is not None:
                self._closed.set()

    async def flush(self) -> None:
        """Wait until every queued frame is with the transport; bound it with a timeout.

        Returns early if the writer stops (closed, or the transport failed).
        """
        while (writer := self._writer) is not None and not writer.done():
            await asyncio.wait((writer,))  # not cancelled with us: the frames still go

    async def _write(self, outbox: deque[str]) -> None:
        try:
            while outbox:
                await self.transport.send(outbox.popleft())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any transport: it closed, the reader sees it
            log.debug("writer of %s stops: %s", self.id, exc)
            return
        # Everything is with the transport: drop the outbox and this task until the next
        # push. (No await since the loop's last check, so no frame is left behind.)
        self._writer = None
        self._outbox = None
