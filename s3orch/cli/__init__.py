"""s3orch.cli."""
