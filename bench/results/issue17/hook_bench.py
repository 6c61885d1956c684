"""``./dev bench`` with pre-publish moderation on (issue 17 item 4), for bench/RESULTS.md.

The bench gives its processes a fixed environment (``bench.stack.BENCH_ENV``) and drops
the caller's ``BURROW_*`` variables, so this adds the moderation settings to that
environment and runs the bench's own ``main`` unchanged:

- ``off``: nothing added (the default configuration);
- ``words``: ``BURROW_FILTER_FILE`` with 1,000 words none of the load's bodies contain
  (every message is checked and allowed: the cost of checking);
- ``hook``: ``BURROW_MODERATION_HOOK=on`` (500 ms, fail-open) and
  ``examples/moderation_hook.py`` answering as ``burrow-backend`` from the moment the
  stack is up (it allows the load's bodies). After the run it prints how many hook
  warnings (timeouts, broker refusals) the sequencer logged;
- ``events``: ``BURROW_EVENTS=#``, every backend event published, ``message.*`` included
  (docs/events.md: the default leaves those out); nobody binds them, so the broker drops
  them after routing: the publishing cost alone.

    .venv/bin/python -m bench.results.issue17.hook_bench MODE OUT.json [bench args...]

The bench writes its report into a temporary directory; it is moved to OUT.json.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import __main__ as bench_main
from bench import stack as bench_stack
from queues import definitions

PROJECT = Path(__file__).resolve().parents[3]


def main() -> None:
    mode, out, *args = sys.argv[1:]
    work = Path(tempfile.mkdtemp(prefix="hook-bench-"))
    if mode == "words":
        words = work / "words.txt"
        words.write_text("".join(f"blocked{i:04d}\n" for i in range(1000)))
        bench_stack.BENCH_ENV["BURROW_FILTER_FILE"] = str(words)
    elif mode == "hook":
        bench_stack.BENCH_ENV["BURROW_MODERATION_HOOK"] = "on"
        started = bench_stack.BenchStack.start
        stopped = bench_stack.BenchStack.stop
        service: list[subprocess.Popen[bytes]] = []
        decisions = work / "decisions.txt"  # the service's output: a line per decision

        def start(self: bench_stack.BenchStack) -> None:
            started(self)
            url = self.rabbit_node().config.amqp_url("burrow-backend", self.passwords["burrow-backend"],
                                            definitions.VHOST)
            service.append(subprocess.Popen(
                [sys.executable, str(PROJECT / "examples" / "moderation_hook.py")],
                env={"BURROW_BACKEND_URL": url, "PATH": "/usr/bin:/bin"},
                stdout=decisions.open("w"), stderr=subprocess.STDOUT))

        def stop(self: bench_stack.BenchStack) -> None:
            log = self.directory / "logs" / "sequencer.log"
            text = log.read_text(errors="replace") if log.exists() else ""
            print(f"hook-bench: sequencer logged {text.count('moderation hook:')} hook "
                  "warnings (timeouts, broker refusals)", file=sys.stderr)
            for process in service:
                process.terminate()
                process.wait(30)
            lines = decisions.read_text(errors="replace").splitlines()
            print(f"hook-bench: the service decided {len(lines) - 1} messages "
                  f"({sum(': allow' in line for line in lines)} allowed)", file=sys.stderr)
            stopped(self)

        bench_stack.BenchStack.start = start  # type: ignore[method-assign]
        bench_stack.BenchStack.stop = stop  # type: ignore[method-assign]
    elif mode == "events":
        bench_stack.BENCH_ENV["BURROW_EVENTS"] = "#"
    elif mode != "off":
        sys.exit(__doc__)
    results = work / "results"
    code: str | int | None = 0
    try:
        bench_main.main([*args, "--results", str(results)])
    except SystemExit as exc:  # a failed run: its report is kept all the same
        code = exc.code
    for report in results.glob("*.json"):
        shutil.move(str(report), out)
        print(f"hook-bench: {mode} -> {out}", file=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
