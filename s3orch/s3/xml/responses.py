"""S3 XML responses other than listings: copy, delete, bucket configuration, tagging, multipart, attributes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from s3orch.s3.xml.common import (
    _DECL,
    NS,
    ObjectIdentifier,
    Timestamp,
    _doc,
    _el,
    _owner,
    escape_text,
    iso8601,
    quote_etag,
    unquote_etag,
)


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
    deleted: Sequence[str | ObjectIdentifier],
    errors: Sequence[tuple[str | ObjectIdentifier, str, str]],
    quiet: bool,
) -> bytes:
    """DeleteResult; ``errors`` are (object, code, message).  An object is its key, or a
    key with the VersionId the request named (echoed, as AWS does).  Quiet mode lists
    errors only."""
    parts: list[str] = []
    if not quiet:
        parts.extend("<Deleted>" + _object_identifier(obj) + "</Deleted>" for obj in deleted)
    parts.extend(
        "<Error>"
        + _object_identifier(obj)
        + _el("Code", code)
        + _el("Message", message)
        + "</Error>"
        for obj, code, message in errors
    )
    return _doc("DeleteResult", parts)


def _object_identifier(obj: str | ObjectIdentifier) -> str:
    if isinstance(obj, str):
        return _el("Key", obj)
    return _el("Key", obj.key) + _el("VersionId", obj.version_id)


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
