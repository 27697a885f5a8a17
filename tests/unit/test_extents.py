"""Reading a multi-extent object as one stream (core/extents.py) over in-memory backends.

The object's parts live on different backends; ``ObjectService.open`` gives one
stream over them.  These tests drive it with ``task.Clock`` (one chunk per reactor
turn, like a socket) or synchronously: ranges across part boundaries, failover
between copies, opening one ahead, backpressure, cancellation and failures in the
middle of the body (which must abort the client connection, never end a short 200).
"""

from __future__ import annotations

import hashlib
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from s3orch.backend.interface import BackendUnavailable, PushProducer
from s3orch.backend.memory import MemoryBackend, MemoryStream
from s3orch.config.model import BackendConfig
from s3orch.core.cleanup import Cleanups
from s3orch.core.extents import ExtentStream, plan_reads
from s3orch.core.fleet import BackendFleet
from s3orch.core.objects import ObjectService
from s3orch.core.spool import Spooler
from s3orch.http.relay import relay_body
from s3orch.s3 import errors
from s3orch.store.interface import Extent, Location, ObjectRecord
from tests.unit.test_relay import Client

T = TypeVar("T")

#: Three parts, the middle one on two backends (b2 first, then b3).
SIZES = (100, 50, 70)
DATA = bytes(i % 251 for i in range(sum(SIZES)))


def run(coro: Coroutine[Any, Any, T]) -> T:
    results: list[Any] = []
    Deferred.fromCoroutine(coro).addBoth(results.append)
    assert results, "did not complete synchronously"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]  # type: ignore[no-any-return]


class Rig:
    def __init__(self, clock: Clock | None = None, chunk: int = 16, sizes: tuple[int, ...] = SIZES) -> None:
        self.clock = clock or Clock()
        self.data = bytes(i % 251 for i in range(sum(sizes)))
        driven = clock  # None: streams push synchronously
        self.backends = {n: MemoryBackend(n, chunk_size=chunk, clock=driven) for n in ("b1", "b2", "b3")}
        parts = []
        offset = 0
        for number, size in enumerate(sizes, 1):
            body = self.data[offset:offset + size]
            key = f"part-{number}"
            holders = ("b2", "b3") if number == 2 else (("b1",) if number % 2 else ("b3",))
            for name in holders:
                self.backends[name].objects[key] = body
            locations = tuple(Location(name, key, size) for name in holders)
            parts.append(Extent(number, offset, size, locations, hashlib.md5(body).hexdigest()))
            offset += size
        self.record = ObjectRecord("bkt", "k", "w", offset, "e-3", 0.0, parts_count=len(sizes),
                                   part_sizes=sizes, parts=tuple(parts))
        self.configs = [BackendConfig(name=n) for n in self.backends]
        fleet = BackendFleet(self.configs, self.backends)
        store: Any = None  # reading an object needs no metadata store
        self.objects = ObjectService(
            store=store,
            fleet=fleet,
            cleanups=Cleanups(store=store, fleet=fleet, clock=self.clock, concurrency=4),
            spooler=Spooler(),
            routing_strategy="pack",
            clock=self.clock,
        )

    def open(self, byte_range: tuple[int, int] | None = None) -> ExtentStream:
        stream, _ = run(self.objects.open(self.record, byte_range))
        assert isinstance(stream, ExtentStream)
        return stream

    def gets(self) -> list[tuple[str, str]]:
        return [(n, key) for n, b in self.backends.items() for op, key in b.calls if op == "get_object"]


class Sink:
    """An IBodyConsumer that keeps the bytes and pauses its producer once it holds
    ``pause_at`` bytes (a full client socket)."""

    def __init__(self, pause_at: int | None = None) -> None:
        self.data = bytearray()
        self.producer: PushProducer | None = None
        self.registered = 0
        self.unregistered = 0
        self.pause_at = pause_at

    def registerProducer(self, producer: PushProducer, streaming: bool) -> None:
        self.producer = producer
        self.registered += 1

    def unregisterProducer(self) -> None:
        self.unregistered += 1

    def write(self, data: bytes) -> None:
        self.data += data
        if self.pause_at is not None and len(self.data) >= self.pause_at and self.producer is not None:
            self.pause_at = None
            self.producer.pauseProducing()


def deliver(stream: ExtentStream, sink: Sink) -> list[Any]:
    outcome: list[Any] = []
    stream.deliver(sink).addBoth(outcome.append)
    return outcome


def test_plan_reads_takes_only_the_extents_the_range_touches() -> None:
    rig = Rig()
    plan = plan_reads(rig.record.parts, rig.record.size, (95, 160))
    assert [(p.extent.part_number, p.start, p.end) for p in plan] == [(1, 95, 99), (2, 0, 49), (3, 0, 10)]
    assert [p.sub_range for p in plan] == [(95, 99), None, (0, 10)]
    assert [p.extent.part_number for p in plan_reads(rig.record.parts, 220, None)] == [1, 2, 3]
    empty = Extent(9, 100, 0, ())
    assert plan_reads((rig.record.parts[0], empty), 100, None)[-1].extent.part_number == 1


