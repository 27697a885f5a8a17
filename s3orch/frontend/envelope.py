"""The envelope around every S3 request: what happens before and after its handler.

:class:`S3Envelope` is the :class:`~s3orch.http.site.EarlyHandler` the HTTP layer
calls when a request's headers are in (``prepare``: admission, address and
operation, authentication at the injected clock's time, bucket binding, the
credential's share of the pool, header-time checks, the body sink, so a refused
upload is answered before ``100 Continue``), as its body arrives (``feed``), when
it times out or its client goes away; and the Resource that renders it once the
body is in and verified (``render``: dispatch through the merged route table,
every error mapped to its S3 answer).  Every request is accounted for exactly
once, whatever way it ends: admission slot released, in-flight gauge, metrics
and an audit event.

Request bodies are received here and only here (``body_sink``, ``feed``,
``_handle``): handlers get the finished, verified :class:`~s3orch.payload.Payload`, or, for a
stream-through write (:mod:`s3orch.frontend.body_sink`), a stream verified when it ends: its
handler starts with the first body byte, and an error before the body is in is answered at
once and the connection closed (the rest of the body is never read).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from s3orch.auth.authenticate import authenticate
from s3orch.auth.registry import CredentialRegistry
from s3orch.config.model import ServerConfig
from s3orch.frontend.body_sink import IGNORED_BODY_LIMIT, StreamGate, body_sink
from s3orch.frontend.request import (
    RequestState,
    Route,
    RouteTable,
    abort,
    check_interpreted_input,
    first_header,
    headers_of,
    path_of,
    query_of,
    resource_of,
    resource_type,
    send_error,
    send_last_resort,
)
from s3orch.http.admission import Admission, Pool, Refused
from s3orch.http.body import DiscardedBody
from s3orch.http.hold import Postponed
from s3orch.http.ratelimit import RateLimiter
from s3orch.http.site import RejectedEarly, S3Request, unprepared_rejection
from s3orch.http.stream_body import StreamingBody
from s3orch.observe import tracing
from s3orch.observe.audit import audit, bind
from s3orch.observe.logging import request_id_from_header
from s3orch.observe.metrics import (
    ADMISSION_IN_USE,
    ADMISSION_REJECTIONS,
    AUTH_STREAMING_REJECTIONS,
    CREDENTIAL_REJECTIONS,
    DATABASE_UNAVAILABLE,
    EARLY_REJECTIONS,
    INFLIGHT,
    LOAD_SHED,
    REQUEST_DURATION,
    REQUEST_SIZE,
    REQUESTS,
    RESPONSE_SIZE,
    count_manager,
    method_label,
)
from s3orch.payload import Payload
from s3orch.s3 import errors, sigv4
from s3orch.s3.addressing import parse_address, virtual_bucket
from s3orch.s3.operations import resolve_operation
from s3orch.store.interface import StoreUnavailable

#: Metric children pre-bound per label values (closed sets: methods, statuses): ``labels()``
#: builds and checks a tuple under a lock, ~8K instructions each, several per request.
_inflight = lru_cache(maxsize=64)(INFLIGHT.labels)
_requests = lru_cache(maxsize=4096)(REQUESTS.labels)
_duration = lru_cache(maxsize=64)(REQUEST_DURATION.labels)
_request_size = lru_cache(maxsize=64)(REQUEST_SIZE.labels)
_response_size = lru_cache(maxsize=64)(RESPONSE_SIZE.labels)

#: Paths that are not S3 requests on the S3 port (Klein's operational endpoints).
DEFAULT_RESERVED_PREFIXES = (b"/health", b"/metrics", b"/admin", b"/ui")

#: ``(method, operation) -> the error refusing it, or None``: refuses writes while degraded.
WriteGate = Callable[[str, str], errors.S3Error | None]

#: Seconds a client is asked to wait after a 503 caused by the metadata database.
DATABASE_RETRY_AFTER = 2
#: At most one log line per this many seconds while the database is unavailable.
DATABASE_ERROR_LOG_EVERY = 5.0


class S3Envelope(Resource):
    """Early handler + Resource for every S3 request, dispatching through ``routes``."""

    isLeaf = True
    log = Logger(namespace="s3orch.s3")

    def __init__(
        self,
        *,
        server: ServerConfig,
        registry: CredentialRegistry,
        routes: RouteTable,
        clock: IReactorTime,
        reserved_prefixes: Sequence[bytes] = DEFAULT_RESERVED_PREFIXES,
        admission: Admission | None = None,
        write_gate: WriteGate | None = None,
        limiter: RateLimiter | None = None,
        stream_gate: StreamGate | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # twisted.web's Resource is unannotated
        #: Degraded mode (``s3orch.core.degraded``): the 503 a write gets before its body, or None.
        self.write_gate = write_gate
        #: ``server:`` of the config (caps, spooling, addressing, which signatures are accepted).
        self.server_config = server
        #: Concurrency limits of S3 requests (never /health, /metrics, /admin, /ui).
        self.admission = admission if admission is not None else Admission.from_config(server, clock=clock)
        #: Per-IP (and per-access-key) token buckets (``rate_limit``; None: not limited).
        self.limiter = limiter
        for pool in (self.admission.global_pool, self.admission.reads, self.admission.writes):
            if pool is not None:
                ADMISSION_IN_USE.labels(pool.name).set_function(_in_use_of(pool))
        self.registry = registry
        #: May a large PutObject stream through (the object service's settings allow it)?
        self.stream_gate = stream_gate
        self.routes = routes
        #: Request timing, signature dates and database-error log pacing all read this clock.
        self.clock = clock
        self.reserved_prefixes = tuple(reserved_prefixes)
        # Built once: ``wants`` runs for every request on the port.
        self._reserved_exact = frozenset(self.reserved_prefixes)
        self._reserved_starts = tuple(p + sep for p in self.reserved_prefixes for sep in (b"/", b"?"))
        self._db_error_logged_at = float("-inf")
        self._db_errors_unlogged = 0

    # -- early phase (headers only) -------------------------------------------

    def wants(self, method: bytes, uri: bytes, host: bytes | None) -> bool:
        path = path_of(uri)
        suffix = self.server_config.virtual_host_suffix
        if suffix and host:
            name = host.decode("latin-1").split(":")[0].lower().rstrip(".")
            if name.endswith("." + suffix.lower()):
                return True
        return path not in self._reserved_exact and not path.startswith(self._reserved_starts)

    def prepare(
        self, request: S3Request, method: bytes, uri: bytes, length: int | None
    ) -> RequestState:
        """Headers are in: decide now, before any body byte is read.

        Every way out either returns the state (the request goes on, perhaps to
        answer ``state.error``) or raises RejectedEarly with the request accounted
        for (slot and in-flight gauge released); an unexpected exception is
        accounted for before it propagates (S3Request turns it into a 500).
        """
        if not request.admission_waited:  # the pool is full: wait for a slot (admission_wait)?
            ready = self.admission.wait_for(method.decode("latin-1"))
            if ready is not None:
                raise Postponed(ready)
        headers = headers_of(request)
        state = RequestState(
            request_id=request_id_from_header(first_header(headers, "x-request-id")),
            started=self.clock.seconds(),
            method=method.decode("latin-1"),
            raw_path=path_of(uri),
            headers=headers,
        )
        state.span = tracing.server_span(state.method, state.raw_path, headers)
        state.method_label = method_label(state.method)
        _inflight(state.method_label).inc()
        has_body = length is None or length > 0
        try:
            try:
                if state.method_label == "OTHER":
                    # Unknown methods cost nothing: answered before admission and auth.
                    raise errors.MethodNotAllowed(
                        Method=state.method[:64], ResourceType=resource_type(state.raw_path)
                    )
                try:
                    state.slot = request.waited_slot or self.admission.admit(state.method)
                except Refused as refused:
                    raise self._refuse_admission(state, refused) from None
                if self.limiter is not None and self.limiter.enabled:
                    state.client_ip = self.limiter.client_ip_of(request)
                    if not self.limiter.allow_ip(state.client_ip, "s3"):
                        raise self._rate_limited(state)
                state.query = sigv4.parse_query(query_of(uri))
                with tracing.using(state.span):  # its log lines (audit refusals) carry the trace
                    self._prepare(state, length, request)
            except (RejectedEarly, errors.S3Error):
                raise
            except StoreUnavailable as exc:
                raise errors.ServiceUnavailable("The metadata database is unavailable.") from exc
            except Exception as exc:
                # A bug must cost this request (500 with its id), never the connection.
                self.log.failure("request preparation failed", component="s3", request_id=state.request_id)
                raise errors.InternalError() from exc
        except errors.S3Error as exc:
            state.error = exc
            if has_body:
                EARLY_REJECTIONS.labels(exc.code).inc()
                raise self._rejection(state, exc) from None
            # No body: the request goes on, and render() answers state.error.
        except BaseException:
            # A RejectedEarly was accounted when it was built; anything else was not.
            if not state.accounted:
                self._finish_accounting(state, 500)
            raise
        return state

    def _prepare(self, state: RequestState, length: int | None, request: S3Request) -> None:
        headers = state.headers
        suffix = self.server_config.virtual_host_suffix
        state.address = parse_address(first_header(headers, "host"), state.raw_path, suffix)
        state.operation = resolve_operation(state.method, state.address, state.query, headers)
        outcome = authenticate(
            self.registry,
            state.method,
            state.raw_path,
            state.query,
            headers,
            self.clock.seconds(),
            allow_sigv2=self.server_config.allow_sigv2,
            bucket_from_host=virtual_bucket(first_header(headers, "host"), suffix),
            regions=self.server_config.regions,
        )
        state.principal = outcome.principal
        state.auth = outcome.sigv4
        if state.operation.level != "service" and state.address.bucket != state.principal.bucket:
            state.event = "s3.BucketMismatch"  # the request's one HTTP-level audit event
            raise errors.AccessDenied()
        if self.limiter is not None and not self.limiter.allow_credential(
            state.client_ip, state.principal.access_key
        ):
            raise self._rate_limited(state)
        self._admit_credential(state)
        if self.write_gate is not None:
            refusal = self.write_gate(state.method, state.op_name)
            if refusal is not None:
                raise refusal
        check_interpreted_input(state)
        route = self.routes.get(state.operation.name)
        if route is not None and route.early is not None:
            route.early(state)
        if route is not None and route.body is not None:
            state.body = body_sink(self.server_config, state, length, route.body, request, self.stream_gate)
        elif length is None or length > 0:
            # Bodies on operations that take none are counted, capped and dropped.
            state.body = DiscardedBody(max_size=IGNORED_BODY_LIMIT, declared_length=length)

    def _admit_credential(self, state: RequestState) -> None:
        """Count the request against its credential's share of the pool (503 SlowDown over it)."""
        assert state.principal is not None
        principal = state.principal
        credential = f"{principal.bucket}:{principal.access_key}"
        try:
            state.credential_hold = self.admission.admit_credential(credential, state.slot)
        except Refused:
            CREDENTIAL_REJECTIONS.inc()
            state.event = "s3.AdmissionRejected"
            raise errors.SlowDown().with_headers([("Retry-After", "1")]) from None

    def feed(self, request: S3Request, data: bytes) -> None:
        state: RequestState = request.s3
        if state.body is None or state.error is not None:
            return
        try:
            state.body.feed(data)
            if isinstance(state.body, StreamingBody) and not state.body.handling:
                state.body.handling = True
                self._start(request, state)  # the backend write runs while the body arrives
        except errors.S3Error as exc:
            route = self.routes.get(state.op_name)
            if exc.code == "EntityTooLarge" and route is not None and route.body is not None:
                if route.body.oversized_is_malformed:
                    exc = errors.MalformedXML()
            state.error = exc
            if exc.code == "SignatureDoesNotMatch":
                AUTH_STREAMING_REJECTIONS.labels("chunk_signature").inc()
            raise self._rejection(state, exc) from None
        except Exception:
            self.log.failure("request body handling failed", component="s3", request_id=state.request_id)
            state.error = errors.InternalError()
            state.body.discard()
            raise self._rejection(state, state.error) from None

    def _refuse_admission(self, state: RequestState, refused: Refused) -> RejectedEarly:
        """503 SlowDown at header time (before 100 Continue): the pool is full or shedding."""
        if refused.reason == "shed":
            LOAD_SHED.inc()
            state.event = "s3.LoadShed"
        else:
            ADMISSION_REJECTIONS.inc()
            state.event = "s3.AdmissionRejected"
        exc = errors.SlowDown("Server at capacity").with_headers([("Retry-After", "1")])
        state.error = exc
        return self._rejection(state, exc)

    def _rate_limited(self, state: RequestState) -> errors.S3Error:
        """429 SlowDown with Retry-After: 1 (before the body: prepare answers it at once)."""
        state.event = "s3.RateLimited"
        return errors.RateLimited().with_headers([("Retry-After", "1")])

    def timed_out(self, request: S3Request | None) -> RejectedEarly:
        """408 RequestTimeout: headers or body did not arrive within the server's read deadlines."""
        return self.refused(request, errors.RequestReadTimeout())

    def refused(self, request: S3Request | None, exc: errors.S3Error) -> RejectedEarly:
        """The HTTP layer gives up on a request mid-way (deadline, broken framing): its answer.

        A request whose headers were prepared holds a slot and a body sink: both
        are released and it is counted, once, with ``exc``'s status.
        """
        state: RequestState | None = request.s3 if request is not None else None
        if state is None:
            return unprepared_rejection(exc)
        state.error = exc
        if state.body is not None:
            state.body.discard()
        return self._rejection(state, exc)

    def _rejection(self, state: RequestState, exc: errors.S3Error) -> RejectedEarly:
        """Build the immediate answer for a refused body, and account for it (always)."""
        try:
            body = b"" if state.method == "HEAD" else exc.to_xml(state.request_id, resource_of(state))
        finally:
            self._finish_accounting(state, exc.status)
        return RejectedEarly(
            exc.status,
            [
                ("Content-Type", "application/xml"),
                ("x-amz-request-id", state.request_id),
                ("x-amz-id-2", state.request_id),
                ("Server", "s3orch"),
                *exc.headers,
            ],
            body,
        )

    # -- main phase -----------------------------------------------------------

    def render(self, request: S3Request) -> int:
        state: RequestState = request.s3
        if isinstance(state.body, StreamingBody) and state.body.handling:
            request.setHeader("server", "s3orch")  # process() set Twisted's default again
            state.body.end_of_body()  # its handler runs already, and answers once the backend did
            return NOT_DONE_YET
        self._start(request, state)
        return NOT_DONE_YET

    def _start(self, request: S3Request, state: RequestState) -> None:
        """Run the request's handler (the body is in, or streams through)."""
        with tracing.using(state.span):  # the coroutine runs in a copy of this context
            d = Deferred.fromCoroutine(self._handle(request, state))

        def unhandled(failure: Failure) -> None:
            self.log.failure("unhandled", failure, component="s3", request_id=state.request_id)
            abort(request)  # never leave the client waiting on a request we gave up on
            self._finish_accounting(state, 500, request)

        d.addErrback(unhandled)

    async def _handle(self, request: S3Request, state: RequestState) -> None:
        body: Payload | None = None
        try:
            try:
                request.setHeader("x-amz-request-id", state.request_id)
                request.setHeader("x-amz-id-2", state.request_id)
                request.setHeader("server", "s3orch")
                if state.error is not None:
                    raise state.error
                if state.body is not None:
                    body = state.body.finish()
                assert state.operation is not None
                route = self.routes.get(state.operation.name)
                if route is None:
                    raise errors.NotImplementedError_(
                        f"{state.operation.name} is not implemented by this gateway."
                    )
                await self._run(route, request, state, body)
            except errors.S3Error as exc:
                if not self._cut_stream(request, state, exc):
                    send_error(request, state, exc)
            except StoreUnavailable as exc:
                if not self._cut_stream(request, state, errors.ServiceUnavailable()):
                    self._database_unavailable(request, state, exc)
            except Exception:
                self.log.failure(
                    "request failed", component="s3", request_id=state.request_id, operation=state.op_name
                )
                audit("http.PanicRecovered", request_id=state.request_id, operation=state.op_name)
                if not self._cut_stream(request, state, errors.InternalError()):
                    send_error(request, state, errors.InternalError())
        except Exception:
            # Sending the answer itself failed: the request must still end.
            self.log.failure("sending the answer failed", component="s3", request_id=state.request_id)
            if state.error is None:
                state.error = errors.InternalError()
            send_last_resort(request, state.request_id)
            self._finish_accounting(state, 500, request)
        finally:
            if body is not None:
                body.close()
            self._finish_accounting(state, request.code, request)

    def _cut_stream(self, request: S3Request, state: RequestState, exc: errors.S3Error) -> bool:
        """A stream-through write failed before its body was in (or its request was refused
        meanwhile): answer now and close, the rest of the body unread.  False: answer as usual."""
        body = state.body
        if request.rejected or request._disconnected:
            return True  # refused meanwhile (deadline, framing) or the client is gone: nothing to send
        if not isinstance(body, StreamingBody) or body.complete:
            return False
        state.error = exc
        body.discard()
        channel = request.channel
        rejection = self._rejection(state, exc)
        if channel is not None and hasattr(channel, "reject"):
            channel.reject(request, rejection)
        return True

    async def _run(self, route: Route, request: S3Request, state: RequestState, body: Payload | None) -> None:
        """The handler, its storage events bound to the request (audit.bind), counted in s3o_manager_*."""
        scope = bind(state.request_id, state.principal.access_key if state.principal else None)
        started, status = self.clock.seconds(), "error"
        try:
            await route.handler(request, state, body)
            status = "success"
        except errors.S3Error as exc:
            status = "client_error" if exc.status < 500 else "error"
            raise
        finally:
            count_manager(state.op_name, scope.backend, status, self.clock.seconds() - started)

    def _database_unavailable(self, request: S3Request, state: RequestState, exc: StoreUnavailable) -> None:
        """503 with Retry-After: the metadata database is down or restarting (never a 500)."""
        DATABASE_UNAVAILABLE.labels(state.op_name).inc()
        now = self.clock.seconds()
        self._db_errors_unlogged += 1
        if now - self._db_error_logged_at >= DATABASE_ERROR_LOG_EVERY:
            self.log.warn(
                "metadata database unavailable; answering 503 ({count} requests since the last"
                " report): {error}",
                component="s3",
                count=self._db_errors_unlogged,
                error=str(exc),
                request_id=state.request_id,
                operation=state.op_name,
            )
            self._db_error_logged_at = now
            self._db_errors_unlogged = 0
        request.setHeader("retry-after", str(DATABASE_RETRY_AFTER))
        send_error(
            request, state, errors.ServiceUnavailable("The metadata database is unavailable; please retry.")
        )

    def abandoned(self, request: S3Request) -> None:
        """The client went away before its answer: free the spool, count it once (499)."""
        state: RequestState = request.s3
        if state.body is not None:
            state.body.discard()
        self._finish_accounting(state, 499, request)

    # -- accounting ---------------------------------------------------------------

    def _finish_accounting(self, state: RequestState, status: int, request: S3Request | None = None) -> None:
        """Release what the request holds and count it, exactly once, whatever fails."""
        if state.accounted:
            return
        state.accounted = True
        try:
            if state.credential_hold is not None:
                state.credential_hold.release()
            if state.slot is not None:  # last: a request waiting for it may start at once
                state.slot.release()
        finally:
            _inflight(state.method_label).dec()
        try:
            with tracing.using(state.span):  # the audit line carries the trace id
                self._count(state, status, request)
        except Exception:
            self.log.failure("request accounting failed", component="s3", request_id=state.request_id)
        if state.span is not None:
            tracing.end_server_span(state.span, state.op_name if state.operation else None, status, {
                "s3o.request_id": state.request_id,
                "s3o.bucket": state.address.bucket if state.address else None,
                "s3o.error_code": state.error.code if state.error else None,
            })

    def _count(self, state: RequestState, status: int, request: S3Request | None) -> None:
        duration = max(0.0, self.clock.seconds() - state.started)
        label = state.method_label
        _requests(label, str(status)).inc()
        _duration(label).observe(duration)
        if state.body is not None:
            _request_size(label).observe(state.body.received)
        if state.bytes_out:
            _response_size(label).observe(state.bytes_out)
        address = state.address
        event = "s3." + state.op_name if state.operation else "s3.InvalidPath"
        if state.error is not None and state.error.code == "MethodNotAllowed":
            event = "s3.MethodNotAllowed"
        if state.error is not None and state.error.status == 403:
            event = "s3.AuthFailure" if state.principal is None else event
        if state.event is not None:
            event = state.event
        remote = None
        if request is not None:
            peer = request.getClientAddress()
            remote = getattr(peer, "host", None) if peer is not None else None
        audit(
            event,
            request_id=state.request_id,
            operation=state.op_name,
            method=state.method[:64],
            path=state.raw_path[:1024].decode("latin-1"),  # as sent (no query: no presigned signature)
            bucket=address.bucket if address else None,
            key=address.key if address else None,
            status=status,
            duration=round(duration, 6),
            access_key=state.principal.access_key if state.principal else None,
            remote=remote,
            bytes_in=state.body.received if state.body else 0,
            bytes_out=state.bytes_out,
            error=state.error.code if state.error else None,
        )


def _in_use_of(pool: Pool) -> Callable[[], float]:
    """The s3o_admission_slots_in_use reading of one pool."""
    return lambda: float(pool.in_use)

