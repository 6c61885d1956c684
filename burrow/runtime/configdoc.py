"""docs/configuration.md, written from :data:`burrow.runtime.variables.VARIABLES`.

    python -m burrow.runtime.configdoc > docs/configuration.md

tests/unit/test_configuration_doc.py fails when the file and the table differ.
"""

from __future__ import annotations

import sys
from urllib.parse import urlsplit

from burrow.runtime.variables import GROUPS, VARIABLES, Variable

COMMAND = "python -m burrow.runtime.configdoc > docs/configuration.md"


def default_cell(variable: Variable) -> str:
    """The documented default: *shown*, "(required)", or the value itself; never a
    secret's value (only a URL default without ``user:password@``, which holds none)."""
    if variable.shown is not None:
        return variable.shown
    if variable.default is None:
        return "(required)"
    if variable.secret and variable.default and not _holds_no_credential(variable.default):
        return ""
    return f"`{variable.default}`" if variable.default else ""


def _holds_no_credential(default: str) -> bool:
    parts = urlsplit(default)
    return bool(parts.scheme and parts.netloc) and "@" not in parts.netloc


def _row(variable: Variable) -> str:
    name = f"`{variable.name}`" + (" (secret)" if variable.secret else "")
    cells = (name, default_cell(variable), variable.help)
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def markdown() -> str:
    lines = [(f"<!-- Generated from burrow/runtime/variables.py by `{COMMAND}`: "
              "edit the table there, not this file. -->"),
             "# Configuration", "",
             ("Every `BURROW_*` variable anything in Burrow reads, by who reads it. "
              "Generated from the table in `burrow/runtime/variables.py`."), ""]
    for group in GROUPS:
        lines += [f"## {group.title}", "", group.intro, "",
                  "| variable | default | meaning |", "| --- | --- | --- |",
                  *(_row(v) for v in VARIABLES if v.group == group.key), ""]
        if group.after:
            lines += [group.after, ""]
    return "\n".join(lines)


def main() -> int:
    sys.stdout.write(markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
