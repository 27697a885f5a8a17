"""What the bench measures: the targets, the workloads (an operation at a concurrency on objects
of one size), which ones ``--only`` selects, the A/B plan, and how a multipart upload is cut."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass

KiB = 1024
MiB = 1024 * KiB
REGION = "us-east-1"

SMALL_SIZE = 4 * KiB
#: Objects that GET and HEAD cycle through (seeded before the rounds).
READ_KEYS = 256
#: Keys under the LIST prefix, and the page size asked for: every LIST returns a full, truncated page.
LIST_KEYS = 200
LIST_MAX_KEYS = 100
#: Chunk size for streaming large bodies in and out (never a whole large body in memory).
STREAM_CHUNK = 1 * MiB
#: Per-request ceilings: a hung server must fail the cell, not hang the bench.
SMALL_TIMEOUT = 30.0
LARGE_TIMEOUT = 600.0
#: Distinct error descriptions kept per cell (all errors are counted).
MAX_ERROR_SAMPLES = 5
#: S3's multipart rules: every part but the last at least MIN_PART_SIZE, at most MAX_PARTS parts.
MIN_PART_SIZE = 5 * MiB
MAX_PARTS = 10_000
#: The multipart row: an MPU_SIZE object in MPU_PART_SIZE parts, MPU_CONCURRENCY of them in
#: flight (one connection each).  --quick: 16 MiB in 5 MiB parts (5+5+5+1: a short last part).
MPU_SIZE = 64 * MiB
MPU_PART_SIZE = 8 * MiB
MPU_CONCURRENCY = 4
QUICK_MPU_SIZE = 16 * MiB
QUICK_MPU_PART_SIZE = 5 * MiB

BASELINE = "direct"
CANDIDATE = "s3orch"


@dataclass(frozen=True)
class Target:
    """Where requests go: the two targets differ only in these fields."""

    name: str
    host: str
    port: int
    bucket: str
    access_key: str
    secret_key: str
    region: str = REGION

    @property
    def authority(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Workload:
    """One row group of the table: an operation at a concurrency on objects of one size."""

    name: str  # what --only matches, e.g. "get-4k-c16"
    label: str  # what the table shows, e.g. "GET 4KiB c16"
    op: str  # put | get | head | list | put-large | get-large | mpu
    concurrency: int  # connections (mpu: parts in flight)
    size: int
    part_size: int = 0  # mpu only

    @property
    def large(self) -> bool:
        """Large rows run one timed transfer per round and report MiB/s, not ops/s."""
        return self.op in LARGE_OPS

    @property
    def unit(self) -> str:
        return "MiB/s" if self.large else "ops/s"


#: Operations that move one large object per cell (from the large file, or into a discarded body).
LARGE_OPS = ("put-large", "get-large", "mpu")


def size_label(size: int) -> str:
    return f"{size // MiB}MiB" if size >= MiB else f"{size // KiB}KiB"


def workloads(
    large_size: int = 256 * MiB, mpu_size: int = MPU_SIZE, mpu_part_size: int = MPU_PART_SIZE
) -> list[Workload]:
    """Every workload, in the order the table shows them."""
    out: list[Workload] = []
    for conc in (1, 16):
        out += [
            Workload(f"put-4k-c{conc}", f"PUT 4KiB c{conc}", "put", conc, SMALL_SIZE),
            Workload(f"get-4k-c{conc}", f"GET 4KiB c{conc}", "get", conc, SMALL_SIZE),
            Workload(f"head-4k-c{conc}", f"HEAD 4KiB c{conc}", "head", conc, SMALL_SIZE),
            Workload(
                f"list-c{conc}", f"LIST {LIST_MAX_KEYS}/{LIST_KEYS} c{conc}", "list", conc, 0
            ),
        ]
    big = size_label(large_size)
    out += [
        Workload("put-large", f"PUT {big} c1", "put-large", 1, large_size),
        Workload("get-large", f"GET {big} c1", "get-large", 1, large_size),
        Workload(
            "mpu",
            f"MPU {size_label(mpu_size)} {size_label(mpu_part_size)}\u00d7{MPU_CONCURRENCY}",
            "mpu",
            MPU_CONCURRENCY,
            mpu_size,
            mpu_part_size,
        ),
    ]
    return out


def select_workloads(available: Sequence[Workload], patterns: str | None) -> list[Workload]:
    """Workloads matching any comma-separated pattern, in table order: a glob if it has
    wildcards, else a workload's exact name ("put-4k-c1" is not also "put-4k-c16"), else a
    substring ("get", "c16").  ``None`` or an empty string selects everything."""
    if not patterns:
        return list(available)
    wanted = [p.strip() for p in patterns.split(",") if p.strip()]
    names = {w.name for w in available}

    def matches(name: str, pattern: str) -> bool:
        if any(c in pattern for c in "*?["):
            return fnmatch.fnmatchcase(name, pattern)
        if pattern in names:
            return name == pattern
        return pattern in name

    return [w for w in available if any(matches(w.name, p) for p in wanted)]


@dataclass(frozen=True)
class Step:
    """One timed cell of the plan."""

    round: int
    workload: str
    target: str


def ab_plan(workload_names: Sequence[str], targets: tuple[str, str], rounds: int) -> list[Step]:
    """Rounds of every workload against both targets back to back; the target that goes first
    alternates by round and by workload, so order effects cancel over the rounds."""
    steps: list[Step] = []
    for rnd in range(rounds):
        for index, name in enumerate(workload_names):
            first = (rnd + index) % 2
            for target in (targets[first], targets[1 - first]):
                steps.append(Step(rnd, name, target))
    return steps


@dataclass(frozen=True)
class Part:
    """One part of a multipart upload: its number (from 1) and its slice of the object."""

    number: int
    offset: int
    length: int


def part_plan(size: int, part_size: int) -> list[Part]:
    """The parts of a ``size``-byte object cut into ``part_size`` slices, the last one shorter if
    need be.  Refuses what S3 would: an empty object, a part other than the last under 5 MiB,
    more than 10,000 parts."""
    if size <= 0 or part_size <= 0:
        raise ValueError(f"object and part sizes must be positive, not {size} and {part_size}")
    if part_size < MIN_PART_SIZE and size > part_size:
        raise ValueError(f"parts but the last must be at least {MIN_PART_SIZE} bytes, not {part_size}")
    count = -(-size // part_size)
    if count > MAX_PARTS:
        raise ValueError(f"{count} parts: an upload has at most {MAX_PARTS}")
    return [Part(n + 1, n * part_size, min(part_size, size - n * part_size)) for n in range(count)]
