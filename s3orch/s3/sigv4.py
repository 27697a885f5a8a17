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
from email.utils import parsedate_tz
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
from s3orch.s3.numbers import parse_decimal

__all__ = [
    "ALGORITHM",
    "ECHO_LIMIT",
    "EMPTY_SHA256",
    "MAX_CANONICAL_REQUEST",
    "MAX_SIGNED_HEADERS",
    "MAX_SIGNED_HEADERS_LENGTH",
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
    "echo",
    "format_amz_date",
    "hmac_hex",
    "parse_amz_date",
    "parse_authorization_header",
    "parse_http_date",
    "parse_query",
    "presign_url",
    "sign_headers",
    "signed_headers_in_order",
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
# Explicit ASCII classes: ``\d`` would also match Unicode digits ("٢٠٢٤").
_AMZ_DATE = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})T([0-9]{2})([0-9]{2})([0-9]{2})Z")
_SCOPE_DATE = re.compile(r"[0-9]{8}")
#: Region and service names in a credential scope: visible ASCII, no "/", bounded.
_SCOPE_NAME = re.compile(r"[!-.0-~]{1,64}")
_HEADER_WS = re.compile(r"[ \t\r\n]+")
_MAX_EXPIRES = 604800  # seven days, the AWS ceiling for presigned URLs
_DEFAULT_PORTS = {"http": 80, "https": 443}
#: HTTP dates longer than this are not dates (bounded parsing work).
_MAX_HTTP_DATE = 64

#: Most names one SignedHeaders list may carry.  botocore signs every header it
#: sends; even a PUT with a hundred metadata headers stays well below this.
MAX_SIGNED_HEADERS = 256
#: Longest SignedHeaders value accepted (characters).
MAX_SIGNED_HEADERS_LENGTH = 8192
#: Largest canonical request built for one request.  With unique signed names it
#: is bounded by the request line and header caps anyway; this is the backstop.
MAX_CANONICAL_REQUEST = 64 * 1024
#: Error bodies echo a string to sign or canonical request only up to this size.
ECHO_LIMIT = 4096

#: ``x-amz-*`` headers AWS accepts without their being signed.  The payload hash
#: is covered by the canonical request's last line whatever SignedHeaders says
#: (header auth), and a presigned URL signs ``UNSIGNED-PAYLOAD`` unless the
#: client signed the header.
UNSIGNED_AMZ_HEADERS = frozenset({"x-amz-content-sha256"})

#: Secret used to compute a full signature for unknown access keys, so that the
#: work done (and thus the response time) does not reveal whether a key exists.
#: The derived key is never cached: unknown keys cannot fill the cache.
_DUMMY_SECRET = "s3orch-dummy-secret-for-unknown-access-keys-0000"

_MALFORMED_CREDENTIAL = 'the Credential is mal-formed; expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".'
_HEADER_PREFIX = "The authorization header is malformed; "
_QUERY_PREFIX = "Error parsing the X-Amz-Credential parameter; "
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def echo(value: str, limit: int = ECHO_LIMIT) -> str:
    """Client input made safe to echo in an error body: valid UTF-8, no control characters, bounded.

    Values decoded with ``surrogateescape`` (invalid UTF-8 from the wire) get
    U+FFFD; anything over ``limit`` characters is cut.
    """
    text = value[:limit].encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return _CONTROL.sub("\ufffd", text)


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
    the cache does not hand out credentials.  Only known secrets reach it (the
    verifier derives unknown keys' dummy signatures uncached), and each secret
    holds at most ``per_secret`` (date, region, service) scopes: a tenant who
    signs with random regions or old presigned dates recycles its own entries
    and cannot push the other tenants' keys out.  ``maxsize`` bounds the total.
    """

    def __init__(self, maxsize: int, per_secret: int = 8) -> None:
        self.maxsize = maxsize
        self.per_secret = per_secret
        self._secrets: OrderedDict[bytes, OrderedDict[tuple[str, str, str], bytes]] = OrderedDict()
        self._size = 0

    def get(self, secret: str, date: str, region: str, service: str) -> bytes:
        digest = hashlib.sha256(secret.encode("utf-8")).digest()
        scope = (date, region, service)
        scopes = self._secrets.get(digest)
        if scopes is not None:
            self._secrets.move_to_end(digest)
            found = scopes.get(scope)
            if found is not None:
                scopes.move_to_end(scope)
                return found
        else:
            scopes = self._secrets[digest] = OrderedDict()
        derived = _derive_uncached(secret, date, region, service)
        scopes[scope] = derived
        self._size += 1
        if len(scopes) > self.per_secret:
            scopes.popitem(last=False)
            self._size -= 1
        while self._size > self.maxsize:
            oldest_digest, oldest = next(iter(self._secrets.items()))
            oldest.popitem(last=False)
            self._size -= 1
            if not oldest:
                del self._secrets[oldest_digest]
        return derived

    def __len__(self) -> int:
        return self._size

    def clear(self) -> None:
        self._secrets.clear()
        self._size = 0


_KEY_CACHE = _SigningKeyCache(maxsize=1024)


def derive_signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """kSigning = HMAC chain over date, region, service, "aws4_request" (LRU-cached)."""
    return _KEY_CACHE.get(secret, date, region, service)


def format_amz_date(now: float) -> str:
    """Seconds since the epoch -> ``YYYYMMDDTHHMMSSZ``."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))


def _epoch(year: int, month: int, day: int, hour: int, minute: int, second: int) -> float | None:
    """Seconds since the epoch of a UTC calendar time; None unless it is a real one (years 1..9999)."""
    try:
        datetime.datetime(year, month, day, hour, minute, min(second, 59))
    except (ValueError, OverflowError):
        return None
    return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))


