"""A whole s3orch gateway in the test process, driven by a clock: no port, process or thread.

:class:`GatewayHarness` builds the gateway with :func:`s3orch.tap.build`, the wiring twistd runs,
from a config.yaml text, and changes only what touches the outside world:

* the reactor is a ``MemoryReactorClock`` (:class:`HarnessReactor`): time moves when the test
  says so (:meth:`GatewayHarness.advance`), and every timer, worker tick and timeout runs on it;
* each configured backend is an :class:`~s3orch.testing.s3server.InMemoryS3` (keys, bucket and
  region from its config entry) reached through an in-memory agent, so backend requests are
  real signed HTTP/1.1 that the server verifies;
* the metadata store is SQLite in the file the config names, its transactions run at once on
  the calling thread (:class:`~s3orch.testing.syncpool.SynchronousConnectionPool`);
* requests reach the real ``S3Site`` over in-memory connections (``twisted.test.iosim``), as raw
  HTTP/1.1 bytes, signed with SigV4 at ``clock.seconds()``.

The clock starts at the wall-clock time by default, so request dates and stored timestamps look
like real ones (and the front door, which checks SigV4 dates against the wall clock, accepts them).  Everything else -- the front door, authentication, admission, spooling,
placement, quotas, multipart, the workers -- is production code.

A test calls :meth:`~GatewayHarness.put`, :meth:`~GatewayHarness.get`,
:meth:`~GatewayHarness.head`, :meth:`~GatewayHarness.delete`, :meth:`~GatewayHarness.list` or
:meth:`~GatewayHarness.request` (any signed request) and gets a :class:`HarnessResponse`
(status, headers, body) back synchronously; :meth:`~GatewayHarness.send_raw` sends bytes as
they are (:meth:`~GatewayHarness.encode_request` makes signed ones to alter first),
:meth:`~GatewayHarness.send_together` sends several on their own connections at once (concurrent
clients), :meth:`~GatewayHarness.connect` opens a connection to drive by hand;
:meth:`~GatewayHarness.run` drives one of the gateway's own coroutines (a store call, a worker
pass) to its result.  The harness pumps until nothing is left to do: it runs what is due, never
advances time by itself.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from treq.testing import RequestTraversalAgent
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import ILogObserver, LogEvent, LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.test import iosim
from zope.interface import implementer

from s3orch import tap
from s3orch.config import Config
from s3orch.s3.sigv4 import sign_headers, uri_encode
from s3orch.service import GatewayService
from s3orch.store import MetadataStore, open_store
from s3orch.testing.config import config_from_string
from s3orch.testing.httpclient import Client, HarnessConnection, HarnessResponse
from s3orch.testing.s3server import InMemoryS3
from s3orch.testing.syncpool import SynchronousConnectionPool

__all__ = [
    "DEFAULT_CONFIG",
    "GatewayHarness",
    "HarnessConnection",
    "HarnessError",
    "HarnessReactor",
    "HarnessResponse",
    "InMemoryAgent",
]

#: Two virtual buckets over two 1 MiB backends, pack routing, SQLite under ``{workdir}``.
DEFAULT_CONFIG = """\
server:
  listen_addr: "127.0.0.1:9000"
buckets:
  - name: photos
    credentials:
      - access_key_id: photoskey
        secret_access_key: photossecret
  - name: documents
    credentials:
      - access_key_id: docskey
        secret_access_key: docssecret
database:
  driver: sqlite
  path: "{workdir}/s3orch.db"
routing_strategy: pack
backends:
  - name: backend-1
    endpoint: "http://backend-1.s3.test"
    region: us-east-1
    bucket: store-1
    access_key_id: backend1key
    secret_access_key: backend1secret
    force_path_style: true
    quota_bytes: 1048576
  - name: backend-2
    endpoint: "http://backend-2.s3.test"
    region: us-east-1
    bucket: store-2
    access_key_id: backend2key
    secret_access_key: backend2secret
    force_path_style: true
    quota_bytes: 1048576
