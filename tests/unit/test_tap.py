"""twistd's entry point refuses a config it cannot honour: every problem on its own line, exit 1."""

from __future__ import annotations

from pathlib import Path

import pytest

from s3orch.startup import load_checked_config

BACKENDS = """
backends:
  - {name: b1, endpoint: "http://127.0.0.1:1", bucket: x, access_key_id: k, secret_access_key: s}
"""
BUCKETS = """
buckets:
  - name: photos
    credentials: [{access_key_id: AK, secret_access_key: SK}]
"""


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


def test_every_config_error_is_printed_on_its_own_line_and_the_exit_status_is_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, BUCKETS + BACKENDS + "routing_strategy: random\nserver: {log_level: loud}\n")
    with pytest.raises(SystemExit) as info:
        load_checked_config(path)
    assert info.value.code == 1
    assert capsys.readouterr().err.splitlines() == [
        "error: routing_strategy: must be 'pack' or 'spread'",
        "error: server.log_level: must be one of debug, info, warn, error",
    ]


def test_a_feature_this_build_lacks_stops_the_start_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, BUCKETS + BACKENDS + "write_path: {pending_pattern: {enabled: false}}\n")
    with pytest.raises(SystemExit) as info:
        load_checked_config(path)
    assert info.value.code == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "error: write_path.pending_pattern.enabled: not supported by this build of s3orch"
        " (the key is accepted so that existing files load); the legacy write path (false) is not"
        " implemented; remove the key or set true",
    ]


def test_warnings_are_printed_and_the_config_is_used(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    buckets = BUCKETS.replace("name: photos", "name: Photos_2024")
    config = load_checked_config(_write(tmp_path, buckets + BACKENDS))
    assert config.buckets[0].name == "Photos_2024"
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("warning: buckets[0].name: 'Photos_2024' is not a valid S3 bucket name")
