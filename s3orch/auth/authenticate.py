"""Authenticate an S3 request and bind it to its bucket.

The schemes are tried in s3-orchestrator's order (the Go product s3orch
re-creates): SigV4 ``Authorization`` header, SigV4 presigned query, SigV2
``Authorization: AWS`` header, SigV2 presigned query, legacy ``X-Proxy-Token``;
anything else is refused.  A failed authentication happens
before any backend call or metadata change: a refused request costs no backend
call and changes no metadata or quota.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from s3orch.auth import sigv2
from s3orch.auth.registry import CredentialRegistry, Principal
from s3orch.s3 import errors, sigv4


class AuthOutcome(NamedTuple):
    principal: Principal
    #: SigV4 details (signing key, seed signature, payload hash claim); None for SigV2 and tokens.
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
    *,
    allow_sigv2: bool = True,
    bucket_from_host: str | None = None,
    regions: Sequence[str] = (),
) -> AuthOutcome:
    """Return who is calling, or raise the S3 error AWS would answer.

    ``bucket_from_host`` is the bucket named by a virtual-hosted-style Host
    header (None for path-style): SigV2 signs it as part of the resource.
    ``regions`` (``server.regions``) limits the region a SigV4 credential scope
    may name; empty accepts any.  SigV2 has no scope to check.
    """
    authorization = _first(headers, "authorization")
    v4_query = v2_query = False
    if query:  # most requests carry none: no scan
        v4_query = any(name == "X-Amz-Algorithm" for name, _ in query)
        v2_query = sigv2.is_v2_presigned(query)
    if (authorization is not None) + v4_query + v2_query > 1:
        raise errors.InvalidArgument(
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, "
            "Signature query string parameter or the Authorization header should be specified",
            ArgumentName="Authorization",
        )
    if authorization is not None and authorization.startswith("AWS4-HMAC-SHA256"):
        presigned = False
    elif authorization is None and v4_query:
        presigned = True
    elif (authorization is not None and sigv2.is_v2_authorization(authorization)) or (
        authorization is None and v2_query
    ):
        if not allow_sigv2:
            raise errors.AccessDenied("Signature Version 2 is disabled")
        v2 = sigv2.authenticate(
            method, raw_path, query, headers, registry.secret_for, now,
            bucket_from_host=bucket_from_host,
        )
        v2_bucket = registry.bucket_for(v2.access_key)
        if v2_bucket is None:  # the key vanished between lookups (reload): refuse
            raise errors.InvalidAccessKeyId()
        return AuthOutcome(
            Principal(v2_bucket, v2.access_key, "sigv2-presigned" if v2.presigned else "sigv2"),
            None,
        )
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
    result = sigv4.authenticate(request, registry.secret_for, now, regions=regions)
    bucket = registry.bucket_for(result.access_key)
    if bucket is None:  # the key vanished between lookups (reload): refuse
        raise errors.InvalidAccessKeyId()
    return AuthOutcome(
        Principal(bucket, result.access_key, "sigv4-presigned" if presigned else "sigv4"),
        result,
    )
