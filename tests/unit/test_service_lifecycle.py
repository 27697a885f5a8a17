"""Readiness follows the service's life: not ready until the store is up, not ready once stopping."""

from __future__ import annotations

import json
from typing import Any

from treq.testing import StubTreq
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from s3orch.frontend.ops import OpsApp
from s3orch.service import GatewayService


class _Store:
    def __init__(self) -> None:
        self.started: Deferred[None] = Deferred()
        self.closed = False
        self.limits: dict[str, int] = {}

    def start(self) -> Deferred[None]:
        return self.started

    def sync_quota_limits(self, limits: dict[str, int], now: float) -> Deferred[None]:
        self.limits = limits
        return succeed(None)

    def close(self) -> Deferred[None]:
        self.closed = True
        return succeed(None)


class LifecycleTests(SynchronousTestCase):
    def _service(self) -> tuple[GatewayService, _Store, Service]:
        store = _Store()
        listener = Service()
        service = GatewayService(
            store=store,  # type: ignore[arg-type]
            quota_limits={"b1": 10},
            workers=[],
            listeners=[listener],
        )
        return service, store, listener

    def test_not_ready_until_the_store_has_started(self) -> None:
        service, store, listener = self._service()
        service.startService()
        self.assertFalse(service.ready)
        self.assertFalse(listener.running)  # nothing is served before the database is up
        store.started.callback(None)
        self.assertTrue(service.ready)
        self.assertTrue(listener.running)
        self.assertEqual(store.limits, {"b1": 10})

    def test_not_ready_once_stopping_and_store_closed_last(self) -> None:
        service, store, listener = self._service()
        service.startService()
        store.started.callback(None)
        d = service.stopService()
        self.assertFalse(service.ready)
        self.successResultOf(d)
        self.assertFalse(listener.running)
        self.assertTrue(store.closed)

    def test_shutdown_delay_keeps_serving_and_ready_before_the_drain(self) -> None:
        store = _Store()
        listener = Service()
        clock = Clock()
        service = GatewayService(
            store=store,  # type: ignore[arg-type]
            quota_limits={},
            workers=[],
            listeners=[listener],
            clock=clock,
            shutdown_delay=5.0,
        )
        service.startService()
        store.started.callback(None)
        d = service.stopService()
        clock.advance(4.9)
        self.assertTrue(service.ready)  # load balancers still route here
        self.assertTrue(listener.running)
        self.assertNoResult(d)
        clock.advance(0.2)
        self.assertFalse(service.ready)
        self.assertFalse(listener.running)
        self.successResultOf(d)
        self.assertTrue(store.closed)


class OpsEndpointTests(SynchronousTestCase):
    def _get(self, app: OpsApp, path: str) -> tuple[int, bytes]:
        treq = StubTreq(app.resource())
        response: Any = self.successResultOf(treq.get("http://gw.test" + path))
        return response.code, self.successResultOf(response.content())

    def test_ready_endpoint_reflects_state(self) -> None:
        state = {"ready": False}
        app = OpsApp(is_ready=lambda: state["ready"])
        code, body = self._get(app, "/health/ready")
        self.assertEqual((code, json.loads(body)), (503, {"status": "not ready"}))
        state["ready"] = True
        code, body = self._get(app, "/health/ready")
        self.assertEqual((code, json.loads(body)), (200, {"status": "ready"}))
        code, body = self._get(app, "/health")
        self.assertEqual((code, json.loads(body)), (200, {"status": "ok"}))

    def test_metrics_served_only_where_configured(self) -> None:
        app = OpsApp(is_ready=lambda: True, metrics_enabled=True, metrics_path="/metrics")
        code, body = self._get(app, "/metrics")
        self.assertEqual(code, 200)
        self.assertIn(b"s3o_requests_total", body)
        off = OpsApp(is_ready=lambda: True, metrics_enabled=False)
        self.assertEqual(self._get(off, "/metrics")[0], 404)
