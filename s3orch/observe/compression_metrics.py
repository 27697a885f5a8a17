"""Compression metrics (BEHAVIOURS §1.20), on the process registry of :mod:`s3orch.observe.metrics`
(kept apart: that module is at its size limit).  Read amplification = fetched / served bytes."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from s3orch.observe.metrics import REGISTRY

COMPRESSION_OPERATIONS = Counter(
    "s3o_compression_operations_total",
    "Extents compressed or decompressed (op: compress, decompress, decompress_range)",
    ["op"],
    registry=REGISTRY,
)
COMPRESSION_SKIPPED = Counter(
    "s3o_compression_skipped_total",
    "Extents stored as is (reason: below_min_size, ratio)",
    ["reason"],
    registry=REGISTRY,
)
COMPRESSION_ERRORS = Counter(
    "s3o_compression_errors_total",
    "Compressed streams refused or not written (op, kind: corrupt, truncated, spool)",
    ["op", "kind"],
    registry=REGISTRY,
)
COMPRESSION_BYTES_IN = Counter(
    "s3o_compression_logical_bytes_total", "Bytes clients wrote into compressed extents", registry=REGISTRY
)
COMPRESSION_BYTES_SAVED = Counter(
    "s3o_compression_bytes_saved_total",
    "Logical minus stored bytes of the extents written compressed",
    registry=REGISTRY,
)
COMPRESSION_RATIO = Histogram(
    "s3o_compression_ratio",
    "Stored / logical size of each extent compressed (kept or not)",
    buckets=(0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0, 1.1),
    registry=REGISTRY,
)
COMPRESSION_READ_FETCHED = Counter(
    "s3o_compression_read_fetched_bytes_total", "Stored bytes fetched to serve compressed reads", registry=REGISTRY
)
COMPRESSION_READ_SERVED = Counter(
    "s3o_compression_read_served_bytes_total", "Logical bytes served from compressed reads", registry=REGISTRY
)
COMPRESSION_READ_AMPLIFICATION = Histogram(
    "s3o_compression_read_amplification",
    "Fetched stored bytes / served bytes of each compressed read",
    buckets=(0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 16.0, 64.0, 256.0, 1024.0),
    registry=REGISTRY,
)
COMPRESS_EXISTING_OBJECTS = Counter(
    "s3o_compress_existing_objects",
    "Objects handled by compress-existing (status: success, skipped, failed)",
    ["status"],
    registry=REGISTRY,
)
DECOMPRESS_EXISTING_OBJECTS = Counter(
    "s3o_decompress_existing_objects",
    "Objects handled by decompress-existing (status: success, skipped, failed)",
    ["status"],
    registry=REGISTRY,
)
