"""Every key AWS accepts round-trips, and none reaches a backend as a path it would rewrite.

Keys with dot segments, empty segments, trailing dots and slashes, 1024 bytes or unicode go
through an in-process gateway over an in-memory backend: PUT, HEAD, GET, a listing (in key
order, from the database), a copy, a multipart upload and DELETE.  On the backend only opaque
keys appear: the bucket, lower-case hex and the write's ids.  tests/integration/test_opaque_keys.py
runs the same over SeaweedFS (which answers 503 to a path like ``/photos/../x``).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from s3orch.testing import GatewayHarness
from tests.inproc.conftest import MiB, backend_keys, boto, make_backends
from tests.support.configs import GatewayConfig

KEYS = [
    "../x",
    "../../etc/passwd",
    "a/./b",
    "a//b",
    "x.",
    "..",
    ".",
    "a/../b",
    "dir/",
    "./lead",
    "k" * 1024,
    "ünïcödé/日本語/ключ",
    "sp ace+plus%25",
]
#: What a backend key may look like: the bucket, then lower-case hex and '-' segments.
OPAQUE = re.compile(r"photos(/[0-9a-f]{64})(/[0-9a-f]{32})(/[0-9]{5}-[0-9a-f]{32})?")



def test_every_key_aws_accepts_round_trips_and_backends_see_only_opaque_keys(
    start_harness: Callable[..., GatewayHarness],
) -> None:
    spec = make_backends(1, quota=256 * MiB)[0]
    gw = start_harness(GatewayConfig(backends=[spec]))
    s3 = boto(gw)
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
    stored = backend_keys(gw, spec)
    assert len(stored) == len(KEYS) + 2
    for key, _ in stored:
        assert OPAQUE.fullmatch(key), key
    for key in [*KEYS, "../copy", "../mp/./x"]:
        s3.delete_object(Bucket="photos", Key=key)
    assert s3.list_objects_v2(Bucket="photos").get("KeyCount") == 0
    assert backend_keys(gw, spec) == []
