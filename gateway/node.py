"""The chat side of one gateway worker, behind one object: :class:`Node`.

The transports and HTTP routes talk to the node only; what it does is split by concern,
one module each: the broker link and readiness (:mod:`gateway.link`), the per-room
fan-out bindings (:mod:`gateway.bindings`), subscriptions and their resume seam
(:mod:`gateway.subscriptions`), membership checks and revocation
(:mod:`gateway.members`), sends and acks (:mod:`gateway.sends`), presence and typing
events (:mod:`gateway.ephemeral`) and presence itself (:mod:`gateway.presence`).

What is left here is what crosses them: the order of the setup, routing each delivery
from the worker's queue to the piece it is for, catching up after a broker reconnect,
and forgetting a closed connection in every piece.
"""

from __future__ import annotations

import asyncio
import logging
import os

from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from burrow.core import ids
from burrow.runtime.process import Runtime
from burrow.runtime.settings import Settings
from burrow.storage import database
from burrow.storage.changes import ChangeStore
from burrow.storage.messages import MessageStore
from burrow.storage.presence import PresenceStore
from burrow.storage.rooms import RoomStore
from gateway import protocol
from gateway.bindings import Bindings
from gateway.connection import Connection
from gateway.ephemeral import EphemeralEvents
from gateway.held import Held
from gateway.link import NODE_LOGGER, Link
from gateway.members import Members
from gateway.presence import PresenceTracker
from gateway.sends import Sends
from gateway.subscriptions import Subscriptions
from queues import topology
from queues.events import EventPublisher

log = logging.getLogger(NODE_LOGGER)


