"""The S3 backend client: a keep-alive HTTP/1.1 agent plus our own SigV4.

Configured for object data, not web pages:

* The agent is :class:`~s3orch.backend.http11.LeanAgent` (``server.backend_http_client:
  lean``, the default: Twisted's pure-Python client cost a third of the reactor on small
  requests) or Twisted's ``Agent`` (``twisted``), never ``treq.HTTPClient``: treq
  unconditionally wraps every request in ``ContentDecoderAgent`` (gzip) and
  ``CookieAgent``.  Objects may carry ``Content-Encoding: gzip`` and must pass
  byte-exact, and redirects must not be followed, so neither wrapper is wanted.
* One persistent connection pool per backend.
* Bodies are never buffered whole: uploads stream from the caller's
  :class:`~s3orch.payload.Payload`, downloads are handed out as an
  :class:`~s3orch.backend.s3_streams.S3Stream` whose body flows with backpressure
  (:mod:`s3orch.backend.s3_streams`); only small bodies (errors, listings) are
  read, with a bound (:mod:`s3orch.backend.s3_responses`).
* The ``timeout`` bounds connecting and waiting for response headers (for an
  upload: each stall of the body upload too); a long body transfer is not
  limited by it.
"""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from ipaddress import ip_address
from typing import Any, Protocol, cast
from urllib.parse import unquote_plus, urlsplit

