"""Audit events: one structured line per S3 request and per storage action.

Audit lines go through the normal logger with ``audit=True`` so log
pipelines can filter them; the access key (the "principal") is recorded, the
secret never is.

Every S3 request writes two: ``s3.<Op>`` at the HTTP level (the front door) and
``storage.<Op>`` where the core did the work.  The core does not know the
request's credential, so the front door binds an :class:`AuditScope` (request id,
access key) in a context variable for the request's coroutine, and
:func:`audit` fills the fields the caller did not give from it; a background
worker binds one per pass, whose correlation id every event of the pass carries.
Twisted runs each ``Deferred.fromCoroutine`` in a copy of the context it was
started in, so concurrent requests never see each other's scope.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from time import time
from typing import Any

from twisted.logger import Logger, LogLevel

from s3orch.observe.metrics import AUDIT_EVENTS

_log = Logger(namespace="audit")
_INFO = LogLevel.info


class AuditScope:
    """What one request (or one background pass) adds to the audit events it causes."""

    __slots__ = ("access_key", "backend", "request_id")

    def __init__(self, request_id: str, access_key: str | None = None) -> None:
        self.request_id = request_id
        self.access_key = access_key
        #: The backend the first storage event naming one named (the manager metrics' label).
        self.backend = ""


#: The counter child of each event name (a closed set: operations, refusals, worker events).
_event_counter = lru_cache(maxsize=1024)(AUDIT_EVENTS.labels)

_SCOPE: ContextVar[AuditScope | None] = ContextVar("s3orch_audit_scope", default=None)


def bind(request_id: str, access_key: str | None = None) -> AuditScope:
    """Bind a scope for the rest of the current coroutine (and what it starts)."""
    scope = AuditScope(request_id, access_key)
    _SCOPE.set(scope)
    return scope


@contextmanager
def background_run(component: str) -> Iterator[str]:
    """A fresh correlation id for one background pass of ``component``, bound while the
    block runs (the caller's scope, if any, is restored after); yields it."""
    run_id = f"{component}-{uuid.uuid4().hex[:16]}"
    token = _SCOPE.set(AuditScope(run_id))
    try:
        yield run_id
    finally:
        _SCOPE.reset(token)


def current_id() -> str | None:
    """The request id or pass correlation id bound where this runs (None: nothing bound)."""
    scope = _SCOPE.get()
    return scope.request_id if scope is not None else None


def audit(event: str, **fields: Any) -> None:
    """Emit one audit event (``s3.PutObject``, ``storage.PutObject``, ...)."""
    _event_counter(event).inc()
    scope = _SCOPE.get()
    if scope is not None:
        if not fields.get("request_id"):
            fields["request_id"] = scope.request_id
        if scope.access_key is not None and "access_key" not in fields:
            fields["access_key"] = scope.access_key
        backend = fields.get("backend")
        if backend and not scope.backend:  # the operation's own event comes first
            scope.backend = str(backend)
    # What ``_log.info("audit", audit=True, event=event, component="audit", **fields)`` hands
    # its observer, built here: Logger.emit re-validates the (constant) level against a sorted
    # list of every level on each call, a fifth of an audit line's cost before rendering.
    _log.observer({
        "audit": True, "event": event, "component": "audit", **fields,
        "log_logger": _log, "log_level": _INFO, "log_namespace": "audit", "log_source": None,
        "log_format": "audit", "log_time": time(),
    })
