"""Hypothesis fuzzing of every parser a client reaches before it is authenticated.

Each property feeds hostile input (text, invalid UTF-8 decoded the way the front door
decodes it, near-valid structures) and asserts that only ``S3Error`` subclasses come out,
that every error body is encodable and bounded, and that the aws-chunked decoder never
emits more than it was fed or buffers more than one line.

Example counts: each property runs ``FAST`` examples in the default suite and ``DEEP``
examples in its ``slow``-marked variant: 2,000 under CI, a tenth of that locally
(tests/support/fuzz.py; pytest's header says which).
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s3orch.auth import sigv2
from s3orch.auth.authenticate import authenticate as authenticate_request
from s3orch.auth.registry import CredentialRegistry
from s3orch.s3 import sigv4
from s3orch.s3.chunked import MAX_LINE, AwsChunkedDecoder
from s3orch.s3.errors import S3Error
from s3orch.s3.numbers import parse_decimal
from tests.support.fuzz import examples

FAST = 300
DEEP = examples(2000)
#: No error body may exceed this, whatever the (capped) input.
MAX_ERROR_BODY = 16 * 1024

AK = "AKIDFUZZ"
SK = "fuzz-secret"
AMZ_DATE = "20240101T000000Z"
NOW = float(calendar.timegm(time.strptime(AMZ_DATE, "%Y%m%dT%H%M%SZ")))
HTTP_DATE = "Mon, 01 Jan 2024 00:00:00 GMT"


def lookup(access_key: str) -> str | None:
    return SK if access_key == AK else None


def run(examples: int, check: Callable[..., None], *strategies: st.SearchStrategy[Any]) -> None:
    """Run ``check`` over ``examples`` generated inputs (no example database: reproducible runs)."""
    settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )(given(*strategies)(check))()


EXAMPLES = pytest.mark.parametrize("examples", [FAST, pytest.param(DEEP, marks=pytest.mark.slow)])


def expect_s3_error_only(call: Callable[[], object]) -> None:
    """Call; an ``S3Error`` is fine if its XML body encodes and is bounded; anything else fails."""
    try:
        call()
    except S3Error as error:
        body = error.to_xml("request-id", "/resource")
        assert len(body) <= MAX_ERROR_BODY, (error.code, len(body))
        body.decode("utf-8")


# --------------------------------------------------------------------------
# Strategies: text as the front door hands it over
# --------------------------------------------------------------------------

#: Bytes from the wire decoded as the front door decodes them (invalid UTF-8 survives as surrogates).
wire_bytes = st.binary(max_size=200).map(lambda b: b.decode("utf-8", "surrogateescape"))
tokens = st.sampled_from(
    [
        "", " ", "/", ";", ",", "=", "&", "%", "%FF", "\x00", "\u00b2", "\u0661", "\ufffd", "9" * 40,
        "-1", "0", "604800", "604801", "host", "x-amz-date", "x-amz-content-sha256", "aws4_request",
        "s3", "iam", "us-east-1", AK, SK, AMZ_DATE, HTTP_DATE, "20240101", sigv4.UNSIGNED_PAYLOAD,
        sigv4.STREAMING_PAYLOAD, sigv4.EMPTY_SHA256, "0" * 64, "AWS4-HMAC-SHA256", "AWS",
    ]
)
fragment = st.one_of(tokens, st.text(max_size=60), wire_bytes)
fragments = st.lists(fragment, max_size=6).map("".join)

def mostly(valid: Any, other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``valid`` three times in four, else ``other``: deep paths get reached, not just the first check."""
    return st.one_of(st.just(valid), st.just(valid), st.just(valid), other)


signed_header_names = st.one_of(
    st.just("host;x-amz-content-sha256;x-amz-date"),
    st.just("host;x-amz-date"),
    st.lists(
        st.one_of(st.sampled_from(["host", "x-amz-date", "x-amz-content-sha256", "HOST", "", " date"]), fragment),
        max_size=300,
    ).map(";".join),
)

