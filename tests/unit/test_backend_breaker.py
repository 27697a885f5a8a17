"""Per-backend circuit breakers: the state machine on a task.Clock, the wrapped client, the
fleet's write candidates, the watchdog and the wiring (BEHAVIOURS §1.27)."""

from __future__ import annotations

from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.task import Clock

from s3orch.backend.breaker import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    STALE_PROBE,
    Breaker,
    BreakerBackend,
    Breakers,
    CircuitOpen,
    guard,
    transition_events,
)
from s3orch.backend.interface import BackendError, BackendNotFound, BackendUnavailable
from s3orch.backend.memory import MemoryBackend
from s3orch.config import load_config_from_string
from s3orch.core.fleet import BackendFleet
from s3orch.observe.metrics import REGISTRY
from s3orch.payload import Payload
from s3orch.testing.harness import DEFAULT_CONFIG, GatewayHarness
from s3orch.workers.breaker_watchdog import BreakerWatchdog

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that completes without the reactor (in-memory doubles)."""
    d = ensureDeferred(coro)
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "did not complete synchronously"
    if isinstance(results[0], Exception) or hasattr(results[0], "raiseException"):
        results[0].raiseException()
    return results[0]  # type: ignore[no-any-return]


def metric(metric_name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(metric_name, labels) or 0.0


def make(
    name: str = "b1", threshold: int = 3, timeout: float = 100.0, jitter: float = 0.0
) -> tuple[Breaker, Clock, list[tuple[str, str, str]]]:
    clock = Clock()
    seen: list[tuple[str, str, str]] = []
    breaker = Breaker(
        name,
        failure_threshold=threshold,
        open_timeout=timeout,
        clock=clock,
        random=lambda: jitter,
        on_transition=lambda *t: seen.append(t),
    )
    return breaker, clock, seen


def fail(breaker: Breaker, times: int = 1) -> None:
    for _ in range(times):
        breaker.failed(breaker.admit(), BackendUnavailable("down"))


# --- the state machine ---------------------------------------------------------------------------


def test_opens_after_failure_threshold_consecutive_failures() -> None:
    breaker, _, seen = make("sm-threshold", threshold=3)
    fail(breaker, 2)
    breaker.succeeded(breaker.admit())  # a success resets the count: failures must be consecutive
    fail(breaker, 2)
    assert breaker.state == CLOSED and breaker.failures == 2
    fail(breaker)
    assert breaker.state == OPEN
    assert seen == [("sm-threshold", CLOSED, OPEN)]
    assert metric("s3o_circuit_breaker_state", name="sm-threshold") == 1
    assert metric("s3o_circuit_breaker_transitions_total", name="sm-threshold", **{"from": CLOSED, "to": OPEN}) == 1


def test_an_open_breaker_refuses_at_once_and_counts_the_refusal() -> None:
    breaker, clock, _ = make("sm-refuse", threshold=1)
    fail(breaker)
    clock.advance(99)
    with pytest.raises(CircuitOpen) as info:
        breaker.admit()
    assert isinstance(info.value, BackendUnavailable) and info.value.backend == "sm-refuse"
    assert not breaker.would_admit()
    assert metric("s3o_circuit_breaker_rejections_total", name="sm-refuse") == 1


def test_the_probe_waits_open_timeout_plus_a_fresh_jitter_up_to_a_quarter() -> None:
    draws = iter([0.5, 0.999])
    clock = Clock()
    breaker = Breaker("sm-jitter", failure_threshold=1, open_timeout=100.0, clock=clock, random=lambda: next(draws))
    fail(breaker)
    assert breaker.retry_at == pytest.approx(100 + 12.5)  # 0.5 of a quarter of open_timeout
    clock.advance(112.4)
    assert not breaker.would_admit()
    clock.advance(0.2)
    ticket = breaker.admit()
    assert ticket.probe and breaker.state == HALF_OPEN
    breaker.failed(ticket, BackendUnavailable("still down"))  # the probe failed: open again, new jitter
    assert breaker.state == OPEN
    assert breaker.retry_at == pytest.approx(clock.seconds() + 100 + 0.999 * 25)
    assert breaker.retry_at - clock.seconds() < 125  # never more than a quarter on top


@pytest.mark.parametrize("draw", [0.0, 0.25, 0.9999])
def test_jitter_bounds(draw: float) -> None:
    breaker, clock, _ = make("sm-bounds", threshold=1, timeout=40.0, jitter=draw)
    fail(breaker)
    delay = breaker.retry_at - clock.seconds()
    assert 40.0 <= delay < 50.0


def test_a_single_probe_closes_on_success_and_the_rest_fail_fast_meanwhile() -> None:
    breaker, clock, seen = make("sm-probe", threshold=1, timeout=10.0)
    fail(breaker)
    clock.advance(10)
    probe = breaker.admit()
    with pytest.raises(CircuitOpen):
        breaker.admit()  # only one probe at a time
    assert not breaker.would_admit()
    breaker.succeeded(probe)
    assert breaker.state == CLOSED and breaker.failures == 0
    assert [t[1:] for t in seen] == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]
    assert metric("s3o_circuit_breaker_state", name="sm-probe") == 0
    breaker.admit()  # closed again: calls go through


def test_a_404_is_an_answer_and_a_cancelled_probe_passes_its_turn() -> None:
    backend = MemoryBackend("sm-404")
    breaker, clock, _ = make("sm-404", threshold=1, timeout=10.0)
    guarded = BreakerBackend(backend, breaker)
    for _ in range(3):
        with pytest.raises(BackendNotFound):
            run(guarded.head_object("missing"))
    assert breaker.state == CLOSED
    backend.fail_next("head_object", 1, BackendError("no bucket", status=404, code="NoSuchBucket"))
    with pytest.raises(BackendError):
        run(guarded.head_object("missing"))
    assert breaker.state == CLOSED  # any 404 is not an outage (#535)
    backend.fail_next("head_object", 1, BackendError("denied", status=403, code="AccessDenied"))
    with pytest.raises(BackendError):
        run(guarded.head_object("missing"))
    assert breaker.state == OPEN  # any other error counts
    clock.advance(10)
    probe = breaker.admit()
    breaker.abandoned(probe)  # e.g. the client went away: no verdict
    assert breaker.state == HALF_OPEN and breaker.would_admit()
    assert breaker.admit().probe


def test_a_late_outcome_from_before_a_transition_decides_nothing() -> None:
    breaker, clock, _ = make("sm-epoch", threshold=2, timeout=10.0)
    slow = breaker.admit()  # admitted while closed, answers late
    fail(breaker, 2)
    assert breaker.state == OPEN
    breaker.succeeded(slow)
    assert breaker.state == OPEN
    clock.advance(10)
    probe = breaker.admit()
    breaker.failed(slow, BackendUnavailable("late"))
    assert breaker.state == HALF_OPEN
    breaker.succeeded(probe)
    assert breaker.state == CLOSED


def test_a_stale_probe_is_replaced_by_the_next_call() -> None:
    breaker, clock, _ = make("sm-stale", threshold=1, timeout=10.0)
    fail(breaker)
    clock.advance(10)
    stuck = breaker.admit()
    clock.advance(STALE_PROBE)
    with pytest.raises(CircuitOpen):
        breaker.admit()  # exactly two minutes: not yet stale
    clock.advance(1)
    fresh = breaker.admit()
    assert fresh.probe
    breaker.succeeded(stuck)  # the old probe's answer no longer counts
    assert breaker.state == HALF_OPEN
    breaker.succeeded(fresh)
    assert breaker.state == CLOSED


def test_a_failing_transition_hook_does_not_break_the_breaker() -> None:
    clock = Clock()

    def hook(*_: str) -> None:
        raise RuntimeError("notifier down")

    breaker = Breaker("sm-hook", failure_threshold=1, open_timeout=1.0, clock=clock, on_transition=hook)
    fail(breaker)
    assert breaker.state == OPEN


# --- the wrapped client --------------------------------------------------------------------------


def test_an_open_backend_is_not_called_at_all() -> None:
    backend = MemoryBackend("wrap-1", fail={"put_object"})
    breaker, clock, _ = make("wrap-1", threshold=2, timeout=30.0)
    guarded = BreakerBackend(backend, breaker)
    for _ in range(2):
        with pytest.raises(BackendUnavailable):
            run(guarded.put_object("k", Payload.from_bytes(b"abc")))
    calls = len(backend.calls)
    for method, args in (
        ("put_object", ("k", Payload.from_bytes(b"abc"))),
        ("get_object", ("k",)),
        ("head_object", ("k",)),
        ("delete_object", ("k",)),
        ("copy_object", ("k", "k2")),
        ("list_keys", ("",)),
        ("abort_multipart_upload", ("k", "u")),
        ("list_multipart_uploads", ("",)),
    ):
        with pytest.raises(CircuitOpen):
            run(getattr(guarded, method)(*args))
    assert len(backend.calls) == calls  # no call reached the backend
    backend.fail.clear()
    clock.advance(30)
    assert run(guarded.put_object("k", Payload.from_bytes(b"abc")))  # the probe
    assert breaker.state == CLOSED


def test_a_get_body_cut_short_counts_as_a_failure() -> None:
    backend = MemoryBackend("wrap-body")
    run(backend.put_object("k", Payload.from_bytes(b"x" * 1000)))
    backend.body_fails_after = 10
    breaker, _, _ = make("wrap-body", threshold=1)
    guarded = BreakerBackend(backend, breaker)
    stream = run(guarded.get_object("k"))
    assert breaker.state == CLOSED  # the headers arrived

    class Sink:
        def registerProducer(self, producer: object, streaming: bool) -> None:
            pass

        def unregisterProducer(self) -> None:
            pass

        def write(self, data: bytes) -> None:
            pass

    done: Deferred[None] = stream.deliver(Sink())
    errors: list[Any] = []
    done.addErrback(errors.append)
    assert errors[0].check(BackendUnavailable)
    assert breaker.state == OPEN


def test_a_cancelled_call_counts_neither_way() -> None:
    pending: Deferred[str] = Deferred()

    class Hanging(MemoryBackend):
        async def put_object(self, storage_key: str, payload: Payload) -> str:
            return await pending

    breaker, _, _ = make("wrap-cancel", threshold=1)
    guarded = BreakerBackend(Hanging("wrap-cancel"), breaker)
    d = ensureDeferred(guarded.put_object("k", Payload.from_bytes(b"a")))
    d.cancel()
    failures: list[Any] = []
    d.addErrback(failures.append)
    assert failures and failures[0].check(CancelledError)
    assert breaker.state == CLOSED and breaker.failures == 0


# --- the fleet, the watchdog, the wiring ------------------------------------------------------------

FLEET_CONFIG = """
buckets:
  - name: photos
    credentials: [{access_key_id: photoskey, secret_access_key: photossecret}]
