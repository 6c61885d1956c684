"""docker-compose.yml cannot run here (no Docker engine), so it is checked against the
project: every command runs a module that exists, every BURROW_* variable is one the
processes or the launcher read, every mounted file exists, every service is health-checked.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from burrow.settings import NAMES
from consumers import CONSUMERS
from queues import definitions

ROOT = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
KNOWN_VARS = NAMES | {r.password_env for r in definitions.ROLES}
ONE_SHOT = {"rabbitmq-definitions"}


def test_the_whole_stack_is_there() -> None:
    assert {"rabbitmq", "mongo", "mailpit", "prometheus", "grafana", "gateway",
            "sequencer"} <= set(SERVICES)
    # every consumer runs as a service of its own
    consumers = {n for s in SERVICES.values() for n in s.get("command", [])[3:]
                 if s.get("command", [])[:3] == ["python", "-m", "consumers"]}
    assert consumers == set(CONSUMERS)


@pytest.mark.parametrize("name", sorted(set(SERVICES) - ONE_SHOT))
def test_every_long_running_service_is_health_checked(name: str) -> None:
    assert SERVICES[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


@pytest.mark.parametrize("name", [n for n, s in SERVICES.items() if "command" in s])
def test_commands_run_modules_of_the_project(name: str) -> None:
    command = SERVICES[name]["command"]
    assert command[:2] == ["python", "-m"], f"{name}: {command}"
    module = command[2]
    path = ROOT / Path(*module.split("."))
    assert (path / "__main__.py").exists() or path.with_suffix(".py").exists(), module
    if module == "consumers":
        assert set(command[3:]) <= set(CONSUMERS)
    assert SERVICES[name].get("build") == ".", f"{name} runs project code: build it"


def burrow_variables(service: dict[str, Any]) -> set[str]:
    env = service.get("environment", {})
    names = {k for k in env if k.startswith("BURROW_")}
    for value in env.values():
        names |= set(re.findall(r"\$\{(BURROW_[A-Z_]+)", str(value)))
    return names


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_variable_is_one_the_project_reads(name: str) -> None:
    unknown = burrow_variables(SERVICES[name]) - KNOWN_VARS
    assert not unknown, f"{name} sets {sorted(unknown)}, which nothing reads"


@pytest.mark.parametrize("name", ["gateway", "sequencer", "notifier", "digester"])
def test_processes_get_their_own_broker_user(name: str) -> None:
    env = SERVICES[name]["environment"]
    user = "burrow-gateway" if name == "gateway" else "burrow-worker"
    assert env["BURROW_AMQP_URL"].startswith(f"amqp://{user}:")
    assert env["BURROW_AMQP_URL"].endswith(f"/{definitions.VHOST}")
    assert env["BURROW_MONGO_URL"].startswith("mongodb://mongo:")


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_mounted_files_exist(name: str) -> None:
    for volume in SERVICES[name].get("volumes", []):
        source = volume.split(":")[0]
        if source.startswith("."):
            assert (ROOT / source).exists(), f"{name} mounts missing {source}"
        else:
            assert source in COMPOSE["volumes"], f"{name} mounts undeclared volume {source}"


def test_rabbitmq_loads_the_rendered_definitions_where_the_config_says() -> None:
    config = (ROOT / "rabbitmq" / "rabbitmq.conf").read_text()
    path = re.search(r"^load_definitions\s*=\s*(\S+)", config, re.MULTILINE)
    assert path is not None
    mounts = dict(v.split(":")[:2] for v in SERVICES["rabbitmq"]["volumes"])
    renderer = SERVICES["rabbitmq-definitions"]
    out = renderer["command"][renderer["command"].index("--out") + 1]
    rendered_volume = next(v.split(":")[0] for v in renderer["volumes"]
                           if out.startswith(v.split(":")[1]))
    assert Path(path.group(1)).parent == Path(mounts[rendered_volume])
    assert Path(path.group(1)).name == Path(out).name


def test_prometheus_scrapes_services_that_exist() -> None:
    config = yaml.safe_load((ROOT / "monitoring" / "prometheus.yml").read_text())
    targets = [t for job in config["scrape_configs"] for c in job["static_configs"]
               for t in c["targets"]]
    assert {t.split(":")[0] for t in targets} <= set(SERVICES)
    assert "gateway:8000" in targets and "rabbitmq:15692" in targets


def test_prometheus_loads_the_alert_rules_it_is_given() -> None:
    config = yaml.safe_load((ROOT / "monitoring" / "prometheus.yml").read_text())
    mounts = dict(v.split(":")[:2] for v in SERVICES["prometheus"]["volumes"])
    config_dir = Path(mounts["./monitoring/prometheus.yml"]).parent
    for rule_file in config["rule_files"]:
        assert str(config_dir / rule_file) in mounts.values(), f"{rule_file} is not mounted"
    assert mounts["./monitoring/alerts.yml"] == str(config_dir / "alerts.yml")
    detailed = next(j for j in config["scrape_configs"] if j["job_name"] == "rabbitmq-detailed")
    assert detailed["metrics_path"] == "/metrics/detailed"
    assert {"queue_coarse_metrics", "queue_consumer_count"} <= set(detailed["params"]["family"])


def test_grafana_provisions_the_datasource_and_the_dashboard() -> None:
    provisioning = ROOT / "monitoring" / "grafana" / "provisioning"
    mounts = dict(v.split(":")[:2] for v in SERVICES["grafana"]["volumes"])
    assert mounts["./monitoring/grafana/provisioning"] == "/etc/grafana/provisioning"
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    [provider] = yaml.safe_load((provisioning / "dashboards" / "burrow.yml").read_text())[
        "providers"]
    assert mounts["./monitoring/grafana/dashboards"] == provider["options"]["path"]

    dashboard = json.loads((ROOT / "monitoring" / "grafana" / "dashboards" / "burrow.json")
                           .read_text())
    assert dashboard["uid"] == "burrow" and dashboard["title"] == "Burrow"
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels and all(p["targets"] for p in panels)
    for panel in panels:  # every query goes to the provisioned datasource
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        assert all(t["datasource"]["uid"] == source["uid"] for t in panel["targets"])
    titles = " ".join(p["title"].lower() for p in panels)
    for topic in ("sends", "ack", "fan-out", "connections", "queue depth", "dead queues",
                  "lag", "ownership", "push", "email", "dependencies"):
        assert topic in titles, topic
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
