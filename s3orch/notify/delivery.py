"""One webhook POST: the signed CloudEvents body, a timeout, the status code.

``X-Webhook-Signature: sha256=<hex HMAC-SHA256 of the body>`` with the endpoint's
``secret`` (no header without one), so a receiver can check the body came from us
unaltered.  HTTP goes through treq over one persistent connection pool, never
blocking the reactor; the response body is read and discarded (bounded by the
same timeout), so a connection can be reused.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import treq
from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers

from s3orch import __version__

SIGNATURE_HEADER = "X-Webhook-Signature"
#: Structured-mode CloudEvents (the whole event is the JSON body).
BODY_CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"


def signature(secret: str, body: bytes) -> str:
    """The value of :data:`SIGNATURE_HEADER` for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, header: str) -> bool:
    """What a receiver does (constant time); used by our tests and documentation."""
    return hmac.compare_digest(signature(secret, body), header)


def endpoint_label(url: str) -> str:
    """A URL as a metric label and in logs: without query or fragment (they may hold tokens)
    and without credentials in the authority."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class Poster(Protocol):
    """Sends one POST; answers the status code, raises on a transport error or timeout."""

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int: ...


def request_headers(body: bytes, secret: str) -> dict[str, str]:
    headers = {"Content-Type": BODY_CONTENT_TYPE, "User-Agent": f"s3orch/{__version__}"}
    if secret:
        headers[SIGNATURE_HEADER] = signature(secret, body)
    return headers


class TreqPoster:
    """:class:`Poster` over treq with a persistent connection pool (closed with :meth:`close`)."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = 4
        self._client = HTTPClient(Agent(reactor, pool=self._pool))

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
        async def exchange() -> int:
            response = await self._client.post(url, data=body, headers=Headers({k: [v] for k, v in headers.items()}))
            await treq.collect(response, lambda chunk: None)
            return int(response.code)

        attempt: Deferred[int] = Deferred.fromCoroutine(exchange())
        timer = self._reactor.callLater(timeout, attempt.cancel)
        try:
            return await attempt
        except Exception:
            if not timer.active():  # cancelled by the timer, whatever the error says
                raise TimeoutError(f"no answer within {timeout:g}s") from None
            raise
        finally:
            if timer.active():
                timer.cancel()

    async def close(self) -> None:
        await self._pool.closeCachedConnections()
