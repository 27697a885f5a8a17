"""s3orch.config."""
