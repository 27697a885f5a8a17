"""The bench's numbers: per-cell results, medians and spreads across rounds, the paired
s3orch/direct ratios, and the text table."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from tools.bench.workloads import (
    ALL_TARGETS,
    BASELINE,
    CANDIDATE,
    FLOOR,
    P99_GOALS_MS,
    PEER,
    RATIO_GOALS,
    MiB,
    Workload,
)


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
    #: paced rows: requests that started behind schedule (the client, not the server, was slow).
    late: int = 0

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
    #: rows other than the baseline's: this target/baseline per round (they ran back to back),
    #: across rounds.
    throughput_ratio: Spread | None = None
    p50_ratio: Spread | None = None
    #: the candidate's row, when the peer ran too: candidate/peer throughput per round.
    versus_peer: Spread | None = None
    #: paced rows: requests started behind schedule, all rounds.
    late: int = 0
    #: the candidate's and the peer's rows, when the floor ran too: target/floor throughput per round.
    versus_floor: Spread | None = None


def _ratio(num: float, den: float) -> float:
    if math.isnan(num) or math.isnan(den) or den == 0:
        return math.nan
    return num / den


def _paired(
    results: Sequence[CellResult], workload: Workload, num: str, den: str, metric: str
) -> Spread:
    """num/den of a metric ("throughput" or "p50") per round, across rounds: each pair ran back
    to back, so slow drift and other load on the machine cancel in the ratio better than in a
    ratio of medians.  Rounds missing either side are left out."""

    def value(cell: CellResult) -> float:
        return cell.throughput(workload) if metric == "throughput" else cell.p50_ms

    by_round = {
        (c.target, c.round): c for c in results if c.workload == workload.name and c.target in (num, den)
    }
    rounds = sorted({rnd for target, rnd in by_round if target == num})
    return Spread.of(
        [_ratio(value(by_round[num, r]), value(by_round[den, r])) for r in rounds if (den, r) in by_round]
    )


def summarize(
    selected: Sequence[Workload],
    results: Sequence[CellResult],
    targets: Sequence[str] = ALL_TARGETS,
) -> list[Row]:
    """Table rows (the baseline first, then the others, per workload) from per-round cells."""
    rows: list[Row] = []
    baseline = targets[0]
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
                late=sum(c.late for c in cells),
            )
        for target in targets[1:]:
            if target in per_target and baseline in per_target:
                per_target[target] = replace(
                    per_target[target],
                    throughput_ratio=_paired(results, workload, target, baseline, "throughput"),
                    p50_ratio=_paired(results, workload, target, baseline, "p50"),
                )
        if CANDIDATE in per_target and PEER in per_target:
            per_target[CANDIDATE] = replace(
                per_target[CANDIDATE], versus_peer=_paired(results, workload, CANDIDATE, PEER, "throughput")
            )
        if FLOOR in per_target:
            for target in (CANDIDATE, PEER):
                if target in per_target:
                    per_target[target] = replace(
                        per_target[target], versus_floor=_paired(results, workload, target, FLOOR, "throughput")
                    )
        rows += [per_target[t] for t in targets if t in per_target]
    return rows


def _goal_text(met: bool, goal: str) -> str:
    return f"goal {goal}: {'met' if met else 'MISSED'}"


def summary_line(rows: Sequence[Row]) -> str:
    """One line for one workload's rows: the baseline's figure, every other target's ratio to
    it, s3orch against the peer, and the issue's goal for the row (met or MISSED).  Paced rows
    compare p99 latencies instead (their throughput is the pace)."""
    w = rows[0].workload
    by_target = {r.target: r for r in rows}
    cand = by_target.get(CANDIDATE)
    peer = by_target.get(PEER)
    parts: list[str] = []
    if w.rate:
        parts.append("p99 " + ", ".join(f"{r.target} {format_number(r.p99_ms.median)} ms" for r in rows))
        if cand is not None and peer is not None:
            ahead = cand.p99_ms.median <= peer.p99_ms.median
            parts.append(f"{CANDIDATE} {'<=' if ahead else 'ABOVE'} {PEER}")
        goal = P99_GOALS_MS.get(w.op)
        if cand is not None and goal is not None and not math.isnan(cand.p99_ms.median):
            parts.append(_goal_text(cand.p99_ms.median <= goal, f"p99 <= {goal:g} ms"))
        base = by_target.get(BASELINE)
        if goal is not None and base is not None and base.p99_ms.median > goal:
            # A proxy adds to the backend's latency: it cannot answer faster than what it forwards to.
            parts.append(f"goal below the backend's own p99 ({BASELINE} {format_number(base.p99_ms.median)} ms)")
        late = sum(r.late for r in rows)
        if late:
            parts.append(f"{late} late starts (the client fell behind the pace)")
    else:
        base = by_target.get(BASELINE)
        if base is not None:
            parts.append(f"{BASELINE} {format_number(base.throughput.median)} {w.unit}")
        parts += [
            f"{r.target} {_ratio_text(r.throughput_ratio)}"
            for r in rows
            if r.throughput_ratio is not None and r.target != FLOOR
        ]
        if cand is not None and cand.versus_peer is not None and not math.isnan(cand.versus_peer.median):
            verdict = ">=" if cand.versus_peer.median >= 1 else "BELOW"
            parts.append(f"{CANDIDATE}/{PEER} {cand.versus_peer.median:.2f}x ({verdict} {PEER})")
        goal = RATIO_GOALS.get(w.name)
        ratio = cand.throughput_ratio if cand is not None else None
        if goal is not None and ratio is not None and not math.isnan(ratio.median):
            parts.append(_goal_text(ratio.median >= goal, f">= {goal:.2f}x {BASELINE}"))
        parts += _floor_parts(by_target)
    errors = sum(r.errors for r in rows)
    if errors:
        parts.append(f"{errors} ERRORS")
    return f"{w.label}: " + "; ".join(parts)


def _floor_parts(by_target: dict[str, Row]) -> list[str]:
    """The twisted.web floor's figure, and where s3orch and the peer stand against it: a peer
    above the floor in every round is out of reach of any twisted.web front door on this row."""
    floor = by_target.get(FLOOR)
    if floor is None or floor.throughput_ratio is None:
        return []
    parts = [
        f"twisted.web {FLOOR} {_ratio_text(floor.throughput_ratio)} {BASELINE} "
        f"(no work at all: {CANDIDATE} cannot exceed it)"
    ]
    against = {
        r.target: r.versus_floor
        for r in (by_target.get(CANDIDATE), by_target.get(PEER))
        if r is not None and r.versus_floor is not None and not math.isnan(r.versus_floor.median)
    }
    if against:
        parts.append(", ".join(f"{name}/{FLOOR} {_ratio_text(value)}" for name, value in against.items()))
    peer = against.get(PEER)
    if peer is not None and peer.low > 1:
        parts.append(f"{PEER} ABOVE the {FLOOR} in every round: {CANDIDATE} >= {PEER} is out of reach on this row")
    return parts


def summary_lines(rows: Sequence[Row]) -> list[str]:
    """:func:`summary_line` for every workload, in table order."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(row.workload.name, []).append(row)
    return [summary_line(group) for group in groups.values()]


