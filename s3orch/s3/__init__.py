"""s3orch.s3."""
