"""Klein app for the operational endpoints: /health, /health/ready, /metrics, and /admin/
(the admin API, :mod:`s3orch.admin`, on the S3 port only).

One instance serves them on the S3 port; with ``telemetry.metrics.listen`` a second one serves
them on that address, and the S3 port's no longer serves /metrics (``s3orch.tap``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from klein import Klein
from prometheus_client import CONTENT_TYPE_LATEST
from twisted.web.iweb import IRequest

from s3orch.observe.logging import new_request_id
from s3orch.observe.metrics import REGISTRY
from s3orch.observe.multiproc import exposition

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from s3orch.admin.app import AdminApp
    from s3orch.ui.app import UIApp


_ADMIN_METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"]


class OpsApp:
    """Liveness, readiness and Prometheus metrics (no authentication, no S3).

    ``is_degraded`` says whether the database breaker is open (``s3orch.core.degraded``): /health
    then answers ``{"status": "degraded"}``, still 200 (the process serves reads).
    """

    app = Klein()

    def __init__(
        self,
        *,
        is_ready: Callable[[], bool],
        is_degraded: Callable[[], bool] = lambda: False,
        metrics_enabled: bool = True,
        metrics_path: str = "/metrics",
        admin: AdminApp | None = None,
        ui: UIApp | None = None,
    ) -> None:
        self.is_ready = is_ready
        self.admin = admin
        #: The dashboard (``ui.enabled``), mounted at its ``ui.path``.
        self.ui = ui
        self._ui_resource = ui.resource() if ui is not None else None
        self.is_degraded = is_degraded
        self.metrics_enabled = metrics_enabled
        self.metrics_path = metrics_path

    def resource(self) -> Any:
        return self.app.resource()

    @app.route("/health", methods=["GET", "HEAD"])
    def health(self, request: IRequest) -> bytes:
        request.setHeader("content-type", "application/json")
        status = "degraded" if self.is_degraded() else "ok"
        return json.dumps({"status": status}).encode()

    @app.route("/health/ready", methods=["GET", "HEAD"])
    def ready(self, request: IRequest) -> bytes:
        request.setHeader("content-type", "application/json")
        if self.is_ready():
            return b'{"status":"ready"}'
        request.setResponseCode(503)
        return b'{"status":"not ready"}'

    @app.route("/admin/", methods=_ADMIN_METHODS, defaults={"rest": ""}, strict_slashes=False)
    @app.route("/admin/<path:rest>", methods=_ADMIN_METHODS)
    def admin_api(self, request: IRequest, rest: str) -> bytes | Deferred[bytes]:
        if self.admin is None:  # no token configured, or a listener without the admin API
            request_id = new_request_id()
            request.setResponseCode(404)
            request.setHeader("content-type", "application/json")
            request.setHeader("x-request-id", request_id)
            return json.dumps({"error": "not found", "request_id": request_id}).encode() + b"\n"
        return self.admin.render(request, rest)

    @app.route("/<path:rest>", methods=_ADMIN_METHODS)
    def other(self, request: IRequest, rest: str) -> Any:
        if self.ui is not None:
            mount = self.ui.path.strip("/").encode().split(b"/")
            segments: list[bytes] = request.path.lstrip(b"/").split(b"/")
            if segments[: len(mount)] == mount:
                # The dashboard's own Klein app routes what follows its path.
                request.prepath = mount
                request.postpath = segments[len(mount):] or [b""]
                return self._ui_resource
        if request.method not in (b"GET", b"HEAD"):
            request.setResponseCode(405)
            request.setHeader("content-type", "text/plain")
            return b"method not allowed\n"
        if self.metrics_enabled and "/" + rest == self.metrics_path:
            request.setHeader("content-type", CONTENT_TYPE_LATEST)
            return exposition(REGISTRY)  # the whole group's with server.processes > 1
        request.setResponseCode(404)
        request.setHeader("content-type", "text/plain")
        return b"not found\n"
