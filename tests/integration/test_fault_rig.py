"""The gateway behind the fault proxy: backend faults switched while traffic flows.

One backend (``backend-1``, preferred by ``pack``) is reached through
:class:`tests.support.faultproxy.FaultProxy`, the other directly.  Modes are
switched without resetting the gateway's pooled connections: each request takes
the mode current when it starts.  After the faults, the auditor proves nothing
acknowledged is lost, nothing leaked, and quotas are exact.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import BotoCoreError, ClientError

from tests.conftest import PHOTOS, backend_keys, s3_client
from tests.support.auditor import Auditor
from tests.support.configs import BackendSpec, GatewayConfig
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.gateway import GatewayProcess
from tests.support.polling import poll

KiB = 1024
BACKEND_TIMEOUT = 2.0


class Rig:
    def __init__(self, gateway: GatewayProcess, proxy: FaultProxy, specs: list[BackendSpec]) -> None:
        self.gateway = gateway
        self.proxy = proxy
        self.direct = specs  # the backends as the auditor reaches them (no proxy)
        self.s3: Any = s3_client(gateway.endpoint, PHOTOS.access_key, PHOTOS.secret_key)

    def audit_when_quiet(self) -> None:
        db = self.gateway.workdir / "s3orch.db"

        def intents() -> int:
            conn = sqlite3.connect(str(db), timeout=10)
            try:
                return int(conn.execute("SELECT COUNT(*) FROM pending_objects").fetchone()[0])
            finally:
                conn.close()

        assert poll(intents, lambda n: n == 0, timeout=30) == 0
        self.gateway.stop()
        Auditor(lambda: sqlite3.connect(str(db)), self.direct).audit().assert_clean()


@pytest.fixture
def rig(tmp_path: Path, moto_backends: Callable[..., list[BackendSpec]]) -> Iterator[Rig]:
    specs = moto_backends(2, quota=64 * 1024 * KiB)
    with FaultProxy.for_endpoint(specs[0].endpoint) as proxy:
        proxied = BackendSpec(specs[0].name, proxy.endpoint, specs[0].bucket, quota_bytes=specs[0].quota_bytes)
        config = GatewayConfig(
            [proxied, specs[1]],
            extra_server={"backend_timeout": f"{BACKEND_TIMEOUT:g}s"},
            extra={
                "write_path": {"pending_pattern": {"reaper_tick": "1s", "min_age": "3s"}},
                # a full GET is hashed as it streams (the corrupted-answer test below)
                "integrity": {"enabled": True, "verify_on_read": True},
            },
        )
        gateway = GatewayProcess(tmp_path / "gw", config.render()).start()
        try:
            yield Rig(gateway, proxy, specs)
        finally:
            gateway.stop()


def test_a_backend_reset_mid_get_is_a_503_or_an_abort_never_a_short_200(rig: Rig) -> None:
    body = os.urandom(300 * KiB)
    rig.s3.put_object(Bucket="photos", Key="k", Body=body)
    rig.proxy.set(Fault.RESET_BODY, after=100 * KiB)  # the pooled connection takes it too
    # Never a 200 with fewer bytes: the stream breaks, or, when none of the body had reached
    # the client yet (verify_on_read holds the last chunk back), an S3 503.
    with pytest.raises((BotoCoreError, ClientError)) as info:
        rig.s3.get_object(Bucket="photos", Key="k")["Body"].read()
    if isinstance(info.value, ClientError):
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    rig.proxy.set(Fault.PASS)
    assert rig.s3.get_object(Bucket="photos", Key="k")["Body"].read() == body
    rig.audit_when_quiet()


def test_a_hung_backend_costs_a_get_one_backend_timeout_then_503(rig: Rig) -> None:
    rig.s3.put_object(Bucket="photos", Key="k", Body=b"held by the hung backend")
    rig.proxy.set(Fault.STALL_HEADERS)
    started = time.monotonic()
    with pytest.raises(ClientError) as info:
        rig.s3.get_object(Bucket="photos", Key="k")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503  # the only holder: never 404
    assert time.monotonic() - started < 4 * BACKEND_TIMEOUT  # bounded (the client may retry once)
    rig.proxy.set(Fault.PASS)
    rig.audit_when_quiet()


@pytest.mark.parametrize(
    ("fault", "fields"),
    [(Fault.REFUSE, {}), (Fault.RESET_REQUEST, {"after": 2 * KiB})],
    ids=["refuse", "reset_request"],
)
def test_a_backend_failing_puts_makes_writes_land_elsewhere(
    rig: Rig, fault: Fault, fields: dict[str, float]
) -> None:
    rig.s3.put_object(Bucket="photos", Key="warm", Body=b"w" * 100)  # a pooled connection exists
    rig.proxy.set(fault, **fields)
    bodies = {f"k{i}": os.urandom(20 * KiB) for i in range(4)}
    for key, body in bodies.items():
        rig.s3.put_object(Bucket="photos", Key=key, Body=body)
    assert len(backend_keys(rig.direct[1])) == len(bodies)  # every one on the healthy backend
    for key, body in bodies.items():
        assert rig.s3.get_object(Bucket="photos", Key=key)["Body"].read() == body
    rig.proxy.set(Fault.PASS)
    rig.audit_when_quiet()


def test_a_backend_that_stores_a_put_but_never_answers_leaks_nothing(rig: Rig) -> None:
    """The bytes arrive, the answer does not: the write fails over, and the copy the
    hung backend kept must end referenced, queued for cleanup or dead-lettered (I4)."""
    rig.proxy.set(Fault.STALL_HEADERS)
    body = os.urandom(20 * KiB)
    rig.s3.put_object(Bucket="photos", Key="k", Body=body)
    assert rig.s3.get_object(Bucket="photos", Key="k")["Body"].read() == body
    assert rig.proxy.connections >= 1  # the hung backend was tried first (and stored the bytes)
    assert [k for k, _ in backend_keys(rig.direct[1])] != []  # the write landed on the other
    rig.proxy.set(Fault.PASS)
    rig.audit_when_quiet()


@pytest.mark.slow
def test_faults_switched_under_a_stream_of_writes_lose_nothing_and_leak_nothing(rig: Rig) -> None:
    modes: list[tuple[Fault, dict[str, float]]] = [
        (Fault.REFUSE, {}),
        (Fault.RESET_REQUEST, {"after": 4 * KiB}),
        (Fault.RESET_BODY, {"after": 10}),
        (Fault.CORRUPT, {"after": 9}),  # the answer's status code
        (Fault.SLOW, {"rate": 20 * KiB}),
        (Fault.DELAY, {"delay": 0.3}),
        (Fault.PASS, {}),
    ]
    acked: dict[str, str] = {}
    unknown: dict[str, set[str]] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def writer(worker: int) -> None:
        s3: Any = s3_client(rig.gateway.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
        n = 0
        while not stop.is_set():
            key = f"w{worker}/{n % 7}"  # overwrites too
            body = os.urandom(8 * KiB + n)
            sha = hashlib.sha256(body).hexdigest()
            try:
                s3.put_object(Bucket="photos", Key=key, Body=body)
            except (ClientError, BotoCoreError):
                with lock:
                    unknown.setdefault(key, set()).add(sha)
            else:
                with lock:
                    acked[key] = sha
                    unknown.pop(key, None)  # older unanswered writes may no longer appear
            n += 1

    threads = [threading.Thread(target=writer, args=(i,), daemon=True) for i in range(2)]
    for thread in threads:
        thread.start()
    for fault, fields in modes:
        rig.proxy.set(fault, **fields)
        time.sleep(0.7)  # traffic flows under this mode for a while (the subject, not a wait)
    stop.set()
    for thread in threads:
        thread.join(60)
    assert len(acked) >= 4
    allowed = {key: {sha} | unknown.get(key, set()) for key, sha in acked.items()}
    reader: Any = s3_client(rig.gateway.endpoint, PHOTOS.access_key, PHOTOS.secret_key)

    def read(key: str) -> bytes | None:
        return bytes(reader.get_object(Bucket="photos", Key=key)["Body"].read())

    assert Auditor.check_reads(read, allowed) == []
    rig.audit_when_quiet()


@pytest.mark.slow
def test_a_backend_stalling_mid_body_gets_the_client_connection_aborted_within_a_bound(rig: Rig) -> None:
    body = os.urandom(300 * KiB)
    rig.s3.put_object(Bucket="photos", Key="k", Body=body)
    rig.proxy.set(Fault.STALL_BODY, after=100 * KiB)
    patient: Any = s3_client(rig.gateway.endpoint, PHOTOS.access_key, PHOTOS.secret_key, read_timeout=8)
    started = time.monotonic()
    with pytest.raises((BotoCoreError, ClientError)) as info:
        patient.get_object(Bucket="photos", Key="k")["Body"].read()
    elapsed = time.monotonic() - started
    rig.proxy.set(Fault.PASS)
    rig.proxy.reset_all()
    # The gateway must end the GET itself (I2) well before the client's own timeout: it cuts the
    # connection, or answers 503 when none of the body had reached the client yet (verify_on_read
    # holds a chunk back, and the bytes before the stall may have come as one).
    if isinstance(info.value, ClientError):
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert "timeout" not in type(info.value).__name__.lower() and elapsed < 4 * BACKEND_TIMEOUT


def test_a_corrupted_backend_answer_never_reaches_a_client_as_a_200(rig: Rig) -> None:
    """With ``integrity.verify_on_read`` the gateway hashes the body as it streams and holds back
    its last chunk until the hash matched: a byte flipped in transit aborts the connection."""
    body = os.urandom(300 * KiB)
    rig.s3.put_object(Bucket="photos", Key="k", Body=body)
    rig.proxy.set(Fault.CORRUPT, after=200 * KiB)
    trusting: Any = s3_client(
        rig.gateway.endpoint, PHOTOS.access_key, PHOTOS.secret_key, response_checksum_validation="when_required"
    )
    # The connection is aborted (what I2 asks), or, when no byte of the body had been sent yet
    # (the whole answer came as one held-back chunk), the answer is a 503.
    with pytest.raises((BotoCoreError, ClientError)) as info:
        trusting.get_object(Bucket="photos", Key="k")["Body"].read()
    if isinstance(info.value, ClientError):
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    rig.proxy.set(Fault.PASS)
    # the damage was in transit, not in the stored copy: the scrub that followed kept it
    assert trusting.get_object(Bucket="photos", Key="k")["Body"].read() == body
