"""Where a write may go: the candidate backends, in config order.

The choice among candidates (pack/spread by quota) happens inside the
store's reservation transaction, so it is atomic with the quota update; this
module only filters out backends that cannot take the object at all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Sequence
from typing import Any

#: Backend object keys are limited to 1024 bytes by S3.
MAX_STORAGE_KEY_BYTES = 1024


def storage_key(bucket: str, key: str, write_id: str) -> str:
    """The backend key of one write: ``{bucket}/{key}@{write_id}``.

    Every write gets its own backend key, so an overwrite never destroys the
    committed bytes before the new version's metadata commits, and no cleanup
    of an old write can ever delete a newer one.  Keys that would exceed the
    backend's 1024-byte limit are stored under a hashed name instead.
    """
    candidate = f"{bucket}/{key}@{write_id}"
    if len(candidate.encode("utf-8")) <= MAX_STORAGE_KEY_BYTES:
        return candidate
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
    return f"{bucket}/.s3orch-long-keys/{digest}@{write_id}"


def write_candidates(
    backends: Sequence[Any],
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
        limit = getattr(backend, "max_object_size", 0) or 0
        if limit and size > limit:
            continue
        names.append(backend.name)
    return names
