"""Webhook notifications: the CloudEvents body, filters, the sink, and the notifier's delivery,
retries, backoff and drops, driven by ``task.Clock`` with an in-memory outbox and poster."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogEvent, globalLogPublisher

from s3orch.config.model import NotificationEndpoint
from s3orch.notify import events as ev
from s3orch.notify.delivery import (
    SIGNATURE_HEADER,
    TreqPoster,
    endpoint_label,
    signature,
    verify_signature,
)
from s3orch.notify.events import CloudEvent, pattern_matches, rfc3339, wants
from s3orch.notify.sink import NULL_SINK, OutboxSink, sink_for
from s3orch.observe.metrics import (
    NOTIFICATION_DROPPED,
    NOTIFICATION_FAILED,
    NOTIFICATION_QUEUE_DEPTH,
    NOTIFICATION_SENT,
    NOTIFICATION_STORE_ERRORS,
    REGISTRY,
)
from s3orch.store.interface import OutboxEntry, OutboxEvent
from s3orch.store.locks import WorkerLock
from s3orch.workers.notifier import Notifier, backoff
from tests.unit.test_workers import FakeLocks

HOOK = "http://hooks.example/a"
OTHER = "http://hooks.example/b"
T0 = 1_750_000_000.0


def run(coro: object) -> object:
    """Run a coroutine that completes synchronously (everything here is in memory)."""
    d = Deferred.fromCoroutine(coro)  # type: ignore[arg-type]
    results: list[object] = []
    d.addBoth(results.append)
    assert results, "coroutine did not complete synchronously"
    if isinstance(results[0], BaseException) or hasattr(results[0], "raiseException"):
        results[0].raiseException()  # type: ignore[union-attr]
    return results[0]


class OutboxStore:
    """The outbox part of the MetadataStore, in memory (same semantics as the contract)."""

    def __init__(self) -> None:
        self.rows: dict[int, OutboxEntry] = {}
        self.errors: dict[int, str] = {}
        self._next = 1
        self.fail: Exception | None = None

    async def enqueue_events(self, events: Sequence[OutboxEvent], now: float) -> None:
        if self.fail is not None:
            raise self.fail
        for e in events:
            self.rows[self._next] = OutboxEntry(
                self._next, e.endpoint, e.event_id, e.event_type, e.subject, e.payload, 0, now, now
            )
            self._next += 1

    async def due_events(self, now: float, limit: int) -> list[OutboxEntry]:
        due = sorted((r for r in self.rows.values() if r.next_attempt <= now), key=lambda r: (r.next_attempt, r.id))
        return due[:limit]

    async def events_done(self, ids: Sequence[int]) -> None:
        for i in ids:
            self.rows.pop(i, None)

    async def event_failed(self, entry_id: int, error: str, next_attempt: float) -> int:
        row = self.rows.get(entry_id)
        if row is None:
            return 0
        self.rows[entry_id] = replace(row, attempts=row.attempts + 1, next_attempt=next_attempt)
        self.errors[entry_id] = error
        return row.attempts + 1

    async def count_events(self) -> int:
        return len(self.rows)


class FakePoster:
    """Answers ``status[url]`` (default 204), or raises ``raises[url]``; records every POST."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes, dict[str, str], float]] = []
        self.status: dict[str, int] = {}
        self.raises: dict[str, Exception] = {}

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
        self.calls.append((url, body, dict(headers), timeout))
        if url in self.raises:
            raise self.raises[url]
        return self.status.get(url, 204)

    def bodies(self, url: str | None = None) -> list[dict[str, object]]:
        return [json.loads(body) for u, body, _, _ in self.calls if url is None or u == url]


def endpoint(url: str = HOOK, **fields: object) -> NotificationEndpoint:
    values: dict[str, object] = {"url": url, "events": ("*",), "secret": "s3cret", "max_retries": 3}
    values.update(fields)
    return NotificationEndpoint(**values)  # type: ignore[arg-type]


