"""CPU cost of the sequencer's pre-publish check per message, without broker or database.

``consumers.prepublish.Prepublish.check`` on batches of 256 bench-like sends (a 100-byte
body: a short header, then ``x`` characters), with everything off, with the 1,000-word
blocklist of ``hook_bench.py words``, and with 1,000 words plus 50 bounded patterns; the
stored-send lookup (one database read per batch when a check applies) is stubbed out, so
this is the CPU of the decisions alone. CPU time of this process (``time.process_time``).

    .venv/bin/python -m bench.results.issue17.check_cost
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from burrow.core.envelopes import Send
from burrow.runtime.settings import Settings
from consumers.prepublish import Prepublish

ENV = {"BURROW_AMQP_URL": "amqp://u:p@127.0.0.1/b", "BURROW_JWT_SECRET": "s" * 32}
BATCH, BATCHES = 256, 200


class NoneStored:
    async def existing(self, keys: list[Any]) -> dict[Any, Any]:
        return {}


def sends() -> list[tuple[Send, int]]:
    return [(Send("room-7", f"user{i}", f"c{i}", f"user{i} 1765092000.123 ".ljust(100, "x")),
             i) for i in range(BATCH)]


async def measure(name: str, env: dict[str, str]) -> None:
    checker = Prepublish(Settings.from_env({**ENV, **env}), NoneStored(),  # type: ignore[arg-type]
                         None)  # type: ignore[arg-type]
    batch = sends()
    started = time.process_time()
    for _ in range(BATCHES):
        allowed, refused = await checker.check(batch)
        assert len(allowed) == BATCH and not refused
    spent = time.process_time() - started
    print(f"{name}: {spent / (BATCH * BATCHES) * 1e6:.2f} us per message "
          f"({spent / BATCHES * 1e3:.3f} ms per batch of {BATCH})")


async def main() -> None:
    with tempfile.TemporaryDirectory() as work:
        words = Path(work) / "words.txt"
        words.write_text("".join(f"blocked{i:04d}\n" for i in range(1000)))
        both = Path(work) / "both.txt"
        both.write_text(words.read_text()
                        + "".join(f"re:blocked{i:02d}.{{0,90}}pattern\n" for i in range(50)))
        await measure("off", {})
        await measure("1,000 words", {"BURROW_FILTER_FILE": str(words)})
        await measure("1,000 words + 50 patterns", {"BURROW_FILTER_FILE": str(both)})


if __name__ == "__main__":
    asyncio.run(main())
