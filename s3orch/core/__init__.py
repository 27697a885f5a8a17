"""s3orch.core."""
