"""The S3 rules of multipart uploads, as pure functions: the multipart ETag,
which parts a CompleteMultipartUpload takes (:func:`select_parts`), the object
checksum it stores (:func:`complete_checksum`), a part's checksum
(:func:`check_part_checksum`), the bytes of ``?partNumber=`` (:func:`part_range`),
GetObjectAttributes' ObjectParts (:func:`object_parts_page`) and which part
copies a backend can do by itself (:func:`server_side_part_copy`).

The upload lifecycle over the store and the backends (create, parts placed one
by one, complete, abort, stale uploads) is in :mod:`s3orch.core.uploads`; the
parsing of multipart request values in :mod:`s3orch.s3.multipart`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from s3orch.core.placement import new_upload_id
from s3orch.s3 import errors, xml
from s3orch.s3.checksums import COMPOSITE, FULL_OBJECT, composite_checksum, full_object_checksum
from s3orch.s3.multipart import MAX_PART_NUMBER
from s3orch.s3.xml import CompletedPart
from s3orch.store.interface import Extent, MultipartUpload, ObjectRecord, UploadedPart

__all__ = [
    "MIN_PART_SIZE",
    "ExtentCopy",
    "complete_checksum",
    "multipart_etag",
    "new_upload_id",
    "object_parts_page",
    "part_range",
    "select_parts",
    "server_side_part_copy",
]

MiB = 1024 * 1024
#: S3: every part but the last must be at least 5 MiB (checked on Complete).
MIN_PART_SIZE = 5 * MiB


# --- pure protocol logic -----------------------------------------------------------------


def multipart_etag(part_md5s: Sequence[str]) -> str:
    """S3's multipart ETag: MD5 of the concatenated binary part MD5s, then ``-N``."""
    digest = hashlib.md5(b"".join(bytes.fromhex(md5) for md5 in part_md5s)).hexdigest()
    return f"{digest}-{len(part_md5s)}"


def checksum_element(algorithm: str) -> str:
    """The CompleteMultipartUpload element of a checksum algorithm (``ChecksumCRC32``...)."""
    return "Checksum" + algorithm.upper()


def select_parts(
    requested: Sequence[CompletedPart],
    stored: Mapping[int, UploadedPart],
    min_part_size: int = MIN_PART_SIZE,
    checksum_algorithm: str | None = None,
    checksum_type: str | None = None,
) -> list[UploadedPart]:
    """Check a Complete's part list against the uploaded parts, as AWS does.

    Part numbers in range (InvalidArgument) and strictly ascending
    (InvalidPartOrder); then, part by part: uploaded with that ETag (InvalidPart);
    with the upload's checksum algorithm, the part's checksum element, when given,
    must equal the stored one (InvalidPart; another algorithm's element:
    BadDigest), and a COMPOSITE upload must give it (InvalidRequest); without an
    algorithm no checksum element may be given (InvalidPart).  Last, every part but
    the last at least ``min_part_size`` (EntityTooSmall).  Returns the chosen parts
    in order.
    """
    if not requested:
        raise errors.MalformedXML()
    previous = 0
    for part in requested:
        if not 1 <= part.part_number <= MAX_PART_NUMBER:
            raise errors.InvalidArgument(
                "Part number must be an integer between 1 and 10000, inclusive",
                ArgumentName="partNumber",
                ArgumentValue=str(part.part_number),
            )
        if part.part_number <= previous:
            raise errors.InvalidPartOrder()
        previous = part.part_number
    chosen: list[UploadedPart] = []
    for part in requested:
        found = stored.get(part.part_number)
        if found is None or found.etag.lower() != part.etag.strip().strip('"').lower():
            raise errors.InvalidPart(PartNumber=str(part.part_number), ETag=part.etag)
        if checksum_algorithm is None:
            if part.checksums:
                raise errors.InvalidPart(PartNumber=str(part.part_number), ETag=part.etag)
        else:
            own = part.checksums.get(checksum_element(checksum_algorithm))
            if own is None:
                if checksum_type == COMPOSITE:
                    for element in part.checksums:
                        raise errors.BadDigest(
                            f"The {element.removeprefix('Checksum').lower()} you specified for part "
                            f"{part.part_number} did not match what we received."
                        )
                    raise errors.InvalidRequest(
                        f"The upload was created using a {checksum_algorithm.lower()} checksum. "
                        "The complete request must include the checksum for each part. "
                        f"It was missing for part {part.part_number} in the request."
                    )
            elif own != found.checksum_value:
                raise errors.InvalidPart(PartNumber=str(part.part_number), ETag=part.etag)
        chosen.append(found)
    for small in chosen[:-1]:
        if small.size < min_part_size:
            raise errors.EntityTooSmall(
                ProposedSize=str(small.size),
                MinSizeAllowed=str(min_part_size),
                PartNumber=str(small.part_number),
                ETag='"' + small.etag + '"',
            )
    return chosen


