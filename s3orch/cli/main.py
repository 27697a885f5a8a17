"""The ``s3orch-admin`` / ``s3orch`` click group.

Each command stays small and delegates to the package that owns the work. Flags keep s3-orchestrator's
(the Go product s3orch re-creates) single-dash spelling working (``validate -config F``) so existing scripts run unchanged.
"""

from __future__ import annotations

import platform
import sys

import click

import twisted
from s3orch import __version__
from s3orch.cli.admin import COMMANDS as ADMIN_COMMANDS
from s3orch.cli.cache import CACHE_COMMANDS
from s3orch.cli.compression import COMPRESSION_COMMANDS
from s3orch.cli.crypto import CRYPTO_COMMANDS
from s3orch.cli.drain import DRAIN_COMMANDS
from s3orch.cli.init import init
from s3orch.cli.integrity import INTEGRITY_COMMANDS
from s3orch.cli.options import DEFAULT_CONFIG, config_option
from s3orch.cli.reconcile import RECONCILE_COMMANDS
from s3orch.config import ConfigError, load_config
from s3orch.config.support import refusals

__all__ = ["DEFAULT_CONFIG", "cli", "config_option", "version_string"]

def version_string() -> str:
    """What ``version`` prints: our version, the runtime versions and the platform."""
    return (
        f"s3orch {__version__} (Python {platform.python_version()}, Twisted {twisted.__version__}) "
        f"{sys.platform}/{platform.machine()}"
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """s3orch: an S3-compatible gateway over many S3 backends."""


@cli.command()
def version() -> None:
    """Print the version, Python and Twisted versions and the platform."""
    click.echo(version_string())


@cli.command(name="help")
@click.pass_context
def help_(ctx: click.Context) -> None:
    """List the commands (same as --help)."""
    parent = ctx.parent if ctx.parent is not None else ctx
    click.echo(parent.get_help())


@cli.command()
@config_option
def validate(config_path: str) -> None:
    """Check a config file without starting anything; exit 1 listing every problem.

    A problem is what the loader refuses, or a key asking for something this build does not do
    (the same check ``twistd s3orch`` makes at start-up).
    """
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        for issue in exc.errors:
            click.echo(f"error: {issue}", err=True)
        sys.exit(1)
    for warning in config.warnings:
        click.echo(f"warning: {warning}", err=True)
    refused = refusals(config)
    for issue in refused:
        click.echo(f"error: {issue}", err=True)
    if refused:
        sys.exit(1)
    click.echo(f"config {config_path}: valid")
    click.echo(f"  backends: {len(config.backends)}")
    click.echo(f"  buckets:  {len(config.buckets)}")
    click.echo(f"  routing:  {config.routing_strategy}")


@cli.command()
@config_option
def migrate(config_path: str) -> None:
    """Apply pending database schema migrations and report the schema version.

    Instances apply migrations themselves at start-up (under a lock, so several
    starting together are safe); this is the explicit step for operators who
    prefer to migrate before rolling out a new version.  Exit 1 on any error,
    including a database written by a newer s3orch.
    """
    from s3orch.store import StoreError, migrate_database

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        for issue in exc.errors:
            click.echo(f"error: {issue}", err=True)
        sys.exit(1)
    try:
        report = migrate_database(config.database)
    except StoreError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    if report.applied:
        applied = ", ".join(str(v) for v in report.applied)
        click.echo(
            f"database {report.database} ({config.database.driver}): schema version"
            f" {report.before} -> {report.after} (applied {applied})"
        )
    else:
        click.echo(
            f"database {report.database} ({config.database.driver}): schema version"
            f" {report.after}, up to date"
        )


for _command in (
    *ADMIN_COMMANDS, *DRAIN_COMMANDS, *INTEGRITY_COMMANDS, *RECONCILE_COMMANDS, *CACHE_COMMANDS, *CRYPTO_COMMANDS,
    *COMPRESSION_COMMANDS, init,
):
    cli.add_command(_command)
