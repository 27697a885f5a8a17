"""Build a bucket of a million keys directly in the gateway's SQLite database, for the LIST
scenario: a million PUTs through the gateway would take an hour here, and LIST reads only the
metadata.  The rows are what a committed 1 KiB PUT leaves (an ``objects`` row, its location on
the first backend, the backend's usage counters), so the gateway sees an ordinary bucket; the
backend holds no bytes for them (never GET them).

Written in batches, each its own short transaction, so a running gateway's own writes wait at
most one batch (its ``busy_timeout`` is seconds).

    python -m tools.bench.bigbucket DB BUCKET [--count N] [--backend NAME]
"""

from __future__ import annotations

import argparse
import hashlib
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

OBJECT_SIZE = 1024
BATCH = 20_000
#: An ETag for every row: LIST shows it, nothing checks it against bytes.
ETAG = hashlib.md5(b"bench-list").hexdigest()


def key_name(index: int) -> str:
    """The ``index``-th key; zero-padded, so key order is index order."""
    return f"key/{index:08d}"


def batches(count: int, size: int = BATCH) -> Iterator[range]:
    """``range(count)`` cut into consecutive ranges of at most ``size``."""
    if size <= 0:
        raise ValueError(f"batch size must be positive, not {size}")
    for start in range(0, count, size):
        yield range(start, min(start + size, count))


def fill_bucket(
    db_path: Path,
    bucket: str,
    count: int,
    backend: str,
    *,
    now: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Insert ``count`` objects into ``bucket`` (keys :func:`key_name`), located on ``backend``;
    returns how many rows were new (a rerun adds nothing)."""
    stamp = time.time() if now is None else now
    added = 0
    conn = sqlite3.connect(db_path, timeout=60, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 60000")
        for chunk in batches(count):
            conn.execute("BEGIN IMMEDIATE")
            try:
                before = conn.total_changes
                conn.executemany(
                    "INSERT OR IGNORE INTO objects (bucket, object_key, write_id, size_bytes, etag,"
                    " last_modified, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    ((bucket, key_name(i), f"benchlist-{i}", OBJECT_SIZE, ETAG, stamp, stamp) for i in chunk),
                )
                new = conn.total_changes - before
                conn.executemany(
                    "INSERT OR IGNORE INTO object_locations (bucket, object_key, part_number, backend_name,"
                    " storage_key, write_id, size_bytes, created_at) VALUES (?, ?, 0, ?, ?, ?, ?, ?)",
                    (
                        (bucket, key_name(i), backend, f"bench-list/{bucket}/{i}", f"benchlist-{i}",
                         OBJECT_SIZE, stamp)
                        for i in chunk
                    ),
                )
                conn.execute(
                    "UPDATE backend_quotas SET bytes_used = bytes_used + ?, object_count = object_count + ?,"
                    " updated_at = ? WHERE backend_name = ?",
                    (new * OBJECT_SIZE, new, stamp, backend),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            added += new
            if progress is not None:
                progress(chunk.stop)
        conn.execute("PRAGMA optimize")
    finally:
        conn.close()
    return added


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.bigbucket", description=__doc__.split("\n")[0])
    parser.add_argument("db", type=Path, help="the gateway's SQLite database (database.path)")
    parser.add_argument("bucket", help="the virtual bucket to fill (one of the config's buckets)")
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--backend", default=None, help="the backend the rows say they are on (default: the first)")
    args = parser.parse_args(argv)
    backend = args.backend
    if backend is None:
        with sqlite3.connect(args.db) as conn:
            row = conn.execute("SELECT backend_name FROM backend_quotas ORDER BY rowid LIMIT 1").fetchone()
        if row is None:
            parser.error("no backend in backend_quotas: start the gateway once first, or pass --backend")
        backend = row[0]
    added = fill_bucket(args.db, args.bucket, args.count, backend)
    print(f"{added} objects added to {args.bucket} (on {backend})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
