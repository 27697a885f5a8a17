"""kill -9 at each named point of the write path, restart, settle: nothing acknowledged is lost.

For each crash point (``s3orch.core.crashpoints``) a real ``twistd s3orch``
gateway over two moto backends (on SQLite, then on PostgreSQL) runs with ``S3ORCH_CRASH_AT=<point>:<n>`` while
client threads stream new PUTs, overwrites and multipart completions, each
thread on keys of its own (so the order of writes to a key is known).  The
gateway SIGKILLs itself at the n-th pass of the point.  It is restarted without
the crash point; the clients do what S3 clients do (retry the
CompleteMultipartUpload that got no answer, abort the uploads they gave up);
the pending reaper (1 s tick, 3 s min_age) resolves the intents the crash left.
Then the auditor (``tests.support.auditor``) proves:

* I1: every key reads back with the SHA-256 of its last acknowledged write, or
  of a later write whose client got no definitive answer (I3 lets it appear);
  never an older value, never a write refused with a 4xx;
* I4: every backend object is referenced, queued for cleanup or dead-lettered;
  no intent, part attempt or unfinished upload is left;
* I5: every quota counter equals what the tables reference.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import boto3
import psycopg2
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from s3orch.core.crashpoints import POINTS
from tests.conftest import PHOTOS
from tests.support.auditor import Auditor
from tests.support.configs import BackendSpec, GatewayConfig
from tests.support.gateway import GatewayProcess
from tests.support.polling import poll
from tests.support.postgres import database_section

KiB = 1024
BUCKET = "photos"
#: The pass of each point that kills the gateway (late enough that acknowledged writes exist).
HIT = {
    "after-backend-put": 25,
    "overwrite-displaced": 10,
    "after-commit": 25,
    "complete-before-commit": 6,
    "complete-after-commit": 6,
}
THREADS = 3

ACK, REFUSED, UNKNOWN = "ack", "refused", "unknown"


@dataclass
class Ledger:
    """Every write attempt per key, in order (each key belongs to one thread)."""

    attempts: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # key -> [(sha, outcome)]
    #: Uploads whose Complete got no definitive answer, and uploads never completed.
    unanswered_completes: list[tuple[str, str, str, list[dict[str, Any]]]] = field(default_factory=list)
    abandoned_uploads: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, key: str, sha: str, outcome: str) -> None:
        with self.lock:
            self.attempts.setdefault(key, []).append((sha, outcome))

    def allowed(self) -> dict[str, set[str | None]]:
        """Per key: the last acknowledged value (None: never written) and every later
        write whose outcome is unknown."""
        result: dict[str, set[str | None]] = {}
        for key, attempts in self.attempts.items():
            last_ack = max((i for i, (_, o) in enumerate(attempts) if o == ACK), default=-1)
            options: set[str | None] = {attempts[last_ack][0] if last_ack >= 0 else None}
            options |= {sha for sha, o in attempts[last_ack + 1 :] if o == UNKNOWN}
            result[key] = options
        return result

    def acknowledged(self) -> int:
        return sum(o == ACK for attempts in self.attempts.values() for _, o in attempts)


def client(endpoint: str) -> Any:
    """boto3 without retries: each attempt's outcome is seen (and recorded) here."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=PHOTOS.access_key,
        aws_secret_access_key=PHOTOS.secret_key,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            retries={"total_max_attempts": 1},
            connect_timeout=5,
            read_timeout=30,
        ),
    )


def outcome_of(call: Callable[[], Any]) -> tuple[str, Any]:
    """ACK with the result, REFUSED (a 4xx, or the connection never made: nothing was
    sent), or UNKNOWN (a 5xx or no answer: the write may have happened, I3)."""
    try:
        return ACK, call()
    except ClientError as exc:
        status = int(exc.response["ResponseMetadata"].get("HTTPStatusCode", 0))
        return (REFUSED if 400 <= status < 500 else UNKNOWN), exc
    except EndpointConnectionError as exc:
        return REFUSED, exc
    except BotoCoreError as exc:
        return UNKNOWN, exc


