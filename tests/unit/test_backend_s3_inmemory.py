"""S3Backend (the gateway's S3 client) against the in-memory S3 server, through treq's in-memory
agent (Twisted's Agent) or the lean agent over an in-memory loopback (keep-alive included):
no socket, no process, a ``task.Clock``.  The server checks every signature, Content-MD5
and x-amz-content-sha256 as a real provider does, so these tests fail on a signing bug."""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Iterator
from io import BytesIO
from typing import Any, TypeVar, cast

import pytest
from treq.testing import RequestTraversalAgent
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.web.resource import Resource
from twisted.web.server import Site

from s3orch.backend.http11 import LeanAgent
from s3orch.backend.interface import BackendError, BackendNotFound
from s3orch.backend.s3 import S3Backend, S3Stream
from s3orch.config import BackendConfig
from s3orch.payload import Payload
from s3orch.testing.s3server import InMemoryS3

T = TypeVar("T")

KEY, SECRET = "backendkey", "backendsecret"
BUCKET = "store"
NOW = 1_700_000_000.0


class LoopbackLeanAgent:
    """The lean agent whose connections reach a Site over in-memory transports (iosim pumps)."""

    def __init__(self, resource: Resource, clock: Clock) -> None:
        self.site = Site(resource, reactor=MemoryReactorClock())
        self.pumps: list[iosim.IOPump] = []
        self.agent = LeanAgent(clock, endpoint_factory=lambda origin: self)  # type: ignore[arg-type,return-value]
        self.request = self.agent.request

    def connect(self, factory: Any) -> Deferred[Any]:
        client_address = IPv4Address("TCP", "127.0.0.1", 40000 + len(self.pumps))
        server_address = IPv4Address("TCP", "127.0.0.1", 9000)
        server = self.site.buildProtocol(client_address)
        client = factory.buildProtocol(server_address)
        self.pumps.append(
            iosim.connect(
                server,
                iosim.FakeTransport(server, True, server_address, client_address),
                client,
                iosim.FakeTransport(client, False, client_address, server_address),
            )
        )
        return succeed(client)

    def flush(self) -> None:
        for pump in self.pumps:
            pump.flush()


class Rig:
    """One in-memory server, one agent over it (treq's RequestTraversalAgent, or the lean one
    over a loopback), one S3Backend through it."""

    def __init__(
        self, *, secret: str = SECRET, skew: float = 0.0, unsigned: bool | None = None, client: str = "twisted"
    ) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        server_clock = Clock()
        server_clock.advance(NOW + skew)
        self.server = InMemoryS3({KEY: SECRET}, clock=server_clock, buckets=[BUCKET])
        self.agent: Any = cast(
            Any,
            LoopbackLeanAgent(self.server, self.clock) if client == "lean" else RequestTraversalAgent(self.server),
        )
        config = BackendConfig(
            name="mem", endpoint="http://s3.mem.test:9000", region="us-east-1", bucket=BUCKET,
            access_key_id=KEY, secret_access_key=secret, force_path_style=True, unsigned_payload=unsigned,
        )
        self.backend = S3Backend(config, self.clock, timeout=10.0, agent=self.agent)

    def run(self, coroutine: Any) -> Any:
        """Drive the clock and the agent until the coroutine is done; its result, or raise."""
        d: Deferred[Any] = ensureDeferred(coroutine)
        outcome: list[Any] = []
        d.addBoth(outcome.append)
        for _ in range(10_000):
            if outcome:
                break
            self.agent.flush()
            self.clock.advance(0)
        assert outcome, "the request never finished"
        if isinstance(outcome[0], Failure):
            outcome[0].raiseException()
        return outcome[0]

    def read(self, stream: S3Stream) -> bytes:
        sink = Collector()
        self.run(_deliver(stream, sink))
        return sink.data()

    def put(self, key: str, data: bytes, *, md5_hex: str | None = None, sha256_hex: str | None = None) -> str:
        """PUT ``data``; ``md5_hex``/``sha256_hex`` override the digests the payload claims."""
        payload = Payload(
            BytesIO(data),
            len(data),
            md5_hex or hashlib.md5(data).hexdigest(),
            sha256_hex or hashlib.sha256(data).hexdigest(),
        )
        return str(self.run(self.backend.put_object(key, payload)))


