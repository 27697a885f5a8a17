"""The events the core emits, each built in one place: type, subject and data.

Data events' subject is the object key (the bucket is in ``data``); operational
events' subject is the backend (or the instance).  Each helper answers the outbox
rows for the caller to pass to the store call that makes the change.
"""

from __future__ import annotations

from s3orch.notify.events import CLEANUP_EXHAUSTED
from s3orch.notify.sink import EventSink
from s3orch.store.interface import CleanupItem, ObjectRecord, OutboxEvent


def object_created(sink: EventSink, event_type: str, record: ObjectRecord) -> tuple[OutboxEvent, ...]:
    """``s3:ObjectCreated:*`` for the record that becomes the key's current version."""
    data = {"bucket": record.bucket, "key": record.key, "size": record.size, "etag": record.etag}
    return sink.events(event_type, record.key, data, key=record.key)


def object_removed(sink: EventSink, event_type: str, bucket: str, key: str) -> tuple[OutboxEvent, ...]:
    """``s3:ObjectRemoved:*`` (written only if the key existed)."""
    return sink.events(event_type, key, {"bucket": bucket, "key": key}, key=key)


def cleanup_exhausted(sink: EventSink, item: CleanupItem, error: str) -> tuple[OutboxEvent, ...]:
    """``cleanup.exhausted``: a backend delete gave up and went to the dead-letter table
    (written only when this failure is the one that moves it)."""
    data = {
        "backend": item.backend,
        "storage_key": item.storage_key,
        "size": item.size,
        "reason": item.reason,
        "error": error[:500],
    }
    return sink.events(CLEANUP_EXHAUSTED, item.backend, data)
