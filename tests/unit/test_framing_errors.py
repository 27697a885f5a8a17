"""Requests Twisted's HTTP parser refuses itself are answered as S3 errors, then closed.

Twisted answers a malformed request line, header, Content-Length, chunked body or
an oversized header section with a bare ``HTTP/1.1 400 Bad Request`` (and a line
over 16 KiB with no answer at all); an S3 client cannot parse either.  The front
door's channel answers an S3 XML error with ``x-amz-request-id`` and closes the
connection; a request refused mid-body releases its admission slot.  Each case
sends raw bytes through the whole front door (S3Site over StringTransport), then a
normal PUT on a new connection succeeds.
"""

from __future__ import annotations

import re

import pytest

from tests.unit.frontdoor_fakes import (
    FrontDoor,
    LogFailures,
    inflight_total,
    signed_request,
    status_of,
)

_HEAD = b"PUT /photos/k HTTP/1.1\r\nHost: gw.test\r\n"

#: name -> (raw bytes, the S3 error code expected)
CASES: dict[str, tuple[bytes, str]] = {
    "23-digit Content-Length": (_HEAD + b"Content-Length: " + b"9" * 23 + b"\r\n\r\n", "BadRequest"),
    "5000-digit Content-Length": (_HEAD + b"Content-Length: " + b"7" * 5000 + b"\r\n\r\n", "BadRequest"),
    "non-digit Content-Length": (_HEAD + b"Content-Length: 12abc\r\n\r\n", "BadRequest"),
    "negative Content-Length": (_HEAD + b"Content-Length: -1\r\n\r\n", "BadRequest"),
    "two Content-Lengths": (_HEAD + b"Content-Length: 1\r\nContent-Length: 1\r\n\r\nx", "BadRequest"),
    "unknown Transfer-Encoding": (_HEAD + b"Transfer-Encoding: gzip\r\n\r\n", "BadRequest"),
    "malformed request line": (b"GET /photos/k\r\nHost: gw.test\r\n\r\n", "BadRequest"),
    "request line of one word": (b"GARBAGE\r\n\r\n", "BadRequest"),
    "header without a colon": (_HEAD + b"this is not a header\r\n\r\n", "BadRequest"),
    "header name with a space": (_HEAD + b"Bad Name: x\r\n\r\n", "BadRequest"),
    "NUL in a header value": (_HEAD + b"x-amz-meta-a: a\x00b\r\n\r\n", "BadRequest"),
    "bare LF in a header value": (_HEAD + b"x-amz-meta-a: a\nb\r\n\r\n", "BadRequest"),
    "too many headers": (
        _HEAD + b"".join(b"x-h%d: v\r\n" % i for i in range(600)) + b"\r\n",
        "RequestHeaderSectionTooLarge",
    ),
    "header section over 16 KiB": (
        _HEAD + b"".join(b"x-h%d: %s\r\n" % (i, b"v" * 1000) for i in range(20)) + b"\r\n",
        "RequestHeaderSectionTooLarge",
    ),
    "one line over 16 KiB": (_HEAD + b"x-long: " + b"v" * 20000 + b"\r\n\r\n", "RequestHeaderSectionTooLarge"),
    "request line over 16 KiB, no newline yet": (b"GET /" + b"a" * 20000, "RequestHeaderSectionTooLarge"),
}


def _assert_s3_error(raw_answer: bytes, code: str) -> None:
    head, _, body = raw_answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), raw_answer[:200]
    headers = head.lower()
    assert b"\r\ncontent-type: application/xml" in headers
    assert b"\r\nconnection: close" in headers
    request_id = re.search(rb"\r\nx-amz-request-id: ([0-9A-F]{32})", head)
    assert request_id is not None, head
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<Error>')
    assert b"<Code>" + code.encode() + b"</Code>" in body
    assert b"<RequestId>" + request_id.group(1) + b"</RequestId>" in body
    length = re.search(rb"\r\ncontent-length: (\d+)", headers)
    assert length is not None and int(length.group(1)) == len(body)


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_framing_error_is_an_s3_error_and_closes(name: str) -> None:
    raw, code = CASES[name]
    door = FrontDoor()
    inflight_before = inflight_total()
    with LogFailures() as failures:
        protocol, transport = door.send(raw)
        _assert_s3_error(transport.value(), code)
        assert transport.disconnecting  # the connection is closed once the answer is out
        answered = transport.value()
        protocol.dataReceived(b"GET /photos/k HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        assert transport.value() == answered  # nothing more is read on that connection
        transport.close()
        _, transport = door.send(signed_request("PUT", "/photos/after", b"0123"))
        assert status_of(transport) == 200
    assert failures.events == []
    assert door.slots_in_use() == 0
    assert inflight_total() == inflight_before


def test_bad_chunked_framing_mid_body_releases_the_slot_and_is_counted_once() -> None:
    door = FrontDoor(server="  max_concurrent_requests: 1")
    inflight_before = inflight_total()
    head = signed_request("PUT", "/photos/k", headers={"Transfer-Encoding": "chunked"}, content_length=False)
    with LogFailures() as failures:
        protocol, transport = door.connect()
        protocol.dataReceived(head + b"5\r\nhello\r\n")
        assert door.slots_in_use() == 1  # the upload was admitted and is being received
        protocol.dataReceived(b"zz-not-hex\r\n")
        _assert_s3_error(transport.value(), "BadRequest")
        assert door.slots_in_use() == 0
        assert inflight_total() == inflight_before
        transport.close()  # the abandoned hook must not count it a second time
        assert inflight_total() == inflight_before
        assert door.objects.puts == 0
        _, transport = door.send(signed_request("PUT", "/photos/after", b"0123"))
        assert status_of(transport) == 200
    assert failures.events == []


def test_a_pipelined_malformed_request_after_a_good_one_is_refused_after_its_answer() -> None:
    door = FrontDoor()
    good = signed_request("PUT", "/photos/k", b"abc")
    _, transport = door.send(good + b"NOT A REQUEST LINE AT ALL\r\n\r\n")
    answers = transport.value().split(b"HTTP/1.1 ")
    assert [a[:3] for a in answers if a] == [b"200", b"400"]
    _assert_s3_error(b"HTTP/1.1 " + answers[-1], "BadRequest")
    assert door.slots_in_use() == 0
