"""One timed cell: a workload's requests against one target until the deadline (the large and
multipart rows: one transfer), with latencies, errors and CPU; and the untimed seeding."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from s3orch.s3.sigv4 import uri_encode
from tools.bench.client import (
    REQUEST_ERRORS,
    Connection,
    FileSlice,
    RequestFailed,
    Response,
    complete_body,
    describe,
    expect_status,
    is_multipart_etag,
    xml_text,
)
from tools.bench.cpu import CpuMeter
from tools.bench.pacing import run_paced, schedule
from tools.bench.stats import CellResult, percentile
from tools.bench.workloads import (
    LARGE_TIMEOUT,
    LIST_KEYS,
    LIST_MAX_KEYS,
    MAX_ERROR_SAMPLES,
    READ_KEYS,
    SMALL_SIZE,
    SMALL_TIMEOUT,
    Target,
    Workload,
    part_plan,
    size_label,
)

SMALL_BODY = random.Random(4096).randbytes(SMALL_SIZE)


def small_body(size: int) -> bytes:
    """The body of a small object of ``size`` bytes (at most SMALL_SIZE): the same bytes on
    every target, so a GET can check them."""
    if not 0 < size <= SMALL_SIZE:
        raise ValueError(f"small objects are 1..{SMALL_SIZE} bytes, not {size}")
    return SMALL_BODY[:size]


def _read_key(index: int, size: int = SMALL_SIZE) -> str:
    """The seeded objects GET and HEAD read: ``obj/NNNN`` (4 KiB), ``obj-1KiB/NNNN`` (others)."""
    prefix = "obj" if size == SMALL_SIZE else f"obj-{size_label(size)}"
    return f"{prefix}/{index % READ_KEYS:04d}"


def _list_key(index: int) -> str:
    return f"list/{index:04d}"


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
        expect_status(await conn.request("PUT", key, body=small_body(w.size)), 200, f"PUT {key}")
        return w.size
    if w.op in ("get", "head"):
        # Workers start spread over the key set and step by a prime: no two read one key in lockstep.
        key = _read_key(worker * (READ_KEYS // max(w.concurrency, 1)) + seq * 7, w.size)
        method = w.op.upper()
        response = await conn.request(method, key)
        expect_status(response, 200, f"{method} {key}")
        size = response.length if method == "GET" else int(response.headers.get("content-length", -1))
        if size != w.size:
            raise RequestFailed(f"{method} {key}: {size} bytes, expected {w.size}")
        if method == "GET" and response.body != small_body(w.size):
            raise RequestFailed(f"GET {key}: wrong bytes")
        return response.length
    if w.op == "list":
        query = f"list-type=2&max-keys={LIST_MAX_KEYS}&prefix=list%2F"
        response = await conn.request("GET", None, query=query)
        expect_status(response, 200, "LIST list/")
        found = response.body.count(b"<Key>")
        if found != LIST_MAX_KEYS or b"<IsTruncated>true</IsTruncated>" not in response.body:
            raise RequestFailed(f"LIST list/: {found} keys, expected a truncated page of {LIST_MAX_KEYS}")
        return response.length
    if w.op == "put-large":
        key = f"large/put-r{ctx.round}"
        expect_status(await conn.request("PUT", key, body_file=ctx.body(0, w.size)), 200, f"PUT {key}")
        return w.size
    if w.op == "get-large":
        response = await conn.request("GET", "large/get", keep_body=False)
        expect_status(response, 200, "GET large/get")
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
    expect_status(response, 200, f"CreateMultipartUpload {key}")
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
                    expect_status(response, 200, what)
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
        expect_status(response, 200, what)
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
    expect_status(response, 200, f"HEAD {key}")
    size = response.headers.get("content-length")
    if size != str(w.size):
        raise RequestFailed(f"HEAD {key}: Content-Length {size}, expected {w.size}")
    parts = len(part_plan(w.size, w.part_size))
    etag = response.headers.get("etag")
    if conn.target.multipart_etag and not is_multipart_etag(etag, parts):
        raise RequestFailed(f"HEAD {key}: ETag {etag!r}, expected an MD5 then -{parts}")


class BenchAborted(Exception):
    """A process under test died; nothing after this would mean anything."""


class ErrorLog:
    """A cell's error count and its first few distinct descriptions."""

    def __init__(self) -> None:
        self.count = 0
        self.samples: list[str] = []

    def add(self, exc: BaseException) -> None:
        self.count += 1
        sample = f"{type(exc).__name__}: {exc}"
        if len(self.samples) < MAX_ERROR_SAMPLES and sample not in self.samples:
            self.samples.append(sample)


