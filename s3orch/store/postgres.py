"""The PostgreSQL metadata store: many s3orch instances on one database.

Same contract and semantics as :mod:`s3orch.store.sqlite` (the reference); what
differs is how correctness survives concurrent writers in other processes:

* Write transactions run at READ COMMITTED and lock what they decide on:
  a reservation locks the candidate ``backend_quotas`` rows (``FOR UPDATE``, in
  name order) in the transaction that inserts the intent; a commit takes a
  transaction-scoped advisory lock on its (bucket, key) (which also covers a
  key that has no row yet) and the object row, then every quota row it will
  touch, again in name order.  Nothing is read in one transaction and written
  in another, and one lock order means deadlocks are rare; when PostgreSQL
  still reports one (40P01), or a serialization failure (40001), the whole
  ``_txn_*`` function is retried.
* Reads that take several queries (an object and its locations, a listing)
  run in one REPEATABLE READ, READ ONLY snapshot, so an overwrite committing
  in between can never pair one version's metadata with another's copies.
* A connection that drops is reopened (adbapi ``cp_reconnect``) and the
  transaction retried when that is safe: always when it failed before COMMIT
  was sent; after that only if re-running it is a no-op (a retried reserve
  finds its intent, a retried commit finds its write current and returns []).
* Cleanup rows are claimed with ``FOR UPDATE SKIP LOCKED`` plus
  ``claimed_at``/``claimed_by``, so two instances never work on the same row.
* Multipart calls lock the upload row before anything else of the upload, so
  part reservations, Complete and Abort of one upload never interleave.

Pure helpers (placement ratios aside) are shared with the SQLite store, so the
two engines cannot drift apart on backoff, ETag matching or listing rules.

Timestamps are epoch-second doubles and JSON is text, as in SQLite, so both
engines read back identical records.  As in the SQLite store, anything odd a
transaction notices is logged from the reactor thread after it finishes.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from functools import partial
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar, cast

import psycopg2
import psycopg2.errors
import psycopg2.extensions
from twisted.enterprise import adbapi
from twisted.internet import threads
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorCore
from twisted.logger import Logger

from s3orch.store import migrate
from s3orch.store.interface import (
    UPLOAD_ABORTED,
    UPLOAD_ABORTING,
    UPLOAD_COMPLETED,
    UPLOAD_COMPLETING,
    UPLOAD_CREATING,
    UPLOAD_OPEN,
    CleanupItem,
    CompleteOutcome,
    Intent,
    IntentNotFound,
    ListEntry,
    ListPage,
    Location,
    MultipartUpload,
    ObjectRecord,
    PartMismatch,
    PreconditionConflict,
    QuotaRow,
    Reservation,
    StoreError,
    StoreUnavailable,
    UploadedPart,
    UploadLimitReached,
    UploadListPage,
    UploadNotFound,
)
from s3orch.store.locks import OBJECT_KEY_LOCK_CLASS, UPLOAD_LIMIT_LOCK_CLASS
from s3orch.store.sqlite import (
    _ACTIVE_STATES,
    _MAX_ERROR_TEXT,
    _UPLOAD_COLUMNS,
    CLEANUP_MAX_ATTEMPTS,
    IMMEDIATE_DELETE_GRACE,
    _common_prefix,
    _etag_matches,
    _IntentGone,
    _Notes,
    _upload_from_row,
    _UploadGone,
    cleanup_backoff,
    prefix_upper_bound,
)

_P = ParamSpec("_P")
_T = TypeVar("_T")

#: Attempts per transaction (serialization failures, deadlocks, dropped connections).
TXN_ATTEMPTS = 5
#: Listings with a delimiter fetch this many rows first (a common prefix ends the
#: batch early), doubling while no prefix interrupts; without one, all they need.
LIST_BATCH_MIN = 32
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

_QUOTA_COLUMNS = ("bytes_used", "orphan_bytes", "reserved_bytes", "object_count")

#: What the server or the connection to it going away looks like once the retries are
#: spent (OperationalError also covers statement timeouts and repeated 40001/40P01);
#: adbapi raises ConnectionLost when its rollback finds the connection dead.
UNAVAILABLE_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError, adbapi.ConnectionLost)

Cursor = Any  # psycopg2 ships no type information



class _Retry(Exception):
    """A transaction lost a race it can only resolve by running again (e.g. a duplicate intent)."""


# --- configuration -------------------------------------------------------------------


class PostgresSection(Protocol):
    """What :class:`PostgresSettings` reads from the ``database`` config section."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def database(self) -> str: ...
    @property
    def user(self) -> str: ...
    @property
    def password(self) -> str: ...
    @property
    def ssl_mode(self) -> str: ...
    @property
    def dsn(self) -> str: ...
    @property
    def min_conns(self) -> int: ...
    @property
    def max_conns(self) -> int: ...
    @property
    def max_conn_lifetime(self) -> float: ...
    @property
    def statement_timeout(self) -> float: ...


@dataclass(frozen=True)
class PostgresSettings:
    """Connection parameters (psycopg2/libpq keywords) and pool shape."""

    connect: dict[str, Any] = field(repr=False)  # holds the password
    min_conns: int = 1
    max_conns: int = 10
    max_conn_lifetime: float = 300.0  # seconds; 0 keeps connections forever
    statement_timeout: float = 0.0  # seconds; 0 leaves the server's setting

    @classmethod
    def from_config(cls, config: PostgresSection) -> PostgresSettings:
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
    pool: adbapi.ConnectionPool, reactor: Any, fn: Callable[..., _T], *args: Any
) -> Deferred[_T]:
    """``fn(connection, *args)`` in one of ``pool``'s threads (see :class:`PooledConnection`)."""
    return threads.deferToThreadPool(
        reactor, pool.threadpool, lambda: fn(PooledConnection(pool), *args)
    )


def _raw(conn: Any) -> Any:
    """The psycopg2 connection behind a :class:`PooledConnection` (or ``conn`` itself)."""
    return getattr(conn, "_connection", conn)


def _is_broken(conn: Any) -> bool:
    raw = _raw(conn)
    return raw is None or bool(raw.closed)


def _is_conflict(exc: BaseException) -> bool:
    """A failure that running the transaction again resolves."""
    if isinstance(exc, _Retry | psycopg2.errors.SerializationFailure | psycopg2.errors.DeadlockDetected):
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
    notes: _Notes,
    fn: Callable[Concatenate[Cursor, _Notes, _P], _T],
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
                result = fn(cur, notes, *args, **kwargs)
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
                try:  # hand adbapi a working connection rather than a dead one
                    _reconnect(conn)
                except Exception:  # the server is still away; adbapi drops the connection
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


def admin_connection(config: PostgresSection) -> tuple[Any, str]:
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


# --- quota and cleanup helpers (inside a write transaction) -------------------------


def _lock_key(cur: Cursor, bucket: str, key: str) -> None:
    """Serialise the writers of one key, even while it has no row to lock (until commit)."""
    cur.execute(
        "SELECT pg_advisory_xact_lock(%s, %s)", (OBJECT_KEY_LOCK_CLASS, key_lock_id(bucket, key))
    )


