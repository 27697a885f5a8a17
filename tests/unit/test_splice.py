"""The zero-copy relay's parts without sockets: when a body may be spliced (``plan_splice``),
which streams expose their socket (only pass-through wrappers forward it), and the
:class:`Splicer` moving bytes between pipes standing in for the two sockets, driven by a
``MemoryReactorClock`` (readiness is simulated by calling the registered descriptors).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, cast

import pytest
from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock, StringTransport

from s3orch.backend.breaker import Breaker, _GuardedStream
from s3orch.backend.interface import BackendStream, IBodyConsumer, PushProducer, SpliceSource, splice_source
from s3orch.backend.memory import MemoryStream
from s3orch.backend.transform_stream import TransformingStream
from s3orch.core.reads import WatchedStream
from s3orch.http import splice as splice_module
from s3orch.http.splice import SPLICE_MIN_BYTES, Splicer, plan_splice

MiB = 1024 * 1024

needs_splice = pytest.mark.skipif(not splice_module.AVAILABLE, reason="splice(2) is Linux-only")


class FakeSource:
    """A :class:`SpliceSource` whose "socket" is the read end of a pipe."""

    def __init__(self, remaining: int, fd: int = -1, stall_timeout: float = 0.0) -> None:
        self._remaining = remaining
        self.fd = fd
        self.stall_timeout = stall_timeout
        self.moved_total = 0
        self.lent = False
        self.finished = False
        self.failed: str | None = None

    def remaining(self) -> int:
        return self._remaining

    def lend(self) -> int:
        self.lent = True
        return self.fd

    def moved(self, count: int) -> None:
        self.moved_total += count

    def finish(self) -> None:
        self.finished = True

    def fail(self, reason: str) -> None:
        self.failed = reason


class SpliceableStream:
    """A raw stream offering ``source``."""

    status = 200
    length: int | None = None
    content_range = None
    headers: dict[str, str] = {}

    def __init__(self, source: SpliceSource | None) -> None:
        self.source = source
        self.consumer: IBodyConsumer | None = None
        self.done: Deferred[None] = Deferred()

    def deliver(self, consumer: IBodyConsumer) -> Deferred[None]:
        self.consumer = consumer
        return self.done

    def cancel(self) -> None:
        pass

    def splice_source(self) -> SpliceSource | None:
        return self.source


class Forwarding:
    """A wrapper that forwards unknown attributes (as WatchedStream does for the rest)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class Transforming(TransformingStream):
    def __init__(self, inner: BackendStream) -> None:
        self._inner = inner


def plain_tcp(tls: bool = False) -> tcp.Connection:
    """A Twisted TCP transport as ``plan_splice`` inspects it (no socket behind it)."""
    transport = tcp.Connection.__new__(tcp.Connection)
    transport.connected = 1
    transport.disconnecting = False
    transport.TLS = tls
    return transport


def stream_with(remaining: int) -> BackendStream:
    return cast(BackendStream, SpliceableStream(FakeSource(remaining)))


# --- when a body takes the zero-copy path ---


@needs_splice
def test_a_large_verbatim_body_over_plain_tcp_is_spliced() -> None:
    stream = stream_with(20 * MiB)
    assert plan_splice(stream, plain_tcp(), 20 * MiB, exact=True) is cast(SpliceableStream, stream).source


@needs_splice
def test_a_range_shorter_than_the_backend_body_is_spliced_but_a_longer_one_is_not() -> None:
    assert plan_splice(stream_with(20 * MiB), plain_tcp(), 5 * MiB, exact=False) is not None
    assert plan_splice(stream_with(4 * MiB), plain_tcp(), 5 * MiB, exact=False) is None


@needs_splice
def test_a_backend_body_longer_than_announced_takes_the_ordinary_path() -> None:
    # The ordinary path reports the backend's error; splice would hide it.
    assert plan_splice(stream_with(20 * MiB + 1), plain_tcp(), 20 * MiB, exact=True) is None