class Rig:
    """A notifier over an in-memory outbox, a fake poster and a Clock."""

    def __init__(self, *endpoints: NotificationEndpoint, locks: FakeLocks | None = None) -> None:
        self.clock = Clock()
        self.clock.advance(T0)
        self.store = OutboxStore()
        self.poster = FakePoster()
        self.endpoints = endpoints or (endpoint(),)
        self.sink = OutboxSink(self.endpoints, self.store, self.clock)  # type: ignore[arg-type]
        self.notifier = Notifier(
            self.store,  # type: ignore[arg-type]
            self.sink,
            self.endpoints,
            self.poster,
            self.clock,
            locks=locks,  # type: ignore[arg-type]
            instance="node-1",
        )

    def emit(self, event_type: str, subject: str = "k", key: str | None = "k") -> None:
        run(self.sink.emit(event_type, subject, {"bucket": "photos", "key": subject}, key=key))

    def tick(self) -> None:
        assert run(self.notifier.run_once()) is True


@pytest.fixture
def logged() -> list[LogEvent]:
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    yield events  # type: ignore[misc]
    globalLogPublisher.removeObserver(events.append)


def value(counter: object, *labels: str) -> float:
    metric = counter.labels(*labels) if labels else counter  # type: ignore[attr-defined]
    return float(metric._value.get())


def duration_count(endpoint: str) -> float:
    found = REGISTRY.get_sample_value("s3o_notification_duration_seconds_count", {"endpoint": endpoint})
    return found or 0.0


# --- events and filters ---------------------------------------------------------------------


def test_cloudevent_body_has_every_cloudevents_attribute() -> None:
    body = json.loads(CloudEvent("evt_1", ev.OBJECT_CREATED_PUT, "a/b.txt", T0 + 0.25, {"size": 3}).body())
    assert body == {
        "specversion": "1.0",
        "id": "evt_1",
        "source": "/s3-orchestrator",
        "type": "s3:ObjectCreated:Put",
        "time": rfc3339(T0 + 0.25),
        "subject": "a/b.txt",
        "datacontenttype": "application/json",
        "data": {"size": 3},
    }
    assert rfc3339(T0 + 0.25) == "2025-06-15T15:06:40.250Z"


@pytest.mark.parametrize(
    ("pattern", "event_type", "matches"),
    [
        ("s3:ObjectCreated:*", "s3:ObjectCreated:Put", True),
        ("s3:ObjectCreated:*", "s3:ObjectRemoved:Delete", False),
        ("s3:ObjectCreated:Put", "s3:ObjectCreated:Put", True),
        ("s3:ObjectCreated:Put", "s3:ObjectCreated:Copy", False),
        ("*", "service.started", True),
        ("backend.*", "backend.capacity.warning", True),
        ("backend.*", "cleanup.exhausted", False),
    ],
)
def test_event_patterns(pattern: str, event_type: str, matches: bool) -> None:
    assert pattern_matches(pattern, event_type) is matches


def test_prefix_filters_data_events_only() -> None:
    hook = endpoint(events=("*",), prefix="uploads/")
    assert wants(hook, ev.OBJECT_CREATED_PUT, "uploads/a")
    assert not wants(hook, ev.OBJECT_CREATED_PUT, "other/a")
    assert wants(hook, ev.CLEANUP_EXHAUSTED, None)  # operational: no key, no prefix


