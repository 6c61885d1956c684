"""TLS settings and policy without servers: half a gateway TLS setup, files that cannot
serve, URLs that switch certificate checks off, the HSTS decision, the node's listener
(the servers themselves: tests/integration/test_tls.py)."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from burrow.client.cli import main as cli_main
from burrow.client.cli import output
from burrow.devstack import rabbitmq
from burrow.runtime.settings import ConfigError, Settings
from gateway.tls import over_https, server_ssl
from tests.tls import ThrowawayCA

AMQP = {"BURROW_AMQP_URL": "amqp://u:p@127.0.0.1:5672/burrow"}
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def ca(tmp_path: Path) -> ThrowawayCA:
    return ThrowawayCA(tmp_path / "ca")


@pytest.mark.parametrize(("given", "missing"), [("BURROW_TLS_CERT", "BURROW_TLS_KEY"),
                                                ("BURROW_TLS_KEY", "BURROW_TLS_CERT")])
def test_a_certificate_without_its_key_or_the_reverse_is_refused(
        ca: ThrowawayCA, given: str, missing: str) -> None:
    files = ca.server("gateway")
    with pytest.raises(ConfigError, match=f"{given} is set but {missing} is not"):
        Settings.from_env({**AMQP, given: str(files.cert)})


def test_unreadable_files_are_refused_with_the_variable(ca: ThrowawayCA,
                                                        tmp_path: Path) -> None:
    files = ca.server("gateway")
    with pytest.raises(ConfigError, match=re.escape("BURROW_TLS_KEY='/no/such.pem' is "
                                                    "invalid (cannot read /no/such.pem")):
        Settings.from_env({**AMQP, "BURROW_TLS_CERT": str(files.cert),
                           "BURROW_TLS_KEY": "/no/such.pem"})
    with pytest.raises(ConfigError, match=r"BURROW_TLS_CERT=.*\(cannot read .*Is a directory"):
        Settings.from_env({**AMQP, "BURROW_TLS_CERT": str(tmp_path),  # a directory
                           "BURROW_TLS_KEY": str(files.key)})


def test_sanic_gets_the_files_when_they_fit_and_a_config_error_when_not(
        ca: ThrowawayCA, tmp_path: Path) -> None:
    assert server_ssl(Settings.from_env(AMQP)) is None  # no TLS: plain HTTP
    files, other = ca.server("gateway"), ca.server("other")
    env = {**AMQP, "BURROW_TLS_CERT": str(files.cert), "BURROW_TLS_KEY": str(files.key)}
    assert server_ssl(Settings.from_env(env)) == {"cert": str(files.cert),
                                                 "key": str(files.key)}
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    for cert, key in ((files.cert, other.key), (not_pem, files.key), (files.cert, not_pem)):
        settings = Settings.from_env({**AMQP, "BURROW_TLS_CERT": str(cert),
                                      "BURROW_TLS_KEY": str(key)})
        with pytest.raises(ConfigError, match="cannot serve TLS"):
            server_ssl(settings)


@pytest.mark.parametrize(("name", "url", "message"), [
    ("BURROW_AMQP_URL", "amqps://u:p@h:5671/v?no_verify_ssl=1", "no_verify_ssl turns"),
    ("BURROW_AMQP_URL", "amqp://u:p@h:5672/v?cafile=/ca.pem", "cafile= only takes effect"),
    ("BURROW_MONGO_URL", "mongodb://h/b?tls=true&tlsInsecure=true", "tlsInsecure turns"),
    ("BURROW_MONGO_URL", "mongodb://h/b?tlsAllowInvalidCertificates=TRUE",
     "tlsAllowInvalidCertificates turns"),
    ("BURROW_MONGO_URL", "mongodb://h/b?TLSALLOWINVALIDHOSTNAMES=true",
     "TLSALLOWINVALIDHOSTNAMES turns"),
])
def test_urls_that_switch_certificate_checks_off_are_refused(name: str, url: str,
                                                             message: str) -> None:
    with pytest.raises(ConfigError, match=f"{name} is invalid .*{message}"):
        Settings.from_env({**AMQP, name: url})


def test_urls_that_verify_pass_unchanged() -> None:
    amqps = "amqps://u:p@h:5671/v?cafile=/etc/ca.pem&no_verify_ssl=0"
    mongo = "mongodb://h/b?tls=true&tlsCAFile=/etc/ca.pem&tlsAllowInvalidHostnames=false"
    settings = Settings.from_env({"BURROW_AMQP_URL": amqps, "BURROW_MONGO_URL": mongo})
    assert (settings.amqp_url, settings.mongo_url) == (amqps, mongo)


def _request(tls: bool, forwarded: dict[str, Any]) -> Any:
    return SimpleNamespace(conn_info=SimpleNamespace(ssl=tls), forwarded=forwarded)


def test_https_is_this_connections_tls_or_the_trusted_proxys_word() -> None:
    # Sanic fills ``forwarded`` only from a proxy it trusts (tests/integration/test_tls.py)
    assert over_https(_request(True, {}))
    assert over_https(_request(False, {"for": "203.0.113.7", "proto": "https"}))
    assert over_https(_request(False, {"proto": "wss"}))
    assert not over_https(_request(False, {}))
    assert not over_https(_request(False, {"for": "203.0.113.7", "proto": "http"}))


def test_the_node_gets_a_tls_listener_only_when_given_one(ca: ThrowawayCA,
                                                          tmp_path: Path) -> None:
    base = rabbitmq.NodeConfig(tmp_path, 5000, 5001, 5002, 5003, "a", "b",
                               base_config=ROOT / "rabbitmq" / "rabbitmq.conf")
    assert "ssl" not in rabbitmq.render_config(base, tmp_path / "defs.json")
    files = ca.server("rabbitmq")
    config = rabbitmq.NodeConfig(tmp_path, 5000, 5001, 5002, 5003, "a", "b",
                                 base_config=base.base_config, tls=files, amqps_port=5004)
    text = rabbitmq.render_config(config, tmp_path / "defs.json")
    for line in ("listeners.tcp.default = 127.0.0.1:5000",
                 "listeners.ssl.default = 127.0.0.1:5004",
                 f"ssl_options.certfile = {files.cert}", f"ssl_options.keyfile = {files.key}",
                 f"ssl_options.cacertfile = {files.ca}", "ssl_options.verify = verify_none"):
        assert line in text.splitlines()
    assert config.amqps_url("u", "p", "v") == (
        f"amqps://u:p@127.0.0.1:5004/v?cafile={files.ca}")


def test_the_cli_refuses_a_ca_file_it_cannot_read(capsys: pytest.CaptureFixture[str],
                                                  tmp_path: Path) -> None:
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("hello")
    for path in ("/no/such/ca.pem", str(not_pem)):
        code = cli_main(["--url", "https://127.0.0.1:1", "--ca-file", path, "--token", "t",
                         "rooms"])
        assert code == output.USAGE
        assert f"--ca-file {path}" in capsys.readouterr().err
