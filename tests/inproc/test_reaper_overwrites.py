"""The pending reaper's promote/drop decision is exact for overwrites (issue 15 item 3).

Over the real SQLite store (the rig of ``test_pending_reaper``): when several writes
of one key failed to commit, or a later write committed, the newest write wins
whatever order the reaper resolves the intents in, a promoted older write never
replaces a newer one, and quota and backend end exact (I3, I4, I5).
"""

from __future__ import annotations

import hashlib

import pytest
import pytest_twisted

from s3orch.core.uploads import MultipartService
from s3orch.payload import Payload
from s3orch.s3.xml import CompletedPart
from s3orch.store.interface import PendingIntent, StoreUnavailable
from tests.inproc import test_pending_reaper as base
from tests.inproc.test_pending_reaper import MIN_AGE, NEW, Rig

rig = base.rig  # the fixture: a real SQLite store, a memory backend, a clock


async def failed_put(rig: Rig, key: str, data: bytes) -> None:
    """A PUT whose bytes arrived but whose commit failed (the client got 503)."""
    rig.store.fail_before = 1
    with pytest.raises(StoreUnavailable):
        await rig.put(key, data)


async def claimed(rig: Rig) -> dict[int, PendingIntent]:
    """The stale intents, claimed, by size (the tests give each write its own size)."""
    intents = await rig.store.stale_intents(rig.clock.seconds(), MIN_AGE, 50, "test", 300.0)
    return {i.size: i for i in intents}


@pytest_twisted.ensureDeferred
async def test_two_failed_writes_resolved_newest_first_keep_the_newest(rig: Rig) -> None:
    await rig.put("k", b"acknowledged")
    await failed_put(rig, "k", b"older")
    rig.clock.advance(1)
    await failed_put(rig, "k", b"newer!")
    rig.clock.advance(MIN_AGE)
    by_size = await claimed(rig)
    assert await rig.reaper.resolver.resolve(by_size[6]) == "promoted"
    assert await rig.reaper.resolver.resolve(by_size[5]) == "superseded"  # never over the newer one
    await rig.cleanups.quiesce()
    await rig.assert_quiet_and_exact({"k": b"newer!"})


@pytest_twisted.ensureDeferred
async def test_two_failed_writes_resolved_oldest_first_still_end_with_the_newest(rig: Rig) -> None:
    await failed_put(rig, "k", b"older")
    rig.clock.advance(1)
    await failed_put(rig, "k", b"newer!")
    rig.clock.advance(MIN_AGE)
    by_size = await claimed(rig)
    assert await rig.reaper.resolver.resolve(by_size[5]) == "promoted"
    assert await rig.reaper.resolver.resolve(by_size[6]) == "promoted"  # the newer one replaces it
    await rig.cleanups.quiesce()
    await rig.assert_quiet_and_exact({"k": b"newer!"})


@pytest_twisted.ensureDeferred
async def test_one_reaper_pass_resolving_both_at_once_keeps_the_newest(rig: Rig) -> None:
    for n in range(4):
        await failed_put(rig, "k", b"v" * (n + 1))
        rig.clock.advance(1)
    assert await rig.tick_after(MIN_AGE)
    await rig.assert_quiet_and_exact({"k": b"vvvv"})


@pytest_twisted.ensureDeferred
async def test_a_failed_write_older_than_a_committed_overwrite_is_dropped(rig: Rig) -> None:
    await failed_put(rig, "k", b"failed")
    rig.clock.advance(1)
    await rig.put("k", b"acknowledged")
    rig.clock.advance(1)
    await failed_put(rig, "other", b"x")  # another key's failed write is not touched
    assert await rig.tick_after(MIN_AGE)
    await rig.assert_quiet_and_exact({"k": b"acknowledged", "other": b"x"})


@pytest_twisted.ensureDeferred
async def test_a_failed_write_newer_than_the_committed_row_is_promoted_over_it(rig: Rig) -> None:
    """I3 as amended: the client got no definitive answer, so the write may appear."""
    await rig.put("k", b"acknowledged")
    rig.clock.advance(1)
    await failed_put(rig, "k", b"failed but here")
    assert await rig.tick_after(MIN_AGE)
    await rig.assert_quiet_and_exact({"k": b"failed but here"})


@pytest_twisted.ensureDeferred
async def test_a_failed_put_is_never_promoted_over_a_later_multipart_completion(rig: Rig) -> None:
    multipart = MultipartService(
        store=rig.store,  # type: ignore[arg-type]
        fleet=rig.objects.fleet,
        objects=rig.objects,
        cleanups=rig.cleanups,
        clock=rig.clock,
        bucket_limits={},
        stale_timeout=86400.0,
    )
    await failed_put(rig, "k", b"failed put")
    rig.clock.advance(1)
    upload = await multipart.create("bkt", "k", NEW)
    part = await multipart.upload_part("bkt", "k", upload.upload_id, 1, Payload.from_bytes(b"multipart"))
    await multipart.complete("bkt", "k", upload.upload_id, [CompletedPart(1, part.etag)])
    assert await rig.tick_after(MIN_AGE)
    await rig.assert_quiet_and_exact({"k": b"multipart"})
    record = await rig.store.get_object("bkt", "k")
    assert record is not None and record.etag != hashlib.md5(b"failed put").hexdigest()
