"""AWS Signature Version 4, as S3 speaks it: verify clients, sign backend requests.

One implementation serves both directions so that the canonicalisation we
check clients against is exactly the one we produce for backends.  S3's
dialect differs from generic SigV4 in two ways that matter here: the path is
never normalised (``//``, ``.``, ``..`` and a trailing ``/`` are part of the
key) and never double-encoded.

Everything in this module is pure: the caller supplies the clock (``now``,
seconds since the epoch) and the credential lookup.
"""

from __future__ import annotations

import calendar
import datetime
import hashlib
import hmac
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import quote_from_bytes, unquote_to_bytes, urlsplit

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

__all__ = [
    "ALGORITHM",
    "EMPTY_SHA256",
    "STREAMING_PAYLOAD",
    "STREAMING_PAYLOAD_TRAILER",
    "STREAMING_UNSIGNED_TRAILER",
    "UNSIGNED_PAYLOAD",
    "AuthResult",
    "ParsedAuth",
    "SignedRequest",
    "authenticate",
    "canonical_headers",
    "canonical_query",
    "canonical_request",
    "canonical_uri_from_raw_path",
    "derive_signing_key",
    "format_amz_date",
    "hmac_hex",
    "parse_authorization_header",
    "parse_query",
    "presign_url",
    "sign_headers",
    "string_to_sign",
    "uri_encode",
]

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_PAYLOAD = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_PAYLOAD_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

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
_AMZ_DATE = re.compile(r"\d{8}T\d{6}Z")
_SCOPE_DATE = re.compile(r"\d{8}")
_HEADER_WS = re.compile(r"[ \t\r\n]+")
_MAX_EXPIRES = 604800  # seven days, the AWS ceiling for presigned URLs
_DEFAULT_PORTS = {"http": 80, "https": 443}

#: Secret used to compute a full signature for unknown access keys, so that the
#: work done (and thus the response time) does not reveal whether a key exists.
_DUMMY_SECRET = "s3orch-dummy-secret-for-unknown-access-keys-0000"

_MALFORMED_CREDENTIAL = 'The Credential is mal-formed; expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".'


# --------------------------------------------------------------------------
# Canonicalisation
# --------------------------------------------------------------------------


def uri_encode(s: str, *, encode_slash: bool) -> str:
    """Percent-encode per RFC 3986 the way SigV4 requires (unreserved kept, upper-case hex).

    Strings decoded with ``surrogateescape`` round-trip to their original bytes,
    so a client that sent invalid UTF-8 is still canonicalised byte-exactly.
    """
    return quote_from_bytes(
        s.encode("utf-8", "surrogateescape"), safe="" if encode_slash else "/"
    )


def canonical_uri_from_raw_path(raw_path: bytes) -> str:
    """Canonical URI of a request path as received on the wire (S3 rules).

    Decode once, re-encode each ``/``-separated segment; no dot-segment or
    slash normalisation, because in S3 those characters are part of the object
    key.  ``+`` is a literal plus in a path, never a space.
    """
    if not raw_path:
        return "/"
    # Segment by segment, so an encoded slash (%2F) stays encoded as the
    # client signed it rather than turning into a separator.
    return "/".join(
        quote_from_bytes(unquote_to_bytes(segment), safe="")
        for segment in raw_path.split(b"/")
    )


def _decode_component(raw: bytes) -> str:
    return unquote_to_bytes(raw).decode("utf-8", "surrogateescape")


def parse_query(raw_query: bytes) -> list[tuple[str, str]]:
    """Decode a raw query string into (name, value) pairs in received order.

    ``+`` stays a literal plus (clients that sign with SigV4 encode a space as
    ``%20``; botocore does), and ``?uploads`` yields ``("uploads", "")``.
    """
    pairs: list[tuple[str, str]] = []
    if not raw_query:
        return pairs
    for part in raw_query.split(b"&"):
        if not part:
            continue
        name, _, value = part.partition(b"=")
        pairs.append((_decode_component(name), _decode_component(value)))
    return pairs


