"""SigV2: string to sign and signatures against botocore's HmacV1 signers, boto3 and the AWS CLI."""

from __future__ import annotations

import base64
import calendar
import hashlib
import hmac
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import unquote, urlsplit

import boto3
import botocore.auth
import pytest
from botocore.auth import HmacV1Auth, HmacV1QueryAuth
from botocore.awsrequest import AWSRequest, AWSResponse
from botocore.config import Config
from botocore.credentials import Credentials
from hypothesis import given, settings
from hypothesis import strategies as st

from s3orch.auth import sigv2
from s3orch.auth.authenticate import authenticate as authenticate_request
from s3orch.auth.registry import CredentialRegistry, Principal
from s3orch.auth.sigv2 import (
    BOTOCORE_SUBRESOURCES,
    MAX_EXPIRES,
    SUBRESOURCES,
    V2Result,
    authenticate,
    canonical_amz_headers,
    canonical_resource,
    parse_authorization_header,
    sign,
    string_to_sign,
)
from s3orch.s3.errors import (
    AccessDenied,
    InvalidAccessKeyId,
    InvalidArgument,
    RequestTimeTooSkewed,
    S3Error,
    SignatureDoesNotMatch,
)
from s3orch.s3.operations import ROUTING_SUBRESOURCES
from s3orch.s3.sigv4 import parse_query

AK = "AKIDTEST"
SK = "secret/key+ABC"
NOW = float(calendar.timegm((2024, 1, 1, 12, 0, 0, 0, 0, 0)))
NOW_HTTP = formatdate(NOW, usegmt=True)  # "Mon, 01 Jan 2024 12:00:00 GMT"
VENV_BIN = Path(sys.executable).parent


def lookup(access_key: str) -> str | None:
    return {AK: SK}.get(access_key)


Headers = dict[str, list[str]]


@dataclass(frozen=True)
class Wire:
    """A request as the gateway receives it (what ``authenticate`` is given)."""

    method: str
    raw_path: bytes
    query: list[tuple[str, str]]
    headers: Headers = field(default_factory=dict)

    def verify(self, now: float = NOW, **kwargs: Any) -> V2Result:
        return authenticate(
            self.method, self.raw_path, self.query, self.headers, lookup, now, **kwargs
        )


def wire(method: str, url: str, headers: Any = ()) -> Wire:
    """Parse a URL and headers (botocore's HTTPHeaders, a dict or pairs) like the front door."""
    parts = urlsplit(url)
    lowered: Headers = {}
    items = headers.items() if hasattr(headers, "items") else headers
    for name, value in items:
        text = value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value
        lowered.setdefault(name.lower(), []).append(text)
    return Wire(method, parts.path.encode(), parse_query(parts.query.encode()), lowered)


def raises(error: type[S3Error], call: Any, *args: Any, **kwargs: Any) -> S3Error:
    with pytest.raises(error) as info:
        call(*args, **kwargs)
    return info.value


# --------------------------------------------------------------------------
# botocore's signers with a fixed clock
# --------------------------------------------------------------------------


class FixedHmacV1Auth(HmacV1Auth):  # type: ignore[misc]
    def _get_date(self) -> str:
        return NOW_HTTP


class FixedHmacV1QueryAuth(HmacV1QueryAuth):  # type: ignore[misc]
    def _get_date(self) -> str:
        return str(int(NOW) + int(self._expires))


def creds(secret: str = SK) -> Credentials:
    return Credentials(AK, secret)


def botocore_header_signed(
    method: str, url: str, headers: Sequence[tuple[str, str]] = (), auth_path: str | None = None
) -> tuple[Wire, str]:
    """Sign with botocore's HmacV1Auth; return the request as received and botocore's StringToSign."""
    request = AWSRequest(method=method, url=url)
    for name, value in headers:
        request.headers[name] = value  # HTTPHeaders appends: repeated names stay repeated
    request.auth_path = auth_path
    signer = FixedHmacV1Auth(creds())
    signer.add_auth(request)
    sts = signer.canonical_string(
        method, urlsplit(url), request.headers, auth_path=auth_path
    )
    return wire(method, url, request.headers), sts


def botocore_presigned(
    method: str,
    url: str,
    headers: Sequence[tuple[str, str]] = (),
    auth_path: str | None = None,
    expires: int = 3600,
) -> tuple[str, str]:
    """Presign with botocore's HmacV1QueryAuth; return the URL and botocore's StringToSign."""
    request = AWSRequest(method=method, url=url)
    for name, value in headers:
        request.headers[name] = value
    request.auth_path = auth_path
    signer = FixedHmacV1QueryAuth(creds(), expires=expires)
    signer.add_auth(request)
    # The signer only rewrote the URL; the StringToSign is of the original one.
    sts = signer.canonical_string(method, urlsplit(url), request.headers, auth_path=auth_path)
    return request.url, sts


