"""``s3orch-admin init``: write a first config.yaml, by questions or by flags.

Interactive (a terminal, no ``--non-interactive``): asks for the database, the backends
and the virtual buckets, each answer defaulted; asks before overwriting a file.  With
``--non-interactive`` every value comes from flags (``--backend name=...,endpoint=...``,
``--bucket name=...``) or its default, and an existing file is only replaced with
``--force``.  Either way the text is validated as ``validate`` would before it is written
(mode 0600: it holds secrets), then the next steps are printed.  Every config gets an
admin API token (generated unless given), so ``s3orch-admin status`` works at once.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path
from typing import Any

import click
import yaml

__all__ = ["init"]

_BACKEND_KEYS = ("name", "endpoint", "bucket", "access_key_id", "secret_access_key", "region", "quota_bytes",
                 "force_path_style")
_BUCKET_KEYS = ("name", "access_key_id", "secret_access_key")


def _pairs(text: str, allowed: tuple[str, ...], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in allowed:
            raise click.BadParameter(f"{item!r}: expected key=value with key in {', '.join(allowed)}", param_hint=what)
        out[key] = value.strip()
    return out


def _backend(values: dict[str, str]) -> dict[str, Any]:
    backend: dict[str, Any] = {
        "name": values.get("name", ""),
        "endpoint": values.get("endpoint", ""),
        "region": values.get("region") or "us-east-1",
        "bucket": values.get("bucket", ""),
        "access_key_id": values.get("access_key_id", ""),
        "secret_access_key": values.get("secret_access_key", ""),
        "force_path_style": values.get("force_path_style", "true").lower() in ("1", "true", "yes", "y"),
    }
    quota = values.get("quota_bytes", "0") or "0"
    backend["quota_bytes"] = int(quota) if quota.isdigit() else quota
    return backend


def _bucket(values: dict[str, str]) -> dict[str, Any]:
    return {
        "name": values.get("name", ""),
        "credentials": [{
            "access_key_id": values.get("access_key_id") or secrets.token_hex(10).upper(),
            "secret_access_key": values.get("secret_access_key") or secrets.token_urlsafe(30),
        }],
    }


def _ask_backend(index: int) -> dict[str, Any]:
    click.echo(f"Backend {index + 1}:")
    values = {
        "name": click.prompt("  name", default=f"backend-{index + 1}"),
        "endpoint": click.prompt("  endpoint URL (e.g. https://s3.example.com)"),
        "region": click.prompt("  region", default="us-east-1"),
        "bucket": click.prompt("  bucket on the backend"),
        "access_key_id": click.prompt("  access key id"),
        "secret_access_key": click.prompt("  secret access key", hide_input=True),
        "force_path_style": "true" if click.confirm("  path-style addressing", default=True) else "false",
        "quota_bytes": click.prompt(
            "  quota (bytes or e.g. 100GB; 0 = unlimited, only with a single backend)", default="0"
        ),
    }
    return _backend(values)


def _ask_bucket(index: int) -> dict[str, Any]:
    click.echo(f"Virtual bucket {index + 1}:")
    generated = _bucket({})["credentials"][0]
    values = {
        "name": click.prompt("  name", default="photos" if index == 0 else f"bucket-{index + 1}"),
        "access_key_id": click.prompt("  access key id", default=generated["access_key_id"]),
        "secret_access_key": click.prompt("  secret access key", default=generated["secret_access_key"]),
    }
    return _bucket(values)


def _database(options: dict[str, Any], interactive: bool) -> dict[str, Any]:
    driver = options["db_driver"]
    if interactive and driver is None:
        driver = click.prompt("Database driver", type=click.Choice(["sqlite", "postgres"]), default="sqlite")
    driver = driver or "sqlite"
    if driver == "sqlite":
        path = options["db_path"]
        if interactive and path is None:
            path = click.prompt("SQLite file", default="s3orch.db")
        return {"driver": "sqlite", "path": path or "s3orch.db"}
    fields = {"host": ("PostgreSQL host", "127.0.0.1"), "port": ("port", "5432"),
              "database": ("database", "s3orch"), "user": ("user", "s3orch")}
    section: dict[str, Any] = {"driver": "postgres"}
    for key, (question, default) in fields.items():
        value = options[f"db_{key}"]
        if interactive and value is None:
            value = click.prompt(question, default=default)
        section[key] = value if value is not None else default
    section["port"] = int(section["port"])
    password = options["db_password"]
    if interactive and password is None:
        password = click.prompt("password", hide_input=True, default="", show_default=False)
    section["password"] = password or ""
    return section


def build_config(options: dict[str, Any], interactive: bool) -> dict[str, Any]:
    """The config document the answers and flags describe."""
    listen = options["listen_addr"]
    if interactive and listen is None:
        listen = click.prompt("Listen address", default="0.0.0.0:9000")
    document: dict[str, Any] = {"server": {"listen_addr": listen or "0.0.0.0:9000"}}
    database = _database(options, interactive)
    backends = [_backend(_pairs(text, _BACKEND_KEYS, "--backend")) for text in options["backends"]]
    if interactive and not backends:
        while True:
            backends.append(_ask_backend(len(backends)))
            if not click.confirm("Add another backend?", default=False):
                break
    buckets = [_bucket(_pairs(text, _BUCKET_KEYS, "--bucket")) for text in options["buckets"]]
    if interactive and not buckets:
        while True:
            buckets.append(_ask_bucket(len(buckets)))
            if not click.confirm("Add another virtual bucket?", default=False):
                break
    document["buckets"] = buckets
    document["database"] = database
    document["routing_strategy"] = options["routing_strategy"]
    document["backends"] = backends
    document["ui"] = {"admin_token": options["admin_token"] or secrets.token_urlsafe(32)}
    return document


@click.command()
@click.option("-o", "--output", "-config", "--config", "output", default="config.yaml", show_default=True,
              metavar="FILE", help="Where to write the config.")
@click.option("--non-interactive", is_flag=True, help="Ask nothing: flags and defaults only.")
@click.option("--force", is_flag=True, help="Replace an existing file without asking.")
@click.option("--listen-addr", help="server.listen_addr (default 0.0.0.0:9000).")
@click.option("--db-driver", type=click.Choice(["sqlite", "postgres"]), help="Database (default sqlite).")
@click.option("--db-path", help="SQLite file (default s3orch.db).")
@click.option("--db-host", help="PostgreSQL host.")
@click.option("--db-port", help="PostgreSQL port (default 5432).")
@click.option("--db-database", "db_database", help="PostgreSQL database (default s3orch).")
@click.option("--db-user", help="PostgreSQL user (default s3orch).")
@click.option("--db-password", help="PostgreSQL password.")
@click.option("--backend", "backends", multiple=True, metavar="K=V,...",
              help="A backend: name=,endpoint=,bucket=,access_key_id=,secret_access_key=[,region=,quota_bytes=,"
                   "force_path_style=] (repeatable).")
@click.option("--bucket", "buckets", multiple=True, metavar="K=V,...",
              help="A virtual bucket: name=[,access_key_id=,secret_access_key=] (keys generated when omitted;"
                   " repeatable).")
@click.option("--routing-strategy", type=click.Choice(["pack", "spread"]), default="pack", show_default=True)
@click.option("--admin-token", help="The admin API token (default: generated).")
def init(output: str, non_interactive: bool, force: bool, **options: Any) -> None:
    """Write a first config.yaml (interactive, or with flags for scripts)."""
    from s3orch.config import ConfigError, load_config_from_string
    from s3orch.config.support import refusals

    interactive = not non_interactive
    target = Path(output)
    if target.exists() and not force:
        if not interactive:
            click.echo(f"error: {target} exists (use --force to replace it)", err=True)
            sys.exit(1)
        if not click.confirm(f"{target} exists. Overwrite?", default=False):
            click.echo("nothing written", err=True)
            sys.exit(1)
    document = build_config(options, interactive)
    text = "# Written by s3orch-admin init. Reference: packaging/config.example.yaml\n" + yaml.safe_dump(
        document, sort_keys=False
    )
    try:
        config = load_config_from_string(text, {})
    except ConfigError as exc:
        for issue in exc.errors:
            click.echo(f"error: {issue}", err=True)
        click.echo("nothing written", err=True)
        sys.exit(1)
    refused = refusals(config)
    if refused:
        for issue in refused:
            click.echo(f"error: {issue}", err=True)
        sys.exit(1)
    fd = os.open(str(target), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(target, 0o600)
    click.echo(f"wrote {target} ({len(config.backends)} backend(s), {len(config.buckets)} bucket(s))")
    click.echo("next steps:")
    click.echo(f"  s3orch-admin validate --config {target}")
    click.echo(f"  twistd -n s3orch --config {target}")
    click.echo(f"  s3orch-admin status --config {target}")
