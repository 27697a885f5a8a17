"""AWS Signature Version 4, as S3 speaks it: verify clients, sign backend requests.

One canonicalisation (``canonical``) serves both directions, so the form we
check clients against (``verify``, with the claims parsed in ``claims``) is
exactly the one we produce for backends (``sign``).  S3's dialect differs from
generic SigV4 in two ways that matter here: the path is never normalised
(``//``, ``.``, ``..`` and a trailing ``/`` are part of the key) and never
double-encoded.  Everything here is pure: the caller supplies the clock (``now``,
seconds since the epoch) and the credential lookup.

This package only re-exports; import from ``s3orch.s3.sigv4``.
"""

from __future__ import annotations

from s3orch.s3.sigv4.canonical import (
    ALGORITHM,
    EMPTY_SHA256,
    STREAMING_PAYLOAD,
    STREAMING_PAYLOAD_TRAILER,
    STREAMING_UNSIGNED_TRAILER,
    UNSIGNED_PAYLOAD,
    _derive_uncached,
    _SigningKeyCache,
    canonical_headers,
    canonical_query,
    canonical_request,
    canonical_uri_from_raw_path,
    derive_signing_key,
    format_amz_date,
    hmac_hex,
    parse_amz_date,
    parse_http_date,
    parse_query,
    string_to_sign,
    uri_encode,
)
from s3orch.s3.sigv4.claims import (
    ECHO_LIMIT,
    MAX_SIGNED_HEADERS,
    MAX_SIGNED_HEADERS_LENGTH,
    ParsedAuth,
    echo,
    parse_authorization_header,
    signed_headers_in_order,
)
from s3orch.s3.sigv4.sign import presign_url, sign_headers
from s3orch.s3.sigv4.verify import (
    MAX_CANONICAL_REQUEST,
    UNSIGNED_AMZ_HEADERS,
    AuthResult,
    SignedRequest,
    authenticate,
)

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
    "UNSIGNED_AMZ_HEADERS",
    "UNSIGNED_PAYLOAD",
    "AuthResult",
    "ParsedAuth",
    "SignedRequest",
    "_SigningKeyCache",
    "_derive_uncached",
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