def canonical_query(
    pairs: Sequence[tuple[str, str]], *, exclude: str | None = None
) -> str:
    """Canonical query string: encode names and values, sort by name then value."""
    encoded = sorted(
        (uri_encode(name, encode_slash=True), uri_encode(value, encode_slash=True))
        for name, value in pairs
        if name != exclude
    )
    return "&".join(f"{name}={value}" for name, value in encoded)


def _canonical_value(value: str) -> str:
    return _HEADER_WS.sub(" ", value).strip()


def canonical_headers(
    headers: Mapping[str, Sequence[str]], signed: Sequence[str]
) -> str:
    """Canonical header block: one ``name:value\\n`` line per signed header, in ``signed`` order.

    Values are trimmed with whitespace runs collapsed; repeated headers are
    joined with ``,`` in the order received.  A signed header that is absent
    canonicalises to an empty value (the signature then decides).
    """
    lines = []
    for name in signed:
        lname = name.lower()
        values = headers.get(lname, ())
        lines.append(f"{lname}:{','.join(_canonical_value(v) for v in values)}\n")
    return "".join(lines)


def canonical_request(
    method: str,
    canonical_uri: str,
    canonical_query: str,
    headers: Mapping[str, Sequence[str]],
    signed_headers: Sequence[str],
    payload_hash: str,
) -> str:
    """The SigV4 canonical request; ``headers`` maps lower-case names to raw values."""
    return "\n".join(
        (
            method,
            canonical_uri,
            canonical_query,
            canonical_headers(headers, signed_headers),
            ";".join(signed_headers),
            payload_hash,
        )
    )


def _sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def string_to_sign(amz_date: str, scope: str, canonical_request: str) -> str:
    """The SigV4 string to sign for a request."""
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{_sha256_hex(canonical_request)}"


def hmac_hex(key: bytes, message: str) -> str:
    """Lower-case hex HMAC-SHA256, the form signatures travel in."""
    return hmac.new(
        key, message.encode("utf-8", "surrogateescape"), hashlib.sha256
    ).hexdigest()


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(
        key, message.encode("utf-8", "surrogateescape"), hashlib.sha256
    ).digest()


def _derive_uncached(secret: str, date: str, region: str, service: str) -> bytes:
    k_date = _hmac(("AWS4" + secret).encode("utf-8"), date)
    return _hmac(_hmac(_hmac(k_date, region), service), "aws4_request")


class _SigningKeyCache:
    """Bounded LRU of derived signing keys (four HMACs saved per request).

    Keyed by a hash of the secret, never the secret itself, so a heap dump of
    the cache does not hand out credentials.
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._entries: OrderedDict[tuple[bytes, str, str, str], bytes] = OrderedDict()

    def get(self, secret: str, date: str, region: str, service: str) -> bytes:
        key = (hashlib.sha256(secret.encode("utf-8")).digest(), date, region, service)
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
            return found
        derived = _derive_uncached(secret, date, region, service)
        self._entries[key] = derived
        if len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)
        return derived

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()


_KEY_CACHE = _SigningKeyCache(maxsize=1024)


def derive_signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """kSigning = HMAC chain over date, region, service, "aws4_request" (LRU-cached)."""
    return _KEY_CACHE.get(secret, date, region, service)


def format_amz_date(now: float) -> str:
    """Seconds since the epoch -> ``YYYYMMDDTHHMMSSZ``."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))


def _parse_amz_date(value: str) -> float | None:
    if not _AMZ_DATE.fullmatch(value):
        return None
    try:
        return float(calendar.timegm(time.strptime(value, "%Y%m%dT%H%M%SZ")))
    except ValueError:
        return None


# --------------------------------------------------------------------------
# Parsing the client's claims
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ParsedAuth:
    """The parts of an ``Authorization: AWS4-HMAC-SHA256 ...`` header."""

    access_key: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str

    @property
    def scope(self) -> str:
        """Credential scope as it appears in the string to sign."""
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


def _parse_credential(value: str, error: type[S3Error]) -> tuple[str, str, str, str]:
    parts = value.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request" or not all(parts[:4]):
        raise error(_MALFORMED_CREDENTIAL)
    if not _SCOPE_DATE.fullmatch(parts[1]):
        raise error(_MALFORMED_CREDENTIAL)
    return parts[0], parts[1], parts[2], parts[3]


