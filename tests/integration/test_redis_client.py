"""The Redis client and the counter scripts against the real Redis on 127.0.0.1 (shared server,
a key prefix per test): round trips, pipelines, transactions, and each script's once-only rule."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_twisted
from twisted.internet import reactor

from s3orch.redis.client import RedisClient, RedisUnavailable
from s3orch.redis.resp import ReplyError
from s3orch.redis.shared import Batch, CounterKey, RedisCounterStore
from tests.support.redis import shared_redis_address
from tests.support.servers import free_port


@pytest.fixture
def address() -> str:
    return shared_redis_address()


@pytest.fixture
def prefix() -> str:
    return f"s3orch-test-{uuid.uuid4().hex[:12]}"


@pytest_twisted.async_yield_fixture
async def client(address: str) -> AsyncIterator[RedisClient]:
    c = RedisClient.from_address(reactor, address)
    yield c
    await c.close()


@pytest_twisted.ensureDeferred
async def test_incrby_get_mget_round_trip(client: RedisClient, prefix: str) -> None:
    assert await client.incrby(f"{prefix}:a", 5) == 5
    assert await client.incrby(f"{prefix}:a", -2) == 3
    assert await client.incrby(f"{prefix}:b", 1 << 40) == 1 << 40
    assert await client.get(f"{prefix}:a") == b"3"
    assert await client.get(f"{prefix}:missing") is None
    assert await client.mget([f"{prefix}:a", f"{prefix}:missing", f"{prefix}:b"]) == [b"3", None, b"%d" % (1 << 40)]
    await client.ping()
    await client.command("DEL", f"{prefix}:a", f"{prefix}:b")


@pytest_twisted.ensureDeferred
async def test_a_pipeline_of_a_thousand_commands_gets_every_reply_in_order(client: RedisClient, prefix: str) -> None:
    key = f"{prefix}:n"
    replies = await client.pipeline([["INCRBY", key, 1] for _ in range(1000)] + [["GET", key], ["LPUSH", key, "x"]])
    assert replies[:1000] == list(range(1, 1001))
    assert replies[1000] == b"1000"
    error = replies[1001]
    assert isinstance(error, ReplyError) and error.kind == "WRONGTYPE"  # an error in place, the rest kept
    assert await client.command("DEL", key) == 1


@pytest_twisted.ensureDeferred
async def test_concurrent_callers_share_one_connection_and_each_gets_its_own_replies(
    client: RedisClient, prefix: str
) -> None:
    from twisted.internet.defer import Deferred, gatherResults

    calls = [Deferred.fromCoroutine(client.incrby(f"{prefix}:{i % 7}", i)) for i in range(200)]
    results = await gatherResults(calls)
    expected: dict[int, int] = {}
    for i, result in enumerate(results):
        expected[i % 7] = expected.get(i % 7, 0) + i
        assert result == expected[i % 7]
    await client.command("DEL", *[f"{prefix}:{i}" for i in range(7)])


@pytest_twisted.ensureDeferred
async def test_multi_exec_is_atomic_and_watch_aborts_it(address: str, client: RedisClient, prefix: str) -> None:
    key = f"{prefix}:t"
    assert await client.transaction([["INCRBY", key, 2], ["INCRBY", key, 3], ["GET", key]]) == [2, 5, b"5"]
    # A WATCHed key changed by another client before EXEC: the transaction does not run.
    other = RedisClient.from_address(reactor, address)
    try:
        assert await client.command("WATCH", key) == "OK"
        await other.incrby(key, 100)
        assert await client.transaction([["INCRBY", key, 1]]) is None
        assert await client.get(key) == b"105"
    finally:
        await other.close()
    # A command refused while queueing discards the whole transaction.
    with pytest.raises(ReplyError):
        await client.transaction([["INCRBY", key, 1], ["INCRBY", key]])
    assert await client.get(key) == b"105"
    await client.command("DEL", key)


@pytest_twisted.ensureDeferred
async def test_select_uses_another_database(address: str, prefix: str) -> None:
    zero = RedisClient.from_address(reactor, address)
    three = RedisClient.from_address(reactor, address, db=3)
    try:
        await three.incrby(f"{prefix}:db", 1)
        assert await zero.get(f"{prefix}:db") is None
        assert await three.get(f"{prefix}:db") == b"1"
        await three.command("DEL", f"{prefix}:db")
    finally:
        await zero.close()
        await three.close()


@pytest_twisted.ensureDeferred
async def test_a_refused_auth_and_a_closed_port_are_unavailable_naming_no_secret(address: str) -> None:
    secret = "hunter2-" + uuid.uuid4().hex
    with_password = RedisClient.from_address(reactor, address, password=secret)
    with pytest.raises(RedisUnavailable) as refused:
        await with_password.ping()
    assert "AUTH refused" in str(refused.value) and secret not in str(refused.value)
    nobody = RedisClient.from_address(reactor, f"127.0.0.1:{free_port()}", connect_timeout=2.0)
    with pytest.raises(RedisUnavailable, match="cannot connect"):
        await nobody.ping()


@pytest_twisted.ensureDeferred
async def test_the_client_reconnects_after_its_connection_is_dropped(client: RedisClient) -> None:
    await client.ping()
    client.disconnect()
    await client.ping()
    assert client.connected


@pytest_twisted.ensureDeferred
async def test_a_batch_sent_twice_is_applied_once_and_the_next_number_applies(
    client: RedisClient, prefix: str
) -> None:
    store = RedisCounterStore(client, prefix, "instance-a")
    a, b = CounterKey("b1", "2026-12", "api_requests"), CounterKey("b2", "2026-12", "egress_bytes")
    first = Batch(1, {a: 3, b: 1000})
    await store.apply([first])
    await store.apply([first])  # a retry after a lost reply
    await store.apply([first, Batch(2, {a: 1})])  # the replay: the in-doubt batch, then new deltas
    assert await store.load([a, b, CounterKey("b3", "2026-12", "api_requests")]) == [4, 1000, 0]
    # Another instance's numbers are its own.
    other = RedisCounterStore(client, prefix, "instance-b")
    await other.apply([Batch(1, {a: 10})])
    assert await store.load([a]) == [14]
    assert 0 < int(await client.command("TTL", store.applied_key)) <= 7 * 24 * 3600  # type: ignore[arg-type]
    await client.command("DEL", store.applied_key, other.applied_key, store.key(a), store.key(b))


@pytest_twisted.ensureDeferred
async def test_a_drain_zeroes_once_and_its_retry_returns_what_it_read(client: RedisClient, prefix: str) -> None:
    store = RedisCounterStore(client, prefix, "instance-a")
    a, b = CounterKey("b1", "2026-12", "api_requests"), CounterKey("b1", "2026-12", "ingress_bytes")
    await store.apply([Batch(1, {a: 7, b: 70})])
    assert await store.drain("t1", [a, b]) == [7, 70]
    await store.apply([Batch(2, {a: 1})])
    assert await store.drain("t1", [a, b]) == [7, 70]  # the same drain again: nothing read twice
    assert await store.load([a, b]) == [1, 0]
    assert await store.drain("t2", [a, b]) == [1, 0]
    assert await store.drain("t3", []) == []
    await client.command("DEL", store.applied_key, store.key(a), store.key(b), f"{prefix}:drain:t1",
                         f"{prefix}:drain:t2", f"{prefix}:drain:t3")


@pytest_twisted.ensureDeferred
async def test_two_gateways_see_each_others_counts(address: str, prefix: str) -> None:
    from twisted.internet.task import deferLater

    from s3orch.redis.counters import SharedCounters

    gateways = [
        SharedCounters(
            RedisCounterStore(RedisClient.from_address(reactor, address), prefix, f"gw{n}"),
            failure_threshold=3,
            open_timeout=15.0,
            clock=reactor,
        )
        for n in (1, 2)
    ]
    a = CounterKey("b1", "2026-12", "api_requests")
    try:
        for gateway in gateways:
            await gateway.start()
        gateways[0].add(a, 3)
        gateways[1].add(a, 4)
        # Its own add is counted, pushed or not; the other's once pushed.
        assert (await gateways[0].load([a]))[a] in (3, 7)
        await deferLater(reactor, 0.05, lambda: None)  # both pushes done (a reactor turn each)
        assert await gateways[0].load([a]) == {a: 7}
        assert await gateways[1].load([a]) == {a: 7}
    finally:
        for gateway in gateways:
            await gateway.close()