def complete_checksum(
    upload: MultipartUpload,
    chosen: Sequence[UploadedPart],
    expected: tuple[str, str] | None = None,
    expected_type: str | None = None,
) -> str | None:
    """The object checksum a Complete stores (None without an algorithm), checked
    against what the client sent: ``expected`` (ALGORITHM, base64 without ``-N``) from
    ``x-amz-checksum-<algorithm>`` and ``expected_type`` from ``x-amz-checksum-type``."""
    algorithm, kind = upload.checksum_algorithm, upload.checksum_type
    if algorithm is None:
        return None
    kind = kind or (FULL_OBJECT if algorithm.upper() == "CRC64NVME" else COMPOSITE)
    if expected_type is not None and expected_type != kind:
        raise errors.InvalidRequest(
            f"The upload was created using the {kind} checksum mode. "
            "The complete request must use the same checksum mode."
        )
    if expected is not None and expected[0].upper() != algorithm.upper():
        raise errors.InvalidRequest(
            f"Checksum Type mismatch occurred, expected checksum Type: {algorithm.lower()}, "
            f"actual checksum Type: {expected[0].lower()}"
        )
    values = [part.checksum_value for part in chosen]
    if any(value is None for value in values):
        return None  # parts stored without one (cannot happen for uploads of this version)
    if kind == COMPOSITE:
        value = composite_checksum(algorithm, [v for v in values if v is not None])
        bare = value.rpartition("-")[0]
    else:
        value = full_object_checksum(
            algorithm, [(p.checksum_value or "", p.size) for p in chosen]
        )
        bare = value
    if expected is not None and expected[1] != bare:
        raise errors.BadDigest(f"The {algorithm.lower()} you specified did not match the calculated checksum.")
    return value


def check_part_checksum(upload: MultipartUpload, checksum: tuple[str, str] | None) -> None:
    """A part of an upload created with a checksum algorithm must carry that checksum."""
    algorithm = upload.checksum_algorithm
    if algorithm is None:
        return
    actual = checksum[0] if checksum is not None else None
    if actual is None or actual.upper() != algorithm.upper():
        raise errors.InvalidRequest(
            f"Checksum Type mismatch occurred, expected checksum Type: {algorithm.lower()}, "
            f"actual checksum Type: {(actual or 'null').lower()}"
        )


def part_range(record: ObjectRecord, number: int) -> tuple[int, int] | None:
    """The inclusive byte range GET/HEAD ``?partNumber=N`` serves (None: the empty object).

    N counts the object's parts in order (1 is the first, whatever number it was
    uploaded as); a non-multipart object is one part.  A part beyond the object's
    parts is 400 InvalidPart, as S3 answers.  ``number`` is 1..10000
    (:func:`s3orch.s3.multipart.parse_part_number`).
    """
    sizes = record.part_sizes if record.part_sizes else (record.size,)
    if number > len(sizes):
        raise errors.InvalidPart(PartNumber=str(number))
    start = sum(sizes[: number - 1])
    end = start + sizes[number - 1] - 1
    if end < start:
        return None
    return start, end