def _lock_quotas(cur: Cursor, backends: Iterable[str]) -> None:
    """Lock the existing quota rows of ``backends`` in name order (the one lock order)."""
    names = sorted(set(backends))
    if names:
        cur.execute(
            "SELECT 1 FROM backend_quotas WHERE backend_name = ANY(%s)"
            " ORDER BY backend_name FOR UPDATE",
            (names,),
        )


def _adjust_quota(
    cur: Cursor,
    notes: _Notes,
    backend: str,
    now: float,
    *,
    used: int = 0,
    orphan: int = 0,
    reserved: int = 0,
    count: int = 0,
) -> None:
    """Apply deltas to a backend's counters, clamping at 0 (a negative result is a bug)."""
    select = (
        "SELECT bytes_used, orphan_bytes, reserved_bytes, object_count"
        " FROM backend_quotas WHERE backend_name = %s FOR UPDATE"
    )
    cur.execute(select, (backend,))
    row = cur.fetchone()
    if row is None:
        cur.execute(
            "INSERT INTO backend_quotas (backend_name, bytes_limit, updated_at) VALUES (%s, 0, %s)"
            " ON CONFLICT (backend_name) DO NOTHING",
            (backend, now),
        )
        cur.execute(select, (backend,))
        row = cur.fetchone()
    values: list[int] = []
    for column, old, delta in zip(_QUOTA_COLUMNS, row, (used, orphan, reserved, count)):
        new = int(old) + delta
        if new < 0:
            notes.warn(
                "quota counter {column} of backend {backend} would go negative"
                " ({old} + {delta}); clamped to 0",
                column=column,
                backend=backend,
                old=int(old),
                delta=delta,
            )
            new = 0
        values.append(new)
    cur.execute(
        "UPDATE backend_quotas SET bytes_used = %s, orphan_bytes = %s, reserved_bytes = %s,"
        " object_count = %s, updated_at = %s WHERE backend_name = %s",
        (*values, now, backend),
    )


def _enqueue_cleanup(
    cur: Cursor,
    notes: _Notes,
    backend: str,
    storage_key: str,
    size: int,
    reason: str,
    now: float,
    next_retry: float,
) -> CleanupItem:
    """Queue a backend object for deletion and count its bytes as orphaned.

    One row per backend object: queuing an object twice would count its bytes twice.
    """
    cur.execute(
        "INSERT INTO cleanup_queue (backend_name, storage_key, reason, size_bytes, attempts,"
        " next_retry, created_at) VALUES (%s, %s, %s, %s, 0, %s, %s)"
        " ON CONFLICT (backend_name, storage_key) DO NOTHING RETURNING id",
        (backend, storage_key, reason, size, next_retry, now),
    )
    inserted = cur.fetchone()
    if inserted is None:
        cur.execute(
            "SELECT id, size_bytes, reason, attempts FROM cleanup_queue"
            " WHERE backend_name = %s AND storage_key = %s",
            (backend, storage_key),
        )
        row = cur.fetchone()
        notes.warn(
            "backend object {backend}/{storage_key} is already queued for cleanup",
            backend=backend,
            storage_key=storage_key,
        )
        return CleanupItem(int(row[0]), backend, storage_key, int(row[1]), row[2], int(row[3]))
    _adjust_quota(cur, notes, backend, now, orphan=size)
    return CleanupItem(int(inserted[0]), backend, storage_key, size, reason, 0)


def _orphan_locations(
    cur: Cursor,
    notes: _Notes,
    bucket: str,
    key: str,
    reason: str,
    now: float,
    keep: tuple[str, str] | None = None,
    also_lock: Sequence[str] = (),
) -> list[CleanupItem]:
    """Drop a key's locations: bytes_used -> orphan_bytes, each copy into cleanup_queue.

    ``keep`` names a backend object that is being re-recorded (its bytes are
    replaced, not orphaned), so it must never be queued for deletion.
    ``also_lock`` are backends the caller adjusts next: every quota row of the
    transaction is locked here, in one ordered pass.  The caller holds the key's
    object row, so its locations cannot change underneath.
    """
    cur.execute(
        "SELECT backend_name, storage_key, size_bytes FROM object_locations"
        " WHERE bucket = %s AND object_key = %s ORDER BY backend_name FOR UPDATE",
        (bucket, key),
    )
    rows = cur.fetchall()
    _lock_quotas(cur, [row[0] for row in rows] + list(also_lock))
    cur.execute(
        "DELETE FROM object_locations WHERE bucket = %s AND object_key = %s", (bucket, key)
    )
    items: list[CleanupItem] = []
    for backend, storage_key, size in rows:
        _adjust_quota(cur, notes, backend, now, used=-int(size), count=-1)
        if keep is not None and (backend, storage_key) == keep:
            continue
        items.append(
            _enqueue_cleanup(
                cur, notes, backend, storage_key, int(size), reason, now,
                now + IMMEDIATE_DELETE_GRACE,
            )
        )
    return items


# --- transactions --------------------------------------------------------------------


def _txn_sync_quota_limits(cur: Cursor, notes: _Notes, limits: dict[str, int]) -> None:
    now = time.time()
    for backend, limit in sorted(limits.items()):
        cur.execute(
            "INSERT INTO backend_quotas (backend_name, bytes_limit, updated_at) VALUES (%s, %s, %s)"
            " ON CONFLICT (backend_name) DO UPDATE SET bytes_limit = excluded.bytes_limit,"
            " updated_at = excluded.updated_at",
            (backend, limit, now),
        )


def _txn_get_quotas(cur: Cursor, notes: _Notes) -> dict[str, QuotaRow]:
    cur.execute(
        "SELECT backend_name, bytes_limit, bytes_used, orphan_bytes, reserved_bytes, object_count"
        " FROM backend_quotas ORDER BY backend_name"
    )
    return {row[0]: QuotaRow(*row) for row in cur.fetchall()}


def _choose_backend(
    names: Sequence[str], rows: dict[str, Any], size: int, strategy: str
) -> str | None:
    """Placement over locked quota rows, exactly as the SQLite store decides it."""
    fitting: list[tuple[Fraction, int, str]] = []
    for index, name in enumerate(names):
        # No row: sync_quota_limits never heard of it, so it has no limit.
        _, limit, used, orphan, reserved = rows.get(name, (name, 0, 0, 0, 0))
        occupied = int(used) + int(orphan) + int(reserved)
        if limit and int(limit) - occupied < size:
            continue
        ratio = Fraction(occupied, int(limit)) if limit else Fraction(0)
        fitting.append((ratio, index, name))
        if strategy == "pack":
            break
    return min(fitting)[2] if fitting else None


