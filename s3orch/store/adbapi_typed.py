"""Typed calls into ``twisted.enterprise.adbapi``, which ships without annotations.

The engines call an :class:`adbapi.ConnectionPool` through these few functions,
so every call site is checked against the types stated here (adbapi's own
methods return Any).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred

_T = TypeVar("_T")

#: Builds an adbapi pool: ``(dbapi module name, *connect args, **connect and cp_ keywords)``.
PoolFactory = Callable[..., adbapi.ConnectionPool]

#: adbapi's own pool, typed as a :data:`PoolFactory`.
DEFAULT_POOL: PoolFactory = adbapi.ConnectionPool


def run_with_connection(
    pool: adbapi.ConnectionPool, fn: Callable[..., _T], *args: Any, **kwargs: Any
) -> Deferred[_T]:
    """``fn(connection, *args, **kwargs)`` on one of the pool's connections (its thread)."""
    result: Deferred[_T] = pool.runWithConnection(fn, *args, **kwargs)
    return result


def connect(pool: adbapi.ConnectionPool) -> Any:
    """The calling pool thread's connection, opened if needed."""
    return pool.connect()


def disconnect(pool: adbapi.ConnectionPool, connection: Any) -> None:
    """Close the calling pool thread's connection and forget it."""
    pool.disconnect(connection)


def close(pool: adbapi.ConnectionPool) -> None:
    """Close every connection and stop the pool's threads."""
    pool.close()
