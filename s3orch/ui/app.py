"""The dashboard's Klein app: login, session and CSRF checks, pages and ``/api/*`` routes.

Mounted under ``ui.path`` by the operational Klein app (:mod:`s3orch.frontend.ops`), which
hands it the request with ``postpath`` relative to that path.  Every answer carries the
security headers; pages are Jinja2 templates (autoescaped) and work without JavaScript for
reading; actions are small progressive scripts in ``static/ui.js`` posting JSON with the CSRF
token.  Nothing is fetched from elsewhere: CSS and JS are served from ``static/``.
"""

from __future__ import annotations

import json
import mimetypes
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from jinja2 import Environment, FileSystemLoader, select_autoescape
from klein import Klein
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from s3orch.admin.calls import AdminCall, AdminError
from s3orch.config.features import UIConfig
from s3orch.core.objects import NewObject
from s3orch.http.relay import relay_body
from s3orch.observe.logging import new_request_id
from s3orch.s3 import errors
from s3orch.ui.auth import CSRF_COOKIE, SESSION_COOKIE, LoginThrottle, PasswordCheck, Sessions
from s3orch.ui.data import MAX_TREE_KEYS, BadRequest, UIData, masked_config, split_key
from s3orch.ui.form import FormError, parse_form
from s3orch.ui.history import UsageHistory
from s3orch.ui.jobs import JobProgress, Jobs

T = TypeVar("T")
Offload = Callable[[Callable[[], T]], "Deferred[T]"]

#: JSON bodies over this are refused (the listener already caps them there, too).
MAX_JSON = 1024 * 1024
#: The upload limit (the file field; the listener allows a little more for the form's framing).
MAX_UPLOAD = 512 * 1024 * 1024
HERE = Path(__file__).parent
SECURITY_HEADERS = {
    b"x-frame-options": b"DENY",
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"strict-origin-when-cross-origin",
    b"content-security-policy": b"default-src 'self'; style-src 'self' 'unsafe-inline'",
}
#: POST /api/<name> -> (admin handler, query from the JSON body's fields).
OPERATIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "rebalance": ("rebalance", ("strategy",)),
    "clean-excess": ("over_replication", ("batch_size",)),
    "replicate": ("replicate", ()),
    "scrub": ("scrub", ()),
    "backfill-checksums": ("backfill_checksums", ()),
    "sync": ("sync", ("backend", "bucket", "prefix", "dry_run")),
    "drain": ("start_drain", ("backend",)),
    "drain-cancel": ("cancel_drain", ("backend",)),
    #: The encryption pass, when this build has one (see ``encrypt_handler``).
    "encrypt-existing": ("encrypt_existing", ()),
}

_log = Logger(namespace="s3orch.ui")


def _text(request: Any, name: bytes) -> str:
    values = (request.args or {}).get(name)
    return values[0].decode("utf-8", "replace") if values else ""


def _header(request: Any, name: bytes) -> str:
    value = request.getHeader(name)
    return value.decode("latin-1") if isinstance(value, bytes) else (value or "")


