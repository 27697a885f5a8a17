"""The one spool helper (core/spool.py): a backend stream into a replayable Payload.

It honours ``server.spool_dir``, hashes as it writes, and is a proper IConsumer:
a push producer is paused while writes lag behind (and resumed), a pull producer
is asked for one chunk at a time, and a producer that sends more than asked is
stopped after the last wanted byte.  Driven synchronously and with writes held
on Deferreds; no threads, sockets or sleeps.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from twisted.internet.defer import Deferred, fail
from twisted.python.failure import Failure

from s3orch.backend.interface import BackendUnavailable
from s3orch.backend.memory import MemoryBackend, MemoryStream
from s3orch.config.model import BackendConfig
from s3orch.core.cleanup import Cleanups
from s3orch.core.fleet import BackendFleet
from s3orch.core.objects import NewObject, ObjectService
from s3orch.core.spool import Spooler, SpoolWriter, run_here
from s3orch.payload import Payload
from s3orch.s3 import errors
from s3orch.s3.checksums import new_checksum
from s3orch.store.interface import Location, ObjectRecord

T = TypeVar("T")
DATA = bytes(i % 251 for i in range(10_000))


def outcome(coro: Coroutine[Any, Any, T]) -> list[T | Failure]:
    """Start ``coro``; the list gets its result (or Failure) when it ends."""
    results: list[T | Failure] = []
    Deferred.fromCoroutine(coro).addBoth(results.append)
    return results


def done(coro: Coroutine[Any, Any, T]) -> T:
    results = outcome(coro)
    assert results, "did not complete synchronously"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]  # type: ignore[return-value]


class HeldWrites:
    """An offload whose batches wait until the test lets them run (a slow disk)."""

    def __init__(self) -> None:
        self.waiting: list[tuple[Callable[[], None], Deferred[None]]] = []

    def __call__(self, work: Callable[[], None]) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.waiting.append((work, d))
        return d

    def run_one(self) -> None:
        work, d = self.waiting.pop(0)
        work()
        d.callback(None)


def test_a_stream_is_spooled_with_its_digests_and_can_be_read_again() -> None:
    checksum = new_checksum("crc32")
    checksum.update(DATA)
    payload = done(Spooler().spool(MemoryStream(DATA, chunk_size=999), len(DATA), checksum_algorithm="crc32"))
    assert (payload.length, payload.md5_hex, payload.sha256_hex) == (
        len(DATA), hashlib.md5(DATA).hexdigest(), hashlib.sha256(DATA).hexdigest()
    )
    assert payload.checksum == ("CRC32", checksum.b64digest())
    assert payload.reader().read() == DATA
    assert payload.reader().read() == DATA  # replayable: a second backend gets the same bytes
    payload.close()


def test_the_spool_lives_in_the_spool_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str | None] = []
    real = tempfile.TemporaryFile

    def recording(*args: Any, **kwargs: Any) -> Any:
        made.append(kwargs.get("dir"))
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", recording)
    payload = done(Spooler(spool_dir=str(tmp_path)).spool(MemoryStream(DATA), len(DATA)))
    assert made == [str(tmp_path)]
    assert os.readlink(f"/proc/self/fd/{payload.file.fileno()}").startswith(str(tmp_path))
    payload.close()


def test_a_missing_spool_dir_is_a_503_not_a_traceback(tmp_path: Path) -> None:
    with pytest.raises(errors.ServiceUnavailable):
        done(Spooler(spool_dir=str(tmp_path / "gone")).spool(MemoryStream(DATA), len(DATA)))


class CountingStream(MemoryStream):
    """A MemoryStream that counts how often it was paused and resumed."""

    pauses = 0
    resumes = 0

    def pauseProducing(self) -> None:
        self.pauses += 1
        super().pauseProducing()

    def resumeProducing(self) -> None:
        self.resumes += 1
        super().resumeProducing()


def test_a_push_producer_is_paused_while_the_disk_lags_and_resumed_at_half() -> None:
    held = HeldWrites()
    stream = CountingStream(DATA, chunk_size=1000)
    result = outcome(Spooler(offload=held, high_water=3000).spool(stream, len(DATA)))
    # The first chunk is being written; two more wait behind it: high water.
    assert (stream.producerState, stream.delivered, stream.pauses) == ("paused", 3000, 1)
    held.run_one()  # 1000 written, 2000 still to write: over half, still paused
    assert (stream.producerState, stream.resumes) == ("paused", 0)
    held.run_one()  # the rest written: resumed (and paused again at high water)
    assert stream.resumes == 1 and stream.delivered == 6000
    while held.waiting:
        held.run_one()
    assert not stream.cancelled
    assert result and not isinstance(result[0], Failure)
    payload = result[0]
    assert payload.reader().read() == DATA and payload.md5_hex == hashlib.md5(DATA).hexdigest()
    payload.close()


class PullProducer:
    """An IPullProducer: writes one chunk per resumeProducing, then unregisters."""

    def __init__(self, data: bytes, chunk: int) -> None:
        self.chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)]
        self.asked = 0
        self.consumer: SpoolWriter | None = None

    def deliver(self, consumer: SpoolWriter) -> None:
        self.consumer = consumer
        consumer.registerProducer(self, False)  # type: ignore[arg-type]

    def resumeProducing(self) -> None:
        self.asked += 1
        assert self.consumer is not None
        if self.chunks:
            self.consumer.write(self.chunks.pop(0))
        if not self.chunks:
            self.consumer.unregisterProducer()

    def stopProducing(self) -> None:
        self.chunks = []


def test_a_pull_producer_is_asked_for_each_chunk_and_not_while_the_disk_lags() -> None:
    held = HeldWrites()
    writer = SpoolWriter(len(DATA), offload=held, high_water=2500)
    producer = PullProducer(DATA, 1000)
    producer.deliver(writer)  # asks until the backlog reaches high water
    assert producer.asked == 3 and writer.backlog == 3000
    held.run_one()  # 1000 written (2000 still to write): asks for more
    assert producer.asked == 4
    while held.waiting:
        held.run_one()
    assert producer.asked == 10 and producer.chunks == []
    payload = done(writer.finish())
    assert payload.reader().read() == DATA
    payload.close()


def test_a_pull_producer_that_writes_at_once_does_not_recurse() -> None:
    data = b"x" * 20_000
    writer = SpoolWriter(len(data), offload=run_here)
    producer = PullProducer(data, 1)  # 20000 one-byte chunks, each written synchronously
    producer.deliver(writer)
    assert producer.asked == 20_000
    assert done(writer.finish()).length == 20_000


def test_bytes_before_the_range_are_skipped_and_the_producer_stopped_after_the_last_wanted() -> None:
    stream = MemoryStream(DATA, chunk_size=700)  # a backend that ignored the Range
    payload = done(Spooler().spool(stream, 1000, skip=2000))
    assert payload.reader().read() == DATA[2000:3000]
    assert stream.producerState == "stopped"  # not drained to the end
    assert stream.delivered < len(DATA)
    payload.close()


def test_a_stream_that_ends_early_is_backend_unavailable() -> None:
    with pytest.raises(BackendUnavailable, match="ended 5 bytes early"):
        done(Spooler().spool(MemoryStream(b"12345"), 10))


def test_a_failing_disk_write_stops_the_producer_and_is_a_503() -> None:
    def full_disk(work: Callable[[], None]) -> Deferred[None]:
        return fail(OSError(28, "No space left on device"))

    stream = MemoryStream(DATA, chunk_size=1000)
    with pytest.raises(errors.ServiceUnavailable):
        done(Spooler(offload=full_disk).spool(stream, len(DATA)))
    assert stream.producerState == "stopped"


def test_an_empty_range_is_a_payload_of_nothing() -> None:
    payload = done(Spooler().empty(checksum_algorithm="sha256"))
    assert (payload.length, payload.md5_hex) == (0, hashlib.md5(b"").hexdigest())
    assert payload.checksum is not None and payload.checksum[0] == "SHA256"


def test_a_copy_to_a_backend_without_the_source_spools_in_the_spool_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CopyObject to a backend that must receive the bytes reads them through the
    ObjectService's spooler, so ``server.spool_dir`` holds the spool."""
    from twisted.internet.task import Clock

    made: list[str | None] = []
    real = tempfile.TemporaryFile

    def recording(*args: Any, **kwargs: Any) -> Any:
        made.append(kwargs.get("dir"))
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", recording)

    class Store:
        async def reserve(self, intent: Any, names: list[str], strategy: str, now: float) -> Any:
            from s3orch.store.interface import Reservation

            return Reservation(intent.write_id, "b2", intent.storage_key, intent.size)

        async def commit_object(
            self, reservation: Any, record: Any, now: float, conditions: Any, **_: Any
        ) -> list[Any]:
            return []

    b1, b2 = MemoryBackend("b1"), MemoryBackend("b2")
    b1.objects["src-key"] = DATA
    store: Any = Store()
    fleet = BackendFleet([BackendConfig(name="b1"), BackendConfig(name="b2")], {"b1": b1, "b2": b2})
    clock = Clock()
    objects = ObjectService(
        store=store,
        fleet=fleet,
        cleanups=Cleanups(store=store, fleet=fleet, clock=clock, concurrency=2),
        spooler=Spooler(spool_dir=str(tmp_path)),
        routing_strategy="pack",
        clock=clock,
    )
    source = ObjectRecord("bkt", "src", "w1", len(DATA), hashlib.md5(DATA).hexdigest(), 0.0,
                          locations=(Location("b1", "src-key", len(DATA)),))
    record = done(objects.copy("bkt", source, "dst", NewObject("text/plain", {}, {})))
    assert record.locations[0].backend == "b2"
    assert b2.objects[record.locations[0].storage_key] == DATA
    assert made == [str(tmp_path)]


def test_a_payload_from_bytes_carries_their_digests_and_encodings() -> None:
    payload = Payload.from_bytes(b"hello", ("CRC32", "NhCmhg=="))
    assert payload.md5_b64 == "XUFAKrxLKna5cZ2REBfFkg=="
    assert payload.sha256_hex == hashlib.sha256(b"hello").hexdigest()
    assert (payload.checksum_algorithm, payload.checksum_value) == ("CRC32", "NhCmhg==")
    payload.file.read(2)
    assert payload.reader().read() == b"hello"  # every attempt reads from the first byte
