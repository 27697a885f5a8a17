"""RESP2, the Redis wire protocol: commands out, replies in, no I/O.

A command is an array of bulk strings.  A reply is a simple string (``str``), an error
(:class:`ReplyError`, returned in place, not raised: one failed command in a pipeline or a
transaction does not hide the others' replies), an integer, a bulk string (``bytes``), nil
(``None``) or an array of replies.  :class:`ReplyParser` takes bytes as they arrive, in any
chunking, and gives every complete reply; input that is not RESP2, nests deeper than
:data:`MAX_DEPTH` or announces more than ``max_bulk`` bytes raises :class:`ProtocolError`, the
only exception it raises (the connection is then unusable and is dropped).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

__all__ = [
    "MAX_DEPTH",
    "Arg",
    "ProtocolError",
    "Reply",
    "ReplyError",
    "ReplyParser",
    "encode_command",
    "encode_reply",
]

#: A command's argument: bytes as they are, text as UTF-8, integers in decimal.
Arg: TypeAlias = bytes | str | int
#: What a reply decodes to.
Reply: TypeAlias = "str | bytes | int | None | ReplyError | list[Reply]"

#: Arrays nested deeper than this are refused (our commands' replies nest two levels at most).
MAX_DEPTH = 16
#: The largest bulk string or array accepted by default (Redis's own proto-max-bulk-len is 512 MiB;
#: counters never come near this).
DEFAULT_MAX_BULK = 16 * 1024 * 1024
#: The longest header line (type byte, length or simple string) before it must have ended.
MAX_LINE = 64 * 1024


class ProtocolError(Exception):
    """The bytes are not a RESP2 reply stream (or exceed a limit): the connection must be dropped."""


class ReplyError(Exception):
    """An error reply (``-ERR ...``); ``kind`` is its first word (``ERR``, ``WRONGTYPE``, ``NOSCRIPT``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.kind = message.split(" ", 1)[0] if message else ""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ReplyError) and other.message == self.message

    def __hash__(self) -> int:
        return hash(self.message)


def _arg_bytes(arg: Arg) -> bytes:
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, bool):  # a bool is an int: refuse the ambiguity
        raise TypeError("a Redis argument cannot be a bool")
    if isinstance(arg, int):
        return str(arg).encode("ascii")
    return arg.encode("utf-8")


def encode_command(args: Sequence[Arg]) -> bytes:
    """One command as RESP2 (an array of bulk strings)."""
    if not args:
        raise ValueError("a Redis command needs a name")
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = _arg_bytes(arg)
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def encode_reply(reply: Reply) -> bytes:
    """A reply as a server sends it (for test servers and the parser's round-trip tests)."""
    if reply is None:
        return b"$-1\r\n"
    if isinstance(reply, ReplyError):
        return b"-" + reply.message.encode("latin-1") + b"\r\n"
    if isinstance(reply, str):
        return b"+" + reply.encode("latin-1") + b"\r\n"
    if isinstance(reply, bool):
        raise TypeError("a bool is not a RESP2 reply")
    if isinstance(reply, int):
        return b":%d\r\n" % reply
    if isinstance(reply, bytes):
        return b"$%d\r\n%s\r\n" % (len(reply), reply)
    return b"*%d\r\n" % len(reply) + b"".join(encode_reply(item) for item in reply)


class _Incomplete(Exception):
    """More bytes are needed before this reply is whole."""


class ReplyParser:
    """Incremental RESP2 reply parser: :meth:`feed` bytes, get the replies they completed."""

    def __init__(self, max_bulk: int = DEFAULT_MAX_BULK) -> None:
        self.max_bulk = max_bulk
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes received that do not yet make a whole reply."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Reply]:
        """The replies ``data`` completed, in order; raises :class:`ProtocolError` on bad input."""
        self._buffer += data
        replies: list[Reply] = []
        pos = 0
        try:
            while pos < len(self._buffer):
                try:
                    reply, pos = self._parse(pos, 0)
                except _Incomplete:
                    break
                replies.append(reply)
        finally:
            del self._buffer[:pos]
        return replies

    def _line(self, pos: int) -> tuple[bytes, int]:
        end = self._buffer.find(b"\r\n", pos)
        if end < 0:
            if len(self._buffer) - pos > MAX_LINE:
                raise ProtocolError("reply line too long")
            raise _Incomplete
        if end - pos > MAX_LINE:
            raise ProtocolError("reply line too long")
        return bytes(self._buffer[pos:end]), end + 2

    def _length(self, text: bytes) -> int:
        if not text or len(text) > 20 or not (text.isdigit() or (text[:1] == b"-" and text[1:].isdigit())):
            raise ProtocolError(f"bad length {text[:32]!r}")
        value = int(text)
        if value < -1:
            raise ProtocolError(f"negative length {value}")
        if value > self.max_bulk:
            raise ProtocolError(f"length {value} over the limit of {self.max_bulk}")
        return value

    def _parse(self, pos: int, depth: int) -> tuple[Reply, int]:
        line, after = self._line(pos)
        if not line:
            raise ProtocolError("empty reply line")
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode("latin-1"), after
        if kind == b"-":
            return ReplyError(rest.decode("latin-1")), after
        if kind == b":":
            if not rest or len(rest) > 21 or not (rest.isdigit() or (rest[:1] == b"-" and rest[1:].isdigit())):
                raise ProtocolError(f"bad integer {rest[:32]!r}")
            return int(rest), after
        if kind == b"$":
            length = self._length(rest)
            if length == -1:
                return None, after
            end = after + length
            if len(self._buffer) < end + 2:
                raise _Incomplete
            if self._buffer[end : end + 2] != b"\r\n":
                raise ProtocolError("bulk string not followed by CRLF")
            return bytes(self._buffer[after:end]), end + 2
        if kind == b"*":
            count = self._length(rest)
            if count == -1:
                return None, after
            if depth >= MAX_DEPTH:
                raise ProtocolError("arrays nested too deep")
            items: list[Reply] = []
            for _ in range(count):
                item, after = self._parse(after, depth + 1)
                items.append(item)
            return items, after
        raise ProtocolError(f"unknown reply type {kind!r}")