def test_a_small_rest_takes_the_ordinary_path() -> None:
    wanted = SPLICE_MIN_BYTES - 1
    assert plan_splice(stream_with(wanted), plain_tcp(), wanted, exact=True) is None


def test_a_tls_or_unknown_client_transport_takes_the_ordinary_path() -> None:
    assert plan_splice(stream_with(20 * MiB), plain_tcp(tls=True), 20 * MiB, exact=True) is None
    assert plan_splice(stream_with(20 * MiB), StringTransport(), 20 * MiB, exact=True) is None
    gone = plain_tcp()
    gone.disconnecting = True
    assert plan_splice(stream_with(20 * MiB), gone, 20 * MiB, exact=True) is None


def test_without_splice_on_the_platform_nothing_is_spliced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(splice_module, "AVAILABLE", False)
    assert plan_splice(stream_with(20 * MiB), plain_tcp(), 20 * MiB, exact=True) is None


# --- which streams expose their socket ---


def test_streams_without_the_capability_offer_nothing() -> None:
    assert splice_source(cast(BackendStream, MemoryStream(b"x" * 10))) is None


def test_a_wrapper_forwarding_attributes_does_not_leak_the_inner_socket() -> None:
    inner = SpliceableStream(FakeSource(20 * MiB))
    assert splice_source(cast(BackendStream, Forwarding(inner))) is None


def test_a_transforming_stream_never_exposes_its_inner_socket() -> None:
    inner = SpliceableStream(FakeSource(20 * MiB))
    assert splice_source(cast(BackendStream, Transforming(cast(BackendStream, inner)))) is None


def test_the_breaker_guard_forwards_the_capability() -> None:
    source = FakeSource(20 * MiB)
    breaker = Breaker("b", failure_threshold=3, open_timeout=10, clock=MemoryReactorClock())
    guarded = _GuardedStream(cast(BackendStream, SpliceableStream(source)), breaker, breaker.admit())
    assert splice_source(cast(BackendStream, guarded)) is source
    assert splice_source(cast(BackendStream, _GuardedStream(cast(BackendStream, MemoryStream(b"x")), breaker,
                                                          breaker.admit()))) is None


