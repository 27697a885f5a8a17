"""Spool disk full: 503 for the PUT in question, the gateway keeps serving, nothing half-written.

Bodies over ``server.spool_memory_limit`` are spooled to ``server.spool_dir``.  The
spool is a small filesystem (a tmpfs of 256 KiB where the tests may mount one) or,
where mounting is refused, the gateway runs under a file-size limit
(RLIMIT_FSIZE): either way a large body's spool write fails the way a full disk
fails it.  That PUT must get a 503 (retryable), the key must keep its previous
value, the spool must be left empty, and the auditor must find nothing leaked and
quotas exact; small and in-memory writes and every read go on being served.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import PHOTOS, s3_client
from tests.support.auditor import Auditor
from tests.support.configs import BackendSpec, GatewayConfig
from tests.support.diskfull import small_filesystem
from tests.support.gateway import GatewayProcess

KiB = 1024
SPOOL_SIZE = 256 * KiB


@pytest.fixture(params=["filesystem", "file_size_limit"])
def full_spool_gateway(
    request: pytest.FixtureRequest, tmp_path: Path, moto_backends: Callable[..., list[BackendSpec]]
) -> Iterator[tuple[GatewayProcess, Path, list[BackendSpec]]]:
    specs = moto_backends(1, quota=64 * 1024 * KiB)
    spool = tmp_path / "spool"
    with small_filesystem(spool, SPOOL_SIZE) as mounted:
        config = GatewayConfig(specs, extra_server={
            "spool_dir": str(spool), "spool_memory_limit": "16KiB",
            "stream_through_min_size": "0",  # every body is spooled: this is the spool's test
        })
        gateway = GatewayProcess(tmp_path / "gw", config.render())
        if request.param == "file_size_limit" or mounted is None:
            gateway.file_size_limit = 4 * 1024 * KiB  # the database and the log stay far below
        gateway.start()
        try:
            yield gateway, spool, specs
        finally:
            gateway.stop()


def test_a_put_whose_spool_write_hits_a_full_disk_gets_503_and_nothing_else_changes(
    full_spool_gateway: tuple[GatewayProcess, Path, list[BackendSpec]],
) -> None:
    gateway, spool, specs = full_spool_gateway
    s3: Any = s3_client(gateway.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
    small, spooled = os.urandom(8 * KiB), os.urandom(100 * KiB)  # in memory / on the spool, both fit
    s3.put_object(Bucket="photos", Key="small", Body=small)
    s3.put_object(Bucket="photos", Key="big", Body=spooled)
    too_big = os.urandom(8 * 1024 * KiB)  # more than the spool (or the file-size limit) holds

    for _ in range(2):  # twice: the first failure leaves nothing behind that breaks the next
        with pytest.raises(ClientError) as info:
            s3.put_object(Bucket="photos", Key="big", Body=too_big)
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        assert list(spool.iterdir()) == []  # the half-written spool file is gone

    # Still serving: reads, in-memory writes and spooled writes that fit.
    assert s3.get_object(Bucket="photos", Key="big")["Body"].read() == spooled  # previous value (I3)
    assert s3.get_object(Bucket="photos", Key="small")["Body"].read() == small
    again = os.urandom(120 * KiB)
    s3.put_object(Bucket="photos", Key="after", Body=again)
    body = s3.get_object(Bucket="photos", Key="after")["Body"].read()
    assert hashlib.sha256(body).digest() == hashlib.sha256(again).digest()

    gateway.stop()
    report = Auditor(lambda: sqlite3.connect(str(gateway.workdir / "s3orch.db")), specs).audit()
    report.assert_clean()
    assert (report.backend_objects, report.referenced) == (3, 3)  # small, big, after: nothing else
