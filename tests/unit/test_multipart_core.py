"""Multipart protocol logic without I/O: ETags, ids, Complete lists and their checksums,
part ranges, GetObjectAttributes' ObjectParts.  (Parsing the request values is
tests/unit/test_s3_request_values.py's.)"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Coroutine
from dataclasses import replace
from typing import Any, TypeVar

import pytest
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from s3orch.backend.memory import MemoryBackend
from s3orch.core.multipart import (
    check_part_checksum,
    complete_checksum,
    multipart_etag,
    new_upload_id,
    object_parts_page,
    part_range,
    select_parts,
    server_side_part_copy,
)
from s3orch.s3 import errors
from s3orch.s3.checksums import new_checksum
from s3orch.s3.xml import CompletedPart, ObjectPartsInfo, parse_complete_multipart_parts
from s3orch.store.interface import Extent, Location, MultipartUpload, ObjectRecord, UploadedPart
from s3orch.workers.multipart_gc import gc_interval

T = TypeVar("T")
MiB = 1024 * 1024


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine of the in-memory backend (it never really waits)."""
    results: list[Any] = []
    Deferred.fromCoroutine(coro).addBoth(results.append)
    assert results, "coroutine did not complete synchronously"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]  # type: ignore[no-any-return]


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# --- ETags and ids -------------------------------------------------------------------------


def test_multipart_etag_is_md5_of_the_binary_part_md5s_and_the_count() -> None:
    parts = [b"a" * 10, b"b" * 20, b"c"]
    expected = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + "-3"
    assert multipart_etag([md5(p) for p in parts]) == expected
    # One part still gets the composite form, never the part's own MD5.
    assert multipart_etag([md5(b"x")]) == hashlib.md5(hashlib.md5(b"x").digest()).hexdigest() + "-1"


