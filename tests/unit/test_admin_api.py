"""The admin API through a whole in-process gateway (GatewayHarness): auth, every route's JSON,
the body cap, errors with request ids, NDJSON progress."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.logger import globalLogPublisher

from s3orch.admin.routes import ROUTES
from s3orch.observe.logging import active_settings, get_log_level, set_log_level
from s3orch.testing.harness import DEFAULT_CONFIG, GatewayHarness, HarnessResponse

TOKEN = "s3cr3t-admin-token"
WITH_TOKEN = DEFAULT_CONFIG + f'ui:\n  admin_token: "{TOKEN}"\n'


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayHarness]:
    harness = GatewayHarness(tmp_path, WITH_TOKEN).start()
    try:
        yield harness
    finally:
        harness.stop()
        set_log_level("info")


def call(
    h: GatewayHarness,
    method: str,
    path: str,
    *,
    token: str | None = TOKEN,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> HarnessResponse:
    lines = [f"{method} /admin/api/{path} HTTP/1.1", f"Host: {h.host}", f"Content-Length: {len(body)}"]
    if token is not None:
        lines.append(f"X-Admin-Token: {token}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return h.send_raw("\r\n".join(lines).encode() + b"\r\n\r\n" + body)


def ok(response: HarnessResponse) -> dict[str, Any]:
    assert response.status == 200, response.text
    assert response.header("content-type") == "application/json"
    data: dict[str, Any] = json.loads(response.body)
    assert data["request_id"] == response.header("x-request-id")
    return data


def failing_deletes(h: GatewayHarness, backend: str) -> None:
    """Make ``backend`` refuse every DELETE with 403 (its objects cannot be cleaned up)."""
    server: Any = h.backends[backend]
    original = server.render

    def render(request: Any) -> bytes:
        if request.method == b"DELETE":
            request.setResponseCode(403)
            return b"<?xml version='1.0'?><Error><Code>AccessDenied</Code><Message>no</Message></Error>"
        result: bytes = original(request)
        return result

    server.render = render


def dead_letters(h: GatewayHarness, count: int, size: int = 100) -> None:
    """``count`` objects of ``size`` bytes whose cleanup failed 10 times (in the DLQ)."""
    failing_deletes(h, "backend-1")
    for index in range(count):
        assert h.put("photos", f"dead/{index}", b"x" * size).status == 200
        assert h.delete("photos", f"dead/{index}").status == 204
    _, rows = h.run(h.store.cleanup_queue_page(1000))
    for row in rows:
        for _ in range(9):
            h.run(h.store.cleanup_failed(row.id, "403 AccessDenied", h.clock.seconds()))
    assert h.run(h.store.cleanup_dlq_page(None, 0))[0] == count


def _request_for(route_path: str, method: str) -> tuple[str, bytes]:
    route_path = route_path.replace("{name}", "backend-1")
    if route_path == "object-locations":
        return "object-locations?key=photos/a.txt", b""
    if method == "PUT":
        return route_path, b'{"level": "debug"}'
    if route_path == "cleanup-dlq/write-off":
        return route_path, b'{"all": true}'
    return route_path, b""


# --- authentication -------------------------------------------------------------------------


def test_every_route_refuses_a_missing_or_wrong_token(gateway: GatewayHarness) -> None:
    for route in ROUTES:
        path, body = _request_for(route.path, route.method)
        answers = [
            call(gateway, route.method, path, token=None, body=body),
            call(gateway, route.method, path, token="wrong", body=body),
            call(gateway, route.method, path, token=TOKEN[:-1] + "X", body=body),  # same length
            call(gateway, route.method, path, token="", body=body),
        ]
        for response in answers:
            assert response.status == 401, (route, response.text)
            assert response.header("content-type") == "application/json"
            data = json.loads(response.body)
            assert data == {"error": "unauthorized", "request_id": response.header("x-request-id")}
    # no side effect of a refused call: the level was not changed
    assert get_log_level() == "info"


def test_admin_key_is_the_token_when_admin_token_is_empty(tmp_path: Path) -> None:
    with GatewayHarness(tmp_path, DEFAULT_CONFIG + 'ui:\n  admin_key: "the-key"\n') as h:
        assert ok(call(h, "GET", "status", token="the-key"))["db_healthy"] is True
        assert call(h, "GET", "status", token=TOKEN).status == 401
    with GatewayHarness(tmp_path / "both", DEFAULT_CONFIG + f'ui:\n  admin_key: "the-key"\n  admin_token: "{TOKEN}"\n') as h:
        assert call(h, "GET", "status", token="the-key").status == 401
        assert ok(call(h, "GET", "status"))["db_healthy"] is True


def test_without_a_token_the_admin_api_is_not_served(tmp_path: Path) -> None:
    with GatewayHarness(tmp_path) as h:
        for token in (None, "", "anything"):
            response = call(h, "GET", "status", token=token)
            assert response.status == 404
            assert json.loads(response.body) == {"error": "not found", "request_id": response.header("x-request-id")}
        # and S3 still answers as before
        assert h.put("photos", "a", b"1").status == 200


# --- every route's documented answer ------------------------------------------------------


def test_status_reports_database_and_each_backends_quota(gateway: GatewayHarness) -> None:
    assert gateway.put("photos", "a.txt", b"hello").status == 200
    data = ok(call(gateway, "GET", "status"))
    assert data["db_healthy"] is True and data["ready"] is True
    names = [b["name"] for b in data["backends"]]
    assert names == ["backend-1", "backend-2"]
    first = data["backends"][0]
    assert first["bytes_used"] == 5 and first["bytes_limit"] == 1048576 and first["object_count"] == 1
    assert first["available_bytes"] == 1048576 - 5 and first["orphan_bytes"] == 0


def test_object_locations_needs_a_bucket_qualified_key(gateway: GatewayHarness) -> None:
    assert gateway.put("photos", "dir/a.txt", b"hello").status == 200
    data = ok(call(gateway, "GET", "object-locations?key=photos/dir/a.txt"))
    assert data["key"] == "photos/dir/a.txt" and data["size"] == 5
    (location,) = data["locations"]
    assert location["backend"] == "backend-1" and location["size"] == 5 and location["part_number"] == 0
    assert location["storage_key"] in gateway.backends["backend-1"].objects("store-1")
    missing = call(gateway, "GET", "object-locations")
    assert missing.status == 400 and json.loads(missing.body)["error"] == "key parameter is required"
    assert call(gateway, "GET", "object-locations?key=photos").status == 400
    unknown = call(gateway, "GET", "object-locations?key=photos/nope")
    assert unknown.status == 404 and "request_id" in json.loads(unknown.body)


def test_cleanup_queue_shows_depth_and_rows(gateway: GatewayHarness) -> None:
    failing_deletes(gateway, "backend-1")
    for key in ("a", "b", "c"):
        assert gateway.put("photos", key, b"12345").status == 200
        assert gateway.delete("photos", key).status == 204
    data = ok(call(gateway, "GET", "cleanup-queue?limit=2"))
    assert data["depth"] == 3 and len(data["items"]) == 2
    item = data["items"][0]
    assert item["backend"] == "backend-1" and item["size"] == 5 and item["attempts"] == 1
    assert "AccessDenied" in item["last_error"]
    assert call(gateway, "GET", "cleanup-queue?limit=x").status == 400


def test_dlq_list_requeue_and_write_off_with_the_quota_adjusted(gateway: GatewayHarness) -> None:
    dead_letters(gateway, 3, size=100)
    listing = ok(call(gateway, "GET", "cleanup-dlq?backend=backend-1"))
    assert listing["count"] == 3 and listing["bytes"] == 300 and len(listing["items"]) == 3
    assert listing["items"][0]["attempts"] == 10
    assert ok(call(gateway, "GET", "cleanup-dlq?backend=backend-2"))["count"] == 0
    orphan = ok(call(gateway, "GET", "status"))["backends"][0]["orphan_bytes"]
    assert orphan == 300
    # write-off needs to be told which rows
    refused = call(gateway, "POST", "cleanup-dlq/write-off")
    assert refused.status == 400 and "all" in json.loads(refused.body)["error"]
    first = listing["items"][0]["id"]
    gone = ok(call(gateway, "POST", "cleanup-dlq/write-off", body=json.dumps({"ids": [first]}).encode()))
    assert (gone["status"], gone["rows"], gone["bytes"]) == ("written_off", 1, 100)
    assert ok(call(gateway, "GET", "status"))["backends"][0]["orphan_bytes"] == 200
    assert call(gateway, "POST", "cleanup-dlq/requeue", body=b'{"ids": "1"}').status == 400
    requeued = ok(call(gateway, "POST", "cleanup-dlq/requeue?backend=backend-1"))
    assert (requeued["status"], requeued["requeued"]) == ("requeued", 2)
    assert ok(call(gateway, "GET", "cleanup-dlq"))["count"] == 0
    queue = ok(call(gateway, "GET", "cleanup-queue"))
    assert queue["depth"] == 2 and all(item["attempts"] == 0 for item in queue["items"])
    assert ok(call(gateway, "GET", "status"))["backends"][0]["orphan_bytes"] == 200  # still to delete


def test_usage_flush_refreshes_the_gauges_now(gateway: GatewayHarness) -> None:
    from s3orch.observe.metrics import QUOTA_USED

    assert gateway.put("photos", "a", b"x" * 42).status == 200
    QUOTA_USED.labels("backend-1").set(-1)
    assert ok(call(gateway, "POST", "usage-flush"))["status"] == "flushed"
    assert QUOTA_USED.labels("backend-1")._value.get() == 42


def test_log_level_get_and_put(gateway: GatewayHarness) -> None:
    assert ok(call(gateway, "GET", "log-level"))["level"] == "info"
    changed = ok(call(gateway, "PUT", "log-level", body=b'{"level": "debug"}'))
    assert (changed["level"], changed["previous"]) == ("debug", "info")
    assert ok(call(gateway, "GET", "log-level"))["level"] == "debug"
    settings = active_settings()
    assert settings is not None and settings.level == "debug"
    for bad in (b"{not json", b'["debug"]', b'{"level": "loud"}', b'{"level": 3}', b""):
        response = call(gateway, "PUT", "log-level", body=bad)
        assert response.status == 400, bad
        assert "request_id" in json.loads(response.body)
    assert ok(call(gateway, "GET", "log-level"))["level"] == "debug"


def test_workers_show_last_tick_result_next_run_and_lock(gateway: GatewayHarness) -> None:
    gateway.advance(95)  # a locked worker starts after up to half its interval, then ticks
    data = ok(call(gateway, "GET", "workers"))
    workers = {w["name"]: w for w in data["workers"]}
    assert {"cleanup-queue", "multipart-gc", "usage-flush", "pending-reaper"} <= set(workers)
    cleanup = workers["cleanup-queue"]
    assert cleanup["running"] is True and cleanup["last_result"] == "success"
    assert cleanup["last_tick_at"] <= gateway.clock.seconds() < cleanup["next_run_at"]
    assert cleanup["lock_id"] is not None and cleanup["lock_holder"] == "this instance"
    assert workers["usage-flush"]["lock_holder"] is None  # every instance refreshes its own gauges


def test_reload_status_before_any_reload_and_after(gateway: GatewayHarness) -> None:
    assert ok(call(gateway, "GET", "reload-status"))["status"] == "never"
    gateway.service.last_reload = {
        "status": "failed", "at": 1.0, "error": "bad yaml", "changed": [], "restart_required": [],
    }
    data = ok(call(gateway, "GET", "reload-status"))
    assert (data["status"], data["error"]) == ("failed", "bad yaml")


def test_logs_come_from_the_ring_filtered_by_level_and_component(gateway: GatewayHarness) -> None:
    from twisted.logger import Logger

    settings = active_settings()
    assert settings is not None
    observer = settings.observer()
    globalLogPublisher.addObserver(observer)
    try:
        log = Logger(namespace="test")
        log.info("hello from {who}", component="testcomp", who="a test", secret_access_key="leak")
        log.warn("careful", component="othercomp")
        call(gateway, "GET", "status", token="bad")  # logged by the admin component
    finally:
        globalLogPublisher.removeObserver(observer)
    mine = ok(call(gateway, "GET", "logs?component=testcomp"))
    (line,) = mine["lines"]
    assert line["msg"] == "hello from a test" and line["level"] == "INFO"
    assert "secret_access_key" not in line and "leak" not in json.dumps(mine)
    warned = ok(call(gateway, "GET", "logs?level=warn"))["lines"]
    assert [entry["msg"] for entry in warned] == ["careful"]
    assert len(ok(call(gateway, "GET", "logs?limit=1"))["lines"]) == 1
    assert any(e["component"] == "admin" for e in ok(call(gateway, "GET", "logs"))["lines"])
    assert call(gateway, "GET", "logs?level=loud").status == 400


# --- the envelope ---------------------------------------------------------------------------


def test_bodies_over_1_mib_get_413_json(gateway: GatewayHarness) -> None:
    for route in ROUTES:
        response = call(gateway, route.method, route.path.replace("{name}", "backend-1"), body=b" " * (1024 * 1024 + 1))
        assert response.status == 413, route
        assert response.header("content-type") == "application/json"
        assert json.loads(response.body)["error"] == "request body too large"
    # exactly the cap is read (and here, parsed)
    padded = b'{"level": "warn"}' + b" " * (1024 * 1024 - 17)
    assert ok(call(gateway, "PUT", "log-level", body=padded))["level"] == "warn"


def test_a_chunked_body_over_1_mib_is_cut_off_with_413_json(gateway: GatewayHarness) -> None:
    chunk = b" " * 65536
    head = (
        f"PUT /admin/api/log-level HTTP/1.1\r\nHost: {gateway.host}\r\nX-Admin-Token: {TOKEN}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(17)) + b"0\r\n\r\n"
    response = gateway.send_raw(head + body)
    assert response.status == 413
    assert json.loads(response.body)["error"] == "request body too large"
    assert ok(call(gateway, "GET", "log-level"))["level"] == "info"


def test_unknown_routes_and_methods_are_json_errors(gateway: GatewayHarness) -> None:
    for path in ("/admin", "/admin/", "/admin/api", "/admin/api/", "/admin/other"):
        raw = gateway.send_raw(f"GET {path} HTTP/1.1\r\nHost: {gateway.host}\r\nX-Admin-Token: {TOKEN}\r\n\r\n".encode())
        assert raw.status == 404 and "request_id" in json.loads(raw.body), path
        anonymous = gateway.send_raw(f"GET {path} HTTP/1.1\r\nHost: {gateway.host}\r\n\r\n".encode())
        assert anonymous.status in (401, 404) and "request_id" in json.loads(anonymous.body), path
    unknown = call(gateway, "GET", "nope")
    assert unknown.status == 404 and json.loads(unknown.body)["error"].startswith("no admin route")
    wrong = call(gateway, "DELETE", "log-level")
    assert wrong.status == 405 and wrong.header("allow") == "GET, PUT"
    assert "request_id" in json.loads(wrong.body)


def test_a_failing_handler_is_a_500_with_the_request_id_and_no_traceback(gateway: GatewayHarness) -> None:
    async def broken(limit: int) -> Any:
        raise RuntimeError("database exploded at /secret/path")

    gateway.store.cleanup_queue_page = broken  # type: ignore[method-assign]
    response = call(gateway, "GET", "cleanup-queue", headers={"X-Request-Id": "trace-me-42"})
    assert response.status == 500
    assert json.loads(response.body) == {"error": "internal error", "request_id": "trace-me-42"}
    assert b"Traceback" not in response.body and b"exploded" not in response.body
    assert any(e.get("request_id") == "trace-me-42" for e in gateway.problems.events)
    gateway.problems.events.clear()


def test_the_callers_request_id_is_kept_when_it_is_a_safe_token(gateway: GatewayHarness) -> None:
    assert ok(call(gateway, "GET", "status", headers={"X-Request-Id": "abc-123"}))["request_id"] == "abc-123"
    generated = call(gateway, "GET", "status", headers={"X-Request-Id": "bad id with spaces"})
    assert len(generated.header("x-request-id") or "") == 32


# --- NDJSON progress --------------------------------------------------------------------------


def events(response: HarnessResponse) -> list[dict[str, Any]]:
    assert response.status == 200, response.text
    assert response.header("content-type") == "application/x-ndjson"
    return [json.loads(line) for line in response.body.splitlines()]


def test_long_passes_stream_ndjson_progress_when_asked(gateway: GatewayHarness) -> None:
    dead_letters(gateway, 3)
    lines = events(call(gateway, "POST", "cleanup-dlq/requeue", headers={"Accept": "application/x-ndjson"}))
    kinds = [event["type"] for event in lines]
    assert kinds == ["start", "step_start", "step_end", "result"]
    assert lines[0]["total"] == 3
    assert lines[2]["done"] == 3 and lines[2]["total"] == 3
    assert lines[-1]["status"] == "requeued" and lines[-1]["requeued"] == 3
    rid = {event["request_id"] for event in lines}
    assert len(rid) == 1
    flush = events(call(gateway, "POST", "usage-flush", headers={"Accept": "application/x-ndjson"}))
    assert [e["type"] for e in flush] == ["start", "step_start", "step_end", "result"]
    assert flush[-1]["status"] == "flushed"
    # without the Accept header: one JSON document
    assert ok(call(gateway, "POST", "usage-flush"))["status"] == "flushed"


def test_a_refusal_before_the_first_event_keeps_its_status(gateway: GatewayHarness) -> None:
    response = call(gateway, "POST", "cleanup-dlq/write-off", headers={"Accept": "application/x-ndjson"})
    assert response.status == 400 and response.header("content-type") == "application/json"


def test_status_shows_each_backends_circuit_breaker(tmp_path: Path) -> None:
    config = WITH_TOKEN + "backend_circuit_breaker:\n  enabled: true\n  failure_threshold: 2\n  open_timeout: 60s\n"
    with GatewayHarness(tmp_path, config) as h:
        h.backends["backend-1"].redirect("store-1", "http://elsewhere.test/")  # every call fails
        for i in range(2):
            assert h.put("photos", f"k{i}", b"data").status == 200  # failed over to backend-2
        backends = {b["name"]: b for b in ok(call(h, "GET", "status"))["backends"]}
        assert backends["backend-1"]["circuit_breaker"]["state"] == "open"
        assert backends["backend-2"]["circuit_breaker"]["state"] == "closed"
    with GatewayHarness(tmp_path / "off", WITH_TOKEN) as h:  # breakers off: nothing to show
        assert all(b["circuit_breaker"] is None for b in ok(call(h, "GET", "status"))["backends"])
