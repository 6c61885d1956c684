"""Loopback ports: find a free one, or say clearly which one is taken and how to move."""

from __future__ import annotations

import socket


class PortTaken(RuntimeError):
    """A port the stack needs is in use; the message names the service and the variable."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


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
