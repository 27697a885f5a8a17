"""s3orch.testing."""
