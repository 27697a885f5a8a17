"""One S3 request as the front door sees it, and how its answer is written.

Every other front-door module builds on this one and it builds on none of them:
the per-request state (``RequestState``, kept on ``request.s3`` from the moment
the headers are in), the table entry that says how one operation is served
(``Route``), the header and query look-ups, and the response writers.  A writer
never writes to a request whose client went away or that was already answered,
and an error answer never carries the headers a failed handler had set.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate

from opentelemetry.trace import Span

from s3orch.auth.registry import Principal
from s3orch.http.admission import CredentialHold, Slot
from s3orch.http.body import DiscardedBody, RequestBody
from s3orch.http.site import EXTRA_REASONS, S3Request
from s3orch.payload import Payload
from s3orch.s3 import errors, sigv4
from s3orch.s3.addressing import Address
from s3orch.s3.operations import Operation

#: The identity every answer names as owner (of the bucket, its objects and uploads).
OWNER_ID = "s3orch"
OWNER_NAME = "s3orch"
#: The same identity as the (id, display name) pair the XML builders take.
OWNER = (OWNER_ID, OWNER_NAME)
#: The region a virtual bucket answers that it lives in.
REGION = "us-east-1"


@dataclass
class RequestState:
    """Everything known about one S3 request, from its headers onwards."""

    request_id: str
    started: float
    method: str
    raw_path: bytes
    query: list[tuple[str, str]] = field(default_factory=list)
    headers: dict[str, list[str]] = field(default_factory=dict)
    address: Address | None = None
    operation: Operation | None = None
    principal: Principal | None = None
    auth: sigv4.AuthResult | None = None
    body: RequestBody | DiscardedBody | None = None  # a StreamingBody is a RequestBody
    error: errors.S3Error | None = None
    bytes_out: int = 0
    accounted: bool = False
    slot: Slot | None = None
    #: This request counted against its credential's share of the pool.
    credential_hold: CredentialHold | None = None
    #: The method as metrics label it (a closed set: GET ... OPTIONS, else OTHER).
    method_label: str = "OTHER"
    #: Audit event name when it is not the operation's (admission refusals).
    event: str | None = None
    #: The request's server span (tracing on; None when off).
    span: Span | None = None
    #: The client IP the rate limiter charged ("" when rate limiting is not wired).
    client_ip: str = ""

    @property
    def op_name(self) -> str:
        return self.operation.name if self.operation else "Unknown"

    @property
    def bucket(self) -> str:
        """The bucket a bucket- or object-level operation acts on (bound at header time)."""
        assert self.address is not None and self.address.bucket is not None
        return self.address.bucket

    @property
    def key(self) -> str:
        """The key an object-level operation acts on."""
        assert self.address is not None and self.address.key is not None
        return self.address.key


#: Serves one operation once its body (if it takes one) is in and verified.
Handler = Callable[[S3Request, RequestState, Payload | None], Awaitable[None]]
#: Validates an operation's headers and query when the headers arrive (raise an S3Error
#: to refuse it before ``100 Continue`` and before any body byte is read).
EarlyCheck = Callable[[RequestState], None]


@dataclass(frozen=True)
class BodyUse:
    """What an operation's request body is, for the envelope that receives it."""

    #: Object bytes (capped at ``server.max_object_size``, a length required) rather
    #: than an XML document (capped at the envelope's document limit).
    object_data: bool
    #: AWS answers MalformedXML, not EntityTooLarge, to an oversized document.
    oversized_is_malformed: bool = False
    #: The request's ``x-amz-checksum-*`` header describes this body (else the object's).
    checksum_headers: bool = True
    #: A large body may stream through to the backend (``server.stream_through_min_size``).
    streamable: bool = False


#: PutObject, UploadPart: the object's bytes, which may stream through when large.
STREAMED_OBJECT_DATA = BodyUse(object_data=True, streamable=True)
#: DeleteObjects, CreateBucket, Put*Acl: a small XML document.
XML_DOCUMENT = BodyUse(object_data=False)
#: CompleteMultipartUpload: the part list, whose x-amz-checksum-* is the object's.
PART_LIST = BodyUse(object_data=False, oversized_is_malformed=True, checksum_headers=False)


@dataclass(frozen=True)
class Route:
    """How the front door serves one S3 operation: one entry of a handler table."""

    handler: Handler
    #: None: the operation takes no body (one sent anyway is counted and dropped).
    body: BodyUse | None = None
    #: Header-time validation beyond authentication.
    early: EarlyCheck | None = None


#: Operation name -> route; each handlers module exposes one, merged once at build time.
RouteTable = Mapping[str, Route]


# -- looking at the request ----------------------------------------------------


def headers_of(request: S3Request) -> dict[str, list[str]]:
    """Request headers by lower-case name; values decoded so that every byte survives."""
    return {
        name.decode("latin-1").lower(): [v.decode("utf-8", "surrogateescape") for v in values]
        for name, values in request.requestHeaders.getAllRawHeaders()
    }


def first_header(headers: Mapping[str, Sequence[str]], name: str) -> str | None:
    """The first value of a header (lower-case name), None when absent."""
    values = headers.get(name)
    return values[0] if values else None


def query_get(query: Sequence[tuple[str, str]], name: str) -> str | None:
    """The first value of a query parameter, None when absent."""
    for key, value in query:
        if key == name:
            return value
    return None


def path_of(uri: bytes) -> bytes:
    """The raw path of a request-target (origin or absolute form), without query."""
    if uri.startswith((b"http://", b"https://")):
        rest = uri.split(b"://", 1)[1]
        slash = rest.find(b"/")
        uri = rest[slash:] if slash >= 0 else b"/"
    return uri.split(b"?", 1)[0]


