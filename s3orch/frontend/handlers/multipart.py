"""The S3 multipart operations of the front door.

Thin handlers: parse and validate the request as AWS does (:mod:`s3orch.s3.multipart`,
:mod:`s3orch.s3.listing`, :mod:`s3orch.s3.copy_source`), call
:class:`~s3orch.core.uploads.MultipartService`, shape the answer.
"""

from __future__ import annotations

from urllib.parse import quote

from twisted.internet.interfaces import IReactorTime

from s3orch.core.multipart import checksum_element
from s3orch.core.objects import NewObject, ObjectService
from s3orch.core.uploads import MultipartService
from s3orch.frontend.handlers.object import check_new_object_headers, usage_gate
from s3orch.frontend.request import (
    OWNER,
    PART_LIST,
    STREAMED_OBJECT_DATA,
    RequestState,
    Route,
    first_header,
    query_get,
    quote_etag,
    send_empty,
    send_xml,
)
from s3orch.http.site import S3Request
from s3orch.payload import Payload
from s3orch.s3 import errors, xml
from s3orch.s3.checksums import (
    parse_object_checksum_header,
    parse_upload_checksum,
    stored_checksum_type,
)
from s3orch.s3.conditions import check_copy_source_conditions, parse_write_conditions
from s3orch.s3.copy_source import check_copy_source_version, parse_copy_source, parse_copy_source_range
from s3orch.s3.listing import parse_list_parts, parse_list_uploads
from s3orch.s3.metadata import extract_object_metadata
from s3orch.s3.multipart import parse_complete_checksum_type, parse_part_number, parse_size_hint


def _upload_id(state: RequestState) -> str:
    return query_get(state.query, "uploadId") or ""


