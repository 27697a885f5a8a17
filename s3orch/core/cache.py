"""The object data cache (``cache.*``, BEHAVIOURS §1.23): whole plaintext bodies of small objects
in memory, per instance, LRU within a byte budget, each entry living at most ``ttl``.

**Keying.** An entry is the bytes of one *write* (``bucket``, ``key``, ``write_id``): a GET always
reads the object's record first (the database, or the journal in degraded mode) and only the entry
of that record's write answers it, so a stale entry can never serve a newer write.  Headers are
never cached: a hit answers with the headers of the record just read, exactly as a miss does.

**Admission** is decided from the record's size before any byte is read: an object larger than
``max_object_size`` is never buffered (the original read every body into memory to decide, #654).
An admitted full GET's body is teed (:class:`CacheFill`, the relay's verifier hook, so backpressure
is the relay's) and the entry is committed only when the whole body arrived (and, with
``integrity.verify_on_read``, was verified).  One fill per key at a time, and the bytes being
filled count against ``max_size`` too, so concurrent misses cannot multiply the memory.

**Invalidation.** Every write of this instance (PUT, copy, delete, DeleteObjects, Complete) drops
the key's entry and voids a fill in flight.  Other instances are not told: an entry there serves
only its own write, so after another instance's overwrite the database record misses at once; only
a record read from the degraded-mode journal (which may itself be stale) can meet an old entry, for
at most ``ttl``.  A hit is served in degraded mode: it is the bytes of the write the journal names,
what a backend read of that record would return.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IReactorTime

from s3orch.backend.interface import IBodyConsumer
from s3orch.config.model import CacheConfig
from s3orch.observe.cache_metrics import CACHE_ENTRIES, CACHE_EVICTIONS, CACHE_HITS, CACHE_MISSES, CACHE_SIZE
from s3orch.store.records import ObjectRecord

__all__ = ["CHUNK", "NO_CACHE", "CacheFill", "MemoryStream", "ObjectCache"]

#: Bytes a hit hands the client per write (the relay pauses it like a backend stream).
CHUNK = 64 * 1024


class _Verifier(Protocol):
    """The relay's ``BodyVerifier`` (``update``/``finish``, raising on a bad body)."""

    def update(self, data: bytes) -> None: ...

    def finish(self) -> None: ...


@dataclass
class _Entry:
    write_id: str
    data: bytes
    expires: float


class ObjectCache:
    """An LRU of whole objects with a TTL and a byte budget (one per process)."""

    def __init__(self, config: CacheConfig, clock: IReactorTime) -> None:
        self.enabled = config.enabled
        self.max_size = config.max_size
        self.max_object_size = min(config.max_object_size, config.max_size)
        self.ttl = config.ttl
        self.clock = clock
        #: (bucket, key) -> entry, least recently used first.
        self._lru: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        #: The same keys in insertion order, which is expiry order (one TTL for all).
        self._age: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._filling: dict[tuple[str, str], CacheFill] = {}
        self._filling_bytes = 0
        self.size = 0

    # -- reading -------------------------------------------------------------------------

    def admits(self, size: int) -> bool:
        """Whether an object of ``size`` bytes may be cached (decided before reading it)."""
        return self.enabled and 0 < size <= self.max_object_size

    def get(self, record: ObjectRecord) -> bytes | None:
        """The body of ``record``'s write, if held and fresh (counts a hit or a miss; objects
        too large to be cached count as neither)."""
        if not self.admits(record.size):
            return None
        self._expire()
        name = (record.bucket, record.key)
        entry = self._lru.get(name)
        if entry is None or entry.write_id != record.write_id:
            if entry is not None:
                self._drop(name)  # an older write (a newer record was read): never again useful
            CACHE_MISSES.inc()
            return None
        self._lru.move_to_end(name)
        CACHE_HITS.inc()
        return entry.data

    def fill(self, record: ObjectRecord, inner: _Verifier | None = None) -> CacheFill | None:
        """A tee for a full GET of ``record`` (wrapping the integrity verifier ``inner``), or
        None when the object is not admitted, is being filled already or the budget is taken."""
        name = (record.bucket, record.key)
        if not self.admits(record.size) or name in self._filling:
            return None
        if self._filling_bytes + record.size > self.max_size:
            return None
        fill = CacheFill(self, record, inner)
        self._filling[name] = fill
        self._filling_bytes += record.size
        return fill

    # -- writes and the admin API ----------------------------------------------------------

    def invalidate(self, bucket: str, key: str) -> bool:
        """Forget ``bucket/key`` (a write of this instance changed it); True if an entry went."""
        name = (bucket, key)
        fill = self._filling.get(name)
        if fill is not None:
            fill.void = True
        if name not in self._lru:
            return False
        self._drop(name)
        return True

    def invalidate_prefix(self, prefix: str) -> int:
        """Forget every entry whose ``bucket/key`` starts with ``prefix``; how many went."""
        for name, fill in self._filling.items():
            if f"{name[0]}/{name[1]}".startswith(prefix):
                fill.void = True
        names = [name for name in self._lru if f"{name[0]}/{name[1]}".startswith(prefix)]
        for name in names:
            self._drop(name)
        return len(names)

    def flush(self) -> int:
        """Forget everything; how many entries went."""
        return self.invalidate_prefix("")

    def stats(self) -> dict[str, Any]:
        self._expire()
        return {
            "enabled": self.enabled,
            "entries": len(self._lru),
            "size_bytes": self.size,
            "max_size": self.max_size,
            "max_object_size": self.max_object_size,
            "ttl": self.ttl,
            "filling": len(self._filling),
        }

    # -- internals -------------------------------------------------------------------------

    def _commit(self, fill: CacheFill, data: bytes) -> None:
        self._release(fill)
        record = fill.record
        if fill.void or len(data) != record.size:
            return
        name = (record.bucket, record.key)
        if name in self._lru:
            self._drop(name)
        while self._lru and self.size + len(data) > self.max_size:
            self._drop(next(iter(self._lru)))
            CACHE_EVICTIONS.inc()
        self._lru[name] = _Entry(record.write_id, data, self.clock.seconds() + self.ttl)
        self._age[name] = None
        self.size += len(data)
        self._gauges()

    def _release(self, fill: CacheFill) -> None:
        name = (fill.record.bucket, fill.record.key)
        if self._filling.get(name) is fill:
            del self._filling[name]
            self._filling_bytes -= fill.record.size

    def _expire(self) -> None:
        if not self._age:
            return
        now = self.clock.seconds()
        while self._age:
            name = next(iter(self._age))
            if self._lru[name].expires > now:
                break
            self._drop(name)

    def _drop(self, name: tuple[str, str]) -> None:
        entry = self._lru.pop(name)
        del self._age[name]
        self.size -= len(entry.data)
        self._gauges()

    def _gauges(self) -> None:
        CACHE_SIZE.set(self.size)
        CACHE_ENTRIES.set(len(self._lru))