def test_upload_ids_are_32_hex_random_and_sort_by_initiation_time() -> None:
    ids = [new_upload_id(1_700_000_000 + i / 1000) for i in range(50)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", upload_id) for upload_id in ids)
    assert len(set(ids)) == 50
    assert ids == sorted(ids)
    same_ms = {new_upload_id(1_700_000_000.0) for _ in range(100)}
    assert len(same_ms) == 100  # 80 random bits


# --- the Complete part list ---------------------------------------------------------------------


def stored(*sizes: int, checksum: tuple[str, str] | None = None) -> dict[int, UploadedPart]:
    out = {}
    for number, size in enumerate(sizes, 1):
        out[number] = UploadedPart(
            number, md5(b"%d" % number), size, 0.0, f"backend-{number}", f"key-{number}",
            checksum[0] if checksum else None, checksum[1] if checksum else None,
        )
    return out


def asked(*numbers: int, parts: dict[int, UploadedPart] | None = None, **checksums: str) -> list[CompletedPart]:
    return [
        CompletedPart(n, '"' + (parts[n].etag if parts and n in parts else md5(b"%d" % n)) + '"', dict(checksums))
        for n in numbers
    ]


def test_select_parts_returns_the_listed_parts_in_order_and_drops_the_rest() -> None:
    parts = stored(5 * MiB, 5 * MiB, 7)
    chosen = select_parts(asked(1, 3), parts)
    assert [p.part_number for p in chosen] == [1, 3]
    # ETags match without quotes and whatever their case.
    upper = [CompletedPart(1, parts[1].etag.upper())]
    assert select_parts(upper, parts)[0].storage_key == "key-1"


@pytest.mark.parametrize("numbers", [(2, 1), (1, 1), (1, 3, 2)])
def test_parts_out_of_order_or_repeated_are_invalid_part_order(numbers: tuple[int, ...]) -> None:
    with pytest.raises(errors.InvalidPartOrder):
        select_parts(asked(*numbers), stored(5 * MiB, 5 * MiB, 5 * MiB))


def test_unknown_or_mismatched_parts_are_invalid_part() -> None:
    parts = stored(5 * MiB, 5)
    with pytest.raises(errors.InvalidPart):
        select_parts(asked(1, 3), parts)
    with pytest.raises(errors.InvalidPart) as info:
        select_parts([CompletedPart(1, md5(b"other")), CompletedPart(2, parts[2].etag)], parts)
    assert info.value.fields["PartNumber"] == "1"


def test_a_listed_checksum_must_match_the_parts() -> None:
    parts = stored(5 * MiB, 5, checksum=("CRC32", "AAAAAA=="))
    assert select_parts(asked(1, 2, ChecksumCRC32="AAAAAA=="), parts, checksum_algorithm="CRC32",
                        checksum_type="COMPOSITE")
    with pytest.raises(errors.InvalidPart):
        select_parts(asked(1, 2, ChecksumCRC32="BBBBBB=="), parts, checksum_algorithm="CRC32",
                     checksum_type="FULL_OBJECT")


def test_a_composite_upload_needs_every_part_checksum_in_the_complete() -> None:
    parts = stored(5 * MiB, 5, checksum=("SHA256", "c2hh"))
    with pytest.raises(errors.InvalidRequest) as info:
        select_parts(asked(1, 2), parts, checksum_algorithm="SHA256", checksum_type="COMPOSITE")
    assert info.value.message == (
        "The upload was created using a sha256 checksum. The complete request must include the "
        "checksum for each part. It was missing for part 1 in the request."
    )
    # Another algorithm's checksum instead of the upload's: BadDigest, as S3 answers.
    with pytest.raises(errors.BadDigest):
        select_parts(asked(1, 2, ChecksumCRC32="AAAAAA=="), parts, checksum_algorithm="SHA256",
                     checksum_type="COMPOSITE")
    # A full-object upload may leave the part checksums out.
    crc = stored(5 * MiB, 5, checksum=("CRC32", "AAAAAA=="))
    assert select_parts(asked(1, 2), crc, checksum_algorithm="CRC32", checksum_type="FULL_OBJECT")


def test_an_upload_without_a_checksum_takes_no_part_checksums() -> None:
    with pytest.raises(errors.InvalidPart):
        select_parts(asked(1, 2, ChecksumSHA1="x"), stored(5 * MiB, 5))


def upload(algorithm: str | None = None, kind: str | None = None) -> MultipartUpload:
    return MultipartUpload("u", "b", "k", 0.0, checksum_algorithm=algorithm, checksum_type=kind)


def b64_checksum(algorithm: str, data: bytes) -> str:
    checksum = new_checksum(algorithm)
    checksum.update(data)
    return checksum.b64digest()


def checked_parts(algorithm: str, *contents: bytes) -> list[UploadedPart]:
    return [
        UploadedPart(n, md5(d), len(d), 0.0, "b", f"k{n}", algorithm, b64_checksum(algorithm, d))
        for n, d in enumerate(contents, 1)
    ]


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "CRC64NVME"])
def test_a_full_object_checksum_is_the_crc_of_the_whole_object(algorithm: str) -> None:
    contents = (b"A" * 1000, b"B" * 77, b"tail")
    chosen = checked_parts(algorithm, *contents)
    whole = b64_checksum(algorithm, b"".join(contents))
    assert complete_checksum(upload(algorithm, "FULL_OBJECT"), chosen) == whole
    assert complete_checksum(upload(algorithm, "FULL_OBJECT"), chosen, (algorithm, whole)) == whole
    with pytest.raises(errors.BadDigest):
        complete_checksum(upload(algorithm, "FULL_OBJECT"), chosen, (algorithm, b64_checksum(algorithm, b"x")))


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "SHA1", "SHA256"])
def test_a_composite_checksum_is_the_checksum_of_the_part_checksums(algorithm: str) -> None:
    chosen = checked_parts(algorithm, b"one", b"two")
    digests = b"".join(base64.b64decode(p.checksum_value or "") for p in chosen)
    expected = b64_checksum(algorithm, digests) + "-2"
    assert complete_checksum(upload(algorithm, "COMPOSITE"), chosen) == expected
    # A client may send it with or without the part count (the header parser drops it).
    assert complete_checksum(upload(algorithm, "COMPOSITE"), chosen, (algorithm, expected[:-2])) == expected


def test_the_complete_must_name_the_uploads_checksum_algorithm_and_mode() -> None:
    chosen = checked_parts("SHA256", b"one")
    with pytest.raises(errors.InvalidRequest) as info:
        complete_checksum(upload("SHA256", "COMPOSITE"), chosen, ("CRC32", "AAAAAA=="))
    assert "expected checksum Type: sha256, actual checksum Type: crc32" in info.value.message
    with pytest.raises(errors.InvalidRequest) as info:
        complete_checksum(upload("SHA256", "COMPOSITE"), chosen, None, "FULL_OBJECT")
    assert info.value.message.startswith("The upload was created using the COMPOSITE checksum mode.")
    assert complete_checksum(upload(), chosen) is None


