"""The S3 backend client over the lean agent's direct path (signer-written header lines,
responses read by lower-case name, small upload bodies written with the headers), at the
byte level: connections are StringTransports, time is a task.Clock."""

from __future__ import annotations

import hashlib
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone

from s3orch.backend.s3 import S3Backend
from s3orch.backend.s3_responses import lower_headers
from s3orch.config import load_config_from_string
from s3orch.payload import Payload
from s3orch.s3.sigv4 import sign_headers
from tests.unit.test_http11_client import Reader, Rig

CONFIG = load_config_from_string(
    "backends:\n  - name: b1\n    endpoint: http://backend.test:9000\n    bucket: x\n"
    "    access_key_id: k\n    secret_access_key: s\n    quota_bytes: 1000\n"
    "buckets:\n  - name: app\n    credentials:\n      - access_key_id: a\n        secret_access_key: b\n"
).backends[0]
OK_ETAG = b'HTTP/1.1 200 OK\r\nContent-Length: 0\r\nETag: "abc"\r\n\r\n'


def _request_lines(sent: bytes) -> tuple[bytes, dict[str, str]]:
    head, _, _ = sent.partition(b"\r\n\r\n")
    first, *lines = head.decode("latin-1").split("\r\n")
    pairs = [line.split(": ", 1) for line in lines]
    return first.encode(), {name.lower(): value for name, value in pairs}


def test_a_lean_request_carries_the_general_signers_signature() -> None:
    rig = Rig()
    rig.clock.advance(1_765_000_000)
    backend = S3Backend(CONFIG, rig.clock, 5.0, agent=rig.agent)
    outcome: list[Any] = []
    Deferred.fromCoroutine(backend.get_object("a b/c", (0, 9))).addBoth(outcome.append)
    _, transport = rig.conn()
    first, headers = _request_lines(transport.value())
    assert first == b"GET /x/a%20b/c HTTP/1.1"
    expected = sign_headers(
        "GET", "http://backend.test:9000/x/a%20b/c", {"range": "bytes=0-9"},
        headers["x-amz-content-sha256"], "k", "s", "us-east-1", 1_765_000_000,
    )
    assert headers["host"] == "backend.test:9000" and headers["range"] == "bytes=0-9"
    assert headers["authorization"] == expected["Authorization"]


def test_response_headers_by_lower_case_name_join_repeats_like_twisted_headers() -> None:
    rig = Rig()
    backend = S3Backend(CONFIG, rig.clock, 5.0, agent=rig.agent)
    outcome: list[Any] = []
    Deferred.fromCoroutine(backend.head_object("k")).addBoth(outcome.append)
    protocol, _ = rig.conn()
    protocol.dataReceived(
        b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nX-Amz-Meta-A: 1\r\nx-amz-meta-a: 2\r\nETag: \"\xe9\"\r\n\r\n"
    )
    assert outcome == [{"content-length": "7", "x-amz-meta-a": "1, 2", "etag": '"\xe9"'}]


def test_the_iagent_response_headers_match_the_by_name_view() -> None:
    rig = Rig()
    d, outcome = rig.request()
    protocol, _ = rig.conn()
    protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-A: 1\r\nx-a: 2\r\nETag: \"e\"\r\n\r\n")
    response = outcome[0]
    assert response.headers.getRawHeaders(b"x-a") == [b"1", b"2"]
    assert lower_headers(response.headers) == response.by_name == {"content-length": "0", "x-a": "1, 2", "etag": '"e"'}


def test_a_small_upload_goes_out_with_its_headers_at_once() -> None:
    rig = Rig()
    backend = S3Backend(CONFIG, rig.clock, 5.0, agent=rig.agent, read_size=16)
    body = b"0123456789abcdef"
    outcome: list[Any] = []
    Deferred.fromCoroutine(backend.put_object("k", Payload.from_bytes(body))).addBoth(outcome.append)
    protocol, transport = rig.conn()
    sent = transport.value()  # no reactor turn yet
    _, headers = _request_lines(sent)
    assert sent.endswith(b"\r\n\r\n" + body) and headers["content-length"] == "16"
    assert headers["x-amz-content-sha256"] == hashlib.sha256(body).hexdigest()
    protocol.dataReceived(OK_ETAG)
    assert outcome == ["abc"]


