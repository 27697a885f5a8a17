"""Which core methods run in a span of their own, and under which name (``s3orch.observe.tracing``).

One table per service, applied by a class decorator: the operations the S3 API calls, and the steps
of a write (reservation, commit, each multipart part), are children of the request's span.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

from s3orch.observe.tracing import traced

T = TypeVar("T")

OBJECT_SPANS: Mapping[str, str] = {
    "put": "core.PutObject",
    "_reserve": "core.Reserve",
    "_commit": "core.Commit",
    "head": "core.HeadObject",
    "open": "core.OpenObject",
    "delete": "core.DeleteObject",
    "delete_many": "core.DeleteObjects",
    "copy": "core.CopyObject",
    "list": "core.ListObjects",
    "place_part": "core.PlacePart",
    "commit_part": "core.CommitPart",
}

MULTIPART_SPANS: Mapping[str, str] = {
    "create": "core.CreateMultipartUpload",
    "upload_part": "core.UploadPart",
    "upload_part_copy": "core.UploadPartCopy",
    "complete": "core.CompleteMultipartUpload",
    "abort": "core.AbortMultipartUpload",
    "abort_stale": "core.AbortStaleUploads",
    "list_parts": "core.ListParts",
    "list_uploads": "core.ListMultipartUploads",
}


def traced_methods(spans: Mapping[str, str]) -> Callable[[type[T]], type[T]]:
    """Wrap each named ``async`` method of the class in :func:`~s3orch.observe.tracing.traced`."""

    def decorate(cls: type[T]) -> type[T]:
        for method, span in spans.items():
            setattr(cls, method, traced(span)(getattr(cls, method)))
        return cls

    return decorate
