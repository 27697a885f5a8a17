"""s3orch.backend."""
