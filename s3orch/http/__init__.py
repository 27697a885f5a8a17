"""s3orch.http."""
