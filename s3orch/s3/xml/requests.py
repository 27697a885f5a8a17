"""S3 XML request bodies: size-checked, defused parsing.

Request bodies are parsed with defusedxml, refusing DTDs and entities outright
and anything over a byte cap, so a hostile body costs bounded memory and answers
400 MalformedXML.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from xml.etree.ElementTree import Element, ParseError

from defusedxml import ElementTree as DefusedET
from defusedxml.common import DefusedXmlException

from s3orch.s3.errors import MalformedXML
from s3orch.s3.numbers import parse_decimal
from s3orch.s3.tagging import MAX_OBJECT_TAGS, validate_tags
from s3orch.s3.xml.common import ObjectIdentifier, unquote_etag

#: Body caps.  1000 keys of 1024 bytes are ~1.05 MB, so DeleteObjects needs more
#: than 1 MiB; 10000 parts with checksums and pretty-printing stay under 4 MiB.
DELETE_OBJECTS_MAX_BYTES = 2 * 1024 * 1024
COMPLETE_MULTIPART_MAX_BYTES = 4 * 1024 * 1024
TAGGING_MAX_BYTES = 256 * 1024

MAX_DELETE_KEYS = 1000

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
    """Keys (in request order) and Quiet of a DeleteObjects body (see
    :func:`parse_delete_request`, which also gives each object's VersionId)."""
    objects, quiet = parse_delete_request(body, max_bytes)
    return [obj.key for obj in objects], quiet


def parse_delete_request(
    body: bytes, max_bytes: int = DELETE_OBJECTS_MAX_BYTES
) -> tuple[list[ObjectIdentifier], bool]:
    """Objects (in request order) and Quiet of a DeleteObjects body.

    0 or more than 1000 objects, a missing Key, a repeated Key or VersionId, an
    unknown Quiet value, a DTD or an entity are all 400 MalformedXML, as AWS
    answers.  Key text is kept exactly (whitespace is part of a key).
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
    identifiers = []
    for obj in objects:
        key = _only_text(obj, "Key")
        assert key is not None
        identifiers.append(ObjectIdentifier(key, _only_text(obj, "VersionId", required=False)))
    return identifiers, quiet


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


#: AWS tag limits: 10 per object (50 per bucket); the rules are :func:`s3orch.s3.tagging.validate_tags`.
MAX_BUCKET_TAGS = 50


def parse_tagging(
    body: bytes, max_bytes: int = TAGGING_MAX_BYTES, max_tags: int = MAX_OBJECT_TAGS
) -> list[tuple[str, str]]:
    """(key, value) pairs of a PutObjectTagging/PutBucketTagging body, validated.

    Structure errors are MalformedXML; rule violations are InvalidTag (too many tags: BadRequest).
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
