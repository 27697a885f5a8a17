"""Acceptance: multipart uploads overflow across backends like single PUTs do.

Three small-quota backends behind a real gateway.  An upload that starts when the
first backend is nearly full completes, every byte reads back (SHA-256), its parts
are spread over the backends (read from the backends themselves), and the quota
counters equal what the backends hold.  An object larger than any backend's free
space is stored across them.  Over SeaweedFS here (which checks every signature and keeps
data like a real provider); over in-memory backends in tests/inproc/test_multipart_overflow.py,
with the part-sent-twice race.  The scenarios themselves are tests/support/multipart_overflow.py.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.conftest import PHOTOS, backend_keys, quota_rows, s3_client
from tests.integration.conftest import WEED_ACCESS_KEY, WEED_SECRET_KEY
from tests.support.configs import BackendSpec, GatewayConfig
from tests.support.multipart_overflow import (
    MiB,
    OverflowRig,
    object_larger_than_any_backends_free_space,
    upload_started_on_a_nearly_full_backend,
)
from tests.support.polling import poll
from tests.support.servers import create_bucket


def _backends(kind: str, request: pytest.FixtureRequest, quota: int) -> list[BackendSpec]:
    weed = request.getfixturevalue("weed")
    specs = []
    for i in range(3):
        bucket = f"ov{i}-{uuid.uuid4().hex[:10]}"
        create_bucket(weed.endpoint, bucket, WEED_ACCESS_KEY, WEED_SECRET_KEY, "us-east-1")
        specs.append(BackendSpec(f"backend-{i + 1}", weed.endpoint, bucket, WEED_ACCESS_KEY, WEED_SECRET_KEY,
                                 quota_bytes=quota))
    return specs


def _rig(kind: str, request: pytest.FixtureRequest, start_gateway: Any, quota: int) -> OverflowRig:
    backends = _backends(kind, request, quota)
    gw = start_gateway(GatewayConfig(backends=backends, routing_strategy="pack"))
    s3 = s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)

    def wait_quiet(timeout: float = 20.0) -> None:
        """Wait until no deleted object's bytes are still being removed."""
        poll(lambda: quota_rows(gw), lambda rows: all(rows[b.name]["orphan"] == 0 for b in backends), timeout)

    return OverflowRig(gw, s3, backends, backend_keys, wait_quiet)


@pytest.mark.parametrize("kind", ["weed"])
def test_a_multipart_upload_started_on_a_nearly_full_backend_completes_across_backends(
    kind: str, request: pytest.FixtureRequest, start_gateway: Any
) -> None:
    upload_started_on_a_nearly_full_backend(_rig(kind, request, start_gateway, 24 * MiB))


@pytest.mark.parametrize("kind", ["weed"])
def test_an_object_larger_than_any_backends_free_space_is_stored_across_them(
    kind: str, request: pytest.FixtureRequest, start_gateway: Any
) -> None:
    object_larger_than_any_backends_free_space(_rig(kind, request, start_gateway, 30 * MiB))
