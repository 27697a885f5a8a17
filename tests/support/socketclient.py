"""A raw HTTP/1.1 S3 client over a real socket to a gateway process: the bytes on the wire are
exactly the ones a test writes, SigV4-signed (``UNSIGNED-PAYLOAD`` or the body's SHA-256)."""

from __future__ import annotations

import hashlib
import socket
import time
from dataclasses import dataclass
from xml.etree import ElementTree

from s3orch.s3 import sigv4
from tests.conftest import PHOTOS
from tests.support.gateway import GatewayProcess

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


def _read_reply(sock: socket.socket, method: str) -> Reply:
    """Read one HTTP/1.1 response (Content-Length framed, which is all s3orch sends)."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        if not more:
            raise ConnectionError(f"connection closed before a response: {data!r}")
        data += more
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if status == 100:
        return Reply(100, headers, rest)
    length = 0 if method == "HEAD" or status in (204, 304) else int(headers.get("content-length", "0"))
    while len(rest) < length:
        more = sock.recv(65536)
        if not more:
            break
        rest += more
    return Reply(status, headers, rest[:length])


class SigningClient:
    """What both raw clients share: SigV4 signing at ``now()`` and the request as written;
    a subclass says where the bytes go (``host``, ``now``, ``send_raw``)."""

    host: str
    access_key: str
    secret_key: str

    def now(self) -> float:
        raise NotImplementedError

    def send_raw(self, method: str, path: str, query: str, headers: dict[str, str], body: bytes) -> Reply:
        raise NotImplementedError

    def url(self, path: str, query: str = "") -> str:
        return f"http://{self.host}{path}" + (f"?{query}" if query else "")

    def sign(self, method: str, path: str, query: str = "", headers: dict[str, str] | None = None,
             payload_hash: str = sigv4.UNSIGNED_PAYLOAD) -> dict[str, str]:
        headers = dict(headers or {})
        headers.update(sigv4.sign_headers(method, self.url(path, query), headers, payload_hash,
                                          self.access_key, self.secret_key, "us-east-1", self.now()))
        return headers

    def head_text(self, method: str, path: str, query: str, headers: dict[str, str]) -> str:
        """The request line and headers as sent (``Connection: close``)."""
        target = path + (f"?{query}" if query else "")
        head = f"{method} {target} HTTP/1.1\r\nHost: {self.host}\r\n"
        return head + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "Connection: close\r\n\r\n"

    def request(self, method: str, path: str, query: str = "", headers: dict[str, str] | None = None,
                body: bytes = b"", sign_body: bool = False) -> Reply:
        headers = dict(headers or {})
        payload = hashlib.sha256(body).hexdigest() if sign_body else sigv4.UNSIGNED_PAYLOAD
        signed = self.sign(method, path, query, headers, payload)
        if body or method in ("PUT", "POST"):
            signed.setdefault("content-length", str(len(body)))
        return self.send_raw(method, path, query, signed, body)


class Client(SigningClient):
    """A raw HTTP/1.1 client signing with SigV4 (one connection per request)."""

    def __init__(self, gateway: GatewayProcess, access_key: str = PHOTOS.access_key,
                 secret_key: str = PHOTOS.secret_key) -> None:
        self.port = gateway.port
        self.host = f"127.0.0.1:{self.port}"
        self.access_key = access_key
        self.secret_key = secret_key

    def now(self) -> float:
        return time.time()

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=30)

    def send_raw(self, method: str, path: str, query: str, headers: dict[str, str], body: bytes) -> Reply:
        with self.connect() as sock:
            sock.sendall(self.head_text(method, path, query, headers).encode("utf-8") + body)
            return _read_reply(sock, method)
