"""Operation routing: every subresource goes to its own operation, unknown ones are refused."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s3orch.s3.addressing import Address
from s3orch.s3.errors import InvalidRequest, MethodNotAllowed, NotImplementedError_
from s3orch.s3.operations import (
    OPERATION_NAMES,
    PARAMETERS,
    Operation,
    resolve_operation,
)

SERVICE = Address(None, None)
BUCKET = Address("b", None)
OBJECT = Address("b", "k")
COPY = {"X-Amz-Copy-Source": ["/b/src"]}


def q(text: str) -> list[tuple[str, str]]:
    """``a=1&b`` -> [("a", "1"), ("b", "")], as the front door parses queries."""
    pairs = []
    for item in text.split("&") if text else []:
        key, _, value = item.partition("=")
        pairs.append((key, value))
    return pairs


def resolve(
    method: str,
    address: Address,
    query: str = "",
    headers: Mapping[str, Sequence[str]] | None = None,
) -> Operation:
    return resolve_operation(method, address, q(query), headers or {})


@pytest.mark.parametrize(
    ("method", "address", "query", "headers", "name", "is_write"),
    [
        ("GET", SERVICE, "", {}, "ListBuckets", False),
        ("GET", SERVICE, "x-id=ListBuckets&max-buckets=10", {}, "ListBuckets", False),
        ("HEAD", BUCKET, "", {}, "HeadBucket", False),
        ("GET", BUCKET, "", {}, "ListObjects", False),
        (
            "GET",
            BUCKET,
            "prefix=a&delimiter=/&marker=m&max-keys=5",
            {},
            "ListObjects",
            False,
        ),
        ("GET", BUCKET, "list-type=2&encoding-type=url", {}, "ListObjectsV2", False),
        (
            "GET",
            BUCKET,
            "list-type=2&fetch-owner=true&start-after=a",
            {},
            "ListObjectsV2",
            False,
        ),
        ("GET", BUCKET, "location", {}, "GetBucketLocation", False),
        ("GET", BUCKET, "versioning", {}, "GetBucketVersioning", False),
        (
            "GET",
            BUCKET,
            "uploads&max-uploads=3&key-marker=a",
            {},
            "ListMultipartUploads",
            False,
        ),
        ("GET", BUCKET, "acl", {}, "GetBucketAcl", False),
        ("GET", BUCKET, "policy", {}, "GetBucketPolicy", False),
        ("GET", BUCKET, "cors", {}, "GetBucketCors", False),
        ("GET", BUCKET, "lifecycle", {}, "GetBucketLifecycleConfiguration", False),
        ("GET", BUCKET, "tagging", {}, "GetBucketTagging", False),
        ("GET", BUCKET, "encryption", {}, "GetBucketEncryption", False),
        ("GET", BUCKET, "ownershipControls", {}, "GetBucketOwnershipControls", False),
        ("GET", BUCKET, "publicAccessBlock", {}, "GetPublicAccessBlock", False),
        ("GET", BUCKET, "policyStatus", {}, "GetBucketPolicyStatus", False),
        ("GET", BUCKET, "logging", {}, "GetBucketLogging", False),
        ("GET", BUCKET, "website", {}, "GetBucketWebsite", False),
        (
            "GET",
            BUCKET,
            "notification",
            {},
            "GetBucketNotificationConfiguration",
            False,
        ),
        ("GET", BUCKET, "requestPayment", {}, "GetBucketRequestPayment", False),
        ("GET", BUCKET, "accelerate", {}, "GetBucketAccelerateConfiguration", False),
        ("GET", BUCKET, "object-lock", {}, "GetObjectLockConfiguration", False),
        ("GET", BUCKET, "versions", {}, "ListObjectVersions", False),
        ("POST", BUCKET, "delete", {}, "DeleteObjects", True),
        ("PUT", BUCKET, "", {}, "CreateBucket", True),
        ("DELETE", BUCKET, "", {}, "DeleteBucket", True),
        ("PUT", BUCKET, "acl", {}, "PutBucketAcl", True),
        ("PUT", BUCKET, "policy", {}, "PutBucketPolicy", True),
        ("DELETE", BUCKET, "policy", {}, "DeleteBucketPolicy", True),
        ("PUT", BUCKET, "cors", {}, "PutBucketCors", True),
        ("DELETE", BUCKET, "cors", {}, "DeleteBucketCors", True),
        ("PUT", BUCKET, "lifecycle", {}, "PutBucketLifecycleConfiguration", True),
        ("DELETE", BUCKET, "lifecycle", {}, "DeleteBucketLifecycle", True),
        ("PUT", BUCKET, "tagging", {}, "PutBucketTagging", True),
        ("DELETE", BUCKET, "tagging", {}, "DeleteBucketTagging", True),
        ("PUT", BUCKET, "versioning", {}, "PutBucketVersioning", True),
        ("PUT", BUCKET, "encryption", {}, "PutBucketEncryption", True),
        ("DELETE", BUCKET, "encryption", {}, "DeleteBucketEncryption", True),
        ("PUT", BUCKET, "publicAccessBlock", {}, "PutPublicAccessBlock", True),
        ("DELETE", BUCKET, "publicAccessBlock", {}, "DeletePublicAccessBlock", True),
        ("PUT", BUCKET, "ownershipControls", {}, "PutBucketOwnershipControls", True),
        ("POST", BUCKET, "", {}, "PostObject", True),
        ("GET", OBJECT, "", {}, "GetObject", False),
        ("GET", OBJECT, "partNumber=2&versionId=null", {}, "GetObject", False),
        ("GET", OBJECT, "response-content-type=text/plain", {}, "GetObject", False),
        ("HEAD", OBJECT, "", {}, "HeadObject", False),
        ("HEAD", OBJECT, "partNumber=1", {}, "HeadObject", False),
        ("PUT", OBJECT, "", {}, "PutObject", True),
        ("PUT", OBJECT, "x-id=PutObject", {}, "PutObject", True),
        ("PUT", OBJECT, "", COPY, "CopyObject", True),
        ("PUT", OBJECT, "", {"x-amz-copy-source": ["b/src"]}, "CopyObject", True),
        ("DELETE", OBJECT, "", {}, "DeleteObject", True),
        ("POST", OBJECT, "uploads", {}, "CreateMultipartUpload", True),
        ("PUT", OBJECT, "partNumber=1&uploadId=U", {}, "UploadPart", True),
        ("PUT", OBJECT, "partNumber=1&uploadId=U", COPY, "UploadPartCopy", True),
        ("POST", OBJECT, "uploadId=U", {}, "CompleteMultipartUpload", True),
        ("DELETE", OBJECT, "uploadId=U", {}, "AbortMultipartUpload", True),
        (
            "GET",
            OBJECT,
            "uploadId=U&max-parts=2&part-number-marker=1",
            {},
            "ListParts",
            False,
        ),
        ("GET", OBJECT, "acl", {}, "GetObjectAcl", False),
        ("PUT", OBJECT, "acl", {}, "PutObjectAcl", True),
        ("GET", OBJECT, "tagging", {}, "GetObjectTagging", False),
        ("PUT", OBJECT, "tagging", {}, "PutObjectTagging", True),
        ("DELETE", OBJECT, "tagging", {}, "DeleteObjectTagging", True),
        ("GET", OBJECT, "attributes", {}, "GetObjectAttributes", False),
        ("GET", OBJECT, "retention", {}, "GetObjectRetention", False),
        ("GET", OBJECT, "legal-hold", {}, "GetObjectLegalHold", False),
        ("POST", OBJECT, "select&select-type=2", {}, "SelectObjectContent", False),
        ("POST", OBJECT, "restore", {}, "RestoreObject", True),
    ],
)
def test_operation_names(
    method: str,
    address: Address,
    query: str,
    headers: Mapping[str, Sequence[str]],
    name: str,
    is_write: bool,
) -> None:
    op = resolve(method, address, query, headers)
    assert op.name == name
    assert op.is_write is is_write
    assert op.name in OPERATION_NAMES
    expected_level = (
        "service"
        if address.bucket is None
        else "bucket"
        if address.key is None
        else "object"
    )
    assert op.level == expected_level


@pytest.mark.parametrize("method", ["PUT", "GET", "DELETE", "POST", "HEAD"])
@pytest.mark.parametrize("address", [BUCKET, OBJECT])
def test_unknown_subresource_is_not_implemented_never_a_data_operation(
    method: str, address: Address
) -> None:
    with pytest.raises(NotImplementedError_) as info:
        resolve(method, address, "frobnicate")
    assert info.value.status == 501
    assert info.value.code == "NotImplemented"


def test_object_subresources_never_fall_through_to_data_operations() -> None:
    """?tagging/?acl on PUT must not overwrite the object, on DELETE must not delete it (a data-loss bug seen in S3 gateways)."""
    assert resolve("PUT", OBJECT, "tagging").name == "PutObjectTagging"
    assert resolve("PUT", OBJECT, "acl").name == "PutObjectAcl"
    assert resolve("DELETE", OBJECT, "tagging").name == "DeleteObjectTagging"
    assert resolve("GET", OBJECT, "acl").name == "GetObjectAcl"
    assert resolve("PUT", OBJECT, "retention").name == "PutObjectRetention"
    assert resolve("PUT", OBJECT, "legal-hold").name == "PutObjectLegalHold"


@pytest.mark.parametrize(
    "query",
    [
        (
            "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=c&X-Amz-Date=d"
            "&X-Amz-Expires=60&X-Amz-SignedHeaders=host&X-Amz-Signature=s"
        ),
        "x-amz-security-token=t",
        "AWSAccessKeyId=AK&Signature=s&Expires=1",
        "response-content-disposition=attachment&response-cache-control=no-cache",
        "x-id=GetObject",
        "versionId=null",
    ],
)
def test_presign_and_override_parameters_are_ignored(query: str) -> None:
    assert resolve("GET", OBJECT, query).name == "GetObject"
    assert resolve("PUT", OBJECT, query).name == "PutObject"


@pytest.mark.parametrize(
    ("method", "address", "query"),
    [
        ("POST", OBJECT, ""),
        ("PATCH", OBJECT, ""),
        ("PATCH", BUCKET, ""),
        ("PATCH", SERVICE, ""),
        ("PUT", SERVICE, ""),
        ("DELETE", SERVICE, ""),
        ("POST", SERVICE, ""),
        ("HEAD", SERVICE, ""),
        ("GET", SERVICE, "acl"),
        ("POST", BUCKET, "acl"),
        ("GET", BUCKET, "delete"),
        ("PUT", BUCKET, "location"),
        ("HEAD", BUCKET, "acl"),
        ("GET", OBJECT, "uploads"),
        ("PUT", OBJECT, "uploads"),
        ("POST", OBJECT, "tagging"),
        ("PUT", OBJECT, "versioning"),
        ("POST", OBJECT, "delete"),
        ("DELETE", OBJECT, "acl"),
    ],
)
def test_method_not_valid_for_resource(
    method: str, address: Address, query: str
) -> None:
    with pytest.raises(MethodNotAllowed) as info:
        resolve(method, address, query)
    assert info.value.status == 405
    assert info.value.fields["Method"] == method


def test_method_is_case_insensitive() -> None:
    assert resolve("get", OBJECT).name == "GetObject"


def test_part_number_without_upload_id_never_overwrites_the_object() -> None:
    with pytest.raises(InvalidRequest):
        resolve("PUT", OBJECT, "partNumber=1")
    with pytest.raises(InvalidRequest):
        resolve("PUT", OBJECT, "partNumber=1", COPY)


def test_conflicting_subresources_are_refused() -> None:
    with pytest.raises(InvalidRequest):
        resolve("POST", OBJECT, "uploads&uploadId=U")
    with pytest.raises(InvalidRequest):
        resolve("PUT", BUCKET, "acl&policy")


def test_list_type_other_than_2_is_v1() -> None:
    assert resolve("GET", BUCKET, "list-type=1").name == "ListObjects"


def test_empty_copy_source_header_is_still_a_copy() -> None:
    """The copy handler rejects the empty source (400); it must not become a PutObject."""
    assert resolve("PUT", OBJECT, "", {"x-amz-copy-source": [""]}).name == "CopyObject"


def test_unknown_key_is_refused_even_beside_known_subresources() -> None:
    with pytest.raises(NotImplementedError_) as info:
        resolve("GET", OBJECT, "tagging&torrentz")
    assert info.value.fields == {"Subresource": "torrentz"}


known_keys = PARAMETERS | {
    "acl", "tagging", "uploads", "uploadId", "delete", "location", "versioning", "versions",
    "policy", "cors", "lifecycle", "encryption", "website", "logging", "notification",
    "retention", "legal-hold", "attributes", "restore", "select", "torrent", "replication",
    "accelerate", "analytics", "inventory", "metrics", "intelligent-tiering", "object-lock",
    "ownershipControls", "publicAccessBlock", "policyStatus", "requestPayment", "session",
    "metadataTable", "metadataConfiguration", "renameObject",
}  # fmt: skip
unknown_key = st.text(min_size=1, max_size=20).filter(
    lambda k: (
        k not in known_keys
        and not k.startswith("response-")
        and not k.lower().startswith("x-amz-")
    )
)


@given(
    st.sampled_from(["GET", "PUT", "POST", "DELETE", "HEAD"]),
    st.sampled_from([BUCKET, OBJECT]),
    unknown_key,
    st.lists(st.sampled_from(sorted(PARAMETERS)), max_size=3),
)
def test_any_unknown_query_key_is_refused(
    method: str, address: Address, key: str, params: list[str]
) -> None:
    query = [(p, "1") for p in params] + [(key, "")]
    with pytest.raises(NotImplementedError_):
        resolve_operation(method, address, query, {})


def test_refused_key_is_echoed_only_when_printable() -> None:
    with pytest.raises(NotImplementedError_) as info:
        resolve_operation("GET", OBJECT, [("a\x01b", "")], {})
    assert info.value.fields == {"Subresource": "(unprintable)"}
    assert b"\x01" not in info.value.to_xml()
