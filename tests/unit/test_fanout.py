"""Write fan-out (``write_path.parallel_copies``, ``replication.ack``) through a whole in-process
gateway (GatewayHarness: three in-memory backends, SQLite, a clock): ack levels, failing copies,
the shutdown drain and an overwrite racing a companion still running."""

from __future__ import annotations

import hashlib
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred

from s3orch.config import load_config_from_string
from s3orch.config.fields import ConfigError
from s3orch.core.fanout import FanOut, _Body
from s3orch.payload import Payload
from s3orch.testing.harness import DEFAULT_CONFIG, GatewayHarness
from tests.unit.test_replicator import THIRD, down, holders, metric, multipart, stored, used

BASE = DEFAULT_CONFIG.replace("quota_bytes: 1048576", "quota_bytes: 16777216") + THIRD


def config(factor: int, ack: str) -> str:
    return (
        BASE
        + f'replication:\n  factor: {factor}\n  ack: "{ack}"\n  worker_interval: 24h\n'
        + "write_path:\n  parallel_copies:\n    enabled: true\n"
    )


def fanout(h: GatewayHarness) -> FanOut:
    found: Any = h.service.getServiceNamed("lifecycle")
    assert isinstance(found.objects.fanout, FanOut)
    return found.objects.fanout  # type: ignore[no-any-return]


