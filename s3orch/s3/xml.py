"""S3 XML documents: hand-built responses and size-checked, defused request parsing.

Responses are built as strings, in AWS's element order, with every text value
escaped, so what we emit is exactly what botocore and the other SDKs parse
(tests prove it with botocore's own parser).  Request bodies are parsed with
defusedxml, refusing DTDs and entities outright and anything over a byte cap,
so a hostile body costs bounded memory and answers 400 MalformedXML.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import quote
from xml.etree.ElementTree import Element, ParseError

from defusedxml import ElementTree as DefusedET
from defusedxml.common import DefusedXmlException

from s3orch.s3.errors import InvalidTag, MalformedXML
from s3orch.s3.listing import parse_encoding_type
from s3orch.s3.numbers import parse_decimal

NS = "http://s3.amazonaws.com/doc/2006-03-01/"
_DECL = '<?xml version="1.0" encoding="UTF-8"?>\n'

#: Body caps.  1000 keys of 1024 bytes are ~1.05 MB, so DeleteObjects needs more
#: than 1 MiB; 10000 parts with checksums and pretty-printing stay under 4 MiB.
DELETE_OBJECTS_MAX_BYTES = 2 * 1024 * 1024
COMPLETE_MULTIPART_MAX_BYTES = 4 * 1024 * 1024
TAGGING_MAX_BYTES = 256 * 1024

MAX_DELETE_KEYS = 1000

#: A point in time as the store gives it: epoch seconds or an aware datetime.
Timestamp = float | int | datetime.datetime

Owner = tuple[str, str]
"""(canonical id, display name)."""





# ---------------------------------------------------------------------------
# escaping and formatting


def _escape_table() -> dict[int, str]:
    table = {ord("&"): "&amp;", ord("<"): "&lt;", ord(">"): "&gt;", ord('"'): "&quot;"}
    # \r must be a character reference or XML parsers turn it into \n.  Other
    # C0 controls are not XML 1.0 characters at all: AWS emits them as
    # references too, which is why clients ask for encoding-type=url.
    for code in [*range(0x09), 0x0B, 0x0C, *range(0x0D, 0x20), 0xFFFE, 0xFFFF]:
        table[code] = f"&#x{code:X};"
    return table


_ESCAPES = _escape_table()


def escape_text(value: str) -> str:
    """Escape a string for XML element content."""
    return value.translate(_ESCAPES)


def iso8601(when: Timestamp) -> str:
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


def _contents(entry: ListEntry, encode: bool, owner: Owner | None) -> str:
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
    enc = parse_encoding_type(encoding_type) == "url"

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
    enc = parse_encoding_type(encoding_type) == "url"

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


def copy_object_result(etag: str, last_modified: Timestamp) -> bytes:
    """CopyObjectResult (LastModified then ETag, as AWS sends it)."""
    return _doc(
        "CopyObjectResult",
        [_el("LastModified", iso8601(last_modified)), _el("ETag", quote_etag(etag))],
    )


def copy_part_result(
    etag: str, last_modified: Timestamp, checksums: Sequence[tuple[str, str]] = ()
) -> bytes:
    """CopyPartResult of UploadPartCopy; ``checksums`` are (ChecksumCRC32 ..., value) pairs
    (the part's checksum when its upload has an algorithm)."""
    return _doc(
        "CopyPartResult",
        [_el("LastModified", iso8601(last_modified)), _el("ETag", quote_etag(etag))]
        + [_el(name, value) for name, value in checksums],
    )


def delete_result(
    deleted: Sequence[str], errors: Sequence[tuple[str, str, str]], quiet: bool
) -> bytes:
    """DeleteResult; ``errors`` are (key, code, message).  Quiet mode lists errors only."""
    parts: list[str] = []
    if not quiet:
        parts.extend("<Deleted>" + _el("Key", key) + "</Deleted>" for key in deleted)
    parts.extend(
        "<Error>"
        + _el("Key", key)
        + _el("Code", code)
        + _el("Message", message)
        + "</Error>"
        for key, code, message in errors
    )
    return _doc("DeleteResult", parts)


def location_constraint(region: str) -> bytes:
    """GetBucketLocation: an empty element means us-east-1, as AWS answers."""
    if not region or region == "us-east-1":
        return (_DECL + f'<LocationConstraint xmlns="{NS}"/>').encode("utf-8")
    return _doc("LocationConstraint", [escape_text(region)])


def versioning_configuration(status: str | None = None) -> bytes:
    """GetBucketVersioning: empty for a bucket that never had versioning."""
    if status is None:
        return (_DECL + f'<VersioningConfiguration xmlns="{NS}"/>').encode("utf-8")
    return _doc("VersioningConfiguration", [_el("Status", status)])


def access_control_policy(owner_id: str, owner_name: str) -> bytes:
    """The canned private ACL: the owner has FULL_CONTROL, nobody else anything."""
    grantee = (
        '<Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xsi:type="CanonicalUser">'
        + _el("ID", owner_id)
        + _el("DisplayName", owner_name)
        + "</Grantee>"
    )
    return _doc(
        "AccessControlPolicy",
        [
            _owner("Owner", (owner_id, owner_name)),
            "<AccessControlList><Grant>",
            grantee,
            _el("Permission", "FULL_CONTROL"),
            "</Grant></AccessControlList>",
        ],
    )


def empty_configuration(root: str) -> bytes:
    """A configuration document with nothing in it (``<BucketLoggingStatus/>`` and the like)."""
    return (_DECL + f'<{root} xmlns="{NS}"/>').encode("utf-8")


def request_payment(payer: str = "BucketOwner") -> bytes:
    """GetBucketRequestPayment: the bucket owner pays unless configured otherwise."""
    return _doc("RequestPaymentConfiguration", [_el("Payer", payer)])


def tagging(tags: Sequence[tuple[str, str]]) -> bytes:
    """Tagging document of GetObjectTagging / GetBucketTagging."""
    body = "".join(
        "<Tag>" + _el("Key", k) + _el("Value", v) + "</Tag>" for k, v in tags
    )
    return _doc("Tagging", ["<TagSet>", body, "</TagSet>"])


def initiate_multipart_upload(bucket: str, key: str, upload_id: str) -> bytes:
    """InitiateMultipartUploadResult."""
    return _doc(
        "InitiateMultipartUploadResult",
        [_el("Bucket", bucket), _el("Key", key), _el("UploadId", upload_id)],
    )


def complete_multipart_upload(
    location: str,
    bucket: str,
    key: str,
    etag: str,
    checksums: Sequence[tuple[str, str]] = (),
) -> bytes:
    """CompleteMultipartUploadResult; ``checksums`` are (ChecksumCRC32 ..., value) pairs."""
    parts = [_el("Location", location), _el("Bucket", bucket), _el("Key", key)]
    parts.append(_el("ETag", quote_etag(etag)))
    parts.extend(_el(name, value) for name, value in checksums)
    return _doc("CompleteMultipartUploadResult", parts)


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
    enc = parse_encoding_type(encoding_type) == "url"

    def e(value: str) -> str:
        return url_encode(value) if enc else value

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


@dataclass(frozen=True)
class ObjectPartInfo:
    """One part in GetObjectAttributes' ObjectParts."""

    part_number: int
    size: int
    checksums: Sequence[tuple[str, str]] = ()


@dataclass(frozen=True)
class ObjectPartsInfo:
    """GetObjectAttributes' ObjectParts (only for multipart objects).  The pagination
    fields left None are not sent (AWS sends only PartsCount for some objects)."""

    total_parts_count: int
    part_number_marker: int | None = None
    next_part_number_marker: int | None = None
    max_parts: int | None = None
    is_truncated: bool | None = None
    parts: Sequence[ObjectPartInfo] = field(default_factory=tuple)


def object_attributes(
    *,
    etag: str | None = None,
    checksums: Sequence[tuple[str, str]] = (),
    object_parts: ObjectPartsInfo | None = None,
    storage_class: str | None = None,
    object_size: int | None = None,
) -> bytes:
    """GetObjectAttributesResponse with only the attributes asked for (None = not asked).

    AWS sends this ETag unquoted, unlike everywhere else.
    """
    out = [_el("ETag", unquote_etag(etag) if etag is not None else None)]
    if checksums:
        out.append(
            "<Checksum>" + "".join(_el(n, v) for n, v in checksums) + "</Checksum>"
        )
    if object_parts is not None:
        op = object_parts
        out.append(
            "<ObjectParts>"
            + _el("PartsCount", op.total_parts_count)  # botocore: TotalPartsCount
            + _el("PartNumberMarker", op.part_number_marker)
            + _el("NextPartNumberMarker", op.next_part_number_marker)
            + _el("MaxParts", op.max_parts)
            + _el("IsTruncated", op.is_truncated)
            + "".join(
                "<Part>"
                + _el("PartNumber", p.part_number)
                + _el("Size", p.size)
                + "".join(_el(n, v) for n, v in p.checksums)
                + "</Part>"
                for p in op.parts
            )
            + "</ObjectParts>"
        )
    out.append(_el("StorageClass", storage_class))
    out.append(_el("ObjectSize", object_size))
    return _doc("GetObjectAttributesResponse", out)


# ---------------------------------------------------------------------------
# request parsers


def _local(tag: str) -> str:
    """Element name without its namespace: SDKs send the S3 namespace, curl users none."""
    return tag.rsplit("}", 1)[-1]


def _parse(body: bytes, max_bytes: int, root: str) -> Element:
    if len(body) > max_bytes:
        raise MalformedXML()
    try:
        element = DefusedET.fromstring(
            body, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except (ParseError, DefusedXmlException, ValueError):
        raise MalformedXML() from None
    if not isinstance(element, Element) or _local(element.tag) != root:
        raise MalformedXML()
    return element


def _children(element: Element, name: str) -> list[Element]:
    return [child for child in element if _local(child.tag) == name]


def _only_text(element: Element, name: str, required: bool = True) -> str | None:
    """Text of the single child ``name`` ("" when empty); MalformedXML if repeated/missing."""
    found = _children(element, name)
    if len(found) > 1 or (required and not found):
        raise MalformedXML()
    if not found:
        return None
    if len(found[0]):
        raise MalformedXML()  # a text element with element children
    return found[0].text or ""


def parse_delete_objects(
    body: bytes, max_bytes: int = DELETE_OBJECTS_MAX_BYTES
) -> tuple[list[str], bool]:
    """Keys (in request order) and Quiet of a DeleteObjects body.

    0 or more than 1000 objects, a missing Key, an unknown Quiet value, a DTD or
    an entity are all 400 MalformedXML, as AWS answers.  Key text is kept
    exactly (whitespace is part of a key); VersionId is accepted and ignored.
    """
    root = _parse(body, max_bytes, "Delete")
    quiet_text = _only_text(root, "Quiet", required=False)
    if quiet_text is None:
        quiet = False
    elif quiet_text.strip().lower() in ("true", "false"):
        quiet = quiet_text.strip().lower() == "true"
    else:
        raise MalformedXML()
    objects = _children(root, "Object")
    if not objects or len(objects) > MAX_DELETE_KEYS:
        raise MalformedXML()
    keys = []
    for obj in objects:
        key = _only_text(obj, "Key")
        assert key is not None
        keys.append(key)
    return keys, quiet


@dataclass(frozen=True)
class CompletedPart:
    """A part named in CompleteMultipartUpload, with any checksums the client sent."""

    part_number: int
    etag: str
    checksums: dict[str, str] = field(default_factory=dict)


_CHECKSUM_ELEMENTS = (
    "ChecksumCRC32",
    "ChecksumCRC32C",
    "ChecksumCRC64NVME",
    "ChecksumSHA1",
    "ChecksumSHA256",
)


def parse_complete_multipart_parts(
    body: bytes, max_bytes: int = COMPLETE_MULTIPART_MAX_BYTES
) -> list[CompletedPart]:
    """Parts of a CompleteMultipartUpload body in the order given (order is checked later).

    ETag quotes are stripped.  PartNumber must be a decimal number; its range,
    ordering and the ETags are the caller's to check (InvalidPart, InvalidPartOrder).
    """
    root = _parse(body, max_bytes, "CompleteMultipartUpload")
    elements = _children(root, "Part")
    if not elements:
        raise MalformedXML()
    parts = []
    for element in elements:
        number = parse_decimal((_only_text(element, "PartNumber") or "").strip(), max_digits=9)
        if number is None:
            raise MalformedXML()
        etag = unquote_etag(_only_text(element, "ETag") or "")
        checksums = {}
        for name in _CHECKSUM_ELEMENTS:
            value = _only_text(element, name, required=False)
            if value is not None:
                checksums[name] = value.strip()
        parts.append(CompletedPart(number, etag, checksums))
    return parts


def parse_complete_multipart(
    body: bytes, max_bytes: int = COMPLETE_MULTIPART_MAX_BYTES
) -> list[tuple[int, str]]:
    """(part number, unquoted ETag) pairs of a CompleteMultipartUpload body, in order."""
    return [
        (p.part_number, p.etag) for p in parse_complete_multipart_parts(body, max_bytes)
    ]


#: AWS tag limits: 10 per object (50 per bucket), key 128 and value 256 characters.
MAX_OBJECT_TAGS = 10
MAX_BUCKET_TAGS = 50
MAX_TAG_KEY_CHARS = 128
MAX_TAG_VALUE_CHARS = 256


def validate_tags(
    tags: Sequence[tuple[str, str]], max_tags: int = MAX_OBJECT_TAGS
) -> None:
    """Apply AWS's tag rules (count, lengths, unique keys), raising InvalidTag."""
    if len(tags) > max_tags:
        raise InvalidTag(f"Object tags cannot be greater than {max_tags}")
    seen: set[str] = set()
    for key, value in tags:
        if not key or len(key) > MAX_TAG_KEY_CHARS:
            raise InvalidTag("The TagKey you have provided is invalid", TagKey=key)
        if len(value) > MAX_TAG_VALUE_CHARS:
            raise InvalidTag("The TagValue you have provided is invalid", TagKey=key)
        if key in seen:
            raise InvalidTag(
                "Cannot provide multiple Tags with the same key", TagKey=key
            )
        seen.add(key)


def parse_tagging(
    body: bytes, max_bytes: int = TAGGING_MAX_BYTES, max_tags: int = MAX_OBJECT_TAGS
) -> list[tuple[str, str]]:
    """(key, value) pairs of a PutObjectTagging/PutBucketTagging body, validated.

    Structure errors are MalformedXML; rule violations are InvalidTag.
    """
    root = _parse(body, max_bytes, "Tagging")
    tag_sets = _children(root, "TagSet")
    if len(tag_sets) != 1:
        raise MalformedXML()
    tags = []
    for tag in _children(tag_sets[0], "Tag"):
        key = _only_text(tag, "Key")
        value = _only_text(tag, "Value")
        assert key is not None and value is not None
        tags.append((key, value))
    validate_tags(tags, max_tags)
    return tags


ACL_MAX_BYTES = 64 * 1024


@dataclass(frozen=True)
class AclGrant:
    """One Grant of an AccessControlPolicy: the grantee's type, ID/URI/e-mail, and permission."""

    grantee_type: str
    grantee: str
    permission: str


def parse_access_control_policy(
    body: bytes, max_bytes: int = ACL_MAX_BYTES
) -> tuple[str | None, list[AclGrant]]:
    """The owner ID and the grants of a PutBucketAcl/PutObjectAcl body.

    Structure errors are 400 MalformedXML; what the grants mean is the caller's to judge.
    """
    root = _parse(body, max_bytes, "AccessControlPolicy")
    owner_id = None
    owners = _children(root, "Owner")
    if len(owners) > 1:
        raise MalformedXML()
    if owners:
        owner_id = (_only_text(owners[0], "ID", required=False) or "").strip() or None
    lists = _children(root, "AccessControlList")
    if len(lists) > 1:
        raise MalformedXML()
    grants = []
    for grant in _children(lists[0], "Grant") if lists else []:
        grantees = _children(grant, "Grantee")
        if len(grantees) != 1:
            raise MalformedXML()
        grantee = grantees[0]
        kind = ""
        for name, value in grantee.attrib.items():
            if _local(name) == "type":
                kind = value
        who = ""
        for field_name in ("ID", "URI", "EmailAddress"):
            text = _only_text(grantee, field_name, required=False)
            if text is not None:
                who = text.strip()
                break
        permission = (_only_text(grant, "Permission") or "").strip()
        grants.append(AclGrant(kind, who, permission))
    return owner_id, grants

