"""S3 XML listing responses: ListBuckets, ListObjects (v1, v2), ListObjectVersions, ListParts,
ListMultipartUploads."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from s3orch.s3.listing import parse_encoding_type
from s3orch.s3.xml.common import (
    _ESCAPES,
    _NEEDS_ESCAPE,
    Owner,
    Timestamp,
    _doc,
    _el,
    _owner,
    escape_text,
    iso8601,
    iso8601_seconds,
    quote_etag,
    unquote_etag,
    url_encode,
)

# ---------------------------------------------------------------------------
# what list builders read from rows (duck-typed: dataclasses, named tuples, rows)


class ListEntry(Protocol):
    """An object row as ListObjects needs it."""

    @property
    def key(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def etag(self) -> str: ...
    @property
    def last_modified(self) -> Timestamp: ...


class PartEntry(Protocol):
    """An uploaded part as ListParts needs it."""

    @property
    def part_number(self) -> int: ...
    @property
    def etag(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def last_modified(self) -> Timestamp: ...


class UploadEntry(Protocol):
    """An in-progress multipart upload as ListMultipartUploads needs it."""

    @property
    def key(self) -> str: ...
    @property
    def upload_id(self) -> str: ...
    @property
    def initiated(self) -> Timestamp: ...


# ---------------------------------------------------------------------------
# response builders



def _encoder(encoding_type: str | None) -> tuple[bool, Callable[[str], str]]:
    """Whether ``encoding-type=url`` was asked for, and the function every listing applies to
    the fields AWS encodes (keys, markers, prefixes, delimiters)."""
    if parse_encoding_type(encoding_type) == "url":
        return True, url_encode
    return False, _as_is


def _as_is(value: str) -> str:
    return value

def list_buckets(
    owner_id: str, owner_name: str, buckets: Sequence[tuple[str, Timestamp]]
) -> bytes:
    """ListAllMyBucketsResult for (name, creation time) pairs."""
    parts = [_owner("Owner", (owner_id, owner_name)), "<Buckets>"]
    for name, created in buckets:
        parts.append(
            "<Bucket>"
            + _el("Name", name)
            + _el("CreationDate", iso8601(created))
            + "</Bucket>"
        )
    parts.append("</Buckets>")
    return _doc("ListAllMyBucketsResult", parts)


#: What a ``<Version>`` of ListObjectVersions says after its Key: every object of a bucket
#: that was never versioned has one version, ``null``, and it is the current one.
NULL_VERSION_LATEST = "<VersionId>null</VersionId><IsLatest>true</IsLatest>"


def _contents(
    entries: Iterable[ListEntry],
    encode: bool,
    owner: Owner | None,
    element: str = "Contents",
    after_key: str = "",
) -> list[str]:
    """The ``<Contents>`` elements (or ListObjectVersions' ``<Version>``, with ``after_key``
    following the Key), one f-string each, with the common case inline (a value with
    nothing to escape, an ETag stored bare, a float time, an int size).

    A page of 1000 keys is the largest document the gateway builds on a hot path, and the
    element-by-element form (an ``_el`` call and a ``str.translate`` per value) cost 5 µs a
    key: most of the first page of a big bucket.  What comes out is exactly what that form
    made (tests compare them byte for byte)."""
    owner_xml = _owner("Owner", owner) if owner is not None else ""
    opening = f"<{element}><Key>"
    closing = f"</{element}>"
    key_end = "</Key>" + after_key + "<LastModified>"
    standard = owner_xml + "<StorageClass>STANDARD</StorageClass>" + closing
    needs_escape = _NEEDS_ESCAPE.search
    out: list[str] = []
    append = out.append
    for entry in entries:
        key = url_encode(entry.key) if encode else entry.key
        if needs_escape(key) is not None:
            key = key.translate(_ESCAPES)
        etag = entry.etag
        if needs_escape(etag) is not None or etag.strip() != etag:  # quoted, padded or odd
            etag = escape_text(unquote_etag(etag))
        when = entry.last_modified
        stamp = iso8601_seconds(int(when // 1)) if when.__class__ is float else iso8601(when)
        size = entry.size
        storage_class = getattr(entry, "storage_class", None)
        append(
            f"{opening}{key}{key_end}{stamp}</LastModified>"
            f"<ETag>&quot;{etag}&quot;</ETag>"
            f"<Size>{size if size.__class__ is int else _integer(size)}</Size>"
            + (standard if not storage_class else owner_xml + _el("StorageClass", str(storage_class)) + closing)
        )
    return out


def _integer(value: int) -> str:
    """An integer element's text as ``_el`` writes it (a bool is ``true``/``false``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _common_prefixes(prefixes: Iterable[str], encode: bool) -> str:
    return "".join(
        f"<CommonPrefixes><Prefix>{escape_text(url_encode(p) if encode else p)}</Prefix></CommonPrefixes>"
        for p in prefixes
    )