backends:
  - {name: f1, endpoint: "http://127.0.0.1:1", bucket: x, access_key_id: a, secret_access_key: s, quota_bytes: 1000}
  - {name: f2, endpoint: "http://127.0.0.1:2", bucket: y, access_key_id: a, secret_access_key: s, quota_bytes: 1000}
"""


def test_writes_skip_an_open_backend_until_its_probe_is_due() -> None:
    config = load_config_from_string(FLEET_CONFIG)
    clock = Clock()
    clients, breakers = guard(
        {"f1": MemoryBackend("f1"), "f2": MemoryBackend("f2")},
        failure_threshold=1,
        open_timeout=60.0,
        clock=clock,
        random=lambda: 0.0,
    )
    fleet = BackendFleet(config.backends, clients, breakers)
    assert fleet.write_candidates(10) == ["f1", "f2"]
    fail(breakers["f1"])
    assert fleet.write_candidates(10) == ["f2"]
    states = fleet.breaker_states()
    assert states["f1"]["state"] == OPEN and states["f1"]["probe_at"] == 60.0
    assert states["f2"] == {
        "state": CLOSED, "consecutive_failures": 0, "failure_threshold": 1,
        "opened_at": None, "probe_at": None, "probe_in_flight": False,
    }
    clock.advance(60)
    assert fleet.write_candidates(10) == ["f1", "f2"]  # the next write may be the probe
    breakers["f1"].admit()
    assert fleet.write_candidates(10) == ["f2"]  # the probe is in flight
    assert fleet.breaker_states()["f1"]["probe_in_flight"] is True
    fail(breakers["f2"])
    # Every backend open: all are offered, so the write fails fast with 503 rather than 507.
    assert fleet.write_candidates(10) == ["f1", "f2"]
    assert fleet.write_candidates(10, exclude={"f1"}) == ["f2"]
    assert BackendFleet(config.backends, clients).breaker_states() == {}


def test_watchdog_resets_a_probe_stuck_half_open_for_over_two_minutes() -> None:
    clock = Clock()
    breaker = Breaker("wd-1", failure_threshold=1, open_timeout=10.0, clock=clock, random=lambda: 0.0)
    idle = Breaker("wd-2", failure_threshold=1, open_timeout=10.0, clock=clock, random=lambda: 0.0)
    watchdog = BreakerWatchdog(Breakers([breaker, idle]), clock)
    watchdog.startService()
    try:
        fail(breaker)
        clock.advance(60)  # the first tick (nothing to do); the probe is due and goes now
        stuck = breaker.admit()
        clock.advance(60)  # a tick with the probe 60 s in flight
        assert breaker.state == HALF_OPEN
        clock.advance(60)  # 120 s: not over two minutes
        assert breaker.state == HALF_OPEN
        clock.advance(60)  # 180 s
        assert breaker.state == OPEN and breaker.retry_at == clock.seconds()  # a new probe may go now
        assert idle.state == CLOSED
        breaker.succeeded(stuck)  # the stuck probe answering at last changes nothing
        assert breaker.state == OPEN
        assert breaker.admit().probe
        assert metric("s3o_circuit_breaker_transitions_total", name="wd-1", **{"from": HALF_OPEN, "to": OPEN}) == 1
    finally:
        watchdog.stopService()


def test_build_wraps_the_backends_and_adds_the_watchdog_only_when_enabled(tmp_path: Path) -> None:
    enabled = DEFAULT_CONFIG + "backend_circuit_breaker:\n  enabled: true\n  failure_threshold: 2\n  open_timeout: 1m\n"
    with GatewayHarness(tmp_path / "on", enabled) as gateway:
        assert gateway.service.getServiceNamed("breaker-watchdog").running
        fleet = gateway.service.reloader.targets.fleet
        assert isinstance(fleet["backend-1"], BreakerBackend)
        assert {name: s["state"] for name, s in fleet.breaker_states().items()} == {
            "backend-1": CLOSED, "backend-2": CLOSED,
        }
        assert fleet["backend-1"].breaker.failure_threshold == 2
        assert fleet["backend-1"].breaker.open_timeout == 60.0
        assert gateway.put("photos", "a", b"hello").status == 200
        assert gateway.get("photos", "a").body == b"hello"
    with GatewayHarness(tmp_path / "off") as gateway:
        with pytest.raises(KeyError):
            gateway.service.getServiceNamed("breaker-watchdog")
        assert gateway.service.reloader.targets.fleet.breaker_states() == {}


HARNESS_BREAKERS = DEFAULT_CONFIG + "backend_circuit_breaker:\n  enabled: true\n  failure_threshold: 2\n  open_timeout: 1m\n"


def test_through_the_gateway_writes_skip_an_open_backend_and_the_probe_closes_it(tmp_path: Path) -> None:
    with GatewayHarness(tmp_path, HARNESS_BREAKERS, start=1_000_000.0) as gateway:
        first = gateway.backends["backend-1"]
        second = gateway.backends["backend-2"]
        breaker = gateway.service.reloader.targets.fleet["backend-1"].breaker
        first.redirect("store-1", "http://elsewhere.test/")  # backend-1 now fails every call
        for i in range(2):
            assert gateway.put("photos", f"k{i}", b"data").status == 200  # failed over
        assert breaker.state == OPEN and len(second.objects("store-2")) == 2
        seen = len(first.received)
        assert gateway.put("photos", "k2", b"data").status == 200
        assert len(first.received) == seen  # the open backend was not called at all
        assert len(second.objects("store-2")) == 3
        first._redirects.clear()  # healthy again
        gateway.advance(60 + 15)  # open_timeout plus the largest jitter
        assert gateway.put("photos", "k3", b"data").status == 200  # the probe, on backend-1
        assert breaker.state == CLOSED
        assert len(first.objects("store-1")) == 1
        assert gateway.get("photos", "k3").body == b"data"


def test_through_the_gateway_every_backend_open_is_a_503_never_a_507(tmp_path: Path) -> None:
    with GatewayHarness(tmp_path, HARNESS_BREAKERS, start=1_000_000.0) as gateway:
        fleet = gateway.service.reloader.targets.fleet
        assert gateway.put("photos", "before", b"old bytes").status == 200
        for name in ("backend-1", "backend-2"):
            fail(fleet[name].breaker, 2)
        seen = [len(server.received) for server in gateway.backends.values()]
        put = gateway.put("photos", "k", b"data")
        assert put.status == 503 and b"<Code>ServiceUnavailable</Code>" in put.body
        get = gateway.get("photos", "before")
        assert get.status == 503  # the only holder is behind an open breaker: never 404
        assert [len(server.received) for server in gateway.backends.values()] == seen


def test_transitions_become_backend_circuit_events() -> None:
    sent: list[tuple[str, str, dict[str, Any]]] = []

    async def emit(event_type: str, subject: str, data: Any) -> None:
        sent.append((event_type, subject, dict(data)))

    clock = Clock()
    breaker = Breaker("ev-1", failure_threshold=1, open_timeout=10.0, clock=clock, random=lambda: 0.0,
                      on_transition=transition_events(emit))
    fail(breaker)
    clock.advance(10)
    probe = breaker.admit()  # open -> half-open: no event
    breaker.failed(probe, BackendUnavailable("still down"))  # half-open -> open: no new "opened"
    clock.advance(10)
    breaker.succeeded(breaker.admit())
    assert sent == [
        ("backend.circuit.opened", "ev-1", {"backend": "ev-1", "state": OPEN, "previous_state": CLOSED}),
        ("backend.circuit.closed", "ev-1", {"backend": "ev-1", "state": CLOSED, "previous_state": HALF_OPEN}),
    ]


def test_through_the_gateway_the_events_reach_the_outbox(tmp_path: Path) -> None:
    config = HARNESS_BREAKERS + 'notifications: {endpoints: [{url: "http://hook.test/x", events: ["backend.*"]}]}\n'
    with GatewayHarness(tmp_path, config, start=1_000_000.0) as gateway:
        first = gateway.backends["backend-1"]
        first.redirect("store-1", "http://elsewhere.test/")
        for i in range(2):
            assert gateway.put("photos", f"k{i}", b"data").status == 200

        def outbox() -> list[tuple[str, str]]:
            rows = run(gateway.store.due_events(gateway.clock.seconds() + 86400, 100))
            return [(r.event_type, r.subject) for r in rows]

        assert ("backend.circuit.opened", "backend-1") in outbox()
        first._redirects.clear()
        gateway.advance(75)  # the notifier meanwhile tries (and fails) to deliver to hook.test
        assert gateway.put("photos", "k3", b"data").status == 200  # the probe closes it
        assert ("backend.circuit.closed", "backend-1") in outbox()
