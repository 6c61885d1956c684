"""Settings come from BURROW_* variables; bad ones are refused with the variable's name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from burrow.runtime.settings import NAMES, ConfigError, Settings

ROOT = Path(__file__).resolve().parents[2]
AMQP = {"BURROW_AMQP_URL": "amqp://u:p@127.0.0.1:5672/burrow"}


def test_defaults() -> None:
    settings = Settings.from_env(AMQP)
    assert settings.port == 8000 and settings.host == "127.0.0.1"
    assert settings.shards == 4
    assert settings.mongo_url.startswith("mongodb://127.0.0.1:27017/burrow")


def test_amqp_url_is_required_and_named() -> None:
    with pytest.raises(ConfigError, match="BURROW_AMQP_URL is not set"):
        Settings.from_env({})


@pytest.mark.parametrize(("name", "value", "message"), [
    ("BURROW_PORT", "eighty", "BURROW_PORT='eighty' is invalid"),
    ("BURROW_PORT", "70000", "a port is 1..65535"),
    ("BURROW_SHARDS", "0", "must be positive"),
    ("BURROW_HEALTH_INTERVAL", "-1", "must be positive"),
    ("BURROW_AMQP_URL", "http://127.0.0.1/", "amqp or amqps"),
    ("BURROW_MONGO_URL", "mongodb://", "with a host"),
    ("BURROW_LOG_LEVEL", "loud", "DEBUG, INFO"),
    ("BURROW_PROT", "8000", "unknown setting BURROW_PROT"),
    # a ticket is for the connection about to open, not a second long-lived credential
    ("BURROW_WS_TICKET_TTL", "0", "whole seconds from 1 to 300"),
    ("BURROW_WS_TICKET_TTL", "301", "whole seconds from 1 to 300"),
    ("BURROW_WS_TICKET_TTL", "2.5", "BURROW_WS_TICKET_TTL='2.5' is invalid"),
])
def test_malformed_values_are_refused_with_the_variable(name: str, value: str,
                                                        message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        Settings.from_env({**AMQP, name: value})


def test_readme_documents_every_variable() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = sorted(name for name in NAMES if f"`{name}`" not in readme)
    assert not missing, f"README's configuration table lacks {missing}"


def test_metrics_networks() -> None:
    from burrow.runtime.settings import allowed, networks
    default = Settings.from_env({"BURROW_AMQP_URL": "amqp://u:p@127.0.0.1/b"}).metrics_from
    for address in ("127.0.0.1", "::1", "10.2.3.4", "172.18.0.5", "192.168.1.9", "fd00::1"):
        assert allowed(address, default), address
    for address in ("203.0.113.5", "8.8.8.8", "2001:db8::1", "not an address", ""):
        assert not allowed(address, default), address
    assert networks("*") is None and allowed("8.8.8.8", networks("*"))
    assert not allowed("127.0.0.1", networks("10.0.0.0/8"))
    with pytest.raises(ConfigError, match="BURROW_METRICS_FROM"):
        Settings.from_env({"BURROW_AMQP_URL": "amqp://u:p@127.0.0.1/b",
                           "BURROW_METRICS_FROM": "10.0.0.0/33"})


@pytest.mark.parametrize(("name", "value"), [
    ("BURROW_AMQP_URL", "amqp://burrow-gateway:s3cret-pw@127.0.0.1:5672/burrow?no_verify_ssl=1"),
    ("BURROW_AMQP_URL", "http://burrow-gateway:s3cret-pw@127.0.0.1/burrow"),
    ("BURROW_MONGO_URL", "mongodb://burrow:s3cret-pw@db/burrow?tls=true&tlsInsecure=true"),
])
def test_a_refused_url_is_named_without_its_password(name: str, value: str) -> None:
    env = {"BURROW_AMQP_URL": "amqp://u:p@127.0.0.1:5672/burrow", name: value}
    with pytest.raises(ConfigError) as refused:
        Settings.from_env(env)
    assert name in str(refused.value)
    assert "s3cret-pw" not in str(refused.value)