async def run_cell(
    ctx: OpContext,
    target: Target,
    duration: float,
    meter: CpuMeter,
) -> CellResult:
    """Run one workload against one target: open the connections, then let every worker issue
    requests back to back until the deadline (large workloads: exactly one transfer; the
    multipart row: one upload, by one worker over all the connections, checked after the clock
    stops; paced rows: requests on a fixed schedule, see :func:`run_paced_cell`)."""
    w = ctx.workload
    if w.rate:
        return await run_paced_cell(ctx, target, duration, meter)
    conns = [Connection(target) for _ in range(w.concurrency)]
    await asyncio.gather(*(c.open() for c in conns))
    latencies: list[float] = []
    errors = ErrorLog()
    counts = {"ops": 0, "bytes": 0}
    timeout = LARGE_TIMEOUT if w.large else SMALL_TIMEOUT

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
                errors.add(exc)
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
                errors.add(exc)
    finally:
        await asyncio.gather(*(c.close() for c in conns))
    return _cell_result(ctx, target, counts["ops"], errors, seconds, counts["bytes"], latencies, cpu)


def _cell_result(
    ctx: OpContext,
    target: Target,
    ops: int,
    errors: ErrorLog,
    seconds: float,
    moved: int,
    latencies: list[float],
    cpu: dict[str, float],
    late: int = 0,
) -> CellResult:
    latencies.sort()
    return CellResult(
        workload=ctx.workload.name,
        target=target.name,
        round=ctx.round,
        ops=ops,
        errors=errors.count,
        seconds=seconds,
        bytes=moved,
        p50_ms=percentile(latencies, 50) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        cpu=cpu,
        error_samples=errors.samples,
        late=late,
    )


#: Connections a paced cell opens before its clock starts (more are opened if ever all are busy).
PACED_WARM_CONNECTIONS = 4


class ConnectionPool:
    """A paced cell's connections: each request takes a free one, or a new one if all are busy
    (an open loop must never wait for a connection)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._idle: list[Connection] = []
        self._all: list[Connection] = []

    async def open(self, count: int) -> None:
        for _ in range(count):
            conn = self.take()
            await conn.open()
            self.give(conn)

    def take(self) -> Connection:
        if self._idle:
            return self._idle.pop()
        conn = Connection(self.target)
        self._all.append(conn)
        return conn

    def give(self, conn: Connection) -> None:
        self._idle.append(conn)

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._all))


async def run_paced_cell(ctx: OpContext, target: Target, duration: float, meter: CpuMeter) -> CellResult:
    """A paced row: ``rate`` requests a second for ``duration`` seconds, each started on time
    whatever the earlier ones are doing; latencies run from the due time (see tools/bench/pacing)."""
    w = ctx.workload
    pool = ConnectionPool(target)
    await pool.open(PACED_WARM_CONNECTIONS)
    errors = ErrorLog()
    moved = [0]

    async def request(index: int) -> bool:
        conn = pool.take()
        try:
            async with asyncio.timeout(SMALL_TIMEOUT):
                moved[0] += await run_op(conn, ctx, 0, index)
        except REQUEST_ERRORS as exc:
            errors.add(exc)
            await conn.close()  # reopened by its next request
            return False
        finally:
            pool.give(conn)
        return True

    meter.start()
    begin = time.perf_counter()
    try:
        outcome = await run_paced(schedule(w.rate, duration), request, time.perf_counter, asyncio.sleep)
        seconds = time.perf_counter() - begin
        cpu = meter.stop()
    finally:
        await pool.close()
    ops = len(outcome.latencies)
    return _cell_result(ctx, target, ops, errors, seconds, moved[0], outcome.latencies, cpu, outcome.late)


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
    read_sizes = sorted({w.size for w in selected if w.op in ("get", "head")})
    for target in targets:
        jobs: list[Job] = []
        for size in read_sizes:
            jobs += [_put_job(_read_key(i, size), small_body(size)) for i in range(READ_KEYS)]
        if "list" in ops:
            jobs += [_put_job(_list_key(i), SMALL_BODY) for i in range(LIST_KEYS)]
        await run_requests(target, jobs)
        for w in selected:
            if w.op == "get-large" and large_file is not None:
                job = _put_job("large/get", body_file=FileSlice(large_file, 0, w.size))
                await run_requests(target, [job], concurrency=1)