def our_string_to_sign(w: Wire, date: str, bucket_from_host: str | None = None) -> str:
    def one(name: str) -> str:
        return ",".join(v.strip() for v in w.headers.get(name, []))

    return string_to_sign(
        w.method,
        one("content-md5"),
        one("content-type"),
        date,
        canonical_amz_headers(w.headers),
        canonical_resource(w.raw_path, w.query, bucket_from_host),
    )


# --------------------------------------------------------------------------
# The sub-resource list is botocore's, exactly
# --------------------------------------------------------------------------


def test_subresources_are_botocores_plus_every_routing_subresource() -> None:
    assert BOTOCORE_SUBRESOURCES == frozenset(HmacV1Auth.QSAOfInterest)
    assert SUBRESOURCES == BOTOCORE_SUBRESOURCES | ROUTING_SUBRESOURCES
    for name in ("attributes", "retention", "renameObject", "legal-hold", "encryption"):
        assert name in SUBRESOURCES
    for name in ("acl", "uploads", "uploadId", "partNumber", "versionId", "delete", "tagging",
                 "response-content-type", "response-content-disposition", "restore"):
        assert name in SUBRESOURCES
    for name in ("prefix", "delimiter", "marker", "max-keys", "list-type", "encoding-type",
                 "AWSAccessKeyId", "Signature", "Expires"):
        assert name not in SUBRESOURCES


def test_sign_is_base64_hmac_sha1() -> None:
    expected = base64.b64encode(hmac.new(b"k", b"text", hashlib.sha1).digest()).decode()
    assert sign("k", "text") == expected


def test_aws_documentation_example() -> None:
    """The object GET example of the RESTAuthentication page (virtual-hosted style)."""
    sts = string_to_sign(
        "GET", "", "", "Tue, 27 Mar 2007 19:36:42 +0000", "",
        canonical_resource(b"/photos/puppy.jpg", [], "awsexamplebucket1"),
    )
    assert sts == "GET\n\n\nTue, 27 Mar 2007 19:36:42 +0000\n/awsexamplebucket1/photos/puppy.jpg"
    assert sign("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", sts) == "qgk2+6Sv9/oM7G3qLEjTH1a1l1g="


# --------------------------------------------------------------------------
# Header form against botocore's HmacV1Auth
# --------------------------------------------------------------------------

# (method, URL as sent, botocore's auth_path or None, expected CanonicalizedResource)
RESOURCE_CASES = [
    ("GET", "http://h/bkt/key", None, "/bkt/key"),
    ("GET", "http://h/bkt/key?acl", None, "/bkt/key?acl"),
    ("PUT", "http://h/bkt?acl", "/bkt/", "/bkt/?acl"),
    ("POST", "http://h/bkt/key?uploads", None, "/bkt/key?uploads"),
    ("GET", "http://h/bkt?uploads&prefix=a", "/bkt/", "/bkt/?uploads"),
    ("PUT", "http://h/bkt/key?uploadId=up%2Fid%3D1&partNumber=3", None,
     "/bkt/key?partNumber=3&uploadId=up/id=1"),
    ("GET", "http://h/bkt/key?uploadId=u1&max-parts=10", None, "/bkt/key?uploadId=u1"),
    ("GET", "http://h/bkt/key?versionId=v%201%2B2", None, "/bkt/key?versionId=v 1+2"),
    ("DELETE", "http://h/bkt/key?versionId=abc", None, "/bkt/key?versionId=abc"),
    ("POST", "http://h/bkt?delete", "/bkt/", "/bkt/?delete"),
    ("GET", "http://h/bkt/key?tagging", None, "/bkt/key?tagging"),
    ("PUT", "http://h/bkt/key?tagging&versionId=v9", None, "/bkt/key?tagging&versionId=v9"),
    ("GET", "http://h/bkt/key?response-content-type=text%2Fplain%3B%20charset%3Dutf-8"
     "&response-content-disposition=attachment%3B%20filename%3D%22a%20b.txt%22"
     "&response-cache-control=no-cache",
     None,
     "/bkt/key?response-cache-control=no-cache"
     '&response-content-disposition=attachment; filename="a b.txt"'
     "&response-content-type=text/plain; charset=utf-8"),
    ("GET", "http://h/bkt?prefix=photos%2F2006%2F&delimiter=%2F&max-keys=50&marker=puppy",
     "/bkt/", "/bkt/"),
    ("GET", "http://h/bkt?list-type=2&prefix=a&continuation-token=tok&encoding-type=url",
     "/bkt/", "/bkt/"),
    ("GET", "http://h/bkt?versions&prefix=p&key-marker=k", "/bkt/", "/bkt/?versions"),
    ("GET", "http://h/bkt?lifecycle", "/bkt/", "/bkt/?lifecycle"),
    ("GET", "http://h/bkt?location", "/bkt/", "/bkt/?location"),
    ("POST", "http://h/bkt/key?restore", None, "/bkt/key?restore"),
    ("POST", "http://h/bkt/key?select&select-type=2", None, "/bkt/key?select&select-type=2"),
    ("GET", "http://h/bkt?object-lock", "/bkt/", "/bkt/?object-lock"),
    ("GET", "http://h/", None, "/"),
    ("GET", "http://h/bkt/a%20b%2Bc%25d/%C3%BC%E6%97%A5//x/", None,
     "/bkt/a%20b%2Bc%25d/%C3%BC%E6%97%A5//x/"),
    ("GET", "http://h/bkt/a%2Fb", None, "/bkt/a%2Fb"),
]


