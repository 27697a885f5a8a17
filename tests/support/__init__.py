"""Helpers the test suite and the developer tools share: real S3 servers (moto, SeaweedFS,
rclone) and s3orch gateways as child processes, private PostgreSQL clusters, config
builders, an aws-chunked encoder, a TCP fault proxy and condition polling.

They live outside the ``s3orch`` package so that none of them is installed with it.
"""
