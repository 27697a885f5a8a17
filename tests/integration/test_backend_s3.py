"""S3Backend against real servers: moto_server (exact S3 semantics) and
SeaweedFS ``weed mini`` (checks SigV4 and Content-MD5, persists)."""

from __future__ import annotations

import gzip
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pytest
import pytest_twisted
import treq
from botocore.config import Config
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.web.client import Agent
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from s3orch.backend.interface import (
    BackendError,
    BackendNotFound,
    BackendUnavailable,
    ObjectBackend,
    PushProducer,
)
from s3orch.backend.s3 import S3Backend
from s3orch.backend.s3_responses import parse_error_body
from s3orch.backend.s3_streams import S3Stream, parse_content_range
from s3orch.config.model import BackendConfig
from s3orch.http.relay import relay_body
from s3orch.observe.metrics import BACKEND_BYTES, BACKEND_REQUESTS
from s3orch.payload import Payload
from tests.support.servers import MotoServer, WeedServer, free_port

from .conftest import ServerT, fresh_bucket

MiB = 1024 * 1024


class Sink:
    """An IBodyConsumer that hashes and counts instead of keeping the body,
    optionally pausing the backend after each chunk for ``pause`` seconds."""

    def __init__(self, pause: float = 0.0, keep: bool = False) -> None:
        self.md5 = hashlib.md5()
        self.size = 0
        self.chunks = 0
        self.pauses = 0
        self.kept = bytearray() if keep else None
        self.producer: PushProducer | None = None
        self.unregistered = False
        self._pause = pause
        self.on_first_chunk: Callable[[], None] | None = None

    def registerProducer(self, producer: PushProducer, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.unregistered = True

    def write(self, data: bytes) -> None:
        self.md5.update(data)
        self.size += len(data)
        self.chunks += 1
        if self.kept is not None:
            self.kept += data
        if self.chunks == 1 and self.on_first_chunk is not None:
            self.on_first_chunk()
        if self._pause and self.producer is not None and self.pauses < 5:
            self.pauses += 1
            producer = self.producer
            producer.pauseProducing()
            reactor.callLater(self._pause, producer.resumeProducing)


async def read_all(stream: S3Stream) -> bytes:
    sink = Sink(keep=True)
    await stream.deliver(sink)
    assert sink.unregistered
    assert sink.kept is not None
    return bytes(sink.kept)


async def put_bytes(backend: ObjectBackend, key: str, data: bytes, **digests: str) -> str:
    """PUT ``data``; ``md5_hex`` replaces its true MD5 (to test a refusal)."""
    return await backend.put_object(key, replace(Payload.from_bytes(data), **digests))


def counter(metric: Any, *labels: str) -> float:
    return float(metric.labels(*labels)._value.get())


def boto_client(server: ServerT) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name=server.region,
        config=Config(s3={"addressing_style": "path"}),
    )


# --- both servers ---


