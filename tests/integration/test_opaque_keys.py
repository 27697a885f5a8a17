"""Every key AWS accepts round-trips, and none reaches a backend as a path it would rewrite.

Keys with dot segments, empty segments, trailing dots and slashes, 1024 bytes or unicode go
through a real gateway over SeaweedFS (which answers 503 to a path like ``/photos/../x``):
PUT, HEAD, GET, a listing (in key order, from the database), a copy, a multipart upload and
DELETE.  On the backends only opaque keys appear: the bucket, lower-case hex and the write's
ids.  The in-memory run is tests/inproc/test_opaque_keys.py.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.conftest import PHOTOS, backend_keys, s3_client
from tests.inproc.test_opaque_keys import KEYS, OPAQUE
from tests.integration.conftest import WEED_ACCESS_KEY, WEED_SECRET_KEY
from tests.support.configs import BackendSpec, GatewayConfig
from tests.support.servers import create_bucket


@pytest.fixture
def gateway(weed: Any, start_gateway: Any) -> tuple[Any, BackendSpec]:
    bucket = f"keys-{uuid.uuid4().hex[:10]}"
    create_bucket(weed.endpoint, bucket, WEED_ACCESS_KEY, WEED_SECRET_KEY, "us-east-1")
    spec = BackendSpec("backend-1", weed.endpoint, bucket, WEED_ACCESS_KEY, WEED_SECRET_KEY,
                       quota_bytes=256 * 1024 * 1024)
    return start_gateway(GatewayConfig(backends=[spec])), spec


def test_every_key_aws_accepts_round_trips_and_backends_see_only_opaque_keys(
    gateway: tuple[Any, BackendSpec],
) -> None:
    gw, spec = gateway
    s3 = s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
    bodies = {key: f"body of {key!r}".encode() for key in KEYS}
    for key, body in bodies.items():
        s3.put_object(Bucket="photos", Key=key, Body=body)
    for key, body in bodies.items():
        assert s3.head_object(Bucket="photos", Key=key)["ContentLength"] == len(body), key
        assert s3.get_object(Bucket="photos", Key=key)["Body"].read() == body, key
    listed = [o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket="photos")
              for o in p.get("Contents", [])]
    assert listed == sorted(KEYS, key=lambda k: k.encode())  # S3 order: UTF-8 bytes
    # a copy and a multipart upload under hostile names
    s3.copy_object(Bucket="photos", Key="../copy", CopySource={"Bucket": "photos", "Key": "a/../b"})
    assert s3.get_object(Bucket="photos", Key="../copy")["Body"].read() == bodies["a/../b"]
    upload_id = s3.create_multipart_upload(Bucket="photos", Key="../mp/./x")["UploadId"]
    etag = s3.upload_part(Bucket="photos", Key="../mp/./x", UploadId=upload_id, PartNumber=1, Body=b"part")["ETag"]
    s3.complete_multipart_upload(Bucket="photos", Key="../mp/./x", UploadId=upload_id,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert s3.get_object(Bucket="photos", Key="../mp/./x")["Body"].read() == b"part"
    stored = backend_keys(spec)
    assert len(stored) == len(KEYS) + 2
    for key, _ in stored:
        assert OPAQUE.fullmatch(key), key
    for key in [*KEYS, "../copy", "../mp/./x"]:
        s3.delete_object(Bucket="photos", Key=key)
    assert s3.list_objects_v2(Bucket="photos").get("KeyCount") == 0
    assert backend_keys(spec) == []
