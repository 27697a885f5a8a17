"""twistd entry point: options, and the object graph of a running gateway.

This is the only module that imports the global reactor.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from twisted.application import internet
from twisted.application.service import IService
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python import usage
from twisted.web.iweb import IAgent
from twisted.web.server import Site

from s3orch.admin.app import AdminApp
from s3orch.admin.handlers import AdminHandlers
from s3orch.auth.registry import CredentialRegistry
from s3orch.backend.breaker import guard, transition_events
from s3orch.backend.credentials import (
    CredentialError,
    CredentialRefresher,
)
from s3orch.backend.interface import ObjectBackend
from s3orch.backend.s3 import S3Backend
from s3orch.codec.objects import build_compressor
from s3orch.codec.passes import CompressionPasses
from s3orch.config import Config
from s3orch.core.broadcast import BroadcastingObjectService
from s3orch.core.cache import ObjectCache
from s3orch.core.cleanup import Cleanups
from s3orch.core.degraded import DatabaseBreaker
from s3orch.core.degraded_reads import DegradedReads, LocationCache
from s3orch.core.drain import Drainer
from s3orch.core.fanout import FanOut
from s3orch.core.fleet import BackendFleet
from s3orch.core.integrity import Scrubber
from s3orch.core.intents import IntentResolver
from s3orch.core.journal import LocationJournal, default_journal_path, journal_offload
from s3orch.core.over_replication import OverReplicationCleaner
from s3orch.core.rebalance import Rebalancer
from s3orch.core.reconcile import Reconciler
from s3orch.core.replication import Replicator
from s3orch.core.rewrite import StoredFormRewriter
from s3orch.core.spool import Spooler, thread_offload
from s3orch.core.sync import Importer
from s3orch.core.uploads import MultipartService
from s3orch.crypto.passes import EncryptionPasses
from s3orch.crypto.setup import build_envelope
from s3orch.frontend.assembly import build_frontend
from s3orch.frontend.ops import OpsApp
from s3orch.frontend.root import RootResource
from s3orch.http.admission import Admission
from s3orch.http.ratelimit import RateLimiter, admin_gate
from s3orch.http.site import S3Site
from s3orch.http.tls import ReloadableContext, TLSSetupError, server_context
from s3orch.modes import MODE_ALL, InvalidMode, NoS3Service, check_mode, runs_worker, serves_s3
from s3orch.notify.delivery import TreqPoster
from s3orch.notify.events import RELOAD_FAILED
from s3orch.notify.sink import sink_for
from s3orch.observe.logging import LogSettings
from s3orch.observe.ring import LogRing
from s3orch.observe.tracing import TracingService
from s3orch.redis.client import RedisUnavailable
from s3orch.redis.counters import RedisStartupError
from s3orch.redis.counters import from_config as redis_counters
from s3orch.reload import Reloader, ReloadTargets, reload_on_sighup, warn_if_expiring
from s3orch.service import GatewayService
from s3orch.startup import backend_credentials, load_checked_config, parse_listen_addr, supervise
from s3orch.store import open_store, open_worker_locks
from s3orch.store.interface import MetadataStore, StoreError, StoreUnavailable
from s3orch.supervisor import AdoptedListener, join_group
from s3orch.ui.build import SAMPLE_INTERVAL, build_ui
from s3orch.usage.metered import meter
from s3orch.usage.shared import SharedUsageCounters
from s3orch.usage.tracker import UsageTracker
from s3orch.workers.base import SLOT_WORKERS, PeriodicWorker
from s3orch.workers.breaker_watchdog import BreakerWatchdog
from s3orch.workers.cleanup_queue import CleanupQueueWorker
from s3orch.workers.drainer import DrainWorker
from s3orch.workers.journal_refresh import JournalRefresher
from s3orch.workers.lifecycle import LifecycleWorker
from s3orch.workers.multipart_gc import MultipartGCWorker
from s3orch.workers.notifier import Notifier
from s3orch.workers.over_replication import OverReplicationWorker
from s3orch.workers.pending_reaper import PendingReaper
from s3orch.workers.quota_metrics import QuotaMetricsWorker
from s3orch.workers.rate_limit_sweep import RateLimitSweeper
from s3orch.workers.rebalancer import RebalanceWorker
from s3orch.workers.reconciler import ReconcileWorker
from s3orch.workers.redis_probe import RedisProbe
from s3orch.workers.replicator import ReplicatorWorker
from s3orch.workers.scrubber import ScrubberWorker

_log = Logger(namespace="s3orch.tap")

#: The S3 listener's name in the service tree (``server.listen_addr``).
S3_LISTENER = "s3-listener"
#: The name of the listener ``telemetry.metrics.listen`` adds.
METRICS_LISTENER = "metrics-listener"


class Options(usage.Options):
    optParameters = [
        ["config", "c", "config.yaml", "Path to the YAML configuration file."],
        ["mode", "m", MODE_ALL, "all (default), api (S3, no workers but usage flush) or worker (workers, no S3)."],
    ]


def instance_id() -> str:
    """This process among the instances sharing a database (cleanup claims record it)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _exit_now(code: int) -> None:
    """End the process with ``code`` once the reactor has shut down.

    twistd always exits 0 after ``reactor.stop()``; a gateway that could not start
    must exit non-zero so systemd (or an operator's script) sees the failure.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def build(
    config: Config,
    reactor: Any,
    *,
    store: MetadataStore | None = None,
    backend_agents: Mapping[str, IAgent] | None = None,
    mode: str = MODE_ALL,
    listen_fds: Mapping[str, int] | None = None,
) -> GatewayService:
    """Wire a gateway from a loaded config (used by twistd and by tests); the root of its tree.

    ``reactor`` is a whole reactor (TCP, SSL, time, threads, name resolution): no
    one Twisted interface says all of that, hence ``Any``.  Each part gets the
    config section it reads.

    ``store`` (built, not started) replaces the one opened from ``config.database``, and
    ``backend_agents`` (backend name -> agent) the backends' pooled network agents: an
    in-process test harness runs this same wiring in memory with them.

    ``mode`` (``s3orch.modes``) leaves out the S3 API (worker) or most workers (api).

    ``listen_fds`` (``s3``, ``metrics`` -> descriptor): the sockets a ``server.processes``
    supervisor bound and handed down, adopted instead of binding (``s3orch.supervisor``).
    """
    inherited = dict(listen_fds or {})
    server = config.server
    # The dashboard's log page reads a 5000-line ring (BEHAVIOURS 1.29); the admin API's default is smaller.
    settings = LogSettings(server.log_level, server.log_format, ring=LogRing(5000) if config.ui.enabled else None)
    if store is None:
        store = open_store(config.database, reactor)
    raw_store = store  # started and closed by the service, past the breaker
    # The database breaker: an outage fails calls at once; reads fall back to the location
    # cache and this instance's journal of locations (degraded mode, BEHAVIOURS §1.26).
    breaking_db = config.circuit_breaker
    database = DatabaseBreaker(breaking_db, reactor)
    journal_offload_, stop_journal_thread = journal_offload(reactor)
    journal = LocationJournal(
        breaking_db.journal_path
        or default_journal_path(
            config.database.path, config.database.driver, config.server.spool_dir, tempfile.gettempdir(),
            f"{config.database.dsn}|{config.database.host}:{config.database.port}/{config.database.database}",
        ),
        reactor,
        journal_offload_,
    )
    reads = DegradedReads(database.guard(store), journal, LocationCache(breaking_db.cache_ttl, reactor), reactor)
    store = reads.as_store()
    agents = backend_agents or {}
    # One lock per background worker, shared by every instance on the database
    # (a process mutex on SQLite); closed after the workers have stopped.
    worker_locks = open_worker_locks(config.database, reactor)
    providers = backend_credentials(config.backends, os.environ, reactor, server.backend_timeout)
    clients: dict[str, ObjectBackend] = {
        b.name: S3Backend(
            b, reactor, server.backend_timeout, credentials=providers.get(b.name), agent=agents.get(b.name),
            http_client=server.backend_http_client,
        )
        for b in config.backends
    }
    # Every backend call is booked against the monthly usage limits (inside the breakers: a call
    # the breaker refused never reached the provider). The limits are the fleet's configs (reloadable).
    # With redis.address, the unflushed counters are every instance's, in Redis (s3orch.usage.shared).
    shared_counters = redis_counters(config.redis, reactor) if config.redis.enabled else None
    usage_counters = (
        SharedUsageCounters(
            shared_counters, reactor, lambda: [b.name for b in fleet.configs], lambda: usage_tracker.period()
        )
        if shared_counters is not None
        else None
    )
    usage_tracker = UsageTracker(lambda: fleet.configs, reactor, usage_counters)
    if usage_counters is not None:
        usage_counters.bind(usage_tracker.baseline, lambda: usage_tracker.refresh(store))
    clients = meter(clients, usage_tracker.record)
    # Per-backend circuit breakers wrap the clients: an open backend fails at once.
    breaking = config.backend_circuit_breaker
    breakers = None
    if breaking.enabled:
        clients, breakers = guard(
            clients,
            failure_threshold=breaking.failure_threshold,
            open_timeout=breaking.open_timeout,
            clock=reactor,
        )
    fleet = BackendFleet(config.backends, clients, breakers, usage_tracker)
    # Webhooks: events are written to the outbox with their change; NULL_SINK without endpoints.
    events = sink_for(config.notifications.endpoints, store, reactor)
    if breakers is not None:
        breakers.set_transition_hook(transition_events(events.emit))
    cleanups = Cleanups(
        store=store, fleet=fleet, clock=reactor, concurrency=server.delete_concurrency, events=events
    )
    # Degraded reads race an object's copies when circuit_breaker.parallel_broadcast is on.
    objects = BroadcastingObjectService(
        racing=lambda: breaking_db.parallel_broadcast and database.degraded(),
        parallelism=breaking_db.degraded_broadcast_parallelism,
        store=store,
        fleet=fleet,
        cleanups=cleanups,
        spooler=Spooler(spool_dir=server.spool_dir or None, offload=thread_offload(reactor)),
        routing_strategy=config.routing_strategy,
        clock=reactor,
        events=events,
        read_path=config.read_path,
    )
    if config.cache.enabled:  # not reloadable: the cache exists or not for the process's life
        objects.cache = ObjectCache(config.cache, reactor)
    # Envelope encryption (s3orch.crypto): seals PUTs, opens encrypted records; Vault's token renewed.
    objects.envelope, renewer = build_envelope(config.encryption, reactor, server.spool_dir or None)
    objects.compressor = build_compressor(config.compression, reactor, server.spool_dir or None)
    if renewer is not None:
        renewer.start()
        reactor.addSystemEventTrigger("before", "shutdown", renewer.stop)
    multipart = MultipartService(
        store=store,
        fleet=fleet,
        objects=objects,
        cleanups=cleanups,
        clock=reactor,
        bucket_limits={b.name: b.max_multipart_uploads for b in config.buckets},
        stale_timeout=config.cleanup_queue.multipart_stale_timeout,
    )
    registry = CredentialRegistry(config.buckets)
    metrics = config.telemetry.metrics
    # /metrics is on the S3 port (public, like /health) unless it has an address of its own;
    # then the S3 port treats the path as any other (a request for the bucket "metrics").
    metrics_here = metrics.enabled and not metrics.listen
    reserved = [b"/health", b"/admin", b"/ui", config.ui.path.rstrip("/").encode()] + ([metrics.path.encode()] if metrics_here else [])
    # One set of admission pools for S3 requests and the backend-calling workers; one limiter
    # for the S3 API and /admin/ (built switched off too: a reload may switch it on).
    admission = Admission.from_config(server, clock=reactor)
    limiter = RateLimiter(config.rate_limit, reactor)
    s3 = build_frontend(
        server=config.server,
        registry=registry,
        objects=objects,
        clock=reactor,
        multipart=multipart,
        reserved_prefixes=reserved,
        write_gate=database.write_refusal,
        admission=admission,
        limiter=limiter,
    )
    # Worker mode: no S3 API on the listener, only the operational endpoints.
    front = s3 if serves_s3(mode) else NoS3Service(reserved)

    def is_ready() -> bool:
        return service.ready  # the root built below

    def root() -> GatewayService:
        return service

    # The admin API is served only with a token (ui.admin_token, else ui.admin_key).
    admin = None
    handlers = AdminHandlers(
        store=store, service=root, backends=fleet.names, clock=reactor, ring=settings.ring,
        breaker_states=fleet.breaker_states, usage=usage_tracker, cache=objects.cache,
    )
    if config.ui.effective_admin_token:
        admin = AdminApp(handlers, config.ui.effective_admin_token, reactor)
    # The dashboard (ui.enabled) drives the same handlers as the admin API.
    dashboard = build_ui(config, handlers, objects, reactor, limiter.client_ip_of) if config.ui.enabled else None
    ops = OpsApp(
        is_ready=is_ready, is_degraded=database.degraded, metrics_enabled=metrics_here,
        metrics_path=metrics.path, admin=admin, ui=dashboard,
    )
    site = S3Site(
        RootResource(s3, ops.resource()),
        early_handler=front,
        timeout=server.idle_timeout,
        read_header_timeout=server.read_header_timeout,
        read_timeout=server.read_timeout,
        write_timeout=server.write_timeout,
        reactor=reactor,
        other_gate=admin_gate(limiter),
    )
    if dashboard is not None:
        site.upload_paths = (dashboard.path.encode() + b"/api/upload",)
    interface, port = parse_listen_addr(server.listen_addr)
    listener: IService
    context: ReloadableContext | None = None
    if server.tls is not None:
        context = ReloadableContext(server_context(server.tls))
    if "s3" in inherited:  # one of a server.processes group: the supervisor's socket
        factory = site if context is None else TLSMemoryBIOFactory(context, False, site)
        listener = AdoptedListener(inherited["s3"], factory, reactor)
    elif context is not None:
        listener = internet.SSLServer(port, site, context, interface=interface, reactor=reactor)
    else:
        listener = internet.TCPServer(port, site, interface=interface, reactor=reactor)
    listener.setName(S3_LISTENER)  # type: ignore[no-untyped-call]  # IService's methods are unannotated

    async def close_backends() -> None:
        if objects.fanout is not None:
            await objects.fanout.drain()  # fan-out copies still running (bounded)
        await cleanups.quiesce()
        await fleet.close()

    async def final_usage_flush() -> None:
        """What the workers and cleanups booked since the last flush reaches the database (with
        Redis: pushed there first, then drained under lock 1007 unless another instance holds
        it, which then flushes them)."""
        try:
            if shared_counters is not None:
                await shared_counters.push()
            await usage_tracker.flush(store, refresh=False, locks=flush_locks)
        except (StoreError, StoreUnavailable, RedisUnavailable) as exc:  # said, not a traceback
            _log.warn("usage counters not flushed at shutdown: {error}", component="usage_flush", error=str(exc))

    async def close_redis() -> None:
        if shared_counters is not None:
            await shared_counters.close()

    async def close_journal() -> None:
        try:
            await journal.close()
        finally:
            stop_journal_thread()

    # Draining shared counters is a destructive read: one instance at a time (lock 1007).
    flush_locks = worker_locks if shared_counters is not None else None

    async def start_redis() -> None:
        assert shared_counters is not None
        try:
            await shared_counters.start()
        except RedisStartupError as exc:  # the operator's message, as for an unreachable database
            raise StoreUnavailable(str(exc)) from exc

    def fail_start() -> None:
        if not reactor.running:  # failed before twistd started the reactor
            reactor.callWhenRunning(fail_start)
            return
        reactor.addSystemEventTrigger("after", "shutdown", _exit_now, 1)
        reactor.stop()

    service = GatewayService(
        store=raw_store,
        quota_limits=fleet.quota_limits(),
        closers=[close_backends, final_usage_flush, close_redis, close_journal, worker_locks.close],
        log_observer=settings.observer(),
        on_start_failure=fail_start,
        clock=reactor,
        shutdown_delay=server.shutdown_delay,
    )
    service.mode = mode
    rewriter = StoredFormRewriter(
        objects, cleanups, reactor, offload=thread_offload(reactor), spool_dir=server.spool_dir or None
    )
    service.compression = CompressionPasses(rewriter)
    if objects.envelope is not None:
        service.encryption = EncryptionPasses(rewriter, objects.envelope)
    owner = instance_id()  # this instance's name on cleanup and intent claims

    def add_worker(worker: IService) -> None:
        """A background worker, if the run mode has it (infrastructure every mode needs, such
        as a tracer, goes to ``service.add_worker`` directly)."""
        if runs_worker(mode, worker.name):
            service.add_worker(worker)

    if config.telemetry.tracing.enabled:  # first worker: up before, flushed after, the others
        service.add_worker(TracingService(config.telemetry.tracing, reactor))
    if providers:
        add_worker(CredentialRefresher(providers))
    if breakers is not None:
        # Every process with backend clients has breakers to watch: not filtered by run mode.
        service.add_worker(BreakerWatchdog(breakers, reactor))
    add_worker(CleanupQueueWorker(cleanups, reactor, config.cleanup_queue, owner=owner, locks=worker_locks))
    add_worker(MultipartGCWorker(multipart, reactor, config.cleanup_queue, locks=worker_locks))
    # Always built (idle without rules: a reload may add some).
    lifecycle = LifecycleWorker(
        objects, store, reactor, config.lifecycle, events=events, instance=owner, locks=worker_locks
    )
    add_worker(lifecycle)
    replicating: ReplicatorWorker | None = None
    trimming: OverReplicationWorker | None = None
    if config.replication.factor > 1:
        replicator = Replicator(
            store=store, fleet=fleet, cleanups=cleanups, spooler=objects.spooler,
            routing_strategy=config.routing_strategy, clock=reactor, config=config.replication,
            events=events, reader=objects.reader,
        )
        replicating = ReplicatorWorker(replicator, reactor, config.replication, locks=worker_locks)
        add_worker(replicating)
        cleaner = OverReplicationCleaner(
            store=store, fleet=fleet, cleanups=cleanups, clock=reactor,
            settings=lambda: replicator.config,
        )
        trimming = OverReplicationWorker(cleaner, reactor, config.replication, locks=worker_locks)
        add_worker(trimming)
        if config.write_path.parallel_copies.enabled:
            # Writes store every copy at once and answer after replication.ack of them.
            objects.fanout = multipart.fanout = FanOut(
                store=store, fleet=fleet, cleanups=cleanups, clock=reactor,
                routing_strategy=config.routing_strategy, settings=lambda: replicator.config,
                replicator=replicator,
            )
    # Always built (integrity may be switched on by a reload); idle while it is off.
    scrubber = Scrubber(
        store=store, fleet=fleet, cleanups=cleanups, clock=reactor, config=config.integrity, events=events
    )
    objects.scrubber = scrubber
    scrubber.envelope = objects.envelope
    scrubbing = ScrubberWorker(scrubber, reactor, config.integrity, locks=worker_locks)
    add_worker(scrubbing)
    # Drains: the copier is the replicator's machinery, placing on the least utilised backend.
    drainer = Drainer(
        store=store, fleet=fleet, cleanups=cleanups, clock=reactor, factor=config.replication.factor,
        events=events, aborter=multipart,
        copier=Replicator(
            store=store, fleet=fleet, cleanups=cleanups, spooler=objects.spooler, routing_strategy="spread",
            clock=reactor, config=config.replication, events=events, reader=objects.reader,
        ),
    )
    # The rebalancer: always built (the admin API may run a pass, a reload may switch it on);
    # it ticks only with rebalance.enabled. Its copies take the replicator's code path.
    rebalancing = RebalanceWorker(
        Rebalancer(
            store=store, fleet=fleet, cleanups=cleanups, clock=reactor, config=config.rebalance, events=events,
            copier=Replicator(
                store=store, fleet=fleet, cleanups=cleanups, spooler=objects.spooler, routing_strategy="pack",
                clock=reactor, config=config.replication, events=events, reader=objects.reader,
            ),
        ),
        reactor, config.rebalance, locks=worker_locks,
    )
    add_worker(rebalancing)
    # Every process keeps its placement's draining set fresh (from before it serves); only
    # workers move data.
    service.preloads.append(drainer.refresh)
    service.add_worker(DrainWorker(drainer, reactor, locks=worker_locks, move=runs_worker(mode, "drain")))
    # Always built: off (no ticks) unless reconcile.enabled; the admin reconcile and sync use it.
    bucket_names = [bucket.name for bucket in config.buckets]
    add_worker(ReconcileWorker(
        Reconciler(
            store=store, fleet=fleet, cleanups=cleanups, clock=reactor, buckets=bucket_names,
            grace=config.reconcile.grace_period, events=events,
        ),
        Importer(store=store, fleet=fleet, clock=reactor, buckets=bucket_names),
        reactor, config.reconcile, locks=worker_locks,
    ))
    # Every instance refreshes its own gauges (read-only): no worker lock.
    usage_flush = QuotaMetricsWorker(store, reactor, config.usage_flush, events, usage_tracker, flush_locks)
    if shared_counters is not None:
        service.preloads.append(start_redis)  # refuses to start when Redis does not answer
        service.add_worker(RedisProbe(shared_counters, reactor))  # every process books usage
    service.preloads.append(lambda: usage_tracker.refresh(store))  # this period's baseline, before serving
    add_worker(usage_flush)
    pending = config.write_path.pending_pattern
    if pending.enabled:
        # Intents are always written; without the reaper, those a failed commit leaves
        # keep their reservation until an operator resolves them.
        resolver = IntentResolver(
            store=store, fleet=fleet, cleanups=cleanups, clock=reactor, events=events
        )
        add_worker(
            PendingReaper(
                resolver,
                reactor,
                pending,
                owner=owner,
                claim_grace=config.cleanup_queue.claim_grace_period,
                locks=worker_locks,
            )
        )
    if config.notifications.endpoints:
        poster = TreqPoster(reactor)
        service.closers.append(poster.close)
        add_worker(
            Notifier(
                store, events, config.notifications.endpoints, poster, reactor,
                locks=worker_locks, instance=owner,
            )
        )
    if serves_s3(mode):  # the journal serves degraded reads: only where the S3 API is
        add_worker(JournalRefresher(store, journal, reactor, breaking_db.journal_refresh, database.degraded))
    service.add_worker(RateLimitSweeper(limiter, reactor))
    if dashboard is not None:  # the overview's usage chart samples the quota table
        sampler = internet.TimerService(SAMPLE_INTERVAL, dashboard.history.sample_soon)
        sampler.setName("ui-usage-history")
        service.add_worker(sampler)
    for child in service:  # passes that call the backends hold admission slots
        if isinstance(child, PeriodicWorker) and child.name in SLOT_WORKERS:
            child.admission = admission
    service.add_listener(listener)
    if metrics.enabled and metrics.listen:
        service.add_listener(metrics_listener(metrics.listen, metrics.path, is_ready, reactor, inherited.get("metrics")))

    def record(outcome: dict[str, Any]) -> None:
        service.last_reload = outcome
        if outcome["status"] == "failed":  # the file on disk is not what runs: tell the operator
            Deferred.fromCoroutine(
                events.emit(RELOAD_FAILED, owner, {"instance": owner, "error": outcome["error"]})
            )

    targets = ReloadTargets(
        store=store, front_door=s3, multipart=multipart, fleet=fleet, usage_flush=usage_flush, tls=context,
        lifecycle=lifecycle, replicator=replicating, over_replication=trimming, scrubber=scrubbing,
        rebalancer=rebalancing,
        rate_limiter=limiter,
    )
    service.reloader = Reloader(current=config, targets=targets, clock=reactor, record=record)
    return service


def metrics_listener(
    listen: str, path: str, is_ready: Callable[[], bool], reactor: Any, fd: int | None = None
) -> IService:
    """``telemetry.metrics.listen``: /metrics (and /health, /health/ready) on an address of its own
    (``fd``: the socket a supervisor bound for it)."""
    app = OpsApp(is_ready=is_ready, metrics_enabled=True, metrics_path=path)
    site = Site(app.resource())
    site.noisy = False
    site.displayTracebacks = False
    site.log = lambda request: None  # type: ignore[method-assign]  # no access log for scrapes
    interface, port = parse_listen_addr(listen)
    service: IService = (
        internet.TCPServer(port, site, interface=interface, reactor=reactor)
        if fd is None
        else AdoptedListener(fd, site, reactor)
    )
    service.setName(METRICS_LISTENER)
    return service


def makeService(options: Options) -> IService:
    # Database work runs in thread pools; with the default 5 ms GIL switch interval a
    # finished query can wait that long for the reactor thread to let go (a convoy that
    # adds milliseconds to every request under load).
    sys.setswitchinterval(0.0005)
    from twisted.internet import reactor

    try:
        mode = check_mode(options["mode"])
    except InvalidMode as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    config = load_checked_config(options["config"])
    inherited = join_group(reactor, os.environ)  # the sockets, when one of a group
    count = config.server.process_count
    if count > 1 and not inherited:
        return supervise(config, reactor, count, os.path.abspath(options["config"]), mode)
    try:
        service = build(config, reactor, mode=mode, listen_fds=inherited)
    except (TLSSetupError, CredentialError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    from twisted.internet.threads import deferToThread

    service.reloader.offload = deferToThread
    reload_on_sighup(reactor, service.reloader, os.path.abspath(options["config"]))
    reactor.addSystemEventTrigger("before", "shutdown", service.reloader.close)
    reactor.callWhenRunning(warn_if_expiring, config, reactor.seconds())
    return service

