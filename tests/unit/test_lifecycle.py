"""Lifecycle expiration in a whole in-process gateway (GatewayHarness) driven by its clock.

The hourly worker deletes only keys whose internal key ``{bucket}/{key}`` starts with a rule's
prefix and whose current version is older than ``expiration_days``, through the normal delete
path (backend bytes gone, quota settled, ``lifecycle.delete`` in the outbox with the change),
never a newer overwrite; no rules means no lock and no query; a reload swaps the rules.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.logger import globalLogPublisher

from s3orch.admin.ndjson import Progress
from s3orch.config.model import LifecycleConfig, LifecycleRule
from s3orch.core.objects import NewObject
from s3orch.observe.metrics import LIFECYCLE_DELETED, LIFECYCLE_FAILED, LIFECYCLE_RUNS, LIFECYCLE_SKIPPED
from s3orch.payload import Payload
from s3orch.store.locks import WorkerLock
from s3orch.testing.harness import DEFAULT_CONFIG, GatewayHarness
from s3orch.workers.lifecycle import LifecycleWorker, run_status
from tests.unit.test_audit_events import AuditLines

DAY = 86400.0
HOUR = 3600.0

RULES = """\
lifecycle:
  batch_size: 2
  rules:
    - prefix: "photos/tmp/"
      expiration_days: 7
    - prefix: "documents/drafts/"
      expiration_days: 1
notifications:
  endpoints:
    - url: "http://hooks.test/events"
      events: ["lifecycle.*"]
      max_retries: 1000