def list_objects_v1(
    bucket: str,
    prefix: str,
    marker: str,
    delimiter: str | None,
    max_keys: int,
    is_truncated: bool,
    next_marker: str | None,
    entries: Iterable[ListEntry],
    common_prefixes: Iterable[str],
    encoding_type: str | None,
    owner: Owner | None = None,
) -> bytes:
    """ListBucketResult of ListObjects (v1).

    With encoding-type=url, AWS encodes Prefix, Marker, NextMarker, Delimiter,
    Key and CommonPrefixes (botocore decodes all but Prefix).  ``owner`` adds
    Owner to every entry, as AWS's v1 listing does.
    """
    enc, e = _encoder(encoding_type)

    parts = [
        _el("Name", bucket),
        _el("Prefix", e(prefix)),
        _el("Marker", e(marker)),
        _el("NextMarker", e(next_marker) if next_marker is not None else None),
        _el("MaxKeys", max_keys),
        _el("Delimiter", e(delimiter) if delimiter else None),
        _el("EncodingType", "url" if enc else None),
        _el("IsTruncated", is_truncated),
    ]
    parts.extend(_contents(entries, enc, owner))
    parts.append(_common_prefixes(common_prefixes, enc))
    return _doc("ListBucketResult", parts)


def list_objects_v2(
    bucket: str,
    prefix: str,
    delimiter: str | None,
    max_keys: int,
    key_count: int,
    is_truncated: bool,
    continuation_token: str | None,
    next_continuation_token: str | None,
    start_after: str | None,
    entries: Iterable[ListEntry],
    common_prefixes: Iterable[str],
    encoding_type: str | None,
    fetch_owner: bool = False,
    owner: Owner | None = None,
) -> bytes:
    """ListBucketResult of ListObjectsV2.

    encoding-type=url encodes Prefix, Delimiter, StartAfter, Key and
    CommonPrefixes (not the tokens, which are opaque).  Owner only with fetch-owner.
    """
    enc, e = _encoder(encoding_type)

    parts = [
        _el("Name", bucket),
        _el("Prefix", e(prefix)),
        _el("StartAfter", e(start_after) if start_after is not None else None),
        _el("ContinuationToken", continuation_token),
        _el("NextContinuationToken", next_continuation_token if is_truncated else None),
        _el("KeyCount", key_count),
        _el("MaxKeys", max_keys),
        _el("Delimiter", e(delimiter) if delimiter else None),
        _el("EncodingType", "url" if enc else None),
        _el("IsTruncated", is_truncated),
    ]
    entry_owner = owner if fetch_owner else None
    parts.extend(_contents(entries, enc, entry_owner))
    parts.append(_common_prefixes(common_prefixes, enc))
    return _doc("ListBucketResult", parts)


def list_object_versions(
    bucket: str,
    prefix: str,
    key_marker: str,
    version_id_marker: str,
    delimiter: str | None,
    max_keys: int,
    is_truncated: bool,
    next_key_marker: str | None,
    next_version_id_marker: str | None,
    entries: Iterable[ListEntry],
    common_prefixes: Iterable[str],
    encoding_type: str | None,
    owner: Owner,
) -> bytes:
    """ListVersionsResult of a bucket that was never versioned: each current object is one
    ``<Version>`` (VersionId ``null``, IsLatest ``true``, with its Owner), never a
    DeleteMarker.  Elements in the order AWS sends them.

    encoding-type=url encodes Prefix, KeyMarker, NextKeyMarker, Delimiter, Key and
    CommonPrefixes (the version id markers are not keys).
    """
    enc, e = _encoder(encoding_type)

    parts = [
        _el("Name", bucket),
        _el("Prefix", e(prefix)),
        _el("KeyMarker", e(key_marker)),
        _el("VersionIdMarker", version_id_marker),
        _el("NextKeyMarker", e(next_key_marker) if next_key_marker is not None else None),
        _el("NextVersionIdMarker", next_version_id_marker),
        _el("MaxKeys", max_keys),
        _el("Delimiter", e(delimiter) if delimiter else None),
        _el("EncodingType", "url" if enc else None),
        _el("IsTruncated", is_truncated),
    ]
    parts.extend(_contents(entries, enc, owner, "Version", NULL_VERSION_LATEST))
    parts.append(_common_prefixes(common_prefixes, enc))
    return _doc("ListVersionsResult", parts)


