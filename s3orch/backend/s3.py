"""The S3 backend client: Twisted's HTTP/1.1 Agent plus our own SigV4.

Configured for object data, not web pages (DESIGN §3.2):

* Twisted's ``Agent`` is used directly, not ``treq.HTTPClient``: treq
  unconditionally wraps every request in ``ContentDecoderAgent`` (gzip) and
  ``CookieAgent``.  Objects may carry ``Content-Encoding: gzip`` and must pass
  byte-exact, and redirects must not be followed, so neither wrapper is wanted.
* One persistent ``HTTPConnectionPool`` per backend.
* Bodies are never buffered whole: uploads stream from the caller's seekable
  file, downloads are handed out as a :class:`S3Stream` whose body flows with
  backpressure; only small bodies (errors, listings) are read, with a bound.
* The ``timeout`` bounds connecting and waiting for response headers (for an
  upload: each stall of the body upload too); a long body transfer is not
  limited by it.
"""

from __future__ import annotations

import contextlib
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping, Sequence
from ipaddress import ip_address
from typing import Any, BinaryIO, Protocol, cast
from urllib.parse import unquote_plus, urlsplit

from defusedxml import ElementTree as DefusedET
from defusedxml.common import DefusedXmlException
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import (
    ConnectError,
    ConnectionClosed,
    DNSLookupError,
)
from twisted.internet.error import (
    TimeoutError as TwistedTimeoutError,
)
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.internet.protocol import connectionDone
from twisted.internet.task import Cooperator, NotPaused, TaskFinished, TaskStopped
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    RequestGenerationFailed,
    RequestTransmissionFailed,
    ResponseDone,
    ResponseFailed,
    _HTTP11ClientFactory,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IAgent

from s3orch.backend.credentials import (
    CredentialProvider,
    Credentials,
    CredentialsUnavailable,
    StaticCredentials,
)
from s3orch.backend.interface import (
    BackendError,
    BackendNotFound,
    BackendUnavailable,
    Clock,
    IBodyConsumer,
    PushProducer,
    Timer,
)
from s3orch.observe.metrics import BACKEND_BYTES, BACKEND_DURATION, BACKEND_REQUESTS
from s3orch.s3.sigv4 import EMPTY_SHA256, UNSIGNED_PAYLOAD, sign_headers, uri_encode

__all__ = ["S3Backend", "S3BackendSettings", "S3Stream"]

#: An ``IResponse`` from Twisted's Agent.  zope interfaces are opaque to mypy
#: without a plugin, so responses are handled as Any at this one boundary.
_Response = Any

ERROR_BODY_LIMIT = 64 * 1024
LIST_BODY_LIMIT = 16 * 1024 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_DNS_BUCKET = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
_XML_CODE = re.compile(rb"<Code>([^<]{1,256})</Code>")
_XML_MESSAGE = re.compile(rb"<Message>([^<]{0,2048})</Message>")

#: Failures that mean "the backend could not be reached or the exchange broke".
_NETWORK_ERRORS = (
    ConnectError,  # includes connection refused and connect timeouts
    DNSLookupError,
    TwistedTimeoutError,
    ConnectionClosed,  # ConnectionLost, ConnectionDone, ConnectionAborted
    ResponseFailed,  # includes ResponseNeverReceived
    RequestTransmissionFailed,
)


class _QuietFactory(_HTTP11ClientFactory):  # type: ignore[misc]
    """Twisted logs "Starting/Stopping factory" for every new pooled connection: noise."""

    noisy = False


class _QuietPool(HTTPConnectionPool):  # type: ignore[misc]
    _factory = _QuietFactory


class S3BackendSettings(Protocol):
    """What :class:`S3Backend` reads from a backend's config (``BackendConfig``).

    ``unsigned_payload`` None means auto: UNSIGNED-PAYLOAD over https, where TLS
    protects the bytes, a real payload hash over http.  ``disable_checksum`` and
    ``strip_sdk_headers`` need no code here: this client never sends flexible
    checksums or SDK headers.
    """

    @property
    def name(self) -> str: ...

    @property
    def endpoint(self) -> str: ...

    @property
    def region(self) -> str: ...

    @property
    def bucket(self) -> str: ...

    @property
    def access_key_id(self) -> str: ...

    @property
    def secret_access_key(self) -> str: ...

    @property
    def force_path_style(self) -> bool: ...

    @property
    def unsigned_payload(self) -> bool | None: ...


