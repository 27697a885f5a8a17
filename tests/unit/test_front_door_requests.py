"""Front-door request handling over in-memory parts (issue 11 items 6, 8, 11; issue 12 item 2).

* GET validates everything and sets every header before it opens the backend
  stream, and cancels the stream on any failure before the relay owns it;
* malformed numbers (Unicode digits, huge values) are 4xx, never a traceback;
* bodies sent to operations that take none are counted and dropped, not spooled;
* 304/412 carry ETag and Last-Modified; error answers carry none of the object's headers;
* ``Content-Encoding: aws-chunked`` without declared framing is a plain body.
"""

from __future__ import annotations

from email.utils import formatdate
from typing import Any

import pytest

import s3orch.frontend.handlers.object as object_handlers
from s3orch.auth import sigv2
from s3orch.backend.memory import MemoryStream
from s3orch.http.body import DiscardedBody
from s3orch.s3 import errors
from s3orch.s3.copy_source import parse_copy_source
from s3orch.store.interface import ListPage, Location, ObjectRecord
from s3orch.store.records import ListEntry
from tests.unit.frontdoor_fakes import SECRETS, START, FrontDoor, LogFailures, signed_request, status_of

ETAG = "0123456789abcdef0123456789abcdef"


def _door_with(key: str = "k", data: bytes = b"0123456789", **record: Any) -> FrontDoor:
    door = FrontDoor()
    door.objects.store(
        ObjectRecord("photos", key, "w", len(data), ETAG, 1_700_000_000.0, **record), data
    )
    return door


def _head_block(transport: Any) -> bytes:
    """The status line and headers, each line ending in CRLF."""
    return transport.value().split(b"\r\n\r\n", 1)[0] + b"\r\n"


# -- item 6: GET never leaks the backend stream ------------------------------------------


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_undecodable_response_override_is_400_before_any_backend_call(method: str) -> None:
    door = _door_with()
    door.objects.head = None  # type: ignore[assignment,method-assign]  # must not be reached
    _, transport = door.send(signed_request(method, "/photos/k?response-content-type=%FF"))
    assert status_of(transport) == 400
    if method == "GET":
        assert b"<Code>InvalidArgument</Code>" in transport.value()
        assert b"<Message>Header value cannot be represented using ISO-8859-1.</Message>" in transport.value()
        assert b"<ArgumentName>response-content-type</ArgumentName>" in transport.value()
    assert door.objects.streams == []
    assert door.slots_in_use() == 0


def test_response_overrides_are_sent_as_latin1() -> None:
    door = _door_with()
    _, transport = door.send(signed_request(
        "GET", "/photos/k?response-content-disposition=attachment%3B%20filename%3Dcaf%C3%A9.txt"
    ))
    assert status_of(transport) == 200
    assert b"\r\nContent-Disposition: attachment; filename=caf\xe9.txt\r\n" in _head_block(transport)


def test_a_backend_answering_another_range_is_cancelled_not_leaked(monkeypatch: pytest.MonkeyPatch) -> None:
    door = _door_with(data=b"0123456789")
    opened: list[MemoryStream] = []

    async def wrong_range(record: ObjectRecord, byte_range: tuple[int, int] | None) -> tuple[MemoryStream, Location]:
        stream = MemoryStream(b"56789", content_range=(5, 9, 10))
        opened.append(stream)
        return stream, Location("memory", record.key, record.size)

    door.objects.open = wrong_range  # type: ignore[method-assign]
    _, transport = door.send(signed_request("GET", "/photos/k", headers={"Range": "bytes=0-3"}))
    assert status_of(transport) == 503
    assert opened and opened[0].cancelled
    head = _head_block(transport)
    # The error carries none of the object's headers set before the stream was opened.
    for name in (b"Content-Range", b"ETag", b"Last-Modified", b"x-amz-meta", b"Accept-Ranges"):
        assert name.lower() not in head.lower()
    assert door.slots_in_use() == 0


