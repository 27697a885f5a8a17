"""``s3orch-admin drain`` / ``remove-backend`` against a scripted admin client (no gateway)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from s3orch.cli import admin as admin_cli
from s3orch.cli.main import cli


class FakeClient:
    """Answers the drain routes from a script of statuses; records every call."""

    def __init__(self, statuses: list[dict[str, Any]]) -> None:
        self.statuses = statuses
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def call(self, method: str, path: str, *, query: Any = None, body: Any = None) -> dict[str, Any]:
        self.calls.append((method, path, dict(query or {})))
        if (method, path) == ("POST", "drain"):
            return {"status": "drain started", "backend": query["backend"]}
        if (method, path) == ("GET", "drain"):
            return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        if (method, path) == ("DELETE", "backend"):
            if query.get("purge") and not query.get("confirm"):
                return {"status": "preview", "object_count": 2, "total_bytes": 10, "confirm_token": "tok"}
            return {"status": "backend removed", "copies_forgotten": 2, "objects_lost": 0,
                    **({"purged": 2, "purge_failures": 0} if query.get("confirm") else {})}
        raise AssertionError((method, path))


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeClient:
    client = FakeClient([
        {"backend": "b1", "state": "active", "objects_remaining": 4, "objects_moved": 0},
        {"backend": "b1", "state": "active", "objects_remaining": 2, "objects_moved": 2},
        {"backend": "b1", "state": "completed", "objects_remaining": 0, "objects_moved": 4,
         "bytes_remaining": 0, "bytes_moved": 40},
    ])
    monkeypatch.setattr(admin_cli, "client_from", lambda options: client)
    monkeypatch.setattr("s3orch.cli.drain.time.sleep", lambda seconds: None)
    return client


def invoke(args: list[str], tmp_path: Path, stdin: str = "") -> Any:
    return CliRunner().invoke(cli, [*args, "--config", str(tmp_path / "none.yaml")], input=stdin)


def test_drain_wait_follows_to_completion_with_a_progress_bar(fake: FakeClient, tmp_path: Path) -> None:
    result = invoke(["drain", "b1", "--wait", "--interval", "0"], tmp_path)
    assert result.exit_code == 0, result.output
    assert "completed" in result.output and "moved 4" in result.output
    assert "4/4 100%" in result.output  # the bar (stderr is mixed into output by CliRunner)
    assert [c[:2] for c in fake.calls] == [("POST", "drain")] + [("GET", "drain")] * 3


def test_remove_backend_purge_asks_then_sends_the_token(fake: FakeClient, tmp_path: Path) -> None:
    refused = invoke(["remove-backend", "b1", "--purge"], tmp_path, stdin="n\n")
    assert refused.exit_code == 0 and "cancelled" in refused.output
    assert all("confirm" not in c[2] for c in fake.calls)
    done = invoke(["remove-backend", "b1", "--purge", "--confirm"], tmp_path)
    assert done.exit_code == 0 and "purged 2" in done.output
    assert fake.calls[-1][2] == {"name": "b1", "purge": "true", "confirm": "tok"}