class _Watchdog:
    """Cancels a request Deferred when it makes no progress for ``timeout`` s."""

    def __init__(self, clock: Clock, timeout: float, target: Deferred[Any]) -> None:
        self.expired = False
        self._timeout = timeout
        self._target = target
        self._call = cast(Timer, clock.callLater(timeout, self._expire))

    def _expire(self) -> None:
        self.expired = True
        self._target.cancel()

    def poke(self) -> None:
        """Progress was made: restart the countdown."""
        if self._call.active():
            self._call.reset(self._timeout)

    def stop(self) -> None:
        if self._call.active():
            self._call.cancel()


def _lower_headers(raw: Headers) -> dict[str, str]:
    """Response headers as a lower-case dict (repeated headers joined by ', ')."""
    out: dict[str, str] = {}
    for name, values in raw.getAllRawHeaders():
        key = name.decode("latin-1").lower()
        out[key] = ", ".join(v.decode("latin-1") for v in values)
    return out


def parse_content_range(value: str | None) -> tuple[int, int, int] | None:
    """``bytes start-end/total`` as a tuple (None if absent or total unknown)."""
    if not value:
        return None
    match = _CONTENT_RANGE.fullmatch(value.strip())
    if match is None or match.group(3) == "*":
        return None
    return int(match.group(1)), int(match.group(2)), int(match.group(3))


def parse_error_body(body: bytes) -> tuple[str | None, str | None]:
    """(Code, Message) of an S3 ``<Error>`` document; regex, so a truncated or
    odd body still yields its code, and no XML parser sees untrusted input."""
    code = _XML_CODE.search(body)
    message = _XML_MESSAGE.search(body)
    return (
        code.group(1).decode("utf-8", "replace").strip() if code else None,
        message.group(1).decode("utf-8", "replace").strip() if message else None,
    )


