"""PostgreSQL connections: settings from config, per-session setup, reopening in place.

Shared by the engine's transaction pool (:mod:`s3orch.store.postgres`) and the
worker-lock session (:mod:`s3orch.store.postgres_locks`), so both connect the
same way: the configured DSN and fields, libpq keepalives, a recognisable
``application_name`` and the configured statement timeout.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg2
import psycopg2.extensions
from twisted.enterprise import adbapi
from twisted.internet import threads
from twisted.internet.defer import Deferred

from s3orch.config.model import DatabaseConfig
from s3orch.store import adbapi_typed
from s3orch.store.errors import StoreError

_T = TypeVar("_T")

#: libpq settings applied unless the DSN says otherwise: fail a dead server fast and
#: notice a silently dropped connection.
CONNECT_DEFAULTS: dict[str, Any] = {
    "connect_timeout": 10,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}
#: The oldest PostgreSQL accepted: what we use (identity columns, SKIP LOCKED,
#: ON CONFLICT) is older, but older releases are out of upstream support.
MIN_SERVER_VERSION = 120000

#: What the server or the connection to it going away looks like once the retries are
#: spent (OperationalError also covers statement timeouts and repeated 40001/40P01);
#: adbapi raises ConnectionLost when its rollback finds the connection dead.
UNAVAILABLE_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError, adbapi.ConnectionLost)

Cursor = Any  # psycopg2 ships no type information


@dataclass(frozen=True)
class PostgresSettings:
    """Connection parameters (psycopg2/libpq keywords) and pool shape, resolved from
    the ``database`` config section by :meth:`from_config` (its defaults are the config's)."""

    connect: dict[str, Any] = field(repr=False)  # holds the password
    min_conns: int
    max_conns: int
    max_conn_lifetime: float  # seconds; 0 keeps connections forever
    statement_timeout: float  # seconds; 0 leaves the server's setting

    @classmethod
    def from_config(cls, config: DatabaseConfig) -> PostgresSettings:
        """``dsn`` is used as given; the separate fields fill in only what it leaves out."""
        params: dict[str, Any] = (
            dict(psycopg2.extensions.parse_dsn(config.dsn)) if config.dsn else {}
        )
        fields = {
            "host": config.host,
            "port": str(config.port) if config.port else "",
            "dbname": config.database,
            "user": config.user,
            "password": config.password,
            "sslmode": config.ssl_mode,
        }
        for name, value in {**fields, **CONNECT_DEFAULTS}.items():
            if value not in ("", None) and name not in params:
                params[name] = value
        return cls(
            connect=params,
            min_conns=config.min_conns,
            max_conns=config.max_conns,
            max_conn_lifetime=config.max_conn_lifetime,
            statement_timeout=config.statement_timeout,
        )

    def describe(self) -> str:
        """Where we connect, for error messages (never the password)."""
        where = self.connect.get("host", "local socket")
        return f"{where}:{self.connect.get('port', 5432)}/{self.connect.get('dbname', '')}"


class AgedConnection(psycopg2.extensions.connection):  # type: ignore[misc]  # psycopg2 is untyped (Any)
    """A psycopg2 connection that knows its age (for ``max_conn_lifetime``)."""

    opened_at = 0.0


def open_connection(conn: Any, *, statement_timeout: float) -> None:
    """Per-connection settings (adbapi ``cp_openfun``).

    ``application_name`` makes our sessions recognisable in ``pg_stat_activity``;
    SET inside a committed transaction lasts for the session.
    """
    conn.set_client_encoding("UTF8")
    cur = conn.cursor()
    try:
        cur.execute("SET application_name = 's3orch'")
        set_statement_timeout(cur, statement_timeout)
    finally:
        cur.close()
    conn.commit()
    if isinstance(conn, AgedConnection):
        conn.opened_at = time.monotonic()


def set_statement_timeout(cur: Cursor, seconds: float) -> None:
    """The configured timeout for this session; 0 keeps the server's (or role's) own."""
    if seconds > 0:
        cur.execute(
            "SELECT set_config('statement_timeout', %s, false)",
            (f"{max(1, round(seconds * 1000))}ms",),
        )
    else:
        cur.execute("RESET statement_timeout")


class PooledConnection:
    """The connection of one pool thread, reopened in place.

    adbapi's own wrapper (``runWithConnection``) answers a failed call with a
    rollback and a ``SELECT 1``, and, while the server is down, with two logged
    tracebacks per call.  Recovery belongs to the caller, which knows when a
    retry is safe; this wrapper only reopens.  A connection that cannot be
    reopened (the server is away) is forgotten, so the next call on this thread
    connects afresh and an outage costs nothing but fast errors.
    """

    def __init__(self, pool: adbapi.ConnectionPool) -> None:
        self._pool = pool
        self._connection: Any = adbapi_typed.connect(pool)

    def reconnect(self) -> None:
        old, self._connection = self._connection, None
        if old is not None:
            adbapi_typed.disconnect(self._pool, old)
        self._connection = adbapi_typed.connect(self._pool)

    def __getattr__(self, name: str) -> Any:
        if self._connection is None:
            raise psycopg2.InterfaceError("the connection was lost and could not be reopened")
        return getattr(self._connection, name)


def run_with_connection(
    pool: adbapi.ConnectionPool, reactor: Any, fn: Callable[..., _T], *args: Any, **kwargs: Any
) -> Deferred[_T]:
    """``fn(connection, *args)`` in one of ``pool``'s threads (see :class:`PooledConnection`)."""
    return threads.deferToThreadPool(
        reactor, pool.threadpool, lambda: fn(PooledConnection(pool), *args, **kwargs)
    )


def raw_connection(conn: Any) -> Any:
    """The psycopg2 connection behind a :class:`PooledConnection` (or ``conn`` itself)."""
    return getattr(conn, "_connection", conn)


def is_broken(conn: Any) -> bool:
    """Whether the session behind ``conn`` is gone (closed by us, the server or the network)."""
    raw = raw_connection(conn)
    return raw is None or bool(getattr(raw, "closed", 0))


def check_server(conn: Any, settings: PostgresSettings) -> None:
    """Refuse a server too old, or a database not encoded in UTF-8 (keys are Unicode)."""
    cur = conn.cursor()
    try:
        cur.execute("SELECT current_setting('server_version_num')::int, current_setting('server_encoding')")
        version, encoding = cur.fetchone()
    finally:
        cur.close()
    conn.commit()
    if int(version) < MIN_SERVER_VERSION:
        raise StoreError(
            f"PostgreSQL {MIN_SERVER_VERSION // 10000} or newer is required;"
            f" {settings.describe()} runs {version}"
        )
    if str(encoding).upper() not in ("UTF8", "UTF-8"):
        raise StoreError(
            f"database {settings.describe()} is encoded {encoding}; s3orch needs UTF8"
            " (CREATE DATABASE ... ENCODING 'UTF8' TEMPLATE template0)"
        )