credential = st.one_of(
    st.tuples(
        mostly(AK, fragment),
        mostly("20240101", fragment),
        mostly("us-east-1", fragment),
        mostly("s3", st.one_of(st.sampled_from(["iam", "sts"]), fragment)),
        mostly("aws4_request", fragment),
    ).map("/".join),
    fragments,
)

authorization_v4 = st.builds(
    lambda algorithm, parts, junk: f"{algorithm} " + ", ".join(parts + junk),
    mostly("AWS4-HMAC-SHA256", st.one_of(st.sampled_from(["AWS4-ECDSA-P256-SHA256", "Bearer"]), fragment)),
    st.permutations(["Credential=", "SignedHeaders=", "Signature="]).flatmap(
        lambda names: st.tuples(credential, signed_header_names, mostly("0" * 64, fragments)).map(
            lambda values: [n + v for n, v in zip(names, values, strict=True)]
        )
    ),
    mostly([], st.lists(fragments, min_size=1, max_size=2)),
)


def _headers(authorization: st.SearchStrategy[str | None]) -> st.SearchStrategy[dict[str, list[str]]]:
    amz_names = st.one_of(
        st.sampled_from(["x-amz-meta-a", "x-amz-copy-source", "x-amz-acl", "x-amz-decoded-content-length"]),
        st.text(max_size=20).map(lambda s: "x-amz-" + s.lower()),
    )
    return st.builds(
        lambda auth, date, http_date, sha, extra: {
            k: v
            for k, v in {
                "host": ["h.test"],
                "authorization": [auth] if auth is not None else None,
                "x-amz-date": [date] if date is not None else None,
                "date": [http_date] if http_date is not None else None,
                "x-amz-content-sha256": [sha] if sha is not None else None,
                **{name: [value] for name, value in extra},
            }.items()
            if v is not None
        },
        authorization,
        mostly(AMZ_DATE, st.one_of(st.none(), fragment)),
        st.one_of(st.none(), st.just(HTTP_DATE), fragment),
        mostly(sigv4.EMPTY_SHA256, st.one_of(st.none(), fragment)),
        mostly([], st.lists(st.tuples(amz_names, fragment), min_size=1, max_size=3)),
    )


query_pairs = st.lists(st.tuples(fragment, fragment), max_size=6)

presigned_query = st.builds(
    lambda values, extra: [(name, value) for name, value in values if value is not None] + extra,
    st.tuples(
        *(
            st.tuples(st.just(name), st.one_of(*[good] * 8, st.none(), fragment))
            for name, good in (
                ("X-Amz-Algorithm", st.just("AWS4-HMAC-SHA256")),
                ("X-Amz-Credential", credential),
                ("X-Amz-Date", st.just(AMZ_DATE)),
                ("X-Amz-Expires", st.sampled_from(["0", "1", "60", "604800", "604801", "-5", "9" * 30])),
                ("X-Amz-SignedHeaders", signed_header_names),
                ("X-Amz-Signature", st.just("0" * 64)),
            )
        )
    ),
    query_pairs,
)

raw_paths = st.one_of(st.just(b"/b/k"), st.binary(max_size=100).map(lambda b: b"/" + b))


Request = tuple[str, bytes, list[tuple[str, str]], dict[str, list[str]]]


def _tamper(request: Request, mutation: tuple[int, str, str]) -> Request:
    """One change a man in the middle (or a sloppy client) could make to a signed request."""
    method, path, query, headers = request
    kind, name, value = mutation
    headers = {k: list(v) for k, v in headers.items()}
    query = list(query)
    if kind == 0:
        headers.setdefault(name, []).append(value)
    elif kind == 1 and headers:
        headers[sorted(headers)[len(value) % len(headers)]] = [value]
    elif kind == 2:
        query.append((name, value))
    elif kind == 3 and "authorization" in headers:  # reorder or repeat the signed names
        auth = headers["authorization"][0]
        head, _, rest = auth.partition("SignedHeaders=")
        names, _, tail = rest.partition(",")
        listed = names.split(";")
        listed = listed[::-1] if len(value) % 2 else listed + listed[:1]
        headers["authorization"] = [f"{head}SignedHeaders={';'.join(listed)},{tail}"]
    elif kind == 4:
        method = "DELETE"
    elif kind == 5 and query:
        query[len(value) % len(query)] = (query[len(value) % len(query)][0], value)
    elif kind == 6 and headers:
        headers.pop(sorted(headers)[len(value) % len(headers)])
    return method, path, query, headers


