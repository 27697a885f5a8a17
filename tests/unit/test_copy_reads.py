"""Which copy a read tries first (s3orch.core.reads), with in-memory backends and task.Clock."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from s3orch.backend.breaker import guard
from s3orch.backend.memory import MemoryBackend
from s3orch.config.model import BackendConfig
from s3orch.core.fleet import BackendFleet
from s3orch.core.reads import RECENT_FAILURE, CopyReader
from s3orch.s3 import errors
from s3orch.store.interface import Location

COPIES = tuple(Location(name, "k", 5) for name in ("b1", "b2", "b3"))


def _rig(breakers: bool = False) -> tuple[CopyReader, dict[str, MemoryBackend], Clock, Any]:
    clock = Clock()
    backends = {name: MemoryBackend(name) for name in ("b1", "b2", "b3")}
    for backend in backends.values():
        backend.objects["k"] = b"hello"
    clients: dict[str, Any] = dict(backends)
    guards = None
    if breakers:
        clients, guards = guard(backends, failure_threshold=1, open_timeout=60.0, clock=clock)
    fleet = BackendFleet([BackendConfig(name=n) for n in backends], clients, guards)
    return CopyReader(fleet, clock), backends, clock, guards


def _open(reader: CopyReader, copies: tuple[Location, ...] = COPIES) -> Any:
    out: list[Any] = []
    Deferred.fromCoroutine(reader.open(copies, None)).addBoth(out.append)
    (result,) = out
    if isinstance(result, Failure):
        result.raiseException()
    return result


def test_a_copy_behind_an_open_breaker_goes_last_and_is_never_called() -> None:
    reader, backends, _, guards = _rig(breakers=True)
    guards["b1"]._move("open")
    assert [c.backend for c in reader.order(COPIES)] == ["b2", "b3", "b1"]
    _, location = _open(reader)
    assert location.backend == "b2"
    assert backends["b1"].calls == []


def test_a_copy_that_failed_recently_goes_after_the_others_until_the_window_passes() -> None:
    reader, backends, clock, _ = _rig()
    backends["b1"].fail.add("get_object")
    _, location = _open(reader)
    assert location.backend == "b2"
    backends["b1"].fail.clear()
    assert [c.backend for c in reader.order(COPIES)] == ["b2", "b3", "b1"]
    clock.advance(RECENT_FAILURE + 1)
    assert [c.backend for c in reader.order(COPIES)] == ["b1", "b2", "b3"]


def test_every_copy_unreachable_is_503_and_every_copy_missing_is_500_never_404() -> None:
    reader, backends, _, _ = _rig()
    for backend in backends.values():
        backend.fail.add("get_object")
    try:
        _open(reader)
    except errors.S3Error as exc:
        assert exc.status == 503 and exc.code == "ServiceUnavailable"
    else:
        raise AssertionError("no error")
    for backend in backends.values():
        backend.fail.clear()
        backend.objects.clear()
    try:
        _open(reader)
    except errors.S3Error as exc:
        assert exc.status == 500
    else:
        raise AssertionError("no error")