def _parse_signed_headers(value: str, error: type[S3Error]) -> tuple[str, ...]:
    names = tuple(name.strip().lower() for name in value.split(";"))
    if not names or not all(names):
        raise error("SignedHeaders is malformed.")
    return names


def parse_authorization_header(value: str) -> ParsedAuth:
    """Parse ``AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...``.

    Spaces after the commas are optional, components may come in any order.
    Anything else is ``AuthorizationHeaderMalformed``; another algorithm
    (SigV2, SigV4a) is ``InvalidRequest`` as AWS answers.
    """
    value = value.strip()
    algorithm, _, rest = value.partition(" ")
    if algorithm != ALGORITHM:
        if algorithm.startswith("AWS"):
            raise InvalidRequest(
                "The authorization mechanism you have provided is not supported. "
                "Please use AWS4-HMAC-SHA256."
            )
        raise AuthorizationHeaderMalformed()
    fields: dict[str, str] = {}
    for component in rest.split(","):
        name, sep, field_value = component.strip().partition("=")
        if (
            not sep
            or name not in ("Credential", "SignedHeaders", "Signature")
            or name in fields
        ):
            raise AuthorizationHeaderMalformed()
        fields[name] = field_value.strip()
    if len(fields) != 3:
        raise AuthorizationHeaderMalformed()
    access_key, date, region, service = _parse_credential(
        fields["Credential"], AuthorizationHeaderMalformed
    )
    signed = _parse_signed_headers(
        fields["SignedHeaders"], AuthorizationHeaderMalformed
    )
    if not fields["Signature"]:
        raise AuthorizationHeaderMalformed()
    return ParsedAuth(access_key, date, region, service, signed, fields["Signature"])


# --------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class SignedRequest:
    """What verification needs from an HTTP request, as received."""

    method: str
    raw_path: bytes  # path as received, without query
    query: Sequence[tuple[str, str]]  # from parse_query
    headers: Mapping[str, Sequence[str]]  # lower-case names -> raw values


@dataclass(frozen=True)
class AuthResult:
    """A verified identity plus what the body decoder needs to go on verifying."""

    access_key: str
    payload_hash: str  # x-amz-content-sha256 claim; UNSIGNED-PAYLOAD for presigned
    seed_signature: str  # the request signature (first link of the streaming chain)
    signing_key: bytes
    scope: str  # "20130524/us-east-1/s3/aws4_request"
    amz_date: str  # "20130524T000000Z"
    presigned: bool
    expires_at: float | None


