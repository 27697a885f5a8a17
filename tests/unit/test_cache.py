"""The object data cache on its own (BEHAVIOURS §1.23), on a Clock: LRU within the byte budget,
TTL, admission from the size before any byte, write-id keying, fills committed only on a complete
(and verified) body and voided by invalidation, the in-memory stream a hit is relayed from, and
the ``cache.*`` keys.  The GET path through a whole gateway is tests/inproc/test_object_cache.py."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock

from s3orch.admin.routes import match
from s3orch.backend.interface import BackendUnavailable, PushProducer
from s3orch.config import ConfigError
from s3orch.config.model import CacheConfig
from s3orch.config.support import refusals
from s3orch.core.cache import CHUNK, NO_CACHE, MemoryStream, ObjectCache
from s3orch.observe.metrics import REGISTRY
from s3orch.store.records import ObjectRecord
from s3orch.testing.config import config_from_string
from s3orch.testing.harness import DEFAULT_CONFIG

KiB = 1024


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def rec(key: str, size: int, write_id: str = "w1", bucket: str = "photos") -> ObjectRecord:
    return ObjectRecord(bucket=bucket, key=key, write_id=write_id, size=size, etag="e", last_modified=0.0)


def make(max_size: int = 100 * KiB, max_object_size: int = 40 * KiB, ttl: float = 60.0) -> tuple[ObjectCache, Clock]:
    clock = Clock()
    return ObjectCache(CacheConfig(True, max_size, max_object_size, ttl), clock), clock


def put(cache: ObjectCache, record: ObjectRecord, data: bytes | None = None) -> bool:
    """Fill ``record`` as a full GET would (two chunks); True when the cache took the fill."""
    body = data if data is not None else b"x" * record.size
    fill = cache.fill(record)
    if fill is None:
        return False
    fill.update(body[: len(body) // 2])
    fill.update(body[len(body) // 2 :])
    fill.finish()
    fill.close()
    return True


def test_a_disabled_cache_admits_nothing_and_the_enabled_one_serves_hits() -> None:
    assert not NO_CACHE.admits(1) and NO_CACHE.fill(rec("a", 10)) is None and NO_CACHE.get(rec("a", 10)) is None
    cache, _ = make()
    hits, misses = metric("s3o_cache_hits_total"), metric("s3o_cache_misses_total")
    assert cache.get(rec("a", 10)) is None
    assert put(cache, rec("a", 10), b"0123456789")
    assert cache.get(rec("a", 10)) == b"0123456789"
    assert (metric("s3o_cache_hits_total") - hits, metric("s3o_cache_misses_total") - misses) == (1, 1)
    assert metric("s3o_cache_entries") == 1 and metric("s3o_cache_size_bytes") == 10


def test_admission_is_decided_from_the_size_before_any_byte() -> None:
    cache, _ = make(max_object_size=40 * KiB)
    assert cache.fill(rec("big", 40 * KiB + 1)) is None  # refused before a byte is read
    assert cache.fill(rec("empty", 0)) is None
    misses = metric("s3o_cache_misses_total")
    assert cache.get(rec("big", 40 * KiB + 1)) is None
    assert metric("s3o_cache_misses_total") == misses  # never cacheable: not a miss
    fill = cache.fill(rec("fits", 40 * KiB))
    assert fill is not None
    assert cache.fill(rec("fits", 40 * KiB)) is None  # one fill per key at a time
    fill.close()
    assert cache.fill(rec("fits", 40 * KiB)) is not None


def test_fills_in_flight_count_against_the_budget() -> None:
    cache, _ = make(max_size=100 * KiB, max_object_size=40 * KiB)
    fills = [cache.fill(rec(f"k{i}", 40 * KiB)) for i in range(3)]
    assert fills[0] is not None and fills[1] is not None and fills[2] is None
    assert cache.stats()["filling"] == 2


def test_the_byte_budget_evicts_least_recently_used_first() -> None:
    cache, _ = make(max_size=100 * KiB, max_object_size=40 * KiB)
    evictions = metric("s3o_cache_evictions_total")
    for key in ("a", "b"):
        put(cache, rec(key, 40 * KiB))
    assert cache.get(rec("a", 40 * KiB)) is not None  # a is now the most recently used
    put(cache, rec("c", 40 * KiB))  # 120 KiB > 100 KiB: b goes
    assert cache.get(rec("b", 40 * KiB)) is None
    assert cache.get(rec("a", 40 * KiB)) is not None and cache.get(rec("c", 40 * KiB)) is not None
    assert metric("s3o_cache_evictions_total") - evictions == 1
    assert cache.size == 80 * KiB <= cache.max_size


def test_an_entry_expires_after_ttl() -> None:
    cache, clock = make(ttl=300.0)
    put(cache, rec("a", 10))
    clock.advance(299)
    put(cache, rec("b", 10))
    assert cache.get(rec("a", 10)) is not None  # a hit does not extend the TTL
    clock.advance(1)
    assert cache.get(rec("a", 10)) is None
    assert cache.stats()["entries"] == 1 and cache.size == 10
    clock.advance(299)
    assert cache.stats()["entries"] == 0 and metric("s3o_cache_size_bytes") == 0


def test_an_entry_serves_only_its_own_write() -> None:
    cache, _ = make()
    put(cache, rec("a", 10, "old"), b"old bytes!")
    assert cache.get(rec("a", 10, "new")) is None  # another write of the key: a miss...
    assert cache.get(rec("a", 10, "old")) is None  # ...and the stale entry is gone
    assert cache.stats()["entries"] == 0


def test_a_fill_commits_only_a_complete_body() -> None:
    cache, _ = make()
    record = rec("a", 10)
    fill = cache.fill(record)
    assert fill is not None
    fill.update(b"12345")
    fill.close()  # the relay failed or the client left: finish never came
    assert cache.get(record) is None and cache.stats()["filling"] == 0
    fill = cache.fill(record)
    assert fill is not None
    fill.update(b"12345678901")  # longer than the record
    fill.finish()
    assert cache.get(record) is None


def test_an_invalidation_voids_the_fill_in_flight() -> None:
    cache, _ = make()
    record = rec("dir/a", 10)
    fill = cache.fill(record)
    assert fill is not None
    fill.update(b"12345")
    assert not cache.invalidate("photos", "dir/a")  # a write of this instance meanwhile
    fill.update(b"67890")
    fill.finish()
    assert cache.get(record) is None
    fill = cache.fill(record)
    assert fill is not None
    assert cache.invalidate_prefix("photos/dir/") == 0
    fill.finish()
    assert cache.get(record) is None


class Mismatch(BackendUnavailable):
    pass


class FailingVerifier:
    def __init__(self) -> None:
        self.seen = b""

    def update(self, data: bytes) -> None:
        self.seen += data

    def finish(self) -> None:
        raise Mismatch("digest mismatch")


def test_a_body_the_verifier_refuses_is_never_committed() -> None:
    cache, _ = make()
    record = rec("a", 4)
    verifier = FailingVerifier()
    fill = cache.fill(record, verifier)
    assert fill is not None
    fill.update(b"abcd")
    with pytest.raises(Mismatch):
        fill.finish()
    fill.close()
    assert verifier.seen == b"abcd" and cache.get(record) is None


def test_invalidate_key_prefix_and_flush() -> None:
    cache, _ = make()
    for key in ("a/1", "a/2", "b/1"):
        put(cache, rec(key, 10))
    put(cache, rec("a/1", 10, bucket="docs"))
    assert cache.invalidate("photos", "b/1") and not cache.invalidate("photos", "b/1")
    assert cache.invalidate_prefix("photos/a/") == 2
    assert cache.get(rec("a/1", 10, bucket="docs")) is not None
    assert cache.flush() == 1 and cache.size == 0


class Consumer:
    """A relay-like consumer that pauses its producer after each write."""

    def __init__(self, pause: bool) -> None:
        self.pause = pause
        self.chunks: list[bytes] = []
        self.producer: PushProducer | None = None

    def registerProducer(self, producer: PushProducer, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def write(self, data: bytes) -> None:
        self.chunks.append(data)
        if self.pause and self.producer is not None:
            self.producer.pauseProducing()


def test_a_hit_streams_in_chunks_with_backpressure_and_slices_ranges() -> None:
    data = bytes(range(256)) * (3 * CHUNK // 256 + 7)
    consumer = Consumer(pause=True)
    stream = MemoryStream(data, 10, len(data) - 5)
    done: list[Any] = []
    stream.deliver(consumer).addBoth(done.append)
    assert len(consumer.chunks) == 1 and not done  # paused after the first chunk
    while not done:
        assert consumer.producer is not None
        consumer.producer.resumeProducing()
    assert done == [None] and max(len(c) for c in consumer.chunks) == CHUNK
    assert b"".join(consumer.chunks) == data[10 : len(data) - 4]


def test_a_cancelled_hit_stops_writing() -> None:
    consumer = Consumer(pause=True)
    stream = MemoryStream(b"x" * (4 * CHUNK))
    done: list[Any] = []
    stream.deliver(consumer).addBoth(done.append)
    stream.cancel()
    assert len(done) == 1 and done[0].check(CancelledError)
    assert len(consumer.chunks) == 1 and consumer.producer is None


def test_sizes_take_binary_suffixes_and_max_object_size_fits_max_size() -> None:
    config = config_from_string(
        DEFAULT_CONFIG + "cache:\n  enabled: true\n  max_size: 2GB\n  max_object_size: 512KB\n  ttl: 90s\n"
    )
    assert (config.cache.max_size, config.cache.max_object_size, config.cache.ttl) == (2 << 30, 512 * KiB, 90.0)
    assert refusals(config) == []  # built: honoured, not refused
    defaults = config_from_string(DEFAULT_CONFIG).cache
    assert (defaults.enabled, defaults.max_size, defaults.max_object_size, defaults.ttl) == (
        False, 256 << 20, 10 << 20, 300.0,
    )
    with pytest.raises(ConfigError, match="max_object_size"):
        config_from_string(DEFAULT_CONFIG + "cache:\n  enabled: true\n  max_size: 1MB\n  max_object_size: 2MB\n")


def test_a_last_key_segment_of_an_admin_route_takes_the_rest_of_the_path() -> None:
    assert match("cache/keys/{key}", "cache/keys/photos/dir/a") == {"key": "photos/dir/a"}
    assert match("cache/keys/{key}", "cache/keys/photos") == {"key": "photos"}
    assert match("cache/keys/{key}", "cache/keys") is None
    assert match("backends/{name}", "backends/a/b") is None  # other names stay one segment
    assert match("backends/{name}/drain", "backends/a/drain") == {"name": "a"}