def _txn_reserve(
    cur: Cursor,
    notes: _Notes,
    intent: Intent,
    candidates: Sequence[str],
    strategy: str,
    now: float,
) -> Reservation | None:
    cur.execute(
        "SELECT backend_name, storage_key, size_bytes FROM pending_objects WHERE write_id = %s",
        (intent.write_id,),
    )
    existing = cur.fetchone()
    if existing is not None:  # the same intent again (a retried call): one reservation only
        return Reservation(intent.write_id, existing[0], existing[1], int(existing[2]))
    names = list(dict.fromkeys(candidates))
    if not names:
        return None
    # The quota check and the reservation see the same, locked, rows.
    cur.execute(
        "SELECT backend_name, bytes_limit, bytes_used, orphan_bytes, reserved_bytes"
        " FROM backend_quotas WHERE backend_name = ANY(%s) ORDER BY backend_name FOR UPDATE",
        (names,),
    )
    rows = {row[0]: row for row in cur.fetchall()}
    chosen = _choose_backend(names, rows, intent.size, strategy)
    if chosen is None:
        return None
    _adjust_quota(cur, notes, chosen, now, reserved=intent.size)
    cur.execute(
        "INSERT INTO pending_objects (write_id, bucket, object_key, backend_name, storage_key,"
        " size_bytes, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (write_id) DO NOTHING",
        (intent.write_id, intent.bucket, intent.key, chosen, intent.storage_key, intent.size, now),
    )
    if cur.rowcount == 0:
        raise _Retry(f"intent {intent.write_id} was reserved concurrently")
    return Reservation(intent.write_id, chosen, intent.storage_key, intent.size)


def _txn_release(cur: Cursor, notes: _Notes, write_id: str) -> None:
    cur.execute(
        "DELETE FROM pending_objects WHERE write_id = %s RETURNING backend_name, size_bytes",
        (write_id,),
    )
    row = cur.fetchone()
    if row is None:
        return
    _adjust_quota(cur, notes, row[0], time.time(), reserved=-int(row[1]))


def _queue_unreferenced_upload(
    cur: Cursor, notes: _Notes, reservation: Reservation, now: float
) -> CleanupItem | None:
    """Queue the bytes of a write that can no longer be committed, unless something uses them."""
    return _queue_backend_object(
        cur, notes, reservation.backend, reservation.storage_key, reservation.size,
        "intent_missing", now,
    )


def _txn_commit_object(
    cur: Cursor,
    notes: _Notes,
    reservation: Reservation,
    record: ObjectRecord,
    now: float,
    if_none_match: bool,
    if_match: str | None,
) -> list[CleanupItem] | _IntentGone:
    _lock_key(cur, record.bucket, record.key)
    cur.execute(
        "SELECT write_id, etag FROM objects WHERE bucket = %s AND object_key = %s FOR UPDATE",
        (record.bucket, record.key),
    )
    current = cur.fetchone()
    if current is not None and current[0] == record.write_id:
        return []  # already committed: a retry of a call whose answer was lost
    cur.execute(
        "SELECT bucket, object_key, backend_name, size_bytes FROM pending_objects"
        " WHERE write_id = %s FOR UPDATE",
        (reservation.write_id,),
    )
    pending = cur.fetchone()
    if pending is None:
        return _IntentGone(_queue_unreferenced_upload(cur, notes, reservation, now))
    if (pending[0], pending[1]) != (record.bucket, record.key):
        raise ValueError(
            f"intent {reservation.write_id} is for {pending[0]}/{pending[1]},"
            f" not {record.bucket}/{record.key}"
        )
    if if_none_match and current is not None:
        raise PreconditionConflict(f"{record.bucket}/{record.key} exists")
    if if_match is not None and (current is None or not _etag_matches(if_match, current[1])):
        raise PreconditionConflict(f"{record.bucket}/{record.key} does not match {if_match}")

    new_copy = (reservation.backend, reservation.storage_key)
    displaced = _orphan_locations(
        cur, notes, record.bucket, record.key, "overwrite_displaced", now, keep=new_copy,
        also_lock=(pending[2], reservation.backend),
    )
    cur.execute("DELETE FROM pending_objects WHERE write_id = %s", (reservation.write_id,))
    _adjust_quota(cur, notes, pending[2], now, reserved=-int(pending[3]))
    _adjust_quota(cur, notes, reservation.backend, now, used=reservation.size, count=1)
    _write_object_row(cur, record, reservation.backend, reservation.storage_key, reservation.size, now)
    return displaced


def _write_object_row(
    cur: Cursor,
    record: ObjectRecord,
    backend: str,
    storage_key: str,
    stored_size: int,
    now: float,
) -> None:
    """Make ``record`` the key's row with exactly one location (the old ones are gone)."""
    cur.execute(
        "INSERT INTO objects (bucket, object_key, write_id, size_bytes, etag, content_type,"
        " headers, user_metadata, checksum_algorithm, checksum_value, parts_count, part_sizes,"
        " content_hash, encrypted, wrapped_dek, base_nonce, key_id, plaintext_size,"
        " last_modified, created_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, FALSE, NULL, NULL, NULL,"
        " NULL, %s, %s)"
        " ON CONFLICT (bucket, object_key) DO UPDATE SET"
        " write_id = excluded.write_id, size_bytes = excluded.size_bytes,"
        " etag = excluded.etag, content_type = excluded.content_type,"
        " headers = excluded.headers, user_metadata = excluded.user_metadata,"
        " checksum_algorithm = excluded.checksum_algorithm,"
        " checksum_value = excluded.checksum_value, parts_count = excluded.parts_count,"
        " part_sizes = excluded.part_sizes, content_hash = excluded.content_hash,"
        " encrypted = excluded.encrypted, wrapped_dek = excluded.wrapped_dek,"
        " base_nonce = excluded.base_nonce, key_id = excluded.key_id,"
        " plaintext_size = excluded.plaintext_size, last_modified = excluded.last_modified,"
        " created_at = excluded.created_at",
        (
            record.bucket,
            record.key,
            record.write_id,
            record.size,
            record.etag,
            record.content_type,
            json.dumps(record.headers, sort_keys=True),
            json.dumps(record.user_metadata, sort_keys=True),
            record.checksum_algorithm,
            record.checksum_value,
            record.parts_count,
            None if record.part_sizes is None else json.dumps(list(record.part_sizes)),
            record.content_hash,
            record.last_modified,
            now,
        ),
    )
    # A new version starts without the old version's tags (S3 PUT replaces them).
    cur.execute(
        "DELETE FROM object_tags WHERE bucket = %s AND object_key = %s",
        (record.bucket, record.key),
    )
    cur.execute(
        "INSERT INTO object_locations (bucket, object_key, backend_name, storage_key, write_id,"
        " size_bytes, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (
            record.bucket,
            record.key,
            backend,
            storage_key,
            record.write_id,
            stored_size,
            now,
        ),
    )


def _txn_get_object(cur: Cursor, notes: _Notes, bucket: str, key: str) -> ObjectRecord | None:
    cur.execute(
        "SELECT write_id, size_bytes, etag, last_modified, content_type, headers,"
        " user_metadata, checksum_algorithm, checksum_value, parts_count, part_sizes,"
        " content_hash FROM objects WHERE bucket = %s AND object_key = %s",
        (bucket, key),
    )
    row = cur.fetchone()
    if row is None:
        return None
    cur.execute(
        "SELECT backend_name, storage_key, size_bytes FROM object_locations"
        " WHERE bucket = %s AND object_key = %s ORDER BY created_at, backend_name",
        (bucket, key),
    )
    locations = tuple(
        Location(backend, storage_key, int(size)) for backend, storage_key, size in cur.fetchall()
    )
    return ObjectRecord(
        bucket=bucket,
        key=key,
        write_id=row[0],
        size=int(row[1]),
        etag=row[2],
        last_modified=float(row[3]),
        content_type=row[4],
        headers=json.loads(row[5]),
        user_metadata=json.loads(row[6]),
        checksum_algorithm=row[7],
        checksum_value=row[8],
        parts_count=row[9],
        part_sizes=None if row[10] is None else tuple(json.loads(row[10])),
        content_hash=row[11],
        locations=locations,
    )


