"""One rewrite loop for every stored-form pass: encrypt-existing, decrypt-existing,
compress-existing, decompress-existing (BEHAVIOURS §1.19, §1.20; issue 18 item 2).

A pass names a :class:`StoredForm` (encrypted yes/no/keep, compressed yes/no/keep) and the pages
of keys to visit; :class:`StoredFormRewriter` does the rest, the same way for all four, so the rules
are written once:

* each object is read back whole as the client wrote it (through the fleet's clients, so usage
  limits count the GET and the PUTs; checked against its MD5 ETag), turned into the target form
  (compress first, then seal, as a PUT does) and written to each backend holding a copy *under a
  new storage key*;
* one transaction (:meth:`~s3orch.store.interface_crypto.CryptoStore.swap_stored_bytes`) swaps the
  copies and the row's encryption and compression columns, moves ``bytes_used`` by the size delta
  and queues the old copies for cleanup, only while the object's write id is unchanged: a client
  write that raced the pass wins and the pass's new bytes are deleted;
* an object already in the target form is skipped (a second run does nothing); one whose
  compressed form is worse than ``compression.min_ratio`` is left as it is and counted skipped
  (a later run reads and tries it again: nothing marks it);
* a multi-extent (multipart) object is rewritten extent by extent, as UploadPart stores a part
  (:mod:`s3orch.core.rewrite_parts`), and swapped whole in the same one transaction; its ETag
  stays (it is over the client's part MD5s);
* a rewrite that would grow a copy past its backend's free room is refused (counted failed)
  rather than pushing the backend over its quota.

A crash between the new copies' upload and the swap leaves unreferenced backend objects, which
reconcile finds.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from s3orch.codec.streams import CompressionSettings, compress_spool
from s3orch.core.cleanup import Cleanups
from s3orch.core.extents import check_read_back
from s3orch.core.fleet import BackendFleet
from s3orch.core.objects import ObjectService
from s3orch.core.placement import storage_key
from s3orch.core.rewrite_parts import ExtentRewriter, NotWorthIt
from s3orch.core.spool import Offload
from s3orch.payload import Payload
from s3orch.store.interface import Location, MetadataStore, ObjectRecord

#: Keys read per page (one store query each).
BATCH = 100
#: The cleanup reason of a copy replaced by its rewrite (as the store's transaction names it).
REWRITE_REASON = "encryption_rewrite"

_log = Logger(namespace="s3orch.core.rewrite")

#: One page of (bucket, key) after ``after`` (None: from the start), at most ``limit`` of them.
PageQuery = Callable[[tuple[str, str] | None, int], Awaitable[list[tuple[str, str]]]]


class StatusCounter(Protocol):
    """A ``{status}``-labelled counter (``s3o_*_existing_objects_total``)."""

    def labels(self, *values: str) -> Any: ...


@dataclass(frozen=True)
class StoredForm:
    """What a pass turns objects into; ``None`` keeps each object's own state."""

    encrypted: bool | None = None
    compressed: bool | None = None

    def reached_by(self, record: ObjectRecord) -> bool:
        """``record`` is in this form already (nothing to do)."""
        return (self.encrypted is None or record.encrypted == self.encrypted) and (
            self.compressed is None or record.compressed == self.compressed
        )


