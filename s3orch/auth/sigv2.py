"""AWS Signature Version 2 (legacy S3 REST authentication): verify clients.

AWS CLI v1 and boto3 presign with SigV2 query parameters by default
(``?AWSAccessKeyId=...&Expires=...&Signature=...``) and s3cmd can sign with
``Authorization: AWS AKID:signature``.  Both forms sign::

    HTTP-Verb \\n Content-MD5 \\n Content-Type \\n Date \\n
    CanonicalizedAmzHeaders CanonicalizedResource

with HMAC-SHA1, base64-encoded.  ``x-amz-date`` replaces ``Date`` (whose slot
is then empty); the presigned form puts ``Expires`` (epoch seconds) there.

The canonical resource is built from the path exactly as the client sent it
(percent-encoding untouched: that is what botocore signs), prefixed with
``/bucket`` when the bucket came from the Host header, followed by the
sub-resources: botocore's ``HmacV1Auth.QSAOfInterest`` list plus every query
key our routing treats as a sub-resource (``s3.operations``), so that no
signature can be replayed onto another operation by adding one.

Everything here is pure: the caller supplies the clock and the credential
lookup; nothing imports Twisted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from s3orch.s3.errors import (
    AccessDenied,
    InvalidAccessKeyId,
    InvalidArgument,
    RequestTimeTooSkewed,
    SignatureDoesNotMatch,
)
from s3orch.s3.numbers import parse_decimal
from s3orch.s3.operations import ROUTING_SUBRESOURCES
from s3orch.s3.sigv4 import ECHO_LIMIT, echo, parse_amz_date, parse_http_date

__all__ = [
    "BOTOCORE_SUBRESOURCES",
    "MAX_EXPIRES",
    "MAX_SKEW",
    "SUBRESOURCES",
    "V2Result",
    "authenticate",
    "canonical_amz_headers",
    "canonical_resource",
    "is_v2_authorization",
    "is_v2_presigned",
    "parse_authorization_header",
    "sign",
    "string_to_sign",
]

#: botocore's ``HmacV1Auth.QSAOfInterest`` (which lists ``requestPayment`` twice).
BOTOCORE_SUBRESOURCES: frozenset[str] = frozenset(
    {
        "accelerate",
        "acl",
        "cors",
        "defaultObjectAcl",
        "location",
        "logging",
        "partNumber",
        "policy",
        "requestPayment",
        "torrent",
        "versioning",
        "versionId",
        "versions",
        "website",
        "uploads",
        "uploadId",
        "response-content-type",
        "response-content-language",
        "response-expires",
        "response-cache-control",
        "response-content-disposition",
        "response-content-encoding",
        "delete",
        "lifecycle",
        "tagging",
        "restore",
        "storageClass",
        "notification",
        "replication",
        "analytics",
        "metrics",
        "inventory",
        "select",
        "select-type",
        "object-lock",
    }
)

#: Query parameters that are part of the CanonicalizedResource: botocore's list
#: and every sub-resource routing selects an operation by.  A client that signs
#: only botocore's list gets SignatureDoesNotMatch for ``?attributes``,
#: ``?retention``, ``?renameObject`` ...: refused, never replayable.
SUBRESOURCES: frozenset[str] = BOTOCORE_SUBRESOURCES | ROUTING_SUBRESOURCES

#: An ``&`` inside a decoded value that would read as the start of another
#: signed sub-resource ("versionId=1&acl" from ``versionId=1%26acl``).
_AMBIGUOUS_AMPERSAND = re.compile(
    "&(?=(?:"
    + "|".join(re.escape(name) for name in sorted(SUBRESOURCES, key=len, reverse=True))
    + ")(?:=|&|$))"
)

#: Longest a presigned URL may still be valid, as for SigV4 (AWS itself sets no V2 limit).
MAX_EXPIRES = 604800
#: Allowed distance between the request's Date/x-amz-date and our clock.
MAX_SKEW = 900.0

_PRESIGN_PARAMS = ("AWSAccessKeyId", "Signature", "Expires")

#: Secret used to compute a full signature for unknown access keys, so the work
#: done (and thus the response time) does not reveal whether a key exists.
_DUMMY_SECRET = "s3orch-dummy-secret-for-unknown-access-keys-0000"

_MALFORMED_HEADER = "AWS authorization header is invalid.  Expected AwsAccessKeyId:signature"
_MISSING_PARAMS = "Query-string authentication requires the Signature, Expires and AWSAccessKeyId parameters"


# --------------------------------------------------------------------------
# Canonicalisation
# --------------------------------------------------------------------------


def canonical_resource(
    raw_path: bytes,
    query: Sequence[tuple[str, str]],
    bucket_from_host: str | None = None,
    *,
    bucket_slash: bool = True,
    empty_value_equals: bool = False,
) -> str:
    """CanonicalizedResource: ``[/bucket]`` + the raw path + ``?sub-resources``.

    ``raw_path`` stays percent-encoded as received.  A bucket-level request
    signs ``/bucket/`` with a trailing slash, whether path-style ``/bucket``
    or virtual-hosted ``/`` (AWS's rule, which botocore follows with its
    ``authPath``); ``bucket_slash=False`` keeps a path-style ``/bucket`` as
    sent, for clients that signed it so.  Sub-resource values are the
    decoded query values (AWS signs them unencoded), sorted by name with
    repeated names kept in received order.  A sub-resource without a value is
    written bare (``?uploads``); ``empty_value_equals`` writes ``?uploads=``
    instead, for clients that sent (and signed) the ``=``.

    Decoded values are signed as they are, except that an ``&`` which would
    read as the start of another signed sub-resource is re-escaped as ``%26``:
    without it ``?partNumber=1%26uploadId%3DX`` (one parameter) and
    ``?partNumber=1&uploadId=X`` (two) would share one string to sign.
    """
    path = raw_path.decode("utf-8", "surrogateescape") or "/"
    if bucket_from_host is not None:
        path = f"/{bucket_from_host}{path}"
    elif bucket_slash and len(path) > 1 and "/" not in path[1:]:
        path += "/"
    subresources = sorted(
        ((name, value) for name, value in query if name in SUBRESOURCES),
        key=lambda pair: pair[0],
    )
    if not subresources:
        return path
    parts = [
        f"{name}={_AMBIGUOUS_AMPERSAND.sub('%26', value)}" if value or empty_value_equals else name
        for name, value in subresources
    ]
    return f"{path}?{'&'.join(parts)}"


def canonical_amz_headers(amz_headers: Mapping[str, Sequence[str]]) -> str:
    """CanonicalizedAmzHeaders: ``name:value\\n`` per ``x-amz-*`` header, sorted by name.

    Names are lower-cased, each value is trimmed and repeated headers are
    joined with ``,`` in received order (as botocore's ``HmacV1Auth``).
    """
    merged: dict[str, list[str]] = {}
    for name, values in amz_headers.items():
        lname = name.lower()
        if lname.startswith("x-amz-"):
            merged.setdefault(lname, []).extend(v.strip() for v in values)
    return "".join(f"{name}:{','.join(merged[name])}\n" for name in sorted(merged))


def string_to_sign(
    method: str,
    content_md5: str,
    content_type: str,
    date: str,
    amz_headers: str,
    resource: str,
) -> str:
    """The SigV2 StringToSign; ``amz_headers`` comes from :func:`canonical_amz_headers`."""
    return f"{method}\n{content_md5}\n{content_type}\n{date}\n{amz_headers}{resource}"


def sign(secret: str, text: str) -> str:
    """Base64 HMAC-SHA1 of ``text``: the signature as it travels."""
    digest = hmac.new(
        secret.encode("utf-8"), text.encode("utf-8", "surrogateescape"), hashlib.sha1
    ).digest()
    return base64.b64encode(digest).decode("ascii")


# --------------------------------------------------------------------------
# Parsing the client's claims
# --------------------------------------------------------------------------


def is_v2_authorization(value: str) -> bool:
    """True for an ``Authorization: AWS ...`` header (not ``AWS4-...``)."""
    return value.lstrip().startswith("AWS ")


def is_v2_presigned(query: Sequence[tuple[str, str]]) -> bool:
    """True when the query carries SigV2 query-string authentication."""
    return any(name in ("AWSAccessKeyId", "Signature") for name, _ in query)


def parse_authorization_header(value: str) -> tuple[str, str]:
    """``AWS AKID:signature`` -> (access key, signature); else InvalidArgument as AWS answers."""
    scheme, _, credentials = value.strip().partition(" ")
    access_key, sep, signature = credentials.strip().partition(":")
    access_key, signature = access_key.strip(), signature.strip()
    if scheme != "AWS" or not sep or not access_key or not signature:
        raise InvalidArgument(
            _MALFORMED_HEADER, ArgumentName="Authorization", ArgumentValue=echo(value, 256)
        )
    return access_key, signature


def _joined(headers: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = headers.get(name)
    if not values:
        return None
    return ",".join(v.strip() for v in values)


def _parse_date(value: str) -> float | None:
    """RFC 1123/850/asctime dates (RFC 2616), or ISO 8601 basic ``YYYYMMDDTHHMMSSZ``."""
    moment = parse_amz_date(value)
    return moment if moment is not None else parse_http_date(value)


def _iso(epoch: float) -> str:
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
    except (OverflowError, OSError, ValueError):  # an absurd Expires from a client
        return str(int(epoch))


# --------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class V2Result:
    """A verified SigV2 identity."""

    access_key: str
    presigned: bool
    expires_at: float | None  # presigned only: the Expires the client signed


def _verify(
    lookup_secret: Callable[[str], str | None],
    access_key: str,
    signature: str,
    candidates: Sequence[str],
) -> None:
    """Compare ``signature`` with each candidate string to sign, in constant time.

    An unknown key costs the same work as a known one (dummy secret) before
    ``InvalidAccessKeyId``; every candidate is always computed.
    """
    secret = lookup_secret(access_key)
    known = secret is not None
    provided = signature.encode("utf-8", "surrogateescape")
    matched = False
    for candidate in candidates:
        expected = sign(secret if secret is not None else _DUMMY_SECRET, candidate)
        matched |= hmac.compare_digest(expected.encode("ascii"), provided)
    if not known:
        raise InvalidAccessKeyId(AWSAccessKeyId=echo(access_key, 256))
    if not matched:
        # AWS echoes the string to sign (and its bytes); ours is echoed only
        # while small, so a large request never builds a large error body.
        sts = candidates[0]
        fields = {"AWSAccessKeyId": echo(access_key, 256)}
        if len(sts) <= ECHO_LIMIT:
            sts_bytes = sts.encode("utf-8", "surrogateescape")
            fields["StringToSign"] = echo(sts)
            fields["SignatureProvided"] = echo(signature, 256)
            if 3 * len(sts_bytes) <= ECHO_LIMIT:
                fields["StringToSignBytes"] = " ".join(f"{b:02x}" for b in sts_bytes)
        raise SignatureDoesNotMatch(**fields)


def _candidates(
    method: str,
    content_md5: str,
    content_type: str,
    date: str,
    amz_headers: str,
    raw_path: bytes,
    query: Sequence[tuple[str, str]],
    bucket_from_host: str | None,
) -> list[str]:
    """The string(s) to sign, AWS's spelling of the resource first.

    Spellings that name the same resource are each accepted: a path-style
    bucket as ``/bucket/`` (AWS, botocore) or ``/bucket`` (as sent), and
    ``?uploads`` or ``?uploads=`` (both parse to the same pair).
    """
    resources: list[str] = []
    for equals in (False, True):
        for slash in (True, False):
            resource = canonical_resource(
                raw_path, query, bucket_from_host, bucket_slash=slash, empty_value_equals=equals
            )
            if resource not in resources:
                resources.append(resource)
    return [
        string_to_sign(method, content_md5, content_type, date, amz_headers, resource)
        for resource in resources
    ]


def _authenticate_header(
    method: str,
    raw_path: bytes,
    query: Sequence[tuple[str, str]],
    headers: Mapping[str, Sequence[str]],
    value: str,
    lookup_secret: Callable[[str], str | None],
    now: float,
    bucket_from_host: str | None,
    max_skew: float,
) -> V2Result:
    access_key, signature = parse_authorization_header(value)
    amz_date = _joined(headers, "x-amz-date")
    http_date = _joined(headers, "date")
    request_time = amz_date if amz_date is not None else http_date
    moment = _parse_date(request_time) if request_time else None
    if request_time is None or moment is None:
        raise AccessDenied("AWS authentication requires a valid Date or x-amz-date header")
    if abs(now - moment) > max_skew:
        raise RequestTimeTooSkewed(
            RequestTime=echo(request_time, 64),
            ServerTime=_iso(now),
            MaxAllowedSkewMilliseconds=str(int(max_skew * 1000)),
        )
    # With x-amz-date present, AWS ignores Date: its slot is empty and
    # x-amz-date is signed among the amz headers.
    date_slot = "" if amz_date is not None else (http_date or "")
    candidates = _candidates(
        method,
        _joined(headers, "content-md5") or "",
        _joined(headers, "content-type") or "",
        date_slot,
        canonical_amz_headers(headers),
        raw_path,
        query,
        bucket_from_host,
    )
    _verify(lookup_secret, access_key, signature, candidates)
    return V2Result(access_key=access_key, presigned=False, expires_at=None)


def _authenticate_query(
    method: str,
    raw_path: bytes,
    query: Sequence[tuple[str, str]],
    headers: Mapping[str, Sequence[str]],
    lookup_secret: Callable[[str], str | None],
    now: float,
    bucket_from_host: str | None,
    max_skew: float,
) -> V2Result:
    params: dict[str, str] = {}
    for name, value in query:
        if name in _PRESIGN_PARAMS:
            if name in params:
                raise AccessDenied(f"{name} must appear only once.")
            params[name] = value
    if any(not params.get(name) for name in _PRESIGN_PARAMS):
        raise AccessDenied(_MISSING_PARAMS)
    expires_raw = params["Expires"]
    # ASCII digits, bounded length: int() of thousands of digits is refused (and slow).
    expires = parse_decimal(expires_raw, max_digits=20)
    if expires is None:
        raise AccessDenied(
            f"Invalid date (should be seconds since epoch): {echo(expires_raw, 64)}"
        )
    if now > expires:
        raise AccessDenied(
            "Request has expired", Expires=_iso(expires), ServerTime=_iso(now)
        )
    # Same horizon as SigV4: at most a week, plus the clock skew SigV4 allows
    # for an X-Amz-Date in the future (so a 7-day URL from a client whose
    # clock runs a little fast is not refused).
    if expires - now > MAX_EXPIRES + max_skew:
        raise AccessDenied(
            f"Presigned URLs may be valid for at most a week ({MAX_EXPIRES} seconds) from now.",
            Expires=_iso(expires),
            ServerTime=_iso(now),
        )
    # botocore moves the signed x-amz-*, Content-Type and Content-MD5 headers
    # into the query of a presigned URL.  A header the client actually sends
    # wins (it is what the request means, so it must be what was signed); the
    # query copy stands in only for a header that is absent.
    amz: dict[str, list[str]] = {
        name: list(values) for name, values in headers.items() if name.lower().startswith("x-amz-")
    }
    sent = {name.lower() for name in amz}
    for name, value in query:
        lname = name.lower()
        if lname.startswith("x-amz-") and lname not in sent:
            amz.setdefault(lname, []).append(value)
    standard: dict[str, str] = {}
    for name in ("content-md5", "content-type"):
        from_header = _joined(headers, name)
        if from_header is not None:
            standard[name] = from_header
        else:
            standard[name] = next(
                (value.strip() for qname, value in query if qname.lower() == name), ""
            )
    candidates = _candidates(
        method,
        standard["content-md5"],
        standard["content-type"],
        expires_raw,
        canonical_amz_headers(amz),
        raw_path,
        query,
        bucket_from_host,
    )
    _verify(lookup_secret, params["AWSAccessKeyId"], params["Signature"], candidates)
    return V2Result(
        access_key=params["AWSAccessKeyId"], presigned=True, expires_at=float(expires)
    )


def authenticate(
    method: str,
    raw_path: bytes,
    query: Sequence[tuple[str, str]],
    headers: Mapping[str, Sequence[str]],
    lookup_secret: Callable[[str], str | None],
    now: float,
    *,
    bucket_from_host: str | None = None,
    max_skew: float = MAX_SKEW,
) -> V2Result:
    """Verify a SigV2 header-signed or presigned request; raise an ``S3Error`` otherwise.

    ``raw_path`` is the path as received (no query), ``query`` the decoded
    pairs from ``sigv4.parse_query``, ``headers`` lower-case names -> raw
    values.  ``bucket_from_host`` names the bucket when it came from a
    virtual-hosted-style Host header (it is then part of the signed resource).
    The caller has already decided this is a SigV2 request and that only one
    authentication mechanism is present.
    """
    auth_values = headers.get("authorization")
    if auth_values:
        if len(auth_values) != 1:
            raise InvalidArgument(_MALFORMED_HEADER, ArgumentName="Authorization")
        return _authenticate_header(
            method, raw_path, query, headers, auth_values[0], lookup_secret, now,
            bucket_from_host, max_skew,
        )
    if is_v2_presigned(query):
        return _authenticate_query(
            method, raw_path, query, headers, lookup_secret, now, bucket_from_host, max_skew
        )
    raise AccessDenied()
