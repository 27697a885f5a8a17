"""``s3orch-admin encrypt-existing``, ``decrypt-existing`` and ``rotate-encryption-key``: the bulk
encryption passes, each with a progress bar (BEHAVIOURS §1.19)."""

from __future__ import annotations

from typing import Any

import click

from s3orch.cli.admin import admin_options, counts, run, streamed

__all__ = ["CRYPTO_COMMANDS"]



@click.command(name="encrypt-existing")
@admin_options
def encrypt_existing(**options: Any) -> None:
    """Encrypt every object still stored in plaintext."""
    run(options, streamed(options, "POST", "encrypt-existing", "encrypt-existing"), counts("encrypted", "failed", "total"))


@click.command(name="decrypt-existing")
@admin_options
def decrypt_existing(**options: Any) -> None:
    """Decrypt every encrypted object back to plaintext."""
    run(options, streamed(options, "POST", "decrypt-existing", "decrypt-existing"), counts("decrypted", "failed", "total"))


@click.command(name="rotate-encryption-key")
@click.argument("old_key_id")
@admin_options
def rotate_encryption_key(old_key_id: str, **options: Any) -> None:
    """Re-wrap the data keys wrapped under OLD_KEY_ID with the primary key (no data is rewritten)."""
    body = {"old_key_id": old_key_id}
    run(options, streamed(options, "POST", "rotate-encryption-key", "rotate-encryption-key", body=body),
        counts("rotated", "failed", "total"))


CRYPTO_COMMANDS = (encrypt_existing, decrypt_existing, rotate_encryption_key)