async def _deliver(stream: S3Stream, sink: Collector) -> None:
    await stream.deliver(sink)


class Collector:
    """An IBodyConsumer keeping what it is given."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def registerProducer(self, producer: object, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.parts.append(data)

    def data(self) -> bytes:
        return b"".join(self.parts)


@pytest.fixture(params=["twisted", "lean"])
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    made = Rig(client=request.param)
    yield made
    made.run(made.backend.close())


def test_put_stores_the_bytes_and_returns_their_md5_etag(rig: Rig) -> None:
    etag = rig.put("a/b.txt", b"hello world")
    assert etag == hashlib.md5(b"hello world").hexdigest()
    assert rig.server.objects(BUCKET)["a/b.txt"].data == b"hello world"


def test_put_signs_content_md5_and_the_payload_hash(rig: Rig) -> None:
    rig.put("k", b"data")
    (request,) = rig.server.received
    assert request.method == "PUT"
    assert {"host", "content-md5", "x-amz-content-sha256", "x-amz-date"} <= set(request.signed_headers)
    assert request.header("x-amz-content-sha256") == hashlib.sha256(b"data").hexdigest()


def test_put_over_https_style_unsigned_payload_is_accepted() -> None:
    unsigned = Rig(unsigned=True)
    unsigned.put("k", b"data")
    (request,) = unsigned.server.received
    assert request.header("x-amz-content-sha256") == "UNSIGNED-PAYLOAD"
    assert unsigned.server.objects(BUCKET)["k"].data == b"data"


def test_wrong_secret_is_refused_with_signature_does_not_match_and_stores_nothing() -> None:
    bad = Rig(secret="not-the-secret")
    with pytest.raises(BackendError) as caught:
        bad.put("k", b"data")
    assert (caught.value.status, caught.value.code) == (403, "SignatureDoesNotMatch")
    assert bad.server.objects(BUCKET) == {}


def test_clock_far_from_the_servers_is_request_time_too_skewed() -> None:
    skewed = Rig(skew=3600)
    with pytest.raises(BackendError) as caught:
        skewed.put("k", b"data")
    assert (caught.value.status, caught.value.code) == (403, "RequestTimeTooSkewed")


def test_content_md5_of_other_bytes_is_bad_digest(rig: Rig) -> None:
    with pytest.raises(BackendError) as caught:
        rig.put("k", b"data", md5_hex=hashlib.md5(b"other").hexdigest())
    assert (caught.value.status, caught.value.code) == (400, "BadDigest")
    assert rig.server.objects(BUCKET) == {}


def test_payload_hash_of_other_bytes_is_sha256_mismatch(rig: Rig) -> None:
    with pytest.raises(BackendError) as caught:
        rig.put("k", b"data", sha256_hex=hashlib.sha256(b"other").hexdigest())
    assert (caught.value.status, caught.value.code) == (400, "XAmzContentSHA256Mismatch")


def test_get_streams_the_object_back(rig: Rig) -> None:
    rig.server.put(BUCKET, "k", b"0123456789")
    stream = rig.run(rig.backend.get_object("k"))
    assert stream.status == 200 and stream.length == 10
    assert rig.read(stream) == b"0123456789"


def test_ranged_get_is_a_206_with_its_content_range(rig: Rig) -> None:
    rig.server.put(BUCKET, "k", b"0123456789")
    stream = rig.run(rig.backend.get_object("k", (2, 5)))
    assert stream.status == 206
    assert stream.content_range == (2, 5, 10)
    assert rig.read(stream) == b"2345"
    assert rig.server.received[-1].header("range") == "bytes=2-5"


def test_get_of_a_missing_key_is_backend_not_found(rig: Rig) -> None:
    with pytest.raises(BackendNotFound):
        rig.run(rig.backend.get_object("missing"))


def test_gzip_content_encoding_passes_through_undecoded(rig: Rig) -> None:
    packed = gzip.compress(b"plain text " * 50)
    rig.server.put(BUCKET, "k.gz", packed, {"content-encoding": "gzip"})
    stream = rig.run(rig.backend.get_object("k.gz"))
    assert stream.headers["content-encoding"] == "gzip"
    assert rig.read(stream) == packed
    assert "accept-encoding" not in rig.server.received[-1].headers


def test_a_redirect_is_an_error_not_followed(rig: Rig) -> None:
    rig.server.put(BUCKET, "k", b"data")
    rig.server.redirect(BUCKET, "http://s3.mem.test:9000/store/k?moved")
    with pytest.raises(BackendError) as caught:
        rig.run(rig.backend.get_object("k"))
    assert caught.value.status == 307
    assert len(rig.server.received) == 1


def test_head_returns_the_stored_headers(rig: Rig) -> None:
    rig.put("k", b"data")
    headers = rig.run(rig.backend.head_object("k"))
    assert headers["content-length"] == "4"
    assert headers["etag"] == f'"{hashlib.md5(b"data").hexdigest()}"'
    assert headers["content-type"] == "application/octet-stream"


def test_head_of_a_missing_key_is_backend_not_found(rig: Rig) -> None:
    with pytest.raises(BackendNotFound):
        rig.run(rig.backend.head_object("missing"))


def test_delete_removes_and_a_missing_key_is_no_error(rig: Rig) -> None:
    rig.server.put(BUCKET, "k", b"data")
    rig.run(rig.backend.delete_object("k"))
    assert "k" not in rig.server.objects(BUCKET)
    rig.run(rig.backend.delete_object("k"))


def test_server_side_copy_duplicates_the_object(rig: Rig) -> None:
    rig.server.put(BUCKET, "src key+1", b"payload")
    etag = rig.run(rig.backend.copy_object("src key+1", "dst"))
    assert etag == hashlib.md5(b"payload").hexdigest()
    assert rig.server.objects(BUCKET)["dst"].data == b"payload"
    assert rig.server.received[-1].header("x-amz-copy-source") == "/store/src%20key%2B1"


def test_copy_of_a_missing_source_is_an_error(rig: Rig) -> None:
    with pytest.raises(BackendError) as caught:
        rig.run(rig.backend.copy_object("missing", "dst"))
    assert caught.value.code == "NoSuchKey"


def test_listing_pages_through_continuation_tokens_and_decodes_keys(rig: Rig) -> None:
    keys = [f"p/{i:02d}" for i in range(5)] + ["p/a b+c", "p/\u00e9t\u00e9", "q/other"]
    for key in keys:
        rig.server.put(BUCKET, key, key.encode())
    seen: list[tuple[str, int]] = []
    token = None
    pages = 0
    while True:
        page, token = rig.run(rig.backend.list_keys("p/", token, max_keys=3))
        seen += page
        pages += 1
        if token is None:
            break
    assert pages == 3
    assert seen == sorted((k, len(k.encode())) for k in keys if k.startswith("p/"))


def test_open_multipart_uploads_are_listed_and_aborted(rig: Rig) -> None:
    first = rig.server.create_upload(BUCKET, "big/one")
    rig.server.create_upload(BUCKET, "other/two")
    assert rig.run(rig.backend.list_multipart_uploads("big/")) == [("big/one", first.upload_id)]
    rig.run(rig.backend.abort_multipart_upload("big/one", first.upload_id))
    assert rig.run(rig.backend.list_multipart_uploads("big/")) == []
    # an upload that is already gone counts as aborted
    rig.run(rig.backend.abort_multipart_upload("big/one", first.upload_id))


def test_the_lean_agent_keeps_one_connection_alive_across_requests() -> None:
    rig = Rig(client="lean")
    rig.put("k", b"value")
    assert rig.run(rig.backend.head_object("k"))["content-length"] == "5"
    assert rig.read(rig.run(rig.backend.get_object("k"))) == b"value"
    rig.run(rig.backend.delete_object("k"))
    assert len(rig.agent.pumps) == 1
