"""What ``pip install burrow`` and ``pip install 'burrow[server]'`` must bring, read from the
code (issue 19): every third-party module the shipped code imports comes from a
requirement declared in pyproject.toml, in the right list.

* the client (:mod:`burrow.client` and every Burrow module it imports, package
  ``__init__`` files included) gets only the base ``dependencies``;
* the rest of the wheel (the servers' code) gets those and the ``server`` extra;
* the benchmark, the tests and the dev launcher, which are not shipped and run from a
  checkout, get the ``test`` extra too.

Which distribution provides a module is asked of this virtualenv
(:func:`importlib.metadata.packages_distributions`, then the distributions' file lists
for namespace packages such as ``google``); the requirements are read from
pyproject.toml itself, so an edit counts before any reinstall. Imports are read with
:mod:`ast` (tests/unit/test_layout.py), lazy ones included; nothing is imported or run.
"""

from __future__ import annotations

import fnmatch
import re
import sys
import tomllib
from collections.abc import Iterable, Mapping
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest

from tests.unit.test_layout import LOCAL, imports, module_name

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# Declared for what they do, not for an import: limits loads coredis for async+redis://.
NOT_IMPORTED = {"coredis": "limits' async+redis:// storage (BURROW_RATE_STORAGE)"}
# Shipped modules that serve an optional feature, and the extra that brings what they
# import (lazily: the servers start without it). Only these may use that extra.
OPTIONAL = {"burrow.storage.s3blobs": "s3"}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> tuple[str, tuple[str, ...]]:
    """``"pyjwt[crypto]>=2; marker"`` -> ``("pyjwt", ("crypto",))``."""
    found = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?", requirement)
    assert found, f"cannot read the requirement {requirement!r}"
    extras = tuple(e.strip() for e in (found[2] or "").split(",") if e.strip())
    return normalize(found[1]), extras


def declared(*extras: str) -> set[str]:
    """Distribution names the base install plus *extras* asks for (``burrow[...]``
    self-references expanded), normalized."""
    project = PYPROJECT["project"]
    optional: Mapping[str, list[str]] = project.get("optional-dependencies", {})
    names: set[str] = set()
    todo, seen = ["", *extras], set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        assert extra == "" or extra in optional, f"no extra {extra!r} in pyproject.toml"
        for requirement in project["dependencies"] if extra == "" else optional[extra]:
            name, wanted = requirement_name(requirement)
            if name == normalize(project["name"]):
                todo.extend(wanted)
            else:
                names.add(name)
    return names


def shipped_packages() -> list[str]:
    """The packages the wheel holds, by pyproject's find rules (setuptools' fnmatch)."""
    find = PYPROJECT["tool"]["setuptools"]["packages"]["find"]
    found = []
    tops = sorted(p for p in ROOT.iterdir() if (p / "__init__.py").is_file())
    for init in (i for top in tops for i in sorted(top.rglob("__init__.py"))):
        name = module_name(init)
        if (any(fnmatch.fnmatchcase(name, p) for p in find.get("include", ["*"]))
                and not any(fnmatch.fnmatchcase(name, p) for p in find.get("exclude", []))):
            found.append(name)
    return found


def shipped_modules() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package in shipped_packages():
        for path in sorted((ROOT / package.replace(".", "/")).glob("*.py")):
            modules[module_name(path)] = path
    return modules


def source(module: str) -> Path | None:
    base = ROOT / module.replace(".", "/")
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.exists():
            return path
    return None


def closure(roots: Iterable[str]) -> set[str]:
    """*roots* and every Burrow module they import, transitively, with the packages
    whose ``__init__`` runs on the way (importing burrow.core.tls runs burrow.core)."""
    found: set[str] = set()
    todo = list(roots)
    while todo:
        module = todo.pop()
        parts = module.split(".")
        for name in (".".join(parts[:i]) for i in range(1, len(parts) + 1)):
            path = source(name)
            if name in found or path is None:
                continue
            found.add(name)
            todo.extend(n for n in imports(path) if n.split(".")[0] in LOCAL)
    return found


def third_party(path: Path) -> set[str]:
    return {name for name in imports(path)
            if name.split(".")[0] not in (*LOCAL, "__future__", *sys.stdlib_module_names)}


@cache
def _distributions() -> Mapping[str, list[str]]:
    return metadata.packages_distributions()


@cache
def providers(module: str) -> frozenset[str]:
    """Normalized names of the installed distributions that provide *module*. A top-level
    name several distributions share (a namespace package: ``google``) is narrowed to the
    ones with files under the module's first two components (``google/auth``)."""
    parts = module.split(".")
    candidates = set(_distributions().get(parts[0], []))
    if len(candidates) > 1 and len(parts) > 1:
        prefix = f"{parts[0]}/{parts[1]}"
        candidates = {d for d in candidates
                      if any(str(f).startswith((prefix + "/", prefix + "."))
                             for f in metadata.distribution(d).files or ())}
    return frozenset(normalize(d) for d in candidates)