def _first(headers: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = headers.get(name)
    if not values:
        return None
    return values[0].strip()


def _request_date(headers: Mapping[str, Sequence[str]]) -> tuple[str, float]:
    """``X-Amz-Date``, else an RFC 1123 ``Date`` header, as (amz_date, epoch seconds)."""
    bad = AccessDenied("AWS authentication requires a valid Date or x-amz-date header")
    amz = _first(headers, "x-amz-date")
    if amz is not None:
        parsed = _parse_amz_date(amz)
        if parsed is None:
            raise bad
        return amz, parsed
    date = _first(headers, "date")
    if date is None:
        raise bad
    try:
        moment = parsedate_to_datetime(date)
    except (TypeError, ValueError):
        raise bad from None
    if moment.tzinfo is None:  # "-0000" (botocore's formatdate): UTC
        moment = moment.replace(tzinfo=datetime.UTC)
    epoch = moment.timestamp()
    return format_amz_date(epoch), epoch


def _check_payload_claim(value: str) -> None:
    if value not in _PAYLOAD_SENTINELS and not _SHA256_HEX.fullmatch(value):
        raise InvalidArgument(
            "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, "
            "STREAMING-UNSIGNED-PAYLOAD-TRAILER, STREAMING-AWS4-HMAC-SHA256-PAYLOAD, "
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER or a valid sha256 value.",
            ArgumentName="x-amz-content-sha256",
            ArgumentValue=value,
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
) -> bytes:
    """Compute the expected signature and compare; return the signing key.

    An unknown key costs the same work as a known one (dummy secret through the
    same cache) before ``InvalidAccessKeyId`` is raised.  Nothing is cached
    under the unknown key: every unknown key shares the dummy secret's entry.
    """
    secret = lookup_secret(access_key)
    known = secret is not None
    signing_key = derive_signing_key(
        secret if secret is not None else _DUMMY_SECRET, date, region, service
    )
    scope = f"{date}/{region}/{service}/aws4_request"
    creq = canonical_request(
        req.method,
        canonical_uri_from_raw_path(req.raw_path),
        canonical_query(req.query, exclude=exclude_query),
        req.headers,
        signed_headers,
        payload_hash,
    )
    sts = string_to_sign(amz_date, scope, creq)
    expected = hmac_hex(signing_key, sts)
    matches = hmac.compare_digest(
        expected.encode("ascii"), signature.encode("utf-8", "surrogateescape")
    )
    if not known:
        raise InvalidAccessKeyId(AWSAccessKeyId=access_key)
    if not matches:
        raise SignatureDoesNotMatch(
            AWSAccessKeyId=access_key, StringToSign=sts, CanonicalRequest=creq
        )
    return signing_key


def _authenticate_header(
    req: SignedRequest,
    value: str,
    lookup_secret: Callable[[str], str | None],
    now: float,
    max_skew: float,
) -> AuthResult:
    parsed = parse_authorization_header(value)
    if "host" not in parsed.signed_headers:
        raise AuthorizationHeaderMalformed("The host header must be signed.")
    amz_date, moment = _request_date(req.headers)
    if parsed.date != amz_date[:8]:
        raise AuthorizationHeaderMalformed(
            "Invalid credential date. Date is not the same as X-Amz-Date."
        )
    if abs(now - moment) > max_skew:
        raise RequestTimeTooSkewed(
            RequestTime=amz_date,
            ServerTime=format_amz_date(now),
            MaxAllowedSkewMilliseconds=str(int(max_skew * 1000)),
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
    )


_QUERY_AUTH_PARAMS = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
)


