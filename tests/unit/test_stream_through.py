"""Stream-through of large PutObject and UploadPart bodies (issue 20 item 3).

Through the whole gateway in memory (:class:`GatewayHarness`: real front door, real SQLite,
real signed backend HTTP to in-memory S3 servers): a large PUT goes to its backend while it
arrives, with the same commit as a spooled one; failover only before the first byte; after
it, a failed write leaves no quota, intent or backend object behind; digests are checked
when the body ends.  And the stream itself (:class:`StreamPayload`): the client is paused
while the backend is slow, and resumed once it drained.
"""

from __future__ import annotations

import base64
import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import fail
from twisted.internet.error import ConnectionRefusedError

from s3orch.observe.metrics import REGISTRY
from s3orch.s3 import sigv4
from s3orch.stream_payload import StreamError, StreamPayload
from s3orch.testing.harness import DEFAULT_CONFIG, GatewayHarness

THRESHOLD = 64 * 1024
BODY = bytes(range(256)) * 800  # 200 KiB: over the threshold, under the 1 MiB quotas
CONFIG = DEFAULT_CONFIG.replace(
    '  listen_addr: "127.0.0.1:9000"\n',
    '  listen_addr: "127.0.0.1:9000"\n  stream_through_min_size: 64KiB\n',
)


@pytest.fixture
def h(tmp_path: Path) -> Iterator[GatewayHarness]:
    harness = GatewayHarness(tmp_path, CONFIG).start()
    try:
        yield harness
    finally:
        harness.stop()


def streamed(result: str) -> float:
    return REGISTRY.get_sample_value("s3o_stream_through_writes_total", {"result": result}) or 0.0


