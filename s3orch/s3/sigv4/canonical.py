"""SigV4 canonicalisation: canonical request, string to sign, signing keys, dates.

Shared by verification (``verify``) and signing (``sign``), so the canonical form
we check clients against is exactly the one we produce for backends.  S3's path
is never normalised (``//``, ``.``, ``..`` and a trailing ``/`` are part of the
key) and never double-encoded.
"""

from __future__ import annotations

import calendar
import datetime
import hashlib
import hmac
import math
import re
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from email.utils import parsedate_tz
from functools import lru_cache
from urllib.parse import quote_from_bytes, unquote_to_bytes

try:  # OpenSSL's one-shot HMAC, without hmac.digest's Python frame (it calls this one)
    from _hashlib import hmac_digest as _hmac_digest
except ImportError:  # pragma: no cover - a Python built without OpenSSL
    _hmac_digest = hmac.digest  # type: ignore[assignment]  # same call, one frame more

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_PAYLOAD = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_PAYLOAD_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

_HEADER_WS = re.compile(r"[ \t\r\n]+")
# Explicit ASCII classes: ``\d`` would also match Unicode digits ("٢٠٢٤").
_AMZ_DATE = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})T([0-9]{2})([0-9]{2})([0-9]{2})Z")
#: A path of unreserved characters and slashes only (most keys): canonical as it stands.
_PLAIN_PATH = re.compile(rb"[A-Za-z0-9\-._~/]*")
#: Header-value whitespace the canonical form folds; a value without any needs only a strip.
_FOLDED = re.compile(r"[\t\r\n]|  ")
#: HTTP dates longer than this are not dates (bounded parsing work).
_MAX_HTTP_DATE = 64


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
    if _PLAIN_PATH.fullmatch(raw_path):  # nothing to decode or encode: the path is its own form
        return raw_path.decode("ascii")
    # Segment by segment, so an encoded slash (%2F) stays encoded as the
    # client signed it rather than turning into a separator.
    return "/".join(
        quote_from_bytes(unquote_to_bytes(segment), safe="")
        for segment in raw_path.split(b"/")
    )


def _decode_component(raw: bytes) -> str:
    if b"%" not in raw:  # nothing to unquote (``+`` stays a plus either way)
        return raw.decode("utf-8", "surrogateescape")
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
    if not pairs:
        return ""
    encoded = sorted(
        (uri_encode(name, encode_slash=True), uri_encode(value, encode_slash=True))
        for name, value in pairs
        if name != exclude
    )
    return "&".join(f"{name}={value}" for name, value in encoded)


def _canonical_value(value: str) -> str:
    if _FOLDED.search(value) is None:
        return value.strip()
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
        if len(values) == 1:  # the usual case: no generator, no join
            lines.append(f"{lname}:{_canonical_value(values[0])}\n")
        else:
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
    return _hmac_digest(key, message.encode("utf-8", "surrogateescape"), "sha256").hex()


def _hmac(key: bytes, message: str) -> bytes:
    return _hmac_digest(key, message.encode("utf-8", "surrogateescape"), "sha256")


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
    """Seconds since the epoch -> ``YYYYMMDDTHHMMSSZ`` (the last second's form is reused)."""
    global _last_amz_date
    second = math.floor(now)
    cached = _last_amz_date  # one read: a pair replaced whole, never torn
    if cached[0] == second:
        return cached[1]
    text = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second))
    _last_amz_date = (second, text)
    return text


#: (second, its ``YYYYMMDDTHHMMSSZ``): every request signed within one second shares it.
_last_amz_date: tuple[int | None, str] = (None, "")


def _epoch(year: int, month: int, day: int, hour: int, minute: int, second: int) -> float | None:
    """Seconds since the epoch of a UTC calendar time; None unless it is a real one (years 1..9999)."""
    try:
        datetime.datetime(year, month, day, hour, minute, min(second, 59))
    except (ValueError, OverflowError):
        return None
    return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))


def parse_amz_date(value: str) -> float | None:
    """``YYYYMMDDTHHMMSSZ`` (ASCII digits, a real UTC time) -> epoch seconds, else None.

    Cached: concurrent requests carry the same few seconds; only strings of the right
    length reach the (bounded) cache, so a client cannot park long headers in it.
    """
    return _parse_amz_date(value) if len(value) == 16 else None


@lru_cache(maxsize=256)
def _parse_amz_date(value: str) -> float | None:
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

