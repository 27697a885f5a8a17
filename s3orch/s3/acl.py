"""Access control lists: the one ACL every bucket and object here has, and requests for others.

A virtual bucket has one owner (its credentials), so every bucket and object carries
exactly the canned ``private`` ACL: the owner has FULL_CONTROL and nobody else has
anything.  A request asking for that same ACL (``x-amz-acl: private``, which some clients
send on every upload, ``bucket-owner-full-control``, or a document granting only the
owner FULL_CONTROL) is accepted, because the resource already is that way.  Any other
ACL would have to change something we cannot represent, so it is refused with 501
NotImplemented instead of being silently ignored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from s3orch.s3 import errors
from s3orch.s3.xml import parse_access_control_policy

#: Canned ACLs that equal what every resource here already has (one owner per bucket).
UNCHANGED_CANNED_ACLS = frozenset({"private", "bucket-owner-full-control"})

GRANT_HEADERS = (
    "x-amz-grant-full-control",
    "x-amz-grant-read",
    "x-amz-grant-read-acp",
    "x-amz-grant-write",
    "x-amz-grant-write-acp",
)

#: Operations that accept ACL request headers.
ACL_HEADER_OPERATIONS = frozenset(
    {
        "PutObject",
        "CopyObject",
        "CreateMultipartUpload",
        "CreateBucket",
        "PutObjectAcl",
        "PutBucketAcl",
    }
)


def _value(headers: Mapping[str, Sequence[str]], name: str) -> str | None:
    """The header's value, or None when absent or blank (a blank ACL header asks for nothing)."""
    value = ",".join(headers.get(name, ())).strip()
    return value or None


def has_acl_headers(headers: Mapping[str, Sequence[str]]) -> bool:
    """Does the request name an ACL in its headers (canned or grants)?"""
    return any(_value(headers, name) for name in ("x-amz-acl", *GRANT_HEADERS))


def check_acl_headers(headers: Mapping[str, Sequence[str]]) -> None:
    """Refuse (501) ACL headers asking for anything but the private ACL.

    ``headers`` has lower-case names.  Runs at header time, so a refused upload
    is answered before ``100 Continue`` and nothing is stored.
    """
    canned = _value(headers, "x-amz-acl")
    if canned is not None and canned.lower() not in UNCHANGED_CANNED_ACLS:
        raise errors.NotImplementedError_(
            f"The canned ACL {canned[:64]!r} is not supported: objects and buckets here "
            "are always private to the bucket's owner.",
            Header="x-amz-acl",
        )
    for name in GRANT_HEADERS:
        if _value(headers, name):
            raise errors.NotImplementedError_(
                "ACL grants are not supported: objects and buckets here are always private "
                "to the bucket's owner.",
                Header=name,
            )


def check_acl_document(body: bytes, owner_id: str) -> None:
    """Accept an AccessControlPolicy only if it grants FULL_CONTROL to the owner and nothing else."""
    document_owner, grants = parse_access_control_policy(body)
    owner_only = (
        (document_owner is None or document_owner == owner_id)
        and bool(grants)
        and all(
            g.grantee_type in ("", "CanonicalUser")
            and g.grantee == owner_id
            and g.permission == "FULL_CONTROL"
            for g in grants
        )
    )
    if not owner_only:
        raise errors.NotImplementedError_(
            "Only the private ACL (the owner with FULL_CONTROL) is supported: objects and "
            "buckets here are always private to the bucket's owner."
        )


def check_put_acl(headers: Mapping[str, Sequence[str]], document: bytes, owner_id: str) -> None:
    """PutBucketAcl/PutObjectAcl: the ACL comes from headers or a document, never both.

    Headers asking for anything but the private ACL were refused at header time
    (:func:`check_acl_headers`); a document must grant the owner FULL_CONTROL only.
    """
    if has_acl_headers(headers):
        if document:
            raise errors.UnexpectedContent()
    elif not document:
        raise errors.MissingSecurityHeader(
            "Your request was missing a required header", MissingHeaderName="x-amz-acl"
        )
    else:
        check_acl_document(document, owner_id)
