"""Run workers: ``python -m consumers [name ...]`` (no name: every known consumer but the
optional ``webhooks``).

Each worker kind has a broker user of its own (docs/topology.md); a process running
several needs a user with the rights of each, so run one process per kind.

Needs ``burrow[server]``: with the client alone (``pip install burrow``) it says so in one
line instead of an import traceback."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from burrow.runtime.extra import server_extra_missing

try:
    import aio_pika  # noqa: F401  (first: name the server library that is missing)

    from burrow.runtime import logs
    from burrow.runtime.settings import ConfigError, Settings
except ModuleNotFoundError as exc:
    server_extra_missing("consumers", exc)

from consumers import CONSUMERS, OPTIONAL


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m consumers", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="name",
                        help=f"consumers to run (known: {', '.join(CONSUMERS) or 'none yet'})")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in CONSUMERS]
    if unknown:
        parser.error(f"unknown consumer {unknown[0]!r}; known: {', '.join(CONSUMERS) or 'none'}")
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        sys.exit(f"consumers: {exc}")
    names = args.names or [n for n in CONSUMERS if n not in OPTIONAL]
    logs.setup(settings.log_level, settings.log_format, "+".join(names))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = settings.fresh_metrics_dir()

    from queues.worker import WorkerProcess

    async def serve() -> None:
        await WorkerProcess(settings, {name: CONSUMERS[name]() for name in names}).run()

    try:
        try:
            import uvloop
        except ImportError:
            asyncio.run(serve())
        else:
            uvloop.run(serve())
    except ConfigError as exc:  # a consumer's own settings (push keys, SMTP, secrets)
        sys.exit(f"consumers: {exc}")


if __name__ == "__main__":
    main()
