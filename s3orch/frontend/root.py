"""The root of the resource tree: S3 requests vs operational endpoints.

Which is which was decided when the headers arrived (``request.s3`` is set
for S3 requests), because S3 keys must be taken from the raw path: routing
libraries decode and merge slashes, which would corrupt keys such as
``a//b`` or ``50%+off``.
"""

from __future__ import annotations

from typing import Any

from twisted.web.resource import IResource, Resource


class RootResource(Resource):
    isLeaf = True

    def __init__(self, s3: IResource, ops: IResource) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # twisted.web's Resource is unannotated
        self.s3 = s3
        self.ops = ops

    def render(self, request: Any) -> Any:
        if getattr(request, "s3", None) is not None:
            return self.s3.render(request)
        return self.ops.render(request)
