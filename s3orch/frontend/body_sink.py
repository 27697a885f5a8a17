"""Request body sinks, chosen when a request's headers are in.

An operation's body (``Route.body``) is spooled and verified by a
:class:`~s3orch.http.body.RequestBody`, aws-chunked framing decoded on the way; a large
PutObject or UploadPart body may instead stream through to its backend (:class:`StreamingBody`) when
``server.stream_through_min_size`` allows it and nothing needs the bytes twice: not
aws-chunked (its signature chain and trailers are checked first), and ``stream_gate``
(the object service: no encryption, no compression, no synchronous fan-out, backends
that can take an unhashed stream) agrees.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from s3orch.config.model import ServerConfig
from s3orch.frontend.request import BodyUse, RequestState, first_header
from s3orch.http.body import RequestBody, parse_content_md5
from s3orch.http.site import S3Request
from s3orch.http.stream_body import StreamingBody
from s3orch.observe.metrics import AUTH_STREAMING, AUTH_STREAMING_REJECTIONS
from s3orch.s3 import errors, sigv4
from s3orch.s3.checksums import parse_checksum_headers
from s3orch.s3.chunked import AwsChunkedDecoder
from s3orch.s3.numbers import parse_decimal
from s3orch.stream_payload import StreamPayload

#: XML request bodies (DeleteObjects, CompleteMultipartUpload, ACLs) are capped here.
XML_BODY_LIMIT = 4 * 1024 * 1024
#: Bodies sent to operations that take none are counted up to this size and dropped.
IGNORED_BODY_LIMIT = 4 * 1024 * 1024
STREAMING_VARIANTS = {
    sigv4.STREAMING_PAYLOAD: "signed",
    sigv4.STREAMING_PAYLOAD_TRAILER: "signed-trailer",
    sigv4.STREAMING_UNSIGNED_TRAILER: "unsigned-trailer",
}
#: ``stream_gate(has_hex_sha256_claim) -> may this write stream through?``
StreamGate = Callable[[bool], bool]
_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def body_sink(
    server: ServerConfig, state: RequestState, length: int | None, use: BodyUse,
    request: S3Request | None = None, stream_gate: StreamGate | None = None,
) -> RequestBody:
    """The sink of a request body, built at header time (4xx here is answered before the body)."""
    headers = state.headers
    is_data = use.object_data
    max_size = server.max_object_size if is_data else XML_BODY_LIMIT
    # SigV4: the claim the signature covers (a presigned URL signs UNSIGNED-PAYLOAD
    # unless the client signed the header); SigV2 signs every x-amz-* header.
    claim = state.auth.payload_hash if state.auth else first_header(headers, "x-amz-content-sha256")
    decoder: AwsChunkedDecoder | None = None
    declared = length
    decoded = first_header(headers, "x-amz-decoded-content-length")
    # aws-chunked framing is decoded only when signed data declares it: a STREAMING-*
    # payload claim, or a decoded length together with a signed
    # "Content-Encoding: aws-chunked".  Either alone is a plain body (botocore sends a
    # signed "Content-Encoding: aws-chunked" with plain bodies in some modes); the token
    # is dropped from the stored Content-Encoding.
    encoding = (first_header(headers, "content-encoding") or "").lower()
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
    elif length == 0 and is_data and first_header(headers, "content-length") is None:
        if first_header(headers, "transfer-encoding") is None:
            raise errors.MissingContentLength()
    if is_data and declared is not None and declared > max_size:
        raise errors.EntityTooLarge(
            MaxSizeAllowed=str(max_size), ProposedSize=str(declared)
        )
    if use.oversized_is_malformed and declared is not None and declared > max_size:
        raise errors.MalformedXML()  # AWS: an oversized part list is malformed, unread
    trailer = first_header(headers, "x-amz-trailer")
    trailer_checksum = None
    if trailer:
        name = trailer.strip().lower()
        if name.startswith("x-amz-checksum-"):
            trailer_checksum = name[len("x-amz-checksum-"):]
    options: dict[str, Any] = dict(
        max_size=max_size,
        declared_length=declared,
        decoder=decoder,
        content_md5=parse_content_md5(first_header(headers, "content-md5")),
        sha256_claim=claim,
        checksum_header=parse_checksum_headers(headers) if use.checksum_headers else None,
        trailer_checksum=trailer_checksum,
    )
    hex_claim = claim.lower() if claim and _HEX_SHA256.fullmatch(claim) else None
    minimum = server.stream_through_min_size
    if (
        use.streamable and stream_gate is not None and decoder is None and minimum
        and length is not None and length >= minimum and stream_gate(hex_claim is not None)
    ):
        declared = options["checksum_header"]
        payload = StreamPayload(
            length, content_md5_b64=first_header(headers, "content-md5"), sha256_claim=hex_claim,
            checksum_algorithm=declared[0].upper() if declared else None,
            pause_source=lambda: _source(request, pause=True), resume_source=lambda: _source(request, pause=False),
        )
        return StreamingBody(payload=payload, **options)
    return RequestBody(
        spool_memory_limit=server.spool_memory_limit, spool_dir=server.spool_dir or None, **options
    )


def _source(request: S3Request | None, *, pause: bool) -> None:
    """Pause or resume reading the client's socket (stream-through backpressure).

    Resuming stops once the body is in: the channel then pauses and resumes the
    socket itself (HTTPChannel._handlingRequest), as for any request.
    """
    channel: Any = request.channel if request is not None else None
    producer = getattr(channel, "_networkProducer", None)
    if producer is None:
        return
    if pause:
        producer.pauseProducing()
    elif not channel._handlingRequest:
        producer.resumeProducing()
