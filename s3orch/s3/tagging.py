"""Object tags: the ``x-amz-tagging`` header, the stored form, the tag count header.

Tags live in the metadata store only, never on a backend (BEHAVIOURS §1.22): one tag set
per key, kept with the key's current version among its stored headers under
:data:`TAGS_FIELD`, in a canonical query-string form.  Keeping them in the object row
means every way a version becomes current (PUT, Copy, Complete, the pending reaper's
promotion) writes the version's tags in the same transaction as the rest of it, an
overwrite replaces the set (an untagged one clears it), a delete clears it, and moving or
replicating copies never touches it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from urllib.parse import parse_qsl, quote

from s3orch.s3.errors import BadRequest, InvalidTag

__all__ = [
    "MAX_OBJECT_TAGS",
    "TAGS_FIELD",
    "decode_tags",
    "encode_tags",
    "parse_tagging_header",
    "stored_tags",
    "validate_tags",
    "without_tags",
]

#: Where a version's tag set is kept among its stored headers (never sent as a header).
TAGS_FIELD = "x-amz-tagging"

#: AWS: 10 tags per object, keys of 1-128 and values of 0-256 UTF-16 code units.
MAX_OBJECT_TAGS = 10
MAX_TAG_KEY_UNITS = 128
MAX_TAG_VALUE_UNITS = 256

#: A header longer than this cannot hold 10 valid tags, however it is percent-encoded.
_MAX_HEADER_CHARS = MAX_OBJECT_TAGS * (MAX_TAG_KEY_UNITS + MAX_TAG_VALUE_UNITS) * 2 * 9 + 64


_HEADER_MESSAGE = (
    "The header 'x-amz-tagging' shall be encoded as UTF-8 then URLEncoded URL query parameters"
    " without tag name duplicates."
)


def _utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def validate_tags(tags: Sequence[tuple[str, str]], max_tags: int = MAX_OBJECT_TAGS) -> None:
    """AWS's rules for one tag set: a count over ``max_tags`` is 400 BadRequest, an empty,
    too long or repeated key and a too long value are 400 InvalidTag."""
    if len(tags) > max_tags:
        raise BadRequest(f"Object tags cannot be greater than {max_tags}")
    seen: set[str] = set()
    for key, value in tags:
        if not key or _utf16_units(key) > MAX_TAG_KEY_UNITS:
            raise InvalidTag("The TagKey you have provided is invalid", TagKey=key)
        if _utf16_units(value) > MAX_TAG_VALUE_UNITS:
            raise InvalidTag("The TagValue you have provided is invalid", TagKey=key)
        if key in seen:
            raise InvalidTag("Cannot provide multiple Tags with the same key", TagKey=key)
        seen.add(key)


def parse_tagging_header(value: str) -> tuple[tuple[str, str], ...]:
    """The tag set of an ``x-amz-tagging`` header (``k1=v1&k2=v2``, URL-encoded), validated.

    Checked at header time, before any byte of the body is read.  A header that is not a
    valid encoding (a bare ``%``, bytes that are not UTF-8) is 400 InvalidTag.
    """
    if len(value) > _MAX_HEADER_CHARS:
        raise BadRequest(f"Object tags cannot be greater than {MAX_OBJECT_TAGS}")
    if not value.strip():
        return ()
    pairs: list[tuple[str, str]] = []
    for item in value.split("&"):
        if not item:
            raise InvalidTag(_HEADER_MESSAGE)
        name, _, tag_value = item.partition("=")
        try:
            decoded = parse_qsl(
                f"{name}={tag_value}", keep_blank_values=True, strict_parsing=True,
                encoding="utf-8", errors="strict",
            )
        except (ValueError, UnicodeDecodeError):
            raise InvalidTag(_HEADER_MESSAGE) from None
        if _bad_percent(name) or _bad_percent(tag_value) or len(decoded) != 1:
            raise InvalidTag(_HEADER_MESSAGE)
        pairs.append(decoded[0])
    validate_tags(pairs)
    return tuple(pairs)


def _bad_percent(text: str) -> bool:
    """A ``%`` not followed by two hex digits (``parse_qsl`` keeps it literally)."""
    index = text.find("%")
    while index != -1:
        digits = text[index + 1 : index + 3]
        if len(digits) != 2 or any(c not in "0123456789abcdefABCDEF" for c in digits):
            return True
        index = text.find("%", index + 1)
    return False


def encode_tags(tags: Sequence[tuple[str, str]]) -> str:
    """The stored form of a tag set: sorted by key, each part percent-encoded (``""`` = none)."""
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in sorted(tags))


def decode_tags(stored: str) -> tuple[tuple[str, str], ...]:
    """A stored tag set back as pairs, sorted by key (what GetObjectTagging answers)."""
    if not stored:
        return ()
    return tuple(sorted(parse_qsl(stored, keep_blank_values=True)))


def stored_tags(headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The tag set kept among a version's stored headers."""
    return decode_tags(headers.get(TAGS_FIELD, ""))


def without_tags(headers: Mapping[str, str]) -> dict[str, str]:
    """Stored headers minus the tag set (what is sent back as response headers)."""
    return {name: value for name, value in headers.items() if name != TAGS_FIELD}
