"""Two gateways' shared counters on a Redis of their own that is killed, restarted, paused and
resumed under load: afterwards the counts (flushed + still in Redis) equal the adds made, none
lost and none doubled (issue 17's acceptance for Redis, at the counters' level)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall, deferLater
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure

from s3orch.observe.metrics import REDIS_OPERATIONS
from s3orch.redis.client import RedisClient, RedisUnavailable
from s3orch.redis.counters import SharedCounters
from s3orch.redis.shared import CounterKey, RedisCounterStore
from s3orch.workers.redis_probe import RedisProbe
from tests.support.redis import RedisServer

KEYS = [CounterKey("b1", "2026-12", "api_requests"), CounterKey("b2", "2026-12", "egress_bytes")]


async def _until(condition: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    """Poll ``condition`` on the reactor (never blocking it) until it holds."""
    waited = 0.0
    while not condition():
        assert waited < timeout, f"not reached within {timeout}s: {what}"
        await deferLater(reactor, 0.02, lambda: None)
        waited += 0.02


def _ops(operation: str, status: str) -> float:
    return REDIS_OPERATIONS.labels(operation, status)._value.get()  # type: ignore[attr-defined,no-any-return]


def _gateway(server: RedisServer, prefix: str, name: str) -> tuple[SharedCounters, RedisProbe]:
    client = RedisClient.from_address(reactor, server.endpoint, connect_timeout=0.5, command_timeout=0.5)
    counters = SharedCounters(
        RedisCounterStore(client, prefix, f"{name}-{uuid.uuid4().hex[:8]}"),
        failure_threshold=2,
        open_timeout=0.3,
        clock=reactor,
    )
    return counters, RedisProbe(counters, reactor, interval=0.1)


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_redis_killed_and_paused_under_load_loses_no_count_and_doubles_none(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    await deferToThread(server.start)
    errors_before = _ops("pipeline_add", "error")
    prefix = f"s3orch-test-{uuid.uuid4().hex[:12]}"
    gateways = [_gateway(server, prefix, "gw1"), _gateway(server, prefix, "gw2")]
    added = {key: 0 for key in KEYS}
    flushed = {key: 0 for key in KEYS}
    adds = [0]
    loops: list[LoopingCall] = []
    try:
        for counters, probe in gateways:
            await counters.start()
            probe.startService()

        def traffic(counters: SharedCounters, step: int) -> None:
            key = KEYS[adds[0] % 2]
            counters.add(key, step)
            added[key] += step
            adds[0] += 1

        async def flush() -> None:
            # The flush of gateway 1 (the one holding lock 1007): drain into "PostgreSQL".
            try:
                taken = await gateways[0][0].drain(KEYS)
            except RedisUnavailable:
                return
            for key, value in taken.items():
                flushed[key] += value

        for n, (counters, _) in enumerate(gateways):
            loop = LoopingCall(traffic, counters, n + 1)
            loop.clock = reactor
            loops.append(loop)
            loop.start(0.002)
        flusher = LoopingCall(lambda: Deferred.fromCoroutine(flush()))
        loops.append(flusher)
        flusher.start(0.05)

        def all_shared() -> bool:
            return all(c.shared for c, _ in gateways)

        def none_shared() -> bool:
            return not any(c.shared for c, _ in gateways)

        async def more_adds(count: int) -> None:
            target = adds[0] + count
            await _until(lambda: adds[0] >= target, what=f"{count} more adds")

        await more_adds(200)
        await deferToThread(server.kill)  # SIGKILL: replies lost, the last writes maybe applied
        await _until(none_shared, what="both gateways counting locally after the kill")
        await more_adds(200)
        await deferToThread(server.start)  # same port, same append-only file
        await _until(all_shared, what="both gateways shared again after the restart")
        await more_adds(200)
        server.pause()  # SIGSTOP: a hang; commands time out, may be applied once it resumes
        try:
            await _until(none_shared, what="both gateways counting locally while Redis hangs")
            await more_adds(200)
        finally:
            server.resume()
        await _until(all_shared, what="both gateways shared again after the hang")
        await more_adds(200)
    finally:
        for loop in loops:
            if loop.running:
                loop.stop()
    await _until(lambda: all(c.shared and not c.local() for c, _ in gateways), what="every delta in Redis")
    await flush()
    await flush()  # a drain left in doubt by the outage is answered by the next one
    reader = RedisCounterStore(RedisClient.from_address(reactor, server.endpoint), prefix, "reader")
    in_redis = dict(zip(KEYS, await reader.load(KEYS)))
    await reader.close()
    for counters, probe in gateways:
        probe.stopService()
        await counters.close()
    await deferToThread(server.stop)
    assert adds[0] >= 1000
    assert {key: flushed[key] + in_redis[key] for key in KEYS} == added
    assert all(flushed[key] > 0 for key in KEYS)
    assert _ops("pipeline_add", "error") > errors_before  # the outages did cut pushes short
    print(f"adds={adds[0]} flushed={flushed} in_redis={in_redis} push errors={_ops('pipeline_add', 'error') - errors_before}")


class _ReplyEater:
    """A TCP relay to Redis on the test's reactor that, while ``eat`` is set, lets commands
    through and throws their replies away, resetting the client: Redis applied the command,
    the gateway never hears so (the one ambiguous failure)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.eat = False
        self.eaten = 0

    def protocol(self) -> Protocol:
        relay = self

        class Upstream(Protocol):
            def __init__(self, downstream: Protocol) -> None:
                self.downstream = downstream

            def dataReceived(self, data: bytes) -> None:
                transport = self.downstream.transport
                assert transport is not None
                if relay.eat:
                    relay.eaten += 1
                    cast(Any, transport).abortConnection()
                else:
                    transport.write(data)

            def connectionLost(self, reason: Failure = cast(Failure, None)) -> None:
                if self.downstream.transport is not None:
                    self.downstream.transport.loseConnection()

        class Downstream(Protocol):
            upstream: Upstream | None = None
            early = b""

            def connectionMade(self) -> None:
                self.transport.pauseProducing()  # type: ignore[union-attr]
                endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", relay.upstream_port)
                connectProtocol(endpoint, Upstream(self)).addCallback(self._connected)

            def _connected(self, upstream: Upstream) -> None:
                self.upstream = upstream
                self.transport.resumeProducing()  # type: ignore[union-attr]

            def dataReceived(self, data: bytes) -> None:
                assert self.upstream is not None and self.upstream.transport is not None
                self.upstream.transport.write(data)

            def connectionLost(self, reason: Failure = cast(Failure, None)) -> None:
                if self.upstream is not None and self.upstream.transport is not None:
                    self.upstream.transport.loseConnection()

        return Downstream()


