"""``burrow block``, ``unblock``, ``blocks``, ``leave``, ``invitations``, ``accept``,
``decline``: a user protecting themself (docs/cli.md; docs/moderation.md, "Users
protect themselves"), over HTTP."""

from __future__ import annotations

import argparse
import base64
import binascii
from typing import Any

import orjson

from burrow.client.account import block_path, invitation_path, member_path
from burrow.client.cli import output
from burrow.client.cli.output import CliError
from burrow.client.cli.target import Target

COMMANDS = frozenset({"block", "unblock", "blocks", "leave", "invitations", "accept",
                      "decline"})


def add_parsers(sub: Any) -> None:
    """The commands of this module (*sub*: the parser's subparsers)."""
    c = sub.add_parser("block", help="block a user: no pushes or digest lines of theirs, "
                                     "they cannot add you to rooms")
    c.add_argument("blocked", metavar="USER")
    c = sub.add_parser("unblock", help="unblock a user")
    c.add_argument("blocked", metavar="USER")
    sub.add_parser("blocks", help="list the users you block")
    c = sub.add_parser("leave", help="leave a room (an owner: only once alone in it)")
    c.add_argument("room")
    sub.add_parser("invitations", help="list your pending invitations to rooms")
    for name, does in (("accept", "join the room of an invitation"),
                       ("decline", "decline an invitation")):
        c = sub.add_parser(name, help=does)
        c.add_argument("invitation", metavar="ID")


def me(args: argparse.Namespace) -> str:
    """Who I am: ``--user``, else the ``sub`` of my token (read, not verified: the
    gateway verifies it, this only names the membership to remove)."""
    if args.user:
        return str(args.user)
    try:
        payload = str(args.token).split(".")[1]
        claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return str(claims["sub"])
    except (IndexError, binascii.Error, orjson.JSONDecodeError, KeyError, TypeError,
            ValueError):
        raise CliError("leave needs --user, or a token that names its user (sub)",
                       output.USAGE) from None


def run(args: argparse.Namespace, target: Target) -> None:
    show = target.print
    match args.command:
        case "block":
            target.http("PUT", block_path(args.blocked))
            show(output.one({"user": args.blocked, "blocked": True}, target.as_json))
        case "unblock":
            target.http("DELETE", block_path(args.blocked))
            show(output.one({"user": args.blocked, "blocked": False}, target.as_json))
        case "blocks":
            for line in output.rows(target.http("GET", "/v1/me/blocks")["blocks"],
                                    ("user", "at"), target.as_json):
                show(line)
        case "leave":
            target.http("DELETE", member_path(args.room, me(args)))
            show(output.one({"room": args.room, "left": True}, target.as_json))
        case "invitations":
            for line in output.rows(target.http("GET", "/v1/me/invitations")["invitations"],
                                    ("id", "room", "name", "by"), target.as_json):
                show(line)
        case "accept":
            show(output.one(target.http("POST", invitation_path(args.invitation, "accept")),
                            target.as_json))
        case "decline":
            target.http("POST", invitation_path(args.invitation, "decline"))
            show(output.one({"id": args.invitation, "declined": True}, target.as_json))
