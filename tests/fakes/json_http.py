"""A small HTTP server on loopback for the documents a gateway fetches: key sets (JWKS)
for the tests of token checks, and an attacker's key URL that must never be asked."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

Answer = Callable[[str], tuple[int, bytes | None]]
"""The path asked for -> (status, body): a body with 200, an error status without."""


@contextmanager
def serving(answer: Answer) -> Iterator[str]:
    """Serve ``GET`` with *answer* on a free loopback port; yields ``http://127.0.0.1:N``."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = answer(self.path)
            if status != 200 or body is None:
                self.send_error(404 if status == 200 else status)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="json-http",
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