@pytest.mark.parametrize(("method", "url", "auth_path", "resource"), RESOURCE_CASES)
def test_header_form_matches_botocore(
    method: str, url: str, auth_path: str | None, resource: str
) -> None:
    w, botocore_sts = botocore_header_signed(method, url, auth_path=auth_path)
    assert canonical_resource(w.raw_path, w.query) == resource
    assert our_string_to_sign(w, NOW_HTTP) == botocore_sts
    assert botocore_sts.endswith("\n" + resource)
    result = w.verify()
    assert result == V2Result(access_key=AK, presigned=False, expires_at=None)


def test_amz_headers_canonicalisation_matches_botocore() -> None:
    headers = [
        ("X-Amz-Meta-Zeta", "  last  "),
        ("x-amz-meta-alpha", "first"),
        ("X-AMZ-META-DUP", "one "),
        ("x-amz-meta-dup", " two"),
        ("X-Amz-Acl", "public-read"),
        ("Content-Type", " text/plain "),
        ("Content-MD5", "XrY7u+Ae7tCTyyK7j1rNww=="),
        ("X-Other", "not signed"),
    ]
    w, botocore_sts = botocore_header_signed("PUT", "http://h/bkt/key", headers)
    block = (
        "x-amz-acl:public-read\n"
        "x-amz-meta-alpha:first\n"
        "x-amz-meta-dup:one,two\n"
        "x-amz-meta-zeta:last\n"
    )
    assert canonical_amz_headers(w.headers) == block
    assert botocore_sts == (
        f"PUT\nXrY7u+Ae7tCTyyK7j1rNww==\ntext/plain\n{NOW_HTTP}\n{block}/bkt/key"
    )
    assert our_string_to_sign(w, NOW_HTTP) == botocore_sts
    assert w.verify().access_key == AK


def test_canonical_resource_rules() -> None:
    q = parse_query
    assert canonical_resource(b"/bkt/k", q(b"prefix=a&acl")) == "/bkt/k?acl"
    # Sorted by name only (stable): repeated names keep their received order.
    assert canonical_resource(b"/b/k", q(b"versionId=2&acl&versionId=1")) == "/b/k?acl&versionId=2&versionId=1"
    # Path-style bucket level: AWS (and botocore's authPath) sign a trailing slash.
    assert canonical_resource(b"/bkt", []) == "/bkt/"
    assert canonical_resource(b"/bkt", [], bucket_slash=False) == "/bkt"
    assert canonical_resource(b"/bkt/", []) == "/bkt/"
    # Virtual-hosted style: the bucket from Host prefixes the raw path.
    assert canonical_resource(b"/", q(b"uploads"), "my.bucket") == "/my.bucket/?uploads"
    assert canonical_resource(b"/a%20b", [], "bkt") == "/bkt/a%20b"
    assert canonical_resource(b"", [], "bkt") == "/bkt/"
    # "?uploads=" parses like "?uploads"; the "=" spelling is available on request.
    assert canonical_resource(b"/b/k", q(b"uploads="), empty_value_equals=True) == "/b/k?uploads="


@dataclass
class Captured:
    requests: list[Wire] = field(default_factory=list)


class _Raw:
    def stream(self, **_: Any) -> Iterator[bytes]:
        yield b""


def s3_v2_client(captured: Captured, addressing_style: str = "path") -> Any:
    def before_send(request: Any, **_: Any) -> AWSResponse:
        captured.requests.append(wire(request.method, request.url, request.headers))
        return AWSResponse(request.url, 200, {}, _Raw())

    client = boto3.session.Session().client(
        "s3",
        endpoint_url="http://s3.example.test",
        region_name="us-east-1",
        aws_access_key_id=AK,
        aws_secret_access_key=SK,
        config=Config(signature_version="s3", s3={"addressing_style": addressing_style}),
    )
    client.meta.events.register("before-send.s3.*", before_send)
    return client


def request_time(w: Wire) -> float:
    return calendar.timegm(time.strptime(w.headers["date"][0], "%a, %d %b %Y %H:%M:%S GMT"))


KEYS = [
    "plain.txt",
    "with space",
    "a+b",
    "100%",
    "a=b&c=d",
    "til~de",
    "ünïcødé/日本語",
    "double//slash",
    "/leading",
    "trailing/",
    "!'()*$@:,;",
    "./dot/../dots",
]


