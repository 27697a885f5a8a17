"""Serving the admin API: token check, routing from the table, JSON in and out, streaming.

Every answer is JSON (or NDJSON) and carries the request id (``X-Request-Id``, taken from
the caller's when it is a safe token, as the S3 side does, and in every error body).

* No token configured (``ui.admin_token``, else ``ui.admin_key``): the API is not served,
  every path answers 404.
* ``X-Admin-Token`` is compared in constant time; a missing or wrong one is 401
  ``{"error": "unauthorized"}`` -- before routing, so an unauthenticated caller learns
  nothing, not even which routes exist.
* Unknown route 404, wrong method 405 (with ``Allow``), JSON body over 1 MiB 413 (the
  listener refuses it even before reading, see :mod:`s3orch.http.site`), a body that is not
  a JSON object 400.
* A handler that fails is logged with the request id and answered 500
  ``{"error": "internal error", "request_id": ...}``: never a traceback.
* A route that ``streams``, asked with ``Accept: application/x-ndjson``, answers NDJSON
  events as its pass runs (:mod:`s3orch.admin.ndjson`); an error after the first line is an
  ``error`` event, since the status line is already sent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from s3orch.admin.calls import AdminCall, AdminError
from s3orch.admin.handlers import AdminHandlers
from s3orch.admin.ndjson import NDJSON, NDJSONProgress, wants_ndjson
from s3orch.admin.routes import ROUTES, Route, match
from s3orch.observe.logging import request_id_from_header
from s3orch.store.interface import StoreUnavailable

#: JSON bodies larger than this are refused (the listener caps every non-S3 body there too).
MAX_BODY = 1024 * 1024


def _header(request: Any, name: bytes) -> str | None:
    values = request.requestHeaders.getRawHeaders(name)
    if not values:
        return None
    value: bytes | str = values[0]
    return value.decode("latin-1") if isinstance(value, bytes) else value


def send_json(request: Any, status: int, body: dict[str, Any], request_id: str) -> bytes:
    """Set the status and headers of a JSON answer; its bytes (for Klein to write)."""
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"x-request-id", request_id.encode())
    return json.dumps(body, separators=(",", ":"), default=str).encode() + b"\n"


def error_body(message: str, request_id: str) -> dict[str, Any]:
    return {"error": message, "request_id": request_id}


#: The answer of any route while the metadata database is unavailable.
DATABASE_DOWN = "the metadata database is unavailable; please retry"


class AdminApp:
    """The admin API of one gateway (``token`` empty: not served)."""

    log = Logger(namespace="s3orch.admin")

    def __init__(self, handlers: AdminHandlers, token: str, clock: IReactorTime) -> None:
        self.handlers = handlers
        self._token = token.encode("utf-8")
        # Compared as digests: equal lengths, so the time taken says nothing about the token's length.
        self._digest = hashlib.sha256(self._token).digest()
        self.clock = clock
        self._routes: dict[str, dict[str, Route]] = {}
        for route in ROUTES:
            self._routes.setdefault(route.path, {})[route.method] = route
        #: The paths with ``{name}`` segments, tried after the literal ones.
        self._templates = [(path, routes) for path, routes in self._routes.items() if "{" in path]

    def _find(self, path: str) -> tuple[dict[str, Route] | None, dict[str, str]]:
        """The routes (by method) at ``path`` and its ``{name}`` segments."""
        routes = self._routes.get(path)
        if routes is not None and "{" not in path:
            return routes, {}
        for template, candidates in self._templates:
            found = match(template, path)
            if found is not None:
                return candidates, found
        return None, {}

    @property
    def enabled(self) -> bool:
        return bool(self._token)

    def render(self, request: Any, rest: str) -> bytes | Deferred[bytes]:
        """Answer a request for ``/admin/<rest>`` (called from the ops app's Klein route)."""
        request_id = request_id_from_header(_header(request, b"x-request-id"))
        if not self._token or not (rest == "api" or rest.startswith("api/")):
            return send_json(request, 404, error_body("not found", request_id), request_id)
        given = (_header(request, b"x-admin-token") or "").encode("latin-1", "replace")
        if not hmac.compare_digest(hashlib.sha256(given).digest(), self._digest):
            self.log.info(
                "admin request refused: missing or wrong token", component="admin", request_id=request_id,
                peer=str(getattr(request.getClientAddress(), "host", "")),
            )
            return send_json(request, 401, error_body("unauthorized", request_id), request_id)
        path = rest[len("api/"):].strip("/") if rest != "api" else ""
        routes, segments = self._find(path)
        if not routes:
            return send_json(request, 404, error_body(f"no admin route {path!r}", request_id), request_id)
        method = request.method.decode("latin-1").upper()
        route = routes.get(method)
        if route is None:
            request.setHeader(b"allow", ", ".join(sorted(routes)).encode())
            return send_json(request, 405, error_body(f"{method} not allowed here", request_id), request_id)
        content = getattr(request, "content", None)
        raw = content.read(MAX_BODY + 1) if content is not None else b""
        if len(raw) > MAX_BODY:
            return send_json(request, 413, error_body("request body too large", request_id), request_id)
        body: Any = {}
        if raw.strip():
            try:
                body = json.loads(raw)
            except ValueError:
                return send_json(request, 400, error_body("invalid JSON body", request_id), request_id)
            if not isinstance(body, dict):
                return send_json(request, 400, error_body("the JSON body must be an object", request_id), request_id)
        query = {
            key.decode("utf-8", "replace"): values[0].decode("utf-8", "replace")
            for key, values in (request.args or {}).items()
            if values
        }
        call = AdminCall(query=query, body=body, request_id=request_id, path=segments)
        return Deferred.fromCoroutine(self._run(request, route, call))

    async def _run(self, request: Any, route: Route, call: AdminCall) -> bytes:
        handler = getattr(self.handlers, route.handler)
        stream: NDJSONProgress | None = None
        if route.streams and wants_ndjson(_header(request, b"accept")):

            def write(data: bytes) -> None:
                if not request.startedWriting:
                    request.setResponseCode(200)
                    request.setHeader(b"content-type", NDJSON.encode())
                    request.setHeader(b"cache-control", b"no-store")
                    request.setHeader(b"x-request-id", call.request_id.encode())
                request.write(data)

            stream = NDJSONProgress(write, call.request_id, self.clock.seconds)
            call.progress = stream
        try:
            result: dict[str, Any] = await handler(call)
        except (AdminError, StoreUnavailable) as caught:
            # The database being down is the same answer on every route: retry later.
            exc = caught if isinstance(caught, AdminError) else AdminError(503, DATABASE_DOWN)
            self._done(route, exc.status, call)
            if stream is not None and stream.count:
                stream.error(exc.status, exc.message)
                return b""
            return send_json(request, exc.status, error_body(exc.message, call.request_id), call.request_id)
        except Exception:
            self.log.failure(
                "admin request failed", component="admin", request_id=call.request_id,
                route=f"{route.method} {route.path}",
            )
            self._done(route, 500, call)
            if stream is not None and stream.count:
                stream.error(500, "internal error")
                return b""
            return send_json(request, 500, error_body("internal error", call.request_id), call.request_id)
        self._done(route, 200, call)
        if stream is not None:
            stream.result(result)
            return b""
        return send_json(request, 200, {**result, "request_id": call.request_id}, call.request_id)

    def _done(self, route: Route, status: int, call: AdminCall) -> None:
        self.log.info(
            "admin {route}: {status}", component="admin", route=f"{route.method} {route.path}",
            status=status, request_id=call.request_id,
        )
