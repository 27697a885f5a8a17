"""Bucket-level operations: existence, listings, DeleteObjects, ACLs, configurations.

A virtual bucket is defined by the gateway's configuration: it always exists for
its own credentials, clients cannot create another or delete it, and it has no
configuration of its own (policy, CORS, ...), so reads of one answer what AWS
answers for a bucket where nothing was configured (:mod:`s3orch.s3.unconfigured`).
"""

from __future__ import annotations

from s3orch.core.objects import ObjectService
from s3orch.frontend.request import (
    OWNER,
    OWNER_ID,
    OWNER_NAME,
    REGION,
    XML_DOCUMENT,
    Handler,
    RequestState,
    Route,
    send_empty,
    send_xml,
)
from s3orch.http.site import S3Request
from s3orch.observe.audit import audit
from s3orch.payload import Payload
from s3orch.s3 import acl, errors, xml
from s3orch.s3.listing import (
    ListObjectsParams,
    encode_continuation_token,
    list_objects_v1_marker,
    parse_list_object_versions,
    parse_list_objects,
    parse_list_objects_v2_start,
)
from s3orch.s3.unconfigured import DEFAULT_CONFIGURATION, NOT_CONFIGURED, not_configured
from s3orch.s3.versioning import NULL_VERSION, check_version_id
from s3orch.store.interface import ListPage

#: CreateBucket reads at most this much of its CreateBucketConfiguration.
CREATE_BUCKET_READ = 64 * 1024


def check_acl_headers(state: RequestState) -> None:
    """Header time: refuse ACL headers asking for anything but the private ACL."""
    acl.check_acl_headers(state.headers)


