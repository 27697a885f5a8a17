"""Monthly usage limits end to end in one in-memory gateway (BEHAVIOURS §1.8, issue 17 item 1).

Every limit type on the operations it meters: the request that would cross the limit is refused
with the original's status and code (writes 507 InsufficientStorage, reads 429 SlowDown), the one
before it succeeds, deletes run at the limit, and a new month (the tracker's injected clock)
starts from zero.  What the backends were asked is read from the tracker, which books at the one
seam every backend call passes (:mod:`s3orch.usage.metered`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from s3orch.observe.metrics import REGISTRY
from s3orch.testing.harness import DEFAULT_CONFIG, GatewayHarness
from s3orch.usage.counters import Delta
from s3orch.usage.tracker import UsageTracker, period_of
from s3orch.workers.quota_metrics import QuotaMetricsWorker

#: 2026-12-31 23:59:00 UTC and a minute later.
DECEMBER = 1798761540.0
JANUARY = DECEMBER + 120.0


def config(limits_1: str, limits_2: str = "", extra: str = "") -> str:
    """The harness's two backends with ``limits_*`` lines added to each (YAML, 4 spaces in)."""
    first, second = DEFAULT_CONFIG.split("  - name: backend-2\n")
    quota = "    quota_bytes: 1048576\n"
    first = first.replace(quota, quota + limits_1)
    second = "  - name: backend-2\n" + second.replace(quota, quota + limits_2)
    return first + second + extra + 'ui:\n  admin_token: "usage-token"\n'


def start(tmp_path: Path, text: str) -> GatewayHarness:
    return GatewayHarness(tmp_path, text).start()


def tracker(h: GatewayHarness) -> UsageTracker:
    flush: Any = h.service.getServiceNamed("usage-flush")
    assert isinstance(flush, QuotaMetricsWorker) and flush.usage is not None
    return flush.usage


def rejections(operation: str, limit_type: str = "api_requests") -> float:
    sample = REGISTRY.get_sample_value(
        "s3o_usage_limit_rejections_total", {"operation": operation, "limit_type": limit_type}
    )
    return sample or 0.0


def error_code(body: bytes) -> str:
    return body.split(b"<Code>")[1].split(b"</Code>")[0].decode()


@pytest.fixture
def one_call_left(tmp_path: Path) -> Iterator[GatewayHarness]:
    h = start(tmp_path, config("    api_request_limit: 3\n", "    api_request_limit: 3\n"))
    try:
        yield h
    finally:
        h.stop()


def test_the_call_that_would_cross_the_api_request_limit_is_refused(one_call_left: GatewayHarness) -> None:
    h = one_call_left
    usage = tracker(h)
    before = {op: rejections(op) for op in ("read", "write")}
    assert h.put("photos", "a", b"x" * 10).status == 200  # backend-1: 1 call
    assert usage.usage("backend-1") == Delta(1, 0, 10)
    assert h.get("photos", "a").status == 200  # 2
    assert h.get("photos", "a").status == 200  # 3: the limit, reached, not passed
    refused = h.get("photos", "a")  # would be the 4th call
    assert (refused.status, error_code(refused.body)) == (429, "SlowDown")
    assert b"monthly usage limit exceeded for all backends holding this object" in refused.body
    assert usage.usage("backend-1") == Delta(3, 20, 10)  # the refused GET made no call
    # Writes go on to backend-2 until it too is at its limit, then 507.
    for n in range(3):
        assert h.put("photos", f"b{n}", b"y").status == 200
    full = h.put("photos", "c", b"z")
    assert (full.status, error_code(full.body)) == (507, "InsufficientStorage")
    created = h.request("POST", "photos", "mp", query=[("uploads", "")])
    assert (created.status, error_code(created.body)) == (507, "InsufficientStorage")
    assert rejections("read") - before["read"] == 1
    assert rejections("write") - before["write"] >= 2
    # Deletes always run, and are booked.
    assert h.delete("photos", "a").status == 204
    h.settle()
    assert usage.usage("backend-1").api_requests == 4
    assert h.backends["backend-1"].objects("store-1") == {}


def test_a_new_month_starts_from_zero(tmp_path: Path) -> None:
    h = start(tmp_path, config("    api_request_limit: 1\n", "    api_request_limit: 1\n"))
    try:
        usage = tracker(h)
        months = Clock()
        months.advance(DECEMBER)
        usage.clock = months  # the injected clock of the period (requests still sign on the harness's)
        assert h.put("photos", "a", b"1").status == 200
        assert h.put("photos", "b", b"2").status == 200
        assert h.put("photos", "c", b"3").status == 507
        flush: Any = h.service.getServiceNamed("usage-flush")
        h.settle()
        assert h.run(flush.run_once()) is True
        rows = h.run(h.store.get_usage("2026-12"))
        assert {name: row.api_requests for name, row in rows.items()} == {"backend-1": 1, "backend-2": 1}
        months.advance(JANUARY - DECEMBER)
        assert usage.period() == "2027-01" and usage.usage("backend-1") == Delta()
        assert h.put("photos", "c", b"3").status == 200
        assert h.get("photos", "a").status == 429  # backend-1 has used its one call of January
    finally:
        h.stop()


def test_writes_skip_backends_past_the_ingress_limit_then_507(tmp_path: Path) -> None:
    h = start(tmp_path, config("    ingress_byte_limit: 100\n", "    ingress_byte_limit: 100\n"))
    try:
        usage = tracker(h)
        assert h.put("photos", "a", b"a" * 60).status == 200  # backend-1 (pack)
        assert h.put("photos", "b", b"b" * 60).status == 200  # 120 > 100 on backend-1: backend-2
        assert usage.usage("backend-1").ingress_bytes == 60 and usage.usage("backend-2").ingress_bytes == 60
        refused = h.put("photos", "c", b"c" * 41)  # 101 on either
        assert (refused.status, error_code(refused.body)) == (507, "InsufficientStorage")
        assert h.put("photos", "d", b"d" * 40).status == 200  # exactly 100: fits
        assert usage.usage("backend-1").ingress_bytes == 100
        assert h.delete("photos", "a").status == 204  # at the limit, deletes still run
    finally:
        h.stop()


