"""s3orch.workers."""