class UIApp:
    """The dashboard of one gateway."""

    app = Klein()

    def __init__(
        self, *, config: UIConfig, data: UIData, clock: IReactorTime, client_ip: Callable[[Any], str],
        history: UsageHistory, offload: Offload[Any] | None = None,
    ) -> None:
        self.path = "/" + config.path.strip("/")
        self.force_secure = config.force_secure_cookies
        self.passwords = PasswordCheck(config.admin_key, config.admin_secret)
        self.sessions = Sessions(config.session_secret, clock)
        self.throttle = LoginThrottle(clock)
        self.data = data
        self.clock = clock
        self.client_ip = client_ip
        self.history = history
        self.jobs = Jobs(clock.seconds)
        if offload is None:
            from twisted.internet.threads import deferToThread

            offload = deferToThread
        self.offload = offload
        self.templates = Environment(
            loader=FileSystemLoader(str(HERE / "templates")), autoescape=select_autoescape(default=True)
        )

    def resource(self) -> Any:
        return self.app.resource()

    # -- plumbing ------------------------------------------------------------------------------

    def _secure(self, request: Any) -> bool:
        return self.force_secure or bool(request.isSecure())

    def _session(self, request: Any) -> str | None:
        cookie = request.getCookie(SESSION_COOKIE)
        value = cookie.decode("latin-1") if cookie else None
        return value if self.sessions.valid(value) else None

    def _headers(self, request: Any) -> None:
        for name, value in SECURITY_HEADERS.items():
            request.setHeader(name, value)
        request.setHeader(b"cache-control", b"no-store")

    def _json(self, request: Any, status: int, body: dict[str, Any]) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(body, separators=(",", ":"), default=str).encode() + b"\n"

    def _page(self, request: Any, template: str, code: int = 200, **context: Any) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        session = self._session(request)
        csrf = self.sessions.csrf_token(session) if session else ""
        html = self.templates.get_template(template).render(base=self.path, csrf=csrf, **context)
        return html.encode("utf-8")

    def _guard(self, request: Any, *, api: bool) -> bytes | None:
        """The refusal of a request without a valid session (or, for a POST, the CSRF token)."""
        self._headers(request)
        session = self._session(request)
        if session is None:
            if api:
                return self._json(request, 401, {"error": "unauthorized"})
            request.setResponseCode(303)
            request.setHeader(b"location", f"{self.path}/login".encode())
            return b""
        if request.method == b"POST":
            token = _header(request, b"x-csrf-token") or _text(request, b"csrf_token")
            if not self.sessions.csrf_valid(session, token):
                return self._json(request, 403, {"error": "missing or invalid CSRF token"})
        return None

    def _body(self, request: Any) -> dict[str, Any]:
        raw = request.content.read(MAX_JSON + 1) if request.content is not None else b""
        if len(raw) > MAX_JSON:
            raise AdminError(413, "request body too large")
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except ValueError:
            raise AdminError(400, "invalid JSON body") from None
        if not isinstance(body, dict):
            raise AdminError(400, "the JSON body must be an object")
        return body

    def _api(self, request: Any, work: Callable[[], Any]) -> Any:
        """Run an API handler: guard first, then JSON out (errors as ``{"error"}``)."""
        refusal = self._guard(request, api=True)
        if refusal is not None:
            return refusal

        def answer(result: Any) -> Any:
            return result if result is None or isinstance(result, bytes) else self._json(request, 200, result)

        def failed(failure: Any) -> bytes:
            exc = failure.value
            if isinstance(exc, AdminError):
                return self._json(request, exc.status, {"error": exc.message})
            if isinstance(exc, (BadRequest, FormError)):
                return self._json(request, 400, {"error": str(exc)})
            if isinstance(exc, errors.S3Error):
                return self._json(request, exc.status, {"error": exc.message, "code": exc.code})
            _log.failure("dashboard request failed", failure, component="ui")
            return self._json(request, 500, {"error": "internal error"})

        return maybeDeferred(work).addCallbacks(answer, failed)

    # -- login -------------------------------------------------------------------------------

    @app.route("/login", methods=["GET", "HEAD"])
    def login_page(self, request: Any) -> bytes:
        self._headers(request)
        return self._page(request, "login.html")

    @app.route("/login", methods=["POST"])
    def login(self, request: Any) -> bytes:
        self._headers(request)
        ip = self.client_ip(request)
        if self.throttle.locked(ip):
            return self._page(request, "login.html", 429, error="Too many attempts: try again in 5 minutes.")
        ok = self.passwords.check(_text(request, b"access_key"), _text(request, b"secret_key"))
        if not ok:
            self.throttle.failed(ip)
            _log.info("dashboard login failed", component="ui", peer=ip)
            return self._page(request, "login.html", 401, error="Wrong access key or secret key.")
        self.throttle.succeeded(ip)
        session = self.sessions.issue()
        secure = self._secure(request)
        request.addCookie(SESSION_COOKIE, session.encode(), path=self.path, httpOnly=True,
                          sameSite="strict", secure=secure, max_age=str(int(self.sessions.ttl)))
        request.addCookie(CSRF_COOKIE, self.sessions.csrf_token(session).encode(), path=self.path,
                          sameSite="strict", secure=secure, max_age=str(int(self.sessions.ttl)))
        _log.info("dashboard login", component="ui", peer=ip)
        request.setResponseCode(303)
        request.setHeader(b"location", f"{self.path}/".encode())
        return b""

    @app.route("/logout", methods=["POST"])
    def logout(self, request: Any) -> bytes:
        refusal = self._guard(request, api=False)
        if refusal is not None:
            return refusal
        for name in (SESSION_COOKIE, CSRF_COOKIE):
            request.addCookie(name, b"", path=self.path, max_age="0", sameSite="strict")
        request.setResponseCode(303)
        request.setHeader(b"location", f"{self.path}/login".encode())
        return b""

    @app.route("/static/<name>", methods=["GET", "HEAD"])
    def static(self, request: Any, name: str) -> bytes:
        self._headers(request)
        target = HERE / "static" / name
        if "/" in name or name.startswith(".") or not target.is_file():
            request.setResponseCode(404)
            return b"not found\n"
        request.setHeader(b"content-type", (mimetypes.guess_type(name)[0] or "application/octet-stream").encode())
        request.setHeader(b"cache-control", b"max-age=300")
        return target.read_bytes()

    # -- pages -------------------------------------------------------------------------------

    def _render(self, request: Any, template: str, load: Callable[[], Any]) -> Any:
        refusal = self._guard(request, api=False)
        if refusal is not None:
            return refusal

        def failed(failure: Any) -> bytes:
            exc = failure.value
            message = exc.message if isinstance(exc, AdminError) else str(exc)
            if not isinstance(exc, (AdminError, BadRequest, errors.S3Error)):
                _log.failure("dashboard page failed", failure, component="ui")
                message = "internal error"
            return self._page(request, "error.html", 500 if message == "internal error" else 400, error=message)

        return maybeDeferred(load).addCallback(lambda ctx: self._page(request, template, **ctx)).addErrback(failed)

    @app.route("/", methods=["GET", "HEAD"])
    def overview(self, request: Any) -> Any:
        async def load() -> dict[str, Any]:
            return {"status": await self.data.dashboard(), "chart": self.history.svg(), "page": "overview"}

        return self._render(request, "overview.html", lambda: Deferred.fromCoroutine(load()))

    @app.route("/objects", methods=["GET", "HEAD"])
    def objects_page(self, request: Any) -> Any:
        prefix = _text(request, b"prefix")
        key = _text(request, b"key")

        async def load() -> dict[str, Any]:
            listing = await self.data.tree(prefix, _text(request, b"startAfter"), MAX_TREE_KEYS)
            details = await self.data.details(key) if key else None
            return {"prefix": prefix, "listing": listing, "details": details, "page": "objects",
                    "buckets": self.data.buckets}

        return self._render(request, "objects.html", lambda: Deferred.fromCoroutine(load()))

    @app.route("/operations", methods=["GET", "HEAD"])
    def operations_page(self, request: Any) -> Any:
        return self._render(request, "operations.html", lambda: {
            "page": "operations", "jobs": self.jobs.recent(), "backends": self.data.handlers.backends,
            "buckets": self.data.buckets,
        })

    @app.route("/logs", methods=["GET", "HEAD"])
    def logs_page(self, request: Any) -> Any:
        query = {name: _text(request, name.encode()) for name in ("level", "component", "request_id")}

        def load() -> dict[str, Any]:
            try:
                lines = self.data.logs(query["level"], query["component"], query["request_id"], "", 500)
            except ValueError as exc:
                raise BadRequest(str(exc)) from None
            return {"page": "logs", "lines": lines, **query}

        return self._render(request, "logs.html", load)

    @app.route("/config", methods=["GET", "HEAD"])
    def config_page(self, request: Any) -> Any:
        return self._render(request, "config.html", lambda: {
            "page": "config",
            "config": json.dumps(masked_config(self.data.config), indent=2, sort_keys=True, default=str),
        })

    # -- JSON API: reading -------------------------------------------------------------------

    @app.route("/api/dashboard", methods=["GET"])
    def api_dashboard(self, request: Any) -> Any:
        return self._api(request, lambda: Deferred.fromCoroutine(self.data.dashboard()))

    @app.route("/api/tree", methods=["GET"])
    def api_tree(self, request: Any) -> Any:
        def work() -> Any:
            raw = _text(request, b"maxKeys") or str(MAX_TREE_KEYS)
            try:
                max_keys = int(raw)
            except ValueError:
                raise BadRequest("maxKeys must be an integer") from None
            return Deferred.fromCoroutine(
                self.data.tree(_text(request, b"prefix"), _text(request, b"startAfter"), max_keys)
            )

        return self._api(request, work)

    @app.route("/api/object", methods=["GET"])
    def api_object(self, request: Any) -> Any:
        return self._api(request, lambda: Deferred.fromCoroutine(self.data.details(_text(request, b"key"))))

    @app.route("/api/prefix-count", methods=["GET"])
    def api_prefix_count(self, request: Any) -> Any:
        async def work() -> dict[str, Any]:
            keys = await self.data.count_prefix(_text(request, b"prefix"))
            return {"prefix": _text(request, b"prefix"), "count": len(keys)}

        return self._api(request, lambda: Deferred.fromCoroutine(work()))

    @app.route("/api/logs", methods=["GET"])
    def api_logs(self, request: Any) -> Any:
        def work() -> dict[str, Any]:
            raw = _text(request, b"limit") or "200"
            try:
                limit = max(1, min(int(raw), self.data.handlers.ring.capacity))
                lines = self.data.logs(_text(request, b"level"), _text(request, b"component"),
                                       _text(request, b"request_id"), _text(request, b"since"), limit)
            except ValueError as exc:
                raise BadRequest(str(exc)) from None
            return {"lines": lines}

        return self._api(request, work)

    @app.route("/api/jobs", methods=["GET"])
    def api_jobs(self, request: Any) -> Any:
        return self._api(request, lambda: {"jobs": self.jobs.recent()})

    @app.route("/api/jobs/<job_id>", methods=["GET"])
    def api_job(self, request: Any, job_id: str) -> Any:
        def work() -> dict[str, Any]:
            job = self.jobs.get(job_id)
            if job is None:
                raise AdminError(404, f"no job {job_id}")
            return job.as_dict()

        return self._api(request, work)

    @app.route("/api/drain-status", methods=["GET"])
    def api_drain_status(self, request: Any) -> Any:
        call = AdminCall(query={"backend": _text(request, b"backend")})
        return self._api(request, lambda: Deferred.fromCoroutine(self.data.handlers.drain_status(call)))

    @app.route("/api/download", methods=["GET"])
    def api_download(self, request: Any) -> Any:
        return self._api(request, lambda: Deferred.fromCoroutine(self._download(request)))

    async def _download(self, request: Any) -> None:
        bucket, key = split_key(_text(request, b"key"), self.data.buckets)
        record = await self.data.objects.head(bucket, key)
        name = key.rsplit("/", 1)[-1] or "download"
        fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\;' else "_" for c in name)
        request.setHeader(b"content-disposition", (
            f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{urllib.parse.quote(name, safe='')}"
        ).encode("latin-1"))
        request.setHeader(b"content-type", b"application/octet-stream")
        request.setHeader(b"content-length", str(record.size).encode())
        request.setHeader(b"etag", f'"{record.etag}"'.encode())
        if record.size == 0:
            request.finish()
            return
        stream, _ = await self.data.objects.open(record, None)
        await relay_body(stream, request)

    # -- JSON API: changing ------------------------------------------------------------------

    @app.route("/api/delete", methods=["POST"])
    def api_delete(self, request: Any) -> Any:
        async def work() -> dict[str, Any]:
            bucket, key = split_key(str(self._body(request).get("key", "")), self.data.buckets)
            if not await self.data.objects.delete(bucket, key, new_request_id()):
                raise AdminError(404, f"no object {bucket}/{key}")
            return {"ok": True}

        return self._api(request, lambda: Deferred.fromCoroutine(work()))

    @app.route("/api/delete-prefix", methods=["POST"])
    def api_delete_prefix(self, request: Any) -> Any:
        async def work() -> dict[str, Any]:
            prefix = str(self._body(request).get("prefix", ""))
            if "/" not in prefix:
                raise BadRequest("the prefix must be bucket/...")
            return await self.data.delete_prefix(prefix, new_request_id())

        return self._api(request, lambda: Deferred.fromCoroutine(work()))

    @app.route("/api/upload", methods=["POST"])
    def api_upload(self, request: Any) -> Any:
        return self._api(request, lambda: Deferred.fromCoroutine(self._upload(request)))

    async def _upload(self, request: Any) -> dict[str, Any]:
        content_type = _header(request, b"content-type")
        spool_dir = getattr(self.data.objects, "spooler", None)
        form = await self.offload(lambda: parse_form(request.content, content_type, getattr(spool_dir, "spool_dir", None)))
        try:
            if form.file is None:
                raise BadRequest("the form has no file field")
            if form.file.length > MAX_UPLOAD:
                raise AdminError(413, "the upload limit is 512 MiB")
            bucket, key = split_key(form.fields.get("key", "").strip(), self.data.buckets)
            new = NewObject(form.content_type or "application/octet-stream", {}, {})
            record = await self.data.objects.put(bucket, key, form.file, new=new, request_id=new_request_id())
        finally:
            if form.file is not None:
                form.file.close()
        return {"ok": True, "key": f"{bucket}/{key}", "size": record.size, "etag": record.etag}

    @app.route("/api/<operation>", methods=["POST"])
    def api_operation(self, request: Any, operation: str) -> Any:
        def work() -> Any:
            if operation == "logout":
                return self.logout_api(request)
            if operation not in OPERATIONS:
                raise AdminError(404, f"no operation {operation!r}")
            handler_name, params = OPERATIONS[operation]
            handler = getattr(self.data.handlers, handler_name, None)
            if handler is None:
                raise AdminError(501, f"{operation} is not in this build")
            body = self._body(request)
            query = {name: str(body[name]) for name in params if body.get(name) not in (None, "")}

            async def run(progress: JobProgress) -> dict[str, Any]:
                result: dict[str, Any] = await handler(AdminCall(query=query, progress=progress,
                                                                 request_id=new_request_id()))
                return {"ok": True, **result}

            if body.get("background"):
                return {"ok": True, "job": self.jobs.start(operation, run).as_dict()}
            return Deferred.fromCoroutine(run(JobProgress(self.clock.seconds)))

        return self._api(request, work)

    def logout_api(self, request: Any) -> dict[str, Any]:
        for name in (SESSION_COOKIE, CSRF_COOKIE):
            request.addCookie(name, b"", path=self.path, max_age="0", sameSite="strict")
        return {"ok": True}