@pytest_twisted.ensureDeferred
async def test_a_push_and_a_drain_applied_by_redis_whose_replies_were_lost_count_once() -> None:
    from tests.support.redis import shared_redis_address

    host, _, port = shared_redis_address().rpartition(":")
    eater = _ReplyEater(int(port))
    listening = reactor.listenTCP(0, Factory.forProtocol(eater.protocol), interface="127.0.0.1")  # type: ignore[attr-defined]
    prefix = f"s3orch-test-{uuid.uuid4().hex[:12]}"
    via_relay = RedisClient(reactor, "127.0.0.1", listening.getHost().port, command_timeout=2.0)
    counters = SharedCounters(
        RedisCounterStore(via_relay, prefix, "gw1"), failure_threshold=1, open_timeout=0.2, clock=reactor
    )
    direct = RedisCounterStore(RedisClient(reactor, host, int(port)), prefix, "reader")
    try:
        await counters.start()
        eater.eat = True
        counters.add(KEYS[0], 5)
        await _until(lambda: not counters.shared, what="the lost reply opens the breaker")
        assert eater.eaten >= 1
        assert await direct.load(KEYS) == [5, 0]  # applied, though the gateway cannot know
        assert counters.local() == {KEYS[0]: 5}  # in doubt: kept
        counters.add(KEYS[1], 7)
        eater.eat = False
        await deferLater(reactor, 0.25, lambda: None)  # the open timeout
        assert await counters.push()  # the replay: the in-doubt batch again, and the new one
        assert counters.shared and counters.local() == {}
        assert await direct.load(KEYS) == [5, 7]  # not 10: the retry was recognised

        eater.eat = True
        with pytest.raises(RedisUnavailable):
            await counters.drain(KEYS)
        assert await direct.load(KEYS) == [0, 0]  # read and zeroed; the values lost on the way
        eater.eat = False
        await deferLater(reactor, 0.25, lambda: None)
        await counters.probe()
        counters.add(KEYS[0], 1)
        await _until(lambda: counters.shared and not counters.local(), what="the new add pushed")
        assert await counters.drain(KEYS) == {KEYS[0]: 5, KEYS[1]: 7}  # the lost drain's record
        assert await counters.drain(KEYS) == {KEYS[0]: 1}
    finally:
        await counters.close()
        await direct.close()
        await listening.stopListening()
