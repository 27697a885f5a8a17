"""A raw HTTP/1.1 S3 client over a :class:`~s3orch.testing.GatewayHarness`'s in-memory
connections: the request bytes are exactly the ones a test writes, SigV4-signed (``UNSIGNED-PAYLOAD``
or the body's SHA-256) at the harness clock's time; one connection per request."""

from __future__ import annotations

from s3orch.testing import GatewayHarness
from tests.conftest import PHOTOS
from tests.support.socketclient import NS, Reply, SigningClient

__all__ = ["NS", "Client", "Reply"]


class Client(SigningClient):
    """Signs and sends raw requests to ``harness`` (see the module docstring)."""

    def __init__(self, harness: GatewayHarness, access_key: str = PHOTOS.access_key,
                 secret_key: str = PHOTOS.secret_key) -> None:
        self.harness = harness
        self.host = harness.host
        self.access_key = access_key
        self.secret_key = secret_key

    def now(self) -> float:
        return self.harness.clock.seconds()

    def head_bytes(self, method: str, path: str, query: str, headers: dict[str, str]) -> bytes:
        """The request line and headers as sent, UTF-8 (surrogates kept as bytes)."""
        return self.head_text(method, path, query, headers).encode("utf-8", "surrogateescape")

    def send_raw(self, method: str, path: str, query: str, headers: dict[str, str], body: bytes) -> Reply:
        answer = self.harness.send_raw(self.head_bytes(method, path, query, headers) + body)
        return Reply(answer.status, dict(answer.headers), answer.body)
