"""The usage counters' layout in Redis and the two scripts that make their updates exactly-once.

Keys (all under ``redis.key_prefix``)::

    {prefix}:usage:{backend}:{period}:{kind}   a counter (INCRBY; GETSET to 0 by the flush)
    {prefix}:applied:{instance}               the last batch sequence number applied for one
                                              gateway process (expires after APPLIED_TTL idle)
    {prefix}:drain:{token}                    what one drain read (expires after DRAIN_TTL)

Why scripts and not ``MULTI``/``INCRBY``/``EXEC`` alone: when a connection dies after a command
was written and before its reply was read, whether Redis applied it is unknown.  Retrying an
INCRBY then risks a double count, dropping it a lost one.  A ``SET NX`` marker queued in the same
``MULTI`` records that the transaction ran, but cannot stop the INCRBYs next to it (a Redis
transaction neither branches nor rolls back), so a retry racing a late original would still
count twice.  A script runs atomically *and* can branch: :data:`APPLY_SCRIPT` applies a batch
only if its sequence number is above the gateway's last applied one, in the same atomic step
that records it.  A batch whose outcome is unknown is therefore simply sent again, as it was,
with the same number: applied once whatever happened to the first send, even if that first
send is executed after the retry.  :data:`DRAIN_SCRIPT` does the same for the flush's
destructive read: it records what it read under the drain's token, and a retry returns the
record instead of reading again.  Several batches go in one ``MULTI``/``EXEC`` (the replay after
an outage is one transaction).  Every instance has its own sequence key, so instances never
block each other; INCRBY stays additive across them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from s3orch.redis.client import RedisClient, RedisUnavailable
from s3orch.redis.resp import Arg, Reply, ReplyError

__all__ = ["APPLIED_TTL", "APPLY_SCRIPT", "DRAIN_SCRIPT", "Batch", "CounterKey", "RedisCounterStore"]

#: Seconds an instance's applied-sequence key outlives its last batch: a batch left in doubt
#: must be resolved within this (a gateway retries every probe, 5 s, while Redis answers).
APPLIED_TTL = 7 * 24 * 3600
#: Seconds a drain's record is kept for a retry of the same drain.
DRAIN_TTL = 24 * 3600

#: KEYS: the instance's applied key, then the counters; ARGV: sequence number, TTL, then one
#: delta per counter.  1 if applied now, 0 if it had been already.
APPLY_SCRIPT = """
local seq = tonumber(ARGV[1])
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
if seq <= last then return 0 end
for i = 2, #KEYS do redis.call('INCRBY', KEYS[i], ARGV[i + 1]) end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""

#: KEYS: the drain's record key, then the counters; ARGV: the record's TTL.  The values read
#: (comma-separated, in KEYS order), read now or by an earlier run of the same drain.
DRAIN_SCRIPT = """
local rec = redis.call('GET', KEYS[1])
if rec then return rec end
local out = {}
for i = 2, #KEYS do out[i - 1] = redis.call('GETSET', KEYS[i], '0') or '0' end
rec = table.concat(out, ',')
redis.call('SET', KEYS[1], rec, 'EX', ARGV[1])
return rec
"""


class CounterKey(NamedTuple):
    """One usage counter: a backend's count of one kind (``api_requests``, ``egress_bytes``,
    ``ingress_bytes``) in one period (``YYYY-MM``, UTC)."""

    backend: str
    period: str
    kind: str


class Batch(NamedTuple):
    """Deltas sent to Redis as one unit, numbered in the order one instance sends them."""

    seq: int
    deltas: dict[CounterKey, int]


class RedisCounterStore:
    """The counters of one gateway process (``instance``) in one Redis, through ``client``."""

    def __init__(self, client: RedisClient, key_prefix: str, instance: str) -> None:
        self.client = client
        self.key_prefix = key_prefix
        self.instance = instance
        self.address = client.address

    def key(self, counter: CounterKey) -> str:
        return f"{self.key_prefix}:usage:{counter.backend}:{counter.period}:{counter.kind}"

    @property
    def applied_key(self) -> str:
        return f"{self.key_prefix}:applied:{self.instance}"

    async def ping(self) -> None:
        await self.client.ping()

    async def apply(self, batches: Sequence[Batch]) -> None:
        """Apply every batch not applied yet, in one transaction; raises
        :class:`RedisUnavailable` (outcome unknown) or :class:`ReplyError` (refused)."""
        commands: list[list[Arg]] = []
        for batch in batches:
            keys = [self.key(counter) for counter in batch.deltas]
            commands.append(
                ["EVAL", APPLY_SCRIPT, 1 + len(keys), self.applied_key, *keys, batch.seq, APPLIED_TTL,
                 *batch.deltas.values()]
            )
        results = await self.client.transaction(commands)
        if results is None:
            raise RedisUnavailable("transaction aborted")
        for result in results:
            if isinstance(result, ReplyError):
                raise result

    async def load(self, counters: Sequence[CounterKey]) -> list[int]:
        """The counters' current values (a missing counter is 0)."""
        values = await self.client.mget([self.key(counter) for counter in counters])
        return [_count(value) for value in values]

    async def drain(self, token: str, counters: Sequence[CounterKey]) -> list[int]:
        """Read the counters and set them to 0, once per ``token`` (a retry with the same
        token returns what the first run read)."""
        keys = [self.key(counter) for counter in counters]
        reply = await self.client.command(
            "EVAL", DRAIN_SCRIPT, 1 + len(keys), f"{self.key_prefix}:drain:{token}", *keys, DRAIN_TTL
        )
        return _record(reply, len(keys))

    async def close(self) -> None:
        await self.client.close()


def _count(value: bytes | None) -> int:
    if value is None:
        return 0
    try:
        return int(value)
    except ValueError:
        raise RedisUnavailable(f"a counter holds {value[:40]!r}, not an integer") from None


def _record(reply: Reply, expected: int) -> list[int]:
    if not isinstance(reply, bytes):
        raise RedisUnavailable(f"drain answered {reply!r}")
    values = [_count(part) for part in reply.split(b",")] if reply else []
    if len(values) != expected:
        raise RedisUnavailable(f"drain record has {len(values)} values, expected {expected}")
    return values
