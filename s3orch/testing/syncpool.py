"""Database transactions run synchronously on the calling thread, for clock-driven tests.

s3orch runs every transaction in an ``adbapi`` thread pool, so a test on a ``task.Clock`` would
have to wait for threads.  :class:`SynchronousConnectionPool` is an ``adbapi.ConnectionPool``
whose ``runWithConnection``/``runInteraction`` run the work at once, in the caller's thread,
and return an already-fired Deferred: the same transaction code on the same database with the
same connection settings, but deterministic.  Its thread pool is never started, so a pool holds
one connection (there is one thread).
"""

from __future__ import annotations

from typing import Any

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, maybeDeferred

__all__ = ["SynchronousConnectionPool"]


class SynchronousConnectionPool(adbapi.ConnectionPool):
    """An ``adbapi.ConnectionPool`` that runs each call on the caller's thread."""

    def runWithConnection(self, func: Any, *args: Any, **kw: Any) -> Deferred[Any]:
        return maybeDeferred(self._runWithConnection, func, *args, **kw)

    def runInteraction(self, interaction: Any, *args: Any, **kw: Any) -> Deferred[Any]:
        return maybeDeferred(self._runInteraction, interaction, *args, **kw)
