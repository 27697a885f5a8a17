"""The in-memory backend fake: the core's unit tests rely on it behaving like S3."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Coroutine
from dataclasses import replace
from typing import Any, TypeVar

import pytest
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from s3orch.backend.interface import (
    BackendError,
    BackendNotFound,
    BackendUnavailable,
    ObjectBackend,
    PushProducer,
)
from s3orch.backend.memory import MemoryBackend, MemoryStream
from s3orch.payload import Payload

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never really waits (the fake answers at once)."""
    results: list[T | Failure] = []
    Deferred.fromCoroutine(coro).addBoth(results.append)
    assert results, "coroutine did not complete synchronously"
    result = results[0]
    if isinstance(result, Failure):
        result.raiseException()
    return result  # type: ignore[return-value]


class Collector:
    """An IBodyConsumer that records what it is given and can pause its producer."""

    def __init__(self, pause_after_each: bool = False) -> None:
        self.chunks: list[bytes] = []
        self.producer: PushProducer | None = None
        self.unregistered = False
        self.pause_after_each = pause_after_each

    def registerProducer(self, producer: PushProducer, streaming: bool) -> None:
        assert streaming
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.unregistered = True

    def write(self, data: bytes) -> None:
        self.chunks.append(data)
        if self.pause_after_each and self.producer is not None:
            self.producer.pauseProducing()

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


def outcome(d: Deferred[None]) -> list[object]:
    seen: list[object] = []
    d.addBoth(seen.append)
    return seen


def put(backend: MemoryBackend, key: str, data: bytes, **digests: str) -> str:
    """PUT ``data``; ``md5_hex``/``sha256_hex`` replace its true digests (to test refusals)."""
    payload = replace(Payload.from_bytes(data), **digests)
    return run(backend.put_object(key, payload))


def test_memory_backend_satisfies_the_protocol() -> None:
    backend: ObjectBackend = MemoryBackend("m")
    assert backend.name == "m"


