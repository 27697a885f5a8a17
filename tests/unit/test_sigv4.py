"""SigV4: AWS test-suite vectors, the S3 documentation examples, botocore round trips."""

from __future__ import annotations

import calendar
import datetime
import hashlib
import json
import pathlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import boto3
import botocore.auth
import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest, AWSResponse
from botocore.config import Config
from botocore.credentials import Credentials
from hypothesis import given
from hypothesis import strategies as st

from s3orch.s3 import sigv4
from s3orch.s3.errors import (
    AccessDenied,
    AuthorizationHeaderMalformed,
    AuthorizationQueryParametersError,
    InvalidAccessKeyId,
    InvalidArgument,
    InvalidRequest,
    RequestTimeTooSkewed,
    SignatureDoesNotMatch,
)
from s3orch.s3.sigv4 import (
    EMPTY_SHA256,
    UNSIGNED_PAYLOAD,
    SignedRequest,
    authenticate,
    canonical_headers,
    canonical_query,
    canonical_request,
    canonical_uri_from_raw_path,
    derive_signing_key,
    hmac_hex,
    parse_authorization_header,
    parse_query,
    presign_url,
    sign_headers,
    string_to_sign,
    uri_encode,
)

VECTORS = pathlib.Path(__file__).parent / "vectors"
SUITE = VECTORS / "aws-signing-test-suite"
SUITE_CONTEXT = json.loads((SUITE / "context.json").read_text())
SUITE_SECRET = SUITE_CONTEXT["credentials"]["secret_access_key"]
SUITE_NOW = float(calendar.timegm((2015, 8, 30, 12, 36, 0, 0, 0, 0)))
S3_DOCS = json.loads((VECTORS / "s3-docs-examples.json").read_text())

AK = "AKIDTEST"
SK = "secret/key+ABC"


def lookup(access_key: str) -> str | None:
    return {
        AK: SK,
        "AKIAIOSFODNN7EXAMPLE": S3_DOCS["secret_key"],
        "AKIDEXAMPLE": SUITE_SECRET,
    }.get(access_key)


