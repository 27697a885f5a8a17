"""Version ids on a gateway whose buckets are never versioned.

GetBucketVersioning answers that versioning was never enabled, so, as on AWS, every
object has exactly one version, the ``null`` version, which is also its current one.
A request may name it (``?versionId=null``, a ``version-id-marker`` of ``null``, a
DeleteObjects ``<VersionId>null</VersionId>``) and addresses the current object; any
other version id names nothing that can exist and is the 400 InvalidArgument AWS answers
(never a silent read, overwrite or delete of the current object).
"""

from __future__ import annotations

from s3orch.s3 import errors

#: The one version id an object of an unversioned bucket has.
NULL_VERSION = "null"

#: AWS's message for a version id that cannot exist.
INVALID_VERSION_ID = "Invalid version id specified"


def check_version_id(value: str, argument: str = "versionId") -> None:
    """Accept ``null`` (the current object); refuse anything else as AWS does."""
    if value == NULL_VERSION:
        return
    if value == "":
        raise errors.InvalidArgument(
            "Version id cannot be the empty string", ArgumentName=argument, ArgumentValue=""
        )
    raise errors.InvalidArgument(INVALID_VERSION_ID, ArgumentName=argument, ArgumentValue=value)
