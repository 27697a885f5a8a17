"""What AWS answers to a read of a bucket configuration nobody set.

A virtual bucket here has no policy, CORS, lifecycle, tagging, website, ...
configuration, and none can be set (the Put* operations answer 501).  Reading
one answers what AWS answers for a bucket where it was never configured: most
are a 404 with their own error code, a few are a default document.
"""

from __future__ import annotations

from s3orch.s3 import errors, xml

#: Operation -> (error code, HTTP status, message) of an unconfigured bucket.
NOT_CONFIGURED: dict[str, tuple[str, int, str]] = {
    "GetBucketPolicy": ("NoSuchBucketPolicy", 404, "The bucket policy does not exist"),
    "GetBucketCors": ("NoSuchCORSConfiguration", 404, "The CORS configuration does not exist"),
    "GetBucketLifecycleConfiguration": (
        "NoSuchLifecycleConfiguration", 404, "The lifecycle configuration does not exist"
    ),
    "GetBucketTagging": ("NoSuchTagSet", 404, "The TagSet does not exist"),
    "GetBucketEncryption": (
        "ServerSideEncryptionConfigurationNotFoundError",
        404,
        "The server side encryption configuration was not found",
    ),
    "GetBucketOwnershipControls": (
        "OwnershipControlsNotFoundError", 404, "The bucket ownership controls were not found"
    ),
    "GetPublicAccessBlock": (
        "NoSuchPublicAccessBlockConfiguration",
        404,
        "The public access block configuration was not found",
    ),
    "GetBucketWebsite": ("NoSuchWebsiteConfiguration", 404, "The specified bucket does not have a website configuration"),
    "GetObjectLockConfiguration": (
        "ObjectLockConfigurationNotFoundError", 404, "Object Lock configuration does not exist for this bucket"
    ),
    "GetBucketPolicyStatus": ("NoSuchBucketPolicy", 404, "The bucket policy does not exist"),
    "GetObjectRetention": ("InvalidRequest", 400, "Bucket is missing Object Lock Configuration"),
    "GetObjectLegalHold": ("InvalidRequest", 400, "Bucket is missing Object Lock Configuration"),
    "GetBucketReplication": (
        "ReplicationConfigurationNotFoundError", 404, "The replication configuration was not found"
    ),
}

#: Operation -> the document AWS answers for an unconfigured bucket.
DEFAULT_CONFIGURATION: dict[str, bytes] = {
    "GetBucketRequestPayment": xml.request_payment("BucketOwner"),
    "GetBucketLogging": xml.empty_configuration("BucketLoggingStatus"),
    "GetBucketNotificationConfiguration": xml.empty_configuration("NotificationConfiguration"),
    "GetBucketAccelerateConfiguration": xml.empty_configuration("AccelerateConfiguration"),
}

_ERRORS: dict[str, type[errors.S3Error]] = {
    operation: type(code, (errors.S3Error,), {"code": code, "status": status, "default_message": message})
    for operation, (code, status, message) in NOT_CONFIGURED.items()
}


def not_configured(operation: str, bucket: str) -> errors.S3Error:
    """The error a read of ``operation``'s configuration of ``bucket`` answers."""
    return _ERRORS[operation](BucketName=bucket)