def parse_amz_date(value: str) -> float | None:
    """``YYYYMMDDTHHMMSSZ`` (ASCII digits, a real UTC time) -> epoch seconds, else None."""
    match = _AMZ_DATE.fullmatch(value)
    if match is None:
        return None
    return _epoch(*(int(group) for group in match.groups()))


def parse_http_date(value: str) -> float | None:
    """An HTTP ``Date`` (RFC 1123/850, asctime, numeric offsets) -> epoch seconds, else None.

    Only ASCII and at most 64 characters are looked at: ``email.utils`` would
    take Unicode digits, and absurd years or offsets overflow ``datetime``.
    The offset must be less than a day, the year 1..9999.
    """
    if not value or len(value) > _MAX_HTTP_DATE or not value.isascii():
        return None
    try:
        parsed = parsedate_tz(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed is None:
        return None
    year, month, day, hour, minute, second = parsed[:6]
    offset = parsed[9] or 0  # None ("-0000", no zone) means UTC
    if abs(offset) >= 86400:
        return None
    moment = _epoch(year, month, day, hour, minute, second)
    return None if moment is None else moment - offset


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


def _parse_credential(
    value: str, error: type[S3Error], prefix: str
) -> tuple[str, str, str, str]:
    """``AKID/YYYYMMDD/REGION/SERVICE/aws4_request``, each part checked before anything is derived."""
    parts = value.split("/")
    if (
        len(parts) != 5
        or parts[4] != "aws4_request"
        or not parts[0]
        or not _SCOPE_DATE.fullmatch(parts[1])
        or not _SCOPE_NAME.fullmatch(parts[2])
        or not _SCOPE_NAME.fullmatch(parts[3])
    ):
        raise error(prefix + _MALFORMED_CREDENTIAL)
    return parts[0], parts[1], parts[2], parts[3]


def _parse_signed_headers(value: str, error: type[S3Error]) -> tuple[str, ...]:
    """SignedHeaders as sent (lower-cased), bounded in count and length.

    The order is not checked here: an unsorted or repeated list is AWS's
    SignatureDoesNotMatch, which the verifier answers without building
    anything (see ``signed_headers_in_order``).
    """
    if len(value) > MAX_SIGNED_HEADERS_LENGTH or value.count(";") >= MAX_SIGNED_HEADERS:
        raise error(
            f"SignedHeaders may name at most {MAX_SIGNED_HEADERS} headers "
            f"in at most {MAX_SIGNED_HEADERS_LENGTH} characters."
        )
    names = tuple(name.strip().lower() for name in value.split(";"))
    if not all(names):
        raise error("SignedHeaders is malformed.")
    return names


def signed_headers_in_order(names: Sequence[str]) -> bool:
    """True when the names are strictly ascending: sorted, each once (what SigV4 signs)."""
    return all(a < b for a, b in zip(names, names[1:], strict=False))


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
        fields["Credential"], AuthorizationHeaderMalformed, _HEADER_PREFIX
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
    bad = AccessDenied("AWS authentication requires a valid Date or x-amz-date header")
    amz = _first(headers, "x-amz-date")
    if amz is not None:
        parsed = parse_amz_date(amz)
        if parsed is None:
            raise bad
        return amz, parsed, True
    date = _first(headers, "date")
    moment = parse_http_date(date) if date is not None else None
    if date is None or moment is None:
        raise bad
    return date, moment, False


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
    signed = set(signed_headers)
    unsigned = sorted(
        name
        for name in headers
        if name.startswith("x-amz-") and name not in signed and name not in UNSIGNED_AMZ_HEADERS
    )
    if unsigned:
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