def epoch(amz_date: str) -> float:
    return float(calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ")))


# --------------------------------------------------------------------------
# The AWS SigV4 test suite (awslabs/aws-c-auth tests/aws-signing-test-suite/v4)
# --------------------------------------------------------------------------


@dataclass
class RawRequest:
    method: str
    path: bytes
    query: bytes
    headers: dict[str, list[str]] = field(default_factory=dict)
    body: bytes = b""

    def signed_request(self) -> SignedRequest:
        return SignedRequest(
            self.method, self.path, parse_query(self.query), self.headers
        )


def parse_suite_request(text: str) -> RawRequest:
    """Parse the suite's ``.txt`` requests the way its own harness does.

    Continuation lines (obs-fold) become further values of the header, which
    is what the ``get-header-value-multiline`` vector expects.
    """
    head, _, body = text.partition("\n\n")
    lines = head.split("\n")
    method, _, rest = lines[0].partition(" ")
    target = rest.rsplit(" ", 1)[0]
    path, _, query = target.partition("?")
    request = RawRequest(method, path.encode(), query.encode(), body=body.encode())
    last = ""
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            request.headers[last].append(line.strip())
            continue
        name, _, value = line.partition(":")
        last = name.lower()
        request.headers.setdefault(last, []).append(value)
    return request


def suite_cases(kind: str) -> list[pathlib.Path]:
    return sorted(path for path in SUITE.glob(f"*/{kind}-signed-request.txt"))


@pytest.mark.parametrize("path", suite_cases("header"), ids=lambda p: p.parent.name)
def test_suite_header_vector_building_blocks(path: pathlib.Path) -> None:
    request = parse_suite_request(path.read_text(encoding="utf-8"))
    auth = parse_authorization_header(request.headers.pop("authorization")[0])
    creq = canonical_request(
        request.method,
        canonical_uri_from_raw_path(request.path),
        canonical_query(parse_query(request.query)),
        request.headers,
        auth.signed_headers,
        hashlib.sha256(request.body).hexdigest(),
    )
    key = derive_signing_key(SUITE_SECRET, auth.date, auth.region, auth.service)
    assert (
        hmac_hex(key, string_to_sign("20150830T123600Z", auth.scope, creq))
        == auth.signature
    )


@pytest.mark.parametrize("path", suite_cases("header"), ids=lambda p: p.parent.name)
def test_suite_header_vector_authenticates(path: pathlib.Path) -> None:
    request = parse_suite_request(path.read_text(encoding="utf-8"))
    # The suite signs the body hash without sending it; S3 requires the claim
    # as a header.  Unsigned here, so the vector's signature is unchanged.
    request.headers.setdefault(
        "x-amz-content-sha256", [hashlib.sha256(request.body).hexdigest()]
    )
    # The suite signs for a service named "service"; S3 answers only for "s3".
    result = authenticate(
        request.signed_request(), lookup, SUITE_NOW, service="service"
    )
    assert result.access_key == "AKIDEXAMPLE"
    assert result.scope == "20150830/us-east-1/service/aws4_request"
    assert (
        result.seed_signature
        == parse_authorization_header(request.headers["authorization"][0]).signature
    )
    assert not result.presigned


@pytest.mark.parametrize("path", suite_cases("query"), ids=lambda p: p.parent.name)
def test_suite_query_vector_building_blocks(path: pathlib.Path) -> None:
    # The suite's presigned vectors sign sha256("") (generic SigV4); S3 presigned
    # requests sign UNSIGNED-PAYLOAD, so only the building blocks apply here.
    request = parse_suite_request(path.read_text(encoding="utf-8"))
    pairs = parse_query(request.query)
    params = dict(pairs)
    creq = canonical_request(
        request.method,
        canonical_uri_from_raw_path(request.path),
        canonical_query(pairs, exclude="X-Amz-Signature"),
        request.headers,
        params["X-Amz-SignedHeaders"].split(";"),
        EMPTY_SHA256,
    )
    key = derive_signing_key(SUITE_SECRET, "20150830", "us-east-1", "service")
    sts = string_to_sign(
        params["X-Amz-Date"], "20150830/us-east-1/service/aws4_request", creq
    )
    assert hmac_hex(key, sts) == params["X-Amz-Signature"]


def test_suite_vectors_are_present() -> None:
    assert len(suite_cases("header")) >= 25
    assert len(suite_cases("query")) >= 3


# --------------------------------------------------------------------------
# The S3 documentation examples (examplebucket, 20130524T000000Z)
# --------------------------------------------------------------------------


def docs_request(example: dict[str, Any]) -> SignedRequest:
    headers = {name.lower(): [value] for name, value in example["headers"].items()}
    path, _, query = example["target"].partition("?")
    return SignedRequest(
        example["method"], path.encode(), parse_query(query.encode()), headers
    )


@pytest.mark.parametrize("name", sorted(S3_DOCS["header_examples"]))
def test_s3_docs_header_example_authenticates(name: str) -> None:
    example = S3_DOCS["header_examples"][name]
    result = authenticate(docs_request(example), lookup, epoch("20130524T000000Z"))
    assert result.seed_signature == example["signature"]
    assert result.payload_hash == example["headers"]["x-amz-content-sha256"]


def test_s3_docs_get_object_canonical_request_and_string_to_sign() -> None:
    example = S3_DOCS["header_examples"]["get-object"]
    request = docs_request(example)
    auth = parse_authorization_header(request.headers["authorization"][0])
    creq = canonical_request(
        "GET",
        canonical_uri_from_raw_path(request.raw_path),
        canonical_query(request.query),
        request.headers,
        auth.signed_headers,
        EMPTY_SHA256,
    )
    assert creq == example["canonical_request"]
    assert (
        string_to_sign("20130524T000000Z", auth.scope, creq)
        == example["string_to_sign"]
    )


def test_s3_docs_put_object_encodes_dollar_in_path() -> None:
    assert canonical_uri_from_raw_path(b"/test$file.text") == "/test%24file.text"


def test_s3_docs_presigned_example_authenticates() -> None:
    example = S3_DOCS["presigned_example"]
    request = docs_request(example)
    result = authenticate(request, lookup, epoch("20130524T000000Z") + 3600)
    assert result.presigned
    assert result.payload_hash == UNSIGNED_PAYLOAD
    assert result.seed_signature == example["signature"]
    assert result.expires_at == epoch("20130524T000000Z") + 86400


def test_s3_docs_presigned_example_reproduced_by_presign_url() -> None:
    example = S3_DOCS["presigned_example"]
    url = presign_url(
        "GET",
        "https://examplebucket.s3.amazonaws.com/test.txt",
        "AKIAIOSFODNN7EXAMPLE",
        S3_DOCS["secret_key"],
        "us-east-1",
        epoch("20130524T000000Z"),
        86400,
    )
    assert (
        dict(parse_query(urlsplit(url).query.encode()))["X-Amz-Signature"]
        == example["signature"]
    )


# --------------------------------------------------------------------------
# Requests signed by botocore (captured before they would be sent)
# --------------------------------------------------------------------------


class _Raw:
    def stream(self, **_: Any) -> Iterator[bytes]:
        yield b""


@dataclass
class Captured:
    requests: list[SignedRequest] = field(default_factory=list)


def to_signed_request(method: str, url: str, headers: Any) -> SignedRequest:
    parts = urlsplit(url)
    lowered: dict[str, list[str]] = {}
    for name, value in headers.items():
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        lowered.setdefault(name.lower(), []).append(text)
    # botocore's own signer leaves Host to http.client; the CRT signer (used when
    # awscrt is installed) sets it on the request: send it exactly once either way.
    lowered.setdefault("host", [parts.netloc])
    return SignedRequest(
        method, parts.path.encode(), parse_query(parts.query.encode()), lowered
    )


@pytest.fixture
def s3client() -> tuple[Any, Captured]:
    captured = Captured()

    def before_send(request: Any, **_: Any) -> AWSResponse:
        captured.requests.append(
            to_signed_request(request.method, request.url, request.headers)
        )
        return AWSResponse(request.url, 200, {}, _Raw())

    client = boto3.session.Session().client(
        "s3",
        endpoint_url="http://s3.example.test",
        region_name="us-east-1",
        aws_access_key_id=AK,
        aws_secret_access_key=SK,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    client.meta.events.register("before-send.s3.*", before_send)
    return client, captured


def request_time(request: SignedRequest) -> float:
    return epoch(request.headers["x-amz-date"][0])


KEYS = [
    "plain.txt",
    "with space",
    "a+b",
    "100%",
    "a=b&c=d",
    "til~de",
    "ünïcødé/日本語",
    "double//slash",
    "trailing/",
    "!'()*$@:,;",
    "./dot/../dots",
    "k" * 1024,
]


@pytest.mark.parametrize("key", KEYS)
def test_botocore_put_and_get_verify(s3client: tuple[Any, Captured], key: str) -> None:
    client, captured = s3client
    client.put_object(Bucket="bkt", Key=key, Body=b"hello")
    client.get_object(Bucket="bkt", Key=key)
    assert len(captured.requests) == 2
    put, get = captured.requests
    put_result = authenticate(put, lookup, request_time(put))
    assert put_result.access_key == AK
    assert put_result.payload_hash == hashlib.sha256(b"hello").hexdigest()
    assert authenticate(get, lookup, request_time(get)).payload_hash == EMPTY_SHA256
    # The key survives the encode/decode round trip.
    assert unquote(put.raw_path.decode()) == f"/bkt/{key}"


def test_botocore_query_strings_verify(s3client: tuple[Any, Captured]) -> None:
    client, captured = s3client
    client.list_objects_v2(Bucket="bkt", Prefix="a b+c/=&ü~", StartAfter="x y")
    client.create_multipart_upload(Bucket="bkt", Key="mp")
    client.upload_part(
        Bucket="bkt", Key="mp", PartNumber=3, UploadId="up/id+=", Body=b"x"
    )
    client.list_buckets()
    assert len(captured.requests) == 4
    for request in captured.requests:
        assert authenticate(request, lookup, request_time(request)).access_key == AK
    assert ("uploads", "") in captured.requests[1].query
    assert ("uploadId", "up/id+=") in captured.requests[2].query
    assert ("prefix", "a b+c/=&ü~") in captured.requests[0].query


def test_botocore_tampered_signature_is_rejected(
    s3client: tuple[Any, Captured],
) -> None:
    client, captured = s3client
    client.get_object(Bucket="bkt", Key="k")
    request = captured.requests[0]
    value = request.headers["authorization"][0]
    tampered = value[:-1] + ("0" if value[-1] != "0" else "1")
    headers = {**request.headers, "authorization": [tampered]}
    with pytest.raises(SignatureDoesNotMatch) as caught:
        authenticate(
            SignedRequest(request.method, request.raw_path, request.query, headers),
            lookup,
            request_time(request),
        )
    assert caught.value.fields["AWSAccessKeyId"] == AK
    assert "GET\n/bkt/k\n" in caught.value.fields["CanonicalRequest"]


def test_botocore_tampered_path_is_rejected(s3client: tuple[Any, Captured]) -> None:
    client, captured = s3client
    client.get_object(Bucket="bkt", Key="k")
    request = captured.requests[0]
    moved = SignedRequest(request.method, b"/other/k", request.query, request.headers)
    with pytest.raises(SignatureDoesNotMatch):
        authenticate(moved, lookup, request_time(request))


def test_wrong_secret_is_signature_mismatch(s3client: tuple[Any, Captured]) -> None:
    client, captured = s3client
    client.get_object(Bucket="bkt", Key="k")
    request = captured.requests[0]
    with pytest.raises(SignatureDoesNotMatch):
        authenticate(request, lambda _: "not-the-secret", request_time(request))


def test_unknown_key_is_invalid_access_key_id(s3client: tuple[Any, Captured]) -> None:
    client, captured = s3client
    client.get_object(Bucket="bkt", Key="k")
    request = captured.requests[0]
    with pytest.raises(InvalidAccessKeyId):
        authenticate(request, lambda _: None, request_time(request))


def test_unknown_keys_are_not_cached_per_key(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = sigv4._SigningKeyCache(maxsize=1024)
    monkeypatch.setattr(sigv4.canonical, "_KEY_CACHE", cache)
    amz_date = "20240101T000000Z"
    for n in range(50):
        credential = f"AKUNKNOWN{n}/20240101/us-east-1/s3/aws4_request"
        headers = {
            "host": ["h"],
            "x-amz-date": [amz_date],
            "x-amz-content-sha256": [EMPTY_SHA256],
            "authorization": [
                f"AWS4-HMAC-SHA256 Credential={credential}, SignedHeaders=host;x-amz-date, Signature={'0' * 64}"
            ],
        }
        with pytest.raises(InvalidAccessKeyId):
            authenticate(
                SignedRequest("GET", b"/", [], headers), lambda _: None, epoch(amz_date)
            )
    # Unknown keys (and the dummy secret standing in for them) never reach the cache.
    assert len(cache) == 0


def test_signing_key_cache_is_bounded() -> None:
    cache = sigv4._SigningKeyCache(maxsize=3)
    keys = [cache.get(f"secret{n}", "20240101", "us-east-1", "s3") for n in range(5)]
    assert len(cache) == 3
    assert keys[4] == sigv4._derive_uncached("secret4", "20240101", "us-east-1", "s3")
    # A hit returns the same key as a fresh derivation.
    assert cache.get("secret4", "20240101", "us-east-1", "s3") == keys[4]


@pytest.mark.parametrize(
    ("offset", "ok"), [(-16 * 60, False), (16 * 60, False), (14 * 60, True)]
)
def test_clock_skew(s3client: tuple[Any, Captured], offset: float, ok: bool) -> None:
    client, captured = s3client
    client.get_object(Bucket="bkt", Key="k")
    request = captured.requests[0]
    now = request_time(request) + offset
    if ok:
        assert authenticate(request, lookup, now).access_key == AK
    else:
        with pytest.raises(RequestTimeTooSkewed):
            authenticate(request, lookup, now)


def test_botocore_date_header_instead_of_x_amz_date(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fixed = datetime.datetime(2024, 3, 1, 12, 0, 0)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: fixed)
    request = AWSRequest(
        method="GET",
        url="http://s3.example.test/bkt/k",
        headers={"Date": "placeholder"},
    )
    S3SigV4Auth(Credentials(AK, SK), "s3", "us-east-1").add_auth(request)
    assert "X-Amz-Date" not in request.headers
    signed = to_signed_request("GET", request.url, request.headers)
    assert authenticate(
        signed, lookup, calendar.timegm(fixed.timetuple())
    ).amz_date == ("20240301T120000Z")


# --------------------------------------------------------------------------
# Presigned URLs
# --------------------------------------------------------------------------


def presigned_request(url: str, method: str = "GET") -> SignedRequest:
    parts = urlsplit(url)
    return SignedRequest(
        method,
        parts.path.encode(),
        parse_query(parts.query.encode()),
        {"host": [parts.netloc]},
    )


def test_botocore_presigned_url_verifies_until_expiry(
    s3client: tuple[Any, Captured],
) -> None:
    client, _ = s3client
    url = client.generate_presigned_url(
        "get_object", Params={"Bucket": "bkt", "Key": "a b+c/ü=&"}, ExpiresIn=60
    )
    request = presigned_request(url)
    signed_at = epoch(dict(request.query)["X-Amz-Date"])
    result = authenticate(request, lookup, signed_at + 60)
    assert result.presigned
    assert result.expires_at == signed_at + 60
    assert result.payload_hash == UNSIGNED_PAYLOAD
    with pytest.raises(AccessDenied) as caught:
        authenticate(request, lookup, signed_at + 61)
    assert caught.value.message == "Request has expired"


def test_botocore_presigned_put_verifies(s3client: tuple[Any, Captured]) -> None:
    client, _ = s3client
    url = client.generate_presigned_url(
        "put_object", Params={"Bucket": "bkt", "Key": "up load"}, ExpiresIn=3600
    )
    request = presigned_request(url, "PUT")
    assert authenticate(
        request, lookup, epoch(dict(request.query)["X-Amz-Date"])
    ).presigned
    with pytest.raises(SignatureDoesNotMatch):
        authenticate(
            presigned_request(url, "DELETE"),
            lookup,
            epoch(dict(request.query)["X-Amz-Date"]),
        )


def test_presigned_from_the_future_is_not_valid_yet() -> None:
    now = 1_700_000_000.0
    url = presign_url(
        "GET", "http://h.test/b/k", AK, SK, "us-east-1", now + 16 * 60, 3600
    )
    with pytest.raises(AccessDenied) as caught:
        authenticate(presigned_request(url), lookup, now)
    assert caught.value.message == "Request is not valid yet"


def replace_param(url: str, name: str, value: str) -> str:
    parts = urlsplit(url)
    pairs = [
        f"{n}={value if n == name else v}"
        for n, _, v in (p.partition("=") for p in parts.query.split("&"))
    ]
    return parts._replace(query="&".join(pairs)).geturl()


@pytest.mark.parametrize(
    ("expires", "message"),
    [
        ("604801", "X-Amz-Expires must be less than a week (in seconds); that is, "
                   "the given X-Amz-Expires must be less than 604800 seconds"),
        ("99999999999999999999999", "X-Amz-Expires should be a number"),
        ("-1", "X-Amz-Expires must be non-negative"),
        ("1e3", "X-Amz-Expires should be a number"),
        ("soon", "X-Amz-Expires should be a number"),
        ("\u0661\u0662", "X-Amz-Expires should be a number"),  # Arabic-Indic digits
        ("1" * 5000, "X-Amz-Expires should be a number"),
    ],
)
def test_presigned_expires_out_of_range(expires: str, message: str) -> None:
    """AWS: 400 AuthorizationQueryParametersError for a negative, huge or non-numeric value."""
    now = 1_700_000_000.0
    url = replace_param(
        presign_url("GET", "http://h.test/b/k", AK, SK, "us-east-1", now, 60),
        "X-Amz-Expires",
        expires,
    )
    with pytest.raises(AuthorizationQueryParametersError) as caught:
        authenticate(presigned_request(url), lookup, now)
    assert caught.value.status == 400
    assert caught.value.message == message


def test_presigned_expires_zero_has_always_expired() -> None:
    """AWS: X-Amz-Expires=0 is 403 AccessDenied "Request has expired", even at once."""
    now = 1_700_000_000.0
    url = presign_url("GET", "http://h.test/b/k", AK, SK, "us-east-1", now, 0)
    with pytest.raises(AccessDenied) as caught:
        authenticate(presigned_request(url), lookup, now)
    assert (caught.value.status, caught.value.message) == (403, "Request has expired")
    assert caught.value.fields["X-Amz-Expires"] == "0"


def test_presigned_max_expiry_is_accepted() -> None:
    now = 1_700_000_000.0
    url = presign_url("GET", "http://h.test/b/k", AK, SK, "us-east-1", now, 604800)
    assert (
        authenticate(presigned_request(url), lookup, now + 604800).expires_at
        == now + 604800
    )


@pytest.mark.parametrize(
    "param",
    ["X-Amz-Credential", "X-Amz-Date", "X-Amz-SignedHeaders", "X-Amz-Signature"],
)
def test_presigned_missing_parameter(param: str) -> None:
    now = 1_700_000_000.0
    url = presign_url("GET", "http://h.test/b/k", AK, SK, "us-east-1", now, 60)
    request = presigned_request(url)
    stripped = SignedRequest(
        "GET",
        request.raw_path,
        [p for p in request.query if p[0] != param],
        request.headers,
    )
    with pytest.raises(AuthorizationQueryParametersError):
        authenticate(stripped, lookup, now)


def test_presigned_wrong_algorithm() -> None:
    now = 1_700_000_000.0
    url = replace_param(
        presign_url("GET", "http://h.test/b/k", AK, SK, "us-east-1", now, 60),
        "X-Amz-Algorithm",
        "AWS4-ECDSA-P256-SHA256",
    )
    with pytest.raises(AuthorizationQueryParametersError):
        authenticate(presigned_request(url), lookup, now)


def test_presigned_tampered_query_is_rejected() -> None:
    now = 1_700_000_000.0
    url = presign_url(
        "GET", "http://h.test/b?list-type=2&prefix=a", AK, SK, "us-east-1", now, 60
    )
    assert authenticate(presigned_request(url), lookup, now).access_key == AK
    with pytest.raises(SignatureDoesNotMatch):
        authenticate(presigned_request(replace_param(url, "prefix", "b")), lookup, now)


def test_presign_url_matches_botocore(monkeypatch: pytest.MonkeyPatch) -> None:
    fixed = datetime.datetime(2024, 3, 1, 12, 0, 0)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: fixed)
    url = "https://s3.example.test/bkt/a%20b%2Bc?versionId=v%2F1"
    request = AWSRequest(method="GET", url=url)
    S3SigV4QueryAuth(Credentials(AK, SK), "s3", "us-east-1", expires=900).add_auth(
        request
    )
    theirs = dict(parse_query(urlsplit(request.url).query.encode()))
    ours_url = presign_url(
        "GET", url, AK, SK, "us-east-1", calendar.timegm(fixed.timetuple()), 900
    )
    ours = dict(parse_query(urlsplit(ours_url).query.encode()))
    assert ours == theirs
    assert ours_url.startswith(url + "&X-Amz-Algorithm=")


# --------------------------------------------------------------------------
# Client-side signing (backend requests)
# --------------------------------------------------------------------------


SIGN_CASES = [
    (
        "PUT",
        "http://backend.test:9000/bucket/a%20b/%C3%BC",
        {"Content-Type": "text/plain"},
    ),
    ("GET", "https://backend.test/bucket/k?list-type=2&prefix=a%20b%2F", {}),
    ("GET", "https://backend.test:443/bucket/k?uploads", {"Range": "bytes=0-9"}),
    (
        "DELETE",
        "http://backend.test:80/bucket/k?versionId=x%2By",
        {"x-amz-meta-a": "  b    c "},
    ),
]


@pytest.mark.parametrize(("method", "url", "headers"), SIGN_CASES)
def test_sign_headers_matches_botocore(
    monkeypatch: pytest.MonkeyPatch, method: str, url: str, headers: dict[str, str]
) -> None:
    fixed = datetime.datetime(2024, 3, 1, 12, 0, 0)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: fixed)
    body = b"payload"
    payload_hash = hashlib.sha256(body).hexdigest()
    request = AWSRequest(method=method, url=url, headers=dict(headers), data=body)
    S3SigV4Auth(Credentials(AK, SK), "s3", "us-east-1").add_auth(request)
    ours = sign_headers(
        method,
        url,
        headers,
        payload_hash,
        AK,
        SK,
        "us-east-1",
        calendar.timegm(fixed.timetuple()),
    )
    assert ours["Authorization"] == request.headers["Authorization"]
    assert ours["x-amz-date"] == request.headers["X-Amz-Date"]
    assert (
        ours["x-amz-content-sha256"]
        == request.headers["X-Amz-Content-SHA256"]
        == payload_hash
    )


@pytest.mark.parametrize(("method", "url", "headers"), SIGN_CASES)
def test_sign_headers_round_trips_through_authenticate(
    method: str, url: str, headers: dict[str, str]
) -> None:
    now = 1_700_000_000.0
    added = sign_headers(
        method, url, headers, UNSIGNED_PAYLOAD, AK, SK, "eu-west-3", now
    )
    parts = urlsplit(url)
    host = parts.hostname if parts.port in (80, 443) else parts.netloc
    request = to_signed_request(method, url, {**headers, **added})
    request.headers["host"] = [str(host)]  # type: ignore[index]
    result = authenticate(request, lookup, now)
    assert result.scope.endswith("/eu-west-3/s3/aws4_request")
    assert result.payload_hash == UNSIGNED_PAYLOAD


def test_sign_headers_signs_default_port_free_host() -> None:
    added = sign_headers(
        "GET", "https://h.test:443/b/k", {}, EMPTY_SHA256, AK, SK, "r", 0.0
    )
    assert (
        "SignedHeaders=host;x-amz-content-sha256;x-amz-date," in added["Authorization"]
    )
    request = SignedRequest(
        "GET",
        b"/b/k",
        [],
        {"host": ["h.test"], **{k.lower(): [v] for k, v in added.items()}},
    )
    assert authenticate(request, lookup, 0.0).access_key == AK
    with pytest.raises(SignatureDoesNotMatch):
        authenticate(
            SignedRequest(
                "GET", b"/b/k", [], {**request.headers, "host": ["h.test:443"]}
            ),
            lookup,
            0.0,
        )


# --------------------------------------------------------------------------
# Header-auth rules
# --------------------------------------------------------------------------


def header_request(
    *,
    signed: str = "host;x-amz-content-sha256;x-amz-date",
    credential_date: str = "20240101",
    drop: tuple[str, ...] = (),
    extra: dict[str, list[str]] | None = None,
    sign: bool = True,
) -> SignedRequest:
    """A request signed with our own primitives (cross-checked against botocore above)."""
    amz_date = "20240101T000000Z"
    headers: dict[str, list[str]] = {
        "host": ["h.test"],
        "x-amz-date": [amz_date],
        "x-amz-content-sha256": [EMPTY_SHA256],
        **(extra or {}),
    }
    names = signed.split(";")
    scope = f"{credential_date}/us-east-1/s3/aws4_request"
    creq = canonical_request(
        "GET", "/b/k", "", headers, names, headers["x-amz-content-sha256"][0]
    )
    signature = hmac_hex(
        derive_signing_key(SK, credential_date, "us-east-1", "s3"),
        string_to_sign(amz_date, scope, creq),
    )
    if sign:
        headers["authorization"] = [
            f"AWS4-HMAC-SHA256 Credential={AK}/{scope}, SignedHeaders={signed}, Signature={signature}"
        ]
    for name in drop:
        headers.pop(name)
    return SignedRequest("GET", b"/b/k", [], headers)


NOW = epoch("20240101T000000Z")


def test_header_request_helper_verifies() -> None:
    assert authenticate(header_request(), lookup, NOW).access_key == AK


def test_host_must_be_signed() -> None:
    with pytest.raises(AuthorizationHeaderMalformed):
        authenticate(
            header_request(signed="x-amz-content-sha256;x-amz-date"), lookup, NOW
        )


def test_missing_content_sha256_header() -> None:
    with pytest.raises(InvalidRequest) as caught:
        authenticate(
            header_request(signed="host;x-amz-date", drop=("x-amz-content-sha256",)),
            lookup,
            NOW,
        )
    assert "x-amz-content-sha256" in caught.value.message


def test_invalid_content_sha256_claim() -> None:
    request = header_request(
        extra={"x-amz-content-sha256": ["STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD"]}
    )
    with pytest.raises(InvalidArgument):
        authenticate(request, lookup, NOW)


def test_missing_date() -> None:
    with pytest.raises(AccessDenied):
        authenticate(
            header_request(signed="host;x-amz-content-sha256", drop=("x-amz-date",)),
            lookup,
            NOW,
        )


def test_bad_x_amz_date_format() -> None:
    request = header_request()
    headers = {**request.headers, "x-amz-date": ["2024-01-01T00:00:00Z"]}
    with pytest.raises(AccessDenied):
        authenticate(SignedRequest("GET", b"/b/k", [], headers), lookup, NOW)


def test_scope_date_must_match_x_amz_date() -> None:
    with pytest.raises(AuthorizationHeaderMalformed):
        authenticate(header_request(credential_date="20231231"), lookup, NOW)


def test_no_authentication_is_access_denied() -> None:
    with pytest.raises(AccessDenied):
        authenticate(header_request(sign=False), lookup, NOW)


def test_header_and_query_auth_together_is_invalid_argument() -> None:
    request = header_request()
    both = SignedRequest(
        "GET", b"/b/k", [("X-Amz-Algorithm", "AWS4-HMAC-SHA256")], request.headers
    )
    with pytest.raises(InvalidArgument):
        authenticate(both, lookup, NOW)


def test_two_authorization_headers_are_malformed() -> None:
    request = header_request()
    doubled = {**request.headers, "authorization": request.headers["authorization"] * 2}
    with pytest.raises(AuthorizationHeaderMalformed):
        authenticate(SignedRequest("GET", b"/b/k", [], doubled), lookup, NOW)


def test_signed_header_values_are_covered() -> None:
    request = header_request(
        signed="host;range;x-amz-content-sha256;x-amz-date",
        extra={"range": ["bytes=0-9"]},
    )
    assert authenticate(request, lookup, NOW).access_key == AK
    changed = {**request.headers, "range": ["bytes=0-99"]}
    with pytest.raises(SignatureDoesNotMatch):
        authenticate(SignedRequest("GET", b"/b/k", [], changed), lookup, NOW)


def _signed_for(region: str, service: str) -> SignedRequest:
    added = sign_headers(
        "GET", "http://h.test/b/k", {}, EMPTY_SHA256, AK, SK, region, NOW, service=service
    )
    return SignedRequest(
        "GET",
        b"/b/k",
        [],
        {"host": ["h.test"], **{k.lower(): [v] for k, v in added.items()}},
    )


def test_any_region_is_accepted_when_no_regions_are_configured() -> None:
    request = _signed_for("mars-1", "s3")
    assert authenticate(request, lookup, NOW).scope == "20240101/mars-1/s3/aws4_request"


# --------------------------------------------------------------------------
# Authorization header parsing
# --------------------------------------------------------------------------

SIG = "f" * 64


@pytest.mark.parametrize(
    "value",
    [
        f"AWS4-HMAC-SHA256 Credential=AK/20240101/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature={SIG}",
        f"AWS4-HMAC-SHA256 Credential=AK/20240101/us-east-1/s3/aws4_request,SignedHeaders=host;x-amz-date,Signature={SIG}",
        f"AWS4-HMAC-SHA256  Signature={SIG} , SignedHeaders=host;x-amz-date,Credential=AK/20240101/us-east-1/s3/aws4_request",
    ],
)
def test_parse_authorization_header_tolerates_spacing_and_order(value: str) -> None:
    parsed = parse_authorization_header(value)
    assert parsed.access_key == "AK"
    assert parsed.date == "20240101"
    assert parsed.region == "us-east-1"
    assert parsed.service == "s3"
    assert parsed.signed_headers == ("host", "x-amz-date")
    assert parsed.signature == SIG
    assert parsed.scope == "20240101/us-east-1/s3/aws4_request"


@pytest.mark.parametrize(
    "value",
    [
        "AWS4-HMAC-SHA256",
        f"AWS4-HMAC-SHA256 Credential=AK/20240101/us-east-1/s3, SignedHeaders=host, Signature={SIG}",
        f"AWS4-HMAC-SHA256 Credential=AK/20240101/us-east-1/s3/aws5_request, SignedHeaders=host, Signature={SIG}",
        f"AWS4-HMAC-SHA256 Credential=AK/2024-01-01/us-east-1/s3/aws4_request, SignedHeaders=host, Signature={SIG}",
        f"AWS4-HMAC-SHA256 Credential=AK//us-east-1/s3/aws4_request, SignedHeaders=host, Signature={SIG}",
        "AWS4-HMAC-SHA256 Credential=AK/20240101/us-east-1/s3/aws4_request, SignedHeaders=host",
        f"AWS4-HMAC-SHA256 Credential=AK/20240101/us-east-1/s3/aws4_request, SignedHeaders=, Signature={SIG}",
        f"AWS4-HMAC-SHA256 Credential=AK/20240101/us-east-1/s3/aws4_request, SignedHeaders=host;;a, Signature={SIG}",
        "AWS4-HMAC-SHA256 Credential=AK/20240101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=",
        f"AWS4-HMAC-SHA256 Credential=AK/20240101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature={SIG}, Signature={SIG}",
        f"AWS4-HMAC-SHA256 Credential=AK/20240101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature={SIG}, Extra=1",
        f"Bearer Credential=AK/20240101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature={SIG}",
    ],
)
def test_parse_authorization_header_rejects_malformed(value: str) -> None:
    with pytest.raises(AuthorizationHeaderMalformed):
        parse_authorization_header(value)


@pytest.mark.parametrize(
    "value", ["AWS AKIDEXAMPLE:c2lnbmF0dXJl", "AWS4-ECDSA-P256-SHA256 Credential=x"]
)
def test_other_aws_schemes_are_unsupported(value: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_authorization_header(value)


# --------------------------------------------------------------------------
# Canonicalisation helpers
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "slash", "expected"),
    [
        ("a b", False, "a%20b"),
        ("a+b", False, "a%2Bb"),
        ("-._~AZaz09", True, "-._~AZaz09"),
        ("a/b", False, "a/b"),
        ("a/b", True, "a%2Fb"),
        ("ሴ", True, "%E1%88%B4"),
        ("%", True, "%25"),
        ("=&?#", True, "%3D%26%3F%23"),
    ],
)
def test_uri_encode(text: str, slash: bool, expected: str) -> None:
    assert uri_encode(text, encode_slash=slash) == expected