class _Sink:
    def registerProducer(self, producer: PushProducer, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        pass


def test_the_failover_watch_forwards_the_capability_only_after_the_first_byte() -> None:
    source = FakeSource(20 * MiB)
    inner = SpliceableStream(source)
    failures: list[None] = []
    watched = WatchedStream(cast(BackendStream, inner), lambda: failures.append(None), 20 * MiB)
    assert splice_source(cast(BackendStream, watched)) is None  # not delivered yet
    watched.deliver(_Sink())
    assert splice_source(cast(BackendStream, watched)) is None  # no byte yet: a failure now is a failover
    assert inner.consumer is not None
    inner.consumer.write(b"first")
    assert splice_source(cast(BackendStream, watched)) is source
    inner.done.callback(None)
    assert failures == []


# --- the Splicer, over pipes ---


class FakeClient:
    """What the splicer uses of the client transport: its reactor, fd and read/write switches."""

    def __init__(self, reactor: MemoryReactorClock, fd: int) -> None:
        self.reactor = reactor
        self.fd = fd
        self.reading = self.writing = True

    def fileno(self) -> int:
        return self.fd

    def stopReading(self) -> None:
        self.reading = False

    def stopWriting(self) -> None:
        self.writing = False


class Watch:
    def __init__(self) -> None:
        self.events: list[str] = []

    def _write_stalled(self) -> None:
        self.events.append("stalled")

    def _write_flowing(self) -> None:
        self.events.append("flowing")


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


class Rig:
    """Backend pipe -> Splicer -> client pipe, and what the splicer reported."""

    def __init__(self, count: int, stall_timeout: float = 0.0) -> None:
        self.backend_r, self.backend_w = os.pipe2(os.O_NONBLOCK)
        self.client_r, self.client_w = os.pipe2(os.O_NONBLOCK)
        self.reactor = MemoryReactorClock()
        self.source = FakeSource(count, self.backend_r, stall_timeout)
        self.client = FakeClient(self.reactor, self.client_w)
        self.watch = Watch()
        self.outcome: list[str] = []
        self.splicer = Splicer(
            self.source,
            cast(tcp.Connection, self.client),
            count,
            on_done=lambda: self.outcome.append("done"),
            on_backend_failed=lambda reason: self.outcome.append(f"backend: {reason}"),
            on_client_gone=lambda: self.outcome.append("client gone"),
            write_watch=self.watch,
        )
        self.received = bytearray()

    def feed(self, data: bytes) -> None:
        os.write(self.backend_w, data)

    def drain(self) -> None:
        try:
            while chunk := os.read(self.client_r, 1 << 20):
                self.received += chunk
        except BlockingIOError:
            pass

    def ready(self) -> None:
        """The reactor's turn: every registered descriptor is called once."""
        for descriptor in list(self.reactor.getReaders()):
            descriptor.doRead()
        for descriptor in list(self.reactor.getWriters()):
            descriptor.doWrite()

    def close(self) -> None:
        for fd in (self.backend_r, self.backend_w, self.client_r, self.client_w):
            try:
                os.close(fd)
            except OSError:
                pass


@pytest.fixture
def rigs() -> Iterator[list[Rig]]:
    made: list[Rig] = []
    yield made
    for rig in made:
        rig.close()


@needs_splice
def test_the_splicer_moves_exactly_the_count_and_gives_everything_back(rigs: list[Rig]) -> None:
    fds = fd_count()
    rig = Rig(3 * MiB)
    rigs.append(rig)
    body = os.urandom(3 * MiB + 10)  # ten bytes more than wanted stay on the backend "socket"
    rig.splicer.start()
    assert rig.source.lent
    assert not rig.client.reading and not rig.client.writing  # Twisted reads and writes neither
    sent = 0
    for _ in range(400):
        if rig.outcome:
            break
        if sent < len(body):
            try:
                sent += os.write(rig.backend_w, body[sent : sent + 256 * 1024])
            except BlockingIOError:
                pass
        rig.ready()
        rig.drain()
    assert rig.outcome == ["done"]
    assert bytes(rig.received) == body[: 3 * MiB]
    assert rig.source.moved_total == 3 * MiB and rig.splicer.moved == 3 * MiB
    assert rig.reactor.getReaders() == [] and rig.reactor.getWriters() == []
    assert rig.reactor.getDelayedCalls() == []
    assert fd_count() == fds + 4  # only the rig's own two pipes: the splicer's is closed


@needs_splice
def test_a_backend_ending_short_fails_the_backend_side(rigs: list[Rig]) -> None:
    fds = fd_count()
    rig = Rig(2 * MiB)
    rigs.append(rig)
    rig.splicer.start()
    rig.feed(b"x" * 1000)
    os.close(rig.backend_w)  # EOF after 1000 bytes
    for _ in range(5):
        rig.ready()
        rig.drain()
    assert rig.outcome == ["backend: the backend closed the connection"]
    assert bytes(rig.received) == b"x" * 1000
    assert rig.reactor.getReaders() == [] and rig.reactor.getWriters() == []
    assert fd_count() == fds + 3  # the rig's pipes less the closed write end


@needs_splice
def test_a_client_gone_is_reported_as_such(rigs: list[Rig]) -> None:
    rig = Rig(2 * MiB)
    rigs.append(rig)
    rig.splicer.start()
    os.close(rig.client_r)  # EPIPE on the next splice out
    rig.feed(b"y" * 5000)
    rig.ready()
    assert rig.outcome == ["client gone"]
    assert rig.reactor.getReaders() == [] and rig.reactor.getWriters() == []


@needs_splice
def test_a_silent_backend_is_cut_after_its_stall_timeout(rigs: list[Rig]) -> None:
    rig = Rig(2 * MiB, stall_timeout=30.0)
    rigs.append(rig)
    rig.splicer.start()
    rig.reactor.advance(20)
    rig.feed(b"z" * 100)  # a sign of life restarts the countdown
    rig.ready()
    rig.reactor.advance(20)
    assert rig.outcome == []
    rig.reactor.advance(11)
    assert rig.outcome == ["backend: body stalled: nothing for 30s"]
    assert rig.reactor.getDelayedCalls() == []


@needs_splice
def test_a_slow_client_is_the_write_deadlines_business_not_the_backends(rigs: list[Rig]) -> None:
    rig = Rig(8 * MiB, stall_timeout=30.0)
    rigs.append(rig)
    rig.splicer.start()
    for _ in range(64):  # the client reads nothing: its pipe, then ours, fill up
        try:
            rig.feed(b"w" * 128 * 1024)
        except BlockingIOError:
            break
        rig.ready()
    assert rig.reactor.getReaders() == []  # our pipe is full: no more taken from the backend
    assert rig.watch.events == ["stalled"]  # the channel's write deadline runs
    rig.reactor.advance(100)
    assert rig.outcome == []  # no backend stall countdown while the client is the one waiting
    rig.drain()
    rig.ready()
    assert rig.watch.events[:2] == ["stalled", "flowing"]  # (and stalled again: it reads nothing more)


# --- when the relay asks (s3orch.http.relay) ---


class _Verifier:
    def update(self, data: bytes) -> None:
        pass

    def finish(self) -> None:
        pass


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, bool]]:
    """The relay's questions to plan_splice (answered: no splice)."""
    from s3orch.http import relay as relay_module

    questions: list[tuple[int, bool]] = []

    def plan(stream: Any, transport: Any, wanted: int, *, exact: bool) -> None:
        questions.append((wanted, exact))

    monkeypatch.setattr(relay_module, "plan_splice", plan)
    return questions


