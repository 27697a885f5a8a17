"""Bucket and key from the Host header and the RAW request path.

The key must come from the bytes on the wire: twisted's ``postpath`` is already
unquoted and split, which loses ``%2F`` versus ``/`` and collapses nothing we
can recover.  S3 keys are opaque: ``//``, a trailing ``/``, ``.`` and ``..``
segments are all part of the key exactly as sent, so nothing is normalised.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from s3orch.s3.errors import InvalidBucketName, InvalidURI, KeyTooLongError

#: AWS's key length limit, in UTF-8 bytes.
MAX_KEY_BYTES = 1024

_PERCENT = re.compile(rb"%([0-9A-Fa-f]{2})?")





class Address(NamedTuple):
    """Which bucket and key a request names; ``None`` at service/bucket level.

    A NamedTuple (built per request): immutable like a frozen dataclass, at a third of the cost.
    """

    bucket: str | None
    key: str | None


def _unquote(raw: bytes) -> str:
    """Percent-decode as strict UTF-8; ``+`` stays a literal plus (paths are not forms)."""

    def repl(match: re.Match[bytes]) -> bytes:
        hexdigits = match.group(1)
        if hexdigits is None:
            raise InvalidURI()
        return bytes((int(hexdigits, 16),))

    decoded = _PERCENT.sub(repl, raw) if b"%" in raw else raw
    try:
        return decoded.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidURI() from None


def _host_name(host: str) -> str:
    """Lower-cased host without port or trailing dot (``[v6]:port`` aware)."""
    name = host.strip().lower()
    if name.startswith("["):
        end = name.find("]")
        name = name[: end + 1] if end != -1 else name
    else:
        name = name.rsplit(":", 1)[0] if name.count(":") == 1 else name
    return name.rstrip(".")


def virtual_bucket(host: str | None, suffix: str) -> str | None:
    """The bucket a virtual-hosted-style Host names, or None for path-style."""
    if not host or not suffix:
        return None
    suffix = suffix.strip().strip(".").lower()
    if not suffix:
        return None
    name = _host_name(host)
    tail = "." + suffix
    if name.endswith(tail) and len(name) > len(tail):
        return name[: -len(tail)]
    return None


def _checked_key(key: str) -> str:
    size = len(key.encode("utf-8"))
    if size > MAX_KEY_BYTES:
        raise KeyTooLongError(Size=str(size), MaxSizeAllowed=str(MAX_KEY_BYTES))
    if "\x00" in key:
        # PostgreSQL TEXT cannot hold NUL; refuse it on every engine alike.
        raise InvalidURI("Object keys may not contain the NUL character.")
    return key


def parse_address(
    host: str | None, raw_path: bytes, virtual_host_suffix: str = ""
) -> Address:
    """Split a request into bucket and key, path-style or virtual-hosted-style.

    ``raw_path`` is the request target as received; a query string, if still
    attached, is dropped (a literal ``?`` in a key always arrives as ``%3F``).
    """
    path = raw_path.split(b"?", 1)[0]
    if not path.startswith(b"/"):
        raise InvalidURI()

    bucket = virtual_bucket(host, virtual_host_suffix)
    if bucket is not None:
        rest = path[1:]
        return Address(bucket, _checked_key(_unquote(rest)) if rest else None)

    if path == b"/":
        return Address(None, None)
    raw_bucket, sep, raw_key = path[1:].partition(b"/")
    if not raw_bucket:
        raise InvalidBucketName("The specified bucket is not valid.", BucketName="")
    bucket = _unquote(raw_bucket)
    if not sep or not raw_key:
        return Address(bucket, None)
    return Address(bucket, _checked_key(_unquote(raw_key)))
