"""``circuit_breaker.parallel_broadcast``: while degraded, open an object's copies at once.

In degraded mode (the database breaker open) the original asks its backends in config order, or
all of them at once with the losers cancelled.  Ours knows each object's copies from the location
journal, so the broadcast is over those copies: with ``parallel_broadcast`` the first copy to
answer serves the read and the other opens are cancelled (a stream that answered too late is
cancelled too); ``degraded_broadcast_parallelism`` caps how many opens are in flight at once (a
rolling window: a failed open starts the next copy; 0 = no cap).  Otherwise, and whenever the
database answers, copies are tried in order (:meth:`ObjectService._open_copies`).  Both are
:meth:`s3orch.core.reads.CopyReader.open` (best copies first), the broadcast with a wider window.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from s3orch.backend.interface import BackendStream
from s3orch.core.objects import ObjectService
from s3orch.store.records import Location


class BroadcastingObjectService(ObjectService):
    """An ObjectService whose reads race the copies while ``racing()`` says so."""

    def __init__(self, *, racing: Callable[[], bool], parallelism: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.racing = racing
        self.parallelism = parallelism

    async def _open_copies(
        self, locations: Sequence[Location], byte_range: tuple[int, int] | None
    ) -> tuple[BackendStream, Location]:
        if len(locations) < 2 or not self.racing():
            return await super()._open_copies(locations, byte_range)
        window = self.parallelism or len(locations)
        return await self.reader.open(locations, byte_range, window=window, hedge=False)
