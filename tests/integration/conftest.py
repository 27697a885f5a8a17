"""Integration fixtures: real S3 servers as child processes (tests.support.servers).

``moto`` and ``weed`` are started once per session; every test gets a fresh
bucket, so tests never see each other's objects.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from s3orch.backend.s3 import S3Backend
from s3orch.config.model import BackendConfig
from tests.support.servers import MotoServer, WeedServer, create_bucket

WEED_ACCESS_KEY = "s3orch-test-key"
WEED_SECRET_KEY = "s3orch-test-secret-0123456789"

ServerT = MotoServer | WeedServer


@pytest.fixture(scope="session")
def moto(moto_server: MotoServer) -> MotoServer:
    """The session's one moto_server (in memory, signatures not checked): tests isolate by bucket,
    so the backend tests share the gateway tests' server rather than start a second one."""
    return moto_server


@pytest.fixture(scope="session")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WeedServer]:
    """One SeaweedFS ``weed mini`` for the session (checks SigV4, persists)."""
    data_dir: Path = tmp_path_factory.mktemp("weed")
    with WeedServer(data_dir, WEED_ACCESS_KEY, WEED_SECRET_KEY) as server:
        yield server


def fresh_bucket(server: ServerT) -> str:
    """Create a uniquely named bucket on ``server`` and return its name."""
    bucket = f"t-{uuid.uuid4().hex[:16]}"
    create_bucket(server.endpoint, bucket, server.access_key, server.secret_key, server.region)
    return bucket


@pytest.fixture
def moto_bucket(moto: MotoServer) -> str:
    """A fresh, empty bucket on the session moto_server."""
    return fresh_bucket(moto)


@pytest.fixture
def weed_bucket(weed: WeedServer) -> str:
    """A fresh, empty bucket on the session weed."""
    return fresh_bucket(weed)


@pytest.fixture(params=["moto", "weed"])
def server(request: pytest.FixtureRequest) -> ServerT:
    """Each test using this runs once against moto and once against weed."""
    found: ServerT = request.getfixturevalue(request.param)
    return found


def backend_config(server: ServerT, bucket: str, **overrides: Any) -> BackendConfig:
    """A BackendConfig for ``bucket`` on ``server`` (path-style, us-east-1)."""
    fields: dict[str, Any] = {
        "name": f"{type(server).__name__.lower()}-{bucket}",
        "endpoint": server.endpoint,
        "region": server.region,
        "bucket": bucket,
        "access_key_id": server.access_key,
        "secret_access_key": server.secret_key,
        "force_path_style": True,
    }
    fields.update(overrides)
    return BackendConfig(**fields)


@pytest_twisted.async_yield_fixture
async def make_backend() -> AsyncIterator[Callable[..., S3Backend]]:
    """Build S3Backends on the real reactor; all are closed after the test."""
    made: list[S3Backend] = []

    def make(
        server: ServerT, bucket: str | None = None, timeout: float = 10.0, **overrides: Any
    ) -> S3Backend:
        config = backend_config(server, bucket or fresh_bucket(server), **overrides)
        backend = S3Backend(config, reactor, timeout=timeout)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await backend.close()


@pytest.fixture
def backend(server: ServerT, make_backend: Callable[..., S3Backend]) -> S3Backend:
    """An S3Backend on a fresh bucket of ``server`` (moto and weed in turn)."""
    return make_backend(server)
