"""Multipart protocol logic without I/O: ETags, ids, part numbers, Complete lists,
part and copy ranges, and the in-memory backend's multipart semantics."""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from s3orch.backend.interface import BackendError
from s3orch.backend.memory import MemoryBackend
from s3orch.core.multipart import (
    multipart_etag,
    new_upload_id,
    parse_copy_source_range,
    parse_part_number,
    part_range,
    select_parts,
)
from s3orch.s3 import errors
from s3orch.s3.xml import CompletedPart, parse_complete_multipart_parts
from s3orch.store.interface import ObjectRecord, UploadedPart
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


# --- part numbers ----------------------------------------------------------------------------


@pytest.mark.parametrize("raw, number", [("1", 1), ("10000", 10000), ("007", 7), (" 42 ", 42)])
def test_part_numbers_in_range_parse(raw: str, number: int) -> None:
    assert parse_part_number(raw) == number


@pytest.mark.parametrize("raw", [None, "", "0", "10001", "-1", "1.5", "x", "٣", "99999999999999999999"])
def test_part_numbers_out_of_range_are_invalid_argument(raw: str | None) -> None:
    with pytest.raises(errors.InvalidArgument) as info:
        parse_part_number(raw)
    assert info.value.status == 400 and "between 1 and 10000" in info.value.message


# --- the Complete part list ---------------------------------------------------------------------


def stored(*sizes: int, checksum: tuple[str, str] | None = None) -> dict[int, UploadedPart]:
    out = {}
    for number, size in enumerate(sizes, 1):
        out[number] = UploadedPart(
            number, md5(b"%d" % number), size, 0.0, f"backend-{number}",
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
    assert select_parts(upper, parts)[0].backend_etag == "backend-1"


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
    assert select_parts(asked(1, 2, ChecksumCRC32="AAAAAA=="), parts)
    with pytest.raises(errors.InvalidPart):
        select_parts(asked(1, 2, ChecksumCRC32="BBBBBB=="), parts)
    # A checksum of another algorithm than the part's is not compared.
    assert select_parts(asked(1, 2, ChecksumSHA1="x"), parts)


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
    assert [part_range(obj, str(n)) for n in (1, 2, 3)] == [(0, 9), (10, 19), (20, 24)]
    with pytest.raises(errors.InvalidPartNumber) as info:
        part_range(obj, "4")
    assert info.value.status == 416
    with pytest.raises(errors.InvalidArgument):
        part_range(obj, "0")


def test_a_single_put_object_is_one_part() -> None:
    assert part_range(record(7), "1") == (0, 6)
    assert part_range(record(0), "1") is None  # the empty object: nothing to range
    with pytest.raises(errors.InvalidPartNumber):
        part_range(record(7), "2")


@pytest.mark.parametrize("value, expected", [(None, None), ("bytes=0-0", (0, 0)), ("bytes=5-99", (5, 99))])
def test_copy_source_ranges(value: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_copy_source_range(value, 100) == expected


@pytest.mark.parametrize("value", ["bytes=5-", "bytes=-5", "bytes=9-3", "items=0-1", "bytes=0-100", "0-1", "bytes=a-b"])
def test_bad_copy_source_ranges_are_invalid_argument(value: str) -> None:
    with pytest.raises(errors.InvalidArgument):
        parse_copy_source_range(value, 100)


def test_gc_interval_follows_the_stale_timeout_within_bounds() -> None:
    assert gc_interval(24 * 3600) == 3600
    assert gc_interval(600) == 150
    assert gc_interval(2) == 1


# --- the in-memory backend behaves like S3 ----------------------------------------------------


def test_memory_backend_assembles_parts_with_the_s3_etag() -> None:
    backend = MemoryBackend("m")
    upload_id = run(backend.create_multipart_upload("key"))
    one, two = b"1" * (5 * MiB), b"22"
    etags = [run(backend.upload_part("key", upload_id, n, io.BytesIO(d), len(d))) for n, d in ((1, one), (2, two))]
    assert etags == [md5(one), md5(two)]
    assert run(backend.list_multipart_uploads("k")) == [("key", upload_id)]
    etag = run(backend.complete_multipart_upload("key", upload_id, [(1, etags[0]), (2, etags[1])]))
    assert etag == multipart_etag(etags) and backend.objects["key"] == one + two
    with pytest.raises(BackendError) as info:
        run(backend.upload_part("key", upload_id, 3, io.BytesIO(b"x"), 1))
    assert info.value.code == "NoSuchUpload"


@pytest.mark.parametrize(
    "listing, code",
    [([(2, "b"), (1, "a")], "InvalidPartOrder"), ([(1, "a"), (2, "wrong")], "InvalidPart"),
     ([(1, "a"), (2, "b")], "EntityTooSmall")],
)
def test_memory_backend_refuses_bad_completes_like_s3(listing: list[tuple[int, str]], code: str) -> None:
    backend = MemoryBackend("m")
    upload_id = run(backend.create_multipart_upload("key"))
    real = {
        "a": run(backend.upload_part("key", upload_id, 1, io.BytesIO(b"a"), 1)),
        "b": run(backend.upload_part("key", upload_id, 2, io.BytesIO(b"b"), 1)),
    }
    with pytest.raises(BackendError) as info:
        run(backend.complete_multipart_upload("key", upload_id, [(n, real.get(e, e)) for n, e in listing]))
    assert info.value.code == code
    run(backend.abort_multipart_upload("key", upload_id))
    run(backend.abort_multipart_upload("key", upload_id))
    assert backend.uploads == {} and "key" not in backend.objects


def test_memory_backend_part_copy_takes_an_inclusive_range() -> None:
    backend = MemoryBackend("m")
    backend.objects["src"] = bytes(range(100))
    upload_id = run(backend.create_multipart_upload("dst"))
    assert run(backend.upload_part_copy("dst", upload_id, 1, "src", (10, 19))) == md5(bytes(range(10, 20)))
    with pytest.raises(BackendError):
        run(backend.upload_part_copy("dst", upload_id, 2, "src", (90, 100)))
