"""The fast ListObjects serialiser (one f-string per ``<Contents>``, escaping only the values
that need it, cached timestamps) writes exactly the document the element-by-element builders
wrote: byte for byte, for any keys (XML-hostile and control characters included), ETags in
any stored form, times as floats, ints or datetimes, with and without encoding-type=url,
fetch-owner, common prefixes and markers; and ListObjectVersions' ``<Version>`` elements, which
the same serialiser writes.  The old builders are kept verbatim in
:mod:`tests.support.xml_reference` as the oracle."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from s3orch.s3 import xml as s3xml
from s3orch.s3.xml.common import escape_text, iso8601
from s3orch.store.records import ListEntry
from tests.support import xml_reference as ref

OWNER = ("75aa57f09aa0c8caeab4f8c24e99d10f8e7faeebf76c078efc7c6caea54ba06a", "owner & <co>")

#: Keys as S3 allows them (any UTF-8), weighted towards what XML must escape or cannot carry.
HOSTILE = "&<>\"'\r\n\t\x00\x01\x08\x0b\x0c\x1f\x7f\ufffe\uffff\u2028 %+/=?#"
keys = st.text(
    st.one_of(st.sampled_from(HOSTILE), st.characters(codec="utf-8")),
    max_size=40,
)
etags = st.one_of(
    st.text("0123456789abcdef", min_size=32, max_size=32),
    st.text("0123456789abcdef", min_size=32, max_size=32).map(lambda e: f'"{e}"'),
    st.text("0123456789abcdef-", max_size=36).map(lambda e: f'"{e}-3"'),
    st.text(st.sampled_from(HOSTILE + "ab\u00a0\u3000 "), max_size=8),
)
times = st.one_of(
    st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False),
    st.integers(min_value=0, max_value=4_102_444_800),
    st.datetimes(
        min_value=datetime.datetime(1971, 1, 1), max_value=datetime.datetime(2099, 1, 1),
        timezones=st.just(datetime.UTC),
    ),
)
sizes = st.one_of(st.integers(min_value=0, max_value=5 * 1024**4), st.booleans())


@dataclass(frozen=True)
class Classed:
    """A listing row that carries its own storage class (duck-typed, as the builders allow)."""

    key: str
    size: int
    etag: str
    last_modified: Any
    storage_class: str | None


entries = st.one_of(
    st.builds(ListEntry, keys, sizes, etags, times),
    st.builds(Classed, keys, sizes, etags, times, st.sampled_from([None, "", "GLACIER", "A&<B"])),
)
listing = st.fixed_dictionaries(
    {
        "entries": st.lists(entries, max_size=12),
        "prefixes": st.lists(keys, max_size=4),
        "prefix": keys,
        "delimiter": st.sampled_from(["", "/", "&", "\x01"]),
        "marker": keys,
        "encoding": st.sampled_from([None, "url"]),
        "truncated": st.booleans(),
        "max_keys": st.integers(min_value=0, max_value=1000),
    }
)


@settings(max_examples=300, deadline=None)
@given(listing, st.booleans(), st.one_of(st.none(), keys))
def test_list_objects_v2_is_byte_identical_to_the_element_builder(
    case: dict[str, Any], fetch_owner: bool, start_after: str | None
) -> None:
    args = (
        "bucket", case["prefix"], case["delimiter"], case["max_keys"],
        len(case["entries"]) + len(case["prefixes"]), case["truncated"], "dG9rZW4=", "bmV4dA==",
        start_after, case["entries"], case["prefixes"], case["encoding"], fetch_owner, OWNER,
    )
    assert s3xml.list_objects_v2(*args) == ref.list_objects_v2(*args)


@settings(max_examples=300, deadline=None)
@given(listing, st.booleans(), st.one_of(st.none(), keys))
def test_list_objects_v1_is_byte_identical_to_the_element_builder(
    case: dict[str, Any], with_owner: bool, next_marker: str | None
) -> None:
    args = (
        "bucket", case["prefix"], case["marker"], case["delimiter"], case["max_keys"], case["truncated"],
        next_marker, case["entries"], case["prefixes"], case["encoding"], OWNER if with_owner else None,
    )
    assert s3xml.list_objects_v1(*args) == ref.list_objects_v1(*args)


@settings(max_examples=300, deadline=None)
@given(listing, st.sampled_from(["", "null"]), st.one_of(st.none(), keys), st.sampled_from([None, "null"]))
def test_list_object_versions_is_byte_identical_to_the_element_builder(
    case: dict[str, Any], version_id_marker: str, next_key_marker: str | None, next_version_id_marker: str | None
) -> None:
    args = (
        "bucket", case["prefix"], case["marker"], version_id_marker, case["delimiter"], case["max_keys"],
        case["truncated"], next_key_marker, next_version_id_marker, case["entries"], case["prefixes"],
        case["encoding"], OWNER,
    )
    assert s3xml.list_object_versions(*args) == ref.list_object_versions(*args)


def test_each_version_is_the_null_version_and_the_latest_in_aws_element_order() -> None:
    document = s3xml.list_object_versions(
        "b", "", "", "", None, 1000, False, None, None,
        [ListEntry("k&1", 5, "0" * 32, 1_765_000_000.0)], (), None, ("s3orch", "s3orch"),
    )
    assert (
        b"<Version><Key>k&amp;1</Key><VersionId>null</VersionId><IsLatest>true</IsLatest>"
        b"<LastModified>2025-12-06T05:46:40.000Z</LastModified><ETag>&quot;" + b"0" * 32 + b"&quot;</ETag>"
        b"<Size>5</Size><Owner><ID>s3orch</ID><DisplayName>s3orch</DisplayName></Owner>"
        b"<StorageClass>STANDARD</StorageClass></Version>"
    ) in document
    assert b"<DeleteMarker>" not in document


@given(st.text(st.one_of(st.sampled_from(HOSTILE), st.characters(codec="utf-8"))))
def test_escape_text_matches_translate_for_any_text(value: str) -> None:
    assert escape_text(value) == ref.escape_text(value)


@given(times)
def test_cached_timestamps_match_strftime(when: Any) -> None:
    assert iso8601(when) == ref.iso8601(when)


def test_a_full_page_of_keys_is_identical_and_every_hostile_character_escaped() -> None:
    page = [
        ListEntry(f"dir/{i:04d}{HOSTILE[i % len(HOSTILE)]}", i, f"{i:032x}", 1_765_000_000.0 + i / 7)
        for i in range(1000)
    ]
    args: tuple[Any, ...] = (
        "b", "", None, 1000, 1000, True, None, "dG9rZW4=", None, page, (), None, True, OWNER,
    )
    document = s3xml.list_objects_v2(*args)
    assert document == ref.list_objects_v2(*args)
    assert document.count(b"<Contents>") == 1000
    assert b"<Key>dir/0000&amp;</Key>" in document and b"<Key>dir/0003&quot;</Key>" in document
    assert b"\x00" not in document and b"&#x0;" in document and b"&#xD;" in document