def _txn_delete_object(
    cur: Cursor, notes: _Notes, bucket: str, key: str, now: float
) -> list[CleanupItem]:
    cur.execute(
        "SELECT 1 FROM objects WHERE bucket = %s AND object_key = %s FOR UPDATE", (bucket, key)
    )
    if cur.fetchone() is None:
        return []
    items = _orphan_locations(cur, notes, bucket, key, "delete", now)
    # object_tags go with the row (ON DELETE CASCADE)
    cur.execute("DELETE FROM objects WHERE bucket = %s AND object_key = %s", (bucket, key))
    return items


def _txn_list_objects(
    cur: Cursor,
    notes: _Notes,
    bucket: str,
    prefix: str,
    delimiter: str,
    start_after: str,
    max_keys: int,
) -> ListPage:
    """Range scans over the (bucket, object_key) primary key, in one read snapshot.

    The same walk as the SQLite store, in bounded batches: psycopg2 fetches a
    whole result, so each query asks only for the rows it can still use.
    """
    upper = prefix_upper_bound(prefix)
    if start_after < prefix:
        lower: str | None = prefix
        inclusive = True
    else:
        lower, inclusive = start_after, False
        if start_after.startswith(prefix) and _common_prefix(
            start_after, prefix, delimiter
        ) == start_after:
            lower, inclusive = prefix_upper_bound(start_after), True  # skip its whole group
    if upper is not None and lower is not None and lower >= upper:
        lower = None

    wanted = max_keys + 1  # one more than asked, to know whether the listing is truncated
    items: list[ListEntry | str] = []
    batch = LIST_BATCH_MIN
    while lower is not None and len(items) < wanted:
        limit = wanted - len(items)
        if delimiter:
            limit = min(limit, batch)
        sql = (
            "SELECT object_key, size_bytes, etag, last_modified FROM objects"
            f" WHERE bucket = %s AND object_key {'>=' if inclusive else '>'} %s"
        )
        params: list[Any] = [bucket, lower]
        if upper is not None:
            sql += " AND object_key < %s"
            params.append(upper)
        sql += " ORDER BY object_key LIMIT %s"
        params.append(limit)
        cur.execute(sql, params)
        rows = cur.fetchall()
        jumped = False
        for key, size, etag, last_modified in rows:
            common = _common_prefix(key, prefix, delimiter)
            if common is not None:
                items.append(common)
                lower, inclusive = prefix_upper_bound(common), True
                jumped = True
                break
            items.append(ListEntry(key, int(size), etag, float(last_modified)))
            lower, inclusive = key, False
            if len(items) >= wanted:
                break
        if jumped:
            batch = LIST_BATCH_MIN
            continue
        if len(rows) < limit:
            break  # the range is exhausted
        batch *= 2

    truncated = len(items) > max_keys
    page = items[:max_keys]
    next_marker: str | None = None
    if truncated and page:
        last = page[-1]
        next_marker = last.key if isinstance(last, ListEntry) else last
    return ListPage(
        entries=tuple(item for item in page if isinstance(item, ListEntry)),
        common_prefixes=tuple(item for item in page if isinstance(item, str)),
        is_truncated=truncated,
        next_marker=next_marker,
    )


def _txn_cleanup_done(cur: Cursor, notes: _Notes, ids: Sequence[int]) -> None:
    now = time.time()
    cur.execute(
        "SELECT id, backend_name, size_bytes FROM cleanup_queue WHERE id = ANY(%s)"
        " ORDER BY id FOR UPDATE",
        (sorted(set(ids)),),
    )
    rows = cur.fetchall()  # ids already gone are skipped: a repeat must not release twice
    if not rows:
        return
    _lock_quotas(cur, [row[1] for row in rows])
    cur.execute("DELETE FROM cleanup_queue WHERE id = ANY(%s)", ([row[0] for row in rows],))
    for _, backend, size in rows:
        _adjust_quota(cur, notes, backend, now, orphan=-int(size))


def _txn_cleanup_failed(cur: Cursor, notes: _Notes, item_id: int, error: str, now: float) -> None:
    cur.execute(
        "SELECT backend_name, storage_key, reason, size_bytes, attempts, created_at"
        " FROM cleanup_queue WHERE id = %s FOR UPDATE",
        (item_id,),
    )
    row = cur.fetchone()
    if row is None:
        return
    backend, storage_key, reason, size, attempts_before, created_at = row
    attempts = int(attempts_before) + 1
    error = error[:_MAX_ERROR_TEXT]
    if attempts >= CLEANUP_MAX_ATTEMPTS:
        # Out of the queue, but the bytes stay counted as orphaned: they still exist.
        cur.execute(
            "INSERT INTO cleanup_dlq (original_id, backend_name, storage_key, reason, size_bytes,"
            " attempts, last_error, first_enqueued_at, moved_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (item_id, backend, storage_key, reason, size, attempts, error, created_at, now),
        )
        cur.execute("DELETE FROM cleanup_queue WHERE id = %s", (item_id,))
        notes.warn(
            "cleanup of {backend}/{storage_key} failed {attempts} times; moved to the DLQ",
            backend=backend,
            storage_key=storage_key,
            attempts=attempts,
        )
        return
    cur.execute(
        "UPDATE cleanup_queue SET attempts = %s, next_retry = %s, last_error = %s,"
        " claimed_at = NULL, claimed_by = NULL WHERE id = %s",
        (attempts, now + cleanup_backoff(int(attempts_before)), error, item_id),
    )


def _cleanup_items(rows: Iterable[Sequence[Any]]) -> list[CleanupItem]:
    return [CleanupItem(int(r[0]), r[1], r[2], int(r[3]), r[4], int(r[5])) for r in rows]


def _txn_due_cleanups(cur: Cursor, notes: _Notes, now: float, limit: int) -> list[CleanupItem]:
    cur.execute(
        "SELECT id, backend_name, storage_key, size_bytes, reason, attempts FROM cleanup_queue"
        " WHERE next_retry <= %s ORDER BY next_retry, id LIMIT %s",
        (now, limit),
    )
    return _cleanup_items(cur.fetchall())


def _txn_claim_cleanups(
    cur: Cursor, notes: _Notes, now: float, limit: int, owner: str, grace: float
) -> list[CleanupItem]:
    # SKIP LOCKED: rows another instance is claiming right now are not waited for.  The
    # locking CTE runs exactly once (a sub-select under IN might be re-run per row).
    cur.execute(
        "WITH picked AS (SELECT id FROM cleanup_queue WHERE next_retry <= %s"
        " AND (claimed_at IS NULL OR claimed_at <= %s)"
        " ORDER BY next_retry, id LIMIT %s FOR UPDATE SKIP LOCKED)"
        " UPDATE cleanup_queue AS q SET claimed_at = %s, claimed_by = %s FROM picked"
        " WHERE q.id = picked.id"
        " RETURNING q.id, q.backend_name, q.storage_key, q.size_bytes, q.reason, q.attempts,"
        " q.next_retry",
        (now, now - grace, limit, now, owner),
    )
    rows = sorted(cur.fetchall(), key=lambda r: (r[6], r[0]))
    return _cleanup_items(rows)


