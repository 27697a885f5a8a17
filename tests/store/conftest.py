"""Fixtures for the metadata store contract suite.

pytest-twisted (loaded through its entry point) runs the default reactor in a
greenlet; async tests are decorated with ``@pytest_twisted.ensureDeferred``.
``store`` is parametrised over every engine, so one suite is the contract: a
new engine joins by adding itself to :data:`ENGINES` and :meth:`StoreFactory.engine`.

PostgreSQL: the session creates a throw-away database ``s3orch_test_<random>``
through the ``postgres`` maintenance database and drops it at the end; each
test gets a fresh schema in it (``search_path``), which is much faster than a
database per test and just as isolated.  The server is found through
``S3ORCH_TEST_POSTGRES_DSN`` (default ``host=127.0.0.1 port=5432``; libpq's
``PGUSER``/``PGPASSWORD`` apply).  When it cannot be reached the PostgreSQL
tests skip, except under CI (``CI`` set), where they fail: CI must prove both
engines.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
import pytest
import pytest_twisted

from s3orch.config.model import DatabaseConfig
from s3orch.store.engine import Engine
from s3orch.store.postgres import PostgresEngine
from s3orch.store.sqlite import SQLiteEngine
from s3orch.store.sqlstore import SQLStore
from tests.support.postgres import admin_dsn

#: Engines the contract runs against.
ENGINES = ["sqlite", "postgres"]

_schemas = itertools.count()


def postgres_admin_dsn() -> str:
    """The maintenance database of the test server."""
    return admin_dsn()


@dataclass
class PostgresDatabase:
    """The session's throw-away database."""

    name: str
    dsn: str

    def connect(self, **params: Any) -> Any:
        return psycopg2.connect(psycopg2.extensions.make_dsn(self.dsn, **params))

    def new_schema(self) -> str:
        """A fresh, empty schema; its name."""
        name = f"t{next(_schemas)}_{uuid.uuid4().hex[:6]}"
        conn = self.connect()
        try:
            conn.autocommit = True
            conn.cursor().execute(f'CREATE SCHEMA "{name}"')
        finally:
            conn.close()
        return name

    def schema_dsn(self, schema: str) -> str:
        return psycopg2.extensions.make_dsn(self.dsn, options=f"-c search_path={schema}")

    def config(self, schema: str, **overrides: Any) -> DatabaseConfig:
        """The ``database`` section of a gateway using ``schema`` (small pools, no TLS)."""
        fields: dict[str, Any] = {
            "dsn": self.schema_dsn(schema),
            "ssl_mode": "prefer",
            "min_conns": 1,
            "max_conns": 4,
            "max_conn_lifetime": 300.0,
        }
        fields.update(overrides)
        return DatabaseConfig(**fields)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> None:
    """Let a hypothesis test run once per engine under pytest-twisted.

    pytest-twisted replaces ``hypothesis.inner_test`` with a wrapper bound to the
    current test item, and wraps that wrapper again for the next parameter, which
    then runs against the first item (torn down by then).  Restoring the original
    before pytest-twisted's hook runs gives every parameter its own wrapper.
    """
    hypothesis = getattr(pyfuncitem.obj, "hypothesis", None)
    if hypothesis is None:
        return
    original = getattr(hypothesis, "_s3orch_inner_test", None)
    if original is None:
        hypothesis._s3orch_inner_test = hypothesis.inner_test
    else:
        hypothesis.inner_test = original


@pytest.fixture(scope="session")
def postgres_db() -> Iterator[PostgresDatabase]:
    admin_dsn = postgres_admin_dsn()
    try:
        admin = psycopg2.connect(admin_dsn)
    except psycopg2.OperationalError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI but unreachable ({admin_dsn}): {exc}")
        pytest.skip(f"PostgreSQL not reachable at {admin_dsn}: {exc}".strip())
    admin.autocommit = True
    name = f"s3orch_test_{uuid.uuid4().hex[:12]}"
    cur = admin.cursor()
    cur.execute(f"CREATE DATABASE {name} ENCODING 'UTF8' TEMPLATE template0")
    # A throw-away database needs no durable commits; this keeps the suite fast.
    cur.execute(f"ALTER DATABASE {name} SET synchronous_commit = off")
    try:
        yield PostgresDatabase(name, psycopg2.extensions.make_dsn(admin_dsn, dbname=name))
    finally:
        cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


class StoreFactory:
    """Makes stores of one engine on one database, so a test can reopen it (or open two)."""

    def __init__(self, kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.kind = kind
        self.tmp_path = tmp_path
        self.schema: str | None = None
        self.postgres: PostgresDatabase | None = None
        if kind == "postgres":
            self.postgres = request.getfixturevalue("postgres_db")
            self.schema = self.postgres.new_schema()

    def config(self, **overrides: Any) -> DatabaseConfig:
        if self.kind == "sqlite":
            return DatabaseConfig(path=str(self.tmp_path / "metadata.db"), **overrides)
        assert self.postgres is not None and self.schema is not None
        return self.postgres.config(self.schema, **overrides)

    def engine(self, **overrides: Any) -> Engine:
        config = self.config(**overrides)
        if self.kind == "sqlite":
            return SQLiteEngine(config)
        if self.kind == "postgres":
            return PostgresEngine(config)
        raise AssertionError(f"unknown engine {self.kind}")

    def make(self, **overrides: Any) -> SQLStore:
        from twisted.internet import reactor

        return SQLStore(self.engine(**overrides), reactor)

    def connect(self) -> Any:
        """A plain DB-API connection to the database (to read what the store wrote)."""
        if self.kind == "sqlite":
            return sqlite3.connect(self.tmp_path / "metadata.db", isolation_level=None)
        assert self.postgres is not None and self.schema is not None
        return psycopg2.connect(self.postgres.schema_dsn(self.schema))


@pytest.fixture(params=ENGINES)
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    return StoreFactory(request.param, tmp_path, request)


@pytest.fixture
def pg_factory(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """A PostgreSQL-only factory (engine-specific tests)."""
    return StoreFactory("postgres", tmp_path, request)


@pytest_twisted.async_yield_fixture()
async def store(store_factory: StoreFactory) -> AsyncIterator[SQLStore]:
    opened = store_factory.make()
    await opened.start()
    try:
        yield opened
    finally:
        await opened.close()