def test_put_then_get_round_trips_and_returns_md5_etag() -> None:
    backend = MemoryBackend()
    data = bytes(range(256)) * 1000
    etag = put(backend, "k", data)
    assert etag == hashlib.md5(data).hexdigest()
    stream = run(backend.get_object("k"))
    assert (stream.status, stream.length, stream.content_range) == (200, len(data), None)
    consumer = Collector()
    seen = outcome(stream.deliver(consumer))
    assert seen == [None]
    assert consumer.body == data
    assert consumer.unregistered
    assert len(consumer.chunks) == -(-len(data) // 65536)


def test_put_reads_from_the_start_of_the_payload_and_exactly_length_bytes() -> None:
    backend = MemoryBackend()
    data = b"hello world"
    payload = Payload(io.BytesIO(data + b", and more"), 11, hashlib.md5(data).hexdigest(),
                      hashlib.sha256(data).hexdigest())
    payload.file.seek(5)
    run(backend.put_object("k", payload))
    assert backend.objects["k"] == b"hello world"
    with pytest.raises(BackendError) as info:
        run(backend.put_object("k2", replace(Payload.from_bytes(b"abc"), length=10)))
    assert info.value.code == "IncompleteBody"


def test_put_checks_content_md5_and_sha256_like_s3() -> None:
    backend = MemoryBackend()
    data = b"payload"
    put(backend, "ok", data)
    assert backend.objects["ok"] == data
    with pytest.raises(BackendError) as info:
        put(backend, "bad", data, md5_hex=hashlib.md5(b"x").hexdigest())
    assert (info.value.status, info.value.code, info.value.retryable) == (
        400,
        "BadDigest",
        False,
    )
    with pytest.raises(BackendError) as info:
        put(backend, "bad", data, sha256_hex="0" * 64)
    assert info.value.code == "XAmzContentSHA256Mismatch"
    assert "bad" not in backend.objects


def test_stream_honours_pause_and_resume() -> None:
    backend = MemoryBackend(chunk_size=10)
    put(backend, "k", b"x" * 35)
    stream = run(backend.get_object("k"))
    consumer = Collector(pause_after_each=True)
    seen = outcome(stream.deliver(consumer))
    assert consumer.chunks == [b"x" * 10]
    assert stream.producerState == "paused"
    for expected in (2, 3, 4):
        stream.resumeProducing()
        assert len(consumer.chunks) == expected
    assert seen == []
    stream.resumeProducing()  # nothing left: the body ends
    assert seen == [None]
    assert consumer.body == b"x" * 35


def test_stream_with_a_clock_delivers_asynchronously() -> None:
    clock = Clock()
    backend = MemoryBackend(chunk_size=4, clock=clock)
    put(backend, "k", b"abcdefghij")
    stream = run(backend.get_object("k"))
    consumer = Collector(pause_after_each=True)
    seen = outcome(stream.deliver(consumer))
    assert consumer.chunks == []  # nothing before the reactor turns
    clock.advance(0)
    assert consumer.chunks == [b"abcd"]
    clock.advance(1)
    assert consumer.chunks == [b"abcd"]  # paused: no chunk however long we wait
    consumer.pause_after_each = False
    stream.resumeProducing()
    assert consumer.chunks == [b"abcd"]
    clock.advance(0)
    assert consumer.body == b"abcdefghij"
    assert seen == [None]


def test_ranged_get_answers_206_with_content_range() -> None:
    backend = MemoryBackend()
    put(backend, "k", b"0123456789")
    stream = run(backend.get_object("k", (2, 5)))
    assert stream.status == 206
    assert stream.content_range == (2, 5, 10)
    assert stream.headers["content-range"] == "bytes 2-5/10"
    consumer = Collector()
    stream.deliver(consumer)
    assert consumer.body == b"2345"
    # an end past the object is clamped, a start past it is 416
    assert run(backend.get_object("k", (8, 100))).content_range == (8, 9, 10)
    with pytest.raises(BackendError) as info:
        run(backend.get_object("k", (10, 12)))
    assert info.value.status == 416


def test_quirk_mode_answers_ranged_gets_with_the_whole_object() -> None:
    backend = MemoryBackend()
    backend.ranged_get_returns_full = True
    put(backend, "k", b"0123456789")
    stream = run(backend.get_object("k", (2, 5)))
    assert (stream.status, stream.content_range, stream.length) == (200, None, 10)


def test_missing_keys_raise_not_found_but_delete_succeeds() -> None:
    backend = MemoryBackend()
    with pytest.raises(BackendNotFound) as info:
        run(backend.get_object("nope"))
    assert (info.value.status, info.value.code) == (404, "NoSuchKey")
    with pytest.raises(BackendNotFound):
        run(backend.head_object("nope"))
    with pytest.raises(BackendNotFound):
        run(backend.copy_object("nope", "dest"))
    run(backend.delete_object("nope"))


def test_head_copy_delete() -> None:
    backend = MemoryBackend()
    put(backend, "a", b"abc")
    headers = run(backend.head_object("a"))
    assert headers["content-length"] == "3"
    assert headers["etag"] == f'"{hashlib.md5(b"abc").hexdigest()}"'
    assert run(backend.copy_object("a", "b")) == hashlib.md5(b"abc").hexdigest()
    run(backend.delete_object("a"))
    assert backend.objects == {"b": b"abc"}


def test_list_keys_pages_in_lexical_order_under_a_prefix() -> None:
    backend = MemoryBackend()
    for name in ("p/3", "p/1", "p/2", "q/1", "p/4"):
        put(backend, name, name.encode())
    page, token = run(backend.list_keys("p/", max_keys=3))
    assert page == [("p/1", 3), ("p/2", 3), ("p/3", 3)]
    assert token is not None
    page, token = run(backend.list_keys("p/", token, max_keys=3))
    assert (page, token) == ([("p/4", 3)], None)


def test_fail_set_and_fail_next_inject_unavailability() -> None:
    backend = MemoryBackend(fail={"get_object"})
    put(backend, "k", b"v")
    with pytest.raises(BackendUnavailable) as info:
        run(backend.get_object("k"))
    assert info.value.retryable
    backend.fail.clear()
    backend.fail_next("head_object", 2)
    for _ in range(2):
        with pytest.raises(BackendUnavailable):
            run(backend.head_object("k"))
    assert run(backend.head_object("k"))["content-length"] == "1"
    backend.fail_next("put_object", error=BackendError("quota", status=403, code="AccessDenied"))
    with pytest.raises(BackendError) as err:
        put(backend, "k2", b"v")
    assert err.value.code == "AccessDenied"
    put(backend, "k2", b"v")
    backend.fail.add("*")
    with pytest.raises(BackendUnavailable):
        run(backend.list_keys(""))
    with pytest.raises(ValueError):
        backend.fail_next("nonsense")


def test_calls_are_recorded_even_when_they_fail() -> None:
    backend = MemoryBackend(fail={"delete_object"})
    put(backend, "k", b"v")
    with pytest.raises(BackendUnavailable):
        run(backend.delete_object("k"))
    assert backend.calls == [("put_object", "k"), ("delete_object", "k")]


def test_body_failure_mid_stream_errbacks_after_the_delivered_bytes() -> None:
    backend = MemoryBackend(chunk_size=4)
    backend.body_fails_after = 6
    put(backend, "k", b"0123456789")
    stream = run(backend.get_object("k"))
    consumer = Collector()
    seen = outcome(stream.deliver(consumer))
    assert consumer.body == b"012345"
    assert len(seen) == 1 and isinstance(seen[0], Failure)
    assert isinstance(seen[0].value, BackendUnavailable)
    assert consumer.unregistered


def test_cancel_stops_delivery_with_cancelled_error() -> None:
    backend = MemoryBackend(chunk_size=2)
    put(backend, "k", b"abcdef")
    stream = run(backend.get_object("k"))
    consumer = Collector(pause_after_each=True)
    seen = outcome(stream.deliver(consumer))
    stream.cancel()
    assert stream.producerState == "stopped"
    assert len(seen) == 1 and isinstance(seen[0], Failure)
    assert isinstance(seen[0].value, CancelledError)
    stream.resumeProducing()
    assert consumer.body == b"ab"
    # cancelled before delivery: nothing is delivered at all
    other = run(backend.get_object("k"))
    other.cancel()
    late = Collector()
    seen = outcome(other.deliver(late))
    assert late.body == b"" and isinstance(seen[0], Failure)


def test_a_stream_delivers_only_once() -> None:
    stream = MemoryStream(b"abc")
    stream.deliver(Collector())
    with pytest.raises(RuntimeError):
        stream.deliver(Collector())


def test_closed_backend_is_unavailable() -> None:
    backend = MemoryBackend()
    run(backend.close())
    with pytest.raises(BackendUnavailable):
        put(backend, "k", b"v")
