"""Authenticate an S3 request and bind it to its bucket.

Order (as the original): SigV4 ``Authorization`` header, SigV4 presigned
query, legacy ``X-Proxy-Token``; anything else is refused.  A failed
authentication happens before any backend call or metadata change (I7).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from s3orch.auth.registry import CredentialRegistry, Principal
from s3orch.s3 import errors, sigv4


@dataclass(frozen=True)
class AuthOutcome:
    principal: Principal
    #: SigV4 details (signing key, seed signature, payload hash claim); None for tokens.
    sigv4: sigv4.AuthResult | None


def _first(headers: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = headers.get(name)
    return values[0] if values else None


def authenticate(
    registry: CredentialRegistry,
    method: str,
    raw_path: bytes,
    query: Sequence[tuple[str, str]],
    headers: Mapping[str, Sequence[str]],
    now: float,
) -> AuthOutcome:
    """Return who is calling, or raise the S3 error AWS would answer."""
    authorization = _first(headers, "authorization")
    query_names = {name for name, _ in query}
    if authorization is not None and authorization.startswith("AWS4-HMAC-SHA256"):
        presigned = False
    elif authorization is None and "X-Amz-Algorithm" in query_names:
        presigned = True
    elif authorization is not None and authorization.startswith("AWS "):
        raise errors.AccessDenied("Signature Version 2 is not supported by this gateway.")
    elif authorization is not None:
        raise errors.AuthorizationHeaderMalformed("Unsupported authorization type.")
    else:
        token = _first(headers, "x-proxy-token")
        if token:
            bucket = registry.bucket_for_token(token)
            if bucket is None:
                raise errors.AccessDenied()
            return AuthOutcome(Principal(bucket, "token", "token"), None)
        raise errors.AccessDenied()

    request = sigv4.SignedRequest(method=method, raw_path=raw_path, query=query, headers=headers)
    result = sigv4.authenticate(request, registry.secret_for, now)
    bucket = registry.bucket_for(result.access_key)
    if bucket is None:  # the key vanished between lookups (reload): refuse
        raise errors.InvalidAccessKeyId()
    return AuthOutcome(
        Principal(bucket, result.access_key, "sigv4-presigned" if presigned else "sigv4"),
        result,
    )
