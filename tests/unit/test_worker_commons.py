"""Every data-placement worker keeps the same commons (issue 16 item 9), walked over the workers a
whole gateway registers (GatewayHarness: three in-memory backends, factor 2, a clock):

* its advisory lock per tick, with the id BEHAVIOURS §1.39 gives it, skipped while held elsewhere;
* a start-up jitter of up to half its interval;
* each pass framed by ``<component>.start`` / ``<component>.complete`` audit events, with its
  step events in between, all under one run id;
* the worker metrics (``s3o_worker_*``) and the metric and webhook names BEHAVIOURS gives it;
* its status in ``GET /admin/api/workers`` (last run, last result, next run, lock holder).
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from twisted.logger import globalLogPublisher

from s3orch.notify import events as ev
from s3orch.observe.metrics import REGISTRY
from s3orch.store.interface import Intent
from s3orch.store.locks import WorkerLock
from s3orch.testing.harness import GatewayHarness
from s3orch.workers.base import PeriodicWorker
from tests.unit.test_audit_events import AuditLines
from tests.unit.test_harness import xml_value
from tests.unit.test_over_replication import three_copies
from tests.unit.test_replicator import CONFIG, TOKEN, metric

DAY = 86400.0
STALE_UPLOAD = 3600.0
FEATURES = (
    "lifecycle:\n  rules:\n    - prefix: \"photos/tmp/\"\n      expiration_days: 1\n"
    f"cleanup_queue:\n  multipart_stale_timeout: {int(STALE_UPLOAD)}s\n"
    'notifications: {endpoints: [{url: "http://hook.test/x", events: ["*"], max_retries: 1000}]}\n'
    "integrity:\n  enabled: true\n  scrubber_interval: 6h\n"
    # on, but its threshold keeps it still until its own work (below) lowers it
    "rebalance:\n  enabled: true\n  strategy: spread\n  interval: 6h\n  threshold: 0.99\n"
    "reconcile:\n  enabled: true\n  interval: 6h\n"
)


@dataclass(frozen=True)
class Commons:
    """What one placement worker must have: its service name, component, lock, the step audit
    event a pass with work writes, and the metric and webhook names BEHAVIOURS gives it."""

    name: str
    component: str
    lock: WorkerLock
    step: str
    metrics: tuple[str, ...]
    events: tuple[str, ...] = ()
    #: The webhook events a pass with this test's work writes to the outbox.
    emitted: tuple[str, ...] = ()


PLACEMENT = (
    Commons("replicator", "replication", WorkerLock.REPLICATOR, "replication.copy",
            ("s3o_replication_copies_created_total", "s3o_replication_runs_total", "s3o_replication_pending",
             "s3o_replication_health_copies_total"),
            (ev.REPLICATION_COMPLETED, ev.REPLICATION_TARGET_EXHAUSTED), (ev.REPLICATION_COMPLETED,)),
    Commons("over-replication", "over_replication", WorkerLock.OVER_REPLICATION, "over_replication.remove",
            ("s3o_over_replication_removed_total", "s3o_over_replication_runs_total",
             "s3o_over_replication_pending")),
    Commons("drain", "drain", WorkerLock.DRAIN, "drain.move",
            ("s3o_drain_active", "s3o_drain_objects_moved_total", "s3o_drain_bytes_moved_total",
             "s3o_drain_race_aborted_total"),
            (ev.DRAIN_COMPLETED, ev.DRAIN_FAILED), (ev.DRAIN_COMPLETED,)),
    Commons("lifecycle", "lifecycle", WorkerLock.LIFECYCLE, "lifecycle.delete",
            ("s3o_lifecycle_deleted_total", "s3o_lifecycle_runs_total"),
            (ev.LIFECYCLE_DELETE, ev.LIFECYCLE_COMPLETED), (ev.LIFECYCLE_DELETE, ev.LIFECYCLE_COMPLETED)),
    Commons("cleanup-queue", "cleanup_queue", WorkerLock.CLEANUP, "cleanup_queue.processed",
            ("s3o_cleanup_queue_processed_total", "s3o_cleanup_queue_depth", "s3o_cleanup_dlq_depth"),
            (ev.CLEANUP_EXHAUSTED,)),
    Commons("multipart-gc", "multipart_gc", WorkerLock.MULTIPART_GC, "storage.MultipartCleanup",
            ("s3o_active_multipart_uploads",)),
    Commons("pending-reaper", "pending_reaper", WorkerLock.PENDING_REAPER, "pending_reaper.dropped",
            ("s3o_pending_intents_resolved_total", "s3o_pending_intents_depth")),
    Commons("rebalancer", "rebalance", WorkerLock.REBALANCER, "rebalance.move",
            ("s3o_rebalance_objects_moved_total", "s3o_rebalance_bytes_moved_total", "s3o_rebalance_runs_total"),
            (ev.REBALANCE_COMPLETED,), (ev.REBALANCE_COMPLETED,)),
    Commons("reconcile", "reconcile", WorkerLock.RECONCILE, "reconcile.remove",
            ("s3o_reconcile_runs_total", "s3o_reconcile_keys_total", "s3o_reconcile_objects_lost_total"),
            (ev.RECONCILE_OBJECT_LOST, ev.RECONCILE_COMPLETED), (ev.RECONCILE_COMPLETED,)),
    Commons("scrubber", "scrubber", WorkerLock.SCRUBBER, "integrity.corruption_detected",
            ("s3o_integrity_checks_total", "s3o_integrity_errors_total", "s3o_integrity_never_verified_copies",
             "s3o_integrity_oldest_unverified_seconds"),
            (ev.CORRUPTION_DETECTED,), (ev.CORRUPTION_DETECTED,)),
)
BY_NAME = {c.name: c for c in PLACEMENT}


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayHarness]:
    harness = GatewayHarness(tmp_path, CONFIG + FEATURES).start()
    try:
        yield harness
    finally:
        harness.problems.events.clear()
        harness.stop()


@pytest.fixture
def audit_lines() -> Iterator[AuditLines]:
    lines = AuditLines()
    globalLogPublisher.addObserver(lines)
    yield lines
    globalLogPublisher.removeObserver(lines)


def placement_worker(h: GatewayHarness, name: str) -> PeriodicWorker:
    found: Any = h.service.getServiceNamed(name)
    assert isinstance(found, PeriodicWorker)
    return found


def jump(h: GatewayHarness, seconds: float) -> None:
    """Move the clock in one step (each worker catches up once) and run what became due."""
    h.settle()
    h.clock.rightNow += seconds
    h.settle()


# -- work for each worker's pass ----------------------------------------------------------------


def _replicator(h: GatewayHarness) -> None:
    assert h.put("photos", "one-copy", b"r" * 500).status == 200


def _over_replication(h: GatewayHarness) -> None:
    three_copies(h, ("excess",))


def _drain(h: GatewayHarness) -> None:
    assert h.put("photos", "on-one", b"d" * 500).status == 200
    drain: Any = h.service.getServiceNamed("drain")
    assert h.run(drain.drainer.start("backend-1")) is True


def _lifecycle(h: GatewayHarness) -> None:
    assert h.put("photos", "tmp/old", b"l" * 10).status == 200
    jump(h, 2 * DAY)


def _cleanup(h: GatewayHarness) -> None:
    server: Any = h.backends["backend-1"]
    original = server.render

    def refuse_deletes(request: Any) -> bytes:
        if request.method == b"DELETE":
            request.setResponseCode(503)
            return b"<?xml version='1.0'?><Error><Code>SlowDown</Code><Message>later</Message></Error>"
        result: bytes = original(request)
        return result

    server.render = refuse_deletes
    assert h.put("photos", "gone", b"c" * 10).status == 200
    assert h.delete("photos", "gone").status == 204
    assert h.run(h.store.cleanup_queue_page(10))[0] >= 1
    server.render = original


def _multipart_gc(h: GatewayHarness) -> None:
    created = h.request("POST", "photos", "abandoned", query=[("uploads", "")])
    upload_id = xml_value(created.body, "UploadId")
    part = h.request("PUT", "photos", "abandoned", query=[("partNumber", "1"), ("uploadId", upload_id)],
                     body=b"p" * 100)
    assert part.status == 200
    jump(h, 2 * STALE_UPLOAD)


def _pending_reaper(h: GatewayHarness) -> None:
    # A write that reserved room and never committed, and whose bytes never arrived.
    intent = Intent(uuid.uuid4().hex, "photos", "ghost", 5, f"ghost-{uuid.uuid4().hex}")
    assert h.run(h.store.reserve(intent, ["backend-2"], "pack", h.clock.seconds())) is not None
    jump(h, 600)


def _rebalancer(h: GatewayHarness) -> None:
    for i in range(4):  # two copies each, on backend-1 and backend-2: backend-3 is empty
        assert h.put("photos", f"heavy-{i}", b"h" * 200_000).status == 200
    h.run(placement_worker(h, "replicator").replicator.run_pass())  # type: ignore[attr-defined]
    worker: Any = placement_worker(h, "rebalancer")
    worker.rebalancer.config = dataclasses.replace(worker.rebalancer.config, threshold=0.0)


def _reconcile(h: GatewayHarness) -> None:
    from tests.unit.test_integrity import replicated
    from tests.unit.test_replicator import record

    first, _ = replicated(h, "lost-copy", b"x" * 500)
    (location,) = [loc for loc in record(h, "lost-copy").locations if loc.backend == first]
    bucket = {"backend-1": "store-1", "backend-2": "store-2", "backend-3": "store-3"}[first]
    del h.backends[first].objects(bucket)[location.storage_key]  # gone behind s3orch's back
    jump(h, 2 * 3600)  # past the reconciler's grace period


def _scrubber(h: GatewayHarness) -> None:
    from tests.unit.test_integrity import corrupt, replicated

    first, _ = replicated(h, "scrub-me", b"s" * 5000)
    corrupt(h, first, "scrub-me")


WORK: dict[str, Callable[[GatewayHarness], None]] = {
    "scrubber": _scrubber,
    "reconcile": _reconcile,
    "rebalancer": _rebalancer,
    "replicator": _replicator,
    "over-replication": _over_replication,
    "drain": _drain,
    "lifecycle": _lifecycle,
    "cleanup-queue": _cleanup,
    "multipart-gc": _multipart_gc,
    "pending-reaper": _pending_reaper,
}


# -- the walk -------------------------------------------------------------------------------------


def test_every_placement_worker_is_registered_exclusive_and_audited(gateway: GatewayHarness) -> None:
    registered = {w.name: w for w in gateway.service.workers if isinstance(w, PeriodicWorker)}
    assert set(BY_NAME) <= set(registered)
    locked = {name for name, w in registered.items() if w.exclusive}
    # Every worker under a lock is a placement worker of the table (a new one must join it),
    # but the notifier (it moves webhook rows, not data).
    assert locked - set(BY_NAME) == {"notifier"}, "add the new locked worker to PLACEMENT"
    ids = set()
    for commons in PLACEMENT:
        worker = registered[commons.name]
        assert worker.component == commons.component, commons
        assert worker.exclusive and worker.lock_id == commons.lock, commons
        assert worker.audited and worker.interval > 0, commons
        ids.add(worker.lock_id)
        for name in commons.metrics:
            assert REGISTRY.get_sample_value(name) is not None or any(
                m.name == name.removesuffix("_total") or m.name == name for m in REGISTRY.collect()
            ), name
        for event in commons.events:
            assert event in vars(ev).values(), event
    assert len(ids) == len(PLACEMENT)  # no two share a lock


def test_every_placement_worker_starts_after_a_jitter_of_up_to_half_its_interval(gateway: GatewayHarness) -> None:
    for commons in PLACEMENT:
        worker = placement_worker(gateway, commons.name)
        gateway.settle()
        gateway.run(_stopped(worker))
        original = worker.jitter
        worker.jitter = lambda: 0.5
        try:
            worker.startService()
            now = gateway.clock.seconds()
            assert worker.status()["next_run_at"] == pytest.approx(now + worker.interval / 4), commons
            worker.jitter = lambda: 7.0  # out of range: clamped to half the interval
            gateway.run(_stopped(worker))
            worker.startService()
            assert worker.status()["next_run_at"] == pytest.approx(now + worker.interval / 2), commons
        finally:
            worker.jitter = original


async def _stopped(worker: PeriodicWorker) -> None:
    done = worker.stopService()
    if done is not None:
        await done


@pytest.mark.parametrize("name", list(BY_NAME))
def test_a_pass_with_work_is_framed_by_one_run_id_counted_and_shown(
    gateway: GatewayHarness, audit_lines: AuditLines, name: str
) -> None:
    commons = BY_NAME[name]
    worker = placement_worker(gateway, name)
    ticks = metric("s3o_worker_ticks_total", service=commons.component, result="success")
    WORK[name](gateway)
    steps = audit_lines.named(commons.step)
    for _ in range(3):  # the work waits for the worker's next tick (after its jitter, a backoff)
        if steps:
            break
        gateway.advance(worker.interval)
        steps = audit_lines.named(commons.step)
    assert steps, f"{name}: no {commons.step} audit event"
    run_id = steps[0]["request_id"]
    assert str(run_id).startswith(f"{commons.component}-"), run_id
    framed = audit_lines.of_request(run_id)
    assert framed[0] == f"{commons.component}.start" and framed[-1] == f"{commons.component}.complete", framed
    assert commons.step in framed[1:-1]
    complete = [e for e in audit_lines.named(f"{commons.component}.complete") if e["request_id"] == run_id]
    assert complete[0]["result"] == "success"
    # Metrics of the worker base, and its status (here and through the admin API).
    assert metric("s3o_worker_ticks_total", service=commons.component, result="success") > ticks
    assert metric("s3o_worker_last_success_timestamp_seconds", service=commons.component) >= steps[0]["log_time"] - 1
    assert metric("s3o_worker_consecutive_failures", service=commons.component) == 0
    status = worker.status()
    assert status["last_result"] == "success" and status["lock_holder"] == "this instance"
    assert status["lock_id"] == commons.lock and status["next_run_at"] > gateway.clock.seconds() - 1
    outbox = {row.event_type for row in gateway.run(gateway.store.due_events(gateway.clock.seconds() + DAY, 1000))}
    assert set(commons.emitted) <= outbox, (commons.emitted, outbox)
    listed = {w["name"]: w for w in _admin_workers(gateway)}
    assert listed[name]["last_result"] == "success" and listed[name]["lock_id"] == int(commons.lock)
    for field in ("last_tick_at", "last_finished_at", "next_run_at", "lock_holder", "consecutive_failures"):
        assert field in listed[name], field


@pytest.mark.parametrize("name", list(BY_NAME))
def test_a_tick_is_skipped_while_another_holder_has_the_lock(
    gateway: GatewayHarness, audit_lines: AuditLines, name: str
) -> None:
    commons = BY_NAME[name]
    worker = placement_worker(gateway, name)
    assert worker.locks is not None
    gateway.settle()
    assert gateway.run(worker.locks.try_lock(commons.lock)) is True  # another instance's tick
    try:
        audit_lines.clear()
        skipped = metric("s3o_worker_ticks_total", service=commons.component, result="skipped")
        assert gateway.run(worker.run_once()) is True
        assert metric("s3o_worker_ticks_total", service=commons.component, result="skipped") == skipped + 1
        status = worker.status()
        assert status["last_result"] == "skipped" and status["lock_holder"] == "another instance"
        assert audit_lines.named(f"{commons.component}.start") == []  # skipped silently
    finally:
        gateway.run(worker.locks.release(commons.lock))


def _admin_workers(h: GatewayHarness) -> list[dict[str, Any]]:
    lines = [
        "GET /admin/api/workers HTTP/1.1", f"Host: {h.host}", "Content-Length: 0", f"X-Admin-Token: {TOKEN}",
    ]
    response = h.send_raw("\r\n".join(lines).encode() + b"\r\n\r\n")
    assert response.status == 200, response.body
    workers: list[dict[str, Any]] = json.loads(response.body)["workers"]
    return workers