@pytest.mark.parametrize("key", KEYS)
def test_boto3_sigv2_client_requests_verify(key: str) -> None:
    """Everything boto3 sends with signature_version='s3' verifies, bytes as on the wire."""
    captured = Captured()
    client = s3_v2_client(captured)
    client.put_object(Bucket="bkt", Key=key, Body=b"hello", Metadata={"m": " v "}, ContentType="text/plain")
    client.get_object(Bucket="bkt", Key=key, ResponseContentType="a/b", VersionId="v 1")
    client.create_multipart_upload(Bucket="bkt", Key=key)
    client.upload_part(Bucket="bkt", Key=key, UploadId="u/1", PartNumber=2, Body=b"x")
    client.put_object_tagging(Bucket="bkt", Key=key, Tagging={"TagSet": [{"Key": "k", "Value": "v"}]})
    client.put_object_acl(Bucket="bkt", Key=key, ACL="private")
    client.delete_objects(Bucket="bkt", Delete={"Objects": [{"Key": key}]})
    client.list_objects_v2(Bucket="bkt", Prefix=key)
    assert len(captured.requests) == 8
    for w in captured.requests:
        assert w.verify(request_time(w)).access_key == AK, w
    put = captured.requests[0]
    assert unquote(put.raw_path.decode()) == f"/bkt/{key}"


def test_boto3_virtual_hosted_requests_verify_with_bucket_from_host() -> None:
    captured = Captured()
    client = s3_v2_client(captured, addressing_style="virtual")
    client.put_object(Bucket="bkt", Key="a b/c", Body=b"x")
    client.list_objects(Bucket="bkt", Prefix="a")
    client.create_multipart_upload(Bucket="bkt", Key="k")
    for w in captured.requests:
        assert w.verify(request_time(w), bucket_from_host="bkt").access_key == AK
        raises(SignatureDoesNotMatch, w.verify, request_time(w))


def test_x_amz_date_replaces_date_and_empties_its_slot() -> None:
    """AWS: with x-amz-date present, Date is ignored and its slot is empty (s3cmd signs so)."""
    amz_date = "Mon, 01 Jan 2024 12:00:00 +0000"
    headers = {
        "x-amz-date": [amz_date],
        "date": ["Thu, 01 Jan 1970 00:00:00 GMT"],  # stale, but ignored
        "x-amz-meta-a": ["1"],
    }
    sts = f"GET\n\n\n\nx-amz-date:{amz_date}\nx-amz-meta-a:1\n/bkt/key"
    headers["authorization"] = [f"AWS {AK}:{sign(SK, sts)}"]
    w = Wire("GET", b"/bkt/key", [], headers)
    assert w.verify().access_key == AK
    # Signing the Date slot as well is not what AWS verifies.
    wrong = f"GET\n\n\n{headers['date'][0]}\nx-amz-date:{amz_date}\nx-amz-meta-a:1\n/bkt/key"
    headers["authorization"] = [f"AWS {AK}:{sign(SK, wrong)}"]
    raises(SignatureDoesNotMatch, w.verify)


def test_iso_basic_x_amz_date_is_accepted() -> None:
    sts = "GET\n\n\n\nx-amz-date:20240101T120500Z\n/bkt/"
    w = Wire("GET", b"/bkt", [], {
        "x-amz-date": ["20240101T120500Z"], "authorization": [f"AWS {AK}:{sign(SK, sts)}"],
    })
    assert w.verify().access_key == AK


def hand_signed(
    method: str, raw_path: bytes, raw_query: bytes, resource: str, date: str = NOW_HTTP,
    headers: Mapping[str, list[str]] | None = None, secret: str = SK, access_key: str = AK,
) -> Wire:
    sts = f"{method}\n\n\n{date}\n{resource}"
    all_headers: Headers = {"date": [date], **(headers or {})}
    all_headers["authorization"] = [f"AWS {access_key}:{sign(secret, sts)}"]
    return Wire(method, raw_path, parse_query(raw_query), all_headers)


def test_alternative_resource_spellings_are_accepted() -> None:
    # "?uploads=" signed with its "=", and a path-style bucket signed without "/".
    assert hand_signed("POST", b"/b/k", b"uploads=", "/b/k?uploads=").verify().access_key == AK
    assert hand_signed("POST", b"/b/k", b"uploads=", "/b/k?uploads").verify().access_key == AK
    assert hand_signed("GET", b"/b", b"acl", "/b?acl").verify().access_key == AK
    assert hand_signed("GET", b"/b", b"acl", "/b/?acl").verify().access_key == AK
    # ...but not a different resource.
    raises(SignatureDoesNotMatch, hand_signed("GET", b"/b", b"acl", "/c/?acl").verify)
    raises(SignatureDoesNotMatch, hand_signed("GET", b"/b/k", b"", "/b/k/").verify)


