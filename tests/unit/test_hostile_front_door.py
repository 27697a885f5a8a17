"""Hostile requests never leak an admission slot, never go unanswered, never log a traceback.

Issue 11 item 1: one non-UTF-8 byte echoed into an error document used to raise
out of ``prepare()``/``_handle``, keeping the request's admission slot and its
in-flight gauge forever (and leaving a body-less request unanswered).  Here 2,000
such requests, mixed, go through the whole front door in memory (S3Site over
StringTransport, MemoryReactorClock); afterwards nothing is held and a normal PUT
succeeds.
"""

from __future__ import annotations

import random
import time
from email.utils import formatdate

import pytest

from s3orch.frontend.envelope import S3Envelope
from s3orch.observe.metrics import REGISTRY
from s3orch.s3 import errors
from s3orch.store.interface import ObjectRecord
from tests.unit.frontdoor_fakes import (
    START,
    FrontDoor,
    LogFailures,
    inflight_total,
    series_count,
    signed_request,
    status_of,
)


def _v4_auth(access_key: bytes, extra_signed: bytes = b"") -> tuple[bytes, bytes]:
    amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(START)).encode()
    auth = (
        b"Authorization: AWS4-HMAC-SHA256 Credential=" + access_key + b"/" + amz_date[:8]
        + b"/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date"
        + extra_signed + b", Signature=" + b"0" * 64
    )
    return auth, b"x-amz-date: " + amz_date


def _raw(method: bytes, target: bytes, headers: list[bytes], body: bytes | None) -> bytes:
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: gw.test", *headers]
    if body is not None:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


def hostile_request(rng: random.Random) -> bytes:
    """One attack of issue 11 (items 1, 3, 6, 8), with or without a body."""
    body = rng.choice([None, b"", b"hello", b"x" * 1000])
    method = rng.choice([b"GET", b"HEAD", b"PUT", b"POST", b"DELETE"])
    kind = rng.randrange(14)
    if kind == 0:  # an undecodable access key in the credential scope
        auth, date = _v4_auth(b"\xff")
        return _raw(method, b"/photos/a", [auth, date, b"x-amz-content-sha256: UNSIGNED-PAYLOAD"], body)
    if kind == 1:  # an undecodable payload hash, with a known key
        auth, date = _v4_auth(b"photoskey")
        return _raw(method, b"/photos/a", [auth, date, b"x-amz-content-sha256: \xff"], body)
    if kind == 2:  # SigV2 with an undecodable key
        date = formatdate(START, usegmt=True).encode()
        return _raw(method, b"/photos/a", [b"Authorization: AWS \xff:c2lnbmF0dXJl", b"Date: " + date], body)
    if kind == 3:  # SigV2 presigned with an undecodable key
        expires = b"%d" % (START + 300)
        return _raw(method, b"/photos/a?AWSAccessKeyId=%FF&Signature=abc&Expires=" + expires, [], body)
    if kind == 4:  # a signed listing with an undecodable max-keys
        return signed_request("GET", "/photos?max-keys=%FF")
    if kind == 5:  # unsigned max-keys junk (Unicode digits, huge)
        junk = rng.choice([b"%FF", b"%C2%B2", b"9" * 5000, b"-1"])
        return _raw(b"GET", b"/photos?max-keys=" + junk, [], body)
    if kind == 6:  # an undecodable response override on a signed GET
        return signed_request(rng.choice(["GET", "HEAD"]), "/photos/a?response-content-type=%FF")
    if kind == 7:  # random methods (metric labels, early 405)
        name = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(rng.randint(1, 12)))
        return _raw(name.encode(), b"/photos/a", [], body)
    if kind == 8:  # an undecodable signed header name's value
        auth, date = _v4_auth(b"photoskey", b";x-amz-meta-k")
        return _raw(method, b"/photos/a", [auth, date, b"x-amz-content-sha256: UNSIGNED-PAYLOAD",
                                           b"x-amz-meta-k: \xff\xfe"], body)
    if kind == 9:  # Unicode digits where numbers go
        return signed_request("PUT", "/photos/a", b"x" * 5, headers={
            "x-amz-decoded-content-length": "\u00b2", "Content-Encoding": "aws-chunked",
        })
    if kind == 10:
        return signed_request("GET", "/photos/a", headers={"Range": rng.choice(["bytes=\u00b2-3", "bytes=\xff-"])})
    if kind == 11:  # keys that are not UTF-8
        return _raw(method, rng.choice([b"/photos/%FF", b"/photos/\xff\xfe", b"/photos/a%ZZ"]), [], body)
    if kind == 12:  # a signed PUT whose metadata is not UTF-8
        return signed_request("PUT", "/photos/a", b"data", headers={"x-amz-meta-k": "\udcff"})
    return _raw(method, b"/photos/a", [b"Content-Length: " + b"7" * 5000], None)  # Twisted's int() limit


