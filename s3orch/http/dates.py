"""The ``Date`` header of responses, formatted once a second (every response carries one)."""

from __future__ import annotations

import time

from twisted.web import http

#: The last whole second given a Date header, and that header's text.
_cache: tuple[int, bytes] = (-1, b"")


def http_date() -> bytes:
    """``Date`` now, as ``twisted.web.http.datetimeToString`` makes it."""
    global _cache
    now = int(time.time())
    cached = _cache
    if cached[0] != now:
        cached = _cache = (now, http.datetimeToString(now))
    return cached[1]
