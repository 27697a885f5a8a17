"""A TCP fault proxy between s3orch and one backend, switchable while traffic flows.

The fault-injection rig's first tool (integration tests inject faults between s3orch and a backend): put it in front of a real S3 server,
point the gateway's backend ``endpoint`` at :attr:`FaultProxy.endpoint`, then
change :attr:`FaultProxy.mode` at any moment.  Each request takes the mode
current when it starts -- on a new connection, or on a kept-alive one (the
gateway's connection pool) when its next request line arrives -- and keeps it
until its answer is done, so a test can break new requests while those in
flight finish, or break every connection at once with :meth:`FaultProxy.reset_all`.

Modes (``Fault``):

* ``PASS``          forward both ways untouched;
* ``REFUSE``        accept and close at once with a TCP reset (a dead backend); on a
                    kept-alive connection, reset it when the next request starts;
* ``RESET_REQUEST`` forward ``after`` bytes of the request (a PUT's body cut), then reset;
* ``RESET_BODY``    forward the request, forward ``after`` bytes of the answer, then reset;
* ``STALL_HEADERS`` read the request, never answer (a hung backend);
* ``STALL_BODY``    forward the answer's first ``after`` bytes, then stop sending (the socket stays open);
* ``SLOW``          forward the answer at ``rate`` bytes per second;
* ``CORRUPT``       flip one byte of the answer at offset ``after`` (counted from the first byte);
* ``DELAY``         hold the answer back ``delay`` seconds, then forward it untouched.

It runs an asyncio loop in a daemon thread, so it works beside any test reactor
(and beside pytest-twisted's real one) and needs no process of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import re
import socket
import struct
import threading
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Self, TypedDict, Unpack


class Fault(enum.Enum):
    PASS = "pass"
    REFUSE = "refuse"
    RESET_REQUEST = "reset_request"
    RESET_BODY = "reset_body"
    STALL_HEADERS = "stall_headers"
    STALL_BODY = "stall_body"
    SLOW = "slow"
    CORRUPT = "corrupt"
    DELAY = "delay"


@dataclass(frozen=True)
class Mode:
    """What the proxy does to a connection accepted now."""

    fault: Fault = Fault.PASS
    #: RESET_BODY / STALL_BODY: answer bytes let through first; CORRUPT: offset of the flipped byte.
    after: int = 0
    #: SLOW: bytes per second.
    rate: int = 64 * 1024
    #: DELAY: seconds before the answer's first byte.
    delay: float = 0.0


class ModeFields(TypedDict, total=False):
    """The fields of a :class:`Mode` besides its fault, as ``FaultProxy.set`` takes them."""

    after: int
    rate: int
    delay: float


class FaultProxy:
    """Listen on 127.0.0.1 and forward to ``(upstream_host, upstream_port)`` with faults."""

    def __init__(self, upstream_host: str, upstream_port: int, port: int = 0) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._mode = Mode()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="faultproxy", daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._requested_port = port
        self.port = 0
        #: Connections accepted so far (by any mode), for tests that count attempts.
        self.connections = 0

    @classmethod
    def for_endpoint(cls, endpoint: str) -> FaultProxy:
        """A proxy in front of ``http://host:port``."""
        hostport = endpoint.split("://", 1)[-1].rstrip("/")
        host, _, port = hostport.rpartition(":")
        return cls(host, int(port))

    # -- control (any thread) ----------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def mode(self) -> Mode:
        with self._lock:
            return self._mode

    @mode.setter
    def mode(self, mode: Mode | Fault) -> None:
        with self._lock:
            self._mode = mode if isinstance(mode, Mode) else Mode(mode)

    def set(self, fault: Fault, **fields: Unpack[ModeFields]) -> None:
        """Switch the mode for new connections: ``proxy.set(Fault.SLOW, rate=1000)``."""
        self.mode = replace(Mode(fault), **fields)

    def reset_all(self) -> None:
        """Reset every open connection now (whatever its mode)."""
        asyncio.run_coroutine_threadsafe(self._reset_all(), self._loop).result(10)

    def start(self) -> Self:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- the loop ------------------------------------------------------------------------

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self._requested_port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._reset_all()

    async def _reset_all(self) -> None:
        for writer in list(self._writers):
            _reset(writer)
        self._writers.clear()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(client_w)
        try:
            if self.mode.fault is Fault.REFUSE:
                _reset(client_w)
                return
            try:
                up_r, up_w = await asyncio.open_connection(*self.upstream)
            except OSError:
                _reset(client_w)
                return
            self._writers.add(up_w)
            try:
                await self._pump(_Exchange(self.mode), client_r, client_w, up_r, up_w)
            finally:
                self._writers.discard(up_w)
                _close(up_w)
        finally:
            self._writers.discard(client_w)
            _close(client_w)

    async def _pump(
        self,
        exchange: _Exchange,
        client_r: asyncio.StreamReader,
        client_w: asyncio.StreamWriter,
        up_r: asyncio.StreamReader,
        up_w: asyncio.StreamWriter,
    ) -> None:
        upstream = asyncio.ensure_future(self._requests(exchange, client_r, client_w, up_w))
        try:
            await self._answer(exchange, up_r, client_w)
        finally:
            upstream.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await upstream

    async def _requests(
        self,
        exchange: _Exchange,
        client_r: asyncio.StreamReader,
        client_w: asyncio.StreamWriter,
        up_w: asyncio.StreamWriter,
    ) -> None:
        """Client to upstream; each new request on a kept-alive connection takes the current mode."""
        try:
            while True:
                data = await client_r.read(64 * 1024)
                if not data:
                    if up_w.can_write_eof():
                        up_w.write_eof()
                    return
                if exchange.answered and _REQUEST_LINE.match(data):
                    exchange.begin(self.mode)
                    if exchange.mode.fault is Fault.REFUSE:
                        _reset(client_w)
                        _reset(up_w)
                        return
                mode = exchange.mode
                if mode.fault is Fault.RESET_REQUEST and exchange.received + len(data) > mode.after:
                    head = data[: max(0, mode.after - exchange.received)]
                    if head:
                        up_w.write(head)
                        await up_w.drain()
                    _reset(up_w)
                    _reset(client_w)
                    return
                exchange.received += len(data)
                up_w.write(data)
                await up_w.drain()
        except (ConnectionError, OSError):
            return

    async def _answer(
        self, exchange: _Exchange, up_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        """Upstream to client, with the fault of the exchange being answered."""
        while True:
            data = await up_r.read(64 * 1024)
            if not data:
                if exchange.mode.fault in (Fault.STALL_HEADERS, Fault.STALL_BODY):
                    await asyncio.Event().wait()  # keep the client hanging until cancelled
                return
            mode = exchange.mode
            first = not exchange.answered
            exchange.answered = True
            if mode.fault is Fault.STALL_HEADERS:
                continue  # swallow the answer: a backend that never replies
            if first and mode.fault is Fault.DELAY and mode.delay > 0:
                await asyncio.sleep(mode.delay)
            sent = exchange.sent
            if mode.fault in (Fault.RESET_BODY, Fault.STALL_BODY) and sent + len(data) > mode.after:
                head = data[: max(0, mode.after - sent)]
                exchange.sent += len(head)
                if head:
                    client_w.write(head)
                    await client_w.drain()
                if mode.fault is Fault.RESET_BODY:
                    _reset(client_w)
                    return
                exchange.mode = replace(mode, fault=Fault.STALL_HEADERS)  # drop the rest
                continue
            if mode.fault is Fault.CORRUPT and sent <= mode.after < sent + len(data):
                index = mode.after - sent
                data = data[:index] + bytes([data[index] ^ 0xFF]) + data[index + 1 :]
            if mode.fault is Fault.SLOW:
                step = max(1, mode.rate // 10)
                for start in range(0, len(data), step):
                    client_w.write(data[start : start + step])
                    await client_w.drain()
                    await asyncio.sleep(0.1)
            else:
                client_w.write(data)
                await client_w.drain()
            exchange.sent += len(data)


class _Exchange:
    """One connection's current request and answer: its mode and the bytes counted so far."""

    def __init__(self, mode: Mode) -> None:
        self.mode = mode
        self.received = 0  # request bytes of this exchange
        self.sent = 0  # answer bytes of this exchange
        self.answered = False  # the upstream has begun answering this exchange

    def begin(self, mode: Mode) -> None:
        self.mode, self.received, self.sent, self.answered = mode, 0, 0, False


#: The start of an HTTP/1.x request: a new exchange on a kept-alive connection.
_REQUEST_LINE = re.compile(rb"^[A-Z]{3,10} \S+ HTTP/1\.[01]\r\n")


async def _drain_forever(reader: asyncio.StreamReader) -> None:
    """Read and drop until the peer closes (or the task is cancelled)."""
    with contextlib.suppress(ConnectionError, OSError):
        while await reader.read(64 * 1024):
            pass
        # Upstream finished; keep the client hanging until cancelled.
        await asyncio.Event().wait()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), as a crashed peer or a middlebox would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.close()
