"""How many examples the hypothesis fuzz tests run: their full counts under CI, a tenth locally.

The fuzz properties (tests/unit/test_parser_fuzz.py, tests/unit/test_auth_fuzz.py's deep variants)
dominate a local run's time while each extra thousand random inputs rarely finds anything the
first hundreds did not.  So CI (``CI`` set, as ``.ci/run`` does) or ``S3ORCH_FUZZ=full`` runs every
count as written, and a local ``make test`` runs a tenth of each (at least 50).  Nothing is hidden:
pytest's header says which (:func:`describe`).
"""

from __future__ import annotations

import os

__all__ = ["FULL", "describe", "examples"]

#: Whether this run uses the full counts.
FULL = bool(os.environ.get("CI")) or os.environ.get("S3ORCH_FUZZ") == "full"
#: The share of the full counts a local run takes.
LOCAL_DIVISOR = 10
LOCAL_FLOOR = 50


def examples(full: int) -> int:
    """``full`` under CI (or ``S3ORCH_FUZZ=full``); otherwise a tenth of it, at least 50 (never more than ``full``)."""
    if FULL:
        return full
    return min(full, max(full // LOCAL_DIVISOR, LOCAL_FLOOR))


def describe() -> str:
    """One line for pytest's header: which counts this run uses, and how to get the others."""
    if FULL:
        return "hypothesis fuzz examples: full counts (CI or S3ORCH_FUZZ=full)"
    return (
        f"hypothesis fuzz examples: 1/{LOCAL_DIVISOR} of the CI counts (at least {LOCAL_FLOOR}); "
        "CI=true or S3ORCH_FUZZ=full runs them all"
    )
