"""A GET whose backend body fails: a 503 when nothing reached the client, an abort after that.

A small body is gathered (one write with its headers) and a verified one is held back, so a
backend that fails in the middle of them has sent the client nothing yet: the client gets an
S3 ``503 ServiceUnavailable`` it retries, on a connection that stays usable.  Once the status
line is out, the only honest signal left is an aborted connection (never a short 200).
Neither is a gateway bug: no traceback, no ``http.PanicRecovered``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from twisted.logger import globalLogPublisher

from s3orch.store.interface import ObjectRecord
from tests.unit.frontdoor_fakes import FrontDoor, LogFailures, signed_request, status_of


@pytest.fixture
def audit_events() -> Iterator[list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("audit"):
            events.append(dict(event))

    globalLogPublisher.addObserver(observe)
    yield events
    globalLogPublisher.removeObserver(observe)


def _door(size: int, fail_after: int) -> FrontDoor:
    door = FrontDoor()
    door.objects.stream_kwargs = {"chunk_size": 1000, "fail_after": fail_after}
    door.objects.store(ObjectRecord("photos", "k", "w", size, "e" * 32, 1_700_000_000.0), b"z" * size)
    return door


def test_a_small_body_failing_before_anything_was_sent_is_a_503_on_a_live_connection(
    audit_events: list[dict[str, Any]],
) -> None:
    door = _door(8000, fail_after=3000)
    with LogFailures() as failures:
        protocol, transport = door.send(signed_request("GET", "/photos/k"))
    sent = transport.value()
    assert status_of(transport) == 503
    assert b"<Code>ServiceUnavailable</Code>" in sent
    assert b"z" * 100 not in sent  # none of the object's bytes
    assert not transport.aborted and not transport.disconnecting
    assert door.objects.streams[-1].cancelled
    assert failures.events == []  # a backend fault, not a bug: no traceback
    events = [e["event"] for e in audit_events]
    assert "http.PanicRecovered" not in events
    (s3_event,) = [e for e in audit_events if e["event"] == "s3.GetObject"]
    assert (s3_event["status"], s3_event["error"]) == (503, "ServiceUnavailable")
    assert door.slots_in_use() == 0
    # the connection still serves: the next GET (now whole) is answered on it
    door.objects.stream_kwargs = {"chunk_size": 1000}
    transport.clear()
    protocol.dataReceived(signed_request("GET", "/photos/k"))
    assert status_of(transport) == 200 and transport.value().endswith(b"z" * 8000)


def test_a_large_body_failing_after_its_headers_went_out_aborts_the_connection(
    audit_events: list[dict[str, Any]],
) -> None:
    door = _door(200_000, fail_after=100_000)
    with LogFailures() as failures:
        _, transport = door.send(signed_request("GET", "/photos/k"))
    assert transport.value().startswith(b"HTTP/1.1 200 ")
    assert transport.aborted  # never a short 200
    assert failures.events == []
    assert "http.PanicRecovered" not in [e["event"] for e in audit_events]
    assert [e["event"] for e in audit_events].count("s3.GetObject") == 1  # counted once
    assert door.slots_in_use() == 0
