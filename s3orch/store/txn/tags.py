"""Object tags: replace the tag set of a key's current version, in place.

The set lives among the version's stored headers (:data:`s3orch.s3.tagging.TAGS_FIELD`), so
this is a read-modify-write of that one column under the key's lock; the version's
identity (write id, ETag, Last-Modified) is unchanged, as AWS leaves them unchanged.
"""

from __future__ import annotations

import json

from s3orch.s3.tagging import TAGS_FIELD
from s3orch.store.txn.base import Notes, Tx


def txn_set_object_tags(tx: Tx, notes: Notes, bucket: str, key: str, encoded: str) -> bool:
    """Store ``encoded`` (the canonical form; ``""`` clears) as the key's tag set; False when
    the key has no current version."""
    tx.dialect.lock_key(tx, bucket, key)
    row = tx.execute(
        f"SELECT headers FROM objects WHERE bucket = ? AND object_key = ?{tx.for_update()}", (bucket, key)
    ).fetchone()
    if row is None:
        return False
    headers = json.loads(row[0] or "{}")
    if encoded:
        headers[TAGS_FIELD] = encoded
    else:
        headers.pop(TAGS_FIELD, None)
    tx.execute(
        "UPDATE objects SET headers = ? WHERE bucket = ? AND object_key = ?",
        (json.dumps(headers, sort_keys=True), bucket, key),
    )
    return True
