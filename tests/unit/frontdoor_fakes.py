"""In-memory doubles for driving the whole S3 front door over StringTransport.

``FrontDoor`` wires the front door (:func:`build_frontend`) into an :class:`S3Site`
with a ``MemoryReactorClock`` (starting at :data:`START`) and an in-memory object
service, so a test can send raw request bytes, read the raw answer, advance time
and inspect what the front door holds (admission slots, in-flight gauges, open
backend streams).  Requests are signed at the clock's time (:func:`signed_request`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure

from s3orch.auth.registry import CredentialRegistry
from s3orch.backend.memory import MemoryStream
from s3orch.config import load_config_from_string
from s3orch.core.cache import NO_CACHE
from s3orch.frontend.assembly import build_frontend
from s3orch.frontend.ops import OpsApp
from s3orch.frontend.root import RootResource
from s3orch.http.site import S3Site
from s3orch.observe.metrics import REGISTRY
from s3orch.payload import Payload
from s3orch.s3 import errors, sigv4
from s3orch.store.interface import ListPage, Location, ObjectRecord

CONFIG = """
server:
{server}
buckets:
  - name: photos
    credentials:
      - {{access_key_id: photoskey, secret_access_key: photossecret}}
      - {{access_key_id: otherkey, secret_access_key: othersecret}}
backends:
  - {{name: b1, endpoint: "http://127.0.0.1:1", bucket: x, access_key_id: a, secret_access_key: s}}
