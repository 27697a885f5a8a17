"""Holding a request back while it waits for an admission slot (``server.admission_wait``).

The S3 front end decides when a request's headers are in.  When its admission pool is full
and a wait is configured, ``prepare`` raises :class:`Postponed`; the channel
(:class:`AdmissionHold`, mixed into :class:`s3orch.http.site.S3Channel`) then sends no
``100 Continue``, keeps the body bytes that still arrive (up to :data:`HOLD_BUFFER_LIMIT`,
then it stops reading the socket: TCP backpressure), and does not process a bodyless
request; when the wait ends it prepares the request again and lets it, and the kept bytes,
through.  A refusal (a read deadline) or the client going away cancels the wait, which
takes the request out of the admission queue.  While the socket is not read (over the
limit) a disconnect is only seen when the wait ends: the wait is short by design.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred

#: Bytes a held request (:class:`Postponed`) may buffer before the connection stops reading.
HOLD_BUFFER_LIMIT = 64 * 1024


class Postponed(Exception):
    """Raised by an EarlyHandler's ``prepare``: decide when ``ready`` fires (a slot frees).

    The channel holds the request meanwhile (no ``100 Continue``, body bytes buffered up
    to :data:`HOLD_BUFFER_LIMIT`, then it stops reading), then calls ``prepare`` again with
    what ``ready`` gave on ``request.waited_slot``.  The client going away, or the request
    being refused (a deadline), cancels ``ready``.
    """

    def __init__(self, ready: Deferred[Any]) -> None:
        super().__init__("postponed")
        self.ready = ready


class _Hold:
    """A request held for an admission slot: what resumes it, and its body bytes so far."""

    def __init__(self, request: Any, ready: Deferred[Any], length: int | None, version: bytes) -> None:
        self.request = request
        self.ready = ready
        self.length = length
        self.version = version
        self.data: list[bytes] = []
        self.size = 0
        self.paused = False


class AdmissionHold:
    """The channel side of an admission wait (a mixin of ``S3Channel``)."""

    _hold: _Hold | None = None
    # HTTPChannel's (the class this is mixed into)
    transport: Any
    _networkProducer: Any
    length: int | None
    _version: bytes

    def _hold_request(self, req: Any, ready: Deferred[Any]) -> None:
        req.held = True
        self._hold = _Hold(req, ready, self.length, self._version)
        ready.addCallbacks(self._slot_ready, self._wait_cancelled, callbackArgs=(self._hold,))

    def _wait_cancelled(self, failure: Any) -> None:
        failure.trap(CancelledError)

    def _slot_ready(self, slot: Any, hold: _Hold) -> None:
        """The wait is over (``slot`` None: it ran out): prepare the request again, then let
        its body, and the bytes kept meanwhile, through."""
        req = hold.request
        if self._hold is not hold or self.transport is None:  # gone in the meantime
            if slot is not None:
                slot.release()
            return
        self._hold = None
        req.held = False
        req.admission_waited, req.waited_slot = True, slot
        channel: Any = self  # an S3Channel
        try:
            if not channel._prepare(req, hold.length, hold.version):
                return  # refused (and answered)
        finally:
            req.waited_slot = None
        if hold.paused:
            self._networkProducer.resumeProducing()
        if req._process_pending:
            req._process_pending = False
            req.process()
        if hold.data:
            channel.rawDataReceived(b"".join(hold.data))

    def _keep(self, data: bytes) -> None:
        """Body bytes of the held request: kept, not parsed; past the limit, stop reading."""
        hold = self._hold
        assert hold is not None
        hold.data.append(data)
        hold.size += len(data)
        if hold.size > HOLD_BUFFER_LIMIT and not hold.paused:
            hold.paused = True
            self._networkProducer.pauseProducing()

    def _drop_hold(self) -> None:
        """A held request is refused or its client went away: leave the queue."""
        hold, self._hold = self._hold, None
        if hold is not None:
            hold.request.held = False
            hold.ready.cancel()

