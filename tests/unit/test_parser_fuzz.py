"""Every header and query parser of the front door, fuzzed: only S3 errors come out.

Issue 11 item 8.  Each parser gets arbitrary text (Unicode digits, surrogates from
``surrogateescape``-decoded bytes, control characters, huge numbers) and must
either return a bounded result or raise an :class:`S3Error` whose XML document can
be built.  Example counts are fixed per test (``settings(max_examples=examples(...))``) so
the total is known: the count written under CI, a tenth of it locally (tests/support/fuzz.py; pytest's
header says which); a memory test feeds each parser the largest input a request
line or header can carry and bounds its peak allocation.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s3orch.http.body import parse_content_md5
from s3orch.s3.addressing import Address, parse_address, virtual_bucket
from s3orch.s3.checksums import parse_checksum_headers
from s3orch.s3.conditions import check_read_conditions, parse_etag_list, parse_http_date
from s3orch.s3.copy_source import parse_copy_source, parse_copy_source_range, parse_metadata_directive
from s3orch.s3.errors import S3Error
from s3orch.s3.listing import (
    decode_continuation_token,
    parse_list_objects,
    parse_list_parts,
    parse_list_uploads,
)
from s3orch.s3.metadata import extract_object_metadata, response_header_overrides
from s3orch.s3.multipart import (
    SIZE_HINT_HEADER,
    parse_complete_checksum_type,
    parse_part_number,
    parse_size_hint,
)
from s3orch.s3.object_attributes import parse_object_attributes, parse_parts_page
from s3orch.s3.operations import resolve_operation
from s3orch.s3.ranges import parse_content_range, parse_range
from tests.support.fuzz import examples

#: Text as the front door sees it: any code point, plus lone surrogates standing
#: for undecodable bytes, plus digit look-alikes.
hostile_text = st.one_of(
    st.text(max_size=60),
    st.text(st.sampled_from(list("0123456789-=,* \t\u00b2\u0663\uff11\udcff\udce9\x00\r\n\"W/bytes")), max_size=40),
    st.binary(max_size=40).map(lambda b: b.decode("utf-8", "surrogateescape")),
)


def _only_s3_errors(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except S3Error as exc:
        assert exc.to_xml("rid", "/b/k").startswith(b"<?xml")
        return None


@settings(max_examples=examples(2000))
@given(hostile_text, st.integers(min_value=0, max_value=10**13))
def test_range_header(header: str, size: int) -> None:
    found = _only_s3_errors(lambda: parse_range(header, size))
    if found is not None:
        start, end = found
        assert 0 <= start <= end < size


@settings(max_examples=examples(1000))
@given(hostile_text)
def test_backend_content_range(value: str) -> None:
    found = parse_content_range(value)
    if found is not None:
        assert found[0] <= found[1] < found[2]


conditional_headers = st.dictionaries(
    st.sampled_from(["if-match", "if-none-match", "if-modified-since", "if-unmodified-since", "If-Match"]),
    st.lists(
        st.one_of(
            hostile_text,
            st.sampled_from([
                "Sat, 01 Jan 10000 00:00:00 GMT", "Mon, 01 Jan 0001 00:00:00 +9999",
                "Thu, 01 Jan 1970 00:00:00 -2400", '"abc", W/"def", *', "Fri, 31 Dec 9999 23:59:59 GMT",
            ]),
        ),
        min_size=1, max_size=2,
    ),
    max_size=4,
)


@settings(max_examples=examples(2000))
@given(conditional_headers, st.floats(min_value=0, max_value=2**33, allow_nan=False))
def test_read_conditions(headers: dict[str, list[str]], last_modified: float) -> None:
    _only_s3_errors(lambda: check_read_conditions(headers, '"abc"', last_modified, now=1.7e9))


@settings(max_examples=examples(1000))
@given(hostile_text)
def test_http_dates_and_etag_lists(value: str) -> None:
    parsed = parse_http_date(value)
    assert parsed is None or isinstance(parsed, float)
    assert parse_etag_list(value) is not None


@settings(max_examples=examples(2000))
@given(
    st.one_of(st.none(), hostile_text, st.sampled_from(["b.s3.test", "[::1]:9000", "x.s3.test."])),
    st.binary(max_size=80).map(lambda b: b"/" + b),
)
def test_addressing(host: str | None, raw_path: bytes) -> None:
    address = _only_s3_errors(lambda: parse_address(host, raw_path, "s3.test"))
    if address is not None and address.key is not None:
        address.key.encode("utf-8")  # a key the store can always hold
    virtual_bucket(host, "s3.test")


@settings(max_examples=examples(2000))
@given(
    st.sampled_from(["GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS"]),
    st.lists(st.tuples(hostile_text, hostile_text), max_size=4),
    st.booleans(),
)
def test_operation_resolution(method: str, query: list[tuple[str, str]], object_level: bool) -> None:
    address = Address("b", "k" if object_level else None)
    _only_s3_errors(lambda: resolve_operation(method, address, query, {"x-amz-copy-source": ["/b/x"]}))


@settings(max_examples=examples(2000), suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["max-keys", "prefix", "delimiter", "encoding-type", "marker", "start-after"]),
            st.one_of(hostile_text, st.integers(-(10**30), 10**30).map(str)),
        ),
        max_size=5,
    )
)
def test_listing_parameters(query: list[tuple[str, str]]) -> None:
    found = _only_s3_errors(lambda: parse_list_objects(query))
    if found is not None:
        assert 0 <= found.max_keys <= 1000


@settings(max_examples=examples(1000))
@given(st.sampled_from(["partNumber", "max-parts", "part-number-marker", "max-uploads"]), hostile_text)
def test_multipart_numbers(name: str, value: str) -> None:
    number = _only_s3_errors(lambda: parse_part_number(value))
    assert number is None or 1 <= number <= 10000
    parts = _only_s3_errors(lambda: parse_list_parts([(name, value)]))
    assert parts is None or (0 <= parts.max_parts <= 1000 and 0 <= parts.marker <= 2147483647)
    uploads = _only_s3_errors(lambda: parse_list_uploads([(name, value)]))
    assert uploads is None or 0 <= uploads.max_uploads <= 1000


@settings(max_examples=examples(1000))
@given(hostile_text, st.integers(min_value=0, max_value=10**13))
def test_multipart_and_attribute_headers(value: str, size: int) -> None:
    copied = _only_s3_errors(lambda: parse_copy_source_range(value, size))
    assert copied is None or 0 <= copied[0] <= copied[1] < size
    hint = _only_s3_errors(lambda: parse_size_hint({SIZE_HINT_HEADER: [value]}))
    assert hint is None or hint >= 0
    page = _only_s3_errors(lambda: parse_parts_page({"x-amz-max-parts": [value], "x-amz-part-number-marker": [value]}))
    assert page is None or (0 <= page.max_parts <= 1000 and 0 <= page.marker <= 2147483647)
    wanted = _only_s3_errors(lambda: parse_object_attributes({"x-amz-object-attributes": [value]}))
    assert wanted is None or wanted
    _only_s3_errors(lambda: parse_metadata_directive(value))
    _only_s3_errors(lambda: parse_complete_checksum_type({"x-amz-checksum-type": [value]}))


@settings(max_examples=examples(1000))
@given(hostile_text)
def test_continuation_token_and_copy_source(value: str) -> None:
    _only_s3_errors(lambda: decode_continuation_token(value))
    source = _only_s3_errors(lambda: parse_copy_source(value))
    if source is not None:
        source[1].encode("utf-8")


@settings(max_examples=examples(2000))
@given(
    st.dictionaries(
        st.sampled_from([
            "x-amz-checksum-crc32", "x-amz-checksum-crc32c", "x-amz-checksum-crc64nvme",
            "x-amz-checksum-sha1", "x-amz-checksum-sha256",
        ]),
        st.lists(hostile_text, min_size=1, max_size=2),
        max_size=2,
    ),
    hostile_text,
)
def test_checksum_and_md5_headers(headers: dict[str, list[str]], md5: str) -> None:
    _only_s3_errors(lambda: parse_checksum_headers(headers))
    _only_s3_errors(lambda: parse_content_md5(md5))


@settings(max_examples=examples(2000))
@given(
    st.dictionaries(
        st.sampled_from(["content-type", "x-amz-meta-a", "x-amz-meta-", "content-encoding", "expires"]),
        st.lists(hostile_text, min_size=1, max_size=2),
        max_size=4,
    ),
    st.lists(st.tuples(st.sampled_from(["response-content-type", "response-expires"]), hostile_text), max_size=2),
)
def test_metadata_and_overrides(headers: dict[str, list[str]], query: list[tuple[str, str]]) -> None:
    _only_s3_errors(lambda: extract_object_metadata(headers))
    _only_s3_errors(lambda: response_header_overrides(query))


def test_parsers_stay_in_bounded_memory_on_the_largest_inputs() -> None:
    """64 KiB is more than any request line or header Twisted lets through."""
    big_digits = "9" * 65536
    big = "\u00b2" * 65536
    inputs: list[Callable[[], Any]] = [
        lambda: parse_range("bytes=" + big_digits + "-" + big_digits, 10),
        lambda: parse_range("bytes=" + ",".join(["1-2"] * 10000), 10),
        lambda: check_read_conditions({"if-match": ['"a",' * 16000]}, "a", 0.0, now=1.0),
        lambda: check_read_conditions({"if-modified-since": [big]}, "a", 0.0, now=1.0),
        lambda: parse_address("h", b"/b/" + b"%41" * 20000),
        lambda: parse_checksum_headers({"x-amz-checksum-sha256": [big]}),
        lambda: extract_object_metadata({"x-amz-meta-k": [big]}),
        lambda: response_header_overrides([("response-content-type", big)]),
        lambda: parse_list_objects([("max-keys", big_digits)]),
        lambda: decode_continuation_token(big),
    ]
    for run in inputs:
        tracemalloc.start()
        try:
            _only_s3_errors(run)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 4 * 1024 * 1024, (run, peak)
