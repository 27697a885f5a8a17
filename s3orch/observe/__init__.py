"""s3orch.observe."""