from opentelemetry.trace import Span
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
from twisted.internet.task import Cooperator
from twisted.logger import Logger
from twisted.web.client import (
    HTTPConnectionPool,
    RequestGenerationFailed,
    RequestTransmissionFailed,
    ResponseFailed,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent

from s3orch.backend.credentials import (
    CredentialProvider,
    Credentials,
    CredentialsUnavailable,
    StaticCredentials,
)
from s3orch.backend.http11 import LeanAgent, LeanPool, Origin, split_uri
from s3orch.backend.interface import (
    BackendError,
    BackendNotFound,
    BackendUnavailable,
    Clock,
    ListedObject,
)
from s3orch.backend.s3_responses import (
    ERROR_BODY_LIMIT,
    LIST_BODY_LIMIT,
    Response,
    child_text,
    children,
    error_for_status,
    local_name,
    parse_error_body,
    parse_xml,
    read_body,
    response_headers,
    unquote_etag,
)
from s3orch.backend.s3_signing import BackendSigner
from s3orch.backend.s3_streams import FileSliceProducer, S3Stream
from s3orch.backend.twisted_agent import twisted_agent_and_pool
from s3orch.backend.watchdog import Watchdog
from s3orch.observe import tracing
from s3orch.observe.metrics import BACKEND_BYTES, BACKEND_DURATION, BACKEND_REQUESTS
from s3orch.payload import Payload
from s3orch.s3.sigv4 import EMPTY_SHA256, UNSIGNED_PAYLOAD, sign_headers, uri_encode
from s3orch.stream_payload import StreamPayload, StreamProducer

__all__ = ["S3Backend", "S3BackendSettings", "S3Stream"]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_DNS_BUCKET = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
#: Metric children pre-bound per (operation, backend, status): ``labels()`` costs ~8K
#: instructions a call, twice per backend request.
_backend_requests = lru_cache(maxsize=4096)(BACKEND_REQUESTS.labels)
_backend_duration = lru_cache(maxsize=1024)(BACKEND_DURATION.labels)

#: Failures that mean "the backend could not be reached or the exchange broke".
_NETWORK_ERRORS = (
    ConnectError,  # includes connection refused and connect timeouts
    DNSLookupError,
    TwistedTimeoutError,
    ConnectionClosed,  # ConnectionLost, ConnectionDone, ConnectionAborted
    ResponseFailed,  # includes ResponseNeverReceived
    RequestTransmissionFailed,
)


def _cancelled(exc: Exception) -> bool:
    """Whether a failed request is one its caller cancelled (Twisted's agent reports a request
    cancelled after it was sent as ResponseNeverReceived wrapping CancelledError)."""
    return isinstance(exc, ResponseFailed) and any(reason.check(CancelledError) for reason in exc.reasons)


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


class S3Backend:
    """An :class:`~s3orch.backend.interface.ObjectBackend` over an S3 API.

    ``reactor`` must be a full reactor (TCP, time, name resolution); it is
    injected so the pool, timeouts and upload scheduling never touch the
    global one.  ``timeout`` is ``server.backend_timeout``.

    ``http_client`` is ``server.backend_http_client``: ``lean`` or ``twisted``.
    ``agent`` (an ``IAgent``) replaces the agent over this backend's own
    connection pool: a test sends the requests to an in-memory S3 resource
    through treq's ``RequestTraversalAgent``, without a server process.  The
    requests are the same (signed, no decoding of ``Content-Encoding``, no
    redirects followed): only the transport differs.
    """

    _log = Logger()

    def __init__(
        self,
        config: S3BackendSettings,
        reactor: IReactorTime,
        timeout: float,
        *,
        max_persistent_per_host: int = 64,
        cached_connection_timeout: int = 60,
        read_size: int = 256 * 1024,
        credentials: CredentialProvider | None = None,
        agent: IAgent | None = None,
        http_client: str = "lean",
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
        self._pool: LeanPool | HTTPConnectionPool
        if http_client == "twisted":
            self._pool, twisted_agent = twisted_agent_and_pool(
                reactor, timeout, max_persistent_per_host, cached_connection_timeout
            )
            agent = agent or twisted_agent
        else:
            self._pool = LeanPool(
                reactor,
                max_persistent_per_host=max_persistent_per_host,
                cached_connection_timeout=cached_connection_timeout,
            )
            agent = agent or LeanAgent(reactor, pool=self._pool, connect_timeout=timeout)
        self._agent: IAgent = agent
        #: The lean agent's direct path: this backend's signer writes the header lines.
        self._lean = agent if isinstance(agent, LeanAgent) else None
        self._url_prefix = f"{self._scheme}://{self._host}"
        self._origin: Origin = split_uri(self._url_prefix.encode("ascii"))[0]
        self._signer = BackendSigner(self._host, self._region, backend=self.name)
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
        body: FileSliceProducer | StreamProducer | None = None,
        payload_hash: str = EMPTY_SHA256,
    ) -> Response:
        """Send one signed request; return the response once headers arrived.

        Network failures and timeouts become :class:`BackendUnavailable`
        (counted with status ``error``/``timeout``); HTTP statuses are left to
        the caller, which counts them via :meth:`_count`.
        """
        started = time.monotonic()
        trace_headers: dict[str, str] = {}
        span = tracing.backend_span(self.name, operation, method, trace_headers)
        try:
            credentials = await self.credentials.get()
        except CredentialsUnavailable as exc:
            self._count(operation, "error", started, span)
            raise BackendUnavailable(f"{operation}: {exc}", backend=self.name) from None
        pending: Deferred[Any]
        target = url[len(self._url_prefix) :]
        if self._lean is not None and url.startswith(self._url_prefix) and target[:1] == "/":
            try:
                block = self._signer.header_block(
                    method, target, headers or {}, payload_hash, credentials, self._clock.seconds(), trace_headers
                )
            except BackendError:
                self._count(operation, "error", started, span)
                raise
            pending = self._lean.request_prepared(
                method.encode("ascii"), self._origin, target.encode("ascii"), block, cast(Any, body)
            )
        else:
            request_headers = self._headers(method, url, headers or {}, payload_hash, credentials)
            for name, value in trace_headers.items():  # traceparent: sent, not signed
                request_headers.setRawHeaders(name.encode("ascii"), [value.encode("ascii")])
            pending = self._agent.request(method.encode("ascii"), url.encode("ascii"), request_headers, cast(Any, body))
        watchdog = Watchdog(self._clock, self._timeout, pending)
        if body is not None:
            body.on_chunk = watchdog.poke
        try:
            response = await pending
        except CancelledError:
            if not watchdog.expired:
                self._count(operation, "cancelled", started, span)
                raise  # the caller cancelled us: not the backend's fault
            self._count(operation, "timeout", started, span)
            raise BackendUnavailable(
                f"{operation}: no response within {self._timeout:g}s", backend=self.name, timed_out=True
            ) from None
        except _NETWORK_ERRORS as exc:
            timed_out = watchdog.expired
            if not timed_out and _cancelled(exc):  # cancelled once the request was sent (a hedge's loser)
                self._count(operation, "cancelled", started, span)
                raise CancelledError() from None
            self._count(operation, "timeout" if timed_out else "error", started, span)
            raise BackendUnavailable(
                f"{operation}: "
                + (f"no response within {self._timeout:g}s" if timed_out else _describe(exc)),
                backend=self.name, timed_out=timed_out,
            ) from None
        except RequestGenerationFailed as exc:
            self._count(operation, "error", started, span)
            cause = exc.reasons[0].value if exc.reasons else exc
            if isinstance(cause, BackendError):
                cause.backend = self.name
                raise cause from None
            if watchdog.expired:  # a body that stopped coming (a streamed client's stall) was cancelled
                raise BackendUnavailable(
                    f"{operation}: no progress within {self._timeout:g}s", backend=self.name, timed_out=True
                ) from None
            raise BackendError(f"{operation}: {_describe(exc)}", backend=self.name) from None
        finally:
            watchdog.stop()
        self._count(operation, str(response.code), started, span)
        return response

    def _count(self, operation: str, status: str, started: float, span: Span | None) -> None:
        _backend_requests(operation, self.name, status).inc()
        _backend_duration(operation, self.name).observe(time.monotonic() - started)
        if span is not None:
            tracing.end_backend_span(span, status)

    async def _raise_for_error(self, response: Response) -> None:
        """Read the (bounded) error body and raise the mapped BackendError."""
        try:
            body = await read_body(response, ERROR_BODY_LIMIT, self.name, truncate=True)
        except BackendError:
            body = b""
        code, message = parse_error_body(body)
        raise error_for_status(int(response.code), code, message, self.name)

    # --- ObjectBackend ---

    async def put_object(self, storage_key: str, payload: Payload) -> str:
        """Upload the payload (``Content-MD5`` and, unless ``unsigned_payload``, its
        SHA-256 signed); return the ETag."""
        producer: FileSliceProducer | StreamProducer
        if isinstance(payload, StreamPayload):
            # Stream-through: the digests are known only at the end, so the backend checks the
            # client's own claims (Content-MD5, a hex x-amz-content-sha256) when it sent them.
            headers = {"content-type": "application/octet-stream"}
            if payload.content_md5_b64:
                headers["content-md5"] = payload.content_md5_b64
            payload_hash = payload.sha256_claim or UNSIGNED_PAYLOAD
            if payload_hash == UNSIGNED_PAYLOAD and not self._unsigned_payload:
                raise BackendError("a streamed body needs unsigned_payload", status=501, backend=self.name)
            producer = payload.producer()
            payload.on_chunk = self._bytes_out.inc
        else:
            headers = {"content-type": "application/octet-stream", "content-md5": payload.md5_b64}
            payload_hash = UNSIGNED_PAYLOAD if self._unsigned_payload else payload.sha256_hex.lower()
            producer = FileSliceProducer(
                payload.reader(), payload.length, self._cooperator, self._read_size, self._bytes_out.inc
            )
        response = await self._request(
            "PutObject",
            "PUT",
            self.object_url(storage_key),
            headers=headers,
            body=producer,
            payload_hash=payload_hash,
        )
        if response.code != 200:
            await self._raise_for_error(response)
        etag = unquote_etag(response_headers(response).get("etag"))
        await read_body(response, ERROR_BODY_LIMIT, self.name, truncate=True)
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
        return S3Stream(
            response, response_headers(response), self.name, clock=cast(IReactorTime, self._clock), idle_timeout=self._timeout
        )

    async def head_object(self, storage_key: str) -> dict[str, str]:
        """Response headers of a HEAD, names lower-case."""
        response = await self._request("HeadObject", "HEAD", self.object_url(storage_key))
        if response.code != 200:
            raise error_for_status(int(response.code), None, None, self.name)
        return response_headers(response)

    async def delete_object(self, storage_key: str) -> None:
        """Delete; 404 counts as success."""
        response = await self._request("DeleteObject", "DELETE", self.object_url(storage_key))
        if response.code in (200, 204):
            await read_body(response, ERROR_BODY_LIMIT, self.name, truncate=True)
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
        body = await read_body(response, ERROR_BODY_LIMIT, self.name)
        root = parse_xml(body, "CopyObject", self.name)
        if local_name(root.tag) == "Error":
            code, message = parse_error_body(body)
            raise error_for_status(500, code, message, self.name)
        return unquote_etag(child_text(root, "ETag"))

    async def list_keys(
        self, prefix: str, continuation: str | None = None, max_keys: int = 1000
    ) -> tuple[list[tuple[str, int]], str | None]:
        """One ListObjectsV2 page of ``(key, size)`` and the next token."""
        page, token = await self.list_objects(prefix, continuation, max_keys)
        return [(item.key, item.size) for item in page], token

    async def list_objects(
        self, prefix: str, continuation: str | None = None, max_keys: int = 1000
    ) -> tuple[list[ListedObject], str | None]:
        """One ListObjectsV2 page (key, size, ETag, Last-Modified) and the next token."""
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
        body = await read_body(response, LIST_BODY_LIMIT, self.name)
        root = parse_xml(body, "ListObjectsV2", self.name)
        url_encoded = (child_text(root, "EncodingType") or "").lower() == "url"
        items: list[ListedObject] = []
        for item in children(root, "Contents"):
            key = child_text(item, "Key") or ""
            if url_encoded:
                key = _decode_listed_key(key)
            items.append(
                ListedObject(
                    key,
                    int(child_text(item, "Size") or "0"),
                    unquote_etag(child_text(item, "ETag") or ""),
                    _listed_time(child_text(item, "LastModified")),
                )
            )
        truncated = (child_text(root, "IsTruncated") or "").lower() == "true"
        token = child_text(root, "NextContinuationToken") if truncated else None
        return items, token or None

    # --- native multipart uploads (only what aborting an older build's uploads needs) ---

    async def _xml_result(self, response: Response, what: str, limit: int = ERROR_BODY_LIMIT) -> ET.Element:
        """The XML document of a 200 answer; S3 may report a failure inside a 200 body."""
        if response.code != 200:
            await self._raise_for_error(response)
        body = await read_body(response, limit, self.name)
        root = parse_xml(body, what, self.name)
        if local_name(root.tag) == "Error":
            code, message = parse_error_body(body)
            raise error_for_status(500, code, message, self.name)
        return root

    async def abort_multipart_upload(self, storage_key: str, upload_id: str) -> None:
        """Abort the upload; one that is already gone counts as success."""
        response = await self._request(
            "AbortMultipartUpload",
            "DELETE",
            self.object_url(storage_key, [("uploadId", upload_id)]),
        )
        if response.code in (200, 204):
            await read_body(response, ERROR_BODY_LIMIT, self.name, truncate=True)
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
            (child_text(item, "Key") or "", child_text(item, "UploadId") or "")
            for item in children(root, "Upload")
        ]

    async def close(self) -> None:
        """Stop uploads' scheduler and close pooled connections."""
        self._cooperator.stop()
        await self._pool.closeCachedConnections()


def _listed_time(text: str | None) -> float:
    """A listing's ``LastModified`` (ISO 8601) as epoch seconds; 0 when absent or unreadable."""
    if not text:
        return 0.0
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


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
