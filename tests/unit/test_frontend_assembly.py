"""The front door is assembled from per-kind handler tables, merged once."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from s3orch.auth.registry import CredentialRegistry
from s3orch.config import load_config_from_string
from s3orch.frontend.assembly import build_frontend, merge_routes
from s3orch.frontend.request import Route
from s3orch.s3.operations import OPERATION_NAMES
from s3orch.s3.unconfigured import DEFAULT_CONFIGURATION, NOT_CONFIGURED

CONFIG = """
buckets:
  - name: photos
    credentials: [{access_key_id: photoskey, secret_access_key: photossecret}]
backends:
  - {name: b1, endpoint: "http://127.0.0.1:1", bucket: x, access_key_id: a, secret_access_key: s}
"""


async def _noop(*args: object) -> None:
    return None


def _frontend(with_multipart: bool) -> dict[str, Route]:
    config = load_config_from_string(CONFIG)
    envelope = build_frontend(
        server=config.server,
        registry=CredentialRegistry(config.buckets),
        objects=object(),  # type: ignore[arg-type]  # never called: nothing is requested
        clock=Clock(),
        multipart=object() if with_multipart else None,  # type: ignore[arg-type]
    )
    return dict(envelope.routes)


def test_an_operation_claimed_by_two_tables_is_refused_at_build_time() -> None:
    with pytest.raises(ValueError, match="PutObject"):
        merge_routes({"PutObject": Route(_noop)}, {"GetObject": Route(_noop), "PutObject": Route(_noop)})


def test_every_route_is_an_s3_operation_the_resolver_can_name() -> None:
    routes = _frontend(with_multipart=True)
    assert set(routes) <= OPERATION_NAMES
    assert set(NOT_CONFIGURED) | set(DEFAULT_CONFIGURATION) <= set(routes)


def test_bodies_are_read_only_for_operations_that_take_one() -> None:
    routes = _frontend(with_multipart=True)
    with_body = {name for name, route in routes.items() if route.body is not None}
    assert with_body == {
        "PutObject", "UploadPart", "DeleteObjects", "CompleteMultipartUpload",
        "CreateBucket", "PutObjectAcl", "PutBucketAcl", "PutObjectTagging",
    }
    data = {name for name, route in routes.items() if route.body is not None and route.body.object_data}
    assert data == {"PutObject", "UploadPart"}


def test_without_a_multipart_service_multipart_operations_have_no_route() -> None:
    routes = _frontend(with_multipart=False)
    assert "CreateMultipartUpload" not in routes and "PutObject" in routes


FRONTEND = Path(__file__).resolve().parents[2] / "s3orch" / "frontend"


def _imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_the_request_module_is_a_leaf_of_the_front_door() -> None:
    imported = _imported_modules(FRONTEND / "request.py")
    assert not {name for name in imported if name.startswith("s3orch.frontend")}


def test_handlers_never_import_the_envelope_or_the_assembly() -> None:
    for path in (FRONTEND / "handlers").glob("*.py"):
        imported = _imported_modules(path)
        assert not {"s3orch.frontend.envelope", "s3orch.frontend.assembly"} & imported, path.name
