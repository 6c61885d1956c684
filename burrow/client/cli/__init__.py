"""``burrow``: the command-line client (docs/cli.md).

HTTP commands (rooms, members, history, threads, devices, tokens, and the
changes ``edit``, ``delete``, ``react``, each with an Idempotency-Key it repeats when the
gateway is away) go through httpx (:mod:`~burrow.client.cli.target`); ``send``,
``reply`` and ``tail`` through :class:`burrow.client.ChatClient`, which reconnects,
resumes from the last seq and resends with the same client_id by itself, so ``burrow
tail`` survives a gateway restart and ``burrow send`` stores each line once; and
``download`` and ``upload`` through :meth:`ChatClient.download
<burrow.client.ChatClient.download>` and :meth:`~burrow.client.ChatClient.upload` (which
knows the S3 flow).
Commands of their own module: :mod:`~burrow.client.cli.threads` (reply, thread),
:mod:`~burrow.client.cli.download`. Errors end the command with a
one-line message on stderr and an exit code from :mod:`burrow.client.cli.output`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import sys
from collections.abc import Sequence
from typing import Any, TextIO
from urllib.parse import quote

from websockets.exceptions import InvalidStatus

from burrow.client import ChatClient, ChatError
from burrow.client.chat import Change, Message
from burrow.client.cli import download, output, protect, threads
from burrow.client.cli.output import CliError
from burrow.client.cli.target import Target, dev_token, room_path, unreachable
from burrow.core import tls

DEFAULT_URL = "http://127.0.0.1:8000"
SUBSCRIBE_TIMEOUT = 30.0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="burrow", description="Burrow's command-line client.",
                                epilog="exit codes: " + "; ".join(
                                    f"{k} {v}" for k, v in output.EXIT_CODES.items()))
    p.add_argument("--url", default=os.environ.get("BURROW_URL", DEFAULT_URL),
                   help="the gateway (env BURROW_URL; default %(default)s)")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--token", default=os.environ.get("BURROW_TOKEN"),
                     help="a JWT (env BURROW_TOKEN)")
    who.add_argument("--user", help="act as USER with a dev token (dev mode, or --secret)")
    p.add_argument("--secret", default=os.environ.get("BURROW_JWT_SECRET", ""),
                   help="HS256 secret to mint dev tokens locally (env BURROW_JWT_SECRET)")
    p.add_argument("--ca-file", default=os.environ.get("BURROW_CA_FILE", ""),
                   help="PEM CA bundle that verifies an https gateway, instead of the "
                        "system's (env BURROW_CA_FILE; SSL_CERT_FILE works too)")
    p.add_argument("--json", action="store_true", help="JSON lines instead of text")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser("token", help="mint a dev token and print it")
    c.add_argument("name", metavar="USER")
    c.add_argument("--ttl", type=int, help="seconds it lives")
    c.add_argument("--admin", action="store_true", help="with roles: [admin]")
    c.add_argument("--secret", default=argparse.SUPPRESS,
                   help="mint locally with this HS256 secret (as the global --secret)")
    sub.add_parser("rooms", help="list my rooms")
    c = sub.add_parser("create", help="create a room I own")
    c.add_argument("room")
    c.add_argument("--name", default="")
    c.add_argument("--member", action="append", default=[], help="repeat for more")
    c = sub.add_parser("add", help="add members to a room (owner, admin)")
    c.add_argument("room")
    c.add_argument("users", nargs="+", metavar="USER")
    c = sub.add_parser("remove", help="remove a member (owner, admin, or yourself)")
    c.add_argument("room")
    c.add_argument("member", metavar="USER")
    c = sub.add_parser("members", help="list a room's members")
    c.add_argument("room")
    c = sub.add_parser("send", help="send TEXT, or each line of stdin, as messages")
    c.add_argument("room")
    c.add_argument("text", nargs="*")
    c.add_argument("--attach", action="append", default=[], metavar="ID",
                   help="an upload's id (see upload) the (first) message carries; "
                        "repeat for more")
    c.add_argument("--mention", action="append", default=[], metavar="USER",
                   help="a member the (first) message mentions (pushed at once); repeat "
                        "for more")
    c.add_argument("--mention-room", action="store_true",
                   help="the (first) message mentions @room (every member)")
    threads.add_parsers(sub)  # reply, thread
    protect.add_parsers(sub)  # block, unblock, blocks, leave, invitations, accept, decline
    c = sub.add_parser("edit", help="replace the text of one of my messages")
    c.add_argument("room")
    c.add_argument("id", metavar="ID", help="the message's id")
    c.add_argument("text", nargs="*", help="the new text (else all of stdin)")
    c = sub.add_parser("delete", help="delete a message (mine; any as owner or admin)")
    c.add_argument("room")
    c.add_argument("id", metavar="ID")
    c = sub.add_parser("react", help="react to a message with an emoji")
    c.add_argument("room")
    c.add_argument("id", metavar="ID")
    c.add_argument("emoji", metavar="EMOJI")
    c.add_argument("--remove", action="store_true", help="take my reaction back")
    c = sub.add_parser("moderate", help="moderate a room: promote, demote, remove, mute, "
                       "unmute, ban, unban, slow_mode, lock, unlock, transfer")
    c.add_argument("room")
    c.add_argument("action", metavar="ACTION")
    c.add_argument("user", nargs="?", metavar="USER", help="whom (not for slow_mode, "
                   "lock, unlock)")
    c.add_argument("--seconds", type=int, help="mute: how long; slow_mode: N s between "
                   "sends (0: off)")
    c.add_argument("--reason", help="why (in the audit and the room's event)")
    c = sub.add_parser("upload", help="upload a file to attach to a message (send --attach)")
    c.add_argument("room")
    c.add_argument("file", metavar="FILE")
    c.add_argument("--type", dest="media_type", metavar="TYPE",
                   help="its media type (default: guessed from the name)")
    download.add_parser(sub)
    c = sub.add_parser("tail", help="print a room's messages and changes as they come "
                                    "(Ctrl-C ends)")
    c.add_argument("room")
    c.add_argument("--since", type=int, help="first replay every message after this seq")
    c.add_argument("--count", type=int,
                   help="exit after this many messages and changes (seqs)")
    c = sub.add_parser("history", help="print stored messages")
    c.add_argument("room")
    c.add_argument("--after", type=int)
    c.add_argument("--before", type=int)
    c.add_argument("--limit", type=int)
    c = sub.add_parser("device", help="push devices: register, list, remove")
    dev = c.add_subparsers(dest="action", required=True, metavar="ACTION")
    d = dev.add_parser("register")
    d.add_argument("--platform", choices=("fcm", "apns"), required=True)
    d.add_argument("--token", dest="device_token", required=True, help="the push token")
    d.add_argument("--app", default="", help="APNs topic / FCM app id")
    dev.add_parser("list")
    d = dev.add_parser("remove")
    d.add_argument("id")
    return p



def run_http(args: argparse.Namespace, target: Target) -> None:
    show = target.print
    match args.command:
        case "rooms":
            for line in output.rows(target.http("GET", "/v1/rooms")["rooms"],
                                    ("id", "name", "role", "read_seq"), target.as_json):
                show(line)
        case "create":
            show(output.one(target.http("POST", "/v1/rooms", {
                "id": args.room, "name": args.name, "members": args.member}),
                target.as_json))
        case "add":
            for user in args.users:
                show(output.one(target.http("PUT", room_path(args.room, "/members/")
                                            + quote(user, safe="")), target.as_json))
        case "remove":
            target.http("DELETE", room_path(args.room, "/members/") + quote(args.member,
                                                                            safe=""))
            show(output.one({"room": args.room, "user": args.member, "removed": True},
                            target.as_json))
        case "members":
            for line in output.rows(target.http("GET", room_path(args.room, "/members"))
                                    ["members"], ("user", "role", "read_seq"), target.as_json):
                show(line)
        case "history":
            query = {k: v for k in ("after", "before", "limit")
                     if (v := getattr(args, k)) is not None}
            path = room_path(args.room, "/messages?v=2")  # changes in their own shape
            path += "".join(f"&{k}={v}" for k, v in query.items())
            seqs: dict[str, int] = {}
            for message in target.http("GET", path)["messages"]:
                if message.get("type") == "message":
                    seqs[str(message.get("id"))] = message.get("seq", 0)
                show(output.message_line(message, target.as_json, seqs))
        case "edit":
            show(output.ack_line(target.change(message_path(args, "/edit"), {
                "body": edit_text(args)}), target.as_json, "edited"))
        case "delete":
            show(output.ack_line(target.change(message_path(args, "/delete")),
                                 target.as_json, "deleted"))
        case "react":
            show(output.ack_line(target.change(message_path(args, "/reactions"), {
                "emoji": args.emoji, "remove": args.remove}), target.as_json,
                "unreacted" if args.remove else "reacted"))
        case "moderate":
            body = {"action": args.action, "user": args.user, "seconds": args.seconds,
                    "reason": args.reason}
            show(output.one(target.change(room_path(args.room, "/moderation"), {
                k: v for k, v in body.items() if v is not None}), target.as_json))
        case "upload":
            show(output.one(upload(args, target), target.as_json))
        case "thread":
            threads.show_thread(args, target)
        case command if command in protect.COMMANDS:
            protect.run(args, target)
        case "device":
            run_device(args, target)


def message_path(args: argparse.Namespace, rest: str) -> str:
    return room_path(args.room, "/messages/") + quote(args.id, safe="") + rest


def edit_text(args: argparse.Namespace) -> str:
    if args.text:
        return " ".join(args.text)
    text: str = args.stdin.read()
    return text.removesuffix("\n").removesuffix("\r")  # the last line's end only


def upload(args: argparse.Namespace, target: Target) -> Any:
    """Stream FILE to the room's attachments (:meth:`ChatClient.upload`: to the gateway,
    or straight to its S3 bucket); the server checks size and type."""
    try:
        file = open(args.file, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:  # missing, unreadable, a directory
        raise CliError(f"cannot read {output.printable(args.file)}: "
                       f"{exc.strerror or exc}", output.USAGE) from None
    client = ChatClient([output.ws_url(target.url)], target.token_source,
                        ssl_context=target.ssl_context)
    with file:
        return asyncio.run(client.upload(args.room, file, name=os.path.basename(args.file),
                                         media_type=args.media_type))


def run_device(args: argparse.Namespace, target: Target) -> None:
    if args.action == "register":
        show = target.http("POST", "/v1/devices/", {
            "platform": args.platform, "token": args.device_token, "app": args.app})
        target.print(output.one(show, target.as_json))
    elif args.action == "list":
        for line in output.rows(target.http("GET", "/v1/devices/")["devices"],
                                ("id", "platform", "app", "token_suffix"), target.as_json):
            target.print(line)
    else:
        target.http("DELETE", f"/v1/devices/{quote(args.id, safe='')}")
        target.print(output.one({"id": args.id, "removed": True}, target.as_json))


async def run_chat(args: argparse.Namespace, target: Target, stdin: TextIO) -> None:
    def token() -> str:
        # At a reconnect the gateway (and so its dev login) may be down for a while: an
        # OSError is what ChatClient retries; anything else ends the command.
        try:
            return target.token_source()
        except CliError as exc:
            if exc.code == output.UNAVAILABLE:
                raise OSError(exc.message) from None
            raise

    client = ChatClient([output.ws_url(target.url)], token, ssl_context=target.ssl_context)
    try:
        await client.connect()
    except OSError as exc:
        raise unreachable(target.url, exc) from None
    except InvalidStatus as exc:
        raise CliError(f"the gateway refused the connection: HTTP "
                       f"{exc.response.status_code}",
                       output.exit_code(exc.response.status_code)) from None
    try:
        if args.command in ("send", "reply"):
            attach: list[str] = args.attach  # for the first message only: claimed once
            if args.text:
                await send_line(client, args, " ".join(args.text), target, attach)
                attach = []
            # one message per line, in order: each waits for its ack (read in a thread,
            # so that the connection is served while stdin is quiet)
            while not args.text and (line := await asyncio.to_thread(stdin.readline)):
                if line.strip():
                    await send_line(client, args, line.rstrip("\r\n"), target, attach)
                    attach = []
            if attach:  # files and no text
                await send_line(client, args, "", target, attach)
        else:
            await tail(client, args, target)
    finally:
        await client.close()


async def send_line(client: ChatClient, args: argparse.Namespace, body: str,
                    target: Target, attach: list[str]) -> None:
    """Send one message of ``send`` (or ``reply``: with its ``reply_to``)."""
    first = not getattr(args, "mentioned", False)  # mentions: the first message only
    ack = await client.send(args.room, body, attachments=attach,
                            reply_to=getattr(args, "reply_to", None),
                            mentions=getattr(args, "mention", []) if first else (),
                            mention_room=first and getattr(args, "mention_room", False))
    args.mentioned = True
    target.print(output.ack_line(vars(ack), target.as_json))


async def tail(client: ChatClient, args: argparse.Namespace, target: Target) -> None:
    try:
        async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
            await client.subscribe(args.room, args.since)
    except TimeoutError:
        raise CliError(f"no answer to the subscription within {SUBSCRIBE_TIMEOUT:g}s: the "
                       "gateway's broker or database is down", output.UNAVAILABLE) from None
    shown = 0
    seqs: dict[str, int] = {}  # message id -> seq: a change names its target by seq
    while args.count is None or shown < args.count:
        for event in await received(client):
            if isinstance(event, Message):
                seqs[event.id] = event.seq
            target.print(output.message_line(vars(event), target.as_json, seqs))
            shown += 1
            if shown == args.count:
                break


async def received(client: ChatClient) -> list[Message | Change]:
    """The messages and changes received so far, in seq order (waits for one).

    ChatClient queues the two apart, each as the frames come: what is in both queues
    at one moment is everything received, and what comes later has higher seqs."""
    if client.messages.empty() and client.changes.empty():
        getters: list[asyncio.Task[Any]] = [asyncio.create_task(client.messages.get()),
                                            asyncio.create_task(client.changes.get())]
        try:
            await asyncio.wait(getters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for getter in getters:
                getter.cancel()
            await asyncio.gather(*getters, return_exceptions=True)
        # a get cancelled before it returned leaves its item in the queue
        events: list[Message | Change] = [g.result() for g in getters
                                          if not g.cancelled() and g.exception() is None]
    else:
        events = []
    while not client.messages.empty():
        events.append(client.messages.get_nowait())
    while not client.changes.empty():
        events.append(client.changes.get_nowait())
    return sorted(events, key=lambda event: (event.room, event.seq))


def ca_context(path: str) -> ssl.SSLContext:
    try:
        return tls.client_context(path)
    except OSError as exc:  # ssl.SSLError too: not a PEM CA bundle
        raise CliError(f"--ca-file {path}: {exc}", output.USAGE) from None


def main(argv: Sequence[str] | None = None, stdin: TextIO | None = None,
         out: TextIO | None = None) -> int:
    """Run one command; returns the exit code (the console script exits with it)."""
    args = parser().parse_args(argv)
    url = args.url.rstrip("/")
    try:
        output.ws_url(url)  # checks the scheme
        context = ca_context(args.ca_file)
        if args.command == "token":
            print(dev_token(url, args.name, args.ttl, args.admin, args.secret, context),
                  file=out or sys.stdout)
            return output.OK

        def token_source() -> str:
            if args.user:
                return dev_token(url, args.user, None, False, args.secret, context)
            if not args.token:
                raise CliError("no token: give --token (or BURROW_TOKEN), or --user NAME "
                               "against a gateway in dev mode", output.UNAUTHORIZED)
            return str(args.token)

        target = Target(url, token_source, args.json, out or sys.stdout, context)
        args.stdin = stdin or sys.stdin
        if args.command in ("send", "reply", "tail"):
            asyncio.run(run_chat(args, target, stdin or sys.stdin))
        elif args.command == "download":
            asyncio.run(download.run(args, target))
        else:
            run_http(args, target)
    except CliError as exc:
        print(f"burrow: error: {exc.message}", file=sys.stderr)
        return exc.code
    except ChatError as exc:
        message = str(exc).removeprefix(f"{exc.code}: ")
        print(f"burrow: error: {message} ({exc.code})", file=sys.stderr)
        return output.exit_code(code=exc.code)
    except KeyboardInterrupt:
        return output.INTERRUPTED
    return output.OK
