"""The benchmark measures the stack people run: ``./dev up``, the benchmark and compose
run the same processes (:mod:`burrow.devstack.plan`), and the benchmark's configuration
differs from ``./dev up``'s only where bench/README.md says why (issue 14, item 1)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.stack import BENCH_ENV, BenchStack
from burrow.devstack import plan
from burrow.devstack.__main__ import DevConfig, product_apps

ROOT = Path(__file__).resolve().parents[2]
# Every way the benchmark's environment departs from ./dev up's (bench/README.md).
DOCUMENTED_DEPARTURES = {
    "BURROW_LOG_LEVEL", "BURROW_RATE_CONNECTION", "BURROW_RATE_USER", "BURROW_RATE_IP",
    "BURROW_RATE_FLOOD", "SANIC_WEBSOCKET_PING_INTERVAL", "SANIC_WEBSOCKET_PING_TIMEOUT",
    "BURROW_PUSH_DELAY", "BURROW_DIGEST_HOURLY", "BURROW_MAX_CONNECTIONS_IP"}


def launcher_processes(env: Mapping[str, str]) -> list[tuple[str, list[str], dict[str, str]]]:
    """(module, args, environment) of each process ``./dev up`` starts."""
    def app_env(user: str, extra: Mapping[str, str]) -> dict[str, str]:
        return {"user": user, **extra}

    config = DevConfig.from_env({"BURROW_DEV_DIR": "/nonexistent/burrow-dev"})
    return [(app.command[2], app.command[3:], app.env)
            for app in product_apps(config, env, app_env, {}, {})]


@pytest.fixture
def bench() -> Iterator[BenchStack]:
    stack = BenchStack()  # not started: only its plan is read
    try:
        yield stack
    finally:
        shutil.rmtree(stack.directory, ignore_errors=True)


def test_the_benchmark_runs_the_workers_dev_up_runs(bench: BenchStack) -> None:
    workers = [(args, env["user"]) for module, args, env in launcher_processes({})
               if module == plan.WORKER_MODULE]
    assert [args for args, _ in workers] == [c for _, c in bench.worker_processes()]
    # each with a broker user of its own, the one its role is made for
    assert [user for _, user in workers] == [w.user for w in plan.WORKERS] == [
        "burrow-sequencer", "burrow-notifier", "burrow-digester"]
    # notifier and digester included, each in a process of its own
    assert [c for _, c in bench.worker_processes()] == [["sequencer"], ["notifier"],
                                                        ["digester"]]
    for name, consumers in bench.worker_processes():  # and as its own broker user
        app, _, _ = bench._worker(name, consumers, bench.directory, {})
        assert app.env["BURROW_AMQP_URL"].startswith(f"amqp://{plan.worker(name).user}:")


def test_the_gateway_tier_matches(bench: BenchStack) -> None:
    [gateway] = [env for module, _, env in launcher_processes({})
                 if module == plan.GATEWAY_MODULE]
    # ./dev up: one gateway of two Sanic workers; the bench: two one-worker gateway
    # processes on two ports (the load generator spreads clients over them evenly)
    assert gateway["BURROW_GATEWAY_WORKERS"] == str(plan.GATEWAY_WORKERS)
    assert bench.gateway_count == plan.GATEWAY_WORKERS
    assert gateway["user"] == plan.GATEWAY_USER
    # a developer's own choice still wins
    [mine] = [env for module, _, env in launcher_processes({"BURROW_GATEWAY_WORKERS": "4"})
              if module == plan.GATEWAY_MODULE]
    assert mine["BURROW_GATEWAY_WORKERS"] == "4"


def test_a_reduced_bench_stack_says_so() -> None:
    stack = BenchStack(notifications=False)
    try:
        assert [c for _, c in stack.worker_processes()] == [["sequencer"]]
        assert stack.description.startswith("REDUCED")
    finally:
        shutil.rmtree(stack.directory, ignore_errors=True)
    full = BenchStack(sequencers=2)
    try:
        assert [c for _, c in full.worker_processes()] == [["sequencer"], ["sequencer"],
                                                           ["notifier"], ["digester"]]
        assert full.description.startswith("full")
    finally:
        shutil.rmtree(full.directory, ignore_errors=True)


def test_the_bench_departs_from_dev_up_only_where_documented() -> None:
    assert set(BENCH_ENV) <= DOCUMENTED_DEPARTURES
    readme = (ROOT / "bench" / "README.md").read_text()
    for name in BENCH_ENV:
        assert name in readme, f"bench/README.md does not explain {name}"


def test_compose_runs_the_same_process_set() -> None:
    services: dict[str, Any] = yaml.safe_load(
        (ROOT / "docker-compose.yml").read_text())["services"]
    commands = [s.get("command", []) for s in services.values()]
    workers = sorted(c[3:] for c in commands if c[:3] == ["python", "-m", plan.WORKER_MODULE])
    # and the optional webhooks worker (under a profile: docs/events.md)
    assert workers == sorted(w.args for w in plan.workers(webhooks=True))
    gateway = services["gateway"]
    assert gateway["command"] == ["python", "-m", plan.GATEWAY_MODULE]
    assert str(gateway["environment"]["BURROW_GATEWAY_WORKERS"]) == str(plan.GATEWAY_WORKERS)