def rows(h: GatewayHarness, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(str(h.workdir / "s3orch.db"))
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def quota(h: GatewayHarness) -> dict[str, tuple[int, int, int]]:
    """backend -> (bytes_used, reserved_bytes, orphan_bytes)."""
    found = rows(h, "SELECT backend_name, bytes_used, reserved_bytes, orphan_bytes FROM backend_quotas")
    return {name: (used, reserved, orphan) for name, used, reserved, orphan in found}


def stored_keys(h: GatewayHarness) -> list[str]:
    return [key for server in h.backends.values() for bucket in server.buckets.values() for key in bucket]


def quiet(h: GatewayHarness) -> None:
    """Let the cleanup queue's grace pass and its worker run."""
    for _ in range(6):
        h.advance(60)


def put_requests(h: GatewayHarness) -> list[Any]:
    return [r for server in h.backends.values() for r in server.received if r.method == "PUT"]


def test_a_large_put_streams_and_commits_like_a_spooled_one(h: GatewayHarness) -> None:
    before = streamed("success")
    md5 = base64.b64encode(hashlib.md5(BODY).digest()).decode()
    response = h.put("photos", "big", BODY, headers={"Content-MD5": md5})
    assert response.status == 200
    assert response.headers["etag"] == f'"{hashlib.md5(BODY).hexdigest()}"'
    assert response.headers["server"] == "s3orch"
    assert streamed("success") == before + 1
    back = h.get("photos", "big")
    assert (back.status, back.body) == (200, BODY)
    sent = put_requests(h)[-1]
    # The client's signed hash and Content-MD5 go to the backend, which checks them too.
    assert sent.header("x-amz-content-sha256") == hashlib.sha256(BODY).hexdigest()
    assert sent.header("content-md5") == md5
    assert quota(h)["backend-1"] == (len(BODY), 0, 0)
    assert rows(h, "SELECT count(*) FROM pending_objects") == [(0,)]
    assert rows(h, "SELECT content_hash FROM objects WHERE object_key = 'big'") == [
        (hashlib.sha256(BODY).hexdigest(),)
    ]


def test_small_bodies_keep_the_spool(h: GatewayHarness) -> None:
    before = streamed("success")
    assert h.put("photos", "small", BODY[: THRESHOLD - 1]).status == 200
    assert streamed("success") == before
    assert h.get("photos", "small").body == BODY[: THRESHOLD - 1]


def test_aws_chunked_bodies_keep_the_spool(h: GatewayHarness) -> None:
    before = streamed("success")
    framed = b"%x\r\n" % len(BODY) + BODY + b"\r\n0\r\n\r\n"
    response = h.put(
        "photos", "chunked", framed,
        headers={"Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(BODY))},
        payload_hash=sigv4.STREAMING_UNSIGNED_TRAILER,
    )
    assert response.status == 200, response.body
    assert streamed("success") == before
    assert h.get("photos", "chunked").body == BODY


def test_a_backend_refusing_the_connection_fails_over_before_the_first_byte(h: GatewayHarness) -> None:
    agent: Any = h._agents["backend-1"]
    agent.request = lambda *args, **kwargs: fail(ConnectionRefusedError())
    before = streamed("success")
    response = h.put("photos", "k", BODY)
    assert response.status == 200
    assert streamed("success") == before + 1
    assert [r.method for r in h.backends["backend-1"].received if r.method == "PUT"] == []
    del agent.request
    quiet(h)  # an unanswered attempt is queued for cleanup (it might have landed): that settles
    assert quota(h)["backend-1"] == (0, 0, 0)
    assert quota(h)["backend-2"] == (len(BODY), 0, 0)
    assert h.get("photos", "k").body == BODY


def test_a_backend_failing_after_the_first_byte_is_503_and_leaks_nothing(h: GatewayHarness) -> None:
    server: Any = h.backends["backend-1"]
    real = server.render

    def broken(request: Any) -> bytes:
        if request.method == b"PUT":
            request.setResponseCode(500)
            return b"<Error><Code>InternalError</Code><Message>disk</Message></Error>"
        result: bytes = real(request)
        return result

    server.render = broken
    before = streamed("backend_error")
    response = h.put("photos", "k", BODY)
    assert response.status == 503
    assert b"<Code>ServiceUnavailable</Code>" in response.body
    assert streamed("backend_error") == before + 1
    assert quota(h)["backend-2"] == (0, 0, 0)  # not replayed: the stream was spent on backend-1
    assert h.get("photos", "k").status == 404
    assert rows(h, "SELECT count(*) FROM pending_objects") == [(0,)]
    server.render = real
    quiet(h)
    assert quota(h)["backend-1"] == (0, 0, 0)


def test_a_bad_content_md5_is_bad_digest_and_nothing_is_committed(h: GatewayHarness) -> None:
    before = streamed("client_error")
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    response = h.put("photos", "k", BODY, headers={"Content-MD5": wrong})
    assert response.status == 400
    assert streamed("client_error") == before + 1
    assert b"<Code>BadDigest</Code>" in response.body
    assert h.get("photos", "k").status == 404
    quiet(h)
    assert quota(h)["backend-1"] == (0, 0, 0)
    assert stored_keys(h) == []
    assert rows(h, "SELECT count(*) FROM pending_objects") == [(0,)]


def test_a_wrong_sha256_claim_is_a_mismatch_and_nothing_is_committed(h: GatewayHarness) -> None:
    before = streamed("client_error")
    response = h.put("photos", "k", BODY, payload_hash=hashlib.sha256(b"other").hexdigest())
    assert response.status == 400
    assert streamed("client_error") == before + 1
    assert b"<Code>XAmzContentSHA256Mismatch</Code>" in response.body
    assert h.get("photos", "k").status == 404
    quiet(h)
    assert quota(h)["backend-1"] == (0, 0, 0)
    assert stored_keys(h) == []


def test_a_client_gone_mid_body_aborts_the_backend_write_and_releases_quota(h: GatewayHarness) -> None:
    request = h.encode_request(
        "PUT", h.target("photos", "k"), body=BODY, credentials=h.credentials("photos"),
        payload_hash=hashlib.sha256(BODY).hexdigest(),
    )
    before = streamed("client_error") + streamed("backend_error")
    connection = h.connect()
    connection.send(request[: len(request) - len(BODY) // 2])  # headers and half the body
    assert quota(h)["backend-1"][1] == len(BODY)  # reserved before the first byte went out
    connection.close()
    h.settle()
    assert streamed("client_error") + streamed("backend_error") == before + 1
    quiet(h)
    assert quota(h)["backend-1"] == (0, 0, 0)
    assert stored_keys(h) == []
    assert rows(h, "SELECT count(*) FROM pending_objects") == [(0,)]
    assert h.get("photos", "k").status == 404


# -- the stream itself -----------------------------------------------------------------------


class SlowConsumer:
    """A backend socket: takes writes, pauses its producer when told to."""

    def __init__(self) -> None:
        self.data: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.data.append(data)


def test_the_client_is_paused_while_the_backend_is_slow_and_resumed_when_it_drains() -> None:
    calls: list[str] = []
    payload = StreamPayload(
        10, pause_source=lambda: calls.append("pause"), resume_source=lambda: calls.append("resume"),
        high_water=4, low_water=1,
    )
    producer = payload.producer()
    consumer = SlowConsumer()
    done = producer.startProducing(consumer)
    producer.pauseProducing()  # the backend's socket buffer is full
    payload.feed(b"abc")
    assert calls == []
    payload.feed(b"de")  # 5 bytes waiting > high water
    assert calls == ["pause"]
    producer.resumeProducing()
    assert calls == ["pause", "resume"]
    assert b"".join(consumer.data) == b"abcde"
    payload.feed(b"fghij")
    results: list[object] = []
    done.addCallback(results.append)
    assert results == []  # no end yet: the digests are not known
    payload.end("md5", "sha", None)
    assert results == [None]
    assert payload.md5_hex == "md5" and payload.sent == 10


def test_a_stream_that_sent_bytes_cannot_be_sent_again() -> None:
    payload = StreamPayload(4)
    payload.producer()  # an attempt that sent nothing may be replaced
    producer = payload.producer()
    producer.startProducing(SlowConsumer())
    payload.feed(b"ab")
    with pytest.raises(StreamError):
        payload.producer()


def test_a_failed_stream_fails_the_backend_request() -> None:
    payload = StreamPayload(4)
    done = payload.producer().startProducing(SlowConsumer())
    payload.feed(b"ab")
    errors: list[Any] = []
    done.addErrback(errors.append)
    payload.fail(ValueError("digest"))
    assert isinstance(errors[0].value, ValueError)
    payload.feed(b"cd")  # dropped
    assert payload.sent == 2


def test_a_backend_request_that_starts_after_the_stream_failed_fails_at_once() -> None:
    """The body failed its check while the backend connection was still being made: the
    request, when it starts reading, fails then (not at the backend timeout)."""
    payload = StreamPayload(4)
    producer = payload.producer()  # the backend request exists, its connection not yet made
    payload.feed(b"abcd")
    payload.fail(ValueError("digest"))
    errors: list[Any] = []
    producer.startProducing(SlowConsumer()).addErrback(errors.append)
    assert errors and isinstance(errors[0].value, ValueError)


def test_a_stalled_body_is_a_request_timeout_and_releases_everything(h: GatewayHarness) -> None:
    request = h.encode_request("PUT", h.target("photos", "k"), body=BODY, credentials=h.credentials("photos"))
    connection = h.connect()
    connection.send(request[: len(request) - len(BODY) // 2])
    assert quota(h)["backend-1"][1] == len(BODY)
    h.advance(h.config.server.read_timeout + 1)
    assert b" 408 " in connection.received.split(b"\r\n", 1)[0]
    assert b"<Code>RequestTimeout</Code>" in connection.received
    quiet(h)
    assert quota(h)["backend-1"] == (0, 0, 0)
    assert stored_keys(h) == []
    assert rows(h, "SELECT count(*) FROM pending_objects") == [(0,)]


def _upload_id(body: bytes) -> str:
    return body.split(b"<UploadId>", 1)[1].split(b"</UploadId>", 1)[0].decode()


def test_a_large_part_streams_and_completes(h: GatewayHarness) -> None:
    created = h.request("POST", "photos", "mp", query=[("uploads", "")])
    upload_id = _upload_id(created.body)
    before = streamed("success")
    part = h.request("PUT", "photos", "mp", query=[("partNumber", "1"), ("uploadId", upload_id)], body=BODY)
    assert part.status == 200
    assert part.headers["etag"] == f'"{hashlib.md5(BODY).hexdigest()}"'
    assert streamed("success") == before + 1
    listing = (
        "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber>"
        f'<ETag>"{hashlib.md5(BODY).hexdigest()}"</ETag></Part></CompleteMultipartUpload>'
    ).encode()
    done = h.request("POST", "photos", "mp", query=[("uploadId", upload_id)], body=listing)
    assert done.status == 200, done.body
    assert h.get("photos", "mp").body == BODY


def test_a_part_with_a_bad_checksum_header_commits_nothing(h: GatewayHarness) -> None:
    created = h.request("POST", "photos", "mp", query=[("uploads", "")])
    upload_id = _upload_id(created.body)
    wrong = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    before = streamed("client_error")
    part = h.request(
        "PUT", "photos", "mp", query=[("partNumber", "1"), ("uploadId", upload_id)], body=BODY,
        headers={"x-amz-checksum-sha256": wrong},
    )
    assert part.status == 400
    assert b"<Code>BadDigest</Code>" in part.body
    assert streamed("client_error") == before + 1
    listed = h.request("GET", "photos", "mp", query=[("uploadId", upload_id)])
    assert b"<Part>" not in listed.body
    quiet(h)
    assert quota(h)["backend-1"] == (0, 0, 0)
    assert stored_keys(h) == []
