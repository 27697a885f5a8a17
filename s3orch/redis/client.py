"""A Twisted-native Redis client: one pipelined RESP2 connection, reconnected on demand.

Why our own: counters need a handful of commands (PING, AUTH, SELECT, EVAL, MGET, MULTI/EXEC)
and, above all, an exact answer to "was this command applied?" when a connection dies.  A
small client makes that answer explicit: a reply is an answer; :class:`RedisUnavailable` (refused,
timed out, reset, garbled) means *unknown* for every command sent and not yet answered, and the
caller (``s3orch.redis.counters``) resolves it idempotently.  Nothing blocks the reactor: the
connection is a :class:`~twisted.internet.protocol.Protocol`, replies are matched to commands
in order (Redis answers each connection's commands in the order they were sent), and commands
sent together are written together, so a ``MULTI ... EXEC`` is never interleaved with another
caller's commands.

Timeouts follow go-redis's defaults (the original's client): 5 s to connect (and AUTH/SELECT),
3 s without any reply while replies are awaited; either aborts the connection.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from s3orch.redis.resp import (
    DEFAULT_MAX_BULK,
    Arg,
    ProtocolError,
    Reply,
    ReplyError,
    ReplyParser,
    encode_command,
)

__all__ = ["RedisClient", "RedisProtocol", "RedisUnavailable", "ReplyError"]

CONNECT_TIMEOUT = 5.0
COMMAND_TIMEOUT = 3.0

_log = Logger(namespace="s3orch.redis")


class RedisUnavailable(Exception):
    """No answer: the connection failed, was lost or timed out.  Whether commands sent and not
    answered were applied is unknown."""


@dataclass
class _Batch:
    """Commands written together, answered by one Deferred once every reply is in."""

    expected: int
    done: Deferred[list[Reply]]
    replies: list[Reply] = field(default_factory=list)


class RedisProtocol(Protocol):
    """One connection: :meth:`send` writes commands and gives their replies, in order."""

    def __init__(self, clock: IReactorTime, command_timeout: float, max_bulk: int = DEFAULT_MAX_BULK) -> None:
        self.clock = clock
        self.command_timeout = command_timeout
        self._parser = ReplyParser(max_bulk)
        self._waiting: deque[_Batch] = deque()
        self._timer: IDelayedCall | None = None
        self._lost: str | None = None
        self._open = False
        #: Fires (with None) when the connection is gone, however it went.
        self.closed: Deferred[None] = Deferred()

    @property
    def usable(self) -> bool:
        return self._open and self._lost is None

    def connectionMade(self) -> None:
        self._open = True

    def send(self, commands: Sequence[Sequence[Arg]]) -> Deferred[list[Reply]]:
        """Write ``commands`` in one write; the Deferred fires with their replies (an error reply
        is a :class:`ReplyError` in the list) or fails with :class:`RedisUnavailable`."""
        if not self.usable or self.transport is None:
            raise RedisUnavailable(f"connection unusable: {self._lost or 'not connected'}")
        data = b"".join(encode_command(command) for command in commands)
        batch = _Batch(len(commands), Deferred())
        self._waiting.append(batch)
        self.transport.write(data)
        if self._timer is None:
            self._arm()
        return batch.done

    def _arm(self) -> None:
        self._timer = self.clock.callLater(self.command_timeout, self._timed_out)

    def _rearm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._waiting:
            self._arm()

    def _timed_out(self) -> None:
        self._timer = None
        self._abort(f"no reply within {self.command_timeout:g}s")

    def _abort(self, reason: str) -> None:
        self._fail_all(reason)
        if self.transport is not None:
            cast(Any, self.transport).abortConnection()

    def dataReceived(self, data: bytes) -> None:
        try:
            replies = self._parser.feed(data)
        except ProtocolError as exc:
            self._abort(f"protocol error: {exc}")
            return
        for reply in replies:
            if not self._waiting:
                self._abort("a reply nobody asked for")
                return
            batch = self._waiting[0]
            batch.replies.append(reply)
            if len(batch.replies) == batch.expected:
                self._waiting.popleft()
                batch.done.callback(batch.replies)
            if self._lost is not None:  # a callback aborted the connection
                return
        self._rearm()

    def _fail_all(self, reason: str) -> None:
        if self._lost is None:
            self._lost = reason
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        waiting, self._waiting = self._waiting, deque()
        for batch in waiting:
            batch.done.errback(RedisUnavailable(self._lost))

    def connectionLost(self, reason: Failure = cast(Failure, None)) -> None:
        message = reason.getErrorMessage() if reason is not None else "closed"
        self._fail_all(f"connection lost: {message}")
        self._open = False
        if not self.closed.called:
            self.closed.callback(None)


class RedisClient:
    """Commands to one Redis server over one connection, opened (with AUTH and SELECT) when
    first needed and again after it is lost.  A connection is never reopened under a command:
    the commands it had not answered fail with :class:`RedisUnavailable`."""

    def __init__(
        self,
        reactor: Any,
        host: str,
        port: int,
        *,
        password: str = "",
        db: int = 0,
        tls: Any = None,
        connect_timeout: float = CONNECT_TIMEOUT,
        command_timeout: float = COMMAND_TIMEOUT,
        endpoint: IStreamClientEndpoint | None = None,
    ) -> None:
        """``tls`` is an ``IOpenSSLClientConnectionCreator`` (``optionsForClientTLS``) or None;
        ``endpoint`` replaces the TCP endpoint (tests)."""
        self.reactor = reactor
        self.address = f"{host}:{port}"
        self.password = password
        self.db = db
        self.command_timeout = command_timeout
        if endpoint is None:
            endpoint = HostnameEndpoint(reactor, host, port, timeout=connect_timeout)
            if tls is not None:
                endpoint = wrapClientTLS(tls, endpoint)
        self.endpoint = endpoint
        self.connect_timeout = connect_timeout
        self._protocol: RedisProtocol | None = None
        self._waiters: list[Deferred[RedisProtocol]] = []
        self._closing = False

    @classmethod
    def from_address(cls, reactor: Any, address: str, **kwargs: Any) -> RedisClient:
        """A client of ``host:port`` (``redis.address``; ``[v6]:port`` too)."""
        host, _, port = address.rpartition(":")
        return cls(reactor, host.strip("[]"), int(port), **kwargs)

    @property
    def connected(self) -> bool:
        return self._protocol is not None and self._protocol.usable

    async def _connection(self) -> RedisProtocol:
        protocol = self._protocol
        if protocol is not None and protocol.usable:
            return protocol
        # Callers arriving while a connection is being opened wait for that one (each with a
        # Deferred of its own, fired in turn: a lock would resume them nested, one per caller).
        waiter: Deferred[RedisProtocol] = Deferred()
        self._waiters.append(waiter)
        if len(self._waiters) == 1:
            Deferred.fromCoroutine(self._open()).addBoth(self._opened)
        return await waiter

    def _opened(self, result: RedisProtocol | Failure) -> None:
        if isinstance(result, RedisProtocol):
            self._protocol = result
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(result) if isinstance(result, RedisProtocol) else waiter.errback(result)

    async def _open(self) -> RedisProtocol:
        if self._closing:
            raise RedisUnavailable("client closed")
        protocol = RedisProtocol(self.reactor, self.connect_timeout)
        try:
            await connectProtocol(self.endpoint, protocol)
        except Exception as exc:
            raise RedisUnavailable(f"cannot connect to {self.address}: {exc}") from exc
        setup: list[tuple[str, list[Arg]]] = []
        if self.password:
            setup.append(("AUTH", ["AUTH", self.password]))
        if self.db:
            setup.append(("SELECT", ["SELECT", self.db]))
        if setup:
            replies = await protocol.send([command for _, command in setup])
            for (name, _), reply in zip(setup, replies):
                if isinstance(reply, ReplyError):
                    cast(Any, protocol.transport).loseConnection()
                    # The password is never part of the message.
                    raise RedisUnavailable(f"{name} refused by {self.address}: {reply.message}")
        protocol.command_timeout = self.command_timeout
        _log.debug("connected to redis {address}", component="redis", address=self.address)
        return protocol

    async def pipeline(self, commands: Sequence[Sequence[Arg]]) -> list[Reply]:
        """Send ``commands`` together; their replies in order (error replies in place)."""
        protocol = await self._connection()
        return await protocol.send(commands)

    async def command(self, *args: Arg) -> Reply:
        """One command's reply; an error reply raises :class:`ReplyError`."""
        (reply,) = await self.pipeline([args])
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    async def transaction(self, commands: Sequence[Sequence[Arg]]) -> list[Reply] | None:
        """``MULTI``, ``commands``, ``EXEC`` in one write: EXEC's replies (errors in place), or
        None when a ``WATCH`` aborted it; a command refused while queueing raises its
        :class:`ReplyError` (Redis then discards the whole transaction: EXECABORT)."""
        replies = await self.pipeline([["MULTI"], *commands, ["EXEC"]])
        for reply in replies[:-1]:
            if isinstance(reply, ReplyError):
                raise reply
        result = replies[-1]
        if isinstance(result, ReplyError):
            raise result
        if result is not None and not isinstance(result, list):
            raise RedisUnavailable(f"EXEC answered {result!r}")
        return result

    async def ping(self) -> None:
        reply = await self.command("PING")
        if reply != "PONG":
            raise RedisUnavailable(f"PING answered {reply!r}")

    async def incrby(self, key: str, delta: int) -> int:
        return _integer(await self.command("INCRBY", key, delta))

    async def get(self, key: str) -> bytes | None:
        reply = await self.command("GET", key)
        if reply is not None and not isinstance(reply, bytes):
            raise RedisUnavailable(f"GET answered {reply!r}")
        return reply

    async def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        reply = await self.command("MGET", *keys)
        if not isinstance(reply, list) or len(reply) != len(keys):
            raise RedisUnavailable(f"MGET answered {reply!r}")
        return [item if isinstance(item, bytes) else None for item in reply]

    def disconnect(self) -> None:
        """Drop the connection (commands in flight fail); the next command reconnects."""
        protocol = self._protocol
        self._protocol = None
        if protocol is not None and protocol.transport is not None:
            cast(Any, protocol.transport).abortConnection()

    async def close(self) -> None:
        """Close the connection for good (commands still unanswered fail)."""
        self._closing = True
        protocol = self._protocol
        self._protocol = None
        if protocol is not None and protocol.usable and protocol.transport is not None:
            cast(Any, protocol.transport).loseConnection()
            await protocol.closed


def _integer(reply: Reply) -> int:
    if not isinstance(reply, int) or isinstance(reply, bool):
        raise RedisUnavailable(f"expected an integer, got {reply!r}")
    return reply
