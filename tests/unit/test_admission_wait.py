"""Admission, completed: ``server.admission_wait`` (FIFO, the client going away) and background
workers drawing slots from the write (or global) pool, never more than their share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from s3orch import tap
from s3orch.auth.registry import CredentialRegistry
from s3orch.config import load_config_from_string
from s3orch.frontend.assembly import build_frontend
from s3orch.frontend.ops import OpsApp
from s3orch.frontend.root import RootResource
from s3orch.http.admission import Admission, Slot
from s3orch.http.hold import HOLD_BUFFER_LIMIT
from s3orch.http.site import S3Site
from s3orch.observe.metrics import ADMISSION_WAITS
from s3orch.store import open_store
from s3orch.testing.config import config_from_string
from s3orch.testing.harness import DEFAULT_CONFIG
from s3orch.testing.syncpool import SynchronousConnectionPool
from s3orch.workers.base import SLOT_WORKERS, PeriodicWorker
from tests.unit.frontdoor_fakes import (
    CONFIG,
    START,
    AbortingTransport,
    FakeObjects,
    signed_request,
    status_of,
)


class Gateway:
    def __init__(self, server: str) -> None:
        self.clock = MemoryReactorClock()
        self.clock.advance(START)
        # Shares per credential out of the way: these tests are about the pools.
        server += "\n  max_concurrent_per_credential: 100"
        config = load_config_from_string(CONFIG.format(server=server))
        self.admission = Admission.from_config(config.server, clock=self.clock)
        self.objects = FakeObjects(self.clock)
        self.frontend = build_frontend(
            server=config.server, registry=CredentialRegistry(config.buckets),
            objects=self.objects,  # type: ignore[arg-type]
            clock=self.clock, admission=self.admission,
        )
        self.site = S3Site(
            RootResource(self.frontend, OpsApp(is_ready=lambda: True).resource()),
            early_handler=self.frontend, reactor=self.clock,
            read_header_timeout=config.server.read_header_timeout, read_timeout=config.server.read_timeout,
        )

    def send(self, raw: bytes) -> tuple[Any, Any]:
        address = IPv4Address("TCP", "198.51.100.7", 40000)
        protocol: Any = self.site.buildProtocol(address)
        transport: Any = AbortingTransport(peerAddress=address)  # type: ignore[no-untyped-call]
        transport.protocol = protocol
        protocol.makeConnection(transport)
        protocol.dataReceived(raw)
        return protocol, transport

    def pool(self, name: str = "global") -> Any:
        return {"global": self.admission.global_pool, "read": self.admission.reads, "write": self.admission.writes}[name]


def _put_headers(key: str, length: int) -> bytes:
    raw = signed_request("PUT", f"/photos/{key}", headers={"Expect": "100-continue"}, content_length=False)
    return raw.replace(b"\r\n\r\n", f"\r\nContent-Length: {length}\r\n\r\n".encode(), 1)


def _gone(protocol: Any) -> None:
    protocol.connectionLost(Failure(ConnectionError("gone")))


def _waits(outcome: str) -> float:
    return float(ADMISSION_WAITS.labels(outcome)._value.get())


def test_a_slot_that_frees_within_the_wait_lets_the_waiting_request_through() -> None:
    gw = Gateway("  max_concurrent_requests: 1\n  admission_wait: 100ms")
    first, _ = gw.send(_put_headers("a", 5))
    admitted = _waits("admitted")
    _, waiting = gw.send(_put_headers("b", 5) + b"hel")  # part of its body arrives early
    assert waiting.value() == b""  # held: no 100 Continue, no answer
    assert len(gw.pool().waiters) == 1
    gw.clock.advance(0.05)
    _gone(first)  # frees the slot within the wait
    assert b"100 Continue" in waiting.value()
    assert gw.pool().in_use == 1 and not gw.pool().waiters
    assert _waits("admitted") == admitted + 1
    protocol = waiting.protocol
    protocol.dataReceived(b"lo")  # the rest of the body: the kept bytes went first
    assert status_of(waiting) == 200
    assert gw.objects.data[("photos", "b")][1] == b"hello"
    assert gw.pool().in_use == 0


def test_no_slot_within_the_wait_is_503_slowdown_then() -> None:
    gw = Gateway("  max_concurrent_requests: 1\n  admission_wait: 100ms")
    gw.send(_put_headers("a", 5))
    timeouts = _waits("timeout")
    _, waiting = gw.send(_put_headers("b", 5))
    gw.clock.advance(0.099)
    assert waiting.value() == b""
    gw.clock.advance(0.002)
    sent = waiting.value()
    assert sent.startswith(b"HTTP/1.1 503 ") and b"<Code>SlowDown</Code>" in sent and b"100 Continue" not in sent
    assert b"Retry-After: 1\r\n" in sent
    assert not gw.pool().waiters and gw.pool().in_use == 1
    assert _waits("timeout") == timeouts + 1


def test_a_client_that_goes_away_while_waiting_leaves_the_queue() -> None:
    gw = Gateway("  max_concurrent_requests: 1\n  admission_wait: 10s")
    first, _ = gw.send(_put_headers("a", 5))
    gone = _waits("gone")
    waiting, _ = gw.send(_put_headers("b", 5))
    _, third = gw.send(_put_headers("c", 5))
    assert len(gw.pool().waiters) == 2
    _gone(waiting)
    assert len(gw.pool().waiters) == 1 and _waits("gone") == gone + 1
    _gone(first)  # the slot goes to the next one still there, not to the one gone
    assert b"100 Continue" in third.value()
    assert gw.pool().in_use == 1 and not gw.pool().waiters


def test_waiters_are_served_first_come_first_served_and_before_newcomers() -> None:
    gw = Gateway("  max_concurrent_requests: 1\n  admission_wait: 10s")
    first, _ = gw.send(_put_headers("a", 5))
    second_p, second = gw.send(_put_headers("b", 5))
    _, third = gw.send(_put_headers("c", 5))
    _gone(first)
    assert b"100 Continue" in second.value() and third.value() == b""
    _, late = gw.send(_put_headers("d", 5))  # arrives while one waits: queues behind it
    assert late.value() == b"" and len(gw.pool().waiters) == 2
    _gone(second_p)
    assert b"100 Continue" in third.value() and late.value() == b""


def test_a_held_bodyless_request_is_processed_once_admitted() -> None:
    gw = Gateway("  max_concurrent_requests: 1\n  admission_wait: 1s")
    first, _ = gw.send(_put_headers("a", 5))
    _, waiting = gw.send(signed_request("GET", "/photos/missing"))
    assert waiting.value() == b""
    _gone(first)
    assert status_of(waiting) == 404


def test_a_held_request_stops_reading_past_the_buffer_limit_and_resumes() -> None:
    gw = Gateway("  max_concurrent_requests: 1\n  admission_wait: 1s")
    first, _ = gw.send(_put_headers("a", 5))
    size = HOLD_BUFFER_LIMIT + 10
    _, waiting = gw.send(_put_headers("big", size) + b"x" * size)
    assert waiting.producerState == "paused"
    _gone(first)
    assert waiting.producerState == "producing"
    assert status_of(waiting) == 200 and len(gw.objects.data[("photos", "big")][1]) == size


def test_a_read_deadline_during_the_wait_answers_408_and_leaves_the_queue() -> None:
    gw = Gateway("  max_concurrent_requests: 1\n  admission_wait: 10m\n  read_timeout: 2s\n  read_header_timeout: 1s")
    gw.send(_put_headers("a", 5))
    _, waiting = gw.send(_put_headers("b", 5))
    gw.clock.advance(2.5)
    assert status_of(waiting) == 408 and not gw.pool().waiters


# -- background workers ----------------------------------------------------------------------------


class _Worker(PeriodicWorker):
    def __init__(self, clock: MemoryReactorClock, admission: Admission) -> None:
        super().__init__("replicator", 60, clock, component="replicator", audited=False)
        self.admission = admission
        self.release: Deferred[None] = Deferred()
        self.ticks = 0

    async def tick(self) -> None:
        self.ticks += 1
        await self.release


def test_workers_take_write_slots_up_to_half_and_reads_still_pass_in_split_mode() -> None:
    gw = Gateway("  max_concurrent_reads: 2\n  max_concurrent_writes: 4")
    writes = gw.pool("write")
    workers = [_Worker(gw.clock, gw.admission) for _ in range(3)]
    runs = [Deferred.fromCoroutine(w.run_once()) for w in workers]
    assert [w.ticks for w in workers] == [1, 1, 0]  # half of the write pool: 2 slots
    assert writes.in_use == 2 and writes.workers == 2 and len(writes.waiters) == 1
    # Clients keep the rest of the write pool, and the whole read pool.
    _, put = gw.send(_put_headers("a", 5))
    assert b"100 Continue" in put.value()
    for _ in range(2):
        _, get = gw.send(signed_request("GET", "/photos/missing"))
        assert status_of(get) == 404
    assert gw.pool("read").in_use == 0
    # A worker's pass ends: the waiting worker gets its slot.
    workers[0].release.callback(None)
    assert runs[0].called and workers[2].ticks == 1 and writes.workers == 2
    for worker in workers[1:]:
        worker.release.callback(None)
    assert writes.workers == 0 and writes.in_use == 1  # the client's PUT


def test_a_worker_waits_for_a_slot_the_clients_hold_and_a_client_waiter_goes_first() -> None:
    gw = Gateway("  max_concurrent_requests: 2\n  admission_wait: 1s")
    held = [gw.send(_put_headers(k, 5))[0] for k in ("a", "b")]
    worker = _Worker(gw.clock, gw.admission)
    run = Deferred.fromCoroutine(worker.run_once())
    _, client = gw.send(_put_headers("c", 5))
    _gone(held[0])
    assert worker.ticks == 1 and client.value() == b""  # the worker came first
    _gone(held[1])
    assert b"100 Continue" in client.value()
    worker.release.callback(None)
    assert run.called


def test_a_worker_stopped_while_waiting_leaves_the_queue_quietly() -> None:
    gw = Gateway("  max_concurrent_requests: 1")
    gw.send(_put_headers("a", 5))
    worker = _Worker(gw.clock, gw.admission)
    worker.startService()
    gw.clock.advance(60)  # its first tick waits for the slot
    assert len(gw.pool().waiters) == 1
    assert worker.stopService() is not None
    assert not gw.pool().waiters and worker.ticks == 0


def test_without_admission_control_workers_run_unslotted() -> None:
    admission = Admission(max_requests=0, max_reads=5, max_writes=0)  # (refused at load now)
    result: list[Slot | None] = []
    admission.for_worker().addCallback(result.append)
    assert result == [None]


def test_build_gives_the_backend_workers_the_front_doors_admission_and_the_site_the_admin_gate(
    tmp_path: Path,
) -> None:
    config = config_from_string(DEFAULT_CONFIG.replace("{workdir}", str(tmp_path)))
    store = open_store(config.database, MemoryReactorClock(), pool_factory=SynchronousConnectionPool)
    service = tap.build(config, MemoryReactorClock(), store=store)
    [listener] = service.listeners
    site: Any = listener.args[1]  # type: ignore[attr-defined]  # a TCPServer's (port, factory)
    admission = site.early_handler.admission
    slotted = {w.name: w.admission for w in service.workers if isinstance(w, PeriodicWorker)}
    assert {name for name, a in slotted.items() if a is not None} == SLOT_WORKERS & set(slotted)
    assert {"cleanup-queue", "lifecycle", "drain", "pending-reaper"} <= SLOT_WORKERS & set(slotted)
    assert all(a is admission for a in slotted.values() if a is not None)
    assert slotted["usage-flush"] is None and slotted["rate-limit-sweep"] is None
    assert site.other_gate is not None and site.early_handler.limiter is not None
