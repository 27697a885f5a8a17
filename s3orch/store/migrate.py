"""Schema migrations: numbered SQL files applied in order, recorded in ``schema_version``.

The functions here are synchronous and take a plain DB-API connection, so the
store (inside an adbapi thread) and ``s3orch-admin migrate`` share them.  Each
file ``NNNN_name.sql`` is applied in its own transaction together with its
``schema_version`` row, so a crash never leaves a half-applied version.  A
database written by a newer s3orch is refused rather than used: its schema may
mean things this version does not know about.

Two instances starting together must not both apply a version: SQLite takes
the write lock (``BEGIN IMMEDIATE``) per file; PostgreSQL runs the whole check
and apply under the session advisory lock :data:`~s3orch.store.locks.MIGRATION_LOCK_ID`
(1000), waited for, so the second instance finds the work done.
"""

from __future__ import annotations

import re
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import s3orch
from s3orch.store.interface import StoreError
from s3orch.store.locks import MIGRATION_LOCK_ID

if TYPE_CHECKING:
    from s3orch.store import DatabaseSection

#: File names of migrations: four digits, an underscore, a name, ``.sql``.
_FILE_RE = re.compile(r"^(\d{4})_([A-Za-z0-9_]+)\.sql$")

#: Engine-neutral DDL for the bookkeeping table, created before anything is read.
_SCHEMA_VERSION_DDL = (
    "CREATE TABLE IF NOT EXISTS schema_version ("
    "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
)

#: STRICT tables need 3.37; UPSERT and RETURNING are older.
MIN_SQLITE_VERSION = (3, 37, 0)


