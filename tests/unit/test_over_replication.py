"""The over-replication cleaner through a whole in-process gateway (GatewayHarness, three
in-memory backends, a clock): scoring, quotas, races with the replicator, admin and CLI."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from click.testing import CliRunner
from twisted.internet.defer import Deferred
from twisted.logger import globalLogPublisher

from s3orch.cli import admin as admin_cli
from s3orch.cli.main import cli
from s3orch.core.over_replication import OverReplicationCleaner
from s3orch.testing.harness import GatewayHarness
from s3orch.workers.over_replication import OverReplicationWorker
from tests.unit.test_replicator import CONFIG, INTERVAL, THIRD, TOKEN, holders, metric, stored, used
from tests.unit.test_replicator import worker as replicator_worker

#: backend-3 has a small quota, so it is the fullest backend once it holds a copy.
SMALL_THIRD = CONFIG.replace(THIRD, THIRD.replace("quota_bytes: 16777216", "quota_bytes: 1048576"))
BODY = b"o" * 300_000


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayHarness]:
    assert SMALL_THIRD.count("quota_bytes: 1048576") == 1
    harness = GatewayHarness(tmp_path, SMALL_THIRD).start()
    try:
        yield harness
    finally:
        harness.stop()


def cleaner_worker(h: GatewayHarness) -> OverReplicationWorker:
    found: Any = h.service.getServiceNamed("over-replication")
    assert isinstance(found, OverReplicationWorker)
    return found


def three_copies(h: GatewayHarness, keys: tuple[str, ...] = ("k",)) -> None:
    """Every key in ``keys`` with a copy on each of the three backends (a factor-3 pass, as
    after a backend's recovery the replaced copy comes back)."""
    for key in keys:
        assert h.put("photos", key, BODY).status == 200
    replicator = replicator_worker(h).replicator
    factor2 = replicator.config
    replicator.config = dataclasses.replace(factor2, factor=3)
    try:
        h.run(replicator.run_pass())
    finally:
        replicator.config = factor2
    for key in keys:
        assert holders(h, key) == [["backend-1", "backend-2", "backend-3"]]


def admin(h: GatewayHarness, method: str, path: str, *, ndjson: bool = False) -> Any:
    lines = [
        f"{method} /admin/api/{path} HTTP/1.1", f"Host: {h.host}", "Content-Length: 0", f"X-Admin-Token: {TOKEN}",
    ]
    if ndjson:
        lines.append("Accept: application/x-ndjson")
    response = h.send_raw("\r\n".join(lines).encode() + b"\r\n\r\n")
    assert response.status == 200, response.body
    if ndjson:
        return [json.loads(line) for line in response.body.splitlines()]
    return json.loads(response.body)


def test_the_copy_on_the_fullest_backend_goes_and_quota_settles(gateway: GatewayHarness) -> None:
    three_copies(gateway)
    before = used(gateway)
    removed = metric("s3o_over_replication_removed_total", backend="backend-3")
    result = gateway.run(cleaner_worker(gateway).run_now_pass())
    assert (result.scanned, result.copies_removed, result.bytes_freed) == (1, 1, len(BODY))
    assert holders(gateway, "k") == [["backend-1", "backend-2"]]
    assert stored(gateway, "backend-3") == {}  # its bytes deleted at once
    after = used(gateway)
    assert after["backend-3"] == (0, 0, 0, 0)  # used -> orphan -> freed
    assert after["backend-1"] == before["backend-1"] and after["backend-2"] == before["backend-2"]
    assert gateway.run(gateway.store.cleanup_queue_page(10))[0] == 0
    assert metric("s3o_over_replication_removed_total", backend="backend-3") == removed + 1
    assert gateway.get("photos", "k").body == BODY
    # Nothing more to do: the next pass is empty and the replicator adds nothing back.
    assert gateway.run(cleaner_worker(gateway).cleaner.run_pass()).status == "empty"
    assert gateway.run(replicator_worker(gateway).replicator.run_pass()).copies_created == 0


def test_a_copy_behind_an_open_breaker_goes_before_the_fullest(tmp_path: Path) -> None:
    config = SMALL_THIRD + "backend_circuit_breaker:\n  enabled: true\n  failure_threshold: 1\n  open_timeout: 1h\n"
    with GatewayHarness(tmp_path, config) as h:
        three_copies(h)
        cleaner = cleaner_worker(h).cleaner
        breakers: Any = cleaner.fleet.breakers
        breakers["backend-2"]._move("open")
        scores = h.run(cleaner.scores())
        assert scores["backend-2"] == 1.0 and 2.0 < scores["backend-3"] < scores["backend-1"] <= 3.0
        assert h.run(cleaner_worker(h).run_now_pass()).copies_removed == 1
        assert holders(h, "k") == [["backend-1", "backend-3"]]
        # Its delete could not be sent (open breaker): the row waits in the cleanup queue,
        # its bytes counted as orphaned until then.
        depth, items = h.run(h.store.cleanup_queue_page(10))
        assert depth == 1 and items[0].backend == "backend-2" and items[0].reason == "over_replication"
        assert used(h)["backend-2"][:2] == (0, len(BODY))
        h.problems.events.clear()


def test_a_concurrent_replicator_pass_never_leaves_fewer_than_the_factor(tmp_path: Path) -> None:
    with GatewayHarness(tmp_path, CONFIG) as gateway:  # room for four copies everywhere
        keys = tuple(f"k{i}" for i in range(4))
        three_copies(gateway, keys)
        assert gateway.put("photos", "single", b"s" * 10).status == 200  # one copy: the replicator's work
        replicator = replicator_worker(gateway).replicator
        cleaner = cleaner_worker(gateway).cleaner
        seen: list[int] = []
        store = cleaner.store

        class Watching:
            """The store, counting each extent's copies right after every removal commits."""

            def __getattr__(self, name: str) -> Any:
                return getattr(store, name)

            async def remove_excess(self, extent: Any, *args: Any) -> Any:
                items = await store.remove_excess(extent, *args)
                found = await store.get_object(extent.bucket, extent.key)
                assert found is not None
                seen.append(len(found.extents[0].locations))
                return items

        cleaner.store = Watching()
        outcomes: list[Any] = []
        for coroutine in (cleaner.run_pass(), replicator.run_pass(), cleaner.run_pass(), replicator.run_pass()):
            Deferred.fromCoroutine(coroutine).addBoth(outcomes.append)
        gateway.settle()
        assert len(outcomes) == 4 and not any(hasattr(o, "raiseException") for o in outcomes)
        assert seen and min(seen) == 2
        for key in (*keys, "single"):
            assert len(holders(gateway, key)[0]) == 2, key
            assert gateway.get("photos", key).status == 200
        quotas = used(gateway)
        assert sum(q[0] for q in quotas.values()) == 2 * (len(keys) * len(BODY) + 10)
        assert all(q[1:3] == (0, 0) for q in quotas.values())


def test_an_overwrite_between_scan_and_removal_keeps_every_copy_of_the_new_write(gateway: GatewayHarness) -> None:
    three_copies(gateway)
    cleaner = cleaner_worker(gateway).cleaner
    [extent] = gateway.run(gateway.store.over_replicated(2, 10))
    assert gateway.put("photos", "k", b"new").status == 200
    scores = gateway.run(cleaner.scores())
    assert gateway.run(gateway.store.remove_excess(extent, 2, scores, gateway.clock.seconds(), 60.0)) == []
    assert gateway.get("photos", "k").body == b"new"


def test_a_failing_extent_is_counted_and_the_pass_goes_on(gateway: GatewayHarness) -> None:
    three_copies(gateway, ("a", "b"))
    cleaner = cleaner_worker(gateway).cleaner
    store = cleaner.store
    errors = metric("s3o_over_replication_errors_total")

    class Failing:
        def __getattr__(self, name: str) -> Any:
            return getattr(store, name)

        async def remove_excess(self, extent: Any, *args: Any) -> Any:
            if extent.key == "a":
                raise RuntimeError("database hiccup")
            return await store.remove_excess(extent, *args)

    cleaner.store = Failing()
    result = gateway.run(cleaner.run_pass())
    cleaner.store = store
    assert (result.scanned, result.failed, result.copies_removed, result.status) == (2, 1, 1, "partial")
    assert metric("s3o_over_replication_errors_total") == errors + 1
    assert metric("s3o_over_replication_pending") == 1
    assert len(holders(gateway, "a")[0]) == 3 and len(holders(gateway, "b")[0]) == 2
    assert gateway.run(cleaner.run_pass()).copies_removed == 1  # the next pass finishes it
    gateway.problems.events.clear()


def test_get_previews_without_removing_and_post_streams_progress(gateway: GatewayHarness) -> None:
    three_copies(gateway, ("a", "b"))
    preview = admin(gateway, "GET", "over-replication")
    assert (preview["factor"], preview["pending"]) == (2, 2)
    assert [(r["key"], [v["backend"] for v in r["remove"]]) for r in preview["removals"]] == [
        ("a", ["backend-3"]), ("b", ["backend-3"])
    ]
    assert holders(gateway, "a") == [["backend-1", "backend-2", "backend-3"]]  # nothing removed
    events = admin(gateway, "POST", "over-replication?batch_size=1", ndjson=True)
    assert events[0]["type"] == "start" and events[0]["total"] == 2
    steps = [e for e in events if e["type"] == "step_end"]
    assert [(e["removed"], e["done"]) for e in steps] == [(["backend-3"], 1), (["backend-3"], 2)]
    assert events[-1]["type"] == "result" and events[-1]["status"] == "ok"
    assert events[-1]["copies_removed"] == 2
    assert admin(gateway, "GET", "over-replication")["pending"] == 0
    assert admin(gateway, "POST", "over-replication")["copies_removed"] == 0


def test_factor_one_runs_no_cleaner_and_admin_says_so(tmp_path: Path) -> None:
    config = CONFIG.replace("factor: 2", "factor: 1")
    with GatewayHarness(tmp_path, config) as h:
        with pytest.raises(KeyError):
            h.service.getServiceNamed("over-replication")
        preview = admin(h, "GET", "over-replication")
        assert (preview["status"], preview["pending"], preview["removals"]) == ("skipped", 0, [])
        assert "factor" in preview["reason"]
        answer = admin(h, "POST", "over-replication")
        assert answer["status"] == "skipped" and "factor" in answer["reason"]


def test_the_worker_runs_each_interval_under_its_lock_with_one_correlation_id(gateway: GatewayHarness) -> None:
    found = cleaner_worker(gateway)
    assert (found.lock_id, found.interval, found.component) == (1008, INTERVAL, "over_replication")
    three_copies(gateway)
    seen: list[dict[str, Any]] = []

    def observer(event: dict[str, Any]) -> None:
        if event.get("audit") and str(event.get("event", "")).startswith("over_replication."):
            seen.append(event)

    globalLogPublisher.addObserver(observer)
    try:
        gateway.advance(2 * INTERVAL)
    finally:
        globalLogPublisher.removeObserver(observer)
    assert holders(gateway, "k") == [["backend-1", "backend-2"]]
    removing = [e["request_id"] for e in seen if e["event"] == "over_replication.remove"]
    assert len(removing) == 1 and removing[0].startswith("over_replication-")
    framed = [e["event"] for e in seen if e["request_id"] == removing[0]]
    assert framed == [
        "over_replication.start", "over_replication.remove", "over_replication.cleaned", "over_replication.complete"
    ]
    assert found.last is not None and found.last.run_id.startswith("over_replication-")


class HarnessClient:
    """The admin client's two calls, sent into the in-process gateway (the CLI blocks on
    sockets, which the harness's clock-driven reactor does not serve)."""

    def __init__(self, h: GatewayHarness) -> None:
        self.h = h

    def _path(self, path: str, query: Mapping[str, Any] | None) -> str:
        wanted = {k: v for k, v in (query or {}).items() if v is not None}
        return path + (f"?{urlencode(wanted)}" if wanted else "")

    def call(self, method: str, path: str, *, query: Mapping[str, Any] | None = None, **_: Any) -> Any:
        return admin(self.h, method, self._path(path, query))

    def stream(
        self, method: str, path: str, on_event: Callable[[dict[str, Any]], None], *,
        query: Mapping[str, Any] | None = None, **_: Any,
    ) -> Any:
        events = admin(self.h, method, self._path(path, query), ndjson=True)
        for event in events[:-1]:
            on_event(event)
        return {k: v for k, v in events[-1].items() if k not in ("type", "at")}


def test_the_cli_previews_then_executes(gateway: GatewayHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    three_copies(gateway)
    monkeypatch.setattr(admin_cli, "client_from", lambda options: HarnessClient(gateway))
    env = {"S3ORCH_ADMIN_TOKEN": TOKEN}
    shown = CliRunner().invoke(cli, ["over-replication", "--addr", "127.0.0.1:1"], env=env)
    assert shown.exit_code == 0, shown.output
    assert "over-replicated extents: 1" in shown.stdout and "backend-3 (" in shown.stdout
    assert holders(gateway, "k") == [["backend-1", "backend-2", "backend-3"]]
    done = CliRunner().invoke(
        cli, ["over-replication", "--execute", "--batch-size", "5", "--addr", "127.0.0.1:1"], env=env
    )
    assert done.exit_code == 0, done.output
    assert "copies removed: 1" in done.stdout
    assert holders(gateway, "k") == [["backend-1", "backend-2"]]
    as_json = CliRunner().invoke(cli, ["over-replication", "--json", "--addr", "127.0.0.1:1"], env=env)
    assert json.loads(as_json.stdout)["pending"] == 0


def test_scores_without_a_limit_count_as_empty(gateway: GatewayHarness) -> None:
    cleaner: OverReplicationCleaner = cleaner_worker(gateway).cleaner
    scores = gateway.run(cleaner.scores())
    assert set(scores) == {"backend-1", "backend-2", "backend-3"}
    assert all(2.0 <= s <= 3.0 for s in scores.values())


def test_a_copy_on_a_draining_backend_scores_zero_and_goes_first(gateway: GatewayHarness) -> None:
    three_copies(gateway)
    cleaner: OverReplicationCleaner = cleaner_worker(gateway).cleaner
    # Without a drain the fullest backend (backend-3) would lose its copy.
    assert min(gateway.run(cleaner.scores()).items(), key=lambda kv: kv[1])[0] == "backend-3"
    drainer: Any = gateway.service.getServiceNamed("drain")
    assert gateway.run(drainer.drainer.start("backend-1")) is True
    scores = gateway.run(cleaner.scores())
    assert scores["backend-1"] == 0.0 and all(scores[b] >= 2.0 for b in ("backend-2", "backend-3"))
    preview = gateway.run(cleaner.preview())
    assert [r["backend"] for r in preview["removals"][0]["remove"]] == ["backend-1"]
    assert gateway.run(cleaner_worker(gateway).run_now_pass()).copies_removed == 1
    assert holders(gateway, "k") == [["backend-2", "backend-3"]]
    assert gateway.get("photos", "k").body == BODY
