"""A raw HTTP/1.1 S3 client over a :class:`~s3orch.testing.GatewayHarness`'s in-memory
connections: the request bytes are exactly the ones a test writes, SigV4-signed (``UNSIGNED-PAYLOAD``
or the body's SHA-256) at the harness clock's time; one connection per request."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from xml.etree import ElementTree

from s3orch.s3 import sigv4
from s3orch.testing import GatewayHarness
from tests.conftest import PHOTOS

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def code(self) -> str | None:
        """The S3 error code of an XML error body."""
        if not self.body.startswith(b"<?xml") and not self.body.startswith(b"<Error"):
            return None
        root = ElementTree.fromstring(self.body)
        return root.findtext("Code") if root.tag == "Error" else None

    def xml(self) -> ElementTree.Element:
        return ElementTree.fromstring(self.body)


class Client:
    """Signs and sends raw requests to ``harness`` (see the module docstring)."""

    def __init__(self, harness: GatewayHarness, access_key: str = PHOTOS.access_key,
                 secret_key: str = PHOTOS.secret_key) -> None:
        self.harness = harness
        self.access_key = access_key
        self.secret_key = secret_key

    def url(self, path: str, query: str = "") -> str:
        return f"http://{self.harness.host}{path}" + (f"?{query}" if query else "")

    def sign(self, method: str, path: str, query: str = "", headers: dict[str, str] | None = None,
             payload_hash: str = sigv4.UNSIGNED_PAYLOAD) -> dict[str, str]:
        headers = dict(headers or {})
        headers.update(sigv4.sign_headers(method, self.url(path, query), headers, payload_hash, self.access_key,
                                          self.secret_key, "us-east-1", self.harness.clock.seconds()))
        return headers

    def head_bytes(self, method: str, path: str, query: str, headers: dict[str, str]) -> bytes:
        """The request line and headers as sent (``Connection: close``), UTF-8 (surrogates kept as bytes)."""
        target = path + (f"?{query}" if query else "")
        head = f"{method} {target} HTTP/1.1\r\nHost: {self.harness.host}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "Connection: close\r\n\r\n"
        return head.encode("utf-8", "surrogateescape")

    def send_raw(self, method: str, path: str, query: str, headers: dict[str, str], body: bytes) -> Reply:
        answer = self.harness.send_raw(self.head_bytes(method, path, query, headers) + body)
        return Reply(answer.status, dict(answer.headers), answer.body)

    def request(self, method: str, path: str, query: str = "", headers: dict[str, str] | None = None,
                body: bytes = b"", sign_body: bool = False) -> Reply:
        headers = dict(headers or {})
        payload = hashlib.sha256(body).hexdigest() if sign_body else sigv4.UNSIGNED_PAYLOAD
        signed = self.sign(method, path, query, headers, payload)
        if body or method in ("PUT", "POST"):
            signed.setdefault("content-length", str(len(body)))
        return self.send_raw(method, path, query, signed, body)
