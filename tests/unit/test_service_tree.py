"""The gateway is one service tree: listeners and workers are named children of the
root, found by name, started after the database (workers, then listeners) and
stopped in reverse; readiness follows the tree.  Driven by MemoryReactorClock and a
fake store; no sockets, threads or sleeps.
"""

from __future__ import annotations

import os

from twisted.application import internet
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Site

from s3orch.backend.credentials import CredentialRefresher
from s3orch.config import load_config_from_string
from s3orch.service import GatewayService
from s3orch.usage.metered import MeteredBackend
from s3orch.workers.cleanup_queue import CleanupQueueWorker
from s3orch.workers.multipart_gc import MultipartGCWorker
from s3orch.workers.pending_reaper import PendingReaper
from s3orch.workers.quota_metrics import QuotaMetricsWorker

CONFIG = """
server: {listen_addr: "127.0.0.1:9000"}
database: {driver: sqlite, path: "/nonexistent/s3orch.db"}
telemetry: {metrics: {enabled: true, listen: "127.0.0.1:9091"}}
buckets:
  - name: photos
    credentials: [{access_key_id: AK, secret_access_key: SK}]
backends:
  - {name: b1, endpoint: "http://127.0.0.1:1", bucket: x, access_key_id: k, secret_access_key: s}
"""


class _Store:
    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.started: Deferred[None] = Deferred()

    def start(self) -> Deferred[None]:
        self.log.append("store start")
        return self.started

    def sync_quota_limits(self, limits: dict[str, int], now: float) -> Deferred[None]:
        return succeed(None)

    def close(self) -> Deferred[None]:
        self.log.append("store close")
        return succeed(None)


class _Recorded(Service):
    def __init__(self, name: str, log: list[str]) -> None:
        self.setName(name)
        self.log = log

    def startService(self) -> None:
        super().startService()
        self.log.append(f"start {self.name}")

    def stopService(self) -> None:  # type: ignore[override]
        super().stopService()
        self.log.append(f"stop {self.name}")


def _tree(log: list[str]) -> tuple[GatewayService, _Store]:
    store = _Store(log)

    async def close() -> None:
        log.append("closers")

    service = GatewayService(store=store, quota_limits={}, closers=[close])  # type: ignore[arg-type]
    service.add_listener(_Recorded("s3-listener", log))
    service.add_worker(_Recorded("cleanup-queue", log))
    service.add_worker(_Recorded("multipart-gc", log))
    service.add_listener(_Recorded("metrics-listener", log))
    return service, store


