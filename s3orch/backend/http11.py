"""A lean keep-alive HTTP/1.1 ``IAgent`` for backends (issue 20): Twisted's Agent
semantics that matter to an S3 client, without its pure-Python parser and layers.

* :class:`LeanAgent` sends each request on a pooled connection of its origin
  ((scheme, host, port)), or on a new one (``connect_timeout``; TLS through the
  same ``IPolicyForHTTPS`` Twisted's Agent uses, ``BrowserLikePolicyForHTTPS`` by
  default).  No gzip decoding, no redirects, no cookies: what the backend sends
  is what the caller gets.
* :class:`LeanPool` keeps up to ``max_persistent_per_host`` idle connections per
  origin for ``cached_connection_timeout`` seconds, like ``HTTPConnectionPool``.
* A request that failed on a *reused* connection before a byte of answer came back
  (the server had closed it while idle) is sent once more on a new connection, if
  it is idempotent and has no body, as Twisted's pool does.
* Cancelling the returned Deferred cancels the connect or aborts the connection.

The exchange on one connection lives in :mod:`s3orch.backend.http11_connection`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from ipaddress import ip_address
from typing import Any, cast
from urllib.parse import urlsplit

from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure
from twisted.web._newclient import RequestNotSent
from twisted.web.client import (
    BrowserLikePolicyForHTTPS,
    RequestTransmissionFailed,
    ResponseNeverReceived,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IPolicyForHTTPS, IResponse
from zope.interface import implementer

from s3orch.backend.http11_connection import HTTP11Connection, header_block
from s3orch.backend.http11_response import LeanResponse

__all__ = ["LeanAgent", "LeanPool", "Origin"]

#: (scheme, host, port) of a request: the pool's key.
Origin = tuple[str, str, int]
EndpointFactory = Callable[[Origin], IStreamClientEndpoint]

_DEFAULT_PORTS = {"http": 80, "https": 443}
#: Twisted's pool retries only these, and only without a body.
_IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"DELETE", b"TRACE"))


@lru_cache(maxsize=256)
def _origin(prefix: bytes) -> tuple[Origin, bytes]:
    """``scheme://host[:port]`` -> its origin and Host header value (default port omitted)."""
    parts = urlsplit(prefix.decode("ascii"))
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"unsupported URI {prefix!r}")
    port = parts.port or _DEFAULT_PORTS[parts.scheme]
    netloc = parts.netloc.rpartition("@")[2]
    if parts.port == _DEFAULT_PORTS[parts.scheme]:
        netloc = netloc[: netloc.rfind(":")]
    return (parts.scheme, parts.hostname, port), netloc.encode("ascii")


def split_uri(uri: bytes) -> tuple[Origin, bytes, bytes]:
    """An absolute URI as (origin, Host header value, request target)."""
    start = uri.find(b"://") + 3
    slash = uri.find(b"/", start)
    prefix, target = (uri, b"/") if slash < 0 else (uri[:slash], uri[slash:])
    query = prefix.find(b"?", start)
    if query >= 0:
        prefix, target = prefix[:query], b"/" + prefix[query:]
    origin, host = _origin(prefix)
    return origin, host, target


class _ConnectionFactory(Factory):
    """Builds connections; quiet (Twisted logs every factory start/stop otherwise)."""

    noisy = False
    protocol = HTTP11Connection