def _authenticate_query(
    req: SignedRequest,
    lookup_secret: Callable[[str], str | None],
    now: float,
    max_skew: float,
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
    access_key, date, region, service = _parse_credential(
        params["X-Amz-Credential"], error
    )
    signed = _parse_signed_headers(params["X-Amz-SignedHeaders"], error)
    if "host" not in signed:
        raise error("X-Amz-SignedHeaders must include host.")
    amz_date = params["X-Amz-Date"]
    moment = _parse_amz_date(amz_date)
    if moment is None:
        raise error(
            "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\""
        )
    expires_raw = params["X-Amz-Expires"]
    if not expires_raw.isascii() or not expires_raw.isdigit():
        raise error("X-Amz-Expires should be a number")
    expires = int(expires_raw)
    if expires < 1:
        raise error("X-Amz-Expires must be non-negative")
    if expires > _MAX_EXPIRES:
        raise error(
            "X-Amz-Expires must be less than a week (in seconds) that is 604800"
        )
    if date != amz_date[:8]:
        raise error("Invalid credential date. Date is not the same as X-Amz-Date.")
    if moment - now > max_skew:
        raise AccessDenied("Request is not valid yet")
    if now > moment + expires:
        raise AccessDenied(
            "Request has expired",
            **{
                "X-Amz-Expires": expires_raw,
                "Expires": time.strftime(
                    "%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment + expires)
                ),
                "ServerTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
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
        service=service,
        signed_headers=signed,
        amz_date=amz_date,
        payload_hash=payload_hash,
        signature=params["X-Amz-Signature"],
        exclude_query="X-Amz-Signature",
    )
    return AuthResult(
        access_key=access_key,
        payload_hash=payload_hash,
        seed_signature=params["X-Amz-Signature"],
        signing_key=signing_key,
        scope=f"{date}/{region}/{service}/aws4_request",
        amz_date=amz_date,
        presigned=True,
        expires_at=moment + expires,
    )


def authenticate(
    req: SignedRequest,
    lookup_secret: Callable[[str], str | None],
    now: float,
    max_skew: float = 900.0,
) -> AuthResult:
    """Verify a SigV4 header-signed or presigned request; raise an ``S3Error`` otherwise.

    Region and service in the credential scope are deliberately not checked:
    s3orch answers for every region.  The caller deals with other schemes
    (``X-Proxy-Token``) before calling; anything unsigned here is AccessDenied.
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
        return _authenticate_header(req, auth_values[0], lookup_secret, now, max_skew)
    if has_query_auth:
        return _authenticate_query(req, lookup_secret, now, max_skew)
    raise AccessDenied()


# --------------------------------------------------------------------------
# Signing (backend requests, tests, benchmarks)
# --------------------------------------------------------------------------


def _signing_host(url: str) -> tuple[str, str, str]:
    """(host header value, path, raw query) of a URL, default ports dropped."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    if (
        parts.port is not None
        and _DEFAULT_PORTS.get(parts.scheme.lower()) == parts.port
    ):
        host = host[: host.rfind(":")]
    return host, parts.path or "/", parts.query


def sign_headers(
    method: str,
    url: str,
    headers: Mapping[str, str],
    payload_hash: str,
    access_key: str,
    secret_key: str,
    region: str,
    now: float,
    service: str = "s3",
) -> dict[str, str]:
    """Headers to add to a backend request: Authorization, x-amz-date, x-amz-content-sha256.

    The URL's path must already be URI-encoded; it is the canonical URI
    verbatim (S3 does not double-encode).  Every header passed in is signed,
    so pass only headers that will be sent unchanged.
    """
    host, path, raw_query = _signing_host(url)
    amz_date = format_amz_date(now)
    date = amz_date[:8]
    all_headers: dict[str, list[str]] = {}
    for name, value in headers.items():
        all_headers.setdefault(name.lower(), []).append(value)
    all_headers["host"] = [host]
    all_headers["x-amz-date"] = [amz_date]
    all_headers["x-amz-content-sha256"] = [payload_hash]
    signed = sorted(all_headers)
    creq = canonical_request(
        method.upper(),
        path,
        canonical_query(parse_query(raw_query.encode("utf-8"))),
        all_headers,
        signed,
        payload_hash,
    )
    scope = f"{date}/{region}/{service}/aws4_request"
    signature = hmac_hex(
        derive_signing_key(secret_key, date, region, service),
        string_to_sign(amz_date, scope, creq),
    )
    authorization = (
        f"{ALGORITHM} Credential={access_key}/{scope}, "
        f"SignedHeaders={';'.join(signed)}, Signature={signature}"
    )
    return {
        "Authorization": authorization,
        "x-amz-date": amz_date,
        "x-amz-content-sha256": payload_hash,
    }


def presign_url(
    method: str,
    url: str,
    access_key: str,
    secret_key: str,
    region: str,
    now: float,
    expires: int,
    service: str = "s3",
) -> str:
    """A presigned URL (only ``host`` signed, ``UNSIGNED-PAYLOAD``), like botocore's."""
    host, path, raw_query = _signing_host(url)
    amz_date = format_amz_date(now)
    date = amz_date[:8]
    scope = f"{date}/{region}/{service}/aws4_request"
    auth_params = [
        ("X-Amz-Algorithm", ALGORITHM),
        ("X-Amz-Credential", f"{access_key}/{scope}"),
        ("X-Amz-Date", amz_date),
        ("X-Amz-Expires", str(expires)),
        ("X-Amz-SignedHeaders", "host"),
    ]
    pairs = parse_query(raw_query.encode("utf-8")) + auth_params
    creq = canonical_request(
        method.upper(),
        path,
        canonical_query(pairs),
        {"host": [host]},
        ["host"],
        UNSIGNED_PAYLOAD,
    )
    signature = hmac_hex(
        derive_signing_key(secret_key, date, region, service),
        string_to_sign(amz_date, scope, creq),
    )
    added = "&".join(
        f"{uri_encode(name, encode_slash=True)}={uri_encode(value, encode_slash=True)}"
        for name, value in [*auth_params, ("X-Amz-Signature", signature)]
    )
    base = url.split("#", 1)[0]
    separator = "&" if raw_query else ("" if base.endswith("?") else "?")
    return f"{base}{separator}{added}"
