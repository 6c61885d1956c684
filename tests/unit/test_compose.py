"""docker-compose.yml cannot run here (no Docker engine), so it is checked against the
project: one image built once and run by every Burrow service, third-party images on
pinned tags, every command runs a module that exists, every BURROW_* variable is one the
processes or the launcher read, every mounted file exists, every service is
health-checked, Prometheus finds every replica of a scaled worker, the build context and
the image hold only what the processes need, and the demo override turns development
mode on for this machine's loopback only.
"""

from __future__ import annotations

import json
import posixpath
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from burrow.devstack import secrets
from burrow.runtime.variables import NAMES
from consumers import CONSUMERS
from queues import definitions
from tests.monitoring import promtool

ROOT = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
KNOWN_VARS = NAMES | {r.password_env for r in definitions.ROLES} | set(secrets.NAMES)
ONE_SHOT = {"rabbitmq-definitions"}
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
BURROW_IMAGE = f"burrow:{VERSION}"
DOCKERFILE = (ROOT / "Dockerfile").read_text()
PROMETHEUS_CONFIG = ROOT / "monitoring" / "prometheus.yml"


def runs_burrow(service: dict[str, Any]) -> bool:
    return service.get("command", [])[:2] == ["python", "-m"]


BURROW_SERVICES = sorted(n for n, s in SERVICES.items() if runs_burrow(s))
WORKER_SERVICES = sorted(n for n, s in SERVICES.items()
                         if s.get("command", [])[:3] == ["python", "-m", "consumers"])


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
    # and the image it runs in holds that module
    assert module.split(".")[0] in copied_sources(), f"the Dockerfile does not copy {module}"


# -- one image, built once ---------------------------------------------------------------

def test_exactly_one_service_builds_and_every_burrow_service_runs_its_image() -> None:
    """Compose builds once per service that has ``build``: one builder, and the others
    name its image and never pull it (there is no such image on a registry)."""
    builders = [n for n, s in SERVICES.items() if "build" in s]
    assert len(builders) == 1, f"more than one build: {builders}"
    [builder] = builders
    build = SERVICES[builder]["build"]
    context = build if isinstance(build, str) else build.get("context", ".")
    dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile",
                                                                        "Dockerfile")
    assert (ROOT / context / dockerfile).resolve() == ROOT / "Dockerfile"
    # built from this checkout on `up`, never looked for on a registry
    assert SERVICES[builder].get("pull_policy") == "build"
    assert SERVICES[builder]["image"] == BURROW_IMAGE
    assert runs_burrow(SERVICES[builder])
    for name in BURROW_SERVICES:
        assert SERVICES[name].get("image") == BURROW_IMAGE, f"{name} runs another image"
        if name != builder:
            assert SERVICES[name].get("pull_policy") == "never", f"{name} may pull {BURROW_IMAGE}"
    # nothing else claims the name
    assert [n for n, s in SERVICES.items() if s.get("image") == BURROW_IMAGE] == [
        n for n in SERVICES if n in BURROW_SERVICES]


PINNED_TAG = re.compile(r"^v?\d+\.\d+([.-][0-9A-Za-z.-]+)?$")


def pinned(image: str) -> bool:
    """``name:tag`` with a tag that names a release (``8.0``, ``v3.5.5``,
    ``4.2-management``): not ``latest``, not absent, not a variable."""
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and "$" not in image and bool(PINNED_TAG.match(tag))


@pytest.mark.parametrize("name", sorted(set(SERVICES) - set(BURROW_SERVICES)))
def test_third_party_images_are_pinned(name: str) -> None:
    image = SERVICES[name].get("image", "")
    assert pinned(image), f"{name}: {image!r} is not a pinned release tag"


def test_the_pinning_rule_refuses_floating_tags() -> None:
    for image in ("mongo", "mongo:latest", "grafana/grafana:latest", "prom/prometheus",
                  "localhost:5000/mongo", "mongo:${MONGO_TAG:-8.0}", "axllent/mailpit:edge"):
        assert not pinned(image), image
    for image in ("mongo:8.0", "rabbitmq:4.2-management", "prom/prometheus:v3.5.5",
                  "grafana/grafana:12.3.3", "axllent/mailpit:v1.30", "python:3.11-slim"):
        assert pinned(image), image


def test_the_dockerfile_starts_from_a_pinned_image() -> None:
    bases = [arguments.split()[0] for instruction, arguments in instructions()
             if instruction == "FROM"]
    assert bases and all(pinned(base) for base in bases), bases


