"""``s3orch-admin scrub``, ``object-scrub`` and ``backfill-checksums``: the integrity commands.

``scrub`` runs a scrub pass now with a progress bar; ``object-scrub BUCKET/KEY`` prints the
verdict of each copy of one object; ``backfill-checksums`` stores the SHA-256 of objects
written without one, with a progress bar (``--max`` and ``--delay-ms`` pace it).
"""

from __future__ import annotations

from typing import Any

import click

from s3orch.cli.admin import _table, admin_options, run, streamed

__all__ = ["INTEGRITY_COMMANDS"]


@click.command()
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Copies to check in this pass.")
@admin_options
def scrub(batch_size: int | None, **options: Any) -> None:
    """Verify the least recently verified copies now (a corrupt copy is dropped and rebuilt)."""

    def show(a: dict[str, Any]) -> None:
        if a.get("status") != "complete":
            click.echo(f"{a.get('status')}: {a.get('reason', '')}")
            return
        click.echo(
            f"checked: {a.get('checked')}, mismatches: {a.get('mismatches')}, unreadable: {a.get('errors')},"
            f" deferred: {a.get('deferred')}, dropped for rebuild: {a.get('dropped')}"
        )

    query = {"batch_size": batch_size} if batch_size else None
    run(options, streamed(options, "POST", "scrub", "scrub", query=query), show)


@click.command(name="object-scrub")
@click.argument("key")
@admin_options
def object_scrub(key: str, **options: Any) -> None:
    """Verify every copy of BUCKET/KEY now and print each copy's verdict."""

    def show(a: dict[str, Any]) -> None:
        click.echo(f"{a.get('key')}: checked {a.get('checked')}, mismatches {a.get('mismatches')}")
        rows = [["PART", "BACKEND", "VERDICT", "STORAGE KEY"]]
        for c in a.get("copies", []):
            verdict = c.get("verdict", "") + (" (dropped)" if c.get("dropped") else "")
            rows.append([str(c.get("part_number", 0)), c.get("backend", ""), verdict, c.get("storage_key", "")])
        _table(rows)

    run(options, lambda c: c.call("POST", "object-scrub", query={"key": key}), show)


@click.command(name="backfill-checksums")
@click.option("--max", "limit", type=click.IntRange(min=1), default=None, help="Stop after this many objects.")
@click.option("--delay-ms", type=click.IntRange(min=0), default=0, help="Pause after each object.")
@admin_options
def backfill_checksums(limit: int | None, delay_ms: int, **options: Any) -> None:
    """Store the SHA-256 of objects written without one."""

    def show(a: dict[str, Any]) -> None:
        click.echo(f"hashed: {a.get('hashed')}, failed: {a.get('failed')}, changed meanwhile: {a.get('changed')}")

    query: dict[str, Any] = {"delay_ms": delay_ms}
    if limit:
        query["max"] = limit
    run(options, streamed(options, "POST", "backfill-checksums", "backfill-checksums", query=query), show)


INTEGRITY_COMMANDS = (scrub, object_scrub, backfill_checksums)