def test_a_part_of_a_checksum_upload_must_carry_that_checksum() -> None:
    check_part_checksum(upload(), None)
    check_part_checksum(upload("CRC32", "COMPOSITE"), ("CRC32", "AAAAAA=="))
    with pytest.raises(errors.InvalidRequest) as info:
        check_part_checksum(upload("CRC32", "COMPOSITE"), None)
    assert info.value.message == "Checksum Type mismatch occurred, expected checksum Type: crc32, actual checksum Type: null"
    with pytest.raises(errors.InvalidRequest):
        check_part_checksum(upload("CRC32", "COMPOSITE"), ("SHA1", "x"))


def test_every_part_but_the_last_must_reach_the_minimum() -> None:
    assert select_parts(asked(1, 2), stored(5 * MiB, 1))  # the last may be tiny
    with pytest.raises(errors.EntityTooSmall) as info:
        select_parts(asked(1, 2), stored(5 * MiB - 1, 5 * MiB))
    assert info.value.fields["PartNumber"] == "1" and info.value.fields["MinSizeAllowed"] == str(5 * MiB)
    assert select_parts(asked(1, 2), stored(10, 10), min_part_size=10)


def test_part_numbers_of_a_complete_are_range_checked() -> None:
    with pytest.raises(errors.InvalidArgument):
        select_parts([CompletedPart(0, "x")], stored(1))
    with pytest.raises(errors.InvalidArgument):
        select_parts([CompletedPart(10001, "x")], stored(1))
    with pytest.raises(errors.MalformedXML):
        select_parts([], stored(1))


def test_complete_xml_is_size_checked_before_parsing_and_parts_keep_request_order() -> None:
    body = b"<CompleteMultipartUpload>" + b"".join(
        b"<Part><ETag>\"%s\"</ETag><PartNumber>%d</PartNumber><ChecksumCRC32>AAAAAA==</ChecksumCRC32></Part>"
        % (md5(b"%d" % n).encode(), n) for n in (3, 1)
    ) + b"</CompleteMultipartUpload>"
    parsed = parse_complete_multipart_parts(body)
    assert [(p.part_number, p.checksums) for p in parsed] == [(3, {"ChecksumCRC32": "AAAAAA=="}), (1, {"ChecksumCRC32": "AAAAAA=="})]
    with pytest.raises(errors.InvalidPartOrder):
        select_parts(parsed, stored(5 * MiB, 5 * MiB, 5 * MiB))
    with pytest.raises(errors.MalformedXML):
        parse_complete_multipart_parts(body, max_bytes=len(body) - 1)
    for bad in (b"", b"<CompleteMultipartUpload/>", b"<Other><Part/></Other>",
                b"<CompleteMultipartUpload><Part><PartNumber>x</PartNumber><ETag>e</ETag></Part></CompleteMultipartUpload>",
                b'<!DOCTYPE x [<!ENTITY e "1">]><CompleteMultipartUpload/>'):
        with pytest.raises(errors.MalformedXML):
            parse_complete_multipart_parts(bad)


# --- ranges -------------------------------------------------------------------------------------


def record(size: int, part_sizes: tuple[int, ...] | None = None) -> ObjectRecord:
    return ObjectRecord("b", "k", "w", size, "e", 0.0, part_sizes=part_sizes,
                        parts_count=len(part_sizes) if part_sizes else None)


def test_part_range_of_a_multipart_object() -> None:
    obj = record(25, (10, 10, 5))
    assert [part_range(obj, n) for n in (1, 2, 3)] == [(0, 9), (10, 19), (20, 24)]
    with pytest.raises(errors.InvalidPart) as info:
        part_range(obj, 4)
    assert info.value.status == 400  # as S3 answers (not 416)


def test_a_single_put_object_is_one_part() -> None:
    assert part_range(record(7), 1) == (0, 6)
    assert part_range(record(0), 1) is None  # the empty object: nothing to range
    with pytest.raises(errors.InvalidPart):
        part_range(record(7), 2)


def composite_record(*sizes: int) -> ObjectRecord:
    offsets = [sum(sizes[:i]) for i in range(len(sizes))]
    parts = tuple(
        Extent(n * 2, off, size, (Location("b", f"k{n}", size),), md5(b"%d" % n), f"c{n}")
        for n, (off, size) in enumerate(zip(offsets, sizes), 1)
    )
    return ObjectRecord("b", "k", "w", sum(sizes), "e-3", 0.0, checksum_algorithm="CRC32",
                        checksum_value="AAAAAA==-%d" % len(sizes), parts_count=len(sizes),
                        part_sizes=tuple(sizes), parts=parts)