class BuiltTreeTests(SynchronousTestCase):
    def test_tap_build_returns_the_tree_with_every_listener_and_worker_named(self) -> None:
        from s3orch.tap import build

        service = build(load_config_from_string(CONFIG), MemoryReactorClock())
        self.assertIsInstance(service.getServiceNamed("cleanup-queue"), CleanupQueueWorker)
        self.assertIsInstance(service.getServiceNamed("multipart-gc"), MultipartGCWorker)
        self.assertIsInstance(service.getServiceNamed("usage-flush"), QuotaMetricsWorker)
        self.assertIsInstance(service.getServiceNamed("pending-reaper"), PendingReaper)
        listener = service.getServiceNamed("s3-listener")
        self.assertIsInstance(listener, internet.TCPServer)
        self.assertEqual(listener.args[0], 9000)  # type: ignore[attr-defined]
        self.assertIsInstance(service.getServiceNamed("metrics-listener"), internet.TCPServer)
        self.assertEqual(
            [child.name for child in service.workers],
            ["cleanup-queue", "multipart-gc", "lifecycle", "scrubber", "rebalancer", "drain", "reconcile", "usage-flush", "pending-reaper",
             "journal-refresh", "rate-limit-sweep"],
        )
        self.assertEqual([child.name for child in service.listeners], ["s3-listener", "metrics-listener"])
        self.assertEqual(set(service.namedServices), {c.name for c in service.workers + service.listeners})

    def test_with_redis_the_probe_runs_in_every_mode_and_the_flush_takes_lock_1007(self) -> None:
        from s3orch.tap import build
        from s3orch.usage.shared import SharedUsageCounters
        from s3orch.workers.redis_probe import RedisProbe

        config = load_config_from_string(CONFIG + 'redis: {address: "127.0.0.1:1", key_prefix: "gw"}\n')
        for mode in ("all", "api", "worker"):
            service = build(config, MemoryReactorClock(), mode=mode)
            names = [child.name for child in service.workers]
            self.assertIn("redis-probe", names)
            self.assertLess(names.index("redis-probe"), names.index("usage-flush"))
            probe = service.getServiceNamed("redis-probe")
            assert isinstance(probe, RedisProbe)
            self.assertEqual(probe.interval, 5.0)
            flush = service.getServiceNamed("usage-flush")
            assert isinstance(flush, QuotaMetricsWorker) and flush.usage is not None
            self.assertIsNotNone(flush.flush_locks)
            self.assertIsInstance(flush.usage.counters, SharedUsageCounters)
        without = build(load_config_from_string(CONFIG), MemoryReactorClock()).getServiceNamed("usage-flush")
        assert isinstance(without, QuotaMetricsWorker)
        self.assertIsNone(without.flush_locks)

    def test_the_workers_get_their_config_sections(self) -> None:
        from s3orch.tap import build

        config = load_config_from_string(
            CONFIG + "cleanup_queue: {multipart_stale_timeout: 10m, claim_grace_period: 45s}\n"
            "usage_flush: {interval: 7s}\nwrite_path: {pending_pattern: {reaper_tick: 2m}}\n"
        )
        service = build(config, MemoryReactorClock())
        self.assertEqual(service.getServiceNamed("multipart-gc").interval, 150.0)  # a quarter of 10m
        self.assertEqual(service.getServiceNamed("cleanup-queue").claim_grace, 45.0)
        self.assertEqual(service.getServiceNamed("usage-flush").interval, 7.0)
        self.assertEqual(service.getServiceNamed("pending-reaper").interval, 120.0)

    def test_a_given_store_and_backend_agents_replace_the_configured_ones(self) -> None:
        from treq.testing import RequestTraversalAgent
        from twisted.web.resource import Resource

        from s3orch.tap import build

        store = _Store([])
        agent = RequestTraversalAgent(Resource())
        service = build(load_config_from_string(CONFIG), MemoryReactorClock(), store=store,  # type: ignore[arg-type]
                        backend_agents={"b1": agent})
        self.assertIs(service.store, store)
        cleanup = service.getServiceNamed("cleanup-queue")
        assert isinstance(cleanup, CleanupQueueWorker)
        metered = cleanup.cleanups.fleet.client("b1")
        assert isinstance(metered, MeteredBackend)  # every call is booked against the usage limits
        client = metered.inner
        self.assertIs(client._agent, agent)  # type: ignore[attr-defined]

    def test_backends_signing_with_the_default_chain_get_a_named_credential_refresher(self) -> None:
        from s3orch.tap import build

        config = load_config_from_string(
            CONFIG.replace("access_key_id: k, secret_access_key: s", "credential_source: default_chain")
        )
        self.patch(os, "environ", {"AWS_ACCESS_KEY_ID": "AKENV", "AWS_SECRET_ACCESS_KEY": "SKENV"})
        service = build(config, MemoryReactorClock())
        self.assertIsInstance(service.getServiceNamed("backend-credentials"), CredentialRefresher)
        self.assertEqual(service.workers[0].name, "backend-credentials")  # keys before anything uses them

    def test_nothing_listens_before_the_database_is_up(self) -> None:
        reactor = MemoryReactorClock()
        log: list[str] = []
        store = _Store(log)
        service = GatewayService(store=store, quota_limits={})  # type: ignore[arg-type]
        listener = internet.TCPServer(9000, Site(Service()), reactor=reactor)  # type: ignore[arg-type]
        listener.setName("s3-listener")
        service.add_listener(listener)
        service.privilegedStartService()  # what twistd calls first: must not bind the port
        service.startService()
        self.assertEqual(reactor.tcpServers, [])
        self.assertFalse(service.ready)
        store.started.callback(None)
        self.assertEqual([port for port, *_ in reactor.tcpServers], [9000])
        self.assertTrue(service.ready)


class OrderTests(SynchronousTestCase):
    def test_database_then_workers_then_listeners_and_the_reverse_on_stop(self) -> None:
        log: list[str] = []
        service, store = _tree(log)
        service.startService()
        self.assertEqual(log, ["store start"])  # children wait for the database
        store.started.callback(None)
        self.assertEqual(
            log[1:],
            ["start cleanup-queue", "start multipart-gc", "start s3-listener", "start metrics-listener"],
        )
        del log[:]
        self.successResultOf(service.stopService())
        self.assertEqual(
            log,
            [
                "stop metrics-listener",
                "stop s3-listener",
                "stop multipart-gc",
                "stop cleanup-queue",
                "closers",
                "store close",
            ],
        )

    def test_readiness_is_a_property_of_the_tree(self) -> None:
        log: list[str] = []
        service, store = _tree(log)
        service.startService()
        store.started.callback(None)
        self.assertTrue(service.ready)
        worker = service.getServiceNamed("multipart-gc")
        worker.stopService()
        self.assertFalse(service.ready)  # a child that stopped makes the gateway not ready
        worker.startService()
        self.assertTrue(service.ready)

    def test_a_worker_added_while_running_starts_and_is_found_by_name(self) -> None:
        log: list[str] = []
        service, store = _tree(log)
        service.startService()
        store.started.callback(None)
        late = _Recorded("replicator", log)
        service.add_worker(late)
        self.assertTrue(late.running)
        self.assertIs(service.getServiceNamed("replicator"), late)
        self.assertEqual(service.workers[-1], late)

    def test_children_need_a_name_and_names_are_unique(self) -> None:
        log: list[str] = []
        service, _ = _tree(log)
        with self.assertRaises(ValueError):
            service.add_worker(Service())
        with self.assertRaises(RuntimeError):
            service.add_worker(_Recorded("cleanup-queue", log))

    def test_a_failed_start_is_not_ready_and_starts_no_child(self) -> None:
        from s3orch.store.interface import StoreUnavailable

        log: list[str] = []
        service, store = _tree(log)
        failed: list[bool] = []
        service.on_start_failure = lambda: failed.append(True)
        service.startService()
        store.started.errback(StoreUnavailable("connection refused"))
        self.assertEqual((failed, service.ready, log), ([True], False, ["store start"]))

