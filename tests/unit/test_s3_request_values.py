"""S3 request values parsed as AWS parses them: part numbers, copy sources and ranges,
listing parameters and continuation tokens, GetObjectAttributes' headers, the
answers for unconfigured bucket settings.  Pure functions: no front door needed."""

from __future__ import annotations

import pytest

from s3orch.s3 import errors
from s3orch.s3.checksums import stored_checksum_type
from s3orch.s3.copy_source import (
    check_copy_source_version,
    parse_copy_source,
    parse_copy_source_range,
    parse_metadata_directive,
)
from s3orch.s3.listing import (
    decode_continuation_token,
    encode_continuation_token,
    list_objects_v1_marker,
    parse_list_object_versions,
    parse_list_objects,
    parse_list_objects_v2_start,
    parse_list_parts,
    parse_list_uploads,
)
from s3orch.s3.multipart import (
    SIZE_HINT_HEADER,
    parse_complete_checksum_type,
    parse_part_number,
    parse_size_hint,
)
from s3orch.s3.object_attributes import parse_object_attributes, parse_parts_page
from s3orch.s3.unconfigured import NOT_CONFIGURED, not_configured
from s3orch.s3.versioning import check_version_id

# --- part numbers ----------------------------------------------------------------------------


@pytest.mark.parametrize("raw, number", [("1", 1), ("10000", 10000), ("007", 7), (" 42 ", 42)])
def test_part_numbers_in_range_parse(raw: str, number: int) -> None:
    assert parse_part_number(raw) == number


@pytest.mark.parametrize("raw", [None, "", "0", "10001", "-1", "1.5", "x", "٣", "99999999999999999999"])
def test_part_numbers_out_of_range_are_invalid_argument(raw: str | None) -> None:
    with pytest.raises(errors.InvalidArgument) as info:
        parse_part_number(raw)
    assert info.value.status == 400 and "between 1 and 10000" in info.value.message


def test_the_size_hint_is_a_non_negative_integer() -> None:
    assert parse_size_hint({}) is None
    assert parse_size_hint({SIZE_HINT_HEADER: [" 1048576 "]}) == 1048576
    for bad in ("-1", "1e6", "²", "", "9" * 20):
        with pytest.raises(errors.InvalidArgument) as info:
            parse_size_hint({SIZE_HINT_HEADER: [bad]})
        assert info.value.fields["ArgumentName"] == SIZE_HINT_HEADER


def test_complete_checksum_type_is_composite_or_full_object() -> None:
    assert parse_complete_checksum_type({}) is None
    assert parse_complete_checksum_type({"x-amz-checksum-type": [" full_object "]}) == "FULL_OBJECT"
    with pytest.raises(errors.InvalidRequest):
        parse_complete_checksum_type({"x-amz-checksum-type": ["PARTIAL"]})


def test_stored_checksum_type_reads_the_part_count_suffix() -> None:
    assert stored_checksum_type("AAAAAA==-3") == "COMPOSITE"
    assert stored_checksum_type("AAAAAA==") == "FULL_OBJECT"
    assert stored_checksum_type("-3") == "FULL_OBJECT"


# --- copy sources ------------------------------------------------------------------------------


def test_copy_source_is_decoded_and_versions_are_dropped() -> None:
    assert parse_copy_source("/photos/caf%C3%A9%20x?versionId=1") == ("photos", "caf\u00e9 x")
    assert parse_copy_source("photos/a/b") == ("photos", "a/b")


@pytest.mark.parametrize("part_copy", [False, True])
def test_a_copy_source_version_may_only_be_null(part_copy: bool) -> None:
    check_copy_source_version("/photos/k", part_copy=part_copy)
    check_copy_source_version("/photos/k?versionId=null", part_copy=part_copy)
    with pytest.raises(errors.InvalidArgument) as empty:
        check_copy_source_version("/photos/k?versionId=", part_copy=part_copy)
    assert empty.value.message == "Version id cannot be the empty string"
    # As AWS answers a malformed one: CopyObject a bare InvalidRequest, UploadPartCopy InvalidArgument.
    with pytest.raises(errors.InvalidArgument if part_copy else errors.InvalidRequest) as other:
        check_copy_source_version("/photos/k%3FversionId%3Dnull?versionId=v%2B1", part_copy=part_copy)
    assert other.value.message == ("Invalid version id specified" if part_copy else "Invalid Request")


@pytest.mark.parametrize("value", ["photos", "/photos/", "/", "", "photos/a%C3%28"])
def test_copy_source_without_bucket_and_valid_key_is_invalid_argument(value: str) -> None:
    with pytest.raises(errors.InvalidArgument):
        parse_copy_source(value)


