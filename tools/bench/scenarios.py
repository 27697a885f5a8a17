"""The heavy scenarios, outside the A/B table (``--only rss-16x`` / ``--only list-1m``): figures the
issue asks of the gateway alone, each with its goal.

* ``rss-16x``: the gateway's peak RSS while 16 large transfers run at once (8 PUTs up, 8 GETs
  down, each 1 GiB by default, ``--rss-mib``).  The kernel's high-water mark (VmHWM) of the twistd
  process is reset just before (``/proc/PID/clear_refs``) and read just after, so the figure is
  the peak of this scenario, not of the whole run; VmRSS is also sampled every 50 ms as a check.
* ``list-1m``: the first ListObjectsV2 page (max-keys 1000) of a bucket of 1,000,000 keys whose
  metadata is written straight into the gateway's SQLite (tools/bench/bigbucket.py); one cold
  request, then ``LIST_REPEATS`` timed back to back.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.bench.bigbucket import fill_bucket, key_name
from tools.bench.cells import BenchAborted, ErrorLog
from tools.bench.client import REQUEST_ERRORS, Connection, FileSlice, RequestFailed, describe, expect_status
from tools.bench.cpu import process_peak_rss, process_rss, reset_peak_rss
from tools.bench.stats import format_number, percentile
from tools.bench.workloads import LARGE_TIMEOUT, SMALL_TIMEOUT, MiB, Target, size_label

#: The issue's goals: peak gateway RSS (100 MB, decimal) and the first LIST page's time.
RSS_GOAL_BYTES = 100 * 1000 * 1000
LIST_GOAL_MS = 20.0
RSS_UPLOADS = 8
RSS_DOWNLOADS = 8
LIST_PAGE = 1000
LIST_REPEATS = 50
#: How often VmRSS is sampled during the RSS scenario (a check on VmHWM, which is exact).
RSS_SAMPLE_SECONDS = 0.05


@dataclass
class ScenarioResult:
    """One scenario's figures (for the JSON), its errors, and its line for the report."""

    name: str
    figures: dict[str, Any]
    line: str
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)


def _goal(met: bool, text: str) -> str:
    return f"goal {text}: {'met' if met else 'MISSED'}"


def format_rss_line(figures: dict[str, Any]) -> str:
    """``RSS 16 x 1GiB (8 up, 8 down): s3orch peak 83 MiB ...; goal <= 100 MB: met``."""
    peak = figures.get("peak_rss_bytes")
    head = (
        f"RSS {figures['uploads'] + figures['downloads']} x {size_label(figures['size'])} "
        f"({figures['uploads']} up, {figures['downloads']} down)"
    )
    if peak is None:
        return f"{head}: s3orch peak RSS unknown (no /proc?)"
    source = "VmHWM" if figures.get("hwm_reset") else "sampled VmRSS (VmHWM could not be reset)"
    parts = [
        f"s3orch peak {peak / MiB:.0f} MiB = {peak / 1e6:.0f} MB ({source}; "
        f"{(figures.get('rss_before_bytes') or 0) / MiB:.0f} MiB before)",
        f"{format_number(figures['mib_per_s'])} MiB/s all transfers together",
        _goal(peak <= RSS_GOAL_BYTES, f"<= {RSS_GOAL_BYTES / 1e6:.0f} MB"),
    ]
    return f"{head}: " + "; ".join(parts)


def _number(value: float | None) -> float:
    return math.nan if value is None else value


def format_list_line(figures: dict[str, Any]) -> str:
    """``LIST first page (1000 of 1000000 keys): s3orch p50 12 ms ...; goal <= 20 ms: met``."""
    head = f"LIST first page ({figures['page']} of {figures['keys']} keys)"
    p50 = _number(figures.get("p50_ms"))
    if math.isnan(p50):
        return f"{head}: no successful request"
    parts = [
        f"s3orch p50 {format_number(p50)} ms, p99 {format_number(_number(figures.get('p99_ms')))} ms "
        f"over {figures['repeats']}, first (cold) {format_number(_number(figures.get('cold_ms')))} ms",
        f"metadata built in {figures['fill_seconds']:.0f} s",
        _goal(p50 <= LIST_GOAL_MS, f"p50 <= {LIST_GOAL_MS:g} ms"),
    ]
    return f"{head}: " + "; ".join(parts)


def transfer_timeout(size: int) -> float:
    """A ceiling for one of the 16 transfers: 16 GiB share one loaded machine, so LARGE_TIMEOUT
    or 0.5 MiB/s for the transfer, whichever is longer."""
    return max(LARGE_TIMEOUT, 2.0 * size / MiB)


async def _sample_rss(pid: int | None, peak: list[int]) -> None:
    while True:
        peak[0] = max(peak[0], process_rss(pid) or 0)
        await asyncio.sleep(RSS_SAMPLE_SECONDS)


