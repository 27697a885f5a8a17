"""``make bench``: what s3orch costs compared with the bare backend it fronts.

One SeaweedFS ``weed mini`` (the benchmark backend, ``shared/reference/backends.md``) and one
``twistd -n s3orch`` in front of it.  Every workload runs against two *targets* with the same
client code -- ``s3orch`` (the gateway's virtual bucket) and ``direct`` (the backend bucket behind
it) -- so the ratio s3orch/direct is the proxy's overhead on this machine.  The two targets of a
workload run back to back, and which one goes first alternates by round and by workload, so
drift (page cache, database growth, background work) falls on both sides equally; the ratio
columns are per-round ratios of those back-to-back pairs.  Each number in the table is the median
across rounds, with the min..max spread so noise shows.  Dirty pages are synced before each cell.

Workloads: small-object PUT, GET, HEAD and LIST at concurrency 1 and 16; one large PUT and one
large GET per cell; and one native multipart upload per cell ("MPU": CreateMultipartUpload, the
parts a few in flight on their own connections, CompleteMultipartUpload), whose object is checked
with a HEAD after the clock stops.  Large and multipart bodies stream from one temporary file.

The load client is asyncio + raw HTTP/1.1 over persistent connections (one per concurrent
worker), signed with our own SigV4 (``UNSIGNED-PAYLOAD``): boto3 tops out at ~300 small ops/s
here and would measure itself, not the proxy.  CPU use is reported per cell for the client, the
gateway, the backend and everything else on the machine ("other"), so a client-bound cell, or one
disturbed by a busy neighbour, is visible.

Run ``python -m s3orch.testing.bench --help``.  Results go to stdout (a table) and to
``bench-results/<UTC timestamp>.json``.  Exit status: 0 clean, 1 request errors (loudly
reported; the servers' logs are copied next to the JSON), 2 aborted (a server died), 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import html
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any

from s3orch.s3.sigv4 import UNSIGNED_PAYLOAD, sign_headers, uri_encode
from s3orch.testing.configs import BackendSpec, BucketSpec, GatewayConfig
from s3orch.testing.gateway import PROJECT_ROOT, GatewayProcess
from s3orch.testing.servers import WeedServer, create_bucket

__all__ = [
    "CellResult",
    "FileSlice",
    "Part",
    "Row",
    "Spread",
    "Step",
    "Target",
    "Workload",
    "ab_plan",
    "complete_body",
    "describe",
    "format_table",
    "is_multipart_etag",
    "main",
    "part_plan",
    "percentile",
    "read_response",
    "select_workloads",
    "summarize",
    "workloads",
    "xml_text",
]

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


# --------------------------------------------------------------------------------------------
# What runs where
# --------------------------------------------------------------------------------------------


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


def _size_label(size: int) -> str:
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
    big = _size_label(large_size)
    out += [
        Workload("put-large", f"PUT {big} c1", "put-large", 1, large_size),
        Workload("get-large", f"GET {big} c1", "get-large", 1, large_size),
        Workload(
            "mpu",
            f"MPU {_size_label(mpu_size)} {_size_label(mpu_part_size)}\u00d7{MPU_CONCURRENCY}",
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


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (0..100), linearly interpolated like numpy's default; NaN if empty."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, not {q}")
    data = sorted(values)
    if not data:
        return math.nan
    pos = (len(data) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (pos - low)


@dataclass(frozen=True)
class Spread:
    """Median of per-round values and their range: one noisy round cannot pass for a trend."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        finite = [v for v in values if not math.isnan(v)]
        if not finite:
            return cls(math.nan, math.nan, math.nan)
        return cls(statistics.median(finite), min(finite), max(finite))


@dataclass
class CellResult:
    """One workload against one target in one round."""

    workload: str
    target: str
    round: int
    ops: int
    errors: int
    seconds: float
    bytes: int
    p50_ms: float
    p99_ms: float
    #: CPU use over the cell in percent of one core, per process: client, s3orch, weed.
    cpu: dict[str, float] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else math.nan

    @property
    def mib_per_s(self) -> float:
        return self.bytes / MiB / self.seconds if self.seconds > 0 else math.nan

    def throughput(self, workload: Workload) -> float:
        return self.mib_per_s if workload.large else self.ops_per_s


@dataclass(frozen=True)
class Row:
    """One line of the table: a workload against a target, across rounds."""

    workload: Workload
    target: str
    rounds: int
    throughput: Spread
    p50_ms: Spread
    p99_ms: Spread
    ops: int
    errors: int
    cpu: dict[str, float]
    #: candidate rows only: candidate/baseline per round (the two ran back to back), across rounds.
    throughput_ratio: Spread | None = None
    p50_ratio: Spread | None = None


def _ratio(num: float, den: float) -> float:
    if math.isnan(num) or math.isnan(den) or den == 0:
        return math.nan
    return num / den


