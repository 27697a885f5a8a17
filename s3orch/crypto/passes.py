"""The bulk encryption passes behind ``POST /admin/api/{encrypt-existing,decrypt-existing,
rotate-encryption-key}`` (BEHAVIOURS §1.19), in batches of 100 keys.

* **encrypt-existing** reads each plaintext single-extent object (through the fleet's clients, so
  usage limits count the GET and the PUTs), seals it under a fresh data key, writes the ciphertext
  to each backend holding a copy *under a new storage key*, then one transaction swaps the copies
  and the row's encryption columns, moves ``bytes_used`` by the size delta and queues the old copies
  for cleanup, only if the object's write id is unchanged: a client write that raced the pass wins
  and the pass's new bytes are deleted.  **decrypt-existing** is the mirror image.
* **rotate-encryption-key** re-wraps the data keys wrapped under ``old_key_id`` with the primary key
  (no data is rewritten), compare-and-swap on the write id and the old key id.

Each pass handles only objects not yet converted, so a second run does nothing.  Multi-extent
(multipart) objects are not rewritten by encrypt/decrypt-existing yet: they are counted as failed
and named in the log.  A crash between the new copies' upload and the swap leaves unreferenced
backend objects, which reconcile finds.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import replace
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from s3orch.core.cleanup import Cleanups
from s3orch.core.extents import check_read_back
from s3orch.core.fleet import BackendFleet
from s3orch.core.objects import ObjectService
from s3orch.core.placement import storage_key
from s3orch.crypto.envelope import Envelope
from s3orch.observe.metrics_crypto import (
    DECRYPT_EXISTING_OBJECTS,
    ENCRYPT_EXISTING_OBJECTS,
    KEY_ROTATION_OBJECTS,
    PLAINTEXT_COPIES,
)
from s3orch.payload import Payload
from s3orch.store.interface import Location, MetadataStore, ObjectRecord

BATCH = 100
_log = Logger(namespace="s3orch.crypto")


class EncryptionPasses:
    """The three passes over one gateway's store, fleet and envelope."""

    def __init__(self, objects: ObjectService, envelope: Envelope, cleanups: Cleanups, clock: IReactorTime) -> None:
        self.objects = objects
        self.envelope = envelope
        self.cleanups = cleanups
        self.clock = clock

    @property
    def store(self) -> MetadataStore:
        return self.objects.store

    @property
    def fleet(self) -> BackendFleet:
        return self.objects.fleet

    async def _pages(self, encrypted: bool, key_id: str | None = None) -> Any:
        after: tuple[str, str] | None = None
        while True:
            page = await self.store.objects_by_encryption(encrypted, key_id, after, BATCH)
            if not page:
                return
            yield page
            if len(page) < BATCH:
                return
            after = page[-1]

    async def convert(self, encrypt: bool, progress: Any) -> dict[str, Any]:
        """encrypt-existing (``encrypt``) or decrypt-existing."""
        metric = ENCRYPT_EXISTING_OBJECTS if encrypt else DECRYPT_EXISTING_OBJECTS
        done = failed = total = 0
        progress.start(None, operation="encrypt-existing" if encrypt else "decrypt-existing")
        async for page in self._pages(not encrypt):
            for bucket, key in page:
                total += 1
                status = await self._convert_one(bucket, key, encrypt)
                metric.labels(status).inc()
                if status == "success":
                    done += 1
                elif status == "failed":
                    failed += 1
                progress.step_end("object", key=f"{bucket}/{key}", status=status)
        if encrypt:
            PLAINTEXT_COPIES.set(failed)  # what this pass left in plaintext
        name = "encrypted" if encrypt else "decrypted"
        return {"status": "complete", name: done, "failed": failed, "total": total}

    async def _convert_one(self, bucket: str, key: str, encrypt: bool) -> str:
        record = await self.store.get_object(bucket, key)
        if record is None or record.encrypted == encrypt:
            return "skipped"  # deleted, or converted by a racing write, since the page was read
        if record.parts or not record.locations:
            _log.warn("{bucket}/{key}: multipart objects are not rewritten by this pass", bucket=bucket, key=key)
            return "failed"
        written: list[Location] = []
        try:
            plain = await self.objects.spool_range(record, None)
            try:
                check_read_back(plain, record.etag)
                after, stored = await self._rewrite(record, plain, encrypt)
                try:
                    for location in record.locations:
                        skey = storage_key(bucket, key, uuid.uuid4().hex)
                        await self.fleet[location.backend].put_object(skey, stored)
                        written.append(Location(location.backend, skey, stored.length))
                finally:
                    if stored is not plain:
                        stored.close()
            finally:
                plain.close()
            items = await self.store.swap_stored_bytes(
                replace(after, locations=tuple(written)), record.write_id, self.clock.seconds()
            )
        except Exception as exc:
            _log.warn("{bucket}/{key}: {what} failed: {error}", bucket=bucket, key=key,
                      what="encrypt" if encrypt else "decrypt", error=str(exc))
            await self._drop(written)
            return "failed"
        if items is None:  # a client write won the race: our bytes go
            await self._drop(written)
            return "skipped"
        self.cleanups.in_background(items, "encryption_rewrite")
        return "success"

    async def _rewrite(self, record: ObjectRecord, plain: Payload, encrypt: bool) -> tuple[ObjectRecord, Payload]:
        """The new stored form of the client's bytes ``plain`` (a compressed object's are read back
        decompressed, so it is rewritten uncompressed: the row says so)."""
        record = replace(record, compression_chunk_size=None)
        if encrypt:
            sealed = await self.envelope.seal(plain)
            return sealed.stamp(record), sealed.payload
        return replace(record, encrypted=False, wrapped_dek="", key_id="", crypto_id=""), plain

    async def _drop(self, written: list[Location]) -> None:
        for location in written:
            try:
                await self.fleet[location.backend].delete_object(location.storage_key)
            except Exception:  # reconcile finds what is left
                _log.warn("could not delete {backend}/{storage_key}", backend=location.backend,
                          storage_key=location.storage_key)

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
