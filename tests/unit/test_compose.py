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

from burrow.devstack import secrets
from burrow.runtime.settings import NAMES
from consumers import CONSUMERS
from queues import definitions

ROOT = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
KNOWN_VARS = NAMES | {r.password_env for r in definitions.ROLES} | set(secrets.NAMES)
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
    role = definitions.role(f"burrow-{name}")  # each worker kind too, with its secret
    assert env["BURROW_AMQP_URL"].startswith(f"amqp://{role.user}:${{{role.password_env}:?")
    assert env["BURROW_AMQP_URL"].endswith(f"/{definitions.VHOST}")
    assert "@mongo:27017/burrow" in env["BURROW_MONGO_URL"]


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


def test_no_secret_has_a_fallback_and_dev_secrets_writes_each_one() -> None:
    """A default password in a compose file is one everyone knows: every secret is
    ``${NAME:?...}`` (compose refuses to start without it), and ``./dev secrets`` writes
    exactly those."""
    text = (ROOT / "docker-compose.yml").read_text()
    asked = set(re.findall(r"\$\{(BURROW_[A-Z_]+):\?", text))
    defaulted = set(re.findall(r"\$\{(BURROW_[A-Z_]+):?-", text))
    secret = re.compile(r"PASSWORD|SECRET")
    assert not {n for n in defaulted if secret.search(n)}, "a secret with a fallback"
    assert {n for n in re.findall(r"\$\{(BURROW_[A-Z_]+)", text) if secret.search(n)} <= asked
    assert asked == set(secrets.NAMES)
    assert "-dev}" not in text and "not-for-production" not in text


def test_only_the_gateway_is_published_beyond_loopback() -> None:
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            if name == "gateway":
                continue
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"
    assert "ports" not in SERVICES["mongo"]  # the compose network only


def test_mongodb_requires_a_login_and_burrow_has_its_own_user() -> None:
    env = SERVICES["mongo"]["environment"]
    assert env["MONGO_INITDB_ROOT_USERNAME"] and "BURROW_MONGO_ROOT_PASSWORD" in str(
        env["MONGO_INITDB_ROOT_PASSWORD"])
    init = (ROOT / "mongo" / "init-burrow-user.js").read_text()
    assert 'role: "readWrite", db: "burrow"' in init and "process.env.BURROW_MONGO_PASSWORD" in init
    url = COMPOSE["x-burrow-env"]["BURROW_MONGO_URL"]
    assert url.startswith("mongodb://burrow:${BURROW_MONGO_PASSWORD:?")
    assert url.endswith("@mongo:27017/burrow?authSource=burrow")


def test_grafana_has_no_anonymous_access() -> None:
    env = SERVICES["grafana"]["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert "BURROW_GRAFANA_ADMIN_PASSWORD" in env["GF_SECURITY_ADMIN_PASSWORD"]


def test_dev_secrets_writes_fresh_secrets_once(tmp_path: Path) -> None:
    out = tmp_path / ".env"
    assert secrets.main(["--out", str(out)]) == 0
    values = dict(line.split("=", 1) for line in out.read_text().splitlines()
                  if line and not line.startswith("#"))
    assert set(values) == set(secrets.NAMES)
    assert all(len(v) == 64 for v in values.values()) and len(set(values.values())) == len(values)
    assert out.stat().st_mode & 0o777 == 0o600
    before = out.read_text()
    assert secrets.main(["--out", str(out)]) == 1  # never overwritten
    assert out.read_text() == before


def test_the_image_gets_what_its_install_needs_and_no_secrets() -> None:
    """``pip install .`` in the Dockerfile needs the files pyproject names (the licence);
    the build context leaves out .env (./dev secrets) and local state."""
    import tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    copied = " ".join(line for line in (ROOT / "Dockerfile").read_text().splitlines()
                      if line.startswith("COPY"))
    for name in [project["readme"], *project.get("license-files", [])]:
        assert name in copied.split(), f"the Dockerfile does not copy {name}"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", ".venv", ".burrow", ".git"} <= set(ignored)
