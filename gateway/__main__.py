"""Run the gateway: ``python -m gateway`` (settings from ``BURROW_*`` variables).

Needs ``burrow[server]``: with the client alone (``pip install burrow``) it says so in one
line instead of an import traceback."""

from __future__ import annotations

import errno
import logging
import os
import sys
from functools import partial

from burrow.runtime.extra import server_extra_missing

try:
    import sanic  # noqa: F401  (first: name the server library that is missing)

    from burrow.runtime import logs
    from burrow.runtime.settings import ConfigError, Settings
except ModuleNotFoundError as exc:
    server_extra_missing("gateway", exc)


def main() -> None:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        sys.exit(f"gateway: {exc}")
    logs.setup(settings.log_level, settings.log_format, "gateway")
    # Before prometheus_client is imported anywhere: Sanic's workers are spawned processes
    # that inherit the variable and write their metrics into the same directory.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = settings.fresh_metrics_dir()

    from sanic import Sanic
    from sanic.worker.loader import AppLoader

    from gateway.app import create_app
    from gateway.head_deadline import HeadDeadlineProtocol
    from gateway.main_process import manager_spared, stop_from_the_monitor_loop
    from gateway.tls import server_ssl

    loader = AppLoader(factory=partial(create_app, settings))
    try:
        app = loader.load()
        ssl = server_ssl(settings)  # None: plain HTTP and WS
    except ConfigError as exc:  # e.g. no JWT key configured, a key that does not fit
        sys.exit(f"gateway: {exc}")
    app.prepare(host=settings.host, port=settings.port, workers=settings.gateway_workers,
                access_log=False, motd=False, protocol=HeadDeadlineProtocol, ssl=ssl)
    try:
        # A SIGTERM to the whole process group ends with the workers drained and exit 0
        # (gateway/main_process.py): Sanic's Manager is started deaf to stop signals, and
        # the main process takes them between two of its monitor loop's calls.
        with manager_spared() as release:
            app.main_process_start(lambda _app: release())
            app.main_process_ready(lambda ready: stop_from_the_monitor_loop(ready.manager))
            Sanic.serve(primary=app, app_loader=loader)
    except KeyboardInterrupt:  # a stop signal before any worker started: nothing to drain
        logging.getLogger(__name__).info("stopped while starting")
    except BrokenPipeError:
        # Sanic's main process fails so when its Manager is gone: no longer by a stop
        # signal (above); kept for a Manager killed otherwise (SIGKILL, the OOM killer).
        logging.getLogger(__name__).warning("worker pipe closed during shutdown")
    except OSError as exc:  # Sanic binds in this process, before any worker starts
        if exc.errno not in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
            raise
        sys.exit(f"gateway: cannot listen on {settings.host}:{settings.port} ({exc.strerror}); "
                 "set BURROW_HOST / BURROW_PORT")


if __name__ == "__main__":
    main()
