"""Which origins get CORS answers, and which values of BURROW_CORS_ORIGINS are refused."""

from __future__ import annotations

import pytest

from burrow.runtime.settings import ConfigError, Settings
from gateway import cors

BASE = {"BURROW_AMQP_URL": "amqp://u:p@127.0.0.1/burrow"}


def test_only_listed_origins_are_allowed() -> None:
    origins = frozenset({"https://app.example", "http://localhost:3000"})
    assert cors.allowed(origins, "https://app.example") == "https://app.example"
    assert cors.allowed(origins, "http://localhost:3000") == "http://localhost:3000"
    for origin in ("https://app.example:444", "http://app.example", "https://evil.example",
                   "null", "", None):
        assert cors.allowed(origins, origin) is None, origin
    assert cors.allowed(frozenset({"*"}), "https://any.where") == "*"
    assert cors.allowed(frozenset(), "https://app.example") is None
    assert cors.allowed(frozenset({"*"}), None) is None  # not a cross-origin request


def test_the_setting_takes_origins_only() -> None:
    assert Settings.from_env(BASE).cors_origins == frozenset()
    got = Settings.from_env({**BASE, "BURROW_CORS_ORIGINS":
                             " https://a.example/ , http://localhost:3000,*"}).cors_origins
    assert got == {"https://a.example", "http://localhost:3000", "*"}
    for bad in ("a.example", "https://a.example/chat", "ftp://a.example", "https://",
                "https://u@a.example", "https://a.example?x=1"):
        with pytest.raises(ConfigError, match="BURROW_CORS_ORIGINS"):
            Settings.from_env({**BASE, "BURROW_CORS_ORIGINS": bad})
