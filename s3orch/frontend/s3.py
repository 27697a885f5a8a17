"""The S3 API front door.

``prepare`` runs when a request's headers are in: address, operation,
authentication, bucket binding and the body sink, so a refused upload is
answered before ``100 Continue``.  ``render`` runs once the body has been
received and verified and dispatches to one handler per S3 operation.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any
from urllib.parse import unquote_to_bytes

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from s3orch.auth.authenticate import authenticate
from s3orch.auth.registry import CredentialRegistry, Principal
from s3orch.core.multipart import object_parts_page, part_range
from s3orch.core.objects import NewObject, ObjectService
from s3orch.core.uploads import MultipartService
from s3orch.http.admission import Admission, CredentialHold, Pool, Refused, Slot
from s3orch.http.body import DiscardedBody, RequestBody, parse_content_md5
from s3orch.http.relay import relay_body
from s3orch.http.site import RejectedEarly, S3Request
from s3orch.observe.audit import audit
from s3orch.observe.logging import request_id_from_header
from s3orch.observe.metrics import (
    ADMISSION_IN_USE,
    ADMISSION_REJECTIONS,
    AUTH_STREAMING,
    AUTH_STREAMING_REJECTIONS,
    CREDENTIAL_REJECTIONS,
    DATABASE_UNAVAILABLE,
    EARLY_REJECTIONS,
    INFLIGHT,
    LOAD_SHED,
    REQUEST_DURATION,
    REQUEST_SIZE,
    REQUESTS,
    RESPONSE_SIZE,
    method_label,
)
from s3orch.payload import Payload
from s3orch.s3 import acl, errors, sigv4, xml
from s3orch.s3.addressing import Address, parse_address, virtual_bucket
from s3orch.s3.checksums import parse_checksum_headers
from s3orch.s3.chunked import AwsChunkedDecoder
from s3orch.s3.conditions import (
    check_copy_source_conditions,
    check_read_conditions,
    parse_write_conditions,
)
from s3orch.s3.metadata import (
    extract_object_metadata,
    object_response_headers,
    response_header_overrides,
)
from s3orch.s3.numbers import parse_decimal, parse_signed_decimal
from s3orch.s3.operations import Operation, resolve_operation
from s3orch.s3.ranges import content_range, parse_range
from s3orch.store.interface import ListPage, ObjectRecord, StoreUnavailable

OWNER_ID = "s3orch"
OWNER_NAME = "s3orch"
REGION = "us-east-1"
#: XML request bodies (DeleteObjects, CompleteMultipartUpload) are capped here.
XML_BODY_LIMIT = 4 * 1024 * 1024
#: Bodies sent to operations that take none are counted up to this size and dropped.
IGNORED_BODY_LIMIT = 4 * 1024 * 1024
#: Operations whose request body is read (object data or an XML document).
BODY_OPERATIONS = frozenset(
    {"PutObject", "UploadPart", "DeleteObjects", "CompleteMultipartUpload", "CreateBucket", "PutObjectAcl", "PutBucketAcl"}
)
#: Operations that store the request's Content-Type, system headers and x-amz-meta-*.
METADATA_OPERATIONS = frozenset({"PutObject", "CopyObject", "CreateMultipartUpload"})
#: Request headers whose values the gateway interprets: they must be valid UTF-8.
_INTERPRETED_HEADER_PREFIXES = ("x-amz-", "if-")
#: Operations whose request body is object data.
DATA_OPERATIONS = frozenset({"PutObject", "UploadPart"})
STREAMING_VARIANTS = {
    sigv4.STREAMING_PAYLOAD: "signed",
    sigv4.STREAMING_PAYLOAD_TRAILER: "signed-trailer",
    sigv4.STREAMING_UNSIGNED_TRAILER: "unsigned-trailer",
}


#: Bucket configuration reads answered as AWS answers for a bucket with nothing configured.
NOT_CONFIGURED: dict[str, tuple[str, int, str]] = {
    "GetBucketPolicy": ("NoSuchBucketPolicy", 404, "The bucket policy does not exist"),
    "GetBucketCors": ("NoSuchCORSConfiguration", 404, "The CORS configuration does not exist"),
    "GetBucketLifecycleConfiguration": (
        "NoSuchLifecycleConfiguration", 404, "The lifecycle configuration does not exist"
    ),
    "GetBucketTagging": ("NoSuchTagSet", 404, "The TagSet does not exist"),
    "GetBucketEncryption": (
        "ServerSideEncryptionConfigurationNotFoundError",
        404,
        "The server side encryption configuration was not found",
    ),
    "GetBucketOwnershipControls": (
        "OwnershipControlsNotFoundError", 404, "The bucket ownership controls were not found"
    ),
    "GetPublicAccessBlock": (
        "NoSuchPublicAccessBlockConfiguration",
        404,
        "The public access block configuration was not found",
    ),
    "GetBucketWebsite": ("NoSuchWebsiteConfiguration", 404, "The specified bucket does not have a website configuration"),
    "GetObjectLockConfiguration": (
        "ObjectLockConfigurationNotFoundError", 404, "Object Lock configuration does not exist for this bucket"
    ),
    "GetBucketPolicyStatus": ("NoSuchBucketPolicy", 404, "The bucket policy does not exist"),
    "GetObjectRetention": ("InvalidRequest", 400, "Bucket is missing Object Lock Configuration"),
    "GetObjectLegalHold": ("InvalidRequest", 400, "Bucket is missing Object Lock Configuration"),
    "GetBucketReplication": (
        "ReplicationConfigurationNotFoundError", 404, "The replication configuration was not found"
    ),
}

#: Bucket configuration reads whose AWS answer for an unconfigured bucket is a document.
DEFAULT_CONFIGURATION: dict[str, bytes] = {
    "GetBucketRequestPayment": xml.request_payment("BucketOwner"),
    "GetBucketLogging": xml.empty_configuration("BucketLoggingStatus"),
    "GetBucketNotificationConfiguration": xml.empty_configuration("NotificationConfiguration"),
    "GetBucketAccelerateConfiguration": xml.empty_configuration("AccelerateConfiguration"),
}

#: GetObjectAttributes' x-amz-object-attributes names.
OBJECT_ATTRIBUTES = frozenset({"ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"})


@dataclass
class RequestState:
    """Everything known about one S3 request, from its headers onwards."""

    request_id: str
    started: float
    method: str
    raw_path: bytes
    query: list[tuple[str, str]] = field(default_factory=list)
    headers: dict[str, list[str]] = field(default_factory=dict)
    address: Address | None = None
    operation: Operation | None = None
    principal: Principal | None = None
    auth: sigv4.AuthResult | None = None
    body: RequestBody | DiscardedBody | None = None
    error: errors.S3Error | None = None
    bytes_out: int = 0
    accounted: bool = False
    slot: Slot | None = None
    #: This request counted against its credential's share of the pool.
    credential_hold: CredentialHold | None = None
    #: The method as metrics label it (a closed set: GET ... OPTIONS, else OTHER).
    method_label: str = "OTHER"
    #: Audit event name when it is not the operation's (admission refusals).
    event: str | None = None

    @property
    def op_name(self) -> str:
        return self.operation.name if self.operation else "Unknown"


def _headers_of(request: S3Request) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, values in request.requestHeaders.getAllRawHeaders():
        out[name.decode("latin-1").lower()] = [
            v.decode("utf-8", "surrogateescape") for v in values
        ]
    return out


def _first(headers: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = headers.get(name)
    return values[0] if values else None


def _query_get(query: Sequence[tuple[str, str]], name: str) -> str | None:
    for key, value in query:
        if key == name:
            return value
    return None


def http_date(ts: float) -> str:
    return formatdate(ts, usegmt=True)


MAX_INT32 = 2147483647

#: Seconds a client is asked to wait after a 503 caused by the metadata database.
DATABASE_RETRY_AFTER = 2
#: At most one log line per this many seconds while the database is unavailable.
DATABASE_ERROR_LOG_EVERY = 5.0


def quote_etag(etag: str) -> str:
    return f'"{etag}"'


class S3Frontend(Resource):
    """Resource + early handler for every S3 request."""

    isLeaf = True
    log = Logger(namespace="s3orch.s3")

    def __init__(
        self,
        *,
        config: Any,
        registry: CredentialRegistry,
        objects: ObjectService,
        clock: IReactorTime,
        reserved_prefixes: Sequence[bytes] = (b"/health", b"/metrics", b"/admin", b"/ui"),
        multipart: MultipartService | None = None,
        admission: Admission | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        #: Concurrency limits of S3 requests (never /health, /metrics, /admin, /ui).
        self.admission = admission if admission is not None else Admission.from_config(config.server)
        for pool in (self.admission.global_pool, self.admission.reads, self.admission.writes):
            if pool is not None:
                ADMISSION_IN_USE.labels(pool.name).set_function(_in_use_of(pool))
        self.registry = registry
        self.objects = objects
        self.clock = clock
        self.reserved_prefixes = tuple(reserved_prefixes)
        self.started_at = clock.seconds()
        self._db_error_logged_at = float("-inf")
        self._db_errors_unlogged = 0
        self._handlers: dict[str, Callable[[S3Request, RequestState, Payload | None], Awaitable[None]]] = {
            "ListBuckets": self._list_buckets,
            "HeadBucket": self._head_bucket,
            "GetBucketLocation": self._get_bucket_location,
            "GetBucketVersioning": self._get_bucket_versioning,
            "ListObjects": self._list_objects_v1,
            "ListObjectsV2": self._list_objects_v2,
            "PutObject": self._put_object,
            "CopyObject": self._copy_object,
            "GetObject": self._get_object,
            "HeadObject": self._head_object,
            "DeleteObject": self._delete_object,
            "DeleteObjects": self._delete_objects,
            "CreateBucket": self._create_bucket,
            "DeleteBucket": self._delete_bucket,
            "GetBucketAcl": self._get_acl,
            "GetObjectAcl": self._get_object_acl,
            "GetObjectTagging": self._get_object_tagging,
            "PutObjectAcl": self._put_acl,
            "PutBucketAcl": self._put_acl,
            "GetObjectAttributes": self._get_object_attributes,
        }
        for name, (code, status, message) in NOT_CONFIGURED.items():
            self._handlers[name] = self._not_configured(code, status, message)
        for name, document in DEFAULT_CONFIGURATION.items():
            self._handlers[name] = self._default_configuration(document)
        if multipart is not None:
            from s3orch.frontend.multipart import MultipartHandlers  # it builds on this module

            self._handlers.update(MultipartHandlers(self, multipart).table())

    # -- early phase (headers only) -------------------------------------------

    @property
    def _server(self) -> Any:
        return self.config.server

    def wants(self, method: bytes, uri: bytes, host: bytes | None) -> bool:
        path = _path_of(uri)
        suffix = getattr(self._server, "virtual_host_suffix", "") or ""
        if suffix and host:
            name = host.decode("latin-1").split(":")[0].lower().rstrip(".")
            if name.endswith("." + suffix.lower()):
                return True
        for prefix in self.reserved_prefixes:
            if path == prefix or path.startswith(prefix + b"/") or path.startswith(prefix + b"?"):
                return False
        return True

    def prepare(
        self, request: S3Request, method: bytes, uri: bytes, length: int | None
    ) -> RequestState:
        """Headers are in: decide now, before any body byte is read.

        Every way out either returns the state (the request goes on, perhaps to
        answer ``state.error``) or raises RejectedEarly with the request accounted
        for (slot and in-flight gauge released); an unexpected exception is
        accounted for before it propagates (S3Request turns it into a 500).
        """
        headers = _headers_of(request)
        state = RequestState(
            request_id=request_id_from_header(_first(headers, "x-request-id")),
            started=self.clock.seconds(),
            method=method.decode("latin-1"),
            raw_path=_path_of(uri),
            headers=headers,
        )
        state.method_label = method_label(state.method)
        INFLIGHT.labels(state.method_label).inc()
        has_body = length is None or length > 0
        try:
            try:
                if state.method_label == "OTHER":
                    # Unknown methods cost nothing: answered before admission and auth.
                    raise errors.MethodNotAllowed(
                        Method=state.method[:64], ResourceType=_resource_type(state.raw_path)
                    )
                try:
                    state.slot = self.admission.admit(state.method)
                except Refused as refused:
                    raise self._refuse_admission(state, refused) from None
                state.query = sigv4.parse_query(_query_of(uri))
                self._prepare(state, length)
            except (RejectedEarly, errors.S3Error):
                raise
            except StoreUnavailable as exc:
                raise errors.ServiceUnavailable("The metadata database is unavailable.") from exc
            except Exception as exc:
                # A bug must cost this request (500 with its id), never the connection.
                self.log.failure("request preparation failed", component="s3", request_id=state.request_id)
                raise errors.InternalError() from exc
        except errors.S3Error as exc:
            state.error = exc
            if has_body:
                EARLY_REJECTIONS.labels(exc.code).inc()
                raise self._rejection(state, exc) from None
            # No body: the request goes on, and render() answers state.error.
        except BaseException:
            # A RejectedEarly was accounted when it was built; anything else was not.
            if not state.accounted:
                self._finish_accounting(state, 500)
            raise
        return state

    def _prepare(self, state: RequestState, length: int | None) -> None:
        headers = state.headers
        state.address = parse_address(
            _first(headers, "host"), state.raw_path, getattr(self._server, "virtual_host_suffix", "")
        )
        state.operation = resolve_operation(state.method, state.address, state.query, headers)
        outcome = authenticate(
            self.registry,
            state.method,
            state.raw_path,
            state.query,
            headers,
            time.time(),
            allow_sigv2=bool(getattr(self._server, "allow_sigv2", True)),
            bucket_from_host=virtual_bucket(
                _first(headers, "host"), getattr(self._server, "virtual_host_suffix", "")
            ),
            regions=tuple(getattr(self._server, "regions", ()) or ()),
        )
        state.principal = outcome.principal
        state.auth = outcome.sigv4
        if state.operation.level != "service" and state.address.bucket != state.principal.bucket:
            audit(
                "s3.BucketMismatch",
                request_id=state.request_id,
                access_key=state.principal.access_key,
            )
            raise errors.AccessDenied()
        self._admit_credential(state)
        _check_interpreted_input(state)
        name = state.operation.name
        if name in acl.ACL_HEADER_OPERATIONS:
            acl.check_acl_headers(headers)
        if name in ("GetObject", "HeadObject"):
            response_header_overrides(state.query)  # 400 now, never a failure mid-answer
        if name in METADATA_OPERATIONS and (
            name != "CopyObject" or (_first(headers, "x-amz-metadata-directive") or "").upper() == "REPLACE"
        ):
            extract_object_metadata(headers)  # validated before the body, stored later
        if name in BODY_OPERATIONS:
            state.body = self._body_sink(state, length)
        elif length is None or length > 0:
            # Bodies on operations that take none are counted, capped and dropped.
            state.body = DiscardedBody(max_size=IGNORED_BODY_LIMIT, declared_length=length)

    def _admit_credential(self, state: RequestState) -> None:
        """Count the request against its credential's share of the pool (503 SlowDown over it)."""
        assert state.principal is not None
        principal = state.principal
        credential = f"{principal.bucket}:{principal.access_key}"
        try:
            state.credential_hold = self.admission.admit_credential(credential, state.slot)
        except Refused:
            CREDENTIAL_REJECTIONS.inc()
            state.event = "s3.AdmissionRejected"
            raise errors.SlowDown().with_headers([("Retry-After", "1")]) from None

    def _body_sink(self, state: RequestState, length: int | None) -> RequestBody:
        headers = state.headers
        op = state.operation.name if state.operation else ""
        is_data = op in DATA_OPERATIONS
        max_size = int(self._server.max_object_size) if is_data else XML_BODY_LIMIT
        # SigV4: the claim the signature covers (a presigned URL signs UNSIGNED-PAYLOAD
        # unless the client signed the header); SigV2 signs every x-amz-* header.
        claim = state.auth.payload_hash if state.auth else _first(headers, "x-amz-content-sha256")
        decoder: AwsChunkedDecoder | None = None
        declared = length
        decoded = _first(headers, "x-amz-decoded-content-length")
        # aws-chunked framing is decoded only when signed data declares it: a STREAMING-*
        # payload claim, or a decoded length together with a signed
        # "Content-Encoding: aws-chunked".  Either alone is a plain body (botocore sends a
        # signed "Content-Encoding: aws-chunked" with plain bodies in some modes); the token
        # is dropped from the stored Content-Encoding.
        encoding = (_first(headers, "content-encoding") or "").lower()
        encoding_signed = state.auth is not None and "content-encoding" in state.auth.signed_headers
        declared_by_length = decoded is not None and "aws-chunked" in encoding and encoding_signed
        if claim in STREAMING_VARIANTS or declared_by_length:
            variant = STREAMING_VARIANTS.get(claim or "", "unsigned-trailer")
            AUTH_STREAMING.labels(variant).inc()
            declared = parse_decimal(decoded)
            if declared is None:
                if decoded is not None:
                    AUTH_STREAMING_REJECTIONS.labels("invalid_decoded_length").inc()
                    raise errors.InvalidArgument(
                        "x-amz-decoded-content-length must be a non-negative integer.",
                        ArgumentName="x-amz-decoded-content-length",
                        ArgumentValue=decoded[:64],
                    )
                AUTH_STREAMING_REJECTIONS.labels("missing_decoded_length").inc()
                raise errors.MissingContentLength(
                    "x-amz-decoded-content-length is required for aws-chunked uploads."
                )
            signed = claim in (sigv4.STREAMING_PAYLOAD, sigv4.STREAMING_PAYLOAD_TRAILER)
            if signed and state.auth is None:
                raise errors.InvalidRequest("Signed streaming uploads need SigV4 authentication.")
            auth = state.auth
            decoder = AwsChunkedDecoder(
                signed=signed,
                trailer=bool(claim and claim.endswith("TRAILER")) or claim is None,
                signing_key=auth.signing_key if (signed and auth) else None,
                seed_signature=auth.seed_signature if (signed and auth) else None,
                amz_date=auth.amz_date if auth else None,
                scope=auth.scope if auth else None,
                decoded_length=declared,
            )
        elif length == 0 and is_data and _first(headers, "content-length") is None:
            if _first(headers, "transfer-encoding") is None:
                raise errors.MissingContentLength()
        if is_data and declared is not None and declared > max_size:
            raise errors.EntityTooLarge(
                MaxSizeAllowed=str(max_size), ProposedSize=str(declared)
            )
        if op == "CompleteMultipartUpload" and declared is not None and declared > max_size:
            raise errors.MalformedXML()  # AWS: an oversized part list is malformed, unread
        trailer = _first(headers, "x-amz-trailer")
        trailer_checksum = None
        if trailer:
            name = trailer.strip().lower()
            if name.startswith("x-amz-checksum-"):
                trailer_checksum = name[len("x-amz-checksum-"):]
        return RequestBody(
            max_size=max_size,
            declared_length=declared,
            spool_memory_limit=int(getattr(self._server, "spool_memory_limit", 1024 * 1024)),
            spool_dir=getattr(self._server, "spool_dir", "") or None,
            decoder=decoder,
            content_md5=parse_content_md5(_first(headers, "content-md5")),
            sha256_claim=claim,
            # CompleteMultipartUpload's x-amz-checksum-* is the object's, not the body's.
            checksum_header=parse_checksum_headers(headers) if op != "CompleteMultipartUpload" else None,
            trailer_checksum=trailer_checksum,
        )

    def feed(self, request: S3Request, data: bytes) -> None:
        state: RequestState = request.s3
        if state.body is None or state.error is not None:
            return
        try:
            state.body.feed(data)
        except errors.S3Error as exc:
            if exc.code == "EntityTooLarge" and state.op_name == "CompleteMultipartUpload":
                exc = errors.MalformedXML()
            state.error = exc
            if exc.code == "SignatureDoesNotMatch":
                AUTH_STREAMING_REJECTIONS.labels("chunk_signature").inc()
            raise self._rejection(state, exc) from None
        except Exception:
            self.log.failure("request body handling failed", component="s3", request_id=state.request_id)
            state.error = errors.InternalError()
            state.body.discard()
            raise self._rejection(state, state.error) from None

    def _refuse_admission(self, state: RequestState, refused: Refused) -> RejectedEarly:
        """503 SlowDown at header time (before 100 Continue): the pool is full or shedding."""
        if refused.reason == "shed":
            LOAD_SHED.inc()
            state.event = "s3.LoadShed"
        else:
            ADMISSION_REJECTIONS.inc()
            state.event = "s3.AdmissionRejected"
        exc = errors.SlowDown("Server at capacity").with_headers([("Retry-After", "1")])
        state.error = exc
        return self._rejection(state, exc)

    def timed_out(self, request: S3Request | None) -> RejectedEarly:
        """408 RequestTimeout: headers or body did not arrive within the server's read deadlines."""
        exc = errors.RequestReadTimeout()
        state: RequestState | None = request.s3 if request is not None else None
        if state is None:
            return RejectedEarly(
                408, [("Content-Type", "application/xml"), ("Server", "s3orch")], exc.to_xml()
            )
        state.error = exc
        if state.body is not None:
            state.body.discard()
        return self._rejection(state, exc)

    def _rejection(self, state: RequestState, exc: errors.S3Error) -> RejectedEarly:
        """Build the immediate answer for a refused body, and account for it (always)."""
        try:
            body = b"" if state.method == "HEAD" else exc.to_xml(state.request_id, _resource(state))
        finally:
            self._finish_accounting(state, exc.status)
        return RejectedEarly(
            exc.status,
            [
                ("Content-Type", "application/xml"),
                ("x-amz-request-id", state.request_id),
                ("x-amz-id-2", state.request_id),
                ("Server", "s3orch"),
                *exc.headers,
            ],
            body,
        )

    # -- main phase -----------------------------------------------------------

    def render(self, request: S3Request) -> Any:  # type: ignore[override]
        state: RequestState = request.s3
        d = Deferred.fromCoroutine(self._handle(request, state))

        def unhandled(failure: Any) -> None:
            self.log.failure("unhandled", failure, component="s3", request_id=state.request_id)
            _abort(request)  # never leave the client waiting on a request we gave up on
            self._finish_accounting(state, 500, request)

        d.addErrback(unhandled)
        return NOT_DONE_YET

    async def _handle(self, request: S3Request, state: RequestState) -> None:
        body: Payload | None = None
        try:
            try:
                request.setHeader("x-amz-request-id", state.request_id)
                request.setHeader("x-amz-id-2", state.request_id)
                request.setHeader("server", "s3orch")
                if state.error is not None:
                    raise state.error
                if state.body is not None:
                    body = state.body.finish()
                assert state.operation is not None
                handler = self._handlers.get(state.operation.name)
                if handler is None:
                    raise errors.NotImplementedError_(
                        f"{state.operation.name} is not implemented by this gateway."
                    )
                await handler(request, state, body)
            except errors.S3Error as exc:
                self._send_error(request, state, exc)
            except StoreUnavailable as exc:
                self._database_unavailable(request, state, exc)
            except Exception:
                self.log.failure(
                    "request failed", component="s3", request_id=state.request_id, operation=state.op_name
                )
                self._send_error(request, state, errors.InternalError())
        except Exception:
            # Sending the answer itself failed: the request must still end.
            self.log.failure("sending the answer failed", component="s3", request_id=state.request_id)
            if state.error is None:
                state.error = errors.InternalError()
            _last_resort(request, state.request_id)
            self._finish_accounting(state, 500, request)
        finally:
            if body is not None:
                body.close()
            self._finish_accounting(state, request.code, request)

    def _database_unavailable(self, request: S3Request, state: RequestState, exc: StoreUnavailable) -> None:
        """503 with Retry-After: the metadata database is down or restarting (never a 500)."""
        DATABASE_UNAVAILABLE.labels(state.op_name).inc()
        now = self.clock.seconds()
        self._db_errors_unlogged += 1
        if now - self._db_error_logged_at >= DATABASE_ERROR_LOG_EVERY:
            self.log.warn(
                "metadata database unavailable; answering 503 ({count} requests since the last"
                " report): {error}",
                component="s3",
                count=self._db_errors_unlogged,
                error=str(exc),
                request_id=state.request_id,
                operation=state.op_name,
            )
            self._db_error_logged_at = now
            self._db_errors_unlogged = 0
        request.setHeader("retry-after", str(DATABASE_RETRY_AFTER))
        self._send_error(
            request, state, errors.ServiceUnavailable("The metadata database is unavailable; please retry.")
        )

    def abandoned(self, request: S3Request) -> None:
        """The client went away before its answer: free the spool, count it once (499)."""
        state: RequestState = request.s3
        if state.body is not None:
            state.body.discard()
        self._finish_accounting(state, 499, request)

    def _finish_accounting(self, state: RequestState, status: int, request: Any = None) -> None:
        """Release what the request holds and count it, exactly once, whatever fails."""
        if state.accounted:
            return
        state.accounted = True
        try:
            if state.slot is not None:
                state.slot.release()
            if state.credential_hold is not None:
                state.credential_hold.release()
        finally:
            INFLIGHT.labels(state.method_label).dec()
        try:
            self._count(state, status, request)
        except Exception:
            self.log.failure("request accounting failed", component="s3", request_id=state.request_id)

    def _count(self, state: RequestState, status: int, request: Any) -> None:
        duration = max(0.0, self.clock.seconds() - state.started)
        label = state.method_label
        REQUESTS.labels(label, str(status)).inc()
        REQUEST_DURATION.labels(label).observe(duration)
        if state.body is not None:
            REQUEST_SIZE.labels(label).observe(state.body.received)
        if state.bytes_out:
            RESPONSE_SIZE.labels(label).observe(state.bytes_out)
        address = state.address
        event = "s3." + state.op_name if state.operation else "s3.InvalidRequest"
        if state.error is not None and state.error.status == 403:
            event = "s3.AuthFailure" if state.principal is None else event
        if state.event is not None:
            event = state.event
        remote = None
        if request is not None:
            peer = request.getClientAddress()
            remote = getattr(peer, "host", None) if peer is not None else None
        audit(
            event,
            request_id=state.request_id,
            method=state.method[:64],
            bucket=address.bucket if address else None,
            key=address.key if address else None,
            status=status,
            duration=round(duration, 6),
            access_key=state.principal.access_key if state.principal else None,
            remote=remote,
            bytes_in=state.body.received if state.body else 0,
            bytes_out=state.bytes_out,
            error=state.error.code if state.error else None,
        )

    def _send_error(self, request: S3Request, state: RequestState, exc: errors.S3Error) -> None:
        if state.error is None:
            state.error = exc
        if _gone(request):
            return
        if request.startedWriting:
            # Headers already went out: the only honest signal left is an abort.
            _abort(request)
            return
        request.setResponseCode(exc.status)
        _reset_headers(request)
        for name, value in exc.headers:
            request.setHeader(name, value)
        if exc.status == 304 or state.method == "HEAD":
            if exc.status != 304:
                request.setHeader("content-length", "0")
            _finish(request)
            return
        payload = exc.to_xml(state.request_id, _resource(state))
        request.setHeader("content-type", "application/xml")
        request.setHeader("content-length", str(len(payload)))
        request.write(payload)
        _finish(request)

    def _send_xml(self, request: S3Request, state: RequestState, payload: bytes, status: int = 200) -> None:
        if _gone(request):
            return
        request.setResponseCode(status)
        request.setHeader("content-type", "application/xml")
        request.setHeader("content-length", str(len(payload)))
        request.write(payload)
        state.bytes_out += len(payload)
        _finish(request)

    def _send_empty(self, request: S3Request, status: int = 200) -> None:
        if _gone(request):
            return
        request.setResponseCode(status)
        if status != 204:
            request.setHeader("content-length", "0")
        _finish(request)

    # -- service and bucket level ---------------------------------------------

    async def _list_buckets(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        assert state.principal is not None
        payload = xml.list_buckets(OWNER_ID, OWNER_NAME, [(state.principal.bucket, self.started_at)])
        self._send_xml(request, state, payload)

    async def _head_bucket(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        request.setHeader("x-amz-bucket-region", REGION)
        self._send_empty(request)

    async def _get_bucket_location(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        self._send_xml(request, state, xml.location_constraint(""))

    async def _get_bucket_versioning(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        self._send_xml(request, state, xml.versioning_configuration())

    def _list_params(self, state: RequestState) -> tuple[str, str, int, str | None]:
        query = state.query
        prefix = _query_get(query, "prefix") or ""
        delimiter = _query_get(query, "delimiter") or ""
        raw_max = _query_get(query, "max-keys")
        max_keys = 1000
        if raw_max is not None:
            parsed = parse_signed_decimal(raw_max, max_digits=10)
            if parsed is None or parsed > MAX_INT32:
                raise errors.InvalidArgument(
                    "Provided max-keys not an integer or within integer range",
                    ArgumentName="max-keys",
                    ArgumentValue=raw_max[:64],
                )
            if parsed < 0:
                raise errors.InvalidArgument(
                    "Argument maxKeys must be an integer between 0 and 2147483647",
                    ArgumentName="maxKeys",
                    ArgumentValue=raw_max[:64],
                )
            max_keys = min(parsed, 1000)
        encoding = _query_get(query, "encoding-type")
        if encoding is not None and encoding != "url":
            raise errors.InvalidArgument("Invalid Encoding Method specified in Request", ArgumentName="encoding-type", ArgumentValue=encoding[:64])
        return prefix, delimiter, max_keys, encoding

    async def _list_page(self, bucket: str, prefix: str, delimiter: str, start: str, max_keys: int) -> ListPage:
        """A listing page; ``max-keys=0`` is answered empty and not truncated, as AWS does."""
        if max_keys == 0:
            return ListPage((), (), False, None)
        return await self.objects.list(bucket, prefix, delimiter, start, max_keys)

    async def _list_objects_v1(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        assert state.address is not None and state.address.bucket is not None
        prefix, delimiter, max_keys, encoding = self._list_params(state)
        marker = _query_get(state.query, "marker") or ""
        page = await self._list_page(state.address.bucket, prefix, delimiter, marker, max_keys)
        next_marker = page.next_marker if (page.is_truncated and delimiter) else None
        payload = xml.list_objects_v1(
            state.address.bucket, prefix, marker, delimiter, max_keys, page.is_truncated,
            next_marker, page.entries, page.common_prefixes, encoding,
        )
        self._send_xml(request, state, payload)

    async def _list_objects_v2(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        assert state.address is not None and state.address.bucket is not None
        prefix, delimiter, max_keys, encoding = self._list_params(state)
        token = _query_get(state.query, "continuation-token")
        start_after = _query_get(state.query, "start-after")
        start = start_after or ""
        if token is not None:
            start = _decode_token(token)
        page = await self._list_page(state.address.bucket, prefix, delimiter, start, max_keys)
        next_token = _encode_token(page.next_marker) if page.is_truncated and page.next_marker else None
        fetch_owner = (_query_get(state.query, "fetch-owner") or "").lower() == "true"
        payload = xml.list_objects_v2(
            state.address.bucket, prefix, delimiter, max_keys,
            len(page.entries) + len(page.common_prefixes), page.is_truncated, token, next_token,
            start_after, page.entries, page.common_prefixes, encoding, fetch_owner,
            (OWNER_ID, OWNER_NAME),
        )
        self._send_xml(request, state, payload)

    def _not_configured(
        self, code: str, status: int, message: str
    ) -> Callable[[S3Request, RequestState, Payload | None], Awaitable[None]]:
        error = type(code, (errors.S3Error,), {"code": code, "status": status, "default_message": message})

        async def handler(request: S3Request, state: RequestState, body: Payload | None) -> None:
            raise error(BucketName=state.address.bucket if state.address else "")

        return handler

    def _default_configuration(
        self, document: bytes
    ) -> Callable[[S3Request, RequestState, Payload | None], Awaitable[None]]:
        async def handler(request: S3Request, state: RequestState, body: Payload | None) -> None:
            self._send_xml(request, state, document)

        return handler

    async def _create_bucket(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        """The caller's own virtual bucket always exists: us-east-1 answers 200 to a re-create."""
        constraint = b""
        if body is not None and body.length:
            constraint = body.file.read(64 * 1024)
        if b"<LocationConstraint>" in constraint and b"<LocationConstraint></LocationConstraint>" not in constraint and b"us-east-1" not in constraint:
            raise errors.BucketAlreadyOwnedByYou(BucketName=(state.address.bucket if state.address else "") or "")
        request.setHeader("location", "/" + ((state.address.bucket if state.address else "") or ""))
        self._send_empty(request)

    async def _delete_bucket(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        """A virtual bucket is defined by configuration: clients never delete it."""
        assert state.address is not None and state.address.bucket is not None
        page = await self.objects.list(state.address.bucket, "", "", "", 1)
        if page.entries:
            raise errors.BucketNotEmpty(BucketName=state.address.bucket)
        raise errors.AccessDenied("Virtual buckets are defined by the gateway's configuration.")

    async def _get_acl(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        self._send_xml(request, state, xml.access_control_policy(OWNER_ID, OWNER_NAME))

    async def _get_object_acl(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        assert state.address is not None and state.address.bucket and state.address.key is not None
        await self.objects.head(state.address.bucket, state.address.key)
        self._send_xml(request, state, xml.access_control_policy(OWNER_ID, OWNER_NAME))

    async def _put_acl(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        """Accept the private ACL everything already has; any other was refused at header time
        (acl.check_acl_headers) or is refused here by its document."""
        assert state.address is not None and state.address.bucket
        document = body.file.read(xml.ACL_MAX_BYTES + 1) if body is not None and body.length else b""
        if acl.has_acl_headers(state.headers):
            if document:
                raise errors.UnexpectedContent()
        elif not document:
            raise errors.MissingSecurityHeader(
                "Your request was missing a required header", MissingHeaderName="x-amz-acl"
            )
        else:
            acl.check_acl_document(document, OWNER_ID)
        if state.address.key is not None:
            await self.objects.head(state.address.bucket, state.address.key)
        self._send_empty(request)

    async def _get_object_attributes(
        self, request: S3Request, state: RequestState, body: Payload | None
    ) -> None:
        assert state.address is not None and state.address.bucket and state.address.key is not None
        wanted = {
            name.strip()
            for value in state.headers.get("x-amz-object-attributes", [])
            for name in value.split(",")
            if name.strip()
        }
        if not wanted:
            raise errors.InvalidArgument(
                "x-amz-object-attributes header specifying the attributes to be retrieved is "
                "either missing or empty"
            )
        if not wanted <= OBJECT_ATTRIBUTES:
            raise errors.InvalidArgument("Invalid attribute name specified.")
        record = await self.objects.head(state.address.bucket, state.address.key)
        check_read_conditions(state.headers, record.etag, record.last_modified)
        checksums: list[tuple[str, str]] = []
        if "Checksum" in wanted and record.checksum_algorithm and record.checksum_value:
            # AWS gives a composite checksum here without its "-N".
            value, kind = record.checksum_value, checksum_type(record.checksum_value)
            if kind == "COMPOSITE":
                value = value.rpartition("-")[0]
            checksums.append(("Checksum" + record.checksum_algorithm.upper(), value))
            checksums.append(("ChecksumType", kind))
        parts = None
        if "ObjectParts" in wanted and record.parts_count:
            parts = object_parts_page(
                record,
                _first(state.headers, "x-amz-max-parts"),
                _first(state.headers, "x-amz-part-number-marker"),
            )
        request.setHeader("last-modified", http_date(record.last_modified))
        payload = xml.object_attributes(
            etag=record.etag if "ETag" in wanted else None,
            checksums=checksums,
            object_parts=parts,
            storage_class="STANDARD" if "StorageClass" in wanted else None,
            object_size=record.size if "ObjectSize" in wanted else None,
        )
        self._send_xml(request, state, payload)

    async def _get_object_tagging(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        assert state.address is not None and state.address.bucket and state.address.key is not None
        await self.objects.head(state.address.bucket, state.address.key)
        self._send_xml(request, state, xml.tagging([]))

    # -- objects ----------------------------------------------------------------

    async def _put_object(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        assert state.address is not None and state.address.bucket and state.address.key is not None
        assert body is not None
        meta = extract_object_metadata(state.headers)
        conditions = parse_write_conditions(state.headers)
        record = await self.objects.put(
            state.address.bucket,
            state.address.key,
            body,
            new=NewObject(meta.content_type, meta.system, meta.user),
            conditions=conditions,
            request_id=state.request_id,
        )
        request.setHeader("etag", quote_etag(record.etag))
        if body.checksum is not None:
            request.setHeader(f"x-amz-checksum-{body.checksum[0].lower()}", body.checksum[1])
        self._send_empty(request)

    async def _copy_object(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        assert state.address is not None and state.address.bucket and state.address.key is not None
        bucket = state.address.bucket
        source_bucket, source_key = _parse_copy_source(_first(state.headers, "x-amz-copy-source") or "")
        if source_bucket != bucket:
            raise errors.AccessDenied("Cross-bucket copy is not allowed.")
        source = await self.objects.head(bucket, source_key)
        check_copy_source_conditions(state.headers, source.etag, source.last_modified)
        directive = (_first(state.headers, "x-amz-metadata-directive") or "COPY").upper()
        if directive not in ("COPY", "REPLACE"):
            raise errors.InvalidArgument("Unknown metadata directive.", ArgumentName="x-amz-metadata-directive", ArgumentValue=directive)
        if directive == "REPLACE":
            meta = extract_object_metadata(state.headers)
            new = NewObject(meta.content_type, meta.system, meta.user)
        else:
            if source_key == state.address.key:
                raise errors.InvalidRequest(
                    "This copy request is illegal because it is trying to copy an object to itself "
                    "without changing the object's metadata, storage class, website redirect location "
                    "or encryption attributes."
                )
            new = NewObject(source.content_type, dict(source.headers), dict(source.user_metadata))
        conditions = parse_write_conditions(state.headers)
        record = await self.objects.copy(
            bucket,
            source,
            state.address.key,
            new,
            conditions=conditions,
            request_id=state.request_id,
        )
        self._send_xml(request, state, xml.copy_object_result(record.etag, record.last_modified))

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
            check_read_conditions(state.headers, record.etag, record.last_modified)
        except (errors.NotModified, errors.PreconditionFailed) as exc:
            exc.headers = (
                ("ETag", quote_etag(record.etag)),
                ("Last-Modified", http_date(record.last_modified)),
            )
            raise

    def _range_headers(self, request: S3Request, record: ObjectRecord, byte_range: tuple[int, int] | None) -> None:
        if byte_range is not None:
            start, end = byte_range
            request.setResponseCode(206)
            request.setHeader("content-range", content_range(start, end, record.size))
            request.setHeader("content-length", str(end - start + 1))
        else:
            request.setHeader("content-length", str(record.size))

    async def _head_object(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        assert state.address is not None and state.address.bucket and state.address.key is not None
        record = await self.objects.head(state.address.bucket, state.address.key)
        self._check_read_conditions(state, record)
        byte_range = self._read_range(state, record)
        self._object_headers(request, state, record)
        self._checksum_header(request, state, record, byte_range)
        self._range_headers(request, record, byte_range)
        _finish(request)

    def _read_range(self, state: RequestState, record: ObjectRecord) -> tuple[int, int] | None:
        """The bytes a GET/HEAD serves: a Range, or one part with ``?partNumber=N``."""
        part_number = _query_get(state.query, "partNumber")
        if part_number is None:
            return parse_range(_first(state.headers, "range"), record.size)
        if _first(state.headers, "range") is not None:
            raise errors.InvalidRequest("Cannot specify both Range header and partNumber query parameter")
        return part_range(record, part_number)

    def _checksum_header(
        self, request: S3Request, state: RequestState, record: ObjectRecord, byte_range: tuple[int, int] | None
    ) -> None:
        mode = (_first(state.headers, "x-amz-checksum-mode") or "").upper()
        if mode == "ENABLED" and byte_range is None and record.checksum_algorithm and record.checksum_value:
            request.setHeader(f"x-amz-checksum-{record.checksum_algorithm.lower()}", record.checksum_value)
            request.setHeader("x-amz-checksum-type", checksum_type(record.checksum_value))

    async def _get_object(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        assert state.address is not None and state.address.bucket and state.address.key is not None
        record = await self.objects.head(state.address.bucket, state.address.key)
        self._check_read_conditions(state, record)
        byte_range = self._read_range(state, record)
        # Every header is set before the backend stream is opened: nothing that can
        # fail is left between opening it and handing it to the relay.
        self._object_headers(request, state, record)
        self._checksum_header(request, state, record, byte_range)
        if record.size == 0:
            self._range_headers(request, record, None)
            _finish(request)
            return
        self._range_headers(request, record, byte_range)
        stream, _ = await self.objects.open(record, byte_range)
        relayed = False
        try:
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
            relaying = relay_body(stream, request, skip=skip, limit=limit)
            relayed = True  # from here the relay owns the stream (it cancels it on every failure)
            state.bytes_out = await relaying
        finally:
            if not relayed:
                stream.cancel()  # never leak the pooled backend connection

    async def _delete_object(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        assert state.address is not None and state.address.bucket and state.address.key is not None
        await self.objects.delete(state.address.bucket, state.address.key, state.request_id)
        self._send_empty(request, 204)

    async def _delete_objects(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        assert state.address is not None and state.address.bucket is not None and body is not None
        keys, quiet = xml.parse_delete_objects(body.file.read())
        outcomes = await self.objects.delete_many(state.address.bucket, keys, state.request_id)
        deleted = [o.key for o in outcomes if o.error is None]
        failed = [(o.key, o.error[0], o.error[1]) for o in outcomes if o.error is not None]
        self._send_xml(request, state, xml.delete_result(deleted, failed, quiet))


def _in_use_of(pool: Pool) -> Callable[[], float]:
    """The s3o_admission_slots_in_use reading of one pool."""
    return lambda: float(pool.in_use)


def _gone(request: S3Request) -> bool:
    """True when the client disconnected or the answer was already sent."""
    return bool(request.finished or getattr(request, "_disconnected", False))


def _finish(request: S3Request) -> None:
    if not _gone(request):
        request.finish()


#: Response headers an error answer keeps from what was set before it.
_ERROR_KEEPS = (b"x-amz-request-id", b"x-amz-id-2", b"server", b"date", b"retry-after")


def _reset_headers(request: S3Request) -> None:
    """Drop the headers a failed handler set (object metadata, ranges, ETag ...)."""
    headers = request.responseHeaders
    for name, _values in list(headers.getAllRawHeaders()):
        if name.lower() not in _ERROR_KEEPS:
            headers.removeHeader(name)


def _abort(request: S3Request) -> None:
    """End a request we cannot answer properly: drop its connection."""
    transport = getattr(request.channel, "transport", None)
    if transport is not None:
        transport.abortConnection()


def _last_resort(request: S3Request, request_id: str) -> None:
    """Answer a plain 500 when building the real answer failed; abort if even that fails."""
    if _gone(request):
        return
    try:
        if request.startedWriting:
            raise RuntimeError("headers already sent")
        payload = errors.InternalError().to_xml(request_id)
        request.setResponseCode(500)
        _reset_headers(request)
        request.setHeader("content-type", "application/xml")
        request.setHeader("content-length", str(len(payload)))
        request.write(payload)
        request.finish()
    except Exception:
        _abort(request)


def _resource(state: RequestState) -> str:
    """The <Resource> of an error document: the request path as received."""
    return state.raw_path.decode("utf-8", "replace")


def _resource_type(raw_path: bytes) -> str:
    """MethodNotAllowed's ResourceType from the path's shape (path-style)."""
    path = raw_path.split(b"?", 1)[0]
    bucket, sep, key = path.lstrip(b"/").partition(b"/")
    if not bucket:
        return "SERVICE"
    return "OBJECT" if sep and key else "BUCKET"


def _check_interpreted_input(state: RequestState) -> None:
    """Query values and the x-amz-*, If-* and Range headers must be valid UTF-8.

    They are decoded with ``surrogateescape``; a stray byte would otherwise reach
    the store or a response header.  (``response-*`` overrides are checked, with
    AWS's message, by :func:`response_header_overrides`.)
    """
    for name, value in state.query:
        if _undecodable(name) or (_undecodable(value) and not name.startswith("response-")):
            raise errors.InvalidArgument(
                "A query parameter is not valid UTF-8.", ArgumentName=name
            )
    for name, values in state.headers.items():
        if name.startswith(_INTERPRETED_HEADER_PREFIXES) or name == "range":
            if any(_undecodable(value) for value in values):
                raise errors.InvalidArgument("Header value is not valid UTF-8.", ArgumentName=name)


def _undecodable(value: str) -> bool:
    """Did ``surrogateescape`` decoding keep bytes that are not UTF-8?"""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def checksum_type(value: str) -> str:
    """AWS's x-amz-checksum-type: a checksum of part checksums ends in ``-<parts>``."""
    head, _, parts = value.rpartition("-")
    return "COMPOSITE" if head and parts.isdigit() else "FULL_OBJECT"


def _path_of(uri: bytes) -> bytes:
    """The raw path of a request-target (origin or absolute form), without query."""
    if uri.startswith((b"http://", b"https://")):
        rest = uri.split(b"://", 1)[1]
        slash = rest.find(b"/")
        uri = rest[slash:] if slash >= 0 else b"/"
    return uri.split(b"?", 1)[0]


def _query_of(uri: bytes) -> bytes:
    return uri.split(b"?", 1)[1] if b"?" in uri else b""


def _encode_token(marker: str) -> str:
    return base64.urlsafe_b64encode(marker.encode("utf-8")).decode("ascii")


def _decode_token(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode("ascii")).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeError):
        raise errors.InvalidArgument(
            "The continuation token provided is incorrect", ArgumentName="continuation-token"
        ) from None


def _parse_copy_source(value: str) -> tuple[str, str]:
    """``/bucket/key`` or ``bucket/key`` (URL-encoded, optional ?versionId).

    The decoded key must be valid UTF-8 (400 InvalidArgument, never a 404 for a
    key that cannot exist).
    """
    source = value.split("?", 1)[0]
    try:
        source = unquote_to_bytes(source.encode("utf-8", "surrogateescape")).decode("utf-8")
    except UnicodeError:
        raise errors.InvalidArgument(
            "Invalid copy source object key", ArgumentName="x-amz-copy-source"
        ) from None
    source = source.lstrip("/")
    if "/" not in source:
        raise errors.InvalidArgument("Copy Source must mention the source bucket and key: sourcebucket/sourcekey")
    bucket, key = source.split("/", 1)
    if not bucket or not key:
        raise errors.InvalidArgument("Copy Source must mention the source bucket and key: sourcebucket/sourcekey")
    return bucket, key
