"""Object metadata: what a PUT stores and what a GET/HEAD answers with.

AWS keeps Content-Type, five "system" headers and the ``x-amz-meta-*`` user
metadata with each object and returns them.  ASCII values (RFC 2047 encoded
words included: what botocore sends, since it refuses non-ASCII metadata) are
stored and returned exactly as sent.  A user-metadata value sent as raw UTF-8 is
stored as text and returned as one RFC 2047 encoded word (``=?UTF-8?B?...?=``),
as AWS returns non-ASCII metadata, so a client that reads headers as Latin-1 does
not see mojibake.  Values that are not valid UTF-8 or hold control characters
are refused on PUT; whatever is stored, GET/HEAD encode it so it can always be
sent (an object never becomes unreadable because of its metadata).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from s3orch.s3.errors import InvalidArgument, MetadataTooLarge
from s3orch.s3.tagging import TAGS_FIELD, encode_tags, parse_tagging_header, stored_tags

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


#: Control characters a header value may not carry (tab is allowed).
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f]")
_CONTROL_BYTES = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")
#: A user-metadata value that goes out unencoded: printable ASCII and tab.
_PLAIN_ASCII = re.compile("[\t\x20-\x7e]*")


def _check_value(header: str, value: str) -> None:
    """A value to store must be valid UTF-8 without control characters (400 otherwise)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(
            "Header value is not valid UTF-8.", ArgumentName=header
        ) from None
    if _CONTROL.search(value):
        raise InvalidArgument(
            "Header value contains control characters.", ArgumentName=header
        )


def wire_bytes(value: str) -> bytes:
    """A stored header value as bytes for the wire, never raising.

    Text goes out as UTF-8; bytes kept by ``surrogateescape`` go out as they came;
    control characters (which would break the header block) become spaces.
    """
    try:
        raw = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = value.encode("utf-8", "replace")
    return _CONTROL_BYTES.sub(b" ", raw)


def user_value_bytes(value: str) -> bytes:
    """A user-metadata value for the wire: ASCII as stored, anything else one RFC 2047 word."""
    if _PLAIN_ASCII.fullmatch(value):
        return value.encode("ascii")
    try:
        raw = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = value.encode("utf-8", "replace")
    return b"=?UTF-8?B?" + base64.b64encode(raw) + b"?="


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

    The ``x-amz-tagging`` header's tag set is kept among the system headers under
    :data:`~s3orch.s3.tagging.TAGS_FIELD` (validated here, at header time).

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
            _check_value(raw_name, joined)
            content_type = joined.strip()
        elif name in SYSTEM_HEADERS:
            _check_value(raw_name, joined)
            if name == "content-encoding":
                stripped = _strip_aws_chunked(joined)
                if stripped is None:
                    continue
                joined = stripped
            system[name] = joined
        elif name == TAGS_FIELD:
            tags = parse_tagging_header(joined)
            if tags:
                system[TAGS_FIELD] = encode_tags(tags)
        elif name.startswith(USER_PREFIX):
            meta_name = name[len(USER_PREFIX) :]
            if not meta_name:
                raise InvalidArgument(
                    "User metadata header name is empty.", ArgumentName=raw_name
                )
            _check_value(raw_name, joined)
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
) -> list[tuple[str, bytes]]:
    """The stored metadata as GET/HEAD response headers (user names lower-case), with
    ``x-amz-tagging-count`` when the version has tags (AWS sends it only then).

    Values are the bytes to send (see :func:`wire_bytes`, :func:`user_value_bytes`).
    """
    out = [("Content-Type", wire_bytes(content_type or DEFAULT_CONTENT_TYPE))]
    for name, value in system.items():
        if name == TAGS_FIELD:
            continue  # the tag set itself is only answered by GetObjectTagging
        out.append((SYSTEM_HEADERS.get(name.lower(), name), wire_bytes(value)))
    tags = stored_tags(system)
    if tags:
        out.append(("x-amz-tagging-count", str(len(tags)).encode("ascii")))
    for name, value in user.items():
        out.append((USER_PREFIX + name.lower(), user_value_bytes(value)))
    return out


def response_header_overrides(
    query: Sequence[tuple[str, str]],
) -> list[tuple[str, bytes]]:
    """GetObject ``response-*`` query overrides as headers (the last value of a key wins).

    A value that cannot be sent as an ISO-8859-1 header (undecodable bytes,
    characters above U+00FF, control characters) is 400 InvalidArgument, as AWS
    answers it, before anything is read.
    """
    chosen: dict[str, str] = {}
    for key, value in query:
        if key in RESPONSE_OVERRIDES:
            chosen[key] = value
    out: list[tuple[str, bytes]] = []
    for key in RESPONSE_OVERRIDES:
        if key not in chosen:
            continue
        value = chosen[key]
        try:
            raw = value.encode("latin-1")
        except UnicodeEncodeError:
            raw = b""
            bad = True
        else:
            bad = bool(_CONTROL.search(value))
        if bad:
            raise InvalidArgument(
                "Header value cannot be represented using ISO-8859-1.",
                ArgumentName=key,
                ArgumentValue=value[:256],
            )
        out.append((RESPONSE_OVERRIDES[key], raw))
    return out
