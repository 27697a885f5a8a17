"""Twisted's own HTTP/1.1 Agent for backends (``server.backend_http_client: twisted``): the
quiet pool and the bulk-read protocol it needs.  The default client is the lean one
(:mod:`s3orch.backend.http11`); this one stays as the escape hatch."""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.web._newclient import HTTP11ClientProtocol
from twisted.web.client import Agent, HTTPConnectionPool, _HTTP11ClientFactory

from s3orch.http.socket_buffers import set_read_size

__all__ = ["twisted_agent_and_pool"]


class _BulkReadProtocol(HTTP11ClientProtocol):
    """Reads ``BODY_READ_SIZE`` per ``recv()``, not 64 KiB (see ``s3orch.http.socket_buffers``)."""

    def connectionMade(self) -> None:
        super().connectionMade()
        set_read_size(self.transport)


class _QuietFactory(_HTTP11ClientFactory):
    """Twisted logs "Starting/Stopping factory" for every new pooled connection: noise."""

    noisy = False

    def buildProtocol(self, addr: Any) -> HTTP11ClientProtocol:
        return _BulkReadProtocol(self._quiescentCallback)


class _QuietPool(HTTPConnectionPool):
    _factory = _QuietFactory


def twisted_agent_and_pool(
    reactor: IReactorTime, timeout: float, max_persistent_per_host: int, cached_connection_timeout: int
) -> tuple[HTTPConnectionPool, Agent]:
    """One backend's persistent pool and the Agent over it."""
    pool = _QuietPool(reactor, persistent=True)
    pool.maxPersistentPerHost = max_persistent_per_host
    pool.cachedConnectionTimeout = cached_connection_timeout
    pool.retryAutomatically = True  # only idempotent, body-less requests
    return pool, Agent(reactor, connectTimeout=timeout, pool=pool)
