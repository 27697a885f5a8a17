"""Authentication attacks against an in-process gateway (issue 11 items 2, 4, 10, 11 and the
presigned expiry of issue 12): each is refused with AWS's status and code, before any body is
read and without a backend call, and a normal signed request right after works.  Requests are
raw bytes on an in-memory connection, signed at the harness clock's time.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from xml.etree import ElementTree

import pytest
from botocore.exceptions import ClientError

from s3orch.s3 import sigv4
from s3orch.testing import GatewayHarness
from tests.conftest import PHOTOS
from tests.inproc.conftest import backend_keys, boto, make_backends
from tests.support.awschunked import streaming_put
from tests.support.configs import BackendSpec, GatewayConfig


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def field(self, name: str) -> str | None:
        return ElementTree.fromstring(self.body).findtext(name)

    @property
    def code(self) -> str | None:
        return self.field("Code")


def exchange(gw: GatewayHarness, head: bytes, body: bytes = b"", expect_continue: bool = False) -> tuple[Reply, bool]:
    """Send a request; with ``expect_continue`` the body goes only after ``100 Continue``.

    Returns the final reply and whether the gateway asked for the body.
    """
    if expect_continue:
        head = head.replace(b"\r\nConnection: close", b"\r\nExpect: 100-continue\r\nConnection: close")
    connection = gw.connect()
    try:
        connection.send(head + (b"" if expect_continue else body))
        asked = connection.received.startswith(b"HTTP/1.1 100 ")
        if asked:
            connection.send(body)
        answer = connection.response(head.split(b" ", 1)[0].decode())
    finally:
        connection.close()
    return Reply(answer.status, dict(answer.headers), answer.body), asked


def request_head(method: str, target: str, gw: GatewayHarness, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {gw.host}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join([*lines, "Connection: close", "", ""])).encode()


def signed_headers_for(gw: GatewayHarness, method: str, path: str, headers: dict[str, str] | None = None,
                       payload: str = sigv4.UNSIGNED_PAYLOAD, region: str = "us-east-1",
                       service: str = "s3") -> dict[str, str]:
    headers = dict(headers or {})
    headers.update(sigv4.sign_headers(method, f"http://{gw.host}{path}", headers, payload, PHOTOS.access_key,
                                      PHOTOS.secret_key, region, gw.clock.seconds(), service=service))
    return headers


def metric(gw: GatewayHarness, name: str) -> float:
    """Sum of every sample of one metric on the public /metrics page (the registry is the test
    process's: compare before and after)."""
    text = gw.send_raw(f"GET /metrics HTTP/1.1\r\nHost: {gw.host}\r\n\r\n".encode()).text
    return sum(float(m.group(1)) for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M))


@pytest.fixture
def gateway(start_harness: Callable[..., GatewayHarness]) -> tuple[GatewayHarness, BackendSpec]:
    backends = make_backends(1, quota=1 << 30)
    gw = start_harness(GatewayConfig(backends=backends, extra_server={"regions": ["us-east-1", "eu-west-3"]}))
    # The registry is the test process's: other tests may have left requests of theirs counted.
    _INFLIGHT_BEFORE[id(gw)] = metric(gw, "s3o_inflight_requests")
    return gw, backends[0]


def normal_round_trip_works(gw: GatewayHarness, key: str = "after") -> None:
    s3 = boto(gw)
    s3.put_object(Bucket="photos", Key=key, Body=b"fine", Metadata={"m": "1"})
    assert s3.get_object(Bucket="photos", Key=key)["Body"].read() == b"fine"


#: The in-flight gauge when each test's gateway started (see ``gateway``).
_INFLIGHT_BEFORE: dict[int, float] = {}


def assert_quiet(gw: GatewayHarness) -> None:
    # every refused request was finished and released: the gauge is back where it started
    assert metric(gw, "s3o_inflight_requests") == _INFLIGHT_BEFORE[id(gw)]
    assert gw.problems.events == [], gw.problems.describe()  # nothing failed behind an answer


# --------------------------------------------------------------------------
# Item 2: SignedHeaders amplification
# --------------------------------------------------------------------------


