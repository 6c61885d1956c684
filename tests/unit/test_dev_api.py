"""Development mode's rules that need no server: when it may start, what a token request is."""

from __future__ import annotations

import pytest

from burrow.runtime.settings import ConfigError, Settings
from gateway import dev_api
from gateway.http_json import Invalid

BASE = {"BURROW_AMQP_URL": "amqp://u:p@127.0.0.1/burrow"}


def test_dev_mode_is_off_unless_asked_for_and_needs_the_hs256_secret() -> None:
    assert Settings.from_env(BASE).dev_mode is False
    with pytest.raises(ConfigError, match="BURROW_DEV_MODE=true needs BURROW_JWT_SECRET"):
        dev_api.check(Settings.from_env({**BASE, "BURROW_DEV_MODE": "true",
                                         "BURROW_JWKS_URL": "https://idp.invalid/jwks"}))
    dev_api.check(Settings.from_env({**BASE, "BURROW_DEV_MODE": "true",
                                     "BURROW_JWT_SECRET": "s" * 32}))
    with pytest.raises(ConfigError, match="BURROW_DEV_MODE"):
        Settings.from_env({**BASE, "BURROW_DEV_MODE": "maybe"})


def test_dev_mode_is_refused_beyond_loopback_unless_forced() -> None:
    on = {**BASE, "BURROW_DEV_MODE": "true", "BURROW_JWT_SECRET": "s" * 32}
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"):
        dev_api.check(Settings.from_env({**on, "BURROW_HOST": host}))
    for host in ("0.0.0.0", "::", "10.0.0.5", "chat.example.com"):
        with pytest.raises(ConfigError, match="not loopback"):
            dev_api.check(Settings.from_env({**on, "BURROW_HOST": host}))
        dev_api.check(Settings.from_env({**on, "BURROW_HOST": host,
                                         "BURROW_DEV_MODE_ANY_HOST": "true"}))
        # dev mode off: any host
        dev_api.check(Settings.from_env({**BASE, "BURROW_HOST": host}))


def test_a_token_request_is_a_user_a_bounded_ttl_and_known_roles() -> None:
    assert dev_api.token_request({"user": "alice"}, 900) == ("alice", 900, ())
    assert dev_api.token_request({"user": "r", "ttl": 1, "roles": ["admin"]}, 900) == (
        "r", 1, ("admin",))
    for bad, field in (({"user": None}, "user"), ({"user": "a", "ttl": 901}, "ttl"),
                       ({"user": "a", "ttl": 1.5}, "ttl"), ({"user": "a", "roles": [1]}, "roles")):
        with pytest.raises(Invalid) as caught:
            dev_api.token_request(bad, 900)
        assert caught.value.field == field