def _txn_object_counts(cur: Cursor, notes: _Notes) -> dict[str, int]:
    cur.execute("SELECT backend_name, object_count FROM backend_quotas ORDER BY backend_name")
    return {row[0]: int(row[1]) for row in cur.fetchall()}


def _txn_ping(cur: Cursor, notes: _Notes) -> None:
    cur.execute("SELECT 1")
    cur.fetchone()


# --- multipart uploads ---------------------------------------------------------------
#
# Every transaction that changes an upload, its parts or its part attempts locks the
# upload row first (FOR UPDATE), then the quota row of its backend: one lock order, and
# an upload's reservations can never be counted by one transaction and dropped by another.


def _load_upload(cur: Cursor, upload_id: str, lock: bool = False) -> MultipartUpload | None:
    cur.execute(
        f"SELECT {_UPLOAD_COLUMNS} FROM multipart_uploads WHERE upload_id = %s"
        + (" FOR UPDATE" if lock else ""),
        (upload_id,),
    )
    row = cur.fetchone()
    return None if row is None else _upload_from_row(row)


def _owned_upload(
    cur: Cursor, bucket: str, key: str, upload_id: str, states: Sequence[str]
) -> MultipartUpload:
    """The (locked) upload if it belongs to ``bucket``/``key`` and is in ``states``; else
    UploadNotFound (one answer for missing, foreign and finished uploads)."""
    upload = _load_upload(cur, upload_id, lock=True)
    if upload is None or (upload.bucket, upload.key) != (bucket, key) or upload.state not in states:
        raise UploadNotFound(upload_id)
    return upload


def _drop_upload_parts(cur: Cursor, notes: _Notes, upload: MultipartUpload, now: float) -> None:
    """Release every reservation of the (locked) upload and forget its parts and attempts."""
    cur.execute(
        "WITH parts AS (DELETE FROM multipart_parts WHERE upload_id = %s RETURNING size_bytes),"
        " attempts AS (DELETE FROM multipart_part_attempts WHERE upload_id = %s"
        " RETURNING size_bytes)"
        " SELECT (SELECT COALESCE(SUM(size_bytes), 0) FROM parts)"
        " + (SELECT COALESCE(SUM(size_bytes), 0) FROM attempts)",
        (upload.upload_id, upload.upload_id),
    )
    reserved = int(cur.fetchone()[0])
    if reserved:
        _adjust_quota(cur, notes, upload.backend, now, reserved=-reserved)


def _queue_backend_object(
    cur: Cursor, notes: _Notes, backend: str, storage_key: str, size: int, reason: str, now: float
) -> CleanupItem | None:
    """Queue a backend object for deletion unless a committed copy uses it."""
    cur.execute(
        "SELECT 1 FROM object_locations WHERE backend_name = %s AND storage_key = %s",
        (backend, storage_key),
    )
    if cur.fetchone() is not None:
        return None
    return _enqueue_cleanup(
        cur, notes, backend, storage_key, size, reason, now, now + IMMEDIATE_DELETE_GRACE
    )


def _txn_create_multipart_upload(
    cur: Cursor,
    notes: _Notes,
    upload: MultipartUpload,
    candidates: Sequence[str],
    strategy: str,
    size_hint: int,
    max_uploads: int,
    now: float,
) -> MultipartUpload | None:
    existing = _load_upload(cur, upload.upload_id)
    if existing is not None:  # a retried call
        return existing
    if max_uploads > 0:
        # Instances creating uploads in one bucket count one at a time.
        cur.execute(
            "SELECT pg_advisory_xact_lock(%s, %s)",
            (UPLOAD_LIMIT_LOCK_CLASS, key_lock_id(upload.bucket, "")),
        )
        cur.execute(
            "SELECT COUNT(*) FROM multipart_uploads WHERE bucket = %s AND state = ANY(%s)",
            (upload.bucket, list(_ACTIVE_STATES)),
        )
        if int(cur.fetchone()[0]) >= max_uploads:
            raise UploadLimitReached(upload.bucket)
    names = list(dict.fromkeys(candidates))
    if not names:
        return None
    # Nothing is reserved here (parts reserve as they arrive), so no row is locked.
    cur.execute(
        "SELECT backend_name, bytes_limit, bytes_used, orphan_bytes, reserved_bytes"
        " FROM backend_quotas WHERE backend_name = ANY(%s)",
        (names,),
    )
    rows = {row[0]: row for row in cur.fetchall()}
    chosen = _choose_backend(names, rows, max(size_hint, 1), strategy)
    if chosen is None:
        return None
    cur.execute(
        "INSERT INTO multipart_uploads (upload_id, bucket, object_key, backend_name, storage_key,"
        " content_type, headers, user_metadata, checksum_algorithm, state, created_at, updated_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (upload_id) DO NOTHING",
        (
            upload.upload_id,
            upload.bucket,
            upload.key,
            chosen,
            upload.storage_key,
            upload.content_type,
            json.dumps(upload.headers, sort_keys=True),
            json.dumps(upload.user_metadata, sort_keys=True),
            upload.checksum_algorithm,
            UPLOAD_CREATING,
            upload.initiated,
            now,
        ),
    )
    if cur.rowcount == 0:
        raise _Retry(f"upload {upload.upload_id} was created concurrently")
    return _load_upload(cur, upload.upload_id)


def _txn_open_multipart_upload(
    cur: Cursor, notes: _Notes, upload_id: str, backend_upload_id: str, now: float
) -> bool:
    cur.execute(
        "UPDATE multipart_uploads SET backend_upload_id = %s, state = %s, updated_at = %s"
        " WHERE upload_id = %s AND state = %s",
        (backend_upload_id, UPLOAD_OPEN, now, upload_id, UPLOAD_CREATING),
    )
    return bool(cur.rowcount == 1)


def _txn_drop_multipart_upload(cur: Cursor, notes: _Notes, upload_id: str) -> None:
    cur.execute(
        "DELETE FROM multipart_uploads WHERE upload_id = %s AND state = %s",
        (upload_id, UPLOAD_CREATING),
    )


def _txn_get_multipart_upload(
    cur: Cursor, notes: _Notes, bucket: str, key: str, upload_id: str
) -> MultipartUpload | None:
    upload = _load_upload(cur, upload_id)
    if upload is None or (upload.bucket, upload.key) != (bucket, key):
        return None
    return upload


def _txn_reserve_part(
    cur: Cursor,
    notes: _Notes,
    bucket: str,
    key: str,
    upload_id: str,
    part_number: int,
    size: int,
    attempt_id: str,
    now: float,
) -> MultipartUpload | None:
    upload = _owned_upload(cur, bucket, key, upload_id, (UPLOAD_OPEN,))
    cur.execute("SELECT 1 FROM multipart_part_attempts WHERE attempt_id = %s", (attempt_id,))
    if cur.fetchone() is not None:
        return upload  # a retried call: one reservation only
    cur.execute(
        "SELECT bytes_limit, bytes_used, orphan_bytes, reserved_bytes FROM backend_quotas"
        " WHERE backend_name = %s FOR UPDATE",
        (upload.backend,),
    )
    row = cur.fetchone()
    if row is not None and int(row[0]) and int(row[0]) - int(row[1]) - int(row[2]) - int(row[3]) < size:
        return None
    cur.execute(
        "INSERT INTO multipart_part_attempts (attempt_id, upload_id, part_number, size_bytes,"
        " created_at) VALUES (%s, %s, %s, %s, %s)",
        (attempt_id, upload_id, part_number, size, now),
    )
    _adjust_quota(cur, notes, upload.backend, now, reserved=size)
    return upload