class Workload:
    """Threads of PUTs, overwrites and multipart completions until the gateway dies."""

    def __init__(self, endpoint: str, alive: Callable[[], bool]) -> None:
        self.endpoint = endpoint
        self.alive = alive
        self.ledger = Ledger()

    def run(self, seconds: float) -> None:
        threads = [threading.Thread(target=self._thread, args=(i, seconds), daemon=True) for i in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(seconds + 60)

    def _thread(self, worker: int, seconds: float) -> None:
        s3 = client(self.endpoint)
        rng = random.Random(worker)
        mine: list[str] = []
        deadline = time.monotonic() + seconds
        n = 0
        while self.alive() and time.monotonic() < deadline:
            body = os.urandom(rng.randint(1 * KiB, 48 * KiB))
            step = n % 3
            if step == 0 or not mine:
                key = f"t{worker}/new-{n:04d}"
                mine.append(key)
            else:
                key = rng.choice(mine)  # an overwrite
            if step == 2:
                self._multipart(s3, key, body)
            else:
                outcome, _ = outcome_of(partial(s3.put_object, Bucket=BUCKET, Key=key, Body=body))
                self.ledger.record(key, hashlib.sha256(body).hexdigest(), outcome)
            n += 1

    def _multipart(self, s3: Any, key: str, body: bytes) -> None:
        sha = hashlib.sha256(body).hexdigest()
        outcome, created = outcome_of(lambda: s3.create_multipart_upload(Bucket=BUCKET, Key=key))
        if outcome != ACK:
            return  # an upload whose creation got no answer is the GC's (listed and aborted below)
        upload_id = str(created["UploadId"])
        outcome, part = outcome_of(
            lambda: s3.upload_part(Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=1, Body=body)
        )
        if outcome != ACK:
            with self.ledger.lock:
                self.ledger.abandoned_uploads.append((key, upload_id))
            return
        parts = [{"PartNumber": 1, "ETag": part["ETag"]}]
        outcome, _ = outcome_of(
            lambda: s3.complete_multipart_upload(
                Bucket=BUCKET, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        )
        self.ledger.record(key, sha, outcome)
        if outcome != ACK:
            with self.ledger.lock:
                self.ledger.unanswered_completes.append((key, upload_id, sha, parts))

    def finish_after_restart(self) -> None:
        """What S3 clients do after an outage: retry the Complete that got no answer, and
        abort the uploads they gave up or never heard of (ListMultipartUploads)."""
        s3 = client(self.endpoint)
        for key, upload_id, sha, parts in self.ledger.unanswered_completes:
            outcome, _ = outcome_of(
                lambda key=key, upload_id=upload_id, parts=parts: s3.complete_multipart_upload(
                    Bucket=BUCKET, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
                )
            )
            self.ledger.record(key, sha, outcome)
        listed = s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
        for upload in listed:
            s3.abort_multipart_upload(Bucket=BUCKET, Key=upload["Key"], UploadId=upload["UploadId"])


def read_key(s3: Any) -> Callable[[str], bytes | None]:
    def read(key: str) -> bytes | None:
        try:
            return bytes(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
        except ClientError as exc:
            if exc.response["Error"].get("Code") == "NoSuchKey":
                return None
            raise

    return read


def unsettled(connect: Callable[[], Any]) -> int:
    """Intents, part attempts and unfinished uploads still in the store."""
    conn = connect()
    try:
        cur = conn.cursor()
        total = 0
        for sql in (
            "SELECT COUNT(*) FROM pending_objects",
            "SELECT COUNT(*) FROM multipart_part_attempts",
            "SELECT COUNT(*) FROM multipart_uploads WHERE state IN ('creating', 'open', 'completing', 'aborting')",
        ):
            cur.execute(sql)
            total += int(cur.fetchone()[0])
        return total
    finally:
        conn.close()


def crash_config(specs: list[BackendSpec], database: dict[str, object] | None) -> str:
    return GatewayConfig(
        specs,
        routing_strategy="spread",
        database=database,
        extra={"write_path": {"pending_pattern": {"reaper_tick": "1s", "min_age": "3s"}}},
    ).render()


@pytest.fixture(params=["sqlite", "postgres"])
def store_of(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[dict[str, object] | None, Callable[[], Any]]:
    """The gateway's ``database:`` section (None: SQLite in its workdir) and a DB-API
    connection to it for the auditor."""
    if request.param == "sqlite":
        db = tmp_path / "gw" / "s3orch.db"
        return None, lambda: sqlite3.connect(str(db), timeout=10)
    dsn: str = request.getfixturevalue("postgres_dsn")
    return database_section(dsn), lambda: psycopg2.connect(dsn)


@pytest.mark.slow
@pytest.mark.parametrize("point", sorted(POINTS))
def test_kill_9_at_a_crash_point_loses_no_acknowledged_write_and_leaks_nothing(
    point: str,
    tmp_path: Path,
    moto_backends: Callable[..., list[BackendSpec]],
    store_of: tuple[dict[str, object] | None, Callable[[], Any]],
) -> None:
    database, connect = store_of
    specs = moto_backends(2, quota=64 * 1024 * KiB)
    gateway = GatewayProcess(tmp_path / "gw", crash_config(specs, database))
    gateway.env = {"S3ORCH_CRASH_AT": f"{point}:{HIT[point]}"}
    gateway.start()
    proc = gateway.proc
    assert proc is not None
    work = Workload(gateway.endpoint, alive=lambda: proc.poll() is None)
    work.run(seconds=60)
    assert proc.wait(30) == -signal.SIGKILL, f"the gateway did not die at {point}:\n{gateway.log_text()[-3000:]}"
    gateway.proc = None
    assert work.ledger.acknowledged() >= HIT[point] - 1  # writes were acknowledged before the kill

    gateway.env = {}
    gateway.start()
    try:
        work.finish_after_restart()
        left = poll(lambda: unsettled(connect), lambda n: n == 0, timeout=60)
        assert left == 0, "the reaper did not settle the intents the crash left"
        problems = Auditor.check_reads(read_key(client(gateway.endpoint)), work.ledger.allowed())
        assert problems == [], "acknowledged writes lost:\n  " + "\n  ".join(problems)
    finally:
        gateway.stop()
    report = Auditor(connect, specs).audit()
    report.assert_clean()
    assert report.referenced > 0


def test_the_crash_point_of_the_environment_kills_its_process_with_sigkill_at_its_hit() -> None:
    """Read once at import, SIGKILL (no cleanup at all) at the n-th pass, inert before."""
    code = (
        "from s3orch.core.crashpoints import crash_point\n"
        "crash_point('after-commit')\n"
        "print('survived', flush=True)\n"
        "crash_point('after-commit')\n"
        "print('not reached', flush=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={"S3ORCH_CRASH_AT": "after-commit:2", "PYTHONPATH": os.pathsep.join(sys.path)},
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == -signal.SIGKILL
    assert done.stdout == b"survived\n"
