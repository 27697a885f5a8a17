"""Drains through a whole in-process gateway (GatewayHarness, three in-memory backends, a clock):
everything moves off, writes avoid the backend at once, cancel, a restart resumes the drain."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from s3orch.core.drain import Drainer
from s3orch.testing.harness import DEFAULT_CONFIG, GatewayHarness
from s3orch.workers.drainer import DRAIN_INTERVAL, DrainWorker
from tests.unit.test_replicator import THIRD, holders, run, stored, used

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
    assert run(gateway, d.start("backend-1")) is True
    assert run(gateway, d.start("backend-1")) is False  # already draining
    # A PUT right after the start goes elsewhere (no worker tick needed).
    assert gateway.put("photos", "late", b"late body").status == 200
    assert holders(gateway, "late") == [["backend-2"]]
    status = run(gateway, d.status("backend-1"))
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
    status = run(gateway, d.status("backend-1"))
    assert status["state"] == "completed" and status["objects_remaining"] == 0
    assert status["objects_moved"] == 5 and status["bytes_moved"] == sum(len(b) for b in bodies.values())
    # Completed, it still takes no writes until the drain is cancelled.
    assert gateway.put("photos", "later", b"x").status == 200
    assert holders(gateway, "later") != [["backend-1"]]


def test_cancel_makes_the_backend_writable_again_and_keeps_moved_copies(gateway: GatewayHarness) -> None:
    fill(gateway, 2)
    d = drainer(gateway)
    assert run(gateway, d.start("backend-1")) is True
    assert run(gateway, d.cancel("backend-1")) is True
    assert run(gateway, d.cancel("backend-1")) is False
    assert run(gateway, d.status("backend-1")) is None
    assert gateway.put("photos", "after", b"after").status == 200
    assert holders(gateway, "after") == [["backend-1"]]
    gateway.advance(DRAIN_INTERVAL)
    assert holders(gateway, "k0") == [["backend-1"]]  # nothing moved once cancelled


def test_a_drain_with_a_copy_elsewhere_only_drops_the_source(gateway: GatewayHarness) -> None:
    bodies = fill(gateway, 1)
    moved = run(gateway, drainer(gateway).start("backend-2"))  # holds nothing: completes at once
    assert moved is True
    gateway.advance(DRAIN_INTERVAL)
    assert run(gateway, drainer(gateway).status("backend-2"))["state"] == "completed"
    assert holders(gateway, "k0") == [["backend-1"]]
    reads_back(gateway, bodies)


def test_an_unknown_backend_is_refused(gateway: GatewayHarness) -> None:
    with pytest.raises(ValueError):
        run(gateway, drainer(gateway).start("nope"))


def test_a_restart_resumes_the_drain(tmp_path: Path) -> None:
    first = GatewayHarness(tmp_path, CONFIG).start()
    try:
        bodies = fill(first, 3)
        assert run(first, drainer(first).start("backend-1")) is True
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
