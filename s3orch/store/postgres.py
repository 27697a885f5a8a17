"""The PostgreSQL metadata store: many s3orch instances on one database.

The transactions are the shared ones of :mod:`s3orch.store.txn` (the SQLite
store runs the same functions); what differs is how correctness survives
concurrent writers in other processes, and that is :class:`PostgresDialect`
plus the transaction runner here:

* Write transactions run at READ COMMITTED and lock what they decide on
  (``FOR UPDATE`` on the rows, in one order: object key, object row,
  locations, quota rows by name); a commit also takes a transaction-scoped
  advisory lock on its (bucket, key), which covers a key that has no row yet.
  When PostgreSQL still reports a deadlock (40P01) or a serialization failure
  (40001), the whole transaction function is retried.
* Reads that take several queries (an object and its locations, a listing)
  run in one REPEATABLE READ, READ ONLY snapshot, so an overwrite committing
  in between can never pair one version's metadata with another's copies.
* A connection that drops is reopened and the transaction retried when that
  is safe: always when it failed before COMMIT was sent; after that only if
  re-running it is a no-op (a retried reserve finds its intent, a retried
  commit finds its write current and returns []).  When the server stays
  away the store raises :class:`~s3orch.store.interface.StoreUnavailable`.
* Cleanup rows are claimed with ``FOR UPDATE SKIP LOCKED`` plus
  ``claimed_at``/``claimed_by``, so two instances never work on the same row.

Timestamps are epoch-second doubles and JSON is text, as in SQLite, so both
engines read back identical records.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar, cast

import psycopg2
import psycopg2.errors
import psycopg2.extensions
from twisted.enterprise import adbapi
from twisted.internet import threads
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorCore
from twisted.logger import Logger

from s3orch.store import migrate
from s3orch.store.interface import StoreError, StoreUnavailable
from s3orch.store.locks import OBJECT_KEY_LOCK_CLASS, UPLOAD_LIMIT_LOCK_CLASS
from s3orch.store.sqlstore import SQLStore
from s3orch.store.txn import Notes, RetryTransaction, Tx

if TYPE_CHECKING:
    from s3orch.store import DatabaseSection

_P = ParamSpec("_P")
_T = TypeVar("_T")

#: Attempts per transaction (serialization failures, deadlocks, dropped connections).
TXN_ATTEMPTS = 5
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



# --- configuration -------------------------------------------------------------------


@dataclass(frozen=True)
class PostgresSettings:
    """Connection parameters (psycopg2/libpq keywords) and pool shape."""

    connect: dict[str, Any] = field(repr=False)  # holds the password
    min_conns: int = 1
    max_conns: int = 10
    max_conn_lifetime: float = 300.0  # seconds; 0 keeps connections forever
    statement_timeout: float = 0.0  # seconds; 0 leaves the server's setting

    @classmethod
    def from_config(cls, config: DatabaseSection) -> PostgresSettings:
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


# --- connections and transactions (run in pool threads) -----------------------------


class _Connection(psycopg2.extensions.connection):  # type: ignore[misc]
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
        _set_statement_timeout(cur, statement_timeout)
    finally:
        cur.close()
    conn.commit()
    if isinstance(conn, _Connection):
        conn.opened_at = time.monotonic()


def _set_statement_timeout(cur: Cursor, seconds: float) -> None:
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
    tracebacks per call.  Recovery belongs to :func:`_run_txn`, which knows
    when a retry is safe; this wrapper only reopens.  A connection that cannot
    be reopened (the server is away) is forgotten, so the next call on this
    thread connects afresh and an outage costs nothing but fast errors.
    """

    def __init__(self, pool: adbapi.ConnectionPool) -> None:
        self._pool = pool
        self._connection: Any = pool.connect()  # type: ignore[no-untyped-call]

    def reconnect(self) -> None:
        old, self._connection = self._connection, None
        if old is not None:
            self._pool.disconnect(old)  # type: ignore[no-untyped-call]  # closes and forgets it
        self._connection = self._pool.connect()  # type: ignore[no-untyped-call]

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


