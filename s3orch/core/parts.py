"""Placing the parts of a multipart upload, one by one, like PUTs: a mixin of
:class:`~s3orch.core.objects.ObjectService` (the upload service, :mod:`s3orch.core.uploads`,
calls it for UploadPart and UploadPartCopy)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Collection

from twisted.internet.interfaces import IReactorTime

from s3orch.core.cleanup import Cleanups
from s3orch.core.failover import with_failover
from s3orch.core.fleet import BackendFleet
from s3orch.core.placement import part_storage_key
from s3orch.s3 import errors
from s3orch.store.interface import MetadataStore, MultipartUpload, PartReservation, UploadedPart


class PartPlacement:
    """Reserve, send and record one part upload (over the object service's parts)."""

    store: MetadataStore
    cleanups: Cleanups
    routing_strategy: str
    clock: IReactorTime

    @property
    def fleet(self) -> BackendFleet:
        raise NotImplementedError  # the object service's

    async def place_part(
        self,
        upload: MultipartUpload,
        part_number: int,
        size: int,
        send: Callable[[PartReservation], Awaitable[None]],
        *,
        prefer: Collection[str] = (),
        request_id: str = "",
    ) -> PartReservation:
        """Place one part upload like a PUT: reserve room on the backend the routing
        strategy picks (atomically with the attempt row), ``send`` the bytes to the
        reservation's storage key, and on a backend failure undo and try the next.

        ``prefer`` lists backends to offer first (holders of a copy source, so a
        server-side copy is possible).  Raises UploadNotFound when the upload is not
        open, 507 when no backend has room, 503 when backends had room but failed.
        The caller commits the part with :meth:`commit_part`.
        """
        attempt_id = uuid.uuid4().hex
        key = part_storage_key(upload.bucket, upload.key, upload.upload_id, part_number, attempt_id)

        async def reserve(names: list[str]) -> PartReservation | None:
            return await self.store.reserve_part(
                upload.bucket, upload.key, upload.upload_id, part_number, size, attempt_id, key,
                names, self.routing_strategy, self.clock.seconds(),
            )

        reservation, _ = await with_failover(
            operation="UploadPart",
            candidates=lambda failed: self.fleet.write_candidates(size, exclude=failed, prefer=prefer),
            reserve=reserve,
            backend_of=lambda r: r.backend,
            attempt=send,
            undo=lambda r, exc: self.cleanups.abandon_part(r.attempt_id),
            request_id=request_id,
            eligible=self.fleet.takes_writes,
        )
        return reservation

    async def commit_part(self, reservation: PartReservation, part: UploadedPart) -> None:
        """Record a placed part; NoSuchUpload (its bytes queued for deletion) when the
        upload was completed or aborted while the part travelled."""
        outcome = await self.store.commit_part(reservation.attempt_id, part, self.clock.seconds())
        if not outcome.committed:
            await self.cleanups.run(outcome.cleanup, "part_orphaned")
            raise errors.NoSuchUpload(UploadId=reservation.upload_id)
        self.cleanups.in_background(outcome.cleanup, "part_replaced")
