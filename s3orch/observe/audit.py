"""Audit events: one structured line per S3 request and per storage action.

Audit lines go through the normal logger with ``audit=True`` so log
pipelines can filter them; the access key (the "principal") is recorded, the
secret never is.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from s3orch.observe.metrics import AUDIT_EVENTS

_log = Logger(namespace="audit")


def audit(event: str, **fields: Any) -> None:
    """Emit one audit event (``s3.PutObject``, ``storage.PutObject``, ...)."""
    AUDIT_EVENTS.labels(event).inc()
    _log.info("audit", audit=True, event=event, component="audit", **fields)
