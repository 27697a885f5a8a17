"""s3orch: an S3-compatible gateway over many S3 backends."""

__version__ = "0.1.0"
