"""Acceptance: multipart uploads overflow across backends like single PUTs do.

Three small-quota backends behind a real gateway.  An upload that starts when the
first backend is nearly full completes, every byte reads back (SHA-256), its parts
are spread over the backends (read from the backends themselves), and the quota
counters equal what the backends hold.  An object larger than any backend's free
space is stored across them.  Over SeaweedFS here (which checks every signature and keeps
data like a real provider); over in-memory backends in tests/inproc/test_multipart_overflow.py,
with the part-sent-twice race.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from s3orch.core.placement import key_digest
from tests.conftest import PHOTOS, backend_keys, quota_rows, s3_client
from tests.integration.conftest import WEED_ACCESS_KEY, WEED_SECRET_KEY
from tests.support.configs import BackendSpec, GatewayConfig
from tests.support.gateway import GatewayProcess
from tests.support.polling import poll
from tests.support.servers import create_bucket

MiB = 1024 * 1024


def _backends(kind: str, request: pytest.FixtureRequest, quota: int) -> list[BackendSpec]:
    weed = request.getfixturevalue("weed")
    specs = []
    for i in range(3):
        bucket = f"ov{i}-{uuid.uuid4().hex[:10]}"
        create_bucket(weed.endpoint, bucket, WEED_ACCESS_KEY, WEED_SECRET_KEY, "us-east-1")
        specs.append(BackendSpec(f"backend-{i + 1}", weed.endpoint, bucket, WEED_ACCESS_KEY, WEED_SECRET_KEY,
                                 quota_bytes=quota))
    return specs


def _copies(gw: GatewayProcess, key: str) -> list[tuple[int, str, str, int]]:
    """(part number, backend, storage key, size) of a key's copies, from the gateway's database."""
    conn = sqlite3.connect(str(gw.workdir / "s3orch.db"), timeout=10)
    try:
        return [
            (int(r[0]), r[1], r[2], int(r[3]))
            for r in conn.execute(
                "SELECT part_number, backend_name, storage_key, size_bytes FROM object_locations"
                " WHERE bucket = 'photos' AND object_key = ? ORDER BY part_number",
                (key,),
            )
        ]
    finally:
        conn.close()


def _assert_quota_is_what_the_backends_hold(gw: GatewayProcess, backends: list[BackendSpec]) -> None:
    rows = quota_rows(gw)
    for spec in backends:
        held = backend_keys(spec)
        row = rows[spec.name]
        assert (row["used"], row["objects"]) == (sum(size for _, size in held), len(held)), spec.name
        assert row["reserved"] == 0 and row["orphan"] == 0, spec.name
        assert row["used"] <= row["limit"], spec.name


def _upload(s3: Any, key: str, data: bytes, part_size: int) -> str:
    upload_id = s3.create_multipart_upload(Bucket="photos", Key=key)["UploadId"]
    parts = []
    for number, start in enumerate(range(0, len(data), part_size), 1):
        etag = s3.upload_part(Bucket="photos", Key=key, UploadId=upload_id, PartNumber=number,
                              Body=data[start:start + part_size])["ETag"]
        parts.append({"PartNumber": number, "ETag": etag})
    done = s3.complete_multipart_upload(Bucket="photos", Key=key, UploadId=upload_id,
                                        MultipartUpload={"Parts": parts})
    return str(done["ETag"])


@pytest.mark.parametrize("kind", ["weed"])
def test_a_multipart_upload_started_on_a_nearly_full_backend_completes_across_backends(
    kind: str, request: pytest.FixtureRequest, start_gateway: Any
) -> None:
    backends = _backends(kind, request, 24 * MiB)
    gw = start_gateway(GatewayConfig(backends=backends, routing_strategy="pack"))
    s3 = s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
    s3.put_object(Bucket="photos", Key="filler", Body=os.urandom(20 * MiB))  # backend-1: 4 MiB left
    assert [len(backend_keys(b)) for b in backends] == [1, 0, 0]
    data = os.urandom(30 * MiB + 17)
    etag = _upload(s3, "dir/big.bin", data, 6 * MiB)
    assert etag.endswith('-6"')
    got = s3.get_object(Bucket="photos", Key="dir/big.bin")["Body"].read()
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()
    # The parts are spread: read from the backends themselves.
    copies = _copies(gw, "dir/big.bin")
    assert [n for n, *_ in copies] == [1, 2, 3, 4, 5, 6]
    on = {spec.name: {k for k, _ in backend_keys(spec)} for spec in backends}
    for _, backend, storage_key, _ in copies:
        assert storage_key in on[backend]
        assert storage_key.startswith(f"photos/{key_digest('dir/big.bin')}/")
    spread = {backend for _, backend, _, _ in copies}
    assert spread >= {"backend-2", "backend-3"}
    # a 6 MiB part never went to backend-1 (4 MiB free); the 17-byte tail could
    assert all(backend != "backend-1" for _, backend, _, size in copies if size > 4 * MiB)
    _assert_quota_is_what_the_backends_hold(gw, backends)
    # A range across two parts on two backends.
    start = 6 * MiB * 3 - 5
    ranged = s3.get_object(Bucket="photos", Key="dir/big.bin", Range=f"bytes={start}-{start + 9}")
    assert ranged["Body"].read() == data[start:start + 10]


@pytest.mark.parametrize("kind", ["weed"])
def test_an_object_larger_than_any_backends_free_space_is_stored_across_them(
    kind: str, request: pytest.FixtureRequest, start_gateway: Any
) -> None:
    backends = _backends(kind, request, 30 * MiB)
    gw = start_gateway(GatewayConfig(backends=backends, routing_strategy="pack"))
    s3 = s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
    for i in range(3):  # every backend at 18 MiB of 30: 12 MiB free each, 36 MiB in all
        s3.put_object(Bucket="photos", Key=f"filler-{i}", Body=os.urandom(18 * MiB))
    assert [len(backend_keys(b)) for b in backends] == [1, 1, 1]
    with pytest.raises(ClientError) as info:  # a single PUT of it has nowhere to go
        s3.put_object(Bucket="photos", Key="too-big", Body=os.urandom(30 * MiB))
    assert info.value.response["Error"]["Code"] == "InsufficientStorage"
    data = os.urandom(30 * MiB)
    _upload(s3, "huge.bin", data, 5 * MiB)
    got = s3.get_object(Bucket="photos", Key="huge.bin")["Body"].read()
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()
    per_backend: dict[str, int] = {}
    for _, backend, _, size in _copies(gw, "huge.bin"):
        per_backend[backend] = per_backend.get(backend, 0) + size
    assert sorted(per_backend.values()) == [10 * MiB, 10 * MiB, 10 * MiB]
    assert max(per_backend.values()) < len(data)
    _assert_quota_is_what_the_backends_hold(gw, backends)
    # Copying it places each extent on its own too: nothing needs one backend for all of it.
    s3.delete_object(Bucket="photos", Key="filler-0")
    s3.delete_object(Bucket="photos", Key="filler-1")
    s3.delete_object(Bucket="photos", Key="filler-2")
    s3.copy_object(Bucket="photos", Key="huge-copy.bin", CopySource={"Bucket": "photos", "Key": "huge.bin"})
    got = s3.get_object(Bucket="photos", Key="huge-copy.bin")["Body"].read()
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()
    assert len({b for _, b, _, _ in _copies(gw, "huge-copy.bin")}) > 1
    _wait_quiet(gw, backends)
    _assert_quota_is_what_the_backends_hold(gw, backends)


def _wait_quiet(gw: GatewayProcess, backends: list[BackendSpec], timeout: float = 20.0) -> None:
    """Wait until no deleted object's bytes are still being removed."""
    poll(lambda: quota_rows(gw), lambda rows: all(rows[b.name]["orphan"] == 0 for b in backends), timeout)
