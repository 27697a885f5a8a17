"""The object data cache through a whole in-process gateway (real site, in-memory backends, a
clock; BEHAVIOURS §1.23): a full GET fills it and the next one is answered without a backend
(proved by wiping the backends behind the gateway's back), with exactly the headers of a miss;
ranges and parts come from a hit and bypass on a miss; every write path of this instance
invalidates, tagging does not (and a hit carries the new tag count); another instance's overwrite
misses by write id; a body ``verify_on_read`` refuses is never cached; the admin routes and CLI."""

from __future__ import annotations

import base64
import hashlib
import json
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from s3orch.cli import admin as admin_cli
from s3orch.cli.main import cli
from s3orch.core.cache import ObjectCache
from s3orch.observe.metrics import REGISTRY
from s3orch.testing.harness import DEFAULT_CONFIG, GatewayHarness
from s3orch.testing.httpclient import HarnessResponse
from tests.unit.test_degraded_reads import Outage
from tests.unit.test_over_replication import HarnessClient
from tests.unit.test_replicator import TOKEN, multipart

BASE = DEFAULT_CONFIG.replace("quota_bytes: 1048576", "quota_bytes: 33554432") + f'ui:\n  admin_token: "{TOKEN}"\n'
CACHE = "cache:\n  enabled: true\n  max_size: 16MB\n  max_object_size: 8MB\n  ttl: 5m\n"
BODY = bytes(range(256)) * 1200  # 300 KiB: several relay chunks
#: Headers that differ between any two answers (cached or not).
VARYING = {"date", "x-amz-request-id", "x-amz-id-2"}


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayHarness]:
    harness = GatewayHarness(tmp_path, BASE + CACHE).start()
    try:
        yield harness
    finally:
        harness.stop()


def admin(h: GatewayHarness, method: str, path: str) -> tuple[int, dict[str, Any]]:
    lines = [f"{method} /admin/api/{path} HTTP/1.1", f"Host: {h.host}", "Content-Length: 0", f"X-Admin-Token: {TOKEN}"]
    response = h.send_raw("\r\n".join(lines).encode() + b"\r\n\r\n")
    answer = json.loads(response.body)
    answer.pop("request_id", None)
    return response.status, answer


def entries(h: GatewayHarness) -> int:
    status, stats = admin(h, "GET", "cache")
    assert status == 200
    return int(stats["entries"])


def wipe(h: GatewayHarness) -> None:
    """Delete every stored copy behind the gateway's back: only the cache can answer now."""
    for name, server in h.backends.items():
        server.objects("store-" + name.rpartition("-")[2]).clear()


def same_headers(a: HarnessResponse, b: HarnessResponse) -> None:
    assert {k: v for k, v in a.headers.items() if k not in VARYING} == {
        k: v for k, v in b.headers.items() if k not in VARYING
    }


def test_a_full_get_fills_the_cache_and_a_hit_needs_no_backend(gateway: GatewayHarness) -> None:
    h = gateway
    assert h.put("photos", "k", BODY).status == 200
    hits, misses = metric("s3o_cache_hits_total"), metric("s3o_cache_misses_total")
    first = h.get("photos", "k")
    assert first.status == 200 and first.body == BODY
    assert entries(h) == 1 and metric("s3o_cache_size_bytes") >= len(BODY)
    wipe(h)
    second = h.get("photos", "k")
    assert second.status == 200 and second.body == BODY
    assert (metric("s3o_cache_hits_total") - hits, metric("s3o_cache_misses_total") - misses) == (1, 1)


def test_a_hit_answers_with_exactly_the_headers_of_a_miss(gateway: GatewayHarness) -> None:
    h = gateway
    crc = base64.b64encode(zlib.crc32(BODY).to_bytes(4, "big")).decode()
    headers = {
        "content-type": "image/png", "cache-control": "max-age=60", "content-disposition": "inline",
        "x-amz-meta-owner": "alice", "x-amz-tagging": "a=1&b=2", "x-amz-checksum-crc32": crc,
    }
    assert h.put("photos", "k", BODY, headers).status == 200
    ask = {"x-amz-checksum-mode": "ENABLED"}
    query = [("response-content-language", "fr")]
    miss = h.request("GET", "photos", "k", headers=ask, query=query)
    wipe(h)
    hit = h.request("GET", "photos", "k", headers=ask, query=query)
    assert miss.status == hit.status == 200 and hit.body == BODY
    same_headers(miss, hit)
    for name in ("last-modified", "etag", "x-amz-meta-owner", "x-amz-tagging-count", "x-amz-checksum-crc32",
                 "content-language", "cache-control"):
        assert hit.header(name), name  # the original's cached answer lost Last-Modified


