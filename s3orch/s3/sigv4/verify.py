"""SigV4 verification of a client request: header-signed or presigned.

Pure: the caller supplies the clock (``now``, seconds since the epoch) and the
credential lookup.
"""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

from s3orch.s3.errors import (
    AccessDenied,
    AuthorizationHeaderMalformed,
    AuthorizationQueryParametersError,
    InvalidAccessKeyId,
    InvalidArgument,
    InvalidRequest,
    RequestTimeTooSkewed,
    S3Error,
    SignatureDoesNotMatch,
)
from s3orch.s3.numbers import parse_decimal
from s3orch.s3.sigv4.canonical import (
    ALGORITHM,
    STREAMING_PAYLOAD,
    STREAMING_PAYLOAD_TRAILER,
    STREAMING_UNSIGNED_TRAILER,
    UNSIGNED_PAYLOAD,
    _derive_uncached,
    canonical_query,
    canonical_request,
    canonical_uri_from_raw_path,
    derive_signing_key,
    format_amz_date,
    hmac_hex,
    parse_amz_date,
    parse_http_date,
    string_to_sign,
)
from s3orch.s3.sigv4.claims import (
    _HEADER_PREFIX,
    _QUERY_PREFIX,
    ECHO_LIMIT,
    _parse_credential,
    _parse_signed_headers,
    echo,
    parse_authorization_header,
    signed_headers_in_order,
)

#: Payload-hash claims other than a literal SHA-256 that S3 accepts.
_PAYLOAD_SENTINELS = frozenset(
    {
        UNSIGNED_PAYLOAD,
        STREAMING_PAYLOAD,
        STREAMING_PAYLOAD_TRAILER,
        STREAMING_UNSIGNED_TRAILER,
    }
)
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_MAX_EXPIRES = 604800  # seven days, the AWS ceiling for presigned URLs

#: Largest canonical request built for one request.  With unique signed names it
#: is bounded by the request line and header caps anyway; this is the backstop.
MAX_CANONICAL_REQUEST = 64 * 1024

#: ``x-amz-*`` headers AWS accepts without their being signed.  The payload hash
#: is covered by the canonical request's last line whatever SignedHeaders says
#: (header auth), and a presigned URL signs ``UNSIGNED-PAYLOAD`` unless the
#: client signed the header.
UNSIGNED_AMZ_HEADERS = frozenset({"x-amz-content-sha256"})

#: Secret used to compute a full signature for unknown access keys, so that the
#: work done (and thus the response time) does not reveal whether a key exists.
#: The derived key is never cached: unknown keys cannot fill the cache.
_DUMMY_SECRET = "s3orch-dummy-secret-for-unknown-access-keys-0000"


class SignedRequest(NamedTuple):
    """What verification needs from an HTTP request, as received.

    NamedTuples, not frozen dataclasses, for the per-request records of this path: as
    immutable, and built in a third of the instructions (no ``object.__setattr__`` per field).
    """

    method: str
    raw_path: bytes  # path as received, without query
    query: Sequence[tuple[str, str]]  # from parse_query
    headers: Mapping[str, Sequence[str]]  # lower-case names -> raw values


class AuthResult(NamedTuple):
    """A verified identity plus what the body decoder needs to go on verifying."""

    access_key: str
    payload_hash: str  # x-amz-content-sha256 claim; UNSIGNED-PAYLOAD for presigned
    seed_signature: str  # the request signature (first link of the streaming chain)
    signing_key: bytes
    scope: str  # "20130524/us-east-1/s3/aws4_request"
    amz_date: str  # "20130524T000000Z"
    presigned: bool
    expires_at: float | None
    #: Header names the signature covers (lower case), e.g. to decide whether
    #: ``Content-Encoding: aws-chunked`` may change how the body is read.
    signed_headers: tuple[str, ...] = ()


