"""Multipart uploads through real processes: what is left of the native backend calls (against
moto and weed), a Complete over SeaweedFS, and an upload surviving a gateway crash.  The multipart
state machine, errors and quota accounting are tested in-process (tests/inproc/test_multipart.py).
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest_twisted

from s3orch.backend.s3 import S3Backend
from tests.conftest import PHOTOS, backend_keys, quota_rows, s3_client
from tests.integration.conftest import WEED_ACCESS_KEY, WEED_SECRET_KEY, fresh_bucket
from tests.support.configs import BackendSpec, GatewayConfig
from tests.support.gateway import GatewayProcess

MiB = 1024 * 1024


@pytest_twisted.ensureDeferred
async def test_backend_lists_and_aborts_a_native_upload_an_older_build_left(
    backend: S3Backend, server: Any
) -> None:
    """The stale-upload cleanup aborts native uploads of older builds: it finds one whose
    id was never recorded by listing, and aborting twice is fine."""
    client = s3_client(server.endpoint, server.access_key, server.secret_key)
    key = "bkt/old key+1@0123"
    upload_id = client.create_multipart_upload(Bucket=backend.bucket, Key=key)["UploadId"]
    client.upload_part(Bucket=backend.bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=b"x" * 100)
    assert await backend.list_multipart_uploads("bkt/old") == [(key, upload_id)]
    await backend.abort_multipart_upload(key, upload_id)
    await backend.abort_multipart_upload(key, upload_id)  # already gone: fine
    assert await backend.list_multipart_uploads("bkt/old") == []
    assert not hasattr(backend, "upload_part") and not hasattr(backend, "complete_multipart_upload")


# --- through a real gateway ----------------------------------------------------------------


def _metric(gw: GatewayProcess, name: str, **labels: str) -> float:
    text = urllib.request.urlopen(gw.endpoint + "/metrics", timeout=10).read().decode()
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _done(etags: list[str], numbers: list[int] | None = None) -> dict[str, Any]:
    numbers = numbers or list(range(1, len(etags) + 1))
    return {"Parts": [{"PartNumber": n, "ETag": etags[n - 1]} for n in numbers]}


def _weed_spec(weed: Any) -> BackendSpec:
    return BackendSpec("weed-1", weed.endpoint, fresh_bucket(weed), WEED_ACCESS_KEY, WEED_SECRET_KEY,
                       quota_bytes=1024 * MiB)


def test_complete_moves_no_object_data_on_seaweedfs(weed, start_gateway) -> None:  # type: ignore[no-untyped-def]
    """Against SeaweedFS (its own multipart quirks); tests/inproc runs this over the in-memory server."""
    spec = _weed_spec(weed)
    gw = start_gateway(GatewayConfig(backends=[spec]))
    s3 = s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
    parts = [os.urandom(8 * MiB) for _ in range(8)]
    out_before = _metric(gw, "s3o_backend_bytes_total", backend=spec.name, direction="out")
    in_before = _metric(gw, "s3o_backend_bytes_total", backend=spec.name, direction="in")
    upload_id = s3.create_multipart_upload(Bucket="photos", Key="64mib")["UploadId"]

    def put(number: int) -> str:
        return str(s3.upload_part(Bucket="photos", Key="64mib", UploadId=upload_id, PartNumber=number,
                                  Body=parts[number - 1])["ETag"])

    with ThreadPoolExecutor(4) as pool:  # 8 MiB parts, 4 in parallel
        etags = list(pool.map(put, range(1, 9)))
    uploaded = _metric(gw, "s3o_backend_bytes_total", backend=spec.name, direction="out") - out_before
    s3.complete_multipart_upload(Bucket="photos", Key="64mib", UploadId=upload_id, MultipartUpload=_done(etags))
    sent = _metric(gw, "s3o_backend_bytes_total", backend=spec.name, direction="out") - out_before
    received = _metric(gw, "s3o_backend_bytes_total", backend=spec.name, direction="in") - in_before
    # Every object byte crossed to the backend exactly once, each part as its own object;
    # Complete made no backend call at all.
    assert uploaded == sent == 64 * MiB and received == 0
    assert sorted(size for _, size in backend_keys(spec)) == [8 * MiB] * 8
    assert _metric(gw, "s3o_backend_requests_total", operation="PutObject", backend=spec.name) == 8
    for operation in ("UploadPart", "CompleteMultipartUpload", "CreateMultipartUpload", "CopyObject"):
        assert _metric(gw, "s3o_backend_requests_total", operation=operation, backend=spec.name) == 0
    got = s3.get_object(Bucket="photos", Key="64mib")["Body"].read()
    assert hashlib.sha256(got).digest() == hashlib.sha256(b"".join(parts)).digest()
    row = quota_rows(gw)[spec.name]
    assert (row["used"], row["reserved"]) == (64 * MiB, 0)


def test_an_upload_survives_a_gateway_crash_and_resumes(start_gateway, moto_backends) -> None:  # type: ignore[no-untyped-def]
    import signal

    backends = moto_backends(1, quota=64 * MiB)
    gw = start_gateway(GatewayConfig(backends=backends))
    s3 = s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
    parts = [os.urandom(5 * MiB), os.urandom(MiB)]
    upload_id = s3.create_multipart_upload(Bucket="photos", Key="resume", Metadata={"kept": "yes"})["UploadId"]
    first = s3.upload_part(Bucket="photos", Key="resume", UploadId=upload_id, PartNumber=1, Body=parts[0])["ETag"]
    gw.stop(signal.SIGKILL)
    gw.start()
    s3 = s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
    listed = s3.list_parts(Bucket="photos", Key="resume", UploadId=upload_id)["Parts"]
    assert [(p["PartNumber"], p["ETag"]) for p in listed] == [(1, first)]
    second = s3.upload_part(Bucket="photos", Key="resume", UploadId=upload_id, PartNumber=2, Body=parts[1])["ETag"]
    s3.complete_multipart_upload(Bucket="photos", Key="resume", UploadId=upload_id,
                                 MultipartUpload=_done([first, second]))
    got = s3.get_object(Bucket="photos", Key="resume")
    assert got["Body"].read() == b"".join(parts) and got["Metadata"] == {"kept": "yes"}
    row = quota_rows(gw)[backends[0].name]
    assert (row["used"], row["reserved"]) == (6 * MiB, 0)