def test_ranges_bypass_on_a_miss_and_come_from_a_hit(gateway: GatewayHarness) -> None:
    h = gateway
    assert h.put("photos", "k", BODY).status == 200
    ranged = {"range": "bytes=70000-200000"}
    miss = h.get("photos", "k", ranged)
    assert miss.status == 206 and miss.body == BODY[70000:200001]
    assert entries(h) == 0  # a range never fills
    assert h.get("photos", "k").status == 200
    wipe(h)
    hit = h.get("photos", "k", ranged)
    assert hit.status == 206 and hit.body == miss.body
    same_headers(miss, hit)
    suffix = h.get("photos", "k", {"range": "bytes=-10"})
    assert suffix.status == 206 and suffix.body == BODY[-10:]


def test_a_part_of_a_cached_multipart_object_comes_from_the_hit(gateway: GatewayHarness) -> None:
    h = gateway
    part1, part2 = b"p" * (5 * 1024 * 1024), b"tail-bytes"
    multipart(h, "mp", [part1, part2])
    assert h.get("photos", "mp").body == part1 + part2
    wipe(h)
    got = h.request("GET", "photos", "mp", query=[("partNumber", "2")])
    assert got.status == 206 and got.body == part2 and got.header("x-amz-mp-parts-count") == "2"


def _copy(h: GatewayHarness) -> None:
    assert h.put("photos", "src", b"copied bytes").status == 200
    assert h.put("photos", "k", b"", {"x-amz-copy-source": "/photos/src"}).status == 200


def _delete_objects(h: GatewayHarness) -> None:
    body = b"<Delete><Object><Key>k</Key></Object></Delete>"
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    answer = h.request("POST", "photos", query=[("delete", "")], body=body, headers={"content-md5": md5})
    assert answer.status == 200 and b"<Deleted>" in answer.body, answer.text


WRITES: dict[str, tuple[Callable[[GatewayHarness], object], bytes | None]] = {
    "put": (lambda h: h.put("photos", "k", b"newer bytes"), b"newer bytes"),
    "copy": (_copy, b"copied bytes"),
    "delete": (lambda h: h.delete("photos", "k"), None),
    "delete_objects": (_delete_objects, None),
    "complete": (lambda h: multipart(h, "k", [b"m" * (5 * 1024 * 1024), b"end"]), b"m" * (5 * 1024 * 1024) + b"end"),
}


@pytest.mark.parametrize("write", list(WRITES))
def test_every_write_path_of_this_instance_invalidates(gateway: GatewayHarness, write: str) -> None:
    h = gateway
    assert h.put("photos", "k", BODY).status == 200
    assert h.get("photos", "k").body == BODY and entries(h) == 1
    act, after = WRITES[write]
    act(h)
    assert entries(h) == 0
    got = h.get("photos", "k")
    if after is None:
        assert got.status == 404
    else:
        assert got.status == 200 and got.body == after


def test_tagging_keeps_the_entry_and_a_hit_carries_the_new_tag_count(gateway: GatewayHarness) -> None:
    h = gateway
    assert h.put("photos", "k", BODY, {"x-amz-tagging": "a=1"}).status == 200
    assert h.get("photos", "k").header("x-amz-tagging-count") == "1"
    tags = b"<Tagging><TagSet><Tag><Key>x</Key><Value>1</Value></Tag><Tag><Key>y</Key><Value>2</Value></Tag></TagSet></Tagging>"
    assert h.request("PUT", "photos", "k", query=[("tagging", "")], body=tags).status == 200
    assert entries(h) == 1
    wipe(h)
    hit = h.get("photos", "k")
    assert hit.status == 200 and hit.body == BODY and hit.header("x-amz-tagging-count") == "2"


