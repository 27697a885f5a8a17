"""``s3orch-admin reconcile`` / ``sync`` against a scripted admin client (no gateway)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from s3orch.cli import admin as admin_cli
from s3orch.cli.main import cli

RECONCILED = {
    "status": "ok", "removed": 1, "lost": 1, "orphaned": 2, "backends_scanned": 1,
    "backends": [{"backend": "b1", "scanned": 9, "matched": 5, "removed": 1, "lost": 1, "orphaned": 2,
                  "foreign": 0, "suppressed_pending_cleanup": 0, "error": None}],
    "lost_objects": [{"bucket": "photos", "key": "gone.jpg", "backend": "b1"}],
}
SYNCED = {
    "status": "ok", "dry_run": True, "imported": 1, "skipped": 2, "scanned": 4, "own": 0, "other_bucket": 1,
    "bytes": 2048, "keys": [{"key": "a.jpg", "storage_key": "photos/a.jpg", "size": 2048}],
}


class FakeClient:
    """Streams two progress events, then the scripted answer; records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def stream(
        self, method: str, path: str, on_event: Callable[[dict[str, Any]], None], *, query: Any = None,
        body: Any = None,
    ) -> dict[str, Any]:
        self.calls.append((method, path, dict(query or {})))
        on_event({"type": "start", "total": None})
        on_event({"type": "step_end", "done": 1000})
        return {"reconcile": RECONCILED, "sync": SYNCED}[path]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeClient:
    client = FakeClient()
    monkeypatch.setattr(admin_cli, "client_from", lambda options: client)
    return client


def invoke(args: list[str], tmp_path: Path) -> Any:
    return CliRunner().invoke(cli, [*args, "--config", str(tmp_path / "none.yaml")])


def test_reconcile_prints_each_backend_and_the_lost_objects(fake: FakeClient, tmp_path: Path) -> None:
    result = invoke(["reconcile", "--backend", "b1"], tmp_path)
    assert result.exit_code == 0, result.output
    assert "lost: photos/gone.jpg (last copy was b1)" in result.output
    assert "removed 1, lost 1, orphaned 2, backends scanned 1" in result.output
    assert fake.calls == [("POST", "reconcile", {"backend": "b1"})]


def test_sync_dry_run_lists_what_would_be_imported(fake: FakeClient, tmp_path: Path) -> None:
    result = invoke(["sync", "--backend", "b1", "--bucket", "photos", "--prefix", "p/", "--dry-run"], tmp_path)
    assert result.exit_code == 0, result.output
    assert "photos/a.jpg" in result.output and "would import 1 (2.0 KiB), skipped 2" in result.output
    assert fake.calls == [
        ("POST", "sync", {"backend": "b1", "bucket": "photos", "prefix": "p/", "dry_run": "true"})
    ]


def test_sync_needs_a_backend_and_a_bucket(fake: FakeClient, tmp_path: Path) -> None:
    result = invoke(["sync", "--backend", "b1"], tmp_path)
    assert result.exit_code == 2 and "--bucket" in result.output and fake.calls == []
