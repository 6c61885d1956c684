"""Logging for every Burrow process: one handler on the root logger, Sanic's included.

Sanic installs its own handlers unless an app is built with ``configure_logging=False``;
Burrow's apps are, so Sanic's records reach this one handler exactly once.
"""

from __future__ import annotations

import logging


def setup(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # aio-pika logs every failed reconnect attempt at WARNING with a traceback-sized line;
    # Burrow's own monitor already says "broker is down/up" once per change.
    logging.getLogger("aio_pika.robust_connection").setLevel(max(logging.getLevelName(level),
                                                                  logging.ERROR))
