"""The fuzz example counts: all of them under CI, a tenth locally (at least 50, never more than
written), and pytest's header says which."""

from __future__ import annotations

import pytest

from tests.support import fuzz


def test_a_local_run_takes_a_tenth_with_a_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fuzz, "FULL", False)
    assert [fuzz.examples(n) for n in (2000, 1000, 300, 60, 30)] == [200, 100, 50, 50, 30]
    assert "1/10" in fuzz.describe() and "S3ORCH_FUZZ=full" in fuzz.describe()


def test_ci_takes_every_count_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fuzz, "FULL", True)
    assert [fuzz.examples(n) for n in (2000, 1000, 30)] == [2000, 1000, 30]
    assert fuzz.describe().startswith("hypothesis fuzz examples: full counts")
