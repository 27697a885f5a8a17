"""``s3orch-admin compress-existing`` / ``decompress-existing`` against a scripted admin client."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from s3orch.cli import admin as admin_cli
from s3orch.cli.main import cli

ANSWERS = {
    "compress-existing": {"status": "complete", "compressed": 7, "skipped": 2, "failed": 1, "total": 10},
    "decompress-existing": {"status": "complete", "decompressed": 7, "skipped": 0, "failed": 0, "total": 7},
}


class FakeClient:
    """Streams progress events, then the scripted answer; records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def stream(
        self, method: str, path: str, on_event: Callable[[dict[str, Any]], None], *, query: Any = None,
        body: Any = None,
    ) -> dict[str, Any]:
        self.calls.append((method, path))
        on_event({"type": "start", "total": None, "operation": path})
        on_event({"type": "step_end", "done": 1, "key": "photos/a", "status": "success"})
        return ANSWERS[path]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeClient:
    client = FakeClient()
    monkeypatch.setattr(admin_cli, "client_from", lambda options: client)
    return client


def invoke(args: list[str], tmp_path: Path) -> Any:
    return CliRunner().invoke(cli, [*args, "--config", str(tmp_path / "none.yaml")])


def test_compress_existing_posts_and_prints_the_counts(fake: FakeClient, tmp_path: Path) -> None:
    result = invoke(["compress-existing"], tmp_path)
    assert result.exit_code == 0, result.output
    assert "compressed: 7, skipped: 2, failed: 1, total: 10" in result.output
    assert fake.calls == [("POST", "compress-existing")]


def test_decompress_existing_posts_and_prints_the_counts(fake: FakeClient, tmp_path: Path) -> None:
    result = invoke(["decompress-existing"], tmp_path)
    assert result.exit_code == 0, result.output
    assert "decompressed: 7, skipped: 0, failed: 0, total: 7" in result.output
    assert fake.calls == [("POST", "decompress-existing")]


def test_json_output_is_the_answer(fake: FakeClient, tmp_path: Path) -> None:
    result = invoke(["compress-existing", "--json"], tmp_path)
    assert result.exit_code == 0, result.output
    assert '"compressed": 7' in result.output