def test_sink_writes_one_row_per_interested_endpoint_with_one_body() -> None:
    clock = Clock()
    store = OutboxStore()
    sink = OutboxSink(
        [endpoint(HOOK, events=("s3:ObjectCreated:*",)), endpoint(OTHER, events=("s3:ObjectRemoved:*",)),
         endpoint("http://c/", events=("s3:*",), prefix="logs/")],
        store,  # type: ignore[arg-type]
        clock,
        new_id=lambda: "evt_fixed",
    )
    rows = sink.events(ev.OBJECT_CREATED_PUT, "k", {"key": "k"}, key="k")
    assert [r.endpoint for r in rows] == [HOOK]
    assert rows[0].event_id == "evt_fixed" and json.loads(rows[0].payload)["id"] == "evt_fixed"
    assert [r.endpoint for r in sink.events(ev.OBJECT_REMOVED_DELETE, "logs/x", {}, key="logs/x")] == [
        OTHER, "http://c/",
    ]
    assert sink.events(ev.SERVICE_STARTED, "node", {}) == ()
    assert NULL_SINK.events(ev.OBJECT_CREATED_PUT, "k", {}, key="k") == ()
    assert sink_for((), store, clock) is NULL_SINK  # type: ignore[arg-type]


def test_emit_failure_is_counted_and_logged_never_raised(logged: list[LogEvent]) -> None:
    rig = Rig()
    rig.store.fail = RuntimeError("database is locked")
    before = value(NOTIFICATION_STORE_ERRORS)
    rig.emit(ev.CLEANUP_EXHAUSTED, "b1", key=None)
    assert value(NOTIFICATION_STORE_ERRORS) == before + 1
    assert any("not recorded" in str(e.get("log_format", "")) for e in logged)


def test_signature_is_hmac_sha256_of_the_body() -> None:
    body = b'{"a":1}'
    # echo -n '{"a":1}' | openssl dgst -sha256 -hmac key
    assert signature("key", body) == "sha256=" + __import__("hmac").new(
        b"key", body, "sha256"
    ).hexdigest()
    assert verify_signature("key", body, signature("key", body))
    assert not verify_signature("other", body, signature("key", body))


def test_endpoint_label_hides_query_and_credentials() -> None:
    assert endpoint_label("https://u:p@hooks.example:8443/x/y?token=abc#f") == "https://hooks.example:8443/x/y"


# --- delivery ----------------------------------------------------------------------------------


def test_delivery_posts_signed_cloudevents_and_deletes_the_row() -> None:
    rig = Rig(endpoint(timeout=7.0))
    rig.emit(ev.OBJECT_CREATED_PUT, "photo.jpg", key="photo.jpg")
    before = value(NOTIFICATION_SENT, HOOK, ev.OBJECT_CREATED_PUT)
    timed = duration_count(HOOK)
    rig.tick()
    ((url, body, headers, timeout),) = rig.poster.calls
    assert (url, timeout) == (HOOK, 7.0)
    assert headers["Content-Type"].startswith("application/cloudevents+json")
    assert verify_signature("s3cret", body, headers[SIGNATURE_HEADER])
    sent = json.loads(body)
    assert (sent["type"], sent["subject"], sent["data"]) == (
        "s3:ObjectCreated:Put", "photo.jpg", {"bucket": "photos", "key": "photo.jpg"},
    )
    assert sent["id"].startswith("evt_")
    assert rig.store.rows == {}
    assert value(NOTIFICATION_SENT, HOOK, ev.OBJECT_CREATED_PUT) == before + 1
    assert duration_count(HOOK) == timed + 1
    assert NOTIFICATION_QUEUE_DEPTH._value.get() == 0


def test_no_secret_no_signature_header() -> None:
    rig = Rig(endpoint(secret=""))
    rig.emit(ev.OBJECT_CREATED_PUT)
    rig.tick()
    assert SIGNATURE_HEADER not in rig.poster.calls[0][2]