def _first(headers: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = headers.get(name)
    if not values:
        return None
    return values[0].strip()


def _request_date(headers: Mapping[str, Sequence[str]]) -> tuple[str, float, bool]:
    """``X-Amz-Date``, else an HTTP ``Date`` header: (value as sent, epoch seconds, is X-Amz-Date)."""
    amz = _first(headers, "x-amz-date")
    if amz is not None:
        parsed = parse_amz_date(amz)
        if parsed is None:
            raise _bad_date()
        return amz, parsed, True
    date = _first(headers, "date")
    moment = parse_http_date(date) if date is not None else None
    if date is None or moment is None:
        raise _bad_date()
    return date, moment, False


def _bad_date() -> S3Error:
    return AccessDenied("AWS authentication requires a valid Date or x-amz-date header")


def _check_skew(raw: str, moment: float, now: float, max_skew: float) -> None:
    if abs(now - moment) > max_skew:
        raise RequestTimeTooSkewed(
            RequestTime=echo(raw, 64),
            ServerTime=format_amz_date(now),
            MaxAllowedSkewMilliseconds=str(int(max_skew * 1000)),
        )


def _check_payload_claim(value: str) -> None:
    if value not in _PAYLOAD_SENTINELS and not _SHA256_HEX.fullmatch(value):
        raise InvalidArgument(
            "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, "
            "STREAMING-UNSIGNED-PAYLOAD-TRAILER, STREAMING-AWS4-HMAC-SHA256-PAYLOAD, "
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER or a valid sha256 value.",
            ArgumentName="x-amz-content-sha256",
            ArgumentValue=echo(value, 256),
        )


def _check_scope(
    region: str,
    service: str,
    *,
    regions: Sequence[str],
    expected_service: str,
    error: type[S3Error],
    prefix: str,
) -> None:
    """The credential scope names this endpoint: service ``s3``, a configured region (if any)."""
    if service != expected_service:
        raise error(
            f'{prefix}incorrect service "{service}". This endpoint belongs to "{expected_service}".'
        )
    if regions and region not in regions:
        raise error(
            f"{prefix}the region '{region}' is wrong; expecting '{regions[0]}'",
            Region=regions[0],
        )


def _check_amz_headers_signed(
    headers: Mapping[str, Sequence[str]], signed_headers: Sequence[str]
) -> None:
    """Every ``x-amz-*`` header present must be signed (AWS's documented exception aside).

    An unsigned one could be added in flight: ``x-amz-copy-source`` turns a PUT
    into a copy, ``x-amz-meta-*``/``x-amz-tagging``/``x-amz-acl`` change what is
    stored.  AWS answers 403 AccessDenied with a ``HeadersNotSigned`` element.
    """
    signed = signed_headers if len(signed_headers) <= 16 else set(signed_headers)  # a short scan is cheaper
    unsigned = [
        name
        for name in headers
        if name.startswith("x-amz-") and name not in signed and name not in UNSIGNED_AMZ_HEADERS
    ]
    if unsigned:
        unsigned.sort()
        raise AccessDenied(
            "There were headers present in the request which were not signed",
            HeadersNotSigned=echo(", ".join(unsigned), 1024),
        )


def _verify(
    req: SignedRequest,
    lookup_secret: Callable[[str], str | None],
    *,
    access_key: str,
    date: str,
    region: str,
    service: str,
    signed_headers: Sequence[str],
    amz_date: str,
    payload_hash: str,
    signature: str,
    exclude_query: str | None,
    malformed: type[S3Error],
) -> bytes:
    """Compute the expected signature and compare; return the signing key.

    An unknown key costs the same work as a known one (a dummy secret, derived
    uncached so that unknown keys never reach the signing-key cache) before
    ``InvalidAccessKeyId`` is raised.  A SignedHeaders list that is not strictly
    ascending cannot match (AWS: SignatureDoesNotMatch) and is refused before
    any canonical request is built: repeating ``host`` a thousand times must not
    multiply the work or the error body.
    """
    secret = lookup_secret(access_key)
    known = secret is not None
    if not signed_headers_in_order(signed_headers):
        if not known:
            raise InvalidAccessKeyId(AWSAccessKeyId=echo(access_key, 256))
        raise SignatureDoesNotMatch(AWSAccessKeyId=echo(access_key, 256))
    creq = canonical_request(
        req.method,
        canonical_uri_from_raw_path(req.raw_path),
        canonical_query(req.query, exclude=exclude_query),
        req.headers,
        signed_headers,
        payload_hash,
    )
    if len(creq) > MAX_CANONICAL_REQUEST:
        raise malformed(f"The canonical request exceeds {MAX_CANONICAL_REQUEST} bytes.")
    signing_key = (
        derive_signing_key(secret, date, region, service)
        if secret is not None
        else _derive_uncached(_DUMMY_SECRET, date, region, service)
    )
    sts = string_to_sign(amz_date, f"{date}/{region}/{service}/aws4_request", creq)
    expected = hmac_hex(signing_key, sts)
    matches = hmac.compare_digest(
        expected.encode("ascii"), signature.encode("utf-8", "surrogateescape")
    )
    if not known:
        raise InvalidAccessKeyId(AWSAccessKeyId=echo(access_key, 256))
    if not matches:
        fields = {"AWSAccessKeyId": echo(access_key, 256), "StringToSign": echo(sts)}
        if len(creq) <= ECHO_LIMIT:
            fields["CanonicalRequest"] = echo(creq)
        raise SignatureDoesNotMatch(**fields)
    return signing_key


def _authenticate_header(
    req: SignedRequest,
    value: str,
    lookup_secret: Callable[[str], str | None],
    now: float,
    max_skew: float,
    regions: Sequence[str],
    service: str,
) -> AuthResult:
    parsed = parse_authorization_header(value)
    if "host" not in parsed.signed_headers:
        raise AuthorizationHeaderMalformed("The host header must be signed.")
    _check_scope(
        parsed.region,
        parsed.service,
        regions=regions,
        expected_service=service,
        error=AuthorizationHeaderMalformed,
        prefix=_HEADER_PREFIX,
    )
    _check_amz_headers_signed(req.headers, parsed.signed_headers)
    raw_date, moment, is_amz = _request_date(req.headers)
    _check_skew(raw_date, moment, now, max_skew)
    amz_date = raw_date if is_amz else format_amz_date(moment)
    if parsed.date != amz_date[:8]:
        raise AuthorizationHeaderMalformed(
            "Invalid credential date. Date is not the same as X-Amz-Date."
        )
    payload_hash = _first(req.headers, "x-amz-content-sha256")
    if payload_hash is None:
        raise InvalidRequest(
            "Missing required header for this request: x-amz-content-sha256"
        )
    _check_payload_claim(payload_hash)
    signing_key = _verify(
        req,
        lookup_secret,
        access_key=parsed.access_key,
        date=parsed.date,
        region=parsed.region,
        service=parsed.service,
        signed_headers=parsed.signed_headers,
        amz_date=amz_date,
        payload_hash=payload_hash,
        signature=parsed.signature,
        exclude_query=None,
        malformed=AuthorizationHeaderMalformed,
    )
    return AuthResult(
        access_key=parsed.access_key,
        payload_hash=payload_hash,
        seed_signature=parsed.signature,
        signing_key=signing_key,
        scope=parsed.scope,
        amz_date=amz_date,
        presigned=False,
        expires_at=None,
        signed_headers=parsed.signed_headers,
    )


_QUERY_AUTH_PARAMS = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
)


