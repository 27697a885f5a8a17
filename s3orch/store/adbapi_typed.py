"""Typed calls into ``twisted.enterprise.adbapi``, which ships without annotations.

The engines call an :class:`adbapi.ConnectionPool` through these few functions,
so mypy checks every call site and the only ``type: ignore`` comments for
adbapi's missing annotations are here, one per pool method used.
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
    result: Deferred[_T] = pool.runWithConnection(fn, *args, **kwargs)  # type: ignore[no-untyped-call]
    return result


def connect(pool: adbapi.ConnectionPool) -> Any:
    """The calling pool thread's connection, opened if needed."""
    return pool.connect()  # type: ignore[no-untyped-call]


def disconnect(pool: adbapi.ConnectionPool, connection: Any) -> None:
    """Close the calling pool thread's connection and forget it."""
    pool.disconnect(connection)  # type: ignore[no-untyped-call]


def close(pool: adbapi.ConnectionPool) -> None:
    """Close every connection and stop the pool's threads."""
    pool.close()  # type: ignore[no-untyped-call]