"""


def jump(h: GatewayHarness, seconds: float) -> None:
    """Move the clock in one step (the hourly worker catches up once; the 30 s gauges do not
    replay every missed tick) and run what became due."""
    h.settle()
    h.clock.rightNow += seconds
    h.settle()


def worker(h: GatewayHarness) -> LifecycleWorker:
    found = h.service.getServiceNamed("lifecycle")
    assert isinstance(found, LifecycleWorker)
    return found


def keys(h: GatewayHarness, bucket: str) -> list[str]:
    page = h.run(h.store.list_objects(bucket, "", "", "", 1000))
    return [entry.key for entry in page.entries]


def stored_bytes(h: GatewayHarness) -> int:
    return sum(len(o.data) for s in h.backends.values() for b in s.buckets for o in s.objects(b).values())


def outbox(h: GatewayHarness) -> list[dict[str, Any]]:
    rows = h.run(h.store.due_events(h.clock.seconds() + 10**7, 1000))
    return [json.loads(row.payload) for row in rows]


@pytest.fixture
def audit_lines() -> Iterator[AuditLines]:
    lines = AuditLines()
    globalLogPublisher.addObserver(lines)
    yield lines
    globalLogPublisher.removeObserver(lines)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayHarness]:
    harness = GatewayHarness(tmp_path, DEFAULT_CONFIG + RULES).start()
    try:
        yield harness
    finally:
        harness.stop()


def test_only_expired_keys_under_a_rules_prefix_are_deleted_through_the_delete_path(
    gateway: GatewayHarness, audit_lines: AuditLines
) -> None:
    h = gateway
    for bucket, key in [("photos", "tmp/a"), ("photos", "tmp/b"), ("photos", "tmp/sub/c"),
                        ("photos", "tmpx"), ("photos", "keep/d"), ("documents", "tmp/e")]:
        assert h.put(bucket, key, f"{bucket}/{key}".encode()).status == 200
    jump(h, 2 * DAY)
    assert h.put("photos", "tmp/young", b"young").status == 200
    assert h.put("documents", "drafts/f", b"draft").status == 200
    deleted_before = LIFECYCLE_DELETED._value.get()
    jump(h, 5 * DAY + HOUR)  # tmp/a, b, sub/c are 7 days and an hour old; young is 5 days old
    assert keys(h, "photos") == ["keep/d", "tmp/young", "tmpx"]
    assert keys(h, "documents") == ["tmp/e"]  # its drafts/ rule expires after 1 day
    assert LIFECYCLE_DELETED._value.get() - deleted_before == 4
    h.settle()  # backend deletes ran with the pass: the bytes are gone and no quota is held for them
    assert stored_bytes(h) == len(b"photos/keep/d" b"photos/tmpx" b"young" b"documents/tmp/e")
    quotas = h.run(h.store.get_quotas())
    assert sum(q.bytes_used for q in quotas.values()) == stored_bytes(h)
    assert sum(q.orphan_bytes + q.reserved_bytes for q in quotas.values()) == 0
    assert sum(q.object_count for q in quotas.values()) == 4
    events = outbox(h)
    removed = sorted(e["subject"] for e in events if e["type"] == "lifecycle.delete")
    assert removed == ["drafts/f", "tmp/a", "tmp/b", "tmp/sub/c"]
    (sample,) = [e["data"] for e in events if e["subject"] == "tmp/a"]
    assert (sample["bucket"], sample["rule_prefix"], sample["expiration_days"]) == ("photos", "photos/tmp/", 7)
    completed = [e["data"] for e in events if e["type"] == "lifecycle.completed"]
    assert [(c["deleted"], c["status"], c["trigger"]) for c in completed][-1] == (4, "success", "schedule")
    assert completed[-1]["run_id"] == sample["run_id"]
    assert not [e for e in events if e["type"].startswith("s3:")]  # expiry is not a client delete
    # the audit log: the pass's frame and each delete under the pass's correlation id
    run_id = sample["run_id"]
    assert run_id.startswith("lifecycle-")
    assert audit_lines.of_request(run_id).count("lifecycle.delete") == 4
    assert audit_lines.of_request(run_id).count("storage.DeleteObject") == 4
    assert {"lifecycle.start", "lifecycle.complete", "lifecycle.expired"} <= set(audit_lines.of_request(run_id))
    (summary,) = [e for e in audit_lines.named("lifecycle.expired") if e["request_id"] == run_id]
    assert (summary["deleted"], summary["outcome"], summary["trigger"]) == (4, "success", "schedule")
    jump(h, 2 * DAY)  # the young one's turn
    assert keys(h, "photos") == ["keep/d", "tmpx"]
    status = worker(h).status()
    assert status["last_result"] == "success" and status["lock_id"] == WorkerLock.LIFECYCLE


def test_an_overwrite_racing_the_pass_is_never_deleted(gateway: GatewayHarness) -> None:
    h = gateway
    lifecycle = worker(h)
    lifecycle.stopService()  # only the pass below runs
    assert h.put("photos", "tmp/raced", b"old bytes").status == 200
    assert h.put("photos", "tmp/plain", b"old too").status == 200
    jump(h, 8 * DAY)
    assert keys(h, "photos") == ["tmp/plain", "tmp/raced"]
    real = h.store.expired_objects

    async def then_overwrite(*args: Any) -> Any:
        page = await real(*args)
        if page:  # a client overwrites tmp/raced between the scan and the delete
            await lifecycle.objects.put(
                "photos", "tmp/raced", Payload.from_bytes(b"NEW bytes"),
                new=NewObject("text/plain", {}, {}),
            )
        return page

    h.store.expired_objects = then_overwrite  # type: ignore[method-assign, assignment]
    skipped_before = LIFECYCLE_SKIPPED._value.get()
    outcome = h.run(lifecycle.run_pass())
    h.store.expired_objects = real  # type: ignore[method-assign]
    assert (outcome.deleted, outcome.skipped, outcome.failed, outcome.status) == (1, 1, 0, "success")
    assert LIFECYCLE_SKIPPED._value.get() - skipped_before == 1
    assert keys(h, "photos") == ["tmp/raced"]
    assert h.get("photos", "tmp/raced").body == b"NEW bytes"
    assert stored_bytes(h) == len(b"NEW bytes")
    subjects = [e["subject"] for e in outbox(h) if e["type"] == "lifecycle.delete" and
                e["data"]["run_id"] == outcome.run_id]
    assert subjects == ["tmp/plain"]


def test_no_rules_take_no_lock_and_run_no_query_and_a_reload_brings_rules(tmp_path: Path) -> None:
    config = DEFAULT_CONFIG + 'ui:\n  admin_token: "tok"\n'
    with GatewayHarness(tmp_path, config) as h:
        lifecycle = worker(h)
        queries: list[Any] = []
        locks: list[Any] = []
        real_query = h.store.expired_objects
        async def counted(*args: Any) -> Any:
            queries.append(args)
            return await real_query(*args)

        h.store.expired_objects = counted  # type: ignore[method-assign, assignment]
        assert lifecycle.locks is not None
        real_try = lifecycle.locks.try_lock

        async def spy(lock_id: int) -> bool:
            locks.append(lock_id)
            return await real_try(lock_id)

        lifecycle.locks.try_lock = spy  # type: ignore[method-assign, assignment]
        assert h.put("photos", "tmp/a", b"a").status == 200
        jump(h, 9 * DAY)
        assert lifecycle.status()["last_result"] == "success"
        assert queries == [] and WorkerLock.LIFECYCLE not in locks
        assert keys(h, "photos") == ["tmp/a"]
        response = admin(h, "tok")
        assert (response["status"], response["reason"]) == ("skipped", "no lifecycle rules are configured")
        # SIGHUP with rules: the next pass uses them
        rules = (LifecycleRule(prefix="photos/tmp/", expiration_days=7),)
        new = dataclasses.replace(h.config, lifecycle=LifecycleConfig(rules=rules))
        outcome = h.run(h.service.reloader.apply(new))
        assert outcome["status"] == "ok" and "lifecycle.rules" in outcome["changed"]
        assert lifecycle.rules == new.lifecycle.rules
        jump(h, HOUR)
        assert keys(h, "photos") == [] and queries and WorkerLock.LIFECYCLE in locks


def admin(h: GatewayHarness, token: str, ndjson: bool = False) -> Any:
    accept = "Accept: application/x-ndjson\r\n" if ndjson else ""
    response = h.send_raw(
        f"POST /admin/api/lifecycle HTTP/1.1\r\nHost: {h.host}\r\nX-Admin-Token: {token}\r\n"
        f"Content-Length: 0\r\n{accept}\r\n".encode()
    )
    assert response.status == 200, response.text
    if ndjson:
        return [json.loads(line) for line in response.body.splitlines()]
    return json.loads(response.body)


def test_the_admin_route_runs_a_pass_now_with_ndjson_progress(tmp_path: Path) -> None:
    with GatewayHarness(tmp_path, DEFAULT_CONFIG + RULES + 'ui:\n  admin_token: "tok"\n') as h:
        worker(h).stopService()  # only the admin-triggered pass runs
        for index in range(5):
            assert h.put("photos", f"tmp/{index}", b"x").status == 200
        jump(h, 8 * DAY)
        assert keys(h, "photos") == [f"tmp/{i}" for i in range(5)]
        events = admin(h, "tok", ndjson=True)
        kinds = [e["type"] for e in events]
        assert kinds[0] == "start" and kinds[-1] == "result"
        pages = [(e["prefix"], e["keys"], e["done"]) for e in events if e["type"] == "step_end"]
        assert pages == [  # batch_size 2; the second rule finds nothing
            ("photos/tmp/", 2, 2), ("photos/tmp/", 2, 4), ("photos/tmp/", 1, 5), ("documents/drafts/", 0, 5),
        ]
        assert kinds.count("step_start") == 4 and events[0]["rules"] == 2
        result = events[-1]
        assert (result["status"], result["outcome"], result["deleted"], result["failed"]) == ("ok", "success", 5, 0)
        assert keys(h, "photos") == []
        assert events[0]["run_id"].startswith("lifecycle-") and result["run_id"] == events[0]["run_id"]
        again = admin(h, "tok")
        assert (again["status"], again["outcome"], again["deleted"]) == ("ok", "empty", 0)


def test_run_status_names_the_outcome() -> None:
    assert [run_status(1, 0), run_status(1, 1), run_status(0, 1), run_status(0, 0)] == [
        "success", "partial", "failed", "empty",
    ]


def test_a_database_outage_ends_the_pass_as_an_error_and_the_admin_route_answers_503(tmp_path: Path) -> None:
    from s3orch.store.interface import StoreUnavailable

    with GatewayHarness(tmp_path, DEFAULT_CONFIG + RULES + 'ui:\n  admin_token: "tok"\n') as h:
        lifecycle = worker(h)

        async def down(*args: Any) -> Any:
            raise StoreUnavailable("connection refused")

        h.store.expired_objects = down  # type: ignore[method-assign, assignment]
        errors = LIFECYCLE_RUNS.labels("error")._value.get()
        response = h.send_raw(
            f"POST /admin/api/lifecycle HTTP/1.1\r\nHost: {h.host}\r\nX-Admin-Token: tok\r\n"
            "Content-Length: 0\r\n\r\n".encode()
        )
        assert response.status == 503 and "database" in json.loads(response.body)["error"]
        assert h.run(lifecycle.run_once()) is False  # the scheduled tick: counted, not raised
        assert lifecycle.status()["last_result"] == "error"
        assert LIFECYCLE_RUNS.labels("error")._value.get() - errors == 2
        h.problems.events.clear()


def test_a_failing_delete_is_counted_and_the_pass_goes_on(gateway: GatewayHarness) -> None:
    h = gateway
    for key in ("tmp/1", "tmp/2", "tmp/3"):
        assert h.put("photos", key, b"v").status == 200
    lifecycle = worker(h)
    lifecycle.stopService()
    jump(h, 8 * DAY)
    real = lifecycle.objects.delete

    async def flaky(bucket: str, key: str, *args: Any, **kwargs: Any) -> bool:
        if key == "tmp/2":
            raise RuntimeError("boom")
        return await real(bucket, key, *args, **kwargs)

    lifecycle.objects.delete = flaky  # type: ignore[method-assign]
    partial = LIFECYCLE_RUNS.labels("partial")._value.get()
    failed = LIFECYCLE_FAILED._value.get()
    progress = Progress()
    outcome = h.run(lifecycle.run_pass(progress))
    assert (outcome.deleted, outcome.failed, outcome.status) == (2, 1, "partial")
    assert LIFECYCLE_FAILED._value.get() - failed == 1
    assert LIFECYCLE_RUNS.labels("partial")._value.get() - partial == 1
    assert keys(h, "photos") == ["tmp/2"]
    h.problems.events.clear()  # the failure was logged, as it should be


class _Rules:
    def __init__(self) -> None:
        self.swapped: list[LifecycleConfig] = []

    def set_rules(self, config: LifecycleConfig) -> None:
        self.swapped.append(config)


class _Store:
    async def sync_quota_limits(self, limits: dict[str, int], now: float) -> None:
        return None


TAG_RULES = """\
lifecycle:
  rules:
    - prefix: "photos/logs/"
      expiration_days: 1
      tags: {retention: short, team: ops}
    - tags: {scratch: "yes"}
      expiration_days: 2