# -- the Dockerfile and the build context ------------------------------------------------

def instructions() -> list[tuple[str, str]]:
    """The Dockerfile as (instruction, arguments), comments dropped and continued lines
    joined, as Docker reads it."""
    joined, current = [], ""
    for line in DOCKERFILE.splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        joined.append(current)
        current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in joined]


def copy_lines() -> list[list[str]]:
    """The source operands of every COPY of the build context (not ``--from`` stages)."""
    lines = []
    for instruction, arguments in instructions():
        words = arguments.split()
        if instruction == "COPY" and not any(w.startswith("--from") for w in words):
            lines.append([w for w in words[:-1] if not w.startswith("--")])
    return lines


def copied_sources() -> set[str]:
    return {posixpath.normpath(s) for line in copy_lines() for s in line}


def test_the_image_gets_what_its_install_needs_and_no_more() -> None:
    """``pip install`` needs the files pyproject names (readme, licence) and the packages;
    tests, the benchmark, docs and the whole checkout (``COPY . .``) stay out."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    sources = copied_sources()
    for name in [project["readme"], *project.get("license-files", [])]:
        assert name in sources, f"the Dockerfile does not copy {name}"
    assert {"burrow", "gateway", "consumers", "queues"} <= sources
    assert not sources & {".", "tests", "bench", "docs", "examples", "mutants"}, sources
    assert all((ROOT / s).exists() for s in sources)


def test_the_image_installs_the_server_extra_and_runs_as_a_user() -> None:
    installs = [arguments for instruction, arguments in instructions()
                if instruction == "RUN" and "pip install" in arguments]
    assert installs and all(re.search(r"""\.\[(?:[\w-]+,)*server(?:,[\w-]+)*\]""", i)
                            for i in installs), (
        f"the gateway and workers need the server extra: {installs}")
    users = [arguments.split()[0] for instruction, arguments in instructions()
             if instruction == "USER"]
    assert users and users[-1] not in {"root", "0", "0:0"}


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """.dockerignore as (exception, pattern) pairs, read as Docker's ignorefile does."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        pattern = line.strip()
        exception = pattern.startswith("!")
        pattern = posixpath.normpath(pattern.lstrip("!").strip()).lstrip("/")
        rules.append((exception, dockerignore_regex(pattern)))
    return rules


