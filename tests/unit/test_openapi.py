"""The OpenAPI description is the routes: every route of the gateway is described, with
its methods, and nothing is described that the gateway does not serve."""

from __future__ import annotations

import re

import pytest
from sanic import Sanic

from burrow.runtime.settings import Settings
from gateway import openapi
from gateway.app import create_app

ENV = {"BURROW_AMQP_URL": "amqp://u:p@127.0.0.1/b", "BURROW_JWT_SECRET": "s" * 32}


@pytest.fixture(scope="module")
def routes() -> set[tuple[str, str]]:
    Sanic.test_mode = True
    app = create_app(Settings.from_env({**ENV, "BURROW_DEV_MODE": "true"}))
    app.router.finalize()
    found = set()
    for route in app.router.routes:
        path = "/" + re.sub(r"<(\w+)(:[^>]*)?>", r"{\1}", route.path).lstrip("/")
        if path.startswith(("/demo", "/client")) or path == "/":
            continue  # dev mode's static files: not the API
        for method in route.methods:
            if method not in ("HEAD", "OPTIONS"):
                found.add((path.rstrip("/") or "/", method.lower()))
    return found


def test_every_route_is_described_and_nothing_else(routes: set[tuple[str, str]]) -> None:
    described = {(path, method) for path, ops in openapi.document()["paths"].items()
                 for method in ops if method in ("get", "put", "post", "delete", "patch")}
    assert routes - described == set(), "routes without a description"
    assert described - routes == set(), "descriptions of routes that do not exist"


def test_the_document_loads_as_openapi_3_1_with_every_operation() -> None:
    """schemathesis (the fuzzer's loader) reads every operation of it without error."""
    schemathesis = pytest.importorskip("schemathesis")
    schema = schemathesis.openapi.from_dict(openapi.document())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == sum(
        1 for ops in openapi.document()["paths"].values()
        for method in ops if method in ("get", "put", "post", "delete"))