def _iso8601(epoch: float) -> str:
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
    except (OverflowError, OSError, ValueError):  # outside what the C library formats
        return str(int(epoch))


def _authenticate_query(
    req: SignedRequest,
    lookup_secret: Callable[[str], str | None],
    now: float,
    max_skew: float,
    regions: Sequence[str],
    service: str,
) -> AuthResult:
    error = AuthorizationQueryParametersError
    params: dict[str, str] = {}
    for name, value in req.query:
        if name in _QUERY_AUTH_PARAMS:
            if name in params:
                raise error(f"{name} must appear only once.")
            params[name] = value
    missing = [name for name in _QUERY_AUTH_PARAMS if name not in params]
    if missing:
        raise error(
            "Query-string authentication version 4 requires the X-Amz-Algorithm, "
            "X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, "
            "and X-Amz-Expires parameters."
        )
    if params["X-Amz-Algorithm"] != ALGORITHM:
        raise error('X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"')
    access_key, date, region, credential_service = _parse_credential(
        params["X-Amz-Credential"], error, _QUERY_PREFIX
    )
    signed = _parse_signed_headers(params["X-Amz-SignedHeaders"], error)
    if "host" not in signed:
        raise error("X-Amz-SignedHeaders must include host.")
    _check_scope(
        region,
        credential_service,
        regions=regions,
        expected_service=service,
        error=error,
        prefix=_QUERY_PREFIX,
    )
    amz_date = params["X-Amz-Date"]
    moment = parse_amz_date(amz_date)
    if moment is None:
        raise error(
            "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\""
        )
    expires_raw = params["X-Amz-Expires"]
    expires = parse_decimal(expires_raw, max_digits=19)
    if expires is None:
        if expires_raw[:1] == "-" and parse_decimal(expires_raw[1:]) is not None:
            raise error("X-Amz-Expires must be non-negative")
        raise error("X-Amz-Expires should be a number")
    if expires > _MAX_EXPIRES:
        raise error(
            "X-Amz-Expires must be less than a week (in seconds); that is, "
            f"the given X-Amz-Expires must be less than {_MAX_EXPIRES} seconds"
        )
    if date != amz_date[:8]:
        raise error("Invalid credential date. Date is not the same as X-Amz-Date.")
    _check_amz_headers_signed(req.headers, signed)
    if moment - now > max_skew:
        raise AccessDenied("Request is not valid yet")
    # A URL valid for zero seconds is never valid (AWS: "Request has expired").
    if now > moment + expires or expires == 0:
        raise AccessDenied(
            "Request has expired",
            **{
                "X-Amz-Expires": str(expires),
                "Expires": _iso8601(moment + expires),
                "ServerTime": _iso8601(now),
            },
        )
    # S3 presigned URLs carry no payload hash; a client that signed an
    # x-amz-content-sha256 header (aws-sdk-go-v2 does) used that value instead.
    payload_hash = UNSIGNED_PAYLOAD
    if "x-amz-content-sha256" in signed:
        claimed = _first(req.headers, "x-amz-content-sha256")
        if claimed is not None:
            _check_payload_claim(claimed)
            payload_hash = claimed
    signing_key = _verify(
        req,
        lookup_secret,
        access_key=access_key,
        date=date,
        region=region,
        service=credential_service,
        signed_headers=signed,
        amz_date=amz_date,
        payload_hash=payload_hash,
        signature=params["X-Amz-Signature"],
        exclude_query="X-Amz-Signature",
        malformed=error,
    )
    return AuthResult(
        access_key=access_key,
        payload_hash=payload_hash,
        seed_signature=params["X-Amz-Signature"],
        signing_key=signing_key,
        scope=f"{date}/{region}/{credential_service}/aws4_request",
        amz_date=amz_date,
        presigned=True,
        expires_at=moment + expires,
        signed_headers=signed,
    )


