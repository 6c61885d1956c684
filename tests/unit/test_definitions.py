"""rabbitmq/definitions.json is the default topology, and roles have least privilege."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import pytest

from burrow.devstack import plan
from burrow.runtime.settings import Settings
from queues import definitions, topology

ROOT = Path(__file__).resolve().parents[2]


def test_checked_in_definitions_are_the_rendered_default_topology() -> None:
    checked_in = json.loads((ROOT / "rabbitmq" / "definitions.json").read_text())
    assert checked_in == definitions.render(topology.build()), (
        "regenerate: python -m queues.definitions > rabbitmq/definitions.json")


def test_checked_in_definitions_hold_no_password() -> None:
    checked_in = json.loads((ROOT / "rabbitmq" / "definitions.json").read_text())
    assert {u["password_hash"] for u in checked_in["users"]} == {""}


def test_password_hash_is_rabbitmq_salted_sha256() -> None:
    encoded = definitions.password_hash("s3cret", salt=b"\x90\x8d\xc6\x0a")
    raw = base64.b64decode(encoded)
    assert raw[:4] == b"\x90\x8d\xc6\x0a"
    assert raw[4:] == hashlib.sha256(b"\x90\x8d\xc6\x0as3cret").digest()
    assert definitions.password_hash("s3cret") != definitions.password_hash("s3cret")


def test_passwords_come_from_env_with_dev_fallback() -> None:
    got = definitions.passwords_from_env({"BURROW_RABBITMQ_GATEWAY_PASSWORD": "gw"})
    assert got["burrow-gateway"] == "gw"
    assert got["burrow-notifier"] == "burrow-notifier-dev"
    assert {r.password_env for r in definitions.ROLES} >= {
        "BURROW_RABBITMQ_SEQUENCER_PASSWORD", "BURROW_RABBITMQ_NOTIFIER_PASSWORD",
        "BURROW_RABBITMQ_DIGESTER_PASSWORD"}


ALL_SET = {r.password_env: f"pw-{r.user}" for r in definitions.ROLES}


def test_deployment_passwords_need_every_variable_and_no_public_one() -> None:
    assert definitions.deployment_passwords(ALL_SET) == {
        r.user: f"pw-{r.user}" for r in definitions.ROLES}
    unset = {k: v for k, v in ALL_SET.items() if k != "BURROW_RABBITMQ_ADMIN_PASSWORD"}
    with pytest.raises(ValueError, match="not set: BURROW_RABBITMQ_ADMIN_PASSWORD$"):
        definitions.deployment_passwords(unset)
    public = {**ALL_SET, "BURROW_RABBITMQ_BACKEND_PASSWORD": "burrow-backend-dev"}
    with pytest.raises(ValueError, match="public development password: "
                                         "BURROW_RABBITMQ_BACKEND_PASSWORD"):
        definitions.deployment_passwords(public)


def test_rendering_with_passwords_refuses_a_missing_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for name, value in ALL_SET.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("BURROW_RABBITMQ_GATEWAY_PASSWORD")
    out = tmp_path / "definitions.json"
    with pytest.raises(SystemExit) as exited:
        definitions.main(["--with-passwords", "--out", str(out)])
    assert exited.value.code == 2
    assert "not set: BURROW_RABBITMQ_GATEWAY_PASSWORD" in capsys.readouterr().err
    assert not out.exists()
    monkeypatch.setenv("BURROW_RABBITMQ_GATEWAY_PASSWORD", "pw-gateway")
    definitions.main(["--with-passwords", "--out", str(out)])
    users = {u["name"]: u["password_hash"] for u in json.loads(out.read_text())["users"]}
    assert all(users.values()) and len(users) == len(definitions.ROLES)


def allowed(user: str, kind: str, resource: str) -> bool:
    pattern = getattr(definitions.role(user), kind)
    return re.search(pattern, resource) is not None


def topic_allowed(user: str, kind: str, exchange: str, key: str) -> bool:
    """RabbitMQ's topic check: only on topic exchanges, any key without an entry."""
    topic = next((t for t in definitions.role(user).topics if t.exchange == exchange), None)
    return topic is None or re.search(getattr(topic, kind), key) is not None


