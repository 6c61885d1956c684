"""The one-line answer to starting a server from a client-only install.

``pip install burrow`` is the Python client and CLI; the gateway and the workers need
``burrow[server]``. Without it their first import fails deep in a traceback that names a
library, not the fix, so their ``__main__`` modules hand the error here. Imports nothing
beyond the standard library: it must work precisely when the server libraries are absent.
"""

from __future__ import annotations

import sys
from typing import NoReturn

OWN = frozenset({"burrow", "gateway", "consumers", "queues"})


def server_extra_missing(program: str, exc: ModuleNotFoundError) -> NoReturn:
    """Exit naming the missing library and the extra, or re-raise when the missing module
    is one of Burrow's own (a broken install, not a missing extra)."""
    if (exc.name or "").partition(".")[0] in OWN:
        raise exc
    sys.exit(f"{program}: {exc.name} is not installed: the servers need the server extra "
             "(pip install 'burrow[server]')")
