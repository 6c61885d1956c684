"""The broker-less ceiling: ``python -m bench.peers.broadcast_server --port P``.

One process, one event loop, a dict of rooms in memory and ``websockets``' own
``broadcast`` (the frame is encoded once and written to every member without awaiting).
Nothing between the sender and the receivers but this process, so its numbers bound
what any fan-out design can reach on this machine with Python. JSON text frames:

* ``{"type": "join", "room"}``: add the connection to the room, answer
  ``{"type": "joined", "room"}``;
* ``{"type": "send", "room", "client_id", "body"}``: broadcast
  ``{"type": "message", "room", "client_id", "body"}`` to the room's members.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import orjson
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

from bench.measure import run_async


class Rooms:
    """Room name -> its open connections; a connection leaves its rooms when it closes."""

    def __init__(self) -> None:
        self.members: dict[str, set[ServerConnection]] = {}

    async def handler(self, ws: ServerConnection) -> None:
        loads, dumps, members = orjson.loads, orjson.dumps, self.members
        joined: list[str] = []
        try:
            async for raw in ws:
                frame = loads(raw)
                kind = frame.get("type")
                if kind == "send":
                    room = frame["room"]
                    message = dumps({"type": "message", "room": room,
                                     "client_id": frame["client_id"],
                                     "body": frame["body"]}).decode()
                    broadcast(members.get(room, ()), message)
                elif kind == "join":
                    room = frame["room"]
                    members.setdefault(room, set()).add(ws)
                    joined.append(room)
                    await ws.send(dumps({"type": "joined", "room": room}).decode())
        except ConnectionClosed:
            pass
        finally:
            for room in joined:
                room_members = members.get(room)
                if room_members is not None:
                    room_members.discard(ws)
                    if not room_members:
                        del members[room]


async def run(port: int) -> None:
    """Serve on 127.0.0.1:*port* until SIGTERM / SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    rooms = Rooms()
    async with serve(rooms.handler, "127.0.0.1", port, compression=None,
                     ping_interval=None, max_size=2**20, backlog=1024):
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.broadcast_server",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True, help="port on 127.0.0.1")
    args = parser.parse_args(argv)
    run_async(run(args.port))


if __name__ == "__main__":
    main()
