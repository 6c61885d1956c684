"""docker-compose.cluster.yml cannot run here (no Docker engine): its structure is
checked against the project, in the style of tests/unit/test_compose.py. Three RabbitMQ
nodes with classic-config peer discovery and one Erlang cookie, a three-member MongoDB
replica set with its one-shot init, two gateways behind a round-robin load balancer with
WebSocket upgrades, two sequencers, notifier, digester, Prometheus and Grafana; every
dependency names a service, every mounted file and command exists, images are pinned,
and no secret is written in the file.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from burrow.core import endpoints
from burrow.devstack import secrets
from burrow.storage.mongo_options import client_options
from queues import definitions
from tests.monitoring import promtool
from tests.unit.test_compose import KNOWN_VARS, ROOT, copied_sources, pinned

FILE = ROOT / "docker-compose.cluster.yml"
TEXT = FILE.read_text()
COMPOSE: dict[str, Any] = yaml.safe_load(TEXT)
SERVICES: dict[str, Any] = COMPOSE["services"]
NODES = ["rabbitmq-1", "rabbitmq-2", "rabbitmq-3"]
MEMBERS = ["mongo-1", "mongo-2", "mongo-3"]
ONE_SHOT = {"rabbitmq-definitions", "mongo-init"}
BURROW = sorted(n for n, s in SERVICES.items() if s.get("command", [])[:2] == ["python", "-m"])
PROCESSES = sorted(n for n in BURROW if n != "rabbitmq-definitions")
CLUSTER_CONF = ROOT / "rabbitmq" / "cluster.conf"
NGINX = ROOT / "loadbalancer" / "nginx.conf"


def resolved(value: str) -> str:
    """*value* with each ``${NAME:?message}`` replaced by a word, as compose would."""
    return re.sub(r"\$\{[^}]*\}", "value", value)


def test_the_whole_cluster_is_there() -> None:
    assert set(SERVICES) == {*NODES, *MEMBERS, *ONE_SHOT, "gateway-1", "gateway-2",
                             "loadbalancer", "sequencer-1", "sequencer-2", "notifier",
                             "digester", "prometheus", "grafana"}
    commands = {n: SERVICES[n]["command"][2:] for n in PROCESSES}
    assert commands == {"gateway-1": ["gateway"], "gateway-2": ["gateway"],
                        "sequencer-1": ["consumers", "sequencer"],
                        "sequencer-2": ["consumers", "sequencer"],
                        "notifier": ["consumers", "notifier"],
                        "digester": ["consumers", "digester"]}


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_depends_on_names_services_with_a_valid_condition(name: str) -> None:
    for other, rule in SERVICES[name].get("depends_on", {}).items():
        assert other in SERVICES, f"{name} depends on unknown {other}"
        wanted = ("service_completed_successfully" if other in ONE_SHOT
                  else "service_healthy")
        assert rule["condition"] == wanted, f"{name} -> {other}"


@pytest.mark.parametrize("name", sorted(set(SERVICES) - ONE_SHOT))
def test_every_long_running_service_is_health_checked(name: str) -> None:
    assert SERVICES[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_mounted_files_and_commands_exist(name: str) -> None:
    service = SERVICES[name]
    for volume in service.get("volumes", []):
        source = volume.split(":")[0]
        if source.startswith("."):
            assert (ROOT / source).exists(), f"{name} mounts missing {source}"
        else:
            assert source in COMPOSE["volumes"], f"{name} mounts undeclared volume {source}"
    command = service.get("command", [])
    if command[:2] == ["python", "-m"]:
        module = command[2]
        path = ROOT / Path(*module.split("."))
        assert (path / "__main__.py").exists() or path.with_suffix(".py").exists(), module
        assert module.split(".")[0] in copied_sources()
    else:  # a script or a file named in the container: it must be one mounted from the repo
        mounted = {v.split(":")[1]: v.split(":")[0] for v in service.get("volumes", [])}
        for word in command:
            if word.startswith("/burrow/"):
                assert word in mounted and (ROOT / mounted[word]).is_file(), f"{name}: {word}"


@pytest.mark.parametrize("name", sorted(set(SERVICES) - set(BURROW)))
def test_third_party_images_are_pinned(name: str) -> None:
    assert pinned(SERVICES[name].get("image", "")), name


def test_one_service_builds_the_image_the_others_run() -> None:
    builders = [n for n, s in SERVICES.items() if "build" in s]
    assert builders == ["rabbitmq-definitions"]
    image = SERVICES["rabbitmq-definitions"]["image"]
    assert {SERVICES[n]["image"] for n in BURROW} == {image}
    assert all(SERVICES[n]["pull_policy"] == "never" for n in PROCESSES)


def test_no_secret_is_written_in_the_file() -> None:
    """Every password, cookie and key comes from the environment with no fallback."""
    asked = set(re.findall(r"\$\{(BURROW_[A-Z_]+):\?", TEXT))
    secret = re.compile(r"PASSWORD|SECRET")
    assert not {n for n in re.findall(r"\$\{(BURROW_[A-Z_]+):?-", TEXT) if secret.search(n)}
    assert {n for n in re.findall(r"\$\{(BURROW_[A-Z_]+)", TEXT) if secret.search(n)} <= asked
    # ./dev secrets writes each (the webhooks' secret is not asked: no webhooks here)
    assert {n for n in asked if secret.search(n)} == set(secrets.NAMES) - {
        "BURROW_WEBHOOK_SECRET"}
    assert asked - set(secrets.NAMES) == {"BURROW_SMTP_URL"}  # the relay is yours to name
    users = re.findall(r"(?:amqp|mongodb)://[\w-]+:(.)", TEXT)
    assert users and set(users) == {"$"}, "a password written in a URL"


@pytest.mark.parametrize("name", PROCESSES)
def test_processes_get_every_node_and_their_own_broker_user(name: str) -> None:
    env = SERVICES[name]["environment"]
    for variable in env:
        assert variable in KNOWN_VARS, f"{name}: {variable}"
    urls = endpoints.split_urls(resolved(env["BURROW_AMQP_URL"]))
    assert [urlsplit(u).hostname for u in urls] == NODES
    role = name.rsplit("-", 1)[0] if name[-1].isdigit() else name
    assert {urlsplit(u).username for u in urls} == {definitions.role(f"burrow-{role}").user}


@pytest.mark.parametrize("name", PROCESSES)
def test_processes_get_the_replica_set_with_production_options(name: str) -> None:
    url = resolved(SERVICES[name]["environment"]["BURROW_MONGO_URL"])
    hosts = urlsplit(url).netloc.split("@")[1].split(",")
    assert hosts == [f"{m}:27017" for m in MEMBERS]
    assert "replicaSet=rs0" in url
    # the URL leaves the replica-set defaults to Burrow: majority writes and reads
    assert client_options(url) == {"w": "majority", "retryWrites": True,
                                   "retryReads": True, "readConcernLevel": "majority"}


def test_the_broker_nodes_discover_each_other_and_share_a_cookie() -> None:
    conf = dict(line.split(" = ", 1) for line in CLUSTER_CONF.read_text().splitlines()
                if " = " in line and not line.startswith("#"))
    assert conf["cluster_formation.peer_discovery_backend"] == "classic_config"
    assert [conf[f"cluster_formation.classic_config.nodes.{i}"] for i in (1, 2, 3)] == [
        f"rabbit@{n}" for n in NODES]
    assert conf["queue_leader_locator"] == "balanced"
    assert conf["cluster_partition_handling"] == "pause_minority"
    for node in NODES:
        service = SERVICES[node]
        assert service["hostname"] == node  # the node name peer discovery lists
        assert "./rabbitmq/cluster.conf:/etc/rabbitmq/rabbitmq.conf:ro" in service["volumes"]
        # Burrow's definitions rendered by the one-shot service, where the config loads them
        assert "rabbitmq-definitions:/etc/rabbitmq/burrow:ro" in service["volumes"]
        env = service["environment"]
        for key in ("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS", "RABBITMQ_CTL_ERL_ARGS"):
            assert env[key] == ("-setcookie ${BURROW_RABBITMQ_COOKIE_SECRET:?run ./dev "
                                "secrets to write .env}")
        assert SERVICES[node]["image"].startswith("rabbitmq:4.")
    assert conf["load_definitions"] == "/etc/rabbitmq/burrow/definitions.json"


def test_the_replica_set_is_initiated_with_its_three_members() -> None:
    init = (ROOT / "mongo" / "init-replica-set.js").read_text()
    assert re.findall(r'host: "([\w-]+):27017"', init) == MEMBERS
    assert '_id: "rs0"' in init
    for member in MEMBERS:
        assert SERVICES[member]["command"] == ["bash", "/burrow/member.sh"]
        assert SERVICES[member]["hostname"] == member
    member_sh = (ROOT / "mongo" / "member.sh").read_text()
    assert "--replSet rs0" in member_sh and "--keyFile" in member_sh
    init_service = SERVICES["mongo-init"]
    assert set(init_service["depends_on"]) == set(MEMBERS)
    mounted = {v.split(":")[1]: v.split(":")[0] for v in init_service["volumes"]}
    script = (ROOT / mounted[init_service["command"][1]]).read_text()
    assert "/burrow/init-replica-set.js" in script and "/burrow/init-replica-set.js" in mounted
    assert "--host mongo-1" in script


@pytest.mark.parametrize("script", ["mongo/member.sh", "mongo/init-replica-set.sh"])
def test_the_shell_scripts_parse(script: str) -> None:
    result = subprocess.run(["bash", "-n", str(ROOT / script)], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_the_load_balancer_round_robins_websockets_without_sticky_sessions() -> None:
    conf = NGINX.read_text()
    code = "\n".join(line.split("#")[0] for line in conf.splitlines())
    assert re.findall(r"server (gateway-\d):8000", code) == ["gateway-1", "gateway-2"]
    for sticky in ("ip_hash", "hash ", "sticky", "least_conn"):
        assert sticky not in code, sticky  # round robin: any gateway serves any client
    assert "proxy_set_header Upgrade $http_upgrade;" in code
    assert "proxy_set_header Connection $connection_upgrade;" in code
    assert "proxy_http_version 1.1;" in code
    lb = SERVICES["loadbalancer"]
    assert "./loadbalancer/nginx.conf:/etc/nginx/nginx.conf:ro" in lb["volumes"]
    assert set(lb["depends_on"]) == {"gateway-1", "gateway-2"}


def test_only_the_load_balancer_is_published_beyond_loopback() -> None:
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:") or name == "loadbalancer", (name, port)
    assert "ports" not in SERVICES["gateway-1"] and "ports" not in SERVICES["gateway-2"]


def test_prometheus_scrapes_every_process_and_node() -> None:
    mounts = SERVICES["prometheus"]["volumes"]
    config_path = next(v.split(":")[0] for v in mounts if v.endswith("prometheus.yml:ro"))
    config = yaml.safe_load((ROOT / config_path).read_text())
    targets = {t.split(":")[0] for job in config["scrape_configs"]
               for group in job.get("static_configs", []) for t in group["targets"]}
    assert targets == set(PROCESSES) | set(NODES)


def test_promtool_accepts_the_cluster_prometheus_config() -> None:
    result = promtool("check", "config", "monitoring/prometheus-cluster.yml")
    assert result.returncode == 0, result.stdout + result.stderr
