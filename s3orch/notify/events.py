"""Event types, the CloudEvents 1.0 body, and which endpoint wants which event.

The names are s3-orchestrator's (BEHAVIOURS §1.32), so a receiver written for it
reads ours unchanged; so is ``source``.  Data events concern an object key and are
subject to an endpoint's ``prefix``; operational events concern a backend or the
service and are not.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from s3orch.config.model import NotificationEndpoint

# -- data events -------------------------------------------------------------------------------
OBJECT_CREATED_PUT = "s3:ObjectCreated:Put"
OBJECT_CREATED_COPY = "s3:ObjectCreated:Copy"
OBJECT_CREATED_COMPLETE = "s3:ObjectCreated:CompleteMultipartUpload"
OBJECT_REMOVED_DELETE = "s3:ObjectRemoved:Delete"
OBJECT_REMOVED_BATCH = "s3:ObjectRemoved:DeleteBatch"
LIFECYCLE_DELETE = "lifecycle.delete"

# -- operational events ------------------------------------------------------------------------
CIRCUIT_OPENED = "backend.circuit.opened"
CIRCUIT_CLOSED = "backend.circuit.closed"
CAPACITY_WARNING = "backend.capacity.warning"
DRAIN_COMPLETED = "backend.drain.completed"
DRAIN_FAILED = "backend.drain.failed"
BACKEND_REMOVED = "backend.removed"
CORRUPTION_DETECTED = "integrity.corruption_detected"
CLEANUP_EXHAUSTED = "cleanup.exhausted"
REPLICATION_TARGET_EXHAUSTED = "replication.target_exhausted"
REPLICATION_COMPLETED = "replication.completed"
REBALANCE_COMPLETED = "rebalance.completed"
LIFECYCLE_COMPLETED = "lifecycle.completed"
RELOAD_FAILED = "config.reload_failed"
SERVICE_STARTED = "service.started"
SERVICE_STOPPING = "service.stopping"
RECONCILE_OBJECT_LOST = "reconcile.object_lost"
RECONCILE_COMPLETED = "reconcile.completed"

#: The CloudEvents ``source`` of every event: s3-orchestrator's, for its receivers.
SOURCE = "/s3-orchestrator"
SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"


@dataclass(frozen=True)
class CloudEvent:
    """One event, rendered once (the same bytes go to every endpoint and every retry)."""

    id: str
    type: str
    subject: str
    time: float
    data: Mapping[str, Any]

    def body(self) -> str:
        return json.dumps(
            {
                "specversion": SPEC_VERSION,
                "id": self.id,
                "source": SOURCE,
                "type": self.type,
                "time": rfc3339(self.time),
                "subject": self.subject,
                "datacontenttype": CONTENT_TYPE,
                "data": dict(self.data),
            },
            separators=(",", ":"),
            sort_keys=True,
        )


def new_event_id() -> str:
    """``evt_<hex>``, as s3-orchestrator's ids look."""
    return f"evt_{uuid.uuid4().hex}"


def rfc3339(epoch: float) -> str:
    """UTC with milliseconds and a ``Z``."""
    stamp = datetime.fromtimestamp(epoch, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def pattern_matches(pattern: str, event_type: str) -> bool:
    """An ``events`` entry: the exact type, or a prefix ending in ``*`` (``*`` alone: all)."""
    if pattern.endswith("*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type


def wants(endpoint: NotificationEndpoint, event_type: str, key: str | None) -> bool:
    """Whether ``endpoint`` receives the event: a pattern matches its type and, for a data
    event (one with an object ``key``), the key starts with the endpoint's ``prefix``."""
    if not any(pattern_matches(p, event_type) for p in endpoint.events):
        return False
    return key is None or key.startswith(endpoint.prefix)
