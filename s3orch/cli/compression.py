"""``s3orch-admin compress-existing`` and ``decompress-existing``: the bulk compression passes, each
with a progress bar (BEHAVIOURS §1.20)."""

from __future__ import annotations

from typing import Any

import click

from s3orch.cli.admin import admin_options, counts, run, streamed

__all__ = ["COMPRESSION_COMMANDS"]



@click.command(name="compress-existing")
@admin_options
def compress_existing(**options: Any) -> None:
    """Compress every object stored uncompressed (those that do not shrink enough are skipped)."""
    run(options, streamed(options, "POST", "compress-existing", "compress-existing"), counts("compressed", "skipped", "failed", "total"))


@click.command(name="decompress-existing")
@admin_options
def decompress_existing(**options: Any) -> None:
    """Store every compressed object uncompressed again (encryption is kept)."""
    run(options, streamed(options, "POST", "decompress-existing", "decompress-existing"), counts("decompressed", "skipped", "failed", "total"))


COMPRESSION_COMMANDS = (compress_existing, decompress_existing)
