"""The object data cache's metrics (BEHAVIOURS §1.23), on the process registry of
:mod:`s3orch.observe.metrics` (kept apart: that module is at its size limit)."""

from __future__ import annotations

from prometheus_client import Counter

from s3orch.observe.metrics import REGISTRY
from s3orch.observe.multiproc import Gauge

CACHE_HITS = Counter("s3o_cache_hits_total", "GETs answered from the object data cache", registry=REGISTRY)
CACHE_MISSES = Counter(
    "s3o_cache_misses_total", "GETs of cacheable objects the object data cache did not hold", registry=REGISTRY
)
CACHE_EVICTIONS = Counter(
    "s3o_cache_evictions_total", "Object data cache entries dropped to stay within max_size", registry=REGISTRY
)
CACHE_SIZE = Gauge("s3o_cache_size_bytes", "Bytes held by the object data cache", registry=REGISTRY)
CACHE_ENTRIES = Gauge("s3o_cache_entries", "Objects held by the object data cache", registry=REGISTRY)
