"""twisted.web plumbing for an S3 front door.

Twisted's stock ``Request`` buffers the body into ``content`` and only then
renders, and its channel answers ``100 Continue`` as soon as headers arrive.
An S3 gateway needs more: it authenticates and checks limits as soon as the
headers are in (so a refused upload is answered *before* ``100 Continue`` and
its body is never read), and it decodes, hashes, caps and spools the body as
the bytes arrive.  ``S3Channel`` and ``S3Request`` add exactly those hooks and
delegate the S3 decisions to an :class:`EarlyHandler` (the S3 front end).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any, Protocol

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.http_headers import Headers
from twisted.web.resource import IResource

from s3orch.http.dates import http_date
from s3orch.http.eager_write import eager_write, eager_write_sequence
from s3orch.http.hold import AdmissionHold, Postponed
from s3orch.http.lazy_timer import LazyTimer
from s3orch.http.write_deadline import WriteDeadline
from s3orch.observe.logging import new_request_id
from s3orch.s3 import errors

#: Bodies of non-S3 requests (admin JSON, UI forms) are capped at this size.
NON_S3_BODY_LIMIT = 1024 * 1024
#: ... except the dashboard's upload form (S3Site.upload_paths): 512 MiB of file plus its framing.
#: Such a body is spooled to a temporary file by twisted.web, and never parsed into memory.
UPLOAD_BODY_LIMIT = 512 * 1024 * 1024 + 1024 * 1024

#: A Content-Length longer than this many digits is refused (19 digits hold any
#: 64-bit size; Python's int() of a 4,300-digit string raises ValueError).
MAX_CONTENT_LENGTH_DIGITS = 19

_log = Logger(namespace="s3orch.http")
#: Reason phrases Twisted's table lacks (it would say "Unknown Status").
EXTRA_REASONS = {429: b"Too Many Requests"}


def _internal_error_rejection() -> RejectedEarly:
    """The answer when the early handler itself failed: a plain 500 InternalError."""
    return RejectedEarly(
        500, [("Content-Type", "application/xml"), ("Server", "s3orch")], errors.InternalError().to_xml()
    )


def unprepared_rejection(exc: errors.S3Error) -> RejectedEarly:
    """The S3 XML answer to a request refused before the front end saw its headers.

    It gets a fresh request id (nothing else has one yet), sent as ``x-amz-request-id``
    as on every S3 answer.
    """
    request_id = new_request_id()
    return RejectedEarly(
        exc.status,
        [
            ("Content-Type", "application/xml"),
            ("x-amz-request-id", request_id),
            ("x-amz-id-2", request_id),
            ("Server", "s3orch"),
        ],
        exc.to_xml(request_id),
    )


def _too_large_rejection() -> RejectedEarly:
    """A non-S3 body over :data:`NON_S3_BODY_LIMIT`: 413 in JSON (the admin API's error form)."""
    request_id = new_request_id()
    body = json.dumps({"error": "request body too large", "request_id": request_id}).encode() + b"\n"
    return RejectedEarly(
        413, [("Content-Type", "application/json"), ("X-Request-Id", request_id)], body
    )


def _header_bytes(value: str) -> bytes:
    """A header name or value as bytes, whatever it holds (never raises)."""
    return value.encode("latin-1", "replace").replace(b"\r", b" ").replace(b"\n", b" ")


def _ignore_input(*args: object) -> None:
    """Stands in for a channel's input methods once its answer is final."""


class RejectedEarly(Exception):
    """Raised by an EarlyHandler to refuse a request before its body is read."""

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        super().__init__(status)
        self.status = status
        self.headers = headers
        self.body = body


#: Called for requests that are not the early handler's (admin, UI, ops) when their headers
#: are in: a rejection to answer before the body, or None.
OtherGate = Callable[["S3Request"], "RejectedEarly | None"]


class EarlyHandler(Protocol):
    """What the S3 front end provides to the HTTP layer."""

    def wants(self, method: bytes, uri: bytes, host: bytes | None) -> bool:
        """Is this an S3 request (as opposed to /health, /metrics, /admin, /ui)?"""

    def prepare(self, request: S3Request, method: bytes, uri: bytes, length: int | None) -> Any:
        """Headers are in: authenticate and set up the body sink.

        Returns per-request state (kept on ``request.s3``).  May raise
        RejectedEarly when the request carries a body that must not be read.
        """

    def feed(self, request: S3Request, data: bytes) -> None:
        """A chunk of the body arrived; may raise RejectedEarly."""

    def abandoned(self, request: S3Request) -> None:
        """The connection closed before the request was answered."""

    def timed_out(self, request: S3Request | None) -> RejectedEarly:
        """The request's headers or body did not arrive in time: the answer to send before closing."""

    def refused(self, request: S3Request | None, exc: errors.S3Error) -> RejectedEarly:
        """The HTTP layer gives up on ``request`` with ``exc``: release what it holds, the answer to send."""


class S3ResponseHeaders(Headers):
    """Emit ``x-amz-*`` names in lower case, as S3 does.

    Twisted stores header names Title-Cased; SDKs take user metadata names
    verbatim from the header after ``x-amz-meta-``, so ``X-Amz-Meta-Owner``
    would come back to the client as ``Owner`` instead of ``owner``.
    """

    def getAllRawHeaders(self) -> Any:
        for name, values in super().getAllRawHeaders():
            yield (name.lower() if name.startswith(b"X-Amz-") else name), values


class S3Request(server.Request):
    """A request whose body goes through the S3 front end's sink, not ``content``."""

    s3: Any = None
    rejected = False
    #: Set while the channel holds this request for an admission slot (Postponed).
    held = False
    #: What the admission wait gave (a slot, or None when it ran out); set before the re-prepare.
    waited_slot: Any = None
    admission_waited = False
    _process_pending = False
    _early_method: bytes = b""
    _early_uri: bytes = b""
    #: The cap of a non-S3 body (raised for the dashboard's upload route).
    _body_limit = NON_S3_BODY_LIMIT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.responseHeaders = S3ResponseHeaders()

    def _early_handler(self) -> EarlyHandler | None:
        """The front end's hooks, through the channel's site (None once the channel is gone)."""
        channel = self.channel
        return channel.site.early_handler if isinstance(channel, S3Channel) else None

    def gotLength(self, length: int | None) -> None:
        handler = self._early_handler()
        host = self.requestHeaders.getRawHeaders(b"host", [None])[0]
        if handler is not None and handler.wants(self._early_method, self._early_uri, host):
            self.content = io.BytesIO()
            try:
                self.s3 = handler.prepare(self, self._early_method, self._early_uri, length)
            except (RejectedEarly, Postponed):
                raise
            except Exception:
                # The handler released what it took before letting this through
                # (S3Envelope.prepare accounts for itself); a bug here must still
                # be a finished request.
                _log.failure("request preparation failed", component="http")
                raise _internal_error_rejection() from None
        else:
            gate = self.channel.site.other_gate if isinstance(self.channel, S3Channel) else None
            refusal = gate(self) if gate is not None else None
            if refusal is not None:
                raise refusal  # rate limited: answered before the body is read
            uploads = self.channel.site.upload_paths if isinstance(self.channel, S3Channel) else ()
            if self._early_method == b"POST" and self._early_uri.split(b"?", 1)[0] in uploads:
                self._body_limit = UPLOAD_BODY_LIMIT
                self._parsePOSTFormSubmission = False  # the UI reads the form from the spool itself
            if length is not None and length > self._body_limit:
                raise _too_large_rejection()  # before 100 Continue: the body is never sent
            super().gotLength(length)

    def write(self, data: bytes) -> None:
        """The first write sends the status line, headers and first body bytes as one message.

        ``Request.write`` hands the channel the header block and then the body chunk; the
        channel sends each at once when its socket is idle (http/eager_write.py), so without
        this they would be two ``send()``s.  Later writes are single pieces already.
        """
        channel = self.channel
        if self.startedWriting or not isinstance(channel, S3Channel) or channel._corked is not None:
            super().write(data)
            return
        corked: list[bytes] = []
        channel._corked = corked
        try:
            super().write(data)
        finally:
            channel._corked = None
            if corked:
                eager_write_sequence(channel.transport, corked)

    def handleContentChunk(self, data: bytes) -> None:
        if self.rejected:
            return
        handler = self._early_handler()
        if self.s3 is not None and handler is not None:
            handler.feed(self, data)
            return
        content: Any = self.content
        if content.tell() + len(data) > self._body_limit:
            raise _too_large_rejection()
        super().handleContentChunk(data)

    def process(self) -> None:
        if self.rejected:
            return
        if self.held:  # a bodyless request complete while it waits for a slot
            self._process_pending = True
            return
        channel = self.channel
        if self.s3 is None or not isinstance(channel, S3Channel):
            super().process()
            return
        # An S3 request: what renders it was decided with its headers, from the raw path, so
        # Site.process's resource lookup (postpath unquoting, traversal of a leaf root) and its
        # Server header (the front end sets its own) are skipped; the Date header is made once
        # a second.
        site = channel.site
        self.site = site
        self.responseHeaders.setRawHeaders(b"date", [http_date()])
        self.prepath = []
        self.postpath = []
        try:
            self.render(site.resource)
        except BaseException:
            self.processingFailed(Failure())

    def connectionLost(self, reason: Any) -> None:
        if self.s3 is not None and not self.rejected:
            handler = self._early_handler()
            if handler is not None:
                handler.abandoned(self)
        super().connectionLost(reason)


class S3Channel(AdmissionHold, WriteDeadline, http.HTTPChannel):
    """HTTP channel that lets the front end refuse a request before its body.

    It also enforces per-request deadlines that Twisted's idle timeout cannot
    (that one restarts on every byte, so a client dribbling a header byte every
    few seconds would hold the connection forever): ``read_header_timeout``
    from the first byte of a request (or the connection's start) until its
    headers are in, and ``read_timeout`` from the same moment until its body is
    in.  On expiry the client gets ``408 RequestTimeout`` and the connection
    closes.
    """

    site: S3Site  # set by Site.buildProtocol before the connection is made
    #: Twisted's idle timeout, the header and the read deadline (made at connectionMade).
    _idle: LazyTimer
    _header_deadline: LazyTimer
    _read_deadline: LazyTimer
    _reading = False  # a request's headers or body are being received
    _got_bytes = False  # some of that request has arrived
    #: While S3Request.write runs its first write: the pieces to send as one message.
    _corked: list[bytes] | None = None
    #: This end's address, asked of the socket once (every Request asks for it).
    _host: Any = None

    def connectionMade(self) -> None:
        # Before HTTPChannel.connectionMade, which starts the idle timeout (setTimeout below).
        clock = self.site.reactor
        self._idle = LazyTimer(clock, self.timeoutConnection)
        self._header_deadline = LazyTimer(clock, lambda: self._deadline_passed("headers"))
        self._read_deadline = LazyTimer(clock, lambda: self._deadline_passed("body"))
        super().connectionMade()
        self._start_request_deadlines()

    # -- Twisted's idle timeout (TimeoutMixin), on a LazyTimer (http/lazy_timer.py): HTTPChannel
    # -- turns it off for each request and on again once it is answered --------------------

    def setTimeout(self, period: float | None) -> float | None:
        previous: float | None = self.timeOut
        self.timeOut = period  # type: ignore[assignment]  # Twisted says int; the config's seconds are floats
        if period is None:
            self._idle.disarm()
        else:
            self._idle.arm(period)
        return previous

    def resetTimeout(self) -> None:
        if self.timeOut is not None and self._idle.armed:
            self._idle.arm(self.timeOut)

    def dataReceived(self, data: bytes) -> None:
        if data and not self._reading and not self._handlingRequest:
            self._start_request_deadlines()
        if data and self._reading:
            self._got_bytes = True
        super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        # Lines buffered while the previous request was being answered (pipelining)
        # arrive here without going through dataReceived.
        if not self._reading and not self._handlingRequest:
            self._start_request_deadlines()
        if self._reading:
            self._got_bytes = True
        super().lineReceived(line)

    def _start_request_deadlines(self) -> None:
        self._cancel_deadlines()
        self._reading = True
        self._got_bytes = False
        header_timeout = self.site.read_header_timeout
        read_timeout = self.site.read_timeout
        if header_timeout:
            self._header_deadline.arm(header_timeout)
        if read_timeout:
            self._read_deadline.arm(read_timeout)

    def _cancel_deadlines(self, *, headers_only: bool = False) -> None:
        self._header_deadline.disarm()
        if not headers_only:
            self._read_deadline.disarm()
            self._reading = False

    def _deadline_passed(self, phase: str) -> None:
        self._header_deadline.disarm()
        self._read_deadline.disarm()
        self._reading = False
        transport: Any = self.transport
        if transport is None or getattr(transport, "disconnecting", False):
            return
        request: S3Request | None = self.requests[-1] if self.requests else None
        if not self._got_bytes or (request is not None and (request.startedWriting or request.rejected)):
            # Nothing of a request has arrived (or an answer is already under way):
            # there is no one to answer, just close.
            transport.loseConnection()
            return
        handler: EarlyHandler | None = self.site.early_handler
        if handler is not None:
            rejection = handler.timed_out(request)
        else:
            rejection = RejectedEarly(408, [("Content-Type", "text/plain")], b"request timeout\n")
        self.reject(request, rejection)

    def allContentReceived(self) -> None:
        self._cancel_deadlines()
        super().allContentReceived()

    def connectionLost(self, reason: Any = None) -> None:
        self._reading = False
        for timer in (self._idle, self._header_deadline, self._read_deadline):
            timer.stop()
        self._stop_write_watch()
        self._drop_hold()
        super().connectionLost(reason)

    # -- framing errors: Twisted's parser refuses, we answer S3 XML and close ---

    def _respondToBadRequestAndDisconnect(self) -> None:
        """Twisted's parser refused the request's framing: a 400 S3 error, then close.

        Twisted calls this private hook (tests/unit/test_twisted_private.py checks it
        is still there) for a malformed request line or header, a Content-Length that
        is not digits, two framing headers, an unknown Transfer-Encoding, bad chunked
        framing, and too many or too large headers; its own answer is a bare
        plain-text 400 that S3 clients cannot parse.
        """
        too_large = self._receivedHeaderSize > self.totalHeadersSize or self._receivedHeaderCount > self.maxHeaders
        self._refuse_framing(errors.RequestHeaderSectionTooLarge() if too_large else errors.BadRequest())

    def lineLengthExceeded(self, line: bytes) -> None:
        """A request or header line over MAX_LENGTH: LineReceiver would drop the connection unanswered."""
        self._refuse_framing(errors.RequestHeaderSectionTooLarge())

    def _refuse_framing(self, exc: errors.S3Error) -> None:
        request: S3Request | None = self.requests[-1] if self.requests else None
        if request is not None and request.startedWriting:
            # An answer is already on the wire: no second one can follow it.
            self.persistent = False
            self.loseConnection()
            return
        rejection: RejectedEarly | None = None
        handler: EarlyHandler | None = self.site.early_handler
        if request is not None and request.s3 is not None and handler is not None and not request.rejected:
            try:
                rejection = handler.refused(request, exc)
            except Exception:
                _log.failure("refusing a malformed request failed", component="http")
        self.reject(request, rejection or unprepared_rejection(exc))

    def headerReceived(self, line: bytes) -> bool:
        name, sep, value = line.partition(b":")
        if len(value.translate(None, b"\x00\r\n")) != len(value):
            # RFC 9110 5.5 forbids NUL, CR and LF in a value; older Twisteds in the pinned range pass them.
            self._respondToBadRequestAndDisconnect()
            return False
        if sep and name.strip().lower() == b"content-length" and len(value.strip()) > MAX_CONTENT_LENGTH_DIGITS:
            # Twisted would int() it: a 5,000-digit value raises out of dataReceived.
            self._respondToBadRequestAndDisconnect()
            return False
        result: bool = super().headerReceived(line)
        return result

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Any) -> None:
        """The status line and header block as one bytes write.

        Twisted hands the transport a sequence of four pieces per header, each one
        type-checked and queued separately; one joined block is what goes out anyway.
        ``headers`` is a Headers (S3ResponseHeaders lower-cases x-amz-*), whose values
        Twisted has already sanitized of CR/LF.
        """
        if not isinstance(headers, Headers):
            super().writeHeaders(version, code, reason, headers)
            return
        lines = [version + b" " + code + b" " + reason]
        for name, values in headers.getAllRawHeaders():
            for value in values:
                lines.append(name + b": " + value)
        lines.append(b"\r\n")
        self._send(b"\r\n".join(lines))

    # -- response bytes: sent in this reactor turn when nothing is queued (http/eager_write.py) --

    def write(self, data: bytes) -> None:
        """Response bytes (``Request.write``): sent at once when the socket is idle."""
        self._send(data)

    def writeSequence(self, iovec: Any) -> None:
        """A chunk-framed piece of a response: joined and sent at once when the socket is idle."""
        if self._corked is not None:
            self._corked.extend(iovec)
        else:
            eager_write_sequence(self.transport, iovec)

    def _send(self, data: bytes) -> None:
        if self._corked is not None:
            self._corked.append(data)
        else:
            eager_write(self.transport, data)

    def _send100Continue(self) -> None:
        """The client waits for this before its body: no reason to wait a reactor turn."""
        self._send(b"HTTP/1.1 100 Continue\r\n\r\n")

    def getHost(self) -> Any:
        """The socket's local address; it cannot change, so ``getsockname()`` runs once."""
        host = self._host
        if host is None:
            host = self._host = self.transport.getHost()
        return host

    # -- write deadline (http/write_deadline.py): a response must make progress ---

    def pauseProducing(self) -> None:
        """The transport's buffer is full: the client must read within write_timeout."""
        super().pauseProducing()
        self._write_stalled()

    def resumeProducing(self) -> None:
        """The client read enough to drain the buffer: that is progress."""
        self._write_flowing()
        super().resumeProducing()

    def allHeadersReceived(self) -> None:
        self._cancel_deadlines(headers_only=True)
        req = self.requests[-1]
        req.parseCookies()
        self.persistent = self.checkPersistence(req, self._version)
        req._early_method = self._command
        req._early_uri = self._path
        self._prepare(req, self.length, self._version)

    def _prepare(self, req: S3Request, length: int | None, version: bytes) -> bool:
        """The request's headers are in (or its admission wait is over): decide; True when it
        goes on (100 Continue sent if asked), False when refused or held."""
        try:
            req.gotLength(length)
        except RejectedEarly as rejection:
            self.reject(req, rejection)
            return False
        except Postponed as postponed:
            self._hold_request(req, postponed.ready)
            return False
        expect = req.requestHeaders.getRawHeaders(b"expect")
        if expect and expect[0].lower() == b"100-continue" and version == b"HTTP/1.1":
            self._send100Continue()
        return True

    def rawDataReceived(self, data: bytes) -> None:
        if self._hold is not None:
            self._keep(data)
            return
        try:
            super().rawDataReceived(data)
        except RejectedEarly as rejection:
            if self.requests:
                self.reject(self.requests[-1], rejection)

    def reject(self, request: S3Request | None, rejection: RejectedEarly) -> None:
        """Answer now and close: the body (if any) is never read or stored.

        Whatever happens while answering, the connection is closed, and it is
        aborted if the client does not take the answer within write_timeout.
        """
        if request is not None:
            if request.rejected:
                return
            request.rejected = True
        self._drop_hold()
        transport: Any = self.transport
        self.persistent = False
        self._cancel_deadlines()
        # Ignore whatever else the client sends; close once the answer is flushed.
        # Shadowing the methods on the instance is how Twisted itself drops input after the last request.
        for name in ("dataReceived", "lineReceived", "rawDataReceived"):
            setattr(self, name, _ignore_input)
        if transport is None:
            return
        try:
            reason = http.RESPONSES.get(rejection.status) or EXTRA_REASONS.get(rejection.status, b"Error")
            lines = [b"HTTP/1.1 %d %s" % (rejection.status, reason)]
            for name, value in rejection.headers:
                lines.append(_header_bytes(name) + b": " + _header_bytes(value))
            lines.append(b"Content-Length: %d" % len(rejection.body))
            lines.append(b"Connection: close")
            lines.append(b"Date: " + http_date())
            transport.write(b"\r\n".join(lines) + b"\r\n\r\n" + rejection.body)
        except Exception:
            _log.failure("sending an early rejection failed", component="http")
            transport.abortConnection()
            return
        transport.loseConnection()
        timeout = self.site.write_timeout
        if timeout:
            # A client that never reads its answer must not hold the connection.
            self._watch_write_now(timeout)


