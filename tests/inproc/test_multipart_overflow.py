"""Acceptance: multipart uploads overflow across backends like single PUTs do.

Three small-quota backends behind an in-process gateway.  An upload that starts when the
first backend is nearly full completes, every byte reads back (SHA-256), its parts
are spread over the backends (read from the backends themselves), and the quota
counters equal what the backends hold.  An object larger than any backend's free
space is stored across them.  Over in-memory backends (which check every signature);
tests/integration/test_multipart_overflow.py runs the first two over SeaweedFS.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from s3orch.core.placement import key_digest
from s3orch.testing import GatewayHarness
from tests.conftest import PHOTOS, quota_rows
from tests.inproc.conftest import MiB, boto, make_backends
from tests.inproc.conftest import backend_keys as held_by
from tests.support.configs import BackendSpec, GatewayConfig

Start = Callable[..., GatewayHarness]


def _copies(gw: GatewayHarness, key: str) -> list[tuple[int, str, str, int]]:
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


def _assert_quota_is_what_the_backends_hold(gw: GatewayHarness, backends: list[BackendSpec]) -> None:
    rows = quota_rows(gw)
    for spec in backends:
        held = held_by(gw, spec)
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


def test_a_multipart_upload_started_on_a_nearly_full_backend_completes_across_backends(start_harness: Start) -> None:
    backends = make_backends(3, quota=24 * MiB)
    gw = start_harness(GatewayConfig(backends=backends, routing_strategy="pack"))
    s3 = boto(gw)
    s3.put_object(Bucket="photos", Key="filler", Body=os.urandom(20 * MiB))  # backend-1: 4 MiB left
    assert [len(held_by(gw, b)) for b in backends] == [1, 0, 0]
    data = os.urandom(30 * MiB + 17)
    etag = _upload(s3, "dir/big.bin", data, 6 * MiB)
    assert etag.endswith('-6"')
    got = s3.get_object(Bucket="photos", Key="dir/big.bin")["Body"].read()
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()
    # The parts are spread: read from the backends themselves.
    copies = _copies(gw, "dir/big.bin")
    assert [n for n, *_ in copies] == [1, 2, 3, 4, 5, 6]
    on = {spec.name: {k for k, _ in held_by(gw, spec)} for spec in backends}
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


def test_an_object_larger_than_any_backends_free_space_is_stored_across_them(start_harness: Start) -> None:
    backends = make_backends(3, quota=30 * MiB)
    gw = start_harness(GatewayConfig(backends=backends, routing_strategy="pack"))
    s3 = boto(gw)
    for i in range(3):  # every backend at 18 MiB of 30: 12 MiB free each, 36 MiB in all
        s3.put_object(Bucket="photos", Key=f"filler-{i}", Body=os.urandom(18 * MiB))
    assert [len(held_by(gw, b)) for b in backends] == [1, 1, 1]
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


def _wait_quiet(gw: GatewayHarness, backends: list[BackendSpec]) -> None:
    """Let the cleanup queue remove every deleted object's bytes."""
    gw.advance(60)


def test_a_part_sent_twice_at_once_keeps_one_winner_and_deletes_the_other(start_harness: Start) -> None:
    backends = make_backends(2, quota=64 * MiB)
    gw = start_harness(GatewayConfig(backends=backends))
    s3 = boto(gw)
    upload_id = s3.create_multipart_upload(Bucket="photos", Key="twice")["UploadId"]
    bodies = [os.urandom(6 * MiB), os.urandom(6 * MiB)]
    target = f"/photos/twice?partNumber=1&uploadId={upload_id}"
    credentials = (PHOTOS.access_key, PHOTOS.secret_key)
    answers = gw.send_together([gw.encode_request("PUT", target, body=b, credentials=credentials) for b in bodies])
    assert [a.status for a in answers] == [200, 200]
    etags = [str(a.header("etag")) for a in answers]
    listed = s3.list_parts(Bucket="photos", Key="twice", UploadId=upload_id)["Parts"]
    assert len(listed) == 1 and listed[0]["ETag"] in etags
    winner = etags.index(listed[0]["ETag"])
    loser_etag = etags[1 - winner]
    with pytest.raises(ClientError) as info:
        s3.complete_multipart_upload(Bucket="photos", Key="twice", UploadId=upload_id,
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": loser_etag}]})
    assert info.value.response["Error"]["Code"] == "InvalidPart"
    s3.complete_multipart_upload(Bucket="photos", Key="twice", UploadId=upload_id,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": listed[0]["ETag"]}]})
    assert s3.get_object(Bucket="photos", Key="twice")["Body"].read() == bodies[winner]
    _wait_quiet(gw, backends)
    _assert_quota_is_what_the_backends_hold(gw, backends)
    assert sum(len(held_by(gw, b)) for b in backends) == 1  # the loser's bytes are gone
