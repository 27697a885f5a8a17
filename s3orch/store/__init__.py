"""s3orch.store: the metadata database behind one factory, so callers never name an engine."""

from __future__ import annotations

from typing import Protocol

from twisted.internet.interfaces import IReactorCore

from s3orch.store.interface import MetadataStore


class DatabaseSection(Protocol):
    """What :func:`open_store` reads from the ``database`` config section.

    ``path`` is SQLite's; the rest are PostgreSQL's (see
    :meth:`s3orch.store.postgres.PostgresSettings.from_config`).
    """

    @property
    def driver(self) -> str: ...

    @property
    def path(self) -> str: ...

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


class UnsupportedDriver(Exception):
    """The configured ``database.driver`` has no engine in this s3orch."""


def open_store(config: DatabaseSection, reactor: IReactorCore) -> MetadataStore:
    """Build (not start) the store for ``config``; the caller awaits ``start()``."""
    if config.driver == "sqlite":
        from s3orch.store.sqlite import SQLiteStore

        return SQLiteStore(config.path, reactor)
    if config.driver == "postgres":
        from s3orch.store.postgres import PostgresSettings, PostgresStore

        return PostgresStore(PostgresSettings.from_config(config), reactor)
    raise UnsupportedDriver(
        f"unknown database.driver {config.driver!r} (expected 'sqlite' or 'postgres')"
    )
