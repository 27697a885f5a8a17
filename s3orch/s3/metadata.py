"""Object metadata: what a PUT stores and what a GET/HEAD answers with.

AWS keeps Content-Type, five "system" headers and the ``x-amz-meta-*`` user
metadata with each object and returns them verbatim.  Values are stored exactly
as sent (non-ASCII arrives as RFC 2047 encoded-words, which we do not decode).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from s3orch.s3.errors import InvalidArgument, MetadataTooLarge

#: What AWS stores for an object PUT without Content-Type.
DEFAULT_CONTENT_TYPE = "binary/octet-stream"

#: AWS: the UTF-8 bytes of user-metadata names (without prefix) and values, summed.
MAX_USER_METADATA_BYTES = 2048

USER_PREFIX = "x-amz-meta-"

#: Stored system headers, lower-case name -> canonical response spelling.
SYSTEM_HEADERS: dict[str, str] = {
    "cache-control": "Cache-Control",
    "content-disposition": "Content-Disposition",
    "content-encoding": "Content-Encoding",
    "content-language": "Content-Language",
    "expires": "Expires",
}

#: GetObject query overrides, query key -> response header (AWS's six).
RESPONSE_OVERRIDES: dict[str, str] = {
    "response-content-type": "Content-Type",
    "response-content-language": "Content-Language",
    "response-expires": "Expires",
    "response-cache-control": "Cache-Control",
    "response-content-disposition": "Content-Disposition",
    "response-content-encoding": "Content-Encoding",
}


@dataclass(frozen=True)
class ObjectMetadata:
    """What a write stores: content type, system headers, user metadata (names lower-case)."""

    content_type: str = DEFAULT_CONTENT_TYPE
    system: dict[str, str] = field(default_factory=dict)
    user: dict[str, str] = field(default_factory=dict)


def _strip_aws_chunked(value: str) -> str | None:
    """Content-Encoding without the aws-chunked transfer token (a wire detail, not stored)."""
    tokens = [t.strip() for t in value.split(",")]
    kept = [t for t in tokens if t and t.lower() != "aws-chunked"]
    if len(kept) == len([t for t in tokens if t]):
        return value
    return ",".join(kept) or None


def extract_object_metadata(headers: Mapping[str, Sequence[str]]) -> ObjectMetadata:
    """Collect the metadata a PutObject/CreateMultipartUpload/CopyObject(REPLACE) stores.

    Repeated headers are joined with ``,`` (what AWS stores for a repeated
    x-amz-meta-* header).  Raises MetadataTooLarge over 2 KiB of user metadata.
    """
    content_type = ""
    system: dict[str, str] = {}
    user: dict[str, str] = {}
    for raw_name, values in headers.items():
        if not values:
            continue
        name = raw_name.lower()
        joined = ",".join(values)
        if name == "content-type":
            content_type = joined.strip()
        elif name in SYSTEM_HEADERS:
            if name == "content-encoding":
                stripped = _strip_aws_chunked(joined)
                if stripped is None:
                    continue
                joined = stripped
            system[name] = joined
        elif name.startswith(USER_PREFIX):
            meta_name = name[len(USER_PREFIX) :]
            if not meta_name:
                raise InvalidArgument(
                    "User metadata header name is empty.", ArgumentName=raw_name
                )
            user[meta_name] = (
                user[meta_name] + "," + joined if meta_name in user else joined
            )
    size = sum(len(k.encode("utf-8")) + len(v.encode("utf-8")) for k, v in user.items())
    if size > MAX_USER_METADATA_BYTES:
        raise MetadataTooLarge(
            Size=str(size), MaxSizeAllowed=str(MAX_USER_METADATA_BYTES)
        )
    return ObjectMetadata(content_type or DEFAULT_CONTENT_TYPE, system, user)


def object_response_headers(
    content_type: str, system: Mapping[str, str], user: Mapping[str, str]
) -> list[tuple[str, str]]:
    """The stored metadata as GET/HEAD response headers (user names lower-case)."""
    out = [("Content-Type", content_type or DEFAULT_CONTENT_TYPE)]
    for name, value in system.items():
        out.append((SYSTEM_HEADERS.get(name.lower(), name), value))
    for name, value in user.items():
        out.append((USER_PREFIX + name.lower(), value))
    return out


def response_header_overrides(
    query: Sequence[tuple[str, str]],
) -> list[tuple[str, str]]:
    """GetObject ``response-*`` query overrides as headers (the last value of a key wins)."""
    chosen: dict[str, str] = {}
    for key, value in query:
        if key in RESPONSE_OVERRIDES:
            chosen[key] = value
    return [
        (RESPONSE_OVERRIDES[key], chosen[key])
        for key in RESPONSE_OVERRIDES
        if key in chosen
    ]
