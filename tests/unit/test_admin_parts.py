"""The parts behind the admin API, alone: worker status, the log ring, the runtime log level,
NDJSON progress. Clock-driven, no sockets."""

from __future__ import annotations

import io
import json

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import Logger, LogPublisher

from s3orch.admin.ndjson import NDJSONProgress, SilentProgress, wants_ndjson
from s3orch.observe.logging import LogSettings, get_log_level, set_log_level
from s3orch.observe.ring import LogRing
from s3orch.store.interface import StoreUnavailable
from s3orch.workers.base import PeriodicWorker
from tests.unit.test_workers import FakeLocks


class Worker(PeriodicWorker):
    def __init__(self, clock: Clock, **kwargs: object) -> None:
        super().__init__("thing", 10.0, clock, component="thing", jitter=lambda: 0.0, **kwargs)  # type: ignore[arg-type]
        self.error: Exception | None = None

    async def tick(self) -> None:
        if self.error is not None:
            raise self.error


def _run(worker: Worker) -> None:
    Deferred.fromCoroutine(worker.run_once())


def test_worker_status_follows_ticks_results_and_the_next_run() -> None:
    clock = Clock()
    worker = Worker(clock)
    assert worker.status()["last_result"] is None and worker.status()["next_run_at"] is None
    worker.startService()
    clock.advance(10)
    status = worker.status()
    assert (status["last_tick_at"], status["last_result"], status["next_run_at"]) == (10.0, "success", 20.0)
    assert status["lock_holder"] is None and status["lock_id"] is None and status["running"] is True
    worker.error = RuntimeError("backend on fire")
    clock.advance(10)
    status = worker.status()
    assert status["last_result"] == "error" and status["last_error"] == "RuntimeError: backend on fire"
    assert status["consecutive_failures"] == 1
    worker.error = StoreUnavailable("connection refused")
    clock.advance(10)
    assert worker.status()["last_error"] == "database unavailable: connection refused"
    assert worker.status()["consecutive_failures"] == 2
    worker.stopService()
    assert worker.status()["running"] is False and worker.status()["next_run_at"] is None


def test_worker_status_names_the_lock_holder() -> None:
    clock = Clock()
    locks = FakeLocks()
    worker = Worker(clock, lock_id=1003, locks=locks)
    assert worker.status()["lock_holder"] == "unknown"
    _run(worker)
    assert worker.status()["lock_holder"] == "this instance" and worker.status()["lock_id"] == 1003
    locks.taken_elsewhere.add(1003)
    _run(worker)
    assert worker.status()["last_result"] == "skipped" and worker.status()["lock_holder"] == "another instance"


def test_a_locked_worker_reports_its_delayed_first_run() -> None:
    clock = Clock()
    worker = Worker(clock, lock_id=1003, locks=FakeLocks())
    worker.jitter = lambda: 0.5
    worker.startService()
    assert worker.status()["next_run_at"] == 2.5  # half of half the interval
    worker.stopService()


def test_the_ring_keeps_the_newest_lines_filtered_without_tracebacks() -> None:
    ring = LogRing(capacity=3)
    for index, level in enumerate(["DEBUG", "INFO", "WARN", "ERROR"]):
        ring.append({"level": level, "component": "a" if index % 2 else "b", "msg": str(index)})
    ring.append({"level": "ERROR", "component": "a", "msg": "boom", "traceback": "Traceback ..."})
    assert len(ring) == 3
    assert [r["msg"] for r in ring.recent()] == ["2", "3", "boom"]
    assert "traceback" not in ring.recent()[-1]
    assert [r["msg"] for r in ring.recent(level="error")] == ["3", "boom"]
    assert [r["msg"] for r in ring.recent(component="b")] == ["2"]
    assert [r["msg"] for r in ring.recent(limit=1)] == ["boom"]
    with pytest.raises(ValueError):
        ring.recent(level="loud")


def test_the_runtime_level_changes_what_is_written_and_what_the_ring_keeps() -> None:
    out = io.StringIO()
    settings = LogSettings("info", "json", out)
    log = Logger(namespace="s3orch.x", observer=LogPublisher(settings.observer()))
    try:
        log.debug("before", component="x")
        assert get_log_level() == "info"
        set_log_level("debug")
        log.debug("after", component="x", password="hunter2")
        assert get_log_level() == "debug" and settings.level == "debug"
        written = [json.loads(line)["msg"] for line in out.getvalue().splitlines()]
        assert written == ["after"]
        assert [r["msg"] for r in settings.ring.recent()] == ["after"]
        assert "hunter2" not in json.dumps(settings.ring.recent())
        with pytest.raises(ValueError):
            set_log_level("verbose")
        set_log_level("WARNING")
        assert get_log_level() == "warn"
    finally:
        set_log_level("info")


def test_text_logs_feed_the_ring_too() -> None:
    out = io.StringIO()
    settings = LogSettings("info", "text", out)
    Logger(namespace="s3orch.x", observer=LogPublisher(settings.observer())).info("hi {n}", component="x", n=1)
    assert "hi 1" in out.getvalue()
    assert [r["msg"] for r in settings.ring.recent()] == ["hi 1"]


def test_ndjson_progress_writes_one_stamped_line_per_event_and_survives_a_gone_client() -> None:
    lines: list[bytes] = []
    progress = NDJSONProgress(lines.append, "rid", clock=lambda: 5.0)
    progress.start(total=2)
    progress.step_start("batch", index=0)
    progress.step_end("batch", index=0, done=2, total=2)
    progress.result({"status": "done"})
    events = [json.loads(line) for line in lines]
    assert [e["type"] for e in events] == ["start", "step_start", "step_end", "result"]
    assert all(e["request_id"] == "rid" and e["at"] == 5.0 for e in events)
    assert events[2]["done"] == 2 and events[3]["status"] == "done"
    assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in lines)

    def gone(data: bytes) -> None:
        raise RuntimeError("connection lost")

    broken = NDJSONProgress(gone, "rid")
    broken.start(total=1)
    broken.step_end("x")  # the pass goes on
    assert broken.closed and broken.count == 0
    SilentProgress().start(total=3)  # nobody watching: nothing happens


def test_which_accept_headers_ask_for_ndjson() -> None:
    assert wants_ndjson("application/x-ndjson")
    assert wants_ndjson("application/json, application/x-ndjson;q=0.9")
    assert not wants_ndjson("application/json")
    assert not wants_ndjson(None) and not wants_ndjson("")