def _parse_xml(body: bytes, what: str, backend: str) -> ET.Element:
    """Parse a bounded backend XML document through defusedxml, like client XML (no DTD, no entities)."""
    try:
        element = DefusedET.fromstring(
            body, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except DefusedXmlException:
        raise BackendError(f"{what}: XML with a DTD or entities refused", backend=backend) from None
    except (ET.ParseError, ValueError) as exc:
        raise BackendError(f"{what}: malformed XML: {exc}", backend=backend) from None
    if not isinstance(element, ET.Element):
        raise BackendError(f"{what}: malformed XML", backend=backend)
    return element


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _children(element: ET.Element, name: str) -> Iterator[ET.Element]:
    return (child for child in element if _local(child.tag) == name)


def _child_text(element: ET.Element, name: str) -> str | None:
    for child in _children(element, name):
        return child.text or ""
    return None


def _unquote_etag(value: str | None) -> str:
    return (value or "").strip().strip('"')


def _error_for_status(status: int, code: str | None, message: str | None, backend: str) -> BackendError:
    """Map an error response to the backend error hierarchy."""
    text = message or f"HTTP {status}"
    if status == 404 and code in (None, "NoSuchKey", "NotFound"):
        return BackendNotFound(text, code=code or "NoSuchKey", backend=backend)
    transient = (status >= 500 and status != 501) or status in (408, 429)
    if transient or code in ("SlowDown", "RequestTimeout"):
        return BackendUnavailable(text, status=status, code=code, backend=backend)
    return BackendError(text, status=status, code=code, backend=backend)


class _BoundedReader(TwistedProtocol):
    """Collects a small response body; stops the transfer past ``limit``.

    With ``truncate`` the first ``limit`` bytes are kept (enough to find an
    error code) and the connection is dropped; otherwise an oversize body fails.
    """

    def __init__(self, limit: int, truncate: bool, backend: str) -> None:
        self.done: Deferred[bytes] = Deferred()
        self._limit = limit
        self._truncate = truncate
        self._backend = backend
        self._parts: list[bytes] = []
        self._size = 0
        self._finished = False

    def dataReceived(self, data: bytes) -> None:
        if self._finished:
            return
        self._parts.append(data)
        self._size += len(data)
        if self._size > self._limit:
            self._finished = True
            cast(PushProducer, self.transport).stopProducing()
            if self._truncate:
                self.done.callback(b"".join(self._parts)[: self._limit])
            else:
                self.done.errback(
                    BackendError(
                        f"response body larger than {self._limit} bytes",
                        backend=self._backend,
                    )
                )

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._finished:
            return
        self._finished = True
        if isinstance(reason.value, (ResponseDone, PotentialDataLoss)):
            self.done.callback(b"".join(self._parts))
        else:
            self.done.errback(
                BackendUnavailable(
                    f"response body lost: {reason.getErrorMessage()}",
                    backend=self._backend,
                )
            )


async def _read_body(response: _Response, limit: int, backend: str, *, truncate: bool = False) -> bytes:
    reader = _BoundedReader(limit, truncate, backend)
    response.deliverBody(reader)
    return await reader.done


class _NullConsumer:
    """Consumer for a body nobody wants (a cancelled, undelivered stream)."""

    def registerProducer(self, producer: PushProducer, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        pass


class _StreamProtocol(TwistedProtocol):
    """Forwards a GET body to an :class:`IBodyConsumer`; is also the producer
    the consumer pauses, proxying to the response transport
    (``TransportProxyProducer``) and remembering the pause, because
    ``Response.deliverBody`` resumes the transport right after
    ``connectionMade`` and would silently undo a pause made there."""

    def __init__(
        self,
        consumer: IBodyConsumer,
        done: Deferred[None],
        expected: int | None,
        backend: str,
    ) -> None:
        self._consumer = consumer
        self._done = done
        self._expected = expected
        self._backend = backend
        self._bytes_in = BACKEND_BYTES.labels(backend, "in")
        self.received = 0
        self.stopped = False
        self.finished = False
        self.paused = False

    def connectionMade(self) -> None:
        self._consumer.registerProducer(self, True)

    def _transport(self) -> PushProducer | None:
        return cast(PushProducer | None, self.transport)

    def pauseProducing(self) -> None:
        self.paused = True
        transport = self._transport()
        if transport is not None and not self.finished:
            transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.paused = False
        transport = self._transport()
        if transport is not None and not self.finished:
            transport.resumeProducing()

    def stopProducing(self) -> None:
        self.stop()

    def reapply_pause(self) -> None:
        """Called after ``deliverBody`` returns: re-pause if the consumer asked to."""
        if self.paused:
            self.pauseProducing()

    def dataReceived(self, data: bytes) -> None:
        if self.stopped:
            return
        self.received += len(data)
        self._bytes_in.inc(len(data))
        self._consumer.write(data)

    def stop(self) -> None:
        """Drop the connection; the rest of the body is not drained."""
        if self.stopped or self.finished:
            return
        self.stopped = True
        transport = self._transport()
        if transport is not None:
            transport.stopProducing()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.finished:
            return
        self.finished = True
        self._consumer.unregisterProducer()
        complete = isinstance(reason.value, ResponseDone) or (
            isinstance(reason.value, PotentialDataLoss)
            and self._expected is not None
            and self.received == self._expected
        )
        if complete:
            self._done.callback(None)
        elif self.stopped:
            self._done.errback(CancelledError())
        else:
            self._done.errback(
                BackendUnavailable(
                    f"body cut after {self.received} bytes"
                    + (f" of {self._expected}" if self._expected is not None else "")
                    + f": {reason.getErrorMessage()}",
                    backend=self._backend,
                )
            )


class S3Stream:
    """A backend GET whose headers have arrived; see ``BackendStream``."""

    def __init__(self, response: _Response, headers: dict[str, str], backend: str) -> None:
        self.status: int = response.code
        self.headers = headers
        self.length: int | None = None if response.length is UNKNOWN_LENGTH else int(response.length)
        self.content_range = parse_content_range(headers.get("content-range"))
        self._response = response
        self._backend = backend
        self._protocol: _StreamProtocol | None = None

    def _expected(self) -> int | None:
        if self.length is not None:
            return self.length
        if self.content_range is not None:
            return self.content_range[1] - self.content_range[0] + 1
        return None

    def deliver(self, consumer: IBodyConsumer) -> Deferred[None]:
        """Stream the body into ``consumer`` (see ``BackendStream.deliver``)."""
        if self._protocol is not None:
            raise RuntimeError("body already delivered or cancelled")
        done: Deferred[None] = Deferred()
        protocol = _StreamProtocol(consumer, done, self._expected(), self._backend)
        self._protocol = protocol
        self._response.deliverBody(protocol)
        protocol.reapply_pause()
        return done

    def cancel(self) -> None:
        """Abandon the body: the connection is dropped, never drained."""
        if self._protocol is None:
            ignored: Deferred[None] = Deferred()
            ignored.addErrback(lambda _: None)
            self._protocol = _StreamProtocol(_NullConsumer(), ignored, self._expected(), self._backend)
            self._response.deliverBody(self._protocol)
        self._protocol.stop()


class _FileSliceProducer:
    """``IBodyProducer`` sending exactly ``length`` bytes of a seekable file.

    Unlike ``FileBodyProducer`` it does not close the file (the caller's spool
    may serve a retry on another backend) and it reports progress, which keeps
    the stall watchdog quiet and feeds the bytes-out counter.
    """

    def __init__(
        self,
        body: BinaryIO,
        length: int,
        cooperator: Cooperator,
        read_size: int,
        count_bytes: Callable[[int], None],
    ) -> None:
        self.length = length
        self._body = body
        self._cooperator = cooperator
        self._read_size = read_size
        self._count_bytes = count_bytes
        #: Called after each chunk is handed to the transport (stall watchdog).
        self.on_chunk: Callable[[], None] = lambda: None
        self._task: Any = None

    def startProducing(self, consumer: Any) -> Deferred[None]:
        self._task = self._cooperator.cooperate(self._write_loop(consumer))
        done: Deferred[None] = Deferred()

        def finished(_: object) -> None:
            done.callback(None)

        def failed(reason: Failure) -> None:
            if isinstance(reason.value, TaskStopped):
                return  # stopProducing: IBodyProducer's Deferred must not fire
            done.errback(reason)

        self._task.whenDone().addCallbacks(finished, failed)
        return done

    def _write_loop(self, consumer: Any) -> Iterator[None]:
        remaining = self.length
        while remaining > 0:
            chunk = self._body.read(min(self._read_size, remaining))
            if not chunk:
                raise BackendError(f"upload source ended {remaining} bytes early")
            remaining -= len(chunk)
            consumer.write(chunk)
            self._count_bytes(len(chunk))
            self.on_chunk()
            yield None

    def pauseProducing(self) -> None:
        with contextlib.suppress(TaskFinished):  # the transport may lag behind the end
            self._task.pause()

    def resumeProducing(self) -> None:
        with contextlib.suppress(NotPaused):
            self._task.resume()

    def stopProducing(self) -> None:
        if self._task is not None:
            try:
                self._task.stop()
            except TaskFinished:
                pass


class S3Backend:
    """An :class:`~s3orch.backend.interface.ObjectBackend` over an S3 API.

    ``reactor`` must be a full reactor (TCP, time, name resolution); it is
    injected so the pool, timeouts and upload scheduling never touch the
    global one.
    """

    _log = Logger()

    def __init__(
        self,
        config: S3BackendSettings,
        reactor: IReactorTime,
        timeout: float = 30.0,
        *,
        max_persistent_per_host: int = 64,
        cached_connection_timeout: int = 60,
        read_size: int = 256 * 1024,
        credentials: CredentialProvider | None = None,
        agent: IAgent | None = None,
    ) -> None:
        self.name = config.name
        self.bucket = config.bucket
        self._region = config.region or "us-east-1"
        #: The keys requests are signed with (``credential_source``); static: from config.yaml.
        self.credentials: CredentialProvider = credentials or StaticCredentials(
            Credentials(config.access_key_id, config.secret_access_key), "config.yaml"
        )
        self._timeout = timeout
        self._read_size = read_size
        self._clock = cast(Clock, reactor)
        parts = urlsplit(config.endpoint.rstrip("/"))
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"backend {self.name}: bad endpoint {config.endpoint!r}")
        self._scheme = parts.scheme
        netloc = parts.netloc.rpartition("@")[2]
        if parts.port is not None and parts.port == _DEFAULT_PORTS[parts.scheme]:
            netloc = netloc[: netloc.rfind(":")]
        self._netloc = netloc
        self._base_path = parts.path.rstrip("/")
        self._path_style = config.force_path_style or not self._virtual_host_possible(
            parts.hostname, config.bucket, parts.scheme
        )
        unsigned = config.unsigned_payload
        self._unsigned_payload = parts.scheme == "https" if unsigned is None else unsigned
        pool = _QuietPool(reactor, persistent=True)  # type: ignore[no-untyped-call]
        pool.maxPersistentPerHost = max_persistent_per_host
        pool.cachedConnectionTimeout = cached_connection_timeout
        pool.retryAutomatically = True  # only idempotent, body-less requests
        self._pool = pool
        #: ``agent`` (tests: an in-memory one) replaces the pooled Agent; the watchdog still applies.
        self._agent: IAgent = agent if agent is not None else Agent(  # type: ignore[no-untyped-call]
            reactor, connectTimeout=timeout, pool=pool
        )
        self._cooperator = Cooperator(scheduler=lambda work: self._clock.callLater(0, work))
        self._bytes_out = BACKEND_BYTES.labels(self.name, "out")

    @staticmethod
    def _virtual_host_possible(host: str, bucket: str, scheme: str) -> bool:
        """Virtual-hosted addressing needs a DNS-safe bucket and a DNS host name."""
        try:
            ip_address(host)
            return False
        except ValueError:
            pass
        if not _DNS_BUCKET.fullmatch(bucket) or ".." in bucket:
            return False
        return not (scheme == "https" and "." in bucket)

    # --- URLs and signing ---

    def object_url(self, key: str, query: Sequence[tuple[str, str]] = ()) -> str:
        """URL of ``key`` (each segment percent-encoded, slashes kept)."""
        return self._url("/" + uri_encode(key, encode_slash=False), query)

    def bucket_url(self, query: Sequence[tuple[str, str]] = ()) -> str:
        """URL of the bucket itself (listings)."""
        return self._url("/" if not self._path_style else "", query)

    @property
    def _host(self) -> str:
        """Host header value; the same rule sign_headers applies to the URL."""
        return self._netloc if self._path_style else f"{self.bucket}.{self._netloc}"

    def _url(self, path: str, query: Sequence[tuple[str, str]]) -> str:
        if self._path_style:
            path = f"/{self.bucket}{path}"
        full = f"{self._scheme}://{self._host}{self._base_path}{path}"
        if query:
            full += "?" + "&".join(
                f"{uri_encode(k, encode_slash=True)}={uri_encode(v, encode_slash=True)}" for k, v in query
            )
        return full

    def _headers(
        self, method: str, url: str, extra: Mapping[str, str], payload_hash: str, credentials: Credentials
    ) -> Headers:
        if credentials.session_token:  # temporary keys: the token is sent, and signed
            extra = {**extra, "x-amz-security-token": credentials.session_token}
        signed = sign_headers(
            method,
            url,
            extra,
            payload_hash,
            credentials.access_key_id,
            credentials.secret_access_key,
            self._region,
            self._clock.seconds(),
        )
        raw: dict[bytes, list[bytes]] = {b"host": [self._host.encode("ascii")]}
        for name, value in (*extra.items(), *signed.items()):
            raw[name.encode("ascii")] = [value.encode("latin-1")]
        return Headers(raw)

    # --- the one request path every call takes ---

    async def _request(
        self,
        operation: str,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: _FileSliceProducer | None = None,
        payload_hash: str = EMPTY_SHA256,
    ) -> _Response:
        """Send one signed request; return the response once headers arrived.

        Network failures and timeouts become :class:`BackendUnavailable`
        (counted with status ``error``/``timeout``); HTTP statuses are left to
        the caller, which counts them via :meth:`_count`.
        """
        started = time.monotonic()
        try:
            credentials = await self.credentials.get()
        except CredentialsUnavailable as exc:
            self._count(operation, "error", started)
            raise BackendUnavailable(f"{operation}: {exc}", backend=self.name) from None
        request_headers = self._headers(method, url, headers or {}, payload_hash, credentials)
        pending: Deferred[Any] = self._agent.request(
            method.encode("ascii"),
            url.encode("ascii"),
            request_headers,
            cast(Any, body),
        )
        watchdog = _Watchdog(self._clock, self._timeout, pending)
        if body is not None:
            body.on_chunk = watchdog.poke
        try:
            response = await pending
        except CancelledError:
            if not watchdog.expired:
                self._count(operation, "cancelled", started)
                raise  # the caller cancelled us: not the backend's fault
            self._count(operation, "timeout", started)
            raise BackendUnavailable(
                f"{operation}: no response within {self._timeout:g}s", backend=self.name
            ) from None
        except _NETWORK_ERRORS as exc:
            timed_out = watchdog.expired
            self._count(operation, "timeout" if timed_out else "error", started)
            raise BackendUnavailable(
                f"{operation}: "
                + (f"no response within {self._timeout:g}s" if timed_out else _describe(exc)),
                backend=self.name,
            ) from None
        except RequestGenerationFailed as exc:
            self._count(operation, "error", started)
            cause = exc.reasons[0].value if exc.reasons else exc
            if isinstance(cause, BackendError):
                cause.backend = self.name
                raise cause from None
            raise BackendError(f"{operation}: {_describe(exc)}", backend=self.name) from None
        finally:
            watchdog.stop()
        self._count(operation, str(response.code), started)
        return response

    def _count(self, operation: str, status: str, started: float) -> None:
        BACKEND_REQUESTS.labels(operation, self.name, status).inc()
        BACKEND_DURATION.labels(operation, self.name).observe(time.monotonic() - started)

    async def _raise_for_error(self, response: _Response) -> None:
        """Read the (bounded) error body and raise the mapped BackendError."""
        try:
            body = await _read_body(response, ERROR_BODY_LIMIT, self.name, truncate=True)
        except BackendError:
            body = b""
        code, message = parse_error_body(body)
        raise _error_for_status(int(response.code), code, message, self.name)

    # --- ObjectBackend ---

    async def put_object(
        self,
        storage_key: str,
        body: BinaryIO,
        length: int,
        *,
        content_md5_b64: str | None = None,
        sha256_hex: str | None = None,
    ) -> str:
        """Upload ``length`` bytes from the start of ``body``; return the ETag."""
        return await self._send_body(
            "PutObject",
            self.object_url(storage_key),
            body,
            length,
            {"content-type": "application/octet-stream"},
            content_md5_b64,
            sha256_hex,
        )

    async def _send_body(
        self,
        operation: str,
        url: str,
        body: BinaryIO,
        length: int,
        headers: dict[str, str],
        content_md5_b64: str | None,
        sha256_hex: str | None,
    ) -> str:
        """PUT ``length`` bytes from the start of ``body`` (PutObject, UploadPart); return the ETag."""
        body.seek(0)
        if content_md5_b64 is not None:
            headers["content-md5"] = content_md5_b64
        payload_hash = (
            sha256_hex.lower() if sha256_hex is not None and not self._unsigned_payload else UNSIGNED_PAYLOAD
        )
        producer = _FileSliceProducer(body, length, self._cooperator, self._read_size, self._bytes_out.inc)
        response = await self._request(
            operation, "PUT", url, headers=headers, body=producer, payload_hash=payload_hash
        )
        if response.code != 200:
            await self._raise_for_error(response)
        etag = _unquote_etag(_lower_headers(response.headers).get("etag"))
        await _read_body(response, ERROR_BODY_LIMIT, self.name, truncate=True)
        return etag

    async def get_object(self, storage_key: str, byte_range: tuple[int, int] | None = None) -> S3Stream:
        """Start a GET; the body is not read until the stream is delivered."""
        headers = {}
        if byte_range is not None:
            start, end = byte_range
            if start < 0 or end < start:
                raise ValueError(f"bad byte range {byte_range!r}")
            headers["range"] = f"bytes={start}-{end}"
        response = await self._request("GetObject", "GET", self.object_url(storage_key), headers=headers)
        if response.code not in (200, 206):
            await self._raise_for_error(response)
        return S3Stream(response, _lower_headers(response.headers), self.name)

    async def head_object(self, storage_key: str) -> dict[str, str]:
        """Response headers of a HEAD, names lower-case."""
        response = await self._request("HeadObject", "HEAD", self.object_url(storage_key))
        if response.code != 200:
            raise _error_for_status(int(response.code), None, None, self.name)
        return _lower_headers(response.headers)

    async def delete_object(self, storage_key: str) -> None:
        """Delete; 404 counts as success."""
        response = await self._request("DeleteObject", "DELETE", self.object_url(storage_key))
        if response.code in (200, 204):
            await _read_body(response, ERROR_BODY_LIMIT, self.name, truncate=True)
            return
        try:
            await self._raise_for_error(response)
        except BackendNotFound:
            return

    async def copy_object(self, source_key: str, dest_key: str) -> str:
        """Server-side copy; S3 may report a failure inside a 200 body."""
        source = f"/{self.bucket}/{uri_encode(source_key, encode_slash=False)}"
        response = await self._request(
            "CopyObject",
            "PUT",
            self.object_url(dest_key),
            headers={"x-amz-copy-source": source},
        )
        if response.code != 200:
            await self._raise_for_error(response)
        body = await _read_body(response, ERROR_BODY_LIMIT, self.name)
        root = _parse_xml(body, "CopyObject", self.name)
        if _local(root.tag) == "Error":
            code, message = parse_error_body(body)
            raise _error_for_status(500, code, message, self.name)
        return _unquote_etag(_child_text(root, "ETag"))

    async def list_keys(
        self, prefix: str, continuation: str | None = None, max_keys: int = 1000
    ) -> tuple[list[tuple[str, int]], str | None]:
        """One ListObjectsV2 page of ``(key, size)`` and the next token."""
        query = [
            ("encoding-type", "url"),
            ("list-type", "2"),
            ("max-keys", str(max_keys)),
            ("prefix", prefix),
        ]
        if continuation is not None:
            query.insert(0, ("continuation-token", continuation))
        response = await self._request("ListObjectsV2", "GET", self.bucket_url(query))
        if response.code != 200:
            await self._raise_for_error(response)
        body = await _read_body(response, LIST_BODY_LIMIT, self.name)
        root = _parse_xml(body, "ListObjectsV2", self.name)
        url_encoded = (_child_text(root, "EncodingType") or "").lower() == "url"
        keys: list[tuple[str, int]] = []
        for item in _children(root, "Contents"):
            key = _child_text(item, "Key") or ""
            if url_encoded:
                key = _decode_listed_key(key)
            keys.append((key, int(_child_text(item, "Size") or "0")))
        truncated = (_child_text(root, "IsTruncated") or "").lower() == "true"
        token = _child_text(root, "NextContinuationToken") if truncated else None
        return keys, token or None

    # --- native multipart uploads (only what aborting an older build's uploads needs) ---

    async def _xml_result(self, response: _Response, what: str, limit: int = ERROR_BODY_LIMIT) -> ET.Element:
        """The XML document of a 200 answer; S3 may report a failure inside a 200 body."""
        if response.code != 200:
            await self._raise_for_error(response)
        body = await _read_body(response, limit, self.name)
        root = _parse_xml(body, what, self.name)
        if _local(root.tag) == "Error":
            code, message = parse_error_body(body)
            raise _error_for_status(500, code, message, self.name)
        return root

    async def abort_multipart_upload(self, storage_key: str, upload_id: str) -> None:
        """Abort the upload; one that is already gone counts as success."""
        response = await self._request(
            "AbortMultipartUpload",
            "DELETE",
            self.object_url(storage_key, [("uploadId", upload_id)]),
        )
        if response.code in (200, 204):
            await _read_body(response, ERROR_BODY_LIMIT, self.name, truncate=True)
            return
        try:
            await self._raise_for_error(response)
        except BackendError as exc:
            if exc.status == 404:  # NoSuchUpload (or a key already gone)
                return
            raise

    async def list_multipart_uploads(self, prefix: str) -> list[tuple[str, str]]:
        """(key, upload id) of the open uploads under ``prefix`` (first page, up to 1000).

        Without ``encoding-type=url``: SeaweedFS echoes it but leaves the keys
        as they are, so a ``+`` would be misread as a space.
        """
        query = [("prefix", prefix), ("uploads", "")]
        response = await self._request("ListMultipartUploads", "GET", self.bucket_url(query))
        root = await self._xml_result(response, "ListMultipartUploads", LIST_BODY_LIMIT)
        return [
            (_child_text(item, "Key") or "", _child_text(item, "UploadId") or "")
            for item in _children(root, "Upload")
        ]

    async def close(self) -> None:
        """Stop uploads' scheduler and close pooled connections."""
        self._cooperator.stop()
        await self._pool.closeCachedConnections()  # type: ignore[no-untyped-call]


def _decode_listed_key(key: str) -> str:
    """Undo ``encoding-type=url``.  AWS form-encodes (space as ``+``, a real
    plus as ``%2B``), so a literal ``+`` means a space."""
    return unquote_plus(key)


def _describe(exc: BaseException) -> str:
    """A readable one-liner for Twisted's wrapped failures."""
    reasons = getattr(exc, "reasons", None)
    if reasons:
        return "; ".join(f"{type(r.value).__name__}: {r.getErrorMessage()}" for r in reasons)
    return f"{type(exc).__name__}: {exc}"
