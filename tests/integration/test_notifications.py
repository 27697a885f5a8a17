"""Webhooks end to end: each event type this build emits, seen by a real HTTP receiver.

Real ``twistd`` gateways over moto (object events, filters, service life, capacity
warnings, crash safety), and the real store, cleanup and notifier over the reactor for
``cleanup.exhausted`` (a backend delete must fail ten times, a day of backoff apart:
the clock is a test clock there, the HTTP is real).  Every delivery's signature is
checked with the endpoint's secret.
"""

from __future__ import annotations

import re
import signal
import sqlite3
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock

from s3orch.backend.memory import MemoryBackend
from s3orch.config.model import BackendConfig, DatabaseConfig, NotificationEndpoint
from s3orch.core.cleanup import Cleanups
from s3orch.core.fleet import BackendFleet
from s3orch.core.intents import IntentResolver
from s3orch.core.objects import ObjectService
from s3orch.core.spool import Spooler
from s3orch.notify.delivery import TreqPoster
from s3orch.notify.sink import OutboxSink
from s3orch.payload import Payload
from s3orch.store import open_store
from s3orch.store.interface import StoreUnavailable
from s3orch.workers.notifier import Notifier
from tests.conftest import PHOTOS, s3_client
from tests.inproc.test_pending_reaper import NEW, FlakyCommits
from tests.support.configs import GatewayConfig
from tests.support.gateway import GatewayProcess
from tests.support.polling import poll
from tests.support.postgres import database_section
from tests.support.webhooks import WebhookReceiver

SECRET = "hook-secret"
OTHER_SECRET = "other-secret"


@pytest.fixture
def receiver() -> Any:
    with WebhookReceiver() as hooks:
        yield hooks


def notifications(hooks: WebhookReceiver, **first: object) -> dict[str, object]:
    """Two endpoints: /all (every event) and /removed (removals under up/ only)."""
    return {
        "notifications": {
            "endpoints": [
                {"url": hooks.url("/all"), "events": ["*"], "secret": SECRET, **first},
                {
                    "url": hooks.url("/removed"),
                    "events": ["s3:ObjectRemoved:*"],
                    "prefix": "up/",
                    "secret": OTHER_SECRET,
                },
            ]
        }
    }


def client(gw: GatewayProcess) -> Any:
    return s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)


