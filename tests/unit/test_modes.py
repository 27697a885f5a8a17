"""Run modes choose the children of the service tree; the small parts a reload swaps through
(worker interval, log level, TLS context) do what the reload relies on."""

from __future__ import annotations

import dataclasses
import datetime
import io
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import Logger, LogPublisher, globalLogPublisher

from s3orch import tap
from s3orch.config.model import TLSConfig
from s3orch.frontend.envelope import S3Envelope
from s3orch.http.site import RejectedEarly
from s3orch.http.tls import ReloadableContext, seconds_to_expiry, server_context
from s3orch.modes import InvalidMode, NoS3Service, check_mode, runs_worker
from s3orch.observe import logging as s3log
from s3orch.reload import warn_if_expiring
from s3orch.store import open_store
from s3orch.testing.config import config_from_string
from s3orch.testing.harness import DEFAULT_CONFIG
from s3orch.testing.syncpool import SynchronousConnectionPool
from s3orch.workers.base import PeriodicWorker

# --- modes -----------------------------------------------------------------------------------


def test_check_mode_accepts_the_three_modes_and_names_them_when_refusing() -> None:
    assert [check_mode(m) for m in ("all", "api", "worker")] == ["all", "api", "worker"]
    with pytest.raises(InvalidMode, match=r"^--mode must be one of all, api, worker, not 'API'$"):
        check_mode("API")


def test_api_mode_keeps_only_the_usage_flush_and_the_credential_refresher() -> None:
    assert runs_worker("api", "usage-flush") and runs_worker("api", "backend-credentials")
    assert not runs_worker("api", "cleanup-queue") and not runs_worker("api", "pending-reaper")
    assert runs_worker("worker", "cleanup-queue") and runs_worker("all", "multipart-gc")


def _build(tmp_path: Path, mode: str) -> Any:
    config = config_from_string(DEFAULT_CONFIG.replace("{workdir}", str(tmp_path)))
    reactor = MemoryReactorClock()
    store = open_store(config.database, reactor, pool_factory=SynchronousConnectionPool)
    return tap.build(config, reactor, store=store, mode=mode)


@pytest.mark.parametrize(
    ("mode", "workers", "front"),
    [
        ("all", ["cleanup-queue", "multipart-gc", "lifecycle", "scrubber", "rebalancer", "drain", "reconcile",
                 "usage-flush", "pending-reaper", "journal-refresh", "rate-limit-sweep"], S3Envelope),
        ("api", ["drain", "usage-flush", "journal-refresh", "rate-limit-sweep"], S3Envelope),
        ("worker", ["cleanup-queue", "multipart-gc", "lifecycle", "scrubber", "rebalancer", "drain", "reconcile",
                    "usage-flush", "pending-reaper", "rate-limit-sweep"], NoS3Service),
    ],
)
def test_build_gives_each_mode_its_workers_and_front_door(
    tmp_path: Path, mode: str, workers: list[str], front: type
) -> None:
    service = _build(tmp_path, mode)
    assert service.mode == mode
    assert [w.name for w in service.workers] == workers
    [listener] = service.listeners
    assert listener.name == "s3-listener"
    site = listener.args[1]
    assert isinstance(site.early_handler, front)
    assert service.last_reload == {"status": "never"}
    # An API-only process keeps its placement's draining set fresh but moves nothing.
    drain = service.getServiceNamed("drain")
    assert drain.move is (mode != "api")
    assert (drain.lock_id is None) is (mode == "api")


