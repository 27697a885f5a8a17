"""Which AWS operation a request is: (level, method, subresource) -> name.

The name drives routing, authorisation, metrics and audit, so it must be right
for every request, including the ones we do not implement: s3-orchestrator
(the Go product s3orch re-creates) ran PutObject for ``PUT /b/k?tagging`` and overwrote the object.  Here
routing is an allow-list.  A query key is either a *subresource* (it selects
the operation), a known *parameter* (ignored here), or unknown, which is
refused with 501 NotImplemented before anything runs.  Operations we know but
do not implement still get their AWS name, so the caller can answer 501 by name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, NamedTuple

from s3orch.s3.addressing import Address
from s3orch.s3.errors import InvalidRequest, MethodNotAllowed, NotImplementedError_

Level = Literal["service", "bucket", "object"]


class Operation(NamedTuple):
    """An AWS operation name, the resource level it acts on, and whether it mutates."""

    name: str
    level: Level
    is_write: bool


#: Query keys that never select an operation (values are checked by the handler).
PARAMETERS: frozenset[str] = frozenset(
    {
        # listings
        "list-type",
        "prefix",
        "delimiter",
        "marker",
        "max-keys",
        "continuation-token",
        "start-after",
        "encoding-type",
        "fetch-owner",
        "key-marker",
        "upload-id-marker",
        "max-uploads",
        "version-id-marker",
        "max-buckets",
        "bucket-region",
        "optional-object-attributes",
        # parts and versions
        "part-number-marker",
        "max-parts",
        "partNumber",
        "versionId",
        # configuration ids (analytics, inventory, metrics, intelligent-tiering)
        "id",
        # SDK hints and SigV2 presigning
        "x-id",
        "AWSAccessKeyId",
        "Signature",
        "Expires",
        # SelectObjectContent
        "select-type",
    }
)

#: Query-key prefixes that are parameters (presign ``X-Amz-*``, ``response-*`` overrides).
PARAMETER_PREFIXES_CI: tuple[str, ...] = ("x-amz-",)
PARAMETER_PREFIXES: tuple[str, ...] = ("response-",)

_R, _W = False, True

#: Bucket-level table: subresource ("" = none) -> method -> (name, is_write).
_BUCKET: dict[str, dict[str, tuple[str, bool]]] = {
    "": {
        "HEAD": ("HeadBucket", _R),
        "PUT": ("CreateBucket", _W),
        "DELETE": ("DeleteBucket", _W),
        # GET (ListObjects / ListObjectsV2) is decided by list-type below.
        "POST": ("PostObject", _W),  # browser form upload
    },
    "accelerate": {
        "GET": ("GetBucketAccelerateConfiguration", _R),
        "PUT": ("PutBucketAccelerateConfiguration", _W),
    },
    "acl": {"GET": ("GetBucketAcl", _R), "PUT": ("PutBucketAcl", _W)},
    "analytics": {
        "GET": ("GetBucketAnalyticsConfiguration", _R),
        "PUT": ("PutBucketAnalyticsConfiguration", _W),
        "DELETE": ("DeleteBucketAnalyticsConfiguration", _W),
    },
    "cors": {
        "GET": ("GetBucketCors", _R),
        "PUT": ("PutBucketCors", _W),
        "DELETE": ("DeleteBucketCors", _W),
    },
    "delete": {"POST": ("DeleteObjects", _W)},
    "encryption": {
        "GET": ("GetBucketEncryption", _R),
        "PUT": ("PutBucketEncryption", _W),
        "DELETE": ("DeleteBucketEncryption", _W),
    },
    "intelligent-tiering": {
        "GET": ("GetBucketIntelligentTieringConfiguration", _R),
        "PUT": ("PutBucketIntelligentTieringConfiguration", _W),
        "DELETE": ("DeleteBucketIntelligentTieringConfiguration", _W),
    },
    "inventory": {
        "GET": ("GetBucketInventoryConfiguration", _R),
        "PUT": ("PutBucketInventoryConfiguration", _W),
        "DELETE": ("DeleteBucketInventoryConfiguration", _W),
    },
    "lifecycle": {
        "GET": ("GetBucketLifecycleConfiguration", _R),
        "PUT": ("PutBucketLifecycleConfiguration", _W),
        "DELETE": ("DeleteBucketLifecycle", _W),
    },
    "location": {"GET": ("GetBucketLocation", _R)},
    "logging": {"GET": ("GetBucketLogging", _R), "PUT": ("PutBucketLogging", _W)},
    "metadataConfiguration": {
        "GET": ("GetBucketMetadataConfiguration", _R),
        "POST": ("CreateBucketMetadataConfiguration", _W),
        "DELETE": ("DeleteBucketMetadataConfiguration", _W),
    },
    "metadataTable": {
        "GET": ("GetBucketMetadataTableConfiguration", _R),
        "POST": ("CreateBucketMetadataTableConfiguration", _W),
        "DELETE": ("DeleteBucketMetadataTableConfiguration", _W),
    },
    "metrics": {
        "GET": ("GetBucketMetricsConfiguration", _R),
        "PUT": ("PutBucketMetricsConfiguration", _W),
        "DELETE": ("DeleteBucketMetricsConfiguration", _W),
    },
    "notification": {
        "GET": ("GetBucketNotificationConfiguration", _R),
        "PUT": ("PutBucketNotificationConfiguration", _W),
    },
    "object-lock": {
        "GET": ("GetObjectLockConfiguration", _R),
        "PUT": ("PutObjectLockConfiguration", _W),
    },
    "ownershipControls": {
        "GET": ("GetBucketOwnershipControls", _R),
        "PUT": ("PutBucketOwnershipControls", _W),
        "DELETE": ("DeleteBucketOwnershipControls", _W),
    },
    "policy": {
        "GET": ("GetBucketPolicy", _R),
        "PUT": ("PutBucketPolicy", _W),
        "DELETE": ("DeleteBucketPolicy", _W),
    },
    "policyStatus": {"GET": ("GetBucketPolicyStatus", _R)},
    "publicAccessBlock": {
        "GET": ("GetPublicAccessBlock", _R),
        "PUT": ("PutPublicAccessBlock", _W),
        "DELETE": ("DeletePublicAccessBlock", _W),
    },
    "replication": {
        "GET": ("GetBucketReplication", _R),
        "PUT": ("PutBucketReplication", _W),
        "DELETE": ("DeleteBucketReplication", _W),
    },
    "requestPayment": {
        "GET": ("GetBucketRequestPayment", _R),
        "PUT": ("PutBucketRequestPayment", _W),
    },
    "session": {"GET": ("CreateSession", _R)},
    "tagging": {
        "GET": ("GetBucketTagging", _R),
        "PUT": ("PutBucketTagging", _W),
        "DELETE": ("DeleteBucketTagging", _W),
    },
    "uploads": {"GET": ("ListMultipartUploads", _R)},
    "versioning": {
        "GET": ("GetBucketVersioning", _R),
        "PUT": ("PutBucketVersioning", _W),
    },
    "versions": {"GET": ("ListObjectVersions", _R)},
    "website": {
        "GET": ("GetBucketWebsite", _R),
        "PUT": ("PutBucketWebsite", _W),
        "DELETE": ("DeleteBucketWebsite", _W),
    },
}

#: Object-level table: subresource ("" = none) -> method -> (name, is_write).
#: PUT with x-amz-copy-source is rewritten to the Copy variant below.
_OBJECT: dict[str, dict[str, tuple[str, bool]]] = {
    "": {
        "GET": ("GetObject", _R),
        "HEAD": ("HeadObject", _R),
        "PUT": ("PutObject", _W),
        "DELETE": ("DeleteObject", _W),
    },
    "acl": {"GET": ("GetObjectAcl", _R), "PUT": ("PutObjectAcl", _W)},
    "attributes": {"GET": ("GetObjectAttributes", _R)},
    "legal-hold": {
        "GET": ("GetObjectLegalHold", _R),
        "PUT": ("PutObjectLegalHold", _W),
    },
    "renameObject": {"PUT": ("RenameObject", _W)},
    "restore": {"POST": ("RestoreObject", _W)},
    "retention": {"GET": ("GetObjectRetention", _R), "PUT": ("PutObjectRetention", _W)},
    "select": {"POST": ("SelectObjectContent", _R)},
    "tagging": {
        "GET": ("GetObjectTagging", _R),
        "PUT": ("PutObjectTagging", _W),
        "DELETE": ("DeleteObjectTagging", _W),
    },
    "torrent": {"GET": ("GetObjectTorrent", _R)},
    "uploadId": {
        "GET": ("ListParts", _R),
        "PUT": ("UploadPart", _W),
        "POST": ("CompleteMultipartUpload", _W),
        "DELETE": ("AbortMultipartUpload", _W),
    },
    "uploads": {"POST": ("CreateMultipartUpload", _W)},
}

_SUBRESOURCES: frozenset[str] = (frozenset(_BUCKET) | frozenset(_OBJECT)) - {""}
#: Every query key that selects an operation (SigV2 signs each one, see auth/sigv2.py).
ROUTING_SUBRESOURCES: frozenset[str] = _SUBRESOURCES

#: Every operation name this module can return (for metrics label sets and tests).
OPERATION_NAMES: frozenset[str] = frozenset(
    {
        name
        for table in (_BUCKET, _OBJECT)
        for methods in table.values()
        for name, _ in methods.values()
    }
    | {"ListBuckets", "ListObjects", "ListObjectsV2", "CopyObject", "UploadPartCopy"}
)


def _is_parameter(key: str) -> bool:
    if key in PARAMETERS or key.startswith(PARAMETER_PREFIXES):
        return True
    return key.lower().startswith(PARAMETER_PREFIXES_CI)


def _subresource(query: Sequence[tuple[str, str]]) -> str:
    """The one subresource in the query ("" if none); unknown keys are refused."""
    found: set[str] = set()
    for key, _value in query:
        if key in _SUBRESOURCES:
            found.add(key)
        elif not _is_parameter(key):
            # Echo the key only when it is safe in an XML body.
            shown = key[:64] if key.isprintable() else "(unprintable)"
            raise NotImplementedError_(
                "A query parameter you provided implies functionality that is not implemented.",
                Subresource=shown,
            )
    if len(found) > 1:
        raise InvalidRequest(
            "Conflicting subresources in one request: " + ", ".join(sorted(found))
        )
    return found.pop() if found else ""


def _has_header(headers: Mapping[str, Sequence[str]], name: str) -> bool:
    return any(key.lower() == name and values for key, values in headers.items())


def _query_value(query: Sequence[tuple[str, str]], name: str) -> str | None:
    value = None
    for key, val in query:
        if key == name:
            value = val
    return value


def resolve_operation(
    method: str,
    address: Address,
    query: Sequence[tuple[str, str]],
    headers: Mapping[str, Sequence[str]],
) -> Operation:
    """Name the AWS operation a request asks for, or refuse it (405/501/400).

    ``query`` is the decoded query as (key, value) pairs with blank values kept
    (``?acl`` -> ``("acl", "")``); header names may be in any case.
    """
    method = method.upper()
    sub = _subresource(query) if query else ""  # most requests carry no query

    if address.bucket is None:
        if method == "GET" and not sub:
            return Operation("ListBuckets", "service", False)
        raise MethodNotAllowed(Method=method, ResourceType="SERVICE")

    if address.key is None:
        if sub == "" and method == "GET":
            v2 = _query_value(query, "list-type") == "2"
            return Operation("ListObjectsV2" if v2 else "ListObjects", "bucket", False)
        entry = _BUCKET.get(sub, {}).get(method)
        if entry is None:
            raise MethodNotAllowed(Method=method, ResourceType="BUCKET")
        return Operation(entry[0], "bucket", entry[1])

    if sub not in _OBJECT:
        # A bucket-only subresource (?versioning, ?delete ...) on an object path.
        raise MethodNotAllowed(Method=method, ResourceType="OBJECT")
    entry = _OBJECT[sub].get(method)
    if entry is None:
        raise MethodNotAllowed(Method=method, ResourceType="OBJECT")
    name, is_write = entry
    if method == "PUT" and sub == "" and _query_value(query, "partNumber") is not None:
        # UploadPart without its uploadId: never let it overwrite the object.
        raise InvalidRequest("partNumber is only valid together with uploadId.")
    if (
        method == "PUT"
        and sub in ("", "uploadId")
        and _has_header(headers, "x-amz-copy-source")
    ):
        name = "CopyObject" if sub == "" else "UploadPartCopy"
    return Operation(name, "object", is_write)
