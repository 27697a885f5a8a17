"""The last log lines in memory, for the admin API's ``logs`` route.

The log observer (:class:`s3orch.observe.logging.LogSettings`) appends every line it
writes, already rendered as the JSON record (secret fields dropped); a bounded deque keeps
the newest ``capacity`` of them, so memory stays flat however long the process runs.
Tracebacks are not kept: an operator asking over HTTP gets the error message, the full
trace stays in the process log.
"""

from __future__ import annotations

from collections import deque
from typing import Any

#: Severity order of the levels the records carry.
LEVEL_ORDER = {"DEBUG": 10, "INFO": 20, "WARN": 30, "ERROR": 40}

#: How many lines the ring keeps by default.
DEFAULT_CAPACITY = 1000


class LogRing:
    """The newest ``capacity`` log records (dicts as :func:`~s3orch.observe.logging.event_to_dict`
    makes them), oldest first."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._records: deque[dict[str, Any]] = deque(maxlen=max(1, capacity))

    @property
    def capacity(self) -> int:
        return self._records.maxlen or 0

    def __len__(self) -> int:
        return len(self._records)

    def append(self, record: dict[str, Any]) -> None:
        if "traceback" in record:
            record = {key: value for key, value in record.items() if key != "traceback"}
        self._records.append(record)

    def recent(
        self, *, level: str | None = None, component: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """The newest ``limit`` records at ``level`` or above and of ``component``, oldest first.

        ``level`` is debug|info|warn|error (any case); an unknown one is a ValueError.
        """
        floor = 0
        if level:
            name = "WARN" if level.upper() == "WARNING" else level.upper()
            if name not in LEVEL_ORDER:
                raise ValueError(f"unknown log level {level!r}")
            floor = LEVEL_ORDER[name]
        picked: list[dict[str, Any]] = []
        for record in reversed(self._records):
            if len(picked) >= limit:
                break
            if LEVEL_ORDER.get(str(record.get("level")), 20) < floor:
                continue
            if component and record.get("component") != component:
                continue
            picked.append(record)
        picked.reverse()
        return picked
