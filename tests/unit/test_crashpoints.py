"""The crash points: inert unless S3ORCH_CRASH_AT names one, then SIGKILL at its n-th hit."""

from __future__ import annotations

import signal

import pytest

from s3orch.core import crashpoints


def test_unset_or_empty_means_no_crash_point() -> None:
    assert crashpoints.parse(None) is None
    assert crashpoints.parse("") is None


def test_a_point_and_an_optional_hit_are_parsed() -> None:
    assert crashpoints.parse("after-commit") == ("after-commit", 1)
    assert crashpoints.parse("after-backend-put:3") == ("after-backend-put", 3)


@pytest.mark.parametrize("value", ["after-comit", "after-commit:0", "nope:2"])
def test_an_unknown_point_or_a_bad_hit_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="S3ORCH_CRASH_AT"):
        crashpoints.parse(value)


def test_a_point_is_a_no_op_unless_it_is_the_configured_one_and_kills_at_its_hit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kills: list[tuple[int, int]] = []
    monkeypatch.setattr(crashpoints.os, "kill", lambda pid, sig: kills.append((pid, sig)))
    monkeypatch.setattr(crashpoints, "_hits", 0)
    monkeypatch.setattr(crashpoints, "CRASH_AT", None)
    crashpoints.crash_point("after-commit")
    assert kills == []
    monkeypatch.setattr(crashpoints, "CRASH_AT", ("after-commit", 2))
    crashpoints.crash_point("after-backend-put")  # another point: not counted
    crashpoints.crash_point("after-commit")
    assert kills == []
    crashpoints.crash_point("after-commit")
    assert kills == [(crashpoints.os.getpid(), signal.SIGKILL)]


def test_every_point_is_passed_by_the_write_path() -> None:
    """A point no code reaches would make its crash test pass vacuously."""
    from pathlib import Path

    core = Path(crashpoints.__file__).parent
    source = (core / "objects.py").read_text() + (core / "uploads.py").read_text()
    assert {p for p in crashpoints.POINTS if f'crash_point("{p}")' in source} == crashpoints.POINTS
