"""S3 error types: one class per AWS error code, one serializer.

Protocol code raises these; the front door turns them into the AWS-shaped
``<Error>`` XML body (or an empty body for HEAD).  Anything that is not an
``S3Error`` becomes ``500 InternalError`` with the request id.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import ClassVar

#: Longest echo of one client-supplied value in an error document.  Bounds the
#: cost of an error body whatever a client managed to put into a field.
MAX_FIELD_CHARS = 16 * 1024


#: Characters XML 1.0 cannot carry at all (not even as references), and lone
#: surrogates (``surrogateescape``-decoded bytes that are not UTF-8).
_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_MARKUP = {ord("&"): "&amp;", ord("<"): "&lt;", ord(">"): "&gt;", ord("\r"): "&#xD;"}


def xml_safe_text(value: object, limit: int = MAX_FIELD_CHARS) -> str:
    """Any value as escaped XML 1.0 character data, never raising.

    Client input reaches error documents decoded with ``surrogateescape`` (a
    stray ``\\xff`` byte becomes U+DCFF), and may hold control characters that
    XML 1.0 cannot carry even as references.  Both become U+FFFD; ``\\r`` is a
    character reference (a parser would otherwise read it as ``\\n``).  Values
    longer than ``limit`` characters are cut.
    """
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    return _NOT_XML.sub("\ufffd", text).translate(_MARKUP)


class S3Error(Exception):
    """Base of every error that is answered to a client as S3 XML."""

    code: ClassVar[str] = "InternalError"
    status: ClassVar[int] = 500
    default_message: ClassVar[str] = "We encountered an internal error. Please try again."

    #: Extra response headers (e.g. Retry-After of a 503 SlowDown); see with_headers.
    headers: tuple[tuple[str, str], ...] = ()

    def __init__(self, message: str | None = None, **fields: str) -> None:
        self.message = message or self.default_message
        #: Extra child elements of <Error>, e.g. Key, BucketName, UploadId.
        self.fields = fields
        super().__init__(self.message)

    def with_headers(self, headers: Sequence[tuple[str, str]]) -> S3Error:
        """Send these response headers with the error (returns self, for ``raise``)."""
        self.headers = tuple(headers)
        return self

    def to_xml(self, request_id: str = "", resource: str = "") -> bytes:
        """Serialize as AWS does: Code, Message, extra fields, Resource, RequestId.

        Never raises, whatever the fields echo: every value goes through
        :func:`xml_safe_text`, so the document is well-formed UTF-8 XML 1.0.
        """
        parts = [
            '<?xml version="1.0" encoding="UTF-8"?>\n<Error>',
            f"<Code>{xml_safe_text(self.code)}</Code>",
            f"<Message>{xml_safe_text(self.message)}</Message>",
        ]
        for name, value in self.fields.items():
            parts.append(f"<{name}>{xml_safe_text(value)}</{name}>")
        if resource:
            parts.append(f"<Resource>{xml_safe_text(resource)}</Resource>")
        parts.append(f"<RequestId>{xml_safe_text(request_id)}</RequestId>")
        parts.append(f"<HostId>{xml_safe_text(request_id)}</HostId>")
        parts.append("</Error>")
        return "".join(parts).encode("utf-8")


def _error(code: str, status: int, message: str) -> type[S3Error]:
    return type(code, (S3Error,), {"code": code, "status": status, "default_message": message})


InternalError = _error("InternalError", 500, "We encountered an internal error. Please try again.")
AccessDenied = _error("AccessDenied", 403, "Access Denied")
SignatureDoesNotMatch = _error(
    "SignatureDoesNotMatch",
    403,
    "The request signature we calculated does not match the signature you provided. "
    "Check your key and signing method.",
)
InvalidAccessKeyId = _error(
    "InvalidAccessKeyId", 403, "The AWS Access Key Id you provided does not exist in our records."
)
RequestTimeTooSkewed = _error(
    "RequestTimeTooSkewed",
    403,
    "The difference between the request time and the current time is too large.",
)
AuthorizationHeaderMalformed = _error(
    "AuthorizationHeaderMalformed", 400, "The authorization header you provided is invalid."
)
AuthorizationQueryParametersError = _error(
    "AuthorizationQueryParametersError", 400, "Query-string authentication parameters are invalid."
)
MissingSecurityHeader = _error(
    "MissingSecurityHeader", 400, "Your request is missing a required header."
)
ExpiredToken = _error("ExpiredToken", 400, "The provided token has expired.")
NoSuchBucket = _error("NoSuchBucket", 404, "The specified bucket does not exist")
NoSuchKey = _error("NoSuchKey", 404, "The specified key does not exist.")
NoSuchUpload = _error(
    "NoSuchUpload",
    404,
    "The specified upload does not exist. The upload ID may be invalid, or the upload may have "
    "been aborted or completed.",
)
InvalidRange = _error("InvalidRange", 416, "The requested range is not satisfiable")
PreconditionFailed = _error(
    "PreconditionFailed", 412, "At least one of the pre-conditions you specified did not hold"
)
NotModified = _error("NotModified", 304, "Not Modified")
BadDigest = _error(
    "BadDigest", 400, "The Content-MD5 you specified did not match what we received."
)
InvalidDigest = _error("InvalidDigest", 400, "The Content-MD5 you specified is not valid.")
XAmzContentSHA256Mismatch = _error(
    "XAmzContentSHA256Mismatch",
    400,
    "The provided 'x-amz-content-sha256' header does not match what was computed.",
)
KeyTooLongError = _error("KeyTooLongError", 400, "Your key is too long")
EntityTooLarge = _error(
    "EntityTooLarge", 400, "Your proposed upload exceeds the maximum allowed object size."
)
EntityTooSmall = _error(
    "EntityTooSmall", 400, "Your proposed upload is smaller than the minimum allowed object size."
)
IncompleteBody = _error(
    "IncompleteBody",
    400,
    "You did not provide the number of bytes specified by the Content-Length HTTP header.",
)
MissingContentLength = _error(
    "MissingContentLength", 411, "You must provide the Content-Length HTTP header."
)
MaxMessageLengthExceeded = _error("MaxMessageLengthExceeded", 400, "Your request was too big.")
InvalidArgument = _error("InvalidArgument", 400, "Invalid Argument")
InvalidRequest = _error("InvalidRequest", 400, "Invalid Request")
InvalidBucketName = _error("InvalidBucketName", 400, "The specified bucket is not valid.")
MalformedXML = _error(
    "MalformedXML",
    400,
    "The XML you provided was not well-formed or did not validate against our published schema.",
)
MetadataTooLarge = _error(
    "MetadataTooLarge",
    400,
    "Your metadata headers exceed the maximum allowed metadata size.",
)
InvalidPart = _error(
    "InvalidPart",
    400,
    "One or more of the specified parts could not be found. The part might not have been "
    "uploaded, or the specified entity tag might not have matched the part's entity tag.",
)
InvalidPartOrder = _error(
    "InvalidPartOrder", 400, "The list of parts was not in ascending order."
)
InvalidPartNumber = _error(
    "InvalidPartNumber", 416, "The requested partnumber is not satisfiable"
)
MethodNotAllowed = _error(
    "MethodNotAllowed", 405, "The specified method is not allowed against this resource."
)
NotImplementedError_ = _error(
    "NotImplemented", 501, "A header or query you provided implies functionality that is not implemented."
)
InsufficientStorage = _error(
    "InsufficientStorage", 507, "No backend has capacity for this upload."
)
ServiceUnavailable = _error(
    "ServiceUnavailable", 503, "Please reduce your request rate."
)
SlowDown = _error("SlowDown", 503, "Please reduce your request rate.")
#: The rate limiter's answer (s3-orchestrator's status and message), sent with Retry-After: 1.
RateLimited = _error("SlowDown", 429, "Rate limit exceeded")
#: Every copy of the object is on a backend past a monthly usage limit (BEHAVIOURS §1.8).
UsageLimitSlowDown = _error(
    "SlowDown", 429, "monthly usage limit exceeded for all backends holding this object"
)
BadGateway = _error("InternalError", 502, "A storage backend failed to answer the request.")
BucketAlreadyOwnedByYou = _error(
    "BucketAlreadyOwnedByYou",
    409,
    "Your previous request to create the named bucket succeeded and you already own it.",
)
BucketNotEmpty = _error("BucketNotEmpty", 409, "The bucket you tried to delete is not empty")
RequestTimeout = _error(
    "RequestTimeout",
    400,
    "Your socket connection to the server was not read from or written to within the timeout "
    "period.",
)
#: Twisted's HTTP parser refused the request's framing (request line, header syntax, Content-Length,
#: chunked encoding): AWS's front end answers these 400 BadRequest.
BadRequest = _error("BadRequest", 400, "An error occurred when parsing the HTTP request.")
RequestHeaderSectionTooLarge = _error(
    "RequestHeaderSectionTooLarge", 400, "Your request header section exceeds the maximum allowed size."
)
#: The server's own read deadlines (read_header_timeout, read_timeout) passed: 408, then close.
RequestReadTimeout = _error(
    "RequestTimeout",
    408,
    "Your socket connection to the server was not read from or written to within the timeout "
    "period.",
)
InvalidObjectState = _error(
    "InvalidObjectState", 403, "The operation is not valid for the current state of the object."
)
InvalidURI = _error("InvalidURI", 400, "Couldn't parse the specified URI.")
InvalidTag = _error("InvalidTag", 400, "The tag provided was not a valid tag.")
UnexpectedContent = _error("UnexpectedContent", 400, "This request does not support content.")
#: aws-chunked: a chunk other than the last is under 8 KiB (fields Chunk, BadChunkSize).
InvalidChunkSizeError = _error(
    "InvalidChunkSizeError", 400, "Only the last chunk is allowed to have a size less than 8192 bytes"
)
