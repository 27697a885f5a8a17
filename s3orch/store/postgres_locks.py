"""Worker locks across instances: PostgreSQL session advisory locks on one dedicated connection.

Why session locks on one connection, not ``pg_try_advisory_xact_lock`` in the
tick's transaction: a tick is many short transactions plus backend calls that
take minutes; an xact lock would keep one transaction open (and one pooled
connection idle in it) for the whole tick.  The cost: if the dedicated
connection drops mid-tick, PostgreSQL frees its locks and another instance may
start the same worker while this tick finishes; workers keep their per-row
safety for that (see :mod:`s3orch.store.locks`).  Lock ids:
:mod:`s3orch.store.lock_ids`.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import psycopg2
from twisted.enterprise import adbapi
from twisted.internet.interfaces import IReactorCore
from twisted.logger import Logger

from s3orch.store import adbapi_typed
from s3orch.store.errors import StoreUnavailable
from s3orch.store.postgres_connection import (
    UNAVAILABLE_ERRORS,
    is_broken,
    open_connection,
    run_with_connection,
)


def _lock_call(conn: Any, sql: str, worker_id: int, acquire: bool) -> tuple[bool, bool]:
    """Run one lock function; returns (its answer, whether the session was lost first).

    A lost session has already lost every lock it held, so after reconnecting a
    try-lock is simply tried again and an unlock has nothing left to do.
    """
    lost = False
    for attempt in range(2):
        try:
            cur = conn.cursor()
            try:
                cur.execute(sql, (worker_id,))
                answer = bool(cur.fetchone()[0])
            finally:
                cur.close()
            conn.commit()  # session locks outlive the transaction; just do not leave one open
            return answer, lost
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            if attempt or not is_broken(conn):
                raise
            lost = True
            conn.reconnect()
            if not acquire:
                return False, lost
    raise AssertionError("unreachable")  # pragma: no cover


class PostgresWorkerLocks:
    """Session advisory locks on one dedicated connection (see the module docstring)."""

    _log = Logger(namespace="s3orch.store")

    def __init__(self, connect_kwargs: dict[str, Any], reactor: IReactorCore) -> None:
        self._held: set[int] = set()
        self._reactor = reactor
        # One thread, one connection: every lock of this instance lives in one session.
        self._pool: adbapi.ConnectionPool | None = adbapi_typed.DEFAULT_POOL(
            "psycopg2",
            cp_min=1,
            cp_max=1,
            cp_reconnect=True,
            cp_openfun=partial(open_connection, statement_timeout=0.0),
            cp_reactor=reactor,
            cp_name="s3orch-worker-locks",
            **connect_kwargs,
        )

    async def _call(self, sql: str, worker_id: int, acquire: bool) -> bool:
        if self._pool is None:
            raise RuntimeError("the worker locks are closed")
        try:
            answer, lost = await run_with_connection(
                self._pool, self._reactor, _lock_call, sql, worker_id, acquire
            )
        except UNAVAILABLE_ERRORS as exc:
            raise StoreUnavailable(f"worker locks: {exc}".strip()) from exc
        if lost:
            self._log.warn(
                "the worker-lock connection was lost; locks held by running workers"
                " may now be taken by another instance",
                component="store",
            )
        return bool(answer)

    async def try_lock(self, worker_id: int) -> bool:
        # Locks are re-entrant per session, so this process's own holders are kept here.
        if worker_id in self._held:
            return False
        self._held.add(worker_id)
        try:
            got = await self._call("SELECT pg_try_advisory_lock(%s)", worker_id, True)
        except BaseException:
            self._held.discard(worker_id)
            raise
        if not got:
            self._held.discard(worker_id)
        return got

    async def release(self, worker_id: int) -> None:
        if worker_id not in self._held:
            return
        try:
            await self._call("SELECT pg_advisory_unlock(%s)", worker_id, False)
        finally:
            self._held.discard(worker_id)

    async def close(self) -> None:
        self._held.clear()
        pool, self._pool = self._pool, None
        if pool is not None:
            adbapi_typed.close(pool)  # ending the session frees its locks