class S3Site(server.Site):
    """Site wiring S3Channel/S3Request and the front end's early hooks."""

    protocol = S3Channel  # type: ignore[assignment]  # Twisted declares it as its factory function
    requestFactory = S3Request
    displayTracebacks = False

    def __init__(
        self,
        resource: IResource,
        early_handler: EarlyHandler | None,
        timeout: float = 120.0,
        *,
        read_header_timeout: float | None = None,
        read_timeout: float | None = None,
        write_timeout: float | None = None,
        reactor: Any = None,
        other_gate: OtherGate | None = None,
    ) -> None:
        super().__init__(resource, timeout=timeout, reactor=reactor)
        self.early_handler = early_handler
        #: Checks requests that are not S3 ones (the admin API's rate limit) at header time.
        self.other_gate = other_gate
        #: Seconds from a request's first byte to its last header / its last body byte (None: no limit).
        self.read_header_timeout = read_header_timeout
        self.read_timeout = read_timeout
        #: Seconds a response may go without the client accepting a byte (None: no limit).
        self.write_timeout = write_timeout
        #: Paths whose POST body may reach UPLOAD_BODY_LIMIT (the dashboard's upload route).
        self.upload_paths: tuple[bytes, ...] = ()

    def log(self, request: Any) -> None:
        """Access logging is the audit log's job; Twisted's combined log stays quiet."""
