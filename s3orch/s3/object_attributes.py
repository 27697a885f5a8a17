"""GetObjectAttributes' request headers, parsed as AWS parses them.

``x-amz-object-attributes`` names what to answer (a comma-separated list, at
least one, only known names); ``x-amz-max-parts`` (at most 1000) and
``x-amz-part-number-marker`` page the ObjectParts of a multipart object.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from s3orch.s3 import errors
from s3orch.s3.listing import MAX_INT32, MAX_PAGE
from s3orch.s3.numbers import parse_decimal

#: The attributes a GetObjectAttributes may ask for.
OBJECT_ATTRIBUTES = frozenset({"ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize"})

Headers = Mapping[str, Sequence[str]]


def parse_object_attributes(headers: Headers) -> frozenset[str]:
    """The attribute names of ``x-amz-object-attributes`` (every value, comma-separated)."""
    wanted = frozenset(
        name.strip()
        for value in headers.get("x-amz-object-attributes", [])
        for name in value.split(",")
        if name.strip()
    )
    if not wanted:
        raise errors.InvalidArgument(
            "x-amz-object-attributes header specifying the attributes to be retrieved is "
            "either missing or empty"
        )
    if not wanted <= OBJECT_ATTRIBUTES:
        raise errors.InvalidArgument("Invalid attribute name specified.")
    return wanted


@dataclass(frozen=True)
class PartsPage:
    """Which ObjectParts to list: at most ``max_parts`` numbered above ``marker``."""

    max_parts: int
    marker: int


def _header_number(headers: Headers, header: str, name: str, default: int) -> int:
    values = headers.get(header)
    raw = values[0] if values else None
    if raw is None or not raw.strip():
        return default
    value = parse_decimal(raw.strip(), max_digits=10, maximum=MAX_INT32)
    if value is None:
        raise errors.InvalidArgument(
            f"Provided {name} not an integer or within integer range",
            ArgumentName=name,
            ArgumentValue=raw[:64],
        )
    return value


def parse_parts_page(headers: Headers) -> PartsPage:
    """``x-amz-max-parts`` (default and cap 1000) and ``x-amz-part-number-marker`` (default 0)."""
    return PartsPage(
        max_parts=min(_header_number(headers, "x-amz-max-parts", "max-parts", MAX_PAGE), MAX_PAGE),
        marker=_header_number(headers, "x-amz-part-number-marker", "part-number-marker", 0),
    )
