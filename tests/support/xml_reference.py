"""The ListObjects (v1, v2) builders as they were before the fast serialiser (issue 20): one
``_el`` call per element, every value escaped with ``str.translate``.  Kept verbatim as the
oracle the fast serialiser in :mod:`s3orch.s3.xml.listings` must match byte for byte; the
ListObjectVersions builder at the end was written the same way, as the oracle of the same
serialiser writing ``<Version>`` elements."""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

NS = "http://s3.amazonaws.com/doc/2006-03-01/"
_DECL = '<?xml version="1.0" encoding="UTF-8"?>\n'
Owner = tuple[str, str]


def _escape_table() -> dict[int, str]:
    table = {ord("&"): "&amp;", ord("<"): "&lt;", ord(">"): "&gt;", ord('"'): "&quot;"}
    # \r must be a character reference or XML parsers turn it into \n.  Other
    # C0 controls are not XML 1.0 characters at all: AWS emits them as
    # references too, which is why clients ask for encoding-type=url.
    for code in [*range(0x09), 0x0B, 0x0C, *range(0x0D, 0x20), 0xFFFE, 0xFFFF]:
        table[code] = f"&#x{code:X};"
    return table


_ESCAPES = _escape_table()


_ESCAPES = _escape_table()


def escape_text(value: str) -> str:
    """Escape a string for XML element content."""
    return value.translate(_ESCAPES)


def iso8601(when: float | int | datetime.datetime) -> str:
    """AWS's XML timestamp (``2009-10-12T17:50:30.000Z``); whole seconds like Last-Modified."""
    if isinstance(when, datetime.datetime):
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.UTC)
        seconds = int(when.timestamp() // 1)
    else:
        seconds = int(when // 1)
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(seconds))


def quote_etag(etag: str) -> str:
    """An ETag in AWS's quoted form, whatever form the store kept it in."""
    return '"' + unquote_etag(etag) + '"'


def unquote_etag(etag: str) -> str:
    """An ETag without surrounding quotes."""
    etag = etag.strip()
    if len(etag) >= 2 and etag[0] == '"' and etag[-1] == '"':
        return etag[1:-1]
    return etag


def url_encode(value: str) -> str:
    """encoding-type=url form: UTF-8 percent-encoding that keeps ``/``; space is ``%20``.

    ``+`` is ``%2B`` and every control character is escaped, so any key (even one
    XML 1.0 cannot carry) round-trips.  ``%20`` rather than ``+`` for a space is what
    the S3 conformance suite (s3-tests) expects, and it decodes to the same key under
    both ``unquote_plus`` (botocore) and plain percent-decoding (SDKs that do not
    treat ``+`` as a space).
    """
    return quote(value, safe="/")


def _el(name: str, value: str | int | bool | None) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int):
        text = str(value)
    else:
        text = escape_text(value)
    return f"<{name}>{text}</{name}>"


def _doc(root: str, body: Iterable[str]) -> bytes:
    return (_DECL + f'<{root} xmlns="{NS}">' + "".join(body) + f"</{root}>").encode(
        "utf-8"
    )


def _owner(tag: str, owner: Owner) -> str:
    return f"<{tag}>" + _el("ID", owner[0]) + _el("DisplayName", owner[1]) + f"</{tag}>"


def _contents(entry: Any, encode: bool, owner: Owner | None) -> str:
    key = url_encode(entry.key) if encode else entry.key
    storage_class = getattr(entry, "storage_class", None) or "STANDARD"
    return (
        "<Contents>"
        + _el("Key", key)
        + _el("LastModified", iso8601(entry.last_modified))
        + _el("ETag", quote_etag(entry.etag))
        + _el("Size", entry.size)
        + (_owner("Owner", owner) if owner is not None else "")
        + _el("StorageClass", str(storage_class))
        + "</Contents>"
    )


def _common_prefixes(prefixes: Iterable[str], encode: bool) -> str:
    return "".join(
        "<CommonPrefixes>"
        + _el("Prefix", url_encode(p) if encode else p)
        + "</CommonPrefixes>"
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
    entries: Iterable[Any],
    common_prefixes: Iterable[str],
    encoding_type: str | None,
    owner: Owner | None = None,
) -> bytes:
    """ListBucketResult of ListObjects (v1).

    With encoding-type=url, AWS encodes Prefix, Marker, NextMarker, Delimiter,
    Key and CommonPrefixes (botocore decodes all but Prefix).  ``owner`` adds
    Owner to every entry, as AWS's v1 listing does.
    """
    enc = encoding_type == "url"

    def e(value: str) -> str:
        return url_encode(value) if enc else value

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
    parts.extend(_contents(entry, enc, owner) for entry in entries)
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
    entries: Iterable[Any],
    common_prefixes: Iterable[str],
    encoding_type: str | None,
    fetch_owner: bool = False,
    owner: Owner | None = None,
) -> bytes:
    """ListBucketResult of ListObjectsV2.

    encoding-type=url encodes Prefix, Delimiter, StartAfter, Key and
    CommonPrefixes (not the tokens, which are opaque).  Owner only with fetch-owner.
    """
    enc = encoding_type == "url"

    def e(value: str) -> str:
        return url_encode(value) if enc else value

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
    parts.extend(_contents(entry, enc, entry_owner) for entry in entries)
    parts.append(_common_prefixes(common_prefixes, enc))
    return _doc("ListBucketResult", parts)


def _version(entry: Any, encode: bool, owner: Owner) -> str:
    """ListObjectVersions' <Version> of a bucket never versioned, element by element."""
    key = url_encode(entry.key) if encode else entry.key
    storage_class = getattr(entry, "storage_class", None) or "STANDARD"
    return (
        "<Version>"
        + _el("Key", key)
        + _el("VersionId", "null")
        + _el("IsLatest", True)
        + _el("LastModified", iso8601(entry.last_modified))
        + _el("ETag", quote_etag(entry.etag))
        + _el("Size", entry.size)
        + _owner("Owner", owner)
        + _el("StorageClass", str(storage_class))
        + "</Version>"
    )


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
    entries: Iterable[Any],
    common_prefixes: Iterable[str],
    encoding_type: str | None,
    owner: Owner,
) -> bytes:
    """ListVersionsResult, element by element (the oracle of the fast ``<Version>`` writer)."""
    enc = encoding_type == "url"

    def e(value: str) -> str:
        return url_encode(value) if enc else value

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
    parts.extend(_version(entry, enc, owner) for entry in entries)
    parts.append(_common_prefixes(common_prefixes, enc))
    return _doc("ListVersionsResult", parts)
