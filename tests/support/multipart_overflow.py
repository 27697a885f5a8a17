"""The multipart-overflow acceptance scenarios, once for both ways of running a gateway.

tests/inproc/test_multipart_overflow.py runs them on an in-process gateway over in-memory
backends, tests/integration/test_multipart_overflow.py on a real gateway over SeaweedFS; what
differs between the two -- how a backend's objects are listed and how to wait until deleted
bytes are gone -- comes in an :class:`OverflowRig`.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from botocore.exceptions import ClientError

from s3orch.core.placement import key_digest
from tests.conftest import HasWorkdir, quota_rows
from tests.support.configs import BackendSpec

MiB = 1024 * 1024


@dataclass
class OverflowRig:
    """A started gateway (three small-quota backends, ``pack`` routing) and how to look at it."""

    gateway: HasWorkdir
    #: A boto3 client of the ``photos`` bucket.
    s3: Any
    backends: list[BackendSpec]
    #: (key, size) of every object a backend holds, read from the backend itself.
    held: Callable[[BackendSpec], list[tuple[str, int]]]
    #: Returns once the cleanup queue removed every deleted object's bytes.
    wait_quiet: Callable[[], None]


def copies(gateway: HasWorkdir, key: str) -> list[tuple[int, str, str, int]]:
    """(part number, backend, storage key, size) of a key's copies, from the gateway's database."""
    conn = sqlite3.connect(str(gateway.workdir / "s3orch.db"), timeout=10)
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


def assert_quota_is_what_the_backends_hold(
    gateway: HasWorkdir, backends: list[BackendSpec], held_by: Callable[[BackendSpec], list[tuple[str, int]]]
) -> None:
    """Each backend's quota row counts exactly the bytes and objects it holds, nothing reserved."""
    rows = quota_rows(gateway)
    for spec in backends:
        held = held_by(spec)
        row = rows[spec.name]
        assert (row["used"], row["objects"]) == (sum(size for _, size in held), len(held)), spec.name
        assert row["reserved"] == 0 and row["orphan"] == 0, spec.name
        assert row["used"] <= row["limit"], spec.name


def upload(s3: Any, key: str, data: bytes, part_size: int) -> str:
    """Upload ``data`` to ``photos/key`` in parts of ``part_size``; the completed upload's ETag."""
    upload_id = s3.create_multipart_upload(Bucket="photos", Key=key)["UploadId"]
    parts = []
    for number, start in enumerate(range(0, len(data), part_size), 1):
        etag = s3.upload_part(Bucket="photos", Key=key, UploadId=upload_id, PartNumber=number,
                              Body=data[start:start + part_size])["ETag"]
        parts.append({"PartNumber": number, "ETag": etag})
    done = s3.complete_multipart_upload(Bucket="photos", Key=key, UploadId=upload_id,
                                        MultipartUpload={"Parts": parts})
    return str(done["ETag"])


def upload_started_on_a_nearly_full_backend(rig: OverflowRig) -> None:
    """Backends of 24 MiB: a 30 MiB upload begun with backend-1 4 MiB from full completes, its
    parts spread over the others, and reads back whole and by range."""
    s3, backends = rig.s3, rig.backends
    s3.put_object(Bucket="photos", Key="filler", Body=os.urandom(20 * MiB))  # backend-1: 4 MiB left
    assert [len(rig.held(b)) for b in backends] == [1, 0, 0]
    data = os.urandom(30 * MiB + 17)
    etag = upload(s3, "dir/big.bin", data, 6 * MiB)
    assert etag.endswith('-6"')
    got = s3.get_object(Bucket="photos", Key="dir/big.bin")["Body"].read()
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()
    # The parts are spread: read from the backends themselves.
    found = copies(rig.gateway, "dir/big.bin")
    assert [n for n, *_ in found] == [1, 2, 3, 4, 5, 6]
    on = {spec.name: {k for k, _ in rig.held(spec)} for spec in backends}
    for _, backend, storage_key, _ in found:
        assert storage_key in on[backend]
        assert storage_key.startswith(f"photos/{key_digest('dir/big.bin')}/")
    spread = {backend for _, backend, _, _ in found}
    assert spread >= {"backend-2", "backend-3"}
    # a 6 MiB part never went to backend-1 (4 MiB free); the 17-byte tail could
    assert all(backend != "backend-1" for _, backend, _, size in found if size > 4 * MiB)
    assert_quota_is_what_the_backends_hold(rig.gateway, rig.backends, rig.held)
    # A range across two parts on two backends.
    start = 6 * MiB * 3 - 5
    ranged = s3.get_object(Bucket="photos", Key="dir/big.bin", Range=f"bytes={start}-{start + 9}")
    assert ranged["Body"].read() == data[start:start + 10]


def object_larger_than_any_backends_free_space(rig: OverflowRig) -> None:
    """Backends of 30 MiB, 12 MiB free each: a 30 MiB single PUT is refused, the same bytes as
    a multipart upload are stored across all three, and a copy of it spreads too."""
    s3 = rig.s3
    for i in range(3):  # every backend at 18 MiB of 30: 12 MiB free each, 36 MiB in all
        s3.put_object(Bucket="photos", Key=f"filler-{i}", Body=os.urandom(18 * MiB))
    assert [len(rig.held(b)) for b in rig.backends] == [1, 1, 1]
    with pytest.raises(ClientError) as info:  # a single PUT of it has nowhere to go
        s3.put_object(Bucket="photos", Key="too-big", Body=os.urandom(30 * MiB))
    assert info.value.response["Error"]["Code"] == "InsufficientStorage"
    data = os.urandom(30 * MiB)
    upload(s3, "huge.bin", data, 5 * MiB)
    got = s3.get_object(Bucket="photos", Key="huge.bin")["Body"].read()
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()
    per_backend: dict[str, int] = {}
    for _, backend, _, size in copies(rig.gateway, "huge.bin"):
        per_backend[backend] = per_backend.get(backend, 0) + size
    assert sorted(per_backend.values()) == [10 * MiB, 10 * MiB, 10 * MiB]
    assert max(per_backend.values()) < len(data)
    assert_quota_is_what_the_backends_hold(rig.gateway, rig.backends, rig.held)
    # Copying it places each extent on its own too: nothing needs one backend for all of it.
    s3.delete_object(Bucket="photos", Key="filler-0")
    s3.delete_object(Bucket="photos", Key="filler-1")
    s3.delete_object(Bucket="photos", Key="filler-2")
    s3.copy_object(Bucket="photos", Key="huge-copy.bin", CopySource={"Bucket": "photos", "Key": "huge.bin"})
    got = s3.get_object(Bucket="photos", Key="huge-copy.bin")["Body"].read()
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()
    assert len({b for _, b, _, _ in copies(rig.gateway, "huge-copy.bin")}) > 1
    rig.wait_quiet()
    assert_quota_is_what_the_backends_hold(rig.gateway, rig.backends, rig.held)
