"""Integrity: verify a full GET while it streams, scrub stored copies, backfill SHA-256s.

What a copy must hash to is in the metadata (:func:`~s3orch.store.txn.integrity.expected_digest`):
the plaintext SHA-256 of a single-extent object, each part's MD5 for a multipart one.

* ``verify_on_read``: a full GET hashes each extent as it passes; the relay holds back the
  last chunk until the last extent is verified, so a mismatch anywhere **aborts the client
  connection** and the client never receives a complete 200 of other bytes (s3-orchestrator
  finished those responses normally).  The bad bytes may be the stored copy's or damage in
  transit, so the object's copies are then scrubbed directly: only a copy that fails there is
  dropped.
* The scrubber (``scrubber_interval``, lock 1010) works through the least recently verified
  copies; a copy that does not match is dropped **with its row** while another copy of the
  extent remains, so the replicator rebuilds it from a good one (s3-orchestrator deleted the
  bytes and kept the row, so the copy was never rebuilt).  The last copy is kept and reported.
* ``backfill-checksums`` reads one good copy of each single-extent object stored without a
  SHA-256 (checked against its MD5 ETag first) and stores the hash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from s3orch.backend.interface import BackendError, BackendUnavailable, PushProducer
from s3orch.codec.objects import open_compressed_extent
from s3orch.codec.streams import CompressedStreamRejected
from s3orch.config.model import IntegrityConfig
from s3orch.core.cleanup import Cleanups
from s3orch.core.fleet import BackendFleet
from s3orch.crypto.envelope import Envelope
from s3orch.crypto.format import MAGIC as ENCRYPTED_MAGIC
from s3orch.crypto.streams import CiphertextRejected
from s3orch.notify.events import CORRUPTION_DETECTED
from s3orch.notify.sink import NULL_SINK, EventSink
from s3orch.observe.audit import audit
from s3orch.observe.metrics import INTEGRITY_CHECKS, INTEGRITY_ERRORS
from s3orch.observe.metrics_crypto import FLAG_MISMATCH
from s3orch.s3 import errors
from s3orch.store.interface import Location, MetadataStore, ObjectRecord
from s3orch.store.records import Extent, ScrubCopy
from s3orch.store.txn.integrity import INTEGRITY_REASON, expected_digest

#: Verdicts of one copy (``POST /admin/api/object-scrub``), as s3-orchestrator names them.
VERIFIED, MISMATCH, UNREADABLE, NOT_HASHED, DEFERRED = "verified", "mismatch", "unreadable", "not_hashed", "deferred"


class DigestMismatch(BackendUnavailable):
    """Bytes read do not hash to what the metadata says (the relay aborts the client)."""


class _Hashes:
    """Running digests of one extent, by algorithm name."""

    def __init__(self, algorithm: str) -> None:
        self.algorithm = algorithm
        self.hash = hashlib.new(algorithm)
        self.size = 0

    def update(self, data: bytes | memoryview) -> None:
        self.hash.update(data)
        self.size += len(data)

    def matches(self, expected: str, size: int) -> bool:
        return self.size == size and self.hash.hexdigest() == expected.lower()


class StreamVerifier:
    """Hashes a full GET's body extent by extent (the relay's ``verifier``).

    ``update`` raises :class:`DigestMismatch` as soon as an extent that ended does not
    match; ``finish`` checks the last one.  Extents without an expected digest pass unchecked.
    """

    def __init__(self, segments: Sequence[tuple[int, tuple[str, str] | None]]) -> None:
        self._segments = list(segments)
        self._index = 0
        self._left = self._segments[0][0] if self._segments else 0
        self._current = self._start(0)

    def _start(self, index: int) -> _Hashes | None:
        if index >= len(self._segments) or self._segments[index][1] is None:
            return None
        return _Hashes(self._segments[index][1][0])  # type: ignore[index]

    def update(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._index >= len(self._segments):
                raise DigestMismatch("more bytes than the object holds")
            take = view[: self._left]
            if self._current is not None:
                self._current.update(take)
            self._left -= len(take)
            view = view[len(take):]
            if self._left == 0:
                self._end_segment()

    def _end_segment(self) -> None:
        size, expected = self._segments[self._index]
        if self._current is not None and expected is not None and not self._current.matches(expected[1], size):
            raise DigestMismatch(
                f"extent {self._index} does not match its {expected[0]} ({self._current.hash.hexdigest()}"
                f" instead of {expected[1]})"
            )
        self._index += 1
        while self._index < len(self._segments) and self._segments[self._index][0] == 0:
            self._index += 1  # empty extents hash to nothing: nothing to wait for
        if self._index < len(self._segments):
            self._left = self._segments[self._index][0]
            self._current = self._start(self._index)

    def finish(self) -> None:
        if self._index < len(self._segments):
            raise DigestMismatch(f"the body ended inside extent {self._index}")


def read_segments(record: ObjectRecord) -> list[tuple[int, tuple[str, str] | None]]:
    """(size, expected digest) of each extent of ``record``, in order."""
    return [
        (extent.size, expected_digest(extent.part_number, record.content_hash, record.etag, extent.etag))
        for extent in record.extents
    ]


def read_verifier(scrubber: Scrubber | None, record: ObjectRecord, byte_range: tuple[int, int] | None
                  ) -> StreamVerifier | None:
    """The verifier of a GET when ``verify_on_read`` is on: full GETs of objects with a digest
    (a range cannot be checked against a whole-object hash)."""
    config = None if scrubber is None else scrubber.config
    if config is None or not (config.enabled and config.verify_on_read) or byte_range is not None:
        return None
    segments = read_segments(record)
    if not any(expected for _, expected in segments):
        return None
    INTEGRITY_CHECKS.labels("read").inc()
    return StreamVerifier(segments)


class HashSink:
    """A body consumer that only hashes, with each of ``algorithms`` (the scrubber and the
    backfill read copies through it: nothing is stored, memory stays one chunk)."""

    def __init__(self, *algorithms: str) -> None:
        self.hashes = {name: _Hashes(name) for name in algorithms}
        #: The first bytes seen (enough to recognise the encrypted format's header).
        self.head = b""

    def registerProducer(self, producer: PushProducer, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        if len(self.head) < len(ENCRYPTED_MAGIC):
            self.head += data[: len(ENCRYPTED_MAGIC) - len(self.head)]
        for running in self.hashes.values():
            running.update(data)

    def matches(self, expected: tuple[str, str], size: int) -> bool:
        return self.hashes[expected[0]].matches(expected[1], size)


@dataclass
class ScrubResult:
    """One scrub pass (or one object's scrub)."""

    checked: int = 0
    mismatches: int = 0
    errors: int = 0
    deferred: int = 0
    dropped: int = 0
    verdicts: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": "complete", "checked": self.checked, "mismatches": self.mismatches,
            "errors": self.errors, "deferred": self.deferred, "dropped": self.dropped,
        }


