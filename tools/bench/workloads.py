"""What the bench measures: the targets, the workloads (an operation at a concurrency on objects
of one size), which ones ``--only`` selects, the A/B plan, and how a multipart upload is cut."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
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
#: The peer s3orch is compared with: ``rclone union`` over the same backends, behind ``rclone serve s3``.
PEER = "rclone"
#: Every target of a cell, baseline first (the ratios divide by it).
TARGETS = (BASELINE, CANDIDATE, PEER)
#: A bare twisted.web server doing no work at all (tools/bench/floor.py): what s3orch's front
#: door costs before s3orch does anything.  Measured only on the rows below, in the same rounds.
FLOOR = "floor"
FLOOR_WORKLOADS = ("get-4k-c1", "head-4k-c1", "get-4k-c16", "head-4k-c16")
#: Every target a row can have, in table order.
ALL_TARGETS = (*TARGETS, FLOOR)

#: The issue's goals (issue 20, Acceptance), quoted by the summary lines: s3orch/direct throughput
#: ratio at least this much, by workload name ...
RATIO_GOALS = {
    "put-4k-c16": 0.5,
    "get-4k-c16": 0.7,
    "head-4k-c16": 0.8,
    "list-c16": 1.0,
    "put-large": 0.8,
    "get-large": 0.9,
    "mpu": 0.85,
}
#: ... and the paced rows' p99 at most this many milliseconds, by operation (the original's figures).
P99_GOALS_MS = {"put": 7.0, "get": 3.0}

#: The paced rows: 1 KiB objects at a steady request rate (open loop), judged by their p99.
PACED_SIZE = 1 * KiB
PACED_RATE = 100.0


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
    #: Whether a HEAD of a completed multipart object shows S3's multipart ETag (MD5-N).  rclone
    #: serve s3 answers it with an empty ETag: the peer's multipart row checks the size only.
    multipart_etag: bool = True

    @property
    def authority(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Workload:
    """One row group of the table: an operation at a concurrency on objects of one size."""

    name: str  # what --only matches, e.g. "get-4k-c16"
    label: str  # what the table shows, e.g. "GET 4KiB c16"
    op: str  # put | get | head | list | put-large | get-large | mpu
    concurrency: int  # connections (mpu: parts in flight; paced rows: as many as in flight)
    size: int
    part_size: int = 0  # mpu only
    #: paced rows only: requests started per second whatever the answers' pace (open loop).
    rate: float = 0.0

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
    large_size: int = 64 * MiB, mpu_size: int = MPU_SIZE, mpu_part_size: int = MPU_PART_SIZE
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
    rate = f"{PACED_RATE:g}"
    out += [
        Workload(f"paced-put-1k-{rate}rps", f"PUT 1KiB @{rate}/s", "put", 0, PACED_SIZE, rate=PACED_RATE),
        Workload(f"paced-get-1k-{rate}rps", f"GET 1KiB @{rate}/s", "get", 0, PACED_SIZE, rate=PACED_RATE),
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


def _pattern_matches(name: str, pattern: str, names: set[str]) -> bool:
    """A glob if it has wildcards, else an exact name if it is one, else a substring."""
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(name, pattern)
    if pattern in names:
        return name == pattern
    return pattern in name


def _patterns(patterns: str) -> list[str]:
    return [p.strip() for p in patterns.split(",") if p.strip()]


def select_workloads(available: Sequence[Workload], patterns: str | None) -> list[Workload]:
    """Workloads matching any comma-separated pattern, in table order: a glob if it has
    wildcards, else a workload's exact name ("put-4k-c1" is not also "put-4k-c16"), else a
    substring ("get", "c16").  ``None`` or an empty string selects everything."""
    if not patterns:
        return list(available)
    wanted = _patterns(patterns)
    names = {w.name for w in available} | set(SCENARIOS)
    return [w for w in available if any(_pattern_matches(w.name, p, names) for p in wanted)]


#: The heavy scenarios, outside the A/B table: the gateway's peak RSS under 16 concurrent large
#: transfers, and the first LIST page of a bucket of a million keys.  They run only when
#: ``--only`` names them (they take minutes and GiBs of disk).
RSS_SCENARIO = "rss-16x"
LIST_SCENARIO = "list-1m"
SCENARIOS = (RSS_SCENARIO, LIST_SCENARIO)


def select_scenarios(patterns: str | None) -> list[str]:
    """The heavy scenarios ``--only`` names, exactly or by a glob (not by a substring: ``--only
    list`` means the LIST rows, not a million-key build); none by default."""
    if not patterns:
        return []
    wanted = _patterns(patterns)
    return [
        s for s in SCENARIOS
        if any(s == p or (any(c in p for c in "*?[") and fnmatch.fnmatchcase(s, p)) for p in wanted)
    ]


@dataclass(frozen=True)
class Step:
    """One timed cell of the plan."""

    round: int
    workload: str
    target: str


def ab_plan(
    workload_names: Sequence[str],
    targets: Sequence[str],
    rounds: int,
    extra: Mapping[str, Sequence[str]] | None = None,
) -> list[Step]:
    """Rounds of every workload against every target back to back; the order of the targets
    rotates by round and by workload (with two targets: who goes first alternates), so order
    effects cancel over the rounds.  ``extra``: more targets for some workloads (the floor),
    in the same back-to-back run and rotation."""
    steps: list[Step] = []
    for rnd in range(rounds):
        for index, name in enumerate(workload_names):
            mine = (*targets, *(extra or {}).get(name, ()))
            first = (rnd + index) % len(mine)
            for target in (*mine[first:], *mine[:first]):
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