def undeclared(modules: Mapping[str, Path], allowed: set[str], group: str) -> list[str]:
    """``module imports X`` for each third-party import no requirement in *allowed* gives."""
    found = []
    for module, path in sorted(modules.items()):
        for name in sorted(third_party(path)):
            given = providers(name)
            if not given:
                found.append(f"{module} imports {name}: no installed distribution provides it")
            elif not given & allowed:
                found.append(f"{module} imports {name} ({', '.join(sorted(given))}): "
                             f"not declared in {group}")
    return found


def client_modules() -> dict[str, Path]:
    shipped = shipped_modules()
    roots = [m for m in shipped if m == "burrow.client" or m.startswith("burrow.client.")]
    return {m: p for m in sorted(closure(roots)) if (p := source(m)) is not None}


def test_the_client_needs_only_the_base_dependencies() -> None:
    assert undeclared(client_modules(), declared(), "the base dependencies") == []


def test_the_servers_need_only_the_server_extra() -> None:
    shipped = shipped_modules()
    plain = {m: p for m, p in shipped.items() if m not in OPTIONAL}
    assert undeclared(plain, declared("server"), "the server extra") == []
    for module, extra in OPTIONAL.items():
        assert undeclared({module: shipped[module]}, declared("server", extra),
                          f"the {extra} extra") == []
        used = {d for name in third_party(shipped[module]) for d in providers(name)}
        assert declared(extra) - declared() - used == set(), f"unused in the {extra} extra"


def test_what_runs_from_a_checkout_needs_only_the_test_extra() -> None:
    """The benchmark, the tests and the dev launcher (./dev installs the test extra)."""
    shipped = shipped_modules()
    unshipped = {module_name(p): p for top in sorted(ROOT.iterdir())
                 if (top / "__init__.py").is_file() for p in sorted(top.rglob("*.py"))
                 if module_name(p) not in shipped}
    assert {"bench", "tests.conftest", "burrow.devstack.plan"} <= set(unshipped)
    assert undeclared(unshipped, declared("test"), "the test extra") == []


def test_every_declared_requirement_is_used() -> None:
    """A requirement nothing imports any more goes (or says why in NOT_IMPORTED)."""
    groups = {"the base dependencies": (declared(), client_modules()),
              "the server extra": (declared("server") - declared(), shipped_modules())}
    for group, (names, modules) in groups.items():
        used = {d for path in modules.values() for name in third_party(path)
                for d in providers(name)}
        assert names - used - set(NOT_IMPORTED) == set(), f"unused in {group}"


def test_shipped_code_imports_only_shipped_code() -> None:
    """The benchmark, the tests and the dev launcher are not in the wheel: nothing in it
    may import them, however lazily."""
    shipped = shipped_modules()
    wrong = [f"{module} imports {name}" for module, path in shipped.items()
             for name in sorted(imports(path))
             if name.split(".")[0] in LOCAL and source(name) is not None
             and name not in shipped]
    assert wrong == []


def test_what_the_wheel_leaves_out() -> None:
    packages = shipped_packages()
    assert {"burrow", "burrow.client", "gateway", "consumers", "queues"} <= set(packages)
    assert not [p for p in packages if p.split(".")[0] in ("bench", "tests")
                or p.startswith("burrow.devstack")]


def test_the_checks_catch_a_missing_or_misfiled_requirement() -> None:
    """The checks themselves: without httpx the client's CLI is reported; so are
    google-auth and requests when the server extra leaves them out, though firebase-admin
    installs both (issue 19: imported, never declared)."""
    cli = {"burrow.client.cli.target": ROOT / "burrow/client/cli/target.py"}
    assert undeclared(cli, declared() - {"httpx"}, "base") == [
        "burrow.client.cli.target imports httpx (httpx): not declared in base"]
    fcm = {"burrow.push.fcm": ROOT / "burrow/push/fcm.py"}
    assert undeclared(fcm, declared("server") - {"google-auth", "requests"}, "server") == [
        f"burrow.push.fcm imports google.auth.{name} (google-auth): not declared in server"
        for name in ("credentials", "exceptions", "transport.requests")] + [
        "burrow.push.fcm imports requests (requests): not declared in server"]
    assert undeclared(fcm, declared("server"), "server") == []
    assert providers("google.auth.credentials") == {"google-auth"}


def test_the_launcher_outside_a_checkout_says_so(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from burrow.devstack import __main__ as launcher

    monkeypatch.setattr(launcher, "PROJECT", tmp_path)
    with pytest.raises(SystemExit) as exited:
        launcher.main(["up"])
    assert str(exited.value) == (
        f"burrow-dev: {tmp_path} is not a Burrow checkout (no rabbitmq/rabbitmq.conf); "
        "the local stack runs from one: ./dev up in a clone of the repository")
