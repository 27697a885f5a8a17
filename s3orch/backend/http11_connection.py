"""One keep-alive HTTP/1.1 connection to a backend, parsed by llhttp (``httptools``).

Twisted's pure-Python client (``twisted.web._newclient``) took about a third of the
reactor on small GET/HEAD/PUT requests; this is the same exchange with the parsing in C
and fewer layers.  The semantics the backend client relies on are Twisted's:

* one request at a time; the response ``Deferred`` fires once the request is written
  and the headers arrived (or the whole response arrived while still uploading);
* after the headers the socket is paused until :meth:`LeanResponse.deliverBody`, so an
  unread body is never buffered beyond one read; the body protocol's transport pauses,
  resumes and stops the socket (backpressure), and is detached once the body ended;
* bodies are never decoded (no gzip), redirects are the caller's business;
* a connection is offered back for reuse only when the response was read to its end,
  the request fully sent and the server keeps the connection alive; a body abandoned
  midway (``stopProducing``) closes it, never drains it;
* failures are Twisted's: ``ResponseNeverReceived`` / ``RequestTransmissionFailed`` /
  ``RequestGenerationFailed`` for the request, ``ResponseFailed`` or
  ``PotentialDataLoss`` (body read to EOF, no length) for the body.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from httptools import HttpParserError, HttpResponseParser
from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web._newclient import RequestNotSent, WrongBodyLength
from twisted.web.client import (
    RequestGenerationFailed,
    RequestTransmissionFailed,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer

from s3orch.backend.http11_response import LeanResponse, done_failure
from s3orch.http.eager_write import eager_write, eager_write_sequence
from s3orch.http.socket_buffers import set_read_size
from s3orch.http.write_deadline import pending_write_bytes

__all__ = ["HTTP11Connection", "header_block"]

_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_TARGET = re.compile(rb"[\x21-\x7e]+")
#: Methods that carry an (empty) body by convention: Twisted sends ``Content-Length: 0``.
_BODY_METHODS = frozenset((b"PUT", b"POST", b"PATCH"))
#: A request's head and the body bytes its producer writes at once are sent together up to
#: this size (Twisted's write high-water mark); past it the transport buffers and pauses.
_GATHER_LIMIT = 64 * 1024


class HTTP11Connection(Protocol):
    """One persistent connection: :meth:`request` sends one request at a time.

    ``on_idle`` is called when the connection may carry another request (the pool
    takes it back); ``on_lost`` when the socket is gone.
    """

    _log = Logger()
    #: A TCP or TLS transport (zope interfaces do not say what the reactor gives).
    transport: Any

    def __init__(self) -> None:
        self.on_idle: Callable[[HTTP11Connection], None] = lambda connection: None
        self.on_lost: Callable[[HTTP11Connection], None] = lambda connection: None
        self.busy = False
        self.lost = False
        self._deferred: Deferred[LeanResponse] | None = None
        self._head = False
        self._body: Any = None
        self._writing = False
        self._response: LeanResponse | None = None
        self._response_given = False
        self._complete = False
        self._broken = False
        self._abandoned = False
        self.received = 0
        self._parser: Any = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._phrase = b""
        self._tail = b""
        self._eof_body = False
        self._await_delivery = False
        self._consumer_paused = False
        self._reading_paused = False
        self._closing = False
        #: Body bytes of the current response parsed so far, and whether the rest of its body
        #: is lent (the socket read by the zero-copy relay, not by us).
        self._body_received = 0
        self._lent = False
        #: While ``request`` sends: the head and what the body producer wrote at once.
        self._gathered: list[bytes] | None = None
        self._gathered_size = 0

    @property
    def reusable(self) -> bool:
        """Idle and still fit to carry a request."""
        return not (self.busy or self.lost or self._broken or self._closing)

    # --- transport events ---

    def connectionMade(self) -> None:
        if ITCPTransport.providedBy(self.transport):
            self.transport.setTcpNoDelay(True)
        set_read_size(self.transport)  # object bodies: fewer, larger recv()s (s3orch.http.socket_buffers)

    def dataReceived(self, data: bytes) -> None:
        if not self.busy:
            self._broken = True  # unsolicited bytes: the exchange is out of step
            self._abort()
            return
        self.received += len(data)
        if self._head:
            self._tail = (self._tail + data)[-4:]
        try:
            self._parser.feed_data(data)
        except HttpParserError as exc:
            if not self._complete:
                self._protocol_error(exc)
                return
            # The answer was whole; what stopped the parser came after it: a HEAD's end
            # (see on_headers_complete: clean only if the bytes ended with the headers)
            # or bytes nobody asked for.
            if not (self._head and self._tail == b"\r\n\r\n"):
                self._broken = True
        self._after_feed()

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        self.lost = True
        self.on_lost(self)
        if not self.busy:
            return
        self._broken = True
        deferred, self._deferred = self._deferred, None
        pending = deferred is not None and not deferred.called
        if self._writing:
            self._stop_body()
            if pending:
                assert deferred is not None
                deferred.errback(Failure(RequestTransmissionFailed([reason])))
            self._end_exchange()
            return
        response = self._response
        if response is None or not self._response_given:
            if pending:
                assert deferred is not None
                deferred.errback(Failure(ResponseNeverReceived([reason])))
            self._end_exchange()
            return
        if not self._complete:
            self._complete = True
            if self._abandoned:
                end = Failure(ResponseFailed([reason]))
            elif self._eof_body and reason.check(ConnectionDone) is not None:
                end = Failure(PotentialDataLoss())
            else:
                end = Failure(ResponseFailed([reason, Failure(PotentialDataLoss())]))
            response._finish(end)
        self._end_exchange()

    # --- issuing a request ---

    def request(
        self, method: bytes, target: bytes, header_block: bytes, body: IBodyProducer | None
    ) -> Deferred[LeanResponse]:
        """Send one request; the Deferred fires with the response once its headers arrived.

        ``header_block`` is the request's ``Name: value\r\n`` lines, Host included
        (:func:`header_block` of a ``Headers``, or a backend signer's own).  Cancelling the
        Deferred aborts the connection (a request half-sent or half-answered cannot be
        taken back).
        """
        if self.busy or self.lost or self._broken:
            return _failed(RequestNotSent())
        if not _TOKEN.fullmatch(method) or not _TARGET.fullmatch(target):
            return _failed(RequestGenerationFailed([Failure(ValueError(f"bad request line {method!r} {target!r}"))]))
        self.busy = True
        self._head = method == b"HEAD"
        self.received = 0
        self._complete = False
        self._response = None
        self._response_given = False
        self._abandoned = False
        self._body_received = 0
        self._lent = False
        self._headers = []
        self._phrase = b""
        self._tail = b""
        self._parser = HttpResponseParser(self)
        deferred: Deferred[LeanResponse] = Deferred(self._cancel)
        self._deferred = deferred
        lines = [method, b" ", target, b" HTTP/1.1\r\n", header_block]
        chunked = False
        if body is None:
            if method in _BODY_METHODS:
                lines.append(b"Content-Length: 0\r\n")
        elif body.length is UNKNOWN_LENGTH:
            chunked = True
            lines.append(b"Transfer-Encoding: chunked\r\n")
        else:
            lines.append(b"Content-Length: %d\r\n" % body.length)
        lines.append(b"\r\n")
        head = b"".join(lines)
        if body is None:
            eager_write(self.transport, head)
            return deferred
        # A small body is written by its producer at once: head and body leave in one send().
        self._gathered = [head]
        self._gathered_size = len(head)
        try:
            self._send_body(body, chunked)
        finally:
            gathered, self._gathered = self._gathered, None
        if gathered is not None and not self._broken and not self.lost:
            eager_write_sequence(self.transport, gathered)
        return deferred

    def _write(self, data: bytes) -> None:
        """Request bytes, in order: gathered while ``request`` runs, else sent at once if idle."""
        if self._gathered is None:
            eager_write(self.transport, data)
        else:
            self._write_sequence((data,))

    def _write_sequence(self, pieces: tuple[bytes, ...]) -> None:
        gathered = self._gathered
        if gathered is None:
            eager_write_sequence(self.transport, pieces)
            return
        gathered.extend(pieces)
        self._gathered_size += sum(map(len, pieces))
        if self._gathered_size > _GATHER_LIMIT:
            # From here on the transport takes the writes, and pauses the producer past its
            # high-water mark as it always did.
            self._gathered = None
            eager_write_sequence(self.transport, gathered)

    def _send_body(self, body: IBodyProducer, chunked: bool) -> None:
        self._body = body
        self._writing = True
        consumer = _BodyConsumer(self, None if chunked else body.length, chunked)
        self.transport.registerProducer(body, True)
        try:
            started = body.startProducing(consumer)
        except Exception:
            self._body_failed(Failure())
            return
        started.addCallbacks(lambda _: self._body_written(consumer), self._body_failed)

    def _body_written(self, consumer: _BodyConsumer) -> None:
        if not self._writing:
            return
        if consumer.length is not None and consumer.sent != consumer.length:
            self._body_failed(Failure(WrongBodyLength("body producer wrote fewer bytes than its length")))
            return
        self._writing = False
        self._body = None
        self.transport.unregisterProducer()
        if consumer.chunked:
            self._write(b"0\r\n\r\n")
        self._after_feed()

    def _body_failed(self, reason: Failure) -> None:
        if not self._writing:
            return
        self._stop_body()
        deferred, self._deferred = self._deferred, None
        self._broken = True
        self._abort()
        if deferred is not None and not deferred.called:
            deferred.errback(Failure(RequestGenerationFailed([reason])))

    def _stop_body(self) -> None:
        """Stop the upload: the connection is going away."""
        if not self._writing:
            return
        self._writing = False
        body, self._body = self._body, None
        try:
            self.transport.unregisterProducer()
        except Exception:  # noqa: BLE001 - the transport may have dropped it already
            pass
        try:
            body.stopProducing()
        except Exception:  # noqa: BLE001 - a producer may refuse a second stop
            pass

    def _cancel(self, deferred: Deferred[LeanResponse]) -> None:
        """The caller gave up: abort; the Deferred then fails with CancelledError."""
        self._deferred = None
        self._stop_body()
        self._broken = True
        self._abort()

    # --- llhttp callbacks ---

    def on_message_begin(self) -> None:
        if self._complete:
            raise _Unsolicited()

    def on_status(self, phrase: bytes) -> None:
        self._phrase += phrase

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        code = self._parser.get_status_code()
        if code < 200:  # 100 Continue and friends: the real answer follows
            self._headers = []
            self._phrase = b""
            return
        raw = self._headers
        by_name: dict[str, str] = {}
        length: Any = UNKNOWN_LENGTH
        chunked = False
        for name, value in raw:
            lower = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            prior = by_name.get(lower)
            by_name[lower] = text if prior is None else f"{prior}, {text}"
            if lower == "content-length":
                length = int(value)
            elif lower == "transfer-encoding" and "chunked" in text.lower():
                chunked = True
            elif lower == "connection" and "close" in text.lower():
                self._broken = True
        if not self._parser.should_keep_alive():
            self._broken = True
        no_body = self._head or code in (204, 304)
        if no_body:
            length = 0
        elif chunked:
            length = UNKNOWN_LENGTH
        self._eof_body = not no_body and not chunked and length is UNKNOWN_LENGTH
        response = LeanResponse(code, self._phrase, raw, length, self, by_name=by_name)
        self._response = response
        self._headers = []
        if self._head:
            self._complete = True
            raise _HeadComplete()  # llhttp would wait for Content-Length bytes a HEAD never gets
        if length != 0:
            # The socket pauses at the end of this read (_after_feed) unless the body came
            # whole with the headers or a reader took it meanwhile: no pause/resume pair of
            # epoll calls for a small answer.
            self._await_delivery = True

    def on_body(self, data: bytes) -> None:
        if self._abandoned:
            return
        self._body_received += len(data)
        response = self._response
        if response is not None:
            response._data(data)

    def on_message_complete(self) -> None:
        if self._response is not None and not self._abandoned:  # not the end of a 1xx
            self._complete = True

    # --- progress ---

    def _after_feed(self) -> None:
        """Act on what the last read (or the end of the upload) made possible, outside the parser."""
        if not self.busy:
            return
        response = self._response
        if self._complete and not self._abandoned:
            if self._writing:
                self._stop_body()
                self._broken = True
            self._end_exchange()
            self._give_response()
            if response is not None:
                response._finish(done_failure())
        else:
            if response is not None and not self._writing:
                self._give_response()
            self._set_reading()  # a body still to come that nobody reads yet: pause the socket

    def _give_response(self) -> None:
        if self._response_given or self._response is None:
            return
        self._response_given = True
        deferred, self._deferred = self._deferred, None
        if deferred is not None and not deferred.called:
            deferred.callback(self._response)

    def _end_exchange(self) -> None:
        """The exchange is over: offer the connection back, or close it."""
        if not self.busy:
            return
        self.busy = False
        self._parser = None
        self._await_delivery = False
        self._consumer_paused = False
        self._lent = False
        if self._broken or self.lost:
            self._broken = True
            self._close()
            return
        self._set_reading()
        try:
            self.on_idle(self)
        except Exception:
            self._log.failure("keep-alive bookkeeping failed; closing the connection")
            self._broken = True
            self._close()

    def _protocol_error(self, exc: Exception) -> None:
        self._broken = True
        failure = Failure(exc)
        self._stop_body()
        deferred = self._deferred
        response = self._response
        self._abort()
        if response is None or not self._response_given:
            self._deferred = None
            if deferred is not None and not deferred.called:
                deferred.errback(Failure(ResponseNeverReceived([failure])))
        elif not self._complete:
            self._complete = True
            response._finish(Failure(ResponseFailed([failure])))
        self._end_exchange()

    def close(self) -> None:
        """Close the connection once written out (the pool's eviction and shutdown too)."""
        if not self.lost and not self._closing:
            self._closing = True
            self.transport.loseConnection()

    _close = close

    def _abort(self) -> None:
        if not self.lost and self.transport is not None:
            self._closing = True
            self.transport.abortConnection()

    # --- the body protocol's producer calls (through _BodyTransport) ---

    def delivery_started(self) -> None:
        self._await_delivery = False
        self._set_reading()

    def consumer_paused(self, paused: bool) -> None:
        self._consumer_paused = paused
        self._set_reading()

    def abandon_body(self) -> None:
        """The body's reader stopped: abort (a stalled server might never let a graceful
        close finish), never drain; the body ends in ``ResponseFailed`` at connection loss."""
        if not self.busy or self._complete:
            return
        self._abandoned = True
        self._broken = True
        self._abort()

    # --- lending the body's socket (s3orch.backend.interface.SpliceSource) ---

    def body_fd(self) -> int | None:
        """The socket's fd if the rest of the current body may be read around the parser:
        plain TCP, a Content-Length body under way, nothing left to send; else None."""
        response = self._response
        transport = self.transport
        if (
            not self.busy
            or self._complete
            or self._abandoned
            or self._lent
            or self._writing
            or self.lost
            or self._closing
            or response is None
            or not self._response_given
            or not isinstance(response.length, int)
            or not isinstance(transport, tcp.Connection)
            or transport.TLS
            or transport.disconnecting
            or pending_write_bytes(transport) != 0
        ):
            return None
        return int(transport.fileno())

    def body_left(self) -> int:
        """Body bytes the server has still to send."""
        response = self._response
        length = response.length if response is not None else 0
        return max(0, int(length) - self._body_received) if isinstance(length, int) else 0

    def lend_body(self) -> None:
        """Stop reading the socket: the rest of the body is read by someone else."""
        self._lent = True
        self._set_reading()

    def lent_body_done(self) -> None:
        """The borrower read exactly the rest of the body: the answer is whole, as if
        parsed (the parser, which still waits for those bytes, is dropped with the exchange)."""
        if not self._lent or not self.busy or self._complete:
            return
        self._body_received += self.body_left()
        self._complete = True
        self._after_feed()

    def _set_reading(self) -> None:
        paused = self.busy and (self._await_delivery or self._consumer_paused or self._lent)
        if paused != self._reading_paused and not self.lost and not self._closing:
            self._reading_paused = paused
            if paused:
                self.transport.pauseProducing()
            else:
                self.transport.resumeProducing()


def header_block(headers: Headers) -> bytes:
    """A ``Headers`` as request header lines (``Headers`` already folded line breaks in values)."""
    lines: list[bytes] = []
    for name, values in headers.getAllRawHeaders():
        for value in values:
            lines += (name, b": ", value, b"\r\n")
    return b"".join(lines)


class _HeadComplete(Exception):
    """Raised from llhttp's headers callback to end a HEAD answer (httptools cannot skip a body)."""


class _Unsolicited(Exception):
    """A second answer began after the one asked for: the connection is out of step."""


class _BodyConsumer:
    """What the request body producer writes into: length-checked, chunk-framed if unknown."""

    __slots__ = ("_connection", "length", "chunked", "sent")

    def __init__(self, connection: HTTP11Connection, length: int | None, chunked: bool) -> None:
        self._connection = connection
        self.length = length
        self.chunked = chunked
        self.sent = 0

    def write(self, data: bytes) -> None:
        connection = self._connection
        if not connection._writing or not data:
            return
        self.sent += len(data)
        if self.length is not None and self.sent > self.length:
            connection._body_failed(Failure(WrongBodyLength("body producer wrote more bytes than its length")))
            return
        if self.chunked:
            connection._write_sequence((b"%x\r\n" % len(data), data, b"\r\n"))
        else:
            connection._write(data)

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass


def _failed(exc: Exception) -> Deferred[LeanResponse]:
    deferred: Deferred[LeanResponse] = Deferred()
    deferred.errback(Failure(exc))
    return deferred

