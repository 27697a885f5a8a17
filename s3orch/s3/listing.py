"""The parameters of S3's listings, parsed as AWS parses them.

ListObjects (v1 and v2) and ListObjectVersions take ``prefix``, ``delimiter``,
``max-keys`` and ``encoding-type``, then v1 a ``marker``, v2 a ``continuation-token``
(ours: the last key of the previous page, base64url) or ``start-after``, and
ListObjectVersions a ``key-marker`` and ``version-id-marker``.  ListParts
and ListMultipartUploads page with ``max-parts``/``part-number-marker`` and
``max-uploads``/``key-marker``/``upload-id-marker``.  Every page is capped at
:data:`MAX_PAGE` entries; every bad value is the 400 InvalidArgument AWS answers.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass

from s3orch.s3 import errors
from s3orch.s3.numbers import parse_decimal, parse_signed_decimal
from s3orch.s3.versioning import INVALID_VERSION_ID, NULL_VERSION

#: The most entries one listing page holds (AWS's cap on max-keys, max-parts, max-uploads).
MAX_PAGE = 1000
MAX_INT32 = 2147483647

Query = Sequence[tuple[str, str]]


def _value(query: Query, name: str) -> str | None:
    """The first value of a query parameter (None: absent)."""
    for key, value in query:
        if key == name:
            return value
    return None


@dataclass(frozen=True)
class ListObjectsParams:
    """What ListObjects and ListObjectsV2 have in common."""

    prefix: str
    delimiter: str
    #: 0..1000: larger requests are served 1000 keys, as AWS does.
    max_keys: int
    #: "url" or None.
    encoding_type: str | None


def parse_list_objects(query: Query) -> ListObjectsParams:
    """``prefix``, ``delimiter``, ``max-keys`` and ``encoding-type`` of a ListObjects(V2)."""
    return _listing_params(query, parse_max_keys(query))


def _listing_params(query: Query, max_keys: int) -> ListObjectsParams:
    return ListObjectsParams(
        prefix=_value(query, "prefix") or "",
        delimiter=_value(query, "delimiter") or "",
        max_keys=max_keys,
        encoding_type=parse_encoding_type(_value(query, "encoding-type")),
    )


def parse_max_keys(query: Query) -> int:
    """``max-keys``: 0..1000 (larger asks are served 1000, as AWS does); the first check
    AWS makes of a listing's parameters."""
    raw_max = _value(query, "max-keys")
    max_keys = MAX_PAGE
    if raw_max is not None:
        parsed = parse_signed_decimal(raw_max, max_digits=10)
        if parsed is None or parsed > MAX_INT32:
            raise errors.InvalidArgument(
                "Provided max-keys not an integer or within integer range",
                ArgumentName="max-keys",
                ArgumentValue=raw_max[:64],
            )
        if parsed < 0:
            raise errors.InvalidArgument(
                "Argument maxKeys must be an integer between 0 and 2147483647",
                ArgumentName="maxKeys",
                ArgumentValue=raw_max[:64],
            )
        max_keys = min(parsed, MAX_PAGE)
    return max_keys


def parse_encoding_type(value: str | None) -> str | None:
    """``encoding-type``: absent or ``url``; anything else is InvalidArgument."""
    if value is not None and value != "url":
        raise errors.InvalidArgument(
            "Invalid Encoding Method specified in Request",
            ArgumentName="encoding-type",
            ArgumentValue=value[:64],
        )
    return value


@dataclass(frozen=True)
class ListVersionsStart:
    """Where a ListObjectVersions page starts, as its markers say (echoed back as given)."""

    key_marker: str
    #: "" when absent, else "null": the only version an object here has.
    version_id_marker: str


