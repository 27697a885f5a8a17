"""Numbers in headers and query strings, parsed the way a hostile client cannot abuse.

Python's ``int()`` and ``str.isdigit()`` accept far more than HTTP does: Unicode
digits (``"²"``, ``"٣"``), surrounding whitespace, underscores, signs, and
thousands of digits (``int()`` of a 4,300-digit string is refused with a
ValueError and costs quadratic time below that).  Every number a client sends
goes through here instead: ASCII digits only, with a length cap, so the only
outcomes are a bounded integer or ``None`` (the caller answers its own S3 error).
"""

from __future__ import annotations

#: 2**63 - 1 has 19 digits: the default cap keeps every value inside a signed 64-bit range.
MAX_DIGITS = 19
_ASCII_DIGITS = frozenset("0123456789")


def parse_decimal(text: str | None, *, max_digits: int = MAX_DIGITS, maximum: int | None = None) -> int | None:
    """A non-negative decimal integer written with 1..``max_digits`` ASCII digits, else None.

    No sign, no whitespace, no underscores.  ``maximum`` (inclusive) bounds the value.
    """
    if not text or len(text) > max_digits or not _ASCII_DIGITS.issuperset(text):
        return None
    value = int(text)
    if maximum is not None and value > maximum:
        return None
    return value


def parse_signed_decimal(
    text: str | None, *, max_digits: int = MAX_DIGITS
) -> int | None:
    """Like :func:`parse_decimal` but allows one leading ``-`` (for values a client may send negative)."""
    if text and text[0] == "-":
        value = parse_decimal(text[1:], max_digits=max_digits)
        return None if value is None else -value
    return parse_decimal(text, max_digits=max_digits)
