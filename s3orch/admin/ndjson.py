"""Progress of a long pass, streamed as NDJSON, for any admin route that runs one.

A pass takes a :class:`Progress` and reports ``start`` (with a ``total`` when it knows one),
then ``step_start``/``step_end`` around each unit of work; the route's answer is the
``result`` line.  Asked with ``Accept: application/x-ndjson``, every event is one JSON line
written as it happens (:class:`NDJSONProgress`), so a client sees the pass move and can time
out per line rather than on the whole pass; otherwise the events go nowhere
(:class:`SilentProgress`) and the answer is one JSON document.  Later passes (replicate,
drain, rebalance ...) reuse both unchanged.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

#: The media type of a streamed answer.
NDJSON = "application/x-ndjson"


def wants_ndjson(accept: str | None) -> bool:
    """Whether an ``Accept`` header asks for a streamed answer."""
    if not accept:
        return False
    return any(part.split(";")[0].strip().lower() == NDJSON for part in accept.split(","))


def line(event: dict[str, Any]) -> bytes:
    """One NDJSON line."""
    return json.dumps(event, separators=(",", ":"), default=str).encode() + b"\n"


class Progress:
    """Where a pass reports how far it got (this base class drops every event)."""

    def start(self, total: int | None = None, **fields: Any) -> None:
        self.emit("start", total=total, **fields)

    def step_start(self, step: str, **fields: Any) -> None:
        self.emit("step_start", step=step, **fields)

    def step_end(self, step: str, **fields: Any) -> None:
        self.emit("step_end", step=step, **fields)

    def emit(self, kind: str, **fields: Any) -> None:
        """Any other event (``type`` is ``kind``)."""


class SilentProgress(Progress):
    """For a plain JSON answer: nobody is watching."""


class NDJSONProgress(Progress):
    """Writes each event as a line through ``write`` (the response), stamped with the
    request id and the time; a write that fails (the client left) stops the writing,
    never the pass."""

    def __init__(self, write: Callable[[bytes], None], request_id: str, clock: Callable[[], float] = time.time) -> None:
        self._write = write
        self.request_id = request_id
        self.clock = clock
        self.closed = False
        #: Events written (the result included).
        self.count = 0

    def emit(self, kind: str, **fields: Any) -> None:
        if self.closed:
            return
        event = {"type": kind, **{k: v for k, v in fields.items() if v is not None}, "at": self.clock()}
        event["request_id"] = self.request_id
        try:
            self._write(line(event))
        except Exception:
            self.closed = True
            return
        self.count += 1

    def result(self, body: dict[str, Any]) -> None:
        """The pass's answer, the last line."""
        self.emit("result", **body)

    def error(self, status: int, message: str) -> None:
        """The pass failed after the stream began (the status line was already sent)."""
        self.emit("error", status=status, error=message)
