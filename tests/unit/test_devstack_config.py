"""The launcher's node config and port checks, without starting anything."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from burrow.devstack import ports, rabbitmq

ROOT = Path(__file__).resolve().parents[2]


def test_node_config_keeps_base_keys_and_sets_its_own_ports(tmp_path: Path) -> None:
    config = rabbitmq.NodeConfig(tmp_path, 5000, 5001, 5002, 5003, "a", "b",
                                 base_config=ROOT / "rabbitmq" / "rabbitmq.conf")
    text = rabbitmq.render_config(config, tmp_path / "defs.json")
    keys = [line.split("=")[0].strip() for line in text.splitlines()
            if line and not line.startswith("#")]
    assert len(keys) == len(set(keys)), "a key is set twice"
    assert "listeners.tcp.default = 127.0.0.1:5000" in text
    assert "management.tcp.port = 5001" in text
    assert "prometheus.tcp.port = 5002" in text
    assert f"load_definitions = {tmp_path / 'defs.json'}" in text
    assert "max_message_size = 1048576" in text  # kept from rabbitmq/rabbitmq.conf


def test_a_taken_port_is_named_with_its_variable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(ports.PortTaken, match=f"port {port} for RabbitMQ AMQP .*"
                                                  "set BURROW_DEV_AMQP_PORT"):
            ports.ensure_free(port, "RabbitMQ AMQP", "BURROW_DEV_AMQP_PORT")


def test_a_free_port_passes() -> None:
    ports.ensure_free(ports.free_port(), "x", "X")


def test_a_free_port_lies_below_the_outgoing_connection_range() -> None:
    # a server restarted on it cannot lose it to some client's outgoing connection
    low = ports._ephemeral_low()
    if low <= ports.LOWEST + 1000:
        pytest.skip("no Linux ephemeral port range to stay below")
    found = {ports.free_port() for _ in range(50)}
    assert all(ports.LOWEST <= port < low for port in found)
    for port in found:
        ports.ensure_free(port, "x", "X")
