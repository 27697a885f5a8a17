"""Listings: keys and open multipart uploads by range scans, common prefixes skipped whole.

A common prefix is emitted once and the scan restarts past every key under it,
so a "directory" of a million keys costs one index seek, not a million rows;
batches start at :data:`LIST_BATCH_MIN` rows and double while no prefix
interrupts.  Both listings run in one read snapshot.
"""

from __future__ import annotations

from typing import Any

from s3orch.store.records import (
    ORIGIN_CLIENT,
    UPLOAD_OPEN,
    ListEntry,
    ListPage,
    MultipartUpload,
    UploadListPage,
)
from s3orch.store.txn.base import Notes, Tx
from s3orch.store.txn.multipart import UPLOAD_COLUMNS, upload_from_row

#: Listings with a delimiter fetch this many rows first (a common prefix ends the batch
#: early), doubling while no prefix interrupts; without one, all they need.
LIST_BATCH_MIN = 32


def prefix_upper_bound(prefix: str) -> str | None:
    """The smallest string greater than every string that starts with ``prefix``.

    None when there is none (empty prefix, or only U+10FFFF characters).  The
    successor of U+D7FF is U+E000: surrogates have no UTF-8 form, so no key holds one.
    """
    chars = prefix
    while chars:
        last = ord(chars[-1])
        chars = chars[:-1]
        if last < 0x10FFFF:
            following = 0xE000 if 0xD7FF <= last < 0xE000 else last + 1
            return chars + chr(following)
    return None


def common_prefix(key: str, prefix: str, delimiter: str) -> str | None:
    """The common prefix ``key`` rolls up into, or None when it is listed itself."""
    if not delimiter:
        return None
    at = key.find(delimiter, len(prefix))
    if at < 0:
        return None
    return key[: at + len(delimiter)]


def _objects_range(
    tx: Tx, bucket: str, lower: str, inclusive: bool, upper: str | None, limit: int
) -> list[tuple[Any, ...]]:
    """The first ``limit`` listing rows of ``bucket`` from ``lower`` up to ``upper``: one
    range scan of the (bucket, object_key) primary key, in key order (no sort)."""
    sql = (
        "SELECT object_key, COALESCE(plaintext_size, size_bytes), etag, last_modified FROM objects"
        f" WHERE bucket = ? AND object_key {'>=' if inclusive else '>'} ?"
    )
    params: list[Any] = [bucket, lower]
    if upper is not None:
        sql += " AND object_key < ?"
        params.append(upper)
    sql += " ORDER BY object_key LIMIT ?"
    params.append(limit)
    return list(tx.execute(sql, params).fetchall())


def _scan_start(prefix: str, delimiter: str, start_after: str) -> tuple[str | None, bool, str | None]:
    """Where a listing's scan starts (None: nothing to list), whether that key is included,
    and where it stops (None: the end of the bucket)."""
    upper = prefix_upper_bound(prefix)
    if start_after < prefix:
        lower: str | None = prefix
        inclusive = True
    else:
        lower, inclusive = start_after, False
        if start_after.startswith(prefix) and common_prefix(
            start_after, prefix, delimiter
        ) == start_after:
            lower, inclusive = prefix_upper_bound(start_after), True  # skip its whole group
    if upper is not None and lower is not None and lower >= upper:
        lower = None
    return lower, inclusive, upper


def txn_list_keys(
    tx: Tx, notes: Notes, bucket: str, prefix: str, start_after: str, max_keys: int
) -> ListPage:
    """A listing without a delimiter: one range scan of at most ``max_keys + 1`` rows (one
    more than asked, to know whether it is truncated) is the whole page.  Bounded by the
    page size (:data:`~s3orch.s3.listing.MAX_PAGE` keys at most from the front door), so
    the store may run it as a point read.  The columns already have the entries' types
    (BIGINT/INTEGER size, DOUBLE/REAL time), so rows become entries as they are."""
    lower, inclusive, upper = _scan_start(prefix, "", start_after)
    rows = [] if lower is None else _objects_range(tx, bucket, lower, inclusive, upper, max_keys + 1)
    entries = tuple(map(ListEntry._make, rows[:max_keys]))
    truncated = len(rows) > max_keys
    return ListPage(entries, (), truncated, entries[-1].key if truncated and entries else None)


def txn_list_objects(
    tx: Tx,
    notes: Notes,
    bucket: str,
    prefix: str,
    delimiter: str,
    start_after: str,
    max_keys: int,
) -> ListPage:
    """Range scans over the (bucket, object_key) index, in one read snapshot.

    Without a delimiter, :func:`txn_list_keys`.  With one, a common prefix is emitted once
    and the scan restarts past every key under it, so a "directory" of a million keys costs
    one index seek, not a million rows.  Queries ask only for the rows they can still use
    (drivers may fetch a whole result at once).
    """
    if not delimiter:
        return txn_list_keys(tx, notes, bucket, prefix, start_after, max_keys)
    lower, inclusive, upper = _scan_start(prefix, delimiter, start_after)
    wanted = max_keys + 1  # one more than asked, to know whether the listing is truncated
    items: list[ListEntry | str] = []
    batch = LIST_BATCH_MIN
    while lower is not None and len(items) < wanted:
        limit = min(wanted - len(items), batch)
        rows = _objects_range(tx, bucket, lower, inclusive, upper, limit)
        jumped = False
        for key, size, etag, last_modified in rows:
            common = common_prefix(key, prefix, delimiter)
            if common is not None:
                items.append(common)
                lower, inclusive = prefix_upper_bound(common), True
                jumped = True
                break
            items.append(ListEntry(key, size, etag, last_modified))
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


def txn_list_multipart_uploads(
    tx: Tx,
    notes: Notes,
    bucket: str,
    prefix: str,
    delimiter: str,
    key_marker: str,
    upload_id_marker: str,
    max_uploads: int,
) -> UploadListPage:
    """Like :func:`txn_list_objects`, over (key, upload id) of open uploads, in batches."""
    upper = prefix_upper_bound(prefix)
    # The position to scan from: (key, upload id or None); None excludes the whole key.
    after: tuple[str, str | None] | None = None
    start: str | None = prefix  # inclusive lower bound on the key
    if key_marker and key_marker >= prefix:
        if (
            key_marker.startswith(prefix)
            and common_prefix(key_marker, prefix, delimiter) == key_marker
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
        sql = (
            f"SELECT {UPLOAD_COLUMNS} FROM multipart_uploads"
            " WHERE bucket = ? AND state = ? AND origin = ?"
        )
        params: list[Any] = [bucket, UPLOAD_OPEN, ORIGIN_CLIENT]
        if after is not None:
            if after[1] is None:
                sql += " AND object_key > ?"
                params.append(after[0])
            else:
                sql += " AND (object_key, upload_id) > (?, ?)"
                params.extend(after)
        else:
            sql += " AND object_key >= ?"
            params.append(start)
        if upper is not None:
            sql += " AND object_key < ?"
            params.append(upper)
        sql += " ORDER BY object_key, upload_id LIMIT ?"
        params.append(limit)
        rows = tx.execute(sql, params).fetchall()
        jumped = False
        for row in rows:
            upload = upload_from_row(row)
            common = common_prefix(upload.key, prefix, delimiter)
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
