"""SigV4 signing of outgoing requests (backends, tests, benchmarks): headers or a presigned URL."""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from s3orch.s3.sigv4.canonical import (
    ALGORITHM,
    UNSIGNED_PAYLOAD,
    canonical_query,
    canonical_request,
    derive_signing_key,
    format_amz_date,
    hmac_hex,
    parse_query,
    string_to_sign,
    uri_encode,
)

_DEFAULT_PORTS = {"http": 80, "https": 443}
#: The URLs a backend client builds: lower-case scheme, a plain host name or IPv4 address with
#: an optional port, an encoded path, perhaps a query, no userinfo or fragment.  One match
#: splits them exactly as ``urlsplit`` would, without its per-call Python work.
_PLAIN_URL = re.compile(r"(https?)://([A-Za-z0-9.\-]+)(?::([0-9]{1,5}))?(/[!-\"$->@-~]*)?(?:\?([!-\"$-~]*))?")


def _signing_host(url: str) -> tuple[str, str, str]:
    """(host header value, path, raw query) of a URL, default ports dropped."""
    plain = _PLAIN_URL.fullmatch(url)
    if plain is not None:
        scheme, host, port, path, query = plain.groups()
        number = int(port) if port is not None else None
        if number is None or number <= 65535:  # else urlsplit's error below
            if number is not None and number != _DEFAULT_PORTS[scheme]:
                host = f"{host}:{port}"
            return host, path or "/", query or ""
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
