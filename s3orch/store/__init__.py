"""s3orch.store."""
