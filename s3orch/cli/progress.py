"""The live progress of a streamed admin pass: counts, rate and ETA, from its NDJSON events.

On a terminal one line is redrawn in place (``\\r``); elsewhere (a log, a pipe) a line is
printed per step, at most once a second, so a long pass does not flood the output.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import IO, Any

WIDTH = 30


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressBar:
    """Feed it events (:meth:`event`); :meth:`close` ends the line."""

    def __init__(
        self,
        stream: IO[str],
        *,
        label: str = "",
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        min_interval: float = 1.0,
    ) -> None:
        self.stream = stream
        self.label = label
        self.tty = stream.isatty() if tty is None else tty
        self.clock = clock
        self.min_interval = min_interval
        self.total: int | None = None
        self.done = 0
        self.started = clock()
        self._last_print: float | None = None
        self._drawn = False

    def event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "start":
            total = event.get("total")
            self.total = int(total) if isinstance(total, int) else None
            self.started = self.clock()
            self._draw(force=True)
        elif kind == "step_end":
            done = event.get("done")
            if isinstance(done, int):
                self.done = done
            else:
                self.done += 1
            total = event.get("total")
            if isinstance(total, int):
                self.total = total
            self._draw(force=self.total is not None and self.done >= self.total)

    def render(self) -> str:
        """The current line (without the carriage return)."""
        elapsed = max(self.clock() - self.started, 1e-9)
        rate = self.done / elapsed
        parts = [self.label] if self.label else []
        if self.total:
            fraction = min(1.0, self.done / self.total)
            filled = int(fraction * WIDTH)
            parts.append("[" + "#" * filled + "." * (WIDTH - filled) + "]")
            parts.append(f"{self.done}/{self.total} {fraction * 100:3.0f}%")
        else:
            parts.append(f"{self.done} done")
        parts.append(f"{rate:.1f}/s")
        if self.total and self.done and self.done < self.total:
            parts.append("ETA " + _duration((self.total - self.done) / rate))
        elif self.total and self.done >= self.total:
            parts.append("in " + _duration(elapsed))
        return " ".join(parts)

    def _draw(self, force: bool = False) -> None:
        now = self.clock()
        if self.tty:
            self.stream.write("\r" + self.render() + "\x1b[K")
            self._drawn = True
        elif force or self._last_print is None or now - self._last_print >= self.min_interval:
            self.stream.write(self.render() + "\n")
            self._last_print = now
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