def test_a_failure_handing_the_stream_to_the_relay_cancels_it(monkeypatch: pytest.MonkeyPatch) -> None:
    door = _door_with()

    def broken_relay(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("relay bug")

    monkeypatch.setattr(object_handlers, "relay_body", broken_relay)
    with LogFailures() as failures:
        _, transport = door.send(signed_request("GET", "/photos/k"))
    assert status_of(transport) == 500
    assert door.objects.streams[0].cancelled
    assert len(failures.events) == 1
    assert door.slots_in_use() == 0


def test_get_sets_every_header_before_opening_the_stream() -> None:
    door = _door_with(user_metadata={"colour": "blue"}, headers={"cache-control": "no-cache"})
    real_open = door.objects.open
    protocol, transport = door.connect()
    at_open: dict[str, list[bytes]] = {}

    async def watching_open(record: ObjectRecord, byte_range: tuple[int, int] | None) -> Any:
        request = protocol.requests[-1]
        at_open.update({k.decode().lower(): v for k, v in request.responseHeaders.getAllRawHeaders()})
        at_open["status"] = [str(request.code).encode()]
        return await real_open(record, byte_range)

    door.objects.open = watching_open  # type: ignore[method-assign]
    protocol.dataReceived(signed_request("GET", "/photos/k", headers={"Range": "bytes=2-4"}))
    assert at_open["status"] == [b"206"]
    assert at_open["content-range"] == [b"bytes 2-4/10"]
    assert at_open["content-length"] == [b"3"]
    assert at_open["x-amz-meta-colour"] == [b"blue"]
    assert at_open["cache-control"] == [b"no-cache"]
    assert at_open["etag"] == [b'"' + ETAG.encode() + b'"']
    assert transport.value().startswith(b"HTTP/1.1 206 ")
    assert transport.value().endswith(b"\r\n\r\n234")


# -- issue 12: conditional answers carry ETag and Last-Modified ------------------------


@pytest.mark.parametrize(
    ("method", "header", "status"),
    [
        ("GET", {"If-None-Match": f'"{ETAG}"'}, 304),
        ("HEAD", {"If-None-Match": f'"{ETAG}"'}, 304),
        ("GET", {"If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"}, None),
        ("GET", {"If-Match": '"other"'}, 412),
        ("HEAD", {"If-Unmodified-Since": "Thu, 01 Jan 2015 00:00:00 GMT"}, 412),
    ],
)
def test_304_and_412_carry_etag_and_last_modified(method: str, header: dict[str, str], status: int | None) -> None:
    door = _door_with(user_metadata={"colour": "blue"})
    _, transport = door.send(signed_request(method, "/photos/k", headers=header))
    if status is None:  # an If-Modified-Since in the future is ignored
        assert status_of(transport) == 200
        return
    assert status_of(transport) == status
    head = _head_block(transport)
    assert b'\r\nETag: "' + ETAG.encode() + b'"\r\n' in head
    assert b"\r\nLast-Modified: Tue, 14 Nov 2023 22:13:20 GMT\r\n" in head
    assert b"x-amz-meta-colour" not in head
    if status == 412 and method == "GET":
        assert b"<Code>PreconditionFailed</Code>" in transport.value()


# -- item 8: malformed numbers ----------------------------------------------------------


@pytest.mark.parametrize("value", ["\u00b2", "1" * 30, "-1", "+5", "0x10", "\u0663", "5_0"])
def test_malformed_decoded_content_length_is_400(value: str) -> None:
    door = FrontDoor()
    with LogFailures() as failures:
        _, transport = door.send(signed_request("PUT", "/photos/k", b"x" * 5, headers={
            "x-amz-decoded-content-length": value, "Content-Encoding": "aws-chunked",
        }))
    assert status_of(transport) == 400
    assert b"<Code>InvalidArgument</Code>" in transport.value()
    assert failures.events == [] and door.slots_in_use() == 0


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("max-keys=%C2%B2", "InvalidArgument"),
        ("max-keys=99999999999", "InvalidArgument"),
        ("max-keys=" + "9" * 5000, "InvalidArgument"),
        ("max-keys=-1", "InvalidArgument"),
        ("max-keys=%2B5", "InvalidArgument"),
        ("max-keys=abc", "InvalidArgument"),
    ],
)
def test_malformed_max_keys_is_400(query: str, code: str) -> None:
    door = FrontDoor()
    _, transport = door.send(signed_request("GET", "/photos?list-type=2&" + query))
    assert status_of(transport) == 400
    assert f"<Code>{code}</Code>".encode() in transport.value()