def summarize(
    selected: Sequence[Workload],
    results: Sequence[CellResult],
    targets: tuple[str, str] = (BASELINE, CANDIDATE),
) -> list[Row]:
    """Table rows (baseline then candidate per workload) from per-round cell results."""
    rows: list[Row] = []
    for workload in selected:
        per_target: dict[str, Row] = {}
        for target in targets:
            cells = [r for r in results if r.workload == workload.name and r.target == target]
            if not cells:
                continue
            cpu_names = sorted({name for c in cells for name in c.cpu})
            per_target[target] = Row(
                workload=workload,
                target=target,
                rounds=len(cells),
                throughput=Spread.of([c.throughput(workload) for c in cells]),
                p50_ms=Spread.of([c.p50_ms for c in cells]),
                p99_ms=Spread.of([c.p99_ms for c in cells]),
                ops=sum(c.ops for c in cells),
                errors=sum(c.errors for c in cells),
                cpu={n: statistics.median(c.cpu.get(n, math.nan) for c in cells) for n in cpu_names},
            )
        if all(t in per_target for t in targets):
            # Paired by round: each pair ran back to back, so slow drift and other load on the
            # machine cancel in the ratio better than in a ratio of medians.
            pairs = [
                (b, c)
                for b in results
                for c in results
                if b.workload == c.workload == workload.name
                and (b.target, c.target) == targets
                and b.round == c.round
            ]
            per_target[targets[1]] = replace(
                per_target[targets[1]],
                throughput_ratio=Spread.of(
                    [_ratio(c.throughput(workload), b.throughput(workload)) for b, c in pairs]
                ),
                p50_ratio=Spread.of([_ratio(c.p50_ms, b.p50_ms) for b, c in pairs]),
            )
        rows += [per_target[t] for t in targets if t in per_target]
    return rows


# --------------------------------------------------------------------------------------------
# Table
# --------------------------------------------------------------------------------------------


def _num(value: float) -> str:
    """Three significant-ish digits: enough to compare, few enough to read."""
    if math.isnan(value):
        return "-"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _spread(s: Spread) -> str:
    return f"{_num(s.low)}..{_num(s.high)}"


def _ratio_text(value: Spread | None) -> str:
    if value is None:
        return ""
    if math.isnan(value.median):
        return "-"
    return f"{value.median:.2f}x ({value.low:.2f}..{value.high:.2f})"


#: CPU columns: the three processes of the bench, and everything else on the machine.
CPU_PROCESSES = ("client", CANDIDATE, "weed", "other")


def format_table(rows: Sequence[Row]) -> str:
    """A fixed-width text table; the ratio columns sit on the candidate's line."""
    header = [
        "workload",
        "target",
        "throughput",
        "(min..max)",
        "p50 ms",
        "(min..max)",
        "p99 ms",
        "errors",
        "cpu% " + "/".join(CPU_PROCESSES),
        f"{CANDIDATE}/{BASELINE}: thr",
        "p50",
    ]
    right = {2, 3, 4, 5, 6, 7, 9, 10}
    lines: list[list[str]] = [header]
    previous = None
    for row in rows:
        w = row.workload
        lines.append(
            [
                w.label if w.name != previous else "",
                row.target,
                f"{_num(row.throughput.median)} {w.unit}",
                f"({_spread(row.throughput)})",
                _num(row.p50_ms.median),
                f"({_spread(row.p50_ms)})",
                _num(row.p99_ms.median),
                str(row.errors) if not row.errors else f"{row.errors} !!",
                "/".join(
                    "-" if math.isnan(row.cpu.get(p, math.nan)) else f"{row.cpu[p]:.0f}"
                    for p in CPU_PROCESSES
                ),
                _ratio_text(row.throughput_ratio),
                _ratio_text(row.p50_ratio),
            ]
        )
        previous = w.name
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]

    def render(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(cells)
        ).rstrip()

    out = [render(header), render(["-" * n for n in widths])]
    previous = None
    for row, cells in zip(rows, lines[1:]):
        if previous is not None and row.workload.name != previous:
            out.append("")
        out.append(render(cells))
        previous = row.workload.name
    total = sum(r.errors for r in rows)
    if total:
        out += ["", _error_banner(total)]
    return "\n".join(out)


def _error_banner(total: int) -> str:
    return f"!!! {total} REQUEST ERRORS: these numbers are NOT trustworthy (see error samples) !!!"


# --------------------------------------------------------------------------------------------
# HTTP/1.1 client
# --------------------------------------------------------------------------------------------


class ProtocolError(Exception):
    """The server's answer is not HTTP/1.1 as we understand it."""


