"""The one booking seam: every call to a backend client is counted here.

:func:`meter` wraps each raw client (inside the circuit breaker, so a call the breaker refused,
which never reached the provider, is not counted); every path that talks to a backend (client
requests, multipart, copies, replication, drains, cleanups, the reaper, the GC) goes through
these clients, so nothing is missed.  What is booked (BEHAVIOURS §1.8):

* every call: one API request, whether it succeeded or failed (the provider bills both);
* ``put_object``: ingress of the payload's length;
* ``get_object``: egress of the length the backend announced for the body, when its headers
  arrive (a 304 or a client that goes away still cost that transfer to the provider's meter).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from s3orch.backend.interface import BackendStream, ListedObject, ObjectBackend
from s3orch.payload import Payload
from s3orch.usage.counters import Delta

T = TypeVar("T")

#: ``record(backend, delta)``: :meth:`s3orch.usage.tracker.UsageTracker.record`.
Record = Callable[[str, Delta], None]

_CALL = Delta(api_requests=1)


def meter(clients: Mapping[str, ObjectBackend], record: Record) -> dict[str, ObjectBackend]:
    """Each client wrapped in a :class:`MeteredBackend` booking to ``record``."""
    return {name: MeteredBackend(client, record) for name, client in clients.items()}


class MeteredBackend:
    """An :class:`ObjectBackend` that books each call it passes on (see the module)."""

    def __init__(self, inner: ObjectBackend, record: Record) -> None:
        self.inner = inner
        self.name = inner.name
        self._record = record

    async def _call(self, call: Callable[[], Awaitable[T]], delta: Delta = _CALL) -> T:
        try:
            return await call()
        finally:
            self._record(self.name, delta)

    # The three calls of every small request book inline (no wrapping coroutine and lambda).

    async def put_object(self, storage_key: str, payload: Payload) -> str:
        delta = Delta(1, 0, payload.length)  # the declared length, as the call starts
        try:
            return await self.inner.put_object(storage_key, payload)
        finally:
            self._record(self.name, delta)

    async def get_object(self, storage_key: str, byte_range: tuple[int, int] | None = None) -> BackendStream:
        try:
            stream = await self.inner.get_object(storage_key, byte_range)
        finally:
            self._record(self.name, _CALL)
        if stream.length:
            self._record(self.name, Delta(egress_bytes=stream.length))
        return stream

    async def head_object(self, storage_key: str) -> dict[str, str]:
        try:
            return await self.inner.head_object(storage_key)
        finally:
            self._record(self.name, _CALL)

    async def delete_object(self, storage_key: str) -> None:
        await self._call(lambda: self.inner.delete_object(storage_key))

    async def copy_object(self, source_key: str, dest_key: str) -> str:
        return await self._call(lambda: self.inner.copy_object(source_key, dest_key))

    async def list_keys(
        self, prefix: str, continuation: str | None = None, max_keys: int = 1000
    ) -> tuple[list[tuple[str, int]], str | None]:
        return await self._call(lambda: self.inner.list_keys(prefix, continuation, max_keys))

    async def list_objects(
        self, prefix: str, continuation: str | None = None, max_keys: int = 1000
    ) -> tuple[list[ListedObject], str | None]:
        return await self._call(lambda: self.inner.list_objects(prefix, continuation, max_keys))

    async def abort_multipart_upload(self, storage_key: str, upload_id: str) -> None:
        await self._call(lambda: self.inner.abort_multipart_upload(storage_key, upload_id))

    async def list_multipart_uploads(self, prefix: str) -> list[tuple[str, str]]:
        return await self._call(lambda: self.inner.list_multipart_uploads(prefix))

    async def close(self) -> None:
        await self.inner.close()