def test_object_parts_of_a_composite_object_page_like_list_parts() -> None:
    obj = composite_record(10, 20, 30)
    page = object_parts_page(obj, 2, 0)
    assert (page.total_parts_count, page.max_parts, page.is_truncated) == (3, 2, True)
    assert [(p.part_number, p.size, list(p.checksums)) for p in page.parts] == [
        (2, 10, [("ChecksumCRC32", "c1")]), (4, 20, [("ChecksumCRC32", "c2")])]
    assert page.next_part_number_marker == 4
    rest = object_parts_page(obj, 1000, 4)
    assert [p.part_number for p in rest.parts] == [6] and rest.is_truncated is False
    assert rest.part_number_marker == 4 and rest.max_parts == 1000


def test_object_parts_lists_parts_only_for_composite_checksums() -> None:
    full = replace(composite_record(10, 20), checksum_value="AAAAAA==")
    page = object_parts_page(full, 1000, 0)
    assert page == ObjectPartsInfo(total_parts_count=2)  # FULL_OBJECT: the count only
    plain = replace(composite_record(10, 20), checksum_algorithm=None, checksum_value=None)
    page = object_parts_page(plain, 1000, 0)
    assert page.total_parts_count == 2 and page.parts == () and page.max_parts == 1000


def test_gc_interval_follows_the_stale_timeout_within_bounds() -> None:
    assert gc_interval(24 * 3600) == 3600
    assert gc_interval(600) == 150
    assert gc_interval(2) == 1


# --- the in-memory backend keeps only what aborting old native uploads needs ------------------


def test_memory_backend_lists_and_aborts_native_uploads_left_by_an_older_build() -> None:
    backend = MemoryBackend("m")
    backend.uploads["old-1"] = ("bkt/key@u1", {1: b"x"})
    backend.uploads["old-2"] = ("other", {})
    assert run(backend.list_multipart_uploads("bkt/")) == [("bkt/key@u1", "old-1")]
    run(backend.abort_multipart_upload("bkt/key@u1", "old-1"))
    run(backend.abort_multipart_upload("bkt/key@u1", "old-1"))  # already gone: fine
    assert list(backend.uploads) == ["old-2"]
    assert not hasattr(backend, "complete_multipart_upload")


# --- UploadPartCopy: server-side or through a spool ----------------------------------------


def _two_extents(checksums: tuple[str | None, str | None] = (None, None)) -> ObjectRecord:
    parts = (
        Extent(1, 0, 100, (Location("b1", "p1", 100),), md5(b"one"), checksums[0]),
        Extent(2, 100, 50, (Location("b2", "p2", 50),), md5(b"two"), checksums[1]),
    )
    return ObjectRecord("bkt", "src", "u", 150, "e" * 32 + "-2", 0.0, checksum_algorithm="CRC32",
                        checksum_value="AAAAAA==-2", parts_count=2, part_sizes=(100, 50), parts=parts)


def test_a_part_copy_of_exactly_one_extent_is_server_side_with_its_md5() -> None:
    source = _two_extents()
    whole = server_side_part_copy(source, (100, 149), None)
    assert whole is not None and whole.extent.part_number == 2
    assert (whole.md5_hex, whole.checksum_value) == (md5(b"two"), None)
    assert server_side_part_copy(source, (99, 149), None) is None  # across two extents
    assert server_side_part_copy(source, None, None) is None  # the whole object is two


def test_a_single_part_object_copies_server_side_only_with_a_plain_md5_etag() -> None:
    plain = ObjectRecord("bkt", "k", "w", 10, md5(b"x"), 0.0, locations=(Location("b1", "k1", 10),))
    assert server_side_part_copy(plain, None, None) is not None
    legacy = replace(plain, etag="f" * 32 + "-3")  # a multipart ETag says nothing of the bytes
    assert server_side_part_copy(legacy, None, None) is None


def test_an_upload_with_a_checksum_needs_the_extents_checksum_in_that_algorithm() -> None:
    source = _two_extents(("c1==", "c2=="))
    assert server_side_part_copy(source, (0, 99), "crc32") == server_side_part_copy(source, (0, 99), "CRC32")
    whole = server_side_part_copy(source, (0, 99), "CRC32")
    assert whole is not None and whole.checksum_value == "c1=="
    assert server_side_part_copy(source, (0, 99), "SHA256") is None  # another algorithm: read it
    assert server_side_part_copy(_two_extents(), (0, 99), "CRC32") is None  # no checksum recorded