def list_parts(
    bucket: str,
    key: str,
    upload_id: str,
    part_number_marker: int,
    next_part_number_marker: int | None,
    max_parts: int,
    is_truncated: bool,
    parts: Iterable[PartEntry],
    owner: Owner,
    storage_class: str = "STANDARD",
    *,
    checksum_algorithm: str | None = None,
    checksum_type: str | None = None,
) -> bytes:
    """ListPartsResult in AWS's order (Initiator/Owner/StorageClass before the markers).

    With the upload's checksum algorithm, each part carries its checksum
    (``checksum_algorithm``/``checksum_value`` attributes of the entries)."""
    out = [
        _el("Bucket", bucket),
        _el("Key", key),
        _el("UploadId", upload_id),
        _owner("Initiator", owner),
        _owner("Owner", owner),
        _el("StorageClass", storage_class),
        _el("ChecksumAlgorithm", checksum_algorithm),
        _el("ChecksumType", checksum_type if checksum_algorithm else None),
        _el("PartNumberMarker", part_number_marker),
        _el("NextPartNumberMarker", next_part_number_marker),
        _el("MaxParts", max_parts),
        _el("IsTruncated", is_truncated),
    ]
    for part in parts:
        out.append(
            "<Part>"
            + _el("PartNumber", part.part_number)
            + _el("LastModified", iso8601(part.last_modified))
            + _el("ETag", quote_etag(part.etag))
            + _el("Size", part.size)
            + _part_checksum(part, checksum_algorithm)
            + "</Part>"
        )
    return _doc("ListPartsResult", out)


def _part_checksum(part: object, algorithm: str | None) -> str:
    """The ``ChecksumX`` element of a part in ``algorithm`` ("" without one)."""
    value = getattr(part, "checksum_value", None)
    if not algorithm or not value:
        return ""
    if (getattr(part, "checksum_algorithm", None) or "").upper() != algorithm.upper():
        return ""
    return _el("Checksum" + algorithm.upper(), value)


def list_multipart_uploads(
    bucket: str,
    uploads: Iterable[UploadEntry],
    *,
    owner: Owner,
    prefix: str = "",
    delimiter: str | None = None,
    key_marker: str = "",
    upload_id_marker: str = "",
    next_key_marker: str | None = None,
    next_upload_id_marker: str | None = None,
    max_uploads: int = 1000,
    is_truncated: bool = False,
    common_prefixes: Iterable[str] = (),
    encoding_type: str | None = None,
    storage_class: str = "STANDARD",
) -> bytes:
    """ListMultipartUploadsResult.  encoding-type=url encodes keys, markers and prefixes."""
    enc, e = _encoder(encoding_type)

    out = [
        _el("Bucket", bucket),
        _el("KeyMarker", e(key_marker)),
        _el("UploadIdMarker", upload_id_marker),
        _el(
            "NextKeyMarker", e(next_key_marker) if next_key_marker is not None else None
        ),
        _el("NextUploadIdMarker", next_upload_id_marker),
        _el("Delimiter", e(delimiter) if delimiter else None),
        _el("Prefix", e(prefix)),
        _el("EncodingType", "url" if enc else None),
        _el("MaxUploads", max_uploads),
        _el("IsTruncated", is_truncated),
    ]
    for upload in uploads:
        out.append(
            "<Upload>"
            + _el("Key", e(upload.key))
            + _el("UploadId", upload.upload_id)
            + _owner("Initiator", owner)
            + _owner("Owner", owner)
            + _el("StorageClass", storage_class)
            + _el("Initiated", iso8601(upload.initiated))
            + _el("ChecksumAlgorithm", getattr(upload, "checksum_algorithm", None))
            + _el("ChecksumType", getattr(upload, "checksum_type", None))
            + "</Upload>"
        )
    out.append(_common_prefixes(common_prefixes, enc))
    return _doc("ListMultipartUploadsResult", out)
