"""A Python chat client that survives disconnects: the tests', the benchmark's, the CLI's.

It keeps, per room, the last seq it delivered, and on every (re)connect subscribes each
room with ``since`` = that seq, so it misses nothing and sees nothing twice (G4); sends
that have no ack yet are sent again with the same ``client_id`` (G3), to whichever gateway
it reaches next. It also checks the server: a message that skips a seq or repeats one is
recorded in :attr:`ChatClient.violations` (the tests assert there are none).

It subscribes with protocol v2: edits, deletes and reactions (:meth:`ChatClient.edit`,
:meth:`~ChatClient.delete`, :meth:`~ChatClient.react`) arrive as change events in
:attr:`ChatClient.changes`, in the room's seq order with the messages.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import ssl
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from burrow.client import account, files, moderation, uploads
from burrow.client.errors import ChatError  # raised here; importable from here too

log = logging.getLogger(__name__)

RETRYABLE = frozenset({"timeout", "unavailable", "rate_limited", "moderation_unavailable"})


@dataclass(frozen=True)
class Message:
    """A message as received. Fields the server adds over time come after ``body`` with
    a default (a frame without them still makes a Message): add one here and in
    :meth:`from_frame`."""

    room: str
    seq: int
    id: str
    sender: str
    client_id: str
    ts: int
    body: str
    # what the message carries (docs/attachments.md): [{id, name, type, size, width,
    # height}]; ask GET /v1/rooms/{room}/attachments/{id} for a download URL
    attachments: list[dict[str, Any]] = field(default_factory=list, hash=False)
    # a message replayed after changes (resume, since) comes in its current state
    edit_count: int = 0
    edited_at: int | None = None   # ms
    deleted_at: int | None = None  # ms: a tombstone (body "", no attachments)
    deleted_by: str | None = None
    # a reply (docs/protocol.md, replies and threads): the message it answers, and the
    # root of its thread; a root replayed from history counts its replies
    reply_to: str | None = None
    thread: str | None = None
    reply_count: int = 0
    # who the message mentions (docs/protocol.md, mentions): users by id, and @room
    mentions: tuple[str, ...] = ()
    mention_room: bool = False

    def mentions_user(self, user: str) -> bool:
        """Whether this message mentions *user*, by name or with @room."""
        return self.mention_room or user in self.mentions

    @classmethod
    def from_frame(cls, frame: dict[str, Any]) -> Message:
        attachments = frame.get("attachments")
        return cls(frame["room"], frame["seq"], frame["id"], frame["sender"],
                   frame["client_id"], frame["ts"], frame["body"],
                   attachments=list(attachments) if isinstance(attachments, list) else [],
                   edit_count=frame.get("edit_count") or 0,
                   edited_at=frame.get("edited_at"), deleted_at=frame.get("deleted_at"),
                   deleted_by=frame.get("deleted_by"), reply_to=frame.get("reply_to"),
                   thread=frame.get("thread"), reply_count=frame.get("reply_count") or 0,
                   **_mentions(frame.get("mentions")))


def _mentions(value: Any) -> dict[str, Any]:
    """A frame's ``mentions`` as :class:`Message` fields (none when absent)."""
    if not isinstance(value, dict):
        return {}
    users = value.get("users")
    return {"mentions": tuple(u for u in users if isinstance(u, str))
            if isinstance(users, list) else (), "mention_room": value.get("room") is True}


@dataclass(frozen=True)
class Ack:
    room: str
    seq: int
    id: str
    client_id: str


@dataclass(frozen=True)
class Change:
    """A change event (v2): ``kind`` edit, delete or reaction of message ``target``."""

    room: str
    seq: int
    id: str
    kind: str
    target: str
    sender: str
    ts: int
    body: str | None = None       # edit
    edit_count: int | None = None  # edit
    emoji: str | None = None      # reaction
    op: str | None = None         # reaction: add or remove


CHANGE_KINDS = frozenset({"edit", "delete", "reaction"})