def test_object_events_are_delivered_signed_and_filtered(  # type: ignore[no-untyped-def]
    start_gateway, moto_backends, receiver: WebhookReceiver
) -> None:
    gw = start_gateway(GatewayConfig(backends=moto_backends(1), extra=notifications(receiver)))
    s3 = client(gw)
    put = s3.put_object(Bucket="photos", Key="up/a.txt", Body=b"hello")
    created = receiver.wait_for("s3:ObjectCreated:Put", "/all", key="up/a.txt")
    assert created.signed_with(SECRET) and not created.signed_with(OTHER_SECRET)
    assert created.headers["content-type"].startswith("application/cloudevents+json")
    event = created.event
    assert {k: event[k] for k in ("specversion", "source", "subject", "datacontenttype")} == {
        "specversion": "1.0", "source": "/s3-orchestrator", "subject": "up/a.txt",
        "datacontenttype": "application/json",
    }
    assert event["id"].startswith("evt_") and event["time"].endswith("Z")
    assert event["data"] == {"bucket": "photos", "key": "up/a.txt", "size": 5, "etag": put["ETag"].strip('"')}

    s3.copy_object(Bucket="photos", Key="up/b.txt", CopySource={"Bucket": "photos", "Key": "up/a.txt"})
    assert receiver.wait_for("s3:ObjectCreated:Copy", "/all", key="up/b.txt").signed_with(SECRET)

    upload = s3.create_multipart_upload(Bucket="photos", Key="up/big")
    parts = []
    for number, body in ((1, b"x" * (5 << 20)), (2, b"tail")):
        answer = s3.upload_part(
            Bucket="photos", Key="up/big", UploadId=upload["UploadId"], PartNumber=number, Body=body
        )
        parts.append({"PartNumber": number, "ETag": answer["ETag"]})
    s3.complete_multipart_upload(
        Bucket="photos", Key="up/big", UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
    )
    done = receiver.wait_for("s3:ObjectCreated:CompleteMultipartUpload", "/all", key="up/big")
    assert done.event["data"]["size"] == (5 << 20) + 4 and done.event["data"]["etag"].endswith("-2")
    # a copy of a multipart object goes part by part, through its own upload: still a Copy
    s3.copy_object(Bucket="photos", Key="up/big2", CopySource={"Bucket": "photos", "Key": "up/big"})
    receiver.wait_for("s3:ObjectCreated:Copy", "/all", key="up/big2", size=(5 << 20) + 4)

    s3.put_object(Bucket="photos", Key="other/x", Body=b"x")
    s3.delete_object(Bucket="photos", Key="up/a.txt")
    s3.delete_object(Bucket="photos", Key="up/never-existed")
    s3.delete_objects(
        Bucket="photos", Delete={"Objects": [{"Key": "up/b.txt"}, {"Key": "other/x"}]}
    )
    assert receiver.wait_for("s3:ObjectRemoved:Delete", "/all", key="up/a.txt").signed_with(SECRET)
    receiver.wait_for("s3:ObjectRemoved:DeleteBatch", "/all", key="up/b.txt")
    receiver.wait_for("s3:ObjectRemoved:DeleteBatch", "/all", key="other/x")
    # /removed: removals only, under up/ only, signed with its own secret
    receiver.wait_for("s3:ObjectRemoved:DeleteBatch", "/removed", key="up/b.txt")
    removed = receiver.events("/removed")
    assert sorted((d.event["type"], d.event["subject"]) for d in removed) == [
        ("s3:ObjectRemoved:Delete", "up/a.txt"), ("s3:ObjectRemoved:DeleteBatch", "up/b.txt"),
    ]
    assert all(d.signed_with(OTHER_SECRET) for d in removed)
    # a delete of a key that did not exist changes nothing, so it says nothing
    assert not [d for d in receiver.events() if d.event["subject"] == "up/never-existed"]
    metrics = metrics_text(gw)
    label = f'endpoint="{receiver.url("/removed")}",event_type="s3:ObjectRemoved:Delete"'
    assert f"s3o_notification_sent_total{{{label}}} 1.0" in metrics
    assert f's3o_notification_duration_seconds_count{{endpoint="{receiver.url("/all")}"}}' in metrics
    assert "s3o_notification_queue_depth " in metrics


def test_service_started_and_stopping_reach_the_receiver(  # type: ignore[no-untyped-def]
    start_gateway, moto_backends, receiver: WebhookReceiver
) -> None:
    gw = start_gateway(GatewayConfig(backends=moto_backends(1), extra=notifications(receiver)))
    started = receiver.wait_for("service.started", "/all")
    assert started.signed_with(SECRET) and started.event["data"]["instance"] == started.event["subject"]
    gw.stop()  # SIGTERM: a graceful stop
    assert 'service.stopping' in [t for t, _, _ in outbox_rows(gw)]
    # written while stopping, delivered by the next start (the outbox outlives the process)
    gw.start()
    stopping = receiver.wait_for("service.stopping", "/all")
    assert stopping.event["subject"] == started.event["subject"]
    assert len([d for d in receiver.events("/all") if d.event["type"] == "service.started"]) == 2


def test_a_nearly_full_backend_sends_one_capacity_warning(  # type: ignore[no-untyped-def]
    start_gateway, moto_backends, receiver: WebhookReceiver
) -> None:
    gw = start_gateway(
        GatewayConfig(backends=moto_backends(1, quota=1000), extra=notifications(receiver))
    )
    client(gw).put_object(Bucket="photos", Key="big", Body=b"z" * 850)
    warning = receiver.wait_for("backend.capacity.warning", "/all", backend="backend-1")
    assert warning.signed_with(SECRET) and warning.event["subject"] == "backend-1"
    assert warning.event["data"]["utilisation"] == 0.85 and warning.event["data"]["bytes_limit"] == 1000
    client(gw).put_object(Bucket="photos", Key="more", Body=b"z" * 50)
    receiver.wait_for("s3:ObjectCreated:Put", "/all", key="more")
    # usage_flush ticks every second: three more ticks, still one warning (once per hour)
    ticks = usage_flush_ticks(gw)
    assert poll(lambda: usage_flush_ticks(gw), lambda n: n >= ticks + 3, 20) >= ticks + 3
    assert len([d for d in receiver.events("/all") if d.event["type"] == "backend.capacity.warning"]) == 1


