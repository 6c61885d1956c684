"""BURROW_AMQP_URL as a list of broker nodes: parsing, refusals, and the order of attempts."""

from __future__ import annotations

import pytest
from aio_pika import RobustConnection

from burrow.core.endpoints import MAX_NODES, connect_order, node_name, split_urls
from burrow.runtime import broker
from burrow.runtime.settings import ConfigError, Settings

PASSWORD = "s3cret-pw"
ONE = f"amqp://burrow-gateway:{PASSWORD}@10.0.0.1:5672/burrow"
TWO = f"amqp://burrow-gateway:{PASSWORD}@10.0.0.2:5672/burrow"
THREE = f"amqp://burrow-gateway:{PASSWORD}@rabbit-3.internal/burrow"


def test_one_url_is_a_list_of_one() -> None:
    assert split_urls(ONE) == (ONE,)


def test_a_list_keeps_its_order_and_drops_the_blanks_around_commas() -> None:
    assert split_urls(f" {ONE}, {TWO} ,{THREE} ") == (ONE, TWO, THREE)


def test_a_raw_comma_in_a_password_does_not_split_the_url() -> None:
    url = "amqp://burrow-gateway:pa,ss@10.0.0.1:5672/burrow"
    assert split_urls(url) == (url,)
    assert split_urls(f"{url},{url.replace('10.0.0.1', '10.0.0.2')}")[1].endswith(
        "10.0.0.2:5672/burrow")


def test_tls_lists_with_the_same_options_are_taken() -> None:
    urls = [f"amqps://u:p@rabbit-{n}:5671/burrow?cafile=/ca.pem" for n in (1, 2)]
    assert split_urls(",".join(urls)) == tuple(urls)


@pytest.mark.parametrize(("raw", "reason"), [
    (f"{ONE},{TWO.replace('burrow-gateway', 'burrow-notifier')}", "entry 2 differs"),
    (f"{ONE},{TWO.replace(PASSWORD, 'other')}", "entry 2 differs"),
    (f"{ONE},{TWO.replace('/burrow', '/other')}", "entry 2 differs"),
    (f"{ONE},{TWO.replace('amqp://', 'amqps://')}", "entry 2 differs"),
    (f"{ONE},{TWO}?heartbeat=5", "entry 2 differs"),
    (f"{ONE},{ONE}", "entry 2 repeats"),
    (f"{ONE},{ONE.replace(':5672', '')}", "entry 2 repeats"),  # 5672 is amqp's default
    (f"{ONE}, http://10.0.0.2/burrow", "entry 1 holds a comma that starts no amqp"),
    (f"{ONE},amqp:///burrow", "entry 2 is not an amqp"),
    (f"{ONE},amqp://u:p@10.0.0.2:99999/burrow", "entry 2 is not a URL with a valid"),
    (f"{ONE},amqp://u:p@10.0.0.2:port/burrow", "entry 2 is not a URL with a valid"),
    ("amqp://u:p@h1,h2/burrow", "each node is a whole URL"),  # MongoDB's style
    (f"{ONE},", "each node is a whole URL"),
    ("rabbit.internal:5672", "is not an amqp"),
    (",".join(f"amqp://u:p@h{n}/v" for n in range(MAX_NODES + 1)), "at most"),
])
def test_malformed_lists_are_refused_without_quoting_them(raw: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as refused:
        split_urls(raw)
    message = str(refused.value)
    assert PASSWORD not in message and "10.0.0" not in message and "\n" not in message


def test_settings_keep_the_first_url_and_the_list() -> None:
    settings = Settings.from_env({"BURROW_AMQP_URL": f"{ONE},{TWO}"})
    assert settings.amqp_url == ONE
    assert settings.amqp_urls == (ONE, TWO)
    assert Settings.from_env({"BURROW_AMQP_URL": ONE}).amqp_urls == (ONE,)


@pytest.mark.parametrize(("entry", "reason"), [
    (TWO.replace("amqp://", "ftp://"), "entry 1 holds a comma that starts no amqp"),
    (TWO + "?cafile=/ca.pem", "entry 2"),  # differs, and TLS options on amqp://
])
def test_a_malformed_entry_stops_the_process_in_one_line_without_the_password(
        entry: str, reason: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"BURROW_AMQP_URL": f"{ONE},{entry}"})
    message = str(refused.value)
    assert message.startswith("BURROW_AMQP_URL") and reason in message
    assert PASSWORD not in message and "\n" not in message


def test_tls_verification_is_checked_in_every_entry() -> None:
    urls = [f"amqps://u:{PASSWORD}@rabbit-{n}:5671/burrow?no_verify_ssl=1" for n in (1, 2)]
    with pytest.raises(ConfigError, match="entry 1: no_verify_ssl") as refused:
        Settings.from_env({"BURROW_AMQP_URL": ",".join(urls)})
    assert PASSWORD not in str(refused.value)


def test_the_first_connection_tries_the_list_in_its_order() -> None:
    assert connect_order(3, None) == [0, 1, 2]
    assert connect_order(1, None) == [0]


def test_after_losing_a_node_the_next_one_is_tried_first_and_the_lost_one_last() -> None:
    assert connect_order(3, 0) == [1, 2, 0]
    assert connect_order(3, 1) == [2, 0, 1]
    assert connect_order(3, 2) == [0, 1, 2]
    assert connect_order(1, 0) == [0]  # a single node: always that one


def test_every_node_is_tried_once_per_round() -> None:
    for count in range(1, 8):
        for current in [None, *range(count)]:
            assert sorted(connect_order(count, current)) == list(range(count))
    with pytest.raises(ValueError):
        connect_order(0, None)


def test_a_node_is_named_by_host_and_port_only() -> None:
    assert node_name(ONE) == "10.0.0.1:5672"
    assert node_name(THREE) == "rabbit-3.internal:5672"
    assert node_name("amqps://u:p@rabbit-1/burrow") == "rabbit-1:5671"
    assert node_name("amqp://u:p@[::1]:5673/burrow") == "[::1]:5673"


def test_the_aio_pika_attempt_that_failover_overrides_still_exists() -> None:
    """broker.ClusterConnection replaces RobustConnection's per-attempt method; an aio-pika
    that renamed it would leave failover silently off."""
    assert hasattr(RobustConnection, broker._ATTEMPT)
    assert broker._ATTEMPT in vars(broker.ClusterConnection)
