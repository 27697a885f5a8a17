"""Building the dashboard from a loaded config and the gateway's parts (called by ``s3orch.tap``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool

from s3orch.admin.handlers import AdminHandlers
from s3orch.config.model import Config
from s3orch.ui.app import UIApp
from s3orch.ui.data import UIData
from s3orch.ui.history import SAMPLE_INTERVAL, UsageHistory

__all__ = ["SAMPLE_INTERVAL", "build_ui"]


def build_ui(
    config: Config, handlers: AdminHandlers, objects: Any, clock: IReactorTime, client_ip: Callable[[Any], str]
) -> UIApp:
    return UIApp(
        config=config.ui,
        data=UIData(handlers=handlers, objects=objects, config=config),
        clock=clock,
        client_ip=client_ip,
        history=UsageHistory(handlers.store, clock),
        offload=offload_for(clock),
    )


def offload_for(reactor: object) -> Callable[[Callable[[], Any]], Deferred[Any]]:
    """Blocking file work (reading an upload form) in ``reactor``'s thread pool; on the calling
    thread for a reactor without threads (a test's clock)."""
    if not IReactorThreads.providedBy(reactor):
        return maybeDeferred

    def offload(work: Callable[[], Any]) -> Deferred[Any]:
        return deferToThreadPool(reactor, reactor.getThreadPool(), work)

    return offload