#: The cache of a process without ``cache.enabled``: admits nothing, holds nothing.
NO_CACHE = ObjectCache(CacheConfig(), clock=None)  # type: ignore[arg-type]  # never reads the clock


class CacheFill:
    """Tees a full GET's body into the cache through the relay's verifier hook: every byte is
    kept, and the entry is committed in :meth:`finish` (the whole body arrived and ``inner``,
    the integrity verifier, accepted it).  A relay that fails or loses its client never calls
    it; :meth:`close` then drops the bytes."""

    def __init__(self, cache: ObjectCache, record: ObjectRecord, inner: _Verifier | None) -> None:
        self.cache = cache
        self.record = record
        self.inner = inner
        #: Set by an invalidation of the key meanwhile: the bytes are not committed.
        self.void = False
        self._chunks: list[bytes] = []
        self._received = 0
        self._closed = False

    def update(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.update(data)
        if self.void:
            self._chunks = []
            return
        self._received += len(data)
        if self._received > self.record.size:
            self.void = True  # more than the record says: never cache it
            self._chunks = []
            return
        self._chunks.append(data)

    def finish(self) -> None:
        if self.inner is not None:
            self.inner.finish()  # a mismatch raises: nothing is committed
        if self._closed:
            return
        self._closed = True
        data = b"".join(self._chunks)
        self._chunks = []
        self.cache._commit(self, data)

    def close(self) -> None:
        """The GET is over: drop whatever was not committed."""
        if not self._closed:
            self._closed = True
            self._chunks = []
            self.cache._release(self)


class MemoryStream:
    """A cached body (or a slice of it) as a :class:`~s3orch.backend.interface.BackendStream`,
    so a hit goes through the same relay as a backend body: paused by a slow client, stopped
    when it leaves, in :data:`CHUNK` writes (never one write of the whole object)."""

    def __init__(self, data: bytes, start: int = 0, end: int | None = None) -> None:
        self._view = memoryview(data)
        self._pos = start
        self._end = len(data) if end is None else end + 1
        self.status = 200
        self.length: int | None = self._end - start
        self.content_range: tuple[int, int, int] | None = None
        self.headers: dict[str, str] = {}
        self._consumer: IBodyConsumer | None = None
        self._done: Deferred[None] | None = None
        self._paused = False
        self._producing = False

    def deliver(self, consumer: IBodyConsumer) -> Deferred[None]:
        if self._done is not None:
            raise RuntimeError("the body was delivered already")
        self._done = Deferred()
        self._consumer = consumer
        consumer.registerProducer(self, True)
        self._produce()
        return self._done

    def _produce(self) -> None:
        if self._producing:
            return  # resumed from inside a write: the running loop carries on
        self._producing = True
        try:
            while not self._paused and self._consumer is not None and self._pos < self._end:
                chunk = bytes(self._view[self._pos : min(self._pos + CHUNK, self._end)])
                self._pos += len(chunk)
                self._consumer.write(chunk)
        finally:
            self._producing = False
        if self._consumer is not None and self._pos >= self._end:
            self._finish(None)

    def _finish(self, error: BaseException | None) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.unregisterProducer()
        done = self._done
        if done is not None and not done.called:
            if error is None:
                done.callback(None)
            else:
                done.errback(error)

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._produce()

    def stopProducing(self) -> None:
        self.cancel()

    def cancel(self) -> None:
        if self._done is None:
            self._done = succeed(None)  # never delivered: nothing to stop
            return
        self._finish(CancelledError())
