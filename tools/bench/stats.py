"""The bench's numbers: per-cell results, medians and spreads across rounds, the paired
s3orch/direct ratios, and the text table."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from tools.bench.workloads import BASELINE, CANDIDATE, MiB, Workload


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