class LeanPool:
    """Idle keep-alive connections per origin (``HTTPConnectionPool``'s rules)."""

    def __init__(
        self,
        clock: IReactorTime,
        *,
        max_persistent_per_host: int = 2,
        cached_connection_timeout: float = 240,
    ) -> None:
        self.max_persistent_per_host = max_persistent_per_host
        self.cached_connection_timeout = cached_connection_timeout
        self._clock = clock
        self._idle: dict[Origin, list[HTTP11Connection]] = {}
        #: A connection's expiry timer, armed when it first goes idle and left running while
        #: it is reused: a busy connection's timer only re-arms (a timer per request, armed
        #: and cancelled, cost more than the request's own bookkeeping).
        self._timers: dict[HTTP11Connection, IDelayedCall] = {}
        #: When each idle connection went idle.
        self._idle_since: dict[HTTP11Connection, float] = {}
        self._factory = _ConnectionFactory()

    def take(self, origin: Origin) -> HTTP11Connection | None:
        """The most recently used idle connection to ``origin``, if any."""
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            if connection.reusable:
                self._idle_since.pop(connection, None)
                return connection
            self._forget(connection)
        return None

    def connect(self, origin: Origin, endpoint: IStreamClientEndpoint) -> Deferred[HTTP11Connection]:
        """A new connection (not from the pool); it joins the pool when it goes idle."""
        connecting = cast("Deferred[HTTP11Connection]", endpoint.connect(self._factory))

        def connected(connection: HTTP11Connection) -> HTTP11Connection:
            connection.on_idle = lambda c: self._put(origin, c)
            connection.on_lost = lambda c: self._drop(origin, c)
            return connection

        return connecting.addCallback(connected)

    def _put(self, origin: Origin, connection: HTTP11Connection) -> None:
        idle = self._idle.setdefault(origin, [])
        if self.max_persistent_per_host <= 0:
            connection.close()
            return
        if len(idle) >= self.max_persistent_per_host:
            oldest = idle.pop(0)
            self._forget(oldest)
            oldest.close()
        idle.append(connection)
        self._idle_since[connection] = self._clock.seconds()
        if connection not in self._timers:
            self._arm(origin, connection, self.cached_connection_timeout)

    def _arm(self, origin: Origin, connection: HTTP11Connection, delay: float) -> None:
        self._timers[connection] = self._clock.callLater(delay, self._expire, origin, connection)

    def _expire(self, origin: Origin, connection: HTTP11Connection) -> None:
        self._timers.pop(connection, None)
        since = self._idle_since.get(connection)
        if since is None:  # busy: armed again when it goes idle
            return
        remaining = since + self.cached_connection_timeout - self._clock.seconds()
        if remaining > 0:  # reused meanwhile, idle again only since then
            self._arm(origin, connection, remaining)
            return
        self._drop(origin, connection)
        connection.close()

    def _drop(self, origin: Origin, connection: HTTP11Connection) -> None:
        idle = self._idle.get(origin)
        if idle and connection in idle:
            idle.remove(connection)
        self._forget(connection)

    def _forget(self, connection: HTTP11Connection) -> None:
        self._idle_since.pop(connection, None)
        timer = self._timers.pop(connection, None)
        if timer is not None and timer.active():
            timer.cancel()

    def idle_count(self, origin: Origin) -> int:
        return len(self._idle.get(origin, ()))

    def closeCachedConnections(self) -> Deferred[Any]:
        """Close every idle connection; fires once they are closed."""
        waits: list[Deferred[None]] = []
        for idle in self._idle.values():
            for connection in idle:
                self._forget(connection)
                waits.append(_when_lost(connection))
                connection.close()
        self._idle.clear()
        return DeferredList(waits, consumeErrors=True)


def _when_lost(connection: HTTP11Connection) -> Deferred[None]:
    lost: Deferred[None] = Deferred()
    previous = connection.on_lost

    def on_lost(c: HTTP11Connection) -> None:
        previous(c)
        if not lost.called:
            lost.callback(None)

    connection.on_lost = on_lost
    return lost


