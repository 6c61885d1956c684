"""``./dev secrets``: write an ``.env`` of fresh random secrets for docker compose.

docker-compose.yml has no fallback for any secret (compose refuses to start without
them): a fallback printed in a README is a password everyone knows. This writes each one
once, from :mod:`secrets`, and never overwrites a file that exists. Standard library
only, so it runs before any install: ``python3 -m burrow.devstack.secrets``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

# What docker-compose.yml asks for with ${NAME:?...}, and the two secrets only
# docker-compose.cluster.yml asks for (the Erlang cookie, MongoDB's key file);
# tests/unit/test_compose.py and test_compose_cluster.py hold the lists equal.
NAMES = (
    "BURROW_RABBITMQ_GATEWAY_PASSWORD", "BURROW_RABBITMQ_SEQUENCER_PASSWORD",
    "BURROW_RABBITMQ_NOTIFIER_PASSWORD", "BURROW_RABBITMQ_DIGESTER_PASSWORD",
    "BURROW_RABBITMQ_BACKEND_PASSWORD", "BURROW_RABBITMQ_ADMIN_PASSWORD",
    "BURROW_RABBITMQ_WEBHOOKS_PASSWORD", "BURROW_WEBHOOK_SECRET",
    "BURROW_JWT_SECRET", "BURROW_UNSUBSCRIBE_SECRET",
    "BURROW_MONGO_ROOT_PASSWORD", "BURROW_MONGO_PASSWORD", "BURROW_GRAFANA_ADMIN_PASSWORD",
    "BURROW_RABBITMQ_COOKIE_SECRET", "BURROW_MONGO_KEYFILE_SECRET",
)


def render() -> str:
    lines = ["# Written by ./dev secrets: random secrets for docker compose. Keep this file",
             "# out of version control; replace BURROW_JWT_SECRET by your identity",
             "# provider's key (BURROW_JWT_PUBLIC_KEY or BURROW_JWKS_URL) in production."]
    lines += [f"{name}={secrets.token_hex(32)}" for name in NAMES]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./dev secrets", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(".env"),
                        help="where to write (default .env, next to docker-compose.yml)")
    args = parser.parse_args(argv)
    try:
        # created, never overwritten, readable by its owner only
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"{args.out} exists: keeping it (delete it to write new secrets)",
              file=sys.stderr)
        return 1
    with os.fdopen(fd, "w") as out:
        out.write(render())
    print(f"wrote {len(NAMES)} secrets to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
