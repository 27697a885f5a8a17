"""The copy source of CopyObject and UploadPartCopy: which object, which of its bytes.

``x-amz-copy-source`` names the source (URL-encoded, optionally with ``?versionId``),
``x-amz-copy-source-range`` the bytes an UploadPartCopy takes, and
``x-amz-metadata-directive`` whether CopyObject keeps the source's metadata.  Each
refusal is the 400 InvalidArgument AWS answers, never a 404 for a key that cannot exist.
"""

from __future__ import annotations

from urllib.parse import unquote, unquote_to_bytes

from s3orch.s3 import errors
from s3orch.s3.numbers import parse_decimal
from s3orch.s3.versioning import INVALID_VERSION_ID, NULL_VERSION

_NO_BUCKET_AND_KEY = "Copy Source must mention the source bucket and key: sourcebucket/sourcekey"

_RANGE_FORM = (
    "The x-amz-copy-source-range value must be of the form bytes=first-last where first "
    "and last are the zero-based offsets of the first and last bytes to copy"
)

#: ``x-amz-metadata-directive`` values: keep the source's metadata, or take the request's.
COPY = "COPY"
REPLACE = "REPLACE"


def parse_copy_source(value: str) -> tuple[str, str]:
    """``/bucket/key`` or ``bucket/key`` (URL-encoded, optional ?versionId) -> (bucket, key).

    The decoded key must be valid UTF-8 (400 InvalidArgument, never a 404 for a
    key that cannot exist).
    """
    source = value.split("?", 1)[0]
    try:
        source = unquote_to_bytes(source.encode("utf-8", "surrogateescape")).decode("utf-8")
    except UnicodeError:
        raise errors.InvalidArgument(
            "Invalid copy source object key", ArgumentName="x-amz-copy-source"
        ) from None
    source = source.lstrip("/")
    if "/" not in source:
        raise errors.InvalidArgument(_NO_BUCKET_AND_KEY)
    bucket, key = source.split("/", 1)
    if not bucket or not key:
        raise errors.InvalidArgument(_NO_BUCKET_AND_KEY)
    return bucket, key


def check_copy_source_version(value: str, *, part_copy: bool) -> None:
    """A copy source's ``?versionId=`` may only be ``null`` (the source's current object: the
    bucket was never versioned); refused as AWS refuses a malformed one: empty is
    InvalidArgument for both operations, another is CopyObject's 400 InvalidRequest and
    UploadPartCopy's InvalidArgument."""
    _, sep, query = value.partition("?")
    if not sep:
        return
    for pair in query.split("&"):
        name, _, raw = pair.partition("=")
        if name != "versionId":
            continue
        version_id = unquote(raw)
        if version_id == NULL_VERSION:
            continue
        if version_id == "":
            raise errors.InvalidArgument(
                "Version id cannot be the empty string", ArgumentName="x-amz-copy-source", ArgumentValue=""
            )
        if part_copy:
            raise errors.InvalidArgument(
                INVALID_VERSION_ID, ArgumentName="x-amz-copy-source", ArgumentValue=version_id
            )
        raise errors.InvalidRequest("Invalid Request")


def parse_copy_source_range(value: str | None, size: int) -> tuple[int, int] | None:
    """``x-amz-copy-source-range: bytes=first-last`` within an object of ``size`` bytes.

    Both refusals are 400 InvalidArgument, as S3 answers: one message for a value
    not of the form ``bytes=first-last`` (ASCII digits), another for a range that
    does not lie within the source (``last`` past its end, or ``first`` > ``last``).
    """
    if value is None:
        return None
    unit, _, spec = value.strip().partition("=")
    first, dash, last = spec.partition("-")
    start, end = parse_decimal(first), parse_decimal(last)
    if unit.strip().lower() != "bytes" or not dash or start is None or end is None:
        raise errors.InvalidArgument(
            _RANGE_FORM, ArgumentName="x-amz-copy-source-range", ArgumentValue=value[:128]
        )
    if end >= size or start > end:
        raise errors.InvalidArgument(
            f"Range specified is not valid for source object of size: {size}",
            ArgumentName="x-amz-copy-source-range",
            ArgumentValue=value[:128],
        )
    return start, end


def parse_metadata_directive(value: str | None, header: str = "x-amz-metadata-directive") -> str:
    """``x-amz-metadata-directive`` (or ``x-amz-tagging-directive``): COPY (the default) or
    REPLACE, in any case; anything else is 400 InvalidArgument."""
    directive = (value or COPY).upper()
    if directive not in (COPY, REPLACE):
        kind = "tagging" if "tagging" in header else "metadata"
        raise errors.InvalidArgument(
            f"Unknown {kind} directive.",
            ArgumentName=header,
            ArgumentValue=directive[:64],
        )
    return directive


def parse_tagging_directive(value: str | None) -> str:
    """``x-amz-tagging-directive``: COPY (the default: the source's tags) or REPLACE (the
    request's ``x-amz-tagging``)."""
    return parse_metadata_directive(value, "x-amz-tagging-directive")