@pytest.mark.parametrize("listing", ["list-type=2&", ""])
def test_max_keys_zero_is_an_empty_untruncated_listing(listing: str) -> None:
    door = FrontDoor()
    door.objects.list = None  # type: ignore[assignment,method-assign]  # max-keys=0 reads nothing
    _, transport = door.send(signed_request("GET", f"/photos?{listing}max-keys=0"))
    assert status_of(transport) == 200
    body = transport.value()
    assert b"<MaxKeys>0</MaxKeys>" in body
    assert b"<IsTruncated>false</IsTruncated>" in body
    assert b"<Contents>" not in body


_OWNER_XML = b"<Owner><ID>s3orch</ID><DisplayName>s3orch</DisplayName></Owner>"


@pytest.mark.parametrize(
    ("query", "with_owner"),
    [("", True), ("list-type=2", False), ("list-type=2&fetch-owner=false", False),
     ("list-type=2&fetch-owner=true", True)],
)
def test_listing_names_the_owner_of_each_key_in_v1_and_with_fetch_owner_in_v2(
    query: str, with_owner: bool
) -> None:
    """AWS: ListObjects (v1) carries Owner in every Contents; ListObjectsV2 only with fetch-owner=true."""
    door = FrontDoor()

    async def two_keys(bucket: str, prefix: str, delimiter: str, start: str, max_keys: int) -> ListPage:
        return ListPage((ListEntry("a", 1, ETAG, 1_700_000_000.0), ListEntry("b", 2, ETAG, 1_700_000_000.0)),
                        (), False, None)

    door.objects.list = two_keys  # type: ignore[method-assign]
    _, transport = door.send(signed_request("GET", "/photos" + ("?" + query if query else "")))
    assert status_of(transport) == 200
    body = transport.value()
    assert body.count(b"<Contents>") == 2
    assert body.count(_OWNER_XML) == (2 if with_owner else 0)
    if with_owner:
        assert b"<Size>1</Size>" + _OWNER_XML + b"<StorageClass>STANDARD</StorageClass>" in body


@pytest.mark.parametrize("value", ["bytes=\u00b2-3", "bytes=1-\u00b2", "bytes=\u0661-2"])
def test_unicode_digits_in_range_are_ignored_like_any_invalid_range(value: str) -> None:
    door = _door_with()
    _, transport = door.send(signed_request("GET", "/photos/k", headers={"Range": value}))
    assert status_of(transport) == 200
    assert transport.value().endswith(b"0123456789")


# -- item 11: bodies of operations that take none ----------------------------------------


def test_a_body_sent_to_get_is_counted_and_dropped_not_spooled() -> None:
    door = _door_with()
    protocol, transport = door.connect()
    raw = signed_request("GET", "/photos/k", b"")
    raw = raw.replace(b"Content-Length: 0", b"Content-Length: 100000")
    protocol.dataReceived(raw)
    request = protocol.requests[-1]
    assert isinstance(request.s3.body, DiscardedBody)
    protocol.dataReceived(b"y" * 100000)
    assert request.s3.body.received == 100000
    assert status_of(transport) == 200
    assert transport.value().endswith(b"0123456789")


def test_an_oversized_ignored_body_is_refused_before_it_is_read() -> None:
    door = _door_with()
    raw = signed_request("DELETE", "/photos/k").replace(b"Content-Length: 0", b"Content-Length: 5000000000")
    _, transport = door.send(raw)
    assert status_of(transport) == 400
    assert b"<Code>MaxMessageLengthExceeded</Code>" in transport.value()
    assert transport.disconnecting and door.slots_in_use() == 0


