"""The layout's import rules, read from the code: each package's docstring says what it
may import, and this test fails when an import goes the wrong way, so the picture in
``burrow/__init__.py`` cannot quietly stop being true.

Imports are read with :mod:`ast` (inside functions too: a lazy import is still a
dependency), nothing is imported or run.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ("burrow", "gateway", "consumers", "queues")
LOCAL = (*SHIPPED, "bench", "tests")

# package -> the local modules it may import: a prefix covers a package and everything in
# it, "=name" the one module only. The longest matching package rules a module.
MAY_IMPORT: dict[str, tuple[str, ...]] = {
    "burrow.core": ("burrow.core",),
    "burrow.client": ("burrow.client", "burrow.core.tls", "burrow.core.tokens"),
    "burrow.mail": ("burrow.mail", "burrow.core"),
    "burrow.storage": ("burrow.storage", "burrow.core", "burrow.mail.verification",
                       "=burrow.push"),
    "burrow.runtime": ("burrow.runtime", "burrow.core", "burrow.storage",
                       "burrow.mail.smtp_url"),
    "burrow.push": ("burrow.push", "burrow.core", "burrow.runtime.settings"),
    "burrow.devstack": ("burrow", "queues"),
    "queues": ("queues", "burrow.core", "burrow.storage", "burrow.runtime", "burrow.push",
               "burrow.mail"),
    "gateway": ("gateway", "queues", "burrow.core", "burrow.storage", "burrow.runtime",
                "burrow.mail", "=burrow.push"),
    "consumers": ("consumers", "queues", "burrow.core", "burrow.storage", "burrow.runtime",
                  "burrow.push", "burrow.mail"),
    # the benchmark runs the providers' stand-ins the tests use (it is not shipped)
    "bench": ("bench", "burrow", "gateway", "consumers", "queues", "tests.fakes"),
}
# third-party libraries a package may use, where that is the point of the package
THIRD_PARTY: dict[str, frozenset[str]] = {
    "burrow.core": frozenset({"orjson", "jwt"}),
    "burrow.client": frozenset({"websockets", "httpx", "jwt", "orjson"}),
}
NETWORK = frozenset({"sanic", "aio_pika", "aiormq", "pymongo", "httpx", "websockets",
                     "aiosmtplib", "firebase_admin", "aioapns"})


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources(tops: tuple[str, ...] = (*SHIPPED, "bench")) -> Iterator[Path]:
    for top in tops:
        yield from sorted((ROOT / top).rglob("*.py"))


def imports(path: Path) -> set[str]:
    """Every module ``path`` names in an import, relative ones made absolute."""
    tree = ast.parse(path.read_text(), str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(filter(None, [*anchor, base]))
            # `from burrow.core import ids` imports the module burrow.core.ids
            folder = ROOT / base.replace(".", "/")
            modules = {f"{base}.{alias.name}" for alias in node.names
                       if (folder / f"{alias.name}.py").exists() or (folder / alias.name).is_dir()}
            found.update(modules if len(modules) == len(node.names) else {base, *modules})
    return found


def ruling(module: str) -> str | None:
    matches = [p for p in MAY_IMPORT if module == p or module.startswith(p + ".")]
    return max(matches, key=len) if matches else None


def under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p[1:] if p.startswith("=") else
               module == p or module.startswith(p + ".") for p in prefixes)


def wrong(me: str, names: set[str], where: str) -> list[str]:
    """What is wrong with module *me* importing *names* (empty when nothing is)."""
    rule = ruling(me)
    found = []
    for name in sorted(names):
        top = name.split(".")[0]
        said = f"{where} imports {name}"
        if top in LOCAL:
            if rule is None or not under(name, MAY_IMPORT[rule]):
                found.append(f"{said}: not in what {rule or me} may import")
        elif top not in sys.stdlib_module_names and top != "__future__":
            if rule in THIRD_PARTY and top not in THIRD_PARTY[rule]:
                found.append(f"{said}: {rule} uses only {sorted(THIRD_PARTY[rule])}")
            if rule in ("burrow.storage", "burrow.mail") and top in {"sanic", "aio_pika"}:
                found.append(f"{said}: {rule} serves every process, no Sanic or aio-pika")
    return found


def wrong_imports() -> list[str]:
    return [w for path in sources()
            for w in wrong(module_name(path), imports(path), str(path.relative_to(ROOT)))]


def test_every_import_goes_the_way_the_packages_say() -> None:
    assert wrong_imports() == []


def test_the_core_uses_no_network_library() -> None:
    for path in sources(("burrow/core",)):
        assert not {n.split(".")[0] for n in imports(path)} & NETWORK, path


def cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for path in sources():
        graph[module_name(path)] = set()
    for path in sources():
        me = module_name(path)
        for name in imports(path):
            # an import of a package's member counts as the member's module if it is one
            if name in graph and name != me and not me.startswith(name + "."):
                graph[me].add(name)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            part = []
            while True:
                top = stack.pop()
                on.discard(top)
                part.append(top)
                if top == node:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles() -> None:
    assert cycles() == []


@pytest.mark.parametrize("package", sorted(p for p in MAY_IMPORT if p.startswith("burrow.")))
def test_every_package_says_what_it_owns_and_may_import(package: str) -> None:
    doc = ast.get_docstring(ast.parse((ROOT / package.replace(".", "/") / "__init__.py").read_text()))
    assert doc and "May import" in doc, f"{package}/__init__.py: say what it owns and may import"


def test_the_rules_catch_a_wrong_direction() -> None:
    """The check itself: a core module importing Sanic or a store, a store importing
    aio-pika, the client importing the server's settings are all reported (so an empty
    list above means something)."""
    assert wrong("burrow.core.x", {"sanic", "burrow.storage.database", "orjson"}, "x") == [
        "x imports burrow.storage.database: not in what burrow.core may import",
        "x imports sanic: burrow.core uses only ['jwt', 'orjson']",
    ]
    assert wrong("burrow.storage.x", {"aio_pika"}, "x") == [
        "x imports aio_pika: burrow.storage serves every process, no Sanic or aio-pika"]
    assert wrong("burrow.client.x", {"burrow.runtime.settings", "burrow.core.tls"}, "x") == [
        "x imports burrow.runtime.settings: not in what burrow.client may import"]
    assert wrong("gateway.x", {"consumers.sequencer"}, "x") == [
        "x imports consumers.sequencer: not in what gateway may import"]
