"""Usage over the last day, kept in memory for the overview's chart (no external service).

Every :data:`SAMPLE_INTERVAL` the bytes each backend holds are read from the quota table and
appended; samples older than a day fall off, so memory stays flat (288 samples per backend).
The chart is inline SVG drawn here: no JavaScript, no CDN, readable by a screen reader through
its ``<title>``.
"""

from __future__ import annotations

from collections import deque
from html import escape

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from s3orch.store.interface import MetadataStore, StoreError, StoreUnavailable

SAMPLE_INTERVAL = 300.0
WINDOW = 24 * 3600.0
#: Line colours, one per backend in order (distinct in greyscale too: dashes differ).
COLOURS = ("#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#0a7b83")

_log = Logger(namespace="s3orch.ui")


class UsageHistory:
    """Samples of ``bytes_used`` per backend over the last :data:`WINDOW` seconds."""

    def __init__(self, store: MetadataStore, clock: IReactorTime, window: float = WINDOW) -> None:
        self.store = store
        self.clock = clock
        self.window = window
        self.samples: deque[tuple[float, dict[str, int]]] = deque()

    def record(self, now: float, used: dict[str, int]) -> None:
        self.samples.append((now, dict(used)))
        while self.samples and self.samples[0][0] < now - self.window:
            self.samples.popleft()

    async def sample(self) -> None:
        """One sample from the quota table (skipped while the database is unreachable)."""
        try:
            quotas = await self.store.get_quotas()
        except (StoreError, StoreUnavailable) as exc:
            _log.debug("usage sample skipped: {error}", component="ui", error=str(exc))
            return
        self.record(self.clock.seconds(), {name: row.bytes_used for name, row in quotas.items()})

    def sample_soon(self) -> Deferred[None]:
        """:meth:`sample` for a ``TimerService`` (which wants a Deferred)."""
        return Deferred.fromCoroutine(self.sample())

    def series(self) -> dict[str, list[tuple[float, int]]]:
        out: dict[str, list[tuple[float, int]]] = {}
        for when, used in self.samples:
            for name, value in used.items():
                out.setdefault(name, []).append((when, value))
        return out

    def svg(self, width: int = 640, height: int = 160) -> str:
        """The chart as an inline ``<svg>`` element (an empty-state text with no samples)."""
        series = self.series()
        title = "Bytes stored per backend over the last day"
        if not series:
            return (
                f'<svg role="img" viewBox="0 0 {width} {height}" class="chart"><title>{title}</title>'
                f'<text x="10" y="{height // 2}">No samples yet (one every {int(SAMPLE_INTERVAL)} s).</text></svg>'
            )
        now = self.clock.seconds()
        start = now - self.window
        top = max((v for points in series.values() for _, v in points), default=0) or 1
        pad = 24
        parts = [f'<svg role="img" viewBox="0 0 {width} {height}" class="chart"><title>{title}</title>',
                 f'<line x1="{pad}" y1="{height - pad}" x2="{width}" y2="{height - pad}" stroke="#888"/>']
        for index, (name, points) in enumerate(sorted(series.items())):
            colour = COLOURS[index % len(COLOURS)]
            coords = " ".join(
                f"{pad + (when - start) / self.window * (width - pad):.1f},"
                f"{height - pad - value / top * (height - 2 * pad):.1f}"
                for when, value in points
            )
            last_x, last_y = coords.rsplit(" ", 1)[-1].split(",")
            parts.append(f'<circle cx="{last_x}" cy="{last_y}" r="3" fill="{colour}"/>')  # one sample shows too
            dash = "" if index == 0 else f' stroke-dasharray="{2 + 2 * index},3"'
            parts.append(
                f'<polyline fill="none" stroke="{colour}" stroke-width="2"{dash} points="{coords}">'
                f"<title>{escape(name)}</title></polyline>"
            )
            parts.append(
                f'<text x="{pad + 110 * index}" y="{height - 6}" fill="{colour}">{escape(name)}</text>'
            )
        parts.append("</svg>")
        return "".join(parts)