def _raw(conn: Any) -> Any:
    """The psycopg2 connection behind a :class:`PooledConnection` (or ``conn`` itself)."""
    return getattr(conn, "_connection", conn)


def _is_broken(conn: Any) -> bool:
    raw = _raw(conn)
    return raw is None or bool(raw.closed)


def _is_conflict(exc: BaseException) -> bool:
    """A failure that running the transaction again resolves."""
    if isinstance(exc, RetryTransaction | psycopg2.errors.SerializationFailure | psycopg2.errors.DeadlockDetected):
        return True
    return getattr(exc, "pgcode", None) in ("40001", "40P01")


def _reconnect(conn: Any) -> None:
    reconnect = getattr(conn, "reconnect", None)
    if reconnect is None:  # a bare connection (tests): nothing to reopen with
        raise StoreError("the database connection was lost")
    reconnect()


def _recycle_if_old(conn: Any, lifetime: float) -> None:
    opened = getattr(_raw(conn), "opened_at", 0.0)
    if lifetime > 0 and opened and time.monotonic() - opened > lifetime:
        _reconnect(conn)


def _run_txn(
    conn: Any,
    read_only: bool,
    idempotent: bool,
    lifetime: float,
    notes: Notes,
    fn: Callable[Concatenate[Tx, Notes, _P], _T],
    *args: _P.args,
    **kwargs: _P.kwargs,
) -> _T:
    """Run ``fn`` in one transaction, retrying the whole of it when that is safe.

    ``idempotent`` says whether re-running after an unknown COMMIT outcome (the
    connection died while committing) does no harm.
    """
    for attempt in range(1, TXN_ATTEMPTS + 1):
        notes.warnings.clear()
        _recycle_if_old(conn, lifetime)
        commit_sent = False
        try:
            # Carried by psycopg2's own BEGIN, so it costs no round trip.
            _raw(conn).set_session(
                isolation_level="REPEATABLE READ" if read_only else "READ COMMITTED",
                readonly=read_only,
            )
            cur = conn.cursor()
            try:
                result = fn(Tx(cur, POSTGRES), notes, *args, **kwargs)
            finally:
                cur.close()
            commit_sent = True
            conn.commit()
            return result
        except BaseException as exc:
            broken = _is_broken(conn)
            if not broken:
                try:
                    _raw(conn).rollback()
                except psycopg2.Error:
                    broken = True  # the connection died under the failed transaction
            lost = broken and isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError)
            if attempt < TXN_ATTEMPTS:
                if _is_conflict(exc) and not broken:
                    time.sleep(random.uniform(0, 0.01 * 2**attempt))
                    continue
                if lost and (idempotent or not commit_sent):
                    _reconnect(conn)
                    continue
            if broken:
                try:  # leave the thread a working connection rather than a dead one
                    _reconnect(conn)
                except Exception:  # the server is still away: the next call connects afresh
                    pass
            raise
    raise AssertionError("unreachable")  # pragma: no cover


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


def admin_connection(config: DatabaseSection) -> tuple[Any, str]:
    """A plain connection for ``s3orch-admin`` (no statement timeout), and where it points."""
    settings = PostgresSettings.from_config(config)
    try:
        conn = psycopg2.connect(**settings.connect)
        try:
            open_connection(conn, statement_timeout=0.0)
            check_server(conn, settings)
        except BaseException:
            conn.close()
            raise
    except psycopg2.Error as exc:
        raise StoreError(
            f"cannot use PostgreSQL database {settings.describe()}: {exc}".strip()
        ) from exc
    return conn, settings.describe()


