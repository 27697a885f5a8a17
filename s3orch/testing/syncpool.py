"""An adbapi connection pool that runs every call on the calling thread, at once.

For tests of code that uses the SQLite metadata store under a fake clock
(``MemoryReactorClock``): pass :class:`SynchronousConnectionPool` as the
``pool_factory`` of :class:`~s3orch.store.sqlite.SQLiteEngine` (or of
:func:`s3orch.store.open_store`), and every store call has its result the moment
it is made: no threads, no reactor iterations, no waiting.  The connections and
transactions are SQLite's own, exactly as in production; only the thread they
run on differs.  Never use it in a server: each call blocks its caller.

The reactor passed as ``cp_reactor`` must provide ``callWhenRunning`` and
``addSystemEventTrigger`` (a ``MemoryReactorClock`` does), as adbapi registers
start and shutdown hooks there; no thread is ever started.
"""

from __future__ import annotations

from typing import Any

from twisted.enterprise import adbapi
from twisted.internet import defer


class SynchronousConnectionPool(adbapi.ConnectionPool):
    """A :class:`adbapi.ConnectionPool` whose calls run synchronously (see the module)."""

    def start(self) -> None:
        """Mark the pool running without starting its thread pool (nothing runs there)."""
        self.running = True

    def runWithConnection(self, func: Any, *args: Any, **kw: Any) -> defer.Deferred[Any]:
        return defer.maybeDeferred(self._runWithConnection, func, *args, **kw)

    def runInteraction(self, interaction: Any, *args: Any, **kw: Any) -> defer.Deferred[Any]:
        return defer.maybeDeferred(self._runInteraction, interaction, *args, **kw)
