"""``s3orch-admin compress-existing`` and ``decompress-existing``: the bulk compression passes, each
with a progress bar (BEHAVIOURS §1.20)."""

from __future__ import annotations

from typing import Any

import click

from s3orch.cli.admin import admin_options, run, streamed

__all__ = ["COMPRESSION_COMMANDS"]


def _show(done: str) -> Any:
    def show(a: dict[str, Any]) -> None:
        click.echo(f"{done}: {a.get(done)}, skipped: {a.get('skipped')}, failed: {a.get('failed')},"
                   f" total: {a.get('total')}")

    return show


@click.command(name="compress-existing")
@admin_options
def compress_existing(**options: Any) -> None:
    """Compress every object stored uncompressed (those that do not shrink enough are skipped)."""
    run(options, streamed(options, "POST", "compress-existing", "compress-existing"), _show("compressed"))


@click.command(name="decompress-existing")
@admin_options
def decompress_existing(**options: Any) -> None:
    """Store every compressed object uncompressed again (encryption is kept)."""
    run(options, streamed(options, "POST", "decompress-existing", "decompress-existing"), _show("decompressed"))


COMPRESSION_COMMANDS = (compress_existing, decompress_existing)