def query_of(uri: bytes) -> bytes:
    """The raw query string of a request-target (empty when none)."""
    return uri.split(b"?", 1)[1] if b"?" in uri else b""


def http_date(ts: float) -> str:
    """An HTTP date (Last-Modified and friends)."""
    return formatdate(ts, usegmt=True)


def quote_etag(etag: str) -> str:
    """ETags travel quoted in headers."""
    return f'"{etag}"'


def resource_of(state: RequestState) -> str:
    """The <Resource> of an error document: the request path as received."""
    return state.raw_path.decode("utf-8", "replace")


# -- writing the answer ----------------------------------------------------------


def gone(request: S3Request) -> bool:
    """True when the client disconnected or the answer was already sent."""
    return bool(request.finished or request._disconnected)


def finish(request: S3Request) -> None:
    """End the answer, unless there is no one left to end it for."""
    if not gone(request):
        request.finish()


def abort(request: S3Request) -> None:
    """End a request we cannot answer properly: drop its connection."""
    transport = request.channel.transport if request.channel is not None else None
    # TCP and TLS transports can abort; a plain ITransport only promises loseConnection.
    abort_connection = getattr(transport, "abortConnection", None)
    if abort_connection is not None:
        abort_connection()


#: Response headers an error answer keeps from what was set before it.
_ERROR_KEEPS = (b"x-amz-request-id", b"x-amz-id-2", b"server", b"date", b"retry-after")


def reset_headers(request: S3Request) -> None:
    """Drop the headers a failed handler set (object metadata, ranges, ETag ...)."""
    headers = request.responseHeaders
    for name, _values in list(headers.getAllRawHeaders()):
        if name.lower() not in _ERROR_KEEPS:
            headers.removeHeader(name)


def send_xml(request: S3Request, state: RequestState, payload: bytes, status: int = 200) -> None:
    """Answer an XML document (counted as the request's response bytes)."""
    if gone(request):
        return
    request.setResponseCode(status)
    request.setHeader("content-type", "application/xml")
    request.setHeader("content-length", str(len(payload)))
    request.write(payload)
    state.bytes_out += len(payload)
    finish(request)


def send_empty(request: S3Request, status: int = 200) -> None:
    """Answer with no body (204 carries no Content-Length)."""
    if gone(request):
        return
    request.setResponseCode(status)
    if status != 204:
        request.setHeader("content-length", "0")
    finish(request)


def send_error(request: S3Request, state: RequestState, exc: errors.S3Error) -> None:
    """Answer an S3 error document; once headers went out, abort instead (never a short 200)."""
    if state.error is None:
        state.error = exc
    if gone(request):
        return
    if request.startedWriting:
        # Headers already went out: the only honest signal left is an abort.
        abort(request)
        return
    request.setResponseCode(exc.status, EXTRA_REASONS.get(exc.status))
    reset_headers(request)
    for name, value in exc.headers:
        request.setHeader(name, value)
    if exc.status == 304 or state.method == "HEAD":
        if exc.status != 304:
            request.setHeader("content-length", "0")
        finish(request)
        return
    payload = exc.to_xml(state.request_id, resource_of(state))
    request.setHeader("content-type", "application/xml")
    request.setHeader("content-length", str(len(payload)))
    request.write(payload)
    finish(request)


def send_last_resort(request: S3Request, request_id: str) -> None:
    """Answer a plain 500 when building the real answer failed; abort if even that fails."""
    if gone(request):
        return
    try:
        if request.startedWriting:
            raise RuntimeError("headers already sent")
        payload = errors.InternalError().to_xml(request_id)
        request.setResponseCode(500)
        reset_headers(request)
        request.setHeader("content-type", "application/xml")
        request.setHeader("content-length", str(len(payload)))
        request.write(payload)
        request.finish()
    except Exception:
        abort(request)


def resource_type(raw_path: bytes) -> str:
    """MethodNotAllowed's ResourceType from the path's shape (path-style)."""
    path = raw_path.split(b"?", 1)[0]
    bucket, sep, key = path.lstrip(b"/").partition(b"/")
    if not bucket:
        return "SERVICE"
    return "OBJECT" if sep and key else "BUCKET"


#: Request headers whose values the gateway interprets: they must be valid UTF-8.
_INTERPRETED_HEADER_PREFIXES = ("x-amz-", "if-")


def check_interpreted_input(state: RequestState) -> None:
    """Query values and the x-amz-*, If-* and Range headers must be valid UTF-8.

    They are decoded with ``surrogateescape``; a stray byte would otherwise reach
    the store or a response header.  (``response-*`` overrides are checked, with
    AWS's message, by :func:`~s3orch.s3.metadata.response_header_overrides`.)
    """
    for name, value in state.query:
        if (name + value).isascii():  # the usual case, checked in C
            continue
        if undecodable(name) or (undecodable(value) and not name.startswith("response-")):
            raise errors.InvalidArgument(
                "A query parameter is not valid UTF-8.", ArgumentName=name
            )
    for name, values in state.headers.items():
        if name.startswith(_INTERPRETED_HEADER_PREFIXES) or name == "range":
            if any(not value.isascii() and undecodable(value) for value in values):
                raise errors.InvalidArgument("Header value is not valid UTF-8.", ArgumentName=name)


def undecodable(value: str) -> bool:
    """Did ``surrogateescape`` decoding keep bytes that are not UTF-8?"""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