@st.composite
def tampered_requests(draw: st.DrawFn) -> Request:
    """A request correctly signed (header or presigned), then changed 0-3 times."""
    key = draw(st.text(max_size=40))
    path = "/b/" + quote(key, safe="/")
    extra = draw(st.dictionaries(st.sampled_from(["x-amz-meta-a", "x-amz-tagging", "content-type", "range"]),
                                 st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30),
                                 max_size=3))
    url = f"http://h.test{path}" + draw(st.sampled_from(["", "?acl", "?list-type=2&prefix=a%20b", "?uploadId=u"]))
    if draw(st.booleans()):
        method = draw(st.sampled_from(["GET", "PUT"]))
        added = sigv4.sign_headers(method, url, extra, sigv4.EMPTY_SHA256, AK, SK, "us-east-1", NOW)
        headers = {k.lower(): [v] for k, v in {**extra, **added}.items()}
        headers["host"] = ["h.test"]
        url_parts = urlsplit(url)
        request: Request = (method, url_parts.path.encode(), sigv4.parse_query(url_parts.query.encode()), headers)
    else:
        signed_url = sigv4.presign_url("GET", url, AK, SK, "us-east-1", NOW, draw(st.integers(0, 700000)))
        url_parts = urlsplit(signed_url)
        request = ("GET", url_parts.path.encode(), sigv4.parse_query(url_parts.query.encode()), {"host": ["h.test"]})
    amz_names = st.one_of(st.sampled_from(["x-amz-meta-a", "x-amz-copy-source", "x-amz-date", "content-encoding"]),
                          fragment)
    for mutation in draw(st.lists(st.tuples(st.integers(0, 6), amz_names, fragment), max_size=3)):
        request = _tamper(request, mutation)
    return request


# --------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------


@EXAMPLES
def test_authorization_header_parser_fuzz(examples: int) -> None:
    def check(value: str) -> None:
        expect_s3_error_only(lambda: sigv4.parse_authorization_header(value))

    run(examples, check, st.one_of(authorization_v4, fragments))


@EXAMPLES
def test_sigv4_header_authentication_fuzz(examples: int) -> None:
    def check(method: str, path: bytes, query: list[tuple[str, str]], headers: dict[str, list[str]]) -> None:
        request = sigv4.SignedRequest(method, path, query, headers)
        expect_s3_error_only(lambda: sigv4.authenticate(request, lookup, NOW, regions=("us-east-1",)))

    run(examples, check, st.sampled_from(["GET", "PUT"]), raw_paths, query_pairs, _headers(authorization_v4))


@EXAMPLES
def test_sigv4_signed_then_tampered_fuzz(examples: int) -> None:
    """Deep paths: real signatures, then the changes an attacker would make; results are consistent."""

    def check(request: Request) -> None:
        method, path, query, headers = request
        signed_request = sigv4.SignedRequest(method, path, query, headers)
        try:
            result = sigv4.authenticate(signed_request, lookup, NOW + 30)
        except S3Error as error:
            assert len(error.to_xml("rid")) <= MAX_ERROR_BODY
            return
        # Whatever verified: every x-amz-* header it carries is covered by the signature.
        assert {n for n in headers if n.startswith("x-amz-")} <= set(result.signed_headers) | {"x-amz-content-sha256"}
        assert result.access_key == AK

    run(examples, check, tampered_requests())


