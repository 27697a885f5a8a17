"""Who may touch which virtual bucket: access keys and tokens -> bucket.

Built from ``buckets[]`` of the config and swapped whole on reload, so a
request always sees one consistent registry.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from typing import NamedTuple

from s3orch.config.model import BucketConfig


class Principal(NamedTuple):
    """The authenticated caller: one credential of one bucket (a NamedTuple: built per request)."""

    bucket: str
    access_key: str  # "token" for X-Proxy-Token callers (never the token itself)
    method: str  # "sigv4", "sigv4-presigned", "sigv2", "sigv2-presigned", "token"


class CredentialRegistry:
    """Access key -> (bucket, secret); token -> bucket."""

    def __init__(self, buckets: Iterable[BucketConfig]) -> None:
        self._keys: dict[str, tuple[str, str]] = {}
        self._tokens: list[tuple[bytes, str]] = []
        self.bucket_names: tuple[str, ...] = ()
        names = []
        for bucket in buckets:
            names.append(bucket.name)
            for cred in bucket.credentials:
                if cred.access_key_id:
                    self._keys[cred.access_key_id] = (bucket.name, cred.secret_access_key)
                if cred.token:
                    self._tokens.append((cred.token.encode("utf-8"), bucket.name))
        self.bucket_names = tuple(names)

    def secret_for(self, access_key: str) -> str | None:
        entry = self._keys.get(access_key)
        return entry[1] if entry else None

    def bucket_for(self, access_key: str) -> str | None:
        entry = self._keys.get(access_key)
        return entry[0] if entry else None

    def bucket_for_token(self, token: str) -> str | None:
        """Compare against every token in constant time (no early exit)."""
        given = token.encode("utf-8", "surrogateescape")  # wire bytes, whatever they are
        found: str | None = None
        for candidate, bucket in self._tokens:
            if hmac.compare_digest(candidate, given):
                found = bucket
        return found

    def has_bucket(self, name: str) -> bool:
        return name in self.bucket_names
