"""Acceptance: multipart uploads overflow across backends like single PUTs do.

Three small-quota backends behind an in-process gateway.  An upload that starts when the
first backend is nearly full completes, every byte reads back (SHA-256), its parts
are spread over the backends (read from the backends themselves), and the quota
counters equal what the backends hold.  An object larger than any backend's free
space is stored across them.  Over in-memory backends (which check every signature);
tests/integration/test_multipart_overflow.py runs the first two over SeaweedFS; both take
them from tests/support/multipart_overflow.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial

import pytest
from botocore.exceptions import ClientError

from s3orch.testing import GatewayHarness
from tests.conftest import PHOTOS
from tests.inproc.conftest import MiB, boto, make_backends
from tests.inproc.conftest import backend_keys as held_by
from tests.support.configs import GatewayConfig
from tests.support.multipart_overflow import (
    OverflowRig,
    assert_quota_is_what_the_backends_hold,
    object_larger_than_any_backends_free_space,
    upload_started_on_a_nearly_full_backend,
)

Start = Callable[..., GatewayHarness]


def _rig(start_harness: Start, quota: int) -> OverflowRig:
    backends = make_backends(3, quota=quota)
    gw = start_harness(GatewayConfig(backends=backends, routing_strategy="pack"))
    return OverflowRig(gw, boto(gw), backends, partial(held_by, gw), lambda: gw.advance(60))


def test_a_multipart_upload_started_on_a_nearly_full_backend_completes_across_backends(start_harness: Start) -> None:
    upload_started_on_a_nearly_full_backend(_rig(start_harness, 24 * MiB))


def test_an_object_larger_than_any_backends_free_space_is_stored_across_them(start_harness: Start) -> None:
    object_larger_than_any_backends_free_space(_rig(start_harness, 30 * MiB))


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
    gw.advance(60)  # the cleanup queue removes the loser's bytes
    assert_quota_is_what_the_backends_hold(gw, backends, partial(held_by, gw))
    assert sum(len(held_by(gw, b)) for b in backends) == 1  # the loser's bytes are gone