def dockerignore_regex(pattern: str) -> re.Pattern[str]:
    """One pattern as moby/patternmatcher compiles it: ``*`` and ``?`` within a path
    segment, ``**`` across any number of them (character classes are not used here)."""
    if "[" in pattern or "\\" in pattern:
        raise ValueError(f"not supported by this reader: {pattern}")
    regex, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                i += 1
            regex += ".*" if i >= len(pattern) else "(.*/)?"
            continue
        regex += {"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i]))
        i += 1
    return re.compile(f"^{regex}$")


def ignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether Docker leaves *path* out of the build context: the last rule matching the
    path or one of its parent directories decides (``MatchesOrParentMatches``)."""
    parts = path.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    excluded = False
    for exception, regex in rules:
        if exception == excluded and any(regex.match(c) for c in candidates):
            excluded = not exception
    return excluded


def test_the_dockerignore_reader_reads_like_docker() -> None:
    rules = [(False, dockerignore_regex(p)) for p in ("*", "**/__pycache__")]
    rules.insert(1, (True, dockerignore_regex("burrow")))
    assert ignored(".venv/bin/python", rules) and ignored("README.md", rules)
    assert not ignored("burrow/core/ids.py", rules)
    assert ignored("burrow/core/__pycache__/ids.cpython-311.pyc", rules)
    assert ignored("a/b/c.egg-info/x", [(False, dockerignore_regex("**/*.egg-info"))])
    assert not ignored("burrow.egg-info/PKG-INFO", [(False, dockerignore_regex("x/*.egg-info"))])


LEFT_OUT = [".venv/bin/python", ".env", ".git/HEAD", ".burrow/rabbitmq/definitions.json",
            "test-artifacts/demo.png", "tests/unit/test_compose.py", "bench/README.md",
            "mutants/burrow/core/ids.py", "node_modules/x/index.js",
            "gateway/web/node_modules/x/index.js", ".hypothesis/examples/x",
            ".pytest_cache/v/cache", "burrow.egg-info/PKG-INFO", "docs/deploy.md",
            "burrow/__pycache__/x.cpython-311.pyc", "queues/x.pyc", "burrow/.env",
            "docker-compose.yml", "monitoring/prometheus.yml"]


@pytest.mark.parametrize("path", LEFT_OUT)
def test_the_build_context_leaves_out_local_state_secrets_and_the_rest(path: str) -> None:
    assert ignored(path, dockerignore_rules()), f"{path} would go into the build context"


def test_the_build_context_holds_everything_the_dockerfile_copies() -> None:
    rules = dockerignore_rules()
    for source in copied_sources():
        files = [ROOT / source] if (ROOT / source).is_file() else [
            p for p in (ROOT / source).rglob("*") if p.is_file()]
        assert files, source
        for path in files:
            relative = path.relative_to(ROOT).as_posix()
            if "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            assert not ignored(relative, rules), f"{relative} is copied but not in the context"


# -- variables, users, mounts ------------------------------------------------------------

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


def check_mounts(name: str, service: dict[str, Any]) -> None:
    for volume in service.get("volumes", []):
        source = volume.split(":")[0]
        if source.startswith("."):
            assert (ROOT / source).exists(), f"{name} mounts missing {source}"
        else:
            assert source in COMPOSE["volumes"], f"{name} mounts undeclared volume {source}"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_mounted_files_exist(name: str) -> None:
    check_mounts(name, SERVICES[name])


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


# -- Prometheus --------------------------------------------------------------------------

def prometheus_config() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    return config


def jobs() -> dict[str, dict[str, Any]]:
    return {job["job_name"]: job for job in prometheus_config()["scrape_configs"]}


def test_prometheus_scrapes_services_that_exist() -> None:
    static = [t for job in jobs().values() for c in job.get("static_configs", [])
              for t in c["targets"]]
    named = [n for job in jobs().values() for c in job.get("dns_sd_configs", [])
             for n in c["names"]]
    assert {t.split(":")[0] for t in static} | set(named) <= set(SERVICES)
    assert f"gateway:{SERVICES['gateway']['environment']['BURROW_PORT']}" in static
    assert "rabbitmq:15692" in static


@pytest.mark.parametrize("name", WORKER_SERVICES)
def test_prometheus_finds_every_replica_of_a_worker(name: str) -> None:
    """``--scale sequencer=3`` makes three containers behind one service name; a static
    target would scrape whichever one DNS answers first. A-record discovery of the name
    gives one target per container, on the port the worker serves its metrics on."""
    [job] = [j for j in jobs().values()
             if any(name in c["names"] for c in j.get("dns_sd_configs", []))]
    assert job["job_name"] == f"burrow-{name}"
    assert not job.get("static_configs"), f"{name} is scraped as one static target too"
    [dns] = job["dns_sd_configs"]
    assert dns["names"] == [name] and dns.get("type") == "A"
    assert str(dns["port"]) == SERVICES[name]["environment"]["BURROW_METRICS_PORT"]
    assert SERVICES[name]["environment"]["BURROW_METRICS_HOST"] == "0.0.0.0"


def test_the_gateway_stays_a_static_target_for_its_alert() -> None:
    """BurrowGatewayNotReady fires on ``up{job="burrow-gateway"} == 0``: a DNS target whose
    last container is gone disappears (no ``up`` at all), a static one goes to 0."""
    alerts = (ROOT / "monitoring" / "alerts.yml").read_text()
    assert 'up{job="burrow-gateway"} == 0' in alerts
    assert jobs()["burrow-gateway"]["static_configs"] and not jobs()["burrow-gateway"].get(
        "dns_sd_configs")


def test_promtool_accepts_the_compose_prometheus_config() -> None:
    result = promtool("check", "config", "monitoring/prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: monitoring/prometheus.yml is valid" in result.stdout


def test_prometheus_loads_the_alert_rules_it_is_given() -> None:
    config = prometheus_config()
    mounts = dict(v.split(":")[:2] for v in SERVICES["prometheus"]["volumes"])
    config_dir = Path(mounts["./monitoring/prometheus.yml"]).parent
    for rule_file in config["rule_files"]:
        assert str(config_dir / rule_file) in mounts.values(), f"{rule_file} is not mounted"
    assert mounts["./monitoring/alerts.yml"] == str(config_dir / "alerts.yml")
    detailed = jobs()["rabbitmq-detailed"]
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


# -- secrets and exposure ----------------------------------------------------------------

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
    # the cookie and the key file are the cluster's (tests/unit/test_compose_cluster.py)
    assert asked == set(secrets.NAMES) - {"BURROW_RABBITMQ_COOKIE_SECRET",
                                          "BURROW_MONGO_KEYFILE_SECRET"}
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


# -- the demo override -------------------------------------------------------------------

class Override:
    """A value tagged ``!override`` (compose replaces the base file's value with it)."""

    def __init__(self, value: Any) -> None:
        self.value = value


class ComposeLoader(yaml.SafeLoader):
    """yaml.SafeLoader plus compose's merge tags, kept visible to the tests."""


ComposeLoader.add_constructor(
    "!override", lambda loader, node: Override(
        loader.construct_sequence(node) if isinstance(node, yaml.SequenceNode)
        else loader.construct_mapping(node) if isinstance(node, yaml.MappingNode)
        else loader.construct_scalar(node)))
DEV_FILE = ROOT / "docker-compose.dev.yml"
DEV: dict[str, Any] = yaml.load(DEV_FILE.read_text(), Loader=ComposeLoader)


def test_production_compose_has_development_mode_off() -> None:
    for name, service in SERVICES.items():
        env = service.get("environment", {})
        assert "BURROW_DEV_MODE" not in env and "BURROW_DEV_MODE_ANY_HOST" not in env, name


def test_the_demo_override_turns_dev_mode_on_for_loopback_only() -> None:
    """Inside its container the gateway listens on 0.0.0.0, so dev mode needs
    BURROW_DEV_MODE_ANY_HOST; what keeps others out is the port, published on 127.0.0.1
    and *replacing* the base file's ``8000:8000`` (a plain list would be added to it,
    and the dev-mode gateway would be published on every interface)."""
    assert set(DEV["services"]) == {"gateway"}
    gateway = DEV["services"]["gateway"]
    assert gateway["environment"]["BURROW_DEV_MODE"] == "true"
    assert gateway["environment"]["BURROW_DEV_MODE_ANY_HOST"] == "true"
    assert SERVICES["gateway"]["environment"]["BURROW_HOST"] == "0.0.0.0"
    ports = gateway["ports"]
    assert isinstance(ports, Override), "ports without !override are added to the base's"
    assert ports.value and all(str(p).startswith("127.0.0.1:") for p in ports.value)
    base_targets = {str(p).rsplit(":", 1)[-1] for p in SERVICES["gateway"]["ports"]}
    assert {str(p).rsplit(":", 1)[-1] for p in ports.value} == base_targets
    assert burrow_variables(gateway) <= KNOWN_VARS
    check_mounts("gateway (dev)", gateway)
    assert not {"image", "build", "command"} & set(gateway), "the demo runs the same image"


def test_the_deploy_guide_says_what_the_files_do() -> None:
    """docs/deploy.md quotes the compose files, the images and the rendered definitions:
    it changes with them."""
    guide = (ROOT / "docs" / "deploy.md").read_text()
    assert "docker compose -f docker-compose.yml -f docker-compose.dev.yml up -d" in guide
    assert "docker-compose.yml -f docker-compose.dev.yml" in DEV_FILE.read_text()
    assert "python -m queues.definitions --with-passwords --out" in guide
    assert BURROW_IMAGE in guide
    for name in sorted(set(SERVICES) - set(BURROW_SERVICES)):
        assert f"`{SERVICES[name]['image']}`" in guide, f"{name}'s image is not in the guide"
    for base in [a.split()[0] for i, a in instructions() if i == "FROM"]:
        assert f"`{base}`" in guide
    for plugin in re.findall(r"\w+", (ROOT / "rabbitmq" / "enabled_plugins").read_text()):
        assert f"`{plugin}`" in guide, plugin
    for role in definitions.ROLES:
        assert f"`{role.user}`" in guide and role.password_env in guide, role.user

    from queues import topology
    rendered = definitions.render(topology.build())
    counts = (f"{len(rendered['vhosts'])} vhost, {len(rendered['users'])} users, "
              f"{len(rendered['permissions'])} permissions, "
              f"{len(rendered['topic_permissions'])} topic permissions, "
              f"{len(rendered['exchanges'])} exchanges, {len(rendered['queues'])} queues, "
              f"{len(rendered['bindings'])} bindings")
    assert counts in " ".join(guide.split()), counts
    jobs_bindings = sum(b["source"] == topology.JOBS for b in rendered["bindings"])
    assert f"({jobs_bindings} with the default settings)" in guide