def test_another_instances_overwrite_misses_by_write_id(
    gateway: GatewayHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = gateway
    assert h.put("photos", "k", BODY).status == 200
    assert h.get("photos", "k").body == BODY and entries(h) == 1
    # Another instance's overwrite: this instance's cache is not told.
    monkeypatch.setattr(ObjectCache, "invalidate", lambda self, bucket, key: False)
    assert h.put("photos", "k", b"from elsewhere").status == 200
    assert entries(h) == 1
    got = h.get("photos", "k")
    assert got.status == 200 and got.body == b"from elsewhere"


def test_a_body_verify_on_read_refuses_is_never_cached(tmp_path: Path) -> None:
    integrity = "integrity:\n  enabled: true\n  verify_on_read: true\n"
    with GatewayHarness(tmp_path, BASE + CACHE + integrity) as h:
        assert h.put("photos", "k", BODY).status == 200
        for name, server in h.backends.items():
            for stored in server.objects("store-" + name.rpartition("-")[2]).values():
                stored.data = stored.data[:1000] + bytes([stored.data[1000] ^ 0xFF]) + stored.data[1001:]
        refused = h.get("photos", "k")  # the body is held back whole: nothing of it was sent
        assert refused.status == 503 and BODY not in refused.body
        assert entries(h) == 0


def test_the_admin_routes_and_the_cli(gateway: GatewayHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    h = gateway
    for key in ("dir/a", "dir/b", "other"):
        assert h.put("photos", key, b"x" * 100).status == 200
        assert h.get("photos", key).status == 200
    status, stats = admin(h, "GET", "cache")
    assert status == 200 and stats["enabled"] and stats["entries"] == 3 and stats["size_bytes"] == 300
    assert stats["max_size"] == 16 << 20 and stats["max_object_size"] == 8 << 20 and stats["ttl"] == 300
    assert admin(h, "DELETE", "cache/keys/photos/dir/a") == (
        200, {"status": "ok", "key": "photos/dir/a", "removed": True},
    )
    assert admin(h, "DELETE", "cache/keys/photos%2Fdir%2Fa")[1]["removed"] is False
    assert admin(h, "DELETE", "cache/prefix?prefix=")[0] == 400
    assert admin(h, "DELETE", "cache/prefix")[0] == 400
    assert admin(h, "DELETE", "cache/prefix?prefix=photos/dir/") == (
        200, {"status": "ok", "prefix": "photos/dir/", "removed": 1},
    )
    monkeypatch.setattr(admin_cli, "client_from", lambda options: HarnessClient(h))
    env = {"S3ORCH_ADMIN_TOKEN": TOKEN}
    runner = CliRunner()
    out = runner.invoke(cli, ["cache", "--addr", "127.0.0.1:1"], env=env)
    assert out.exit_code == 0 and "entries: 1" in out.stdout, out.output
    assert h.get("photos", "dir/b").status == 200
    out = runner.invoke(cli, ["cache-delete", "photos/dir/b", "--addr", "127.0.0.1:1"], env=env)
    assert out.exit_code == 0 and "photos/dir/b: removed" in out.stdout, out.output
    out = runner.invoke(cli, ["cache-delete-prefix", "photos/o", "--addr", "127.0.0.1:1"], env=env)
    assert out.exit_code == 0 and "removed: 1" in out.stdout, out.output
    assert h.get("photos", "other").status == 200
    out = runner.invoke(cli, ["cache-flush", "--addr", "127.0.0.1:1"], env=env)
    assert out.exit_code == 0 and "flushed: 1 entries" in out.stdout, out.output
    assert entries(h) == 0


def test_a_disabled_cache_answers_503_and_gets_are_unchanged(tmp_path: Path) -> None:
    with GatewayHarness(tmp_path, BASE) as h:
        assert admin(h, "GET", "cache") == (200, {"enabled": False})
        for method, path in (("POST", "cache/flush"), ("DELETE", "cache/keys/photos/k"),
                             ("DELETE", "cache/prefix?prefix=p")):
            assert admin(h, method, path)[0] == 503, path
        assert h.put("photos", "k", BODY).status == 200
        assert h.get("photos", "k").body == BODY
        wipe(h)
        assert h.get("photos", "k").status >= 500  # nothing was cached


def test_degraded_mode_serves_a_hit_for_the_journals_record(tmp_path: Path) -> None:
    breaker = "circuit_breaker:\n  open_timeout: 5s\n  cache_ttl: 1s\n  journal_refresh: 1s\n"
    with GatewayHarness(tmp_path, BASE + CACHE + breaker) as h:
        assert h.put("photos", "k", BODY).status == 200
        miss = h.get("photos", "k")
        h.advance(2)  # journaled; the location cache (1 s) has expired: only the journal knows
        wipe(h)
        with Outage(h.store):
            hit = h.get("photos", "k")
        assert hit.status == 200 and hit.body == BODY
        same_headers(miss, hit)
