"""The bulk encryption passes behind ``POST /admin/api/{encrypt-existing,decrypt-existing,
rotate-encryption-key}`` (BEHAVIOURS §1.19), in batches of 100 keys.

* **encrypt-existing** / **decrypt-existing** rewrite each object not yet converted through the
  shared loop of :mod:`s3orch.core.rewrite` (read back, rewrite under new storage keys, one
  compare-and-swap transaction with the quota delta, old copies queued for cleanup, a racing
  client write wins).  Compression is kept: a compressed object is read back as the client wrote
  it, compressed again with its own chunk size, then sealed (or stored unsealed).
* **rotate-encryption-key** re-wraps the data keys wrapped under ``old_key_id`` with the primary key
  (no data is rewritten), compare-and-swap on the write id and the old key id.

Each pass handles only objects not yet converted, so a second run does nothing.  A multi-extent
(multipart) object is rewritten part by part (:mod:`s3orch.core.rewrite_parts`: one data key for
the object, each part sealed with its number bound in); rotation re-wraps that one key.
"""

from __future__ import annotations

import base64
from typing import Any

from twisted.logger import Logger

from s3orch.core.rewrite import StoredForm, StoredFormRewriter, pages
from s3orch.crypto.envelope import Envelope
from s3orch.observe.metrics_crypto import (
    DECRYPT_EXISTING_OBJECTS,
    ENCRYPT_EXISTING_OBJECTS,
    KEY_ROTATION_OBJECTS,
    PLAINTEXT_COPIES,
)
from s3orch.store.interface import MetadataStore

_log = Logger(namespace="s3orch.crypto")


class EncryptionPasses:
    """The three passes over one gateway's store, fleet and envelope."""

    def __init__(self, rewriter: StoredFormRewriter, envelope: Envelope) -> None:
        self.rewriter = rewriter
        self.envelope = envelope

    @property
    def store(self) -> MetadataStore:
        return self.rewriter.store

    def _pages(self, encrypted: bool, key_id: str | None = None) -> Any:
        return pages(lambda after, limit: self.store.objects_by_encryption(encrypted, key_id, after, limit))

    async def convert(self, encrypt: bool, progress: Any) -> dict[str, Any]:
        """encrypt-existing (``encrypt``) or decrypt-existing; compression is kept as it is."""
        tally = await self.rewriter.run(
            lambda after, limit: self.store.objects_by_encryption(not encrypt, None, after, limit),
            StoredForm(encrypted=encrypt),
            operation="encrypt-existing" if encrypt else "decrypt-existing",
            metric=ENCRYPT_EXISTING_OBJECTS if encrypt else DECRYPT_EXISTING_OBJECTS,
            progress=progress,
        )
        if encrypt:
            PLAINTEXT_COPIES.set(tally.failed)  # what this pass left in plaintext
        name = "encrypted" if encrypt else "decrypted"
        return {"status": "complete", name: tally.done, "failed": tally.failed, "total": tally.total}

    async def rotate(self, old_key_id: str, progress: Any) -> dict[str, Any]:
        """Re-wrap every data key wrapped under ``old_key_id`` with the primary key."""
        rotated = failed = total = 0
        progress.start(None, operation="rotate-encryption-key", old_key_id=old_key_id)
        async for page in self._pages(True, old_key_id):
            for bucket, key in page:
                total += 1
                status = await self._rotate_one(bucket, key, old_key_id)
                KEY_ROTATION_OBJECTS.labels(status).inc()
                rotated += status == "success"
                failed += status == "failed"
                total -= status == "skipped"  # already current: not this pass's to count
                progress.step_end("object", key=f"{bucket}/{key}", status=status)
        return {"status": "complete", "rotated": rotated, "failed": failed, "total": total}

    async def _rotate_one(self, bucket: str, key: str, old_key_id: str) -> str:
        record = await self.store.get_object(bucket, key)
        if record is None or not record.encrypted or record.key_id != old_key_id:
            return "skipped"
        if self.envelope.keys.is_current(base64.b64decode(record.wrapped_dek), record.key_id):
            return "skipped"  # already under the primary key (a second run)
        try:
            dek = await self.envelope.data_key(record)
            wrapped, key_id = await self.envelope.keys.wrap(dek)
        except Exception as exc:
            _log.warn("{bucket}/{key}: rotation failed: {error}", bucket=bucket, key=key, error=str(exc))
            return "failed"
        done = await self.store.rewrap_key(
            bucket, key, record.write_id, old_key_id, base64.b64encode(wrapped).decode("ascii"), key_id
        )
        return "success" if done else "skipped"