class MigrationError(StoreError):
    """The schema cannot be brought to the version this s3orch needs."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")


def sql_dir(engine: str) -> Path:
    """Where ``engine``'s migration files live.

    A source checkout or editable install has ``sql/`` next to the package;
    an installed package ships them as data files under ``sys.prefix``.
    """
    checkout = Path(s3orch.__file__).resolve().parent.parent / "sql" / engine
    if checkout.is_dir():
        return checkout
    installed = Path(sys.prefix) / "share" / "s3orch" / "sql" / engine
    if installed.is_dir():
        return installed
    raise MigrationError(
        f"no migrations for database engine {engine!r}: looked in {checkout} and {installed}"
    )


def discover(directory: Path) -> list[Migration]:
    """The migration files of ``directory``, by version; duplicates are an error."""
    found: dict[int, Migration] = {}
    for path in sorted(directory.iterdir()):
        match = _FILE_RE.match(path.name)
        if match is None:
            continue
        version = int(match.group(1))
        if version in found:
            raise MigrationError(
                f"two migrations with version {version}: {found[version].path.name}, {path.name}"
            )
        found[version] = Migration(version, match.group(2), path)
    return [found[v] for v in sorted(found)]


def applied_versions(conn: Any) -> set[int]:
    """Versions recorded in ``schema_version`` (creating the empty table if needed)."""
    cur = conn.cursor()
    try:
        cur.execute(_SCHEMA_VERSION_DDL)
        conn.commit()  # a no-op on an autocommit SQLite connection
        cur.execute("SELECT version FROM schema_version")
        return {int(row[0]) for row in cur.fetchall()}
    finally:
        cur.close()


def current_version(conn: Any) -> int:
    """The highest applied version, 0 for an empty database."""
    return max(applied_versions(conn), default=0)


def migrate(conn: Any, engine: str, directory: Path | None = None) -> list[int]:
    """Apply every migration not yet recorded, oldest first; return the versions applied.

    Re-running is a no-op.  Raises :class:`MigrationError` when the database is
    newer than the newest file, or when a migration fails (that migration is
    rolled back; earlier ones stay).

    SQLite connections must be opened with ``isolation_level=None``: this
    function issues its own ``BEGIN IMMEDIATE`` so that two processes starting
    together apply each version once.
    """
    migrations = discover(directory if directory is not None else sql_dir(engine))
    if engine == "sqlite":
        check_sqlite_version()
    if engine == "postgres":
        with postgres_migration_lock(conn):
            return _apply_pending(conn, engine, migrations)
    return _apply_pending(conn, engine, migrations)


@contextmanager
def postgres_migration_lock(conn: Any) -> Iterator[None]:
    """Hold the migration advisory lock for the block (waiting for another holder).

    A session lock, so it spans the per-file transactions; it is released at the
    end, or by PostgreSQL itself if the connection dies first.
    """
    cur = conn.cursor()
    try:
        cur.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_ID,))
        cur.fetchone()
        conn.commit()
        yield
    finally:
        try:
            conn.rollback()  # leave no aborted transaction in the way of the unlock
            cur.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_ID,))
            cur.fetchone()
            conn.commit()
        except Exception:  # the connection is gone, and its lock with it
            pass
        finally:
            cur.close()


def _apply_pending(conn: Any, engine: str, migrations: list[Migration]) -> list[int]:
    """The body of :func:`migrate` once any engine-level lock is held."""
    newest = migrations[-1].version if migrations else 0
    done = applied_versions(conn)
    if done and max(done) > newest:
        raise MigrationError(
            f"database schema version {max(done)} is newer than this s3orch knows "
            f"({newest}); upgrade s3orch"
        )
    applied: list[int] = []
    for migration in migrations:
        if migration.version in done:
            continue
        try:
            if engine == "sqlite":
                ran = _apply_sqlite(conn, migration)
            else:
                ran = _apply_dbapi(conn, migration)
        except MigrationError:
            raise
        except Exception as exc:
            raise MigrationError(
                f"migration {migration.path.name} failed: {exc}"
            ) from exc
        if ran:
            applied.append(migration.version)
    return applied


@dataclass(frozen=True)
class MigrationReport:
    """What :func:`migrate_database` did (``s3orch-admin migrate`` prints it)."""

    database: str  # where, never with a password
    before: int
    after: int
    applied: tuple[int, ...]


def migrate_database(config: DatabaseSection) -> MigrationReport:
    """Apply the pending migrations of the configured database, synchronously.

    The same migrations, under the same locks, as an instance applies at
    start-up; for operators who prefer an explicit step before rolling out a
    new version.  Raises :class:`StoreError` (or :class:`MigrationError`) with a
    message for the operator.
    """
    if config.driver == "sqlite":
        from s3orch.store.sqlite import admin_connection
    elif config.driver == "postgres":
        from s3orch.store.postgres import admin_connection  # type: ignore[assignment]
    else:
        raise StoreError(f"unknown database.driver {config.driver!r} (expected 'sqlite' or 'postgres')")
    conn, where = admin_connection(config)
    try:
        applied = migrate(conn, config.driver)
        done = applied_versions(conn)
    except StoreError:
        raise
    except Exception as exc:  # the driver's error: the server went away, the file is locked
        raise StoreError(f"cannot migrate {where}: {exc}".strip()) from exc
    finally:
        conn.close()
    before = max(done - set(applied), default=0)
    return MigrationReport(where, before, max(done, default=0), tuple(applied))


def check_sqlite_version() -> None:
    """Refuse SQLite libraries too old for the schema (clearer than a syntax error)."""
    if sqlite3.sqlite_version_info < MIN_SQLITE_VERSION:
        need = ".".join(map(str, MIN_SQLITE_VERSION))
        raise MigrationError(f"SQLite {need} or newer is required; found {sqlite3.sqlite_version}")


def split_sqlite_script(script: str) -> list[str]:
    """Split a script into single statements (``execute`` runs one at a time).

    ``sqlite3.complete_statement`` knows about strings, comments and trigger
    bodies, so a ``;`` inside them does not end a statement.
    """
    statements: list[str] = []
    buffer = ""
    *pieces, last = script.split(";")
    for piece in pieces:
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if _has_code(buffer):
                statements.append(buffer.strip())
            buffer = ""
    buffer += last  # text after the last ';' (a statement without one, or comments)
    if _has_code(buffer):
        statements.append(buffer.strip())
    return statements


def _has_code(text: str) -> bool:
    """Whether ``text`` holds more than comments, whitespace and semicolons."""
    lines = (line.split("--", 1)[0] for line in text.splitlines())
    return any(line.strip().strip(";").strip() for line in lines)


def _apply_sqlite(conn: Any, migration: Migration) -> bool:
    """Apply one file in one ``BEGIN IMMEDIATE`` transaction; False if already applied.

    ``executescript`` is avoided on purpose: it commits any open transaction first.
    """
    statements = split_sqlite_script(migration.sql())
    cur = conn.cursor()
    try:
        cur.execute("BEGIN IMMEDIATE")
        try:
            cur.execute("SELECT 1 FROM schema_version WHERE version = ?", (migration.version,))
            if cur.fetchone() is not None:  # another process was first
                cur.execute("ROLLBACK")
                return False
            for statement in statements:
                cur.execute(statement)
            cur.execute(
                "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, _utc_now()),
            )
            cur.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                cur.execute("ROLLBACK")
            raise
        return True
    finally:
        cur.close()


def _apply_dbapi(conn: Any, migration: Migration) -> bool:
    """Apply one file on a driver with implicit transactions and ``%s`` parameters.

    This is the shape PostgreSQL (psycopg2) takes: DDL is transactional there, so a
    failing file leaves nothing behind.  The whole file goes in one ``execute``.
    """
    cur = conn.cursor()
    try:
        cur.execute("SELECT 1 FROM schema_version WHERE version = %s", (migration.version,))
        if cur.fetchone() is not None:
            conn.rollback()
            return False
        cur.execute(migration.sql())
        cur.execute(
            "INSERT INTO schema_version (version, name, applied_at) VALUES (%s, %s, %s)",
            (migration.version, migration.name, _utc_now()),
        )
        conn.commit()
        return True
    except BaseException:
        conn.rollback()
        raise
    finally:
        cur.close()


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
