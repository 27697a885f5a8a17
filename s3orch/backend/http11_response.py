"""The response side of :mod:`s3orch.backend.http11_connection`: the ``IResponse`` a
request's Deferred fires with, and the transport its body protocol pauses and stops.

The body transport is detached when the body ends, so a late ``pauseProducing`` or
``stopProducing`` from the reader never reaches a connection that has gone back to the
pool and carries someone else's request.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.error import ConnectionAborted
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse
from zope.interface import implementer

__all__ = ["BodyReader", "BodyTransport", "LeanResponse", "done_failure"]

_VERSION = (b"HTTP", 1, 1)


class BodyReader(Protocol):
    """What the body transport drives: the connection reading this response."""

    def consumer_paused(self, paused: bool) -> None: ...

    def abandon_body(self) -> None: ...

    def delivery_started(self) -> None: ...

    def body_fd(self) -> int | None: ...

    def body_left(self) -> int: ...

    def lend_body(self) -> None: ...

    def lent_body_done(self) -> None: ...


def done_failure() -> Failure:
    return Failure(ResponseDone("Response body fully received"))


class BodyTransport:
    """The transport a body protocol sees: pause/resume/stop reach the socket only
    while this response is the connection's current one (``detach`` afterwards)."""

    __slots__ = ("connection", "stopped")

    def __init__(self, connection: BodyReader) -> None:
        self.connection: BodyReader | None = connection
        self.stopped = False

    def detach(self) -> None:
        self.connection = None

    def pauseProducing(self) -> None:
        if self.connection is not None:
            self.connection.consumer_paused(True)

    def resumeProducing(self) -> None:
        if self.connection is not None:
            self.connection.consumer_paused(False)

    def stopProducing(self) -> None:
        self.stopped = True
        connection, self.connection = self.connection, None
        if connection is not None:
            connection.abandon_body()

    def loseConnection(self) -> None:
        self.stopProducing()


@implementer(IResponse)
class LeanResponse:
    """An ``IResponse``: status and headers now, the body through :meth:`deliverBody`.

    Body bytes that arrive before a protocol is given are kept (at most one read: the
    socket is paused meanwhile); the end of the body is remembered likewise.
    """

    version = _VERSION
    previousResponse = None

    def __init__(
        self,
        code: int,
        phrase: bytes,
        raw_headers: list[tuple[bytes, bytes]],
        length: Any,
        reader: BodyReader,
        request: Any = None,
        *,
        by_name: dict[str, str],
    ) -> None:
        self.code = code
        self.phrase = phrase
        #: The headers as received, in order; ``headers`` (Twisted's form) is built from
        #: them only if someone asks: the S3 client reads :attr:`by_name`.
        self._raw_headers = raw_headers
        self._headers: Headers | None = None
        #: Lower-case name -> value (repeated headers joined by ", "), decoded as latin-1:
        #: :func:`s3orch.backend.s3_responses.lower_headers` of this response, made once.
        self.by_name = by_name
        self.length = length
        self.request = request
        self._protocol: Any = None
        self._buffer: list[bytes] | None = []
        self._end: Failure | None = None
        self._transport = BodyTransport(reader)

    @property
    def headers(self) -> Headers:
        headers = self._headers
        if headers is None:
            headers = self._headers = Headers()
            for name, value in self._raw_headers:
                headers.addRawHeader(name, value)
        return headers

    def setPreviousResponse(self, response: Any) -> None:
        self.previousResponse = response

    def deliverBody(self, protocol: Any) -> None:
        if self._protocol is not None or self._buffer is None:
            raise RuntimeError("response body already delivered")
        transport = self._transport
        self._protocol = protocol
        protocol.makeConnection(transport)
        buffered, self._buffer = self._buffer, None
        for data in buffered:
            if transport.stopped:
                break
            protocol.dataReceived(data)
        if self._end is not None:
            end, self._end = self._end, None
            self._finished(end)
        elif transport.connection is not None:
            transport.connection.delivery_started()

    def body_socket(self) -> BodyReader | None:
        """The connection, while the rest of this body may be read straight from its socket
        (:meth:`BodyReader.body_fd`): the body is being delivered, nothing is held back."""
        connection = self._transport.connection
        if connection is None or self._protocol is None or self._buffer is not None or self._transport.stopped:
            return None
        return connection if connection.body_fd() is not None else None

    def _data(self, data: bytes) -> None:
        if self._buffer is not None:
            self._buffer.append(data)
        elif self._protocol is not None:
            self._protocol.dataReceived(data)

    def _finish(self, reason: Failure) -> None:
        self._transport.detach()
        if self._buffer is not None:
            self._end = reason
        else:
            self._finished(reason)

    def _finished(self, reason: Failure) -> None:
        if self._transport.stopped and reason.check(ResponseDone) is not None:
            # The reader stopped before the end: it did not get the whole body.
            reason = Failure(ResponseFailed([Failure(ConnectionAborted())]))
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol.connectionLost(reason)
