"""A backend PUT whose bytes arrive but whose answer is lost leaks nothing (I4, I5).

Over the real SQLite store and a memory backend (the rig of ``test_pending_reaper``):
the backend stores the object and then fails the call, as a backend that times out,
resets or garbles its answer does.  The gateway gives the write up (503 with no other
backend) or fails over; either way the copy it cannot know about must be queued for
deletion, not forgotten.  Found by the fault rig (``test_fault_rig``): releasing the
reservation alone left such copies on the backend, unreferenced and unqueued.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from s3orch.backend.interface import BackendUnavailable
from s3orch.core.uploads import MultipartService
from s3orch.payload import Payload
from s3orch.s3 import errors
from s3orch.s3.xml import CompletedPart
from tests.inproc import test_pending_reaper as base
from tests.inproc.test_pending_reaper import NEW, Rig

rig = base.rig  # the fixture: a real SQLite store, a memory backend, a clock


def lose_next_put_answer(rig: Rig) -> None:
    original = rig.b1.put_object

    async def stored_then_failed(key: str, payload: Any) -> Any:
        rig.b1.put_object = original  # type: ignore[method-assign]
        await original(key, payload)
        raise BackendUnavailable("b1: read timeout after the request was sent")

    rig.b1.put_object = stored_then_failed  # type: ignore[method-assign]


async def queue_tick(rig: Rig, after: float) -> None:
    """The cleanup-queue worker's pass ``after`` seconds from now."""
    rig.clock.advance(after)
    await rig.cleanups.retry_due("test", 50, 300.0)


@pytest_twisted.ensureDeferred
async def test_a_put_stored_by_a_backend_that_lost_its_answer_is_queued_and_deleted(rig: Rig) -> None:
    await rig.put("k", b"previous")
    lose_next_put_answer(rig)
    with pytest.raises(errors.ServiceUnavailable):
        await rig.put("k", b"stored, answer lost")
    assert await rig.read("k") == b"previous"  # the failed write left the previous value (I3)
    quota = await rig.quota()
    assert (quota.bytes_used, quota.orphan_bytes, quota.reserved_bytes) == (8, 19, 0)  # queued, counted
    assert len(rig.b1.objects) == 2  # not deleted at once: a slow backend may still be landing it
    await queue_tick(rig, 59)
    assert len(rig.b1.objects) == 2
    await queue_tick(rig, 1)  # the queue's grace has passed
    await rig.assert_quiet_and_exact({"k": b"previous"})  # its copy deleted, quota exact


@pytest_twisted.ensureDeferred
async def test_when_the_delete_fails_too_the_copy_stays_queued_with_its_bytes_counted(rig: Rig) -> None:
    lose_next_put_answer(rig)
    rig.b1.fail_next("delete_object", 1)
    with pytest.raises(errors.ServiceUnavailable):
        await rig.put("k", b"12345")
    await queue_tick(rig, 60)  # the delete fails: retried after the backoff
    (item,) = await rig.store.due_cleanups(rig.clock.seconds() + 3600, 10)
    assert (item.backend, item.size, item.attempts) == ("b1", 5, 1)
    quota = await rig.quota()
    assert (quota.bytes_used, quota.orphan_bytes, quota.reserved_bytes) == (0, 5, 0)
    await queue_tick(rig, 60)
    await rig.assert_quiet_and_exact({})


@pytest_twisted.ensureDeferred
async def test_a_part_stored_by_a_backend_that_lost_its_answer_is_queued_and_deleted(rig: Rig) -> None:
    multipart = MultipartService(
        store=rig.store,  # type: ignore[arg-type]
        fleet=rig.objects.fleet,
        objects=rig.objects,
        cleanups=rig.cleanups,
        clock=rig.clock,
        bucket_limits={},
        stale_timeout=86400.0,
    )
    upload = await multipart.create("bkt", "k", NEW)
    lose_next_put_answer(rig)
    with pytest.raises(errors.ServiceUnavailable):
        await multipart.upload_part("bkt", "k", upload.upload_id, 1, Payload.from_bytes(b"part one"))
    quota = await rig.quota()
    assert (quota.bytes_used, quota.orphan_bytes, quota.reserved_bytes) == (0, 8, 0)  # queued, counted
    part = await multipart.upload_part("bkt", "k", upload.upload_id, 1, Payload.from_bytes(b"part one"))
    await multipart.complete("bkt", "k", upload.upload_id, [CompletedPart(1, part.etag)])
    await rig.cleanups.quiesce()
    await queue_tick(rig, 60)
    await rig.assert_quiet_and_exact({"k": b"part one"})


@pytest_twisted.ensureDeferred
async def test_a_backend_that_answered_with_an_error_stored_nothing_and_nothing_is_queued(rig: Rig) -> None:
    rig.b1.fail_next("put_object", 1, BackendUnavailable("InternalError", status=500))
    with pytest.raises(errors.ServiceUnavailable):
        await rig.put("k", b"refused")
    quota = await rig.quota()
    assert (quota.bytes_used, quota.orphan_bytes, quota.reserved_bytes) == (0, 0, 0)
    assert await rig.store.due_cleanups(rig.clock.seconds() + 3600, 10) == []
    await rig.assert_quiet_and_exact({})
