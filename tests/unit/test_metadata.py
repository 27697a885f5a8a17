"""Object metadata: what a PUT stores and how GET/HEAD answers it."""

from __future__ import annotations

import base64
import email.header

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s3orch.s3.errors import InvalidArgument, MetadataTooLarge, S3Error
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
        ("Content-Type", b"text/plain"),
        ("Content-Encoding", b"gzip"),
        ("Cache-Control", b"no-cache"),
        ("Expires", b"x"),
        ("x-amz-meta-color", b"blue"),
        ("x-amz-meta-b", b""),
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
        ("Content-Type", b"c/d"),
        ("Content-Language", b"fr"),
        ("Expires", b"Thu, 01 Dec 1994 16:00:00 GMT"),
        ("Cache-Control", b"no-store"),
        ("Content-Disposition", b"attachment"),
        ("Content-Encoding", b"identity"),
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
        again.setdefault(name, []).append(value.decode("ascii"))
    assert extract_object_metadata(again) == meta
    assert meta.user == user


def test_utf8_user_metadata_goes_out_as_one_rfc2047_word_as_aws_returns_it() -> None:
    # Raw UTF-8 on the wire arrives decoded; it goes back encoded, not as raw bytes a
    # Latin-1 header parser (botocore's) would turn into mojibake.
    meta = extract_object_metadata({"x-amz-meta-city": ["Z\u00fcrich \u4e2d"]})
    assert meta.user == {"city": "Z\u00fcrich \u4e2d"}
    (header,) = [h for h in object_response_headers("", {}, meta.user) if h[0] == "x-amz-meta-city"]
    assert header[1] == b"=?UTF-8?B?" + base64.b64encode("Z\u00fcrich \u4e2d".encode()) + b"?="
    word = email.header.decode_header(header[1].decode("ascii"))
    assert word == [("Z\u00fcrich \u4e2d".encode(), "utf-8")]


def test_encoded_words_are_stored_and_returned_as_sent() -> None:
    sent = "=?UTF-8?Q?Z=C3=BCrich?="
    meta = extract_object_metadata({"x-amz-meta-city": [sent]})
    assert meta.user == {"city": sent}
    assert ("x-amz-meta-city", sent.encode()) in object_response_headers("", {}, meta.user)


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("x-amz-meta-k", "a\udcffb"),  # a stray byte, kept by surrogateescape
        ("x-amz-meta-k", "a\x01b"),
        ("Content-Type", "text/\udce9"),
        ("Content-Disposition", "attachment\x00"),
        ("Cache-Control", "a\nb"),
    ],
)
def test_undecodable_or_control_values_are_refused_on_put(header: str, value: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        extract_object_metadata({header: [value]})
    assert info.value.fields["ArgumentName"] == header
    assert info.value.to_xml()  # the error document itself is encodable


def test_tab_is_a_valid_header_character() -> None:
    assert extract_object_metadata({"x-amz-meta-k": ["a\tb"]}).user == {"k": "a\tb"}


def test_bad_stored_values_are_still_sendable() -> None:
    # Written before values were validated: GET must still answer, never fail.
    headers = object_response_headers(
        "text/\udce9", {"content-disposition": "a\r\nb"}, {"k": "x\udcffy\x01", "u": "\ud800"}
    )
    as_dict = dict(headers)
    assert as_dict["Content-Type"] == b"text/\xe9"
    assert as_dict["Content-Disposition"] == b"a  b"
    assert as_dict["x-amz-meta-k"] == b"=?UTF-8?B?" + base64.b64encode(b"x\xffy\x01") + b"?="
    assert as_dict["x-amz-meta-u"].startswith(b"=?UTF-8?B?")
    for _, value in headers:
        assert b"\r" not in value and b"\n" not in value


@pytest.mark.parametrize(
    "value", ["\udcff", "\u4e2d", "text/plain\r\nx-evil: 1", "a\x00"]
)
def test_response_override_that_is_not_an_iso_8859_1_header_is_400(value: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        response_header_overrides([("response-content-type", value)])
    assert info.value.message == "Header value cannot be represented using ISO-8859-1."
    assert info.value.fields["ArgumentName"] == "response-content-type"
    assert info.value.to_xml()


def test_latin1_response_override_goes_out_as_latin1() -> None:
    assert response_header_overrides([("response-content-disposition", "caf\u00e9")]) == [
        ("Content-Disposition", b"caf\xe9")
    ]


@settings(max_examples=500)
@given(
    st.dictionaries(
        st.sampled_from(["content-type", "x-amz-meta-a", "x-amz-meta-b", "cache-control", "expires", "x-amz-meta-"]),
        st.lists(st.text(max_size=30), min_size=1, max_size=2),
        max_size=4,
    ),
    st.lists(
        st.tuples(st.sampled_from(["response-content-type", "response-expires", "prefix"]), st.text(max_size=20)),
        max_size=3,
    ),
)
def test_metadata_parsers_raise_only_s3_errors(headers: dict[str, list[str]], query: list[tuple[str, str]]) -> None:
    try:
        meta = extract_object_metadata(headers)
    except S3Error as exc:
        assert exc.to_xml()
    else:
        for _name, value in object_response_headers(meta.content_type, meta.system, meta.user):
            assert isinstance(value, bytes) and b"\n" not in value
    try:
        response_header_overrides(query)
    except S3Error as exc:
        assert exc.to_xml()
