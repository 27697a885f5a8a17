"""s3orch.store: the metadata database behind one factory, so callers never name an engine."""

from __future__ import annotations

from typing import Protocol

from twisted.internet.interfaces import IReactorCore

from s3orch.store.interface import MetadataStore


class DatabaseSection(Protocol):
    """What :func:`open_store` reads from the ``database`` config section."""

    @property
    def driver(self) -> str: ...

    @property
    def path(self) -> str: ...


class UnsupportedDriver(Exception):
    """The configured ``database.driver`` has no engine in this s3orch."""


def open_store(config: DatabaseSection, reactor: IReactorCore) -> MetadataStore:
    """Build (not start) the store for ``config``; the caller awaits ``start()``."""
    if config.driver == "sqlite":
        from s3orch.store.sqlite import SQLiteStore

        return SQLiteStore(config.path, reactor)
    if config.driver == "postgres":
        raise UnsupportedDriver(
            "database.driver 'postgres' is not supported by this s3orch yet; use 'sqlite'"
        )
    raise UnsupportedDriver(f"unknown database.driver {config.driver!r} (expected 'sqlite')")