@pytest.mark.parametrize(("user", "kind", "resource", "expected"), [
    ("burrow-gateway", "configure", "gateway.vm-1", True),
    ("burrow-gateway", "configure", "chat.ingress", False),
    ("burrow-gateway", "configure", "chat.seq.0", False),
    ("burrow-gateway", "write", "chat.ingress", True),
    ("burrow-gateway", "write", "burrow.jobs", False),
    ("burrow-gateway", "read", "chat.seq.0", False),
    ("burrow-gateway", "read", "notify.messages", False),
    ("burrow-sequencer", "configure", "chat.seq.0", True),
    ("burrow-sequencer", "write", "chat.ingress", False),
    ("burrow-sequencer", "read", "push.due", False),
    ("burrow-sequencer", "read", "gateway.vm-1", False),
    ("burrow-notifier", "configure", "chat.fanout", False),
    ("burrow-notifier", "configure", "digest.delay.1h", False),
    ("burrow-notifier", "write", "chat.fanout", False),
    ("burrow-notifier", "write", "chat.ingress", False),
    ("burrow-notifier", "read", "chat.seq.0", False),
    ("burrow-notifier", "read", "email.due", False),
    ("burrow-digester", "configure", "push.due", False),
    ("burrow-digester", "read", "push.due", False),
    ("burrow-digester", "read", "notify.messages", False),
    ("burrow-digester", "read", "chat.fanout", False),
    ("burrow-backend", "configure", "chat.fanout", False),
    ("burrow-backend", "write", "chat.ingress", True),
    ("burrow-backend", "write", "chat.fanout", False),
    ("burrow-backend", "read", "chat.seq.0", False),
    ("burrow-backend", "read", "backend.search-indexer", True),
    ("burrow-backend", "read", "burrow.jobs", False),
    # reports: gateways file them on their exchange only, backends consume them
    ("burrow-gateway", "write", "moderation.report", True),
    ("burrow-gateway", "write", "moderation.reports", False),
    ("burrow-gateway", "read", "moderation.reports", False),
    ("burrow-backend", "read", "moderation.reports", True),
    ("burrow-backend", "read", "moderation.dead", False),
    ("burrow-backend", "write", "moderation.report", False),
    ("burrow-notifier", "read", "moderation.reports", False),
    ("burrow-digester", "read", "moderation.reports", False),
])
def test_roles_have_least_privilege(user: str, kind: str, resource: str,
                                    expected: bool) -> None:
    assert allowed(user, kind, resource) is expected


def test_topology_doc_names_every_exchange_queue_and_user() -> None:
    doc = (ROOT / "docs" / "topology.md").read_text()
    topo = topology.build()
    names = ([e.name for e in topo.exchanges] + [q.name for q in topo.queues]
             + [r.user for r in definitions.ROLES])
    missing = [n for n in names if f"`{n}`" not in doc and n not in doc]
    assert not missing, f"docs/topology.md does not mention {missing}"


@pytest.mark.parametrize("worker", plan.WORKERS, ids=lambda w: w.name)
def test_a_worker_may_configure_exactly_the_part_it_declares(worker: plan.Worker) -> None:
    """Its user may declare (and delete) its own names and burrow.jobs, nothing else: no
    other role's namespace (the broker refuses it, test_permissions_broker)."""
    topo = topology.build()
    part = topology.part(topo, *worker.consumers)
    mine = {e.name for e in part.exchanges} | {q.name for q in part.queues}
    everything = {e.name for e in topo.exchanges} | {q.name for q in topo.queues} | {
        "gateway.vm-1", "backend.indexer", f"{worker.name}.stolen"}
    assert {n for n in everything if allowed(worker.user, "configure", n)} == mine


@pytest.mark.parametrize("worker", plan.WORKERS, ids=lambda w: w.name)
def test_a_worker_has_the_rights_its_part_needs(worker: plan.Worker) -> None:
    """What declare() does for the part: a queue that dead-letters needs read on itself
    and write on burrow.jobs; a binding needs write on its destination and read on its
    source, and on a topic exchange a binding key its topic permissions allow."""
    topo = topology.for_settings(Settings.from_env({
        "BURROW_AMQP_URL": "amqp://u:p@h/v", "BURROW_JWT_SECRET": "x" * 32,
        "BURROW_PUSH_DELAY": "90", "BURROW_DIGEST_HOURLY": "1800", "BURROW_SHARDS": "12"}))
    part = topology.part(topo, *worker.consumers)
    user = worker.user
    topic_exchanges = {e.name for e in topo.exchanges if e.type == "topic"}
    for queue in part.queues:
        if "x-dead-letter-exchange" in queue.arguments:
            assert allowed(user, "read", queue.name), queue.name
            assert allowed(user, "write", queue.arguments["x-dead-letter-exchange"])
    for b in part.bindings:
        assert allowed(user, "write", b.destination) and allowed(user, "read", b.source), b
        if b.source in topic_exchanges:
            assert topic_allowed(user, "read", b.source, b.routing_key), b


# (worker, routing keys on burrow.jobs it publishes with) for the settings' tiers above
PUBLISHES = {
    "burrow-sequencer": [],
    "burrow-notifier": ["push.due", "push.delay.90s", "push.retry.5s", "push.retry.30s", "push.retry.5m",
                        "push.dead", "notify.dead", "digest.delay.30m", "digest.delay.1d"],
    "burrow-digester": ["digest.delay.30m", "digest.delay.1d", "digest.retry.1m",
                        "digest.retry.10m", "digest.retry.1h", "digest.dead",
                        "email.retry.1m", "email.retry.10m", "email.retry.1h", "email.dead"],
    "burrow-backend": ["push.due", "push.delay.90s", "email.due"],
}


@pytest.mark.parametrize("user", sorted(PUBLISHES))
def test_each_role_publishes_only_its_own_jobs(user: str) -> None:
    keys = {q.name for q in topology.build(
        families=topology.job_families(push_delay=90, digest_periods=(1800, 86400))).queues}
    keys |= {"chat.seq.dead", "notify.messages", ""}
    allowed_keys = {k for k in keys if topic_allowed(user, "write", topology.JOBS, k)}
    assert allowed_keys == set(PUBLISHES[user])