def _attempt(cur: Cursor, attempt_id: str) -> tuple[str, int, int, str, str] | None:
    """(upload_id, part_number, size, upload state, backend) of a part attempt, its upload
    locked first (the lock order), then the attempt read again under that lock."""
    cur.execute("SELECT upload_id FROM multipart_part_attempts WHERE attempt_id = %s", (attempt_id,))
    found = cur.fetchone()
    if found is None:
        return None
    upload = _load_upload(cur, found[0], lock=True)
    cur.execute(
        "SELECT part_number, size_bytes FROM multipart_part_attempts WHERE attempt_id = %s",
        (attempt_id,),
    )
    row = cur.fetchone()
    if row is None or upload is None:
        return None  # released while we waited for the upload
    return (upload.upload_id, int(row[0]), int(row[1]), upload.state, upload.backend)


def _delete_attempt(cur: Cursor, attempt_id: str) -> bool:
    """Whether this transaction removed the attempt (so its bytes are its to release)."""
    cur.execute("DELETE FROM multipart_part_attempts WHERE attempt_id = %s", (attempt_id,))
    return bool(cur.rowcount == 1)


def _txn_release_part(cur: Cursor, notes: _Notes, attempt_id: str) -> None:
    found = _attempt(cur, attempt_id)
    if found is None or not _delete_attempt(cur, attempt_id):
        return  # already released (or Complete/Abort released it)
    _adjust_quota(cur, notes, found[4], time.time(), reserved=-found[2])


def _txn_commit_part(
    cur: Cursor, notes: _Notes, attempt_id: str, part: UploadedPart, now: float
) -> bool:
    found = _attempt(cur, attempt_id)
    if found is None or not _delete_attempt(cur, attempt_id):
        return False
    upload_id, part_number, reserved, state, backend = found
    if state != UPLOAD_OPEN or part_number != part.part_number:
        _adjust_quota(cur, notes, backend, now, reserved=-reserved)
        return False
    cur.execute(
        "SELECT size_bytes FROM multipart_parts WHERE upload_id = %s AND part_number = %s",
        (upload_id, part_number),
    )
    old = cur.fetchone()
    # The attempt's bytes become the part's; the replaced part's bytes are released.
    delta = part.size - reserved - (int(old[0]) if old is not None else 0)
    if delta:
        _adjust_quota(cur, notes, backend, now, reserved=delta)
    cur.execute(
        "INSERT INTO multipart_parts (upload_id, part_number, etag, size_bytes, checksum_algorithm,"
        " checksum_value, backend_etag, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (upload_id, part_number) DO UPDATE SET etag = excluded.etag,"
        " size_bytes = excluded.size_bytes, checksum_algorithm = excluded.checksum_algorithm,"
        " checksum_value = excluded.checksum_value, backend_etag = excluded.backend_etag,"
        " created_at = excluded.created_at",
        (
            upload_id,
            part_number,
            part.etag,
            part.size,
            part.checksum_algorithm,
            part.checksum_value,
            part.backend_etag,
            now,
        ),
    )
    return True


def _txn_list_parts(
    cur: Cursor, notes: _Notes, upload_id: str, marker: int, max_parts: int
) -> tuple[list[UploadedPart], bool]:
    cur.execute(
        "SELECT part_number, etag, size_bytes, created_at, backend_etag, checksum_algorithm,"
        " checksum_value FROM multipart_parts WHERE upload_id = %s AND part_number > %s"
        " ORDER BY part_number LIMIT %s",
        (upload_id, marker, max_parts + 1),
    )
    rows = cur.fetchall()
    parts = [
        UploadedPart(int(r[0]), r[1], int(r[2]), float(r[3]), r[4], r[5], r[6])
        for r in rows[:max_parts]
    ]
    return parts, len(rows) > max_parts


def _txn_begin_complete(
    cur: Cursor,
    notes: _Notes,
    bucket: str,
    key: str,
    upload_id: str,
    parts: Sequence[tuple[int, str]],
    now: float,
) -> MultipartUpload:
    upload = _owned_upload(
        cur, bucket, key, upload_id, (UPLOAD_OPEN, UPLOAD_COMPLETING, UPLOAD_COMPLETED)
    )
    if upload.state == UPLOAD_COMPLETED:
        return upload
    cur.execute(
        "SELECT part_number, etag FROM multipart_parts WHERE upload_id = %s"
        " AND part_number = ANY(%s)",
        (upload_id, sorted({number for number, _ in parts}) or [0]),
    )
    stored = {int(number): etag for number, etag in cur.fetchall()}
    for number, etag in parts:
        found = stored.get(number)
        if found is None or found.lower() != etag.lower():
            raise PartMismatch(f"part {number}")
    numbers = json.dumps([number for number, _ in parts])
    cur.execute(
        "UPDATE multipart_uploads SET state = %s, complete_parts = %s, updated_at = %s"
        " WHERE upload_id = %s",
        (UPLOAD_COMPLETING, numbers, now, upload_id),
    )
    found_upload = _load_upload(cur, upload_id)
    assert found_upload is not None
    return found_upload


def _txn_reopen_upload(cur: Cursor, notes: _Notes, upload_id: str, now: float) -> None:
    cur.execute(
        "UPDATE multipart_uploads SET state = %s, complete_parts = NULL, updated_at = %s"
        " WHERE upload_id = %s AND state = %s",
        (UPLOAD_OPEN, now, upload_id, UPLOAD_COMPLETING),
    )


def _txn_finish_complete(
    cur: Cursor,
    notes: _Notes,
    upload_id: str,
    record: ObjectRecord,
    stored_size: int,
    now: float,
) -> CompleteOutcome | _UploadGone:
    if record.write_id != upload_id:
        raise ValueError(f"the object of upload {upload_id} must have it as write id")
    upload = _load_upload(cur, upload_id, lock=True)
    if upload is None:
        raise UploadNotFound(upload_id)
    if upload.state == UPLOAD_COMPLETED:
        return CompleteOutcome([], already_completed=True)
    if upload.state != UPLOAD_COMPLETING or (upload.bucket, upload.key) != (record.bucket, record.key):
        return _UploadGone(
            _queue_backend_object(
                cur, notes, upload.backend, upload.storage_key, stored_size, "complete_aborted", now
            )
        )
    # The same key locks as a PUT's commit, so the two never interleave on one key.
    _lock_key(cur, record.bucket, record.key)
    cur.execute(
        "SELECT 1 FROM objects WHERE bucket = %s AND object_key = %s FOR UPDATE",
        (record.bucket, record.key),
    )
    displaced = _orphan_locations(
        cur, notes, record.bucket, record.key, "overwrite_displaced", now,
        also_lock=(upload.backend,),
    )
    _drop_upload_parts(cur, notes, upload, now)
    _adjust_quota(cur, notes, upload.backend, now, used=stored_size, count=1)
    _write_object_row(cur, record, upload.backend, upload.storage_key, stored_size, now)
    cur.execute(
        "UPDATE multipart_uploads SET state = %s, etag = %s, updated_at = %s WHERE upload_id = %s",
        (UPLOAD_COMPLETED, record.etag, now, upload_id),
    )
    return CompleteOutcome(displaced)


