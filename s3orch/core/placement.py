"""Where a write may go: the candidate backends, in config order, and the backend keys.

The choice among candidates (pack/spread by quota) happens inside the
store's reservation transaction, so it is atomic with the quota update; this
module only filters out backends that cannot take the object at all, and names
the backend object each write goes to.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable, Collection, Sequence

from s3orch.config.model import BackendConfig

#: A bucket name used as it is in backend keys: what a valid S3 bucket name can be.
_PLAIN_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{0,62}")


def new_upload_id(now: float) -> str:
    """A multipart upload id (also the write id of the object it becomes): 32 hex
    characters, 48 bits of milliseconds, then 80 random bits.

    Random enough that nobody guesses one, and time-ordered, so sorting a key's
    uploads by id (what ``upload-id-marker`` paging compares) is also sorting
    them by initiation time (what ListMultipartUploads promises).
    """
    millis = int(now * 1000) & 0xFFFFFFFFFFFF
    return f"{millis:012x}{secrets.token_hex(10)}"


def bucket_prefix(bucket: str) -> str:
    """The first segment of every backend key of ``bucket`` (buckets stay isolated on backends too).

    The bucket name itself when it is a valid S3 bucket name, so an operator sees
    whose bytes are whose.  Any other name (the config only warns about those) is
    replaced by a hash that starts with ``-``, a character no valid bucket name starts
    with, so it can never collide with another bucket's prefix.
    """
    if _PLAIN_BUCKET.fullmatch(bucket):
        return bucket
    return "-" + hashlib.sha256(bucket.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def key_digest(key: str) -> str:
    """The SHA-256 (hex) of a client key: what a backend key says of it."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def storage_key(bucket: str, key: str, write_id: str) -> str:
    """The backend key of one write (a PUT or a copy): ``{bucket}/{sha256(key)}/{write_id}``.

    Every write gets its own backend key, so an overwrite never destroys the
    committed bytes before the new version's metadata commits, and no cleanup of
    an old write can ever delete a newer one.  The key is opaque: lower-case hex
    and the bucket prefix only, so no client key can put a ``..`` segment, a
    ``//`` or anything else a normalising backend or proxy would rewrite into it
    (the client key lives in the database, which also gives listing order).
    ``write_id`` must be lower-case hex (a uuid4 or an upload id).
    """
    return f"{bucket_prefix(bucket)}/{key_digest(key)}/{write_id}"


def part_storage_key(bucket: str, key: str, upload_id: str, part_number: int, attempt_id: str) -> str:
    """The backend key of one upload of one part: ``{bucket}/{sha256(key)}/{upload id}/
    {part number}-{attempt id}`` (each attempt its own key, so an upload racing a
    re-upload of the same part never overwrites it)."""
    return f"{bucket_prefix(bucket)}/{key_digest(key)}/{upload_id}/{part_number:05d}-{attempt_id}"


def write_candidates(
    backends: Sequence[BackendConfig],
    size: int,
    exclude: Collection[str] = (),
    is_available: Callable[[str], bool] = lambda name: True,
) -> list[str]:
    """Backends that may receive an object of ``size`` bytes, in config order.

    Skips excluded backends (already failed for this write), unavailable ones
    (open circuit, draining) and those whose ``max_object_size`` is smaller.
    """
    names = []
    for backend in backends:
        if backend.name in exclude or not is_available(backend.name):
            continue
        limit = backend.max_object_size
        if limit and size > limit:
            continue
        names.append(backend.name)
    return names