@dataclass
class _Pending:
    frame: dict[str, Any]  # the send or change frame, sent again as it is
    done: asyncio.Future[Ack]

    @property
    def room(self) -> str:
        return str(self.frame["room"])


@dataclass
class ChatClient(account.Protection):
    """Call :meth:`connect`, :meth:`subscribe`, :meth:`send`; read :attr:`messages`."""

    urls: Sequence[str]                      # ws://host:port/v1/ws of one or more gateways
    token: Callable[[], str]                 # called at every connect: refresh there
    reconnect: bool = True
    retry_delay: float = 0.2
    messages: asyncio.Queue[Message] = field(default_factory=asyncio.Queue)
    changes: asyncio.Queue[Change] = field(default_factory=asyncio.Queue)  # edits, ...
    # moderation events (v2 frames: action, user, seconds, until, reason), in seq order
    moderation: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    last: dict[str, int] = field(default_factory=dict)     # room -> last delivered seq
    violations: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)  # other frames, for tests
    connects: int = 0
    # wss:// only: the CAs that verify the gateway (None: the system's, or SSL_CERT_FILE)
    ssl_context: ssl.SSLContext | None = None

    def __post_init__(self) -> None:
        self._pending: dict[str, _Pending] = {}
        self._subscribed: dict[str, asyncio.Future[int]] = {}
        self._ws: ClientConnection | None = None
        self._urls = itertools.cycle(self.urls)
        self._runner: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._closing = False
        self.close_codes: list[int | None] = []
        # which upload flow the gateways want, learnt at the first upload
        self.uploader = uploads.Uploader()
        self.blocked: set[str] = set()  # whom I block, as of the last blocks() call

    async def connect(self) -> None:
        """Connect to the first gateway that answers; raises :exc:`ChatError` on a 401."""
        await self._open()
        self._runner = asyncio.create_task(self._run(), name="chat-client")

    async def _open(self) -> None:
        url = next(self._urls)
        try:
            self._ws = await connect(url, additional_headers={
                "Authorization": f"Bearer {self.token()}"}, open_timeout=10,
                ping_interval=None, max_size=2**22, **self._tls(url))
        except InvalidStatus as exc:
            raise ChatError("unauthorized", f"{url}: HTTP {exc.response.status_code}") from None
        self.connects += 1
        self._connected.set()
        for room, since in self.last.items():  # resume every room from where we are
            await self._send_frame({"type": "subscribe", "room": room, "since": since,
                                    "v": 2})
        for pending in self._pending.values():
            await self._send_frame(pending.frame)

    def _tls(self, url: str) -> dict[str, Any]:
        # websockets refuses an ssl argument for ws://, and makes its own default
        # context (system CAs, or SSL_CERT_FILE) for wss:// when given none.
        if url.startswith("wss:") and self.ssl_context is not None:
            return {"ssl": self.ssl_context}
        return {}

    async def _run(self) -> None:
        while True:
            assert self._ws is not None
            try:
                async for raw in self._ws:
                    self._on_frame(orjson.loads(raw))
            except ConnectionClosed:
                pass
            self._connected.clear()
            self.close_codes.append(self._ws.close_code)
            if self._closing or not self.reconnect or self._ws.close_code in (4401, 4403):
                self._fail_all(ChatError("closed", f"closed with {self._ws.close_code}"))
                return
            while not self._closing:
                await asyncio.sleep(self.retry_delay)
                try:
                    await self._open()
                    break
                except (TimeoutError, OSError, ChatError, ConnectionClosed) as exc:
                    log.debug("reconnect failed: %s", exc)

    def _on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "message" or kind in CHANGE_KINDS or kind == "moderation":
            room, seq = frame["room"], frame["seq"]
            last = self.last.get(room, 0)
            if seq <= last:
                # G4 promises no duplicate, at the seam of a resume or anywhere else:
                # drop it for the application, but record it for the tests.
                self.violations.append(f"{room}: seq {seq} again after {last}")
                return
            if seq != last + 1:
                self.violations.append(f"{room}: seq {seq} after {last}")
            self.last[room] = seq
            if kind == "moderation":
                self.moderation.put_nowait(frame)
                return
            if kind != "message":
                self.changes.put_nowait(Change(
                    room, seq, frame["id"], kind, frame["target"], frame["sender"],
                    frame["ts"], frame.get("body"), frame.get("edit_count"),
                    frame.get("emoji"), frame.get("op")))
                return
            self.messages.put_nowait(Message.from_frame(frame))
        elif kind == "ack":
            pending = self._pending.pop(frame["client_id"], None)
            if pending is not None and not pending.done.done():
                pending.done.set_result(Ack(frame["room"], frame["seq"], frame["id"],
                                            frame["client_id"]))
        elif kind == "subscribed":
            self.last.setdefault(frame["room"], frame["since"])
            waiter = self._subscribed.pop(frame["room"], None)
            if waiter is not None and not waiter.done():
                waiter.set_result(frame["since"])
        elif kind == "error":
            self._on_error(frame)
        else:
            self.events.append(frame)

    def _on_error(self, frame: dict[str, Any]) -> None:
        self.events.append(frame)
        client_id, code = frame.get("client_id"), frame.get("code", "")
        if client_id in self._pending:
            if code in RETRYABLE:
                asyncio.get_running_loop().call_later(self.retry_delay, self._resend, client_id)
            else:
                pending = self._pending.pop(client_id)
                pending.done.set_exception(ChatError(code, frame.get("message", "")))
        elif frame.get("room") in self._subscribed:
            if code in RETRYABLE:  # the gateway cannot serve it now (broker away): again
                asyncio.get_running_loop().call_later(self.retry_delay, self._resubscribe,
                                                      frame["room"])
            else:
                waiter = self._subscribed.pop(frame["room"])
                waiter.set_exception(ChatError(code, frame.get("message", "")))

    def _resubscribe(self, room: str) -> None:
        if room in self._subscribed and self._connected.is_set():
            frame: dict[str, Any] = {"type": "subscribe", "room": room, "v": 2}
            if room in self.last:
                frame["since"] = self.last[room]
            asyncio.ensure_future(self._send_frame(frame))

    def _resend(self, client_id: str) -> None:
        pending = self._pending.get(client_id)
        if pending is not None and self._connected.is_set():
            asyncio.ensure_future(self._send_frame(pending.frame))

    async def _send_frame(self, frame: dict[str, Any]) -> None:
        assert self._ws is not None
        try:
            await self._ws.send(orjson.dumps(frame).decode())
        except ConnectionClosed:
            pass  # the runner reconnects and sends again what still matters

    async def subscribe(self, room: str, since: int | None = None) -> int:
        """Subscribe; returns where the stream starts (messages follow with seq > it)."""
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._subscribed[room] = waiter
        if since is not None:
            self.last[room] = since
        frame: dict[str, Any] = {"type": "subscribe", "room": room, "v": 2}
        if since is not None:
            frame["since"] = since
        await self._connected.wait()
        await self._send_frame(frame)
        return await waiter

    async def send(self, room: str, body: str, client_id: str | None = None, *,
                   attachments: Sequence[str] | None = None,
                   reply_to: str | None = None, mentions: Sequence[str] = (),
                   mention_room: bool = False) -> Ack:
        """Send and wait for the ack; retried (same client_id) until stored or refused.

        *attachments*: ids of our uploads to this room (docs/attachments.md) that the
        message carries; a refusal is ``not_claimable`` or ``bad_attachments``.
        *reply_to*: the id of a message of the room this one answers (its thread's root
        is the server's to find); ``not_found`` when there is no such message.
        *mentions*: ids of members of the room to mention (pushed at once), and
        *mention_room* for @room; ``bad_mention`` names a non-member, ``room_too_large``
        a room too big for @room (docs/protocol.md, mentions)."""
        frame: dict[str, Any] = {"type": "send", "room": room, "body": body}
        if mentions or mention_room:
            frame["mentions"] = {"users": list(mentions), "room": mention_room}
        if attachments:
            frame["attachments"] = list(attachments)
        if reply_to is not None:
            frame["reply_to"] = reply_to
        return await self._request(frame, client_id)

    async def edit(self, room: str, message: str, body: str,
                   client_id: str | None = None) -> Ack:
        """Replace the body of *message* (one of ours); the ack is the edit's seq."""
        return await self._request({"type": "edit", "room": room, "id": message,
                                    "body": body}, client_id)

    async def delete(self, room: str, message: str, client_id: str | None = None) -> Ack:
        """Delete *message* (ours, or any as the room's owner or an admin)."""
        return await self._request({"type": "delete", "room": room, "id": message},
                                   client_id)

    async def react(self, room: str, message: str, emoji: str, remove: bool = False,
                    client_id: str | None = None) -> Ack:
        """Add (or with *remove*, take back) our reaction *emoji* to *message*."""
        return await self._request({"type": "react", "room": room, "id": message,
                                    "emoji": emoji, "remove": remove}, client_id)

    async def _request(self, frame: dict[str, Any], client_id: str | None) -> Ack:
        """Send *frame* with a client_id and wait for the ack; retried until stored or
        refused (:exc:`ChatError` with the refusal's code)."""
        frame["client_id"] = client_id or uuid.uuid4().hex
        done: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        self._pending[frame["client_id"]] = _Pending(frame, done)
        if self._connected.is_set():
            await self._send_frame(frame)
        return await done

    async def download(self, room: str, attachment_id: str,
                       dest: str | os.PathLike[str] | None = None, *,
                       overwrite: bool = False) -> files.Downloaded:
        """Save attachment *attachment_id* of *room* (a member's: over HTTP, with no
        connection needed) as its cleaned name in the current directory, in *dest* when
        that is a directory, else as *dest*; never over an existing file unless
        *overwrite*, never outside that directory whatever name the server gives
        (:mod:`burrow.client.files`). Refusals are :exc:`ChatError`."""
        return await files.download(self.urls, self.token, room, attachment_id, dest,
                                    overwrite=overwrite, ssl_context=self.ssl_context)

    async def upload(self, room: str, file: uploads.Source, *, name: str | None = None,
                     media_type: str | None = None) -> dict[str, Any]:
        """Upload *file* (bytes, a path, or a seekable binary file, sent whole) to
        *room* over HTTP (no connection needed); returns the gateway's ``{id, name,
        type, size, width, height}``: name the id in :meth:`send`'s *attachments*.
        To the gateway or straight to an S3 bucket, whichever the gateway stores in,
        learnt at the first upload and remembered in :attr:`uploader`
        (:mod:`burrow.client.uploads`). Refusals are :exc:`ChatError`."""
        return await self.uploader.upload_file(self.urls, self.token, room, file, name=name,
                                               media_type=media_type,
                                               ssl_context=self.ssl_context)

    async def moderate(self, room: str, action: str, user: str | None = None, *,
                       seconds: int | None = None, reason: str | None = None,
                       key: str | None = None) -> dict[str, Any]:
        """Take moderation *action* in *room* (docs/moderation.md) over HTTP, repeated
        with the same Idempotency-Key (*key*, default a new one) while the gateway cannot
        complete it; returns the answer ``{action, user, seq, audit, ...}``. Refusals
        are :exc:`ChatError` with the gateway's code (``forbidden``, ``owner_stays``...)."""
        return await moderation.moderate(self.urls, self.token, room, action, user,
                                         seconds=seconds, reason=reason, key=key,
                                         ssl_context=self.ssl_context,
                                         retry_delay=self.retry_delay)

    def drop(self) -> None:
        """Cut the connection as a network failure would; the client reconnects."""
        if self._ws is not None:
            self._ws.transport.abort()

    async def close(self) -> None:
        """Close for good: no reconnect; unacked sends fail with ``closed``."""
        self._closing = True
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        if self._ws is not None:
            await self._ws.close()
        self._fail_all(ChatError("closed", "client closed"))

    def _fail_all(self, error: ChatError) -> None:
        for pending in self._pending.values():
            if not pending.done.done():
                pending.done.set_exception(error)
        self._pending.clear()