def parse_list_object_versions(query: Query) -> tuple[ListObjectsParams, ListVersionsStart]:
    """The parameters of a ListObjectVersions, checked in AWS's order: ``max-keys``, then
    the markers, then ``encoding-type``.

    ``version-id-marker`` needs a ``key-marker`` parameter (an empty one counts), may not
    be empty, and can only be ``null`` here.  Each object's one version is ``null``, so the
    versions after (key-marker, null) are those of the keys after key-marker: the page
    starts where a ListObjects with ``marker=key-marker`` does.
    """
    max_keys = parse_max_keys(query)
    key_marker = _value(query, "key-marker")
    version_id_marker = _value(query, "version-id-marker")
    if version_id_marker is not None:
        if key_marker is None:
            raise errors.InvalidArgument(
                "A version-id marker cannot be specified without a key marker.",
                ArgumentName="version-id-marker",
                ArgumentValue=version_id_marker,
            )
        if version_id_marker == "":
            raise errors.InvalidArgument(
                "A version-id marker cannot be empty.", ArgumentName="version-id-marker", ArgumentValue=""
            )
        if version_id_marker != NULL_VERSION:
            raise errors.InvalidArgument(
                INVALID_VERSION_ID, ArgumentName="version-id-marker", ArgumentValue=version_id_marker
            )
    start = ListVersionsStart(key_marker or "", version_id_marker or "")
    return _listing_params(query, max_keys), start


def list_objects_v1_marker(query: Query) -> str:
    """ListObjects' ``marker``: list the keys after it ("" from the start)."""
    return _value(query, "marker") or ""


@dataclass(frozen=True)
class ListObjectsV2Start:
    """Where a ListObjectsV2 page starts, and what it echoes back."""

    continuation_token: str | None
    start_after: str | None
    #: The key to list after: the token's key, else start-after, else "".
    start: str
    fetch_owner: bool


def parse_list_objects_v2_start(query: Query) -> ListObjectsV2Start:
    """``continuation-token`` (wins over ``start-after``), ``start-after`` and ``fetch-owner``."""
    token = _value(query, "continuation-token")
    start_after = _value(query, "start-after")
    start = start_after or ""
    if token is not None:
        start = decode_continuation_token(token)
    return ListObjectsV2Start(
        continuation_token=token,
        start_after=start_after,
        start=start,
        fetch_owner=(_value(query, "fetch-owner") or "").lower() == "true",
    )


def encode_continuation_token(marker: str) -> str:
    """The token a truncated ListObjectsV2 page hands out: its last key, base64url."""
    return base64.urlsafe_b64encode(marker.encode("utf-8")).decode("ascii")


def decode_continuation_token(token: str) -> str:
    """The key a continuation token stands for; a token we did not make is InvalidArgument."""
    try:
        return base64.urlsafe_b64decode(token.encode("ascii")).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeError):
        raise errors.InvalidArgument(
            "The continuation token provided is incorrect", ArgumentName="continuation-token"
        ) from None


def parse_page_number(query: Query, name: str, default: int) -> int:
    """A non-negative 32-bit integer parameter (``max-parts``, ``part-number-marker``,
    ``max-uploads``); absent or empty: ``default``."""
    raw = _value(query, name)
    if raw is None or raw == "":
        return default
    value = parse_decimal(raw.strip(), max_digits=10, maximum=MAX_INT32)
    if value is None:
        raise errors.InvalidArgument(
            f"Provided {name} not an integer or within integer range",
            ArgumentName=name,
            ArgumentValue=raw[:64],
        )
    return value


@dataclass(frozen=True)
class ListPartsParams:
    """A ListParts page: at most ``max_parts`` parts numbered above ``marker``."""

    max_parts: int
    marker: int


def parse_list_parts(query: Query) -> ListPartsParams:
    """``max-parts`` (at most 1000) and ``part-number-marker`` of a ListParts."""
    return ListPartsParams(
        max_parts=min(parse_page_number(query, "max-parts", MAX_PAGE), MAX_PAGE),
        marker=parse_page_number(query, "part-number-marker", 0),
    )


@dataclass(frozen=True)
class ListUploadsParams:
    """A ListMultipartUploads page."""

    prefix: str
    delimiter: str
    key_marker: str
    #: Only meaningful with a key marker (AWS ignores it alone).
    upload_id_marker: str
    encoding_type: str | None
    max_uploads: int


def parse_list_uploads(query: Query) -> ListUploadsParams:
    """The parameters of a ListMultipartUploads."""
    key_marker = _value(query, "key-marker") or ""
    upload_id_marker = (_value(query, "upload-id-marker") or "") if key_marker else ""
    return ListUploadsParams(
        prefix=_value(query, "prefix") or "",
        delimiter=_value(query, "delimiter") or "",
        key_marker=key_marker,
        upload_id_marker=upload_id_marker,
        encoding_type=parse_encoding_type(_value(query, "encoding-type")),
        max_uploads=min(parse_page_number(query, "max-uploads", MAX_PAGE), MAX_PAGE),
    )