def metrics_text(gw: GatewayProcess) -> str:
    with urllib.request.urlopen(gw.endpoint + "/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def usage_flush_ticks(gw: GatewayProcess) -> float:
    text = metrics_text(gw)
    found = re.search(r'^s3o_worker_ticks_total\{result="success",service="usage_flush"\} (\S+)$', text, re.M)
    assert found, "no usage_flush ticks in /metrics"
    return float(found.group(1))


def outbox_rows(gw: GatewayProcess) -> list[tuple[str, str, int]]:
    conn = sqlite3.connect(str(gw.workdir / "s3orch.db"), timeout=10)
    try:
        return conn.execute(
            "SELECT event_type, subject, attempts FROM notification_outbox ORDER BY id"
        ).fetchall()
    finally:
        conn.close()


def test_events_survive_a_crash_before_delivery(  # type: ignore[no-untyped-def]
    start_gateway, moto_backends, receiver: WebhookReceiver
) -> None:
    receiver.status = 503  # the receiver is down: deliveries fail and stay queued
    gw = start_gateway(
        GatewayConfig(backends=moto_backends(1), extra=notifications(receiver, max_retries=50))
    )
    client(gw).put_object(Bucket="photos", Key="precious", Body=b"data")
    assert gw.stop(signal.SIGKILL) == -signal.SIGKILL  # no goodbye, no stopping event
    rows = outbox_rows(gw)
    assert ("s3:ObjectCreated:Put", "precious") in [(t, s) for t, s, _ in rows]
    assert receiver.events() == []
    receiver.status = 204
    gw.start()
    delivered = receiver.wait_for("s3:ObjectCreated:Put", "/all", key="precious", timeout=90)
    assert delivered.signed_with(SECRET)
    receiver.wait_for("service.started", "/all")
    # delivered rows are deleted (just after the receiver answered: poll for it)
    left = poll(lambda: [(t, s) for t, s, _ in outbox_rows(gw)], lambda rows: ("s3:ObjectCreated:Put", "precious") not in rows)
    assert ("s3:ObjectCreated:Put", "precious") not in left


class InProcess:
    """The real store (SQLite), core and notifier on the reactor, a test clock, one endpoint
    (``/ops``, every event) at the receiver, and a MemoryBackend ``b1``."""

    def __init__(self, store: Any, receiver: WebhookReceiver) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.hook = NotificationEndpoint(url=receiver.url("/ops"), events=("*",), secret=SECRET)
        self.sqlite = store
        self.store = FlakyCommits(store)
        self.sink = OutboxSink([self.hook], store, self.clock)
        self.backend = MemoryBackend("b1")
        fleet = BackendFleet([BackendConfig(name="b1")], {"b1": self.backend})
        self.cleanups = Cleanups(store=self.store, fleet=fleet, clock=self.clock, concurrency=4, events=self.sink)
        self.objects = ObjectService(
            store=self.store, fleet=fleet, cleanups=self.cleanups, spooler=Spooler(),
            routing_strategy="pack", clock=self.clock, events=self.sink,
        )
        self.resolver = IntentResolver(
            store=self.store, fleet=fleet, cleanups=self.cleanups, clock=self.clock, events=self.sink
        )
        self.poster = TreqPoster(reactor)
        self.notifier = Notifier(store, self.sink, [self.hook], self.poster, self.clock, locks=None)


@pytest_twisted.async_yield_fixture
async def inprocess(tmp_path: Path, receiver: WebhookReceiver) -> AsyncIterator[InProcess]:
    store = open_store(DatabaseConfig(path=str(tmp_path / "meta.db")), reactor)
    await store.start()
    rig = InProcess(store, receiver)
    await store.sync_quota_limits({"b1": 0}, rig.clock.seconds())
    yield rig
    await rig.poster.close()
    await store.close()


@pytest_twisted.ensureDeferred
async def test_a_cleanup_given_up_sends_cleanup_exhausted(inprocess: InProcess, receiver: WebhookReceiver) -> None:
    rig = inprocess
    await rig.objects.put("bkt", "k", Payload.from_bytes(b"abc"), new=NEW)
    await rig.notifier.run_once()
    rig.backend.fail.add("delete_object")
    await rig.objects.delete("bkt", "k")  # the backend delete fails: queued
    for _ in range(9):  # nine more failures, each after its backoff
        rig.clock.advance(86400)
        assert await rig.cleanups.retry_due("me", 10, 300.0) == 1
    assert await rig.store.due_cleanups(rig.clock.seconds() + 10**9, 10) == []  # in the DLQ now
    assert await rig.notifier.run_once()
    delivered = [d for d in receiver.events("/ops") if d.event["type"] == "cleanup.exhausted"]
    (delivery,) = delivered
    assert delivery.signed_with(SECRET) and delivery.event["subject"] == "b1"
    assert delivery.event["data"]["storage_key"].startswith("bkt/")
    assert (delivery.event["data"]["size"], delivery.event["data"]["reason"]) == (3, "delete")
    assert delivery.event["data"]["error"] == "[b1] injected delete_object failure"
    assert await rig.store.count_events() == 0


@pytest_twisted.ensureDeferred
async def test_a_write_the_reaper_promotes_sends_object_created(
    inprocess: InProcess, receiver: WebhookReceiver
) -> None:
    rig = inprocess
    rig.store.fail_before = 1
    with pytest.raises(StoreUnavailable):  # the client got 503: no event yet
        await rig.objects.put("bkt", "late", Payload.from_bytes(b"bytes"), new=NEW)
    assert await rig.notifier.run_once()
    assert receiver.events("/ops") == []
    rig.clock.advance(300)
    assert await rig.resolver.resolve_stale(min_age=300, batch=10, owner="me", claim_grace=300) == ["promoted"]
    assert await rig.notifier.run_once()
    (delivery,) = receiver.events("/ops")
    assert delivery.signed_with(SECRET)
    assert (delivery.event["type"], delivery.event["data"]) == (
        "s3:ObjectCreated:Put", {"bucket": "bkt", "key": "late", "size": 5}
    )


@pytest.mark.slow
def test_two_instances_on_postgresql_deliver_each_event_once_and_survive_a_crash(  # type: ignore[no-untyped-def]
    start_gateway, moto_backends, receiver: WebhookReceiver, postgres_dsn: str
) -> None:
    receiver.status = 503
    config = GatewayConfig(
        backends=moto_backends(1),
        database=database_section(postgres_dsn),
        extra=notifications(receiver, max_retries=50),
    )
    first = start_gateway(config, "a")
    second = start_gateway(config, "b")
    client(first).put_object(Bucket="photos", Key="before-crash", Body=b"x")
    first.stop(signal.SIGKILL)
    receiver.status = 204
    receiver.wait_for("s3:ObjectCreated:Put", "/all", key="before-crash", timeout=90)  # the survivor sends it
    for index in range(10):
        target = first if index % 2 else second
        if index == 1:
            first.start()
        client(target).put_object(Bucket="photos", Key=f"k{index}", Body=b"y")
    for index in range(10):
        receiver.wait_for("s3:ObjectCreated:Put", "/all", key=f"k{index}", timeout=90)
    puts = [d.event["subject"] for d in receiver.events("/all") if d.event["type"] == "s3:ObjectCreated:Put"]
    assert sorted(puts) == sorted(["before-crash"] + [f"k{i}" for i in range(10)])  # each exactly once
    ids = [d.event["id"] for d in receiver.events()]
    assert len(ids) == len(set(ids))
