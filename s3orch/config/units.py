"""Byte sizes and Go-style durations as written in config files.

Sizes: s3-orchestrator (the Go product whose config files s3orch loads unchanged) reads
``KB``/``MB``/``GB`` as *binary* units (1 MB = 1048576 bytes), so configs written for it keep their
meaning here. ``KiB``/``MiB``/``GiB`` are accepted too and mean
the same thing; there are no decimal (1000-based) units.

Durations: the syntax of Go's ``time.ParseDuration`` ("30s", "1h30m", "500ms", "0"), because that is
what s3-orchestrator's config files contain. A bare number other than 0 is refused ("missing
unit"): Go would read ``timeout: 5`` as five nanoseconds, which nobody means.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

__all__ = [
    "GiB",
    "KiB",
    "MiB",
    "TiB",
    "format_duration",
    "format_size",
    "parse_duration",
    "parse_size",
]

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB

_SIZE_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "k": KiB,
    "kb": KiB,
    "kib": KiB,
    "m": MiB,
    "mb": MiB,
    "mib": MiB,
    "g": GiB,
    "gb": GiB,
    "gib": GiB,
    "t": TiB,
    "tb": TiB,
    "tib": TiB,
    "p": 1024 * TiB,
    "pb": 1024 * TiB,
    "pib": 1024 * TiB,
}

_SIZE_RE = re.compile(r"([+-]?)(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)")

_SIZE_HINT = 'expected a byte count such as 4096, "10MB" or "1.5GiB" (KB, MB, GB are binary: 1 MB = 1048576 bytes)'


def parse_size(value: float | str) -> int:
    """Return the number of bytes ``value`` denotes; ValueError names the bad input.

    Negative values are returned as such so that the caller can report "must be >= 0" against the key.
    """
    if isinstance(value, bool):
        raise TypeError(f"invalid size {value!r}: {_SIZE_HINT}")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise ValueError(f"invalid size {value!r}: not a whole number of bytes")
        return int(value)
    text = value.strip()
    match = _SIZE_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"invalid size {value!r}: {_SIZE_HINT}")
    sign, number, unit = match.groups()
    multiplier = _SIZE_UNITS.get(unit.lower())
    if multiplier is None:
        raise ValueError(f"invalid size {value!r}: unknown unit {unit!r}; {_SIZE_HINT}")
    amount = Fraction(number) * multiplier
    if amount.denominator != 1:
        raise ValueError(f"invalid size {value!r}: not a whole number of bytes")
    result = int(amount)
    return -result if sign == "-" else result


def format_size(size: int) -> str:
    """Render ``size`` with the largest binary unit that divides it exactly ("256MiB", "4097")."""
    for suffix, unit in (("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if size != 0 and size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size)


_NS = 1
_US = 1000 * _NS
_MS = 1000 * _US
_S = 1000 * _MS
_M = 60 * _S
_H = 60 * _M

_DURATION_UNITS: dict[str, int] = {
    "ns": _NS,
    "us": _US,
    "\u00b5s": _US,  # MICRO SIGN, what Go prints
    "\u03bcs": _US,  # GREEK SMALL LETTER MU
    "ms": _MS,
    "s": _S,
    "m": _M,
    "h": _H,
}

_MAX_NS = 2**63 - 1
_COMPONENT_RE = re.compile(r"(\d*)(?:\.(\d*))?([^\d.]*)")
_DURATION_HINT = 'expected a duration such as "30s", "5m", "1h30m" or "500ms"'


def parse_duration_ns(value: str | float) -> int:
    """Parse a Go duration into integer nanoseconds, exactly as Go's time.ParseDuration would."""
    if isinstance(value, bool):
        raise TypeError(f"invalid duration {value!r}: {_DURATION_HINT}")
    if isinstance(value, (int, float)):
        if value == 0:
            return 0
        raise ValueError(f"invalid duration {value!r}: missing unit; {_DURATION_HINT}")
    text = value.strip()
    rest = text
    negative = False
    if rest[:1] in ("+", "-"):
        negative = rest[0] == "-"
        rest = rest[1:]
    if rest == "0":
        return 0
    if rest == "":
        raise ValueError(f"invalid duration {value!r}: {_DURATION_HINT}")
    total = Fraction(0)
    while rest:
        match = _COMPONENT_RE.match(rest)
        assert match is not None  # the pattern matches the empty string
        whole, frac, unit = match.groups()
        if not whole and not frac:
            raise ValueError(f"invalid duration {value!r}: {_DURATION_HINT}")
        if not unit:
            raise ValueError(
                f"invalid duration {value!r}: missing unit; {_DURATION_HINT}"
            )
        unit_ns = _DURATION_UNITS.get(unit)
        if unit_ns is None:
            raise ValueError(
                f"invalid duration {value!r}: unknown unit {unit!r} (use ns, us, ms, s, m or h)"
            )
        number = Fraction(int(whole or "0"))
        if frac:
            number += Fraction(int(frac), 10 ** len(frac))
        total += number * unit_ns
        rest = rest[match.end() :]
    nanos = int(total)  # Go truncates sub-nanosecond fractions
    if nanos > _MAX_NS:
        raise ValueError(f"invalid duration {value!r}: out of range")
    return -nanos if negative else nanos


def parse_duration(value: str | float) -> float:
    """Return the seconds a Go-style duration string denotes ("1h30m" -> 5400.0)."""
    return parse_duration_ns(value) / _S


def _format_fraction(value: int, unit: int) -> str:
    """Write value/unit in decimal without trailing zeros (Go's fmtFrac)."""
    whole, remainder = divmod(value, unit)
    if remainder == 0:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}.{remainder:0{digits}d}".rstrip("0")


def format_duration(seconds: float) -> str:
    """Render seconds the way Go's Duration.String does ("1h30m0s", "500ms", "0s")."""
    nanos = round(seconds * _S)
    if nanos == 0:
        return "0s"
    sign = "-" if nanos < 0 else ""
    nanos = abs(nanos)
    if nanos < _S:
        for suffix, unit in (("ms", _MS), ("\u00b5s", _US), ("ns", _NS)):
            if nanos >= unit:
                return f"{sign}{_format_fraction(nanos, unit)}{suffix}"
    hours, rest = divmod(nanos, _H)
    minutes, rest = divmod(rest, _M)
    text = f"{_format_fraction(rest, _S)}s"
    if hours or minutes:
        text = f"{minutes}m{text}"
    if hours:
        text = f"{hours}h{text}"
    return sign + text