def test_list_parameters_are_not_signed_but_subresources_are() -> None:
    w, _ = botocore_header_signed("GET", "http://h/bkt?prefix=a&acl", auth_path="/bkt/")
    changed_prefix = Wire(w.method, w.raw_path, [("prefix", "other"), ("acl", "")], w.headers)
    assert changed_prefix.verify().access_key == AK  # SigV2 never covered list parameters
    added_sub = Wire(w.method, w.raw_path, [*w.query, ("versionId", "1")], w.headers)
    raises(SignatureDoesNotMatch, added_sub.verify)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda w: Wire("PUT", w.raw_path, w.query, w.headers),
        lambda w: Wire(w.method, w.raw_path + b"x", w.query, w.headers),
        lambda w: Wire(w.method, w.raw_path.replace(b"%20", b"+"), w.query, w.headers),
        lambda w: Wire(w.method, w.raw_path, [("versionId", "v2")], w.headers),
        lambda w: Wire(w.method, w.raw_path, w.query, {**w.headers, "x-amz-meta-new": ["1"]}),
        lambda w: Wire(w.method, w.raw_path, w.query, {**w.headers, "content-type": ["a/b"]}),
        lambda w: Wire(w.method, w.raw_path, w.query, {**w.headers, "content-md5": ["AAAA"]}),
    ],
)
def test_any_signed_change_fails(tamper: Any) -> None:
    w, _ = botocore_header_signed("GET", "http://h/bkt/a%20b?versionId=v1", [("x-amz-meta-a", "1")])
    assert w.verify().access_key == AK
    raises(SignatureDoesNotMatch, tamper(w).verify)


def test_wrong_secret_is_signature_does_not_match_with_aws_fields() -> None:
    w = hand_signed("GET", b"/bkt/key", b"acl", "/bkt/key?acl", secret="wrong")
    err = raises(SignatureDoesNotMatch, w.verify)
    assert err.status == 403
    assert err.fields["AWSAccessKeyId"] == AK
    assert err.fields["StringToSign"] == f"GET\n\n\n{NOW_HTTP}\n/bkt/key?acl"
    assert err.fields["SignatureProvided"] == w.headers["authorization"][0].split(":", 1)[1]
    assert err.fields["StringToSignBytes"].startswith("47 45 54 0a")
    assert b"<StringToSign>" in err.to_xml("rid")