async def rss_scenario(target: Target, pid: int | None, source: Path, size: int) -> ScenarioResult:
    """8 PUTs of ``size`` bytes from ``source`` and 8 GETs of a seeded ``size``-byte object, all
    at once, each on its own connection; the gateway's peak RSS meanwhile."""
    errors = ErrorLog()
    seed_conn = Connection(target)
    try:
        async with asyncio.timeout(transfer_timeout(size)):
            response = await seed_conn.request("PUT", "rss/down", body_file=FileSlice(source, 0, size))
        if response.status != 200:
            raise BenchAborted(f"seeding rss/down failed: {describe(response)}")
    finally:
        await seed_conn.close()

    async def transfer(index: int, upload: bool) -> int:
        conn = Connection(target)
        try:
            async with asyncio.timeout(transfer_timeout(size)):
                if upload:
                    key = f"rss/up-{index}"
                    response = await conn.request("PUT", key, body_file=FileSlice(source, 0, size))
                    expect_status(response, 200, f"PUT {key}")
                    return size
                response = await conn.request("GET", "rss/down", keep_body=False)
                expect_status(response, 200, "GET rss/down")
                if response.length != size:
                    raise RequestFailed(f"GET rss/down: {response.length} bytes, expected {size}")
                return response.length
        except REQUEST_ERRORS as exc:
            errors.add(exc)
            return 0
        finally:
            await conn.close()

    hwm_reset = reset_peak_rss(pid)
    before = process_rss(pid)
    sampled = [before or 0]
    sampler = asyncio.ensure_future(_sample_rss(pid, sampled))
    begin = time.perf_counter()
    try:
        moved = await asyncio.gather(
            *(transfer(i, True) for i in range(RSS_UPLOADS)), *(transfer(i, False) for i in range(RSS_DOWNLOADS))
        )
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    seconds = time.perf_counter() - begin
    hwm = process_peak_rss(pid)
    peak = hwm if hwm_reset and hwm is not None else (sampled[0] or None)
    figures: dict[str, Any] = {
        "size": size,
        "uploads": RSS_UPLOADS,
        "downloads": RSS_DOWNLOADS,
        "seconds": round(seconds, 2),
        "mib_per_s": round(sum(moved) / MiB / seconds, 1) if seconds > 0 else None,
        "rss_before_bytes": before,
        "peak_rss_bytes": peak,
        "hwm_reset": hwm_reset,
        "vm_hwm_bytes": hwm,
        "sampled_peak_rss_bytes": sampled[0] or None,
        "goal_bytes": RSS_GOAL_BYTES,
    }
    return ScenarioResult("rss-16x", figures, format_rss_line(figures), errors.count, errors.samples)


async def list_scenario(target: Target, db_path: Path, backend: str, keys: int) -> ScenarioResult:
    """Fill ``target``'s bucket with ``keys`` keys in the database, then time its first page."""
    errors = ErrorLog()
    began = time.perf_counter()
    await asyncio.to_thread(fill_bucket, db_path, target.bucket, keys, backend)
    fill_seconds = time.perf_counter() - began
    conn = Connection(target)
    query = f"list-type=2&max-keys={LIST_PAGE}"
    expected_first = f"<Key>{key_name(0)}</Key>".encode()
    latencies: list[float] = []
    cold = math.nan
    try:
        for attempt in range(LIST_REPEATS + 1):
            started = time.perf_counter()
            try:
                async with asyncio.timeout(SMALL_TIMEOUT):
                    response = await conn.request("GET", None, query=query)
                elapsed = time.perf_counter() - started
                expect_status(response, 200, f"LIST {target.bucket}")
                found = response.body.count(b"<Key>")
                if found != min(LIST_PAGE, keys) or expected_first not in response.body:
                    raise RequestFailed(f"LIST {target.bucket}: {found} keys or not from {key_name(0)}")
            except REQUEST_ERRORS as exc:
                errors.add(exc)
                await conn.close()
                continue
            if attempt == 0:
                cold = elapsed
            else:
                latencies.append(elapsed)
    finally:
        await conn.close()
    latencies.sort()
    figures: dict[str, Any] = {
        "keys": keys,
        "page": LIST_PAGE,
        "repeats": len(latencies),
        "fill_seconds": round(fill_seconds, 1),
        "cold_ms": round(cold * 1000, 3) if not math.isnan(cold) else None,
        "p50_ms": round(percentile(latencies, 50) * 1000, 3) if latencies else None,
        "p99_ms": round(percentile(latencies, 99) * 1000, 3) if latencies else None,
        "min_ms": round(latencies[0] * 1000, 3) if latencies else None,
        "goal_ms": LIST_GOAL_MS,
    }
    return ScenarioResult("list-1m", figures, format_list_line(figures), errors.count, errors.samples)
