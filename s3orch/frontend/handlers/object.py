"""Object-level operations: put, copy, get, head, delete, ACL, tagging, attributes.

Thin handlers: the S3 semantics of headers are in :mod:`s3orch.s3` (conditions,
ranges, metadata, copy source), the storage work in
:class:`~s3orch.core.objects.ObjectService`; a GET's body goes to the client
through :func:`~s3orch.http.relay.relay_body`, with backpressure, and a backend
that fails mid-body aborts the connection (never a short 200).
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

from s3orch.backend.interface import BackendError, BackendUnavailable
from s3orch.core.cache import CacheFill, MemoryStream
from s3orch.core.integrity import DigestMismatch, read_verifier
from s3orch.core.multipart import object_parts_page, part_range
from s3orch.core.objects import NewObject, ObjectService
from s3orch.frontend.handlers.bucket import check_acl_headers, read_acl_document
from s3orch.frontend.request import (
    OWNER_ID,
    OWNER_NAME,
    STREAMED_OBJECT_DATA,
    XML_DOCUMENT,
    EarlyCheck,
    RequestState,
    Route,
    finish,
    first_header,
    http_date,
    query_get,
    quote_etag,
    send_empty,
    send_xml,
)
from s3orch.http.relay import relay_body
from s3orch.http.site import S3Request
from s3orch.observe.audit import audit
from s3orch.payload import Payload
from s3orch.s3 import acl, errors, xml
from s3orch.s3.checksums import COMPOSITE, stored_checksum_type
from s3orch.s3.conditions import (
    check_copy_source_conditions,
    check_read_conditions,
    parse_write_conditions,
)
from s3orch.s3.copy_source import (
    REPLACE,
    check_copy_source_version,
    parse_copy_source,
    parse_metadata_directive,
    parse_tagging_directive,
)
from s3orch.s3.metadata import (
    extract_object_metadata,
    object_response_headers,
    response_header_overrides,
)
from s3orch.s3.multipart import parse_part_number
from s3orch.s3.numbers import parse_decimal
from s3orch.s3.object_attributes import parse_object_attributes, parse_parts_page
from s3orch.s3.ranges import content_range, parse_range
from s3orch.s3.tagging import (
    TAGS_FIELD,
    encode_tags,
    parse_tagging_header,
    stored_tags,
    without_tags,
)
from s3orch.s3.versioning import check_version_id
from s3orch.store.interface import ObjectRecord


def check_new_object_headers(state: RequestState) -> None:
    """Header time: ACL headers, then the Content-Type, system headers and x-amz-meta-*
    that will be stored (validated before the body, stored later)."""
    acl.check_acl_headers(state.headers)
    extract_object_metadata(state.headers)


def check_copy_headers(state: RequestState) -> None:
    """Header time: ACL headers, and the new metadata and tags when the copy replaces them."""
    acl.check_acl_headers(state.headers)
    if parse_metadata_directive(first_header(state.headers, "x-amz-metadata-directive")) == REPLACE:
        extract_object_metadata(state.headers)
    if parse_tagging_directive(first_header(state.headers, "x-amz-tagging-directive")) == REPLACE:
        parse_tagging_header(first_header(state.headers, "x-amz-tagging") or "")


def copied_headers(state: RequestState, replaced: dict[str, str], source: ObjectRecord) -> dict[str, str]:
    """The copy's stored headers: ``replaced`` (the request's or the source's) with the tag set
    the tagging directive names (the source's by default, as AWS)."""
    headers = without_tags(replaced)
    if parse_tagging_directive(first_header(state.headers, "x-amz-tagging-directive")) == REPLACE:
        tags = parse_tagging_header(first_header(state.headers, "x-amz-tagging") or "")
    else:
        tags = stored_tags(source.headers)
    if tags:
        headers[TAGS_FIELD] = encode_tags(tags)
    return headers


def check_response_overrides(state: RequestState) -> None:
    """Header time: ``response-*`` overrides are refused now, never as a failure mid-answer."""
    response_header_overrides(state.query)


def check_version(check: EarlyCheck | None = None) -> EarlyCheck:
    """Header time: a ``versionId`` must be ``null`` (the current object: the bucket was never
    versioned), else 400 InvalidArgument before anything is read or deleted; then ``check``."""

    def early(state: RequestState) -> None:
        version_id = query_get(state.query, "versionId")
        if version_id is not None:
            check_version_id(version_id)
        if check is not None:
            check(state)

    return early


def _declared_size(state: RequestState) -> int:
    """The object bytes a request announces (its decoded length for aws-chunked); 0 if unknown."""
    for name in ("x-amz-decoded-content-length", "content-length"):
        value = parse_decimal(first_header(state.headers, name))  # ASCII digits only: "²".isdigit()
        if value is not None:
            return value
    return 0


def usage_gate(objects: ObjectService, check: EarlyCheck | None = None) -> EarlyCheck:
    """``check``, then refuse at header time (507, before ``100 Continue``: the body is never
    sent) a write that every backend's monthly usage limits would refuse (BEHAVIOURS §1.3)."""

    def early(state: RequestState) -> None:
        if check is not None:
            check(state)
        fleet = getattr(objects, "fleet", None)  # None: a front door built without storage (tests)
        if fleet is not None and fleet.usage_exhausted(_declared_size(state)):
            raise errors.InsufficientStorage()

    return early


class ObjectHandlers:
    """The object-level operations, over the object service."""

    def __init__(self, objects: ObjectService, clock: IReactorTime) -> None:
        self.objects = objects
        #: Conditional requests compare dates with this clock (If-Modified-Since in the future).
        self.clock = clock

    def routes(self) -> dict[str, Route]:
        return {
            "PutObject": Route(self.put_object, STREAMED_OBJECT_DATA, usage_gate(self.objects, check_new_object_headers)),
            "CopyObject": Route(self.copy_object, None, check_copy_headers),
            "GetObject": Route(self.get_object, None, check_version(check_response_overrides)),
            "HeadObject": Route(self.head_object, None, check_version(check_response_overrides)),
            "DeleteObject": Route(self.delete_object, None, check_version()),
            "GetObjectAcl": Route(self.get_object_acl, None, check_version()),
            "PutObjectAcl": Route(self.put_object_acl, XML_DOCUMENT, check_version(check_acl_headers)),
            "GetObjectTagging": Route(self.get_object_tagging, None, check_version()),
            "PutObjectTagging": Route(self.put_object_tagging, XML_DOCUMENT, check_version()),
            "DeleteObjectTagging": Route(self.delete_object_tagging, None, check_version()),
            "GetObjectAttributes": Route(self.get_object_attributes, None, check_version()),
        }

    # -- writes ------------------------------------------------------------------

    async def put_object(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        assert body is not None
        meta = extract_object_metadata(state.headers)
        conditions = parse_write_conditions(state.headers)
        record = await self.objects.put(
            state.bucket,
            state.key,
            body,
            new=NewObject(meta.content_type, meta.system, meta.user),
            conditions=conditions,
            request_id=state.request_id,
        )
        request.setHeader("etag", quote_etag(record.etag))
        if body.checksum is not None:
            request.setHeader(f"x-amz-checksum-{body.checksum[0].lower()}", body.checksum[1])
        send_empty(request)

    async def copy_object(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        bucket = state.bucket
        copy_source = first_header(state.headers, "x-amz-copy-source") or ""
        source_bucket, source_key = parse_copy_source(copy_source)
        check_copy_source_version(copy_source, part_copy=False)
        if source_bucket != bucket:
            raise errors.AccessDenied("Cross-bucket copy is not allowed.")
        source = await self.objects.head(bucket, source_key)
        check_copy_source_conditions(
            state.headers, source.etag, source.last_modified, now=self.clock.seconds()
        )
        directive = parse_metadata_directive(first_header(state.headers, "x-amz-metadata-directive"))
        if directive == REPLACE:
            meta = extract_object_metadata(state.headers)
            new = NewObject(meta.content_type, copied_headers(state, meta.system, source), meta.user)
        else:
            if source_key == state.key:
                raise errors.InvalidRequest(
                    "This copy request is illegal because it is trying to copy an object to itself "
                    "without changing the object's metadata, storage class, website redirect location "
                    "or encryption attributes."
                )
            new = NewObject(
                source.content_type, copied_headers(state, dict(source.headers), source),
                dict(source.user_metadata),
            )
        conditions = parse_write_conditions(state.headers)
        record = await self.objects.copy(
            bucket,
            source,
            state.key,
            new,
            conditions=conditions,
            request_id=state.request_id,
        )
        send_xml(request, state, xml.copy_object_result(record.etag, record.last_modified))

    async def delete_object(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        await self.objects.delete(state.bucket, state.key, state.request_id)
        send_empty(request, 204)

    # -- reads -------------------------------------------------------------------

    def _object_headers(self, request: S3Request, state: RequestState, record: ObjectRecord) -> None:
        request.setHeader("etag", quote_etag(record.etag))
        request.setHeader("last-modified", http_date(record.last_modified))
        request.setHeader("accept-ranges", "bytes")
        for name, value in object_response_headers(record.content_type, record.headers, record.user_metadata):
            request.responseHeaders.setRawHeaders(name, [value])
        if record.parts_count:
            request.setHeader("x-amz-mp-parts-count", str(record.parts_count))
        for name, value in response_header_overrides(state.query):
            request.responseHeaders.setRawHeaders(name, [value])

    def _check_read_conditions(self, state: RequestState, record: ObjectRecord) -> None:
        """If-* of GET/HEAD; a 304 or 412 carries ETag and Last-Modified, as AWS's do."""
        try:
            check_read_conditions(state.headers, record.etag, record.last_modified, now=self.clock.seconds())
        except (errors.NotModified, errors.PreconditionFailed) as exc:
            exc.headers = (
                ("ETag", quote_etag(record.etag)),
                ("Last-Modified", http_date(record.last_modified)),
            )
            raise

    def _read_range(self, state: RequestState, record: ObjectRecord) -> tuple[int, int] | None:
        """The bytes a GET/HEAD serves: a Range, or one part with ``?partNumber=N``."""
        raw_part = query_get(state.query, "partNumber")
        if raw_part is None:
            return parse_range(first_header(state.headers, "range"), record.size)
        if first_header(state.headers, "range") is not None:
            raise errors.InvalidRequest("Cannot specify both Range header and partNumber query parameter")
        return part_range(record, parse_part_number(raw_part))

    def _range_headers(self, request: S3Request, record: ObjectRecord, byte_range: tuple[int, int] | None) -> None:
        if byte_range is not None:
            start, end = byte_range
            request.setResponseCode(206)
            request.setHeader("content-range", content_range(start, end, record.size))
            request.setHeader("content-length", str(end - start + 1))
        else:
            request.setHeader("content-length", str(record.size))

    def _checksum_header(
        self, request: S3Request, state: RequestState, record: ObjectRecord, byte_range: tuple[int, int] | None
    ) -> None:
        mode = (first_header(state.headers, "x-amz-checksum-mode") or "").upper()
        if mode == "ENABLED" and byte_range is None and record.checksum_algorithm and record.checksum_value:
            request.setHeader(f"x-amz-checksum-{record.checksum_algorithm.lower()}", record.checksum_value)
            request.setHeader("x-amz-checksum-type", stored_checksum_type(record.checksum_value))

    async def head_object(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        record = await self.objects.head(state.bucket, state.key)
        self._check_read_conditions(state, record)
        byte_range = self._read_range(state, record)
        self._object_headers(request, state, record)
        self._checksum_header(request, state, record, byte_range)
        self._range_headers(request, record, byte_range)
        finish(request)
        # After the answer (it went out at once): the client's next request need not wait for
        # this line; it still precedes the request's own s3.HeadObject line.
        audit("storage.HeadObject", bucket=state.bucket, key=state.key, size=record.size)

    async def get_object(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        record = await self.objects.head(state.bucket, state.key)
        self._check_read_conditions(state, record)
        byte_range = self._read_range(state, record)
        # Every header is set before the backend stream is opened: nothing that can
        # fail is left between opening it and handing it to the relay.
        self._object_headers(request, state, record)
        self._checksum_header(request, state, record, byte_range)
        if record.size == 0:
            self._range_headers(request, record, None)
            audit("storage.GetObject", bucket=state.bucket, key=state.key, size=0)
            finish(request)
            return
        self._range_headers(request, record, byte_range)
        cached = self.objects.cache.get(record)  # that write's bytes only; headers are the record's
        if cached is not None:
            start, end = byte_range if byte_range is not None else (0, record.size - 1)
            audit("storage.GetObject", backend="cache", bucket=state.bucket, key=state.key, size=end - start + 1)
            state.bytes_out = await relay_body(MemoryStream(cached, start, end), request)
            return
        stream, location = await self.objects.open(record, byte_range)
        relayed = False
        fill: CacheFill | None = None
        try:
            size = record.size if byte_range is None else byte_range[1] - byte_range[0] + 1
            audit("storage.GetObject", backend=location.backend, bucket=state.bucket, key=state.key, size=size)
            skip, limit = 0, None
            if byte_range is not None:
                start, end = byte_range
                wanted = end - start + 1
                sent = stream.content_range
                if sent is not None and sent[0] == start:
                    limit = wanted  # the backend sent our range (some say 200 while doing so)
                elif sent is None and stream.length in (None, record.size):
                    skip, limit = start, wanted  # it ignored the Range: cut it ourselves
                else:
                    raise errors.ServiceUnavailable("The storage backend answered a different byte range.")
            verifier = read_verifier(self.objects.scrubber, record, byte_range)
            if byte_range is None:  # an admitted full GET is teed into the cache as it streams
                fill = self.objects.cache.fill(record, verifier)
            relaying = relay_body(
                stream, request, skip=skip, limit=limit, verifier=fill or verifier, answer_unsent=True
            )
            relayed = True  # from here the relay owns the stream (it cancels it on every failure)
            try:
                state.bytes_out = await relaying
            except BackendError as exc:
                if isinstance(exc, DigestMismatch) and self.objects.scrubber is not None:
                    self.objects.scrubber.suspect(record)  # is the stored copy bad, or the transfer?
                # Nothing sent yet: an S3 error (503 for what a retry may cure: a cut or a bad
                # transfer; 500 for stored bytes that cannot decrypt or decompress, as when the
                # first chunk fails at open); else the relay aborted the connection, and
                # send_error sees the started response and leaves it at that.
                if isinstance(exc, BackendUnavailable):
                    raise errors.ServiceUnavailable(
                        "The storage backend failed while sending the object; please retry."
                    ) from exc
                raise errors.InternalError("The stored object failed its integrity check.") from exc
        finally:
            if fill is not None:
                fill.close()  # committed by the relay's verdict, or dropped
            if not relayed:
                stream.cancel()  # never leak the pooled backend connection

    # -- subresources ---------------------------------------------------------------

    async def get_object_acl(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        await self.objects.head(state.bucket, state.key)
        send_xml(request, state, xml.access_control_policy(OWNER_ID, OWNER_NAME))

    async def put_object_acl(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        """Accept the private ACL the object already has; refuse any other."""
        acl.check_put_acl(state.headers, read_acl_document(body), OWNER_ID)
        await self.objects.head(state.bucket, state.key)
        send_empty(request)

    async def get_object_tagging(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        record = await self.objects.head(state.bucket, state.key)
        send_xml(request, state, xml.tagging(stored_tags(record.headers)))

    async def put_object_tagging(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        """Replace the key's tag set (metadata only: no backend is touched)."""
        document = b"" if body is None or not body.length else body.file.read(xml.TAGGING_MAX_BYTES + 1)
        tags = xml.parse_tagging(document)
        await self.objects.set_tags(state.bucket, state.key, tags)
        send_empty(request)

    async def delete_object_tagging(
        self, request: S3Request, state: RequestState, body: Payload | None
    ) -> None:
        await self.objects.set_tags(state.bucket, state.key, ())
        send_empty(request, 204)

    async def get_object_attributes(
        self, request: S3Request, state: RequestState, body: Payload | None
    ) -> None:
        wanted = parse_object_attributes(state.headers)
        record = await self.objects.head(state.bucket, state.key)
        check_read_conditions(state.headers, record.etag, record.last_modified, now=self.clock.seconds())
        checksums: list[tuple[str, str]] = []
        if "Checksum" in wanted and record.checksum_algorithm and record.checksum_value:
            # AWS gives a composite checksum here without its "-N".
            value, kind = record.checksum_value, stored_checksum_type(record.checksum_value)
            if kind == COMPOSITE:
                value = value.rpartition("-")[0]
            checksums.append(("Checksum" + record.checksum_algorithm.upper(), value))
            checksums.append(("ChecksumType", kind))
        parts = None
        if "ObjectParts" in wanted and record.parts_count:
            page = parse_parts_page(state.headers)
            parts = object_parts_page(record, page.max_parts, page.marker)
        request.setHeader("last-modified", http_date(record.last_modified))
        payload = xml.object_attributes(
            etag=record.etag if "ETag" in wanted else None,
            checksums=checksums,
            object_parts=parts,
            storage_class="STANDARD" if "StorageClass" in wanted else None,
            object_size=record.size if "ObjectSize" in wanted else None,
        )
        send_xml(request, state, payload)