class RequestFailed(Exception):
    """A response with an unexpected status or body (the bench counts it as an error)."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes  # empty when the body was discarded
    length: int  # body bytes received
    keep_alive: bool


async def _discard(reader: asyncio.StreamReader, count: int) -> None:
    remaining = count
    while remaining:
        data = await reader.read(min(remaining, STREAM_CHUNK))
        if not data:
            raise asyncio.IncompleteReadError(b"", remaining)
        remaining -= len(data)


async def _read_chunked(reader: asyncio.StreamReader, keep_body: bool) -> tuple[bytes, int]:
    parts: list[bytes] = []
    total = 0
    while True:
        line = await reader.readuntil(b"\r\n")
        try:
            size = int(line[:-2].split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise ProtocolError(f"bad chunk size line {line[:40]!r}") from None
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass  # trailer fields: not used
            return b"".join(parts), total
        if keep_body:
            parts.append(await reader.readexactly(size))
        else:
            await _discard(reader, size)
        total += size
        if await reader.readexactly(2) != b"\r\n":
            raise ProtocolError("chunk not followed by CRLF")


async def read_response(
    reader: asyncio.StreamReader, method: str, *, keep_body: bool = True
) -> Response:
    """Read one response: Content-Length, chunked or until-close bodies; none for HEAD/204/304.

    ``keep_body=False`` reads and drops the body in chunks (large GETs never sit in memory).
    """
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head[:-4].split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise ProtocolError(f"bad status line {lines[0][:80]!r}")
        status = int(parts[1])
        headers: dict[str, str] = {}
        for raw in lines[1:]:
            name, sep, value = raw.partition(b":")
            if not sep:
                raise ProtocolError(f"bad header line {raw[:80]!r}")
            key = name.strip().lower().decode("latin-1")
            text = value.strip().decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        if 100 <= status < 200:
            continue  # 100 Continue and friends: the real answer follows
        break
    connection = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    keep_alive = "close" not in connection and (parts[0] != b"HTTP/1.0" or "keep-alive" in connection)
    body = b""
    length = 0
    if method == "HEAD" or status in (204, 304):
        pass
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        body, length = await _read_chunked(reader, keep_body)
    elif "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            raise ProtocolError(f"bad Content-Length {headers['content-length']!r}") from None
        if length < 0:
            raise ProtocolError(f"bad Content-Length {length}")
        if keep_body:
            body = await reader.readexactly(length)
        else:
            await _discard(reader, length)
    else:
        keep_alive = False
        if keep_body:
            body = await reader.read()
            length = len(body)
        else:
            while data := await reader.read(STREAM_CHUNK):
                length += len(data)
    return Response(status, headers, body, length, keep_alive)


#: Errors that mean "this request failed"; the connection is reopened for the next one.
REQUEST_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    TimeoutError,
    asyncio.IncompleteReadError,
    asyncio.LimitOverrunError,
    ProtocolError,
    RequestFailed,
)


@dataclass(frozen=True)
class FileSlice:
    """``length`` bytes of the file at ``path`` from ``offset``: a request body streamed from disk
    (a multipart part is a slice of the large file; never a whole large body in memory)."""

    path: Path
    offset: int
    length: int


class Connection:
    """One persistent HTTP/1.1 connection to a target, reopened after an error or a close."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(
                self.target.host, self.target.port, limit=STREAM_CHUNK
            )

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass

    def path(self, key: str | None) -> str:
        if key is None:
            return f"/{self.target.bucket}"
        return f"/{self.target.bucket}/{uri_encode(key, encode_slash=False)}"

    async def request(
        self,
        method: str,
        key: str | None,
        *,
        query: str = "",
        body: bytes | None = None,
        body_file: FileSlice | None = None,
        keep_body: bool = True,
    ) -> Response:
        """Send one signed request and read its answer; the body comes from ``body`` or is
        streamed from a slice of a file."""
        target = self.target
        path = self.path(key)
        if query:
            path = f"{path}?{query}"
        signed = sign_headers(
            method,
            f"http://{target.authority}{path}",
            {},
            UNSIGNED_PAYLOAD,
            target.access_key,
            target.secret_key,
            target.region,
            time.time(),
        )
        lines = [f"{method} {path} HTTP/1.1", f"Host: {target.authority}"]
        lines += [f"{name}: {value}" for name, value in signed.items()]
        if body_file is not None:
            lines.append(f"Content-Length: {body_file.length}")
        elif body is not None:
            lines.append(f"Content-Length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        await self.open()
        assert self._reader is not None and self._writer is not None
        writer = self._writer
        if body_file is not None:
            writer.write(head)
            with body_file.path.open("rb") as source:
                source.seek(body_file.offset)
                remaining = body_file.length
                while remaining:
                    chunk = source.read(min(STREAM_CHUNK, remaining))
                    if not chunk:
                        raise EOFError(f"{body_file.path} ends {remaining} bytes short of the body")
                    writer.write(chunk)
                    remaining -= len(chunk)
                    await writer.drain()
        else:
            writer.write(head + body if body else head)
        await writer.drain()
        response = await read_response(self._reader, method, keep_body=keep_body)
        if not response.keep_alive:
            await self.close()
        return response


# --------------------------------------------------------------------------------------------
# Operations
# --------------------------------------------------------------------------------------------

SMALL_BODY = random.Random(4096).randbytes(SMALL_SIZE)


def _read_key(index: int) -> str:
    return f"obj/{index % READ_KEYS:04d}"


def _list_key(index: int) -> str:
    return f"list/{index:04d}"


def describe(response: Response) -> str:
    """``HTTP 403 SignatureDoesNotMatch: <message>`` from an S3 error, else the body's start."""
    text = response.body[:2000].decode("utf-8", "replace")
    code = re.search(r"<Code>(.*?)</Code>", text)
    message = re.search(r"<Message>(.*?)</Message>", text, re.S)
    if code:
        detail = code.group(1) + (f": {message.group(1)}" if message else "")
    else:
        detail = " ".join(text.split())[:200]
    return f"HTTP {response.status} {detail}".rstrip()


def _expect(response: Response, status: int, what: str) -> None:
    if response.status != status:
        raise RequestFailed(f"{what}: {describe(response)}")


# --- multipart upload: the pure parts --------------------------------------------------------


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


def complete_body(etags: Iterable[tuple[int, str]]) -> bytes:
    """CompleteMultipartUpload's XML: every (part number, ETag as UploadPart answered it), in
    ascending part order whatever order the parts finished in."""
    parts = "".join(
        f"<Part><PartNumber>{number}</PartNumber><ETag>{html.escape(etag, quote=False)}</ETag></Part>"
        for number, etag in sorted(etags)
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        f"{parts}</CompleteMultipartUpload>"
    ).encode()


def xml_text(body: bytes, tag: str) -> str | None:
    """The text of the first ``<tag>`` element of an S3 answer, entities decoded; None if absent."""
    found = re.search(rb"<%s>(.*?)</%s>" % (tag.encode(), tag.encode()), body, re.S)
    return html.unescape(found.group(1).decode("utf-8", "replace")) if found else None


_MULTIPART_ETAG = re.compile(r'"?[0-9a-fA-F]{32}-([0-9]+)"?')


def is_multipart_etag(etag: str | None, parts: int) -> bool:
    """Whether ``etag`` is S3's ETag of an object completed from ``parts`` parts: an MD5 (of
    the parts' MD5s) then ``-<parts>``, quoted or not."""
    found = _MULTIPART_ETAG.fullmatch(etag.strip()) if etag is not None else None
    return found is not None and int(found.group(1)) == parts


@dataclass(frozen=True)
class OpContext:
    """What an operation needs besides its connection."""

    workload: Workload
    round: int
    large_file: Path | None

    def body(self, offset: int, length: int) -> FileSlice:
        """A slice of the large file as a request body."""
        if self.large_file is None:
            raise ValueError(f"{self.workload.name} needs the large file, and there is none")
        return FileSlice(self.large_file, offset, length)


async def run_op(conn: Connection, ctx: OpContext, worker: int, seq: int) -> int:
    """One request of a workload; returns body bytes moved, raises on any unexpected answer."""
    w = ctx.workload
    if w.op == "put":
        # New keys only: an overwrite would add the gateway's cleanup of the displaced copy.
        key = f"put/{w.name}/r{ctx.round}/w{worker:02d}/{seq:07d}"
        _expect(await conn.request("PUT", key, body=SMALL_BODY), 200, f"PUT {key}")
        return SMALL_SIZE
    if w.op in ("get", "head"):
        # Workers start spread over the key set and step by a prime: no two read one key in lockstep.
        key = _read_key(worker * (READ_KEYS // max(w.concurrency, 1)) + seq * 7)
        method = w.op.upper()
        response = await conn.request(method, key)
        _expect(response, 200, f"{method} {key}")
        size = response.length if method == "GET" else int(response.headers.get("content-length", -1))
        if size != w.size:
            raise RequestFailed(f"{method} {key}: {size} bytes, expected {w.size}")
        if method == "GET" and response.body != SMALL_BODY:
            raise RequestFailed(f"GET {key}: wrong bytes")
        return response.length
    if w.op == "list":
        query = f"list-type=2&max-keys={LIST_MAX_KEYS}&prefix=list%2F"
        response = await conn.request("GET", None, query=query)
        _expect(response, 200, "LIST list/")
        found = response.body.count(b"<Key>")
        if found != LIST_MAX_KEYS or b"<IsTruncated>true</IsTruncated>" not in response.body:
            raise RequestFailed(f"LIST list/: {found} keys, expected a truncated page of {LIST_MAX_KEYS}")
        return response.length
    if w.op == "put-large":
        key = f"large/put-r{ctx.round}"
        _expect(await conn.request("PUT", key, body_file=ctx.body(0, w.size)), 200, f"PUT {key}")
        return w.size
    if w.op == "get-large":
        response = await conn.request("GET", "large/get", keep_body=False)
        _expect(response, 200, "GET large/get")
        if response.length != w.size:
            raise RequestFailed(f"GET large/get: {response.length} bytes, expected {w.size}")
        return response.length
    raise ValueError(f"unknown operation {w.op!r}")


def _mpu_key(ctx: OpContext) -> str:
    return f"mpu/r{ctx.round}"


def _upload_query(upload_id: str) -> str:
    return f"uploadId={uri_encode(upload_id, encode_slash=True)}"


async def run_mpu(conns: Sequence[Connection], ctx: OpContext) -> int:
    """One multipart upload: Create; the parts, one per connection at a time (as many in flight
    as there are connections), each streamed from its slice of the large file; Complete with the
    part list.  Returns the object's size; raises on any unexpected answer (after a best-effort
    Abort, so a failed round leaves no parts behind)."""
    w = ctx.workload
    key = _mpu_key(ctx)
    plan = part_plan(w.size, w.part_size)
    response = await conns[0].request("POST", key, query="uploads", body=b"")
    _expect(response, 200, f"CreateMultipartUpload {key}")
    upload_id = xml_text(response.body, "UploadId")
    if not upload_id:
        raise RequestFailed(f"CreateMultipartUpload {key}: no UploadId in {describe(response)}")
    upload = _upload_query(upload_id)
    try:
        pending = list(reversed(plan))
        etags: dict[int, str] = {}

        async def uploader(conn: Connection) -> None:
            try:
                while pending:
                    part = pending.pop()
                    response = await conn.request(
                        "PUT",
                        key,
                        query=f"partNumber={part.number}&{upload}",
                        body_file=ctx.body(part.offset, part.length),
                    )
                    what = f"UploadPart {key} #{part.number}"
                    _expect(response, 200, what)
                    if not response.headers.get("etag"):
                        raise RequestFailed(f"{what}: no ETag")
                    etags[part.number] = response.headers["etag"]
            except BaseException:
                pending.clear()  # the other uploaders stop after their current part
                raise

        # Not a TaskGroup: its ExceptionGroup would not be a request error; and every uploader
        # ends before Complete (or the error) uses the connections again.
        outcomes = await asyncio.gather(*(uploader(c) for c in conns), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        response = await conns[0].request("POST", key, query=upload, body=complete_body(etags.items()))
        what = f"CompleteMultipartUpload {key}"
        _expect(response, 200, what)
        # Complete may fail after its 200 (the error is then the body).
        if b"<CompleteMultipartUploadResult" not in response.body:
            raise RequestFailed(f"{what}: {describe(response)}")
        etag = xml_text(response.body, "ETag")
        if not is_multipart_etag(etag, len(plan)):
            raise RequestFailed(f"{what}: ETag {etag!r}, expected an MD5 then -{len(plan)}")
    except REQUEST_ERRORS:
        await _abort_upload(conns[0].target, key, upload)
        raise
    return w.size


async def _abort_upload(target: Target, key: str, upload: str) -> None:
    """AbortMultipartUpload on a fresh connection, ignoring the outcome."""
    conn = Connection(target)
    try:
        async with asyncio.timeout(SMALL_TIMEOUT):
            await conn.request("DELETE", key, query=upload)
    except REQUEST_ERRORS:
        pass
    finally:
        await conn.close()


async def check_mpu_object(conn: Connection, ctx: OpContext) -> None:
    """Off the clock, after a multipart cell: the completed object is whole (a HEAD shows its
    size and a multipart ETag); raises RequestFailed if not."""
    w = ctx.workload
    key = _mpu_key(ctx)
    response = await conn.request("HEAD", key)
    _expect(response, 200, f"HEAD {key}")
    size = response.headers.get("content-length")
    if size != str(w.size):
        raise RequestFailed(f"HEAD {key}: Content-Length {size}, expected {w.size}")
    parts = len(part_plan(w.size, w.part_size))
    etag = response.headers.get("etag")
    if not is_multipart_etag(etag, parts):
        raise RequestFailed(f"HEAD {key}: ETag {etag!r}, expected an MD5 then -{parts}")


# --------------------------------------------------------------------------------------------
# CPU and memory of the processes under test
# --------------------------------------------------------------------------------------------

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_seconds(pid: int | None) -> float:
    """User+system CPU seconds of a process (all its threads), NaN if unknown."""
    if pid is None:
        return math.nan
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return math.nan
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def process_peak_rss(pid: int | None) -> int | None:
    """Peak resident set size (VmHWM) in bytes: shows whether a process held a large body whole."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * KiB
    except OSError:
        pass
    return None


def machine_cpu_seconds() -> tuple[float, float]:
    """CPU seconds the whole machine (all cores, since boot) spent busy in processes, and in
    interrupts (mostly loopback networking: ours, but charged to no process); NaN if unknown."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return math.nan, math.nan
    # cpu user nice system idle iowait irq softirq steal (guest time is already in user)
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + steal) / _CLOCK_TICKS, (irq + softirq) / _CLOCK_TICKS


class CpuMeter:
    """CPU used between start() and stop(), in % of one core: by the client, by each server,
    by interrupts ("irq") and by every other process on the machine ("other": a busy neighbour
    makes a cell noisy)."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = pids
        self._start: dict[str, float] = {}
        self._wall = 0.0

    def _now(self) -> dict[str, float]:
        now = {name: process_cpu_seconds(pid) for name, pid in self.pids.items()}
        now["client"] = time.process_time()
        now["machine"], now["irq"] = machine_cpu_seconds()
        return now

    def start(self) -> None:
        self._start = self._now()
        self._wall = time.perf_counter()

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self._wall
        end = self._now()
        used = {name: end[name] - self._start[name] for name in end}
        machine = used.pop("machine")
        ours = sum(v for name, v in used.items() if name != "irq" and not math.isnan(v))
        used["other"] = max(0.0, machine - ours) if not math.isnan(machine) else math.nan
        return {name: round(100 * v / wall, 1) if wall > 0 else math.nan for name, v in used.items()}


# --------------------------------------------------------------------------------------------
# Cells
# --------------------------------------------------------------------------------------------


class BenchAborted(Exception):
    """A process under test died; nothing after this would mean anything."""


async def run_cell(
    ctx: OpContext,
    target: Target,
    duration: float,
    meter: CpuMeter,
) -> CellResult:
    """Run one workload against one target: open the connections, then let every worker issue
    requests back to back until the deadline (large workloads: exactly one transfer; the
    multipart row: one upload, by one worker over all the connections, checked after the clock
    stops)."""
    w = ctx.workload
    conns = [Connection(target) for _ in range(w.concurrency)]
    await asyncio.gather(*(c.open() for c in conns))
    latencies: list[float] = []
    samples: list[str] = []
    counts = {"ops": 0, "errors": 0, "bytes": 0}
    timeout = LARGE_TIMEOUT if w.large else SMALL_TIMEOUT

    def failed(exc: BaseException) -> None:
        counts["errors"] += 1
        sample = f"{type(exc).__name__}: {exc}"
        if len(samples) < MAX_ERROR_SAMPLES and sample not in samples:
            samples.append(sample)

    async def worker(index: int) -> None:
        mine = conns if w.op == "mpu" else conns[index : index + 1]
        seq = 0
        while seq == 0 or (not w.large and time.perf_counter() < deadline):
            started = time.perf_counter()
            try:
                async with asyncio.timeout(timeout):
                    if w.op == "mpu":
                        moved = await run_mpu(mine, ctx)
                    else:
                        moved = await run_op(mine[0], ctx, index, seq)
            except REQUEST_ERRORS as exc:
                failed(exc)
                await asyncio.gather(*(c.close() for c in mine))
                if not isinstance(exc, RequestFailed):
                    await asyncio.sleep(0.05)  # a dead server must not turn into a busy loop
            else:
                latencies.append(time.perf_counter() - started)
                counts["ops"] += 1
                counts["bytes"] += moved
            seq += 1

    meter.start()
    begin = time.perf_counter()
    deadline = begin + duration
    try:
        await asyncio.gather(*(worker(i) for i in range(1 if w.op == "mpu" else w.concurrency)))
        seconds = time.perf_counter() - begin
        cpu = meter.stop()
        if w.op == "mpu" and counts["ops"]:
            try:
                async with asyncio.timeout(SMALL_TIMEOUT):
                    await check_mpu_object(conns[0], ctx)
            except REQUEST_ERRORS as exc:
                failed(exc)
    finally:
        await asyncio.gather(*(c.close() for c in conns))
    latencies.sort()
    return CellResult(
        workload=w.name,
        target=target.name,
        round=ctx.round,
        ops=counts["ops"],
        errors=counts["errors"],
        seconds=seconds,
        bytes=counts["bytes"],
        p50_ms=percentile(latencies, 50) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        cpu=cpu,
        error_samples=samples,
    )


async def run_requests(
    target: Target,
    jobs: Sequence[Job],
    concurrency: int = 16,
) -> None:
    """Untimed setup requests (seeding); any failure aborts the bench."""
    queue = list(reversed(jobs))

    async def worker() -> None:
        conn = Connection(target)
        try:
            while queue:
                job = queue.pop()
                response = await job(conn)
                if response.status != 200:
                    raise BenchAborted(f"setup request to {target.name} failed: {describe(response)}")
        finally:
            await conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


Job = Callable[[Connection], Awaitable[Response]]


def _put_job(key: str, body: bytes | None = None, body_file: FileSlice | None = None) -> Job:
    async def job(conn: Connection) -> Response:
        return await conn.request("PUT", key, body=body, body_file=body_file)

    return job


async def seed(targets: Sequence[Target], selected: Sequence[Workload], large_file: Path | None) -> None:
    """The objects that GET, HEAD and LIST read, identical on every target."""
    ops = {w.op for w in selected}
    for target in targets:
        jobs: list[Job] = []
        if ops & {"get", "head"}:
            jobs += [_put_job(_read_key(i), SMALL_BODY) for i in range(READ_KEYS)]
        if "list" in ops:
            jobs += [_put_job(_list_key(i), SMALL_BODY) for i in range(LIST_KEYS)]
        await run_requests(target, jobs)
        for w in selected:
            if w.op == "get-large" and large_file is not None:
                job = _put_job("large/get", body_file=FileSlice(large_file, 0, w.size))
                await run_requests(target, [job], concurrency=1)


# --------------------------------------------------------------------------------------------
# Environment: weed mini + s3orch
# --------------------------------------------------------------------------------------------


class Environment:
    """The backend, the gateway in front of it, and the two targets that reach the same bucket."""

    backend_bucket = "bench-backend"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.weed = WeedServer(workdir / "weed", "benchbackendkey", "benchbackendsecret")
        self.gateway: GatewayProcess | None = None
        self.targets: dict[str, Target] = {}

    def start(self) -> None:
        self.weed.start()
        create_bucket(
            self.weed.endpoint, self.backend_bucket, self.weed.access_key, self.weed.secret_key, REGION
        )
        bucket = BucketSpec("bench", "benchkey", "benchsecret")
        config = GatewayConfig(
            backends=[
                BackendSpec(
                    "weed",
                    self.weed.endpoint,
                    self.backend_bucket,
                    self.weed.access_key,
                    self.weed.secret_key,
                )
            ],
            buckets=[bucket],
            # The bench measures speed; a 256 MiB transfer must not trip the tests' 10 s timeout.
            extra_server={"spool_dir": "{workdir}/spool", "backend_timeout": "120s"},
        )
        gw_dir = self.workdir / "s3orch"
        (gw_dir / "spool").mkdir(parents=True, exist_ok=True)
        self.gateway = GatewayProcess(gw_dir, config.render()).start()
        self.targets = {
            BASELINE: Target(
                BASELINE,
                "127.0.0.1",
                self.weed.s3_port,
                self.backend_bucket,
                self.weed.access_key,
                self.weed.secret_key,
            ),
            CANDIDATE: Target(
                CANDIDATE, "127.0.0.1", self.gateway.port, bucket.name, bucket.access_key, bucket.secret_key
            ),
        }

    @property
    def pids(self) -> dict[str, int | None]:
        gw = self.gateway.proc if self.gateway is not None else None
        return {CANDIDATE: gw.pid if gw is not None else None, "weed": self.weed.pid}

    def check_alive(self) -> None:
        proc = self.gateway.proc if self.gateway is not None else None
        if proc is None or proc.poll() is not None:
            code = proc.returncode if proc is not None else None
            raise BenchAborted(f"s3orch is not running (exit status {code}); its log is saved below")
        if not self.weed.running:
            raise BenchAborted("weed is not running; its log is saved below")

    def stop(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
        self.weed.stop()


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


@dataclass
class Options:
    rounds: int
    duration: float
    large_size: int
    only: str | None
    results_dir: Path
    keep: bool
    quick: bool
    mpu_size: int = MPU_SIZE
    mpu_part_size: int = MPU_PART_SIZE


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _progress(step: Step, rounds: int, w: Workload, cell: CellResult) -> str:
    thr = cell.throughput(w)
    text = (
        f"[round {step.round + 1}/{rounds}] {w.name:<11} {step.target:<6} "
        f"{_num(thr):>7} {w.unit}  p50 {_num(cell.p50_ms)} ms  p99 {_num(cell.p99_ms)} ms  "
        f"cpu " + "/".join(f"{cell.cpu.get(p, math.nan):.0f}" for p in CPU_PROCESSES)
    )
    if cell.errors:
        text += f"  ERRORS {cell.errors}: {cell.error_samples[0] if cell.error_samples else ''}"
    return text


async def run_bench(
    env: Environment, selected: Sequence[Workload], opts: Options, results: list[CellResult]
) -> None:
    """Seed, warm up, then run the A/B plan, appending every cell's result to ``results`` (which
    thus keeps what was measured before an abort)."""
    targets = [env.targets[BASELINE], env.targets[CANDIDATE]]
    large_file: Path | None = None
    # One file for every large body: PUT and GET send its first bytes, multipart parts its slices.
    file_size = max((w.size for w in selected if w.large), default=0)
    if file_size:
        large_file = env.workdir / "large.bin"
        _log(f"writing a {_size_label(file_size)} random body to {large_file}")
        rng = random.Random(256)
        with large_file.open("wb") as out:
            for offset in range(0, file_size, STREAM_CHUNK):
                out.write(rng.randbytes(min(STREAM_CHUNK, file_size - offset)))
    _log("seeding the objects GET/HEAD/LIST read, on both targets")
    await seed(targets, selected, large_file)

    meter = CpuMeter(env.pids)
    small_ops = [w.op for w in selected if not w.large]
    # Warm both paths (connection pools, caches, the gateway's first requests) off the clock.  With
    # only large rows, small PUTs: a fresh weed's first write costs ~1 s (volume allocation), which
    # would otherwise land in the first large or multipart cell.
    op = "get" if "get" in small_ops or "head" in small_ops else (small_ops[0] if small_ops else "put")
    warm = Workload("warmup", "warmup", op, 16, SMALL_SIZE)
    for target in targets:
        cell = await run_cell(OpContext(warm, -1, large_file), target, 0.3 if opts.quick else 1.0, meter)
        results.append(cell)
        if cell.errors:
            _log(f"WARM-UP ERRORS against {target.name}: {cell.errors}, e.g. {cell.error_samples[:1]}")

    by_name = {w.name: w for w in selected}
    plan = ab_plan([w.name for w in selected], (BASELINE, CANDIDATE), opts.rounds)
    for step in plan:
        env.check_alive()
        # Off the clock: write back what earlier cells left dirty (a 256 MiB PUT leaves GiBs
        # between weed and the spool), so no cell pays for its predecessor's writeback.
        os.sync()
        w = by_name[step.workload]
        cell = await run_cell(
            OpContext(w, step.round, large_file), env.targets[step.target], opts.duration, meter
        )
        results.append(cell)
        _log(_progress(step, opts.rounds, w, cell))
    env.check_alive()


def _git_revision() -> dict[str, object]:
    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout.strip() if done.returncode == 0 else ""

    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 4)


def results_document(
    started: float,
    opts: Options,
    selected: Sequence[Workload],
    cells: Sequence[CellResult],
    rows: Sequence[Row],
    peak_rss: dict[str, int | None],
) -> dict[str, Any]:
    """Everything the table says and the raw per-round cells behind it, for later comparison."""

    def spread(s: Spread) -> dict[str, float | None]:
        return {"median": _json_float(s.median), "min": _json_float(s.low), "max": _json_float(s.high)}

    return {
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
        "git": _git_revision(),
        "host": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "options": {
            "rounds": opts.rounds,
            "duration_s": opts.duration,
            "large_size": opts.large_size,
            "mpu_size": opts.mpu_size,
            "mpu_part_size": opts.mpu_part_size,
            "only": opts.only,
            "quick": opts.quick,
        },
        "workloads": [asdict(w) for w in selected],
        "summary": [
            {
                "workload": r.workload.name,
                "label": r.workload.label,
                "target": r.target,
                "unit": r.workload.unit,
                "rounds": r.rounds,
                "throughput": spread(r.throughput),
                "p50_ms": spread(r.p50_ms),
                "p99_ms": spread(r.p99_ms),
                "ops": r.ops,
                "errors": r.errors,
                "cpu_percent": {k: _json_float(v) for k, v in r.cpu.items()},
                "throughput_ratio": None if r.throughput_ratio is None else spread(r.throughput_ratio),
                "p50_ratio": None if r.p50_ratio is None else spread(r.p50_ratio),
            }
            for r in rows
        ],
        "cells": [
            {
                **{k: v for k, v in asdict(c).items() if k not in ("p50_ms", "p99_ms", "seconds")},
                "seconds": round(c.seconds, 4),
                "p50_ms": _json_float(c.p50_ms),
                "p99_ms": _json_float(c.p99_ms),
            }
            for c in cells
        ],
        "errors_total": sum(c.errors for c in cells),
        "peak_rss_bytes": peak_rss,
    }


def parse_args(argv: Sequence[str] | None) -> Options:
    names = ", ".join(w.name for w in workloads())
    parser = argparse.ArgumentParser(
        prog="python -m s3orch.testing.bench",
        description="s3orch vs the bare SeaweedFS backend behind it, A/B alternated.",
    )
    parser.add_argument("--rounds", type=int, help="A/B rounds per workload (default 3; --quick: 1)")
    parser.add_argument("--duration", type=float, help="seconds per small-object cell (default 3; --quick: 0.5)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 1 round, 0.5 s cells, 16 MiB large object, 16 MiB multipart upload in 5 MiB parts",
    )
    parser.add_argument("--only", metavar="PATTERN", help=f"comma-separated globs or substrings of: {names}")
    parser.add_argument("--large-mib", type=int, help="size of the large object in MiB (default 256; --quick: 16)")
    parser.add_argument("--results-dir", type=Path, default=Path("bench-results"), help="where the JSON goes")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, data) after the run")
    args = parser.parse_args(argv)
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    duration = args.duration if args.duration is not None else (0.5 if args.quick else 3.0)
    large_mib = args.large_mib if args.large_mib is not None else (16 if args.quick else 256)
    if rounds < 1 or duration <= 0 or large_mib < 1:
        parser.error("--rounds, --duration and --large-mib must be positive")
    mpu_size, mpu_part_size = (QUICK_MPU_SIZE, QUICK_MPU_PART_SIZE) if args.quick else (MPU_SIZE, MPU_PART_SIZE)
    return Options(
        rounds,
        duration,
        large_mib * MiB,
        args.only,
        args.results_dir,
        args.keep,
        args.quick,
        mpu_size,
        mpu_part_size,
    )


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _save_logs(env: Environment, results_dir: Path, stamp: str) -> list[Path]:
    """Copy the servers' logs next to the JSON: the work directory (GiBs of data) is deleted."""
    saved: list[Path] = []
    sources = {"weed": env.weed.log_path}
    if env.gateway is not None:
        sources[CANDIDATE] = env.gateway.log_path
    results_dir.mkdir(parents=True, exist_ok=True)
    for name, source in sources.items():
        if source.exists():
            dest = results_dir / f"{stamp}-{name}.log"
            shutil.copyfile(source, dest)
            saved.append(dest)
    return saved


def main(argv: Sequence[str] | None = None) -> int:
    """Run the bench; 0 when every request succeeded, 1 on request errors, 2 when aborted."""
    opts = parse_args(argv)
    selected = select_workloads(workloads(opts.large_size, opts.mpu_size, opts.mpu_part_size), opts.only)
    if not selected:
        _log(f"--only {opts.only!r} matches no workload")
        return 2
    # SIGTERM (e.g. from a CI runner) unwinds like Ctrl-C, so the finally below stops the servers.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    started = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))
    workdir = Path(tempfile.mkdtemp(prefix="s3orch-bench-"))
    env = Environment(workdir)
    cells: list[CellResult] = []
    peak_rss: dict[str, int | None] = {}
    saved_logs: list[Path] = []
    status = 0
    try:
        _log(f"starting weed mini and s3orch in {workdir}")
        env.start()
        asyncio.run(run_bench(env, selected, opts, cells))
    except KeyboardInterrupt:
        _log("interrupted; stopping the servers")
        status = 130
    except BenchAborted as exc:
        _log(f"BENCH ABORTED: {exc}")
        status = 2
    finally:
        peak_rss = {name: process_peak_rss(pid) for name, pid in env.pids.items()}
        env.stop()
        if status == 2 or any(c.errors for c in cells):
            saved_logs = _save_logs(env, opts.results_dir, stamp)
            for path in saved_logs:
                _log(f"log saved: {path}")
        if opts.keep:
            _log(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if status == 130 or not cells:
        return status

    rows = summarize(selected, cells)
    errors = sum(c.errors for c in cells)
    doc = results_document(started, opts, selected, cells, rows, peak_rss)
    doc["saved_logs"] = [str(p) for p in saved_logs]
    doc["aborted"] = status == 2
    opts.results_dir.mkdir(parents=True, exist_ok=True)
    out_path = opts.results_dir / f"{stamp}.json"
    out_path.write_text(json.dumps(doc, indent=2) + "\n")

    print(
        f"s3orch bench: {opts.rounds} round(s), {opts.duration:g} s per small-object cell; "
        "median (min..max) across rounds"
    )
    print(
        f"ratios: {CANDIDATE}/{BASELINE} of the back-to-back pair in each round; cpu%: 100 = one "
        f"core of {os.cpu_count()}, other = every other process on the machine (noise)"
    )
    print()
    print(format_table(rows))
    rss = ", ".join(f"{name} {v / MiB:.0f} MiB" for name, v in peak_rss.items() if v is not None)
    print()
    print(f"peak RSS: {rss}")
    print(f"results: {out_path}")
    if status:
        print("\n!!! ABORTED: the table holds only the cells measured before a server died !!!")
    if errors:
        samples = [f"  {c.workload}/{c.target} r{c.round}: {s}" for c in cells for s in c.error_samples]
        timed = sum(r.errors for r in rows)
        print(f"\n{_error_banner(errors)} ({timed} in timed cells, {errors - timed} in warm-up)", file=sys.stderr)
        print("error samples:\n" + "\n".join(samples[:20]), file=sys.stderr)
    return status or (1 if errors else 0)


if __name__ == "__main__":
    sys.exit(main())