@implementer(IAgent)
class LeanAgent:
    """``IAgent`` over :class:`LeanPool` connections; see the module docstring."""

    def __init__(
        self,
        reactor: Any,
        *,
        pool: LeanPool | None = None,
        connect_timeout: float | None = None,
        tls_policy: IPolicyForHTTPS | None = None,
        endpoint_factory: EndpointFactory | None = None,
    ) -> None:
        self._reactor = reactor
        self.pool = pool if pool is not None else LeanPool(reactor)
        self._connect_timeout = connect_timeout
        self._tls_policy = tls_policy
        self._endpoint_factory = endpoint_factory or self._endpoint
        self._endpoints: dict[Origin, IStreamClientEndpoint] = {}

    def _endpoint(self, origin: Origin) -> IStreamClientEndpoint:
        """TCP (an IP literal needs no resolver thread) or hostname, TLS-wrapped for https."""
        scheme, host, port = origin
        timeout = self._connect_timeout
        kwargs: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        endpoint: IStreamClientEndpoint
        try:
            version = ip_address(host).version
        except ValueError:
            endpoint = HostnameEndpoint(self._reactor, host.encode("idna"), port, **kwargs)
        else:
            endpoint_type = TCP4ClientEndpoint if version == 4 else TCP6ClientEndpoint
            endpoint = endpoint_type(self._reactor, host, port, **kwargs)
        if scheme == "https":
            policy = self._tls_policy or BrowserLikePolicyForHTTPS()
            endpoint = wrapClientTLS(policy.creatorForNetloc(host.encode("idna"), port), endpoint)
        return endpoint

    def endpoint_for(self, origin: Origin) -> IStreamClientEndpoint:
        endpoint = self._endpoints.get(origin)
        if endpoint is None:
            endpoint = self._endpoints[origin] = self._endpoint_factory(origin)
        return endpoint

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: IBodyProducer | None = None,
    ) -> Deferred[IResponse]:
        try:
            origin, host, target = split_uri(uri)
        except ValueError:
            return cast("Deferred[IResponse]", _failed(Failure()))
        block = b"" if headers is None else header_block(headers)
        if headers is None or not headers.hasHeader(b"host"):
            block = b"Host: " + host + b"\r\n" + block
        attempt = _Attempt(self, origin, method, target, block, bodyProducer)
        return cast("Deferred[IResponse]", attempt.start())

    def request_prepared(
        self, method: bytes, origin: Origin, target: bytes, block: bytes, body: IBodyProducer | None
    ) -> Deferred[LeanResponse]:
        """:meth:`request` for a caller that has the origin (:func:`split_uri`) and the header
        lines (Host included, no line breaks inside values) already: the backend client's
        own signer writes them directly, no ``Headers`` built and serialised per request."""
        return _Attempt(self, origin, method, target, block, body).start()


class _Attempt:
    """One request through the pool: connect or reuse, send, maybe retry once."""

    __slots__ = ("_agent", "_origin", "_method", "_target", "_headers", "_body", "_outer", "_inner")

    def __init__(
        self,
        agent: LeanAgent,
        origin: Origin,
        method: bytes,
        target: bytes,
        headers: bytes,
        body: IBodyProducer | None,
    ) -> None:
        self._agent = agent
        self._origin = origin
        self._method = method
        self._target = target
        self._headers = headers
        self._body = body
        self._outer: Deferred[LeanResponse] = Deferred(self._cancel)
        self._inner: Deferred[Any] | None = None

    def start(self) -> Deferred[LeanResponse]:
        connection = self._agent.pool.take(self._origin)
        if connection is not None:
            self._send(connection, reused=True)
        else:
            self._connect()
        return self._outer

    def _connect(self) -> None:
        agent = self._agent
        connecting = agent.pool.connect(self._origin, agent.endpoint_for(self._origin))
        self._inner = connecting
        connecting.addCallbacks(lambda connection: self._send(connection, reused=False), self._fail)

    def _send(self, connection: HTTP11Connection, reused: bool) -> None:
        if self._outer.called:  # cancelled while connecting, and the connect won anyway
            connection.on_idle(connection)
            return
        sending = connection.request(self._method, self._target, self._headers, self._body)
        self._inner = sending
        sending.addCallbacks(self._succeed, lambda failure: self._failed_on(connection, reused, failure))

    def _failed_on(self, connection: HTTP11Connection, reused: bool, failure: Failure) -> None:
        if reused and not self._outer.called and self._retryable(connection, failure):
            self._connect()
            return
        self._fail(failure)

    def _retryable(self, connection: HTTP11Connection, failure: Failure) -> bool:
        """A stale pooled connection: idempotent, bodyless, and nothing came back."""
        if self._method not in _IDEMPOTENT or self._body is not None or connection.received:
            return False
        if failure.check(RequestNotSent) is not None:
            return True
        if failure.check(RequestTransmissionFailed, ResponseNeverReceived) is None:
            return False
        return not any(reason.check(CancelledError) for reason in getattr(failure.value, "reasons", ()))

    def _succeed(self, response: LeanResponse) -> None:
        self._inner = None
        if not self._outer.called:
            self._outer.callback(response)

    def _fail(self, failure: Failure) -> None:
        self._inner = None
        if not self._outer.called:
            self._outer.errback(failure)

    def _cancel(self, outer: Deferred[LeanResponse]) -> None:
        """CancelledError at once (whatever the connect attempt reports), then stop the work."""
        inner, self._inner = self._inner, None
        outer.errback(Failure(CancelledError()))
        if inner is not None:
            inner.cancel()


def _failed(failure: Failure) -> Deferred[Any]:
    deferred: Deferred[Any] = Deferred()
    deferred.errback(failure)
    return deferred