def test_unknown_key_computes_a_full_signature_before_refusing(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real_sign = sigv2.sign

    def counting(secret: str, text: str) -> str:
        calls.append(secret)
        return real_sign(secret, text)

    monkeypatch.setattr(sigv2, "sign", counting)
    w = hand_signed("GET", b"/bkt/key", b"", "/bkt/key", access_key="AKIDNOPE")
    err = raises(InvalidAccessKeyId, w.verify)
    assert err.status == 403
    assert err.fields["AWSAccessKeyId"] == "AKIDNOPE"
    assert calls and SK not in calls  # a dummy secret did the same work
    calls.clear()
    raises(SignatureDoesNotMatch, hand_signed("GET", b"/bkt/key", b"", "/", secret="x").verify)
    assert calls == [SK]


def test_request_time_must_be_within_fifteen_minutes() -> None:
    w = hand_signed("GET", b"/bkt/key", b"", "/bkt/key")
    assert w.verify(NOW + 900).access_key == AK
    assert w.verify(NOW - 900).access_key == AK
    err = raises(RequestTimeTooSkewed, w.verify, NOW + 901)
    assert err.status == 403
    assert err.fields["RequestTime"] == NOW_HTTP
    assert err.fields["MaxAllowedSkewMilliseconds"] == "900000"
    raises(RequestTimeTooSkewed, w.verify, NOW - 901)


@pytest.mark.parametrize(
    "dates",
    [
        {},
        {"date": ["yesterday"]},
        {"date": ["Mon, 01 Jan 99999 12:00:00 GMT"]},
        {"x-amz-date": ["nope"], "date": [NOW_HTTP]},
        {"x-amz-date": ["20241399T000000Z"]},
    ],
)
def test_missing_or_invalid_date_is_access_denied(dates: Headers) -> None:
    headers: Headers = {**dates, "authorization": [f"AWS {AK}:c2lnbmF0dXJl"]}
    err = raises(AccessDenied, Wire("GET", b"/b/k", [], headers).verify)
    assert err.message == "AWS authentication requires a valid Date or x-amz-date header"


@pytest.mark.parametrize("value", ["AWS", "AWS ", "AWS AKID", "AWS :sig", "AWS AKID:", "AWSX AKID:sig"])
def test_malformed_authorization_header(value: str) -> None:
    err = raises(InvalidArgument, parse_authorization_header, value)
    assert err.status == 400
    assert err.fields["ArgumentName"] == "Authorization"
    assert parse_authorization_header(f"AWS {AK}:a/b+c=") == (AK, "a/b+c=")


# --------------------------------------------------------------------------
# Presigned form against botocore's HmacV1QueryAuth
# --------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "url", "auth_path", "resource"), RESOURCE_CASES)
def test_presigned_form_matches_botocore(
    method: str, url: str, auth_path: str | None, resource: str
) -> None:
    presigned, botocore_sts = botocore_presigned(method, url, auth_path=auth_path)
    w = wire(method, presigned)
    params = dict(w.query)
    assert params["Expires"] == str(int(NOW) + 3600)
    assert our_string_to_sign(w, params["Expires"]) == botocore_sts
    result = w.verify()
    assert result == V2Result(access_key=AK, presigned=True, expires_at=NOW + 3600)


def test_presigned_headers_moved_into_the_query() -> None:
    """botocore puts signed x-amz-*, Content-Type and Content-MD5 into the URL."""
    signed = [("Content-Type", "text/plain"), ("x-amz-meta-k", "v"), ("x-amz-acl", "private")]
    url, botocore_sts = botocore_presigned("PUT", "http://h/bkt/key", signed)
    assert "x-amz-meta-k=v" in url and "content-type=text%2Fplain" in url
    assert botocore_sts == f"PUT\n\ntext/plain\n{int(NOW) + 3600}\nx-amz-acl:private\nx-amz-meta-k:v\n/bkt/key"
    bare = wire("PUT", url)
    assert bare.verify().access_key == AK
    # Sending the same headers is fine; a different or an extra one is not.
    same = wire("PUT", url, {"Content-Type": "text/plain", "x-amz-acl": "private"})
    assert same.verify().access_key == AK
    raises(SignatureDoesNotMatch, wire("PUT", url, {"x-amz-acl": "public-read"}).verify)
    raises(SignatureDoesNotMatch, wire("PUT", url, {"Content-Type": "text/html"}).verify)
    raises(SignatureDoesNotMatch, wire("PUT", url, {"x-amz-copy-source": "/other/key"}).verify)


def test_presigned_url_cannot_be_replayed_elsewhere() -> None:
    url, _ = botocore_presigned("GET", "http://h/bkt/key")
    w = wire("GET", url)
    raises(SignatureDoesNotMatch, Wire("PUT", w.raw_path, w.query).verify)
    raises(SignatureDoesNotMatch, Wire("GET", b"/bkt/other", w.query).verify)
    raises(SignatureDoesNotMatch, Wire("GET", b"/bkt/key", [*w.query, ("acl", "")]).verify)
    later = [(n, str(int(v) + 60) if n == "Expires" else v) for n, v in w.query]
    raises(SignatureDoesNotMatch, Wire("GET", b"/bkt/key", later).verify)


def test_presigned_expiry() -> None:
    url, _ = botocore_presigned("GET", "http://h/bkt/key", expires=60)
    w = wire("GET", url)
    assert w.verify(NOW + 60).expires_at == NOW + 60  # valid through its Expires second
    err = raises(AccessDenied, w.verify, NOW + 61)
    assert err.message == "Request has expired"
    assert err.fields == {"Expires": "2024-01-01T12:01:00Z", "ServerTime": "2024-01-01T12:01:01Z"}


def test_presigned_seven_day_cap() -> None:
    """At most a week ahead (plus the 15 minutes of clock skew SigV4 also allows)."""
    week, _ = botocore_presigned("GET", "http://h/bkt/key", expires=MAX_EXPIRES)
    assert wire("GET", week).verify().access_key == AK  # `aws s3 presign --expires-in 604800`
    edge, _ = botocore_presigned("GET", "http://h/bkt/key", expires=MAX_EXPIRES + 900)
    assert wire("GET", edge).verify().access_key == AK
    over, _ = botocore_presigned("GET", "http://h/bkt/key", expires=MAX_EXPIRES + 901)
    err = raises(AccessDenied, wire("GET", over).verify)
    assert err.status == 403
    assert "604800" in err.message
    # The same URL is fine once it is within a week.
    assert wire("GET", over).verify(NOW + 1).access_key == AK


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (b"AWSAccessKeyId=AKIDTEST&Signature=abc", "Query-string authentication requires"),
        (b"Signature=abc&Expires=1704110400", "Query-string authentication requires"),
        (b"AWSAccessKeyId=AKIDTEST&Expires=1704110400", "Query-string authentication requires"),
        (b"AWSAccessKeyId=AKIDTEST&Signature=&Expires=1704110400", "Query-string authentication requires"),
        (b"AWSAccessKeyId=AKIDTEST&Signature=abc&Expires=soon", "Invalid date (should be seconds since epoch): soon"),
        (b"AWSAccessKeyId=AKIDTEST&Signature=abc&Expires=-5", "Invalid date"),
        (b"AWSAccessKeyId=AKIDTEST&Signature=abc&Expires=" + b"9" * 5000, "Invalid date"),
        (b"AWSAccessKeyId=AKIDTEST&Signature=abc&Expires=" + b"9" * 20, "at most a week"),
        (b"AWSAccessKeyId=A&AWSAccessKeyId=B&Signature=abc&Expires=1704110400", "must appear only once"),
    ],
)
def test_malformed_presigned_parameters(query: bytes, message: str) -> None:
    err = raises(AccessDenied, Wire("GET", b"/b/k", parse_query(query)).verify)
    assert message in err.message


