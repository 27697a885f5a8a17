"""docs/openapi.yaml is the route table's, and the table is what the API serves."""

from __future__ import annotations

from pathlib import Path

import yaml

from s3orch.admin.handlers import AdminHandlers
from s3orch.admin.openapi import render
from s3orch.admin.routes import PREFIX, ROUTES

REPO = Path(__file__).resolve().parents[2]


def test_docs_openapi_yaml_is_not_stale() -> None:
    written = (REPO / "docs" / "openapi.yaml").read_text()
    assert written == render(), "regenerate: python -m s3orch.admin.openapi > docs/openapi.yaml"


def test_every_route_of_the_table_is_documented_with_its_method() -> None:
    document = yaml.safe_load(render())
    for route in ROUTES:
        operation = document["paths"][PREFIX + route.path][route.method.lower()]
        assert operation["summary"] == route.summary
        assert ("application/x-ndjson" in operation["responses"]["200"]["content"]) == route.streams
        assert {"401", "413", "500"} <= set(operation["responses"])
    assert sum(len(methods) for methods in document["paths"].values()) == len(ROUTES)


def test_every_route_has_a_handler_and_no_route_is_listed_twice() -> None:
    for route in ROUTES:
        assert callable(getattr(AdminHandlers, route.handler, None)), route
    assert len({(r.method, r.path) for r in ROUTES}) == len(ROUTES)


def test_every_route_has_an_s3orch_admin_command() -> None:
    from s3orch.cli.main import cli

    commands = set(cli.commands)
    missing = [route.path for route in ROUTES if route.path.replace("/", "-") not in commands]
    assert missing == []
