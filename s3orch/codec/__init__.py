"""Stored-form codecs that are pure computation (no I/O, no Twisted): chunked zstd today."""
