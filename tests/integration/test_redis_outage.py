"""Two gateways' shared counters on a Redis of their own that is killed, restarted, paused and
resumed under load: afterwards the counts (flushed + still in Redis) equal the adds made, none
lost and none doubled (issue 17's acceptance for Redis, at the counters' level)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall, deferLater
from twisted.internet.threads import deferToThread

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
