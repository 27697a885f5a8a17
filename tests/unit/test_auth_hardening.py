"""Authentication against a hostile client (issue 11): each test sends the attack to the
pure auth functions, checks AWS's status and code and the size of what was built or
echoed, then shows that a normal signed request still verifies.
"""

from __future__ import annotations

import calendar
import hashlib
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config

from s3orch.auth import sigv2
from s3orch.auth.authenticate import authenticate as authenticate_request
from s3orch.auth.registry import CredentialRegistry
from s3orch.backend.interface import BackendError
from s3orch.backend.s3_responses import parse_xml
from s3orch.s3 import sigv4
from s3orch.s3.errors import (
    AccessDenied,
    AuthorizationHeaderMalformed,
    AuthorizationQueryParametersError,
    InvalidAccessKeyId,
    RequestTimeTooSkewed,
    S3Error,
    SignatureDoesNotMatch,
)
from s3orch.s3.operations import ROUTING_SUBRESOURCES
from s3orch.s3.sigv4 import (
    ECHO_LIMIT,
    EMPTY_SHA256,
    MAX_CANONICAL_REQUEST,
    MAX_SIGNED_HEADERS,
    UNSIGNED_PAYLOAD,
    SignedRequest,
    authenticate,
    canonical_request,
    derive_signing_key,
    hmac_hex,
    parse_authorization_header,
    parse_query,
    presign_url,
    string_to_sign,
)

AK = "AKIDTEST"
SK = "secret/key+ABC"
AMZ_DATE = "20240101T000000Z"
NOW = float(calendar.timegm(time.strptime(AMZ_DATE, "%Y%m%dT%H%M%SZ")))


def lookup(access_key: str) -> str | None:
    return {AK: SK, "OTHERKEY": "other-secret"}.get(access_key)


def signed(
    *,
    names: str = "host;x-amz-content-sha256;x-amz-date",
    extra: dict[str, list[str]] | None = None,
    region: str = "us-east-1",
    service: str = "s3",
    secret: str = SK,
    path: bytes = b"/b/k",
    query: bytes = b"",
    method: str = "GET",
) -> SignedRequest:
    """A header-signed request; ``names`` is sent (and signed) exactly as given."""
    headers: dict[str, list[str]] = {
        "host": ["h.test"],
        "x-amz-date": [AMZ_DATE],
        "x-amz-content-sha256": [EMPTY_SHA256],
        **(extra or {}),
    }
    name_list = names.split(";")
    scope = f"{AMZ_DATE[:8]}/{region}/{service}/aws4_request"
    pairs = parse_query(query)
    creq = canonical_request(
        method,
        sigv4.canonical_uri_from_raw_path(path),
        sigv4.canonical_query(pairs),
        headers,
        name_list,
        EMPTY_SHA256,
    )
    signature = hmac_hex(
        sigv4._derive_uncached(secret, AMZ_DATE[:8], region, service),
        string_to_sign(AMZ_DATE, scope, creq),
    )
    headers["authorization"] = [
        f"AWS4-HMAC-SHA256 Credential={AK}/{scope}, SignedHeaders={names}, Signature={signature}"
    ]
    return SignedRequest(method, path, pairs, headers)


def error_of(call: Any, *args: Any, **kwargs: Any) -> S3Error:
    with pytest.raises(S3Error) as caught:
        call(*args, **kwargs)
    return caught.value


def body_size(error: S3Error) -> int:
    return len(error.to_xml("request-id", "/b/k"))


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch) -> sigv4._SigningKeyCache:
    fresh = sigv4._SigningKeyCache(maxsize=1024)
    monkeypatch.setattr(sigv4.canonical, "_KEY_CACHE", fresh)
    return fresh