class Progress(Protocol):
    def start(self, total: int | None = None, **fields: Any) -> None: ...

    def step_start(self, step: str, **fields: Any) -> None: ...

    def step_end(self, step: str, **fields: Any) -> None: ...


class Scrubber:
    """Verifies stored copies against the metadata and drops the corrupt ones (see the module)."""

    log = Logger(namespace="s3orch.core")

    def __init__(
        self,
        store: MetadataStore,
        fleet: BackendFleet,
        cleanups: Cleanups,
        clock: IReactorTime,
        config: IntegrityConfig,
        events: EventSink = NULL_SINK,
    ) -> None:
        self.store = store
        self.fleet = fleet
        self.cleanups = cleanups
        self.clock = clock
        self.config = config
        self.events = events
        #: ``encryption``: decrypts encrypted copies to check them (set by the tap).
        self.envelope: Envelope | None = None
        #: Objects a failed read asked to scrub, so a burst of bad reads scrubs each once.
        self._suspects: set[tuple[str, str]] = set()

    # -- one copy ----------------------------------------------------------------------------

    async def verdict(self, copy: ScrubCopy) -> str:
        """Read ``copy`` from its backend and hash it: verified, mismatch, unreadable,
        not_hashed, or deferred (its backend's breaker is open)."""
        if copy.expected is None:
            return NOT_HASHED
        client = self.fleet.client(copy.backend)
        if client is None:
            return UNREADABLE
        state = self.fleet.breaker_states().get(copy.backend)
        if state is not None and state.get("state") == "open":
            return DEFERRED
        if copy.encrypted or copy.compressed:
            return await self._verdict_encrypted(copy, client)
        sink = HashSink(copy.expected[0])
        try:
            stream = await client.get_object(copy.storage_key)
            await stream.deliver(sink)
        except BackendError as exc:
            self.log.warn(
                "scrub could not read a copy", component="integrity", backend=copy.backend,
                storage_key=copy.storage_key, error=str(exc),
            )
            return UNREADABLE
        if sink.matches(copy.expected, copy.size):
            return VERIFIED
        if sink.head == ENCRYPTED_MAGIC:  # the row says plaintext; the bytes are our ciphertext
            FLAG_MISMATCH.labels("scrubber").inc()
        return MISMATCH

    async def _verdict_encrypted(self, copy: ScrubCopy, client: Any) -> str:
        """An encrypted or compressed copy: every chunk's GCM tag (every frame's checksum) is
        checked while decrypting (decompressing), and the client's bytes hashed against the
        object's digest.  A key that cannot be unwrapped says nothing about the copy
        (unreadable); a tag, frame, length or digest failure is a mismatch."""
        assert copy.expected is not None
        record = await self.store.get_object(copy.bucket, copy.key)
        extent = next((e for e in record.extents if e.part_number == copy.part_number), None) if record else None
        if record is None or extent is None or record.write_id != copy.write_id:
            return UNREADABLE
        envelope = self.envelope
        if record.encrypted and envelope is None:
            return UNREADABLE
        try:
            dek = await envelope.data_key(record) if envelope is not None and record.encrypted else None
        except errors.S3Error:
            return UNREADABLE
        location = Location(copy.backend, copy.storage_key, copy.size)

        async def opener(_: object, byte_range: tuple[int, int] | None) -> tuple[Any, Location]:
            return await client.get_object(copy.storage_key, byte_range), location

        if extent.compression_chunk_size is not None:  # this copy alone, through the envelope when sealed
            alone = replace(extent, locations=(location,))
            return await self._verdict_opened(
                copy, extent, lambda: open_compressed_extent(record, alone, None, opener, envelope, dek)
            )
        assert envelope is not None
        return await self._verdict_opened(copy, extent, lambda: envelope.open_extent(record, extent, None, opener, dek))

    async def _verdict_opened(
        self, copy: ScrubCopy, extent: Extent, open_stream: Callable[[], Awaitable[tuple[Any, Location]]]
    ) -> str:
        assert copy.expected is not None
        sink = HashSink(copy.expected[0])
        try:
            stream, _ = await open_stream()
            await stream.deliver(sink)
        except (CiphertextRejected, CompressedStreamRejected, errors.S3Error):
            return MISMATCH
        except BackendError as exc:
            self.log.warn("scrub could not read a copy", component="integrity", backend=copy.backend,
                          storage_key=copy.storage_key, error=str(exc))
            return UNREADABLE
        return VERIFIED if sink.matches(copy.expected, extent.size) else MISMATCH

    async def _check(self, copies: Sequence[ScrubCopy], trigger: str, result: ScrubResult) -> None:
        """Verify ``copies`` (counted as ``operation="scrub"``, whatever ``trigger`` asked)."""
        verified: list[ScrubCopy] = []
        for copy in copies:
            verdict = await self.verdict(copy)
            entry: dict[str, Any] = {
                "bucket": copy.bucket, "key": copy.key, "part_number": copy.part_number,
                "backend": copy.backend, "storage_key": copy.storage_key, "verdict": verdict,
            }
            if verdict in (VERIFIED, MISMATCH):
                result.checked += 1
                INTEGRITY_CHECKS.labels("scrub").inc()
            if verdict == VERIFIED:
                verified.append(copy)
            elif verdict == MISMATCH:
                result.mismatches += 1
                INTEGRITY_ERRORS.labels("scrub").inc()
                entry["dropped"] = await self._drop(copy, trigger)
                result.dropped += int(entry["dropped"])
            elif verdict == UNREADABLE:
                result.errors += 1
            elif verdict == DEFERRED:
                result.deferred += 1
            result.verdicts.append(entry)
        if verified:
            await self.store.mark_verified(verified, self.clock.seconds())

    async def _drop(self, copy: ScrubCopy, trigger: str) -> bool:
        """A copy that failed: drop it (and its row) unless it is the last; tell the operator."""
        item = await self.store.drop_corrupt_copy(copy, self.clock.seconds())
        data = {
            "bucket": copy.bucket, "key": copy.key, "part_number": copy.part_number, "backend": copy.backend,
            "storage_key": copy.storage_key, "trigger": trigger, "removed": item is not None,
        }
        self.log.error(
            "stored copy does not match its {algorithm}; {what}", algorithm=copy.expected[0] if copy.expected else "",
            what="dropped for the replicator to rebuild" if item is not None else "kept (the last copy)",
            component="integrity", **{k: v for k, v in data.items() if k != "trigger"},
        )
        audit("integrity.corruption_detected", **data)
        await self.events.emit(CORRUPTION_DETECTED, copy.key, data)
        if item is not None:
            await self.cleanups.run([item], INTEGRITY_REASON)
        return item is not None

    # -- passes ------------------------------------------------------------------------------

    async def scrub_object(self, bucket: str, key: str, trigger: str = "admin") -> ScrubResult | None:
        """Verify every copy of the key's current version; None when the key has no copies.
        ``trigger``: who asked (``admin``, or ``read`` after a GET failed verification)."""
        copies = await self.store.copies_to_scrub(bucket, key)
        if not copies:
            return None
        result = ScrubResult()
        await self._check(copies, trigger, result)
        return result

    async def run_pass(self, progress: Progress | None = None, batch_size: int | None = None) -> ScrubResult:
        """Verify the ``batch_size`` least recently verified copies."""
        batch = batch_size or self.config.scrubber_batch_size
        copies = await self.store.scrub_candidates(batch, self.clock.seconds())
        if progress is not None:
            progress.start(total=len(copies))
        result = ScrubResult()
        for copy in copies:
            if progress is not None:
                progress.step_start("copy", backend=copy.backend)
            await self._check([copy], "schedule", result)
            if progress is not None:
                progress.step_end("copy", done=result.checked + result.errors + result.deferred,
                                  mismatches=result.mismatches)
        return result

    def suspect(self, record: ObjectRecord) -> Deferred[None]:
        """A verified read failed: scrub the object's copies in the background (once at a time)."""
        name = (record.bucket, record.key)
        INTEGRITY_ERRORS.labels("read").inc()
        self.log.error(
            "a GET's bytes did not match the object's digest; the client connection was aborted",
            component="integrity", bucket=record.bucket, key=record.key,
        )
        if name in self._suspects:
            return Deferred.fromCoroutine(_nothing())
        self._suspects.add(name)

        async def scrub() -> None:
            try:
                await self.scrub_object(record.bucket, record.key, "read")
            except Exception as exc:  # a background task: log, never raise into the reactor
                self.log.warn("scrub after a failed read failed", component="integrity", error=str(exc))
            finally:
                self._suspects.discard(name)

        return Deferred.fromCoroutine(scrub())

    async def backfill(
        self, progress: Progress | None = None, limit: int | None = None,
        pause: Callable[[], Awaitable[None]] | None = None,
    ) -> dict[str, Any]:
        """Store the SHA-256 of single-extent objects written without one (at most ``limit``)."""
        hashed = failed = changed = 0
        after: tuple[str, str] | None = None
        if progress is not None:
            progress.start(total=None)
        while limit is None or hashed + failed + changed < limit:
            copies, after = await self.store.unhashed_objects(after, 100)
            for (bucket, key), group in _by_object(copies):
                if limit is not None and hashed + failed + changed >= limit:
                    break
                outcome = await self._hash_one(group)
                if outcome is None:
                    failed += 1
                elif await self.store.set_content_hash(bucket, key, group[0].write_id, outcome):
                    hashed += 1
                else:
                    changed += 1  # overwritten or deleted meanwhile: the new version has its hash
                if progress is not None:
                    progress.step_end("object", hashed=hashed, failed=failed)
                if pause is not None:
                    await pause()
            if after is None:
                break
        return {"status": "complete", "hashed": hashed, "failed": failed, "changed": changed}

    async def _hash_one(self, copies: Sequence[ScrubCopy]) -> str | None:
        """The SHA-256 of the first copy whose bytes match its MD5 ETag (None: none did)."""
        for copy in copies:
            client = self.fleet.client(copy.backend)
            if client is None:
                continue
            sink = HashSink("sha256", "md5")
            try:
                stream = await client.get_object(copy.storage_key)
                await stream.deliver(sink)
            except BackendError:
                continue
            sha = sink.hashes["sha256"]
            if sha.size != copy.size or (copy.expected is not None and not sink.matches(copy.expected, copy.size)):
                continue  # short, or not the bytes its ETag names: try another copy
            return sha.hash.hexdigest()
        return None


def _by_object(copies: Sequence[ScrubCopy]) -> list[tuple[tuple[str, str], list[ScrubCopy]]]:
    grouped: dict[tuple[str, str], list[ScrubCopy]] = {}
    for copy in copies:
        grouped.setdefault((copy.bucket, copy.key), []).append(copy)
    return list(grouped.items())


async def _nothing() -> None:
    return None
