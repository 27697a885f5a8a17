"""Service-level operations: ListBuckets.

A credential sees exactly one bucket, its own, created (as far as clients can
tell) when the gateway started.
"""

from __future__ import annotations

from s3orch.frontend.request import OWNER_ID, OWNER_NAME, RequestState, Route, send_xml
from s3orch.http.site import S3Request
from s3orch.payload import Payload
from s3orch.s3 import xml


class ServiceHandlers:
    """ListBuckets, answering the caller's bucket as created at ``started_at``."""

    def __init__(self, *, started_at: float) -> None:
        self.started_at = started_at

    def routes(self) -> dict[str, Route]:
        return {"ListBuckets": Route(self.list_buckets)}

    async def list_buckets(self, request: S3Request, state: RequestState, body: Payload | None) -> None:
        assert state.principal is not None
        payload = xml.list_buckets(OWNER_ID, OWNER_NAME, [(state.principal.bucket, self.started_at)])
        send_xml(request, state, payload)
