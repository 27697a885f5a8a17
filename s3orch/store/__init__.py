"""s3orch.store: the metadata database behind one contract, so callers never name an engine.

Modules: :mod:`~s3orch.store.interface` (the :class:`MetadataStore` contract;
its values in :mod:`~s3orch.store.records`, its exceptions in
:mod:`~s3orch.store.errors`), :mod:`~s3orch.store.sqlstore` (the store, written
once), :mod:`~s3orch.store.txn` (the transactions, by domain),
:mod:`~s3orch.store.engine` with :mod:`~s3orch.store.sqlite` and
:mod:`~s3orch.store.postgres` (what differs per database; typed adbapi calls in
:mod:`~s3orch.store.adbapi_typed`),
:mod:`~s3orch.store.drivers` (``database.driver`` -> engine),
:mod:`~s3orch.store.migrate` (schema versions), :mod:`~s3orch.store.locks` and
:mod:`~s3orch.store.lock_ids` (worker locks across instances).
"""

from s3orch.store.drivers import (
    UnsupportedDriver,
    engine_for,
    migrate_database,
    open_store,
    open_worker_locks,
)
from s3orch.store.errors import StoreError, StoreUnavailable
from s3orch.store.interface import MetadataStore

__all__ = [
    "MetadataStore",
    "StoreError",
    "StoreUnavailable",
    "UnsupportedDriver",
    "engine_for",
    "migrate_database",
    "open_store",
    "open_worker_locks",
]
