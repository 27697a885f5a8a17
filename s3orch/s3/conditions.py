"""Conditional request semantics (If-*, x-amz-copy-source-if-*), as AWS S3 applies them.

Order for reads (RFC 9110 section 13.2.2, which the S3 API reference follows):

1. If-Match false -> 412.  When present and true, If-Unmodified-Since is ignored
   (AWS: "If-Match true and If-Unmodified-Since false -> 200").
2. Otherwise If-Unmodified-Since false -> 412.
3. If-None-Match matching -> 304 (reads) / 412 (copy source).
4. Otherwise, without If-None-Match, If-Modified-Since not modified -> 304 / 412
   (AWS: "If-None-Match false and If-Modified-Since true -> 304").

ETag lists, ``*``, ``W/`` weak tags and unquoted tags are accepted.  If-Match
uses the strong comparison, If-None-Match the weak one.  Unparsable dates are
ignored, as is an If-Modified-Since in the future.  Last-Modified is compared at
one-second granularity, the resolution of an HTTP date.
"""

from __future__ import annotations

import datetime
import email.utils
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from s3orch.s3.errors import (
    NoSuchKey,
    NotModified,
    PreconditionFailed,
    S3Error,
)

Headers = Mapping[str, Sequence[str]]


@dataclass(frozen=True)
class EntityTag:
    """One entity-tag from a conditional header; ``opaque`` has no quotes."""

    opaque: str
    weak: bool = False


#: The parsed form of ``*``.
ANY = "*"


def header_value(headers: Headers, name: str) -> str | None:
    """All values of a header (any name case) joined as one list, None if absent."""
    name = name.lower()
    values = [v for key, vals in headers.items() if key.lower() == name for v in vals]
    return ", ".join(values) if values else None


def _has_if_headers(headers: Headers) -> bool:
    """Whether any ``If-*`` header is present: most requests carry none, and then one pass
    over the names answers what four :func:`header_value` scans would."""
    for key in headers:
        if key[:3].lower() == "if-":
            return True
    return False


def normalize_etag(etag: str) -> str:
    """An ETag without surrounding whitespace, ``W/`` or quotes."""
    etag = etag.strip()
    etag = etag.removeprefix("W/")
    if len(etag) >= 2 and etag[0] == '"' and etag[-1] == '"':
        etag = etag[1:-1]
    return etag


def parse_etag_list(value: str) -> list[EntityTag] | str:
    """Parse ``"a", W/"b", c`` into tags, or return ANY for ``*``.

    Quoted tags may contain commas; unquoted tags (which AWS accepts) end at one.
    """
    if value.strip() == "*":
        return ANY
    tags: list[EntityTag] = []
    i, n = 0, len(value)
    while i < n:
        ch = value[i]
        if ch in " \t,":
            i += 1
            continue
        weak = False
        if value.startswith("W/", i):
            weak = True
            i += 2
        if i < n and value[i] == '"':
            end = value.find('"', i + 1)
            if end == -1:
                end = n
            tags.append(EntityTag(value[i + 1 : end], weak))
            i = end + 1
        else:
            end = value.find(",", i)
            if end == -1:
                end = n
            token = value[i:end].strip()
            if token == "*":
                return ANY
            if token:
                tags.append(EntityTag(token, weak))
            i = end
    return tags


def _strong_match(tags: list[EntityTag] | str, etag: str) -> bool:
    if tags == ANY:
        return True
    return any(
        not t.weak and t.opaque == etag for t in tags if isinstance(t, EntityTag)
    )


def _weak_match(tags: list[EntityTag] | str, etag: str) -> bool:
    if tags == ANY:
        return True
    return any(t.opaque == etag for t in tags if isinstance(t, EntityTag))


def parse_http_date(value: str | None) -> float | None:
    """Seconds since the epoch from an HTTP date (any RFC 9110 form), None if unparsable."""
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:
        # "-0000" and zone-less asctime dates are UTC for HTTP.
        parsed = parsed.replace(tzinfo=datetime.UTC)
    try:
        return parsed.timestamp()
    except (OverflowError, ValueError, OSError):
        return None


def _evaluate(
    if_match: str | None,
    if_unmodified_since: str | None,
    if_none_match: str | None,
    if_modified_since: str | None,
    etag: str,
    last_modified: float,
    now: float,
    not_modified: type[S3Error],
) -> None:
    etag = normalize_etag(etag)
    modified = math.floor(last_modified)

    match_tags = parse_etag_list(if_match) if if_match is not None else []
    if match_tags:
        if not _strong_match(match_tags, etag):
            raise PreconditionFailed(Condition="If-Match")
    else:
        since = parse_http_date(if_unmodified_since)
        if since is not None and modified > since:
            raise PreconditionFailed(Condition="If-Unmodified-Since")

    none_match_tags = (
        parse_etag_list(if_none_match) if if_none_match is not None else []
    )
    if none_match_tags:
        if _weak_match(none_match_tags, etag):
            raise not_modified()
    else:
        since = parse_http_date(if_modified_since)
        if since is not None and since <= now and modified <= since:
            raise not_modified()


