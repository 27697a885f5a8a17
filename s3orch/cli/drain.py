"""``s3orch-admin drain`` and ``s3orch-admin remove-backend``: emptying and forgetting a backend.

``drain NAME`` starts a drain (``--status`` shows it, ``--cancel`` stops it); ``--wait``
follows it to the end with a progress bar (the copies moved out of those it held), polling
the status route.  ``remove-backend NAME`` forgets its metadata; with ``--purge`` it shows
the preview (objects and bytes), asks, and deletes them with the confirmation token
(``--confirm`` skips the question).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import click

from s3orch.cli.admin import _size, admin_options, run
from s3orch.cli.client import AdminClient
from s3orch.cli.progress import ProgressBar

__all__ = ["DRAIN_COMMANDS"]


def _follow(
    client: AdminClient, backend: str, interval: float, draw: bool, sleep: Callable[[float], None] = time.sleep
) -> dict[str, Any]:
    """Poll the drain's status until it is completed (or gone, or failed); the last status."""
    bar = ProgressBar(sys.stderr, label=f"drain {backend}") if draw else None
    try:
        status = client.call("GET", "drain", query={"backend": backend})
        total = int(status.get("objects_remaining") or 0)
        if bar is not None:
            bar.event({"type": "start", "total": total})
        while status.get("state") == "active":  # completed, failed (the worker retries) or gone
            sleep(interval)
            status = client.call("GET", "drain", query={"backend": backend})
            if bar is not None:
                left = int(status.get("objects_remaining") or 0)
                bar.event({"type": "step_end", "done": max(0, total - left), "total": total})
        return status
    finally:
        if bar is not None:
            bar.close()


def _show_status(a: dict[str, Any]) -> None:
    if a.get("state") in (None, "none"):
        click.echo(a.get("status") or f"backend {a.get('backend')} is not draining")
        return
    click.echo(
        f"drain of {a.get('backend')}: {a.get('state')}; remaining {a.get('objects_remaining')} copies"
        f" ({_size(a.get('bytes_remaining'))}), moved {a.get('objects_moved')} ({_size(a.get('bytes_moved'))})"
        + (f"; error: {a['error']}" if a.get("error") else "")
    )


@click.command()
@click.argument("backend")
@click.option("--status", "show_status", is_flag=True, help="Show the drain instead of starting it.")
@click.option("--cancel", is_flag=True, help="Cancel the drain (the backend takes writes again).")
@click.option("--wait", is_flag=True, help="Follow the drain to its end with a progress bar.")
@click.option("--interval", type=float, default=2.0, show_default=True, help="Seconds between polls (--wait).")
@admin_options
def drain(backend: str, show_status: bool, cancel: bool, wait: bool, interval: float, **options: Any) -> None:
    """Start, show or cancel the drain of a backend (its copies move to the others)."""
    if show_status and cancel:
        raise click.UsageError("--status and --cancel exclude each other")
    query = {"backend": backend}

    def work(client: AdminClient) -> dict[str, Any]:
        if cancel:
            return client.call("DELETE", "drain", query=query)
        if not show_status:
            started = client.call("POST", "drain", query=query)
            if not wait:
                return started
        if wait:
            return _follow(client, backend, interval, draw=not options["as_json"])
        return client.call("GET", "drain", query=query)

    run(options, work, _show_status)


def _remove(backend: str, purge: bool, confirm: bool, options: dict[str, Any]) -> None:
    def work(client: AdminClient) -> dict[str, Any]:
        query: dict[str, Any] = {"name": backend}
        if not purge:
            return client.call("DELETE", "backend", query=query)
        query["purge"] = "true"
        preview = client.call("DELETE", "backend", query=query)
        click.echo(
            f"purge {backend}: {preview.get('object_count')} copies, {_size(preview.get('total_bytes'))}"
            " will be deleted from the backend", err=True,
        )
        if not confirm and not click.confirm("delete them?", err=True):
            return {"status": "cancelled", "backend": backend}
        query["confirm"] = preview.get("confirm_token", "")
        return client.call("DELETE", "backend", query=query)

    def show(a: dict[str, Any]) -> None:
        if a.get("status") != "backend removed":
            click.echo(str(a.get("status")))
            return
        line = f"backend {backend} removed: {a.get('copies_forgotten')} copies forgotten, {a.get('objects_lost')} objects lost"
        if "purged" in a:
            line += f"; purged {a['purged']} ({a.get('purge_failures')} failed)"
        click.echo(line)

    run(options, work, show)


def _remove_command(name: str) -> click.Command:
    @click.command(name=name)
    @click.argument("backend")
    @click.option("--purge", is_flag=True, help="Delete the backend's objects too (after a preview).")
    @click.option("--confirm", is_flag=True, help="With --purge: do not ask.")
    @admin_options
    def remove(backend: str, purge: bool, confirm: bool, **options: Any) -> None:
        """Forget a backend's metadata (objects stay on it), or with --purge delete them too."""
        _remove(backend, purge, confirm, options)

    return remove


#: ``remove-backend`` (the original's name) and ``backend`` (the route's).
DRAIN_COMMANDS = (drain, _remove_command("remove-backend"), _remove_command("backend"))
