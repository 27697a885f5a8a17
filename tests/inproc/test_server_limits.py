"""A full admission pool answers 503 SlowDown (and /health still answers), in-process: the held
upload is a connection that got ``100 Continue`` and has not sent its body yet.  (Slow clients
cut off at read_header_timeout on real sockets: tests/integration/test_server_limits.py.)"""

from __future__ import annotations

from collections.abc import Callable

from s3orch.s3 import sigv4
from s3orch.testing import GatewayHarness
from tests.conftest import PHOTOS
from tests.inproc.conftest import make_backends
from tests.support.configs import GatewayConfig


def _put_headers(gw: GatewayHarness, key: str, length: int) -> bytes:
    """A signed PUT's head (no body) asking for ``100 Continue``."""
    return gw.encode_request(
        "PUT", f"/photos/{key}", headers={"Content-Length": str(length), "Expect": "100-continue"},
        credentials=(PHOTOS.access_key, PHOTOS.secret_key), payload_hash=sigv4.UNSIGNED_PAYLOAD,
    )


def test_full_admission_pool_answers_503_slowdown_and_health_still_answers(
    start_harness: Callable[..., GatewayHarness],
) -> None:
    gw = start_harness(GatewayConfig(backends=make_backends(1), extra_server={"max_concurrent_requests": 1}))
    holder = gw.connect()
    holder.send(_put_headers(gw, "held", 5))
    assert holder.received.startswith(b"HTTP/1.1 100 Continue")  # admitted: the slot is held
    refused = gw.connect()
    refused.send(_put_headers(gw, "refused", 5))
    answer = refused.response("PUT")
    assert answer.status == 503 and answer.header("retry-after") == "1"
    assert b"<Code>SlowDown</Code>" in answer.body and b"100 Continue" not in refused.received
    refused.close()
    assert gw.send_raw(f"GET /health HTTP/1.1\r\nHost: {gw.host}\r\n\r\n".encode()).status == 200
    holder.send(b"hello")
    assert holder.response("PUT").status == 200
    holder.close()
    # The slot came back: the next upload is admitted.
    again = gw.connect()
    again.send(_put_headers(gw, "again", 0))
    assert again.response("PUT").status == 200
    again.close()
