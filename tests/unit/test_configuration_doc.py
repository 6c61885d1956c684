"""docs/configuration.md is generated from the settings table, and the table knows every
``BURROW_*`` variable the project reads: the doc cannot drift from the code, and a new
variable cannot go undocumented (nor stop the processes when a user exports it)."""

from __future__ import annotations

import io
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from burrow.runtime import configdoc
from burrow.runtime.variables import (
    CLIENT,
    COMPOSE,
    GROUPS,
    IGNORED,
    LAUNCHER,
    NAMES,
    SERVER,
    VARIABLES,
    Variable,
)

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "configuration.md"
# A whole variable name: not a prefix such as BURROW_FCM_* or BURROW_RABBITMQ_*_PASSWORD.
NAME = re.compile(r"\bBURROW_[A-Z0-9]+(?:_[A-Z0-9]+)*\b(?![_*])")
# The tests of refusals spell names wrong on purpose.
MISSPELT_ON_PURPOSE = {Path("tests/unit/test_settings.py"),
                       Path("tests/unit/test_configuration_doc.py"),
                       Path("tests/integration/test_processes.py")}
SKIP_DIRS = {"test-artifacts", "burrow.egg-info", "__pycache__", "node_modules"}
TEXT = {".py", ".md", ".yml", ".yaml", ".toml", ".sh", ".js", ".json", ".cfg", ".ini",
        ".txt", ".html", ".conf", ""}


def test_the_doc_is_generated_from_the_table() -> None:
    assert DOC.read_text() == configdoc.markdown(), (
        f"docs/configuration.md differs from the table in burrow/runtime/variables.py: run "
        f"`.venv/bin/{configdoc.COMMAND}`")


def rows(text: str) -> dict[str, list[str]]:
    """The doc's table rows by variable: [name cell, default cell, meaning]."""
    found = {}
    for line in text.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if cells and cells[0].startswith("`BURROW_"):
            found[cells[0].split("`")[1]] = cells
    return found


def test_every_variable_is_in_the_doc_and_the_doc_names_no_other() -> None:
    text = DOC.read_text()
    assert set(rows(text)) == {v.name for v in VARIABLES}
    unknown = set(NAME.findall(text)) - NAMES - IGNORED
    assert not unknown, f"docs/configuration.md names variables nothing reads: {unknown}"
    assert GROUPS[0].key == SERVER
    assert {v.group for v in VARIABLES} == {g.key for g in GROUPS}


def test_the_doc_shows_no_secret() -> None:
    """A secret's default is documented only when it holds no credential (the local URLs
    of the database, the relay, the counters); the broker's dev passwords are not there."""
    text = DOC.read_text()
    table = rows(text)
    for variable in VARIABLES:
        name_cell, default, _ = table[variable.name]
        assert ("(secret)" in name_cell) == variable.secret, variable.name
        if variable.secret and variable.default and variable.default in default:
            parts = urlsplit(variable.default)
            assert parts.scheme and parts.username is None and parts.password is None, (
                f"{variable.name}: a secret's default in the doc")
    from queues import definitions
    for role in definitions.ROLES:
        assert definitions.dev_password(role) not in text
    # whatever a later entry says, the doc never shows a secret's value as its default
    assert configdoc.default_cell(Variable("BURROW_X", "hunter2-pw", "x", secret=True)) == ""
    assert "hunter2" not in configdoc.default_cell(
        Variable("BURROW_X", "redis://:hunter2@db", "x", secret=True))


def sources() -> Iterator[Path]:
    for path in sorted(ROOT.rglob("*")):
        relative = path.relative_to(ROOT)
        if any(part.startswith(".") or part in SKIP_DIRS for part in relative.parts):
            continue
        if path.is_file() and path.suffix in TEXT and relative not in MISSPELT_ON_PURPOSE \
                and path.stat().st_size < 2_000_000:
            yield path


def names_in(path: Path) -> list[str]:
    """The BURROW_* names in a file; in Python, only in its strings and comments (a
    constant such as tests' BURROW_IMAGE is not a variable of the environment)."""
    text = path.read_text(errors="replace")
    if path.suffix != ".py":
        return NAME.findall(text)
    found = []
    literal = {tokenize.STRING, tokenize.COMMENT, getattr(tokenize, "FSTRING_MIDDLE", -1)}
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type in literal:
            # an f-string's replacement fields are code (Python 3.11 keeps them in STRING)
            found += NAME.findall(re.sub(r"\{[^{}]*\}", "", token.string))
    return found


def test_the_table_knows_every_variable_the_project_reads() -> None:
    """Code, scripts, compose files and docs: a BURROW_* name anywhere is in the table,
    documented, and either a setting of the processes or one they ignore."""
    found: dict[str, str] = {}
    for path in sources():
        for name in names_in(path):
            found.setdefault(name, str(path.relative_to(ROOT)))
    unknown = {name: where for name, where in found.items()
               if name not in NAMES and name not in IGNORED}
    assert not unknown, (
        "BURROW_* variables missing from VARIABLES in burrow/runtime/variables.py (add them, "
        f"in the group of who reads them, then run `.venv/bin/{configdoc.COMMAND}`): "
        f"{unknown}")


def test_the_documented_defaults_of_the_others_are_theirs() -> None:
    """The launcher's, compose's and the client's own code holds their defaults; the
    table documents them, so it is checked against that code."""
    from burrow.client import cli
    from burrow.devstack import secrets
    from burrow.devstack.__main__ import DevConfig
    from queues import definitions

    table = {v.name: v for v in VARIABLES}
    launcher = DevConfig.from_env({})
    for field in ("amqp_port", "management_port", "prometheus_port", "mongo_port"):
        name = f"BURROW_DEV_{field.upper()}"
        assert table[name].default == str(getattr(launcher, field)), name
    assert launcher.directory.name == table["BURROW_DEV_DIR"].default
    passwords = {r.password_env for r in definitions.ROLES}
    assert passwords <= {v.name for v in VARIABLES if v.group == LAUNCHER}
    compose = {v.name for v in VARIABLES if v.group == COMPOSE}
    assert set(secrets.NAMES) == compose | passwords | {
        "BURROW_JWT_SECRET", "BURROW_UNSUBSCRIBE_SECRET", "BURROW_WEBHOOK_SECRET"}
    assert table["BURROW_URL"].default == cli.DEFAULT_URL
    assert {"BURROW_URL", "BURROW_TOKEN", "BURROW_CA_FILE", "BURROW_BACKEND_URL"} <= {
        v.name for v in VARIABLES if v.group == CLIENT}
