"""Drains through a whole in-process gateway (GatewayHarness, three in-memory backends, a clock):
everything moves off, writes avoid the backend at once, cancel, a restart resumes the drain."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from s3orch.core.drain import Drainer
from s3orch.testing.harness import DEFAULT_CONFIG, GatewayHarness
from s3orch.workers.drainer import DRAIN_INTERVAL, DrainWorker
from tests.unit.test_harness import xml_value
from tests.unit.test_replicator import THIRD, holders, metric, stored, used

CONFIG = DEFAULT_CONFIG.replace("quota_bytes: 1048576", "quota_bytes: 16777216") + THIRD


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayHarness]:
    harness = GatewayHarness(tmp_path, CONFIG).start()
    try:
        yield harness
    finally:
        harness.stop()


def drainer(h: GatewayHarness) -> Drainer:
    found: Any = h.service.getServiceNamed("drain")
    assert isinstance(found, DrainWorker)
    return found.drainer


def fill(h: GatewayHarness, count: int = 5) -> dict[str, bytes]:
    bodies = {f"k{i}": bytes([65 + i]) * (1000 + i) for i in range(count)}
    for key, body in bodies.items():
        assert h.put("photos", key, body).status == 200
    return bodies


def reads_back(h: GatewayHarness, bodies: dict[str, bytes]) -> None:
    for key, body in bodies.items():
        answer = h.get("photos", key)
        assert answer.status == 200, key
        assert hashlib.sha256(answer.body).digest() == hashlib.sha256(body).digest(), key


def test_a_drain_moves_everything_off_and_new_writes_go_elsewhere_at_once(gateway: GatewayHarness) -> None:
    bodies = fill(gateway)
    assert all(holders(gateway, key) == [["backend-1"]] for key in bodies)  # pack: all on the first
    d = drainer(gateway)
    assert gateway.run(d.start("backend-1")) is True
    assert gateway.run(d.start("backend-1")) is False  # already draining
    # A PUT right after the start goes elsewhere (no worker tick needed).
    assert gateway.put("photos", "late", b"late body").status == 200
    assert holders(gateway, "late") == [["backend-2"]]
    status = gateway.run(d.status("backend-1"))
    assert status["active"] and status["objects_remaining"] == 5
    assert status["bytes_remaining"] == sum(len(b) for b in bodies.values())
    gateway.advance(DRAIN_INTERVAL)
    for key in bodies:
        [[holder]] = holders(gateway, key)
        assert holder != "backend-1", key
    reads_back(gateway, {**bodies, "late": b"late body"})
    gateway.advance(DRAIN_INTERVAL)  # the cleanup queue deletes the source copies
    assert stored(gateway, "backend-1") == {}
    assert used(gateway)["backend-1"] == (0, 0, 0, 0)
    status = gateway.run(d.status("backend-1"))
    assert status["state"] == "completed" and status["objects_remaining"] == 0
    assert status["objects_moved"] == 5 and status["bytes_moved"] == sum(len(b) for b in bodies.values())
    # Completed, it still takes no writes until the drain is cancelled.
    assert gateway.put("photos", "later", b"x").status == 200
    assert holders(gateway, "later") != [["backend-1"]]


def test_cancel_makes_the_backend_writable_again_and_keeps_moved_copies(gateway: GatewayHarness) -> None:
    fill(gateway, 2)
    d = drainer(gateway)
    assert gateway.run(d.start("backend-1")) is True
    assert gateway.run(d.cancel("backend-1")) is True
    assert gateway.run(d.cancel("backend-1")) is False
    assert gateway.run(d.status("backend-1")) is None
    assert gateway.put("photos", "after", b"after").status == 200
    assert holders(gateway, "after") == [["backend-1"]]
    gateway.advance(DRAIN_INTERVAL)
    assert holders(gateway, "k0") == [["backend-1"]]  # nothing moved once cancelled


def test_a_drain_with_a_copy_elsewhere_only_drops_the_source(gateway: GatewayHarness) -> None:
    bodies = fill(gateway, 1)
    moved = gateway.run(drainer(gateway).start("backend-2"))  # holds nothing: completes at once
    assert moved is True
    gateway.advance(DRAIN_INTERVAL)
    assert gateway.run(drainer(gateway).status("backend-2"))["state"] == "completed"
    assert holders(gateway, "k0") == [["backend-1"]]
    reads_back(gateway, bodies)


def test_an_unknown_backend_is_refused(gateway: GatewayHarness) -> None:
    with pytest.raises(ValueError):
        gateway.run(drainer(gateway).start("nope"))


def test_a_restart_resumes_the_drain(tmp_path: Path) -> None:
    first = GatewayHarness(tmp_path, CONFIG).start()
    try:
        bodies = fill(first, 3)
        assert first.run(drainer(first).start("backend-1")) is True
        buckets = {name: server.buckets for name, server in first.backends.items()}
    finally:
        first.stop()  # before any drain pass ran
    assert holders_of(tmp_path, buckets, bodies)


def holders_of(tmp_path: Path, buckets: dict[str, Any], bodies: dict[str, bytes]) -> bool:
    second = GatewayHarness(tmp_path, CONFIG)
    for name, server in second.backends.items():
        server.buckets = buckets[name]  # the backends outlive the gateway
    second.start()
    try:
        assert second.put("photos", "new", b"new").status == 200
        assert holders(second, "new") != [["backend-1"]]  # the drain is known before any pass
        second.advance(DRAIN_INTERVAL)
        second.advance(DRAIN_INTERVAL)
        for key in bodies:
            assert holders(second, key) != [["backend-1"]], key
        reads_back(second, bodies)
        assert stored(second, "backend-1") == {}
        return True
    finally:
        second.stop()


def test_events_completed_and_failed_and_metrics(tmp_path: Path) -> None:
    config = (
        CONFIG.replace("quota_bytes: 16777216", "quota_bytes: 3000")
        + 'notifications: {endpoints: [{url: "http://hooks.test/x", events: ["backend.drain.*"]}]}\n'
    )
    with GatewayHarness(tmp_path, config) as h:
        for key in ("a", "b", "c", "d"):
            assert h.put("photos", key, key.encode() * 1400).status == 200  # 2 on each of 1 and 2
        assert holders(h, "c") == [["backend-2"]]
        assert h.put("photos", "e", b"e" * 1400).status == 200  # backend-3
        before = metric("s3o_drain_objects_moved_total", backend="backend-1")
        d = drainer(h)
        assert h.run(d.start("backend-1")) is True
        assert metric("s3o_drain_active", backend="backend-1") == 1
        worker: Any = h.service.getServiceNamed("drain")
        h.run(worker.run_once())
        # Room for one of the two on backend-3 only: one moved, one left.
        assert metric("s3o_drain_objects_moved_total", backend="backend-1") == before + 1
        status = h.run(d.status("backend-1"))
        assert status["state"] == "failed" and status["objects_remaining"] == 1 and "1 copies" in status["error"]
        [failed] = h.run(h.store.due_events(h.clock.seconds() + 86400, 100))
        assert failed.event_type == "backend.drain.failed"
        assert json.loads(failed.payload)["data"]["objects_remaining"] == 1
        h.run(h.store.events_done([failed.id]))
        assert h.delete("photos", "e").status == 204  # room again
        h.run(worker.run_once())  # the next pass moves the last one (no time passes: no tick)
        assert h.run(d.status("backend-1"))["state"] == "completed"
        assert metric("s3o_drain_active", backend="backend-1") == 0
        entries = h.run(h.store.due_events(h.clock.seconds() + 86400, 100))
        assert [entry.event_type for entry in entries] == ["backend.drain.completed"]
        done = json.loads(entries[-1].payload)
        assert done["subject"] == "backend-1" and done["data"]["objects_remaining"] == 0
        h.problems.events.clear()


def test_open_uploads_with_parts_on_the_backend_are_aborted(gateway: GatewayHarness) -> None:
    created = gateway.request("POST", "photos", "big", query=[("uploads", "")])
    upload_id = xml_value(created.body, "UploadId")
    part = gateway.request("PUT", "photos", "big", query=[("partNumber", "1"), ("uploadId", upload_id)], body=b"p" * 100)
    assert part.status == 200
    assert gateway.run(drainer(gateway).start("backend-1")) is True
    listed = gateway.request("GET", "photos", None, query=[("uploads", "")])
    assert upload_id.encode() not in listed.body
    again = gateway.request("PUT", "photos", "big", query=[("partNumber", "2"), ("uploadId", upload_id)], body=b"q")
    assert again.status == 404


def test_with_factor_two_the_drain_keeps_two_copies_elsewhere(tmp_path: Path) -> None:
    config = CONFIG + "replication:\n  factor: 2\n  worker_interval: 600s\n"
    with GatewayHarness(tmp_path, config) as h:
        bodies = fill(h, 3)
        replicator: Any = h.service.getServiceNamed("replicator")
        h.run(replicator.run_now_pass())
        assert all(holders(h, key) == [["backend-1", "backend-2"]] for key in bodies)
        assert h.run(drainer(h).start("backend-1")) is True
        worker: Any = h.service.getServiceNamed("drain")
        h.run(worker.run_once())
        assert all(holders(h, key) == [["backend-2", "backend-3"]] for key in bodies)
        reads_back(h, bodies)


def test_a_put_whose_reservation_races_the_drain_start_is_retried_elsewhere(gateway: GatewayHarness) -> None:
    store: Any = gateway.store
    original = store.reserve
    calls: list[list[str]] = []

    async def racing(intent: Any, names: list[str], *args: Any) -> Any:
        calls.append(list(names))
        reservation = await original(intent, names, *args)
        if len(calls) == 1:  # the drain starts while the first reservation is being made
            await drainer(gateway).start("backend-1")
        return reservation

    store.reserve = racing
    try:
        assert gateway.put("photos", "raced", b"raced body").status == 200
    finally:
        store.reserve = original
    assert calls[0][0] == "backend-1" and "backend-1" not in calls[1]
    assert holders(gateway, "raced") == [["backend-2"]]
    assert stored(gateway, "backend-1") == {}  # no byte was sent there
    assert used(gateway)["backend-1"] == (0, 0, 0, 0)  # its reservation released
    assert gateway.get("photos", "raced").body == b"raced body"


def test_an_object_overwritten_or_deleted_under_the_move_counts_as_a_race_not_a_failure(
    gateway: GatewayHarness,
) -> None:
    from s3orch.core.drain import DrainPass

    fill(gateway, 2)
    d = drainer(gateway)
    assert gateway.run(d.start("backend-1")) is True
    page = gateway.run(gateway.store.backend_extents("backend-1", 10))
    assert [e.key for e in page] == ["k0", "k1"]
    # Between the page and the move: k0 is overwritten (the new write avoids backend-1), k1 deleted.
    assert gateway.put("photos", "k0", b"newer").status == 200
    assert gateway.delete("photos", "k1").status == 204
    raced = metric("s3o_drain_race_aborted_total", backend="backend-1")
    result = DrainPass("backend-1")
    for extent in page:
        gateway.run(d._one("backend-1", extent, result))
    assert (result.moved, result.failed, result.raced) == (0, 0, 2)
    assert metric("s3o_drain_race_aborted_total", backend="backend-1") == raced + 2
    assert gateway.get("photos", "k0").body == b"newer"
    assert gateway.get("photos", "k1").status == 404
    gateway.advance(DRAIN_INTERVAL)
    assert gateway.run(d.status("backend-1"))["state"] == "completed"