# --------------------------------------------------------------------------------------------
# Table
# --------------------------------------------------------------------------------------------


def format_number(value: float) -> str:
    """Three significant-ish digits: enough to compare, few enough to read."""
    if math.isnan(value):
        return "-"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _spread(s: Spread) -> str:
    return f"{format_number(s.low)}..{format_number(s.high)}"


def _ratio_text(value: Spread | None) -> str:
    if value is None:
        return ""
    if math.isnan(value.median):
        return "-"
    return f"{value.median:.2f}x ({value.low:.2f}..{value.high:.2f})"


#: CPU columns: the processes of the bench (weed: the three backends together), everything else
#: on the machine, and the twisted.web floor (last: "-" when it did not run).
CPU_PROCESSES = ("client", CANDIDATE, PEER, "weed", "other", FLOOR)


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
        f"/{BASELINE}: thr",
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
                f"{format_number(row.throughput.median)} {w.unit}",
                f"({_spread(row.throughput)})",
                format_number(row.p50_ms.median),
                f"({_spread(row.p50_ms)})",
                format_number(row.p99_ms.median),
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
        out += ["", error_banner(total)]
    return "\n".join(out)


def error_banner(total: int) -> str:
    return f"!!! {total} REQUEST ERRORS: these numbers are NOT trustworthy (see error samples) !!!"