"""


def test_a_rule_with_tags_expires_only_keys_carrying_all_of_them(tmp_path: Path) -> None:
    with GatewayHarness(tmp_path, DEFAULT_CONFIG + TAG_RULES) as h:
        both = {"x-amz-tagging": "retention=short&team=ops&extra=1"}
        assert h.put("photos", "logs/both", b"1", headers=both).status == 200
        assert h.put("photos", "logs/one", b"2", headers={"x-amz-tagging": "retention=short"}).status == 200
        other = {"x-amz-tagging": "retention=long&team=ops"}
        assert h.put("photos", "logs/other-value", b"3", headers=other).status == 200
        assert h.put("photos", "logs/untagged", b"4").status == 200
        assert h.put("photos", "elsewhere", b"5", headers=both).status == 200  # outside the prefix
        assert h.put("documents", "scratch", b"6", headers={"x-amz-tagging": "scratch=yes"}).status == 200
        assert h.put("documents", "kept", b"7", headers={"x-amz-tagging": "scratch=no"}).status == 200
        # tags set after the write count: the version's current tag set is what the rule sees
        assert h.put("photos", "logs/tagged-later", b"8").status == 200
        assert h.run(h.store.set_object_tags("photos", "logs/tagged-later", "retention=short&team=ops"))
        jump(h, DAY + HOUR)
        assert keys(h, "photos") == ["elsewhere", "logs/one", "logs/other-value", "logs/untagged"]
        assert keys(h, "documents") == ["kept", "scratch"]  # the tag-only rule waits 2 days
        jump(h, DAY)
        assert keys(h, "documents") == ["kept"]
        quotas = h.run(h.store.get_quotas())
        assert sum(q.bytes_used for q in quotas.values()) == stored_bytes(h) == 5


def test_a_sighup_swaps_the_rules_and_an_invalid_tag_rule_changes_nothing(tmp_path: Path) -> None:
    from twisted.internet.task import Clock

    from s3orch.reload import Reloader, ReloadTargets
    from s3orch.testing.config import config_from_string

    base = DEFAULT_CONFIG.replace("{workdir}", str(tmp_path))
    rules = _Rules()
    records: list[dict[str, Any]] = []
    reloader = Reloader(
        current=config_from_string(base), targets=ReloadTargets(store=_Store(), lifecycle=rules),
        clock=Clock(), record=records.append,
    )
    path = tmp_path / "config.yaml"
    path.write_text(base + 'lifecycle:\n  batch_size: 5\n  rules:\n    - prefix: "photos/tmp/"\n      expiration_days: 3\n')
    outcome = run_sync(reloader.reload(str(path)))
    assert outcome["status"] == "ok"
    assert outcome["changed"] == ["lifecycle.rules", "lifecycle.batch_size"] and outcome["restart_required"] == []
    (swapped,) = rules.swapped
    assert [(r.prefix, r.expiration_days) for r in swapped.rules] == [("photos/tmp/", 3)] and swapped.batch_size == 5
    eleven = ", ".join(f"k{i}: v" for i in range(11))
    path.write_text(base + f'lifecycle:\n  rules:\n    - prefix: "a/"\n      expiration_days: 1\n      tags: {{{eleven}}}\n')
    failed = run_sync(reloader.reload(str(path)))
    assert failed["status"] == "failed" and "lifecycle.rules[0].tags" in failed["error"]
    assert len(rules.swapped) == 1 and reloader.current.lifecycle == swapped
    path.write_text(base + 'lifecycle:\n  rules:\n    - prefix: "a/"\n      expiration_days: 1\n      tags: {env: dev}\n')
    tagged = run_sync(reloader.reload(str(path)))
    assert tagged["status"] == "ok"
    assert rules.swapped[-1].rules[0].tags == (("env", "dev"),)


def run_sync(coroutine: Any) -> Any:
    out: list[Any] = []
    Deferred.fromCoroutine(coroutine).addBoth(out.append)
    (result,) = out
    if hasattr(result, "raiseException"):
        result.raiseException()
    return result