@pytest.mark.parametrize("value, expected", [(None, None), ("bytes=0-0", (0, 0)), ("bytes=5-99", (5, 99))])
def test_copy_source_ranges(value: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_copy_source_range(value, 100) == expected


@pytest.mark.parametrize("value", ["bytes=5-", "bytes=-5", "items=0-1", "0-1", "bytes=a-b", "bytes=0", "bytes=0-2,3-5",
                                   "bytes=²-3", "bytes=" + "9" * 30 + "-1", "bytes= 1-2"])
def test_malformed_copy_source_ranges_are_invalid_argument(value: str) -> None:
    with pytest.raises(errors.InvalidArgument) as info:
        parse_copy_source_range(value, 100)
    assert info.value.status == 400 and info.value.message.startswith("The x-amz-copy-source-range value must be")
    assert info.value.fields["ArgumentName"] == "x-amz-copy-source-range"


@pytest.mark.parametrize("value, size", [("bytes=0-100", 100), ("bytes=9-3", 100), ("bytes=0-0", 0)])
def test_copy_source_ranges_outside_the_source_are_invalid_argument(value: str, size: int) -> None:
    with pytest.raises(errors.InvalidArgument) as info:
        parse_copy_source_range(value, size)
    assert info.value.message == f"Range specified is not valid for source object of size: {size}"


def test_metadata_directive_is_copy_or_replace() -> None:
    assert parse_metadata_directive(None) == "COPY"
    assert parse_metadata_directive("replace") == "REPLACE"
    with pytest.raises(errors.InvalidArgument) as info:
        parse_metadata_directive("MERGE" * 100)
    assert info.value.fields["ArgumentName"] == "x-amz-metadata-directive"
    assert len(info.value.fields["ArgumentValue"]) == 64


# --- listings ----------------------------------------------------------------------------------


def test_listing_defaults() -> None:
    params = parse_list_objects([])
    assert (params.prefix, params.delimiter, params.max_keys, params.encoding_type) == ("", "", 1000, None)
    assert list_objects_v1_marker([]) == ""


def test_max_keys_is_capped_at_1000_and_zero_is_kept() -> None:
    assert parse_list_objects([("max-keys", "5000")]).max_keys == 1000
    assert parse_list_objects([("max-keys", "0")]).max_keys == 0
    assert parse_list_objects([("max-keys", "7"), ("max-keys", "9")]).max_keys == 7  # the first wins


@pytest.mark.parametrize("value, argument", [
    ("-1", "maxKeys"), ("x", "max-keys"), ("2147483648", "max-keys"), ("", "max-keys"), ("²", "max-keys"),
])
def test_bad_max_keys_are_invalid_argument(value: str, argument: str) -> None:
    with pytest.raises(errors.InvalidArgument) as info:
        parse_list_objects([("max-keys", value)])
    assert info.value.fields["ArgumentName"] == argument


def test_only_url_encoding_exists() -> None:
    assert parse_list_objects([("encoding-type", "url")]).encoding_type == "url"
    with pytest.raises(errors.InvalidArgument):
        parse_list_objects([("encoding-type", "base64")])


def test_continuation_tokens_round_trip_and_win_over_start_after() -> None:
    token = encode_continuation_token("caf\u00e9/k")
    start = parse_list_objects_v2_start([("start-after", "a"), ("continuation-token", token)])
    assert (start.start, start.start_after, start.continuation_token) == ("caf\u00e9/k", "a", token)
    assert parse_list_objects_v2_start([("start-after", "a")]).start == "a"
    assert parse_list_objects_v2_start([("fetch-owner", "TRUE")]).fetch_owner is True
    with pytest.raises(errors.InvalidArgument) as info:
        decode_continuation_token("YQ")  # not whole base64
    assert info.value.fields["ArgumentName"] == "continuation-token"


def test_list_parts_and_uploads_pages() -> None:
    parts = parse_list_parts([("max-parts", "5000"), ("part-number-marker", " 3 ")])
    assert (parts.max_parts, parts.marker) == (1000, 3)
    assert parse_list_parts([("max-parts", "")]).max_parts == 1000
    with pytest.raises(errors.InvalidArgument) as info:
        parse_list_parts([("part-number-marker", "-1")])
    assert info.value.fields["ArgumentName"] == "part-number-marker"
    uploads = parse_list_uploads([("upload-id-marker", "u"), ("max-uploads", "2")])
    assert (uploads.upload_id_marker, uploads.max_uploads) == ("", 2)  # ignored without a key marker
    uploads = parse_list_uploads([("key-marker", "k"), ("upload-id-marker", "u")])
    assert (uploads.key_marker, uploads.upload_id_marker) == ("k", "u")


# --- GetObjectAttributes -----------------------------------------------------------------------


def test_object_attributes_are_a_comma_separated_known_set() -> None:
    wanted = parse_object_attributes({"x-amz-object-attributes": ["ETag, ObjectSize", "Checksum"]})
    assert wanted == {"ETag", "ObjectSize", "Checksum"}
    for headers in ({}, {"x-amz-object-attributes": [" , "]}, {"x-amz-object-attributes": ["ETag,Owner"]}):
        with pytest.raises(errors.InvalidArgument):
            parse_object_attributes(headers)


def test_object_parts_page_headers() -> None:
    page = parse_parts_page({"x-amz-max-parts": ["2"], "x-amz-part-number-marker": ["4"]})
    assert (page.max_parts, page.marker) == (2, 4)
    assert parse_parts_page({"x-amz-max-parts": ["  "]}).max_parts == 1000
    with pytest.raises(errors.InvalidArgument) as info:
        parse_parts_page({"x-amz-max-parts": ["x"]})
    assert info.value.fields["ArgumentName"] == "max-parts"


# --- unconfigured bucket settings --------------------------------------------------------------


def test_unconfigured_settings_answer_their_own_error() -> None:
    error = not_configured("GetBucketPolicy", "photos")
    assert (error.code, error.status, error.fields) == ("NoSuchBucketPolicy", 404, {"BucketName": "photos"})
    for operation, (code, status, _message) in NOT_CONFIGURED.items():
        error = not_configured(operation, "b")
        assert (error.code, error.status) == (code, status)


# --- ListObjectVersions and version ids --------------------------------------------------------


def test_list_object_versions_markers_start_after_the_key_marker() -> None:
    params, start = parse_list_object_versions([("prefix", "p/"), ("key-marker", "p/k"), ("max-keys", "3")])
    assert (params.prefix, params.max_keys, start.key_marker, start.version_id_marker) == ("p/", 3, "p/k", "")
    _, start = parse_list_object_versions([("key-marker", "k"), ("version-id-marker", "null")])
    assert (start.key_marker, start.version_id_marker) == ("k", "null")
    _, start = parse_list_object_versions([("key-marker", ""), ("version-id-marker", "null")])
    assert (start.key_marker, start.version_id_marker) == ("", "null")


# As AWS answers (captured responses): max-keys is checked first, then the markers (an empty
# key-marker counts as one), then encoding-type.
@pytest.mark.parametrize("query, message, argument", [
    ([("version-id-marker", "null")], "A version-id marker cannot be specified without a key marker.",
     "version-id-marker"),
    ([("version-id-marker", ""), ("encoding-type", "x")],
     "A version-id marker cannot be specified without a key marker.", "version-id-marker"),
    ([("key-marker", "k"), ("version-id-marker", ""), ("encoding-type", "x")],
     "A version-id marker cannot be empty.", "version-id-marker"),
    ([("key-marker", ""), ("version-id-marker", "bad-vid")], "Invalid version id specified", "version-id-marker"),
    ([("key-marker", "k"), ("version-id-marker", "AElpAYzjYSpcGmodYgYGhF52bExgL7_v")],
     "Invalid version id specified", "version-id-marker"),
    ([("key-marker", "k"), ("version-id-marker", "NULL")], "Invalid version id specified", "version-id-marker"),
    ([("version-id-marker", "bad"), ("max-keys", "abc")], "Provided max-keys not an integer or within integer range",
     "max-keys"),
    ([("encoding-type", "base64")], "Invalid Encoding Method specified in Request", "encoding-type"),
])
def test_bad_list_object_versions_parameters_are_invalid_argument(
    query: list[tuple[str, str]], message: str, argument: str
) -> None:
    with pytest.raises(errors.InvalidArgument) as info:
        parse_list_object_versions(query)
    assert info.value.message == message
    assert info.value.fields["ArgumentName"] == argument


def test_only_the_null_version_id_exists() -> None:
    check_version_id("null")
    for value, message in [("", "Version id cannot be the empty string"), ("NULL", "Invalid version id specified"),
                           ("3/L4kqtJl40Nr8X8gdRQBpUMLUo", "Invalid version id specified")]:
        with pytest.raises(errors.InvalidArgument) as info:
            check_version_id(value)
        assert info.value.message == message
        assert info.value.fields == {"ArgumentName": "versionId", "ArgumentValue": value}