def _txn_begin_abort(
    cur: Cursor,
    notes: _Notes,
    bucket: str,
    key: str,
    upload_id: str,
    now: float,
    stale: bool,
) -> MultipartUpload:
    states: tuple[str, ...] = (UPLOAD_OPEN, UPLOAD_COMPLETING, UPLOAD_ABORTING)
    if stale:
        states += (UPLOAD_CREATING,)
    upload = _owned_upload(cur, bucket, key, upload_id, states)
    cur.execute(
        "UPDATE multipart_uploads SET state = %s, updated_at = %s WHERE upload_id = %s",
        (UPLOAD_ABORTING, now, upload_id),
    )
    return upload


def _txn_finish_abort(cur: Cursor, notes: _Notes, upload_id: str, now: float) -> CleanupItem | None:
    upload = _load_upload(cur, upload_id, lock=True)
    if upload is None or upload.state != UPLOAD_ABORTING:
        return None  # already finished: a repeated call
    assembled: int | None = None
    if upload.complete_parts:
        # A Complete was sent to the backend: the object may exist at the storage key.
        cur.execute(
            "SELECT COALESCE(SUM(size_bytes), 0) FROM multipart_parts"
            " WHERE upload_id = %s AND part_number = ANY(%s)",
            (upload_id, list(upload.complete_parts)),
        )
        assembled = int(cur.fetchone()[0])
    _drop_upload_parts(cur, notes, upload, now)
    cur.execute(
        "UPDATE multipart_uploads SET state = %s, updated_at = %s WHERE upload_id = %s",
        (UPLOAD_ABORTED, now, upload_id),
    )
    if assembled is None:
        return None
    return _queue_backend_object(
        cur, notes, upload.backend, upload.storage_key, assembled, "abort_part_cleanup", now
    )


def _txn_list_multipart_uploads(
    cur: Cursor,
    notes: _Notes,
    bucket: str,
    prefix: str,
    delimiter: str,
    key_marker: str,
    upload_id_marker: str,
    max_uploads: int,
) -> UploadListPage:
    """Like :func:`_txn_list_objects`, over (key, upload id) of open uploads, in batches."""
    upper = prefix_upper_bound(prefix)
    # The position to scan from: (key, upload id or None); None excludes the whole key.
    after: tuple[str, str | None] | None = None
    start: str | None = prefix  # inclusive lower bound on the key
    if key_marker and key_marker >= prefix:
        if (
            key_marker.startswith(prefix)
            and _common_prefix(key_marker, prefix, delimiter) == key_marker
        ):
            start = prefix_upper_bound(key_marker)  # skip the marker's whole group
        else:
            start = None
            after = (key_marker, upload_id_marker or None)
    wanted = max_uploads + 1
    items: list[MultipartUpload | str] = []
    batch = LIST_BATCH_MIN
    while len(items) < wanted and (start is not None or after is not None):
        limit = wanted - len(items)
        if delimiter:
            limit = min(limit, batch)
        sql = f"SELECT {_UPLOAD_COLUMNS} FROM multipart_uploads WHERE bucket = %s AND state = %s"
        params: list[Any] = [bucket, UPLOAD_OPEN]
        if after is not None:
            if after[1] is None:
                sql += " AND object_key > %s"
                params.append(after[0])
            else:
                sql += " AND (object_key, upload_id) > (%s, %s)"
                params.extend(after)
        else:
            sql += " AND object_key >= %s"
            params.append(start)
        if upper is not None:
            sql += " AND object_key < %s"
            params.append(upper)
        sql += " ORDER BY object_key, upload_id LIMIT %s"
        params.append(limit)
        cur.execute(sql, params)
        rows = cur.fetchall()
        jumped = False
        for row in rows:
            upload = _upload_from_row(row)
            common = _common_prefix(upload.key, prefix, delimiter)
            if common is not None:
                items.append(common)
                start, after = prefix_upper_bound(common), None
                jumped = True
                break
            items.append(upload)
            start, after = None, (upload.key, upload.upload_id)
            if len(items) >= wanted:
                break
        if jumped:
            if start is None:
                break  # nothing sorts after the group
            if upper is not None and start >= upper:
                break
            batch = LIST_BATCH_MIN
            continue
        if len(rows) < limit:
            break  # the range is exhausted
        batch *= 2
    truncated = len(items) > max_uploads
    page = items[:max_uploads]
    next_key: str | None = None
    next_id: str | None = None
    if truncated and page:
        last = page[-1]
        if isinstance(last, str):
            next_key = last
        else:
            next_key, next_id = last.key, last.upload_id
    return UploadListPage(
        uploads=tuple(item for item in page if not isinstance(item, str)),
        common_prefixes=tuple(item for item in page if isinstance(item, str)),
        is_truncated=truncated,
        next_key_marker=next_key,
        next_upload_id_marker=next_id,
    )


def _txn_stale_multipart_uploads(
    cur: Cursor, notes: _Notes, created_before: float, busy_before: float, limit: int
) -> list[MultipartUpload]:
    cur.execute(
        f"SELECT {_UPLOAD_COLUMNS} FROM multipart_uploads"
        " WHERE (state IN (%s, %s) AND created_at < %s) OR (state IN (%s, %s) AND updated_at < %s)"
        " ORDER BY created_at LIMIT %s",
        (
            UPLOAD_CREATING,
            UPLOAD_OPEN,
            created_before,
            UPLOAD_COMPLETING,
            UPLOAD_ABORTING,
            busy_before,
            limit,
        ),
    )
    return [_upload_from_row(row) for row in cur.fetchall()]


def _txn_purge_multipart_uploads(cur: Cursor, notes: _Notes, before: float) -> int:
    cur.execute(
        "DELETE FROM multipart_uploads WHERE state IN (%s, %s) AND updated_at < %s",
        (UPLOAD_COMPLETED, UPLOAD_ABORTED, before),
    )
    return int(cur.rowcount)


def _txn_active_multipart_counts(cur: Cursor, notes: _Notes) -> dict[str, int]:
    cur.execute(
        "SELECT backend_name, COUNT(*) FROM multipart_uploads WHERE state NOT IN (%s, %s)"
        " GROUP BY backend_name ORDER BY backend_name",
        (UPLOAD_COMPLETED, UPLOAD_ABORTED),
    )
    return {row[0]: int(row[1]) for row in cur.fetchall()}


# --- the store -----------------------------------------------------------------------