class Node:
    """Create in ``before_server_start``, :meth:`start`; :meth:`stop` at shutdown."""

    def __init__(self, settings: Settings, runtime: Runtime) -> None:
        self.settings = settings
        self.runtime = runtime
        db = database.database(runtime.db)
        self.messages = MessageStore(db)
        self.changes = ChangeStore(db)  # reactions and versions, for history
        self.rooms = RoomStore(db)
        self.presence = PresenceStore(db, settings.presence_ttl)
        self.held = Held()
        self.link = Link(settings, runtime, f"gateway.{settings.instance_id}.{os.getpid()}")
        self.local: dict[str, Connection] = {}  # open connections the heartbeat vouches for
        self.bindings = Bindings(settings, self.link, self.held)
        self.members = Members(self.rooms, self.link, self.local, self.unsubscribe)
        self.subscriptions = Subscriptions(self.link, self.bindings, self.members,
                                           self.messages)
        self.sends = Sends(settings, self.link, self.members)
        self.events = EphemeralEvents(settings, self.link, self.bindings, self.members,
                                      self.held)
        # Backend events (docs/events.md): presence, membership and report changes.
        self.backend_events = EventPublisher.configured(settings, runtime.broker)
        self.tracker = PresenceTracker(settings, self.presence, self.rooms,
                                       self.link.queue_name, self.local, self.events,
                                       self.held, self.backend_events)
        self._setup: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._readiness: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self._setup = asyncio.create_task(self._open(), name="gateway-node")
        self._heartbeat = asyncio.create_task(self.tracker.beat(), name="presence-heartbeat")
        self._readiness = asyncio.create_task(self.link.export_ready(), name="gateway-ready")

    async def _open(self) -> None:
        connection = await self.link.open()
        # Every room's member events, whatever is subscribed here: a removed user's
        # connection may hold the room without a subscription (it sent or typed).
        await self.members.bind()
        await self.link.consume(connection, self._on_delivery, self._on_reconnect)

    @property
    def is_ready(self) -> bool:
        """The node can subscribe and send now: set up, and the broker link is up."""
        return self.link.is_ready

    async def ready(self) -> None:
        """Wait until the node can subscribe and send; raises
        :exc:`~gateway.link.Unavailable` if not soon."""
        await self.link.ready()

    async def stop(self) -> None:
        for task in (self._setup, self._heartbeat, self._readiness):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self.tracker.close()
        await self.held.wait()
        self.tracker.leave_graces()
        self.sends.stop()
        await self.backend_events.close()
        await self.link.close()

    def _on_reconnect(self, connection: AbstractRobustConnection) -> None:
        # The exclusive queue died with the old connection, and whatever was fanned out
        # meanwhile with it: bind every room again, then replay them from the database.
        log.info("broker reconnected: catching up %d rooms", len(self.bindings.subscribers))
        self.sends.reconnected()
        self.held.hold(asyncio.create_task(self._catch_up()))

    async def _catch_up(self) -> None:
        """Check memberships, bind every room again, then replay each subscription.

        aio-pika restores the bindings it made, but not reliably
        (:meth:`~gateway.bindings.Bindings.rebind`); a bind that fails here is retried
        on the next reconnect, and the replay still runs.
        """
        # Removals published while this node was cut off went nowhere: check every
        # membership it relies on again (G6 across a broker outage).
        await self.members.revalidate()
        await self.members.rebind()
        await self.bindings.rebind()
        self.subscriptions.replay_all()

    async def _on_delivery(self, message: AbstractIncomingMessage) -> None:
        if message.exchange == topology.REPLY:
            self.sends.on_ack(message)
            return
        room = ids.room_of_key(message.routing_key or "")
        if room is None:
            return
        kind = (message.routing_key or "").rsplit(".", 1)[-1]
        if kind == "msg":
            self.subscriptions.on_message(room, message)
        elif kind == "member":
            await self.members.on_event(room, message.body)
        elif kind in ("presence", "typing"):
            self.events.deliver(room, kind, message.body)

    # -- connections -----------------------------------------------------------------

    async def connected(self, conn: Connection) -> None:
        """Record *conn* as present and settle its user's status."""
        await self.tracker.connected(conn)

    def touch(self, conn: Connection) -> None:
        """The client did something: it is active (noted at most every idle/4 s)."""
        self.tracker.touch(conn)

    async def drop(self, conn: Connection) -> None:
        """Forget a closed connection."""
        for room in list(conn.subscriptions):
            await self.unsubscribe(conn, room)
        self.sends.forget(conn)
        self.events.forget(conn)
        await self.tracker.closed(conn)

    def drop_soon(self, conn: Connection) -> asyncio.Task[None]:
        """:meth:`drop` as a task we hold, so it ends even when its caller is cancelled."""
        return self.held.hold(asyncio.create_task(self.drop(conn)))

    # -- what clients ask for --------------------------------------------------------

    async def check_member(self, conn: Connection, room: str,
                           client_id: str | None = None) -> None:
        """Raise a ``forbidden`` :exc:`~gateway.protocol.ProtocolError` unless the user is
        in *room* (G6); cached on the connection until revoked."""
        await self.members.check(conn, room, client_id)

    async def subscribe(self, conn: Connection, room: str, since: int | None,
                        v: int = 1) -> None:
        """Bind, then replay what follows *since* from the database, then go live.

        *v* 2: change events come as their own frames; 1: as ``message`` frames."""
        await self.subscriptions.subscribe(conn, room, since, v)

    async def unsubscribe(self, conn: Connection, room: str) -> None:
        await self.subscriptions.unsubscribe(conn, room)

    async def send(self, conn: Connection, frame: protocol.SendFrame,
                   arrived: float | None = None) -> None:
        """Publish a send with a confirm; its ack arrives later through ``chat.reply``."""
        await self.sends.send(conn, frame, arrived)

    async def pending_acks(self) -> None:
        """Wait until every send that this gateway published has its ack (or timed out)."""
        await self.sends.acked()

    async def typing(self, conn: Connection, room: str) -> None:
        """Tell the room's other members that *conn*'s user is typing (throttled)."""
        await self.events.typing(conn, room)

    async def request_verification(self, body: dict[str, object], job_id: str) -> None:
        """Queue a verification mail (``email.verify`` -> ``email.due``), confirmed and
        routed, or raise one of :data:`~gateway.link.PUBLISH_FAILED`."""
        await self.link.request_verification(body, job_id)

    async def publish_member_event(self, room: str, user: str, action: str,
                                   extra: dict[str, object] | None = None) -> None:
        """Tell every gateway that *user* joined or left *room* (they drop its streams),
        or what else changed of their hold on it (*extra*: the action's details)."""
        await self.members.publish(room, user, action, extra)