class Gate:
    """A backend client whose PUTs wait until :meth:`open` (a slow backend)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.waiting: list[Deferred[None]] = []
        self.closed = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def put_object(self, key: str, payload: Payload) -> str:
        if self.closed:
            d: Deferred[None] = Deferred()
            self.waiting.append(d)
            await d
        result: str = await self.inner.put_object(key, payload)
        return result

    def open(self) -> None:
        self.closed = False
        waiting, self.waiting = self.waiting, []
        for d in waiting:
            d.callback(None)


#: Every gate of the running test: opened before its gateway stops (a worker's copy waiting on a
#: gate that never opens would hold the stop forever; a real backend call has a timeout).
GATES: list[Gate] = []


def gate(h: GatewayHarness, backend: str) -> Gate:
    fleet = fanout(h).fleet
    wrapped = Gate(fleet[backend])
    fleet._clients[backend] = wrapped
    GATES.append(wrapped)
    return wrapped


@pytest.fixture
def gateway(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[GatewayHarness]:
    factor, ack = request.param
    harness = GatewayHarness(tmp_path, config(factor, ack)).start()
    try:
        yield harness
    finally:
        for server in harness.backends.values():
            server.__dict__.pop("render", None)  # a backend a failed test left down
        while GATES:
            GATES.pop().open()
        harness.stop()


def _rows(h: GatewayHarness, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(str(h.workdir / "s3orch.db"))
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def up(h: GatewayHarness, *backends: str) -> None:
    """Undo :func:`down`; the cleanup queue then deletes what it could not (minutes later)."""
    for backend in backends:
        del h.backends[backend].render
    h.advance(600)


def quotas_exact(h: GatewayHarness, copies: int | None = None, size: int = 0) -> None:
    """Each backend's used bytes and object count are its recorded copies', nothing orphaned or
    reserved; with ``copies``, the copies recorded hold ``copies`` x ``size`` bytes."""
    quotas = used(h)
    recorded = {
        backend: (int(total), int(count))
        for backend, total, count in _rows(
            h, "SELECT backend_name, SUM(size_bytes), COUNT(*) FROM object_locations GROUP BY backend_name"
        )
    }
    assert {name: (q[0], q[3]) for name, q in quotas.items() if q[0] or q[3]} == recorded
    assert all(q[1:3] == (0, 0) for q in quotas.values()), quotas
    if copies is not None:
        assert sum(q[0] for q in quotas.values()) == copies * size


def test_ack_must_be_first_all_or_a_count_within_the_factor() -> None:
    text = BASE.replace("{workdir}", "/tmp")
    with pytest.raises(ConfigError, match=r"replication.ack: must be between 1 and replication.factor \(2\), got 3"):
        load_config_from_string(text + 'replication:\n  factor: 2\n  ack: "3"\n')
    with pytest.raises(ConfigError, match="replication.ack: must be 'first', 'all' or a number"):
        load_config_from_string(text + "replication:\n  factor: 2\n  ack: most\n")
    loaded = load_config_from_string(text + "replication:\n  factor: 3\n  ack: 2\n")
    assert loaded.replication.ack_level == 2
    assert load_config_from_string(text + "replication:\n  factor: 3\n  ack: all\n").replication.ack_level == 3
    assert load_config_from_string(text + "replication:\n  factor: 3\n").replication.ack_level == 1


@pytest.mark.parametrize("gateway", [(2, "all")], indirect=True)
def test_ack_all_answers_with_every_copy_recorded_and_stored(gateway: GatewayHarness) -> None:
    body = b"fan" * 1000
    assert gateway.put("photos", "k", body).status == 200
    assert holders(gateway, "k") == [["backend-1", "backend-2"]]
    for backend in ("backend-1", "backend-2"):
        assert list(stored(gateway, backend).values()) == [body]
    assert stored(gateway, "backend-3") == {}
    quotas_exact(gateway, 2, len(body))
    assert gateway.get("photos", "k").body == body
    # An overwrite answers with both of its copies recorded too (one transaction with the
    # displacement of the old ones: never fewer copies than the ack level).
    newer = b"new" * 700
    assert gateway.put("photos", "k", newer).status == 200
    assert len(holders(gateway, "k")[0]) == 2
    gateway.advance(120)  # the displaced copies' deletes
    for backend in holders(gateway, "k")[0]:
        assert list(stored(gateway, backend).values()) == [newer]
    quotas_exact(gateway, 2, len(newer))


@pytest.mark.parametrize("gateway", [(3, "first")], indirect=True)
def test_ack_first_answers_before_a_slow_copy_which_finishes_in_the_background(gateway: GatewayHarness) -> None:
    slow = gate(gateway, "backend-3")
    body = b"x" * (2 * 1024 * 1024)  # larger than the in-memory copy: shared from the spool file
    answer = gateway.put("photos", "k", body)
    assert answer.status == 200
    assert len(slow.waiting) == 1 and fanout(gateway).running == 1
    gateway.settle()
    assert holders(gateway, "k") == [["backend-1", "backend-2"]]  # backend-3's copy still running
    slow.open()  # the request's spool is closed by now: the copy reads its own
    gateway.settle()
    assert holders(gateway, "k") == [["backend-1", "backend-2", "backend-3"]]
    assert list(stored(gateway, "backend-3").values()) == [body]
    assert fanout(gateway).running == 0
    quotas_exact(gateway, 3, len(body))


@pytest.mark.parametrize("gateway", [(3, "2")], indirect=True)
def test_ack_two_of_three_waits_for_two_copies_only(gateway: GatewayHarness) -> None:
    slow = gate(gateway, "backend-3")
    assert gateway.put("photos", "k", b"n" * 500).status == 200
    assert holders(gateway, "k") == [["backend-1", "backend-2"]]
    slow.open()
    gateway.settle()
    assert holders(gateway, "k") == [["backend-1", "backend-2", "backend-3"]]
    quotas_exact(gateway, 3, 500)


@pytest.mark.parametrize("gateway", [(2, "all")], indirect=True)
def test_a_failing_copy_moves_to_another_backend_and_too_few_copies_fail_the_write_leaking_nothing(
    gateway: GatewayHarness,
) -> None:
    down(gateway, "backend-2")
    assert gateway.put("photos", "k", b"a" * 300).status == 200
    assert holders(gateway, "k") == [["backend-1", "backend-3"]]  # the companion failed over
    down(gateway, "backend-3")
    short = metric("s3o_fanout_short_writes_total")
    answer = gateway.put("photos", "other", b"b" * 300)
    assert answer.status == 503, answer.text
    assert metric("s3o_fanout_short_writes_total") == short + 1
    assert gateway.head("photos", "other").status == 404
    assert sorted(stored(gateway, "backend-1").values()) == [b"a" * 300]  # the primary was deleted
    up(gateway, "backend-2", "backend-3")  # the refused copies' deletes are retried
    quotas_exact(gateway, 2, 300)
    assert sorted(stored(gateway, "backend-3").values()) == [b"a" * 300]
    gateway.problems.events.clear()


@pytest.mark.parametrize("gateway", [(2, "first")], indirect=True)
def test_a_copy_failing_beyond_the_ack_is_left_to_the_replicator(gateway: GatewayHarness) -> None:
    down(gateway, "backend-2")
    down(gateway, "backend-3")
    failed = metric("s3o_fanout_copies_total", outcome="failed")
    assert gateway.put("photos", "k", b"c" * 100).status == 200
    gateway.settle()
    assert holders(gateway, "k") == [["backend-1"]]
    assert metric("s3o_fanout_copies_total", outcome="failed") == failed + 1
    up(gateway, "backend-2", "backend-3")
    replicating: Any = gateway.service.getServiceNamed("replicator")
    gateway.run(replicating.run_now_pass())  # the replicator's next pass makes the missing copy
    assert holders(gateway, "k") == [["backend-1", "backend-2"]]
    quotas_exact(gateway, 2, 100)
    gateway.problems.events.clear()


@pytest.mark.parametrize("gateway", [(2, "first")], indirect=True)
def test_shutdown_drains_copies_still_running_and_cancels_them_after_the_timeout(gateway: GatewayHarness) -> None:
    slow = gate(gateway, "backend-2")
    assert gateway.put("photos", "k", b"d" * 100).status == 200
    draining: list[object] = []
    Deferred.fromCoroutine(fanout(gateway).drain()).addBoth(draining.append)
    gateway.settle()
    assert draining == []  # waits for the copy
    slow.open()
    gateway.settle()
    assert draining == [None] and holders(gateway, "k") == [["backend-1", "backend-2"]]
    # A copy that never ends is cancelled once the drain timeout passed; its hold is queued.
    slow.closed = True
    assert gateway.put("photos", "late", b"e" * 100).status == 200
    draining.clear()
    Deferred.fromCoroutine(fanout(gateway).drain()).addBoth(draining.append)
    gateway.advance(fanout(gateway).drain_timeout)
    assert draining == [None] and fanout(gateway).running == 0
    assert holders(gateway, "late") == [["backend-1"]]
    gateway.advance(120)  # the cleanup queue deletes the abandoned copy after its grace
    gateway.advance(120)
    slow.open()  # (the replicator's pass, if its start-up came, may be copying to backend-2)
    gateway.settle()
    quotas_exact(gateway)
    assert _rows(gateway, "SELECT COUNT(*) FROM cleanup_queue") == [(0,)]
    gateway.problems.events.clear()


@pytest.mark.parametrize("gateway", [(2, "first")], indirect=True)
def test_an_overwrite_racing_a_running_copy_keeps_the_new_write_and_deletes_only_the_old_copy(
    gateway: GatewayHarness,
) -> None:
    slow = gate(gateway, "backend-2")
    old, new = b"old" * 100, b"new" * 50
    assert gateway.put("photos", "k", old).status == 200
    slow.closed = False  # the overwrite's own copies are not held back
    assert gateway.put("photos", "k", new).status == 200
    gateway.settle()
    assert holders(gateway, "k") == [["backend-1", "backend-2"]]
    slow.closed = True
    waiting = slow.waiting
    assert len(waiting) == 1  # the old write's companion is still running
    slow.open()
    gateway.settle()
    # Its record was refused (the key is another write now): only its own key was deleted.
    assert holders(gateway, "k") == [["backend-1", "backend-2"]]
    assert list(stored(gateway, "backend-2").values()) == [new]
    assert gateway.get("photos", "k").body == new
    assert metric("s3o_fanout_copies_total", outcome="discarded") >= 1
    gateway.advance(120)
    quotas_exact(gateway, 2, len(new))


@pytest.mark.parametrize("gateway", [(2, "all")], indirect=True)
def test_a_copy_is_fanned_out_too_and_a_completed_upload_is_copied_at_once(gateway: GatewayHarness) -> None:
    assert gateway.put("photos", "src", b"s" * 400).status == 200
    copied = gateway.request("PUT", "photos", "dst", headers={"x-amz-copy-source": "/photos/src"})
    assert copied.status == 200, copied.text
    assert holders(gateway, "dst") == [["backend-1", "backend-2"]]
    part1, part2 = b"p" * (5 * 1024 * 1024), b"tail"
    multipart(gateway, "movie", [part1, part2])
    gateway.settle()
    assert all(len(extent) == 2 for extent in holders(gateway, "movie"))
    assert gateway.get("photos", "movie").body == part1 + part2


def test_stopping_the_gateway_waits_for_running_copies_and_cancels_them_past_the_timeout(tmp_path: Path) -> None:
    waited = GatewayHarness(tmp_path / "waited", config(2, "first")).start()
    slow = gate(waited, "backend-2")
    assert waited.put("photos", "k", b"w" * 100).status == 200
    waited.clock.callLater(5, slow.open)  # the copy ends 5 s into the stop
    waited.stop()
    assert sorted(_rows(waited, "SELECT backend_name FROM object_locations")) == [("backend-1",), ("backend-2",)]
    assert _rows(waited, "SELECT COUNT(*) FROM cleanup_queue") == [(0,)]

    cancelled = GatewayHarness(tmp_path / "cancelled", config(2, "first")).start()
    gate(cancelled, "backend-2")  # never answers
    assert cancelled.put("photos", "k", b"c" * 100).status == 200
    cancelled.stop()  # bounded: the copy is cancelled after the drain timeout
    assert _rows(cancelled, "SELECT backend_name FROM object_locations") == [("backend-1",)]
    # Its room is held by its cleanup row, due after the grace: the queue deletes it at the next start.
    assert _rows(cancelled, "SELECT backend_name, reason, size_bytes FROM cleanup_queue") == [
        ("backend-2", "replication_orphan", 100)
    ]
    assert _rows(cancelled, "SELECT orphan_bytes FROM backend_quotas WHERE backend_name = 'backend-2'") == [(100,)]
    cancelled.problems.events.clear()
    GATES.clear()  # both gateways are stopped


@pytest.mark.parametrize("size", [1000, 2 * 1024 * 1024 + 7])
def test_each_copy_reads_the_whole_body_at_its_own_pace_after_the_request_closed_its_spool(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    spool = tempfile.TemporaryFile()
    spool.write(data)
    payload = Payload(spool, size, hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest())
    body = _Body(payload, 2)
    first, second = body.view().reader(), body.view().reader()
    spool.close()  # the request answered: its spool is gone, the copies keep theirs
    got_first, got_second = [first.read(1000)], [second.read(3000)]
    while True:  # interleaved reads never disturb one another
        a, b = first.read(4096), second.read(777)
        got_first.append(a)
        got_second.append(b)
        if not a and not b:
            break
    assert b"".join(got_first) == data and b"".join(got_second) == data
    body.release()
    body.release()  # the last user closes the kept copy
    with pytest.raises(ValueError):
        body.view().reader().read(1)
