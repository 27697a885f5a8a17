"""The rebalancer through a whole in-process gateway (GatewayHarness, three in-memory backends,
a clock): spread and pack passes, quotas, the threshold, races with overwrites, a crash between
copy and swap, the worker's schedule, admin and CLI."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from twisted.internet.defer import Deferred
from twisted.logger import globalLogPublisher

from s3orch.cli import admin as admin_cli
from s3orch.cli.main import cli
from s3orch.config.model import RebalanceConfig
from s3orch.core.placement import storage_key
from s3orch.core.replication import REPLICA_HOLD
from s3orch.payload import Payload
from s3orch.store.interface import Intent, ObjectRecord
from s3orch.testing.harness import DEFAULT_CONFIG, GatewayHarness
from s3orch.workers.rebalancer import RebalanceWorker
from tests.unit.test_over_replication import admin
from tests.unit.test_replicator import THIRD, TOKEN, holders, metric, stored, used

INTERVAL = 600.0
BODY = 100_000  # bytes per object; each backend's quota is 1 MiB


def config(routing: str = "pack", **rebalance: Any) -> str:
    settings = {"enabled": "false", "strategy": "spread", "interval": "600s", "batch_size": 100,
                "threshold": 0.1, "concurrency": 2, **rebalance}
    return (
        DEFAULT_CONFIG.replace("routing_strategy: pack", f"routing_strategy: {routing}")
        + THIRD.replace("quota_bytes: 16777216", "quota_bytes: 1048576")
        + "rebalance:\n" + "".join(f"  {k}: {v}\n" for k, v in settings.items())
        + f'ui:\n  admin_token: "{TOKEN}"\n'
    )


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayHarness]:
    harness = GatewayHarness(tmp_path, config()).start()
    try:
        yield harness
    finally:
        harness.stop()


def rebalancer_worker(h: GatewayHarness) -> RebalanceWorker:
    found: Any = h.service.getServiceNamed("rebalancer")
    assert isinstance(found, RebalanceWorker)
    return found


def body(index: int) -> bytes:
    return bytes([65 + index % 26]) * (BODY + index)


def fill(h: GatewayHarness, count: int = 6) -> dict[str, bytes]:
    """``count`` objects, all on backend-1 (pack routing): backend-1 well above the others."""
    bodies = {f"k{i}": body(i) for i in range(count)}
    for key, data in bodies.items():
        assert h.put("photos", key, data).status == 200
    return bodies


def utilisation(h: GatewayHarness) -> dict[str, float]:
    return {name: (q[0] + q[1] + q[2]) / 1048576 for name, q in used(h).items()}


def check_settled(h: GatewayHarness, bodies: dict[str, bytes]) -> None:
    """Every object reads back; each backend holds exactly its recorded copies; quota exact."""
    for key, data in bodies.items():
        assert h.get("photos", key).body == data, key
    quotas = used(h)
    for name in ("backend-1", "backend-2", "backend-3"):
        keys = set(stored(h, name))
        recorded = {
            loc.storage_key
            for key in bodies
            for extent in h.run(h.store.get_object("photos", key)).extents
            for loc in extent.locations
            if loc.backend == name
        }
        assert keys == recorded, name
        assert quotas[name] == (sum(len(stored(h, name)[k]) for k in keys), 0, 0, len(keys)), name


def test_a_spread_pass_evens_the_backends_and_settles_quota_exactly(gateway: GatewayHarness) -> None:
    bodies = fill(gateway)
    assert all(holders(gateway, key) == [["backend-1"]] for key in bodies)
    moved = metric("s3o_rebalance_objects_moved_total", strategy="spread", status="success")
    worker = rebalancer_worker(gateway)
    result = gateway.run(worker.run_now_pass(config=dataclasses.replace(worker.rebalancer.config, enabled=True)))
    assert (result.planned, result.moved, result.failed, result.stale) == (4, 4, 0, 0)
    ratios = utilisation(gateway)
    assert max(ratios.values()) - min(ratios.values()) < 0.1
    assert sorted(len([k for k in bodies if holders(gateway, k) == [[b]]]) for b in ratios) == [2, 2, 2]
    # The smallest copies moved first (k0..k3), the largest stayed.
    assert {k for k in bodies if holders(gateway, k) != [["backend-1"]]} == {"k0", "k1", "k2", "k3"}
    check_settled(gateway, bodies)
    assert metric("s3o_rebalance_objects_moved_total", strategy="spread", status="success") == moved + 4
    # The next pass is under the threshold: skipped, nothing moves back.
    skipped = metric("s3o_rebalance_skipped_total", reason="threshold")
    again = gateway.run(worker.run_now_pass())
    assert (again.skipped, again.moved) == ("threshold", 0)
    assert metric("s3o_rebalance_skipped_total", reason="threshold") == skipped + 1


def test_a_pack_pass_fills_the_first_backends_in_config_order(tmp_path: Path) -> None:
    h = GatewayHarness(tmp_path, config("spread", strategy="pack", threshold=0)).start()
    try:
        bodies = fill(h, 6)  # spread routing: two on each backend
        assert sorted(holders(h, k)[0][0] for k in bodies).count("backend-1") == 2
        result = h.run(rebalancer_worker(h).run_now_pass())
        assert result.moved == 4 and result.status == "success"
        assert all(holders(h, key) == [["backend-1"]] for key in bodies)  # 6 x ~100 kB fit in 1 MiB
        check_settled(h, bodies)
        assert h.run(rebalancer_worker(h).run_now_pass()).skipped == "empty_plan"  # nothing can go further
    finally:
        h.stop()


def test_an_oversized_copy_and_a_target_over_max_object_size_are_skipped(tmp_path: Path) -> None:
    text = config().replace(
        "    bucket: store-2\n", "    bucket: store-2\n    max_object_size: 1000\n"
    )
    h = GatewayHarness(tmp_path, text).start()
    try:
        bodies = {"big": b"B" * 700_000, "small": b"s" * 20_000}
        for key, data in bodies.items():
            assert h.put("photos", key, data).status == 200
        preview = admin(h, "GET", "rebalance")
        # big is larger than any backend's free room below the mean; small cannot go to backend-2.
        assert [(m["key"], m["to"]) for m in preview["moves"]] == [("small", "backend-3")]
        assert h.run(rebalancer_worker(h).run_now_pass()).moved == 1
        assert holders(h, "big") == [["backend-1"]] and holders(h, "small") == [["backend-3"]]
        check_settled(h, bodies)
    finally:
        h.stop()


async def overwrite_k0(h: GatewayHarness, target: str, new_body: bytes) -> None:
    """Commit a new write of k0 on ``target`` (as a client's PUT would), its old copy deleted."""
    rebalancer = rebalancer_worker(h).rebalancer
    store, fleet = rebalancer.store, rebalancer.fleet
    write_id = uuid.uuid4().hex
    skey = storage_key("photos", "k0", write_id)
    now = h.clock.seconds()
    etag = hashlib.md5(new_body).hexdigest()
    res = await store.reserve(Intent(write_id, "photos", "k0", len(new_body), skey, etag=etag), [target], "pack", now)
    assert res is not None
    await fleet[target].put_object(skey, Payload.from_bytes(new_body))
    displaced = await store.commit_object(res, ObjectRecord("photos", "k0", write_id, len(new_body), etag, now), now)
    await rebalancer.cleanups.run(displaced, "overwrite_displaced")


@pytest.mark.parametrize("when", ["before_the_swap", "before_the_copy"])
def test_an_overwrite_racing_the_move_keeps_the_new_write_and_deletes_only_the_moved_copy(
    gateway: GatewayHarness, when: str
) -> None:
    bodies = fill(gateway)
    rebalancer = rebalancer_worker(gateway).rebalancer
    store, copier = rebalancer.store, rebalancer.copier
    original = copier.copy_one
    new_body = b"fresh" * 1000
    raced: list[str] = []

    class Racing:
        """The store, but k0 is overwritten (on the move's target) just before its swap."""

        def __getattr__(self, name: str) -> Any:
            return getattr(store, name)

        async def move_copy(self, extent: Any, reservation: Any, *args: Any) -> Any:
            if extent.key == "k0":
                raced.append(reservation.storage_key)
                await overwrite_k0(gateway, reservation.backend, new_body)
            return await store.move_copy(extent, reservation, *args)

    async def copy_after_overwrite(extent: Any, reservation: Any) -> str:
        """k0 is overwritten (its old copy deleted) before the move reads it."""
        raced.append(reservation.storage_key)
        await overwrite_k0(gateway, reservation.backend, new_body)
        return await original(extent, reservation)

    racing: Any = Racing()
    if when == "before_the_swap":
        rebalancer.store = racing
    else:
        copier.copy_one = copy_after_overwrite  # type: ignore[method-assign]
    try:
        result = gateway.run(rebalancer.run_pass(config=dataclasses.replace(rebalancer.config, batch_size=1)))
    finally:
        rebalancer.store = store
        copier.copy_one = original  # type: ignore[method-assign]
    assert (result.moved, result.stale, result.failed) == (0, 1, 0)
    bodies["k0"] = new_body
    assert gateway.get("photos", "k0").body == new_body
    # The refused move's copy (if one was made) is gone from its backend; nothing else was touched.
    assert raced and all(raced[0] not in stored(gateway, b) for b in ("backend-1", "backend-2", "backend-3"))
    check_settled(gateway, bodies)


def test_a_crash_between_copy_and_swap_leaks_nothing(gateway: GatewayHarness) -> None:
    bodies = fill(gateway)
    rebalancer = rebalancer_worker(gateway).rebalancer
    store = rebalancer.store

    class Dying:
        """The store, but the swap never happens (the process or the database died first)."""

        def __getattr__(self, name: str) -> Any:
            return getattr(store, name)

        async def move_copy(self, *args: Any) -> Any:
            raise ConnectionError("the database went away between copy and swap")

    dying: Any = Dying()
    rebalancer.store = dying
    try:
        result = gateway.run(rebalancer.run_pass(config=dataclasses.replace(rebalancer.config, batch_size=1)))
    finally:
        rebalancer.store = store
    assert (result.moved, result.failed) == (0, 1)
    # The copy is on its target, unrecorded, its bytes counted as orphaned and queued.
    assert holders(gateway, "k0") == [["backend-1"]]
    orphaned = {name: q[1] for name, q in used(gateway).items() if q[1]}
    assert list(orphaned.values()) == [len(bodies["k0"])]
    (target,) = orphaned
    assert len(stored(gateway, target)) == 1
    gateway.advance(REPLICA_HOLD + 120.0)  # the hold expires: the cleanup queue deletes it
    gateway.advance(120.0)
    assert stored(gateway, target) == {}
    check_settled(gateway, bodies)


def test_the_worker_ticks_every_interval_only_when_enabled_and_batch_size_caps_a_pass(tmp_path: Path) -> None:
    h = GatewayHarness(tmp_path, config(enabled="true", batch_size=1)).start()
    try:
        worker = rebalancer_worker(h)
        assert (worker.interval, worker.lock_id, worker.run_now) == (INTERVAL, 1001, False)
        bodies = fill(h)
        log: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(log.append)
        try:
            h.advance(INTERVAL * 1.5)  # jitter of at most half an interval, then the first tick
        finally:
            globalLogPublisher.removeObserver(log.append)
        seen = [e for e in log if e.get("audit") and str(e.get("event", "")).startswith("rebalance.")]
        assert sum(len(holders(h, k)[0]) for k in bodies) == 6
        assert len([k for k in bodies if holders(h, k) != [["backend-1"]]]) == 1  # batch_size 1
        assert worker.status()["enabled"] is True and worker.status()["last_result"] == "success"
        # One pass, framed by the worker, every event carrying the pass's correlation id.
        assert [e["event"] for e in seen] == ["rebalance.start", "rebalance.move", "rebalance.moved",
                                             "rebalance.complete"]
        assert len({e["request_id"] for e in seen}) == 1 and seen[1]["run_id"] == seen[0]["request_id"]
        # Switched off by a reload: the next interval moves nothing.
        worker.reconfigure(dataclasses.replace(worker.rebalancer.config, enabled=False))
        h.advance(INTERVAL)
        assert len([k for k in bodies if holders(h, k) != [["backend-1"]]]) == 1
        worker.reconfigure(dataclasses.replace(worker.rebalancer.config, enabled=True, batch_size=2))
        h.advance(INTERVAL)
        assert len([k for k in bodies if holders(h, k) != [["backend-1"]]]) == 3
        check_settled(h, bodies)
    finally:
        h.stop()


def test_moves_run_at_most_concurrency_at_once(gateway: GatewayHarness) -> None:
    fill(gateway)
    rebalancer = rebalancer_worker(gateway).rebalancer
    copier = rebalancer.copier
    original = copier.copy_one
    held: list[Deferred[None]] = []
    inflight = [0, 0]

    async def holding(extent: Any, reservation: Any) -> str:
        inflight[0] += 1
        inflight[1] = max(inflight)
        gate: Deferred[None] = Deferred()
        held.append(gate)
        await gate
        inflight[0] -= 1
        return await original(extent, reservation)

    copier.copy_one = holding  # type: ignore[method-assign]
    try:
        done: list[Any] = []
        Deferred.fromCoroutine(rebalancer.run_pass(config=RebalanceConfig(concurrency=2, strategy="spread"))).addBoth(
            done.append
        )
        while not done:
            gateway.settle()
            assert inflight[0] <= 2
            while held:
                held.pop(0).callback(None)
            gateway.settle()
    finally:
        copier.copy_one = original  # type: ignore[method-assign]
    assert inflight[1] == 2 and done[0].moved == 4


def test_admin_preview_run_with_ndjson_progress_and_the_cli(gateway: GatewayHarness, monkeypatch: Any) -> None:
    bodies = fill(gateway)
    preview = admin(gateway, "GET", "rebalance")
    assert preview["strategy"] == "spread" and "skipped" not in preview
    assert [b["backend"] for b in preview["backends"]] == ["backend-1", "backend-2", "backend-3"]
    assert len(preview["moves"]) == 4 and all(m["from"] == "backend-1" for m in preview["moves"])
    assert all(holders(gateway, key) == [["backend-1"]] for key in bodies)  # a preview moves nothing
    assert admin(gateway, "GET", "rebalance?strategy=pack")["skipped"] == "empty_plan"
    events = admin(gateway, "POST", "rebalance", ndjson=True)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "result" and kinds.count("step_end") == 4
    result = events[-1]
    assert result["status"] == "ok" and result["ok"] is True and result["moved"] == 4
    check_settled(gateway, bodies)
    # The CLI: a preview table, then --execute (here under the threshold: skipped).
    calls: list[tuple[str, str]] = []

    class Client:
        def call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
            calls.append((method, path))
            return admin(gateway, method, path)

        def stream(self, method: str, path: str, on_event: Any, **kw: Any) -> dict[str, Any]:
            calls.append((method, path))
            answer: dict[str, Any] = admin(gateway, method, path)
            return answer

    monkeypatch.setattr(admin_cli, "client_from", lambda options: Client())
    shown = CliRunner().invoke(cli, ["rebalance"])
    assert shown.exit_code == 0, shown.output
    assert "backend-1" in shown.output and "skipped: threshold" in shown.output
    executed = CliRunner().invoke(cli, ["rebalance", "--execute", "--json"])
    assert executed.exit_code == 0, executed.output
    assert json.loads(executed.output)["reason"] == "threshold"
    assert calls == [("GET", "rebalance"), ("POST", "rebalance")]


def test_with_replicas_a_move_never_puts_two_copies_on_one_backend(tmp_path: Path) -> None:
    text = config() + "replication:\n  factor: 2\n  worker_interval: 3600s\n  batch_size: 50\n"
    h = GatewayHarness(tmp_path, text).start()
    try:
        bodies = fill(h, 6)
        assert admin(h, "POST", "replicate")["copies_created"] == 6  # pack: each on backend-1 and -2
        assert all(holders(h, key) == [["backend-1", "backend-2"]] for key in bodies)
        preview = admin(h, "GET", "rebalance")
        assert preview["moves"] and all(m["to"] == "backend-3" for m in preview["moves"])
        result = h.run(rebalancer_worker(h).run_now_pass())
        assert result.moved == len(preview["moves"]) and result.failed == 0
        for key in bodies:
            (copies,) = holders(h, key)
            assert len(copies) == 2 and len(set(copies)) == 2, (key, copies)
        assert sum("backend-3" in holders(h, key)[0] for key in bodies) == result.moved
        check_settled(h, bodies)
    finally:
        h.stop()


def test_a_draining_backend_is_never_a_target_and_a_pass_writes_rebalance_completed(tmp_path: Path) -> None:
    text = config() + 'notifications: {endpoints: [{url: "http://hooks.test/x", events: ["rebalance.*"]}]}\n'
    h = GatewayHarness(tmp_path, text).start()
    try:
        bodies = fill(h, 6)
        rebalancer = rebalancer_worker(h).rebalancer
        rebalancer.fleet.draining = frozenset({"backend-3"})
        preview = admin(h, "GET", "rebalance")
        assert [b["backend"] for b in preview["backends"]] == ["backend-1", "backend-2"]
        assert preview["moves"] and all(m["to"] == "backend-2" for m in preview["moves"])
        result = h.run(rebalancer_worker(h).run_now_pass())
        assert result.moved == len(preview["moves"]) and stored(h, "backend-3") == {}
        check_settled(h, bodies)
        entries = h.run(h.store.due_events(h.clock.seconds() + 60, 100))
        assert [e.event_type for e in entries] == ["rebalance.completed"]
        data = json.loads(entries[0].payload)["data"]
        assert (data["moved"], data["strategy"], data["run_id"]) == (result.moved, "spread", result.run_id)
    finally:
        h.stop()


def test_a_reload_switches_the_rebalancer_on_with_its_new_settings(gateway: GatewayHarness) -> None:
    worker = rebalancer_worker(gateway)
    assert worker.enabled is False
    reloader: Any = gateway.service.reloader
    new = dataclasses.replace(
        reloader.current, rebalance=RebalanceConfig(enabled=True, strategy="pack", interval=300.0, batch_size=7)
    )
    outcome = gateway.run(reloader.apply(new))
    assert outcome["status"] == "ok" and outcome["restart_required"] == []
    assert {"rebalance.enabled", "rebalance.interval", "rebalance.batch_size"} <= set(outcome["changed"])
    assert worker.enabled is True and worker.interval == 300.0
    assert (worker.rebalancer.config.strategy, worker.rebalancer.config.batch_size) == ("pack", 7)
