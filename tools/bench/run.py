"""The run: weed mini and s3orch as processes, CPU and memory of each, the A/B rounds, and the
results (table on stdout, JSON under ``bench-results/``)."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from tests.support.gateway import PROJECT_ROOT
from tools.bench.cells import BenchAborted, OpContext, run_cell, seed
from tools.bench.cpu import CpuMeter, process_peak_rss
from tools.bench.environment import BACKEND_COUNT, Environment
from tools.bench.scenarios import ScenarioResult, list_scenario, rss_scenario
from tools.bench.stats import (
    CPU_PROCESSES,
    CellResult,
    Row,
    Spread,
    error_banner,
    format_number,
    format_table,
    summarize,
    summary_lines,
)
from tools.bench.workloads import (
    BASELINE,
    CANDIDATE,
    FLOOR,
    FLOOR_WORKLOADS,
    LIST_SCENARIO,
    MPU_PART_SIZE,
    MPU_SIZE,
    PEER,
    QUICK_MPU_PART_SIZE,
    QUICK_MPU_SIZE,
    RSS_SCENARIO,
    SCENARIOS,
    SMALL_SIZE,
    STREAM_CHUNK,
    TARGETS,
    MiB,
    Step,
    Workload,
    ab_plan,
    select_scenarios,
    select_workloads,
    size_label,
    workloads,
)


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
    rate_limit: bool = False
    #: ``--cache``: the object data cache on (its defaults); small GETs become hits.
    cache: bool = False
    #: ``--encryption``: envelope encryption on (an inline master key).
    encryption: bool = False
    #: Seconds per paced cell (the 1 KiB rows at a steady 100 requests/s).
    paced_duration: float = 3.0
    #: The heavy scenarios: object size of the 16 transfers, keys of the big bucket.
    rss_size: int = 1024 * MiB
    list_keys: int = 1_000_000
    processes: int = 1


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _progress(step: Step, rounds: int, w: Workload, cell: CellResult) -> str:
    thr = cell.throughput(w)
    text = (
        f"[round {step.round + 1}/{rounds}] {w.name:<11} {step.target:<6} "
        f"{format_number(thr):>7} {w.unit}  p50 {format_number(cell.p50_ms)} ms  p99 {format_number(cell.p99_ms)} ms  "
        f"cpu " + "/".join(f"{cell.cpu.get(p, math.nan):.0f}" for p in CPU_PROCESSES)
    )
    if cell.errors:
        text += f"  ERRORS {cell.errors}: {cell.error_samples[0] if cell.error_samples else ''}"
    return text


def write_random_file(path: Path, size: int) -> Path:
    """A file of ``size`` random bytes (written in chunks: never a whole large body in memory)."""
    _log(f"writing a {size_label(size)} random body to {path}")
    rng = random.Random(256)
    with path.open("wb") as out:
        for offset in range(0, size, STREAM_CHUNK):
            out.write(rng.randbytes(min(STREAM_CHUNK, size - offset)))
    return path


async def run_bench(
    env: Environment, selected: Sequence[Workload], opts: Options, results: list[CellResult]
) -> None:
    """Seed, warm up, then run the A/B plan, appending every cell's result to ``results`` (which
    thus keeps what was measured before an abort)."""
    targets = [env.targets[name] for name in TARGETS]
    large_file: Path | None = None
    # One file for every large body: PUT and GET send its first bytes, multipart parts its slices.
    file_size = max((w.size for w in selected if w.large), default=0)
    if file_size:
        large_file = write_random_file(env.workdir / "large.bin", file_size)
    _log("seeding the objects GET/HEAD/LIST read, on every target")
    await seed(targets, selected, large_file)

    meter = CpuMeter(env.pids)
    small_ops = [w.op for w in selected if not w.large]
    # Warm both paths (connection pools, caches, the gateway's first requests) off the clock.  With
    # only large rows, small PUTs: a fresh weed's first write costs ~1 s (volume allocation), which
    # would otherwise land in the first large or multipart cell.
    reads = [w for w in selected if w.op in ("get", "head")]
    op = "get" if reads else (small_ops[0] if small_ops else "put")
    warm = Workload("warmup", "warmup", op, 16, reads[0].size if reads else SMALL_SIZE)
    warm_ups = [(warm, target) for target in targets]
    if FLOOR in env.targets:
        # The floor serves one 4 KiB body (and is not seeded): warmed with the rows it runs in.
        warm_ups.append((Workload("warmup", "warmup", "get", 16, SMALL_SIZE), env.targets[FLOOR]))
    for warm_workload, target in warm_ups:
        ctx = OpContext(warm_workload, -1, large_file)
        cell = await run_cell(ctx, target, 0.3 if opts.quick else 1.0, meter)
        results.append(cell)
        if cell.errors:
            _log(f"WARM-UP ERRORS against {target.name}: {cell.errors}, e.g. {cell.error_samples[:1]}")

    by_name = {w.name: w for w in selected}
    extra = {name: (FLOOR,) for name in floor_workloads(selected)} if FLOOR in env.targets else {}
    plan = ab_plan([w.name for w in selected], TARGETS, opts.rounds, extra)
    for step in plan:
        env.check_alive()
        # Off the clock: write back what earlier cells left dirty (a large PUT leaves GiBs
        # between weed and the spool), so no cell pays for its predecessor's writeback.
        os.sync()
        w = by_name[step.workload]
        duration = opts.paced_duration if w.rate else opts.duration
        cell = await run_cell(OpContext(w, step.round, large_file), env.targets[step.target], duration, meter)
        results.append(cell)
        _log(_progress(step, opts.rounds, w, cell))
    env.check_alive()


def floor_workloads(selected: Sequence[Workload]) -> list[str]:
    """The selected rows the twisted.web floor runs in (HEAD/GET 4 KiB c1/c16)."""
    return [w.name for w in selected if w.name in FLOOR_WORKLOADS]


def wants_floor(selected: Sequence[Workload], processes: int) -> bool:
    """Whether to start the floor: a row of it is selected, and the gateway is one reactor (the
    floor is one; against several gateway processes it would bound nothing)."""
    return processes == 1 and bool(floor_workloads(selected))


def peak_rss_by_column(env: Environment) -> dict[str, int | None]:
    """VmHWM per CPU column (weed: the largest of the three), since each process started."""
    peaks = {name: [process_peak_rss(pid) for pid in pids] for name, pids in env.pids.items()}
    return {name: max((v for v in values if v is not None), default=None) for name, values in peaks.items()}


async def run_all(
    env: Environment,
    selected: Sequence[Workload],
    scenarios: Sequence[str],
    opts: Options,
    results: list[CellResult],
    done: list[ScenarioResult],
    peak_rss: dict[str, int | None],
) -> None:
    """The A/B table, then the heavy scenarios; the processes' peak RSS is taken between the two
    (the RSS scenario resets the gateway's high-water mark)."""
    if selected:
        await run_bench(env, selected, opts, results)
    peak_rss.update(peak_rss_by_column(env))
    for name in scenarios:
        env.check_alive()
        os.sync()
        if name == RSS_SCENARIO:
            source = write_random_file(env.workdir / "rss.bin", opts.rss_size)
            _log(f"{name}: 8 PUTs and 8 GETs of {size_label(opts.rss_size)} at once through s3orch")
            result = await rss_scenario(env.targets[CANDIDATE], env.gateway_pid, source, opts.rss_size)
            source.unlink()
        else:
            _log(f"{name}: writing {opts.list_keys} keys into the gateway's database, then LIST")
            result = await list_scenario(env.list_target(), env.database_path, "weed1", opts.list_keys)
        done.append(result)
        _log(result.line)
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
            "paced_duration_s": opts.paced_duration,
            "rss_size": opts.rss_size,
            "list_keys": opts.list_keys,
            "targets": list(TARGETS),
            "processes": opts.processes,
            # The rows the twisted.web floor ran in (its cells and rows carry target "floor").
            "floor_workloads": floor_workloads(selected) if wants_floor(selected, opts.processes) else [],
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
                "versus_peer": None if r.versus_peer is None else spread(r.versus_peer),
                "versus_floor": None if r.versus_floor is None else spread(r.versus_floor),
                "late": r.late,
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
        prog="python -m tools.bench",
        description="s3orch and rclone union vs direct access to the same SeaweedFS backends, alternated by round.",
    )
    parser.add_argument("--rounds", type=int, help="A/B rounds per workload (default 3; --quick: 1)")
    parser.add_argument("--duration", type=float, help="seconds per small-object cell (default 2; --quick: 0.5)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 1 round, 0.5 s cells, 16 MiB large object, 16 MiB multipart upload in 5 MiB parts",
    )
    parser.add_argument(
        "--only",
        metavar="PATTERN",
        help=f"comma-separated globs or substrings of: {names}; the heavy scenarios ({', '.join(SCENARIOS)}) "
        "run only when named (exactly or by a glob)",
    )
    parser.add_argument("--large-mib", type=int, help="size of the large object in MiB (default 64; --quick: 16)")
    parser.add_argument("--results-dir", type=Path, default=Path("bench-results"), help="where the JSON goes")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, data) after the run")
    parser.add_argument(
        "--paced-seconds", type=float, help="seconds per paced 1 KiB cell at 100 requests/s (default 3; --quick: 1)"
    )
    parser.add_argument(
        "--rss-mib", type=int, help=f"{RSS_SCENARIO}: size of each of the 16 transfers in MiB (default 1024; --quick: 64)"
    )
    parser.add_argument(
        "--list-keys", type=int, default=1_000_000, help=f"{LIST_SCENARIO}: keys in the big bucket (default 1000000)"
    )
    parser.add_argument(
        "--rate-limit", action="store_true",
        help="switch rate_limit on with a rate no workload reaches: the limiter's cost on the request path",
    )
    parser.add_argument(
        "--cache", action="store_true",
        help="switch the object data cache on (cache.* defaults): small GETs are answered from memory",
    )
    parser.add_argument(
        "--encryption", action="store_true",
        help="switch envelope encryption on (inline master key, default chunk size): its cost on large PUT/GET",
    )
    parser.add_argument(
        "--processes", type=int, default=1,
        help="server.processes of the gateway (default 1: one reactor; the one-reactor floor runs only then)",
    )
    args = parser.parse_args(argv)
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    duration = args.duration if args.duration is not None else (0.5 if args.quick else 2.0)
    large_mib = args.large_mib if args.large_mib is not None else (16 if args.quick else 64)
    paced = args.paced_seconds if args.paced_seconds is not None else (1.0 if args.quick else 3.0)
    rss_mib = args.rss_mib if args.rss_mib is not None else (64 if args.quick else 1024)
    if rounds < 1 or duration <= 0 or large_mib < 1 or paced <= 0 or rss_mib < 1 or args.list_keys < 1:
        parser.error("--rounds, --duration, --large-mib, --paced-seconds, --rss-mib and --list-keys must be positive")
    if args.processes < 1:
        parser.error("--processes must be positive")
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
        args.rate_limit,
        args.cache,
        args.encryption,
        paced,
        rss_mib * MiB,
        args.list_keys,
        args.processes,
    )


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _save_logs(env: Environment, results_dir: Path, stamp: str) -> list[Path]:
    """Copy the servers' logs next to the JSON: the work directory (GiBs of data) is deleted."""
    saved: list[Path] = []
    sources = {w.data_dir.name: w.log_path for w in env.weeds}
    if env.peer is not None:
        sources[PEER] = env.peer.log_path
    if env.gateway is not None:
        sources[CANDIDATE] = env.gateway.log_path
    if env.floor is not None:
        sources[FLOOR] = env.floor.log_path
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
    scenarios = select_scenarios(opts.only)
    if not selected and not scenarios:
        _log(f"--only {opts.only!r} matches no workload and no scenario")
        return 2
    # SIGTERM (e.g. from a CI runner) unwinds like Ctrl-C, so the finally below stops the servers.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    started = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))
    workdir = Path(tempfile.mkdtemp(prefix="s3orch-bench-"))
    unreachable = {"enabled": True, "requests_per_sec": 1e9, "burst": 1_000_000_000}
    extra: dict[str, Any] = {"rate_limit": unreachable} if opts.rate_limit else {}
    if opts.cache:
        extra["cache"] = {"enabled": True}
    if opts.encryption:
        extra["encryption"] = {"enabled": True, "master_key": base64.b64encode(os.urandom(32)).decode()}
    env = Environment(workdir, extra or None, opts.processes, wants_floor(selected, opts.processes))
    cells: list[CellResult] = []
    done: list[ScenarioResult] = []
    peak_rss: dict[str, int | None] = {}
    saved_logs: list[Path] = []
    status = 0
    try:
        _log(f"starting {BACKEND_COUNT} weed mini, s3orch and rclone union in {workdir}")
        env.start()
        asyncio.run(run_all(env, selected, scenarios, opts, cells, done, peak_rss))
    except KeyboardInterrupt:
        _log("interrupted; stopping the servers")
        status = 130
    except BenchAborted as exc:
        _log(f"BENCH ABORTED: {exc}")
        status = 2
    finally:
        if not peak_rss:
            peak_rss.update(peak_rss_by_column(env))
        env.stop()
        if status == 2 or any(c.errors for c in cells) or any(d.errors for d in done):
            saved_logs = _save_logs(env, opts.results_dir, stamp)
            for path in saved_logs:
                _log(f"log saved: {path}")
        if opts.keep:
            _log(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if status == 130 or not (cells or done):
        return status

    rows = summarize(selected, cells)
    errors = sum(c.errors for c in cells) + sum(d.errors for d in done)
    doc = results_document(started, opts, selected, cells, rows, peak_rss)
    doc["errors_total"] = errors
    doc["scenarios"] = [asdict(d) for d in done]
    doc["summary_lines"] = summary_lines(rows) + [d.line for d in done]
    doc["saved_logs"] = [str(p) for p in saved_logs]
    doc["aborted"] = status == 2
    opts.results_dir.mkdir(parents=True, exist_ok=True)
    out_path = opts.results_dir / f"{stamp}.json"
    out_path.write_text(json.dumps(doc, indent=2) + "\n")

    if rows:
        print(
            f"s3orch bench: {opts.rounds} round(s), {opts.duration:g} s per small-object cell, "
            f"{opts.paced_duration:g} s per paced cell; median (min..max) across rounds"
        )
        print(
            f"targets: {BASELINE} = the first of {BACKEND_COUNT} SeaweedFS backends, {CANDIDATE} and {PEER} union "
            f"over all {BACKEND_COUNT}; ratios: target/{BASELINE} of the back-to-back cells of each round; "
            f"cpu%: 100 = one core of {os.cpu_count()}, other = every other process on the machine (noise)"
        )
        if env.floor is not None:
            print(
                f"{FLOOR}: a bare twisted.web server answering a fixed 4 KiB body (no auth, no store), "
                f"one reactor like s3orch's front door, in the same rounds of {', '.join(floor_workloads(selected))}"
            )
        print()
        print(format_table(rows))
        rss = ", ".join(f"{name} {v / MiB:.0f} MiB" for name, v in peak_rss.items() if v is not None)
        print()
        print(f"peak RSS: {rss}")
    print()
    print("summary (one line per row):")
    for line in doc["summary_lines"]:
        print(f"  {line}")
    print(f"results: {out_path}")
    if status:
        print("\n!!! ABORTED: the table holds only the cells measured before a server died !!!")
    if errors:
        samples = [f"  {c.workload}/{c.target} r{c.round}: {s}" for c in cells for s in c.error_samples]
        samples += [f"  {d.name}: {s}" for d in done for s in d.error_samples]
        timed = sum(r.errors for r in rows)
        print(f"\n{error_banner(errors)} ({timed} in timed cells, {errors - timed} in warm-up)", file=sys.stderr)
        print("error samples:\n" + "\n".join(samples[:20]), file=sys.stderr)
    return status or (1 if errors else 0)


if __name__ == "__main__":
    sys.exit(main())
