"""Admission control: how many S3 requests may be in flight at once, as in s3-orchestrator
(the Go product s3orch re-creates).

One global pool (``server.max_concurrent_requests``), or split read and write
pools when both ``max_concurrent_reads`` and ``max_concurrent_writes`` are set.
HTTP requests never wait here: a full pool refuses at header time (the front end
answers ``503 SlowDown``).  With ``load_shed_threshold`` set, a request may also be
shed before the pool is full, with a probability rising linearly from 0 at
``floor(t x cap)`` requests in flight to 1 at ``cap``.

One credential may hold at most ``server.max_concurrent_per_credential`` slots of
each pool at once (0: a quarter of that pool, at least 1), so a single
tenant cannot take the whole pool; a request over its credential's share gets the
same ``503 SlowDown`` after authentication.

Not yet: ``admission_wait`` (waiting up to that long for a slot before refusing; the
front end decides synchronously when the headers arrive, so a wait needs the channel
to hold the request back, and the config loader warns that it is ignored), and
background workers drawing (and waiting for) slots from the same pools.

Pure bookkeeping: no Twisted, no I/O; the random source is injected for tests.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from s3orch.config.model import ServerConfig

READ_METHODS = frozenset({"GET", "HEAD"})
WRITE_METHODS = frozenset({"PUT", "POST", "DELETE"})


class Pool:
    """A counted set of slots."""

    def __init__(self, name: str, capacity: int) -> None:
        self.name = name
        self.capacity = capacity
        self.in_use = 0


@dataclass
class Slot:
    """One admitted request's place in a pool; release it exactly once."""

    pool: Pool
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.pool.in_use -= 1


@dataclass
class CredentialHold:
    """One admitted request counted against its credential's share; release exactly once."""

    admission: Admission
    credential: str
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.admission._credential_released(self.credential)


class Refused(Exception):
    """The request is not admitted: ``reason`` is "capacity" (pool full), "shed" (load
    shedding) or "credential" (its credential holds its share of the pool)."""

    def __init__(self, reason: str, pool: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.pool = pool


class Admission:
    """Decides, per request method, whether a request gets a slot now."""

    def __init__(
        self,
        *,
        max_requests: int,
        max_reads: int = 0,
        max_writes: int = 0,
        shed_threshold: float = 0.0,
        per_credential: int = 0,
        random_source: Callable[[], float] = random.random,
    ) -> None:
        self.split = max_reads > 0 and max_writes > 0
        self.reads: Pool | None = None
        self.writes: Pool | None = None
        self.global_pool: Pool | None = None
        if self.split:
            self.reads = Pool("read", max_reads)
            self.writes = Pool("write", max_writes)
        elif max_requests > 0:
            self.global_pool = Pool("global", max_requests)
        # else: only one split pool configured -> no admission control at all (as s3-orchestrator)
        self.shed_threshold = shed_threshold if 0 < shed_threshold < 1 else 0.0
        self.random = random_source
        #: Explicit per-credential cap (0: a quarter of the request's pool).
        self.per_credential = per_credential
        #: Slots held per "pool/credential"; an entry disappears when its count reaches 0.
        self.by_credential: dict[str, int] = {}

    @classmethod
    def from_config(
        cls, server: ServerConfig, random_source: Callable[[], float] = random.random
    ) -> Admission:
        return cls(
            max_requests=server.max_concurrent_requests,
            max_reads=server.max_concurrent_reads,
            max_writes=server.max_concurrent_writes,
            shed_threshold=server.load_shed_threshold,
            per_credential=server.max_concurrent_per_credential,
            random_source=random_source,
        )

    def pool_for(self, method: str) -> Pool | None:
        """The pool a request with this method draws from (None: not limited)."""
        if self.split:
            if method in READ_METHODS:
                return self.reads
            if method in WRITE_METHODS:
                return self.writes
            return None
        return self.global_pool

    def shed_probability(self, pool: Pool) -> float:
        """Chance of shedding one more request given the pool's current occupancy."""
        if not self.shed_threshold or pool.capacity <= 0:
            return 0.0
        floor = math.floor(self.shed_threshold * pool.capacity)
        if pool.in_use < floor:
            return 0.0
        if pool.capacity <= floor:
            return 1.0
        return min(1.0, (pool.in_use - floor) / (pool.capacity - floor))

    def admit(self, method: str) -> Slot | None:
        """A slot for this request, None if it is not limited; raises Refused."""
        pool = self.pool_for(method)
        if pool is None:
            return None
        if pool.in_use >= pool.capacity:
            raise Refused("capacity", pool.name)
        probability = self.shed_probability(pool)
        if probability > 0 and self.random() < probability:
            raise Refused("shed", pool.name)
        pool.in_use += 1
        return Slot(pool)

    def credential_limit(self, slot: Slot | None) -> int | None:
        """How many slots one credential may hold for a request holding ``slot`` (None: no cap)."""
        if self.per_credential > 0:
            return self.per_credential
        if slot is None:
            return None
        return max(1, slot.pool.capacity // 4)

    def admit_credential(self, credential: str, slot: Slot | None) -> CredentialHold | None:
        """Count an authenticated request against its credential's share of its pool.

        Shares are per pool: reads in flight do not use up a credential's share of
        the write pool.  Raises Refused("credential") when the share is taken.
        """
        limit = self.credential_limit(slot)
        if limit is None:
            return None
        pool = slot.pool.name if slot is not None else "none"
        key = f"{pool}/{credential}"
        held = self.by_credential.get(key, 0)
        if held >= limit:
            raise Refused("credential", pool)
        self.by_credential[key] = held + 1
        return CredentialHold(self, key)

    def _credential_released(self, credential: str) -> None:
        held = self.by_credential.get(credential, 0) - 1
        if held > 0:
            self.by_credential[credential] = held
        else:
            self.by_credential.pop(credential, None)
