"""Schema migrations: numbered SQL files applied in order, recorded in ``schema_version``.

Engine-neutral: which files, in which order, what is already applied, what a
database newer than this s3orch means.  How one file is applied, and which lock
keeps two instances starting together from both applying it, is the engine's
(:class:`Migrator`, answered by :class:`~s3orch.store.sqlite.SQLiteEngine` and
:class:`~s3orch.store.postgres.PostgresEngine`).

The functions here are synchronous and take a plain DB-API connection, so the
store (inside an adbapi thread, at start-up) and ``s3orch-admin migrate`` share
them.  Each file ``NNNN_name.sql`` is applied in its own transaction together
with its ``schema_version`` row, so a crash never leaves a half-applied version.
A database written by a newer s3orch is refused rather than used: its schema may
mean things this version does not know about.
"""

from __future__ import annotations

import re
import sys
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import s3orch
from s3orch.store.errors import StoreError

#: File names of migrations: four digits, an underscore, a name, ``.sql``.
_FILE_RE = re.compile(r"^(\d{4})_([A-Za-z0-9_]+)\.sql$")

#: Engine-neutral DDL for the bookkeeping table, created before anything is read.
_SCHEMA_VERSION_DDL = (
    "CREATE TABLE IF NOT EXISTS schema_version ("
    "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
)


class MigrationError(StoreError):
    """The schema cannot be brought to the version this s3orch needs."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")


class Migrator(Protocol):
    """What migrating needs from an engine."""

    #: The engine's directory under ``sql/`` (``sqlite``, ``postgres``).
    name: str

    def check_library(self) -> None:
        """Raise :class:`MigrationError` when the driver cannot run the schema at all."""

    def migration_lock(self, conn: Any) -> AbstractContextManager[None]:
        """Held around the whole check-and-apply, so instances starting together apply
        each version once (the engine may instead lock per file in :meth:`apply_migration`)."""

    def apply_migration(self, conn: Any, migration: Migration, applied_at: str) -> bool:
        """Apply one file and its ``schema_version`` row in one transaction; False when
        another process recorded that version first (nothing was changed)."""

    def admin_connection(self) -> tuple[Any, str]:
        """A plain connection for ``s3orch-admin`` (no statement timeout) and where it points."""


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


def migrate(conn: Any, engine: Migrator, directory: Path | None = None) -> list[int]:
    """Apply every migration not yet recorded, oldest first; return the versions applied.

    Re-running is a no-op.  Raises :class:`MigrationError` when the database is
    newer than the newest file, or when a migration fails (that migration is
    rolled back; earlier ones stay).  ``directory`` defaults to the engine's own.
    """
    migrations = discover(directory if directory is not None else sql_dir(engine.name))
    engine.check_library()
    with engine.migration_lock(conn):
        return _apply_pending(conn, engine, migrations)


def _apply_pending(conn: Any, engine: Migrator, migrations: list[Migration]) -> list[int]:
    """The body of :func:`migrate` once the engine's migration lock is held."""
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
            # When the schema was applied is an operator's fact (shown by ``s3orch-admin``),
            # not data any transaction decides on, so it is the machine's wall clock.
            ran = engine.apply_migration(conn, migration, _utc_now())
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


def migrate_database(engine: Migrator) -> MigrationReport:
    """Apply the pending migrations of ``engine``'s database, synchronously.

    The same migrations, under the same locks, as an instance applies at
    start-up; for operators who prefer an explicit step before rolling out a
    new version.  Raises :class:`StoreError` (or :class:`MigrationError`) with a
    message for the operator.
    """
    conn, where = engine.admin_connection()
    try:
        applied = migrate(conn, engine)
        done = applied_versions(conn)
    except StoreError:
        raise
    except Exception as exc:  # the driver's error: the server went away, the file is locked
        raise StoreError(f"cannot migrate {where}: {exc}".strip()) from exc
    finally:
        conn.close()
    before = max(done - set(applied), default=0)
    return MigrationReport(where, before, max(done, default=0), tuple(applied))


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
