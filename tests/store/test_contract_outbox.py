"""The MetadataStore contract, the notification outbox: every engine passes these.

Events ride in the transaction of the change that causes them (written exactly when
the change commits, never on a retry or a failed condition), or in one of their own;
the notifier reads due rows, counts failures and removes delivered ones.
"""

from __future__ import annotations

import pytest
import pytest_twisted

from s3orch.s3.conditions import WriteConditions
from s3orch.store.interface import (
    INTENT_PROMOTE,
    INTENT_PROMOTED,
    MetadataStore,
    ObjectRecord,
    OutboxEvent,
    PreconditionConflict,
)
from tests.store.test_contract import BUCKET, NOW, intent, put, record_for
from tests.store.test_contract_multipart import add_part, opened
from tests.store.test_contract_pending import described


def event(kind: str, subject: str = "k", endpoint: str = "http://hook/a", n: int = 0) -> OutboxEvent:
    return OutboxEvent(endpoint, f"evt_{kind}_{n}", kind, subject, f'{{"type": "{kind}", "n": {n}}}')


async def waiting(store: MetadataStore) -> list[tuple[str, str, str]]:
    return [(e.event_type, e.subject, e.endpoint) for e in await store.due_events(NOW + 10**6, 100)]


@pytest_twisted.ensureDeferred
async def test_enqueued_events_are_due_at_once_with_every_field(store: MetadataStore) -> None:
    first = event("service.started", "node-1")
    second = event("service.started", "node-1", endpoint="http://hook/b")
    await store.enqueue_events([first, second], NOW)
    due = await store.due_events(NOW, 10)
    assert [(e.endpoint, e.event_id, e.event_type, e.subject, e.payload) for e in due] == [
        (first.endpoint, first.event_id, first.event_type, first.subject, first.payload),
        (second.endpoint, second.event_id, second.event_type, second.subject, second.payload),
    ]
    assert all(e.attempts == 0 and e.next_attempt == NOW and e.created_at == NOW for e in due)
    assert await store.due_events(NOW - 1, 10) == []
    assert await store.count_events() == 2


@pytest_twisted.ensureDeferred
async def test_failure_counts_and_postpones_done_removes(store: MetadataStore) -> None:
    await store.enqueue_events([event("a", n=1), event("b", n=2)], NOW)
    one, two = await store.due_events(NOW, 10)
    assert await store.event_failed(one.id, "HTTP 500 " + "x" * 5000, NOW + 2) == 1
    assert await store.event_failed(one.id, "timeout", NOW + 4) == 2
    assert [e.id for e in await store.due_events(NOW + 3, 10)] == [two.id]
    (again,) = [e for e in await store.due_events(NOW + 4, 10) if e.id == one.id]
    assert again.attempts == 2 and again.next_attempt == NOW + 4
    await store.events_done([two.id, 999_999])
    assert [e.id for e in await store.due_events(NOW + 4, 10)] == [one.id]
    await store.events_done([one.id])
    assert await store.count_events() == 0
    assert await store.event_failed(one.id, "gone", NOW) == 0  # row gone: nothing to count


@pytest_twisted.ensureDeferred
async def test_due_events_oldest_first_within_limit(store: MetadataStore) -> None:
    await store.enqueue_events([event("late")], NOW + 5)
    await store.enqueue_events([event("early")], NOW)
    assert [e.event_type for e in await store.due_events(NOW + 5, 1)] == ["early"]
    assert await store.due_events(NOW, 0) == []


@pytest_twisted.ensureDeferred
async def test_commit_writes_its_events_once(store: MetadataStore) -> None:
    res = await store.reserve(intent("k", 10), ("b1",), "pack", NOW)
    assert res is not None
    record = record_for(res, "k", 10)
    created = [event("s3:ObjectCreated:Put")]
    await store.commit_object(res, record, NOW, events=created)
    await store.commit_object(res, record, NOW, events=created)  # a retried call
    assert await waiting(store) == [("s3:ObjectCreated:Put", "k", "http://hook/a")]


