"""Object metadata: what a PUT stores and how GET/HEAD answers it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s3orch.s3.errors import InvalidArgument, MetadataTooLarge
from s3orch.s3.metadata import (
    DEFAULT_CONTENT_TYPE,
    MAX_USER_METADATA_BYTES,
    ObjectMetadata,
    extract_object_metadata,
    object_response_headers,
    response_header_overrides,
)


def test_put_without_content_type_stores_aws_default() -> None:
    assert DEFAULT_CONTENT_TYPE == "binary/octet-stream"
    assert extract_object_metadata({}).content_type == "binary/octet-stream"
    assert (
        extract_object_metadata({"Content-Type": [""]}).content_type
        == "binary/octet-stream"
    )


def test_system_and_user_metadata_are_separated_and_kept_verbatim() -> None:
    meta = extract_object_metadata(
        {
            "Content-Type": ["text/plain; charset=utf-8"],
            "Content-Disposition": ['attachment; filename="a b.txt"'],
            "Content-Language": ["de-CH"],
            "Cache-Control": ["max-age=60, private"],
            "Expires": ["Thu, 01 Dec 1994 16:00:00 GMT"],
            "Content-Encoding": ["gzip"],
            "X-Amz-Meta-Color": ["Blue "],
            "x-amz-meta-utf8": ["=?UTF-8?B?w6nDqQ==?="],
            "Content-Length": ["5"],
            "X-Amz-Storage-Class": ["STANDARD"],
            "Authorization": ["secret"],
        }
    )
    assert meta == ObjectMetadata(
        "text/plain; charset=utf-8",
        {
            "content-disposition": 'attachment; filename="a b.txt"',
            "content-language": "de-CH",
            "cache-control": "max-age=60, private",
            "expires": "Thu, 01 Dec 1994 16:00:00 GMT",
            "content-encoding": "gzip",
        },
        {"color": "Blue ", "utf8": "=?UTF-8?B?w6nDqQ==?="},
    )


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("aws-chunked", None),
        ("AWS-Chunked", None),
        ("aws-chunked,gzip", "gzip"),
        ("aws-chunked, gzip", "gzip"),
        ("gzip, aws-chunked", "gzip"),
        ("aws-chunked,gzip,br", "gzip,br"),
        ("gzip", "gzip"),
        ("gzip, br", "gzip, br"),
    ],
)
def test_aws_chunked_is_not_stored_as_content_encoding(
    sent: str, stored: str | None
) -> None:
    system = extract_object_metadata({"Content-Encoding": [sent]}).system
    assert system.get("content-encoding") == stored


def test_repeated_user_metadata_headers_are_joined() -> None:
    meta = extract_object_metadata({"x-amz-meta-a": ["1", "2"], "X-AMZ-META-A": ["3"]})
    assert meta.user == {"a": "1,2,3"}


def test_user_metadata_limit_is_2_kib_of_names_and_values() -> None:
    name = "k" * 48
    ok = {"x-amz-meta-" + name: ["v" * (MAX_USER_METADATA_BYTES - 48)]}
    assert extract_object_metadata(ok).user[name] == "v" * 2000
    too_big = {"x-amz-meta-" + name: ["v" * (MAX_USER_METADATA_BYTES - 47)]}
    with pytest.raises(MetadataTooLarge) as info:
        extract_object_metadata(too_big)
    assert info.value.status == 400


def test_user_metadata_limit_counts_utf8_bytes() -> None:
    # 683 x 3-byte characters = 2049 bytes with the 1-byte name... over.
    with pytest.raises(MetadataTooLarge):
        extract_object_metadata({"x-amz-meta-k": ["\u20ac" * 683]})
    extract_object_metadata({"x-amz-meta-k": ["\u20ac" * 682]})


def test_user_metadata_limit_spans_several_headers() -> None:
    headers = {f"x-amz-meta-{i:02d}": ["v" * 203] for i in range(10)}  # 10 * 205 = 2050
    with pytest.raises(MetadataTooLarge):
        extract_object_metadata(headers)


def test_empty_user_metadata_name_is_refused() -> None:
    with pytest.raises(InvalidArgument):
        extract_object_metadata({"x-amz-meta-": ["v"]})


def test_response_headers() -> None:
    headers = object_response_headers(
        "text/plain",
        {"content-encoding": "gzip", "cache-control": "no-cache", "expires": "x"},
        {"Color": "blue", "b": ""},
    )
    assert headers == [
        ("Content-Type", "text/plain"),
        ("Content-Encoding", "gzip"),
        ("Cache-Control", "no-cache"),
        ("Expires", "x"),
        ("x-amz-meta-color", "blue"),
        ("x-amz-meta-b", ""),
    ]


def test_response_overrides_last_value_wins_and_others_are_ignored() -> None:
    query = [
        ("response-content-type", "a/b"),
        ("response-content-disposition", "attachment"),
        ("response-content-type", "c/d"),
        ("response-x-custom", "no"),
        ("prefix", "no"),
        ("response-expires", "Thu, 01 Dec 1994 16:00:00 GMT"),
        ("response-cache-control", "no-store"),
        ("response-content-language", "fr"),
        ("response-content-encoding", "identity"),
    ]
    assert response_header_overrides(query) == [
        ("Content-Type", "c/d"),
        ("Content-Language", "fr"),
        ("Expires", "Thu, 01 Dec 1994 16:00:00 GMT"),
        ("Cache-Control", "no-store"),
        ("Content-Disposition", "attachment"),
        ("Content-Encoding", "identity"),
    ]


meta_name = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=20)
meta_value = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)


@given(
    st.dictionaries(meta_name, meta_value, max_size=8),
    st.sampled_from(["text/plain", "application/json", "image/png"]),
)
def test_stored_metadata_round_trips_through_response_headers(
    user: dict[str, str], content_type: str
) -> None:
    headers = {"Content-Type": [content_type], "Cache-Control": ["max-age=1"]}
    headers.update({"X-Amz-Meta-" + k: [v] for k, v in user.items()})
    meta = extract_object_metadata(headers)
    again: dict[str, list[str]] = {}
    for name, value in object_response_headers(
        meta.content_type, meta.system, meta.user
    ):
        again.setdefault(name, []).append(value)
    assert extract_object_metadata(again) == meta
    assert meta.user == user
