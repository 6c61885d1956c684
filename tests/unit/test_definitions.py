"""rabbitmq/definitions.json is the default topology, and roles have least privilege."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import pytest

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
    assert got["burrow-worker"] == "burrow-worker-dev"


def allowed(user: str, kind: str, resource: str) -> bool:
    pattern = getattr(definitions.role(user), kind)
    return re.search(pattern, resource) is not None


@pytest.mark.parametrize(("user", "kind", "resource", "expected"), [
    ("burrow-gateway", "configure", "gateway.vm-1", True),
    ("burrow-gateway", "configure", "chat.ingress", False),
    ("burrow-gateway", "configure", "chat.seq.0", False),
    ("burrow-gateway", "write", "chat.ingress", True),
    ("burrow-gateway", "write", "burrow.jobs", False),
    ("burrow-gateway", "read", "chat.seq.0", False),
    ("burrow-gateway", "read", "notify.messages", False),
    ("burrow-worker", "configure", "chat.seq.0", True),
    ("burrow-worker", "read", "gateway.vm-1", False),
    ("burrow-backend", "configure", "chat.fanout", False),
    ("burrow-backend", "write", "chat.ingress", True),
    ("burrow-backend", "write", "chat.fanout", False),
    ("burrow-backend", "read", "chat.seq.0", False),
    ("burrow-backend", "read", "backend.search-indexer", True),
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