def _run_migrations(conn: Any, statement_timeout: float) -> list[int]:
    """Migrate without the configured statement timeout: a migration, or the wait for
    another instance's migration, may take longer than any single query should."""
    cur = conn.cursor()
    try:
        cur.execute("SET statement_timeout = 0")
        conn.commit()
        return migrate.migrate(conn, "postgres")
    finally:
        conn.rollback()
        _set_statement_timeout(cur, statement_timeout)
        conn.commit()
        cur.close()


def key_lock_id(bucket: str, key: str) -> int:
    """The second half of an object key's advisory lock: a stable signed 32-bit hash.

    Two keys sharing a hash only wait for each other; correctness never depends
    on it being unique.  Bucket names cannot contain ``/``, so the pair is unambiguous.
    """
    digest = hashlib.blake2b(f"{bucket}/{key}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


class PostgresDialect:
    """The shared SQL as PostgreSQL takes it: ``%s`` markers, row locks, advisory key locks."""

    placeholder = "%s"
    row_locks = True

    def lock_key(self, tx: Tx, bucket: str, key: str) -> None:
        tx.execute(
            "SELECT pg_advisory_xact_lock(?, ?)", (OBJECT_KEY_LOCK_CLASS, key_lock_id(bucket, key))
        )

    def lock_bucket_uploads(self, tx: Tx, bucket: str) -> None:
        tx.execute(
            "SELECT pg_advisory_xact_lock(?, ?)", (UPLOAD_LIMIT_LOCK_CLASS, key_lock_id(bucket, ""))
        )


POSTGRES = PostgresDialect()


# --- the store -----------------------------------------------------------------------


class PostgresStore(SQLStore):
    """:class:`~s3orch.store.interface.MetadataStore` on PostgreSQL (any number of instances)."""

    _log = Logger(namespace="s3orch.store")

    def __init__(self, settings: PostgresSettings, reactor: IReactorCore) -> None:
        self.settings = settings
        self._reactor = reactor
        self._pool: adbapi.ConnectionPool | None = None

    async def start(self) -> None:
        settings = self.settings
        pool = adbapi.ConnectionPool(  # type: ignore[no-untyped-call]
            "psycopg2",
            cp_min=min(settings.min_conns, settings.max_conns),
            cp_max=max(settings.max_conns, 1),
            cp_reconnect=True,
            cp_openfun=partial(open_connection, statement_timeout=settings.statement_timeout),
            cp_reactor=self._reactor,
            cp_name="s3orch-postgres",
            connection_factory=_Connection,
            **settings.connect,
        )
        try:
            await run_with_connection(pool, self._reactor, check_server, settings)
            applied = await run_with_connection(
                pool, self._reactor, _run_migrations, settings.statement_timeout
            )
        except BaseException as exc:
            pool.close()  # type: ignore[no-untyped-call]
            if isinstance(exc, psycopg2.Error):
                raise StoreError(
                    f"cannot use PostgreSQL database {settings.describe()}: {exc}".strip()
                ) from exc
            raise
        self._pool = pool
        if applied:
            self._log.info(
                "applied schema migrations {versions} to {where}",
                versions=applied,
                where=settings.describe(),
                component="store",
            )

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()  # type: ignore[no-untyped-call]

    async def _call(
        self,
        read_only: bool,
        idempotent: bool,
        fn: Callable[Concatenate[Tx, Notes, _P], _T],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        if self._pool is None:
            raise StoreError("the store is not started")
        notes = Notes()
        try:
            result = await run_with_connection(
                self._pool,
                self._reactor,
                _run_txn,
                read_only,
                idempotent,
                self.settings.max_conn_lifetime,
                notes,
                fn,
                *args,
                **kwargs,
            )
        except UNAVAILABLE_ERRORS as exc:
            raise StoreUnavailable(f"PostgreSQL {self.settings.describe()}: {exc}".strip()) from exc
        finally:
            for fmt, fields in notes.warnings:
                self._log.warn(fmt, component="store", **fields)
        return cast(_T, result)