@dataclass
class Tally:
    """A pass's counts: ``done`` rewritten, ``skipped`` (already converted, left as is, or
    replaced by a client meanwhile), ``failed``, ``total`` visited."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    total: int = 0


_Skip = NotWorthIt


async def pages(query: PageQuery) -> AsyncIterator[list[tuple[str, str]]]:
    """Every page of ``query``, in key order, :data:`BATCH` keys each."""
    after: tuple[str, str] | None = None
    while True:
        page = await query(after, BATCH)
        if not page:
            return
        yield page
        if len(page) < BATCH:
            return
        after = page[-1]


class StoredFormRewriter:
    """Rewrites objects into a :class:`StoredForm`, over one gateway's store, fleet and codecs.

    The envelope and the compressor are read from ``objects`` at each call (the tap sets them;
    tests switch them).  ``offload``/``spool_dir`` compress the objects that keep their
    compression while ``compression.enabled`` is off (their row holds their chunk size)."""

    def __init__(
        self, objects: ObjectService, cleanups: Cleanups, clock: IReactorTime, *, offload: Offload,
        spool_dir: str | None = None,
    ) -> None:
        self.objects = objects
        self.cleanups = cleanups
        self.clock = clock
        self.offload = offload
        self.spool_dir = spool_dir

    @property
    def store(self) -> MetadataStore:
        return self.objects.store

    @property
    def fleet(self) -> BackendFleet:
        return self.objects.fleet

    async def run(
        self, query: PageQuery, target: StoredForm, *, operation: str, metric: StatusCounter, progress: Any
    ) -> Tally:
        """Visit every key ``query`` pages through, rewriting each into ``target``."""
        tally = Tally()
        progress.start(None, operation=operation)
        async for page in pages(query):
            for bucket, key in page:
                tally.total += 1
                status = await self.rewrite_one(bucket, key, target, operation)
                metric.labels(status).inc()
                if status == "success":
                    tally.done += 1
                elif status == "failed":
                    tally.failed += 1
                else:
                    tally.skipped += 1
                progress.step_end("object", key=f"{bucket}/{key}", status=status)
        return tally

    async def rewrite_one(self, bucket: str, key: str, target: StoredForm, operation: str) -> str:
        """``success``, ``skipped`` or ``failed`` (logged with the reason)."""
        record = await self.store.get_object(bucket, key)
        if record is None or target.reached_by(record):
            return "skipped"  # deleted, or converted by a racing write, since the page was read
        if not record.parts and not record.locations:
            _log.warn("{bucket}/{key}: {operation}: the object has no copies", bucket=bucket, key=key,
                      operation=operation)
            return "failed"
        written: list[Location] = []
        try:
            after = await self._rewrite(record, target, written)
            items = await self.store.swap_stored_bytes(after, record.write_id, self.clock.seconds())
        except _Skip:
            await self._drop(written)
            return "skipped"
        except Exception as exc:
            _log.warn("{bucket}/{key}: {operation} failed: {error}", bucket=bucket, key=key,
                      operation=operation, error=str(exc))
            await self._drop(written)
            return "failed"
        if items is None:  # a client write won the race: our bytes go
            await self._drop(written)
            return "skipped"
        self.cleanups.in_background(items, REWRITE_REASON)
        return "success"

    async def _rewrite(self, record: ObjectRecord, target: StoredForm, written: list[Location]) -> ObjectRecord:
        """Upload ``record``'s new stored form (each copy appended to ``written``); its new row."""
        encrypt = record.encrypted if target.encrypted is None else target.encrypted
        if record.parts:
            extents = ExtentRewriter(self.objects, settings=self._settings, room=self._check_room,
                                     offload=self.offload, spool_dir=self.spool_dir)
            return await extents.rewrite(record, target.compressed, encrypt, written)
        bucket, key = record.bucket, record.key
        plain = await self.objects.spool_range(record, None)
        try:
            check_read_back(plain, record.etag)
            after, stored = await self._stored_form(record, plain, target)
            try:
                await self._check_room({loc.backend: stored.length - loc.size for loc in record.locations})
                for location in record.locations:
                    skey = storage_key(bucket, key, uuid.uuid4().hex)
                    await self.fleet[location.backend].put_object(skey, stored)
                    written.append(Location(location.backend, skey, stored.length))
            finally:
                if stored is not plain:
                    stored.close()
        finally:
            plain.close()
        return replace(after, locations=tuple(written))

    async def _stored_form(
        self, record: ObjectRecord, plain: Payload, target: StoredForm
    ) -> tuple[ObjectRecord, Payload]:
        """The new row and stored bytes of the client's bytes ``plain``: compressed first, then
        sealed, each as ``target`` says or as ``record`` was.  Raises :class:`_Skip` when a
        compression asked for is not worth it."""
        compress = record.compressed if target.compressed is None else target.compressed
        encrypt = record.encrypted if target.encrypted is None else target.encrypted
        packed: Payload | None = None
        chunk: int | None = None
        if compress:
            settings = self._settings(record.compression_chunk_size)
            packed = await compress_spool(plain, settings, spool_dir=self.spool_dir, offload=self.offload)
            if packed is None:
                raise _Skip()
            chunk = settings.chunk_size
        body = plain if packed is None else packed
        record = replace(record, compression_chunk_size=chunk)
        if not encrypt:
            return replace(record, encrypted=False, wrapped_dek="", key_id="", crypto_id=""), body
        envelope = self.objects.envelope
        if envelope is None:
            if packed is not None:
                packed.close()
            raise ValueError("no encryption key is configured")
        try:
            sealed = await envelope.seal(body)
        finally:
            if packed is not None:
                packed.close()
        return sealed.stamp(record), sealed.payload

    def _settings(self, kept: int | None) -> CompressionSettings:
        """``compression.*`` for a new compression (``kept`` None); for one kept, its chunk size
        ``kept`` and no threshold (the object was worth compressing when it was written)."""
        compressor = self.objects.compressor
        configured = compressor.settings if compressor is not None else CompressionSettings()
        if kept is None:
            if compressor is None:
                raise ValueError("compression is not enabled")
            return configured
        return replace(configured, chunk_size=kept, min_size=0, min_ratio=float("inf"))

    async def _check_room(self, delta: dict[str, int]) -> None:
        """Refuse a rewrite that grows a backend's bytes (``delta``: the net change per backend)
        beyond its free room (quota limits hold)."""
        growth = {backend: change for backend, change in delta.items() if change > 0}
        if not growth:
            return
        quotas = await self.store.get_quotas()
        for backend, delta_bytes in growth.items():
            row = quotas.get(backend)
            available = row.available if row is not None else None
            if available is not None and available < delta_bytes:
                raise ValueError(
                    f"backend {backend} has {available} bytes free, the rewrite needs {delta_bytes} more"
                )

    async def _drop(self, written: list[Location]) -> None:
        for location in written:
            try:
                await self.fleet[location.backend].delete_object(location.storage_key)
            except Exception:  # reconcile finds what is left
                _log.warn("could not delete {backend}/{storage_key}", backend=location.backend,
                          storage_key=location.storage_key)