class PostgresStore:
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
        fn: Callable[Concatenate[Cursor, _Notes, _P], _T],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        if self._pool is None:
            raise StoreError("the store is not started")
        notes = _Notes()
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

    async def _write(
        self,
        fn: Callable[Concatenate[Cursor, _Notes, _P], _T],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        return await self._call(False, True, fn, *args, **kwargs)

    async def _read(
        self,
        fn: Callable[Concatenate[Cursor, _Notes, _P], _T],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        return await self._call(True, True, fn, *args, **kwargs)

    async def ping(self) -> None:
        await self._read(_txn_ping)

    async def sync_quota_limits(self, limits: dict[str, int]) -> None:
        for backend, limit in limits.items():
            if limit < 0:
                raise ValueError(f"negative quota limit for backend {backend!r}: {limit}")
        await self._write(_txn_sync_quota_limits, dict(limits))

    async def get_quotas(self) -> dict[str, QuotaRow]:
        return await self._read(_txn_get_quotas)

    async def reserve(
        self,
        intent: Intent,
        candidates: Sequence[str],
        strategy: str,
        now: float,
    ) -> Reservation | None:
        """See the protocol (and :meth:`SQLiteStore.reserve`: same rules)."""
        if strategy not in ("pack", "spread"):
            raise ValueError(f"unknown placement strategy {strategy!r}")
        if intent.size < 0:
            raise ValueError(f"negative intent size {intent.size}")
        return await self._write(_txn_reserve, intent, tuple(candidates), strategy, now)

    async def release(self, write_id: str) -> None:
        await self._write(_txn_release, write_id)

    async def commit_object(
        self,
        reservation: Reservation,
        record: ObjectRecord,
        now: float,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> list[CleanupItem]:
        """See the protocol.  ``record.locations`` is ignored: the new version has exactly
        the reservation's copy.  ``if_match`` may be ``*`` or a quoted ETag."""
        result = await self._write(
            _txn_commit_object, reservation, record, now, if_none_match, if_match
        )
        if isinstance(result, _IntentGone):
            raise IntentNotFound(reservation.write_id, result.cleanup)
        return result

    async def get_object(self, bucket: str, key: str) -> ObjectRecord | None:
        return await self._read(_txn_get_object, bucket, key)

    async def delete_object(self, bucket: str, key: str, now: float) -> list[CleanupItem]:
        return await self._write(_txn_delete_object, bucket, key, now)

    async def list_objects(
        self,
        bucket: str,
        prefix: str,
        delimiter: str,
        start_after: str,
        max_keys: int,
    ) -> ListPage:
        if max_keys < 0:
            raise ValueError(f"negative max_keys {max_keys}")
        return await self._read(
            _txn_list_objects, bucket, prefix, delimiter, start_after, max_keys
        )

    async def cleanup_done(self, ids: Sequence[int]) -> None:
        if ids:
            await self._write(_txn_cleanup_done, tuple(ids))

    async def cleanup_failed(self, item_id: int, error: str, now: float) -> None:
        # Not re-run after an unknown COMMIT outcome: that could count one failure twice.
        await self._call(False, False, _txn_cleanup_failed, item_id, error, now)

    async def due_cleanups(self, now: float, limit: int) -> list[CleanupItem]:
        return await self._read(_txn_due_cleanups, now, limit)

    async def claim_cleanups(
        self, now: float, limit: int, owner: str, grace: float
    ) -> list[CleanupItem]:
        if limit <= 0:
            return []
        return await self._write(_txn_claim_cleanups, now, limit, owner, grace)

    async def object_counts(self) -> dict[str, int]:
        return await self._read(_txn_object_counts)

    # -- multipart uploads (same rules as the SQLite store; see the protocol) ------------

    async def create_multipart_upload(
        self,
        upload: MultipartUpload,
        candidates: Sequence[str],
        strategy: str,
        size_hint: int,
        max_uploads: int,
        now: float,
    ) -> MultipartUpload | None:
        if strategy not in ("pack", "spread"):
            raise ValueError(f"unknown placement strategy {strategy!r}")
        return await self._write(
            _txn_create_multipart_upload,
            upload,
            tuple(candidates),
            strategy,
            size_hint,
            max_uploads,
            now,
        )

    async def open_multipart_upload(self, upload_id: str, backend_upload_id: str, now: float) -> bool:
        # Not re-run after an unknown COMMIT outcome: the re-run would answer False.
        return await self._call(
            False, False, _txn_open_multipart_upload, upload_id, backend_upload_id, now
        )

    async def drop_multipart_upload(self, upload_id: str) -> None:
        await self._write(_txn_drop_multipart_upload, upload_id)

    async def get_multipart_upload(
        self, bucket: str, key: str, upload_id: str
    ) -> MultipartUpload | None:
        return await self._read(_txn_get_multipart_upload, bucket, key, upload_id)

    async def reserve_part(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        part_number: int,
        size: int,
        attempt_id: str,
        now: float,
    ) -> MultipartUpload | None:
        if size < 0:
            raise ValueError(f"negative part size {size}")
        return await self._write(
            _txn_reserve_part, bucket, key, upload_id, part_number, size, attempt_id, now
        )

    async def release_part(self, attempt_id: str) -> None:
        await self._write(_txn_release_part, attempt_id)

    async def commit_part(self, attempt_id: str, part: UploadedPart, now: float) -> bool:
        # Not re-run after an unknown COMMIT outcome: the re-run would answer False.
        return await self._call(False, False, _txn_commit_part, attempt_id, part, now)

    async def list_parts(
        self, upload_id: str, part_number_marker: int = 0, max_parts: int = 10000
    ) -> tuple[list[UploadedPart], bool]:
        return await self._read(_txn_list_parts, upload_id, part_number_marker, max(0, max_parts))

    async def begin_complete(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        parts: Sequence[tuple[int, str]],
        now: float,
    ) -> MultipartUpload:
        return await self._write(_txn_begin_complete, bucket, key, upload_id, tuple(parts), now)

    async def reopen_upload(self, upload_id: str, now: float) -> None:
        await self._write(_txn_reopen_upload, upload_id, now)

    async def finish_complete(
        self, upload_id: str, record: ObjectRecord, stored_size: int, now: float
    ) -> CompleteOutcome:
        result = await self._write(_txn_finish_complete, upload_id, record, stored_size, now)
        if isinstance(result, _UploadGone):
            raise UploadNotFound(upload_id, result.cleanup)
        return result

    async def begin_abort(
        self, bucket: str, key: str, upload_id: str, now: float, *, stale: bool = False
    ) -> MultipartUpload:
        return await self._write(_txn_begin_abort, bucket, key, upload_id, now, stale)

    async def finish_abort(self, upload_id: str, now: float) -> CleanupItem | None:
        return await self._write(_txn_finish_abort, upload_id, now)

    async def list_multipart_uploads(
        self,
        bucket: str,
        prefix: str,
        delimiter: str,
        key_marker: str,
        upload_id_marker: str,
        max_uploads: int,
    ) -> UploadListPage:
        if max_uploads < 0:
            raise ValueError(f"negative max_uploads {max_uploads}")
        return await self._read(
            _txn_list_multipart_uploads,
            bucket,
            prefix,
            delimiter,
            key_marker,
            upload_id_marker,
            max_uploads,
        )

    async def stale_multipart_uploads(
        self, created_before: float, busy_before: float, limit: int
    ) -> list[MultipartUpload]:
        return await self._read(_txn_stale_multipart_uploads, created_before, busy_before, limit)

    async def purge_multipart_uploads(self, before: float) -> int:
        return await self._write(_txn_purge_multipart_uploads, before)

    async def active_multipart_counts(self) -> dict[str, int]:
        return await self._read(_txn_active_multipart_counts)
