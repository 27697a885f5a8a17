"""Operations started from the dashboard, run in the background with their progress kept.

An operation is an admin handler (:mod:`s3orch.admin.passes`, :mod:`s3orch.admin.handlers`):
the dashboard never re-implements one.  The handler reports through a :class:`JobProgress`
(the admin API's :class:`~s3orch.admin.ndjson.Progress`), which keeps counts and the newest
events so the page can poll ``{path}/api/jobs/<id>`` and draw a bar.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from s3orch.admin.calls import AdminError
from s3orch.admin.ndjson import Progress

#: Jobs remembered (the oldest finished ones are forgotten first), and events kept per job.
MAX_JOBS = 50
MAX_EVENTS = 20

_log = Logger(namespace="s3orch.ui")


class JobProgress(Progress):
    """Counts a pass's steps and keeps its newest events."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.total: int | None = None
        self.done = 0
        self.events: deque[dict[str, Any]] = deque(maxlen=MAX_EVENTS)

    def emit(self, kind: str, **fields: Any) -> None:
        if kind == "start" and isinstance(fields.get("total"), int):
            self.total = fields["total"]
        elif kind == "step_end":
            self.done += 1
        self.events.append({"type": kind, "at": self.clock(), **{k: v for k, v in fields.items() if v is not None}})


class Job:
    def __init__(self, job_id: str, operation: str, progress: JobProgress, started: float) -> None:
        self.id = job_id
        self.operation = operation
        self.progress = progress
        self.started = started
        self.state = "running"
        self.result: dict[str, Any] | None = None
        self.error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "operation": self.operation, "state": self.state, "started": self.started,
            "total": self.progress.total, "done": self.progress.done,
            "events": list(self.progress.events), "result": self.result, "error": self.error,
        }


class Jobs:
    """The dashboard's running and recent operations (per process)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._ids = itertools.count(1)

    def start(self, operation: str, run: Callable[[JobProgress], Awaitable[dict[str, Any]]]) -> Job:
        progress = JobProgress(self.clock)
        job = Job(str(next(self._ids)), operation, progress, self.clock())
        self._jobs[job.id] = job
        self._forget_old()

        async def go() -> None:
            try:
                job.result = await run(progress)
                job.state = "done"
            except AdminError as exc:
                job.state, job.error = "failed", exc.message
            except Exception:
                _log.failure("dashboard operation {operation} failed", component="ui", operation=operation)
                job.state, job.error = "failed", "internal error"

        Deferred.fromCoroutine(go())
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def recent(self) -> list[dict[str, Any]]:
        return [job.as_dict() for job in reversed(self._jobs.values())]

    def _forget_old(self) -> None:
        for job_id in list(self._jobs):
            if len(self._jobs) <= MAX_JOBS:
                break
            if self._jobs[job_id].state != "running":
                del self._jobs[job_id]
