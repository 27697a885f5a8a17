"""The client side of the in-process harness: raw HTTP/1.1 over an in-memory connection.

A test writes request bytes as they are (so malformed requests are as easy as good ones) and
reads back :class:`HarnessResponse` values parsed from the bytes the server sent: status line,
headers, and a body delimited by Content-Length, chunked coding or the close.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

__all__ = ["Client", "HarnessConnection", "HarnessResponse", "ResponseMissing", "parse_response"]


class ResponseMissing(AssertionError):
    """The server sent no complete HTTP response (or something that is not HTTP)."""


@dataclass(frozen=True)
class HarnessResponse:
    """One HTTP response as the client saw it; header names lower-case, repeats joined by ", "."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    raw_head: bytes = field(repr=False, default=b"")

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise ResponseMissing(f"not an HTTP/1.1 status line: {lines[0][:120]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise ResponseMissing(f"bad header line {line[:120]!r}")
        key = name.strip().lower().decode("latin-1")
        text = value.strip().decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return int(parts[1]), headers


def _chunked_body(data: bytes) -> tuple[bytes, int] | None:
    """(body, bytes consumed) of a complete chunked body at the start of ``data``; None if partial."""
    body: list[bytes] = []
    at = 0
    while True:
        end = data.find(b"\r\n", at)
        if end < 0:
            return None
        size = int(data[at:end].split(b";", 1)[0].strip() or b"0", 16)
        at = end + 2
        if size == 0:
            trailer_end = data.find(b"\r\n\r\n", at - 2)
            return (b"".join(body), trailer_end + 4) if trailer_end >= 0 else None
        if len(data) < at + size + 2:
            return None
        body.append(data[at : at + size])
        at += size + 2


def parse_response(data: bytes, method: str, closed: bool) -> tuple[HarnessResponse, int] | None:
    """The first complete final response in ``data`` (1xx skipped) and the bytes it took; None
    while incomplete.  ``closed``: the server closed, so a body without a length has ended."""
    at = 0
    while True:
        end = data.find(b"\r\n\r\n", at)
        if end < 0:
            return None
        head = data[at:end]
        status, headers = _parse_head(head)
        at = end + 4
        if 100 <= status < 200:
            continue
        break
    if method == "HEAD" or status in (204, 304):
        return HarnessResponse(status, headers, b"", head), at
    if "chunked" in headers.get("transfer-encoding", "").lower():
        found = _chunked_body(data[at:])
        if found is None:
            return None
        return HarnessResponse(status, headers, found[0], head), at + found[1]
    if "content-length" in headers:
        length = int(headers["content-length"])
        if len(data) < at + length:
            return None
        return HarnessResponse(status, headers, data[at : at + length], head), at + length
    if not closed:
        return None
    return HarnessResponse(status, headers, data[at:], head), len(data)


class Client(Protocol):
    """The client end of a connection: keeps every byte, notes the close."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.closed = False

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed = True


class HarnessConnection:
    """One client connection to the gateway: send bytes, read responses, close."""

    def __init__(self, pump: Any, client: Client, settle: Callable[[], None]) -> None:
        self.pump = pump
        self._settle = settle
        self._client = client
        self._consumed = 0

    @property
    def closed(self) -> bool:
        """The server closed the connection (or the client did, and the server has seen it)."""
        return self._client.closed

    @property
    def received(self) -> bytes:
        """Every byte the server has sent on this connection."""
        return bytes(self._client.received)

    def send(self, data: bytes) -> None:
        """Write ``data`` and pump until everything settles."""
        self.pump.clientIO.write(data)
        self._settle()

    def response(self, method: str = "GET") -> HarnessResponse:
        """The next complete response (the harness settles first); HarnessError if there is none."""
        self._settle()
        found = parse_response(bytes(self._client.received[self._consumed :]), method, self.closed)
        if found is None:
            pending = bytes(self._client.received[self._consumed :])
            raise ResponseMissing(
                f"no complete response (closed={self.closed}); received so far: {pending[:2000]!r}"
            )
        response, used = found
        self._consumed += used
        return response

    def close(self) -> None:
        self.pump.clientIO.loseConnection()
        self._settle()