def test_an_ignored_chunked_body_is_refused_once_over_the_cap() -> None:
    door = _door_with()
    protocol, transport = door.connect()
    raw = signed_request("GET", "/photos/k", content_length=False)
    protocol.dataReceived(raw.replace(b"\r\n\r\n", b"\r\nTransfer-Encoding: chunked\r\n\r\n", 1))
    chunk = b"x" * 65536
    for _ in range(70):  # 4.4 MiB
        if transport.disconnecting:
            break
        protocol.dataReceived(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
    assert status_of(transport) == 400
    assert b"<Code>MaxMessageLengthExceeded</Code>" in transport.value()
    assert door.slots_in_use() == 0


# -- issue 12: aws-chunked without declared framing ---------------------------------


def test_aws_chunked_encoding_without_declared_framing_is_a_plain_body() -> None:
    door = FrontDoor()
    body = b"5\r\nhello\r\n0\r\n\r\n"  # looks framed, but nothing signed says so
    _, transport = door.send(signed_request("PUT", "/photos/k", body, headers={
        "Content-Encoding": "aws-chunked,gzip",
    }))
    assert status_of(transport) == 200
    record, stored = door.objects.data[("photos", "k")]
    assert stored == body
    assert record.headers == {"content-encoding": "gzip"}


def test_declared_decoded_length_still_decodes_aws_chunked() -> None:
    door = FrontDoor()
    body = b"5\r\nhello\r\n0\r\n\r\n"
    _, transport = door.send(signed_request("PUT", "/photos/k", body, headers={
        "Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": "5",
    }))
    assert status_of(transport) == 200
    assert door.objects.data[("photos", "k")][1] == b"hello"


# -- issue 12: keys that are not UTF-8 --------------------------------------------


@pytest.mark.parametrize("path", [b"/photos/%FF", b"/photos/a%C3", b"/photos/%C3%28"])
def test_a_key_that_is_not_utf8_is_400_invalid_uri(path: bytes) -> None:
    door = FrontDoor()
    _, transport = door.send(b"GET " + path + b" HTTP/1.1\r\nHost: gw.test\r\n\r\n")
    assert status_of(transport) == 400
    assert b"<Code>InvalidURI</Code>" in transport.value()


def test_a_raw_non_ascii_request_target_is_a_400() -> None:
    door = FrontDoor()
    _, transport = door.send(b"GET /photos/\xff HTTP/1.1\r\nHost: gw.test\r\n\r\n")
    assert status_of(transport) == 400  # Twisted refuses the request line itself
    assert door.slots_in_use() == 0


def test_a_copy_source_that_is_not_utf8_is_400() -> None:
    door = _door_with()
    _, transport = door.send(signed_request("PUT", "/photos/dst", headers={"x-amz-copy-source": "/photos/%FF"}))
    assert status_of(transport) == 400
    assert b"<Code>InvalidArgument</Code>" in transport.value()
    with pytest.raises(errors.InvalidArgument):
        parse_copy_source("photos/a%C3%28")
    assert parse_copy_source("/photos/caf%C3%A9%20x?versionId=1") == ("photos", "caf\u00e9 x")


# -- signatures are checked at the injected clock's time (issue 13) -------------------------


def test_sigv4_is_verified_at_the_injected_clock_not_the_wall_clock() -> None:
    door = _door_with()  # its clock reads START, months away from the wall clock
    _, transport = door.send(signed_request("HEAD", "/photos/k", now=START))
    assert status_of(transport) == 200
    door.clock.advance(16 * 60)  # past the 15 minutes of skew AWS allows
    _, transport = door.send(signed_request("GET", "/photos/k", now=START))
    assert status_of(transport) == 403
    assert b"<Code>RequestTimeTooSkewed</Code>" in transport.value()
    _, transport = door.send(signed_request("HEAD", "/photos/k", now=door.clock.seconds()))
    assert status_of(transport) == 200


def _sigv2_request(signed_at: float) -> bytes:
    date = formatdate(signed_at, usegmt=True)
    text = sigv2.string_to_sign("HEAD", "", "", date, "", "/photos/k")
    signature = sigv2.sign(SECRETS["photoskey"], text)
    return (
        f"HEAD /photos/k HTTP/1.1\r\nHost: gw.test\r\nDate: {date}\r\n"
        f"Authorization: AWS photoskey:{signature}\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def test_sigv2_is_verified_at_the_injected_clock_not_the_wall_clock() -> None:
    door = _door_with()
    _, transport = door.send(_sigv2_request(START))
    assert status_of(transport) == 200
    door.clock.advance(16 * 60)
    _, transport = door.send(_sigv2_request(START))
    assert status_of(transport) == 403  # RequestTimeTooSkewed (a HEAD answer has no body)
