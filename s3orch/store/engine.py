"""What a database engine answers, so that nothing outside the engine names a driver.

As synapse's ``storage/engines`` does for its databases: one object per kind of
database (:class:`~s3orch.store.sqlite.SQLiteEngine`,
:class:`~s3orch.store.postgres.PostgresEngine`) answers every question whose
answer depends on the database: how its pools open (and the schema is brought
up to date on them), where one transaction runs and how it is retried, which
worker locks exist across instances, how an operator's admin connection and
the migration lock work, the SQL dialect, and which errors mean "unavailable,
try later" or "run the transaction again".  The metadata store
(:class:`~s3orch.store.sqlstore.SQLStore`) is written once against this
protocol; :mod:`s3orch.store.drivers` is the one place that maps
``database.driver`` to an engine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorCore

from s3orch.store.locks import WorkerLocks
from s3orch.store.migrate import Migrator
from s3orch.store.txn.base import Dialect, Notes, Tx

_P = ParamSpec("_P")
_T = TypeVar("_T")


class ConnectionPools(Protocol):
    """One store's open pools: where its transactions run."""

    def run_transaction(
        self,
        read_only: bool,
        idempotent: bool,
        notes: Notes,
        fn: Callable[Concatenate[Tx, Notes, _P], _T],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> Deferred[_T]:
        """``fn(tx, notes, *args)`` in one transaction off the reactor thread, retried whole
        as the engine allows.

        ``read_only`` asks for one consistent snapshot and no writes;
        ``idempotent=False`` forbids a re-run after an unknown COMMIT outcome.
        """

    def run_point_read(
        self,
        notes: Notes,
        fn: Callable[Concatenate[Tx, Notes, _P], _T],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> Deferred[_T]:
        """A short read-only transaction (a lookup by key, a bounded page): as ``run_transaction(True, True,
        ...)``, but the engine may run it on the calling thread when it can never wait there
        (SQLite in WAL mode)."""

    def close(self) -> None:
        """Close every connection (the pools cannot be used again)."""


class Engine(Migrator, Protocol):
    """A kind of database, configured (see the module docstring)."""

    @property
    def dialect(self) -> Dialect:
        """The SQL differences inside a transaction."""

    def describe(self) -> str:
        """The database, for messages: kind and where, never a password."""

    async def open_pools(self, reactor: IReactorCore) -> ConnectionPools:
        """Open the pools and bring the schema up to date; :class:`StoreError` (for
        the operator) when the database cannot be used as configured."""

    def worker_locks(self, reactor: IReactorCore) -> WorkerLocks:
        """The locks that keep each background worker on one instance at a time."""

    def is_unavailable(self, exc: BaseException) -> bool:
        """Whether ``exc`` (after the engine's retries) means the database cannot answer
        now (down, connection lost, locked, out of disk) rather than a bug."""

    def is_retryable(self, exc: BaseException) -> bool:
        """Whether running the failed transaction again, whole, may succeed."""