def test_the_relay_asks_once_after_the_first_bytes_for_the_rest(asked: list[tuple[int, bool]]) -> None:
    from s3orch.http.relay import relay_body
    from tests.unit.test_relay import Client, ManualStream

    client = Client(length=20 * MiB)
    stream = ManualStream(20 * MiB)
    relay_body(cast(BackendStream, stream), client.request)
    assert asked == []  # nothing written yet: the headers are not out
    stream.send(b"a" * 1000)
    stream.send(b"b" * 1000)
    assert asked == [(20 * MiB - 1000, True)]


def test_a_range_limit_is_asked_for_as_a_limit(asked: list[tuple[int, bool]]) -> None:
    from s3orch.http.relay import relay_body
    from tests.unit.test_relay import Client, ManualStream

    client = Client(length=5 * MiB)
    stream = ManualStream(20 * MiB)
    relay_body(cast(BackendStream, stream), client.request, limit=5 * MiB)
    stream.send(b"a" * 1000)
    assert asked == [(5 * MiB - 1000, False)]


def test_a_verified_body_is_never_spliced(asked: list[tuple[int, bool]]) -> None:
    from s3orch.http.relay import relay_body
    from tests.unit.test_relay import Client, ManualStream

    client = Client(length=20 * MiB)
    stream = ManualStream(20 * MiB)
    relay_body(cast(BackendStream, stream), client.request, verifier=_Verifier())
    stream.send(b"a" * 1000)
    stream.send(b"b" * 1000)
    assert asked == []


def test_a_prefix_the_backend_should_not_have_sent_is_cut_before_asking(asked: list[tuple[int, bool]]) -> None:
    from s3orch.http.relay import relay_body
    from tests.unit.test_relay import Client, ManualStream

    client = Client(length=5 * MiB)
    stream = ManualStream(20 * MiB)
    relay_body(cast(BackendStream, stream), client.request, skip=1000, limit=5 * MiB)
    stream.send(b"a" * 600)  # all skipped: nothing out yet
    assert asked == []
    stream.send(b"a" * 600)  # the cut ends; 200 wanted bytes out
    assert asked == [(5 * MiB - 200, False)]
