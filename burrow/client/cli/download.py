"""``burrow download ROOM ATTACHMENT_ID [-o PATH] [--force]``: save a message's file.

The work is :meth:`burrow.client.ChatClient.download`'s (:mod:`burrow.client.files`):
the file's fields and signed URL from the gateway, the bytes from that URL, under the
name the gateway gives cleaned again, never outside the chosen directory, never over an
existing file without ``--force``. Its refusals (:exc:`burrow.client.ChatError`) end the
command like any other: one line, the code's exit status.
"""

from __future__ import annotations

import argparse
from typing import Any

from burrow.client import ChatClient
from burrow.client.cli import output
from burrow.client.cli.target import Target


def add_parser(sub: Any) -> None:
    """The ``download`` command (*sub*: the parser's subparsers)."""
    c = sub.add_parser("download", help="save a message's file (see the id in tail, "
                                        "history)")
    c.add_argument("room")
    c.add_argument("id", metavar="ATTACHMENT_ID")
    c.add_argument("-o", "--output", metavar="PATH",
                   help="a directory to save it in under its own name, or the file's "
                        "path (default: its name in the current directory)")
    c.add_argument("--force", action="store_true", help="replace a file of that name")


async def run(args: argparse.Namespace, target: Target) -> None:
    client = ChatClient([output.ws_url(target.url)], target.token_source,
                        ssl_context=target.ssl_context)
    saved = await client.download(args.room, args.id, args.output, overwrite=args.force)
    fields = {k: saved.attachment.get(k) for k in ("id", "name", "type", "size")}
    target.print(output.one({**fields, "path": str(saved.path)}, target.as_json))