@pytest.mark.parametrize("size", [0, 1, 5 * MiB], ids=["empty", "one-byte", "5MiB"])
@pytest_twisted.ensureDeferred
async def test_put_get_round_trip(backend: S3Backend, size: int, tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.write_bytes(os.urandom(size))
    md5 = hashlib.md5(source.read_bytes()).hexdigest()
    sha = hashlib.sha256(source.read_bytes()).hexdigest()
    out_before = counter(BACKEND_BYTES, backend.name, "out")
    in_before = counter(BACKEND_BYTES, backend.name, "in")
    with source.open("rb") as body:
        body.seek(size // 2)  # put_object rewinds
        etag = await backend.put_object("obj/key", Payload(body, size, md5, sha))
    assert etag == md5
    assert counter(BACKEND_BYTES, backend.name, "out") - out_before == size
    stream = await backend.get_object("obj/key")
    assert stream.status == 200
    assert stream.length == size
    sink = Sink()
    await stream.deliver(sink)
    assert (sink.size, sink.md5.hexdigest()) == (size, md5)
    assert counter(BACKEND_BYTES, backend.name, "in") - in_before == size
    assert counter(BACKEND_REQUESTS, "PutObject", backend.name, "200") >= 1
    assert counter(BACKEND_REQUESTS, "GetObject", backend.name, "200") >= 1


@pytest_twisted.ensureDeferred
async def test_large_body_streams_with_backpressure(backend: S3Backend) -> None:
    data = os.urandom(3 * MiB)
    await put_bytes(backend, "big", data)
    stream = await backend.get_object("big")
    sink = Sink(pause=0.02)
    await stream.deliver(sink)
    assert sink.pauses == 5
    assert (sink.size, sink.md5.hexdigest()) == (len(data), hashlib.md5(data).hexdigest())


class _PausedFromTheStart(Sink):
    """Pauses the backend as soon as it is registered (a client already full)."""

    def registerProducer(self, producer: PushProducer, streaming: bool) -> None:
        super().registerProducer(producer, streaming)
        producer.pauseProducing()


@pytest_twisted.ensureDeferred
async def test_a_pause_at_registration_holds_until_resumed(backend: S3Backend) -> None:
    """Twisted's deliverBody resumes the transport after connectionMade; the
    stream must re-apply a pause made there.  Bytes that arrived with the
    headers may still be handed over (one socket read), nothing more."""
    data = os.urandom(4 * MiB)
    await put_bytes(backend, "paused", data)
    stream = await backend.get_object("paused")
    sink = _PausedFromTheStart()
    done = stream.deliver(sink)
    await deferLater(reactor, 0.3, lambda: None)
    assert sink.size <= 256 * 1024
    assert sink.producer is not None
    sink.producer.resumeProducing()
    await done
    assert (sink.size, sink.md5.hexdigest()) == (len(data), hashlib.md5(data).hexdigest())


@pytest_twisted.ensureDeferred
async def test_ranged_get_returns_206_and_exactly_the_range(backend: S3Backend) -> None:
    data = bytes(range(256)) * 64
    await put_bytes(backend, "r", data)
    stream = await backend.get_object("r", (100, 1123))
    assert stream.status == 206
    assert stream.content_range == (100, 1123, len(data))
    assert stream.length == 1024
    assert await read_all(stream) == data[100:1124]
    stream = await backend.get_object("r", (len(data) - 10, len(data) + 100))
    assert await read_all(stream) == data[-10:]


@pytest_twisted.ensureDeferred
async def test_range_past_the_end_is_a_416_error(backend: S3Backend) -> None:
    await put_bytes(backend, "r", b"0123456789")
    with pytest.raises(BackendError) as info:
        await backend.get_object("r", (50, 60))
    assert info.value.status == 416
    assert info.value.code == "InvalidRange"
    assert not isinstance(info.value, BackendUnavailable)


@pytest_twisted.ensureDeferred
async def test_head_returns_lower_case_headers(backend: S3Backend) -> None:
    etag = await put_bytes(backend, "h", b"hello")
    headers = await backend.head_object("h")
    assert headers["content-length"] == "5"
    assert headers["etag"].strip('"') == etag
    assert all(name == name.lower() for name in headers)


@pytest_twisted.ensureDeferred
async def test_missing_key_is_not_found_and_delete_is_idempotent(backend: S3Backend) -> None:
    await put_bytes(backend, "d", b"x")
    await backend.delete_object("d")
    with pytest.raises(BackendNotFound):
        await backend.head_object("d")
    with pytest.raises(BackendNotFound) as info:
        await backend.get_object("d")
    assert (info.value.status, info.value.code) == (404, "NoSuchKey")
    await backend.delete_object("d")  # already absent: success
    await backend.delete_object("never-existed")


@pytest_twisted.ensureDeferred
async def test_copy_is_server_side_and_keeps_the_bytes(backend: S3Backend) -> None:
    data = os.urandom(1000)
    etag = await put_bytes(backend, "src key+1", data)
    out_before = counter(BACKEND_BYTES, backend.name, "out")
    copied = await backend.copy_object("src key+1", "dst/ü key")
    assert copied == etag
    assert counter(BACKEND_BYTES, backend.name, "out") == out_before
    assert await read_all(await backend.get_object("dst/ü key")) == data
    with pytest.raises(BackendNotFound):
        await backend.copy_object("no such source", "dst2")


ODD_KEYS = [
    "with space",
    "unicode/ü/日本語",
    "plus+sign",
    "percent%20not-a-space",
    "equals=and&ampersand",
    "tilde~x",
    "semi;colon,comma",
    "star*(parens)!'",
    "dir/sub//double",
    "question?mark#hash",
]


@pytest_twisted.ensureDeferred
async def test_keys_with_special_characters(server: ServerT, backend: S3Backend) -> None:
    keys = list(ODD_KEYS)
    for key in keys:
        await put_bytes(backend, key, key.encode())
    for key in keys:
        assert await read_all(await backend.get_object(key)) == key.encode(), key
        assert (await backend.head_object(key))["content-length"] == str(len(key.encode()))
    listed, token = await backend.list_keys("")
    assert token is None
    expected = {k: len(k.encode()) for k in keys}
    if isinstance(server, WeedServer):
        # Quirk: weed keeps keys as filer paths, so "//" collapses to "/" in
        # listings (GET/HEAD of the original key still work).
        expected = {k.replace("//", "/"): n for k, n in expected.items()}
    assert dict(listed) == expected
    assert [k for k, _ in listed] == sorted(expected)
    for key in keys:
        await backend.delete_object(key)
    assert await backend.list_keys("") == ([], None)


@pytest_twisted.ensureDeferred
async def test_list_keys_paginates_under_a_prefix(backend: S3Backend) -> None:
    names = [f"p/{i:02d}" for i in range(7)] + ["q/0", "p"]
    for name in names:
        await put_bytes(backend, name, b"x" * len(name))
    pages: list[list[tuple[str, int]]] = []
    token: str | None = None
    while True:
        page, token = await backend.list_keys("p/", token, max_keys=3)
        pages.append(page)
        if token is None:
            break
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [k for p in pages for k, _ in p] == [f"p/{i:02d}" for i in range(7)]
    assert all(size == 4 for p in pages for _, size in p)


@pytest_twisted.ensureDeferred
async def test_gzip_content_encoding_is_not_decoded(server: ServerT, backend: S3Backend) -> None:
    compressed = gzip.compress(b"hello gzip " * 100)
    boto_client(server).put_object(
        Bucket=backend.bucket, Key="z.txt", Body=compressed, ContentEncoding="gzip"
    )
    stream = await backend.get_object("z.txt")
    assert stream.headers.get("content-encoding") == "gzip"
    assert stream.length == len(compressed)
    assert await read_all(stream) == compressed


@pytest_twisted.ensureDeferred
async def test_cancelled_stream_drops_the_connection_and_the_pool_recovers(
    backend: S3Backend,
) -> None:
    data = os.urandom(4 * MiB)
    await put_bytes(backend, "c", data)
    stream = await backend.get_object("c")
    sink = Sink()
    sink.on_first_chunk = stream.cancel
    with pytest.raises(CancelledError):
        await stream.deliver(sink)
    assert 0 < sink.size < len(data)
    # a stream cancelled before delivery releases its connection too
    (await backend.get_object("c")).cancel()
    for _ in range(3):
        assert await read_all(await backend.get_object("c", (0, 9))) == data[:10]


@pytest_twisted.ensureDeferred
async def test_concurrent_requests_share_the_pool(backend: S3Backend) -> None:
    from twisted.internet.defer import gatherResults

    payloads = {f"k{i}": os.urandom(1000 + i) for i in range(20)}
    await gatherResults([Deferred.fromCoroutine(put_bytes(backend, k, v)) for k, v in payloads.items()])

    async def check(key: str) -> bool:
        return await read_all(await backend.get_object(key)) == payloads[key]

    results = await gatherResults([Deferred.fromCoroutine(check(k)) for k in payloads])
    assert all(results)


@pytest_twisted.ensureDeferred
async def test_upload_source_shorter_than_length_fails_without_retry_hint(
    moto: MotoServer, make_backend: Callable[..., S3Backend]
) -> None:
    backend = make_backend(moto)
    with pytest.raises(BackendError) as info:
        await backend.put_object("short", replace(Payload.from_bytes(b"only ten b"), length=100))
    assert not info.value.retryable
    assert "ended 90 bytes early" in str(info.value)
    with pytest.raises(BackendNotFound):
        await backend.head_object("short")
    assert await put_bytes(backend, "after", b"ok") == hashlib.md5(b"ok").hexdigest()


class _RelayResource(Resource):
    """GET /?skip=N&limit=M relays one backend object through relay_body."""

    isLeaf = True

    def __init__(self, backend: S3Backend, key: str) -> None:
        super().__init__()
        self.backend = backend
        self.key = key
        self.results: list[object] = []

    def render_GET(self, request: Request) -> object:
        args = request.args or {}
        skip = int(args.get(b"skip", [b"0"])[0])
        limit = int(args[b"limit"][0]) if b"limit" in args else None

        async def respond() -> None:
            stream = await self.backend.get_object(self.key)
            assert stream.length is not None
            length = limit if limit is not None else stream.length - skip
            request.setHeader(b"content-length", b"%d" % length)
            self.results.append(await relay_body(stream, request, skip=skip, limit=limit))

        Deferred.fromCoroutine(respond()).addErrback(self.results.append)
        return NOT_DONE_YET


@pytest_twisted.ensureDeferred
async def test_relay_streams_a_backend_object_to_a_real_client(
    moto: MotoServer, make_backend: Callable[..., S3Backend]
) -> None:
    backend = make_backend(moto)
    data = os.urandom(3 * MiB + 17)
    await put_bytes(backend, "relayed", data)
    resource = _RelayResource(backend, "relayed")
    port = reactor.listenTCP(0, Site(resource), interface="127.0.0.1")
    agent = Agent(reactor)
    try:
        base = f"http://127.0.0.1:{port.getHost().port}/".encode()
        response = await agent.request(b"GET", base)
        assert response.code == 200
        assert await treq.content(response) == data
        # a backend that ignored Range: the relay cuts out exactly the range
        response = await agent.request(b"GET", base + b"?skip=1000000&limit=123457")
        assert await treq.content(response) == data[1000000 : 1000000 + 123457]
        assert resource.results == [len(data), 123457]
    finally:
        await port.stopListening()


# --- signature, digest and availability checks (weed verifies what moto ignores) ---


@pytest_twisted.ensureDeferred
async def test_wrong_secret_is_rejected_with_403(
    weed: WeedServer, weed_bucket: str, make_backend: Callable[..., S3Backend]
) -> None:
    good = make_backend(weed, weed_bucket)
    await put_bytes(good, "k", b"secret data")
    bad = make_backend(weed, weed_bucket, secret_access_key="not-the-secret")
    for call in (
        lambda: put_bytes(bad, "k2", b"x"),
        lambda: bad.get_object("k"),
        lambda: bad.list_keys(""),
    ):
        with pytest.raises(BackendError) as info:
            await call()
        assert info.value.status == 403
        assert info.value.code in ("SignatureDoesNotMatch", "AccessDenied")
        assert not info.value.retryable
    with pytest.raises(BackendError) as head_info:
        await bad.head_object("k")
    assert head_info.value.status == 403
    unknown = make_backend(weed, weed_bucket, access_key_id="unknown-key")
    with pytest.raises(BackendError) as unknown_info:
        await unknown.get_object("k")
    assert unknown_info.value.status == 403


@pytest_twisted.ensureDeferred
async def test_signed_payload_and_unsigned_payload_are_both_accepted(
    weed: WeedServer, weed_bucket: str, make_backend: Callable[..., S3Backend]
) -> None:
    data = b"payload" * 1000
    sha = hashlib.sha256(data).hexdigest()
    signed = make_backend(weed, weed_bucket, unsigned_payload=False)
    unsigned = make_backend(weed, weed_bucket, unsigned_payload=True)
    virtual = make_backend(weed, weed_bucket, force_path_style=False)  # IP host: path-style
    assert await put_bytes(signed, "s", data, sha256_hex=sha) == hashlib.md5(data).hexdigest()
    assert await put_bytes(unsigned, "u", data) == hashlib.md5(data).hexdigest()
    assert await read_all(await virtual.get_object("u")) == data


@pytest_twisted.ensureDeferred
async def test_content_md5_mismatch_is_rejected(
    weed: WeedServer, weed_bucket: str, make_backend: Callable[..., S3Backend]
) -> None:
    backend = make_backend(weed, weed_bucket)
    data = b"the real bytes"
    await put_bytes(backend, "ok", data)
    with pytest.raises(BackendError) as info:
        await put_bytes(backend, "bad", data, md5_hex=hashlib.md5(b"other bytes").hexdigest())
    assert (info.value.status, info.value.code) == (400, "BadDigest")
    with pytest.raises(BackendNotFound):
        await backend.head_object("bad")


@pytest_twisted.ensureDeferred
async def test_weed_data_survives_restart(
    weed: WeedServer, weed_bucket: str, make_backend: Callable[..., S3Backend]
) -> None:
    backend = make_backend(weed, weed_bucket)
    data = os.urandom(100_000)
    etag = await put_bytes(backend, "persist/me", data)
    weed.restart()
    # the pool's connections died with the server; the next calls reconnect
    headers = await backend.head_object("persist/me")
    assert headers["etag"].strip('"') == etag
    assert await read_all(await backend.get_object("persist/me")) == data


@pytest_twisted.ensureDeferred
async def test_stopped_server_is_unavailable_quickly(
    make_backend: Callable[..., S3Backend],
) -> None:
    with MotoServer() as server:
        backend = make_backend(server)
        await put_bytes(backend, "k", b"v")
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as info:
        await backend.get_object("k")
    assert time.monotonic() - started < 2
    assert info.value.retryable
    with pytest.raises(BackendUnavailable):
        await put_bytes(backend, "k2", b"v")
    with pytest.raises(BackendUnavailable):
        await backend.delete_object("k")
    assert counter(BACKEND_REQUESTS, "GetObject", backend.name, "error") >= 1


class _Silent(Protocol):
    """Accepts a connection and never answers."""


@pytest_twisted.ensureDeferred
async def test_unresponsive_server_times_out(
    moto: MotoServer, make_backend: Callable[..., S3Backend]
) -> None:
    port = reactor.listenTCP(0, Factory.forProtocol(_Silent), interface="127.0.0.1")
    try:
        endpoint = f"http://127.0.0.1:{port.getHost().port}"
        backend = make_backend(moto, "bucket", timeout=0.5, endpoint=endpoint)
        started = time.monotonic()
        with pytest.raises(BackendUnavailable) as info:
            await backend.head_object("k")
        assert 0.4 < time.monotonic() - started < 3
        assert "no response within" in str(info.value)
        with pytest.raises(BackendUnavailable):
            await put_bytes(backend, "k", b"x" * 1000)
        assert counter(BACKEND_REQUESTS, "HeadObject", backend.name, "timeout") == 1
    finally:
        await port.stopListening()


class _Held(Protocol):
    """Reads a request, never answers, and notes when the connection is dropped."""

    dropped: list[bool] = []

    def dataReceived(self, data: bytes) -> None:
        self.received = True

    def connectionLost(self, reason: Any = None) -> None:
        self.dropped.append(True)


@pytest_twisted.ensureDeferred
async def test_a_get_cancelled_after_it_was_sent_drops_its_connection_and_is_counted_cancelled(
    moto: MotoServer, make_backend: Callable[..., S3Backend]
) -> None:
    """A hedged read's loser: a cancel, not a backend failure (breakers and logs never see it)."""
    _Held.dropped = []
    port = reactor.listenTCP(0, Factory.forProtocol(_Held), interface="127.0.0.1")
    try:
        backend = make_backend(moto, "bucket", endpoint=f"http://127.0.0.1:{port.getHost().port}")
        errors_before = counter(BACKEND_REQUESTS, "GetObject", backend.name, "error")
        opening = Deferred.fromCoroutine(backend.get_object("k"))
        await deferLater(reactor, 0.2, lambda: None)  # the request is on the wire
        opening.cancel()
        with pytest.raises(CancelledError):
            await opening
        assert counter(BACKEND_REQUESTS, "GetObject", backend.name, "cancelled") == 1
        assert counter(BACKEND_REQUESTS, "GetObject", backend.name, "error") == errors_before
        for _ in range(50):
            if _Held.dropped:
                break
            await deferLater(reactor, 0.01, lambda: None)
        assert _Held.dropped == [True]
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_refused_connection_is_unavailable(
    moto: MotoServer, make_backend: Callable[..., S3Backend]
) -> None:
    backend = make_backend(moto, "bucket", endpoint=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(BackendUnavailable) as info:
        await backend.list_keys("")
    assert "refused" in str(info.value).lower()


@pytest_twisted.ensureDeferred
async def test_missing_bucket_is_an_error_not_a_missing_key(
    moto: MotoServer, make_backend: Callable[..., S3Backend]
) -> None:
    backend = make_backend(moto, f"absent-{fresh_bucket(moto)}")
    with pytest.raises(BackendError) as info:
        await backend.get_object("k")
    assert not isinstance(info.value, BackendNotFound)
    assert (info.value.status, info.value.code) == (404, "NoSuchBucket")
    with pytest.raises(BackendError) as delete_info:
        await backend.delete_object("k")
    assert delete_info.value.code == "NoSuchBucket"


# --- addressing and parsing (pure; no server needed) ---


def _offline_backend(**overrides: Any) -> S3Backend:
    fields: dict[str, Any] = {
        "name": "b",
        "endpoint": "http://s3.example.com",
        "bucket": "my-bucket",
        "access_key_id": "AK",
        "secret_access_key": "SK",
    }
    fields.update(overrides)
    return S3Backend(BackendConfig(**fields), MemoryReactorClock(), timeout=5)


def test_addressing_styles_and_key_encoding() -> None:
    virtual = _offline_backend()
    assert virtual.object_url("a b/ü+%&=~//x") == (
        "http://my-bucket.s3.example.com/a%20b/%C3%BC%2B%25%26%3D~//x"
    )
    assert virtual.bucket_url([("list-type", "2"), ("prefix", "a/b c")]) == (
        "http://my-bucket.s3.example.com/?list-type=2&prefix=a%2Fb%20c"
    )
    path = _offline_backend(force_path_style=True, endpoint="https://h:443/base/")
    assert path.object_url("k") == "https://h/base/my-bucket/k"
    # an IP literal or a bucket that is not DNS-safe cannot be virtual-hosted
    assert _offline_backend(endpoint="http://127.0.0.1:9000").object_url("k") == (
        "http://127.0.0.1:9000/my-bucket/k"
    )
    assert _offline_backend(bucket="Not_DNS").object_url("k") == ("http://s3.example.com/Not_DNS/k")
    assert _offline_backend(endpoint="https://s3.example.com", bucket="a.b").object_url("k") == (
        "https://s3.example.com/a.b/k"
    )
    with pytest.raises(ValueError):
        _offline_backend(endpoint="ftp://x")


def test_response_parsing_helpers() -> None:
    assert parse_content_range("bytes 0-9/100") == (0, 9, 100)
    assert parse_content_range("bytes 0-9/*") is None
    assert parse_content_range(None) is None
    body = (
        b'<?xml version="1.0"?><Error><Code>SignatureDoesNotMatch</Code>'
        b"<Message>The request signature we calculated does not match</Message></Error>"
    )
    assert parse_error_body(body) == (
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match",
    )
    assert parse_error_body(body[:80]) == ("SignatureDoesNotMatch", None)  # truncated
    assert parse_error_body(b"") == (None, None)