REPLICATED = "replication:\n  factor: 2\n  worker_interval: 60s\n"


def test_reads_skip_copies_past_the_egress_limit_then_429(tmp_path: Path) -> None:
    h = start(tmp_path, config("    egress_byte_limit: 100\n", "    egress_byte_limit: 100\n", REPLICATED))
    try:
        usage = tracker(h)
        assert h.put("photos", "a", b"a" * 60).status == 200
        replicator: Any = h.service.getServiceNamed("replicator")
        assert h.run(replicator.run_once()) is True
        # The replica's copy booked a GET (egress) on the source and a PUT (ingress) on the target.
        assert usage.usage("backend-1") == Delta(2, 60, 60)
        assert usage.usage("backend-2") == Delta(1, 0, 60)
        # backend-1 would pass 100 bytes of egress: the read is served by backend-2's copy.
        assert h.get("photos", "a").body == b"a" * 60
        assert usage.usage("backend-2").egress_bytes == 60 and usage.usage("backend-1").egress_bytes == 60
        refused = h.get("photos", "a")  # 120 on either copy
        assert (refused.status, error_code(refused.body)) == (429, "SlowDown")
        ranged = h.get("photos", "a", headers={"Range": "bytes=0-39"})  # 100 on backend-1: fits
        assert ranged.status == 206 and usage.usage("backend-1").egress_bytes == 100
    finally:
        h.stop()


def test_failed_backend_calls_are_booked_and_a_failover_books_both(tmp_path: Path) -> None:
    h = start(tmp_path, config("", ""))
    try:
        usage = tracker(h)
        server: Any = h.backends["backend-1"]

        def refuse(request: Any) -> bytes:
            request.setResponseCode(500)
            return b"<?xml version='1.0'?><Error><Code>InternalError</Code><Message>no</Message></Error>"

        server.render = refuse
        assert h.put("photos", "a", b"q" * 5).status == 200
        one, two = usage.usage("backend-1"), usage.usage("backend-2")
        assert one.api_requests >= 1 and one.ingress_bytes == 5 * one.api_requests  # failed, booked
        assert two == Delta(1, 0, 5)
    finally:
        h.stop()


def test_status_and_the_usage_route_show_usage_against_limits(one_call_left: GatewayHarness) -> None:
    h = one_call_left
    assert h.put("photos", "a", b"x" * 10).status == 200
    status = _admin(h, "GET", "status")
    (first,) = [b for b in status["backends"] if b["name"] == "backend-1"]
    assert (first["api_requests"], first["ingress_bytes"], first["api_request_limit"]) == (1, 10, 3)
    assert status["usage_period"] == period_of(h.clock.seconds())
    shown = _admin(h, "GET", "usage?backend=backend-1")
    assert [(b["name"], b["api_requests"]) for b in shown["backends"]] == [("backend-1", 1)]
    assert _admin(h, "POST", "usage-flush")["status"] == "flushed"
    rows = h.run(h.store.get_usage(period_of(h.clock.seconds())))
    assert rows["backend-1"].api_requests == 1
    old = _admin(h, "GET", "usage?period=2001-01")
    assert all(b["api_requests"] == 0 for b in old["backends"])
    assert _admin(h, "GET", "usage?period=2001-13", status=400)


def _admin(h: GatewayHarness, method: str, path: str, status: int = 200) -> Any:
    import json

    answer = h.send_raw(
        f"{method} /admin/api/{path} HTTP/1.1\r\nHost: {h.host}\r\nX-Admin-Token: usage-token\r\n"
        "Content-Length: 0\r\n\r\n".encode()
    )
    assert answer.status == status, answer.body
    return json.loads(answer.body)


def test_a_put_no_backend_may_take_is_refused_before_its_body(tmp_path: Path) -> None:
    from tests.unit.test_metrics_events import signed_put_head

    h = start(tmp_path, config("    ingress_byte_limit: 100\n", "    ingress_byte_limit: 100\n"))
    try:
        assert h.put("photos", "a", b"a" * 60).status == 200
        assert h.put("photos", "b", b"b" * 60).status == 200  # both backends have 60 of 100 now
        connection = h.connect()
        head = signed_put_head(h, "big", 50)  # 110 of 100 on either backend
        connection.send(head[:-2] + b"Expect: 100-continue\r\n\r\n")
        h.settle()
        answer = connection.received
        assert answer.startswith(b"HTTP/1.1 507 ") and b"100 Continue" not in answer
        assert b"<Code>InsufficientStorage</Code>" in answer
        fits = h.put("photos", "c", b"c" * 40)  # exactly 100 on backend-1: the early check lets it in
        assert fits.status == 200
    finally:
        h.stop()


def test_the_last_counts_reach_the_database_at_shutdown(tmp_path: Path) -> None:
    import sqlite3

    h = start(tmp_path, config("    api_request_limit: 100\n"))
    try:
        assert h.put("photos", "a", b"a" * 7).status == 200  # booked after the start's flush
    finally:
        h.stop()
    with sqlite3.connect(tmp_path / "s3orch.db") as db:
        rows = db.execute("SELECT backend_name, api_requests, ingress_bytes FROM backend_usage").fetchall()
    assert rows == [("backend-1", 1, 7)]
