"""Fixtures for the metadata store contract suite.

pytest-twisted (loaded through its entry point) runs the default reactor in a
greenlet; async tests are decorated with ``@pytest_twisted.ensureDeferred``.
``store`` is parametrised over every engine, so one suite is the contract: a
new engine joins by adding itself to :data:`ENGINES` and :class:`StoreFactory`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_twisted

from s3orch.store.interface import MetadataStore
from s3orch.store.sqlite import SQLiteStore

#: Engines the contract runs against (PostgreSQL joins with its issue).
ENGINES = ["sqlite"]


class StoreFactory:
    """Makes stores of one engine on one database, so a test can reopen it."""

    def __init__(self, engine: str, tmp_path: Path) -> None:
        self.engine = engine
        self.tmp_path = tmp_path

    def make(self) -> MetadataStore:
        from twisted.internet import reactor

        if self.engine == "sqlite":
            return SQLiteStore(self.tmp_path / "metadata.db", reactor)
        raise AssertionError(f"unknown engine {self.engine}")


@pytest.fixture(params=ENGINES)
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    return StoreFactory(request.param, tmp_path)


@pytest_twisted.async_yield_fixture()
async def store(store_factory: StoreFactory) -> AsyncIterator[MetadataStore]:
    opened = store_factory.make()
    await opened.start()
    try:
        yield opened
    finally:
        await opened.close()