"""

SECRETS = {"photoskey": "photossecret", "otherkey": "othersecret"}

#: Where a FrontDoor's clock starts (epoch seconds); requests are signed at this time by default.
START = 1_750_000_000.0


class _SignedPayloadFleet:
    """One backend that wants the payload's SHA-256 signed (``unsigned_payload: false``): a
    body without a hex claim cannot stream through to it (core.stream_write.stream_allowed)."""

    names = ("fake",)

    @staticmethod
    def config(name: str) -> Any:
        return type("Config", (), {"effective_unsigned_payload": False})()

    @staticmethod
    def usage_exhausted(size: int = 0) -> bool:
        return False


class FakeObjects:
    """The part of ObjectService the front door calls, over a dict."""

    #: What the stream-through gate reads: no encryption, compression or fan-out, a fleet that
    #: signs payloads (so the fake takes spooled bodies unless a request carries a hex claim).
    envelope = None
    compressor = None
    fanout = None
    fleet = _SignedPayloadFleet()

    def __init__(self, clock: MemoryReactorClock) -> None:
        self.clock = clock
        self.data: dict[tuple[str, str], tuple[ObjectRecord, bytes]] = {}
        self.streams: list[MemoryStream] = []
        self.stream_kwargs: dict[str, Any] = {}
        self.puts = 0
        #: What the GET handler asks of the real service: no cache, no read verification.
        self.cache = NO_CACHE
        self.scrubber = None

    def store(self, record: ObjectRecord, data: bytes) -> None:
        self.data[(record.bucket, record.key)] = (record, data)

    async def put(self, bucket: str, key: str, payload: Payload, **kwargs: Any) -> ObjectRecord:
        self.puts += 1
        new = kwargs["new"]
        record = ObjectRecord(
            bucket, key, f"w{self.puts}", payload.length, payload.md5_hex, 1_700_000_000.0,
            content_type=new.content_type, headers=dict(new.system_headers),
            user_metadata=dict(new.user_metadata),
        )
        self.store(record, payload.reader().read())
        return record

    async def head(self, bucket: str, key: str) -> ObjectRecord:
        found = self.data.get((bucket, key))
        if found is None:
            raise errors.NoSuchKey(Key=key)
        return found[0]

    async def open(self, record: ObjectRecord, byte_range: tuple[int, int] | None) -> tuple[MemoryStream, Location]:
        data = self.data[(record.bucket, record.key)][1]
        content_range = None
        if byte_range is not None:
            data = data[byte_range[0] : byte_range[1] + 1]
            content_range = (byte_range[0], byte_range[1], record.size)
        stream = MemoryStream(data, content_range=content_range, **self.stream_kwargs)
        self.streams.append(stream)
        return stream, Location("memory", record.key, record.size)

    async def list(self, bucket: str, prefix: str, delimiter: str, start: str, max_keys: int) -> ListPage:
        return ListPage((), (), False, None)


class AbortingTransport(StringTransport):
    """A StringTransport whose abort/close reach the protocol, as a socket's do.

    With ``window`` set it behaves like a socket whose peer stopped reading: once
    that many bytes are written, it pauses its producer (the HTTP channel), as a
    full send buffer does; :meth:`drain` is the peer reading again.
    """

    protocol: Any = None
    aborted = False
    window: int | None = None
    full = False

    def write(self, data: bytes) -> None:
        super().write(data)
        if self.window is not None and not self.full and len(self.value()) >= self.window:
            self.full = True
            if self.producer is not None:
                self.producer.pauseProducing()

    def drain(self, more: int) -> None:
        """The peer read: ``more`` bytes of room, and the producer may go on."""
        assert self.window is not None
        self.window = len(self.value()) + more
        self.full = False
        if self.producer is not None:
            self.producer.resumeProducing()

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()
        if self.protocol is not None:
            protocol, self.protocol = self.protocol, None
            protocol.connectionLost(Failure(ConnectionAborted()))

    def close(self) -> None:
        """The peer closed (or the kernel finished flushing a lost connection)."""
        if self.protocol is not None:
            protocol, self.protocol = self.protocol, None
            protocol.connectionLost(Failure(ConnectionDone()))


@dataclass
class FrontDoor:
    """One front door over in-memory parts."""

    server: str = "  max_concurrent_requests: 40"
    clock: MemoryReactorClock = field(default_factory=MemoryReactorClock)

    def __post_init__(self) -> None:
        if self.clock.seconds() < START:
            self.clock.advance(START - self.clock.seconds())
        self.config = load_config_from_string(CONFIG.format(server=self.server))
        self.objects = FakeObjects(self.clock)
        self.frontend = build_frontend(
            server=self.config.server,
            registry=CredentialRegistry(self.config.buckets),
            objects=self.objects,  # type: ignore[arg-type]
            clock=self.clock,
        )
        server = self.config.server
        self.site = S3Site(
            RootResource(self.frontend, OpsApp(is_ready=lambda: True).resource()),
            early_handler=self.frontend,
            timeout=server.idle_timeout,
            read_header_timeout=server.read_header_timeout,
            read_timeout=server.read_timeout,
            write_timeout=server.write_timeout,
            reactor=self.clock,
        )

    def connect(self) -> tuple[Any, AbortingTransport]:
        protocol = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 12345))
        transport = AbortingTransport()
        transport.protocol = protocol
        protocol.makeConnection(transport)  # type: ignore[union-attr]
        return protocol, transport

    def send(self, raw: bytes) -> tuple[Any, AbortingTransport]:
        protocol, transport = self.connect()
        protocol.dataReceived(raw)
        return protocol, transport

    def slots_in_use(self) -> int:
        admission = self.frontend.admission
        pools = [p for p in (admission.global_pool, admission.reads, admission.writes) if p is not None]
        return sum(p.in_use for p in pools)


def signed_request(
    method: str,
    path: str,
    body: bytes = b"",
    *,
    headers: dict[str, str] | None = None,
    access_key: str = "photoskey",
    content_length: bool = True,
    now: float = START,
) -> bytes:
    """A SigV4-signed raw request (UNSIGNED-PAYLOAD), as bytes on the wire, signed at ``now``."""
    extra = dict(headers or {})
    signed = sigv4.sign_headers(
        method, "http://gw.test" + path, extra, sigv4.UNSIGNED_PAYLOAD, access_key, SECRETS[access_key],
        "us-east-1", now,
    )
    lines = [f"{method} {path} HTTP/1.1", "Host: gw.test"]
    if content_length:
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"{k}: {v}" for k, v in {**extra, **signed}.items()]
    return "\r\n".join(lines).encode("utf-8", "surrogateescape") + b"\r\n\r\n" + body


def inflight_total() -> float:
    """Sum of s3o_inflight_requests over every method label."""
    total = 0.0
    for metric in REGISTRY.collect():
        if metric.name == "s3o_inflight_requests":
            total += sum(sample.value for sample in metric.samples)
    return total


def series_count() -> int:
    """How many time series /metrics exposes."""
    return sum(len(metric.samples) for metric in REGISTRY.collect())


class LogFailures:
    """Collect logged failures (tracebacks) and errors while in a ``with`` block."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        level = event.get("log_level")
        if event.get("log_failure") is not None or level in (LogLevel.error, LogLevel.critical):
            self.events.append(event)

    def __enter__(self) -> LogFailures:
        globalLogPublisher.addObserver(self)
        return self

    def __exit__(self, *exc: object) -> None:
        globalLogPublisher.removeObserver(self)


def status_of(transport: StringTransport) -> int | None:
    """The status code of the last non-100 HTTP response written to ``transport`` (None: none)."""
    statuses = [
        int(line[9:12])
        for line in transport.value().split(b"\r\n")
        if line.startswith(b"HTTP/1.1 ") and line[9:12].isdigit() and line[9:12] != b"100"
    ]
    return statuses[-1] if statuses else None
