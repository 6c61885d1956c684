"""A webhook receiver for Burrow's backend events, verifying each request's signature.

What docs/events.md ("Verifying a webhook") asks of a receiver, with the standard
library only (it imports nothing from Burrow):

1. read the raw body (verify before parsing: the signature covers the bytes);
2. split ``Burrow-Signature: t=<unix seconds>,v1=<hex>``; refuse a ``t`` more than five
   minutes from now (a replayed request);
3. compute HMAC-SHA256 of ``<t>.<body>`` with the shared secret and compare it, in
   constant time, with each ``v1``;
4. answer 2xx quickly (the worker retries anything else with back-off), and skip an
   event whose ``id`` was handled already (delivery is at least once).

Prints one line per new event. Listens on 127.0.0.1:PORT (default 8787); the secret is
``BURROW_WEBHOOK_SECRET``, the same the worker signs with:

    BURROW_WEBHOOK_SECRET=... python examples/webhook_receiver.py [PORT]
    # and the worker: BURROW_WEBHOOK_URL=http://127.0.0.1:8787/ python -m consumers webhooks
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

TOLERANCE = 300  # seconds
MAX_BODY = 1 << 20


def verified(secret: bytes, header: str, body: bytes, now: float) -> bool:
    """Whether *header* signs *body* with *secret*, recently enough."""
    fields = [part.strip().partition("=") for part in header.split(",")]
    stamps = [value for key, _, value in fields if key == "t"]
    signatures = [value for key, _, value in fields if key == "v1"]
    if len(stamps) != 1 or not stamps[0].isdigit() or not signatures:
        return False
    if abs(now - int(stamps[0])) > TOLERANCE:
        return False
    expected = hmac.new(secret, stamps[0].encode() + b"." + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, s) for s in signatures)


class Receiver(BaseHTTPRequestHandler):
    secret = b""
    seen: ClassVar[set[str]] = set()  # a real service keeps this in its own database

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_BODY:
            self._answer(413 if length else 400)
            return
        body = self.rfile.read(length)
        if not verified(self.secret, self.headers.get("Burrow-Signature", ""), body,
                        time.time()):
            self._answer(401)  # the worker parks it in webhook.dead: check the secret
            return
        event = json.loads(body)
        if event["id"] not in self.seen:
            self.seen.add(event["id"])
            print(f"{event['type']} {event['id']}", flush=True)
        self._answer(204)

    def _answer(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per event above is enough


def main() -> None:
    if len(sys.argv) > 2 or (len(sys.argv) == 2 and not sys.argv[1].isdigit()):
        sys.exit(__doc__)
    secret = os.environ.get("BURROW_WEBHOOK_SECRET", "")
    if not secret:
        sys.exit("webhook_receiver.py: set BURROW_WEBHOOK_SECRET (the worker's secret)")
    Receiver.secret = secret.encode()
    port = int(sys.argv[1]) if len(sys.argv) == 2 else 8787
    server = ThreadingHTTPServer(("127.0.0.1", port), Receiver)
    print(f"listening on http://127.0.0.1:{server.server_port}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