def check_read_conditions(
    headers: Headers, etag: str, last_modified: float, *, now: float
) -> None:
    """Raise PreconditionFailed (412) or NotModified (304) for GET/HEAD, else return.

    ``now`` (epoch seconds) decides whether If-Modified-Since lies in the future.
    """
    if not _has_if_headers(headers):
        return  # no condition can fail
    _evaluate(
        header_value(headers, "if-match"),
        header_value(headers, "if-unmodified-since"),
        header_value(headers, "if-none-match"),
        header_value(headers, "if-modified-since"),
        etag,
        last_modified,
        now,
        NotModified,
    )


def check_copy_source_conditions(
    headers: Headers, etag: str, last_modified: float, *, now: float
) -> None:
    """The x-amz-copy-source-if-* checks of CopyObject/UploadPartCopy; every failure is 412."""
    _evaluate(
        header_value(headers, "x-amz-copy-source-if-match"),
        header_value(headers, "x-amz-copy-source-if-unmodified-since"),
        header_value(headers, "x-amz-copy-source-if-none-match"),
        header_value(headers, "x-amz-copy-source-if-modified-since"),
        etag,
        last_modified,
        now,
        PreconditionFailed,
    )


#: What :meth:`WriteConditions.violation` reports when the write needs an object that is absent.
KEY_MISSING = "key-missing"


def _etag_set(tags: list[EntityTag] | str) -> tuple[str, ...]:
    if tags == ANY:
        return (ANY,)
    return tuple(dict.fromkeys(t.opaque for t in tags if isinstance(t, EntityTag)))


@dataclass(frozen=True)
class WriteConditions:
    """If-Match / If-None-Match of PutObject, CopyObject and CompleteMultipartUpload.

    Each is None (header absent), ``("*",)``, or the unquoted ETags listed.  The
    write goes ahead only if every present header holds for the key's current
    object: If-Match ``*`` needs an object, If-Match ETags need the current ETag
    among them (no object: 404 NoSuchKey); If-None-Match ``*`` needs no object,
    If-None-Match ETags need the current ETag (if any) not among them.  The core
    checks early (no bytes are sent for a write that cannot succeed); the store
    checks again inside the commit transaction, which is what makes a conditional
    write atomic against a concurrent writer.
    """

    if_match: tuple[str, ...] | None = None
    if_none_match: tuple[str, ...] | None = None

    @property
    def active(self) -> bool:
        """Whether the write has any condition."""
        return self.if_match is not None or self.if_none_match is not None

    def violation(self, current_etag: str | None) -> str | None:
        """Why the write may not go ahead over ``current_etag`` (None: no object).

        None when it may; :data:`KEY_MISSING` when an If-Match found no object;
        otherwise the name of the header that failed (``If-Match``, ``If-None-Match``).
        """
        current = normalize_etag(current_etag) if current_etag is not None else None
        if self.if_match is not None:
            if current is None:
                return KEY_MISSING
            if ANY not in self.if_match and current not in self.if_match:
                return "If-Match"
        if self.if_none_match is not None and current is not None:
            if ANY in self.if_none_match or current in self.if_none_match:
                return "If-None-Match"
        return None

    def check(self, current_etag: str | None) -> None:
        """Raise what AWS answers when the conditions fail over ``current_etag``."""
        raise_violation(self.violation(current_etag))

    def to_json(self) -> str | None:
        """The conditions as stored with a pending write (None without any)."""
        if not self.active:
            return None
        return json.dumps(
            {
                "if_match": None if self.if_match is None else list(self.if_match),
                "if_none_match": None if self.if_none_match is None else list(self.if_none_match),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str | None) -> WriteConditions:
        """The inverse of :meth:`to_json`."""
        if not text:
            return cls()
        data = json.loads(text)
        match, none_match = data.get("if_match"), data.get("if_none_match")
        return cls(
            None if match is None else tuple(str(e) for e in match),
            None if none_match is None else tuple(str(e) for e in none_match),
        )


#: No conditions.
UNCONDITIONAL = WriteConditions()


def raise_violation(violation: str | None) -> None:
    """The S3 error of a :meth:`WriteConditions.violation` (nothing for None)."""
    if violation is None:
        return
    if violation == KEY_MISSING:
        raise NoSuchKey()
    raise PreconditionFailed(Condition=violation)


def parse_write_conditions(headers: Headers) -> WriteConditions:
    """If-Match / If-None-Match of a write: ``*`` or a list of (quoted or bare) ETags.

    AWS documents ``If-None-Match: *`` and ``If-Match: <etag>``; the other forms
    (``If-Match: *``, ``If-None-Match: <etag>``, lists) have their obvious meaning,
    as Ceph RGW gives them.  An empty header counts as absent.
    """
    if not _has_if_headers(headers):
        return UNCONDITIONAL
    found: list[tuple[str, ...] | None] = []
    for name in ("if-match", "if-none-match"):
        raw = header_value(headers, name)
        tags = _etag_set(parse_etag_list(raw)) if raw is not None else ()
        found.append(tags or None)
    return WriteConditions(found[0], found[1])