def authenticate(
    req: SignedRequest,
    lookup_secret: Callable[[str], str | None],
    now: float,
    max_skew: float = 900.0,
    *,
    regions: Sequence[str] = (),
    service: str = "s3",
) -> AuthResult:
    """Verify a SigV4 header-signed or presigned request; raise an ``S3Error`` otherwise.

    The credential scope must name ``service`` (a signature made for IAM or STS
    with the same key is refused) and, when ``regions`` is not empty, one of
    those regions (``server.regions``; empty answers for every region, as
    s3-orchestrator, the Go product s3orch re-creates, does).  Scope, dates and SignedHeaders are all checked before any
    key is derived.  The caller deals with other schemes (``X-Proxy-Token``)
    before calling; anything unsigned here is AccessDenied.
    """
    auth_values = req.headers.get("authorization")
    has_query_auth = any(name == "X-Amz-Algorithm" for name, _ in req.query)
    if auth_values:
        if has_query_auth:
            raise InvalidArgument(
                "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, "
                "Signature query string parameter or the Authorization header should be specified",
                ArgumentName="Authorization",
            )
        if len(auth_values) != 1:
            raise AuthorizationHeaderMalformed()
        return _authenticate_header(
            req, auth_values[0], lookup_secret, now, max_skew, regions, service
        )
    if has_query_auth:
        return _authenticate_query(req, lookup_secret, now, max_skew, regions, service)
    raise AccessDenied()