@EXAMPLES
def test_sigv4_presigned_query_fuzz(examples: int) -> None:
    def check(path: bytes, query: list[tuple[str, str]], headers: dict[str, list[str]]) -> None:
        request = sigv4.SignedRequest("GET", path, query, headers)
        expect_s3_error_only(lambda: sigv4.authenticate(request, lookup, NOW))

    run(examples, check, raw_paths, presigned_query, _headers(st.none()))


authorization_v2 = st.one_of(
    st.builds(lambda ak, sig: f"AWS {ak}:{sig}", st.one_of(st.just(AK), fragment), fragment),
    fragments.map(lambda s: "AWS " + s),
)

v2_query = st.builds(
    lambda values, extra: [(name, value) for name, value in values if value is not None] + extra,
    st.tuples(
        st.tuples(st.just("AWSAccessKeyId"), st.one_of(st.none(), st.just(AK), fragment)),
        st.tuples(st.just("Signature"), st.one_of(st.none(), fragment)),
        st.tuples(
            st.just("Expires"),
            st.one_of(st.none(), st.sampled_from([str(int(NOW) + 60), "0", "9" * 25, "\u0661"]), fragment),
        ),
    ),
    st.lists(st.tuples(st.sampled_from(sorted(sigv2.SUBRESOURCES)) | fragment, fragment), max_size=4),
)


@EXAMPLES
def test_sigv2_header_and_query_fuzz(examples: int) -> None:
    def check(path: bytes, query: list[tuple[str, str]], headers: dict[str, list[str]], bucket: str | None) -> None:
        expect_s3_error_only(
            lambda: sigv2.authenticate("GET", path, query, headers, lookup, NOW, bucket_from_host=bucket)
        )
        if "authorization" in headers:
            expect_s3_error_only(lambda: sigv2.parse_authorization_header(headers["authorization"][0]))

    run(
        examples,
        check,
        raw_paths,
        st.one_of(query_pairs, v2_query),
        _headers(st.one_of(st.none(), authorization_v2)),
        st.one_of(st.none(), st.just("b"), fragment),
    )


@st.composite
def tampered_v2_requests(draw: st.DrawFn) -> Request:
    """A SigV2 request correctly signed (header form), then changed 0-3 times."""
    path = ("/b/" + quote(draw(st.text(max_size=30)), safe="/")).encode()
    query = draw(st.lists(st.tuples(st.sampled_from(sorted(sigv2.SUBRESOURCES)) | fragment, fragment), max_size=3))
    headers = {
        "date": [HTTP_DATE],
        **draw(st.dictionaries(st.sampled_from(["x-amz-meta-a", "x-amz-acl", "content-type", "content-md5"]),
                               st.lists(fragment, min_size=1, max_size=2), max_size=3)),
    }

    def one(name: str) -> str:
        return ",".join(v.strip() for v in headers.get(name, []))

    sts = sigv2.string_to_sign("PUT", one("content-md5"), one("content-type"), HTTP_DATE,
                               sigv2.canonical_amz_headers(headers), sigv2.canonical_resource(path, query))
    headers["authorization"] = [f"AWS {AK}:{sigv2.sign(SK, sts)}"]
    request: Request = ("PUT", path, query, headers)
    for mutation in draw(st.lists(st.tuples(st.integers(0, 6), fragment, fragment), max_size=3)):
        request = _tamper(request, mutation)
    return request


@EXAMPLES
def test_sigv2_signed_then_tampered_fuzz(examples: int) -> None:
    def check(request: Request) -> None:
        method, path, query, headers = request
        expect_s3_error_only(lambda: sigv2.authenticate(method, path, query, headers, lookup, NOW))

    run(examples, check, tampered_v2_requests())


