"""The one place that maps ``database.driver`` to an engine.

Everything else asks the engine (:mod:`s3orch.store.engine`): the gateway's
store and worker locks, and ``s3orch-admin migrate``.  A new kind of database
joins by adding its engine to :data:`ENGINES` (and to the contract suite in
``tests/store``).
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorCore

from s3orch.config.model import DatabaseConfig
from s3orch.store.adbapi_typed import PoolFactory
from s3orch.store.engine import Engine
from s3orch.store.interface import MetadataStore
from s3orch.store.locks import WorkerLocks
from s3orch.store.migrate import MigrationReport
from s3orch.store.migrate import migrate_database as _migrate_engine
from s3orch.store.postgres import PostgresEngine
from s3orch.store.sqlite import SQLiteEngine
from s3orch.store.sqlstore import SQLStore

#: The drivers this build knows, by their ``database.driver`` name.
ENGINES = ("sqlite", "postgres")


class UnsupportedDriver(Exception):
    """The configured ``database.driver`` has no engine in this s3orch (or the engine
    cannot take what was asked of it)."""


def engine_for(config: DatabaseConfig, *, pool_factory: PoolFactory | None = None) -> Engine:
    """The engine of ``config.driver``, configured.

    ``pool_factory`` replaces adbapi's pool (tests: run transactions on the calling
    thread); only the SQLite engine takes one.
    """
    if config.driver == "sqlite":
        return SQLiteEngine(config, pool_factory=pool_factory)
    if config.driver == "postgres":
        if pool_factory is not None:
            raise UnsupportedDriver("a pool factory is supported by the sqlite driver only")
        return PostgresEngine(config)
    raise UnsupportedDriver(
        f"unknown database.driver {config.driver!r} (expected one of {', '.join(ENGINES)})"
    )


def open_store(
    config: DatabaseConfig, reactor: IReactorCore, *, pool_factory: PoolFactory | None = None
) -> MetadataStore:
    """Build (not start) the store for ``config``; the caller awaits ``start()``."""
    return SQLStore(engine_for(config, pool_factory=pool_factory), reactor)


def open_worker_locks(config: DatabaseConfig, reactor: IReactorCore) -> WorkerLocks:
    """The worker locks of ``config``'s engine (closed by the caller after the workers stop)."""
    return engine_for(config).worker_locks(reactor)


def migrate_database(config: DatabaseConfig) -> MigrationReport:
    """``s3orch-admin migrate``: apply the configured database's pending migrations
    (see :func:`s3orch.store.migrate.migrate_database`)."""
    return _migrate_engine(engine_for(config))