def test_presigned_wrong_secret_and_unknown_key() -> None:
    request = AWSRequest(method="GET", url="http://h/bkt/key")
    FixedHmacV1QueryAuth(creds("wrong")).add_auth(request)
    err = raises(SignatureDoesNotMatch, wire("GET", request.url).verify)
    assert err.fields["StringToSign"] == f"GET\n\n\n{int(NOW) + 3600}\n/bkt/key"
    request = AWSRequest(method="GET", url="http://h/bkt/key")
    FixedHmacV1QueryAuth(Credentials("AKIDNOPE", SK)).add_auth(request)
    raises(InvalidAccessKeyId, wire("GET", request.url).verify)


# --------------------------------------------------------------------------
# Real presigned URLs: boto3 generate_presigned_url and `aws s3 presign`
# --------------------------------------------------------------------------


def boto3_v2_client(addressing_style: str, endpoint_url: str | None = "http://s3.example.test") -> Any:
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=AK,
        aws_secret_access_key=SK,
        config=Config(signature_version="s3", s3={"addressing_style": addressing_style}),
    )


def expires_of(url: str) -> int:
    return int(dict(parse_query(urlsplit(url).query.encode()))["Expires"])


@pytest.mark.parametrize("key", KEYS)
def test_boto3_generate_presigned_url_verifies(key: str) -> None:
    client = boto3_v2_client("path")
    cases: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "get_object", {"Key": key}),
        ("GET", "get_object", {"Key": key, "ResponseContentType": "text/plain; x=1", "VersionId": "v+1"}),
        ("PUT", "put_object", {"Key": key, "ContentType": "image/png", "Metadata": {"a": "b"}}),
        ("DELETE", "delete_object", {"Key": key}),
        ("PUT", "upload_part", {"Key": key, "UploadId": "u 1", "PartNumber": 7}),
        ("GET", "list_objects", {"Prefix": key}),
    ]
    for method, operation, params in cases:
        url = client.generate_presigned_url(operation, Params={"Bucket": "bkt", **params}, ExpiresIn=300)
        assert "AWSAccessKeyId=" in url and "X-Amz-" not in url
        now = expires_of(url) - 300
        result = wire(method, url).verify(now)
        assert result.presigned and result.access_key == AK
        raises(AccessDenied, wire(method, url).verify, now + 301)


def test_boto3_virtual_hosted_presigned_url_needs_bucket_from_host() -> None:
    client = boto3_v2_client("virtual")
    for params in ({"Bucket": "bkt", "Key": "a b"}, {"Bucket": "bkt"}):
        op = "get_object" if "Key" in params else "list_objects"
        url = client.generate_presigned_url(op, Params=params)
        assert urlsplit(url).netloc == "bkt.s3.example.test"
        now = expires_of(url) - 3600
        assert wire("GET", url).verify(now, bucket_from_host="bkt").access_key == AK
        raises(SignatureDoesNotMatch, wire("GET", url).verify, now)


_HYPOTHESIS_CLIENT = boto3_v2_client("path")


@given(st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=40))
@settings(max_examples=60, deadline=None)
def test_any_key_presigned_by_boto3_verifies(key: str) -> None:
    url = _HYPOTHESIS_CLIENT.generate_presigned_url("get_object", Params={"Bucket": "bkt", "Key": key})
    assert wire("GET", url).verify(expires_of(url) - 3600).access_key == AK


def aws_cli_presign(tmp_path: Path, *args: str) -> str:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "AWS_ACCESS_KEY_ID": AK,
        "AWS_SECRET_ACCESS_KEY": SK,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "missing-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "missing-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    done = subprocess.run(
        [str(VENV_BIN / "aws"), "s3", "presign", *args],
        env=env, capture_output=True, text=True, timeout=120, check=True,
    )
    return done.stdout.strip()


def test_aws_cli_default_presign_verifies(tmp_path: Path) -> None:
    """`aws s3 presign` (CLI v1, no signature_version configured) presigns with SigV2."""
    url = aws_cli_presign(
        tmp_path, "s3://bkt/dir/a b+c%d/ü//x", "--endpoint-url", "http://127.0.0.1:9000",
        "--expires-in", "600",
    )
    parts = urlsplit(url)
    assert parts.path == "/bkt/dir/a%20b%2Bc%25d/%C3%BC//x"
    assert {name for name, _ in parse_query(parts.query.encode())} == {"AWSAccessKeyId", "Signature", "Expires"}
    now = expires_of(url) - 600
    result = wire("GET", url).verify(now)
    assert result == V2Result(access_key=AK, presigned=True, expires_at=float(expires_of(url)))
    raises(AccessDenied, wire("GET", url).verify, now + 601)
    raises(SignatureDoesNotMatch, wire("PUT", url).verify, now)


