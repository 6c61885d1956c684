"""One client connection: a bounded outbox drained by its own writer, and its rooms.

Nothing that serves many clients ever awaits one of them: fan-out puts frames into the
outbox without waiting (:meth:`Connection.push`), and only the connection's writer task
awaits the socket, whose ``send`` blocks while the client does not read. A client that
stays too slow fills its outbox and is closed with 4008; it reconnects and resumes from
its last seq, losing nothing (G4). The transport is behind a two-method protocol so
SSE and long-polling (issue 5) can reuse the rest.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Protocol

from burrow.seam import Cursor
from gateway import protocol

log = logging.getLogger(__name__)


class Transport(Protocol):
    async def send(self, frame: str) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


@dataclass(eq=False)  # identity: subscriptions live in sets
class Subscription:
    """A connection's place in one room; one replay runs at a time."""

    connection: Connection
    room: str
    cursor: Cursor
    replay: asyncio.Task[None] | None = None


@dataclass(eq=False)  # identity: connections live in sets
class Connection:
    id: str
    user: str
    is_admin: bool
    transport: Transport
    buffer: int
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    member_of: set[str] = field(default_factory=set)  # rooms whose membership was checked
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int | None = None
    active_written: float = 0.0  # monotonic time presence last recorded activity

    def __post_init__(self) -> None:
        self.outbox: asyncio.Queue[str] = asyncio.Queue(self.buffer)
        self.writer = asyncio.create_task(self._write(), name=f"writer-{self.id}")

    def push(self, frames: list[str]) -> None:
        """Queue *frames* for the client without waiting; close it (4008) if it lags."""
        if self.close_code is not None:
            return
        for frame in frames:
            try:
                self.outbox.put_nowait(frame)
            except asyncio.QueueFull:
                log.warning("connection %s (%s) is too slow: %d frames queued", self.id,
                            self.user, self.outbox.qsize())
                self.close(protocol.SLOW_CLIENT, "too slow: reconnect and resume")
                return

    def close(self, code: int, reason: str) -> None:
        """Close once: queued frames are dropped, the client resumes from its last seq."""
        if self.close_code is not None:
            return
        self.close_code = code
        self.writer.cancel()
        asyncio.create_task(self._close(code, reason), name=f"close-{self.id}")

    async def _close(self, code: int, reason: str) -> None:
        try:
            await self.transport.close(code, reason)
        except Exception as exc:  # noqa: BLE001 - any transport: the peer may be gone already
            log.debug("closing %s: %s", self.id, exc)
        finally:
            self.closed.set()

    async def flush(self) -> None:
        """Wait until every queued frame is with the transport; bound it with a timeout."""
        if not self.writer.done():
            await self.outbox.join()

    async def _write(self) -> None:
        try:
            while True:
                frame = await self.outbox.get()
                await self.transport.send(frame)
                self.outbox.task_done()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any transport: it closed, the reader sees it
            log.debug("writer of %s stops: %s", self.id, exc)
