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
    missing = [route.path for route in ROUTES if route.cli_command not in commands]
    assert missing == []


def test_operation_ids_are_unique_and_path_segments_are_path_parameters() -> None:
    document = yaml.safe_load(render())
    ids = [op["operationId"] for methods in document["paths"].values() for op in methods.values()]
    assert len(ids) == len(set(ids)) == len(ROUTES)
    drain = document["paths"][PREFIX + "backends/{name}/drain"]
    assert set(drain) == {"post", "get", "delete"}
    for operation in drain.values():
        assert operation["parameters"] == [
            {"name": "name", "in": "path", "required": True, "description": "The backend's name.",
             "schema": {"type": "string"}}
        ]
    removal = document["paths"][PREFIX + "backends/{name}"]["delete"]
    assert [(p["name"], p["in"]) for p in removal["parameters"]] == [
        ("name", "path"), ("purge", "query"), ("confirm", "query")
    ]
    for route in ROUTES:  # every {segment} of a path is declared as a path parameter, and only those
        segments = {part[1:-1] for part in route.path.split("/") if part.startswith("{")}
        assert segments == {p.name for p in route.params if p.where == "path"}, route
