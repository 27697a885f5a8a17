"""``s3orch-admin cache``, ``cache-flush``, ``cache-delete`` and ``cache-delete-prefix``: the
object data cache of the instance the command talks to (each instance holds its own).

``cache`` prints its entries, bytes and limits; ``cache-flush`` empties it; ``cache-delete
BUCKET/KEY`` drops one object; ``cache-delete-prefix PREFIX`` drops every ``bucket/key``
starting with PREFIX (an empty prefix is refused: that is ``cache-flush``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import click

from s3orch.cli.admin import _size, admin_options, run

__all__ = ["CACHE_COMMANDS"]


@click.command()
@admin_options
def cache(**options: Any) -> None:
    """Show this instance's object data cache."""

    def show(a: dict[str, Any]) -> None:
        if not a.get("enabled"):
            click.echo("cache: disabled")
            return
        click.echo(
            f"entries: {a.get('entries')}, size: {_size(a.get('size_bytes'))} of {_size(a.get('max_size'))},"
            f" max object: {_size(a.get('max_object_size'))}, ttl: {a.get('ttl')}s, filling: {a.get('filling')}"
        )

    run(options, lambda c: c.call("GET", "cache"), show)


@click.command(name="cache-flush")
@admin_options
def cache_flush(**options: Any) -> None:
    """Drop every entry of this instance's object data cache."""
    run(options, lambda c: c.call("POST", "cache/flush"), lambda a: click.echo(f"flushed: {a.get('entries')} entries"))


@click.command(name="cache-delete")
@click.argument("key")
@admin_options
def cache_delete(key: str, **options: Any) -> None:
    """Drop BUCKET/KEY from this instance's object data cache."""

    def show(a: dict[str, Any]) -> None:
        click.echo(f"{a.get('key')}: {'removed' if a.get('removed') else 'was not cached'}")

    run(options, lambda c: c.call("DELETE", "cache/keys/" + quote(key, safe="/")), show)


@click.command(name="cache-delete-prefix")
@click.argument("prefix")
@admin_options
def cache_delete_prefix(prefix: str, **options: Any) -> None:
    """Drop every BUCKET/KEY starting with PREFIX from this instance's object data cache."""
    if not prefix:
        raise click.UsageError("PREFIX must not be empty (cache-flush drops everything)")
    run(
        options, lambda c: c.call("DELETE", "cache/prefix", query={"prefix": prefix}),
        lambda a: click.echo(f"removed: {a.get('removed')} entries under {a.get('prefix')}"),
    )


CACHE_COMMANDS = (cache, cache_flush, cache_delete, cache_delete_prefix)
