"""Metadata database metrics, on the process registry of :mod:`s3orch.observe.metrics` (kept
apart: that module is at its size limit)."""

from __future__ import annotations

from prometheus_client import Histogram

from s3orch.observe.metrics import REGISTRY

#: One observation per COMMIT of the SQLite writer: how many write transactions it made
#: durable (1 for a transaction that ran alone).  ``_count`` is the number of commits (each
#: one fsync with ``synchronous=FULL``), ``_sum`` the number of write transactions.
DB_GROUP_COMMIT_SIZE = Histogram(
    "s3o_db_group_commit_size",
    "Write transactions made durable by each COMMIT of the SQLite writer (group commit)",
    buckets=(1, 2, 4, 8, 16, 32, 64),
    registry=REGISTRY,
)
