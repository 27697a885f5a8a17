"""The core's rules for a stream-through write (:class:`~s3orch.stream_payload.StreamPayload`).

* :func:`stream_allowed`: whether a large PutObject may stream at all.  Not when the bytes
  are needed twice or transformed first (encryption and compression read the whole
  plaintext before the first stored byte; synchronous fan-out sends several copies), and
  not to a backend that must sign the payload's hash when the client did not claim one:
  ``unsigned_payload`` off (the default over http) means "sign the SHA-256", which a
  stream knows only at its end.
* :func:`send_once`: a backend write of a stream fails over to another backend only while
  none of its bytes were sent; afterwards the write fails (503, the reservation undone by
  the failover loop), and a stream that failed on the client's side (a digest mismatch
  found at its end, the client gone) answers that failure, not the backend's.  A client
  that stalls mid-body longer than ``server.backend_timeout`` (the backend request's stall
  watchdog) gets 408 RequestTimeout: while streaming, that is its body deadline too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from s3orch.backend.interface import BackendError
from s3orch.core.fleet import BackendFleet
from s3orch.observe.metrics import STREAM_THROUGH_WRITES
from s3orch.payload import Payload
from s3orch.s3 import errors
from s3orch.stream_payload import StreamPayload

T = TypeVar("T")


class _Levels(Protocol):
    def levels(self) -> tuple[int, int] | None: ...


class _Settings(Protocol):
    """What :func:`stream_allowed` reads of the object service."""

    @property
    def fleet(self) -> BackendFleet: ...

    @property
    def envelope(self) -> Any: ...

    @property
    def compressor(self) -> object | None: ...

    @property
    def fanout(self) -> _Levels | None: ...


def stream_allowed(objects: _Settings, has_hex_claim: bool) -> bool:
    """May a PutObject body stream through now (see the module docstring)?"""
    envelope = objects.envelope
    if envelope is not None and envelope.enabled:
        return False
    if objects.compressor is not None:
        return False
    fanout = objects.fanout
    if fanout is not None and fanout.levels() is not None:
        return False
    if has_hex_claim:
        return True
    fleet = objects.fleet
    for name in fleet.names:
        config = fleet.config(name)
        if config is not None and not config.effective_unsigned_payload:
            return False
    return True


async def send_once(payload: Payload, send: Callable[[], Awaitable[T]]) -> T:
    """``send()`` the payload to one backend, with the stream rules above (a spool: as is)."""
    if not isinstance(payload, StreamPayload):
        return await send()
    try:
        result = await send()
    except BackendError as exc:
        if payload.sent >= payload.length:
            # The backend had every byte and refused them (it checks the client's Content-MD5
            # and SHA-256 claims too): the client's own verdict, due this reactor turn, says why.
            await payload.verdict()
        if isinstance(payload.error, errors.S3Error):
            STREAM_THROUGH_WRITES.labels("client_error").inc()
            raise payload.error from None
        if exc.timed_out and payload.sent and payload.starved:
            # The backend waited for bytes the client did not send: the client's stall.
            STREAM_THROUGH_WRITES.labels("client_error").inc()
            raise errors.RequestReadTimeout() from exc
        if payload.sent or payload.error is not None:
            STREAM_THROUGH_WRITES.labels("backend_error").inc()
            raise errors.ServiceUnavailable(
                "The storage backend failed while the body was being sent; please retry."
            ) from exc
        raise  # nothing was sent: the next backend may take the stream
    except errors.S3Error:
        STREAM_THROUGH_WRITES.labels("client_error").inc()
        raise
    except Exception:
        if isinstance(payload.error, errors.S3Error):
            STREAM_THROUGH_WRITES.labels("client_error").inc()
            raise payload.error from None
        STREAM_THROUGH_WRITES.labels("backend_error").inc()
        raise
    await payload.verdict()  # the backend counted the bytes; the client's digests are checked at the end
    if payload.error is not None or not payload.ended:
        STREAM_THROUGH_WRITES.labels("client_error").inc()
        if isinstance(payload.error, errors.S3Error):
            raise payload.error
        raise errors.IncompleteBody()
    STREAM_THROUGH_WRITES.labels("success").inc()
    return result
