"""The client's one exception, in a module of its own: :mod:`burrow.client.chat` and
:mod:`burrow.client.files` both raise it, and neither imports the other's module for it."""

from __future__ import annotations


class ChatError(Exception):
    """Something failed for good: the server refused it (``code`` from its error frame
    or HTTP answer), or a download cannot be saved (``exists``, ``cannot_write``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
