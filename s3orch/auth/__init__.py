"""s3orch.auth."""
