"""``burrow reply`` and ``burrow thread``: answering a message, and reading a thread
(docs/protocol.md, replies and threads).

A reply is a ``send`` with ``reply_to`` (the sending itself is ``send``'s: through
:class:`burrow.client.ChatClient`, each line once); a thread is read over HTTP,
``GET /v1/rooms/{room}/messages?thread=ROOT`` (v2 entries), replies only, oldest first.
"""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import quote

from burrow.client.cli import output
from burrow.client.cli.target import Target, room_path


def add_parsers(sub: Any) -> None:
    """The ``reply`` and ``thread`` commands (*sub*: the parser's subparsers)."""
    c = sub.add_parser("reply", help="send TEXT, or each line of stdin, as replies to a "
                                     "message")
    c.add_argument("room")
    c.add_argument("reply_to", metavar="MESSAGE_ID", help="the id of the message answered")
    c.add_argument("text", nargs="*")
    c.add_argument("--attach", action="append", default=[], metavar="ID",
                   help="an upload's id the (first) reply carries; repeat for more")
    c.add_argument("--mention", action="append", default=[], metavar="USER",
                   help="a member the (first) reply mentions; repeat for more")
    c.add_argument("--mention-room", action="store_true",
                   help="the (first) reply mentions @room (every member)")
    c = sub.add_parser("thread", help="print the replies of a thread, oldest first")
    c.add_argument("room")
    c.add_argument("root", metavar="ROOT_ID", help="the id of the thread's first message")
    c.add_argument("--after", type=int, help="only replies after this seq")
    c.add_argument("--limit", type=int, help="at most this many (the server's default 50)")


def show_thread(args: argparse.Namespace, target: Target) -> None:
    path = room_path(args.room, "/messages?v=2&thread=") + quote(args.root, safe="")
    path += "".join(f"&{k}={v}" for k in ("after", "limit")
                    if (v := getattr(args, k)) is not None)
    seqs: dict[str, int] = {}  # a reply to a reply names it by its seq
    for message in target.http("GET", path)["messages"]:
        if message.get("type") == "message":
            seqs[str(message.get("id"))] = message.get("seq", 0)
        target.print(output.message_line(message, target.as_json, seqs))