class BucketHandlers:
    """The bucket-level operations, over the object service's listing and deletes."""

    def __init__(self, objects: ObjectService) -> None:
        self.objects = objects

    def routes(self) -> dict[str, Route]:
        table = {
            "HeadBucket": Route(self.head_bucket),
            "GetBucketLocation": Route(self.get_bucket_location),
            "GetBucketVersioning": Route(self.get_bucket_versioning),
            "ListObjects": Route(self.list_objects_v1),
            "ListObjectsV2": Route(self.list_objects_v2),
            "ListObjectVersions": Route(self.list_object_versions),
            "CreateBucket": Route(self.create_bucket, XML_DOCUMENT, check_acl_headers),
            "DeleteBucket": Route(self.delete_bucket),
            "DeleteObjects": Route(self.delete_objects, XML_DOCUMENT),
            "GetBucketAcl": Route(self.get_bucket_acl),
            "PutBucketAcl": Route(self.put_bucket_acl, XML_DOCUMENT, check_acl_headers),
        }
        for name in NOT_CONFIGURED:
            table[name] = Route(_not_configured(name))
        for name, document in DEFAULT_CONFIGURATION.items():
            table[name] = Route(_default_configuration(document))
        return table

    async def head_bucket(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        request.setHeader("x-amz-bucket-region", REGION)
        send_empty(request)

    async def get_bucket_location(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        send_xml(request, state, xml.location_constraint(""))

    async def get_bucket_versioning(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        send_xml(request, state, xml.versioning_configuration())

    async def _list_page(self, bucket: str, params: ListObjectsParams, start: str) -> ListPage:
        """A listing page; ``max-keys=0`` is answered empty and not truncated, as AWS does."""
        if params.max_keys == 0:
            return ListPage((), (), False, None)
        page = await self.objects.list(bucket, params.prefix, params.delimiter, start, params.max_keys)
        audit("storage.ListObjects", bucket=bucket, prefix=params.prefix, count=len(page.entries))
        return page

    async def list_objects_v1(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        params = parse_list_objects(state.query)
        marker = list_objects_v1_marker(state.query)
        page = await self._list_page(state.bucket, params, marker)
        next_marker = page.next_marker if (page.is_truncated and params.delimiter) else None
        payload = xml.list_objects_v1(
            state.bucket, params.prefix, marker, params.delimiter, params.max_keys, page.is_truncated,
            next_marker, page.entries, page.common_prefixes, params.encoding_type, OWNER,
        )
        send_xml(request, state, payload)

    async def list_objects_v2(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        params = parse_list_objects(state.query)
        start = parse_list_objects_v2_start(state.query)
        page = await self._list_page(state.bucket, params, start.start)
        next_token = (
            encode_continuation_token(page.next_marker) if page.is_truncated and page.next_marker else None
        )
        payload = xml.list_objects_v2(
            state.bucket, params.prefix, params.delimiter, params.max_keys,
            len(page.entries) + len(page.common_prefixes), page.is_truncated, start.continuation_token,
            next_token, start.start_after, page.entries, page.common_prefixes, params.encoding_type,
            start.fetch_owner, OWNER,
        )
        send_xml(request, state, payload)

    async def list_object_versions(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        """The bucket was never versioned: each current object is its one (``null``) version."""
        params, start = parse_list_object_versions(state.query)
        page = await self._list_page(state.bucket, params, start.key_marker)
        next_key = page.next_marker if page.is_truncated else None
        # A page ending on a common prefix resumes after it by key alone (no version of it was listed).
        ends_on_prefix = next_key is not None and next_key in page.common_prefixes[-1:]
        payload = xml.list_object_versions(
            state.bucket, params.prefix, start.key_marker, start.version_id_marker, params.delimiter,
            params.max_keys, page.is_truncated, next_key,
            NULL_VERSION if next_key is not None and not ends_on_prefix else None,
            page.entries, page.common_prefixes, params.encoding_type, OWNER,
        )
        send_xml(request, state, payload)

    async def create_bucket(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        """The caller's own virtual bucket always exists: us-east-1 answers 200 to a re-create."""
        constraint = b""
        if body is not None and body.length:
            constraint = body.file.read(CREATE_BUCKET_READ)
        if (
            b"<LocationConstraint>" in constraint
            and b"<LocationConstraint></LocationConstraint>" not in constraint
            and b"us-east-1" not in constraint
        ):
            raise errors.BucketAlreadyOwnedByYou(BucketName=state.bucket)
        request.setHeader("location", "/" + state.bucket)
        send_empty(request)

    async def delete_bucket(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        """A virtual bucket is defined by configuration: clients never delete it."""
        page = await self.objects.list(state.bucket, "", "", "", 1)
        if page.entries:
            raise errors.BucketNotEmpty(BucketName=state.bucket)
        raise errors.AccessDenied("Virtual buckets are defined by the gateway's configuration.")

    async def delete_objects(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        """Delete each named object; a VersionId other than ``null`` (the current object's)
        is that object's error, and nothing is deleted for it."""
        assert body is not None
        objects, quiet = xml.parse_delete_request(body.file.read())
        wanted: list[xml.ObjectIdentifier] = []
        failed: list[tuple[str | xml.ObjectIdentifier, str, str]] = []
        for obj in objects:
            try:
                if obj.version_id is not None:
                    check_version_id(obj.version_id)
            except errors.S3Error as exc:
                failed.append((obj, exc.code, exc.message))
                continue
            wanted.append(obj)
        outcomes = await self.objects.delete_many(state.bucket, [obj.key for obj in wanted], state.request_id)
        deleted: list[str | xml.ObjectIdentifier] = []
        for obj, outcome in zip(wanted, outcomes, strict=True):
            named = obj if obj.version_id is not None else obj.key
            if outcome.error is None:
                deleted.append(named)
            else:
                failed.append((named, outcome.error[0], outcome.error[1]))
        send_xml(request, state, xml.delete_result(deleted, failed, quiet))

    async def get_bucket_acl(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        send_xml(request, state, xml.access_control_policy(OWNER_ID, OWNER_NAME))

    async def put_bucket_acl(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        """Accept the private ACL everything already has; refuse any other."""
        acl.check_put_acl(state.headers, read_acl_document(body), OWNER_ID)
        send_empty(request)


def read_acl_document(body: Payload | None) -> bytes:
    """The AccessControlPolicy of a Put*Acl (b"" when none was sent)."""
    if body is None or not body.length:
        return b""
    return body.file.read(xml.ACL_MAX_BYTES + 1)


def _not_configured(operation: str) -> Handler:
    async def handler(request: S3Request, state: RequestState, body: Payload | None) -> None:
        raise not_configured(operation, state.bucket)

    return handler


def _default_configuration(document: bytes) -> Handler:
    async def handler(request: S3Request, state: RequestState, body: Payload | None) -> None:
        send_xml(request, state, document)

    return handler
