"""``s3orch-admin reconcile`` and ``s3orch-admin sync``: the database against what backends hold.

``reconcile [--backend B]`` runs a reconcile pass now (every backend, or one) with a progress
bar and prints what it found.  ``sync --backend B --bucket V [--prefix P] [--dry-run]``
adopts B's pre-existing objects into bucket V in place (the original product's
``{bucket}/{key}`` layout included); ``--dry-run`` lists what would be imported.
"""

from __future__ import annotations

from typing import Any

import click

from s3orch.cli.admin import _size, _table, admin_options, run, streamed

__all__ = ["RECONCILE_COMMANDS"]


@click.command()
@click.option("--backend", "-backend", default=None, help="Only this backend (default: every backend).")
@admin_options
def reconcile(backend: str | None, **options: Any) -> None:
    """Reconcile the database with the backends now: forget copies that are gone, queue orphans."""

    def show(a: dict[str, Any]) -> None:
        if a.get("status") != "ok":
            click.echo(f"{a.get('status')}: {a.get('reason', '')}")
            return
        rows = [["BACKEND", "SCANNED", "MATCHED", "REMOVED", "LOST", "ORPHANED", "FOREIGN", "PENDING CLEANUP", "ERROR"]]
        for b in a.get("backends", []):
            rows.append([
                str(b.get("backend")), str(b.get("scanned")), str(b.get("matched")), str(b.get("removed")),
                str(b.get("lost")), str(b.get("orphaned")), str(b.get("foreign")),
                str(b.get("suppressed_pending_cleanup")), str(b.get("error") or "-"),
            ])
        _table(rows)
        for lost in a.get("lost_objects", []):
            click.echo(f"lost: {lost.get('bucket')}/{lost.get('key')} (last copy was {lost.get('backend')})")
        click.echo(
            f"removed {a.get('removed')}, lost {a.get('lost')}, orphaned {a.get('orphaned')},"
            f" backends scanned {a.get('backends_scanned')}"
        )

    query = {"backend": backend} if backend else None
    run(options, streamed(options, "POST", "reconcile", "reconcile", query=query), show)


@click.command()
@click.option("--backend", "-backend", required=True, help="The backend to import from.")
@click.option("--bucket", "-bucket", required=True, help="The virtual bucket the objects join.")
@click.option("--prefix", "-prefix", default="", help="Only backend keys under this prefix.")
@click.option("--dry-run", "-dry-run", "dry_run", is_flag=True, help="Only list what would be imported.")
@admin_options
def sync(backend: str, bucket: str, prefix: str, dry_run: bool, **options: Any) -> None:
    """Import a backend's pre-existing objects into a bucket in place (no data copied)."""

    def show(a: dict[str, Any]) -> None:
        if a.get("status") != "ok":
            click.echo(f"{a.get('status')}: {a.get('reason', '')}")
            return
        if a.get("dry_run"):
            rows = [["KEY", "BACKEND KEY", "SIZE"]]
            rows += [[k["key"], k["storage_key"], _size(k.get("size"))] for k in a.get("keys", [])]
            if len(rows) > 1:
                _table(rows)
        verb = "would import" if a.get("dry_run") else "imported"
        click.echo(
            f"{verb} {a.get('imported')} ({_size(a.get('bytes'))}), skipped {a.get('skipped')},"
            f" scanned {a.get('scanned')} (s3orch's own keys {a.get('own')}, other buckets' {a.get('other_bucket')})"
        )

    query: dict[str, Any] = {"backend": backend, "bucket": bucket}
    if prefix:
        query["prefix"] = prefix
    if dry_run:
        query["dry_run"] = "true"
    run(options, streamed(options, "POST", "sync", "sync", query=query), show)


#: Added to the ``s3orch-admin`` group by :mod:`s3orch.cli.main`.
RECONCILE_COMMANDS = (reconcile, sync)
