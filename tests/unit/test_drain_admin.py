"""The drain and remove-backend admin routes through a whole in-process gateway with a clock."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.logger import globalLogPublisher

from s3orch.testing.harness import GatewayHarness
from s3orch.workers.drainer import DRAIN_INTERVAL
from tests.unit.test_drain import CONFIG, fill, reads_back
from tests.unit.test_replicator import stored

TOKEN = "drain-token"


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayHarness]:
    harness = GatewayHarness(tmp_path, CONFIG + f'ui:\n  admin_token: "{TOKEN}"\n').start()
    try:
        yield harness
    finally:
        harness.stop()


def admin(h: GatewayHarness, method: str, target: str) -> tuple[int, dict[str, Any]]:
    lines = [f"{method} /admin/api/{target} HTTP/1.1", f"Host: {h.host}", "Content-Length: 0",
             f"X-Admin-Token: {TOKEN}"]
    response = h.send_raw("\r\n".join(lines).encode() + b"\r\n\r\n")
    answer = json.loads(response.body)
    answer.pop("request_id", None)
    return response.status, answer


def test_drain_routes_start_report_and_complete(gateway: GatewayHarness) -> None:
    bodies = fill(gateway, 3)
    assert admin(gateway, "POST", "drain?backend=backend-1") == (
        200, {"status": "drain started", "backend": "backend-1"}
    )
    status, answer = admin(gateway, "POST", "drain?backend=backend-1")
    assert status == 400 and "drain operation failed" in answer["error"]
    assert admin(gateway, "POST", "drain?backend=nope")[0] == 400
    status, answer = admin(gateway, "GET", "drain?backend=backend-1")
    assert status == 200 and answer["active"] and answer["objects_remaining"] == 3
    gateway.advance(DRAIN_INTERVAL)
    status, answer = admin(gateway, "GET", "drain?backend=backend-1")
    assert answer["state"] == "completed" and answer["objects_remaining"] == 0 and answer["objects_moved"] == 3
    reads_back(gateway, bodies)


def test_cancel_route_and_remove_refused_while_draining(gateway: GatewayHarness) -> None:
    fill(gateway, 1)
    assert admin(gateway, "DELETE", "drain?backend=backend-1")[0] == 404
    admin(gateway, "POST", "drain?backend=backend-1")
    assert admin(gateway, "DELETE", "backend?name=backend-1")[0] == 409
    assert admin(gateway, "DELETE", "drain?backend=backend-1") == (
        200, {"status": "drain cancelled", "backend": "backend-1"}
    )
    assert admin(gateway, "GET", "drain?backend=backend-1")[1]["state"] == "none"


def test_remove_backend_forgets_metadata_and_leaves_the_bytes(gateway: GatewayHarness) -> None:
    fill(gateway, 2)
    status, answer = admin(gateway, "DELETE", "backend?name=backend-1")
    assert status == 200 and answer["status"] == "backend removed"
    assert answer["copies_forgotten"] == 2 and answer["objects_lost"] == 2
    assert len(stored(gateway, "backend-1")) == 2  # the bytes stay
    assert gateway.get("photos", "k0").status == 404


def test_purge_needs_a_fresh_token_for_that_backend(gateway: GatewayHarness) -> None:
    fill(gateway, 2)
    assert gateway.put("photos", "b2", b"x").status == 200
    status, preview = admin(gateway, "DELETE", "backend?name=backend-1&purge=true")
    assert status == 200 and preview["status"] == "preview"
    assert preview["object_count"] == 3 and preview["total_bytes"] == 1000 + 1001 + 1
    token = preview["confirm_token"]
    assert admin(gateway, "DELETE", f"backend?name=backend-2&purge=true&confirm={token}")[0] == 403
    assert admin(gateway, "DELETE", "backend?name=backend-1&purge=true&confirm=1.bad")[0] == 403
    gateway.advance(61)
    assert admin(gateway, "DELETE", f"backend?name=backend-1&purge=true&confirm={token}")[0] == 403
    assert len(stored(gateway, "backend-1")) == 3
    token = admin(gateway, "DELETE", "backend?name=backend-1&purge=true")[1]["confirm_token"]
    status, answer = admin(gateway, "DELETE", f"backend?name=backend-1&purge=true&confirm={token}")
    assert status == 200 and answer["purged"] == 3 and answer["purge_failures"] == 0
    assert stored(gateway, "backend-1") == {}
    assert gateway.get("photos", "b2").status == 404  # its only copy was purged: forgotten too


def test_removal_writes_backend_removed_to_the_outbox_and_the_audit_log(tmp_path: Path) -> None:
    hooks = 'notifications: {endpoints: [{url: "http://hook.test/x", events: ["backend.*"]}]}\n'
    seen: list[dict[str, Any]] = []

    def observer(event: dict[str, Any]) -> None:
        if event.get("audit") and event.get("event") == "backend.removed":
            seen.append(event)

    with GatewayHarness(tmp_path, CONFIG + f'ui:\n  admin_token: "{TOKEN}"\n' + hooks) as h:

        def removed() -> list[dict[str, Any]]:
            rows = h.run(h.store.due_events(h.clock.seconds() + 86400, 100))
            return [json.loads(r.payload) for r in rows if r.event_type == "backend.removed"]

        fill(h, 2)
        admin(h, "POST", "drain?backend=backend-2")
        globalLogPublisher.addObserver(observer)
        try:
            assert admin(h, "DELETE", "backend?name=backend-2")[0] == 409
            assert removed() == [] and seen == []  # refused: no event
            admin(h, "DELETE", "drain?backend=backend-2")
            assert admin(h, "DELETE", "backend?name=backend-1")[0] == 200
            token = admin(h, "DELETE", "backend?name=backend-2&purge=true")[1]["confirm_token"]
            assert admin(h, "DELETE", f"backend?name=backend-2&purge=true&confirm={token}")[0] == 200
        finally:
            globalLogPublisher.removeObserver(observer)
        events = removed()
        assert [(e["subject"], e["data"]) for e in events] == [
            ("backend-1", {"backend": "backend-1", "purge": False}),
            ("backend-2", {"backend": "backend-2", "purge": True, "purged": 0, "purge_failures": 0}),
        ]
        assert all(e["source"] == "/s3-orchestrator" and e["type"] == "backend.removed" for e in events)
        assert [(e["backend"], e["copies_forgotten"], e["objects_lost"]) for e in seen] == [
            ("backend-1", 2, 2), ("backend-2", 0, 0),
        ]


def test_the_originals_backends_name_paths_answer_as_the_query_forms(gateway: GatewayHarness) -> None:
    bodies = fill(gateway, 2)
    assert admin(gateway, "POST", "backends/backend-1/drain") == (
        200, {"status": "drain started", "backend": "backend-1"}
    )
    status, answer = admin(gateway, "POST", "backends/backend-1/drain")
    assert status == 400 and "drain operation failed" in answer["error"]
    assert admin(gateway, "POST", "backends/nope/drain")[0] == 400
    status, answer = admin(gateway, "GET", "backends/backend-1/drain")
    assert status == 200 and answer["state"] == "active" and answer["objects_remaining"] == 2
    assert admin(gateway, "GET", "drain?backend=backend-1")[1] == answer  # one drain, two paths
    assert admin(gateway, "DELETE", "backends/backend-1")[0] == 409  # refused while draining
    assert admin(gateway, "DELETE", "backends/backend-1/drain") == (
        200, {"status": "drain cancelled", "backend": "backend-1"}
    )
    assert admin(gateway, "DELETE", "backends/backend-1/drain")[0] == 404
    # Segments must fit the template: no empty name, no extra segment, no other method.
    assert admin(gateway, "POST", "backends//drain")[0] == 404
    assert admin(gateway, "GET", "backends/backend-1/drain/more")[0] == 404
    assert admin(gateway, "PUT", "backends/backend-1/drain")[0] == 405
    reads_back(gateway, bodies)
    status, preview = admin(gateway, "DELETE", "backends/backend-2?purge=true")
    assert status == 200 and preview["status"] == "preview" and preview["backend"] == "backend-2"
    status, answer = admin(gateway, "DELETE", "backends/backend-1")
    assert status == 200 and answer["status"] == "backend removed" and answer["copies_forgotten"] == 2
