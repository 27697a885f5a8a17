"""The S3 multipart operations of the front door.

Thin handlers: parse and validate the request as AWS does, call
:class:`~s3orch.core.uploads.MultipartService`, shape the answer.  They are
registered into :class:`~s3orch.frontend.s3.S3Frontend`'s handler table, so the
common envelope (early checks, authentication, bucket binding, spooled and
verified bodies, errors, metrics, audit) is the front door's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import quote

from s3orch.core.multipart import (
    MAX_LIST,
    checksum_element,
    parse_copy_source_range,
    parse_part_number,
)
from s3orch.core.objects import NewObject
from s3orch.core.uploads import MultipartService
from s3orch.frontend.s3 import (
    OWNER_ID,
    OWNER_NAME,
    RequestState,
    S3Frontend,
    _first,
    _parse_copy_source,
    _query_get,
    checksum_type,
    quote_etag,
)
from s3orch.http.site import S3Request
from s3orch.payload import Payload
from s3orch.s3 import errors, xml
from s3orch.s3.checksums import parse_object_checksum_header, parse_upload_checksum
from s3orch.s3.conditions import check_copy_source_conditions, parse_write_conditions
from s3orch.s3.metadata import extract_object_metadata

Handler = Callable[[S3Request, RequestState, Payload | None], Awaitable[None]]

#: s3orch extension: the total size a client expects to upload, sent on
#: CreateMultipartUpload, has the upload refused at once (507) when the backends
#: together have no room for it.  On CompleteMultipartUpload AWS checks the same
#: header against the parts.
SIZE_HINT_HEADER = "x-amz-mp-object-size"


def _where(state: RequestState) -> tuple[str, str]:
    assert state.address is not None and state.address.bucket is not None
    return state.address.bucket, state.address.key or ""


def _upload_id(state: RequestState) -> str:
    return _query_get(state.query, "uploadId") or ""


def _non_negative(state: RequestState, name: str, default: int) -> int:
    raw = _query_get(state.query, name)
    if raw is None or raw == "":
        return default
    text = raw.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 10 or int(text) > 2147483647:
        raise errors.InvalidArgument(
            f"Provided {name} not an integer or within integer range",
            ArgumentName=name,
            ArgumentValue=raw[:64],
        )
    return int(text)


def _size_header(state: RequestState) -> int | None:
    raw = _first(state.headers, SIZE_HINT_HEADER)
    if raw is None:
        return None
    text = raw.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        raise errors.InvalidArgument(
            f"{SIZE_HINT_HEADER} must be a non-negative integer.",
            ArgumentName=SIZE_HINT_HEADER,
            ArgumentValue=raw[:64],
        )
    return int(text)


class MultipartHandlers:
    """The multipart handlers of one front door, bound to its service."""

    def __init__(self, frontend: S3Frontend, service: MultipartService) -> None:
        self.frontend = frontend
        self.service = service

    def table(self) -> dict[str, Handler]:
        """Operation name -> handler, for S3Frontend's handler table."""
        return {
            "CreateMultipartUpload": self.create,
            "UploadPart": self.upload_part,
            "UploadPartCopy": self.upload_part_copy,
            "CompleteMultipartUpload": self.complete,
            "AbortMultipartUpload": self.abort,
            "ListParts": self.list_parts,
            "ListMultipartUploads": self.list_uploads,
        }

    async def create(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        bucket, key = _where(state)
        meta = extract_object_metadata(state.headers)
        algorithm, kind = parse_upload_checksum(
            _first(state.headers, "x-amz-checksum-algorithm"),
            _first(state.headers, "x-amz-checksum-type"),
        )
        upload = await self.service.create(
            bucket,
            key,
            NewObject(meta.content_type, meta.system, meta.user),
            checksum_algorithm=algorithm,
            checksum_type=kind,
            size_hint=_size_header(state) or 0,
            request_id=state.request_id,
        )
        if algorithm is not None and kind is not None:
            request.setHeader("x-amz-checksum-algorithm", algorithm)
            request.setHeader("x-amz-checksum-type", kind)
        self.frontend._send_xml(
            request, state, xml.initiate_multipart_upload(bucket, key, upload.upload_id)
        )

    async def upload_part(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        bucket, key = _where(state)
        assert body is not None
        part_number = parse_part_number(_query_get(state.query, "partNumber"))
        part = await self.service.upload_part(
            bucket,
            key,
            _upload_id(state),
            part_number,
            body,
            request_id=state.request_id,
        )
        request.setHeader("etag", quote_etag(part.etag))
        if body.checksum is not None:
            request.setHeader(f"x-amz-checksum-{body.checksum[0].lower()}", body.checksum[1])
        self.frontend._send_empty(request)

    async def upload_part_copy(
        self, request: S3Request, state: RequestState, body: Payload | None
    ) -> None:
        bucket, key = _where(state)
        part_number = parse_part_number(_query_get(state.query, "partNumber"))
        source_bucket, source_key = _parse_copy_source(_first(state.headers, "x-amz-copy-source") or "")
        if source_bucket != bucket:
            raise errors.AccessDenied("Cross-bucket copy is not allowed.")
        source = await self.frontend.objects.head(bucket, source_key)
        check_copy_source_conditions(state.headers, source.etag, source.last_modified)
        byte_range = parse_copy_source_range(
            _first(state.headers, "x-amz-copy-source-range"), source.size
        )
        part = await self.service.upload_part_copy(
            bucket, key, _upload_id(state), part_number, source, byte_range, state.request_id
        )
        checksums = []
        if part.checksum_algorithm and part.checksum_value:
            checksums.append((checksum_element(part.checksum_algorithm), part.checksum_value))
        self.frontend._send_xml(
            request, state, xml.copy_part_result(part.etag, part.last_modified, checksums)
        )

    async def complete(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        bucket, key = _where(state)
        payload = body.file.read(xml.COMPLETE_MULTIPART_MAX_BYTES + 1) if body is not None else b""
        requested = xml.parse_complete_multipart_parts(payload)
        requested_type = _first(state.headers, "x-amz-checksum-type")
        if requested_type is not None:
            requested_type = requested_type.strip().upper()
            if requested_type not in ("COMPOSITE", "FULL_OBJECT"):
                raise errors.InvalidRequest("Value for x-amz-checksum-type header is invalid.")
        record = await self.service.complete(
            bucket,
            key,
            _upload_id(state),
            requested,
            conditions=parse_write_conditions(state.headers),
            expected_size=_size_header(state),
            checksum=parse_object_checksum_header(state.headers),
            checksum_type=requested_type,
            request_id=state.request_id,
        )
        host = _first(state.headers, "host") or "localhost"
        scheme = "https" if request.isSecure() else "http"
        location = f"{scheme}://{host}/{quote(bucket)}/{quote(key)}"
        checksums = []
        if record.checksum_algorithm and record.checksum_value:
            checksums.append((checksum_element(record.checksum_algorithm), record.checksum_value))
            checksums.append(("ChecksumType", checksum_type(record.checksum_value)))
        self.frontend._send_xml(
            request,
            state,
            xml.complete_multipart_upload(location, bucket, key, record.etag, checksums),
        )

    async def abort(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        bucket, key = _where(state)
        await self.service.abort(bucket, key, _upload_id(state), state.request_id)
        self.frontend._send_empty(request, 204)

    async def list_parts(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        bucket, key = _where(state)
        upload_id = _upload_id(state)
        max_parts = min(_non_negative(state, "max-parts", MAX_LIST), MAX_LIST)
        marker = _non_negative(state, "part-number-marker", 0)
        upload, parts, truncated = await self.service.list_parts(bucket, key, upload_id, marker, max_parts)
        next_marker = parts[-1].part_number if parts else None
        payload = xml.list_parts(
            bucket, key, upload_id, marker, next_marker, max_parts, truncated, parts, (OWNER_ID, OWNER_NAME),
            checksum_algorithm=upload.checksum_algorithm,
            checksum_type=upload.checksum_type,
        )
        self.frontend._send_xml(request, state, payload)

    async def list_uploads(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        bucket, _ = _where(state)
        query = state.query
        prefix = _query_get(query, "prefix") or ""
        delimiter = _query_get(query, "delimiter") or ""
        key_marker = _query_get(query, "key-marker") or ""
        upload_id_marker = (_query_get(query, "upload-id-marker") or "") if key_marker else ""
        encoding = xml.check_encoding_type(_query_get(query, "encoding-type"))
        max_uploads = min(_non_negative(state, "max-uploads", MAX_LIST), MAX_LIST)
        page = await self.service.list_uploads(
            bucket, prefix, delimiter, key_marker, upload_id_marker, max_uploads
        )
        payload = xml.list_multipart_uploads(
            bucket,
            page.uploads,
            owner=(OWNER_ID, OWNER_NAME),
            prefix=prefix,
            delimiter=delimiter or None,
            key_marker=key_marker,
            upload_id_marker=upload_id_marker,
            next_key_marker=page.next_key_marker,
            next_upload_id_marker=page.next_upload_id_marker,
            max_uploads=max_uploads,
            is_truncated=page.is_truncated,
            common_prefixes=page.common_prefixes,
            encoding_type=encoding,
        )
        self.frontend._send_xml(request, state, payload)