@pytest.fixture
def canonical_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes of every canonical request the verifier builds."""
    sizes: list[int] = []
    real = sigv4.canonical_request

    def counting(*args: Any, **kwargs: Any) -> str:
        out = real(*args, **kwargs)
        sizes.append(len(out))
        return out

    monkeypatch.setattr(sigv4.verify, "canonical_request", counting)
    return sizes


# --------------------------------------------------------------------------
# Item 2: SignedHeaders amplification
# --------------------------------------------------------------------------


def test_signed_headers_host_repeated_1600_times_is_refused_small(canonical_calls: list[int]) -> None:
    """The 16 KB attack once built a 13 MB canonical request; now it is refused unbuilt."""
    names = ";".join(["host"] * 1600)
    request = signed(names=names)
    error = error_of(authenticate, request, lookup, NOW)
    assert isinstance(error, AuthorizationHeaderMalformed)
    assert error.status == 400
    assert canonical_calls == []  # nothing was canonicalised
    assert body_size(error) < 1024
    assert authenticate(signed(), lookup, NOW).access_key == AK


def test_presigned_signed_headers_host_repeated_1600_times_is_refused_small(
    canonical_calls: list[int],
) -> None:
    url = presign_url("GET", "http://h.test/b/k", AK, SK, "us-east-1", NOW, 60)
    attack = url.replace("X-Amz-SignedHeaders=host", "X-Amz-SignedHeaders=" + "%3B".join(["host"] * 1600))
    canonical_calls.clear()  # presign_url itself canonicalised the URL
    error = error_of(authenticate, presigned(attack), lookup, NOW)
    assert isinstance(error, AuthorizationQueryParametersError)
    assert canonical_calls == [] and body_size(error) < 1024
    assert authenticate(presigned(url), lookup, NOW).presigned


@pytest.mark.parametrize(
    "names",
    [
        "host;host;x-amz-content-sha256;x-amz-date",  # repeated
        "x-amz-date;host;x-amz-content-sha256",  # not sorted
        "host;x-amz-date;x-amz-content-sha256",
        "host;X-Amz-Date;x-amz-content-sha256;x-amz-date",  # repeated once lower-cased
    ],
)
def test_signed_headers_must_be_strictly_ascending(names: str, canonical_calls: list[int]) -> None:
    """AWS answers SignatureDoesNotMatch (403): the list it signs is sorted and unique."""
    error = error_of(authenticate, signed(names=names), lookup, NOW)
    assert isinstance(error, SignatureDoesNotMatch)
    assert error.status == 403
    assert "CanonicalRequest" not in error.fields and "StringToSign" not in error.fields
    assert canonical_calls == []
    # The same malformed list with an unknown key is still InvalidAccessKeyId.
    unknown = signed(names=names)
    unknown.headers["authorization"] = [unknown.headers["authorization"][0].replace(AK, "NOPE")]  # type: ignore[index]
    assert isinstance(error_of(authenticate, unknown, lookup, NOW), InvalidAccessKeyId)


def test_signed_headers_caps_count_and_length() -> None:
    many = ";".join(f"x-h{n:04d}" for n in range(MAX_SIGNED_HEADERS + 1))
    with pytest.raises(AuthorizationHeaderMalformed):
        parse_authorization_header(
            f"AWS4-HMAC-SHA256 Credential=AK/20240101/us-east-1/s3/aws4_request, "
            f"SignedHeaders=host;{many}, Signature={'0' * 64}"
        )
    long = "x-" + "a" * 9000
    with pytest.raises(AuthorizationHeaderMalformed):
        parse_authorization_header(
            f"AWS4-HMAC-SHA256 Credential=AK/20240101/us-east-1/s3/aws4_request, "
            f"SignedHeaders=host;{long}, Signature={'0' * 64}"
        )


def test_large_canonical_request_is_not_echoed() -> None:
    big = {"x-amz-meta-big": ["v" * (2 * ECHO_LIMIT)]}
    request = signed(names="host;x-amz-content-sha256;x-amz-date;x-amz-meta-big", extra=big, secret="wrong")
    error = error_of(authenticate, request, lookup, NOW)
    assert isinstance(error, SignatureDoesNotMatch)
    assert "CanonicalRequest" not in error.fields
    assert error.fields["StringToSign"].startswith("AWS4-HMAC-SHA256\n")
    assert body_size(error) < 2 * 1024
    # A small one is echoed as AWS does, for the client to compare.
    small = error_of(authenticate, signed(secret="wrong"), lookup, NOW)
    assert small.fields["CanonicalRequest"].startswith("GET\n/b/k\n")


def test_canonical_request_over_the_cap_is_refused(canonical_calls: list[int]) -> None:
    huge = {"x-amz-meta-huge": ["v" * MAX_CANONICAL_REQUEST]}
    request = signed(names="host;x-amz-content-sha256;x-amz-date;x-amz-meta-huge", extra=huge)
    error = error_of(authenticate, request, lookup, NOW)
    assert isinstance(error, AuthorizationHeaderMalformed)
    assert body_size(error) < 1024
    assert canonical_calls and canonical_calls[0] > MAX_CANONICAL_REQUEST


# --------------------------------------------------------------------------
# Item 4: every x-amz-* header must be signed
# --------------------------------------------------------------------------

SMUGGLED = {
    "x-amz-copy-source": "/b/secret",
    "x-amz-meta-owner": "mallory",
    "x-amz-metadata-directive": "REPLACE",
    "x-amz-copy-source-range": "bytes=0-9",
    "x-amz-copy-source-if-match": '"abc"',
    "x-amz-checksum-crc32": "AAAAAA==",
    "x-amz-trailer": "x-amz-checksum-crc32",
    "x-amz-decoded-content-length": "5",
    "x-amz-tagging": "a=b",
    "x-amz-acl": "public-read",
    "x-amz-date": AMZ_DATE,
    "x-amz-security-token": "token",
}


@pytest.mark.parametrize("name", sorted(SMUGGLED))
def test_unsigned_amz_header_is_access_denied(name: str, canonical_calls: list[int]) -> None:
    request = signed(names="host;x-amz-content-sha256;x-amz-date")
    if name == "x-amz-date":
        request = signed(names="host;x-amz-content-sha256")
    else:
        request.headers[name] = [SMUGGLED[name]]  # type: ignore[index]
    error = error_of(authenticate, request, lookup, NOW)
    assert (error.code, error.status) == ("AccessDenied", 403)
    assert error.message == "There were headers present in the request which were not signed"
    assert error.fields == {"HeadersNotSigned": name}
    assert canonical_calls == []  # refused before any signature work
    # Signed, the same header is fine.
    names = ";".join(sorted({"host", "x-amz-content-sha256", "x-amz-date", name}))
    ok = authenticate(signed(names=names, extra={name: [SMUGGLED[name]]}), lookup, NOW)
    assert name in ok.signed_headers


def test_headers_not_signed_lists_every_one_sorted() -> None:
    request = signed()
    request.headers["x-amz-tagging"] = ["a=b"]  # type: ignore[index]
    request.headers["x-amz-acl"] = ["private"]  # type: ignore[index]
    error = error_of(authenticate, request, lookup, NOW)
    assert error.fields["HeadersNotSigned"] == "x-amz-acl, x-amz-tagging"


def test_aws_exceptions_content_sha256_and_non_amz_headers_may_stay_unsigned() -> None:
    # x-amz-content-sha256 is covered by the canonical request's last line anyway.
    result = authenticate(signed(names="host;x-amz-date"), lookup, NOW)
    assert result.payload_hash == EMPTY_SHA256
    assert result.signed_headers == ("host", "x-amz-date")
    # x-amzn-trace-id (not x-amz-), user-agent, expect: SDKs never sign them.
    request = signed()
    for name, value in (("x-amzn-trace-id", "Root=1"), ("user-agent", "x"), ("expect", "100-continue")):
        request.headers[name] = [value]  # type: ignore[index]
    assert authenticate(request, lookup, NOW).access_key == AK


def presigned(url: str, method: str = "GET", headers: dict[str, list[str]] | None = None) -> SignedRequest:
    parts = urlsplit(url)
    return SignedRequest(
        method, parts.path.encode(), parse_query(parts.query.encode()), {"host": [parts.netloc], **(headers or {})}
    )


def test_presigned_unsigned_amz_header_is_access_denied() -> None:
    url = presign_url("PUT", "http://h.test/b/k", AK, SK, "us-east-1", NOW, 600)
    for name in ("x-amz-copy-source", "x-amz-meta-a", "x-amz-acl", "x-amz-tagging"):
        error = error_of(authenticate, presigned(url, "PUT", {name: ["x"]}), lookup, NOW)
        assert (error.code, error.status, error.fields) == ("AccessDenied", 403, {"HeadersNotSigned": name})
    # AWS's exception: an unsigned x-amz-content-sha256 is ignored (UNSIGNED-PAYLOAD is what was signed).
    ok = authenticate(presigned(url, "PUT", {"x-amz-content-sha256": [sigv4.STREAMING_UNSIGNED_TRAILER]}), lookup, NOW)
    assert ok.payload_hash == UNSIGNED_PAYLOAD
    assert ok.signed_headers == ("host",)
    assert authenticate(presigned(url, "PUT"), lookup, NOW).presigned


class _Raw:
    def stream(self, **_: Any) -> Iterator[bytes]:
        yield b""


def test_botocore_requests_with_amz_headers_verify() -> None:
    """What the SDK sends signs every x-amz-* header: nothing is refused."""
    captured: list[SignedRequest] = []

    def before_send(request: Any, **_: Any) -> AWSResponse:
        parts = urlsplit(request.url)
        headers: dict[str, list[str]] = {}
        for name, value in request.headers.items():
            text = value.decode() if isinstance(value, bytes) else value
            headers.setdefault(name.lower(), []).append(text)
        headers.setdefault("host", [parts.netloc])
        captured.append(SignedRequest(request.method, parts.path.encode(), parse_query(parts.query.encode()), headers))
        return AWSResponse(request.url, 200, {}, _Raw())

    client = boto3.session.Session().client(
        "s3", endpoint_url="http://s3.example.test", region_name="us-east-1",
        aws_access_key_id=AK, aws_secret_access_key=SK,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    client.meta.events.register("before-send.s3.*", before_send)
    client.put_object(Bucket="b", Key="k", Body=b"x", Metadata={"a": "1"}, Tagging="t=1", ACL="private",
                      ChecksumAlgorithm="SHA256")
    client.copy_object(Bucket="b", Key="k2", CopySource="b/k", MetadataDirective="REPLACE",
                       CopySourceIfMatch='"e"', Metadata={"b": "2"})
    client.upload_part_copy(Bucket="b", Key="k", UploadId="u", PartNumber=1, CopySource="b/k",
                            CopySourceRange="bytes=0-0")
    for request in captured:
        when = calendar.timegm(time.strptime(request.headers["x-amz-date"][0], "%Y%m%dT%H%M%SZ"))
        result = authenticate(request, lookup, when)
        assert {n for n in request.headers if n.startswith("x-amz-")} <= set(result.signed_headers) | {
            "x-amz-content-sha256"
        }


# --------------------------------------------------------------------------
# Item 8: malformed dates and numbers are S3 errors, never tracebacks
# --------------------------------------------------------------------------

BAD_DATES = [
    "Mon, 01 Jan 9999 00:00:00 -9999",
    "Mon, 01 Jan 99999999999 00:00:00 GMT",
    "Mon, 01 Jan 2024 00:00:00 +99999999999999999999",
    "Mon, \u0660\u0661 Jan 2024 00:00:00 GMT",  # Arabic-Indic digits
    "Mon, 01 Jan 2024 00:00:00 GMT" + "x" * 5000,
    "Sat, 00 Jan 2024 00:00:00 GMT",
    "Fri, 31 Feb 2024 00:00:00 GMT",
]


@pytest.mark.parametrize("value", BAD_DATES)
def test_absurd_date_header_is_access_denied(value: str) -> None:
    assert sigv4.parse_http_date(value) is None
    request = signed(names="date;host;x-amz-content-sha256")
    del request.headers["x-amz-date"]  # type: ignore[attr-defined]
    request.headers["date"] = [value]  # type: ignore[index]
    error = error_of(authenticate, request, lookup, NOW)
    assert (error.code, error.message) == ("AccessDenied", "AWS authentication requires a valid Date or x-amz-date header")
    assert body_size(error) < 1024


@pytest.mark.parametrize(
    "value", ["\u0662\u0660\u0662\u0664\u0660\u0661\u0660\u0661T000000Z", "99999999T999999Z", "20240230T000000Z",
              "20240101T240000Z", "00000101T000000Z", "20240101T000000Z" * 300]
)
def test_absurd_x_amz_date_is_refused(value: str) -> None:
    assert sigv4.parse_amz_date(value) is None
    request = signed()
    request.headers["x-amz-date"] = [value]  # type: ignore[index]
    assert isinstance(error_of(authenticate, request, lookup, NOW), AccessDenied)
    url = presign_url("GET", "http://h.test/b/k", AK, SK, "us-east-1", NOW, 60).replace(AMZ_DATE, quote(value))
    assert isinstance(error_of(authenticate, presigned(url), lookup, NOW), AuthorizationQueryParametersError)


def test_date_header_far_from_now_is_skewed_not_a_traceback() -> None:
    request = signed(names="date;host;x-amz-content-sha256")
    del request.headers["x-amz-date"]  # type: ignore[attr-defined]
    request.headers["date"] = ["Fri, 31 Dec 9999 23:59:59 -2359"]  # type: ignore[index]
    error = error_of(authenticate, request, lookup, NOW)
    assert isinstance(error, RequestTimeTooSkewed)
    assert error.fields["RequestTime"] == "Fri, 31 Dec 9999 23:59:59 -2359"


def test_http_date_forms() -> None:
    expected = 1704067200.0  # 2024-01-01T00:00:00Z
    for value in ("Mon, 01 Jan 2024 00:00:00 GMT", "Mon, 01 Jan 2024 00:00:00 -0000",
                  "Mon, 01 Jan 2024 01:00:00 +0100", "Monday, 01-Jan-24 00:00:00 GMT",
                  "Mon Jan  1 00:00:00 2024"):
        assert sigv4.parse_http_date(value) == expected, value


@pytest.mark.parametrize("expires", ["9" * 5000, "\u0661\u0662\u0663", "1e3", " 60", "0x10"])
def test_sigv2_presigned_expires_must_be_ascii_digits(expires: str) -> None:
    query = [("AWSAccessKeyId", AK), ("Signature", "x"), ("Expires", expires)]
    error = error_of(sigv2.authenticate, "GET", b"/b/k", query, {}, lookup, NOW)
    assert error.code == "AccessDenied" and error.message.startswith("Invalid date")
    assert body_size(error) < 1024


@pytest.mark.parametrize("value", BAD_DATES)
def test_sigv2_absurd_date_is_access_denied(value: str) -> None:
    headers = {"date": [value], "authorization": [f"AWS {AK}:c2ln"]}
    error = error_of(sigv2.authenticate, "GET", b"/b/k", [], headers, lookup, NOW)
    assert error.message == "AWS authentication requires a valid Date or x-amz-date header"


# --------------------------------------------------------------------------
# Item 9: SigV2 signs every routing sub-resource and re-escapes ambiguous values
# --------------------------------------------------------------------------

V2_DATE = "Mon, 01 Jan 2024 00:00:00 GMT"


def v2_signed(method: str, raw_path: bytes, resource: str, query: bytes = b"") -> tuple[str, list[tuple[str, str]], dict[str, list[str]]]:
    sts = f"{method}\n\n\n{V2_DATE}\n{resource}"
    headers = {"date": [V2_DATE], "authorization": [f"AWS {AK}:{sigv2.sign(SK, sts)}"]}
    return method, parse_query(query), headers


@pytest.mark.parametrize("sub", sorted(ROUTING_SUBRESOURCES))
def test_sigv2_signature_cannot_be_replayed_onto_another_operation(sub: str) -> None:
    """A GetObject/HeadBucket signature plus ``?<sub>`` no longer verifies, for every routing sub-resource."""
    method, query, headers = v2_signed("GET", b"/b/k", "/b/k")
    assert sigv2.authenticate(method, b"/b/k", query, headers, lookup, NOW).access_key == AK
    for extra in ([(sub, "")], [(sub, "1")]):
        error = error_of(sigv2.authenticate, method, b"/b/k", [*query, *extra], headers, lookup, NOW)
        assert isinstance(error, SignatureDoesNotMatch), sub


def test_sigv2_subresource_signed_by_the_client_verifies() -> None:
    method, query, headers = v2_signed("GET", b"/b/k", "/b/k?attributes", b"attributes")
    assert sigv2.authenticate(method, b"/b/k", query, headers, lookup, NOW).access_key == AK


def test_sigv2_decoded_ampersand_cannot_fake_another_subresource() -> None:
    """``partNumber=1%26uploadId%3DU`` (one parameter) must not share a string to sign with two."""
    two = sigv2.canonical_resource(b"/b/k", parse_query(b"partNumber=1&uploadId=U"))
    one = sigv2.canonical_resource(b"/b/k", parse_query(b"partNumber=1%26uploadId%3DU"))
    assert two == "/b/k?partNumber=1&uploadId=U"
    assert one == "/b/k?partNumber=1%26uploadId=U"
    method, _, headers = v2_signed("GET", b"/b/k", two)
    assert sigv2.authenticate(method, b"/b/k", parse_query(b"partNumber=1&uploadId=U"), headers, lookup, NOW)
    with pytest.raises(SignatureDoesNotMatch):
        sigv2.authenticate(method, b"/b/k", parse_query(b"partNumber=1%26uploadId%3DU"), headers, lookup, NOW)
    # An "&" that cannot start a sub-resource is signed as decoded, as botocore signs it.
    plain = sigv2.canonical_resource(b"/b/k", parse_query(b"response-content-disposition=a%26b.txt"))
    assert plain == "/b/k?response-content-disposition=a&b.txt"


def test_sigv2_large_string_to_sign_is_not_echoed() -> None:
    headers = {"date": [V2_DATE], "authorization": [f"AWS {AK}:bad"], "x-amz-meta-big": ["v" * (2 * ECHO_LIMIT)]}
    error = error_of(sigv2.authenticate, "GET", b"/b/k", [], headers, lookup, NOW)
    assert isinstance(error, SignatureDoesNotMatch)
    assert "StringToSign" not in error.fields and "StringToSignBytes" not in error.fields
    assert body_size(error) < 1024


# --------------------------------------------------------------------------
# Item 10: credential scope
# --------------------------------------------------------------------------


@pytest.mark.parametrize("service", ["iam", "sts", "S3", "s3-object-lambda"])
def test_signature_for_another_service_is_refused(service: str) -> None:
    error = error_of(authenticate, signed(service=service), lookup, NOW)
    assert isinstance(error, AuthorizationHeaderMalformed) and error.status == 400
    assert error.message == (
        f'The authorization header is malformed; incorrect service "{service}". This endpoint belongs to "s3".'
    )
    url = presign_url("GET", "http://h.test/b/k", AK, SK, "us-east-1", NOW, 60, service=service)
    query_error = error_of(authenticate, presigned(url), lookup, NOW)
    assert isinstance(query_error, AuthorizationQueryParametersError)
    assert query_error.message.startswith("Error parsing the X-Amz-Credential parameter; incorrect service")
    assert authenticate(signed(), lookup, NOW).access_key == AK


def test_region_must_be_a_configured_one() -> None:
    regions = ("eu-west-3", "us-east-1")
    assert authenticate(signed(region="eu-west-3"), lookup, NOW, regions=regions).access_key == AK
    error = error_of(authenticate, signed(region="mars-1"), lookup, NOW, regions=regions)
    assert isinstance(error, AuthorizationHeaderMalformed)
    assert error.message == "The authorization header is malformed; the region 'mars-1' is wrong; expecting 'eu-west-3'"
    assert error.fields == {"Region": "eu-west-3"}
    url = presign_url("GET", "http://h.test/b/k", AK, SK, "mars-1", NOW, 60)
    query_error = error_of(authenticate, presigned(url), lookup, NOW, regions=regions)
    assert isinstance(query_error, AuthorizationQueryParametersError)
    assert query_error.fields == {"Region": "eu-west-3"}
    # No regions configured: any region, as s3-orchestrator accepts.
    assert authenticate(signed(region="mars-1"), lookup, NOW).scope.endswith("/mars-1/s3/aws4_request")


def test_unknown_keys_never_reach_the_signing_key_cache(cache: sigv4._SigningKeyCache) -> None:
    for n in range(200):
        request = signed(region=f"r{n}")
        request.headers["authorization"] = [request.headers["authorization"][0].replace(AK, f"AKNOPE{n}")]  # type: ignore[index]
        assert isinstance(error_of(authenticate, request, lookup, NOW), InvalidAccessKeyId)
    assert len(cache) == 0


def test_one_key_with_random_regions_cannot_grow_the_cache_or_evict_others(cache: sigv4._SigningKeyCache) -> None:
    other = sigv4.derive_signing_key("other-secret", AMZ_DATE[:8], "us-east-1", "s3")
    for n in range(500):
        assert authenticate(signed(region=f"region-{n}"), lookup, NOW).access_key == AK
    assert len(cache) <= cache.per_secret + 1
    # The other tenant's key is still cached (the same object comes back).
    assert cache.get("other-secret", AMZ_DATE[:8], "us-east-1", "s3") is other


@pytest.mark.parametrize("region", ["", "a" * 65, "us east", "r\u00e9gion", "a\x00b"])
def test_malformed_region_is_refused_before_any_key_is_derived(region: str, monkeypatch: pytest.MonkeyPatch) -> None:
    value = (
        f"AWS4-HMAC-SHA256 Credential={AK}/20240101/{region}/s3/aws4_request, "
        f"SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={'0' * 64}"
    )
    request = signed()
    derived: list[str] = []
    real = sigv4._derive_uncached
    for module in (sigv4.canonical, sigv4.verify):  # the cache's and the unknown-key path's
        monkeypatch.setattr(module, "_derive_uncached", lambda *a: derived.append(a[2]) or real(*a))
    request.headers["authorization"] = [value]  # type: ignore[index]
    error = error_of(authenticate, request, lookup, NOW)
    assert isinstance(error, AuthorizationHeaderMalformed)
    assert derived == []
    assert body_size(error) < 1024


def test_signing_key_cache_bounds_total_and_per_secret() -> None:
    cache = sigv4._SigningKeyCache(maxsize=10, per_secret=3)
    for n in range(5):
        cache.get("s1", "20240101", f"r{n}", "s3")
    assert len(cache) == 3
    for secret in range(20):
        cache.get(f"t{secret}", "20240101", "r", "s3")
    assert len(cache) == 10
    again = cache.get("t19", "20240101", "r", "s3")
    assert again == sigv4._derive_uncached("t19", "20240101", "r", "s3")


def test_registry_authenticate_passes_regions() -> None:
    class Bucket:
        name = "b"
        credentials = [type("C", (), {"access_key_id": AK, "secret_access_key": SK, "token": ""})()]

    registry = CredentialRegistry([Bucket()])
    request = signed(region="mars-1")
    with pytest.raises(AuthorizationHeaderMalformed):
        authenticate_request(registry, "GET", b"/b/k", [], request.headers, NOW, regions=("us-east-1",))
    outcome = authenticate_request(registry, "GET", b"/b/k", [], signed().headers, NOW, regions=("us-east-1",))
    assert outcome.principal.bucket == "b" and outcome.sigv4 is not None


# --------------------------------------------------------------------------
# Issue 12: presigned expiry
# --------------------------------------------------------------------------


def test_expired_presigned_put_is_access_denied() -> None:
    url = presign_url("PUT", "http://h.test/b/k", AK, SK, "us-east-1", NOW, 60)
    error = error_of(authenticate, presigned(url, "PUT"), lookup, NOW + 61)
    assert (error.code, error.status, error.message) == ("AccessDenied", 403, "Request has expired")
    assert error.fields["X-Amz-Expires"] == "60"
    assert authenticate(presigned(url, "PUT"), lookup, NOW + 60).presigned


# --------------------------------------------------------------------------
# Item 11: backend XML goes through defusedxml
# --------------------------------------------------------------------------

LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<ListBucketResult>&lol2;</ListBucketResult>"""


@pytest.mark.parametrize(
    "body",
    [
        LAUGHS,
        b'<?xml version="1.0"?><!DOCTYPE r SYSTEM "http://evil.test/x.dtd"><r/>',
        b"<r><unclosed></r>",
        b"",
    ],
)
def test_backend_xml_with_entities_or_garbage_is_a_backend_error(body: bytes) -> None:
    with pytest.raises(BackendError):
        parse_xml(body, "ListObjectsV2", "backend-1")


def test_backend_xml_plain_document_parses() -> None:
    root = parse_xml(b"<ListBucketResult><Name>b</Name></ListBucketResult>", "ListObjectsV2", "backend-1")
    assert root.findtext("Name") == "b"


def test_sha256_helper_is_sane() -> None:
    # Guards the fixtures above: the empty-body hash they sign.
    assert hashlib.sha256(b"").hexdigest() == EMPTY_SHA256
    assert derive_signing_key(SK, "20240101", "us-east-1", "s3") == sigv4._derive_uncached(
        SK, "20240101", "us-east-1", "s3"
    )