@settings(max_examples=60, deadline=None)
@given(st.integers(0, sum(SIZES) - 1), st.integers(0, sum(SIZES) - 1), st.booleans())
def test_any_range_reads_back_exactly_across_part_boundaries(a: int, b: int, quirky: bool) -> None:
    start, end = min(a, b), max(a, b)
    rig = Rig(chunk=7)
    for backend in rig.backends.values():
        backend.ranged_get_returns_full = quirky  # a backend that ignores Range
    stream = rig.open((start, end))
    assert (stream.status, stream.length, stream.content_range) == (206, end - start + 1, (start, end, sum(SIZES)))
    sink = Sink()
    assert deliver(stream, sink) == [None]
    assert bytes(sink.data) == rig.data[start:end + 1]
    assert (sink.registered, sink.unregistered) == (1, 1)
    touched = {n for n, p in enumerate(rig.record.parts, 1) if p.offset <= end and start < p.offset + p.size}
    assert {int(key.split("-")[1]) for _, key in rig.gets()} == touched  # nothing else is opened


def test_the_whole_object_is_a_200_with_its_length() -> None:
    rig = Rig()
    stream = rig.open()
    assert (stream.status, stream.length, stream.content_range) == (200, sum(SIZES), None)
    sink = Sink()
    assert deliver(stream, sink) == [None]
    assert bytes(sink.data) == rig.data
    assert stream.delivered == sum(SIZES)


def test_the_next_extent_is_opened_while_the_previous_one_streams() -> None:
    clock = Clock()
    rig = Rig(clock)
    stream = rig.open()
    assert rig.gets() == [("b1", "part-1")]  # only the first before the body
    sink = Sink()
    outcome = deliver(stream, sink)
    assert ("b2", "part-2") in rig.gets() and len(sink.data) == 0  # opened ahead, before a byte
    assert ("b1", "part-3") not in rig.gets()  # not two ahead
    clock.advance(0)
    assert outcome == [None] and bytes(sink.data) == rig.data


def test_the_first_extent_fails_over_to_its_next_copy_before_any_header() -> None:
    rig = Rig()
    rig.backends["b2"].fail_next("get_object")
    stream = rig.open((100, 149))  # exactly part 2, on b2 then b3
    sink = Sink()
    assert deliver(stream, sink) == [None]
    assert bytes(sink.data) == rig.data[100:150]
    assert rig.gets() == [("b2", "part-2"), ("b3", "part-2")]


def test_an_unreachable_only_holder_is_503_and_a_lost_one_500_never_404() -> None:
    rig = Rig()
    rig.backends["b1"].fail.add("get_object")
    with pytest.raises(errors.ServiceUnavailable):
        rig.open((0, 10))
    rig.backends["b1"].fail.clear()
    del rig.backends["b1"].objects["part-1"]
    with pytest.raises(errors.InternalError):
        rig.open((0, 10))


def test_a_later_extent_that_cannot_be_opened_fails_the_body_after_the_first_bytes() -> None:
    rig = Rig()
    rig.backends["b1"].objects.pop("part-3")
    stream = rig.open()
    sink = Sink()
    outcome = deliver(stream, sink)
    assert isinstance(outcome[0], Failure) and outcome[0].check(BackendUnavailable)
    assert bytes(sink.data) == rig.data[:150]  # parts 1 and 2, then the failure
    assert sink.unregistered == 1


def test_a_body_cut_in_the_middle_of_an_extent_fails_the_stream() -> None:
    rig = Rig()
    rig.backends["b1"].body_fails_after = 30
    stream = rig.open()
    sink = Sink()
    outcome = deliver(stream, sink)
    assert isinstance(outcome[0], Failure) and outcome[0].check(BackendUnavailable)
    assert bytes(sink.data) == rig.data[:30]


