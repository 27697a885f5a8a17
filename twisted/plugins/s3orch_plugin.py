"""twistd plugin: ``twistd -n s3orch --config FILE`` runs the gateway."""

from twisted.application.service import ServiceMaker

s3orch = ServiceMaker(
    "s3orch",
    "s3orch.tap",
    "S3-compatible gateway over many S3 backends with quotas and replication",
    "s3orch",
)