@pytest_twisted.ensureDeferred
async def test_a_failed_condition_writes_no_event(store: MetadataStore) -> None:
    await put(store, "k", 10)
    res = await store.reserve(intent("k", 10), ("b1",), "pack", NOW)
    assert res is not None
    with pytest.raises(PreconditionConflict):
        await store.commit_object(
            res, record_for(res, "k", 10), NOW, WriteConditions(None, ("*",)),
            events=[event("s3:ObjectCreated:Put")],
        )
    assert await waiting(store) == []


@pytest_twisted.ensureDeferred
async def test_delete_writes_events_only_when_the_key_existed(store: MetadataStore) -> None:
    await put(store, "k", 10)
    removed = [event("s3:ObjectRemoved:Delete")]
    await store.delete_object(BUCKET, "absent", NOW, events=removed)
    assert await waiting(store) == []
    await store.delete_object(BUCKET, "k", NOW, events=removed)
    await store.delete_object(BUCKET, "k", NOW, events=removed)  # gone now: nothing
    assert await waiting(store) == [("s3:ObjectRemoved:Delete", "k", "http://hook/a")]


@pytest_twisted.ensureDeferred
async def test_complete_writes_events_once(store: MetadataStore) -> None:
    upload = await opened(store, "big")
    await add_part(store, upload, 1, 100, etag="a" * 32)
    record = ObjectRecord(bucket=BUCKET, key="big", write_id=upload.upload_id, size=100, etag="e-1", last_modified=NOW)
    completed = [event("s3:ObjectCreated:CompleteMultipartUpload", "big")]
    await store.complete_upload(BUCKET, "big", upload.upload_id, [(1, "a" * 32)], record, NOW, events=completed)
    again = await store.complete_upload(
        BUCKET, "big", upload.upload_id, [(1, "a" * 32)], record, NOW, events=completed
    )
    assert again.already_completed
    assert await waiting(store) == [("s3:ObjectCreated:CompleteMultipartUpload", "big", "http://hook/a")]


@pytest_twisted.ensureDeferred
async def test_cleanup_exhausted_events_come_with_the_move_to_the_dlq(store: MetadataStore) -> None:
    await put(store, "k", 10)
    (item,) = await store.delete_object(BUCKET, "k", NOW)
    exhausted = [event("cleanup.exhausted", "b1")]
    for _ in range(9):
        await store.cleanup_failed(item.id, "boom", NOW, exhausted_events=exhausted)
    assert await waiting(store) == []
    await store.cleanup_failed(item.id, "boom", NOW, exhausted_events=exhausted)
    assert await waiting(store) == [("cleanup.exhausted", "b1", "http://hook/a")]


@pytest_twisted.ensureDeferred
async def test_intent_events_are_written_only_when_promoted(store: MetadataStore) -> None:
    bare = intent("bare", 10)  # records no object row: can only be dropped
    full = described("full", 10)
    for write in (bare, full):
        assert await store.reserve(write, ("b1",), "pack", NOW) is not None
    claimed = await store.stale_intents(NOW + 1000, 300, 10, "me")
    assert {c.write_id for c in claimed} == {bare.write_id, full.write_id}
    dropped = await store.resolve_intent(bare.write_id, INTENT_PROMOTE, NOW + 1000, events=[event("x", "bare")])
    assert dropped.status != INTENT_PROMOTED
    promoted = await store.resolve_intent(
        full.write_id, INTENT_PROMOTE, NOW + 1000, events=[event("s3:ObjectCreated:Put", "full")]
    )
    assert promoted.status == INTENT_PROMOTED
    assert await waiting(store) == [("s3:ObjectCreated:Put", "full", "http://hook/a")]


@pytest_twisted.ensureDeferred
async def test_events_survive_a_reopen(store: MetadataStore, store_factory: object) -> None:
    await store.enqueue_events([event("service.stopping", "node")], NOW)
    await store.close()
    reopened = store_factory.make()  # type: ignore[attr-defined]
    await reopened.start()
    try:
        assert await waiting(reopened) == [("service.stopping", "node", "http://hook/a")]
    finally:
        await reopened.close()
