"""Bucket and key from Host + raw path: path-style, virtual-hosted, and every quirk of keys."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s3orch.s3.addressing import MAX_KEY_BYTES, Address, InvalidURI, parse_address
from s3orch.s3.errors import InvalidBucketName, KeyTooLongError, S3Error

SUFFIX = "s3.example.com"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"/", Address(None, None)),
        (b"/b", Address("b", None)),
        (b"/b/", Address("b", None)),
        (b"/b/k", Address("b", "k")),
        (b"/b//x", Address("b", "/x")),
        (b"/b/dir/", Address("b", "dir/")),
        (b"/b/a/./../c//", Address("b", "a/./../c//")),
        (b"/b/..", Address("b", "..")),
        (b"/b/a+b", Address("b", "a+b")),
        (b"/b/a%20b%2Fc", Address("b", "a b/c")),
        (b"/b/%2B", Address("b", "+")),
        (b"/b/%E2%82%AC", Address("b", "\u20ac")),
        (b"/b/%e2%82%ac", Address("b", "\u20ac")),
        ("/b/\u20ac".encode(), Address("b", "\u20ac")),
        (b"/b/k?acl", Address("b", "k")),
        (b"/b/k%3Facl", Address("b", "k?acl")),
        (b"/b?list-type=2", Address("b", None)),
        (b"/b%2Fc/k", Address("b/c", "k")),
    ],
)
def test_path_style(raw: bytes, expected: Address) -> None:
    assert parse_address("localhost:9000", raw) == expected


@pytest.mark.parametrize(
    "raw",
    [b"/b/%zz", b"/b/%", b"/b/a%2", b"/b/%E2%82", b"/b/%FF", b"/b/\xff", b"b/k", b""],
)
def test_undecodable_paths_are_invalid_uri(raw: bytes) -> None:
    with pytest.raises(InvalidURI) as info:
        parse_address(None, raw)
    assert info.value.status == 400
    assert info.value.code == "InvalidURI"


def test_empty_bucket_segment_is_refused() -> None:
    with pytest.raises(InvalidBucketName):
        parse_address(None, b"//k")


def test_key_length_limit_is_in_utf8_bytes_after_decoding() -> None:
    assert parse_address(None, b"/b/" + b"%41" * MAX_KEY_BYTES).key == "A" * 1024
    with pytest.raises(KeyTooLongError) as info:
        parse_address(None, b"/b/" + b"a" * (MAX_KEY_BYTES + 1))
    assert info.value.fields == {"Size": "1025", "MaxSizeAllowed": "1024"}
    euro = quote("\u20ac" * 342).encode()  # 1026 bytes, 342 characters
    with pytest.raises(KeyTooLongError):
        parse_address(None, b"/b/" + euro)


def test_key_length_limit_applies_to_virtual_hosted_style() -> None:
    with pytest.raises(KeyTooLongError):
        parse_address("b." + SUFFIX, b"/" + b"a" * 1025, SUFFIX)


@pytest.mark.parametrize(
    ("host", "raw", "expected"),
    [
        ("b." + SUFFIX, b"/", Address("b", None)),
        ("b." + SUFFIX, b"/k", Address("b", "k")),
        ("b." + SUFFIX, b"/b/k", Address("b", "b/k")),
        ("b." + SUFFIX, b"//x", Address("b", "/x")),
        ("b." + SUFFIX, b"/dir/", Address("b", "dir/")),
        ("b." + SUFFIX + ":8443", b"/k", Address("b", "k")),
        ("B.S3.Example.COM", b"/k", Address("b", "k")),
        ("b." + SUFFIX + ".", b"/k", Address("b", "k")),
        ("my.dotted.b." + SUFFIX, b"/k", Address("my.dotted.b", "k")),
        ("b." + SUFFIX, b"/a%2Fb?tagging", Address("b", "a/b")),
        # host equal to the suffix, or not under it: path-style
        (SUFFIX, b"/b/k", Address("b", "k")),
        (SUFFIX + ":80", b"/", Address(None, None)),
        ("other.example.com", b"/b/k", Address("b", "k")),
        ("xs3.example.com", b"/b/k", Address("b", "k")),
        ("[::1]:9000", b"/b/k", Address("b", "k")),
        (None, b"/b/k", Address("b", "k")),
    ],
)
def test_virtual_hosted_style(host: str | None, raw: bytes, expected: Address) -> None:
    assert parse_address(host, raw, SUFFIX) == expected


def test_suffix_with_leading_dot_is_the_same_suffix() -> None:
    assert parse_address("b." + SUFFIX, b"/k", "." + SUFFIX) == Address("b", "k")


def test_without_suffix_a_bucket_looking_host_is_path_style() -> None:
    assert parse_address("b." + SUFFIX, b"/x/k") == Address("x", "k")


key_text = st.text(st.characters(codec="utf-8", blacklist_characters="\x00"), min_size=1, max_size=300).filter(
    lambda k: len(k.encode()) <= MAX_KEY_BYTES
)


@given(key_text)
def test_any_key_round_trips_path_style(key: str) -> None:
    for safe in ("", "/"):
        raw = b"/bucket/" + quote(key, safe=safe).encode("ascii")
        assert parse_address(None, raw) == Address("bucket", key)


@given(key_text)
def test_any_key_round_trips_virtual_hosted(key: str) -> None:
    raw = b"/" + quote(key, safe="/").encode("ascii")
    assert parse_address("bkt." + SUFFIX, raw, SUFFIX) == Address("bkt", key)


@given(st.binary(max_size=200))
def test_arbitrary_paths_only_raise_s3_errors(tail: bytes) -> None:
    try:
        address = parse_address(None, b"/" + tail)
    except S3Error as exc:
        assert exc.status == 400
    else:
        assert address.key is None or len(address.key.encode()) <= MAX_KEY_BYTES


def test_nul_in_key_is_refused() -> None:
    with pytest.raises(InvalidURI):
        parse_address(None, b"/b/a%00b")