def test_a_worker_mode_listener_refuses_s3_paths_before_the_body_and_leaves_ops_paths_alone() -> None:
    handler = NoS3Service([b"/health", b"/metrics", b"/admin"])
    assert not handler.wants(b"GET", b"/health/ready", None)
    assert not handler.wants(b"GET", b"/metrics?x=1", None)
    assert handler.wants(b"PUT", b"/photos/key", None)
    assert handler.wants(b"GET", b"/healthy", None)  # a bucket named "healthy"
    with pytest.raises(RejectedEarly) as refused:
        handler.prepare(None, b"PUT", b"/photos/key?x=1", 10)  # type: ignore[arg-type]
    assert refused.value.status == 503
    assert b"<Code>ServiceUnavailable</Code>" in refused.value.body
    assert b"<Resource>/photos/key</Resource>" in refused.value.body
    assert ("Retry-After", "5") in refused.value.headers


# --- a worker's interval ---------------------------------------------------------------------


class _Counting(PeriodicWorker):
    def __init__(self, clock: Clock, interval: float) -> None:
        super().__init__("counting", interval, clock, component="counting")
        self.ticks: list[float] = []

    async def tick(self) -> None:
        self.ticks.append(self.clock.seconds())


def test_set_interval_makes_the_next_tick_come_after_the_new_interval_from_now() -> None:
    clock = Clock()
    worker = _Counting(clock, 100.0)
    worker.startService()
    clock.advance(10)
    worker.set_interval(5.0)
    clock.advance(5)
    assert worker.ticks == [15.0]
    clock.advance(5)
    assert worker.ticks == [15.0, 20.0]
    worker.stopService()


def test_set_interval_before_start_is_used_when_the_loop_starts() -> None:
    clock = Clock()
    worker = _Counting(clock, 100.0)
    worker.set_interval(3.0)
    worker.startService()
    clock.advance(3)
    assert worker.ticks == [3.0]
    worker.stopService()


# --- the log level ---------------------------------------------------------------------------


def test_set_log_level_changes_the_installed_observer_and_refuses_unknown_levels() -> None:
    out = io.StringIO()
    observer = s3log.LogSettings("info", "json", out).observer()
    log = Logger(namespace="s3orch.test", observer=LogPublisher(observer))
    log.info("one")
    s3log.set_log_level("error")
    assert s3log.get_log_level() == "error"
    log.info("two")
    log.warn("three")
    log.error("four")
    s3log.set_log_level("debug")
    log.debug("five")
    assert [json.loads(line)["msg"] for line in out.getvalue().splitlines()] == ["one", "four", "five"]
    with pytest.raises(ValueError, match="debug, info, warn, error"):
        s3log.set_log_level("loud")
    assert s3log.get_log_level() == "debug"


# --- TLS -------------------------------------------------------------------------------------


def _cert(tmp_path: Path, name: str, hours: float) -> TLSConfig:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=hours))
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return TLSConfig(cert_file=str(cert_file), key_file=str(key_file))


def test_the_reloadable_context_serves_the_swapped_certificate(tmp_path: Path) -> None:
    first, second = _cert(tmp_path, "first", 48), _cert(tmp_path, "second", 48)
    holder = ReloadableContext(server_context(first))
    assert holder.getContext() is holder.options.getContext()
    before = holder.getContext()
    holder.swap(server_context(second))
    assert holder.getContext() is not before


def test_a_certificate_expiring_within_24h_is_warned_about(tmp_path: Path) -> None:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)  # type: ignore[arg-type]
    try:
        now = datetime.datetime.now(datetime.UTC).timestamp()
        soon, later = _cert(tmp_path, "soon", 2), _cert(tmp_path, "later", 48)
        assert 7100 < seconds_to_expiry(soon, now) <= 7200
        config = config_from_string(DEFAULT_CONFIG.replace("{workdir}", str(tmp_path)))
        for tls in (later, soon):
            warn_if_expiring(dataclasses.replace(config, server=dataclasses.replace(config.server, tls=tls)), now)
    finally:
        globalLogPublisher.removeObserver(events.append)  # type: ignore[arg-type]
    warned = [e for e in events if e.get("log_format", "").startswith("TLS certificate")]
    assert [e["cert_file"] for e in warned] == [soon.cert_file]

