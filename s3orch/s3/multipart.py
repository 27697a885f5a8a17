"""The request values of S3's multipart operations, parsed as AWS parses them.

Part numbers (``?partNumber=``, 1..10000) of UploadPart, UploadPartCopy and
GET/HEAD of one part; the ``x-amz-checksum-type`` a CompleteMultipartUpload
claims; and s3orch's own upload size hint.  What the values mean for an upload
(placing parts, completing them) is :mod:`s3orch.core.multipart`'s business.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from s3orch.s3 import errors
from s3orch.s3.checksums import CHECKSUM_TYPES
from s3orch.s3.numbers import parse_decimal

#: S3 numbers parts 1..10000.
MAX_PART_NUMBER = 10000

#: s3orch extension: the total size a client expects to upload, sent on
#: CreateMultipartUpload, has the upload refused at once (507) when the backends
#: together have no room for it.  On CompleteMultipartUpload AWS checks the same
#: header against the parts.
SIZE_HINT_HEADER = "x-amz-mp-object-size"

Headers = Mapping[str, Sequence[str]]


def _first(headers: Headers, name: str) -> str | None:
    values = headers.get(name)
    return values[0] if values else None


def parse_part_number(raw: str | None) -> int:
    """A ``partNumber`` query value: an integer 1..10000, else InvalidArgument."""
    number = parse_decimal((raw or "").strip(), max_digits=9, maximum=MAX_PART_NUMBER)
    if number is None or number < 1:
        raise errors.InvalidArgument(
            "Part number must be an integer between 1 and 10000, inclusive",
            ArgumentName="partNumber",
            ArgumentValue=(raw or "")[:64],
        )
    return number


def parse_size_hint(headers: Headers) -> int | None:
    """The :data:`SIZE_HINT_HEADER` value (None: absent); not a non-negative integer: 400."""
    raw = _first(headers, SIZE_HINT_HEADER)
    if raw is None:
        return None
    size = parse_decimal(raw.strip())
    if size is None:
        raise errors.InvalidArgument(
            f"{SIZE_HINT_HEADER} must be a non-negative integer.",
            ArgumentName=SIZE_HINT_HEADER,
            ArgumentValue=raw[:64],
        )
    return size


def parse_complete_checksum_type(headers: Headers) -> str | None:
    """The ``x-amz-checksum-type`` a CompleteMultipartUpload claims (COMPOSITE or FULL_OBJECT)."""
    raw = _first(headers, "x-amz-checksum-type")
    if raw is None:
        return None
    wanted = raw.strip().upper()
    if wanted not in CHECKSUM_TYPES:
        raise errors.InvalidRequest("Value for x-amz-checksum-type header is invalid.")
    return wanted