def test_signed_headers_amplification_is_refused_small(gateway: tuple[GatewayHarness, BackendSpec]) -> None:
    gw, backend = gateway
    amz_date = sigv4.format_amz_date(gw.clock.seconds())
    credential = f"{PHOTOS.access_key}/{amz_date[:8]}/us-east-1/s3/aws4_request"
    backend_calls = metric(gw, "s3o_backend_requests_total")
    for names, status, code in (
        (";".join(["host"] * 1600), 400, "AuthorizationHeaderMalformed"),
        ("host;host;x-amz-content-sha256;x-amz-date", 403, "SignatureDoesNotMatch"),
        ("x-amz-date;host;x-amz-content-sha256", 403, "SignatureDoesNotMatch"),
    ):
        headers = {
            "x-amz-date": amz_date,
            "x-amz-content-sha256": sigv4.UNSIGNED_PAYLOAD,
            "Authorization": f"AWS4-HMAC-SHA256 Credential={credential}, SignedHeaders={names}, Signature={'0' * 64}",
        }
        for _ in range(20):
            reply, _ = exchange(gw, request_head("GET", "/photos/k", gw, headers))
            assert (reply.status, reply.code) == (status, code)
            assert len(reply.body) < 1024  # no canonical request or string to sign echoed
            assert reply.field("CanonicalRequest") is None
    assert metric(gw, "s3o_backend_requests_total") == backend_calls
    normal_round_trip_works(gw)
    assert_quiet(gw)


# --------------------------------------------------------------------------
# Item 4: every x-amz-* header must be signed
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("x-amz-copy-source", "/photos/secret"),
        ("x-amz-meta-owner", "mallory"),
        ("x-amz-tagging", "a=b"),
        ("x-amz-acl", "public-read"),
        ("x-amz-decoded-content-length", "5"),
        ("x-amz-checksum-crc32", "AAAAAA=="),
    ],
)
def test_unsigned_amz_header_is_refused_before_the_body(
    gateway: tuple[GatewayHarness, BackendSpec], name: str, value: str
) -> None:
    gw, backend = gateway
    s3 = boto(gw)
    s3.put_object(Bucket="photos", Key="secret", Body=b"top secret")
    stored = backend_keys(gw, backend)
    backend_calls = metric(gw, "s3o_backend_requests_total")
    headers = signed_headers_for(gw, "PUT", "/photos/victim")
    headers[name] = value  # added in flight, after signing
    headers["Content-Length"] = "5"
    reply, asked = exchange(gw, request_head("PUT", "/photos/victim", gw, headers), b"hello",
                            expect_continue=True)
    headers.pop("Content-Length")
    assert not asked  # refused before 100 Continue
    assert (reply.status, reply.code) == (403, "AccessDenied")
    assert reply.field("Message") == "There were headers present in the request which were not signed"
    assert reply.field("HeadersNotSigned") == name
    assert metric(gw, "s3o_backend_requests_total") == backend_calls  # no backend call
    assert backend_keys(gw, backend) == stored
    with pytest.raises(ClientError) as missing:
        s3.head_object(Bucket="photos", Key="victim")
    assert missing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    normal_round_trip_works(gw)
    assert_quiet(gw)


def test_unsigned_content_encoding_does_not_switch_on_aws_chunked(gateway: tuple[GatewayHarness, BackendSpec]) -> None:
    """Only a signed Content-Encoding may change how the body is read: here the bytes are stored as sent."""
    gw, _ = gateway
    body = b"5\r\nhello\r\n0\r\n\r\n"
    headers = signed_headers_for(gw, "PUT", "/photos/raw", {"x-amz-decoded-content-length": "5"})
    headers["Content-Encoding"] = "aws-chunked"  # not signed
    headers["Content-Length"] = str(len(body))
    reply, _ = exchange(gw, request_head("PUT", "/photos/raw", gw, headers), body)
    assert reply.status == 200, reply.body
    s3 = boto(gw)
    assert s3.get_object(Bucket="photos", Key="raw")["Body"].read() == body
    # Signed, the same request is decoded.
    signed = signed_headers_for(gw, "PUT", "/photos/decoded",
                                {"x-amz-decoded-content-length": "5", "content-encoding": "aws-chunked"})
    signed["Content-Length"] = str(len(body))
    reply, _ = exchange(gw, request_head("PUT", "/photos/decoded", gw, signed), body)
    assert reply.status == 200, reply.body
    assert s3.get_object(Bucket="photos", Key="decoded")["Body"].read() == b"hello"


# --------------------------------------------------------------------------
# Item 10: credential scope
# --------------------------------------------------------------------------


