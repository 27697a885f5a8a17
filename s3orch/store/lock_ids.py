"""Every PostgreSQL advisory lock id s3orch takes, in one place that imports nothing of s3orch.

Several s3orch instances share one PostgreSQL database and coordinate through
advisory locks; the ids are a protocol between instances (and between versions
of s3orch during a rolling upgrade), so they live here, apart from the code that
takes them, where a new one cannot collide unnoticed.

Session locks, single ``bigint`` key space::

    id    holder                          kind
    1000  schema migrations               session lock, waited for (pg_advisory_lock)
    1001  rebalancer                      worker, try-lock
    1002  replicator                      worker, try-lock
    1003  cleanup queue                   worker, try-lock
    1004  multipart GC                    worker, try-lock
    1005  lifecycle                       worker, try-lock
    1006  drain                           worker, try-lock
    1007  usage flush                     worker, try-lock
    1008  over-replication                worker, try-lock
    1009  reconcile                       worker, try-lock
    1010  scrubber                        worker, try-lock
    1011  notification outbox drain       worker, try-lock
    1012  pending reaper                  worker, try-lock (an s3orch addition; intents are
                                          also claimed per row, like cleanup rows)

1000-1011 are the numbers s3-orchestrator (the Go product s3orch re-creates)
uses for the same workers, so an operator's monitoring of ``pg_locks`` reads the same.

Transaction-scoped locks use the *two-int4* key space, which PostgreSQL keeps
apart from the single-key space above (so the two can never collide): the first
key is a class below, the second :func:`key_lock_id` of what is locked.
"""

from __future__ import annotations

import enum
import hashlib

#: The session lock two instances starting together take around migrations.
MIGRATION_LOCK_ID = 1000

#: First key of the transaction-scoped per-object-key locks (``"S3"`` in ASCII).
OBJECT_KEY_LOCK_CLASS = 0x5333
#: First key of the per-bucket lock around counting open multipart uploads.
UPLOAD_LIMIT_LOCK_CLASS = 0x5334


class WorkerLock(enum.IntEnum):
    """The advisory lock id of each background worker (see the module's table)."""

    REBALANCER = 1001
    REPLICATOR = 1002
    CLEANUP = 1003
    MULTIPART_GC = 1004
    LIFECYCLE = 1005
    DRAIN = 1006
    USAGE_FLUSH = 1007
    OVER_REPLICATION = 1008
    RECONCILE = 1009
    SCRUBBER = 1010
    NOTIFICATION_OUTBOX = 1011
    PENDING_REAPER = 1012


def key_lock_id(bucket: str, key: str) -> int:
    """The second key of an object key's (or a bucket's) lock: a stable signed 32-bit hash.

    Two keys sharing a hash only wait for each other; correctness never depends
    on it being unique.  Bucket names cannot contain ``/``, so the pair is unambiguous.
    """
    digest = hashlib.blake2b(f"{bucket}/{key}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)
