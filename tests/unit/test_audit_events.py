"""Audit events (issue 14 item 6): two per S3 request with one request id and the access key,
the HTTP-level refusals, and one correlation id per background pass; never a secret.

The gateway runs in the test process (:class:`~s3orch.testing.harness.GatewayHarness`); the
test reads the audit lines as the log observers get them (``audit=True`` events).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from zope.interface import implementer

from s3orch.observe.audit import _SCOPE as audit_scope
from s3orch.testing.harness import GatewayHarness

SECRETS = ("photossecret", "docssecret", "backend1secret", "backend2secret")


@implementer(ILogObserver)
class AuditLines:
    """The audit events logged while the test runs."""

    def __init__(self) -> None:
        self.events: list[LogEvent] = []

    def __call__(self, event: LogEvent) -> None:
        if event.get("audit") is True:
            self.events.append(event)

    def named(self, name: str) -> list[LogEvent]:
        return [e for e in self.events if e["event"] == name]

    def of_request(self, request_id: str) -> list[str]:
        return [e["event"] for e in self.events if e.get("request_id") == request_id]

    def clear(self) -> None:
        self.events.clear()


@pytest.fixture
def audit_lines() -> Iterator[AuditLines]:
    lines = AuditLines()
    globalLogPublisher.addObserver(lines)
    yield lines
    globalLogPublisher.removeObserver(lines)
    for event in lines.events:  # whatever the test did, no secret reached an audit line
        text = repr({k: v for k, v in event.items() if not k.startswith("log_")})
        assert not any(secret in text for secret in SECRETS), text


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayHarness]:
    with GatewayHarness(tmp_path) as harness:
        yield harness


def _one(events: list[LogEvent]) -> dict[str, Any]:
    assert len(events) == 1, events
    return dict(events[0])


@pytest.mark.parametrize(
    ("method", "operation", "status"),
    [("PUT", "PutObject", 200), ("GET", "GetObject", 200), ("HEAD", "HeadObject", 200),
     ("DELETE", "DeleteObject", 204)],
)
def test_each_request_writes_an_s3_and_a_storage_event_with_one_id_and_the_access_key(
    gateway: GatewayHarness, audit_lines: AuditLines, method: str, operation: str, status: int
) -> None:
    gateway.put("photos", "cat.jpg", b"x" * 1234)
    audit_lines.clear()
    body = b"x" * 1234 if method == "PUT" else b""
    answer = gateway.request(method, "photos", "cat.jpg", body=body)
    assert answer.status == status
    request_id = answer.headers["x-amz-request-id"]
    http = _one(audit_lines.named(f"s3.{operation}"))
    storage = _one(audit_lines.named(f"storage.{operation}"))
    displaced = ["storage.overwrite_displaced"] if method == "PUT" else []  # the PUT replaced an object
    assert audit_lines.of_request(request_id) == [f"storage.{operation}", *displaced, f"s3.{operation}"]
    assert http["access_key"] == storage["access_key"] == "photoskey"
    assert (http["bucket"], http["key"], http["status"], http["method"]) == ("photos", "cat.jpg", status, method)
    assert http["remote"] == "127.0.0.1" and http["duration"] >= 0
    assert (http["operation"], http["path"]) == (operation, "/photos/cat.jpg")
    assert (storage["bucket"], storage["key"]) == ("photos", "cat.jpg")
    if method in ("PUT", "GET"):
        assert storage["backend"] == "backend-1" and storage["size"] == 1234
    assert audit_scope.get() is None  # the request's scope stayed in its own coroutine's context


def test_a_listing_writes_its_storage_event(gateway: GatewayHarness, audit_lines: AuditLines) -> None:
    gateway.put("photos", "a", b"1")
    answer = gateway.list("photos")
    assert answer.status == 200
    events = audit_lines.of_request(answer.headers["x-amz-request-id"])
    assert events == ["storage.ListObjects", "s3.ListObjectsV2"]
    assert _one(audit_lines.named("storage.ListObjects"))["count"] == 1


def test_a_wrong_secret_is_one_auth_failure_and_no_storage_event(
    gateway: GatewayHarness, audit_lines: AuditLines
) -> None:
    answer = gateway.put("photos", "k", b"1", credentials=("photoskey", "wrong"))
    assert answer.status == 403
    assert audit_lines.of_request(answer.headers["x-amz-request-id"]) == ["s3.AuthFailure"]
    failure = _one(audit_lines.named("s3.AuthFailure"))
    assert failure["error"] == "SignatureDoesNotMatch" and failure["access_key"] is None


def test_another_buckets_credential_is_one_bucket_mismatch_naming_that_key(
    gateway: GatewayHarness, audit_lines: AuditLines
) -> None:
    answer = gateway.put("photos", "k", b"1", credentials=("docskey", "docssecret"))
    assert answer.status == 403
    assert audit_lines.of_request(answer.headers["x-amz-request-id"]) == ["s3.BucketMismatch"]
    mismatch = _one(audit_lines.named("s3.BucketMismatch"))
    assert (mismatch["access_key"], mismatch["bucket"], mismatch["error"]) == ("docskey", "photos", "AccessDenied")


def test_an_unknown_method_and_an_unparsable_path_are_their_own_events(gateway: GatewayHarness, audit_lines: AuditLines) -> None:
    answer = gateway.send_raw(f"BREW /photos/k HTTP/1.1\r\nHost: {gateway.host}\r\n\r\n".encode())
    assert answer.status == 405
    assert _one(audit_lines.named("s3.MethodNotAllowed"))["status"] == 405
    answer = gateway.send_raw(f"GET /%ZZ HTTP/1.1\r\nHost: {gateway.host}\r\n\r\n".encode())
    assert answer.status == 400
    assert audit_lines.of_request(answer.headers["x-amz-request-id"]) == ["s3.InvalidPath"]


def test_each_worker_pass_has_its_own_correlation_id(gateway: GatewayHarness, audit_lines: AuditLines) -> None:
    gateway.put("photos", "k", b"k" * 10)
    gateway.backends["backend-1"].redirect("store-1", "", status=500)
    gateway.delete("photos", "k")  # the backend delete fails: the row waits for the worker
    gateway.backends["backend-1"]._redirects.clear()
    audit_lines.clear()
    gateway.advance(180)  # the cleanup worker's passes (every minute; the row is due after 1)
    starts = audit_lines.named("cleanup_queue.start")
    completes = audit_lines.named("cleanup_queue.complete")
    assert len(starts) >= 2 and len(completes) == len(starts)
    run_ids = [e["request_id"] for e in starts]
    assert len(set(run_ids)) == len(run_ids) and all(r.startswith("cleanup_queue-") for r in run_ids)
    assert [e["request_id"] for e in completes] == run_ids
    assert all(e["result"] == "success" for e in completes)
    processed = _one(audit_lines.named("cleanup_queue.processed"))
    assert processed["request_id"] in run_ids and processed["backend"] == "backend-1"
    assert processed["reason"] == "delete" and "access_key" not in processed
    assert not audit_lines.named("usage_flush.start")  # the gauge refresh is not an audited action


def test_an_overwrite_audits_the_displaced_copy_under_the_puts_request_id(
    gateway: GatewayHarness, audit_lines: AuditLines
) -> None:
    gateway.put("photos", "k", b"old")
    answer = gateway.put("photos", "k", b"newer")
    request_id = answer.headers["x-amz-request-id"]
    assert audit_lines.of_request(request_id) == ["storage.PutObject", "storage.overwrite_displaced", "s3.PutObject"]
    displaced = _one(audit_lines.named("storage.overwrite_displaced"))
    assert (displaced["backend"], displaced["size"], displaced["access_key"]) == ("backend-1", 3, "photoskey")


def test_an_unexpected_failure_is_a_500_with_panic_recovered(
    gateway: GatewayHarness, audit_lines: AuditLines, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(gateway.store, "get_object", broken)
    answer = gateway.get("photos", "k")
    assert answer.status == 500
    gateway.problems.events.clear()  # the failure was logged, as it should be
    assert audit_lines.of_request(answer.headers["x-amz-request-id"]) == ["http.PanicRecovered", "s3.GetObject"]
    assert _one(audit_lines.named("http.PanicRecovered"))["operation"] == "GetObject"


def test_a_stale_upload_aborted_by_the_worker_carries_the_passs_correlation_id(
    gateway: GatewayHarness, audit_lines: AuditLines
) -> None:
    created = gateway.request("POST", "photos", "big", query=[("uploads", "")])
    assert created.status == 200
    gateway.advance(26 * 3600)  # past cleanup_queue.multipart_stale_timeout (24h), and the hourly pass after it
    cleanup = _one(audit_lines.named("storage.MultipartCleanup"))
    assert cleanup["request_id"].startswith("multipart_gc-") and cleanup["key"] == "big"
    assert "multipart_gc.start" in audit_lines.of_request(cleanup["request_id"])


def test_the_scope_fills_only_what_the_caller_left_out(audit_lines: AuditLines) -> None:
    from contextvars import copy_context

    from s3orch.observe.audit import audit, background_run, bind

    def in_request() -> None:
        bind("req-1", "AKIDEXAMPLE")
        audit("storage.Test", backend="b1")
        audit("storage.Test", request_id="explicit", access_key=None)
        with background_run("worker") as run_id:
            audit("worker.step")
        audit("storage.Test", backend="b2")  # the request's scope is back; its backend stays b1
        assert audit_scope.get() is not None and audit_scope.get().backend == "b1"  # type: ignore[union-attr]
        assert run_id.startswith("worker-")

    copy_context().run(in_request)
    first, explicit, step, last = (dict(e) for e in audit_lines.events)
    assert (first["request_id"], first["access_key"]) == ("req-1", "AKIDEXAMPLE")
    assert (explicit["request_id"], explicit["access_key"]) == ("explicit", None)
    assert step["request_id"].startswith("worker-") and "access_key" not in step
    assert last["request_id"] == "req-1"
    assert audit_scope.get() is None


def test_frequent_workers_write_no_pass_frame_but_their_events_carry_the_pass_id(
    audit_lines: AuditLines,
) -> None:
    from twisted.internet.defer import Deferred
    from twisted.internet.task import Clock

    from s3orch.observe.audit import audit
    from s3orch.workers.base import PeriodicWorker

    class Quiet(PeriodicWorker):
        async def tick(self) -> None:
            audit("quiet.dropped")

    worker = Quiet("quiet", 2.0, Clock(), component="quiet", audited=False)
    done: list[bool] = []
    Deferred.fromCoroutine(worker.run_once()).addCallback(done.append)
    assert done == [True]
    (dropped,) = audit_lines.events
    assert dropped["event"] == "quiet.dropped" and dropped["request_id"].startswith("quiet-")


def test_an_audit_event_is_what_logger_info_would_have_emitted() -> None:
    """audit() builds the event Logger.info("audit", ...) would (it skips only the level
    re-validation): same keys in the same order, same namespace, level and format."""
    from twisted.logger import Logger, LogLevel, LogPublisher

    from s3orch.observe import audit as audit_module

    built: list[LogEvent] = []
    stock: list[LogEvent] = []
    original, token = audit_module._log, audit_scope.set(None)  # no request's scope adds fields
    audit_module._log = Logger(namespace="audit", observer=LogPublisher(cast(ILogObserver, built.append)))
    try:
        audit_module.audit("s3.HeadObject", request_id="R1", bucket="b", key="k", status=200)
    finally:
        audit_module._log = original
        audit_scope.reset(token)
    Logger(namespace="audit", observer=LogPublisher(cast(ILogObserver, stock.append))).info(
        "audit", audit=True, event="s3.HeadObject", component="audit", request_id="R1", bucket="b", key="k",
        status=200,
    )
    (mine,), (theirs,) = built, stock
    assert list(mine) == list(theirs)
    assert {k: v for k, v in mine.items() if k not in ("log_time", "log_logger")} == {
        k: v for k, v in theirs.items() if k not in ("log_time", "log_logger")
    }
    assert mine["log_level"] is LogLevel.info and isinstance(mine["log_time"], float)