def test_aws_cli_default_endpoint_presign_is_virtual_hosted(tmp_path: Path) -> None:
    url = aws_cli_presign(tmp_path, "s3://bkt/key.txt")
    parts = urlsplit(url)
    assert parts.netloc == "bkt.s3.amazonaws.com" and parts.path == "/key.txt"
    now = expires_of(url) - 3600
    assert wire("GET", url).verify(now, bucket_from_host="bkt").access_key == AK


# --------------------------------------------------------------------------
# Through s3orch.auth.authenticate
# --------------------------------------------------------------------------


def registry() -> CredentialRegistry:
    return CredentialRegistry(
        [
            SimpleNamespace(
                name="bkt",
                credentials=[SimpleNamespace(access_key_id=AK, secret_access_key=SK, token=None)],
            ),
            SimpleNamespace(
                name="other",
                credentials=[SimpleNamespace(access_key_id="AKIDOTHER", secret_access_key="s2", token=None)],
            ),
        ]
    )


def through(w: Wire, now: float = NOW, **kwargs: Any) -> Any:
    return authenticate_request(registry(), w.method, w.raw_path, w.query, w.headers, now, **kwargs)


def test_authenticate_header_form() -> None:
    w, _ = botocore_header_signed("PUT", "http://h/bkt/key?uploadId=u&partNumber=1")
    outcome = through(w)
    assert outcome.principal == Principal("bkt", AK, "sigv2")
    assert outcome.sigv4 is None


def test_authenticate_presigned_form() -> None:
    url, _ = botocore_presigned("GET", "http://h/bkt/key")
    outcome = through(wire("GET", url))
    assert outcome.principal == Principal("bkt", AK, "sigv2-presigned")
    assert outcome.sigv4 is None


def test_authenticate_virtual_hosted_presigned() -> None:
    url = boto3_v2_client("virtual").generate_presigned_url(
        "get_object", Params={"Bucket": "bkt", "Key": "k"}
    )
    now = expires_of(url) - 3600
    outcome = through(wire("GET", url), now, bucket_from_host="bkt")
    assert outcome.principal == Principal("bkt", AK, "sigv2-presigned")
    raises(SignatureDoesNotMatch, through, wire("GET", url), now)


def test_authenticate_other_buckets_key_names_its_own_bucket() -> None:
    """Bucket isolation is the caller's check: the principal names the key's bucket."""
    sts = f"GET\n\n\n{NOW_HTTP}\n/bkt/key"
    w = Wire("GET", b"/bkt/key", [], {
        "date": [NOW_HTTP], "authorization": [f"AWS AKIDOTHER:{sign('s2', sts)}"],
    })
    assert through(w).principal == Principal("other", "AKIDOTHER", "sigv2")


def test_authenticate_errors() -> None:
    w, _ = botocore_header_signed("GET", "http://h/bkt/key")
    raises(SignatureDoesNotMatch, through, Wire("GET", b"/bkt/kez", w.query, w.headers))
    raises(RequestTimeTooSkewed, through, w, NOW + 3600)
    url, _ = botocore_presigned("GET", "http://h/bkt/key")
    raises(AccessDenied, through, wire("GET", url), NOW + 3601)


def test_sigv2_can_be_disabled() -> None:
    header_form, _ = botocore_header_signed("GET", "http://h/bkt/key")
    url, _ = botocore_presigned("GET", "http://h/bkt/key")
    for w in (header_form, wire("GET", url)):
        err = raises(AccessDenied, through, w, allow_sigv2=False)
        assert err.message == "Signature Version 2 is disabled"
        assert err.status == 403


def test_only_one_auth_mechanism() -> None:
    w, _ = botocore_header_signed("GET", "http://h/bkt/key")
    url, _ = botocore_presigned("GET", "http://h/bkt/key")
    both = Wire("GET", w.raw_path, wire("GET", url).query, w.headers)
    err = raises(InvalidArgument, through, both)
    assert err.fields["ArgumentName"] == "Authorization"
    v4_and_v2 = Wire("GET", w.raw_path, [*wire("GET", url).query, ("X-Amz-Algorithm", "AWS4-HMAC-SHA256")])
    raises(InvalidArgument, through, v4_and_v2)


def test_botocore_signers_are_the_ones_we_mean() -> None:
    """Guard: the classes compared against are botocore's registered SigV2 signers."""
    assert botocore.auth.AUTH_TYPE_MAPS["s3"] is HmacV1Auth
    assert botocore.auth.AUTH_TYPE_MAPS["s3-query"] is HmacV1QueryAuth
