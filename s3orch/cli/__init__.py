"""Command line: ``s3orch-admin`` (and ``s3orch``), a click group defined in ``s3orch.cli.main``."""
