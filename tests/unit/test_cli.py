"""The s3orch-admin click group: version, help and validate (with s3-orchestrator's single-dash -config flag)."""

from __future__ import annotations

import platform
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

import twisted
from s3orch import __version__
from s3orch.cli.main import cli

VALID: dict[str, Any] = {
    "buckets": [
        {
            "name": "photos",
            "credentials": [{"access_key_id": "PK", "secret_access_key": "${PS}"}],
        },
        {"name": "videos", "credentials": [{"token": "tok"}]},
    ],
    "backends": [
        {
            "name": f"b{i}",
            "endpoint": "http://127.0.0.1:9100",
            "bucket": "data",
            "access_key_id": "k",
            "secret_access_key": "s",
            "quota_bytes": "1GB",
        }
        for i in (1, 2, 3)
    ],
    "routing_strategy": "spread",
}


def write(tmp_path: Path, data: dict[str, Any], name: str = "config.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env={"PS": "photos-secret"})


def test_version_names_ours_python_twisted_and_platform(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["version"])
    assert result.exit_code == 0
    assert result.stdout == (
        f"s3orch {__version__} (Python {platform.python_version()}, "
        f"Twisted {twisted.__version__}) {sys.platform}/{platform.machine()}\n"
    )


@pytest.mark.parametrize("flag", ["--config", "-config", "-c"])
def test_validate_valid_file_prints_the_summary(
    runner: CliRunner, tmp_path: Path, flag: str
) -> None:
    path = write(tmp_path, VALID)
    result = runner.invoke(cli, ["validate", flag, path])
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"config {path}: valid\n  backends: 3\n  buckets:  2\n  routing:  spread\n"
    )
    assert result.stderr == ""


def test_validate_accepts_flag_equals_value(runner: CliRunner, tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    result = runner.invoke(cli, ["validate", f"-config={path}"])
    assert result.exit_code == 0
    assert result.stdout.startswith(f"config {path}: valid\n")


def test_validate_defaults_to_config_yaml_in_the_working_directory(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, VALID)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(cli, ["validate"])
    assert result.exit_code == 0
    assert result.stdout.startswith("config config.yaml: valid\n")


def test_validate_lists_every_problem_on_stderr(
    runner: CliRunner, tmp_path: Path
) -> None:
    broken = dict(VALID)
    backends = [dict(b) for b in VALID["backends"]]
    backends[1]["quota_bytes"] = -5
    backends[2]["quota_byte"] = 1
    broken["backends"] = backends
    broken["routing_strategy"] = "random"
    path = write(tmp_path, broken)
    result = runner.invoke(cli, ["validate", "-config", path])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: backends[1].quota_bytes: must be >= 0",
        "error: backends[2].quota_byte: unknown key (did you mean 'quota_bytes'?)",
        "error: routing_strategy: must be 'pack' or 'spread'",
    ]


def test_validate_reports_unset_env_variables_through_their_effect(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, VALID)
    result = CliRunner(env={"PS": None}).invoke(cli, ["validate", "-c", path])
    assert result.exit_code == 1
    assert result.stderr == (
        "error: buckets[0].credentials[0].secret_access_key: is required with access_key_id\n"
    )


def test_validate_missing_file(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["validate", "--config", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: config: cannot read ")
    assert "nope.yaml" in result.stderr


def test_validate_yaml_syntax_error(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("server:\n  listen_addr: [unclosed\n")
    result = runner.invoke(cli, ["validate", "-config", str(path)])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: yaml: ")


def test_validate_prints_warnings_on_stderr_and_still_succeeds(
    runner: CliRunner, tmp_path: Path
) -> None:
    data = dict(VALID)
    data["buckets"] = [{"name": "Photos_2024", "credentials": [{"token": "t"}]}]
    path = write(tmp_path, data)
    result = runner.invoke(cli, ["validate", "-config", path])
    assert result.exit_code == 0
    assert result.stdout.endswith("  buckets:  1\n  routing:  spread\n")
    assert result.stderr.startswith(
        "warning: buckets[0].name: 'Photos_2024' is not a valid S3"
    )


def test_validate_never_prints_secrets(tmp_path: Path) -> None:
    data = dict(VALID)
    data["buckets"] = [
        {"name": "a", "credentials": [{"token": "SECRET-TOKEN-1"}]},
        {"name": "b", "credentials": [{"token": "SECRET-TOKEN-1"}]},
    ]
    path = write(tmp_path, data)
    result = CliRunner().invoke(cli, ["validate", "-config", path])
    assert result.exit_code == 1
    assert "duplicate token" in result.stderr
    assert "SECRET" not in result.output


@pytest.mark.parametrize("args", [["help"], ["--help"], ["-h"]])
def test_help_lists_the_commands(runner: CliRunner, args: list[str]) -> None:
    result = runner.invoke(cli, args)
    assert result.exit_code == 0
    for command in ("validate", "version", "help"):
        assert re.search(rf"^\s+{command}\s", result.stdout, re.MULTILINE), command


def test_validate_loads_the_packaged_example(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "packaging" / "config.example.yaml"
    env = {"APP1_SECRET_KEY": "a", "BACKEND1_SECRET_KEY": "b"}
    result = CliRunner(env=env).invoke(cli, ["validate", "-config", str(example)])
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith("  backends: 1\n  buckets:  1\n  routing:  pack\n")


def test_validate_refuses_a_feature_this_build_lacks_naming_the_key(
    runner: CliRunner, tmp_path: Path
) -> None:
    data = dict(VALID)
    data["write_path"] = {"pending_pattern": {"enabled": False}}
    path = write(tmp_path, data)
    result = runner.invoke(cli, ["validate", "-config", path])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: write_path.pending_pattern.enabled: not supported by this build of s3orch "
        "(the key is accepted so that existing files load); the legacy write path (false) is not"
        " implemented; remove the key or set true"
    ]


def test_validate_lists_every_refused_key_after_the_warnings(
    runner: CliRunner, tmp_path: Path
) -> None:
    data = dict(VALID)
    data["buckets"] = [{"name": "Photos_2024", "credentials": [{"token": "t"}]}]
    data["write_path"] = {"pending_pattern": {"enabled": False}}
    path = write(tmp_path, data)
    result = runner.invoke(cli, ["validate", "-config", path])
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[0].startswith("warning: buckets[0].name: ")
    assert [line.split(": ")[1] for line in lines[1:]] == ["write_path.pending_pattern.enabled"]
    assert all("not supported by this build of s3orch" in line for line in lines[1:])


def test_validate_accepts_the_originals_defaults_of_features_this_build_lacks(
    runner: CliRunner, tmp_path: Path
) -> None:
    data = dict(VALID)
    data["circuit_breaker"] = {"failure_threshold": 3, "open_timeout": "15s", "cache_ttl": "60s"}
    data["cleanup_queue"] = {"concurrency": 10}
    data["integrity"] = {"enabled": False, "verify_on_replicate": True}
    data["replication"] = {"factor": 1, "worker_interval": "1m"}
    path = write(tmp_path, data)
    result = runner.invoke(cli, ["validate", "-config", path])
    assert result.exit_code == 0, result.output
