"""Shared fixtures: real S3 servers (moto_server) and real s3orch processes."""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import boto3
import psycopg2
import pytest
from botocore.config import Config

from tests.support import fuzz
from tests.support.configs import BackendSpec, BucketSpec, GatewayConfig
from tests.support.gateway import GatewayProcess
from tests.support.postgres import admin_dsn, create_database, drop_database
from tests.support.servers import MotoServer, create_bucket


def pytest_report_header() -> str:
    """Say how many fuzz examples this run uses (a local run takes a tenth of CI's)."""
    return fuzz.describe()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """One moto_server for the whole session; tests isolate by bucket name."""
    server = MotoServer()
    server.start()
    yield server
    server.stop()


def s3_client(endpoint: str, access_key: str, secret_key: str, **config: object) -> object:
    """A boto3 S3 client as a user would make one (path-style, us-east-1)."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1, "mode": "standard"},
            **config,  # type: ignore[arg-type]
        ),
    )


@pytest.fixture
def moto_backends(moto_server: MotoServer) -> Callable[..., list[BackendSpec]]:
    """Make N backends: fresh buckets on the session moto_server."""

    def make(count: int, quota: int = 0, **kwargs: object) -> list[BackendSpec]:
        specs = []
        for i in range(count):
            bucket = f"be{i}-{uuid.uuid4().hex[:12]}"
            create_bucket(moto_server.endpoint, bucket, "testing", "testing", "us-east-1")
            specs.append(
                BackendSpec(f"backend-{i + 1}", moto_server.endpoint, bucket, quota_bytes=quota, **kwargs)  # type: ignore[arg-type]
            )
        return specs

    return make


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[Callable[[GatewayConfig], GatewayProcess]]:
    """Start s3orch processes for a test; all are stopped at teardown."""
    started: list[GatewayProcess] = []

    def start(config: GatewayConfig, name: str = "gw") -> GatewayProcess:
        proc = GatewayProcess(tmp_path / f"{name}{len(started)}", config.render())
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.stop()


PHOTOS = BucketSpec("photos", "photoskey", "photossecret")
DOCS = BucketSpec("documents", "docskey", "docssecret")


_QUOTA_SQL = (
    "SELECT backend_name, bytes_limit, bytes_used, orphan_bytes, reserved_bytes, object_count"
    " FROM backend_quotas"
)


def _quota_dict(rows: list[Any]) -> dict[str, dict[str, int]]:
    return {
        r[0]: {"limit": r[1], "used": r[2], "orphan": r[3], "reserved": r[4], "objects": r[5]}
        for r in rows
    }


class HasWorkdir(Protocol):
    """A gateway process or an in-process harness: its SQLite file is ``<workdir>/s3orch.db``."""

    @property
    def workdir(self) -> Path: ...


def quota_rows(gateway: HasWorkdir) -> dict[str, dict[str, int]]:
    """Read backend_quotas straight from the gateway's SQLite file."""
    conn = sqlite3.connect(str(gateway.workdir / "s3orch.db"), timeout=10)
    try:
        rows = conn.execute(_QUOTA_SQL).fetchall()
    finally:
        conn.close()
    return _quota_dict(rows)


def postgres_quota_rows(dsn: str) -> dict[str, dict[str, int]]:
    """Read backend_quotas straight from a gateway's PostgreSQL database."""
    conn = psycopg2.connect(dsn)
    try:
        cur = conn.cursor()
        cur.execute(_QUOTA_SQL)
        rows = cur.fetchall()
    finally:
        conn.close()
    return _quota_dict(rows)


@pytest.fixture
def postgres_dsn() -> Iterator[str]:
    """A fresh, empty database on the shared test server for one test (dropped after it).

    Skips when PostgreSQL is unreachable, except under CI (``CI`` set), where it fails.
    """
    admin = admin_dsn()
    try:
        dsn = create_database(admin)
    except psycopg2.OperationalError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI but unreachable ({admin}): {exc}")
        pytest.skip(f"PostgreSQL not reachable at {admin}: {exc}".strip())
    yield dsn
    drop_database(dsn)


def backend_keys(spec: BackendSpec) -> list[tuple[str, int]]:
    """(key, size) of every object in a backend bucket, read directly from the backend."""
    client = s3_client(spec.endpoint, spec.access_key, spec.secret_key)
    out: list[tuple[str, int]] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=spec.bucket):  # type: ignore[attr-defined]
        out.extend((o["Key"], o["Size"]) for o in page.get("Contents", []))
    return out