def test_failures_back_off_exponentially_then_drop_with_metric_and_log(logged: list[LogEvent]) -> None:
    rig = Rig(endpoint(max_retries=4))
    rig.poster.status[HOOK] = 503
    rig.emit(ev.OBJECT_REMOVED_DELETE)
    failed = value(NOTIFICATION_FAILED, HOOK, ev.OBJECT_REMOVED_DELETE)
    dropped = value(NOTIFICATION_DROPPED, HOOK, ev.OBJECT_REMOVED_DELETE)
    attempt_times = []
    for _ in range(40):  # 40 s of 1 s ticks
        before = len(rig.poster.calls)
        rig.tick()
        if len(rig.poster.calls) > before:
            attempt_times.append(rig.clock.seconds() - T0)
        rig.clock.advance(1)
    # attempts at 0, +2, +4, +8 (2^1, 2^2, 2^3 after the 1st, 2nd, 3rd failure); the 4th drops
    assert attempt_times == [0, 2, 6, 14]
    assert rig.store.rows == {}
    assert value(NOTIFICATION_FAILED, HOOK, ev.OBJECT_REMOVED_DELETE) == failed + 4
    assert value(NOTIFICATION_DROPPED, HOOK, ev.OBJECT_REMOVED_DELETE) == dropped + 1
    drops = [e for e in logged if "dropped after" in str(e.get("log_format", ""))]
    assert len(drops) == 1 and drops[0]["attempts"] == 4 and drops[0]["error"] == "HTTP 503"
    assert "s3cret" not in repr(drops[0])
    (audited,) = [e for e in logged if e.get("audit") and e.get("event") == "notification.dropped"]
    assert (audited["event_type"], audited["attempts"], audited["endpoint"]) == (ev.OBJECT_REMOVED_DELETE, 4, HOOK)


def test_backoff_is_capped_at_64_seconds() -> None:
    assert [backoff(n) for n in (1, 2, 5, 6, 7, 30)] == [2, 4, 32, 64, 64, 64]


def test_a_transport_error_is_a_failed_attempt_and_keeps_the_row() -> None:
    rig = Rig()
    rig.poster.raises[HOOK] = ConnectionRefusedError("refused")
    rig.emit(ev.OBJECT_CREATED_COPY)
    rig.tick()
    ((row_id, row),) = rig.store.rows.items()
    assert row.attempts == 1 and row.next_attempt == T0 + 2
    assert "ConnectionRefusedError" in rig.store.errors[row_id]


def test_one_endpoint_down_does_not_delay_another() -> None:
    rig = Rig(endpoint(HOOK), endpoint(OTHER))
    rig.poster.status[HOOK] = 500
    rig.emit(ev.OBJECT_CREATED_PUT)
    rig.tick()
    assert [r.endpoint for r in rig.store.rows.values()] == [HOOK]
    rig.clock.advance(1)
    rig.emit(ev.OBJECT_CREATED_PUT, "k2", key="k2")
    rig.tick()  # HOOK's failed row waits for its backoff; the new event's rows go at once
    sent = [(u, json.loads(body)["subject"]) for u, body, *_ in rig.poster.calls]
    assert sorted(sent[2:]) == [(HOOK, "k2"), (OTHER, "k2")]


def test_rows_of_an_endpoint_no_longer_configured_are_dropped() -> None:
    rig = Rig()
    run(rig.store.enqueue_events([OutboxEvent("http://gone/", "evt_x", "s3:ObjectCreated:Put", "k", "{}")], T0))
    before = value(NOTIFICATION_DROPPED, "http://gone/", "s3:ObjectCreated:Put")
    rig.tick()
    assert rig.poster.calls == [] and rig.store.rows == {}
    assert value(NOTIFICATION_DROPPED, "http://gone/", "s3:ObjectCreated:Put") == before + 1


def test_the_notifier_skips_while_another_instance_holds_its_lock() -> None:
    locks = FakeLocks()
    locks.taken_elsewhere.add(WorkerLock.NOTIFICATION_OUTBOX)
    rig = Rig(locks=locks)
    rig.emit(ev.OBJECT_CREATED_PUT)
    rig.tick()
    assert rig.poster.calls == [] and len(rig.store.rows) == 1
    locks.taken_elsewhere.clear()
    rig.tick()
    assert len(rig.poster.calls) == 1 and rig.store.rows == {}
    assert ("try", 1011) in locks.calls


