"""The replica part of the metadata store's contract (:mod:`s3orch.store.txn.replicas` and
:mod:`s3orch.store.txn.excess`): under- and over-replicated extents, reserving and recording
copies made elsewhere, forgetting a copy whose bytes are gone."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from s3orch.store.records import (
    CleanupItem,
    ExcessCopies,
    ReplicaOutcome,
    ReplicaReservation,
    UnderReplicated,
)


class ReplicaStore(Protocol):
    """Copies of extents beyond the first: the replicator's, fan-out's and the cleaner's."""

    async def under_replicated(
        self,
        factor: int,
        limit: int,
        after: tuple[str, str, int] | None = None,
        uncounted: Sequence[str] = (),
    ) -> list[UnderReplicated]:
        """Up to ``limit`` extents of current objects with fewer than ``factor`` copies not on
        an ``uncounted`` backend, in (bucket, key, part number) order after ``after``."""

    async def count_under_replicated(self, factor: int, uncounted: Sequence[str] = ()) -> int:
        """How many extents :meth:`under_replicated` would return now (a progress total)."""

    async def drop_missing_copy(
        self, extent: UnderReplicated, backend: str, storage_key: str, now: float
    ) -> bool:
        """Forget the copy of ``extent`` at ``backend``/``storage_key`` (its backend answered 404)
        if the object is still the same write and another copy remains; whether it did."""

    async def reserve_replica(
        self,
        extent: UnderReplicated,
        factor: int,
        uncounted: Sequence[str],
        candidates: Sequence[str],
        strategy: str,
        storage_key: str,
        now: float,
        hold: float,
    ) -> ReplicaOutcome:
        """Reserve room for one more copy of ``extent`` at ``storage_key`` on the candidate
        (holding no copy of it) the strategy picks; the room is a cleanup row due after
        ``hold`` seconds, so an abandoned copy is deleted by the queue."""

    async def reserve_copy(
        self, candidates: Sequence[str], strategy: str, storage_key: str, size: int, now: float, hold: float
    ) -> ReplicaReservation | None:
        """Room for a companion copy of a write in flight (fan-out), held like :meth:`reserve_replica`'s
        (None: no room); :meth:`commit_object` or :meth:`record_replica` records it."""

    async def abandon_replica(self, cleanup_id: int, due: float) -> None:
        """Make the cleanup row of a replica whose PUT got no answer due at ``due`` (the
        queue then deletes it; a delete sent at once could race the PUT still landing)."""

    async def record_replica(
        self,
        extent: UnderReplicated,
        reservation: ReplicaReservation,
        factor: int,
        uncounted: Sequence[str],
        now: float,
    ) -> ReplicaOutcome:
        """Record the copy made for ``reservation`` if the object is still the same write
        and the extent still needs it; otherwise its cleanup row (due now) is returned."""

    # -- excess copies (s3orch.store.txn.excess) ------------------------------------------

    async def over_replicated(
        self, factor: int, limit: int, after: tuple[str, str, int] | None = None
    ) -> list[ExcessCopies]:
        """Up to ``limit`` extents of current objects with more than ``factor`` copies, in
        (bucket, key, part number) order after ``after``."""

    async def count_over_replicated(self, factor: int) -> int:
        """How many extents :meth:`over_replicated` would return now."""

    async def remove_excess(
        self, extent: ExcessCopies, factor: int, scores: Mapping[str, float], now: float, grace: float
    ) -> list[CleanupItem]:
        """While the object is still ``extent.write_id``, remove its lowest-scored copies (by
        backend ``scores``) until ``factor`` remain, never the last healthy one, under the
        key's and the copies' locks; the removed copies' cleanup rows (due after ``grace``)."""
