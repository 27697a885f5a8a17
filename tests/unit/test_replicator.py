"""The replicator and reads across copies, through a whole in-process gateway (GatewayHarness,
three in-memory backends, a clock): passes, quotas, races with overwrites, admin progress."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.logger import globalLogPublisher

from s3orch.core.placement import storage_key
from s3orch.core.replication import PassResult, Replicator
from s3orch.observe.metrics import REGISTRY
from s3orch.payload import Payload
from s3orch.store.interface import Intent, ObjectRecord
from s3orch.testing.harness import DEFAULT_CONFIG, GatewayHarness
from s3orch.workers.replicator import ReplicatorWorker
from tests.unit.test_harness import xml_value

TOKEN = "replicate-token"
THIRD = """\
  - name: backend-3
    endpoint: "http://backend-3.s3.test"
    region: us-east-1
    bucket: store-3
    access_key_id: backend3key
    secret_access_key: backend3secret
    force_path_style: true
    quota_bytes: 16777216
"""
CONFIG = (
    DEFAULT_CONFIG.replace("quota_bytes: 1048576", "quota_bytes: 16777216")
    + THIRD
    + "replication:\n  factor: 2\n  worker_interval: 60s\n  batch_size: 2\n  concurrency: 2\n"
    + f'ui:\n  admin_token: "{TOKEN}"\n'
)
INTERVAL = 60.0


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayHarness]:
    harness = GatewayHarness(tmp_path, CONFIG).start()
    try:
        yield harness
    finally:
        harness.stop()


def worker(h: GatewayHarness) -> ReplicatorWorker:
    found: Any = h.service.getServiceNamed("replicator")
    assert isinstance(found, ReplicatorWorker)
    return found


def pass_now(h: GatewayHarness) -> PassResult:
    """One operator-asked pass (nothing else holds the replicator's lock here, so it runs)."""
    result = h.run(worker(h).run_now_pass())
    assert result is not None, "the pass did not run: its lock was held"
    return result


def record(h: GatewayHarness, key: str, bucket: str = "photos") -> ObjectRecord:
    found = h.run(h.store.get_object(bucket, key))
    assert found is not None
    return found


def holders(h: GatewayHarness, key: str) -> list[list[str]]:
    """Per extent, the backends holding a copy (sorted)."""
    return [sorted(loc.backend for loc in extent.locations) for extent in record(h, key).extents]


def stored(h: GatewayHarness, backend: str) -> dict[str, bytes]:
    server = h.backends[backend]
    bucket = {"backend-1": "store-1", "backend-2": "store-2", "backend-3": "store-3"}[backend]
    return {key: obj.data for key, obj in server.objects(bucket).items()}


def down(h: GatewayHarness, backend: str) -> None:
    """Make ``backend`` answer every request 503 (a backend outage, seen from the gateway)."""
    server: Any = h.backends[backend]

    def render(request: Any) -> bytes:
        request.setResponseCode(503)
        return b"<?xml version='1.0'?><Error><Code>ServiceUnavailable</Code><Message>down</Message></Error>"

    server.render = render


def metric(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


def used(h: GatewayHarness) -> dict[str, tuple[int, int, int, int]]:
    quotas = h.run(h.store.get_quotas())
    return {
        name: (row.bytes_used, row.orphan_bytes, row.reserved_bytes, row.object_count)
        for name, row in quotas.items()
    }


def multipart(h: GatewayHarness, key: str, parts: list[bytes]) -> None:
    created = h.request("POST", "photos", key, query=[("uploads", "")])
    upload_id = xml_value(created.body, "UploadId")
    etags = []
    for number, part in enumerate(parts, 1):
        answer = h.request("PUT", "photos", key, query=[("partNumber", str(number)), ("uploadId", upload_id)], body=part)
        assert answer.status == 200, answer.text
        etags.append(answer.header("etag"))
    body = (
        "<CompleteMultipartUpload>"
        + "".join(f"<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>" for n, e in enumerate(etags, 1))
        + "</CompleteMultipartUpload>"
    ).encode()
    assert h.request("POST", "photos", key, query=[("uploadId", upload_id)], body=body).status == 200


def test_a_pass_brings_every_extent_to_two_distinct_backends_with_exact_quota(gateway: GatewayHarness) -> None:
    bodies = {f"k{i}": bytes([i]) * (1000 + i) for i in range(5)}
    for key, body in bodies.items():
        assert gateway.put("photos", key, body).status == 200
    part1, part2 = b"p" * (5 * 1024 * 1024), b"tail"
    multipart(gateway, "movie", [part1, part2])
    created = metric("s3o_replication_copies_created_total", backend="backend-2")
    gateway.advance(INTERVAL)  # the start-up pass (jittered) or the next one has run
    for key in bodies:
        assert len(holders(gateway, key)[0]) == 2, key
    assert all(len(extent) == 2 for extent in holders(gateway, "movie"))
    # Every object reads back from either copy.
    for key, body in bodies.items():
        assert gateway.get("photos", key).body == body
    assert gateway.get("photos", "movie").body == part1 + part2
    # Quota exact: every copy's bytes are used once, nothing orphaned or reserved.
    total = sum(len(b) for b in bodies.values()) + len(part1) + len(part2)
    quotas = used(gateway)
    assert sum(q[0] for q in quotas.values()) == 2 * total
    assert all(q[1:3] == (0, 0) for q in quotas.values())
    assert sum(q[3] for q in quotas.values()) == 2 * (len(bodies) + 2)
    assert metric("s3o_replication_copies_created_total", backend="backend-2") > created
    # A second pass finds nothing to do.
    result = gateway.run(worker(gateway).replicator.run_pass())
    assert (result.scanned, result.copies_created, result.status) == (0, 0, "empty")


def test_a_copy_never_lands_on_a_backend_already_holding_one_nor_on_an_open_breaker(tmp_path: Path) -> None:
    config = CONFIG + "backend_circuit_breaker:\n  enabled: true\n  failure_threshold: 1\n  open_timeout: 1h\n"
    with GatewayHarness(tmp_path, config) as h:
        assert h.put("photos", "k", b"x" * 100).status == 200  # pack: backend-1
        breakers: Any = worker(h).replicator.fleet.breakers
        breakers["backend-2"]._move("open")  # backend-2's breaker is open
        result = pass_now(h)
        assert result.copies_created == 1
        assert holders(h, "k") == [["backend-1", "backend-3"]]
        h.problems.events.clear()


def test_an_overwrite_racing_the_copy_keeps_the_new_write_and_deletes_only_the_new_copy(
    gateway: GatewayHarness,
) -> None:
    assert gateway.put("photos", "race", b"old" * 100).status == 200
    replicator = worker(gateway).replicator
    store = replicator.store
    fleet = replicator.fleet
    new_body = b"new" * 50
    new_key: list[str] = []

    class Racing:
        """The store, but an overwrite (placed on the replica's target) commits just before
        the replica is recorded."""

        def __getattr__(self, name: str) -> Any:
            return getattr(store, name)

        async def record_replica(self, extent: Any, reservation: Any, *args: Any) -> Any:
            write_id = uuid.uuid4().hex
            skey = storage_key("photos", "race", write_id)
            new_key.append(skey)
            now = gateway.clock.seconds()
            res = await store.reserve(
                Intent(write_id, "photos", "race", len(new_body), skey, etag=hashlib.md5(new_body).hexdigest()),
                [reservation.backend], "pack", now,
            )
            assert res is not None
            await fleet[reservation.backend].put_object(skey, Payload.from_bytes(new_body))
            await store.commit_object(
                res,
                ObjectRecord("photos", "race", write_id, len(new_body), hashlib.md5(new_body).hexdigest(), now),
                now,
            )
            return await store.record_replica(extent, reservation, *args)

    racing: Any = Racing()
    replicator.store = racing
    result = gateway.run(replicator.run_pass())
    replicator.store = store
    assert (result.copies_created, result.stale) == (0, 1)
    current = record(gateway, "race")
    assert current.etag == hashlib.md5(new_body).hexdigest()
    (target,) = [loc.backend for loc in current.locations]
    # The new write's bytes are intact on the target; the refused replica's key is gone from it.
    on_target = stored(gateway, target)
    assert on_target[new_key[0]] == new_body
    assert not [key for key in on_target if ".r00000-" in key]
    assert gateway.get("photos", "race").body == new_body
    # The old write's copy is queued for deletion as displaced (never recorded as a replica).
    gateway.advance(INTERVAL)  # the next pass replicates the new write
    assert len(holders(gateway, "race")[0]) == 2
    assert gateway.get("photos", "race").body == new_body
    quotas = used(gateway)
    assert sum(q[0] for q in quotas.values()) == 2 * len(new_body)
    assert sum(q[2] for q in quotas.values()) == 0


def test_reads_use_another_copy_when_a_holder_is_down_and_503_when_none_answers(gateway: GatewayHarness) -> None:
    assert gateway.put("photos", "k", b"z" * 500).status == 200
    gateway.advance(INTERVAL)
    first, second = holders(gateway, "k")[0]
    down(gateway, first)
    got = gateway.get("photos", "k")
    assert got.status == 200 and got.body == b"z" * 500
    assert gateway.head("photos", "k").status == 200
    ranged = gateway.get("photos", "k", headers={"Range": "bytes=10-19"})
    assert ranged.status == 206 and ranged.body == b"z" * 10
    down(gateway, second)
    unreachable = gateway.get("photos", "k")
    assert unreachable.status == 503  # never 404: the object exists
    assert xml_value(unreachable.body, "Code") == "ServiceUnavailable"
    gateway.problems.events.clear()


def test_a_body_failing_before_its_first_byte_is_read_from_the_other_copy(gateway: GatewayHarness) -> None:
    body = bytes(range(256)) * 8
    assert gateway.put("photos", "k", body).status == 200
    gateway.advance(INTERVAL)
    first = record(gateway, "k").locations[0].backend
    server: Any = gateway.backends[first]
    original = server.render

    def headers_then_nothing(request: Any) -> bytes:
        result: bytes = original(request)
        if request.method == b"GET":
            request.setHeader(b"content-length", str(len(result)).encode())
            return b""  # the headers promise the body; the connection ends before its first byte
        return result

    server.render = headers_then_nothing
    got = gateway.get("photos", "k")
    assert got.status == 200 and got.body == body
    gateway.problems.events.clear()


def test_no_target_is_warned_counted_and_skipped(tmp_path: Path) -> None:
    config = CONFIG.replace("quota_bytes: 16777216", "quota_bytes: 1000")
    with GatewayHarness(tmp_path, config) as h:
        assert h.put("photos", "a", b"a" * 600).status == 200  # backend-1
        assert h.put("photos", "b", b"b" * 600).status == 200  # backend-2
        assert h.put("photos", "c", b"c" * 600).status == 200  # backend-3
        before = metric("s3o_replication_failures_total", reason="no_target")
        result = pass_now(h)
        assert (result.no_target, result.copies_created, result.status) == (3, 0, "failed")
        assert metric("s3o_replication_failures_total", reason="no_target") == before + 3
        assert all(len(holders(h, key)[0]) == 1 for key in "abc")
        assert all(q[1:3] == (0, 0) for q in used(h).values())  # no reservation left behind


def test_copies_on_a_backend_unhealthy_past_the_threshold_are_replaced(tmp_path: Path) -> None:
    config = (
        CONFIG.replace("concurrency: 2\n", "concurrency: 2\n  unhealthy_threshold: 10m\n")
        + "backend_circuit_breaker:\n  enabled: true\n  failure_threshold: 1\n  open_timeout: 1h\n"
    )
    with GatewayHarness(tmp_path, config) as h:
        assert h.put("photos", "k", b"k" * 300).status == 200
        pass_now(h)
        assert holders(h, "k") == [["backend-1", "backend-2"]]
        replicator: Replicator = worker(h).replicator
        breakers: Any = replicator.fleet.breakers
        breakers["backend-2"]._move("open")
        assert replicator.uncounted() == []  # not yet past the threshold
        assert pass_now(h).copies_created == 0
        health = metric("s3o_replication_health_copies_total")
        h.advance(590)  # passes run on the way; none counts backend-2's copy out yet
        assert holders(h, "k") == [["backend-1", "backend-2"]]
        h.advance(INTERVAL)  # past unhealthy_threshold: the next pass replaces it
        assert replicator.uncounted() == ["backend-2"]
        assert "backend-3" in holders(h, "k")[0]
        assert metric("s3o_replication_health_copies_total") == health + 1
        # The over-replication cleaner then drops the copy behind the open breaker (its delete
        # waits in the cleanup queue), and the replicator makes no other.
        h.advance(INTERVAL)
        assert holders(h, "k") == [["backend-1", "backend-3"]]
        assert metric("s3o_replication_health_copies_total") == health + 1
        h.problems.events.clear()


def test_admin_replicate_streams_progress_and_answers_the_count(gateway: GatewayHarness) -> None:
    for index in range(3):
        assert gateway.put("photos", f"a{index}", b"q" * 10).status == 200
    lines = [
        "POST /admin/api/replicate HTTP/1.1", f"Host: {gateway.host}", "Content-Length: 0",
        f"X-Admin-Token: {TOKEN}", "Accept: application/x-ndjson",
    ]
    response = gateway.send_raw("\r\n".join(lines).encode() + b"\r\n\r\n")
    assert response.status == 200 and response.header("content-type") == "application/x-ndjson"
    events = [json.loads(line) for line in response.body.splitlines()]
    assert events[0]["type"] == "start" and events[0]["total"] == 3
    steps = [e for e in events if e["type"] == "step_end"]
    assert [(e["outcome"], e["done"], e["total"]) for e in steps] == [("copied", n, 3) for n in (1, 2, 3)]
    assert events[-1]["type"] == "result" and events[-1]["status"] == "ok"
    assert events[-1]["copies_created"] == 3
    plain = gateway.send_raw("\r\n".join(lines[:-1]).encode() + b"\r\n\r\n")
    answer = json.loads(plain.body)
    assert (answer["status"], answer["copies_created"]) == ("ok", 0)


def test_admin_replicate_is_skipped_with_factor_one(tmp_path: Path) -> None:
    config = CONFIG.replace("factor: 2", "factor: 1").replace(THIRD, "")
    config = config.replace("quota_bytes: 16777216", "quota_bytes: 1048576")
    with GatewayHarness(tmp_path, config) as h:
        with pytest.raises(KeyError):
            h.service.getServiceNamed("replicator")
        lines = ["POST /admin/api/replicate HTTP/1.1", f"Host: {h.host}", "Content-Length: 0", f"X-Admin-Token: {TOKEN}"]
        answer = json.loads(h.send_raw("\r\n".join(lines).encode() + b"\r\n\r\n").body)
        assert answer["status"] == "skipped" and "factor" in answer["reason"]


def test_the_worker_runs_every_worker_interval_and_copies_concurrency_extents_at_once(
    gateway: GatewayHarness,
) -> None:
    found = worker(gateway)
    assert (found.interval, found.lock_id, found.run_now) == (INTERVAL, 1002, True)
    for index in range(5):
        assert gateway.put("photos", f"c{index}", b"c" * 100).status == 200
    replicator = found.replicator
    clients: dict[str, Any] = {name: replicator.fleet[name] for name in replicator.fleet.names}
    held: list[Deferred[None]] = []
    inflight = [0, 0]  # now, most

    class Holding:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        async def put_object(self, key: str, payload: Payload) -> str:
            inflight[0] += 1
            inflight[1] = max(inflight)
            gate: Deferred[None] = Deferred()
            held.append(gate)
            await gate
            inflight[0] -= 1
            etag: str = await self.inner.put_object(key, payload)
            return etag

    for name, client in clients.items():
        replicator.fleet._clients[name] = Holding(client)
    try:
        done: list[Any] = []
        Deferred.fromCoroutine(replicator.run_pass()).addBoth(done.append)
        while not done:
            gateway.settle()
            assert len(held) <= 2 and inflight[0] <= 2  # concurrency: 2
            while held:
                held.pop(0).callback(None)
            gateway.settle()
    finally:
        replicator.fleet._clients.update(clients)
    assert inflight[1] == 2
    assert done[0].copies_created == 5 and done[0].scanned == 5  # in pages of batch_size 2
    # A reload's new settings: the next pass uses them, the next tick is the new interval away.
    found.reconfigure(dataclasses.replace(replicator.config, worker_interval=600.0, batch_size=9))
    assert (found.interval, replicator.config.batch_size) == (600.0, 9)


def test_a_pass_writes_replication_webhooks_completed_and_target_exhausted(tmp_path: Path) -> None:
    config = (
        CONFIG.replace("quota_bytes: 16777216", "quota_bytes: 1000")
        + 'notifications: {endpoints: [{url: "http://hooks.test/x", events: ["replication.*"]}]}\n'
    )
    with GatewayHarness(tmp_path, config) as h:
        assert h.put("photos", "small", b"s" * 100).status == 200  # backend-1: room elsewhere
        assert h.put("photos", "a", b"a" * 850).status == 200  # backend-1 is full now
        assert h.put("photos", "b", b"b" * 850).status == 200  # backend-2
        assert h.put("photos", "c", b"c" * 850).status == 200  # backend-3
        result = pass_now(h)
        assert (result.copies_created, result.no_target) == (1, 3)
        entries = h.run(h.store.due_events(h.clock.seconds() + 60, 100))
        kinds = sorted(entry.event_type for entry in entries)
        assert kinds == ["replication.completed"] + ["replication.target_exhausted"] * 3
        completed = next(json.loads(e.payload) for e in entries if e.event_type == "replication.completed")
        assert completed["data"]["copies_created"] == 1 and completed["data"]["no_target"] == 3
        exhausted = sorted(json.loads(e.payload)["subject"] for e in entries if e.event_type != "replication.completed")
        assert exhausted == ["photos/a", "photos/b", "photos/c"]


def test_a_source_answering_404_loses_its_record_and_the_next_copy_is_read(gateway: GatewayHarness) -> None:
    assert gateway.put("photos", "k", b"k" * 700).status == 200
    replicator = worker(gateway).replicator
    assert gateway.run(replicator.run_pass()).copies_created == 1
    first = record(gateway, "k").locations[0]
    assert first.backend == "backend-1"
    del gateway.backends["backend-1"].objects("store-1")[first.storage_key]  # lost behind our back
    before = metric("s3o_replication_stale_copies_removed_total", backend="backend-1")
    replicator.config = dataclasses.replace(replicator.config, factor=3)
    result = gateway.run(replicator.run_pass())
    assert result.copies_created == 1
    assert holders(gateway, "k") == [["backend-2", "backend-3"]]
    assert metric("s3o_replication_stale_copies_removed_total", backend="backend-1") == before + 1
    assert used(gateway)["backend-1"] == (0, 0, 0, 0)
    assert gateway.get("photos", "k").body == b"k" * 700
    gateway.problems.events.clear()


def test_a_target_whose_max_object_size_is_smaller_is_skipped_and_each_copy_is_audited(tmp_path: Path) -> None:
    config = CONFIG.replace(
        "    bucket: store-2\n", "    bucket: store-2\n    max_object_size: 100\n"
    )
    seen: list[dict[str, Any]] = []

    def observer(event: dict[str, Any]) -> None:
        if event.get("audit"):
            seen.append(event)

    with GatewayHarness(tmp_path, config) as h:
        assert h.put("photos", "big", b"b" * 500).status == 200  # backend-1
        assert h.put("photos", "tiny", b"t" * 50).status == 200  # backend-1
        globalLogPublisher.addObserver(observer)
        try:
            result = pass_now(h)
        finally:
            globalLogPublisher.removeObserver(observer)
        assert result.copies_created == 2
        assert holders(h, "big") == [["backend-1", "backend-3"]]  # backend-2 takes at most 100 bytes
        assert holders(h, "tiny") == [["backend-1", "backend-2"]]  # pack: the first with room
    kinds = [e["event"] for e in seen]
    assert kinds[0] == "replication.start" and kinds[-2:] == ["replication.copied", "replication.complete"]
    copies = [e for e in seen if e["event"] == "replication.copy"]
    assert sorted((e["key"], e["target"]) for e in copies) == [("big", "backend-3"), ("tiny", "backend-2")]
    assert {e["request_id"] for e in seen} == {result.run_id}  # one correlation id for the pass
    assert result.run_id.startswith("replication-")


def test_a_replicated_object_copies_and_reads_in_ranges_from_either_copy(gateway: GatewayHarness) -> None:
    body = bytes(range(256)) * 40
    assert gateway.put("photos", "src", body).status == 200
    gateway.advance(INTERVAL)
    assert len(holders(gateway, "src")[0]) == 2
    copied = gateway.request("PUT", "photos", "dst", headers={"x-amz-copy-source": "/photos/src"})
    assert copied.status == 200, copied.text
    assert gateway.get("photos", "dst").body == body
    down(gateway, record(gateway, "src").locations[0].backend)
    ranged = gateway.get("photos", "src", headers={"Range": "bytes=1000-5119"})
    assert ranged.status == 206 and ranged.body == body[1000:5120]
    assert ranged.header("content-range") == f"bytes 1000-5119/{len(body)}"
    copied_again = gateway.request("PUT", "photos", "dst2", headers={"x-amz-copy-source": "/photos/src"})
    assert copied_again.status == 200, copied_again.text
    assert gateway.get("photos", "dst2").body == body
    gateway.problems.events.clear()


def test_a_read_failure_moves_on_to_the_next_source_and_a_write_failure_frees_the_room(
    gateway: GatewayHarness,
) -> None:
    assert gateway.put("photos", "k", b"r" * 900).status == 200
    replicator = worker(gateway).replicator
    assert gateway.run(replicator.run_pass()).copies_created == 1  # backend-1 and backend-2
    replicator.config = dataclasses.replace(replicator.config, factor=3)
    down(gateway, "backend-3")  # the only target refuses the write
    failed = gateway.run(replicator.run_pass())
    assert (failed.failed, failed.copies_created) == (1, 0)
    # Its room is queued for deletion now (not after the 6 h hold): backend-3 refused that too.
    depth, rows = gateway.run(gateway.store.cleanup_queue_page(10))
    assert depth == 1 and rows[0].reason == "replication_orphan" and rows[0].attempts == 1
    assert rows[0].next_retry <= gateway.clock.seconds() + 120
    assert used(gateway)["backend-3"] == (0, 900, 0, 0)
    server: Any = gateway.backends["backend-3"]
    del server.render  # backend-3 is back (the class's render again)
    down(gateway, "backend-1")  # the first source now fails: copies are read from backend-2
    gateway.advance(2 * INTERVAL + 10)  # the cleanup retry, and the worker's passes
    assert gateway.run(gateway.store.cleanup_queue_page(10))[0] == 0
    assert holders(gateway, "k") == [["backend-1", "backend-2", "backend-3"]]
    assert stored(gateway, "backend-3") and list(stored(gateway, "backend-3").values()) == [b"r" * 900]
    assert used(gateway)["backend-3"] == (900, 0, 0, 1)
    gateway.problems.events.clear()


def test_a_scheduled_pass_is_framed_once_by_the_worker_with_one_correlation_id(gateway: GatewayHarness) -> None:
    seen: list[dict[str, Any]] = []

    def observer(event: dict[str, Any]) -> None:
        if event.get("audit") and str(event.get("event", "")).startswith("replication."):
            seen.append(event)

    assert gateway.put("photos", "k", b"k" * 10).status == 200
    globalLogPublisher.addObserver(observer)
    try:
        gateway.advance(INTERVAL)
    finally:
        globalLogPublisher.removeObserver(observer)
    copying = [e["request_id"] for e in seen if e["event"] == "replication.copy"]
    assert len(copying) == 1
    framed = [e["event"] for e in seen if e["request_id"] == copying[0]]
    assert framed == ["replication.start", "replication.copy", "replication.copied", "replication.complete"]


def test_a_copy_whose_put_got_no_answer_is_left_to_the_queue_after_its_grace(gateway: GatewayHarness) -> None:
    from s3orch.backend.interface import BackendUnavailable

    assert gateway.put("photos", "k", b"n" * 400).status == 200
    replicator = worker(gateway).replicator
    target: Any = replicator.fleet["backend-2"]

    class Unanswered:
        def __getattr__(self, name: str) -> Any:
            return getattr(target, name)

        async def put_object(self, key: str, payload: Payload) -> str:
            await target.put_object(key, payload)  # the bytes land, the answer is lost
            raise BackendUnavailable("connection reset", backend="backend-2")

    replicator.fleet._clients["backend-2"] = Unanswered()
    try:
        result = gateway.run(replicator.run_pass())
    finally:
        replicator.fleet._clients["backend-2"] = target
    assert (result.failed, result.copies_created) == (1, 0)
    landed = stored(gateway, "backend-2")
    assert len(landed) == 1  # not deleted at once: a delete could race a PUT still landing
    _, rows = gateway.run(gateway.store.cleanup_queue_page(10))
    assert [(r.reason, r.storage_key) for r in rows] == [("replication_orphan", next(iter(landed)))]
    assert rows[0].next_retry <= gateway.clock.seconds() + 60
    assert used(gateway)["backend-2"][1] == 400  # orphaned until the queue deletes it
    gateway.advance(2 * INTERVAL + 10)  # the queue deletes it; the next passes copy again
    assert gateway.run(gateway.store.cleanup_queue_page(10))[0] == 0
    assert holders(gateway, "k") == [["backend-1", "backend-2"]]
    assert len(stored(gateway, "backend-2")) == 1 and used(gateway)["backend-2"] == (400, 0, 0, 1)
