"""Schema versions as an operator meets them: ``s3orch-admin migrate`` and a gateway that
refuses a database written by a newer s3orch (a real ``twistd`` process, both engines)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import yaml
from click.testing import CliRunner

from s3orch.cli.main import cli
from s3orch.store.migrate import discover, sql_dir
from tests.support.configs import GatewayConfig
from tests.support.gateway import GatewayProcess
from tests.support.postgres import database_section

ENGINES = ["sqlite", "postgres"]


def newest(engine: str) -> int:
    return discover(sql_dir(engine))[-1].version


class Database:
    """One engine's database for a test: its config section and a raw connection."""

    def __init__(self, engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.engine = engine
        if engine == "sqlite":
            self.path = tmp_path / "meta.db"
            self.section: dict[str, object] = {"driver": "sqlite", "path": str(self.path)}
        else:
            self.dsn = request.getfixturevalue("postgres_dsn")
            self.section = database_section(self.dsn)

    def connect(self) -> Any:
        if self.engine == "sqlite":
            return sqlite3.connect(self.path, isolation_level=None)
        conn = psycopg2.connect(self.dsn)
        conn.autocommit = True
        return conn

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        conn = self.connect()
        try:
            cur = conn.cursor()
            cur.execute(sql)
            return list(cur.fetchall()) if cur.description else []
        finally:
            conn.close()


@pytest.fixture(params=ENGINES)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    return Database(request.param, tmp_path, request)


def config_file(tmp_path: Path, moto_backends: Callable[..., Any], database: Database) -> Path:
    text = GatewayConfig(backends=moto_backends(1), database=database.section).render()
    path = tmp_path / "config.yaml"
    path.write_text(text.replace("{port}", "0").replace("{workdir}", str(tmp_path)))
    return path


def test_admin_migrate_applies_then_reports_up_to_date(
    tmp_path: Path, moto_backends: Callable[..., Any], database: Database
) -> None:
    path = config_file(tmp_path, moto_backends, database)
    runner = CliRunner()
    first = runner.invoke(cli, ["migrate", "--config", str(path)])
    assert first.exit_code == 0, first.output
    versions = ", ".join(str(m.version) for m in discover(sql_dir(database.engine)))
    assert f"schema version 0 -> {newest(database.engine)} (applied {versions})" in first.output
    assert f"({database.engine})" in first.output
    assert [r[0] for r in database.query("SELECT version FROM schema_version ORDER BY version")] == [
        m.version for m in discover(sql_dir(database.engine))
    ]
    again = runner.invoke(cli, ["migrate", "-config", str(path)])
    assert again.exit_code == 0, again.output
    assert f"schema version {newest(database.engine)}, up to date" in again.output
    assert "password" not in again.output


def test_admin_migrate_refuses_a_newer_schema(
    tmp_path: Path, moto_backends: Callable[..., Any], database: Database
) -> None:
    path = config_file(tmp_path, moto_backends, database)
    runner = CliRunner()
    assert runner.invoke(cli, ["migrate", "--config", str(path)]).exit_code == 0
    future = newest(database.engine) + 1
    database.query(
        "INSERT INTO schema_version (version, name, applied_at)"
        f" VALUES ({future}, 'from_the_future', '2030-01-01T00:00:00+00:00')"
    )
    result = runner.invoke(cli, ["migrate", "--config", str(path)])
    assert result.exit_code == 1
    assert f"database schema version {future} is newer than this s3orch knows" in result.output


def test_admin_migrate_names_an_unreachable_database(tmp_path: Path, moto_backends: Callable[..., Any]) -> None:
    text = GatewayConfig(
        backends=moto_backends(1),
        database={"driver": "postgres", "host": "127.0.0.1", "port": 1, "name": "nowhere", "user": "app",
                  "ssl_mode": "disable", "password": "hunter2"},
    ).render()
    path = tmp_path / "config.yaml"
    path.write_text(text.replace("{port}", "0").replace("{workdir}", str(tmp_path)))
    result = CliRunner().invoke(cli, ["migrate", "--config", str(path)])
    assert result.exit_code == 1
    assert "cannot use PostgreSQL database 127.0.0.1:1/nowhere" in result.output
    assert "hunter2" not in result.output


def test_a_gateway_refuses_a_newer_schema_and_exits_non_zero_saying_why(
    tmp_path: Path, moto_backends: Callable[..., Any], database: Database
) -> None:
    config = GatewayConfig(backends=moto_backends(1), database=database.section)
    path = tmp_path / "migrate.yaml"
    path.write_text(config.render().replace("{port}", "0").replace("{workdir}", str(tmp_path)))
    assert CliRunner().invoke(cli, ["migrate", "--config", str(path)]).exit_code == 0
    future = newest(database.engine) + 1
    database.query(
        "INSERT INTO schema_version (version, name, applied_at)"
        f" VALUES ({future}, 'from_the_future', '2030-01-01T00:00:00+00:00')"
    )
    gateway = GatewayProcess(tmp_path / "gw", config.render())
    with pytest.raises(RuntimeError, match="exited early"):
        gateway.start(timeout=30)
    assert gateway.proc is not None
    assert gateway.proc.wait(10) == 1
    refusal = [
        json.loads(line)
        for line in gateway.log_text().splitlines()
        if line.startswith("{") and "cannot start" in line
    ]
    assert len(refusal) == 1, gateway.log_text()[-3000:]
    assert refusal[0]["level"] == "ERROR" and refusal[0]["component"] == "service"
    assert (
        f"s3orch cannot start: database schema version {future} is newer than this s3orch knows"
        f" ({future - 1}); upgrade s3orch"
    ) == refusal[0]["msg"]
    assert "Traceback" not in gateway.log_text()
    # nothing was changed: the newer instance's data is untouched
    assert database.query("SELECT MAX(version) FROM schema_version") == [(future,)]


def test_the_config_renders_a_postgres_section_with_the_operator_keys() -> None:
    section = database_section("host=127.0.0.1 port=5432 dbname=meta user=app password=pw sslmode=disable",
                               statement_timeout="5s")
    doc = yaml.safe_load(GatewayConfig(backends=[], database=section).render())
    assert doc["database"] == {
        "driver": "postgres", "host": "127.0.0.1", "port": 5432, "name": "meta", "ssl_mode": "disable",
        "min_conns": 1, "max_conns": 10, "user": "app", "password": "pw", "statement_timeout": "5s",
    }


def test_a_gateway_that_cannot_reach_its_database_exits_non_zero_saying_where(
    tmp_path: Path, moto_backends: Callable[..., Any]
) -> None:
    config = GatewayConfig(
        backends=moto_backends(1),
        database={"driver": "postgres", "host": "127.0.0.1", "port": 1, "name": "meta", "user": "app",
                  "ssl_mode": "disable", "password": "hunter2"},
    )
    gateway = GatewayProcess(tmp_path / "gw", config.render())
    with pytest.raises(RuntimeError, match="exited early"):
        gateway.start(timeout=30)
    assert gateway.proc is not None and gateway.proc.wait(10) == 1
    log = gateway.log_text()
    assert "s3orch cannot start: cannot use PostgreSQL database 127.0.0.1:1/meta" in log
    assert "hunter2" not in log and "Traceback" not in log
