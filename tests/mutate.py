"""``./dev mutate [module...]``: mutation testing of Burrow's pure core (docs/mutation.md).

Runs mutmut (configured in pyproject.toml's ``[tool.mutmut]``: which files, which unit
tests, one pytest process) on the modules below, or on those named (``seam``,
``burrow.core.seam`` or ``burrow/core/seam.py``), then prints each module's score and its surviving
mutants. A survivor that docs/mutation.md explains as equivalent is marked so; any other
survivor makes the command fail. mutmut's copy of the code is in ``mutants/`` (not in git;
``mutmut show NAME`` prints a mutant's diff). Not a pytest file: pytest never collects it.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "mutation.md"

# Module -> the mutant names (mutmut's ``module.x_function__mutmut_N`` and
# ``module.xǁClassǁmethod__mutmut_N``) that count. burrow.runtime.ratelimit's RateLimiter and
# _LocalStorage are adapters over the ``limits`` storages and are left out: their
# behaviour is the storage's (tests/integration covers Redis).
MODULES: dict[str, tuple[str, ...]] = {
    "gateway.protocol": ("gateway.protocol.*",),
    "burrow.core.ids": ("burrow.core.ids.*",),
    "burrow.core.envelopes": ("burrow.core.envelopes.*",),
    "burrow.core.sequencing": ("burrow.core.sequencing.*",),
    "burrow.core.last_seq": ("burrow.core.last_seq.*",),
    "burrow.core.seam": ("burrow.core.seam.*",),
    "burrow.runtime.ratelimit": ("burrow.runtime.ratelimit.x_*", "burrow.runtime.ratelimit.xǁRuleǁ*",
                         "burrow.runtime.ratelimit.xǁFloodRuleǁ*", "burrow.runtime.ratelimit.xǁFloodǁ*"),
    "burrow.core.notify_plan": ("burrow.core.notify_plan.*",),
    "burrow.core.batches": ("burrow.core.batches.*",),
}
CAUGHT = {"killed", "timeout", "caught by type check"}


def chosen(args: list[str]) -> list[str]:
    if not args:
        return list(MODULES)
    names = []
    for arg in args:
        name = arg.removesuffix(".py").replace("/", ".")
        found = [m for m in MODULES if name in (m, m.rpartition(".")[2])]
        if not found:
            sys.exit(f"mutate: no core module {arg!r}; known: {', '.join(MODULES)}")
        names += found
    return names


def results(mutmut: Path) -> dict[str, str]:
    """Every mutant's status (``mutmut results --all true``: ``    name: status`` lines)."""
    out = subprocess.run([str(mutmut), "results", "--all", "true"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    found = {}
    for line in out.splitlines():
        name, sep, status = line.strip().partition(": ")
        if sep:
            found[name] = status
    return found


def main(args: list[str]) -> int:
    modules = chosen(args)
    patterns = [p for m in modules for p in MODULES[m]]
    mutmut = Path(sys.executable).parent / "mutmut"
    started = time.monotonic()
    # one worker: the tests share the machine (and mutmut defaults to one per core)
    run = subprocess.run([str(mutmut), "run", "--max-children", "1", *patterns], cwd=ROOT,
                         check=False)
    if run.returncode:
        return run.returncode
    minutes = (time.monotonic() - started) / 60
    statuses = results(mutmut)
    equivalent = set(re.findall(r"`([\w.ǁ]+__mutmut_\d+)`", DOC.read_text()))
    unexplained = 0
    print(f"\nmutation score per module ({minutes:.1f} min; caught = killed or timed out)")
    for module in modules:
        mine = {n: s for n, s in statuses.items()
                if any(fnmatch(n, p) for p in MODULES[module])}
        caught = sum(s in CAUGHT for s in mine.values())
        left = sorted(n for n, s in mine.items() if s not in CAUGHT)
        explained = [n for n in left if n in equivalent]
        print(f"  {module:20} {caught:4}/{len(mine):<4} caught  {len(left):3} left "
              f"({len(explained)} explained as equivalent)")
        for name in left:
            note = "equivalent, docs/mutation.md" if name in equivalent else mine[name]
            print(f"      {name}  [{note}]")
        unexplained += len(left) - len(explained)
    if unexplained:
        print(f"\n{unexplained} surviving mutant(s) are neither killed nor explained in "
              f"{DOC.relative_to(ROOT)}; `.venv/bin/mutmut show NAME` shows one")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
