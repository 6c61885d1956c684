"""Loopback ports: find a free one, or say clearly which one is taken and how to move."""

from __future__ import annotations

import random
import socket
from pathlib import Path

EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST = 10_000  # below: well-known and registered services' usual ports


class PortTaken(RuntimeError):
    """A port the stack needs is in use; the message names the service and the variable."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now, below the range the OS gives outgoing
    connections.

    A port the OS picked (bind to 0) lies in that range, so while a server restarts on
    it (a broker restart in a test) any client's outgoing connection may take it: seen
    as RabbitMQ failing to restart with ``dist_port_already_used ... not_erlang``. Below
    the range only another listener can, and this checks there is none now.
    """
    low = _ephemeral_low()
    if low > LOWEST + 1000:
        for _ in range(200):
            port = random.randrange(LOWEST, low)
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind((host, port))
                except OSError:
                    continue
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _ephemeral_low() -> int:
    """The lowest port of the OS's outgoing-connection range (Linux; else 0)."""
    try:
        return int(EPHEMERAL.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def ensure_free(port: int, service: str, variable: str, host: str = "127.0.0.1") -> None:
    """Raise :exc:`PortTaken` when *port* on *host* cannot be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise PortTaken(
                f"port {port} for {service} on {host} is taken ({exc.strerror}); "
                f"stop what listens there or set {variable} to another port") from None