@given(st.text())
def test_uri_encode_round_trips_and_is_canonical(text: str) -> None:
    encoded = uri_encode(text, encode_slash=True)
    assert unquote(encoded, errors="strict") == text
    assert set(encoded) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~%"
    )
    # Encoding is idempotent through decode: the canonical form is a fixed point.
    assert canonical_uri_from_raw_path(b"/" + encoded.encode()) == "/" + encoded
    path = uri_encode(text, encode_slash=False)
    assert canonical_uri_from_raw_path(b"/" + path.encode()) == "/" + path


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"", "/"),
        (b"/", "/"),
        (b"/b/a+b", "/b/a%2Bb"),  # a literal plus, never a space
        (b"/b/a%2Bb", "/b/a%2Bb"),
        (b"/b/a%2bb", "/b/a%2Bb"),  # lower-case hex is normalised
        (b"/b/a b", "/b/a%20b"),
        (b"/b/=&~!'()*$@:,;", "/b/%3D%26~%21%27%28%29%2A%24%40%3A%2C%3B"),
        (b"/b//x/./../", "/b//x/./../"),  # no normalisation in S3
        (b"/b/%E6%97%A5", "/b/%E6%97%A5"),
        (b"/b/\xe6\x97\xa5", "/b/%E6%97%A5"),
        (b"/b/%ff", "/b/%FF"),  # not UTF-8: kept byte-exact
        (b"/b/a%2Fb/c", "/b/a%2Fb/c"),  # an encoded slash is not a separator
    ],
)
def test_canonical_uri_from_raw_path(raw: bytes, expected: str) -> None:
    assert canonical_uri_from_raw_path(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"", []),
        (b"uploads", [("uploads", "")]),
        (b"uploads=", [("uploads", "")]),
        (b"a=1&b=2&a=0", [("a", "1"), ("b", "2"), ("a", "0")]),
        (b"prefix=a+b%20c", [("prefix", "a+b c")]),
        (b"k=%E2%82%AC&x=a=b", [("k", "€"), ("x", "a=b")]),
        (b"a=1&&b", [("a", "1"), ("b", "")]),
    ],
)
def test_parse_query(raw: bytes, expected: list[tuple[str, str]]) -> None:
    assert parse_query(raw) == expected


def test_canonical_query_sorts_encodes_and_excludes() -> None:
    pairs = [
        ("prefix", "a b+/"),
        ("list-type", "2"),
        ("a", "2"),
        ("a", "1"),
        ("X-Amz-Signature", "s"),
    ]
    assert canonical_query(pairs, exclude="X-Amz-Signature") == (
        "a=1&a=2&list-type=2&prefix=a%20b%2B%2F"
    )
    assert canonical_query([("uploads", "")]) == "uploads="


def test_canonical_headers_trims_and_joins() -> None:
    headers = {"my-header": ["  a   b  ", "c\t\td"], "host": ["h"]}
    assert canonical_headers(headers, ["host", "my-header", "absent"]) == (
        "host:h\nmy-header:a b,c d\nabsent:\n"
    )


def test_canonical_query_parse_round_trip_for_botocore_encoding() -> None:
    # botocore encodes with quote(safe="-_.~"); decoding and re-encoding is a fixed point.
    raw = b"prefix=a%20b%2Bc%2F%3D%26%C3%BC~&list-type=2"
    assert (
        canonical_query(parse_query(raw))
        == "list-type=2&prefix=a%20b%2Bc%2F%3D%26%C3%BC~"
    )
