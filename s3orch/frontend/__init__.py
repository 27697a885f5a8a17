"""s3orch.frontend."""
