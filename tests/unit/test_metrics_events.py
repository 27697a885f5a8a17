"""Each ``s3o_*`` metric of a feature in this build moves when its event happens (issue 14 item 4).

A whole gateway runs in the test process (:class:`~s3orch.testing.harness.GatewayHarness`): the
test drives the event through the S3 port or the clock, then reads ``/metrics`` as Prometheus
would and asserts the sample changed.  The registry is process-wide, so every assertion is on a
difference between two scrapes.
"""

from __future__ import annotations

import platform
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import Deferred

import twisted
from s3orch import __version__
from s3orch.s3.sigv4 import STREAMING_PAYLOAD, UNSIGNED_PAYLOAD, sign_headers
from s3orch.store.interface import CleanupItem, StoreUnavailable
from s3orch.testing.harness import DEFAULT_CONFIG, GatewayHarness
from tests.support.awschunked import streaming_put

Sample = tuple[str, frozenset[tuple[str, str]]]

#: The harness's default gateway with /metrics on the S3 port and a small admission pool.
CONFIG = DEFAULT_CONFIG.replace(
    'listen_addr: "127.0.0.1:9000"\n', 'listen_addr: "127.0.0.1:9000"\n  max_concurrent_requests: 2\n  max_concurrent_per_credential: 3\n',
    1,
) + "telemetry:\n  metrics:\n    enabled: true\n"