def test_rows_left_by_a_dead_process_are_sent_by_the_next() -> None:
    first = Rig()
    first.poster.raises[HOOK] = ConnectionRefusedError()
    first.emit(ev.OBJECT_CREATED_PUT)
    first.tick()  # died after a failed attempt; the row stays in the database
    second = Rig()
    second.store = first.store
    second.notifier.store = first.store  # type: ignore[assignment]
    second.clock.advance(2)
    second.tick()
    assert [b["type"] for b in second.poster.bodies()] == ["s3:ObjectCreated:Put"]
    assert second.store.rows == {}


def test_service_started_and_stopping_are_announced() -> None:
    rig = Rig()
    rig.notifier.startService()  # runs a tick at once: delivers service.started
    assert [b["type"] for b in rig.poster.bodies()] == ["service.started"]
    assert rig.poster.bodies()[0]["data"] == {"instance": "node-1"}
    stopped = rig.notifier.stopService()
    results: list[object] = []
    stopped.addBoth(results.append)
    assert results == [None]
    assert [r.event_type for r in rig.store.rows.values()] == ["service.stopping"]


def test_treq_poster_times_out_on_its_reactor() -> None:
    reactor = MemoryReactorClock()
    poster = TreqPoster(reactor)
    d = Deferred.fromCoroutine(poster.post("http://127.0.0.1:9/hook", b"{}", {}, 5.0))
    results: list[object] = []
    d.addErrback(lambda f: results.append(f.value))
    assert reactor.tcpClients, "no connection attempted"
    reactor.advance(4.9)
    assert results == []
    reactor.advance(0.2)
    assert len(results) == 1 and isinstance(results[0], TimeoutError)
    assert str(results[0]) == "no answer within 5s"


# --- wiring -------------------------------------------------------------------------------------

_GATEWAY = """
server: {listen_addr: "127.0.0.1:9000"}
database: {driver: sqlite, path: "/nonexistent/s3orch.db"}
buckets:
  - name: photos
    credentials: [{access_key_id: AK, secret_access_key: SK}]
backends:
  - {name: b1, endpoint: "http://127.0.0.1:1", bucket: x, access_key_id: k, secret_access_key: s}
"""


def test_tap_adds_the_notifier_and_one_sink_only_with_endpoints() -> None:
    from s3orch.config import load_config_from_string
    from s3orch.tap import build

    plain = build(load_config_from_string(_GATEWAY), MemoryReactorClock())
    assert "notifier" not in [w.name for w in plain.workers]
    assert plain.getServiceNamed("usage-flush").events is NULL_SINK  # type: ignore[attr-defined]
    hooked = build(
        load_config_from_string(
            _GATEWAY + 'notifications: {endpoints: [{url: "http://h/x", events: ["s3:*"], max_retries: 7}]}\n'
        ),
        MemoryReactorClock(),
    )
    notifier = hooked.getServiceNamed("notifier")
    assert isinstance(notifier, Notifier)
    assert notifier.lock_id == WorkerLock.NOTIFICATION_OUTBOX == 1011 and notifier.interval == 2.0
    assert notifier.endpoints["http://h/x"].max_retries == 7
    assert isinstance(notifier.sink, OutboxSink)
    assert hooked.getServiceNamed("usage-flush").events is notifier.sink  # type: ignore[attr-defined]
    assert hooked.getServiceNamed("pending-reaper").resolver.events is notifier.sink  # type: ignore[attr-defined]


def test_a_database_failure_recording_an_attempt_fails_the_tick_but_keeps_deliveries() -> None:
    rig = Rig(endpoint(HOOK), endpoint(OTHER))
    rig.poster.status[HOOK] = 500
    rig.emit(ev.OBJECT_CREATED_PUT)

    async def broken(entry_id: int, error: str, next_attempt: float) -> int:
        raise RuntimeError("database is locked")

    rig.store.event_failed = broken  # type: ignore[method-assign]
    assert run(rig.notifier.run_once()) is False  # counted as a failed tick
    # OTHER's delivery is done and its row gone; HOOK's row stays for the next tick
    assert [r.endpoint for r in rig.store.rows.values()] == [HOOK]