class MultipartHandlers:
    """The multipart operations, over the multipart service (and the object service,
    which UploadPartCopy reads its source from)."""

    def __init__(self, service: MultipartService, objects: ObjectService, clock: IReactorTime) -> None:
        self.service = service
        self.objects = objects
        #: Copy-source conditions compare dates with this clock.
        self.clock = clock

    def routes(self) -> dict[str, Route]:
        return {
            "CreateMultipartUpload": Route(self.create, None, check_new_object_headers),
            "UploadPart": Route(self.upload_part, STREAMED_OBJECT_DATA, usage_gate(self.objects)),
            "UploadPartCopy": Route(self.upload_part_copy),
            "CompleteMultipartUpload": Route(self.complete, PART_LIST),
            "AbortMultipartUpload": Route(self.abort),
            "ListParts": Route(self.list_parts),
            "ListMultipartUploads": Route(self.list_uploads),
        }

    async def create(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        bucket, key = state.bucket, state.key
        meta = extract_object_metadata(state.headers)
        algorithm, kind = parse_upload_checksum(
            first_header(state.headers, "x-amz-checksum-algorithm"),
            first_header(state.headers, "x-amz-checksum-type"),
        )
        upload = await self.service.create(
            bucket,
            key,
            NewObject(meta.content_type, meta.system, meta.user),
            checksum_algorithm=algorithm,
            checksum_type=kind,
            size_hint=parse_size_hint(state.headers) or 0,
            request_id=state.request_id,
        )
        if algorithm is not None and kind is not None:
            request.setHeader("x-amz-checksum-algorithm", algorithm)
            request.setHeader("x-amz-checksum-type", kind)
        send_xml(request, state, xml.initiate_multipart_upload(bucket, key, upload.upload_id))

    async def upload_part(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        assert body is not None
        part_number = parse_part_number(query_get(state.query, "partNumber"))
        part = await self.service.upload_part(
            state.bucket,
            state.key,
            _upload_id(state),
            part_number,
            body,
            request_id=state.request_id,
        )
        request.setHeader("etag", quote_etag(part.etag))
        if body.checksum is not None:
            request.setHeader(f"x-amz-checksum-{body.checksum[0].lower()}", body.checksum[1])
        send_empty(request)

    async def upload_part_copy(
        self, request: S3Request, state: RequestState, body: Payload | None
    ) -> None:
        bucket, key = state.bucket, state.key
        part_number = parse_part_number(query_get(state.query, "partNumber"))
        copy_source = first_header(state.headers, "x-amz-copy-source") or ""
        source_bucket, source_key = parse_copy_source(copy_source)
        check_copy_source_version(copy_source, part_copy=True)
        if source_bucket != bucket:
            raise errors.AccessDenied("Cross-bucket copy is not allowed.")
        source = await self.objects.head(bucket, source_key)
        check_copy_source_conditions(
            state.headers, source.etag, source.last_modified, now=self.clock.seconds()
        )
        byte_range = parse_copy_source_range(
            first_header(state.headers, "x-amz-copy-source-range"), source.size
        )
        part = await self.service.upload_part_copy(
            bucket, key, _upload_id(state), part_number, source, byte_range, state.request_id
        )
        checksums = []
        if part.checksum_algorithm and part.checksum_value:
            checksums.append((checksum_element(part.checksum_algorithm), part.checksum_value))
        send_xml(request, state, xml.copy_part_result(part.etag, part.last_modified, checksums))

    async def complete(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        bucket, key = state.bucket, state.key
        payload = body.file.read(xml.COMPLETE_MULTIPART_MAX_BYTES + 1) if body is not None else b""
        requested = xml.parse_complete_multipart_parts(payload)
        requested_type = parse_complete_checksum_type(state.headers)
        record = await self.service.complete(
            bucket,
            key,
            _upload_id(state),
            requested,
            conditions=parse_write_conditions(state.headers),
            expected_size=parse_size_hint(state.headers),
            checksum=parse_object_checksum_header(state.headers),
            checksum_type=requested_type,
            request_id=state.request_id,
        )
        host = first_header(state.headers, "host") or "localhost"
        scheme = "https" if request.isSecure() else "http"
        location = f"{scheme}://{host}/{quote(bucket)}/{quote(key)}"
        checksums = []
        if record.checksum_algorithm and record.checksum_value:
            checksums.append((checksum_element(record.checksum_algorithm), record.checksum_value))
            checksums.append(("ChecksumType", stored_checksum_type(record.checksum_value)))
        send_xml(
            request,
            state,
            xml.complete_multipart_upload(location, bucket, key, record.etag, checksums),
        )

    async def abort(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        await self.service.abort(state.bucket, state.key, _upload_id(state), state.request_id)
        send_empty(request, 204)

    async def list_parts(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        bucket, key = state.bucket, state.key
        upload_id = _upload_id(state)
        params = parse_list_parts(state.query)
        upload, parts, truncated = await self.service.list_parts(
            bucket, key, upload_id, params.marker, params.max_parts
        )
        next_marker = parts[-1].part_number if parts else None
        payload = xml.list_parts(
            bucket, key, upload_id, params.marker, next_marker, params.max_parts, truncated, parts,
            OWNER,
            checksum_algorithm=upload.checksum_algorithm,
            checksum_type=upload.checksum_type,
        )
        send_xml(request, state, payload)

    async def list_uploads(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        bucket = state.bucket
        params = parse_list_uploads(state.query)
        page = await self.service.list_uploads(
            bucket, params.prefix, params.delimiter, params.key_marker, params.upload_id_marker,
            params.max_uploads,
        )
        payload = xml.list_multipart_uploads(
            bucket,
            page.uploads,
            owner=OWNER,
            prefix=params.prefix,
            delimiter=params.delimiter or None,
            key_marker=params.key_marker,
            upload_id_marker=params.upload_id_marker,
            next_key_marker=page.next_key_marker,
            next_upload_id_marker=page.next_upload_id_marker,
            max_uploads=params.max_uploads,
            is_truncated=page.is_truncated,
            common_prefixes=page.common_prefixes,
            encoding_type=params.encoding_type,
        )
        send_xml(request, state, payload)
