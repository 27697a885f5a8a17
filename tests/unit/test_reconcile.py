"""Reconcile and sync/import: the sorted merge on in-memory lists, then whole passes in a clock-driven
gateway (in-memory S3 backends behind the real client, SQLite), through the admin API."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
from twisted.internet.defer import Deferred

from s3orch.core.placement import storage_key
from s3orch.core.reconcile import OutOfOrder, ascending, merge, own_key
from s3orch.core.sync import client_key
from s3orch.observe.placement_metrics import RECONCILE_OBJECTS_LOST
from s3orch.store.records import StoredCopy
from s3orch.testing.harness import DEFAULT_CONFIG, GatewayHarness
from s3orch.workers.reconciler import ReconcileWorker

_T = TypeVar("_T")

HOUR = 3600.0
TOKEN = "tok"


def _run(coroutine: Any) -> Any:
    """Run a coroutine that never waits on the reactor (in-memory sources) to its result."""
    out: list[Any] = []
    Deferred.fromCoroutine(coroutine).addBoth(out.append)
    (result,) = out
    if hasattr(result, "raiseException"):
        result.raiseException()
    return result


async def _pages(items: Sequence[_T], size: int) -> AsyncIterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
    if not items:
        yield []


def _copy(key: str) -> StoredCopy:
    return StoredCopy(key, "b", key, 0, "w", 1, 0.0)


async def _merged(listed: list[str], stored: list[str], left: int, right: int) -> list[tuple[str | None, str | None]]:
    pairs = []
    async for on_backend, in_db in merge(
        ascending(_pages([(k, 1) for k in listed], left), lambda i: i[0], "backend"),
        ascending(_pages([_copy(k) for k in stored], right), lambda c: c.storage_key, "database"),
    ):
        pairs.append((on_backend[0] if on_backend else None, in_db.storage_key if in_db else None))
    return pairs


@pytest.mark.parametrize(("left", "right"), [(1, 1), (2, 3), (3, 2), (1000, 1000)])
def test_the_merge_pairs_every_key_whatever_the_page_boundaries(left: int, right: int) -> None:
    listed = ["a", "b", "d", "e", "g", "h"]
    stored = ["b", "c", "d", "f", "h", "i"]
    assert _run(_merged(listed, stored, left, right)) == [
        ("a", None), ("b", "b"), (None, "c"), ("d", "d"), ("e", None), (None, "f"),
        ("g", None), ("h", "h"), (None, "i"),
    ]


def test_the_merge_of_empty_sides_and_byte_order_of_non_ascii_keys() -> None:
    assert _run(_merged([], [], 2, 2)) == []
    assert _run(_merged(["x"], [], 2, 2)) == [("x", None)]
    assert _run(_merged([], ["x"], 2, 2)) == [(None, "x")]
    keys = sorted(["Z", "a", "é", "\U0001f600", "z"], key=lambda k: k.encode())
    assert _run(_merged(keys, keys, 2, 3)) == [(k, k) for k in keys]


def test_a_side_out_of_order_stops_the_merge_before_anything_is_decided() -> None:
    with pytest.raises(OutOfOrder, match="backend listing is not in byte order"):
        _run(_merged(["a", "c", "b"], ["a", "b", "c"], 2, 2))
    with pytest.raises(OutOfOrder, match="database"):
        _run(_merged(["a"], ["a", "a"], 1, 1))


def test_own_keys_are_our_layout_under_a_configured_bucket_only() -> None:
    prefixes = frozenset({"photos", "documents"})
    ours = storage_key("photos", "cat.jpg", "0123456789abcdef0123456789abcdef")
    assert own_key(ours, prefixes)
    assert own_key(ours + ".r00000-" + "f" * 32, prefixes)  # a replica's key
    assert not own_key(storage_key("other", "cat.jpg", "ab" * 16), prefixes)  # a bucket we do not serve
    assert not own_key("photos/cat.jpg", prefixes)  # the original's {bucket}/{key}
    assert not own_key("photos/" + "0" * 64, prefixes) and not own_key("cat.jpg", prefixes)


def test_sync_names_keys_in_the_originals_layout_and_leaves_other_buckets_alone() -> None:
    prefixes = frozenset({"photos", "documents"})
    others = frozenset({"documents"})
    assert client_key("photos/2024/cat.jpg", "photos", others, prefixes) == "2024/cat.jpg"
    assert client_key("2024/cat.jpg", "photos", others, prefixes) == "2024/cat.jpg"
    assert client_key("documents/cv.pdf", "photos", others, prefixes) is None
    assert client_key("photos/", "photos", others, prefixes) is None
    assert client_key(storage_key("photos", "k", "ab" * 16), "photos", others, prefixes) is None


# --- whole passes in a gateway -------------------------------------------------------------------


def config(grace: str = "0s", enabled: bool = False) -> str:
    return DEFAULT_CONFIG + (
        f'ui:\n  admin_token: "{TOKEN}"\nreconcile:\n  enabled: {str(enabled).lower()}\n'
        f'  interval: "1h"\n  grace_period: "{grace}"\n'
    )


def admin(h: GatewayHarness, path: str, ndjson: bool = False) -> Any:
    accept = "Accept: application/x-ndjson\r\n" if ndjson else ""
    response = h.send_raw(
        f"POST /admin/api/{path} HTTP/1.1\r\nHost: {h.host}\r\nX-Admin-Token: {TOKEN}\r\n"
        f"Content-Length: 0\r\n{accept}\r\n".encode()
    )
    assert response.status == 200, response.text
    if ndjson:
        return [json.loads(line) for line in response.body.splitlines()]
    return json.loads(response.body)


def on_backend(h: GatewayHarness, name: str = "backend-1") -> dict[str, Any]:
    server = h.backends[name]
    (bucket,) = server.buckets
    return server.objects(bucket)


def location(h: GatewayHarness, bucket: str, key: str) -> list[tuple[str, str]]:
    out: list[Any] = []
    Deferred.fromCoroutine(h.store.get_object(bucket, key)).addBoth(out.append)
    h.settle()
    record = out[0]
    return [] if record is None else [(loc.backend, loc.storage_key) for loc in record.locations]


def quotas(h: GatewayHarness) -> dict[str, tuple[int, int]]:
    out: list[Any] = []
    Deferred.fromCoroutine(h.store.get_quotas()).addBoth(out.append)
    h.settle()
    return {name: (row.bytes_used, row.object_count) for name, row in out[0].items()}


def test_a_pass_forgets_lost_objects_queues_our_orphans_and_leaves_foreign_keys(tmp_path: Path) -> None:
    with GatewayHarness(tmp_path, config()) as h:
        for key in ("keep", "lose", "also-lose"):
            assert h.put("photos", key, key.encode() * 10).status == 200
        objects = on_backend(h)
        for key in ("lose", "also-lose"):  # deleted behind s3orch's back
            [(_, backend_key)] = location(h, "photos", key)
            del objects[backend_key]
        stray = storage_key("photos", "never-committed", "ab" * 16)
        h.backends["backend-1"].put("store-1", stray, b"orphan bytes")
        h.backends["backend-1"].put("store-1", "someone-else/file.txt", b"foreign")
        h.backends["backend-1"].put("store-1", storage_key("not-ours", "k", "cd" * 16), b"other bucket")
        lost_before = RECONCILE_OBJECTS_LOST.labels("backend-1")._value.get()
        events = admin(h, "reconcile", ndjson=True)
        assert events[0]["type"] == "start" and events[-1]["type"] == "result"
        result = events[-1]
        assert (result["status"], result["outcome"], result["imported"]) == ("ok", "success", 0)
        assert (result["lost"], result["orphaned"], result["foreign"], result["matched"]) == (2, 1, 2, 1)
        assert result["backends_scanned"] == 2
        assert sorted(o["key"] for o in result["lost_objects"]) == ["also-lose", "lose"]
        assert RECONCILE_OBJECTS_LOST.labels("backend-1")._value.get() == lost_before + 2
        assert h.get("photos", "lose").status == 404 and h.get("photos", "keep").body == b"keep" * 10
        assert quotas(h)["backend-1"] == (40, 1)
        assert stray in objects  # queued, deleted after the grace period by the cleanup queue
        assert "someone-else/file.txt" in objects
        queued = admin(h, "reconcile")  # the orphan is queued: never queued twice, never adopted
        assert (queued["suppressed_pending_cleanup"], queued["orphaned"], queued["lost"]) == (1, 0, 0)
        h.advance(120)  # the cleanup queue's next tick
        assert stray not in objects and "someone-else/file.txt" in objects
        again = admin(h, "reconcile")
        assert (again["lost"], again["orphaned"], again["foreign"], again["matched"]) == (0, 0, 2, 1)


def test_a_copy_younger_than_the_grace_period_is_kept_until_it_is_older(tmp_path: Path) -> None:
    with GatewayHarness(tmp_path, config(grace="10m")) as h:
        assert h.put("photos", "young", b"data").status == 200
        [(_, backend_key)] = location(h, "photos", "young")
        del on_backend(h)[backend_key]
        first = admin(h, "reconcile?backend=backend-1")
        assert (first["kept"], first["lost"], first["backends_scanned"]) == (1, 0, 1)
        assert location(h, "photos", "young") != []
        h.advance(11 * 60)
        later = admin(h, "reconcile?backend=backend-1")
        assert (later["kept"], later["lost"]) == (0, 1)
        assert location(h, "photos", "young") == []


def test_an_unknown_backend_is_a_400(tmp_path: Path) -> None:
    with GatewayHarness(tmp_path, config()) as h:
        response = h.send_raw(
            f"POST /admin/api/reconcile?backend=nope HTTP/1.1\r\nHost: {h.host}\r\nX-Admin-Token: {TOKEN}\r\n"
            "Content-Length: 0\r\n\r\n".encode()
        )
        assert response.status == 400 and "unknown backend" in response.text


def test_the_worker_ticks_every_interval_only_when_enabled(tmp_path: Path) -> None:
    with GatewayHarness(tmp_path / "off", config()) as h:
        worker = h.service.getServiceNamed("reconcile")
        assert isinstance(worker, ReconcileWorker)
        h.advance(2 * HOUR)
        assert worker.last is None and worker.status()["next_run_at"] is None
    with GatewayHarness(tmp_path / "on", config(enabled=True)) as h:
        worker = h.service.getServiceNamed("reconcile")
        assert isinstance(worker, ReconcileWorker) and worker.interval == HOUR
        assert h.put("photos", "k", b"v").status == 200
        [(_, backend_key)] = location(h, "photos", "k")
        del on_backend(h)[backend_key]
        h.advance(1.5 * HOUR)  # the first tick: one interval after a jitter of up to half of one
        assert worker.last is not None and worker.status()["last_result"] == "success"
        assert location(h, "photos", "k") == [] and h.get("photos", "k").status == 404
        first = worker.last.run_id
        h.advance(HOUR)
        assert worker.last.run_id != first and worker.last.total("scanned") == 0


def test_sync_imports_in_place_reads_back_and_a_second_run_imports_nothing(tmp_path: Path) -> None:
    with GatewayHarness(tmp_path, config()) as h:
        assert h.put("photos", "mine.txt", b"written through s3orch").status == 200
        server = h.backends["backend-2"]
        files = {
            "photos/2024/cat.jpg": b"meow" * 100,  # the original product's layout
            "loose.txt": b"no bucket head",
            "mine.txt": b"must not replace s3orch's object",
            "documents/cv.pdf": b"another bucket's",
        }
        for key, data in files.items():
            server.put("store-2", key, data)
        dry = admin(h, "sync?backend=backend-2&bucket=photos&dry_run=true", ndjson=True)
        result = dry[-1]
        assert (result["status"], result["dry_run"], result["imported"], result["skipped"]) == ("ok", True, 2, 1)
        assert sorted(k["key"] for k in result["keys"]) == ["2024/cat.jpg", "loose.txt"]
        assert result["other_bucket"] == 1 and h.get("photos", "2024/cat.jpg").status == 404
        before = quotas(h).get("backend-2", (0, 0))
        only = admin(h, "sync?backend=backend-2&bucket=photos&prefix=photos/2024/")
        assert (only["scanned"], only["imported"], only["prefix"]) == (1, 1, "photos/2024/")
        assert h.get("photos", "2024/cat.jpg").body == b"meow" * 100 and h.get("photos", "loose.txt").status == 404
        done = admin(h, "sync?backend=backend-2&bucket=photos")
        assert (done["imported"], done["skipped"], done["bytes"]) == (1, 2, len(b"no bucket head"))
        assert h.get("photos", "2024/cat.jpg").body == b"meow" * 100
        assert h.get("photos", "loose.txt").body == b"no bucket head"
        assert h.get("photos", "mine.txt").body == b"written through s3orch"
        assert location(h, "photos", "2024/cat.jpg") == [("backend-2", "photos/2024/cat.jpg")]  # in place
        assert sorted(server.objects("store-2")) == sorted(files)  # nothing copied, nothing moved
        used, count = quotas(h)["backend-2"]
        assert (used - before[0], count - before[1]) == (400 + len(b"no bucket head"), 2)
        again = admin(h, "sync?backend=backend-2&bucket=photos")
        assert (again["imported"], again["skipped"]) == (0, 3)
        # Imported keys are s3orch's now: reconcile matches them, a delete removes the backend object.
        check = admin(h, "reconcile?backend=backend-2")
        assert (check["matched"], check["foreign"], check["lost"]) == (2, 2, 0)
        assert h.delete("photos", "loose.txt").status == 204
        h.settle()
        assert "loose.txt" not in server.objects("store-2")


def test_sync_refuses_an_unknown_bucket(tmp_path: Path) -> None:
    with GatewayHarness(tmp_path, config()) as h:
        response = h.send_raw(
            f"POST /admin/api/sync?backend=backend-1&bucket=nope HTTP/1.1\r\nHost: {h.host}\r\n"
            f"X-Admin-Token: {TOKEN}\r\nContent-Length: 0\r\n\r\n".encode()
        )
        assert response.status == 400 and "unknown bucket" in response.text