def scrape(gateway: GatewayHarness) -> dict[Sample, float]:
    """``GET /metrics`` through the S3 port, parsed: (sample name, labels) -> value."""
    answer = gateway.send_raw(f"GET /metrics HTTP/1.1\r\nHost: {gateway.host}\r\n\r\n".encode())
    assert answer.status == 200, answer.body[:200]
    samples: dict[Sample, float] = {}
    for family in text_string_to_metric_families(answer.body.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def signed_put_head(gateway: GatewayHarness, key: str, length: int) -> bytes:
    """The signed head of a PUT whose ``length``-byte body the test has not sent (yet)."""
    access_key, secret_key = gateway.credentials("photos")
    url = f"http://{gateway.host}/photos/{key}"
    headers = sign_headers("PUT", url, {}, UNSIGNED_PAYLOAD, access_key, secret_key, "us-east-1",
                           gateway.clock.seconds())
    lines = [f"PUT /photos/{key} HTTP/1.1", f"Host: {gateway.host}", f"Content-Length: {length}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return "\r\n".join(lines).encode() + b"\r\n\r\n"


def value(samples: dict[Sample, float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


class Scrapes:
    """Two scrapes around an event: ``moved(name, **labels)`` is the difference."""

    def __init__(self, gateway: GatewayHarness) -> None:
        self.gateway = gateway
        self.before = scrape(gateway)
        self.after: dict[Sample, float] = {}

    def again(self) -> Scrapes:
        self.after = scrape(self.gateway)
        return self

    def moved(self, name: str, **labels: str) -> float:
        return value(self.after, name, **labels) - value(self.before, name, **labels)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayHarness]:
    with GatewayHarness(tmp_path, CONFIG) as harness:
        yield harness


def test_build_info_names_version_python_and_twisted(gateway: GatewayHarness) -> None:
    samples = scrape(gateway)
    labels = {"version": __version__, "python": platform.python_version(), "twisted": twisted.__version__}
    assert value(samples, "s3o_build_info", **labels) == 1.0


def test_a_put_moves_request_backend_manager_intent_and_audit_metrics(gateway: GatewayHarness) -> None:
    s = Scrapes(gateway)
    assert gateway.put("photos", "cat.jpg", b"x" * 5000).status == 200
    s.again()
    assert s.moved("s3o_requests_total", method="PUT", status_code="200") == 1
    assert s.moved("s3o_request_duration_seconds_count", method="PUT") == 1
    assert s.moved("s3o_request_size_bytes_sum", method="PUT") == 5000
    assert s.moved("s3o_backend_requests_total", operation="PutObject", backend="backend-1", status="200") == 1
    assert s.moved("s3o_backend_duration_seconds_count", operation="PutObject", backend="backend-1") == 1
    assert s.moved("s3o_backend_bytes_total", backend="backend-1", direction="out") == 5000
    assert s.moved("s3o_manager_requests_total", operation="PutObject", backend="backend-1", status="success") == 1
    assert s.moved("s3o_manager_duration_seconds_count", operation="PutObject", backend="backend-1") == 1
    assert s.moved("s3o_pending_intents_enqueued_total") == 1
    assert s.moved("s3o_pending_intents_resolved_total", status="committed") == 1
    assert s.moved("s3o_audit_events_total", event="s3.PutObject") == 1
    assert s.moved("s3o_audit_events_total", event="storage.PutObject") == 1


def test_a_get_moves_response_size_and_the_manager_read(gateway: GatewayHarness) -> None:
    gateway.put("photos", "cat.jpg", b"y" * 3000)
    s = Scrapes(gateway)
    assert gateway.get("photos", "cat.jpg").status == 200
    assert gateway.get("photos", "missing").status == 404
    s.again()
    assert s.moved("s3o_response_size_bytes_sum", method="GET") == 3000
    assert s.moved("s3o_requests_total", method="GET", status_code="404") == 1
    assert s.moved("s3o_manager_requests_total", operation="GetObject", backend="backend-1", status="success") == 1
    assert s.moved("s3o_manager_requests_total", operation="GetObject", backend="", status="client_error") == 1
    assert s.moved("s3o_backend_bytes_total", backend="backend-1", direction="in") == 3000


def test_inflight_counts_a_request_whose_body_is_still_coming(gateway: GatewayHarness) -> None:
    s = Scrapes(gateway)
    connection = gateway.connect()
    connection.send(signed_put_head(gateway, "slow", 10))
    s.again()
    assert s.moved("s3o_inflight_requests", method="PUT") == 1
    assert s.moved("s3o_admission_slots_in_use", pool="global") == 1
    connection.close()
    gateway.settle()
    assert value(scrape(gateway), "s3o_inflight_requests", method="PUT") == value(
        s.before, "s3o_inflight_requests", method="PUT"
    )


def test_a_full_pool_moves_admission_rejections(gateway: GatewayHarness) -> None:
    held = [gateway.connect() for _ in range(2)]
    for n, connection in enumerate(held):
        connection.send(signed_put_head(gateway, f"held{n}", 10))
    s = Scrapes(gateway)  # /metrics is outside the pool
    assert gateway.put("photos", "refused", b"z").status == 503
    s.again()
    assert s.moved("s3o_admission_rejections_total") == 1
    assert s.moved("s3o_audit_events_total", event="s3.AdmissionRejected") == 1
    assert s.moved("s3o_early_rejections_total", reason="SlowDown") == 0  # counted as admission only
    for connection in held:
        connection.close()


def test_a_body_refused_at_header_time_moves_early_rejections(gateway: GatewayHarness) -> None:
    s = Scrapes(gateway)
    answer = gateway.send_raw(
        f"PUT /photos/anon HTTP/1.1\r\nHost: {gateway.host}\r\nContent-Length: 4\r\n\r\nabcd".encode()
    )
    assert answer.status == 403
    s.again()
    assert s.moved("s3o_early_rejections_total", reason="AccessDenied") == 1
    assert s.moved("s3o_audit_events_total", event="s3.AuthFailure") == 1


def test_quota_gauges_and_object_count_follow_the_flush(gateway: GatewayHarness) -> None:
    gateway.put("photos", "a", b"a" * 1000)
    gateway.advance(30)  # usage_flush.interval
    samples = scrape(gateway)
    assert value(samples, "s3o_quota_bytes_used", backend="backend-1") == 1000
    assert value(samples, "s3o_quota_bytes_limit", backend="backend-1") == 1048576
    assert value(samples, "s3o_quota_bytes_available", backend="backend-1") == 1048576 - 1000
    assert value(samples, "s3o_quota_orphan_bytes", backend="backend-1") == 0
    assert value(samples, "s3o_objects_count", backend="backend-1") == 1
    assert value(samples, "s3o_pending_intents_depth") == 0
    assert value(samples, "s3o_cleanup_queue_depth") == 0
    assert value(samples, "s3o_cleanup_dlq_depth") == 0
    s = Scrapes(gateway)
    gateway.advance(30)
    s.again()
    assert s.moved("s3o_worker_ticks_total", service="usage_flush", result="success") == 1
    assert value(s.after, "s3o_worker_last_success_timestamp_seconds", service="usage_flush") == gateway.clock.seconds()
    assert value(s.after, "s3o_worker_consecutive_failures", service="usage_flush") == 0


def test_multipart_moves_the_active_uploads_gauge(gateway: GatewayHarness) -> None:
    s = Scrapes(gateway)
    created = gateway.request("POST", "photos", "big", query=[("uploads", "")])
    assert created.status == 200
    upload_id = re.search(r"<UploadId>([^<]+)</UploadId>", created.text).group(1)  # type: ignore[union-attr]
    part = gateway.request(
        "PUT", "photos", "big", query=[("partNumber", "1"), ("uploadId", upload_id)], body=b"p" * 100
    )
    assert part.status == 200
    s.again()
    active = sum(s.moved("s3o_active_multipart_uploads", backend=name) for name in gateway.backends)
    assert active == 1
    assert s.moved("s3o_audit_events_total", event="storage.CreateMultipartUpload") == 1


def test_deletes_and_overwrites_move_the_cleanup_counters(gateway: GatewayHarness) -> None:
    gateway.put("photos", "k", b"1" * 100)
    s = Scrapes(gateway)
    gateway.put("photos", "k", b"2" * 100)
    gateway.settle()
    assert gateway.delete("photos", "k").status == 204
    s.again()
    assert s.moved("s3o_cleanup_queue_enqueued_total", reason="overwrite_displaced") == 1
    assert s.moved("s3o_cleanup_queue_enqueued_total", reason="delete") == 1
    assert s.moved("s3o_cleanup_queue_processed_total", status="success") == 2
    assert s.moved("s3o_manager_requests_total", operation="DeleteObject", backend="", status="success") == 1


def test_a_failing_backend_moves_failover_retries_depth_and_the_dlq(gateway: GatewayHarness) -> None:
    gateway.put("photos", "doomed", b"d" * 100)
    failing = gateway.backends["backend-1"]
    failing.redirect("store-1", "", status=500)  # every request to backend-1 now fails
    s = Scrapes(gateway)
    assert gateway.put("photos", "elsewhere", b"e" * 100).status == 200
    assert gateway.delete("photos", "doomed").status == 204  # metadata gone, backend delete queued
    gateway.advance(30)
    s.again()
    assert s.moved("s3o_write_failover_total", backend="backend-1") == 1
    assert s.moved("s3o_backend_requests_total", operation="PutObject", backend="backend-1", status="500") >= 1
    assert s.moved("s3o_manager_requests_total", operation="PutObject", backend="backend-2", status="success") == 1
    assert s.moved("s3o_cleanup_queue_processed_total", status="retry") == 1
    assert value(s.after, "s3o_cleanup_queue_depth") == 1
    assert value(s.after, "s3o_quota_orphan_bytes", backend="backend-1") == 100
    # Nine more failed retries (backoff doubles from 1 minute: 17 h in all) exhaust the row into the DLQ.
    s = Scrapes(gateway)
    gateway.advance(20 * 3600)
    s.again()
    assert s.moved("s3o_cleanup_queue_processed_total", status="retry") == 8
    assert s.moved("s3o_cleanup_queue_processed_total", status="exhausted") == 1
    assert s.moved("s3o_cleanup_dlq_enqueued_total", backend="backend-1") == 1
    assert s.moved("s3o_audit_events_total", event="cleanup_queue.exhausted_to_dlq") == 1
    assert value(s.after, "s3o_cleanup_dlq_depth") == 1
    assert value(s.after, "s3o_cleanup_queue_depth") == 0
    assert s.moved("s3o_worker_ticks_total", service="cleanup_queue", result="success") >= 9


def test_a_stale_claim_taken_over_moves_its_counter(gateway: GatewayHarness) -> None:
    gateway.put("photos", "k", b"k" * 10)
    failing = gateway.backends["backend-1"]
    failing.redirect("store-1", "", status=500)
    gateway.delete("photos", "k")
    # Another instance claims the row and dies: after the grace period this one takes it over.
    now = gateway.clock.seconds()
    claimed: list[CleanupItem] = []
    Deferred.fromCoroutine(gateway.store.claim_cleanups(now + 600, 10, "dead-instance", 300.0)).addCallback(
        claimed.extend
    )
    gateway.settle()
    assert len(claimed) == 1
    failing._redirects.clear()
    s = Scrapes(gateway)
    gateway.advance(1200)
    s.again()
    assert s.moved("s3o_cleanup_queue_stale_claims_recovered_total", backend="backend-1") == 1
    assert s.moved("s3o_audit_events_total", event="cleanup_queue.claim_recovered") == 1
    assert s.moved("s3o_cleanup_queue_processed_total", status="success") == 1


def _send_streaming(gateway: GatewayHarness, key: str, data: bytes, *, tamper: bool = False) -> int:
    access_key, secret_key = gateway.credentials("photos")
    put = streaming_put(
        f"http://{gateway.host}/photos/{key}", data, access_key=access_key, secret_key=secret_key,
        now=gateway.clock.seconds(), variant=STREAMING_PAYLOAD, chunk_size=8192,
    )
    body = put.body.replace(data[:16], b"X" * 16, 1) if tamper else put.body
    lines = [f"PUT /photos/{key} HTTP/1.1", f"Host: {gateway.host}"]  # the headers carry Content-Length
    lines += [f"{name}: {value}" for name, value in put.headers.items()]
    return gateway.send_raw("\r\n".join(lines).encode() + b"\r\n\r\n" + body).status


def test_aws_chunked_uploads_move_the_streaming_counters(gateway: GatewayHarness) -> None:
    s = Scrapes(gateway)
    assert _send_streaming(gateway, "chunked", b"c" * 20000) == 200
    assert _send_streaming(gateway, "tampered", b"t" * 20000, tamper=True) == 403
    s.again()
    assert s.moved("s3o_auth_streaming_requests_total", variant="signed") == 2
    assert s.moved("s3o_auth_streaming_rejections_total", reason="chunk_signature") == 1


def test_a_credential_over_its_share_moves_credential_rejections(tmp_path: Path) -> None:
    config = CONFIG.replace("max_concurrent_per_credential: 3", "max_concurrent_per_credential: 1")
    with GatewayHarness(tmp_path, config) as gateway:
        held = gateway.connect()
        held.send(signed_put_head(gateway, "held", 10))
        s = Scrapes(gateway)
        assert gateway.put("photos", "second", b"2").status == 503
        assert gateway.put("documents", "other", b"3").status == 200  # another credential's share
        s.again()
        assert s.moved("s3o_credential_admission_rejections_total") == 1
        assert s.moved("s3o_audit_events_total", event="s3.AdmissionRejected") == 1
        held.close()


def test_a_failing_worker_pass_moves_its_error_ticks_and_consecutive_failures(
    gateway: GatewayHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object, **kwargs: object) -> list[object]:
        raise RuntimeError("claim failed")

    monkeypatch.setattr(gateway.store, "claim_cleanups", broken)
    s = Scrapes(gateway)
    gateway.advance(150)  # two passes of the cleanup-queue worker (after its jitter, under 30s)
    s.again()
    assert s.moved("s3o_worker_ticks_total", service="cleanup_queue", result="error") == 2
    assert value(s.after, "s3o_worker_consecutive_failures", service="cleanup_queue") == 2
    assert s.moved("s3o_audit_events_total", event="cleanup_queue.complete") == 2  # result=error
    monkeypatch.undo()
    gateway.advance(60)
    assert value(scrape(gateway), "s3o_worker_consecutive_failures", service="cleanup_queue") == 0


def test_a_commit_lost_to_the_database_moves_database_errors_then_the_reaper_promotes_it(
    gateway: GatewayHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unavailable(*args: object, **kwargs: object) -> None:
        raise StoreUnavailable("database restarting")

    s = Scrapes(gateway)
    monkeypatch.setattr(gateway.store, "commit_object", unavailable)
    assert gateway.put("photos", "orphan?", b"o" * 50).status == 503
    monkeypatch.undo()
    gateway.advance(30)
    s.again()
    assert s.moved("s3o_database_errors_total", operation="PutObject") == 1
    assert s.moved("s3o_manager_requests_total", operation="PutObject", backend="", status="error") == 1
    assert value(s.after, "s3o_pending_intents_depth") == 1
    s = Scrapes(gateway)
    gateway.advance(400)  # past write_path.pending_pattern.min_age, then a reaper tick
    s.again()
    assert s.moved("s3o_pending_intents_resolved_total", status="promoted") == 1
    assert s.moved("s3o_audit_events_total", event="pending_reaper.promoted") == 1
    assert value(s.after, "s3o_pending_intents_depth") == 0
    assert gateway.get("photos", "orphan?").body == b"o" * 50


def test_shedding_above_the_threshold_moves_load_shed(tmp_path: Path) -> None:
    config = CONFIG.replace("max_concurrent_requests: 2", "max_concurrent_requests: 4\n  load_shed_threshold: 0.5")
    with GatewayHarness(tmp_path, config.replace("per_credential: 3", "per_credential: 10")) as gateway:
        gateway._site.early_handler.admission.random = lambda: 0.0  # the draw always sheds
        held = [gateway.connect() for _ in range(3)]
        for n, connection in enumerate(held):
            connection.send(signed_put_head(gateway, f"held{n}", 10))
        s = Scrapes(gateway)
        assert gateway.put("photos", "shed", b"s").status == 503
        s.again()
        assert s.moved("s3o_load_shed_total") == 1
        assert s.moved("s3o_admission_rejections_total") == 0
        assert s.moved("s3o_audit_events_total", event="s3.LoadShed") == 1
        for connection in held:
            connection.close()