def object_parts_page(record: ObjectRecord, max_parts: int, marker: int) -> xml.ObjectPartsInfo:
    """GetObjectAttributes' ObjectParts of a multipart object, as AWS answers it.

    Always ``PartsCount``.  A FULL_OBJECT checksum: nothing else.  Otherwise the
    pagination (at most ``max_parts`` parts numbered above ``marker``, compared with
    the numbers the parts were uploaded as; :mod:`s3orch.s3.object_attributes` parses
    both); the parts themselves
    (number, size, checksum) only when the object has a COMPOSITE checksum, since
    AWS lists them only for objects uploaded with an additional checksum.
    """
    count = record.parts_count or len(record.parts) or 1
    kind = None
    if record.checksum_algorithm and record.checksum_value:
        head, dash, tail = record.checksum_value.rpartition("-")
        kind = COMPOSITE if dash and head and tail.isdigit() else FULL_OBJECT
    if kind == FULL_OBJECT:
        return xml.ObjectPartsInfo(total_parts_count=count)
    listed: list[xml.ObjectPartInfo] = []
    truncated = False
    if kind == COMPOSITE and record.parts and record.checksum_algorithm:
        element = checksum_element(record.checksum_algorithm)
        following = [extent for extent in record.parts if extent.part_number > marker]
        truncated = len(following) > max_parts
        for extent in following[:max_parts]:
            checksums = [(element, extent.checksum_value)] if extent.checksum_value else []
            listed.append(xml.ObjectPartInfo(extent.part_number, extent.size, checksums))
    return xml.ObjectPartsInfo(
        total_parts_count=count,
        part_number_marker=marker,
        next_part_number_marker=listed[-1].part_number if listed else None,
        max_parts=max_parts,
        is_truncated=truncated,
        parts=tuple(listed),
    )


@dataclass(frozen=True)
class ExtentCopy:
    """An UploadPartCopy a backend holding ``extent`` can do by itself, and what the
    part then records: the extent's MD5 (its ETag) and its checksum, when the upload has
    an algorithm."""

    extent: Extent
    md5_hex: str
    checksum_value: str | None


def server_side_part_copy(
    source: ObjectRecord, byte_range: tuple[int, int] | None, algorithm: str | None
) -> ExtentCopy | None:
    """The server-side copy of ``byte_range`` (None: all) of ``source``, if there is one.

    There is when the range is exactly one extent of the source stored as the client sent
    it (neither compressed nor encrypted), the extent's MD5 is
    known (a single-part ETag), and, for an upload with a checksum ``algorithm``, the
    extent's checksum in that algorithm is known too (not a composite ``-N`` one).
    Otherwise the range must be read and hashed (a spool).
    """
    extent = _whole_extent(source, byte_range)
    if extent is None or extent.compression_chunk_size is not None or source.encrypted:  # not the client's bytes
        return None
    md5 = _plain_md5(extent.etag if source.parts else source.etag)
    if md5 is None:
        return None
    checksum = None
    if algorithm is not None:
        if (source.checksum_algorithm or "").upper() == algorithm.upper():
            value = extent.checksum_value if source.parts else source.checksum_value
            if value is not None and "-" not in value:
                checksum = value
        if checksum is None:
            return None
    return ExtentCopy(extent, md5, checksum)


def _whole_extent(source: ObjectRecord, byte_range: tuple[int, int] | None) -> Extent | None:
    """The extent of ``source`` a copy of ``byte_range`` takes whole, if it is exactly one."""
    if byte_range is None:
        return source.extents[0] if len(source.extents) == 1 else None
    for extent in source.extents:
        if extent.size and (extent.offset, extent.offset + extent.size - 1) == byte_range:
            return extent
    return None


def _plain_md5(etag: str | None) -> str | None:
    if etag and len(etag) == 32 and all(c in "0123456789abcdef" for c in etag.lower()):
        return etag.lower()
    return None