"""

#: What ``{port}`` in a config text becomes (nothing listens on it: connections are in memory).
DEFAULT_PORT = 9000

#: Rounds of pumping without a settled state before the harness calls it a livelock.
MAX_ROUNDS = 100_000

T = TypeVar("T")


class HarnessError(AssertionError):
    """The harness could not do what the test asked (no answer, never ready, never settles)."""


class HarnessReactor(MemoryReactorClock):
    """A ``MemoryReactorClock`` whose ``callFromThread`` runs the call at once: there are no
    other threads (database work runs on the caller's, see :mod:`s3orch.testing.syncpool`)."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # twisted.internet.testing is unannotated

    def callFromThread(self, callable: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        callable(*args, **kwargs)


class InMemoryAgent(RequestTraversalAgent):
    """treq's in-memory agent, whose :meth:`flush` says whether anything moved, so the harness
    knows when every backend exchange has settled."""

    def __init__(self, root: Any) -> None:
        super().__init__(root)  # type: ignore[no-untyped-call]  # treq.testing is unannotated
        if not isinstance(getattr(self, "_pumps", None), set):
            raise HarnessError("treq.testing.RequestTraversalAgent changed: it has no _pumps set")
        #: Requests made since the last flush: a backend never answers inside ``request()`` (a
        #: body written at once would otherwise complete the whole exchange there), so
        #: requests sent together all reach their backends before any of them is answered.
        self._queued: list[tuple[Any, Deferred[Any]]] = []

    def request(self, method: bytes, uri: bytes, headers: Any = None, bodyProducer: Any = None) -> Deferred[Any]:
        started: list[Deferred[Any]] = []

        def cancel(waiting: Deferred[Any]) -> None:
            if started:
                started[0].cancel()

        answer: Deferred[Any] = Deferred(cancel)

        def start() -> None:
            if answer.called:  # cancelled before it reached the backend
                return
            inner: Deferred[Any] = super(InMemoryAgent, self).request(method, uri, headers, bodyProducer)  # type: ignore[no-untyped-call]
            started.append(inner)
            inner.chainDeferred(answer)

        self._queued.append((start, answer))
        return answer

    def flush(self) -> bool:
        queued, self._queued = self._queued, []
        for start, _ in queued:
            start()
        before: set[Any] = self._pumps
        self._pumps = set()
        moved = False
        for pump in before:
            moved = bool(pump.flush()) or moved
            if not (pump.clientIO.disconnected and pump.serverIO.disconnected):
                self._pumps.add(pump)
            else:
                moved = True
        # New connections opened while flushing are progress too.
        return moved or bool(queued) or bool(self._pumps - before)


@implementer(ILogObserver)
class _Problems:
    """Errors and failures logged while the harness runs (why it did not get ready, or what went
    wrong behind a 500)."""

    def __init__(self) -> None:
        self.events: list[LogEvent] = []

    def __call__(self, event: LogEvent) -> None:
        if event.get("log_failure") is not None or event.get("log_level") in (LogLevel.error, LogLevel.critical):
            self.events.append(event)

    def describe(self) -> str:
        return "; ".join(
            str(e.get("log_failure") or e.get("error") or formatEvent(e)) for e in self.events
        )


class GatewayHarness:
    """One s3orch gateway in memory; see the module docstring.

    ``config_text`` is config.yaml text (``{workdir}`` is replaced by ``workdir``, ``{port}`` by
    :data:`DEFAULT_PORT`); the database must be SQLite.  ``start`` is the clock's first reading
    (default: now; the front door checks SigV4 request dates against the wall clock, so requests
    signed on a clock far from it are refused with RequestTimeTooSkewed).
    """

    def __init__(
        self,
        workdir: str | Path,
        config_text: str = DEFAULT_CONFIG,
        *,
        start: float | None = None,
        host: str = "gateway.test",
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        text = config_text.replace("{workdir}", str(self.workdir)).replace("{port}", str(DEFAULT_PORT))
        self.config: Config = config_from_string(text)
        if self.config.database.driver != "sqlite":
            raise HarnessError(f"the harness runs SQLite only, not {self.config.database.driver!r}")
        self.clock = HarnessReactor()
        self.clock.advance(time.time() if start is None else start)
        self.host = host
        #: Backend name -> its in-memory S3 server.
        self.backends: dict[str, InMemoryS3] = {}
        self._agents: dict[str, InMemoryAgent] = {}
        for backend in self.config.backends:
            server = InMemoryS3(
                {backend.access_key_id: backend.secret_access_key},
                region=backend.region,
                clock=self.clock,
                buckets=[backend.bucket],
            )
            self.backends[backend.name] = server
            self._agents[backend.name] = InMemoryAgent(server)
        self.store: MetadataStore = open_store(
            self.config.database, self.clock, pool_factory=SynchronousConnectionPool
        )
        self.service: GatewayService = tap.build(
            self.config, self.clock, store=self.store, backend_agents=self._agents
        )
        self._connections: list[HarnessConnection] = []
        #: The factory listening on the S3 port (twisted.web's Site is unannotated: Any).
        self._site: Any = None
        #: Errors and failures logged since start() (a test may assert there are none).
        self.problems = _Problems()
        self._port = int(self.config.server.listen_addr.rpartition(":")[2])

    # --- life cycle ------------------------------------------------------------------------

    def start(self) -> GatewayHarness:
        """Start the service tree and wait (in clock terms: settle) until /health/ready is 200."""
        globalLogPublisher.addObserver(self.problems)
        self.service.startService()
        self.settle()
        listening = [factory for port, factory, _, _ in self.clock.tcpServers if port == self._port]
        ready = listening and self._ready(listening[-1])
        if not ready:
            globalLogPublisher.removeObserver(self.problems)
            raise HarnessError(
                f"the gateway did not become ready: {self.problems.describe() or 'no error logged'}"
            )
        return self

    def _ready(self, site: Any) -> bool:
        self._site = site
        return self.send_raw(
            f"GET /health/ready HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode()
        ).status == 200

    def stop(self) -> None:
        """Stop the service tree as twistd would (draining), moving time if it must wait."""
        for connection in self._connections:
            if not connection.closed:
                connection.pump.clientIO.loseConnection()
        done: list[object] = []
        self.service.stopService().addBoth(done.append)
        self.settle()
        while not done:
            if not self._advance_to_next_call(float("inf")):
                raise HarnessError("the gateway did not stop and nothing is scheduled")
        globalLogPublisher.removeObserver(self.problems)
        if isinstance(done[0], Failure):
            done[0].raiseException()

    def __enter__(self) -> GatewayHarness:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- time and pumping -------------------------------------------------------------------

    def settle(self) -> None:
        """Run everything that is due and move every byte until nothing changes (time stands still)."""
        for _ in range(MAX_ROUNDS):
            if not self._step():
                return
        raise HarnessError(f"still busy after {MAX_ROUNDS} rounds: something reschedules itself forever")

    def _step(self) -> bool:
        moved = False
        now = self.clock.seconds()
        if any(call.getTime() <= now for call in self.clock.getDelayedCalls()):
            self.clock.advance(0)
            moved = True
        for agent in self._agents.values():
            moved = agent.flush() or moved
        for connection in list(self._connections):
            moved = bool(connection.pump.flush()) or moved
            if connection.pump.clientIO.disconnected and connection.pump.serverIO.disconnected:
                self._connections.remove(connection)
        return moved

    def _advance_to_next_call(self, limit: float) -> bool:
        """Jump to the next scheduled call at or before ``limit`` and settle; False if there is none."""
        times = [call.getTime() for call in self.clock.getDelayedCalls() if call.getTime() <= limit]
        if not times:
            return False
        self.clock.rightNow = max(self.clock.rightNow, min(times))
        self.settle()
        return True

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, stopping at every scheduled call on the way to run it
        and settle what it started (a timer never fires while earlier work is still unpumped)."""
        target = self.clock.seconds() + seconds
        self.settle()
        while self._advance_to_next_call(target):
            pass
        self.clock.rightNow = max(self.clock.rightNow, target)
        self.settle()

    def run(self, awaitable: Coroutine[Any, Any, T] | Deferred[T]) -> T:
        """Drive ``awaitable`` (a store call, a worker pass: the gateway's own code) to its end by
        settling, time standing still; its result, or its exception raised here.  Something that
        waits on time is not done by then: that is a :class:`HarnessError` (use :meth:`advance`)."""
        outcome: list[T | Failure] = []
        ensureDeferred(awaitable).addBoth(outcome.append)
        self.settle()
        if not outcome:
            raise HarnessError("it did not finish while time stood still (it waits on the clock or on nothing)")
        (result,) = outcome
        if isinstance(result, Failure):
            result.raiseException()
        return result

    # --- the client ---------------------------------------------------------------------------

    def connect(self) -> HarnessConnection:
        """A new client connection to the gateway's S3 port."""
        if self._site is None:
            raise HarnessError("start() the harness first")
        peer = IPv4Address("TCP", "127.0.0.1", 40000 + len(self._connections) % 20000)
        here = IPv4Address("TCP", "127.0.0.1", self._port)
        server = self._site.buildProtocol(peer)
        client = Client()
        simulated: Any = iosim  # twisted.test.iosim is unannotated
        pump = simulated.connect(
            server,
            simulated.FakeTransport(server, isServer=True, hostAddress=here, peerAddress=peer),
            client,
            simulated.FakeTransport(client, isServer=False, hostAddress=peer, peerAddress=here),
            greet=False,
            clock=self.clock,
        )
        connection = HarnessConnection(pump, client, self.settle)
        self._connections.append(connection)
        self.settle()
        return connection

    def send_raw(self, data: bytes) -> HarnessResponse:
        """Send ``data`` as it is on a new connection; the first response (then the connection is closed)."""
        method = data.split(b" ", 1)[0].decode("latin-1")
        connection = self.connect()
        connection.send(data)
        try:
            return connection.response(method)
        finally:
            connection.close()

    def credentials(self, bucket: str) -> tuple[str, str]:
        """The first key pair the config gives ``bucket``."""
        for configured in self.config.buckets:
            if configured.name == bucket:
                for credential in configured.credentials:
                    if credential.access_key_id:
                        return credential.access_key_id, credential.secret_access_key
        raise HarnessError(f"no SigV4 credentials configured for bucket {bucket!r}")

    def request(
        self,
        method: str,
        bucket: str | None = None,
        key: str | None = None,
        *,
        query: Sequence[tuple[str, str]] = (),
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        credentials: tuple[str, str] | None = None,
        payload_hash: str | None = None,
        signed: bool = True,
        region: str = "us-east-1",
    ) -> HarnessResponse:
        """A path-style request, SigV4-signed at ``clock.seconds()`` with ``credentials`` (default:
        the bucket's own) over the payload's SHA-256 (or ``payload_hash``); ``signed=False``
        sends it anonymous.  Every header given is signed."""
        target = self.target(bucket, key, query)
        if signed and credentials is None:
            credentials = self.credentials(bucket or "")
        return self.send_raw(
            self.encode_request(
                method, target, headers=headers, body=body,
                credentials=credentials if signed else None, payload_hash=payload_hash, region=region,
            )
        )

    @staticmethod
    def target(bucket: str | None = None, key: str | None = None, query: Sequence[tuple[str, str]] = ()) -> str:
        """The path-style request target (path and query, URI-encoded as S3 signs them)."""
        path = "/"
        if bucket is not None:
            path += bucket
            if key is not None:
                path += "/" + uri_encode(key, encode_slash=False)
        if query:
            path += "?" + "&".join(
                f"{uri_encode(k, encode_slash=True)}={uri_encode(v, encode_slash=True)}" for k, v in query
            )
        return path

    def encode_request(
        self,
        method: str,
        target: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        credentials: tuple[str, str] | None = None,
        payload_hash: str | None = None,
        region: str = "us-east-1",
        host: str | None = None,
    ) -> bytes:
        """The bytes of one request for ``target`` (path and query as sent), SigV4-signed at
        ``clock.seconds()`` when ``credentials`` are given (anonymous otherwise), with a
        Content-Length unless ``headers`` carry their own framing.  For :meth:`send_raw` and
        :meth:`send_together`, or to alter before sending."""
        extra = dict(headers or {})
        host = host or self.host
        if credentials is not None:
            access_key, secret_key = credentials
            extra.update(
                sign_headers(
                    method,
                    f"http://{host}{target}",
                    extra,
                    payload_hash or hashlib.sha256(body).hexdigest(),
                    access_key,
                    secret_key,
                    region,
                    self.clock.seconds(),
                )
            )
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
        framed = {name.lower() for name in extra} & {"content-length", "transfer-encoding"}
        if not framed:
            lines.append(f"Content-Length: {len(body)}")
        lines += [f"{name}: {value}" for name, value in extra.items()]
        return "\r\n".join(lines).encode("utf-8") + b"\r\n\r\n" + body

    def send_together(self, requests: Sequence[bytes]) -> list[HarnessResponse]:
        """Each request on its own connection, every one written before any is pumped: the
        gateway interleaves them at each backend or timer wait, as it does concurrent clients.
        The responses in the order of ``requests``."""
        connections = [self.connect() for _ in requests]
        for connection, data in zip(connections, requests, strict=True):
            connection.pump.clientIO.write(data)
        self.settle()
        try:
            return [
                connection.response(data.split(b" ", 1)[0].decode("latin-1"))
                for connection, data in zip(connections, requests, strict=True)
            ]
        finally:
            for connection in connections:
                connection.close()

    def put(self, bucket: str, key: str, body: bytes, headers: Mapping[str, str] | None = None,
            **kwargs: Any) -> HarnessResponse:
        return self.request("PUT", bucket, key, headers=headers, body=body, **kwargs)

    def get(self, bucket: str, key: str, headers: Mapping[str, str] | None = None,
            **kwargs: Any) -> HarnessResponse:
        return self.request("GET", bucket, key, headers=headers, **kwargs)

    def head(self, bucket: str, key: str, headers: Mapping[str, str] | None = None,
             **kwargs: Any) -> HarnessResponse:
        return self.request("HEAD", bucket, key, headers=headers, **kwargs)

    def delete(self, bucket: str, key: str, headers: Mapping[str, str] | None = None,
               **kwargs: Any) -> HarnessResponse:
        return self.request("DELETE", bucket, key, headers=headers, **kwargs)

    def list(self, bucket: str, prefix: str = "", *, delimiter: str | None = None, max_keys: int | None = None,
             continuation_token: str | None = None, **kwargs: Any) -> HarnessResponse:
        """ListObjectsV2 of ``bucket``."""
        query = [("list-type", "2"), ("prefix", prefix)]
        if delimiter is not None:
            query.append(("delimiter", delimiter))
        if max_keys is not None:
            query.append(("max-keys", str(max_keys)))
        if continuation_token is not None:
            query.append(("continuation-token", continuation_token))
        return self.request("GET", bucket, query=query, **kwargs)
