"""Named points of the write path where the fault rig can kill the process (kill -9).

The crash tests (``tests/integration/test_crash_points.py``) start a gateway
with ``S3ORCH_CRASH_AT=<point>`` (or ``<point>:<n>``: the n-th time the point
is reached, counting from 1) and check that nothing acknowledged is lost and
nothing leaks after a restart.  The variable is read once, at import: in a
normal run :data:`CRASH_AT` is None and :func:`crash_point` is one comparison,
so the points cost nothing and can stay in the code.

The process dies by SIGKILL sent to itself: no ``finally``, no reactor
shutdown, no flush -- exactly what ``kill -9`` or the OOM killer does.
"""

from __future__ import annotations

import os
import signal

#: The points the write path passes (the crash tests cover each one).
POINTS = frozenset(
    {
        # the bytes are on the backend, the pending intent exists, nothing is committed
        "after-backend-put",
        # an overwrite committed, the displaced copies are queued but not yet deleted
        "overwrite-displaced",
        # the commit is durable, the client has not been answered
        "after-commit",
        # CompleteMultipartUpload checked the parts, before its commit transaction
        "complete-before-commit",
        # CompleteMultipartUpload committed, before its cleanups and its answer
        "complete-after-commit",
    }
)

#: The environment variable naming the point (and optionally the hit) to die at.
ENV = "S3ORCH_CRASH_AT"


def parse(value: str | None) -> tuple[str, int] | None:
    """``"point"`` or ``"point:n"`` -> (point, n); None when unset or empty.

    An unknown point is refused loudly: a typo would otherwise make a crash
    test pass without ever crashing.
    """
    if not value:
        return None
    name, _, count = value.partition(":")
    if name not in POINTS:
        raise ValueError(f"{ENV}={value!r}: unknown crash point (known: {', '.join(sorted(POINTS))})")
    hit = int(count) if count else 1
    if hit < 1:
        raise ValueError(f"{ENV}={value!r}: the hit to crash at counts from 1")
    return name, hit


#: (point, hit) to die at, read once at import; None in every normal run.
CRASH_AT = parse(os.environ.get(ENV))

_hits = 0


def crash_point(name: str) -> None:
    """Die here (SIGKILL) when this is the configured point's configured hit; else nothing."""
    if CRASH_AT is None or CRASH_AT[0] != name:
        return
    global _hits
    _hits += 1
    if _hits >= CRASH_AT[1]:
        os.kill(os.getpid(), signal.SIGKILL)
