"""s3orch-admin without a gateway: init (interactive and flags), the progress bar, addresses."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from s3orch.cli.client import listen_to_url, normalise_addr
from s3orch.cli.main import cli
from s3orch.cli.progress import ProgressBar
from s3orch.config import load_config

BACKEND = "name=b1,endpoint=http://127.0.0.1:9100,bucket=data,access_key_id=k,secret_access_key=s"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


# --- init ------------------------------------------------------------------------------------


def test_init_interactive_asks_and_writes_a_file_validate_accepts(runner: CliRunner, tmp_path: Path) -> None:
    target = tmp_path / "config.yaml"
    answers = "\n".join([
        "127.0.0.1:9555",  # listen address
        "sqlite",  # driver
        "meta.db",  # sqlite file
        "store-a", "http://127.0.0.1:9100", "us-east-1", "data-a", "AK1", "SK1", "y", "1GB",  # backend 1
        "y",  # another backend
        "store-b", "http://127.0.0.1:9101", "", "data-b", "AK2", "SK2", "n", "2GB",  # backend 2
        "n",  # no more backends
        "photos", "PHOTOSKEY", "photossecret",  # bucket 1
        "n",  # no more buckets
    ]) + "\n"
    result = runner.invoke(cli, ["init", "-o", str(target)], input=answers)
    assert result.exit_code == 0, result.output
    assert "next steps:" in result.stdout and f"s3orch-admin validate --config {target}" in result.stdout
    assert "SK1" not in result.stdout and "AK1" in result.stdout  # secrets are asked without echo
    config = load_config(target, {})
    assert config.server.listen_addr == "127.0.0.1:9555"
    assert config.database.driver == "sqlite" and config.database.path == "meta.db"
    assert [b.name for b in config.backends] == ["store-a", "store-b"]
    assert config.backends[0].quota_bytes == 1024**3 and config.backends[1].force_path_style is False
    assert config.buckets[0].credentials[0].access_key_id == "PHOTOSKEY"
    assert len(config.ui.admin_token) >= 32
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    validated = runner.invoke(cli, ["validate", "--config", str(target)])
    assert validated.exit_code == 0 and "valid" in validated.stdout


def test_init_asks_before_overwriting(runner: CliRunner, tmp_path: Path) -> None:
    target = tmp_path / "config.yaml"
    target.write_text("keep me\n")
    refused = runner.invoke(cli, ["init", "-o", str(target)], input="n\n")
    assert refused.exit_code == 1 and "Overwrite?" in refused.output
    assert target.read_text() == "keep me\n"
    flags = ["init", "-o", str(target), "--non-interactive", "--backend", BACKEND, "--bucket", "name=photos"]
    scripted = runner.invoke(cli, flags)
    assert scripted.exit_code == 1 and "--force" in scripted.stderr
    assert target.read_text() == "keep me\n"
    forced = runner.invoke(cli, [*flags, "--force"])
    assert forced.exit_code == 0, forced.output
    assert load_config(target, {}).backends[0].name == "b1"


def test_init_with_flags_only(runner: CliRunner, tmp_path: Path) -> None:
    target = tmp_path / "pg.yaml"
    result = runner.invoke(cli, [
        "init", "--non-interactive", "-o", str(target), "--listen-addr", ":9700",
        "--db-driver", "postgres", "--db-host", "db.internal", "--db-password", "pw",
        "--backend", BACKEND + ",quota_bytes=10GB", "--backend", BACKEND.replace("b1", "b2") + ",quota_bytes=5GB",
        "--bucket", "name=photos,access_key_id=PK,secret_access_key=PS", "--bucket", "name=docs",
        "--routing-strategy", "spread", "--admin-token", "tok-123",
    ])
    assert result.exit_code == 0, result.output
    config = load_config(target, {})
    assert (config.database.driver, config.database.host, config.database.port) == ("postgres", "db.internal", 5432)
    assert config.database.database == "s3orch" and config.database.user == "s3orch"
    assert [b.quota_bytes for b in config.backends] == [10 * 1024**3, 5 * 1024**3]
    assert [b.name for b in config.buckets] == ["photos", "docs"]
    assert config.buckets[1].credentials[0].secret_access_key  # generated
    assert config.routing_strategy == "spread" and config.ui.admin_token == "tok-123"


def test_init_refuses_what_validate_would_and_writes_nothing(runner: CliRunner, tmp_path: Path) -> None:
    target = tmp_path / "bad.yaml"
    result = runner.invoke(cli, [
        "init", "--non-interactive", "-o", str(target), "--backend", BACKEND, "--backend", BACKEND.replace("b1", "b2"),
        "--bucket", "name=photos",
    ])  # two unlimited backends: pack would only ever use the first
    assert result.exit_code == 1 and "error:" in result.stderr and "nothing written" in result.stderr
    assert not target.exists()
    bad_flag = runner.invoke(cli, ["init", "--non-interactive", "-o", str(target), "--backend", "nonsense"])
    assert bad_flag.exit_code == 2 and not target.exists()


def test_init_writes_yaml_the_original_format_reads(runner: CliRunner, tmp_path: Path) -> None:
    target = tmp_path / "c.yaml"
    runner.invoke(cli, ["init", "--non-interactive", "-o", str(target), "--backend", BACKEND, "--bucket", "name=p"])
    document = yaml.safe_load(target.read_text())
    assert set(document) == {"server", "buckets", "database", "routing_strategy", "backends", "ui"}


# --- progress --------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_bar_shows_counts_rate_and_eta_on_a_terminal() -> None:
    out = io.StringIO()
    clock = Clock()
    bar = ProgressBar(out, label="requeue", tty=True, clock=clock)
    bar.event({"type": "start", "total": 100})
    clock.now += 10
    bar.event({"type": "step_end", "done": 25, "total": 100})
    line = out.getvalue().split("\r")[-1]
    assert "requeue" in line and "25/100" in line and " 25%" in line
    assert "2.5/s" in line and "ETA 0:30" in line
    clock.now += 30
    bar.event({"type": "step_end", "done": 100, "total": 100})
    bar.close()
    final = out.getvalue().split("\r")[-1]
    assert "100/100 100%" in final and "in 0:40" in final and final.endswith("\n")
    assert "#" * 30 in final


def test_progress_without_a_terminal_prints_lines_at_most_once_a_second() -> None:
    out = io.StringIO()
    clock = Clock()
    bar = ProgressBar(out, tty=False, clock=clock)
    bar.event({"type": "start", "total": None})
    for _ in range(5):
        clock.now += 0.1
        bar.event({"type": "step_end"})
    clock.now += 1
    bar.event({"type": "step_end"})
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert len(lines) == 2  # the start, then one after a second had passed
    assert lines[-1].startswith("6 done")


# --- where the gateway is ----------------------------------------------------------------------


def test_addresses_from_listen_addr_and_flags() -> None:
    assert listen_to_url("0.0.0.0:9000", False) == "http://127.0.0.1:9000"
    assert listen_to_url(":9000", True) == "https://127.0.0.1:9000"
    assert listen_to_url("[::]:9000", False) == "http://[::1]:9000"
    assert listen_to_url("10.1.2.3:80", False) == "http://10.1.2.3:80"
    assert normalise_addr("gw:9000") == "http://gw:9000"
    assert normalise_addr("gw:9000", tls=True) == "https://gw:9000"
    assert normalise_addr("https://gw:9443/") == "https://gw:9443"


def test_no_token_anywhere_is_a_usage_error(runner: CliRunner, tmp_path: Path) -> None:
    target = tmp_path / "c.yaml"
    runner.invoke(cli, ["init", "--non-interactive", "-o", str(target), "--backend", BACKEND, "--bucket", "name=p"])
    document = yaml.safe_load(target.read_text())
    del document["ui"]
    target.write_text(yaml.safe_dump(document))
    result = runner.invoke(cli, ["status", "--config", str(target)], env={"S3ORCH_ADMIN_TOKEN": ""})
    assert result.exit_code == 2 and "no admin token" in result.stderr
    missing = runner.invoke(cli, ["status", "--config", str(tmp_path / "none.yaml")], env={"S3ORCH_ADMIN_TOKEN": ""})
    assert missing.exit_code == 2 and "cannot read the config" in missing.stderr


def test_an_unreachable_gateway_is_exit_2_with_one_line(runner: CliRunner) -> None:
    result = runner.invoke(
        cli, ["status", "--addr", "127.0.0.1:1", "--timeout", "2"], env={"S3ORCH_ADMIN_TOKEN": "t"}
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("error: cannot reach http://127.0.0.1:1") and result.stderr.count("\n") == 1
    from_env = runner.invoke(cli, ["status", "--timeout", "2"], env={"S3ORCH_ADMIN_TOKEN": "t", "S3ORCH_ADMIN_ADDR": "127.0.0.1:2"})
    assert from_env.exit_code == 2 and "http://127.0.0.1:2" in from_env.stderr
