"""The Socket.IO peer: ``python -m bench.peers.socketio_server --port P --amqp URL``.

A python-socketio ``AsyncServer`` on aiohttp whose rooms span processes through
RabbitMQ (``AsyncAioPikaManager``: every emit goes to a fanout exchange that each server
consumes from a queue of its own). This is the usual way to scale Socket.IO in Python,
so it is what Burrow is compared with: same fan-out over a broker, but no auth, no
storage, no sequence numbers and no acks. Events:

* ``join`` ``{"room"}``: enter the room, answer ``joined`` ``{"room"}`` to that client;
* ``send`` ``{"room", "client_id", "body"}``: emit ``message`` with the same fields to
  the room, on every server.

The library's defaults are kept (stdlib ``json``, ``async_handlers=True``: each event
runs in a task of its own) except pings, pushed to an hour so they stay out of the
measurement, as the Burrow stack does for Sanic. Nothing is printed per message.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

import socketio
from aiohttp import web

from bench.measure import run_async

PING_SECONDS = 3600
BOUND_TIMEOUT = 60.0


class _Manager(socketio.AsyncAioPikaManager):  # type: ignore[misc]  # untyped library
    """The stock manager, plus an event set once its queue is bound to the exchange.

    The server listens only after that: an emit published by another server before our
    queue exists would be lost, and the stack takes "accepts connections" as "ready".
    """

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.bound = asyncio.Event()

    async def _queue(self, channel: Any, exchange: Any) -> Any:
        queue = await super()._queue(channel, exchange)
        self.bound.set()
        return queue

    async def warm_up(self) -> None:
        """Open the publisher connection before any client can emit.

        The stock manager opens it lazily on the first emit and, while it does, sets
        ``publisher_connection`` before ``publisher_exchange``: concurrent first emits
        see a connection, publish to ``None``, fail twice and are dropped ("Cannot
        publish to rabbitmq... giving up"; python-socketio 5.18.1). That loses the
        first burst after every start, a startup race rather than the steady state this
        benchmark measures. A message no server handles (unknown ``method``) does it.
        """
        await self._publish({"method": "warm-up", "host_id": self.host_id})


def build(amqp_url: str) -> tuple[Any, _Manager, web.Application]:
    """The Socket.IO server, its manager and the aiohttp app it is attached to."""
    manager = _Manager(amqp_url)
    sio: Any = socketio.AsyncServer(async_mode="aiohttp", client_manager=manager,
                                    ping_interval=PING_SECONDS, ping_timeout=PING_SECONDS,
                                    http_compression=False)

    async def join(sid: str, data: dict[str, Any]) -> None:
        room = data["room"]
        await sio.enter_room(sid, room)
        # the reply goes to a local client: no need to publish it to the other servers
        await sio.emit("joined", {"room": room}, to=sid, ignore_queue=True)

    async def send(sid: str, data: dict[str, Any]) -> None:
        room = data["room"]
        await sio.emit("message", {"room": room, "client_id": data["client_id"],
                                   "body": data["body"]}, to=room)

    sio.on("join", join)
    sio.on("send", send)
    app = web.Application()
    sio.attach(app)
    return sio, manager, app


async def serve(port: int, amqp_url: str) -> None:
    """Bind the broker queue and open the publisher, then listen on 127.0.0.1:*port* until SIGTERM / SIGINT."""
    sio, manager, app = build(amqp_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Start the broker listener now rather than on the first connection (the library's
    # default), so that the port opens only once this server receives every room's emits.
    sio.manager_initialized = True
    manager.initialize()
    try:
        await asyncio.wait_for(manager.bound.wait(), BOUND_TIMEOUT)
        await asyncio.wait_for(manager.warm_up(), BOUND_TIMEOUT)
    except TimeoutError:
        sys.exit(f"socketio_server: no queue bound or publisher opened on {amqp_url.split('@')[-1]} "
                 f"within {BOUND_TIMEOUT:.0f}s")
    app_runner = web.AppRunner(app, access_log=None)
    await app_runner.setup()
    site = web.TCPSite(app_runner, "127.0.0.1", port, backlog=1024)
    await site.start()
    try:
        await stop.wait()
    finally:
        try:
            await asyncio.wait_for(app_runner.cleanup(), 5)
        except TimeoutError:
            pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.socketio_server",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1")
    parser.add_argument("--amqp", required=True, help="RabbitMQ URL shared by all servers")
    args = parser.parse_args(argv)
    run_async(serve(args.port, args.amqp))


if __name__ == "__main__":
    main()
