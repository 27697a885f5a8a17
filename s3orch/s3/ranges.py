"""Range header semantics for GetObject/HeadObject, as AWS S3 applies them.

* A syntactically invalid Range is ignored (RFC 9110 section 14.2): full 200.
* Several ranges are ignored too: AWS serves one range per request and we never
  emit ``multipart/byteranges``.
* A valid but unsatisfiable range is 416 InvalidRange.  On an empty object AWS
  answers 416 to ``bytes=0-`` (and any first-byte range) but 200 with an empty
  body to a suffix range ``bytes=-N`` (N > 0); ``bytes=-0`` is always 416.
"""

from __future__ import annotations

import re

from s3orch.s3.errors import InvalidRange

_SPEC = re.compile(r"([0-9]*)-([0-9]*)", re.ASCII)
_CONTENT_RANGE = re.compile(
    r"bytes\s+([0-9]+)-([0-9]+)/([0-9]+)", re.ASCII | re.IGNORECASE
)

#: More digits than any object size can need; longer numbers are just "huge".
_MAX_DIGITS = 20
_HUGE = 10**_MAX_DIGITS


def _number(digits: str) -> int:
    """Parse an ASCII digit run without int()'s cost or 4300-digit limit on junk."""
    digits = digits.lstrip("0") or "0"
    return _HUGE if len(digits) > _MAX_DIGITS else int(digits)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """Inclusive (start, end) to serve, None to serve the whole object, or InvalidRange."""
    if not header:
        return None
    unit, sep, spec_set = header.strip().partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    specs = [s.strip() for s in spec_set.split(",") if s.strip()]
    if len(specs) != 1:
        return None
    match = _SPEC.fullmatch(specs[0])
    if match is None:
        return None
    first, last = match.groups()
    if first:
        start = _number(first)
        end = _number(last) if last else None
        if end is not None and end < start:
            return None
        if start >= size:
            raise InvalidRange(
                "The requested range is not satisfiable",
                RangeRequested=header.strip(),
                ActualObjectSize=str(size),
            )
        return start, size - 1 if end is None else min(end, size - 1)
    if not last:
        return None
    suffix = _number(last)
    if suffix == 0:
        raise InvalidRange(
            "The requested range is not satisfiable",
            RangeRequested=header.strip(),
            ActualObjectSize=str(size),
        )
    if size == 0:
        return None
    return max(0, size - suffix), size - 1


def content_range(start: int, end: int, size: int) -> str:
    """The Content-Range value of a 206 response."""
    return f"bytes {start}-{end}/{size}"


def unsatisfied_content_range(size: int) -> str:
    """The Content-Range value RFC 9110 recommends on a 416 response."""
    return f"bytes */{size}"


def parse_content_range(value: str | None) -> tuple[int, int, int] | None:
    """(start, end, size) from a backend's 206 Content-Range; None if absent or odd."""
    if not value:
        return None
    match = _CONTENT_RANGE.fullmatch(value.strip())
    if match is None:
        return None
    first, last, total = (_number(g) for g in match.groups())
    if first > last or last >= total or total >= _HUGE:
        return None
    return first, last, total