def test_a_larger_upload_is_sent_read_by_read_from_the_cooperator() -> None:
    rig = Rig()
    backend = S3Backend(CONFIG, rig.clock, 5.0, agent=rig.agent, read_size=16)
    body = bytes(range(40))
    outcome: list[Any] = []
    Deferred.fromCoroutine(backend.put_object("k", Payload.from_bytes(body))).addBoth(outcome.append)
    protocol, transport = rig.conn()
    assert transport.value().endswith(b"\r\n\r\n")  # headers only, so far
    for _ in range(3):
        rig.clock.advance(0)
    assert transport.value().endswith(b"\r\n\r\n" + body)
    protocol.dataReceived(OK_ETAG)
    assert outcome == ["abc"]


def test_a_small_upload_whose_source_runs_short_fails_without_a_retry() -> None:
    rig = Rig()
    backend = S3Backend(CONFIG, rig.clock, 5.0, agent=rig.agent)
    payload = Payload.from_bytes(b"abc")
    short = Payload(payload.file, 10, payload.md5_hex, payload.sha256_hex)
    outcome: list[Any] = []
    Deferred.fromCoroutine(backend.put_object("k", short)).addBoth(outcome.append)
    assert isinstance(outcome[0], Failure) and "ended 7 bytes early" in str(outcome[0].value)
    assert len(rig.endpoint.connections) == 1 and rig.conn()[1].disconnected


def test_a_reused_connection_keeps_one_idle_timer_and_expires_a_full_timeout_after_its_last_use() -> None:
    rig = Rig(idle_timeout=30)
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    rig.request()
    protocol, transport = rig.conn()
    protocol.dataReceived(ok)
    assert len(rig.clock.getDelayedCalls()) == 1
    for _ in range(3):  # reused every 10 s: no new timer per request
        rig.clock.advance(10)
        rig.request()
        protocol.dataReceived(ok)
        assert len(rig.clock.getDelayedCalls()) == 1
    assert len(rig.endpoint.connections) == 1
    rig.clock.advance(29)  # the first timer fired at 30 s and re-armed for the remainder
    assert not transport.disconnecting and rig.pool.idle_count(("http", "backend.test", 9000)) == 1
    rig.clock.advance(1)
    assert transport.disconnecting and rig.pool.idle_count(("http", "backend.test", 9000)) == 0
    assert not rig.clock.getDelayedCalls()


def test_a_connection_busy_when_its_timer_fires_is_not_closed() -> None:
    rig = Rig(idle_timeout=30)
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    rig.request()
    protocol, transport = rig.conn()
    protocol.dataReceived(ok)
    rig.clock.advance(20)
    _, outcome = rig.request()  # busy across the 30 s mark
    rig.clock.advance(15)
    assert not transport.disconnecting and not rig.clock.getDelayedCalls()
    protocol.dataReceived(ok)
    assert outcome[0].code == 200 and len(rig.clock.getDelayedCalls()) == 1
    rig.clock.advance(30)
    assert transport.disconnecting


def _count_pauses(transport: Any) -> list[str]:
    calls: list[str] = []
    pause, resume = transport.pauseProducing, transport.resumeProducing
    transport.pauseProducing = lambda: (calls.append("pause"), pause())
    transport.resumeProducing = lambda: (calls.append("resume"), resume())
    return calls


def test_a_body_that_came_whole_with_the_headers_never_pauses_the_socket() -> None:
    rig = Rig()
    _, outcome = rig.request()
    protocol, transport = rig.conn()
    calls = _count_pauses(transport)
    protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
    assert calls == [] and transport.producerState == "producing"
    reader = Reader()
    outcome[0].deliverBody(reader)
    assert reader.data == b"hello" and reader.ended(ResponseDone) and calls == []
    assert rig.pool.idle_count(("http", "backend.test", 9000)) == 1


def test_a_body_still_to_come_pauses_the_socket_at_the_end_of_the_read_until_it_is_read() -> None:
    rig = Rig()
    _, outcome = rig.request()
    protocol, transport = rig.conn()
    calls = _count_pauses(transport)
    protocol.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel")
    assert calls == ["pause"] and transport.producerState == "paused"
    reader = Reader()
    outcome[0].deliverBody(reader)
    assert calls == ["pause", "resume"] and reader.data == b"hel"
    protocol.dataReceived(b"lo")
    assert reader.data == b"hello" and reader.ended(ResponseDone)
