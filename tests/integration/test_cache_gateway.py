"""The object data cache in a real gateway (twistd) over SeaweedFS (BEHAVIOURS §1.23): a 300 MiB
GET with the cache on streams without the gateway's memory following the body (the original read
every body into memory before checking its size, #654: about 600 MB at peak); hit, miss and
eviction metrics move; a write through this gateway invalidates."""

from __future__ import annotations

import hashlib
import os
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from boto3.s3.transfer import TransferConfig

from tests.conftest import PHOTOS, s3_client
from tests.integration.conftest import WEED_ACCESS_KEY, WEED_SECRET_KEY, fresh_bucket
from tests.support.configs import BackendSpec, GatewayConfig
from tests.support.gateway import GatewayProcess
from tests.support.servers import WeedServer

MiB = 1 << 20
BIG = 300 * MiB
#: A generous bound on what the gateway may grow by while serving BIG (it streams in 64 KiB chunks).
RSS_GROWTH_LIMIT = 64 * MiB


def _metric(gw: GatewayProcess, name: str) -> float:
    text = urllib.request.urlopen(gw.endpoint + "/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _cached_gateway(weed: WeedServer, start_gateway: Callable[[GatewayConfig], GatewayProcess],
                    **cache: object) -> GatewayProcess:
    spec = BackendSpec("weed-1", weed.endpoint, fresh_bucket(weed), WEED_ACCESS_KEY, WEED_SECRET_KEY,
                       quota_bytes=1024 * MiB)
    return start_gateway(GatewayConfig(backends=[spec], extra={"cache": {"enabled": True, **cache}}))


def _big_file(path: Path) -> str:
    """Write BIG incompressible bytes to ``path`` a MiB at a time; their SHA-256."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        block = os.urandom(MiB)
        for index in range(BIG // MiB):
            chunk = hashlib.sha256(index.to_bytes(4, "big")).digest() + block[32:]
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


@pytest.mark.slow
def test_a_300mb_get_with_the_cache_on_keeps_rss_flat_and_metrics_move(
    weed: WeedServer, start_gateway: Callable[[GatewayConfig], GatewayProcess], tmp_path: Path
) -> None:
    gw = _cached_gateway(weed, start_gateway)  # the defaults: 256MB budget, 10MB objects
    assert gw.proc is not None
    pid = gw.proc.pid
    s3: Any = s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
    source = tmp_path / "big.bin"
    expected = _big_file(source)
    s3.upload_file(str(source), "photos", "big", Config=TransferConfig(multipart_chunksize=16 * MiB))
    source.unlink()

    misses = _metric(gw, "s3o_cache_misses_total")
    try:  # reset the peak so VmHWM measures the GET alone (Linux >= 4.0; our own child)
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        pass
    before = _status_kib(pid, "VmRSS") * 1024
    hwm_before = _status_kib(pid, "VmHWM") * 1024
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], _status_kib(pid, "VmRSS") * 1024)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    digest, received = hashlib.sha256(), 0
    try:
        body = s3.get_object(Bucket="photos", Key="big")["Body"]
        for chunk in body.iter_chunks(MiB):
            digest.update(chunk)
            received += len(chunk)
    finally:
        done.set()
        sampler.join()
    hwm_growth = _status_kib(pid, "VmHWM") * 1024 - max(before, hwm_before)
    growth = peak[0] - before
    print(
        f"\n300 MiB GET with the cache on: gateway RSS before {before / MiB:.1f} MiB, sampled peak"
        f" {peak[0] / MiB:.1f} MiB (growth {growth / MiB:.1f} MiB), VmHWM growth {max(0, hwm_growth) / MiB:.1f} MiB"
    )
    assert received == BIG and digest.hexdigest() == expected
    assert growth < RSS_GROWTH_LIMIT and hwm_growth < RSS_GROWTH_LIMIT
    # Never admitted (larger than max_object_size): not buffered, not a miss, nothing held.
    assert _metric(gw, "s3o_cache_misses_total") == misses
    assert _metric(gw, "s3o_cache_size_bytes") == 0


@pytest.mark.slow
def test_hits_misses_evictions_and_a_write_invalidates(
    weed: WeedServer, start_gateway: Callable[[GatewayConfig], GatewayProcess]
) -> None:
    gw = _cached_gateway(weed, start_gateway, max_size="1MB", max_object_size="512KB", ttl="5m")
    s3: Any = s3_client(gw.endpoint, PHOTOS.access_key, PHOTOS.secret_key)
    bodies = {f"c/{i}": bytes([65 + i]) * (400 * 1024) for i in range(3)}
    for key, body in bodies.items():
        s3.put_object(Bucket="photos", Key=key, Body=body)
    for key, body in bodies.items():  # three misses; the third evicts the first (1.2 MB > 1 MB)
        assert s3.get_object(Bucket="photos", Key=key)["Body"].read() == body
    assert _metric(gw, "s3o_cache_misses_total") == 3
    assert _metric(gw, "s3o_cache_evictions_total") == 1
    assert _metric(gw, "s3o_cache_entries") == 2 and _metric(gw, "s3o_cache_size_bytes") == 800 * 1024
    got = s3.get_object(Bucket="photos", Key="c/2")
    assert got["Body"].read() == bodies["c/2"] and got["LastModified"] is not None
    assert _metric(gw, "s3o_cache_hits_total") == 1
    s3.put_object(Bucket="photos", Key="c/2", Body=b"rewritten")
    assert _metric(gw, "s3o_cache_entries") == 1
    assert s3.get_object(Bucket="photos", Key="c/2")["Body"].read() == b"rewritten"
    assert _metric(gw, "s3o_cache_hits_total") == 1 and _metric(gw, "s3o_cache_misses_total") == 4
