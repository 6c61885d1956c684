"""Run one peer under the benchmark's load: ``python -m bench.peers --kind socketio``.

Starts the peer's private stack (``socketio``: RabbitMQ + N Socket.IO servers;
``websockets``: one broadcast server), drives it with the same clients, rooms and send
schedule as ``python -m bench``, stops it and prints the same Markdown table. The peers
have no acks: "sent / acked" reads ``N / 0`` and the ack latency is empty. The exit
status is 1 when loss or duplicates are not 0 (the peers promise no order, so order
disagreements are reported, not failed).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from bench import report
from bench.load import LoadConfig
from bench.measure import add_load_arguments, measure, prepare_process
from bench.peers.load import run_peer_load
from bench.peers.stack import KINDS, PeerFailed, PeerStack
from burrow.devstack.rabbitmq import NodeFailed


def run_peer(config: LoadConfig, kind: str, servers: int, keep: bool = False) -> dict[str, Any]:
    """One run against a fresh peer stack; returns the report."""
    with PeerStack(kind, servers=servers, keep=keep) as stack:
        print(f"bench.peers: {kind} up in {stack.directory} ({len(stack.servers)} "
              f"server(s){', RabbitMQ' if stack.node else ''})", file=sys.stderr, flush=True)
        summary = measure(config, stack.pids, lambda on_connected: run_peer_load(
            config, kind, stack.ws_urls, on_connected=on_connected), kind)
    summary["peer"] = kind
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", required=True, choices=KINDS,
                        help="socketio (RabbitMQ-backed) or websockets (broker-less ceiling)")
    add_load_arguments(parser, connections=200)
    parser.add_argument("--servers", "-N", type=int, default=2,
                        help="Socket.IO server processes (default 2; websockets runs 1)")
    parser.add_argument("--drain", type=float, default=15.0,
                        help="at most this many seconds to wait for the last deliveries")
    args = parser.parse_args(argv)
    if args.connections < 1 or args.room_size < 1 or args.servers < 1 or args.rate <= 0:
        parser.error("connections, room-size, servers and rate must be positive")
    config = LoadConfig(connections=args.connections, room_size=args.room_size,
                        rate=args.rate, duration=args.duration, drain=args.drain)
    prepare_process()
    try:
        summary = run_peer(config, args.kind, args.servers, keep=args.keep)
        print(report.markdown(summary))
    except (PeerFailed, NodeFailed) as exc:
        sys.exit(f"bench.peers: {exc}")
    except KeyboardInterrupt:
        sys.exit("bench.peers: interrupted; the stack is stopped")
    if args.json:
        print(json.dumps(summary, indent=2))
    sys.exit(0 if summary["loss"] == summary["duplicates"] == 0 else 1)


if __name__ == "__main__":
    main()
