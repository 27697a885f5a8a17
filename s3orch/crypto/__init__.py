"""s3orch.crypto."""
