"""Reserve-then-write with failover: the one loop every write path uses.

PutObject, CopyObject and CreateMultipartUpload all do the same dance: ask
the store to reserve room on the best candidate backend (atomically with a
record of the pending write), try the backend call, and on a backend failure
undo the reservation and try again without that backend.  Keeping the dance
in one place keeps its guarantees in one place: a reservation is always
undone when its backend call fails or is interrupted, and a client hears
507 only when no backend had room, 503 when backends had room but failed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from twisted.logger import Logger

from s3orch.backend.interface import BackendError
from s3orch.observe.metrics import WRITE_FAILOVER
from s3orch.s3 import errors

R = TypeVar("R")
T = TypeVar("T")

_log = Logger(namespace="s3orch.core.failover")


def unavailable(exc: BackendError) -> errors.S3Error:
    """What a client hears when backends had room but every one failed."""
    return errors.ServiceUnavailable("No storage backend could accept the write; please retry.")


async def with_failover(
    *,
    operation: str,
    candidates: Callable[[set[str]], list[str]],
    reserve: Callable[[list[str]], Awaitable[R | None]],
    backend_of: Callable[[R], str],
    attempt: Callable[[R], Awaitable[T]],
    undo: Callable[[R, BaseException], Awaitable[None]],
    failure: Callable[[BackendError], errors.S3Error] = unavailable,
    request_id: str = "",
    eligible: Callable[[str], bool] = lambda name: True,
) -> tuple[R, T]:
    """Reserve on a candidate, run ``attempt``; on BackendError undo and try the next.

    ``candidates(failed)`` lists eligible backends minus those that failed;
    ``reserve(names)`` returns None when none has room.  Any other exception
    from ``attempt`` (cancellation included) undoes the reservation and
    propagates.  ``undo`` gets the exception too: a backend that answered with an
    error stored nothing, one that never answered may have stored the bytes.
    A reservation on a backend no longer ``eligible`` when it returns (its drain started
    meanwhile) is undone before any byte is sent, and the next candidate is tried.
    """
    failed: set[str] = set()
    last_error: BackendError | None = None
    while True:
        names = candidates(failed)
        reservation = await reserve(names) if names else None
        if reservation is None:
            if last_error is not None:
                raise failure(last_error) from last_error
            raise errors.InsufficientStorage()
        backend = backend_of(reservation)
        if not eligible(backend):
            await undo(reservation, BackendError(f"backend {backend} is draining", status=409))
            failed.add(backend)
            continue
        try:
            result = await attempt(reservation)
        except BackendError as exc:
            await undo(reservation, exc)
            failed.add(backend)
            last_error = exc
            WRITE_FAILOVER.labels(backend).inc()
            _log.warn(
                "backend {operation} failed; trying the next backend",
                component="objects",
                operation=operation,
                backend=backend,
                error=str(exc),
                request_id=request_id,
            )
            continue
        except BaseException as exc:
            await undo(reservation, exc)
            raise
        return reservation, result