class FlakyBody(MemoryBackend):
    """Its first GET of each key answers, then the body dies before the first byte."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: set[str] = set()

    async def get_object(self, storage_key: str, byte_range: tuple[int, int] | None = None) -> MemoryStream:
        stream = await super().get_object(storage_key, byte_range)
        if storage_key not in self.seen:
            self.seen.add(storage_key)
            stream._fail_after = 0
        return stream


def test_an_extent_whose_body_dies_before_its_first_byte_is_opened_again() -> None:
    rig = Rig()
    flaky = FlakyBody("b3", chunk_size=16)
    flaky.objects = rig.backends["b3"].objects
    rig.backends["b3"] = flaky
    rig.objects.fleet = BackendFleet(rig.configs, rig.backends)
    stream = rig.open()
    sink = Sink()
    assert deliver(stream, sink) == [None]
    assert bytes(sink.data) == rig.data
    assert flaky.calls.count(("get_object", "part-2")) == 0  # part 2 came from b2
    rig.backends["b2"].fail.add("get_object")  # now part 2 only from b3, which dies once
    stream = rig.open((100, 149))
    sink = Sink()
    assert deliver(stream, sink) == [None]
    assert bytes(sink.data) == rig.data[100:150]
    assert flaky.calls.count(("get_object", "part-2")) == 2


def test_backpressure_reaches_the_extent_being_read_and_the_next_starts_paused() -> None:
    clock = Clock()
    rig = Rig(clock, chunk=50)
    stream = rig.open()
    sink = Sink(pause_at=100)  # the client is full right at the end of part 1
    outcome = deliver(stream, sink)
    clock.advance(0)
    assert len(sink.data) == 100 and outcome == []
    clock.advance(0)
    clock.advance(1)
    assert len(sink.data) == 100  # nothing while paused, across the seam
    part_2 = stream._sink.stream if stream._sink else None
    assert isinstance(part_2, MemoryStream) and part_2.producerState == "paused"
    stream.resumeProducing()
    clock.advance(0)
    assert outcome == [None] and bytes(sink.data) == rig.data


def test_pausing_in_the_middle_of_an_extent_pauses_its_backend_stream() -> None:
    clock = Clock()
    rig = Rig(clock, chunk=10)
    stream = rig.open()
    sink = Sink(pause_at=30)
    deliver(stream, sink)
    clock.advance(0)
    part_1 = stream._sink.stream if stream._sink else None
    assert isinstance(part_1, MemoryStream) and part_1.producerState == "paused"
    assert len(sink.data) == 30
    stream.resumeProducing()
    assert part_1.producerState == "producing"
    clock.advance(0)
    assert bytes(sink.data) == rig.data


def test_cancel_stops_the_extent_being_read_and_the_one_opened_ahead() -> None:
    clock = Clock()
    rig = Rig(clock)
    stream = rig.open()
    sink = Sink()
    sink.pause_at = 16
    outcome = deliver(stream, sink)
    clock.advance(0)
    streams = [o.stream for o in stream._openings.values() if o.stream is not None]
    current = stream._sink.stream if stream._sink else None
    assert streams and current is not None
    stream.cancel()
    assert isinstance(outcome[0], Failure) and outcome[0].check(CancelledError)
    assert all(s.cancelled for s in streams) and current.cancelled  # type: ignore[attr-defined]
    clock.advance(0)
    assert len(sink.data) == 16 and sink.unregistered == 1


def test_cancel_before_delivery_drops_the_opened_extent() -> None:
    rig = Rig()
    stream = rig.open()
    first = stream._openings[0].stream
    stream.cancel()
    assert first.cancelled  # type: ignore[union-attr]
    sink = Sink()
    outcome = deliver(stream, sink)
    assert isinstance(outcome[0], Failure) and outcome[0].check(CancelledError)
    assert sink.data == b"" and sink.unregistered == 1


def test_thousands_of_extents_that_end_at_once_do_not_recurse() -> None:
    rig = Rig(sizes=(1,) * 3000)
    stream = rig.open()
    sink = Sink()
    assert deliver(stream, sink) == [None]
    assert bytes(sink.data) == rig.data


def test_through_the_relay_a_failure_in_a_later_extent_aborts_the_client() -> None:
    rig = Rig()
    rig.backends["b1"].objects.pop("part-3")
    stream = rig.open()
    client = Client(sum(SIZES))
    outcome: list[Any] = []
    relay_body(stream, client.request).addBoth(outcome.append)
    assert isinstance(outcome[0], Failure) and outcome[0].check(BackendUnavailable)
    assert client.transport.disconnected  # aborted: never a short 200
    # Whatever reached the client is the object's first bytes, never all of them (a body this
    # small is gathered and may not have been sent at all).
    assert rig.data.startswith(client.body) and len(client.body) < len(rig.data)


def test_through_the_relay_a_whole_object_arrives_and_the_client_can_pause_it() -> None:
    clock = Clock()
    rig = Rig(clock)
    stream = rig.open()
    client = Client(sum(SIZES))
    outcome: list[Any] = []
    relay_body(stream, client.request).addBoth(outcome.append)
    client.transport.producer.pauseProducing()  # the client socket is full
    clock.advance(0)
    assert client.body == b"" and outcome == []
    assert stream._sink is not None and stream._sink.stream.producerState == "paused"  # type: ignore[attr-defined]
    client.transport.producer.resumeProducing()
    clock.advance(0)
    assert outcome == [sum(SIZES)] and client.body == rig.data
