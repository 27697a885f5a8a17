"""The lean backend client over real TLS sockets: certificate checked through the
``IPolicyForHTTPS`` it is given, bodies intact, one kept-alive connection for
several requests (s3orch.backend.http11)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from OpenSSL.SSL import Error as SSLError
from twisted.internet import reactor, ssl
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseNeverReceived
from twisted.web.iweb import IPolicyForHTTPS
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from zope.interface import implementer

from s3orch.backend.http11 import LeanAgent, LeanPool
from tests.integration.test_tls import PKI

BODY = os.urandom(300 * 1024)


class _Blob(Resource):
    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        return BODY


class _CountingSite(Site):
    connections = 0

    def buildProtocol(self, addr: Any) -> Any:
        type(self).connections += 1
        return super().buildProtocol(addr)


@implementer(IPolicyForHTTPS)
class _TrustCA:
    def __init__(self, ca_file: str) -> None:
        self._ca = ssl.Certificate.loadPEM(Path(ca_file).read_bytes())

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        return ssl.optionsForClientTLS(hostname.decode("ascii"), trustRoot=self._ca)


class _Collect(Protocol):
    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.done: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.parts.append(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        if reason is not None and reason.check(ResponseDone):
            self.done.callback(b"".join(self.parts))
        else:
            self.done.errback(reason or Failure(RuntimeError("no reason")))


@pytest_twisted.ensureDeferred
async def test_https_gets_verify_the_certificate_and_share_one_connection(tmp_path: Path) -> None:
    pki = PKI(tmp_path / "pki")
    server_pem = Path(pki.server_cert).read_bytes() + Path(pki.server_key).read_bytes()
    options = ssl.PrivateCertificate.loadPEM(server_pem).options()
    _CountingSite.connections = 0
    port = reactor.listenSSL(0, _CountingSite(_Blob()), options, interface="127.0.0.1")  # type: ignore[attr-defined,no-untyped-call]
    pool = LeanPool(reactor)
    agent = LeanAgent(reactor, pool=pool, connect_timeout=5, tls_policy=_TrustCA(pki.ca_file))
    url = f"https://localhost:{port.getHost().port}/blob".encode()
    try:
        for _ in range(3):
            response = await agent.request(b"GET", url)
            assert response.code == 200 and response.length == len(BODY)
            reader = _Collect()
            response.deliverBody(reader)
            assert await reader.done == BODY
        assert _CountingSite.connections == 1
    finally:
        await pool.closeCachedConnections()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_https_refuses_a_certificate_the_policy_does_not_trust(tmp_path: Path) -> None:
    pki = PKI(tmp_path / "pki")
    other = PKI(tmp_path / "other")
    server_pem = Path(pki.server_cert).read_bytes() + Path(pki.server_key).read_bytes()
    options = ssl.PrivateCertificate.loadPEM(server_pem).options()
    port = reactor.listenSSL(0, Site(_Blob()), options, interface="127.0.0.1")  # type: ignore[attr-defined,no-untyped-call]
    pool = LeanPool(reactor)
    agent = LeanAgent(reactor, pool=pool, connect_timeout=5, tls_policy=_TrustCA(other.ca_file))
    try:
        with pytest.raises(ResponseNeverReceived) as caught:
            await agent.request(b"GET", f"https://localhost:{port.getHost().port}/blob".encode())
        assert caught.value.reasons[0].check(SSLError)
        assert "certificate verify failed" in caught.value.reasons[0].getErrorMessage()
    finally:
        await pool.closeCachedConnections()
        await port.stopListening()
