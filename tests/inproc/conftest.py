"""In-process fixtures: whole gateways on a clock over in-memory backends (s3orch.testing).

The S3 semantics -- operations, errors, conditionals, ranges, listing, multipart, auth
refusals, quota accounting -- are tested here, through the production wiring, without a
process, socket or sleep; tests/integration keeps what needs real processes.  The core
services' crash and race windows (test_multipart_service.py, test_pending_reaper.py) are here
too: a real SQLite store and in-memory backends, held on gates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from zope.interface import implementer

from s3orch.testing import GatewayHarness
from tests.conftest import PHOTOS
from tests.support.botobridge import harness_client
from tests.support.configs import BackendSpec, BucketSpec, GatewayConfig

KiB = 1024
MiB = 1024 * KiB


def make_backends(count: int, quota: int = 0, **kwargs: Any) -> list[BackendSpec]:
    """``count`` backends, each an in-memory S3 server of its own (``backend-1`` ...)."""
    return [
        BackendSpec(f"backend-{i}", f"http://backend-{i}.s3.test", f"store-{i}", quota_bytes=quota, **kwargs)
        for i in range(1, count + 1)
    ]


@pytest.fixture
def start_harness(tmp_path: Path) -> Iterator[Callable[..., GatewayHarness]]:
    """Start in-process gateways from a GatewayConfig; all are stopped at teardown."""
    started: list[GatewayHarness] = []

    def start(config: GatewayConfig, name: str = "gw") -> GatewayHarness:
        harness = GatewayHarness(tmp_path / f"{name}{len(started)}", config.render())
        started.append(harness)
        return harness.start()

    yield start
    for harness in started:
        harness.stop()


def boto(harness: GatewayHarness, bucket: BucketSpec = PHOTOS, **config: Any) -> Any:
    """A boto3 client of ``bucket``'s credentials talking to ``harness``."""
    return harness_client(harness, bucket.access_key, bucket.secret_key, **config)


def backend_keys(harness: GatewayHarness, spec: BackendSpec) -> list[tuple[str, int]]:
    """(key, size) of every object on ``spec``'s in-memory server, in key order."""
    objects = harness.backends[spec.name].objects(spec.bucket)
    return sorted((key, len(stored.data)) for key, stored in objects.items())


@implementer(ILogObserver)
class _AuditEvents:
    """Collects the ``event`` of every audit record."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def __call__(self, event: LogEvent) -> None:
        if event.get("audit"):
            self.events.append(str(event.get("event")))


@pytest.fixture
def audit_events() -> Iterator[list[str]]:
    """The ``event`` of every audit record logged during the test (what the log file would hold)."""
    observer = _AuditEvents()
    globalLogPublisher.addObserver(observer)
    yield observer.events
    globalLogPublisher.removeObserver(observer)


def metric(harness: GatewayHarness, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples matching ``labels``, read from the gateway's /metrics.

    The registry is the process's, shared by every harness of a test run: compare counters
    before and after, not with absolute values."""
    answer = harness.send_raw(f"GET /metrics HTTP/1.1\r\nHost: {harness.host}\r\n\r\n".encode())
    assert answer.status == 200, answer.text
    total = 0.0
    for line in answer.text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total