def test_credential_scope_service_and_region_are_checked(gateway: tuple[GatewayHarness, BackendSpec]) -> None:
    gw, _ = gateway
    for region, service, message in (
        ("us-east-1", "iam", 'The authorization header is malformed; incorrect service "iam". '
                             'This endpoint belongs to "s3".'),
        ("us-east-1", "sts", 'The authorization header is malformed; incorrect service "sts". '
                             'This endpoint belongs to "s3".'),
        ("mars-1", "s3", "The authorization header is malformed; the region 'mars-1' is wrong; "
                         "expecting 'us-east-1'"),
    ):
        headers = signed_headers_for(gw, "GET", "/photos?list-type=2", region=region, service=service)
        reply, _ = exchange(gw, request_head("GET", "/photos?list-type=2", gw, headers))
        assert (reply.status, reply.code) == (400, "AuthorizationHeaderMalformed"), reply.body
        assert reply.field("Message") == message
        if region == "mars-1":
            assert reply.field("Region") == "us-east-1"
    # A presigned URL for the wrong region, and one for a configured region.
    now = gw.clock.seconds()
    bad = sigv4.presign_url("GET", f"http://{gw.host}/photos/after", PHOTOS.access_key, PHOTOS.secret_key,
                            "mars-1", now, 300)
    reply, _ = exchange(gw, request_head("GET", bad[len(f"http://{gw.host}"):], gw, {}))
    assert (reply.status, reply.code) == (400, "AuthorizationQueryParametersError")
    normal_round_trip_works(gw)
    good = sigv4.presign_url("GET", f"http://{gw.host}/photos/after", PHOTOS.access_key, PHOTOS.secret_key,
                             "eu-west-3", now, 300)
    reply, _ = exchange(gw, request_head("GET", good[len(f"http://{gw.host}"):], gw, {}))
    assert (reply.status, reply.body) == (200, b"fine")
    assert_quiet(gw)


# --------------------------------------------------------------------------
# Issue 12: presigned expiry; item 11: aws-chunked 8 KiB minimum
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("signed_ago", "expires", "status", "code"),
    [(3600, 60, 403, "AccessDenied"), (0, 0, 403, "AccessDenied"),
     (0, 604801, 400, "AuthorizationQueryParametersError")],
)
def test_expired_presigned_put_is_refused_before_the_body(
    gateway: tuple[GatewayHarness, BackendSpec], signed_ago: int, expires: int, status: int, code: str
) -> None:
    gw, _ = gateway
    url = sigv4.presign_url("PUT", f"http://{gw.host}/photos/late", PHOTOS.access_key, PHOTOS.secret_key,
                            "us-east-1", gw.clock.seconds() - signed_ago, expires)
    head = request_head("PUT", url[len(f"http://{gw.host}"):], gw, {"Content-Length": str(5 << 20)})
    reply, asked = exchange(gw, head, b"x" * (5 << 20), expect_continue=True)
    assert not asked
    assert (reply.status, reply.code) == (status, code)
    if code == "AccessDenied":
        assert reply.field("Message") == "Request has expired"
    fresh = sigv4.presign_url("PUT", f"http://{gw.host}/photos/late", PHOTOS.access_key, PHOTOS.secret_key,
                              "us-east-1", gw.clock.seconds(), 60)
    reply, asked = exchange(gw, request_head("PUT", fresh[len(f"http://{gw.host}"):], gw,
                                                  {"Content-Length": "5"}), b"fresh", expect_continue=True)
    assert asked and reply.status == 200


def test_aws_chunked_chunk_under_8_kib_is_refused(gateway: tuple[GatewayHarness, BackendSpec]) -> None:
    gw, backend = gateway
    stored = backend_keys(gw, backend)
    for variant in (sigv4.STREAMING_PAYLOAD, sigv4.STREAMING_UNSIGNED_TRAILER):
        req = streaming_put(f"http://{gw.host}/photos/small-chunks", b"z" * 3000, access_key=PHOTOS.access_key,
                            secret_key=PHOTOS.secret_key, now=gw.clock.seconds(), variant=variant, chunk_size=1000)
        reply, _ = exchange(gw, request_head("PUT", "/photos/small-chunks", gw, req.headers), req.body)
        assert (reply.status, reply.code) == (400, "InvalidChunkSizeError"), reply.body
        assert (reply.field("Chunk"), reply.field("BadChunkSize")) == ("2", "1000")
    assert backend_keys(gw, backend) == stored
    normal_round_trip_works(gw)
