"""The request path's pre-bound metric children are the registry's own: what they count is
what /metrics shows."""

from __future__ import annotations

from s3orch.backend import s3 as backend_s3
from s3orch.backend import s3_streams
from s3orch.frontend import envelope
from s3orch.observe.metrics import (
    BACKEND_BYTES,
    BACKEND_DURATION,
    BACKEND_REQUESTS,
    INFLIGHT,
    REQUEST_DURATION,
    REQUEST_SIZE,
    REQUESTS,
    RESPONSE_SIZE,
)


def test_cached_children_are_the_registry_children() -> None:
    assert envelope._inflight("GET") is INFLIGHT.labels("GET")
    assert envelope._requests("GET", "200") is REQUESTS.labels("GET", "200")
    assert envelope._duration("PUT") is REQUEST_DURATION.labels("PUT")
    assert envelope._request_size("PUT") is REQUEST_SIZE.labels("PUT")
    assert envelope._response_size("GET") is RESPONSE_SIZE.labels("GET")
    assert backend_s3._backend_requests("GetObject", "b1", "200") is BACKEND_REQUESTS.labels("GetObject", "b1", "200")
    assert backend_s3._backend_duration("GetObject", "b1") is BACKEND_DURATION.labels("GetObject", "b1")
    assert s3_streams._bytes_in("b1") is BACKEND_BYTES.labels("b1", "in")
    before = REQUESTS.labels("HEAD", "404")._value.get()
    envelope._requests("HEAD", "404").inc()
    assert REQUESTS.labels("HEAD", "404")._value.get() == before + 1
