"""Two users chatting through Burrow, start to finish: the README's first example.

Against a gateway in development mode (what ``./dev up`` runs) it

1. gets a token for each user from the dev login (``POST /v1/dev/token``);
2. creates the room as the first user, with the second as a member (``POST /v1/rooms``;
   if the room exists from an earlier run, it adds the second user to it instead);
3. connects both users with :class:`burrow.client.ChatClient` over the WebSocket, the
   second one subscribed to the room;
4. sends a message as the first user and prints it as the second one receives it.

It exits 0 once the message has arrived, 1 with a one-line reason otherwise.

    ./dev up                                  # in another terminal
    .venv/bin/python examples/chat.py         # alice writes to bob in room "quickstart"
    .venv/bin/python examples/chat.py --room book-club --sender bob --receiver carol \\
        --text "Chapter 3 by Friday?"

The gateway is ``--url``, else ``BURROW_URL``, else ``http://127.0.0.1:8000`` (the same
variable as the ``burrow`` command line). Open the web demo the launcher prints
(``/demo/?user=bob``) to see the room and its messages in a browser. Against a
production gateway there is no dev login: get tokens from your identity provider and
give them to ``ChatClient`` the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from urllib.parse import quote

import httpx

from burrow.client import ChatClient, ChatError

DEFAULT_URL = "http://127.0.0.1:8000"
TIMEOUT = 30.0  # seconds for the whole exchange


class Failed(Exception):
    """Ends the example with this message on stderr and exit code 1."""


async def dev_token(http: httpx.AsyncClient, user: str) -> str:
    """A short-lived token for *user* from the gateway's dev login."""
    response = await http.post("/v1/dev/token", json={"user": user})
    if response.status_code == 404:
        raise Failed("the gateway is not in development mode (BURROW_DEV_MODE=true): "
                     "start it with ./dev up")
    if response.status_code != 200:
        raise Failed(f"dev login for {user}: HTTP {response.status_code} {response.text}")
    return str(response.json()["token"])


async def room_with(http: httpx.AsyncClient, token: str, room: str, owner: str,
                    member: str) -> None:
    """Create *room* as *owner* with *member* in it; if it exists, add *member* to it."""
    auth = {"Authorization": f"Bearer {token}"}
    response = await http.post("/v1/rooms", headers=auth, json={
        "id": room, "name": room, "members": [member]})
    if response.status_code == 201:
        print(f"{owner} created room {room} with {member} in it")
        return
    if response.status_code != 409:  # 409: it exists, from an earlier run say
        raise Failed(f"create room {room}: HTTP {response.status_code} {response.text}")
    response = await http.put(f"/v1/rooms/{quote(room, safe='')}/members/"
                              f"{quote(member, safe='')}", headers=auth)
    if response.status_code != 200:
        raise Failed(f"room {room} exists and {owner} cannot add {member} to it (HTTP "
                     f"{response.status_code}): choose another --room")
    print(f"room {room} exists; {member} is a member")


def websocket_url(url: str) -> str:
    """``http(s)://host:port`` -> ``ws(s)://host:port/v1/ws``."""
    for http, ws in (("https://", "wss://"), ("http://", "ws://")):
        if url.startswith(http):
            return ws + url.removeprefix(http).rstrip("/") + "/v1/ws"
    raise Failed(f"the gateway URL must start with http:// or https://, not {url!r}")


async def chat(url: str, room: str, sender: str, receiver: str, text: str) -> None:
    ws_url = websocket_url(url)
    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as http:
        tokens = {user: await dev_token(http, user) for user in (sender, receiver)}
        await room_with(http, tokens[sender], room, sender, receiver)

    # ChatClient asks for a token at every (re)connect: refresh it there in a real app.
    writer = ChatClient([ws_url], lambda: tokens[sender])
    reader = ChatClient([ws_url], lambda: tokens[receiver])
    try:
        await writer.connect()
        await reader.connect()
        # Without since: the stream starts after what is stored now (give since=0 to
        # replay the room's history first, or the last seq you have, to resume).
        await reader.subscribe(room)
        ack = await writer.send(room, text)  # returns once the message is stored
        print(f"{sender} sent #{ack.seq} to {room}: {text}")
        while True:
            message = await reader.messages.get()
            if message.id == ack.id:
                break
        print(f"{receiver} received #{message.seq} from {message.sender}: {message.body}")
    finally:
        await writer.close()
        await reader.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Two users chat through a Burrow gateway "
                                "in development mode.")
    p.add_argument("--url", default=os.environ.get("BURROW_URL", DEFAULT_URL),
                   help="the gateway (env BURROW_URL; default %(default)s)")
    p.add_argument("--room", default="quickstart", help="default %(default)s")
    p.add_argument("--sender", default="alice", help="default %(default)s")
    p.add_argument("--receiver", default="bob", help="default %(default)s")
    p.add_argument("--text", default="Hello Bob! This message went through Burrow.")
    args = p.parse_args(argv)

    async def bounded() -> None:
        async with asyncio.timeout(TIMEOUT):
            await chat(args.url.rstrip("/"), args.room, args.sender, args.receiver,
                       args.text)

    try:
        asyncio.run(bounded())
    except Failed as exc:
        print(f"chat.py: {exc}", file=sys.stderr)
        return 1
    except ChatError as exc:
        print(f"chat.py: the gateway refused: {exc}", file=sys.stderr)
        return 1
    except TimeoutError:  # before OSError, of which it is a subclass
        print(f"chat.py: no answer within {TIMEOUT:g}s: is the whole stack up?",
              file=sys.stderr)
        return 1
    except (httpx.TransportError, OSError) as exc:
        print(f"chat.py: cannot reach the gateway at {args.url} ({exc}): is ./dev up "
              f"running?", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
