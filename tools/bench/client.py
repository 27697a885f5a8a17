"""The load client: raw HTTP/1.1 over persistent asyncio connections, signed with our own
SigV4 (``UNSIGNED-PAYLOAD``); boto3 tops out at ~300 small ops/s here and would measure itself,
not the proxy.  Also the small S3 answers it reads (error codes, multipart XML)."""

from __future__ import annotations

import asyncio
import html
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from s3orch.s3.sigv4 import UNSIGNED_PAYLOAD, sign_headers, uri_encode
from tools.bench.workloads import STREAM_CHUNK, Target


class ProtocolError(Exception):
    """The server's answer is not HTTP/1.1 as we understand it."""


class RequestFailed(Exception):
    """A response with an unexpected status or body (the bench counts it as an error)."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes  # empty when the body was discarded
    length: int  # body bytes received
    keep_alive: bool


async def _discard(reader: asyncio.StreamReader, count: int) -> None:
    remaining = count
    while remaining:
        data = await reader.read(min(remaining, STREAM_CHUNK))
        if not data:
            raise asyncio.IncompleteReadError(b"", remaining)
        remaining -= len(data)


async def _read_chunked(reader: asyncio.StreamReader, keep_body: bool) -> tuple[bytes, int]:
    parts: list[bytes] = []
    total = 0
    while True:
        line = await reader.readuntil(b"\r\n")
        try:
            size = int(line[:-2].split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise ProtocolError(f"bad chunk size line {line[:40]!r}") from None
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass  # trailer fields: not used
            return b"".join(parts), total
        if keep_body:
            parts.append(await reader.readexactly(size))
        else:
            await _discard(reader, size)
        total += size
        if await reader.readexactly(2) != b"\r\n":
            raise ProtocolError("chunk not followed by CRLF")


async def read_response(
    reader: asyncio.StreamReader, method: str, *, keep_body: bool = True
) -> Response:
    """Read one response: Content-Length, chunked or until-close bodies; none for HEAD/204/304.

    ``keep_body=False`` reads and drops the body in chunks (large GETs never sit in memory).
    """
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head[:-4].split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise ProtocolError(f"bad status line {lines[0][:80]!r}")
        status = int(parts[1])
        headers: dict[str, str] = {}
        for raw in lines[1:]:
            name, sep, value = raw.partition(b":")
            if not sep:
                raise ProtocolError(f"bad header line {raw[:80]!r}")
            key = name.strip().lower().decode("latin-1")
            text = value.strip().decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        if 100 <= status < 200:
            continue  # 100 Continue and friends: the real answer follows
        break
    connection = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    keep_alive = "close" not in connection and (parts[0] != b"HTTP/1.0" or "keep-alive" in connection)
    body = b""
    length = 0
    if method == "HEAD" or status in (204, 304):
        pass
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        body, length = await _read_chunked(reader, keep_body)
    elif "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            raise ProtocolError(f"bad Content-Length {headers['content-length']!r}") from None
        if length < 0:
            raise ProtocolError(f"bad Content-Length {length}")
        if keep_body:
            body = await reader.readexactly(length)
        else:
            await _discard(reader, length)
    else:
        keep_alive = False
        if keep_body:
            body = await reader.read()
            length = len(body)
        else:
            while data := await reader.read(STREAM_CHUNK):
                length += len(data)
    return Response(status, headers, body, length, keep_alive)


#: Errors that mean "this request failed"; the connection is reopened for the next one.
REQUEST_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    TimeoutError,
    asyncio.IncompleteReadError,
    asyncio.LimitOverrunError,
    ProtocolError,
    RequestFailed,
)


@dataclass(frozen=True)
class FileSlice:
    """``length`` bytes of the file at ``path`` from ``offset``: a request body streamed from disk
    (a multipart part is a slice of the large file; never a whole large body in memory)."""

    path: Path
    offset: int
    length: int


class Connection:
    """One persistent HTTP/1.1 connection to a target, reopened after an error or a close."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(
                self.target.host, self.target.port, limit=STREAM_CHUNK
            )

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass

    def path(self, key: str | None) -> str:
        if key is None:
            return f"/{self.target.bucket}"
        return f"/{self.target.bucket}/{uri_encode(key, encode_slash=False)}"

    async def request(
        self,
        method: str,
        key: str | None,
        *,
        query: str = "",
        body: bytes | None = None,
        body_file: FileSlice | None = None,
        keep_body: bool = True,
    ) -> Response:
        """Send one signed request and read its answer; the body comes from ``body`` or is
        streamed from a slice of a file."""
        target = self.target
        path = self.path(key)
        if query:
            path = f"{path}?{query}"
        signed = sign_headers(
            method,
            f"http://{target.authority}{path}",
            {},
            UNSIGNED_PAYLOAD,
            target.access_key,
            target.secret_key,
            target.region,
            time.time(),
        )
        lines = [f"{method} {path} HTTP/1.1", f"Host: {target.authority}"]
        lines += [f"{name}: {value}" for name, value in signed.items()]
        if body_file is not None:
            lines.append(f"Content-Length: {body_file.length}")
        elif body is not None:
            lines.append(f"Content-Length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        await self.open()
        assert self._reader is not None and self._writer is not None
        writer = self._writer
        if body_file is not None:
            writer.write(head)
            with body_file.path.open("rb") as source:
                source.seek(body_file.offset)
                remaining = body_file.length
                while remaining:
                    chunk = source.read(min(STREAM_CHUNK, remaining))
                    if not chunk:
                        raise EOFError(f"{body_file.path} ends {remaining} bytes short of the body")
                    writer.write(chunk)
                    remaining -= len(chunk)
                    await writer.drain()
        else:
            writer.write(head + body if body else head)
        await writer.drain()
        response = await read_response(self._reader, method, keep_body=keep_body)
        if not response.keep_alive:
            await self.close()
        return response


def describe(response: Response) -> str:
    """``HTTP 403 SignatureDoesNotMatch: <message>`` from an S3 error, else the body's start."""
    text = response.body[:2000].decode("utf-8", "replace")
    code = re.search(r"<Code>(.*?)</Code>", text)
    message = re.search(r"<Message>(.*?)</Message>", text, re.S)
    if code:
        detail = code.group(1) + (f": {message.group(1)}" if message else "")
    else:
        detail = " ".join(text.split())[:200]
    return f"HTTP {response.status} {detail}".rstrip()


def expect_status(response: Response, status: int, what: str) -> None:
    if response.status != status:
        raise RequestFailed(f"{what}: {describe(response)}")


def complete_body(etags: Iterable[tuple[int, str]]) -> bytes:
    """CompleteMultipartUpload's XML: every (part number, ETag as UploadPart answered it), in
    ascending part order whatever order the parts finished in."""
    parts = "".join(
        f"<Part><PartNumber>{number}</PartNumber><ETag>{html.escape(etag, quote=False)}</ETag></Part>"
        for number, etag in sorted(etags)
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        f"{parts}</CompleteMultipartUpload>"
    ).encode()


def xml_text(body: bytes, tag: str) -> str | None:
    """The text of the first ``<tag>`` element of an S3 answer, entities decoded; None if absent."""
    found = re.search(rb"<%s>(.*?)</%s>" % (tag.encode(), tag.encode()), body, re.S)
    return html.unescape(found.group(1).decode("utf-8", "replace")) if found else None


_MULTIPART_ETAG = re.compile(r'"?[0-9a-fA-F]{32}-([0-9]+)"?')


def is_multipart_etag(etag: str | None, parts: int) -> bool:
    """Whether ``etag`` is S3's ETag of an object completed from ``parts`` parts: an MD5 (of
    the parts' MD5s) then ``-<parts>``, quoted or not."""
    found = _MULTIPART_ETAG.fullmatch(etag.strip()) if etag is not None else None
    return found is not None and int(found.group(1)) == parts