def test_two_thousand_hostile_requests_leave_nothing_held_and_a_put_succeeds() -> None:
    door = FrontDoor(server="  max_concurrent_requests: 40")
    rng = random.Random(11)
    inflight_before = inflight_total()
    statuses: dict[int | None, int] = {}
    with LogFailures() as failures:
        for _ in range(2000):
            raw = hostile_request(rng)
            _, transport = door.send(raw)
            status = status_of(transport)
            statuses[status] = statuses.get(status, 0) + 1
            assert status is not None and 400 <= status < 500, (raw[:200], transport.value()[:300])
            assert door.slots_in_use() == 0, raw[:200]
        assert inflight_total() == inflight_before
        _, transport = door.send(signed_request("PUT", "/photos/after", b"0123456789"))
        assert status_of(transport) == 200, transport.value()
        _, transport = door.send(signed_request("GET", "/photos/after"))
        assert transport.value().endswith(b"\r\n\r\n0123456789")
    assert failures.events == []
    assert door.slots_in_use() == 0
    assert inflight_total() == inflight_before
    assert len(statuses) >= 4  # the mix reached many refusals, not one


def test_random_methods_do_not_grow_metrics_and_are_refused_before_admission() -> None:
    door = FrontDoor(server="  max_concurrent_requests: 1")
    rng = random.Random(3)
    # One of each closed label first, so later requests can only re-use series.
    for method in ("GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "BREW"):
        door.send(f"{method} /photos/k HTTP/1.1\r\nHost: gw.test\r\n\r\n".encode())
    before = series_count()
    for _ in range(2000):
        name = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ_-") for _ in range(rng.randint(1, 20)))
        _, transport = door.send(f"{name} /photos/k HTTP/1.1\r\nHost: gw.test\r\n\r\n".encode())
        if name in ("GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS"):
            continue
        assert status_of(transport) == 405
        assert b"<Code>MethodNotAllowed</Code>" in transport.value()
        assert b"<ResourceType>OBJECT</ResourceType>" in transport.value()
    assert series_count() == before
    assert REGISTRY.get_sample_value("s3o_requests_total", {"method": "OTHER", "status_code": "405"})
    assert door.slots_in_use() == 0


def test_unknown_method_with_a_body_is_refused_before_100_continue() -> None:
    door = FrontDoor()
    _, transport = door.send(
        b"PATCH /photos/k HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n"
    )
    assert transport.value().startswith(b"HTTP/1.1 405 ")
    assert b"100 Continue" not in transport.value()
    assert b"<Method>PATCH</Method>" in transport.value()


def test_an_error_echoing_undecodable_bytes_is_well_formed_xml() -> None:
    from xml.etree import ElementTree

    door = FrontDoor()
    auth, date = _v4_auth(b"\xff\x01")
    _, transport = door.send(_raw(b"GET", b"/photos/a", [auth, date, b"x-amz-content-sha256: UNSIGNED-PAYLOAD"], None))
    body = transport.value().split(b"\r\n\r\n", 1)[1]
    root = ElementTree.fromstring(body)
    assert root.findtext("Code") == "InvalidAccessKeyId"
    assert root.findtext("AWSAccessKeyId") == "\ufffd\ufffd"


def test_a_failure_in_prepare_is_a_500_and_releases_the_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    door = FrontDoor()

    def broken(self: S3Envelope, state: object, length: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(S3Envelope, "_prepare", broken)
    with LogFailures() as failures:
        for raw in (signed_request("GET", "/photos/k"), signed_request("PUT", "/photos/k", b"abc")):
            _, transport = door.send(raw)
            assert status_of(transport) == 500
            assert b"<Code>InternalError</Code>" in transport.value()
    assert door.slots_in_use() == 0
    assert len(failures.events) == 2  # a real bug is logged, once per request


def test_a_failure_while_sending_an_error_still_ends_the_request(monkeypatch: pytest.MonkeyPatch) -> None:
    door = FrontDoor()

    def broken_to_xml(self: errors.S3Error, request_id: str = "", resource: str = "") -> bytes:
        raise RuntimeError("cannot serialize")

    monkeypatch.setattr(errors.NoSuchKey, "to_xml", broken_to_xml)
    with LogFailures():
        _, transport = door.send(signed_request("GET", "/photos/missing"))
    # The real answer could not be built: a plain 500 instead, and nothing held.
    assert status_of(transport) == 500
    assert b"<Code>InternalError</Code>" in transport.value()
    assert door.slots_in_use() == 0


def test_early_rejection_whose_document_fails_is_still_answered(monkeypatch: pytest.MonkeyPatch) -> None:
    door = FrontDoor("  max_concurrent_requests: 40\n  max_object_size: 10")

    def broken_to_xml(self: errors.S3Error, request_id: str = "", resource: str = "") -> bytes:
        raise RuntimeError("cannot serialize")

    monkeypatch.setattr(errors.EntityTooLarge, "to_xml", broken_to_xml)
    with LogFailures():
        _, transport = door.send(signed_request("PUT", "/photos/k", b"x" * 100))
    assert status_of(transport) == 500
    assert transport.disconnecting
    assert door.slots_in_use() == 0


def test_stored_metadata_with_a_stray_byte_stays_readable() -> None:
    door = FrontDoor()
    record = ObjectRecord(
        "photos", "old", "w0", 3, "abc", 1_700_000_000.0, content_type="text/\udce9",
        headers={"content-disposition": "a\udcffb"}, user_metadata={"k": "x\udcffy"},
    )
    door.objects.store(record, b"abc")
    _, transport = door.send(signed_request("GET", "/photos/old"))
    sent = transport.value()
    assert status_of(transport) == 200
    assert b"\r\nContent-Type: text/\xe9\r\n" in sent
    assert b"\r\nx-amz-meta-k: =?UTF-8?B?eP95?=\r\n" in sent
    assert sent.endswith(b"\r\n\r\nabc")
