"""The rebalancer's part of the metadata store's contract (:mod:`s3orch.store.txn.rebalance`).

Its own Protocol, which :class:`~s3orch.store.interface.MetadataStore` extends, so the
contract stays readable by domain.
"""

from __future__ import annotations

from typing import Protocol

from s3orch.store.records import ReplicaOutcome, ReplicaReservation, UnderReplicated


class RebalanceStore(Protocol):
    """The copies a backend could give up, and moving one copy by compare-and-swap."""

    async def rebalance_candidates(self, backend: str, limit: int) -> list[UnderReplicated]:
        """Up to ``limit`` extents of current objects with a copy on ``backend``, smallest first."""

    async def move_copy(
        self,
        extent: UnderReplicated,
        reservation: ReplicaReservation,
        source: str,
        source_key: str,
        now: float,
        grace: float,
    ) -> ReplicaOutcome:
        """Record the copy made for ``reservation`` and drop the one at ``source``/``source_key``
        (queued for cleanup, due after ``grace``) in one transaction, only while the object is
        still the same write, the source copy is still recorded and the target holds none;
        otherwise the new copy's cleanup row (due now) is the outcome's ``cleanup``."""