@EXAMPLES
def test_authentication_dispatcher_fuzz(examples: int) -> None:
    class Bucket:
        name = "b"
        credentials = [type("C", (), {"access_key_id": AK, "secret_access_key": SK, "token": "tok"})()]

    registry = CredentialRegistry([Bucket()])

    def check(query: list[tuple[str, str]], headers: dict[str, list[str]], token: str | None) -> None:
        if token is not None:
            headers = {**headers, "x-proxy-token": [token]}
        expect_s3_error_only(
            lambda: authenticate_request(registry, "PUT", b"/b/k", query, headers, NOW, regions=("us-east-1",))
        )

    run(
        examples,
        check,
        st.one_of(query_pairs, presigned_query, v2_query),
        _headers(st.one_of(st.none(), authorization_v4, authorization_v2, fragment)),
        st.one_of(st.none(), st.just("tok"), fragment),
    )


@EXAMPLES
def test_date_and_number_parsers_fuzz(examples: int) -> None:
    def check(value: str) -> None:
        for parse in (sigv4.parse_http_date, sigv4.parse_amz_date):
            moment = parse(value)
            assert moment is None or isinstance(moment, float)
            if moment is not None:
                sigv4.format_amz_date(moment)  # every accepted date formats
        number = parse_decimal(value)
        assert number is None or (value.isascii() and 0 <= number < 10**19)

    dates = st.builds(
        lambda day, month, year, clock, zone: f"Mon, {day} {month} {year} {clock} {zone}",
        st.integers(-5, 99).map(str) | fragment,
        st.sampled_from(["Jan", "Feb", "Dec", "xyz"]) | fragment,
        st.integers(-(10**12), 10**12).map(str) | fragment,
        st.sampled_from(["00:00:00", "23:59:60", "99:99:99"]) | fragment,
        st.integers(-(10**9), 10**9).map(lambda n: f"{n:+05d}") | st.sampled_from(["GMT", "-0000", "UT"]) | fragment,
    )
    run(examples, check, st.one_of(dates, fragments, st.text(alphabet="0123456789TZ", max_size=20)))


def _frame(chunks: list[bytes], extension: str, final: bytes) -> bytes:
    body = b"".join(b"%x%s\r\n%s\r\n" % (len(c), extension.encode("utf-8", "surrogateescape"), c) for c in chunks)
    return body + b"0" + extension.encode("utf-8", "surrogateescape") + b"\r\n" + final


chunked_bodies = st.one_of(
    st.binary(max_size=3000),
    st.builds(
        _frame,
        st.lists(st.binary(max_size=300), max_size=5),
        st.one_of(st.just(""), st.just(";chunk-signature=" + "0" * 64), fragment),
        st.one_of(st.just(b"\r\n"), st.just(b"x-amz-checksum-crc32:AAAAAA==\r\n\r\n"), st.binary(max_size=200)),
    ),
)


@EXAMPLES
def test_aws_chunked_decoder_fuzz(examples: int) -> None:
    def check(body: bytes, cuts: list[int], signed: bool, trailer: bool, declared: int | None, minimum: int) -> None:
        decoder = AwsChunkedDecoder(
            signed=signed,
            trailer=trailer,
            signing_key=b"k" * 32 if signed else None,
            seed_signature="0" * 64 if signed else None,
            amz_date=AMZ_DATE if signed else None,
            scope="20240101/us-east-1/s3/aws4_request" if signed else None,
            decoded_length=declared,
            max_chunk_size=1 << 20,
            min_chunk_size=minimum,
        )
        points = sorted({min(c, len(body)) for c in cuts} | {0, len(body)})
        produced = 0
        try:
            for start, end in zip(points, points[1:], strict=False):
                produced += len(decoder.feed(body[start:end]))
                assert len(decoder._line) <= MAX_LINE  # one line at most is ever buffered
            decoder.finish()
        except S3Error as error:
            assert len(error.to_xml("rid")) <= MAX_ERROR_BODY
        assert produced <= len(body)  # framing only ever removes bytes

    run(
        examples,
        check,
        chunked_bodies,
        st.lists(st.integers(0, 3000), max_size=8),
        st.booleans(),
        st.booleans(),
        st.one_of(st.none(), st.integers(0, 5000)),
        st.sampled_from([1, 8192]),
    )
