"""CPU and memory of the processes under test, read from ``/proc``: per cell, the client, each
server, interrupts and everything else on the machine, so a client-bound or disturbed cell shows."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from tools.bench.workloads import KiB

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def child_pids(pid: int) -> list[int]:
    """The live children of ``pid``: a ``server.processes`` gateway is a supervisor and its gateways."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _own_cpu_seconds(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return math.nan
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def process_cpu_seconds(pid: int | None) -> float:
    """User+system CPU seconds of a process (all its threads) and its live children, NaN if unknown."""
    if pid is None:
        return math.nan
    own = _own_cpu_seconds(pid)
    children = (_own_cpu_seconds(child) for child in child_pids(pid)) if not math.isnan(own) else ()
    return own + sum(v for v in children if not math.isnan(v))


def process_peak_rss(pid: int | None) -> int | None:
    """Peak resident set size (VmHWM) in bytes, summed with its live children's: shows whether a
    process held a large body whole."""
    if pid is None:
        return None
    own = _own_peak_rss(pid)
    if own is None:
        return None
    return own + sum(_own_peak_rss(child) or 0 for child in child_pids(pid))


def _own_peak_rss(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * KiB
    except OSError:
        pass
    return None


def reset_peak_rss(pid: int | None) -> bool:
    """Reset a process's VmHWM to its current RSS (``clear_refs`` 5, Linux >= 4.0), so a later
    :func:`process_peak_rss` is the peak of what ran in between; False if the kernel refused."""
    if pid is None:
        return False
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def process_rss(pid: int | None) -> int | None:
    """Current resident set size (VmRSS) in bytes."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
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


def processes_cpu_seconds(pids: Sequence[int | None]) -> float:
    """CPU seconds of several processes together (the three backends are one column); NaN if
    none is known."""
    known = [v for v in (process_cpu_seconds(pid) for pid in pids) if not math.isnan(v)]
    return sum(known) if known else math.nan


class CpuMeter:
    """CPU used between start() and stop(), in % of one core: by the client, by each server
    (or group of servers), by interrupts ("irq") and by every other process on the machine
    ("other": a busy neighbour makes a cell noisy)."""

    def __init__(self, pids: Mapping[str, Sequence[int | None]]) -> None:
        self.pids = pids
        self._start: dict[str, float] = {}
        self._wall = 0.0

    def _now(self) -> dict[str, float]:
        now = {name: processes_cpu_seconds(pids) for name, pids in self.pids.items()}
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
