"""``circuit_breaker.parallel_broadcast`` and ``degraded_broadcast_parallelism``
(``s3orch.core.broadcast``): while degraded, an object's copies are opened at once, the first
answer wins and the other opens are cancelled; the window caps opens in flight."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import Clock

from s3orch.backend.interface import BackendUnavailable
from s3orch.config import load_config_from_string
from s3orch.core.broadcast import BroadcastingObjectService
from s3orch.core.cleanup import Cleanups
from s3orch.core.fleet import BackendFleet
from s3orch.core.spool import Spooler
from s3orch.s3 import errors
from s3orch.store.records import Location

CONFIG = """
buckets:
  - name: photos
    credentials: [{access_key_id: k, secret_access_key: s}]
backends:
""" + "".join(
    f'  - {{name: b{i}, endpoint: "http://127.0.0.1:1", bucket: x, access_key_id: a, secret_access_key: s,'
    f" quota_bytes: 1000}}\n"
    for i in (1, 2, 3)
)


class Stream:
    def __init__(self, name: str) -> None:
        self.name = name
        self.cancelled = False
        self.status = 200
        self.length = 3
        self.content_range = None
        self.headers: dict[str, str] = {}

    def cancel(self) -> None:
        self.cancelled = True


class Pending:
    """A backend whose GETs wait until the test answers them."""

    def __init__(self, name: str, *, cancellable: bool = True) -> None:
        self.name = name
        self.calls: list[Deferred[Any]] = []
        self.cancelled = 0
        self.cancellable = cancellable

    async def get_object(self, storage_key: str, byte_range: tuple[int, int] | None = None) -> Any:
        def cancel(d: Deferred[Any]) -> None:
            self.cancelled += 1
            if self.cancellable:
                d.errback(BackendUnavailable("cancelled"))  # the open ends; its caller has moved on

        waiting: Deferred[Any] = Deferred(cancel if self.cancellable else lambda d: self._ignore())
        self.calls.append(waiting)
        return await waiting

    def _ignore(self) -> None:
        self.cancelled += 1

    async def close(self) -> None:
        pass


def service(racing: bool, parallelism: int = 0) -> tuple[BroadcastingObjectService, dict[str, Pending]]:
    config = load_config_from_string(CONFIG)
    clients = {name: Pending(name, cancellable=name != "b3") for name in ("b1", "b2", "b3")}
    fleet = BackendFleet(config.backends, clients)  # type: ignore[arg-type]
    clock = Clock()
    objects = BroadcastingObjectService(
        racing=lambda: racing, parallelism=parallelism,
        store=None, fleet=fleet, cleanups=Cleanups(store=None, fleet=fleet, clock=clock, concurrency=1),  # type: ignore[arg-type]
        spooler=Spooler(), routing_strategy="pack", clock=clock,
    )
    return objects, clients


COPIES = (Location("b1", "k1", 3), Location("b2", "k2", 3), Location("b3", "k3", 3))


def opened(objects: BroadcastingObjectService, copies: tuple[Location, ...] = COPIES) -> Deferred[Any]:
    return ensureDeferred(objects._open_copies(copies, None))


def test_the_first_copy_to_answer_wins_and_the_others_are_cancelled() -> None:
    objects, clients = service(racing=True)
    result = opened(objects)
    assert [len(c.calls) for c in clients.values()] == [1, 1, 1]  # all at once
    winner = Stream("b2")
    clients["b2"].calls[0].callback(winner)
    got: list[Any] = []
    result.addCallback(got.append)
    ((served, location),) = got  # the served stream is watched (a failure before its first byte marks the copy)
    assert getattr(served, "_inner", served) is winner and location == COPIES[1]
    assert clients["b1"].cancelled == 1 and clients["b3"].cancelled == 1
    assert all(call.called for c in clients.values() for call in c.calls)  # nothing left waiting
    assert not winner.cancelled


def test_the_window_caps_opens_in_flight_and_a_failure_starts_the_next_copy() -> None:
    objects, clients = service(racing=True, parallelism=1)
    result = opened(objects)
    assert [len(c.calls) for c in clients.values()] == [1, 0, 0]
    clients["b1"].calls[0].errback(BackendUnavailable("refused"))
    assert [len(c.calls) for c in clients.values()] == [1, 1, 0]
    clients["b2"].calls[0].errback(BackendUnavailable("refused"))
    clients["b3"].calls[0].errback(BackendUnavailable("refused"))
    failures: list[Any] = []
    result.addErrback(failures.append)
    assert failures and isinstance(failures[0].value, errors.ServiceUnavailable)


def test_without_racing_copies_are_tried_in_order() -> None:
    objects, clients = service(racing=False)
    result = opened(objects)
    assert [len(c.calls) for c in clients.values()] == [1, 0, 0]
    clients["b1"].calls[0].errback(BackendUnavailable("refused"))
    assert [len(c.calls) for c in clients.values()] == [1, 1, 0]
    stream = Stream("b2")
    clients["b2"].calls[0].callback(stream)
    got: list[Any] = []
    result.addCallback(got.append)
    ((opened_stream, location),) = got
    # the in-order path watches the body (a failure before its first byte marks the copy)
    assert getattr(opened_stream, "_inner", opened_stream) is stream and location == COPIES[1]


@pytest.mark.parametrize("racing", [True, False])
def test_a_single_copy_is_simply_opened(racing: bool) -> None:
    objects, clients = service(racing=racing)
    result = opened(objects, COPIES[:1])
    stream = Stream("b1")
    clients["b1"].calls[0].callback(stream)
    got: list[Any] = []
    result.addCallback(got.append)
    assert got == [(stream, COPIES[0])]
